package datapath

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/pierrec/lz4/v4"
	"github.com/zeebo/blake3"

	"vfa/nvram"
	"vfa/ssd"
)

// The flusher: one goroutine that moves pending NVRAM records into segments
// and is the only writer of the block map, the dedup index and the segment
// table. Reduction work (fingerprint, compress, encrypt) runs on a pool of
// workers for each flush.

const (
	flushChunkBlocks = 2048 // blocks resolved and reduced per pipeline pass
	gcMaxLive        = 0.5  // idle GC collects segments less than half live
	gcMaxLiveRoomy   = 0.1  // ... or less than a tenth live while half the AUs are free
)

type mkey struct{ medium, block uint64 }

// chunkScratch holds the buffers of one flush chunk (flusher goroutine only).
type chunkScratch struct {
	imgs       []image
	data, comp []byte
}

type ddChange struct {
	loc    location // committed location (refs = committed count), or the new one
	found  bool     // present in the committed index
	isNew  bool     // stored by this flush
	delta  int64
	moved  bool // relocated by GC: loc is the new address, from the old one
	oldSeg uint64
	oldOff uint32
}

// flushBatch collects one atomic metadata change.
type flushBatch struct {
	s         *Store
	maps      map[mkey]mapEntry // kind 0 = delete the entry
	dd        map[FP]*ddChange
	mapped    map[uint64]int64 // medium -> change in mapped blocks
	segLive   map[uint64][2]int64
	freed     []uint64
	pk        packer
	ckpt      *nvram.Position
	mediaDel  []uint64
	mediaRecs []uint64              // media whose records the commit rewrites from memory (a parent released by deleteMedia)
	extra     func(b *pebble.Batch) // job-specific writes (volume records)
	after     []func()              // run after a successful commit
	prev      *flushBatch           // the batch committing while this one is prepared
	size      int64                 // pending payload bytes this batch covers
}

func (s *Store) newFlushBatch() *flushBatch {
	return &flushBatch{s: s, maps: map[mkey]mapEntry{}, dd: map[FP]*ddChange{}, mapped: map[uint64]int64{},
		segLive: map[uint64][2]int64{}, pk: packer{sa: s.seg}}
}

// entry returns the current map entry (this batch's change first).
func (fb *flushBatch) entry(medium, block uint64) (mapEntry, bool, error) {
	if e, ok := fb.maps[mkey{medium, block}]; ok {
		return e, e.kind != 0, nil
	}
	if fb.prev != nil {
		if e, ok := fb.prev.maps[mkey{medium, block}]; ok {
			return e, e.kind != 0, nil
		}
	}
	return fb.s.mapGet(medium, block)
}

func counts(kind uint8) int64 {
	if kind == entryData || kind == entryZero {
		return 1
	}
	return 0
}

// setEntry changes (medium, block) from old to e (kind 0: delete), keeping
// reference counts and mapped counts. newFP references are added by the
// caller through ref.
func (fb *flushBatch) setEntry(medium, block uint64, old mapEntry, hadOld bool, e mapEntry) error {
	if hadOld && old.kind == entryData {
		if err := fb.ref(&old.fp, -1); err != nil {
			return err
		}
	}
	var d int64
	if hadOld {
		d -= counts(old.kind)
	}
	d += counts(e.kind)
	if d != 0 {
		fb.mapped[medium] += d
	}
	fb.maps[mkey{medium, block}] = e
	return nil
}

// change returns the dedup change record for fp, loading the committed entry.
func (fb *flushBatch) change(fp *FP) (*ddChange, error) {
	if c, ok := fb.dd[*fp]; ok {
		return c, nil
	}
	if c, ok := fb.prevChange(fp); ok {
		fb.dd[*fp] = c
		return c, nil
	}
	loc, ok, err := fb.s.lookupLoc(fp)
	if err != nil {
		return nil, err
	}
	c := &ddChange{loc: loc, found: ok}
	fb.dd[*fp] = c
	return c, nil
}

// prevChange derives this batch's starting state of fp from the batch
// being committed, as if it were committed.
func (fb *flushBatch) prevChange(fp *FP) (*ddChange, bool) {
	if fb.prev == nil {
		return nil, false
	}
	pc, ok := fb.prev.dd[*fp]
	if !ok {
		return nil, false
	}
	refs := int64(pc.loc.refs) + pc.delta
	loc := pc.loc
	if refs <= 0 {
		return &ddChange{}, true // gone (or never kept) after prev
	}
	loc.refs = uint64(refs)
	return &ddChange{loc: loc, found: true}, true
}

// changeKnown is change for a fingerprint whose presence in the committed
// index was just looked up (no second lookup for a new block).
func (fb *flushBatch) changeKnown(fp *FP, found bool) (*ddChange, error) {
	if c, ok := fb.dd[*fp]; ok {
		return c, nil
	}
	if found {
		return fb.change(fp)
	}
	if c, ok := fb.prevChange(fp); ok {
		fb.dd[*fp] = c
		return c, nil
	}
	c := &ddChange{}
	fb.dd[*fp] = c
	return c, nil
}

func (fb *flushBatch) ref(fp *FP, d int64) error {
	c, err := fb.change(fp)
	if err != nil {
		return err
	}
	if !c.found && !c.isNew {
		return fmt.Errorf("datapath: reference to fingerprint %x that is not stored", fp[:8])
	}
	c.delta += d
	return nil
}

