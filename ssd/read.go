package ssd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"syscall"
)

// readBuf is the scratch of one Read: the pages it reads, per data column.
type readBuf struct {
	media  []byte
	sc     ctrScratch
	colR0  [MaxDevices]int     // first row of the column in the span
	colR1  [MaxDevices]int     // one past the last row
	colAt  [MaxDevices]int     // index in media of the column's first page
	colGot [MaxDevices]int     // pages of the column read in full
	mems   [MaxDevices]*member // device read for the column; nil if none
	bad    []uint64            // bitmap of rows (relative to the span's first row) to rebuild
}

func (s *Set) getReadBuf() *readBuf {
	if b, ok := s.readBufs.Get().(*readBuf); ok {
		return b
	}
	return &readBuf{}
}

func (s *Set) putReadBuf(b *readBuf) {
	clear(b.mems[:])
	s.readBufs.Put(b)
}

// Page states in a row being rebuilt.
type pageState uint8

const (
	pageAbsent  pageState = iota // no usable device
	pageGood                     // read and passed its check
	pageBad                      // read, failed its check (CRC, stale, misplaced)
	pageReadErr                  // the read failed or came up short
	pageSilent                   // passed its check but disagrees with parity
	pageSkipped                  // parity page not needed to rebuild, not read
)

var pageStateNames = [...]string{"missing", "ok", "checksum or stale", "read error", "parity mismatch", "not read"}

// rowBuf is the scratch of rebuilding one stripe row.
type rowBuf struct {
	media  []byte   // n pages as read (and as rewritten)
	plain  []byte   // n page payloads in the clear
	shards [][]byte // n views into plain; zero length = erased
	spare  []byte   // one page payload
	parity []byte   // ParityShards page payloads: the parity as read
	state  []pageState
	mems   []*member
	sc     ctrScratch
}

func (s *Set) getRowBuf() *rowBuf {
	if b, ok := s.rowBufs.Get().(*rowBuf); ok {
		return b
	}
	n := s.geo.n
	return &rowBuf{
		media:  make([]byte, n*PageSize),
		plain:  make([]byte, n*PagePayload),
		shards: make([][]byte, n),
		spare:  make([]byte, PagePayload),
		parity: make([]byte, ParityShards*PagePayload),
		state:  make([]pageState, n),
		mems:   make([]*member, n),
	}
}

func (s *Set) putRowBuf(b *rowBuf) {
	clear(b.mems)
	s.rowBufs.Put(b)
}

