package datapath

import (
	"context"
	"encoding/binary"
	"fmt"
	"slices"
	"sync"

	"github.com/cockroachdb/pebble/v2"
)

// Segments: allocation units, segment ids and the open segment.
//
// A segment is one AU index on every SSD. Blocks are packed back to back into
// its payload; each flush appends whole stripe rows (the last one padded), so
// rows, once written, are never written again. Segment ids come from a
// counter whose reservations are made durable before any id is used, so an id
// (and with it every GCM nonce derived from a block address) is never reused,
// even across crashes.

type segAlloc struct {
	s          *Store
	rowPayload int
	segPayload int
	aus        int

	mu         sync.RWMutex // guards segs (readers map segment ids to AUs)
	segs       map[uint64]*segmentRec
	free       []uint32 // AUs ready for new segments
	quarantine []uint32 // AUs freed by GC, reusable after the read gate drains
	nextID     uint64
	idLimit    uint64 // ids below this are reserved durably

	// gate: readers hold it shared while they address a segment; recycle
	// takes it exclusively so no read can land in a reused AU.
	gate sync.RWMutex

	open *openSeg  // changed by the flusher under mu
	bufs sync.Pool // segment payload buffers
}

type openSeg struct {
	id      uint64
	au      uint32
	rec     *segmentRec
	nextRow int // rows handed out to flushes (committed or not)
}

// segWrite is the part of one segment a flush writes: rows [firstRow, ...).
type segWrite struct {
	id       uint64
	au       uint32
	rec      *segmentRec
	firstRow int
	buf      []byte // payload from firstRow*rowPayload
}

func loadSegments(s *Store) (*segAlloc, error) {
	sa := &segAlloc{s: s, rowPayload: s.set.RowPayload(), segPayload: s.set.SegmentPayload(), aus: s.set.AUCount(),
		segs: map[uint64]*segmentRec{}}
	v, err := s.getControl("segid", 1)
	if err != nil {
		return nil, err
	}
	sa.nextID, sa.idLimit = v[0], v[0]
	used := make([]bool, sa.aus)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxSegment}, UpperBound: []byte{pfxSegment + 1}})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		rec, err := decodeSegment(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		id := binary.BigEndian.Uint64(it.Key()[1:])
		if int(rec.au) >= sa.aus || used[rec.au] {
			it.Close()
			return nil, fmt.Errorf("%w: segment %d claims AU %d", errBadMeta, id, rec.au)
		}
		used[rec.au] = true
		r := rec
		sa.segs[id] = &r
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	for au := sa.aus - 1; au >= 0; au-- {
		if !used[au] {
			sa.free = append(sa.free, uint32(au))
		}
	}
	return sa, nil
}

// auOf maps a segment id to its AU.
func (sa *segAlloc) auOf(id uint64) (int, bool) {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	r, ok := sa.segs[id]
	if !ok {
		return 0, false
	}
	return int(r.au), true
}

// freeBytes is an estimate of the payload space new data can still use.
func (sa *segAlloc) freeBytes() int64 {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	n := int64(len(sa.free)+len(sa.quarantine)) * int64(sa.segPayload)
	if o := sa.open; o != nil {
		n += int64(sa.segPayload) - int64(o.rec.rows)*int64(sa.rowPayload)
	}
	return n
}

// reserveSegs is the space kept back so that GC can always make progress.
const reserveSegs = 2

// admit says whether need more bytes may enter NVRAM: everything pending
// must still fit, uncompressed, in free space beyond the GC reserve.
func (sa *segAlloc) admit(need int64) bool {
	free := sa.freeBytes() - reserveSegs*int64(sa.segPayload)
	return sa.s.pend.bytesNow()+need <= free
}

// newSegment opens a segment on a free AU (flusher only). It persists a new
// id reservation first when the current one is used up.
func (sa *segAlloc) newSegment() (*openSeg, error) {
	sa.mu.Lock()
	if len(sa.free) == 0 {
		sa.mu.Unlock()
		return nil, ErrNoSpace
	}
	au := sa.free[len(sa.free)-1]
	sa.mu.Unlock()
	if sa.nextID >= sa.idLimit {
		limit := sa.nextID + segIDReserve
		if err := sa.s.db.Set(controlKey("segid"), encodeU64s(limit), pebble.Sync); err != nil {
			return nil, fmt.Errorf("reserve segment ids: %w", err)
		}
		sa.idLimit = limit
	}
	id := sa.nextID
	sa.nextID++
	sa.mu.Lock()
	sa.free = sa.free[:len(sa.free)-1]
	rec := &segmentRec{au: au}
	sa.segs[id] = rec
	sa.mu.Unlock()
	return &openSeg{id: id, au: au, rec: rec}, nil
}

// packer assigns payload addresses to blocks during one flush.
type packer struct {
	sa       *segAlloc
	writes   []*segWrite
	cur      *segWrite
	finished bool
}

