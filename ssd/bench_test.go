package ssd

import (
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Benchmarks run on real sparse files in a temporary directory: n = 8,
// AU 1 MiB, each WriteSegment fdatasyncs all eight files.
const (
	benchN   = 8
	benchAUs = 16
)

func benchArray(b *testing.B) *testArray {
	return newTestArray(b, vfs.Default, b.TempDir(), benchN, DefaultAUSize, DefaultAUSize*(benchAUs+1))
}

func BenchmarkWriteSegment(b *testing.B) {
	ta := benchArray(b)
	s := ta.open(b)
	w := payload(1, s.SegmentPayload())
	b.SetBytes(int64(len(w)))
	b.ReportAllocs()
	seg := uint64(1)
	for b.Loop() {
		if err := s.WriteSegment(bg, int(seg)%s.AUCount(), seg, w); err != nil {
			b.Fatal(err)
		}
		seg++
	}
}

// filledSet writes a full segment at every AU (segment id au+1).
func filledSet(b *testing.B, missing ...int) *Set {
	ta := benchArray(b)
	s := ta.open(b)
	for au := range s.AUCount() {
		if err := s.WriteSegment(bg, au, uint64(au+1), payload(uint64(au), s.SegmentPayload())); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	return ta.open(b, missing...)
}

func benchRead(b *testing.B, s *Set, size int) {
	r := rand.New(rand.NewPCG(1, 2))
	p := make([]byte, size)
	b.SetBytes(int64(size))
	b.ReportAllocs()
	for b.Loop() {
		au := r.IntN(s.AUCount())
		off := int64(r.IntN(s.SegmentPayload()-size)) &^ 511
		if err := s.Read(bg, au, uint64(au+1), off, p); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkRead4K(b *testing.B) {
	benchRead(b, filledSet(b), 4096)
}

func BenchmarkRead4KOneMissing(b *testing.B) {
	benchRead(b, filledSet(b, 3), 4096)
}

func BenchmarkRead4KTwoMissing(b *testing.B) {
	benchRead(b, filledSet(b, 3, 4), 4096)
}

func BenchmarkRead64K(b *testing.B) {
	benchRead(b, filledSet(b), 64<<10)
}

// Parallel readers, as the iSCSI front end issues them (GOMAXPROCS goroutines).
func BenchmarkRead4KParallel(b *testing.B) {
	s := filledSet(b)
	b.SetBytes(4096)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(rand.Uint64(), 2))
		p := make([]byte, 4096)
		for pb.Next() {
			au := r.IntN(s.AUCount())
			off := int64(r.IntN(s.SegmentPayload()-4096)) &^ 511
			if err := s.Read(bg, au, uint64(au+1), off, p); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkScrubSegment(b *testing.B) {
	s := filledSet(b)
	b.SetBytes(int64(s.SegmentPayload()))
	b.ReportAllocs()
	au := 0
	for b.Loop() {
		if _, err := s.Scrub(bg, au, uint64(au+1), s.SegmentPayload()); err != nil {
			b.Fatal(err)
		}
		au = (au + 1) % s.AUCount()
	}
}