// Read fills p with payload bytes [off, off+len(p)) of segment segID at AU
// au. It reads only the data pages that cover the range, one ReadAt per
// device. A page that cannot be read or fails its check is rebuilt with the
// rest of its row from the other pages of the row, and rewritten in place on
// its device when the device is present. A row with more than two bad pages
// gives ErrUnrecoverable; p's contents are then undefined.
func (s *Set) Read(ctx context.Context, au int, segID uint64, off int64, p []byte) error {
	if err := s.checkIO(au, segID, off, len(p)); err != nil {
		return fmt.Errorf("ssd: read au %d segment %d [%d, +%d): %w", au, segID, off, len(p), err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("ssd: read au %d segment %d: %w", au, segID, err)
	}
	if len(p) == 0 {
		return nil
	}
	g := s.geo
	sp := g.span(off, len(p))
	rowFirst, rowLast := sp.first/g.d, sp.last/g.d
	rb := s.getReadBuf()
	defer s.putReadBuf(rb)
	if need := (sp.last - sp.first + 1) * PageSize; cap(rb.media) < need {
		rb.media = make([]byte, need)
	}
	words := (rowLast - rowFirst + 64) / 64
	if cap(rb.bad) < words {
		rb.bad = make([]uint64, words)
	}
	rb.bad = rb.bad[:words]
	clear(rb.bad)

	// One ReadAt per data column for its contiguous run of rows.
	at := 0
	for c := range g.d {
		r0, r1 := g.colRows(sp, c)
		rb.colR0[c], rb.colR1[c], rb.colAt[c], rb.colGot[c], rb.mems[c] = r0, r1, at, 0, nil
		if r1 <= r0 {
			continue
		}
		buf := rb.media[at*PageSize : (at+r1-r0)*PageSize]
		at += r1 - r0
		st := &s.slots[g.slotOf(au, c)]
		m := st.usable()
		if m == nil {
			continue
		}
		rb.mems[c] = m
		// A short or failed read leaves pages to rebuild; a full read that
		// also reports io.EOF (at the end of the file) is a full read.
		k, _ := m.dev.f.ReadAt(buf, g.pageOffset(au, r0))
		if k < len(buf) {
			st.readErrors.Add(1)
		}
		rb.colGot[c] = k / PageSize
	}

	// Check and decrypt each page into place; note rows to rebuild.
	anyBad := false
	for c := range g.d {
		r0, r1 := rb.colR0[c], rb.colR1[c]
		slot := g.slotOf(au, c)
		m := rb.mems[c]
		for r := r0; r < r1; r++ {
			i := r - r0
			if m == nil || i >= rb.colGot[c] {
				rb.bad[(r-rowFirst)/64] |= 1 << ((r - rowFirst) % 64)
				anyBad = true
				continue
			}
			page := rb.media[(rb.colAt[c]+i)*PageSize:][:PageSize]
			if checkPage(page, segID, r, slot) != nil {
				rb.bad[(r-rowFirst)/64] |= 1 << ((r - rowFirst) % 64)
				anyBad = true
				continue
			}
			b0, b1, pos := clip(r*g.d+c, off, len(p))
			xorPage(m.block, &rb.sc, segID, r, slot, b0, p[pos:pos+b1-b0], page[b0:b1])
		}
	}
	if !anyBad {
		return nil
	}

	s.degradedReads.Add(1)
	row := s.getRowBuf()
	defer s.putRowBuf(row)
	for r := rowFirst; r <= rowLast; r++ {
		if rb.bad[(r-rowFirst)/64]&(1<<((r-rowFirst)%64)) == 0 {
			continue
		}
		if _, err := s.fixRow(row, au, segID, r, fixErasures, 0); err != nil {
			s.unrecoverable.Add(1)
			return fmt.Errorf("ssd: read au %d segment %d [%d, +%d): %w", au, segID, off, len(p), err)
		}
		s.copyRow(row, r, sp, off, p)
	}
	return nil
}

// ReadRebuild is Read without trusting the pages' checks: every row the
// range covers is read in full, decrypted and checked against its parity. A
// page that disagrees with parity is located (with all n pages readable, one
// wrong page per row can be found), rebuilt, rewritten and counted. The
// datapath calls it when a block fails authentication although its pages
// passed their checks. When the pages agree with parity the stored bytes are
// returned as they are. When a covered page cannot be checked (two devices
// unavailable) or the disagreement cannot be located, it returns
// ErrUnrecoverable.
func (s *Set) ReadRebuild(ctx context.Context, au int, segID uint64, off int64, p []byte) error {
	if err := s.checkIO(au, segID, off, len(p)); err != nil {
		return fmt.Errorf("ssd: read-rebuild au %d segment %d [%d, +%d): %w", au, segID, off, len(p), err)
	}
	if len(p) == 0 {
		return nil
	}
	g := s.geo
	sp := g.span(off, len(p))
	row := s.getRowBuf()
	defer s.putRowBuf(row)
	for r := sp.first / g.d; r <= sp.last/g.d; r++ {
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("ssd: read-rebuild au %d segment %d: %w", au, segID, err)
		}
		var suspects uint32
		for c := range g.d {
			if gp := r*g.d + c; gp >= sp.first && gp <= sp.last {
				suspects |= 1 << c
			}
		}
		if _, err := s.fixRow(row, au, segID, r, fixVerify, suspects); err != nil {
			s.unrecoverable.Add(1)
			return fmt.Errorf("ssd: read-rebuild au %d segment %d [%d, +%d): %w", au, segID, off, len(p), err)
		}
		s.copyRow(row, r, sp, off, p)
	}
	return nil
}