// commit writes the batch's segment rows (already done by the caller) and
// metadata in one synced Pebble batch, then updates the in-memory state.
func (fb *flushBatch) commit() error {
	s := fb.s
	b := s.db.NewBatch()
	defer b.Close()
	keys := make([]mkey, 0, len(fb.maps))
	for k := range fb.maps {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		if keys[i].medium != keys[j].medium {
			return keys[i].medium < keys[j].medium
		}
		return keys[i].block < keys[j].block
	})
	for _, k := range keys {
		e := fb.maps[k]
		if e.kind == 0 {
			_ = b.Delete(mapKey(k.medium, k.block), nil)
		} else {
			_ = b.Set(mapKey(k.medium, k.block), e.encode(), nil)
		}
	}
	var uniq, stored int64
	type cacheUpd struct {
		fp  FP
		loc location
		del bool
	}
	var upd []cacheUpd
	summaries := map[uint64][]sumEntry{} // segment -> blocks stored there by this batch
	for fp, c := range fb.dd {
		fp := fp
		refs := int64(c.loc.refs) + c.delta
		if refs < 0 {
			return fmt.Errorf("datapath: reference count of %x would be %d", fp[:8], refs)
		}
		if c.delta == 0 && !c.isNew && !c.moved {
			continue
		}
		if refs == 0 {
			if c.found {
				_ = b.Delete(dedupKey(&fp), nil)
				seg := c.loc.seg
				if c.moved {
					seg = c.oldSeg
				}
				fb.live(seg, -int64(c.loc.length), -1)
				uniq--
				stored -= int64(c.loc.length)
				upd = append(upd, cacheUpd{fp: fp, del: true})
			}
			// A block stored by this flush and dropped again is dead space.
			continue
		}
		loc := c.loc
		loc.refs = uint64(refs)
		_ = b.Set(dedupKey(&fp), loc.encode(), nil)
		if c.isNew {
			summaries[loc.seg] = append(summaries[loc.seg], sumEntry{loc.off, fp})
			fb.live(loc.seg, int64(loc.length), 1)
			uniq++
			stored += int64(loc.length)
		} else if c.moved {
			summaries[loc.seg] = append(summaries[loc.seg], sumEntry{loc.off, fp})
			fb.live(c.oldSeg, -int64(loc.length), -1)
			fb.live(loc.seg, int64(loc.length), 1)
		}
		upd = append(upd, cacheUpd{fp: fp, loc: loc})
	}
	for seg, es := range summaries {
		sort.Slice(es, func(i, j int) bool { return es[i].off < es[j].off })
		_ = b.Set(reverseKey(seg, es[0].off), encodeSummary(es), nil)
	}
	// Segment records.
	sa := s.seg
	sa.mu.Lock()
	newRecs := map[uint64]segmentRec{}
	for _, w := range fb.pk.writes {
		r := *w.rec
		r.rows = uint32(w.firstRow + len(w.buf)/sa.rowPayload)
		r.fill = r.rows * uint32(sa.rowPayload)
		newRecs[w.id] = r
	}
	for id, d := range fb.segLive {
		r, ok := newRecs[id]
		if !ok {
			cur := sa.segs[id]
			if cur == nil {
				sa.mu.Unlock()
				return fmt.Errorf("datapath: live bytes change for unknown segment %d", id)
			}
			r = *cur
		}
		nb, nk := int64(r.liveBytes)+d[0], int64(r.liveBlocks)+d[1]
		if nb < 0 || nk < 0 {
			sa.mu.Unlock()
			return fmt.Errorf("datapath: segment %d live count below zero", id)
		}
		r.liveBytes, r.liveBlocks = uint64(nb), uint64(nk)
		newRecs[id] = r
	}
	sa.mu.Unlock()
	freed := map[uint64]bool{}
	for _, id := range fb.freed {
		freed[id] = true
		_ = b.Delete(u64Key(pfxSegment, id), nil)
		_ = b.DeleteRange(reverseKey(id, 0), reverseKey(id+1, 0), nil)
	}
	for id, r := range newRecs {
		if freed[id] {
			continue
		}
		_ = b.Set(u64Key(pfxSegment, id), r.encode(), nil)
	}
	// Media. Their records are encoded from the in-memory state and
	// committed with vs.mu held throughout, as every other writer of medium
	// records (snapshot, copy, eradicate, resize) does: otherwise one
	// could commit a record encoded before another's change after that
	// change was committed, and a reference count or parent would go back
	// on disk (and count at the next boot).
	vs := s.vols
	vs.mu.Lock()
	written := map[uint64]bool{}
	for m, d := range fb.mapped {
		ms := vs.media[m]
		if ms == nil {
			continue
		}
		nm := int64(ms.mapped) + d
		if nm < 0 {
			vs.mu.Unlock()
			return fmt.Errorf("datapath: medium %d mapped count below zero", m)
		}
		rec := ms.mediumRec
		rec.mapped = uint64(nm)
		_ = b.Set(u64Key(pfxMedium, m), rec.encode(), nil)
		written[m] = true
	}
	for _, m := range fb.mediaRecs {
		if ms := vs.media[m]; ms != nil && !written[m] {
			_ = b.Set(u64Key(pfxMedium, m), ms.mediumRec.encode(), nil)
		}
	}
	if uniq != 0 || stored != 0 {
		v, err := s.getControl("space", 2)
		if err != nil {
			vs.mu.Unlock()
			return err
		}
		_ = b.Set(controlKey("space"), encodeU64s(uint64(int64(v[0])+uniq), uint64(int64(v[1])+stored)), nil)
	}
	if fb.ckpt != nil {
		_ = b.Set(controlKey("checkpoint"), encodeU64s(fb.ckpt.Seq, uint64(fb.ckpt.Off), uint64(fb.ckpt.Epoch)), nil)
	}
	for _, m := range fb.mediaDel {
		_ = b.Delete(u64Key(pfxMedium, m), nil)
	}
	if fb.extra != nil {
		fb.extra(b)
	}
	// Readers must not cache what they look up while the dedup entries
	// change (locCache.seq); the cache gets the batch's values below.
	s.cache.beginCommit()
	defer s.cache.endCommit()
	if err := b.Commit(pebble.Sync); err != nil {
		vs.mu.Unlock()
		return fmt.Errorf("metadata commit: %w", err)
	}
	// In-memory state follows the commit.
	for m, d := range fb.mapped {
		if ms := vs.media[m]; ms != nil {
			ms.mapped = uint64(int64(ms.mapped) + d)
		}
	}
	for _, m := range fb.mediaDel {
		delete(vs.media, m)
	}
	vs.mu.Unlock()
	sa.mu.Lock()
	for id, r := range newRecs {
		if cur := sa.segs[id]; cur != nil && !freed[id] {
			*cur = r
		}
	}
	sa.mu.Unlock()
	for _, u := range upd {
		if u.del {
			s.cache.del(&u.fp)
		} else {
			s.fpf.add(&u.fp)
			s.cache.put(&u.fp, u.loc)
		}
	}
	for _, id := range fb.freed {
		sa.release(id)
	}
	for _, f := range fb.after {
		f()
	}
	return nil
}

