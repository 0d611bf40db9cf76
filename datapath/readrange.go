package datapath

import (
	"errors"

	"github.com/cockroachdb/pebble/v2"
)

// Multi-block reads: one map iterator per chain link instead of a lookup per
// block, and one SSD read per run of blocks stored next to each other
// (sequentially written data is packed contiguously), so a 1 MiB read costs
// a few preads, not 256.

const rangeReadMin = 4 // blocks; smaller reads use readBlock

type rslot struct {
	known uint8 // sectors resolved from pending ops
	done  bool  // resolved (map entry found, or below the chain's limit)
	e     mapEntry
}

// readBlocks fills out (n whole blocks) with blocks [first, first+n) of chain.
func (s *Store) readBlocks(chain []chainLink, first uint64, n int, out []byte) error {
	slots := make([]rslot, n)
	end := first + uint64(n)
	for _, link := range chain {
		// Blocks at or beyond the link's limit stop here (zeros below).
		lim := min(end, link.limit)
		for i := range slots {
			if !slots[i].done && first+uint64(i) >= link.limit {
				slots[i].done = true
			}
		}
		if first >= lim {
			break
		}
		s.pend.mu.RLock()
		if pm := s.pend.media[link.medium]; pm != nil {
			for i := 0; i < int(lim-first); i++ {
				sl := &slots[i]
				if !sl.done && sl.known != 0xff {
					sl.known = pm.resolve(first+uint64(i), ^uint64(0), out[i*BlockSize:(i+1)*BlockSize], sl.known, nil)
				}
			}
		}
		s.pend.mu.RUnlock()
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: mapKey(link.medium, first), UpperBound: mapKey(link.medium, lim)})
		if err != nil {
			return err
		}
		for it.First(); it.Valid(); it.Next() {
			_, b, ok := decodeMapKey(it.Key())
			if !ok {
				it.Close()
				return errBadMeta
			}
			sl := &slots[b-first]
			if sl.done {
				continue
			}
			e, err := decodeMapEntry(it.Value())
			if err != nil {
				it.Close()
				return err
			}
			sl.e, sl.done = e, true
		}
		if err := it.Close(); err != nil {
			return err
		}
		all := true
		for i := range slots {
			if !slots[i].done && slots[i].known != 0xff {
				all = false
				break
			}
		}
		if all {
			break
		}
	}
	// Load the data blocks, coalescing neighbours on the SSDs.
	type want struct {
		i   int
		loc location
	}
	var run []want
	var tmp [BlockSize]byte
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		defer func() { run = run[:0] }()
		err := s.loadRun(run[0].loc, run[len(run)-1].loc, func(k int, loc location, stored []byte) error {
			w := run[k]
			sl := &slots[w.i]
			dst := out[w.i*BlockSize : (w.i+1)*BlockSize]
			if sl.known == 0 {
				return s.openBlock(loc, stored, dst)
			}
			if err := s.openBlock(loc, stored, tmp[:]); err != nil {
				return err
			}
			fillUnknown(dst, sl.known, tmp[:])
			return nil
		}, len(run), func(k int) location { return run[k].loc })
		if errors.Is(err, errMoved) {
			// GC moved the run since the lookups: read each block afresh.
			for _, w := range run {
				if err := s.readBlock(chain, first+uint64(w.i), out[w.i*BlockSize:(w.i+1)*BlockSize]); err != nil {
					return err
				}
			}
			return nil
		}
		return err
	}
	for i := range slots {
		sl := &slots[i]
		dst := out[i*BlockSize : (i+1)*BlockSize]
		if sl.known == 0xff {
			continue
		}
		if !sl.done || sl.e.kind != entryData {
			fillUnknown(dst, sl.known, nil)
			continue
		}
		loc, ok := sl.e.hint, sl.e.hint.seg != 0
		if ok {
			_, ok = s.seg.auOf(loc.seg)
		}
		if !ok {
			var err error
			if loc, ok, err = s.lookupLoc(&sl.e.fp); err != nil {
				return err
			}
		}
		if ok {
			if l := len(run); l > 0 {
				prev := run[l-1].loc
				if prev.seg != loc.seg || prev.off+prev.length != loc.off || l >= 256 {
					if err := flush(); err != nil {
						return err
					}
				}
			}
			if _, found := s.seg.auOf(loc.seg); found {
				run = append(run, want{i, loc})
				continue
			}
		}
		// Moved or gone since the map lookup: the careful path.
		if err := flush(); err != nil {
			return err
		}
		if err := s.readBlock(chain, first+uint64(i), dst); err != nil {
			return err
		}
	}
	return flush()
}

// loadRun reads the stored bytes of count blocks lying back to back in one
// segment, from first to last, with one SSD read, and hands each block's
// bytes to fn.
func (s *Store) loadRun(first, last location, fn func(k int, loc location, stored []byte) error, count int, locOf func(k int) location) error {
	sa := s.seg
	sa.gate.RLock()
	au, ok := sa.auOf(first.seg)
	if !ok {
		sa.gate.RUnlock()
		return errMoved
	}
	total := int(last.off+last.length) - int(first.off)
	buf := make([]byte, total)
	err := s.set.Read(s.ctx, au, first.seg, int64(first.off), buf)
	if err == nil {
		for k := 0; k < count; k++ {
			loc := locOf(k)
			stored := buf[loc.off-first.off : loc.off-first.off+loc.length]
			if ferr := fn(k, loc, stored); ferr != nil {
				// One bad block: rebuild it from parity and retry once.
				if rerr := s.set.ReadRebuild(s.ctx, au, loc.seg, int64(loc.off), stored); rerr != nil {
					err = ferr
					break
				}
				if ferr := fn(k, loc, stored); ferr != nil {
					err = ferr
					break
				}
			}
		}
	}
	sa.gate.RUnlock()
	if err != nil && !errors.Is(err, errMoved) {
		s.event(Warning, "block.unreadable", "datapath", "segment read: "+err.Error())
		return errors.Join(ErrMedium, err)
	}
	return err
}
