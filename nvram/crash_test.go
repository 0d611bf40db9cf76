package nvram

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"maps"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Crash test payloads say who wrote them: epoch, writer, counter; the rest
// is derived from those, so any payload can be checked on its own.
func crashPayload(epoch uint32, writer, counter uint32, n int) []byte {
	n = max(n, 16)
	p := pattern(n, byte(epoch*7+writer*13+counter))
	binary.LittleEndian.PutUint32(p[0:], epoch)
	binary.LittleEndian.PutUint32(p[4:], writer)
	binary.LittleEndian.PutUint32(p[8:], counter)
	binary.LittleEndian.PutUint32(p[12:], uint32(n))
	return p
}

func checkCrashPayload(p []byte) (epoch uint32, err error) {
	if len(p) < 16 {
		return 0, fmt.Errorf("payload of %d bytes", len(p))
	}
	epoch = binary.LittleEndian.Uint32(p[0:])
	w := binary.LittleEndian.Uint32(p[4:])
	c := binary.LittleEndian.Uint32(p[8:])
	n := binary.LittleEndian.Uint32(p[12:])
	if int(n) != len(p) || !bytes.Equal(p, crashPayload(epoch, w, c, int(n))) {
		return epoch, fmt.Errorf("payload (epoch %d writer %d counter %d) is not what was written", epoch, w, c)
	}
	return epoch, nil
}

// crashModel is the caller's side: a flusher that moves durable records to
// a store, commits a checkpoint with them, then releases log space.
type crashModel struct {
	flushMu sync.Mutex // store+checkpoint commit and Release happen under it
	store   map[uint64][]byte
	ckpt    Position

	qMu   sync.Mutex
	queue []rec // durable, not yet flushed, in seq order

	ackMu sync.Mutex
	acked map[uint64][]byte // this boot's acknowledged appends
}

// TestCrashRandom: concurrent appenders, a lagging flusher, and crashes at
// random points on a file system that keeps a random part of what was not
// synced. After each crash, every acknowledged record must come back in
// seq order with its exact payload, and nothing stale or invented may.
func TestCrashRandom(t *testing.T) {
	seeds := 6
	if testing.Short() {
		seeds = 2
	}
	for seed := range seeds {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) { crashRun(t, uint64(seed)) })
	}
}

