package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Whole-data-path benchmarks on real files in a temp dir (the local disk),
// with the default geometry: 8 SSDs, 1 MiB AUs, 256 MiB NVRAM. Throughput
// figures include flushing: the clock stops when everything written is in
// segments (flushAll), not at the last acknowledgement.
//
//	go test -run XXX -bench . -benchtime 2x ./datapath
//
// VFA_REFIMAGE names the reference image (scripts/make-refimage.sh) for
// BenchmarkWriteRefImage; VFA_BENCH_DIR puts the devices elsewhere.

func benchStore(b *testing.B, ssdSize int64) *Store {
	b.Helper()
	dir := os.Getenv("VFA_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir = filepath.Join(dir, fmt.Sprintf("bench-%d", time.Now().UnixNano()))
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	o := Options{Dir: dir, FS: vfs.Default, ArrayID: testArrayID, SSDs: 8, KeyRotation: -1}
	if v := os.Getenv("VFA_BENCH_PENDING_MIB"); v != "" { // for tuning experiments
		var n int64
		fmt.Sscan(v, &n)
		o.PendingLimit = n << 20
	}
	if v := os.Getenv("VFA_BENCH_FLUSH_MIB"); v != "" {
		var n int64
		fmt.Sscan(v, &n)
		o.FlushBytes = n << 20
	}
	if err := Create(o, CreateOptions{SSDSize: ssdSize}); err != nil {
		b.Fatal(err)
	}
	s, err := Open(o)
	if err != nil {
		b.Fatal(err)
	}
	if err := s.Unlock(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

// mixedData returns n bytes that compress about 2:1 and do not repeat.
func mixedData(n int, seed uint64) []byte {
	p := make([]byte, n)
	r := rand.New(rand.NewPCG(seed, 1))
	words := []string{"volume ", "segment ", "flash ", "array ", "block ", "parity ", "func ", "return ", "nil ", "err "}
	for i := 0; i < n; {
		if r.IntN(3) == 0 {
			for j := 0; j < 48 && i < n; j++ {
				p[i] = byte(r.Uint32())
				i++
			}
			continue
		}
		w := words[r.IntN(len(words))]
		i += copy(p[i:], w)
	}
	return p
}

// writeStream writes src sequentially with qd writers of bs bytes.
func writeStream(b *testing.B, v *Volume, src []byte, bs, qd int, base uint64) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := 0; w < qd; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				off := next.Add(int64(bs)) - int64(bs)
				if off >= int64(len(src)) {
					return
				}
				end := min(off+int64(bs), int64(len(src)))
				if err := v.Write(context.Background(), src[off:end], base+uint64(off)/SectorSize); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkWriteSeq1MUnique(b *testing.B) {
	s := benchStore(b, 4<<30)
	info, _ := s.CreateVolume("b", 16<<30)
	v, _ := s.Volume(info.ID)
	const chunk = 256 << 20
	src := mixedData(chunk, 1)
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		// Different content each round: shift the source by a byte.
		copy(src, src[1:])
		writeStream(b, v, src, 1<<20, 8, uint64(i%16)*chunk/SectorSize)
		if err := s.flushAll(); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	reportReduction(b, s)
}

func BenchmarkWriteSeq1MDuplicate(b *testing.B) {
	s := benchStore(b, 4<<30)
	info, _ := s.CreateVolume("b", 16<<30)
	v, _ := s.Volume(info.ID)
	const chunk = 256 << 20
	src := mixedData(chunk, 2)
	writeStream(b, v, src, 1<<20, 8, 0)
	if err := s.flushAll(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(chunk)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		writeStream(b, v, src, 1<<20, 8, uint64(1+i%15)*chunk/SectorSize)
		if err := s.flushAll(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRandWrite4KQD32(b *testing.B) {
	s := benchStore(b, 4<<30)
	info, _ := s.CreateVolume("b", 4<<30)
	v, _ := s.Volume(info.ID)
	blocks := uint64(info.Size / BlockSize)
	var ctr atomic.Uint64
	b.SetBytes(BlockSize)
	b.SetParallelism(16) // 2 cores x 16 = 32 in flight
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, BlockSize)
		r := rand.New(rand.NewPCG(ctr.Add(1), 2))
		for pb.Next() {
			for i := range buf {
				buf[i] = byte(r.Uint32())
			}
			if err := v.Write(context.Background(), buf, r.Uint64N(blocks)*sectorsPerBlock); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
	b.Logf("nvram: %s", s.nvramStats())
}

func BenchmarkRandRead4KQD32(b *testing.B) {
	s := benchStore(b, 4<<30)
	info, _ := s.CreateVolume("b", 256<<20)
	v, _ := s.Volume(info.ID)
	src := mixedData(int(info.Size), 3)
	writeStream(b, v, src, 1<<20, 8, 0)
	if err := s.flushAll(); err != nil {
		b.Fatal(err)
	}
	blocks := uint64(info.Size / BlockSize)
	var ctr atomic.Uint64
	b.SetBytes(BlockSize)
	b.SetParallelism(16)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		buf := make([]byte, BlockSize)
		r := rand.New(rand.NewPCG(ctr.Add(1), 3))
		for pb.Next() {
			blk := r.Uint64N(blocks)
			if err := v.Read(context.Background(), buf, blk*sectorsPerBlock); err != nil {
				b.Error(err)
				return
			}
			if buf[0] != src[blk*BlockSize] {
				b.Error("read returned wrong data")
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "IOPS")
}

// BenchmarkWriteRefImage writes the reference image as one volume with
// 1 MiB writes, 8 in flight, and reports the data reduction.
func BenchmarkWriteRefImage(b *testing.B) {
	path := os.Getenv("VFA_REFIMAGE")
	if path == "" {
		home, _ := os.UserHomeDir()
		path = filepath.Join(home, ".cache", "vfa", "refimage", "image.ext4")
	}
	src, err := os.ReadFile(path)
	if err != nil {
		b.Skipf("reference image: %v (build it with scripts/make-refimage.sh)", err)
	}
	b.SetBytes(int64(len(src)))
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		s := benchStore(b, 4<<30)
		info, _ := s.CreateVolume("img", int64(len(src)+SectorSize-1)/SectorSize*SectorSize)
		v, _ := s.Volume(info.ID)
		runtime.GC()
		cpu0 := cpuTime()
		b.StartTimer()
		writeStream(b, v, src[:len(src)/SectorSize*SectorSize], 1<<20, 8, 0)
		if err := s.flushAll(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		// CPU per byte is steadier than wall time on a shared machine.
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(len(src)), "cpu-ns/B")
		reportReduction(b, s)
		b.Logf("flush: %s; nvram: %s", s.flushTimes(), s.nvramStats())
		s.Close()
	}
}

// cpuTime is this process's user+system CPU time in nanoseconds.
func cpuTime() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

func reportReduction(b *testing.B, s *Store) {
	sp, _, err := s.Space()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(sp.DataReduction, "reduction")
}

func BenchmarkReadUnmapped4M(b *testing.B) {
	s := benchStore(b, 1<<30)
	info, _ := s.CreateVolume("b", 1<<30)
	v, _ := s.Volume(info.ID)
	buf := make([]byte, 4<<20)
	b.SetBytes(int64(len(buf)))
	for i := 0; i < b.N; i++ {
		if err := v.Read(context.Background(), buf, uint64(i%200)*8192); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMemoryUnique writes VFA_MEM_GIB GiB (default 20) of unique,
// incompressible data with 1 MiB writes, 8 in flight, and reports the peak
// resident set size: the dedup index lives in Pebble, so memory must stay
// bounded however much is written. It needs about 1.4x that much disk.
//
//	VFA_MEM_GIB=20 go test -run XXX -bench MemoryUnique -benchtime 1x ./datapath
func BenchmarkMemoryUnique(b *testing.B) {
	gib := 20
	if v := os.Getenv("VFA_MEM_GIB"); v != "" {
		fmt.Sscan(v, &gib)
	}
	total := int64(gib) << 30
	// As vfa run does: a soft limit that keeps the Go heap compact.
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(DefaultGoMemoryLimit))
	ssdSize := (total*5/4/6 + 1<<30) &^ (1<<20 - 1) // 8 SSDs, 6 data shards, 25% headroom
	for i := 0; i < b.N; i++ {
		s := benchStore(b, ssdSize)
		info, err := s.CreateVolume("m", total)
		if err != nil {
			b.Fatal(err)
		}
		v, _ := s.Volume(info.ID)
		var peak atomic.Int64
		stop := make(chan struct{})
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				if r := rssBytes(); r > peak.Load() {
					peak.Store(r)
					if os.Getenv("VFA_MEM_DEBUG") != "" {
						var ms runtime.MemStats
						runtime.ReadMemStats(&ms)
						b.Logf("rss %d MiB heap inuse %d MiB sys %d MiB idle %d MiB released %d MiB",
							r>>20, ms.HeapInuse>>20, ms.HeapSys>>20, ms.HeapIdle>>20, ms.HeapReleased>>20)
					}
				}
				select {
				case <-stop:
					return
				case <-t.C:
				}
			}
		}()
		var next atomic.Int64
		var wg sync.WaitGroup
		start := time.Now()
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func(w int) {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				x := uint64(w+1) * 0x9e3779b97f4a7c15
				for {
					off := next.Add(1<<20) - 1<<20
					if off >= total {
						return
					}
					for j := 0; j < len(buf); j += 8 {
						x ^= x << 13
						x ^= x >> 7
						x ^= x << 17
						binary.LittleEndian.PutUint64(buf[j:], x)
					}
					if err := v.Write(context.Background(), buf, uint64(off)/SectorSize); err != nil {
						b.Error(err)
						return
					}
				}
			}(w)
		}
		wg.Wait()
		if p := os.Getenv("VFA_MEM_PROFILE"); p != "" {
			if f, err := os.Create(p); err == nil {
				pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		if err := s.flushAll(); err != nil {
			b.Fatal(err)
		}
		close(stop)
		el := time.Since(start)
		b.ReportMetric(float64(peak.Load())/(1<<20), "peak-RSS-MiB")
		b.ReportMetric(float64(total)/el.Seconds()/1e6, "MB/s")
		s.Close()
	}
}

// rssBytes reads this process's resident set size from /proc.
func rssBytes() int64 {
	b, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0
	}
	var size, res int64
	fmt.Sscan(string(b), &size, &res)
	return res * int64(os.Getpagesize())
}

func BenchmarkReadSeq1M(b *testing.B) {
	s := benchStore(b, 1<<30)
	info, _ := s.CreateVolume("b", 256<<20)
	v, _ := s.Volume(info.ID)
	src := mixedData(int(info.Size), 5)
	writeStream(b, v, src, 1<<20, 8, 0)
	if err := s.flushAll(); err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(src)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var next atomic.Int64
		var wg sync.WaitGroup
		for w := 0; w < 8; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 1<<20)
				for {
					off := next.Add(1<<20) - 1<<20
					if off >= int64(len(src)) {
						return
					}
					if err := v.Read(context.Background(), buf, uint64(off)/SectorSize); err != nil {
						b.Error(err)
						return
					}
					if buf[12345] != src[off+12345] {
						b.Error("read returned wrong data")
						return
					}
				}
			}()
		}
		wg.Wait()
	}
}