// writeAndCommit writes the batch's segment rows, then commits its metadata;
// on failure nothing of it is visible and the open segment is abandoned.
func (fb *flushBatch) writeAndCommit() error {
	if !fb.pk.finished {
		fb.pk.finish()
	}
	t0 := time.Now()
	if err := fb.pk.write(fb.s.ctx); err != nil {
		fb.pk.abort()
		return err
	}
	t1 := time.Now()
	if err := fb.commit(); err != nil {
		fb.pk.abort()
		return err
	}
	fb.pk.releaseBufs()
	st := &fb.s.flushStats
	st.writeNanos.Add(uint64(t1.Sub(t0)))
	st.commitNanos.Add(uint64(time.Since(t1)))
	st.batches.Add(1)
	return nil
}

func (fb *flushBatch) live(seg uint64, bytes, blocks int64) {
	d := fb.segLive[seg]
	d[0] += bytes
	d[1] += blocks
	fb.segLive[seg] = d
}

// --- the flusher loop -------------------------------------------------------

func (s *Store) kickFlush() {
	select {
	case s.flushC <- struct{}{}:
	default:
	}
}

type job struct {
	fn   func(fb *flushBatch) error
	done chan error
}

func (s *Store) flusher() {
	defer s.wg.Done()
	timer := time.NewTimer(s.o.FlushDelay)
	defer timer.Stop()
	s.checkHostSpace(true)
	for {
		stopping := false
		select {
		case <-s.ctx.Done():
			return // abandoned (crypto-erase): nothing is drained
		case <-s.stopC:
			stopping = true
		case <-s.flushC:
		case <-timer.C:
		}
		s.seg.recycle()
		// While the host file system is full, flushes (and GC, which
		// writes too) are retried only every hostFullRetry.
		held := s.hostFull.Load() && !stopping && time.Since(s.hostFullTry) < hostFullRetry
		if s.hostFull.Load() && !held {
			s.hostFullTry = time.Now()
		}
		batches := s.flushStats.batches.Load()
		if !held {
			if err := s.flushPending(false); err != nil {
				s.failFlush(err)
			} else if s.hostFull.Load() && (s.flushStats.batches.Load() > batches || (s.pend.bytesNow() == 0 && s.hostHasRoom())) {
				// A flush wrote the SSDs again, or (nothing to flush: GC's
				// write had failed) the file system reports room again.
				s.hostFull.Store(false)
				s.o.Events(Event{Time: s.o.Now(), Severity: Critical, Code: "host.full", Component: "array", Clear: true,
					Message: "the SSD files can be written again; writes are accepted"})
			}
		}
		s.runJobs()
		s.rotateIfDue()
		s.checkDeviceSet()
		s.checkFreeSpace()
		s.checkHostSpace(false)
		if err := s.deleteMedia(); err != nil {
			s.failFlush(err)
		}
		if !held && (s.pend.bytesNow() == 0 || s.seg.lowOnSpace()) {
			if err := s.gcOnce(s.seg.lowOnSpace()); err != nil {
				s.failFlush(err)
			}
		}
		if stopping {
			// Drain what is pending so a clean shutdown replays nothing.
			if err := s.flushPending(true); err != nil {
				s.failFlush(err)
			}
			s.runJobs()
			return
		}
		timer.Reset(s.o.FlushDelay)
	}
}

// hostFullRetry: how often a flush is tried while the host file system is
// full.
const hostFullRetry = time.Second

// errHostFull is what writers get while the host file system is full.
var errHostFull = fmt.Errorf("%w: the file system holding the SSD files is full", ErrNoSpace)

// Free space alerts: below spaceLowPercent free an alert opens; it closes
// again above spaceLowPercent+2 (so it does not flap).
const spaceLowPercent = 20