// Scrub checks every page of the segment's first rows(payloadLen) rows
// (CRC, segment id, and agreement with parity), rebuilds and rewrites the
// bad ones, and returns how many pages it rewrote. It goes on past an
// unrecoverable row and then returns ErrUnrecoverable naming the first one.
func (s *Set) Scrub(ctx context.Context, au int, segID uint64, payloadLen int) (repaired int, err error) {
	if err := s.checkIO(au, segID, 0, payloadLen); err != nil || payloadLen == 0 {
		if err == nil {
			err = ErrRange
		}
		return 0, fmt.Errorf("ssd: scrub au %d segment %d (%d bytes): %w", au, segID, payloadLen, err)
	}
	row := s.getRowBuf()
	defer s.putRowBuf(row)
	var first error
	lost := 0
	for r := range s.geo.rows(payloadLen) {
		if err := ctx.Err(); err != nil {
			return repaired, fmt.Errorf("ssd: scrub au %d segment %d: %w", au, segID, err)
		}
		k, err := s.fixRow(row, au, segID, r, fixVerify, 0)
		repaired += k
		if err != nil {
			lost++
			if first == nil {
				first = err
			}
		}
	}
	if first != nil {
		s.unrecoverable.Add(1)
		return repaired, fmt.Errorf("ssd: scrub au %d segment %d: %d rows lost, first: %w", au, segID, lost, first)
	}
	return repaired, nil
}

// copyRow copies the payload of row r that falls in the span into p.
func (s *Set) copyRow(row *rowBuf, r int, sp pageSpan, off int64, p []byte) {
	g := s.geo
	for c := range g.d {
		gp := r*g.d + c
		if gp < sp.first || gp > sp.last {
			continue
		}
		b0, b1, pos := clip(gp, off, len(p))
		copy(p[pos:pos+b1-b0], row.shards[c][b0:b1])
	}
}

type fixMode uint8

const (
	fixErasures fixMode = iota // rebuild pages that fail their check
	fixVerify                  // also check good pages against parity
)

// fixRow reads the pages of row r, rebuilds the bad ones and rewrites them
// on their devices. In fixErasures mode it reads parity pages only as far as
// it needs them, and on success row.shards holds the plaintext of every data
// column. In fixVerify mode it reads all n pages, checks them against parity
// and locates a single page that passed its check but is wrong, trying the
// columns in suspects first; on success row.shards holds every column. It
// returns the number of pages rewritten.
func (s *Set) fixRow(row *rowBuf, au int, segID uint64, r int, mode fixMode, suspects uint32) (int, error) {
	g := s.geo
	good := 0
	for c := range g.n {
		if mode == fixErasures && c >= g.d && good >= g.d {
			row.mems[c], row.state[c] = nil, pageSkipped
			continue
		}
		slot := g.slotOf(au, c)
		st := &s.slots[slot]
		m := st.usable()
		row.mems[c], row.state[c] = m, pageAbsent
		if m == nil {
			continue
		}
		page := row.media[c*PageSize : (c+1)*PageSize]
		if k, _ := m.dev.f.ReadAt(page, g.pageOffset(au, r)); k < PageSize {
			st.readErrors.Add(1)
			row.state[c] = pageReadErr
			continue
		}
		if checkPage(page, segID, r, slot) != nil {
			st.badPages.Add(1)
			row.state[c] = pageBad
			continue
		}
		row.state[c] = pageGood
		good++
	}
	if good < g.d {
		return 0, s.rowLost(row, au, segID, r, "")
	}
	var erased uint32
	rebuild := false
	for c := range g.n {
		pl := row.plain[c*PagePayload : (c+1)*PagePayload]
		if row.state[c] != pageGood {
			row.shards[c] = pl[:0]
			erased |= 1 << c
			rebuild = rebuild || row.state[c] != pageSkipped
			continue
		}
		xorPage(row.mems[c].block, &row.sc, segID, r, g.slotOf(au, c), 0, pl, row.media[c*PageSize:c*PageSize+PagePayload])
		row.shards[c] = pl
	}
	if rebuild {
		if err := s.enc.Reconstruct(row.shards); err != nil {
			return 0, s.rowLost(row, au, segID, r, err.Error())
		}
	}
	if mode == fixVerify {
		if err := s.verifyRow(row, au, segID, r, good, erased, suspects); err != nil {
			return 0, err
		}
	}
	repaired := 0
	for c := range g.n {
		switch row.state[c] {
		case pageBad, pageReadErr, pageSilent:
			if s.repairPage(row, au, segID, r, c) {
				repaired++
			}
		}
	}
	return repaired, nil
}

