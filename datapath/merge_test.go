package datapath

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Eradicated snapshots do not lengthen a volume's chain: their media are
// folded into their children, and every volume and live snapshot still
// reads exactly what it should, across restarts, with space that adds up.
func TestMergeEradicatedSnapshots(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer func() { s.Close() }()
	ctx := context.Background()
	info, _ := s.CreateVolume("vol", 1<<20)
	v, _ := s.Volume(info.ID)
	cur := make([]byte, info.Size)
	rng := rand.New(rand.NewPCG(5, 6))
	scribble := func(n int) {
		for range n {
			blocks := 1 + rng.IntN(8)
			b := rng.IntN(int(info.Size/BlockSize) - blocks)
			p := make([]byte, blocks*BlockSize)
			switch rng.IntN(4) {
			case 0: // zeros
			case 1: // a duplicate of another block
				copy(p, cur[:len(p)])
			default:
				for i := range p {
					p[i] = byte(rng.Uint32())
				}
			}
			if err := v.Write(ctx, p, uint64(b)*sectorsPerBlock); err != nil {
				t.Fatal(err)
			}
			copy(cur[b*BlockSize:], p)
		}
		if rng.IntN(3) == 0 { // and an unmap
			b := rng.IntN(int(info.Size/BlockSize) - 4)
			if err := v.Unmap(ctx, uint64(b)*sectorsPerBlock, 4*sectorsPerBlock); err != nil {
				t.Fatal(err)
			}
			clear(cur[b*BlockSize : (b+4)*BlockSize])
		}
	}
	type snap struct {
		id   uint64
		data []byte
		keep bool
	}
	var live []snap
	eradicate := func(k int) {
		t.Helper()
		if err := s.DestroyVolume(live[k].id); err != nil {
			t.Fatal(err)
		}
		if err := s.EradicateVolume(live[k].id); err != nil {
			t.Fatal(err)
		}
		live = append(live[:k], live[k+1:]...)
	}
	check := func(what string) {
		t.Helper()
		vv, err := s.Volume(info.ID)
		if err != nil {
			t.Fatal(err)
		}
		(&model{v: vv, data: cur}).check(t, what+": volume")
		for _, sn := range live {
			sv, err := s.Volume(sn.id)
			if err != nil {
				t.Fatal(err)
			}
			(&model{v: sv, data: sn.data}).check(t, fmt.Sprintf("%s: snapshot %d", what, sn.id))
		}
		checkSpace(t, s)
	}
	waitChain := func(want int) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for {
			vv, _ := s.Volume(info.ID)
			if n := len(vv.st.Load().chain); n == want {
				return
			} else if time.Now().After(deadline) {
				t.Fatalf("chain of %d media, want %d (%d live snapshots)", n, want, len(live))
			}
			s.kickFlush()
			time.Sleep(5 * time.Millisecond)
		}
	}
	scribble(20)
	for i := range 30 {
		sn, err := s.Snapshot(info.ID, fmt.Sprint("s", i))
		if err != nil {
			t.Fatal(err)
		}
		live = append(live, snap{sn.ID, bytes.Clone(cur), i%5 == 4})
		scribble(10)
		// Every fifth snapshot is kept; each of the others is eradicated
		// with even odds in each round (so in any order).
		for k := 0; k < len(live); k++ {
			if live[k].keep || rng.IntN(2) == 0 {
				continue
			}
			eradicate(k)
			k--
		}
		if i%7 == 6 {
			if err := s.flushAll(); err != nil {
				t.Fatal(err)
			}
			waitChain(len(live) + 1)
			check(fmt.Sprint("round ", i))
		}
		if i == 15 {
			s.Close()
			s = newTestStore(t, fs)
			v, _ = s.Volume(info.ID)
			check("after a restart")
		}
	}
	for k := 0; k < len(live); k++ { // the last ones go too
		if !live[k].keep {
			eradicate(k)
			k--
		}
	}
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	waitChain(len(live) + 1)
	check("at the end")
	if len(live) != 6 {
		t.Fatalf("%d live snapshots, want the 6 kept", len(live))
	}
	if s.merges.Load() == 0 {
		t.Fatal("no media were merged")
	}
	t.Logf("%d live snapshots, %d merges since the restart", len(live), s.merges.Load())
}
