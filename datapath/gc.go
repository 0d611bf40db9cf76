package datapath

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/cockroachdb/pebble/v2"
)

// Garbage collection and background deletion, both on the flusher goroutine.
//
// GC picks the segments with the least live data, copies their live blocks
// (decrypt with the old address, seal with the new one: no decompression)
// into the open segment and deletes the old segments in the same metadata
// batch. The freed AUs pass through quarantine before reuse (segment.go).

const (
	gcBatchBytes      = 16 << 20 // live bytes moved per GC pass
	mediaDeleteBlocks = 16384    // map entries dropped per deletion batch
)

// lowOnSpace: fewer than an eighth of the AUs (and at least the reserve plus
// four) are free.
func (sa *segAlloc) lowOnSpace() bool {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	free := len(sa.free) + len(sa.quarantine)
	return free < max(sa.aus/8, reserveSegs+4)
}

// idleMaxLive is how live a segment may be for idle GC to collect it: with
// half the AUs or more free, only nearly dead segments (moving little data
// for a whole AU), so that an array with room to spare does not spend its
// CPU and bandwidth relocating data; with less room, any segment under half
// live.
func (sa *segAlloc) idleMaxLive() (maxLive float64, roomy bool) {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	if 2*(len(sa.free)+len(sa.quarantine)) >= sa.aus {
		return gcMaxLiveRoomy, true
	}
	return gcMaxLive, false
}

// Idle GC on a roomy array is also paced: a pass at most every
// gcRoomyEvery, of at most gcRoomyVictims segments (each costs a dedup
// index check per block it ever held, live or dead), so that it takes a
// small share of the CPU from the I/O the array serves.
const (
	gcRoomyEvery   = time.Second
	gcRoomyVictims = 4
)

// gcOnce relocates the live blocks of the emptiest segments. When urgent,
// any segment with dead space qualifies; otherwise see idleMaxLive.
func (s *Store) gcOnce(urgent bool) error {
	maxLive, roomy := s.seg.idleMaxLive()
	limit := 64
	if urgent {
		maxLive = 0.97
	} else if roomy {
		if time.Since(s.gcIdleAt) < gcRoomyEvery {
			return nil
		}
		s.gcIdleAt = time.Now()
		limit = gcRoomyVictims
	}
	victims := s.seg.victims(maxLive, limit)
	if len(victims) == 0 {
		return nil
	}
	fb := s.newFlushBatch()
	var moved int64
	for _, id := range victims {
		if moved >= gcBatchBytes {
			break
		}
		s.seg.mu.RLock()
		rec := s.seg.segs[id]
		var live uint64
		if rec != nil {
			live = rec.liveBytes
		}
		s.seg.mu.RUnlock()
		if rec == nil {
			continue
		}
		// Moving needs room in the open segment or a free AU.
		if int64(live) > s.seg.freeBytes()-int64(s.seg.segPayload) && live > 0 {
			break
		}
		n, err := s.relocate(fb, id)
		if err != nil {
			fb.pk.abort()
			return fmt.Errorf("gc segment %d: %w", id, err)
		}
		moved += n
		fb.freed = append(fb.freed, id)
	}
	if len(fb.freed) == 0 {
		return nil
	}
	if err := fb.writeAndCommit(); err != nil {
		return err
	}
	s.gcStats.segments.Add(uint64(len(fb.freed)))
	s.gcStats.bytes.Add(uint64(moved))
	return nil
}