// verifyRow checks a rebuilt row against its parity; see fixRow.
func (s *Set) verifyRow(row *rowBuf, au int, segID uint64, r, good int, erased, suspects uint32) error {
	g := s.geo
	if good == g.d {
		// Nothing left to check with. Fine for a scrub; a caller who suspects
		// a page that was not rebuilt learns nothing better is possible.
		if suspects&^erased != 0 {
			return s.rowLost(row, au, segID, r, "no redundancy left to check the pages")
		}
		return nil
	}
	ok, err := s.parityOK(row)
	if err != nil {
		return s.rowLost(row, au, segID, r, err.Error())
	}
	if ok {
		return nil
	}
	if good < g.n {
		return s.rowLost(row, au, segID, r, "pages disagree with parity")
	}
	// All n pages passed their checks but disagree: find the one page whose
	// rebuild from the others makes the row consistent. The code's distance
	// is 3, so at most one column can.
	try := func(c int) bool {
		pl := row.plain[c*PagePayload : (c+1)*PagePayload]
		copy(row.spare, pl)
		row.shards[c] = pl[:0]
		if s.enc.Reconstruct(row.shards) == nil {
			if ok, err := s.parityOK(row); err == nil && ok {
				return true
			}
		}
		copy(pl, row.spare)
		row.shards[c] = pl
		return false
	}
	for pass := range 2 {
		for c := range g.n {
			if (suspects&(1<<c) != 0) != (pass == 0) {
				continue
			}
			if try(c) {
				row.state[c] = pageSilent
				s.slots[g.slotOf(au, c)].badPages.Add(1)
				return nil
			}
		}
	}
	return s.rowLost(row, au, segID, r, "pages disagree with parity; the wrong page cannot be located")
}

// parityOK reports whether the row's parity columns match its data
// columns. It recomputes parity in place and puts the parity as read back if
// it differs, so the row is unchanged either way.
func (s *Set) parityOK(row *rowBuf) (bool, error) {
	d := s.geo.d
	for i := range ParityShards {
		copy(row.parity[i*PagePayload:(i+1)*PagePayload], row.shards[d+i])
	}
	if err := s.enc.Encode(row.shards); err != nil {
		return false, err
	}
	ok := true
	for i := range ParityShards {
		if !bytes.Equal(row.parity[i*PagePayload:(i+1)*PagePayload], row.shards[d+i]) {
			ok = false
		}
	}
	if !ok {
		for i := range ParityShards {
			copy(row.shards[d+i], row.parity[i*PagePayload:(i+1)*PagePayload])
		}
	}
	return ok, nil
}

// rowLost builds the ErrUnrecoverable error for row r.
func (s *Set) rowLost(row *rowBuf, au int, segID uint64, r int, why string) error {
	var b strings.Builder
	for c := range s.geo.n {
		if row.state[c] == pageGood {
			continue
		}
		if b.Len() > 0 {
			b.WriteString(", ")
		}
		slot := s.geo.slotOf(au, c)
		fmt.Fprintf(&b, "ssd%02d %s", slot, pageStateNames[row.state[c]])
	}
	if why != "" {
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(why)
	}
	return fmt.Errorf("au %d segment %d row %d: %w: %s", au, segID, r, ErrUnrecoverable, b.String())
}

// repairPage rewrites page (r, c) from row.shards[c], unless its device has
// failed since or a later segment has claimed the AU. It reports whether it
// wrote the page.
func (s *Set) repairPage(row *rowBuf, au int, segID uint64, r, c int) bool {
	m := row.mems[c]
	if m == nil || m.dev.failure.Load() != nil {
		return false
	}
	slot := s.geo.slotOf(au, c)
	page := row.media[c*PageSize : (c+1)*PageSize]
	sealPage(page, row.shards[c], m.block, &row.sc, segID, r, slot)
	lk := &s.auLocks[au%auLockStripes]
	lk.Lock()
	if o := s.auOwner[au].Load(); o != 0 && o != segID {
		lk.Unlock()
		return false
	}
	_, err := m.dev.f.WriteAt(page, s.geo.pageOffset(au, r))
	lk.Unlock()
	if errors.Is(err, syscall.ENOSPC) {
		return false // the host file system is full; the page is rebuilt again next time
	}
	if err != nil {
		s.markWriteFailed(slot, m, fmt.Sprintf("repair au %d row %d", au, r), err)
		return false
	}
	s.slots[slot].repaired.Add(1)
	return true
}
