package datapath

import (
	"encoding/binary"
	"math/bits"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
)

// fpFilter is an in-memory Bloom filter of every fingerprint in the dedup
// index, in front of it: a fingerprint the filter has never seen is new,
// and the flusher skips the index lookup (most blocks of unique data). It
// is built at unlock by one scan of the index and grows with every stored
// block; deletions are not removed (a stale bit costs one lookup, never a
// wrong answer). Sized from the array's capacity: 16 bits per 4 KiB of
// capacity, 8 probes, so under 0.1 % false positives when full.
//
// Fingerprints are keyed BLAKE3 digests, uniformly distributed, so the
// probes are taken directly from their bits. Concurrency: probes and
// inserts use atomic operations on 64-bit words; an insert is visible to
// lookups that start after the commit that made the fingerprint durable.
type fpFilter struct {
	words []atomic.Uint64
	mask  uint64 // number of bits - 1 (a power of two)
}

const fpFilterProbes = 8

func newFPFilter(capacityBytes int64) *fpFilter {
	nbits := uint64(max(capacityBytes/BlockSize, 1<<16)) * 16
	nbits = 1 << bits.Len64(nbits-1) // round up to a power of two
	return &fpFilter{words: make([]atomic.Uint64, nbits/64), mask: nbits - 1}
}

// probes derives the filter positions from the fingerprint: two 64-bit
// halves combined (Kirsch–Mitzenmacher double hashing).
func (f *fpFilter) probe(fp *FP, i int) (word int, bit uint64) {
	h1 := binary.LittleEndian.Uint64(fp[0:8])
	h2 := binary.LittleEndian.Uint64(fp[8:16]) | 1
	p := (h1 + uint64(i)*h2) & f.mask
	return int(p / 64), 1 << (p % 64)
}

func (f *fpFilter) add(fp *FP) {
	for i := 0; i < fpFilterProbes; i++ {
		w, b := f.probe(fp, i)
		if f.words[w].Load()&b == 0 {
			f.words[w].Or(b)
		}
	}
}

// mayContain is false only for fingerprints never added.
func (f *fpFilter) mayContain(fp *FP) bool {
	for i := 0; i < fpFilterProbes; i++ {
		w, b := f.probe(fp, i)
		if f.words[w].Load()&b == 0 {
			return false
		}
	}
	return true
}

// loadFPFilter fills a filter from the dedup index.
func (s *Store) loadFPFilter() error {
	f := newFPFilter(int64(s.seg.aus) * int64(s.seg.segPayload))
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDedup}, UpperBound: []byte{pfxDedup + 1}})
	if err != nil {
		return err
	}
	var fp FP
	for it.First(); it.Valid(); it.Next() {
		if k := it.Key(); len(k) == 33 {
			copy(fp[:], k[1:])
			f.add(&fp)
		}
	}
	if err := it.Close(); err != nil {
		return err
	}
	s.fpf = f
	return nil
}