// relocate moves every live block of segment id into new space.
func (s *Store) relocate(fb *flushBatch, id uint64) (int64, error) {
	au, ok := s.seg.auOf(id)
	if !ok {
		return 0, fmt.Errorf("segment %d has no AU", id)
	}
	lo := reverseKey(id, 0)
	hi := reverseKey(id+1, 0)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return 0, err
	}
	defer it.Close()
	var moved int64
	buf := make([]byte, BlockSize+gcmTag)
	var plain [BlockSize]byte
	var all []sumEntry
	for it.First(); it.Valid(); it.Next() {
		es, err := decodeSummary(it.Value())
		if err != nil {
			return 0, err
		}
		all = append(all, es...)
	}
	if err := it.Error(); err != nil {
		return 0, err
	}
	if err := s.prefetchChanges(fb, all); err != nil {
		return 0, err
	}
	{
		es := all
		for _, e := range es {
			off, fp := e.off, e.fp
			c, err := fb.change(&fp)
			if err != nil {
				return 0, err
			}
			if !c.found || c.loc.seg != id || c.loc.off != off || c.isNew || c.moved {
				continue // dead (or stored elsewhere): nothing to move
			}
			if int64(c.loc.refs)+c.delta <= 0 {
				continue // dies in this batch
			}
			loc := c.loc
			b := buf[:loc.length]
			if err := s.set.Read(s.ctx, au, id, int64(off), b); err != nil {
				return 0, err
			}
			var nonce [12]byte
			var aad [13]byte
			blockAddr(id, off, loc.flags, &nonce, &aad)
			pt, err := s.dek.Open(plain[:0], nonce[:], b, aad[:])
			if err != nil {
				if rerr := s.set.ReadRebuild(s.ctx, au, id, int64(off), b); rerr != nil {
					return 0, fmt.Errorf("block at %d: %w", off, err)
				}
				if pt, err = s.dek.Open(plain[:0], nonce[:], b, aad[:]); err != nil {
					return 0, fmt.Errorf("block at %d: %w", off, err)
				}
			}
			nseg, noff, dst, err := fb.pk.place(int(loc.length))
			if err != nil {
				return 0, err
			}
			blockAddr(nseg, noff, loc.flags, &nonce, &aad)
			s.dek.Seal(dst[:0], nonce[:], pt, aad[:])
			c.moved, c.oldSeg, c.oldOff = true, id, off
			c.loc.seg, c.loc.off = nseg, noff
			moved += int64(loc.length)
		}
	}
	return moved, nil
}

// prefetchChanges looks up, in fingerprint order with one iterator, the
// dedup entries of es that fb does not know yet, and records them in fb as
// fb.change would (one Get per block costs several times more).
func (s *Store) prefetchChanges(fb *flushBatch, es []sumEntry) error {
	var fps []FP
	for i := range es {
		fp := &es[i].fp
		if _, ok := fb.dd[*fp]; ok {
			continue
		}
		if c, ok := fb.prevChange(fp); ok {
			fb.dd[*fp] = c
			continue
		}
		fps = append(fps, *fp)
	}
	if len(fps) == 0 {
		return nil
	}
	slices.SortFunc(fps, func(a, b FP) int { return bytes.Compare(a[:], b[:]) })
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDedup}, UpperBound: []byte{pfxDedup + 1}})
	if err != nil {
		return err
	}
	defer it.Close()
	var k [33]byte
	k[0] = pfxDedup
	for i := range fps {
		fp := &fps[i]
		if _, ok := fb.dd[*fp]; ok {
			continue // a duplicate in the summary
		}
		c := &ddChange{}
		copy(k[1:], fp[:])
		if it.SeekPrefixGE(k[:]) && bytes.Equal(it.Key(), k[:]) {
			l, err := decodeLocation(it.Value())
			if err != nil {
				return err
			}
			c.loc, c.found = l, true
		}
		fb.dd[*fp] = c
	}
	return it.Error()
}

