package ssd

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"syscall"
)

// segBuf is the scratch of one WriteSegment: the plaintext columns
// (column-concatenated shards) and the pages of every column as they go to
// media.
type segBuf struct {
	plain  []byte    // n * rowsPerAU * PagePayload
	media  []byte    // n * rowsPerAU * PageSize
	shards [][]byte  // n views into plain
	errs   []error   // per column
	mems   []*member // per column: the device written, nil if none
	sc     []ctrScratch
}

func (s *Set) getSegBuf() *segBuf {
	if b, ok := s.segBufs.Get().(*segBuf); ok {
		return b
	}
	g := s.geo
	return &segBuf{
		plain:  make([]byte, g.n*g.rowsPerAU*PagePayload),
		media:  make([]byte, g.n*g.rowsPerAU*PageSize),
		shards: make([][]byte, g.n),
		errs:   make([]error, g.n),
		mems:   make([]*member, g.n),
		sc:     make([]ctrScratch, g.n),
	}
}

// WriteSegment writes payload as segment segID at AU index au: it is
// WriteRows(ctx, au, segID, 0, payload).
func (s *Set) WriteSegment(ctx context.Context, au int, segID uint64, payload []byte) error {
	return s.WriteRows(ctx, au, segID, 0, payload)
}

// WriteRows writes stripe rows [firstRow, firstRow+ceil(len(buf)/RowPayload()))
// of segment segID at AU index au on every available device, then syncs
// them all in parallel. buf is the segment payload from byte
// firstRow*RowPayload() on; a last partial row is padded with zeros. It
// returns nil only when every page written is durable on at least n-2
// devices, so the rows can be read back with up to two of them lost. A
// device whose write or sync fails is marked failed; if that leaves more
// than two devices unavailable the call fails with ErrTooManyFailed.
//
// Rows of a segment are written once: segID must be non-zero, and rows
// already written (or attempted) for segID at au since the set was built
// are refused with ErrRewrite, since rewriting them with other bytes would
// reuse their keystream. Writes to different AUs may run concurrently; a
// write to an AU that is being read is the caller's error.
func (s *Set) WriteRows(ctx context.Context, au int, segID uint64, firstRow int, buf []byte) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ssd: write segment %d: %w", segID, err)
	}
	g := s.geo
	off := int64(firstRow) * int64(g.rowPayload())
	if err := s.checkIO(au, segID, off, len(buf)); err != nil || len(buf) == 0 || firstRow < 0 {
		if err == nil {
			err = ErrRange
		}
		return fmt.Errorf("ssd: write segment %d at au %d rows from %d (%d bytes): %w", segID, au, firstRow, len(buf), err)
	}
	if k := s.Unavailable(); k > ParityShards {
		return fmt.Errorf("ssd: write segment %d at au %d: %w: %d of %d devices", segID, au, ErrTooManyFailed, k, g.n)
	}
	rows := g.rows(len(buf))
	if err := s.claim(au, segID, firstRow, rows); err != nil {
		return fmt.Errorf("ssd: write segment %d at au %d rows [%d, %d): %w", segID, au, firstRow, firstRow+rows, err)
	}

	b := s.getSegBuf()
	defer s.putSegBuf(b)
	shardLen := rows * PagePayload
	for c := range g.n {
		base := c * g.rowsPerAU * PagePayload
		b.shards[c] = b.plain[base : base+shardLen]
	}
	rp := g.rowPayload()
	for r := range rows {
		for c := range g.d {
			lo := min(r*rp+c*PagePayload, len(buf))
			hi := min(lo+PagePayload, len(buf))
			dst := b.shards[c][r*PagePayload : (r+1)*PagePayload]
			k := copy(dst, buf[lo:hi])
			clear(dst[k:])
		}
	}
	if err := s.enc.Encode(b.shards); err != nil {
		return fmt.Errorf("ssd: write segment %d at au %d: parity: %w", segID, au, err)
	}

	var wg sync.WaitGroup
	for c := range g.n {
		b.errs[c] = nil
		slot := g.slotOf(au, c)
		m := s.slots[slot].usable()
		b.mems[c] = m
		if m == nil {
			continue
		}
		wg.Go(func() { b.errs[c] = s.writeColumn(b, m, au, c, slot, firstRow, rows, segID) })
	}
	wg.Wait()
	var full error
	for c := range g.n {
		switch err := b.errs[c]; {
		case err == nil:
		case errors.Is(err, syscall.ENOSPC):
			full = err // not the device's fault: it stays in service
		default:
			s.markWriteFailed(g.slotOf(au, c), b.mems[c], fmt.Sprintf("write au %d", au), err)
		}
	}
	if full != nil {
		return fmt.Errorf("ssd: write segment %d at au %d: %w: %w", segID, au, ErrHostFull, full)
	}
	if k := s.Unavailable(); k > ParityShards {
		return fmt.Errorf("ssd: write segment %d at au %d: %w: %d of %d devices", segID, au, ErrTooManyFailed, k, g.n)
	}
	s.segments.Add(1)
	return nil
}

func (s *Set) putSegBuf(b *segBuf) {
	clear(b.mems)
	s.segBufs.Put(b)
}

// writeColumn seals column c of rows [firstRow, firstRow+rows), writes it
// to its device with one WriteAt, and syncs the device.
func (s *Set) writeColumn(b *segBuf, m *member, au, c, slot, firstRow, rows int, segID uint64) error {
	g := s.geo
	base := c * g.rowsPerAU * PageSize
	media := b.media[base : base+rows*PageSize]
	sealColumn(media, b.shards[c], firstRow, rows, m.block, &b.sc[c], segID, slot)
	if _, err := m.dev.f.WriteAt(media, g.pageOffset(au, firstRow)); err != nil {
		return err
	}
	return m.dev.f.SyncData()
}