func crashRun(t *testing.T, seed uint64) {
	const size = 512 << 10
	const maxPayload = 8 << 10
	const writers = 6
	rng := rand.New(rand.NewPCG(seed, 99))
	var fs *vfs.MemFS = vfs.NewCrashableMem()
	createDev(t, fs, size)

	m := &crashModel{store: map[uint64][]byte{}, ckpt: Position{Seq: 1}}
	hist := map[uint64][]byte{} // seq -> payload of every record known to be in the log's history
	var mustAck map[uint64][]byte
	prevStart := Position{Seq: 1} // where the previous boot's appends began
	totalAcked, totalReplayed := 0, 0
	var batched uint64 // records that went out in batches of two or more

	for boot := uint32(1); boot <= 12; boot++ {
		f := openDev(t, fs, size)
		f.syncYields = rng.IntN(20)
		o := testOptions(f, size, boot, maxPayload)

		// Replay and check against everything known.
		got, end, err := replayAll(t, o, m.ckpt)
		if err != nil {
			t.Fatalf("boot %d: replay: %v", boot, err)
		}
		totalReplayed += len(got)
		bySeq := map[uint64][]byte{}
		for i, r := range got {
			if r.seq != m.ckpt.Seq+uint64(i) {
				t.Fatalf("boot %d: replayed seq %d at index %d from %+v", boot, r.seq, i, m.ckpt)
			}
			bySeq[r.seq] = r.payload
			epoch, err := checkCrashPayload(r.payload)
			if err != nil {
				t.Fatalf("boot %d: seq %d: %v", boot, r.seq, err)
			}
			if r.seq < prevStart.Seq {
				if !bytes.Equal(r.payload, hist[r.seq]) {
					t.Fatalf("boot %d: seq %d changed since the last replay", boot, r.seq)
				}
			} else if epoch != boot-1 {
				t.Fatalf("boot %d: seq %d written in epoch %d, but boot %d wrote from seq %d on (stale record)", boot, r.seq, epoch, boot-1, prevStart.Seq)
			}
		}
		if end.Seq < prevStart.Seq {
			t.Fatalf("boot %d: replay ends at %+v, before the previous replay's end %+v", boot, end, prevStart)
		}
		for seq, p := range mustAck {
			var have []byte
			if seq < m.ckpt.Seq {
				have = m.store[seq]
			} else {
				have = bySeq[seq]
			}
			if !bytes.Equal(have, p) {
				t.Fatalf("boot %d: acknowledged seq %d lost (checkpoint %+v, replay end %+v)", boot, seq, m.ckpt, end)
			}
		}
		for seq, p := range m.store {
			if seq >= prevStart.Seq {
				// Flushed by the previous boot, which wrote it.
				if epoch, err := checkCrashPayload(p); err != nil || epoch != boot-1 {
					t.Fatalf("boot %d: flushed seq %d: epoch %d, %v", boot, seq, epoch, err)
				}
				hist[seq] = p
			} else if !bytes.Equal(hist[seq], p) {
				t.Fatalf("boot %d: flushed seq %d differs from history", boot, seq)
			}
		}
		for seq := range hist {
			if seq >= end.Seq {
				delete(hist, seq) // never acknowledged, now discarded
			}
		}
		maps.Copy(hist, bySeq)
		prevStart = end

		// Run this boot until a random number of acknowledgements.
		m.queue = append(m.queue[:0], got...)
		m.acked = map[uint64][]byte{}
		kick := make(chan struct{}, 1)
		kick <- struct{}{} // flush what was replayed
		o.OnDurable = func(seq uint64, p []byte, end Position) {
			m.qMu.Lock()
			m.queue = append(m.queue, rec{seq, p, end})
			m.qMu.Unlock()
			select {
			case kick <- struct{}{}:
			default:
			}
		}
		l, err := Open(o, m.ckpt, end)
		if err != nil {
			t.Fatalf("boot %d: open: %v", boot, err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		target := 20 + rng.IntN(300)
		reached := make(chan struct{})
		var wg sync.WaitGroup
		for w := range uint32(writers) {
			wrng := rand.New(rand.NewPCG(seed, uint64(boot)<<8|uint64(w)))
			wg.Go(func() {
				for c := uint32(0); ; c++ {
					p := crashPayload(boot, w, c, wrng.IntN(maxPayload+1))
					seq, _, err := l.Append(ctx, p)
					if err != nil {
						return
					}
					m.ackMu.Lock()
					m.acked[seq] = p
					if len(m.acked) == target {
						close(reached)
					}
					m.ackMu.Unlock()
				}
			})
		}
		flushLag := rng.IntN(30)
		stopFlush := make(chan struct{})
		wg.Go(func() {
			frng := rand.New(rand.NewPCG(seed, uint64(boot)))
			for {
				select {
				case <-kick:
				case <-stopFlush:
					return
				}
				for {
					m.qMu.Lock()
					n := len(m.queue) - flushLag
					if n <= 0 {
						m.qMu.Unlock()
						break
					}
					n = 1 + frng.IntN(n)
					batch := append([]rec(nil), m.queue[:n]...)
					m.queue = append(m.queue[:0], m.queue[n:]...)
					m.qMu.Unlock()

					m.flushMu.Lock()
					for _, r := range batch {
						m.store[r.seq] = r.payload
					}
					m.ckpt = batch[len(batch)-1].end
					if err := l.Release(m.ckpt); err != nil {
						t.Errorf("release: %v", err)
					}
					m.flushMu.Unlock()
				}
			}
		})
		<-reached

		// Crash: the metadata (store, checkpoint) and the device are taken
		// at one instant, with no flush or release in between.
		m.flushMu.Lock()
		m.ackMu.Lock()
		mustAck = maps.Clone(m.acked)
		store := maps.Clone(m.store)
		ckpt := m.ckpt
		pct := []int{0, 10, 50, 90, 100}[rng.IntN(5)]
		clone := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: pct, RNG: rand.New(rand.NewPCG(seed, uint64(boot)))})
		m.ackMu.Unlock()
		m.flushMu.Unlock()

		cancel()
		close(stopFlush)
		if err := l.Close(); err != nil {
			t.Fatalf("boot %d: close: %v", boot, err)
		}
		wg.Wait()
		st := l.Stats()
		batched += st.Appends - st.BatchHist[0]
		totalAcked += len(mustAck)
		fs, m.store, m.ckpt = clone, store, ckpt
	}
	t.Logf("checked %d acknowledged records over 12 crashes, replayed %d, %d appended in multi-record batches", totalAcked, totalReplayed, batched)
}