// deleteMedia drops the entries of media that nothing references any more,
// a bounded number per batch, and then the media themselves (releasing
// their parents).
func (s *Store) deleteMedia() error {
	for {
		s.vols.mu.RLock()
		var victim uint64
		for id, m := range s.vols.media {
			if m.deleting {
				victim = id
				break
			}
		}
		s.vols.mu.RUnlock()
		if victim == 0 {
			return nil
		}
		fb := s.newFlushBatch()
		n := 0
		err := s.scanMap(victim, 0, ^uint64(0), func(b uint64, e mapEntry) error {
			if n >= mediaDeleteBlocks {
				return errStop
			}
			n++
			return fb.setEntry(victim, b, e, true, mapEntry{})
		})
		if err != nil && err != errStop {
			return err
		}
		if n < mediaDeleteBlocks {
			// All entries gone: delete the medium and release its parent.
			s.vols.mu.Lock()
			ms := s.vols.media[victim]
			parent := ms.parent
			fb.mediaDel = append(fb.mediaDel, victim)
			delete(fb.mapped, victim)
			if pm := s.vols.media[parent]; parent != 0 && pm != nil {
				pm.refs--
				if pm.refs == 0 {
					pm.deleting = true
				}
				fb.mediaRecs = append(fb.mediaRecs, parent) // encoded at commit time
			}
			s.vols.mu.Unlock()
		}
		if err := fb.commit(); err != nil {
			return err
		}
		if s.ctx.Err() != nil {
			return nil
		}
	}
}

var errStop = fmt.Errorf("stop")

// truncateJob cuts a volume to size bytes (flusher goroutine; the caller
// holds the volume exclusively and has flushed everything pending).
func (s *Store) truncateJob(fb *flushBatch, vol *Volume, size int64) error {
	st := vol.st.Load()
	rec := st.rec
	med := rec.Medium
	keep := uint64(size) / BlockSize // whole blocks kept
	tail := uint64(size) % BlockSize
	if tail != 0 {
		// The block holding the new end keeps its head; its tail reads zero.
		var img [BlockSize]byte
		if err := s.resolveBlock(st.chain, keep, ^uint64(0), img[:]); err != nil {
			return err
		}
		clear(img[tail:])
		if err := s.storeImage(fb, med, keep, img[:]); err != nil {
			return err
		}
		keep++
	}
	err := s.scanMap(med, keep, ^uint64(0), func(b uint64, e mapEntry) error {
		return fb.setEntry(med, b, e, true, mapEntry{})
	})
	if err != nil {
		return err
	}
	s.vols.mu.RLock()
	mrec := s.vols.media[med].mediumRec
	s.vols.mu.RUnlock()
	mrec.limit = min(mrec.limit, keep)
	rec.Size = size
	fb.extra = func(b *pebble.Batch) {
		_ = b.Set(u64Key(pfxMedium, med), mrec.encode(), nil)
		s.putVolume(b, &rec)
	}
	fb.after = append(fb.after, func() {
		s.vols.mu.Lock()
		defer s.vols.mu.Unlock()
		if ms := s.vols.media[med]; ms != nil {
			ms.limit = mrec.limit
		}
		vol.st.Store(&volState{rec: rec, chain: st.chain})
		s.vols.refreshChain(vol)
	})
	return nil
}

// storeImage stores one whole block image into medium m (used by jobs).
func (s *Store) storeImage(fb *flushBatch, m, b uint64, img []byte) error {
	old, had, err := fb.entry(m, b)
	if err != nil {
		return err
	}
	var e mapEntry
	if isZero(img) {
		e.kind = entryZero
	} else {
		r := s.reducers()[0]
		r.h.Reset()
		r.h.Write(img)
		r.h.Sum(e.fp[:0])
		e.kind = entryData
		c, err := fb.change(&e.fp)
		if err != nil {
			return err
		}
		if !c.found && !c.isNew {
			seg, off, dst, err := fb.pk.place(BlockSize + gcmTag)
			if err != nil {
				return err
			}
			c.isNew = true
			c.loc = location{seg: seg, off: off, length: BlockSize + gcmTag}
			var nonce [12]byte
			var aad [13]byte
			blockAddr(seg, off, 0, &nonce, &aad)
			s.dek.Seal(dst[:0], nonce[:], img, aad[:])
		}
		c.delta++
	}
	return fb.setEntry(m, b, old, had, e)
}