func (s *Store) checkFreeSpace() {
	sa := s.seg
	capacity := int64(sa.aus) * int64(sa.segPayload)
	if capacity == 0 {
		return
	}
	pct := float64(sa.freeBytes()) * 100 / float64(capacity)
	switch {
	case !s.spaceLow && pct < spaceLowPercent:
		s.spaceLow = true
		s.event(Warning, "space.low", "array", fmt.Sprintf("free space below %d%% (%.1f%% free)", spaceLowPercent, pct))
	case s.spaceLow && pct > spaceLowPercent+2:
		s.spaceLow = false
		s.o.Events(Event{Time: s.o.Now(), Severity: Warning, Code: "space.low", Component: "array", Clear: true,
			Message: fmt.Sprintf("free space back above %d%% (%.1f%% free)", spaceLowPercent, pct)})
	}
}

func (s *Store) failFlush(err error) {
	if errors.Is(err, ssd.ErrHostFull) {
		// Not sticky either, and not the devices' fault: the file system
		// under the SSD files is full. New writes are refused with a space
		// error (acknowledged ones are safe in NVRAM) until a flush
		// succeeds; the flusher retries every hostFullRetry.
		if !s.hostFull.Swap(true) {
			s.o.Logger.Error("flush failed: host file system full", "err", err)
			s.event(Critical, "host.full", "array", "the file system holding the SSD files is full: new writes are refused until there is space (acknowledged writes are safe in NVRAM): "+err.Error())
			s.pend.mu.Lock()
			s.pend.cond.Broadcast() // writers waiting for room get the space error
			s.pend.mu.Unlock()
		}
		return
	}
	if errors.Is(err, ErrNoSpace) {
		// Not sticky: GC may free space; NVRAM still holds the data.
		s.o.Logger.Warn("flush waits for space", "err", err)
		return
	}
	s.flushedMu.Lock()
	first := s.flushErr == nil
	if first {
		s.flushErr = fmt.Errorf("%w: data path failed: %v", ErrMedium, err)
	}
	s.flushedMu.Unlock()
	s.flushed.Broadcast()
	if first {
		s.o.Logger.Error("flush failed", "err", err)
		s.event(Critical, "datapath.failed", "datapath", "flushing NVRAM to the SSDs failed: "+err.Error())
	}
}

// jobs run on the flusher goroutine between flushes.
func (s *Store) runJob(fn func(fb *flushBatch) error) error {
	if err := s.usable(); err != nil {
		return err
	}
	j := job{fn: fn, done: make(chan error, 1)}
	s.jobMu.Lock()
	s.jobs = append(s.jobs, j)
	s.jobMu.Unlock()
	s.kickFlush()
	return <-j.done
}

func (s *Store) runJobs() {
	s.jobMu.Lock()
	jobs := s.jobs
	s.jobs = nil
	s.jobMu.Unlock()
	for _, j := range jobs {
		fb := s.newFlushBatch()
		err := j.fn(fb)
		if err == nil {
			err = fb.writeAndCommit()
		} else {
			fb.pk.abort()
		}
		j.done <- err
	}
}

// flushAll waits until everything pending now has been flushed.
func (s *Store) flushAll() error {
	s.pend.mu.RLock()
	var target uint64
	if n := len(s.pend.queue); n > 0 {
		target = s.pend.queue[n-1].seq
	}
	s.pend.mu.RUnlock()
	if target == 0 {
		return s.usable()
	}
	s.kickFlush()
	s.flushedMu.Lock()
	defer s.flushedMu.Unlock()
	for s.flushedSeq < target && s.flushErr == nil && !s.closed.Load() {
		s.flushed.Wait()
	}
	return s.flushErr
}

