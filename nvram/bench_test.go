package nvram

import (
	"context"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkAppend appends against a real file (fdatasync per batch) in a
// temporary directory, from 1, 8 and 32 concurrent writers. Each writer
// releases its record as soon as Append returns, so the log keeps cycling.
// Reported: ops/s, MB/s of payload, records per sync, region bytes per
// WriteAt.
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{4 << 10, 1 << 20} {
		for _, writers := range []int{1, 8, 32} {
			name := fmt.Sprintf("%dKiB/writers=%d", size>>10, writers)
			b.Run(name, func(b *testing.B) { benchAppend(b, size, writers) })
		}
	}
}

func benchAppend(b *testing.B, payloadSize, writers int) {
	const region = 256 << 20
	path := filepath.Join(b.TempDir(), "nvram0.dev")
	f, err := vfs.Default.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	// Allocate the region up front, as the array does at init, so that
	// the benchmark measures overwrites, not file growth.
	zero := make([]byte, 8<<20)
	for off := int64(0); off < testBase+region; off += int64(len(zero)) {
		if _, err := f.WriteAt(zero, off); err != nil {
			b.Fatal(err)
		}
	}
	if err := f.Sync(); err != nil {
		b.Fatal(err)
	}
	l, err := Open(Options{File: f, Offset: testBase, Size: region, Key: testKey(1), Epoch: 1}, Position{Seq: 1}, Position{Seq: 1})
	if err != nil {
		b.Fatal(err)
	}
	payloads := make([][]byte, writers)
	for i := range payloads {
		payloads[i] = pattern(payloadSize, byte(i))
	}
	var mu sync.Mutex
	next := 0
	b.SetBytes(int64(payloadSize))
	b.ReportAllocs()
	b.ResetTimer()
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			ctx := context.Background()
			for {
				mu.Lock()
				if next >= b.N {
					mu.Unlock()
					return
				}
				next++
				mu.Unlock()
				_, end, err := l.Append(ctx, payloads[w])
				if err != nil {
					b.Error(err)
					return
				}
				if err := l.Release(end); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	b.StopTimer()
	st := l.Stats()
	if err := l.Close(); err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(st.Appends)/b.Elapsed().Seconds(), "ops/s")
	if st.Syncs > 0 {
		b.ReportMetric(float64(st.Appends)/float64(st.Syncs), "records/sync")
		b.ReportMetric(float64(st.LogBytes)/float64(st.WriteCalls), "B/write")
	}
}

// BenchmarkSeal is the CPU cost of sealing one record (no I/O).
func BenchmarkSeal(b *testing.B) {
	a := testAEAD(b, testKey(1))
	for _, n := range []int{4 << 10, 1 << 20} {
		b.Run(fmt.Sprintf("%dKiB", n>>10), func(b *testing.B) {
			p := pattern(n, 1)
			dst := make([]byte, spanOf(n))
			nonce := new([nonceLen]byte)
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				sealRecord(a, dst, header{kind: kindData, epoch: 1, seq: uint64(i + 1)}, p, nonce)
			}
		})
	}
}

// BenchmarkReplay replays a region full of 4 KiB records from memory.
func BenchmarkReplay(b *testing.B) {
	const size = 16 << 20
	fs := vfs.NewMem()
	createDev(b, fs, size)
	f := openDev(b, fs, size)
	l, err := Open(testOptions(f, size, 1, 0), Position{Seq: 1}, Position{Seq: 1})
	if err != nil {
		b.Fatal(err)
	}
	p := pattern(4096, 1)
	n := 0
	for l.Stats().UsedBytes+2*spanOf(len(p)) < size {
		if _, _, err := l.Append(context.Background(), p); err != nil {
			b.Fatal(err)
		}
		n++
	}
	_ = l.Close()
	b.SetBytes(int64(n * len(p)))
	b.ReportAllocs()
	for b.Loop() {
		got := 0
		_, err := Replay(testOptions(f, size, 2, 0), Position{Seq: 1}, func(uint64, []byte, Position) error { got++; return nil })
		if err != nil || got != n {
			b.Fatalf("replayed %d of %d: %v", got, n, err)
		}
	}
}