// place reserves n bytes and returns the address and the buffer to fill.
// The buffer is valid only until the next place (the segment buffer may
// grow); use slot to find it again later.
func (p *packer) place(n int) (uint64, uint32, []byte, error) {
	sa := p.sa
	for {
		if p.cur == nil {
			if sa.open == nil || sa.open.nextRow*sa.rowPayload+n > sa.segPayload {
				o, err := sa.newSegment()
				if err != nil {
					return 0, 0, nil, err
				}
				sa.setOpen(o)
			}
			p.cur = &segWrite{id: sa.open.id, au: sa.open.au, rec: sa.open.rec, firstRow: sa.open.nextRow,
				buf: sa.getBuf()[:0]}
			p.writes = append(p.writes, p.cur)
		}
		base := p.cur.firstRow * sa.rowPayload
		off := base + len(p.cur.buf)
		if off+n <= sa.segPayload {
			p.cur.buf = p.cur.buf[:off-base+n]
			return p.cur.id, uint32(off), p.cur.buf[off-base : off-base+n], nil
		}
		// This segment is full: the next block goes to a new one.
		sa.setOpen(nil)
		p.cur = nil
	}
}

// slot returns the buffer of n bytes at address (seg, off) placed earlier in
// this flush.
func (p *packer) slot(seg uint64, off uint32, n int) []byte {
	for _, w := range p.writes {
		if w.id == seg {
			base := w.firstRow * p.sa.rowPayload
			return w.buf[int(off)-base : int(off)-base+n]
		}
	}
	panic(fmt.Sprintf("datapath: no segment %d in this flush", seg))
}

// finish pads each write to whole rows and hands those rows out: the next
// flush continues after them.
func (p *packer) finish() {
	sa := p.sa
	p.finished = true
	for _, w := range p.writes {
		if r := len(w.buf) % sa.rowPayload; r != 0 {
			n := len(w.buf)
			w.buf = w.buf[:n+sa.rowPayload-r]
			clear(w.buf[n:])
		}
		if sa.open != nil && sa.open.id == w.id {
			sa.open.nextRow = w.firstRow + len(w.buf)/sa.rowPayload
		}
	}
}

// getBuf returns a segment payload buffer (cleared on reuse by the packer:
// every byte handed out is written before it is read).
func (sa *segAlloc) getBuf() []byte {
	if b, ok := sa.bufs.Get().(*[]byte); ok {
		return (*b)[:cap(*b)]
	}
	return make([]byte, sa.segPayload)
}

// release returns the packer's buffers; their contents are on the SSDs.
func (p *packer) releaseBufs() {
	for _, w := range p.writes {
		if w.buf != nil {
			b := w.buf[:0]
			p.sa.bufs.Put(&b)
			w.buf = nil
		}
	}
}

// write stores every segment part of this flush on the SSDs (synced).
func (p *packer) write(ctx context.Context) error {
	for _, w := range p.writes {
		if len(w.buf) == 0 {
			continue
		}
		if err := p.sa.s.set.WriteRows(ctx, int(w.au), w.id, w.firstRow, w.buf); err != nil {
			return fmt.Errorf("segment %d: %w", w.id, err)
		}
	}
	return nil
}

// abort undoes the allocations of a flush that failed before its commit:
// segments it opened go back to the free list (their ids stay used), and
// the open segment is dropped, since rows it attempted must not be
// written again.
func (p *packer) abort() {
	sa := p.sa
	sa.mu.Lock()
	for _, w := range p.writes {
		if w.firstRow == 0 && w.rec.rows == 0 {
			if _, ok := sa.segs[w.id]; ok {
				delete(sa.segs, w.id)
				sa.free = append(sa.free, w.rec.au)
			}
		}
	}
	sa.open = nil
	sa.mu.Unlock()
	p.writes, p.cur = nil, nil
}

// setOpen changes the open segment (flusher only; readers of free space
// look at it under mu).
func (sa *segAlloc) setOpen(o *openSeg) {
	sa.mu.Lock()
	sa.open = o
	sa.mu.Unlock()
}

// release moves the AU of a segment freed by GC to quarantine (flusher
// only, after the commit that deleted its record).
func (sa *segAlloc) release(id uint64) {
	sa.mu.Lock()
	defer sa.mu.Unlock()
	if r, ok := sa.segs[id]; ok {
		sa.quarantine = append(sa.quarantine, r.au)
		delete(sa.segs, id)
	}
}

// recycle makes quarantined AUs reusable once no reader can still address
// them.
func (sa *segAlloc) recycle() {
	sa.mu.RLock()
	n := len(sa.quarantine)
	sa.mu.RUnlock()
	if n == 0 {
		return
	}
	sa.gate.Lock()
	sa.gate.Unlock() //nolint:staticcheck // an empty critical section drains the readers
	sa.mu.Lock()
	sa.free = append(sa.free, sa.quarantine...)
	sa.quarantine = sa.quarantine[:0]
	sa.mu.Unlock()
}

// victims lists GC candidates: closed segments whose live fraction is below
// maxLive, emptiest first.
func (sa *segAlloc) victims(maxLive float64, limit int) []uint64 {
	sa.mu.RLock()
	defer sa.mu.RUnlock()
	type cand struct {
		id   uint64
		live float64
	}
	var cs []cand
	for id, r := range sa.segs {
		if sa.open != nil && id == sa.open.id {
			continue
		}
		if r.rows == 0 {
			continue
		}
		live := float64(r.liveBytes) / float64(sa.segPayload)
		if live < maxLive {
			cs = append(cs, cand{id, live})
		}
	}
	slices.SortFunc(cs, func(a, b cand) int {
		switch {
		case a.live < b.live:
			return -1
		case a.live > b.live:
			return 1
		}
		return 0
	})
	out := make([]uint64, 0, min(limit, len(cs)))
	for i := 0; i < len(cs) && i < limit; i++ {
		out = append(out, cs[i].id)
	}
	return out
}