// waitPendingRoom blocks a writer while the pending index is over its limit.
func (s *Store) waitPendingRoom(ctx context.Context, n int64) error {
	p := s.pend
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bytes+n <= s.o.PendingLimit || p.bytes == 0 {
		return nil
	}
	s.kickFlush()
	stop := context.AfterFunc(ctx, func() {
		p.mu.Lock()
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer stop()
	for p.bytes+n > s.o.PendingLimit && p.bytes > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.hostFull.Load() {
			return errHostFull
		}
		if s.closed.Load() {
			return ErrClosed
		}
		p.cond.Wait()
	}
	return nil
}

// --- one flush ----------------------------------------------------------------

// image is one block the flush stores.
type image struct {
	medium, block uint64
	kind          uint8 // entryData, entryZero, entryUnmapped (0 = skip)
	data          []byte
	fp            FP
	old           mapEntry
	hadOld        bool
	found         bool // fp is in the committed index
	comp          []byte
	compLen       int // 0 = store raw
	// set by the packer
	store bool
	seg   uint64
	off   uint32
	dst   []byte
	flags uint8
}

type rangeUnmap struct {
	medium, first, last uint64 // whole blocks [first, last)
}

// errDrain: the next batch needs the previous one committed first.
var errDrain = errors.New("drain the flush pipeline first")

// prepared is a flush batch ready to be written and committed.
type prepared struct {
	fb     *flushBatch
	n      int // ops of the pending queue it covers
	maxSeq uint64
	pos    nvram.Position
}

// flushPending flushes everything pending (up to FlushBytes left), as a
// two-stage pipeline: while one batch's rows are written and its metadata
// committed, the next batch is reduced.
func (s *Store) flushPending(untilEmpty bool) error {
	var inflight *prepared
	var done chan error
	wait := func() error {
		if done == nil {
			return nil
		}
		err := <-done
		done, inflight = nil, nil
		return err
	}
	defer wait()
	var after uint64
	for {
		var prev *flushBatch
		if inflight != nil {
			prev = inflight.fb
		}
		p, err := s.prepareFlush(after, prev)
		if errors.Is(err, errDrain) {
			if err := wait(); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if werr := wait(); werr != nil {
				return werr
			}
			return err
		}
		if p == nil {
			return wait()
		}
		if err := wait(); err != nil {
			p.fb.pk.abort()
			return err
		}
		inflight, done = p, make(chan error, 1)
		after = p.maxSeq
		go func(p *prepared, done chan error) { done <- s.commitFlush(p) }(p, done)
		if !untilEmpty && s.pend.bytesNow()-p.fb.size < s.o.FlushBytes {
			return wait()
		}
	}
}

// prepareFlush reduces the pending ops after seq `after` into a batch,
// seeing prev (the batch being committed, if any) as if it were committed.
func (s *Store) prepareFlush(after uint64, prev *flushBatch) (*prepared, error) {
	ops := s.pend.queueAfter(after)
	if len(ops) == 0 {
		return nil, nil
	}
	// Take a prefix of about two flush sizes.
	var size int64
	n := 0
	hasUnmap := false
	for n < len(ops) {
		size += ops[n].size
		hasUnmap = hasUnmap || ops[n].op == opUnmap
		n++
		if size >= 2*s.o.FlushBytes {
			break
		}
	}
	if hasUnmap && prev != nil {
		return nil, errDrain
	}
	ops = ops[:n]
	maxSeq := ops[n-1].seq
	fb := s.newFlushBatch()
	fb.prev = prev
	fb.size = size
	pos := ops[n-1].pos
	fb.ckpt = &pos

	s.vols.mu.RLock()
	alive := func(m uint64) bool {
		ms := s.vols.media[m]
		return ms != nil && !ms.deleting
	}
	seen := map[mkey]bool{}
	var touched []mkey
	var unmaps []rangeUnmap
	for _, o := range ops {
		if !alive(o.medium) {
			continue
		}
		first, last := o.sector/sectorsPerBlock, (o.end()-1)/sectorsPerBlock
		if o.op == opUnmap {
			// Whole blocks go through range deletion; partial edges are images.
			fFull := (o.sector + sectorsPerBlock - 1) / sectorsPerBlock
			lFull := o.end() / sectorsPerBlock
			if fFull < lFull {
				unmaps = append(unmaps, rangeUnmap{o.medium, fFull, lFull})
				for b := first; b <= last; b++ {
					if b >= fFull && b < lFull {
						continue
					}
					if k := (mkey{o.medium, b}); !seen[k] {
						seen[k] = true
						touched = append(touched, k)
					}
				}
				continue
			}
		}
		for b := first; b <= last; b++ {
			if k := (mkey{o.medium, b}); !seen[k] {
				seen[k] = true
				touched = append(touched, k)
			}
		}
	}
	s.vols.mu.RUnlock()

	tReduce := time.Now()
	// Range unmaps first; images computed below override them where a later
	// op wrote into the range.
	for _, u := range unmaps {
		if err := s.unmapRange(fb, u, seen, maxSeq); err != nil {
			return nil, err
		}
	}
	for i := 0; i < len(touched); i += flushChunkBlocks {
		if err := s.flushChunk(fb, touched[i:min(i+flushChunkBlocks, len(touched))], maxSeq); err != nil {
			fb.pk.abort()
			return nil, err
		}
	}
	fb.pk.finish()
	s.flushStats.reduceNanos.Add(uint64(time.Since(tReduce)))
	return &prepared{fb: fb, n: n, maxSeq: maxSeq, pos: pos}, nil
}

// commitFlush writes a prepared batch's rows, commits its metadata, then
// releases its NVRAM space and pending entries.
func (s *Store) commitFlush(p *prepared) error {
	if err := p.fb.writeAndCommit(); err != nil {
		return err
	}
	if err := s.log.Release(p.pos); err != nil {
		return fmt.Errorf("nvram release: %w", err)
	}
	s.pend.remove(p.n)
	s.flushedMu.Lock()
	s.flushedSeq = p.maxSeq
	s.flushedMu.Unlock()
	s.flushed.Broadcast()
	return nil
}

// mediumChain is the read chain of a medium itself (vs.mu held).
func (vs *volumes) mediumChain(m uint64) []chainLink {
	var chain []chainLink
	limit := ^uint64(0)
	for m != 0 {
		ms := vs.media[m]
		if ms == nil {
			break
		}
		chain = append(chain, chainLink{medium: m, limit: limit})
		if ms.parent == 0 {
			break
		}
		limit = min(limit, ms.limit)
		m = ms.parent
	}
	return chain
}

// unmapRange deallocates whole blocks [first, last) of a medium: entries in
// its own map are deleted; where a parent could show through, a tombstone
// hides it.
func (s *Store) unmapRange(fb *flushBatch, u rangeUnmap, seen map[mkey]bool, maxSeq uint64) error {
	s.vols.mu.RLock()
	chain := s.vols.mediumChain(u.medium)
	s.vols.mu.RUnlock()
	hide := map[uint64]bool{}
	// Blocks the parents hold (committed or pending) need tombstones.
	for _, link := range chain[1:] {
		hi := min(u.last, link.limit)
		if u.first >= hi {
			continue
		}
		if err := s.scanMap(link.medium, u.first, hi, func(b uint64, _ mapEntry) error {
			hide[b] = true
			return nil
		}); err != nil {
			return err
		}
		s.pend.mu.RLock()
		if pm := s.pend.media[link.medium]; pm != nil {
			for b := range pm.blocks {
				if b >= u.first && b < hi {
					hide[b] = true
				}
			}
			for _, r := range pm.ranges {
				for b := max(u.first, r.sector/sectorsPerBlock); b < min(hi, (r.end()+sectorsPerBlock-1)/sectorsPerBlock); b++ {
					hide[b] = true
				}
			}
		}
		s.pend.mu.RUnlock()
	}
	// Own entries (committed, plus changes already in this batch).
	own := map[uint64]mapEntry{}
	if err := s.scanMap(u.medium, u.first, u.last, func(b uint64, e mapEntry) error {
		own[b] = e
		return nil
	}); err != nil {
		return err
	}
	for k, e := range fb.maps {
		if k.medium == u.medium && k.block >= u.first && k.block < u.last {
			if e.kind == 0 {
				delete(own, k.block)
			} else {
				own[k.block] = e
			}
		}
	}
	for b := range hide {
		if seen[mkey{u.medium, b}] {
			continue // an image decides this block
		}
		old, had := own[b]
		if had && old.kind == entryUnmapped {
			continue
		}
		if err := fb.setEntry(u.medium, b, old, had, mapEntry{kind: entryUnmapped}); err != nil {
			return err
		}
	}
	for b, old := range own {
		if hide[b] || seen[mkey{u.medium, b}] {
			continue
		}
		if err := fb.setEntry(u.medium, b, old, true, mapEntry{}); err != nil {
			return err
		}
	}
	return nil
}

// scanMap calls fn for each committed entry of medium in blocks [lo, hi).
func (s *Store) scanMap(medium, lo, hi uint64, fn func(b uint64, e mapEntry) error) error {
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: mapKey(medium, lo), UpperBound: mapKey(medium, hi)})
	if err != nil {
		return err
	}
	defer it.Close()
	for it.First(); it.Valid(); it.Next() {
		_, b, ok := decodeMapKey(it.Key())
		if !ok {
			return fmt.Errorf("%w: map key", errBadMeta)
		}
		e, err := decodeMapEntry(it.Value())
		if err != nil {
			return err
		}
		if err := fn(b, e); err != nil {
			return err
		}
	}
	return it.Error()
}

