package nvram

import (
	"bufio"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

const killRegion = 16 << 20

// TestKill9 runs a child process that appends to a real file from several
// goroutines and prints each acknowledged record, kills it with SIGKILL at a
// random point, and checks that the next boot replays every acknowledged
// record. Three boots, each a new epoch.
func TestKill9(t *testing.T) {
	if os.Getenv("NVRAM_KILL_CHILD") != "" {
		kill9Child(t)
		return
	}
	path := filepath.Join(t.TempDir(), "nvram0.dev")
	f, err := vfs.Default.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, testBase+killRegion)); err != nil {
		t.Fatal(err)
	}
	_ = f.Sync()
	_ = f.Close()

	rng := rand.New(rand.NewPCG(7, 7))
	acked := map[uint64][]byte{}
	for epoch := uint32(1); epoch <= 3; epoch++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
		cmd.Env = append(os.Environ(), "NVRAM_KILL_CHILD="+path, "NVRAM_KILL_EPOCH="+strconv.Itoa(int(epoch)))
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		want := 200 + rng.IntN(1000)
		sc := bufio.NewScanner(out)
		n := 0
		for n < want && sc.Scan() {
			var seq uint64
			var w, c, size uint32
			if _, err := fmt.Sscanf(sc.Text(), "ack %d %d %d %d", &seq, &w, &c, &size); err != nil {
				continue // test framework output
			}
			acked[seq] = crashPayload(epoch, w, c, int(size))
			n++
		}
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if n < want {
			t.Fatalf("epoch %d: child stopped after %d acknowledgements", epoch, n)
		}

		rf, err := vfs.Default.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		got, _, err := replayAll(t, Options{File: rf, Offset: testBase, Size: killRegion, Key: testKey(1), Epoch: epoch + 1}, Position{Seq: 1})
		_ = rf.Close()
		if err != nil {
			t.Fatal(err)
		}
		bySeq := map[uint64][]byte{}
		for _, r := range got {
			bySeq[r.seq] = r.payload
		}
		for seq, p := range acked {
			if string(bySeq[seq]) != string(p) {
				t.Fatalf("epoch %d: acknowledged seq %d not replayed intact (%d records replayed)", epoch, seq, len(got))
			}
		}
		t.Logf("epoch %d: killed after %d acks; %d records replayed", epoch, n, len(got))
	}
}

// kill9Child is TestKill9's child process: it appends until killed.
func kill9Child(t *testing.T) {
	path := os.Getenv("NVRAM_KILL_CHILD")
	epoch, _ := strconv.Atoi(os.Getenv("NVRAM_KILL_EPOCH"))
	f, err := vfs.Default.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	o := Options{File: f, Offset: testBase, Size: killRegion, Key: testKey(1), Epoch: uint32(epoch)}
	end, err := Replay(o, Position{Seq: 1}, func(uint64, []byte, Position) error { return nil })
	if err != nil {
		t.Fatal(err)
	}
	l, err := Open(o, Position{Seq: 1}, end)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	w := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for wr := range uint32(4) {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(epoch), uint64(wr)))
			for c := uint32(0); ; c++ {
				p := crashPayload(uint32(epoch), wr, c, rng.IntN(4096))
				seq, _, err := l.Append(context.Background(), p)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				fmt.Fprintf(w, "ack %d %d %d %d\n", seq, wr, c, len(p))
				_ = w.Flush()
				mu.Unlock()
			}
		})
	}
	wg.Wait() // until killed (or the region fills up and Append waits)
}