// parallel runs fn(i) for i in [0, n) on the store's workers.
func (s *Store) parallel(n int, fn func(w, i int) error) error {
	workers := min(s.o.Workers, n)
	if workers <= 1 {
		for i := 0; i < n; i++ {
			if err := fn(0, i); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := fn(w, i); err != nil {
					once.Do(func() { firstErr = err })
					return
				}
			}
		}(w)
	}
	wg.Wait()
	return firstErr
}

// worker scratch state, one per reduction worker.
type reducer struct {
	h   *blake3.Hasher
	lz  lz4.Compressor
	tmp [BlockSize]byte
}

func (s *Store) reducers() []*reducer {
	s.redOnce.Do(func() {
		s.reds = make([]*reducer, max(1, s.o.Workers))
		for i := range s.reds {
			h, err := blake3.NewKeyed(s.fpKey)
			if err != nil {
				panic(err)
			}
			s.reds[i] = &reducer{h: h}
		}
	})
	return s.reds
}

func isZero(b []byte) bool {
	for len(b) >= 8 {
		if binary.LittleEndian.Uint64(b) != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// flushChunk resolves, reduces, packs and encrypts a run of touched blocks.
// Lookups are batched: the chunk's map keys and fingerprints are sorted and
// looked up with one iterator per worker, not one Get each.
func (s *Store) flushChunk(fb *flushBatch, keys []mkey, maxSeq uint64) error {
	tA := time.Now()
	cb := lz4.CompressBlockBound(BlockSize)
	sc := &s.chunk // flusher-owned scratch, reused by every chunk
	if cap(sc.imgs) < len(keys) {
		sc.imgs = make([]image, flushChunkBlocks)
		sc.data = make([]byte, flushChunkBlocks*BlockSize)
		sc.comp = make([]byte, flushChunkBlocks*cb)
	}
	imgs := sc.imgs[:len(keys)]
	clear(imgs)
	data, comp := sc.data, sc.comp
	reds := s.reducers()
	s.vols.mu.RLock()
	chains := map[uint64][]chainLink{}
	for _, k := range keys {
		if _, ok := chains[k.medium]; !ok {
			chains[k.medium] = s.vols.mediumChain(k.medium)
		}
	}
	s.vols.mu.RUnlock()
	// A: resolve, classify and fingerprint.
	err := s.parallel(len(keys), func(w, i int) error {
		im := &imgs[i]
		im.medium, im.block = keys[i].medium, keys[i].block
		kind, d, err := s.flushImage(chains[im.medium], im.block, maxSeq, data[i*BlockSize:(i+1)*BlockSize])
		if err != nil {
			return err
		}
		im.kind, im.data = kind, d
		if kind == entryData {
			r := reds[w]
			r.h.Reset()
			r.h.Write(im.data)
			r.h.Sum(im.fp[:0])
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.phase[0].Add(int64(time.Since(tA)))
	tA = time.Now()
	// B: old map entries and dedup lookups, in key order.
	if err := s.lookupChunk(fb, imgs); err != nil {
		return err
	}
	s.phase[1].Add(int64(time.Since(tA)))
	tA = time.Now()
	// C: compress the blocks that are new to the index.
	err = s.parallel(len(imgs), func(w, i int) error {
		im := &imgs[i]
		if im.kind != entryData || im.found {
			return nil
		}
		dst := comp[i*cb : (i+1)*cb]
		s.flushStats.compressed.Add(1)
		n, err := reds[w].lz.CompressBlock(im.data, dst)
		if err == nil && n > 0 && n < BlockSize-64 {
			im.comp, im.compLen = dst[:n], n
		}
		return nil
	})
	if err != nil {
		return err
	}
	s.phase[2].Add(int64(time.Since(tA)))
	tA = time.Now()
	// Pack in order (serial): dedup decisions, addresses, map changes.
	var seal []*image
	for i := range imgs {
		im := &imgs[i]
		if im.kind == 0 {
			continue
		}
		old, had := im.old, im.hadOld
		var e mapEntry
		switch im.kind {
		case entryZero:
			e = mapEntry{kind: entryZero}
		case entryUnmapped:
			s.vols.mu.RLock()
			chain := s.vols.mediumChain(im.medium)
			s.vols.mu.RUnlock()
			if len(chain) > 1 && im.block < chain[1].limit {
				e = mapEntry{kind: entryUnmapped}
			}
		case entryData:
			e = mapEntry{kind: entryData, fp: im.fp}
			c, err := fb.changeKnown(&im.fp, im.found)
			if err != nil {
				return err
			}
			if !c.found && !c.isNew {
				n := BlockSize
				if im.compLen > 0 {
					n = im.compLen
				}
				seg, off, _, err := fb.pk.place(n + gcmTag)
				if err != nil {
					return err
				}
				c.isNew = true
				c.loc = location{seg: seg, off: off, length: uint32(n + gcmTag)}
				if im.compLen > 0 {
					c.loc.flags = flagLZ4
				}
				im.store, im.seg, im.off, im.flags = true, seg, off, c.loc.flags
				seal = append(seal, im)
			}
			c.delta++
			e.hint = c.loc
			e.hint.refs = 0
		}
		if !had && e.kind == 0 {
			continue
		}
		if had && old.sameBlock(e) {
			// Same content: the new reference replaces the old one.
			if e.kind == entryData {
				fb.dd[im.fp].delta--
			}
			continue
		}
		if err := fb.setEntry(im.medium, im.block, old, had, e); err != nil {
			return err
		}
	}
	s.phase[3].Add(int64(time.Since(tA)))
	tA = time.Now()
	defer func() { s.phase[4].Add(int64(time.Since(tA))) }()
	// Encrypt the new blocks in parallel into their segment buffers.
	for _, im := range seal {
		n := BlockSize
		if im.flags&flagLZ4 != 0 {
			n = len(im.comp)
		}
		im.dst = fb.pk.slot(im.seg, im.off, n+gcmTag)
	}
	return s.parallel(len(seal), func(w, i int) error {
		im := seal[i]
		src := im.data
		if im.flags&flagLZ4 != 0 {
			src = im.comp
		}
		var nonce [12]byte
		var aad [13]byte
		blockAddr(im.seg, im.off, im.flags, &nonce, &aad)
		out := s.dek.Seal(im.dst[:0], nonce[:], src, aad[:])
		if len(out) != len(im.dst) || &out[0] != &im.dst[0] {
			return fmt.Errorf("datapath: sealed block does not fit its slot")
		}
		return nil
	})
}

const gcmTag = 16

// blockAddr derives a block's GCM nonce and AAD from its address: the nonce
// is unique because (segment id, offset) is written once; the AAD binds the
// address and flags so a block cannot be moved or reinterpreted.
func blockAddr(seg uint64, off uint32, flags uint8, nonce *[12]byte, aad *[13]byte) {
	binary.BigEndian.PutUint64(nonce[:8], seg)
	binary.BigEndian.PutUint32(nonce[8:], off)
	copy(aad[:12], nonce[:])
	aad[12] = flags
}

// lookupChunk fills in each image's old map entry (this batch's changes
// first) and whether its fingerprint is in the committed dedup index, using
// sorted iterator seeks.
func (s *Store) lookupChunk(fb *flushBatch, imgs []image) error {
	idx := make([]int, 0, len(imgs))
	fps := make([]int, 0, len(imgs))
	for i := range imgs {
		im := &imgs[i]
		if im.kind == 0 {
			continue
		}
		idx = append(idx, i)
		if im.kind != entryData {
			continue
		}
		if c, ok := fb.prevChange(&im.fp); ok {
			im.found = c.found
		} else if _, ok := s.cache.get(&im.fp); ok {
			im.found = true
		} else if s.fpf.mayContain(&im.fp) {
			fps = append(fps, i)
		} // else: never stored, no lookup needed
	}
	// Map entries in (medium, block) order: increasing SeekGE positions let
	// the iterator step forward instead of seeking afresh.
	sort.Slice(idx, func(a, b int) bool {
		x, y := &imgs[idx[a]], &imgs[idx[b]]
		if x.medium != y.medium {
			return x.medium < y.medium
		}
		return x.block < y.block
	})
	// Fingerprints in order, split over the workers; bloom-filtered prefix
	// seeks, since most new fingerprints are absent.
	sort.Slice(fps, func(a, b int) bool { return bytes.Compare(imgs[fps[a]].fp[:], imgs[fps[b]].fp[:]) < 0 })
	workers := max(1, min(s.o.Workers, len(fps)/64))
	per := (len(fps) + workers - 1) / max(workers, 1)
	return s.parallel(workers+1, func(w, task int) error {
		if task == workers {
			return s.lookupMapEntries(fb, imgs, idx)
		}
		lo, hi := task*per, min((task+1)*per, len(fps))
		if lo >= hi {
			return nil
		}
		it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDedup}, UpperBound: []byte{pfxDedup + 1}})
		if err != nil {
			return err
		}
		defer it.Close()
		var k [33]byte
		k[0] = pfxDedup
		for _, i := range fps[lo:hi] {
			im := &imgs[i]
			copy(k[1:], im.fp[:])
			if it.SeekPrefixGE(k[:]) && bytes.Equal(it.Key(), k[:]) {
				l, err := decodeLocation(it.Value())
				if err != nil {
					return err
				}
				s.cache.put(&im.fp, l)
				im.found = true
			}
		}
		return it.Error()
	})
}

// lookupMapEntries fills in the old map entry of each image (idx sorted by
// medium and block): this batch's changes first, then the batch being
// committed, then the committed map.
func (s *Store) lookupMapEntries(fb *flushBatch, imgs []image, idx []int) error {
	if len(idx) == 0 {
		return nil
	}
	first, last := &imgs[idx[0]], &imgs[idx[len(idx)-1]]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: mapKey(first.medium, first.block), UpperBound: mapKey(last.medium, last.block+1)})
	if err != nil {
		return err
	}
	defer it.Close()
	var k [17]byte
	k[0] = pfxMap
	valid, exhausted := false, false
	for n, i := range idx {
		im := &imgs[i]
		if e, ok := fb.maps[mkey{im.medium, im.block}]; ok {
			im.old, im.hadOld = e, e.kind != 0
			continue
		}
		if fb.prev != nil {
			if e, ok := fb.prev.maps[mkey{im.medium, im.block}]; ok {
				im.old, im.hadOld = e, e.kind != 0
				continue
			}
		}
		if exhausted {
			continue // no committed entries at or beyond the last seek
		}
		putBE64(k[1:], im.medium)
		putBE64(k[9:], im.block)
		if n == 0 || !valid || bytes.Compare(it.Key(), k[:]) < 0 {
			valid = it.SeekGE(k[:])
			exhausted = !valid
		}
		if valid && bytes.Equal(it.Key(), k[:]) {
			e, err := decodeMapEntry(it.Value())
			if err != nil {
				return err
			}
			im.old, im.hadOld = e, true
		}
	}
	return it.Error()
}

// flushImage computes the new content of block b of a medium (chain[0]) from
// pending ops with seq <= maxSeq and what is stored below them, and says
// which kind of entry it becomes.
func (s *Store) flushImage(chain []chainLink, b uint64, maxSeq uint64, out []byte) (uint8, []byte, error) {
	var known, unm uint8
	s.pend.mu.RLock()
	pm := s.pend.media[chain[0].medium]
	if whole := pm.wholeBlock(b, maxSeq); whole != nil {
		// The newest op rewrote the whole block: use its data in place (it
		// stays in the pending index until this batch is committed).
		s.pend.mu.RUnlock()
		if isZero(whole) {
			return entryZero, whole, nil
		}
		return entryData, whole, nil
	}
	known = pm.resolve(b, maxSeq, out, known, &unm)
	s.pend.mu.RUnlock()
	if known == 0 {
		return 0, out, nil // nothing of this medium's pending ops touches it (deleted medium)
	}
	if known != 0xff {
		// Read-modify-write: the rest comes from what is stored (this medium's
		// committed map first, then its parents).
		var tmp [BlockSize]byte
		if err := s.readBlockFrom(chain, b, maxSeq, tmp[:], true); err != nil {
			return 0, nil, err
		}
		fillUnknown(out, known, tmp[:])
		unm = 0
	}
	if unm == 0xff {
		return entryUnmapped, out, nil
	}
	if isZero(out) {
		return entryZero, out, nil
	}
	return entryData, out, nil
}

// readBlockFrom resolves block b through chain, skipping chain[0]'s pending
// ops when skipOwnPending (the caller resolved those already).
func (s *Store) readBlockFrom(chain []chainLink, b uint64, maxSeq uint64, out []byte, skipOwnPending bool) error {
	if !skipOwnPending {
		return s.resolveBlock(chain, b, maxSeq, out)
	}
	e, ok, err := s.mapGet(chain[0].medium, b)
	if err != nil {
		return err
	}
	if ok {
		if e.kind != entryData {
			clear(out)
			return nil
		}
		return s.loadEntryRetry(&e, out)
	}
	if len(chain) == 1 || b >= chain[1].limit {
		clear(out)
		return nil
	}
	return s.resolveBlock(chain[1:], b, maxSeq, out)
}

func (s *Store) loadEntryRetry(e *mapEntry, out []byte) error {
	fp := &e.fp
	err := s.loadEntry(e, out)
	if errors.Is(err, errMoved) {
		// Only the flusher moves or drops blocks, and this is the flusher.
		return fmt.Errorf("%w: block %x is referenced but not stored", ErrMedium, fp[:8])
	}
	return err
}

var _ = bytes.Equal
