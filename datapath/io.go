package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"vfa/nvram"
)

// The front of the write path and the read path, as a Go API on Volume.
// Addresses and lengths are in 512-byte sectors; buffers are whole sectors.

type ioStats struct {
	reads, writes         atomic.Uint64
	readBytes, writeBytes atomic.Uint64
	readNanos, writeNanos atomic.Uint64
	rereads               atomic.Uint64 // multi-block reads redone after a write came in
}

var zeroSector [SectorSize]byte

// check validates an I/O of n sectors at sector against the volume state.
func (st *volState) check(sector, n uint64) error {
	if st.rec.Destroyed != 0 {
		return ErrDestroyed
	}
	size := uint64(st.rec.Size) / SectorSize
	if n == 0 {
		return fmt.Errorf("%w: zero-length I/O", ErrInvalid)
	}
	if sector >= size || n > size-sector {
		return fmt.Errorf("%w: sectors [%d, +%d) of %d", ErrOutOfRange, sector, n, size)
	}
	return nil
}

func (s *Store) bufSectors(p []byte) (uint64, error) {
	if len(p) == 0 || len(p)%SectorSize != 0 {
		return 0, fmt.Errorf("%w: buffer of %d bytes is not whole sectors", ErrInvalid, len(p))
	}
	if len(p) > s.maxIO && s.maxIO > 0 {
		return 0, fmt.Errorf("%w: %d bytes exceeds the %d-byte I/O limit", ErrInvalid, len(p), s.maxIO)
	}
	return uint64(len(p) / SectorSize), nil
}

func (s *Store) usable() error {
	if s.closed.Load() {
		return ErrClosed
	}
	if !s.unlocked.Load() {
		return &LockedError{Reason: *s.lockReason.Load()}
	}
	s.flushedMu.Lock()
	err := s.flushErr
	s.flushedMu.Unlock()
	return err
}

// Write stores p at sector. When it returns nil the data is durable.
func (v *Volume) Write(ctx context.Context, p []byte, sector uint64) error {
	n, err := v.s.bufSectors(p)
	if err != nil {
		return err
	}
	if err := v.st.Load().check(sector, n); err != nil {
		return err
	}
	payload := v.s.pend.pools.get(recordHeaderSize + len(p))
	copy(payload[recordHeaderSize:], p)
	if hc := v.hostKey.Load(); hc != nil {
		if err := (*hc).Decrypt(sector, payload[recordHeaderSize:]); err != nil {
			return fmt.Errorf("%w: %v", ErrHostKey, err)
		}
	}
	return v.append(ctx, opWrite, payload, sector, n, false)
}

// append encodes the record header into payload[:32] (under the volume's
// lock, so the medium is the one current when the write is ordered), checks
// space and appends to NVRAM. held says the caller holds v.mu exclusively.
func (v *Volume) append(ctx context.Context, op uint8, payload []byte, sector, n uint64, held bool) error {
	t0 := time.Now()
	s := v.s
	if err := s.usable(); err != nil {
		return err
	}
	if err := s.waitPendingRoom(ctx, int64(len(payload))); err != nil {
		return err
	}
	need := int64(0)
	switch op {
	case opWrite:
		need = int64(n) * SectorSize
	case opWriteSame:
		need = int64(min(n*SectorSize, BlockSize*2))
	}
	// Unmaps free space: they are always admitted.
	if op != opUnmap && s.hostFull.Load() {
		return errHostFull
	}
	if op != opUnmap && !s.seg.admit(need) {
		return ErrNoSpace
	}
	if !held {
		v.mu.RLock()
		defer v.mu.RUnlock()
	}
	st := v.st.Load()
	if err := st.check(sector, n); err != nil {
		return err
	}
	appendRecordHeader(payload[:0], op, st.rec.Medium, sector, n)
	if _, _, err := s.log.Append(ctx, payload); err != nil {
		if errors.Is(err, nvram.ErrClosed) {
			return ErrClosed
		}
		return fmt.Errorf("nvram: %w", err)
	}
	s.stats.writes.Add(1)
	s.stats.writeBytes.Add(n * SectorSize)
	s.stats.writeNanos.Add(uint64(time.Since(t0)))
	return nil
}

// onDurable is the NVRAM committer's in-order hook (and replay's): the
// record enters the pending index before its writer is acknowledged.
func (s *Store) onDurable(seq uint64, payload []byte, end nvram.Position) {
	r, err := decodeRecord(payload)
	if err != nil {
		// Our own encoder wrote it and NVRAM authenticated it: a bug.
		panic(fmt.Sprintf("datapath: nvram record %d: %v", seq, err))
	}
	o := &pop{seq: seq, pos: end, sector: r.sector, n: r.sectors, op: r.op, payload: payload}
	switch r.op {
	case opWrite:
		o.data = r.data
	case opWriteSame:
		o.pattern = r.data
	}
	s.pend.add(r.medium, o, int64(len(payload)))
	if s.pend.bytesNow() >= s.o.FlushBytes {
		s.kickFlush()
	}
}

// WriteSame writes the one-sector pattern over n sectors. With unmap and an
// all-zero pattern the range is deallocated instead (reads zero).
func (v *Volume) WriteSame(ctx context.Context, pattern []byte, sector, n uint64, unmap bool) error {
	if len(pattern) != SectorSize {
		return fmt.Errorf("%w: write same pattern of %d bytes", ErrInvalid, len(pattern))
	}
	if err := v.st.Load().check(sector, n); err != nil {
		return err
	}
	zero := bytes.Equal(pattern, zeroSector[:])
	if unmap && zero {
		return v.Unmap(ctx, sector, n)
	}
	if n*SectorSize > maxWriteSameBytes {
		return fmt.Errorf("%w: write same of %d sectors exceeds %d bytes", ErrInvalid, n, maxWriteSameBytes)
	}
	payload := make([]byte, recordHeaderSize, recordHeaderSize+SectorSize)
	payload = append(payload, pattern...)
	if hc := v.hostKey.Load(); hc != nil && !zero {
		// Every sector of a host-encrypted range decrypts differently: expand.
		return v.writeSameExpanded(ctx, pattern, sector, n)
	}
	return v.append(ctx, opWriteSame, payload, sector, n, false)
}

func (v *Volume) writeSameExpanded(ctx context.Context, pattern []byte, sector, n uint64) error {
	const chunk = 2048 // sectors per write
	buf := make([]byte, min(n, chunk)*SectorSize)
	for i := 0; i < len(buf); i += SectorSize {
		copy(buf[i:], pattern)
	}
	for n > 0 {
		c := min(n, chunk)
		if err := v.Write(ctx, buf[:c*SectorSize], sector); err != nil {
			return err
		}
		sector += c
		n -= c
	}
	return nil
}

// Unmap deallocates n sectors; they read back as zeros.
func (v *Volume) Unmap(ctx context.Context, sector, n uint64) error {
	if err := v.st.Load().check(sector, n); err != nil {
		return err
	}
	payload := make([]byte, recordHeaderSize)
	return v.append(ctx, opUnmap, payload, sector, n, false)
}

// CompareAndWrite compares len(cmp) bytes at sector with cmp and, only if
// equal, writes data there, atomically with respect to other writes. It
// returns the offset of the first differing byte, or -1 when it wrote.
func (v *Volume) CompareAndWrite(ctx context.Context, sector uint64, cmp, data []byte) (int, error) {
	n, err := v.s.bufSectors(cmp)
	if err != nil {
		return 0, err
	}
	if len(data) != len(cmp) {
		return 0, fmt.Errorf("%w: compare and write with %d compare and %d write bytes", ErrInvalid, len(cmp), len(data))
	}
	if err := v.st.Load().check(sector, n); err != nil {
		return 0, err
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	cur := make([]byte, len(cmp))
	if err := v.read(ctx, cur, sector, true); err != nil {
		return 0, err
	}
	for i := range cur {
		if cur[i] != cmp[i] {
			return i, nil
		}
	}
	payload := make([]byte, recordHeaderSize, recordHeaderSize+len(data))
	payload = append(payload, data...)
	if hc := v.hostKey.Load(); hc != nil {
		if err := (*hc).Decrypt(sector, payload[recordHeaderSize:]); err != nil {
			return 0, fmt.Errorf("%w: %v", ErrHostKey, err)
		}
	}
	return -1, v.append(ctx, opWrite, payload, sector, n, true)
}

// Flush returns once every acknowledged write is durable: they already are
// (NVRAM), so it only reports a failed data path.
func (v *Volume) Flush(ctx context.Context) error {
	if v.st.Load().rec.Destroyed != 0 {
		return ErrDestroyed
	}
	return v.s.usable()
}

// Read fills p from sector. A read is never torn by a concurrent write of
// at most MaxAtomic bytes: it sees all of that write or none of it.
func (v *Volume) Read(ctx context.Context, p []byte, sector uint64) error {
	return v.read(ctx, p, sector, false)
}

// readRetries: how often a read of several blocks is redone, when writes
// came in while it ran, before it excludes writers to the volume instead.
const readRetries = 3

// read is Read; held says the caller holds v.mu exclusively (no write to
// the volume can start or be in flight).
//
// A write is one NVRAM record that enters the pending index under one lock,
// so a read of one block sees all of it or none of it. A read of several
// blocks looks them up one after another; if a write to its region of the
// volume's medium was added meanwhile, it may have seen part of it, and it
// reads again. After readRetries such collisions it takes v.mu exclusively (new
// writes wait; those under way finish first) and reads once more.
func (v *Volume) read(ctx context.Context, p []byte, sector uint64, held bool) error {
	t0 := time.Now()
	n, err := v.s.bufSectors(p)
	if err != nil {
		return err
	}
	st := v.st.Load()
	if err := st.check(sector, n); err != nil {
		return err
	}
	s := v.s
	if err := s.usable(); err != nil {
		return err
	}
	multi := sector%sectorsPerBlock+n > sectorsPerBlock
	fb, lb := sector/sectorsPerBlock, (sector+n-1)/sectorsPerBlock
	for attempt := 0; ; attempt++ {
		if !multi || held {
			err = v.readOnce(st, p, sector, n)
			break
		}
		if attempt == readRetries {
			v.mu.Lock()
			st = v.st.Load()
			err = v.readOnce(st, p, sector, n)
			v.mu.Unlock()
			break
		}
		adds := s.pend.addCount(st.chain[0].medium, fb, lb)
		if err = v.readOnce(st, p, sector, n); err != nil || s.pend.addCount(st.chain[0].medium, fb, lb) == adds {
			break
		}
		s.stats.rereads.Add(1)
	}
	if err != nil {
		return err
	}
	if hc := v.hostKey.Load(); hc != nil {
		if err := (*hc).Encrypt(sector, p); err != nil {
			clear(p)
			return fmt.Errorf("%w: %v", ErrHostKey, err)
		}
	}
	s.stats.reads.Add(1)
	s.stats.readBytes.Add(uint64(len(p)))
	s.stats.readNanos.Add(uint64(time.Since(t0)))
	return nil
}

// readOnce resolves n sectors from sector through st's chain into p.
func (v *Volume) readOnce(st *volState, p []byte, sector, n uint64) error {
	s := v.s
	var tmp [BlockSize]byte
	for n > 0 {
		b := sector / sectorsPerBlock
		first := sector % sectorsPerBlock
		if whole := n / sectorsPerBlock; first == 0 && whole >= rangeReadMin {
			if err := s.readBlocks(st.chain, b, int(whole), p[:whole*BlockSize]); err != nil {
				return err
			}
			p = p[whole*BlockSize:]
			sector += whole * sectorsPerBlock
			n -= whole * sectorsPerBlock
			continue
		}
		cnt := min(n, sectorsPerBlock-first)
		dst := p[:cnt*SectorSize]
		if first == 0 && cnt == sectorsPerBlock {
			if err := s.readBlock(st.chain, b, dst); err != nil {
				return err
			}
		} else {
			if err := s.readBlock(st.chain, b, tmp[:]); err != nil {
				return err
			}
			copy(dst, tmp[first*SectorSize:])
		}
		p = p[cnt*SectorSize:]
		sector += cnt
		n -= cnt
	}
	return nil
}

// readBlock resolves block b of a chain into out (4096 bytes).
func (s *Store) readBlock(chain []chainLink, b uint64, out []byte) error {
	for attempt := 0; ; attempt++ {
		err := s.resolveBlock(chain, b, ^uint64(0), out)
		if !errors.Is(err, errMoved) {
			return err
		}
		if attempt == 3 {
			return fmt.Errorf("%w: block %d keeps moving", ErrMedium, b)
		}
	}
}

// errMoved: a block's location changed under a reader; it retries.
var errMoved = errors.New("block moved")

// resolveBlock computes block b as seen through chain, counting only pending
// ops with seq <= maxSeq.
func (s *Store) resolveBlock(chain []chainLink, b uint64, maxSeq uint64, out []byte) error {
	var known uint8
	for _, link := range chain {
		if b >= link.limit {
			break
		}
		s.pend.mu.RLock()
		known = s.pend.media[link.medium].resolve(b, maxSeq, out, known, nil)
		s.pend.mu.RUnlock()
		if known == 0xff {
			return nil
		}
		e, ok, err := s.mapGet(link.medium, b)
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		if e.kind != entryData {
			fillUnknown(out, known, nil)
			return nil
		}
		if known == 0 {
			return s.loadEntry(&e, out)
		}
		var tmp [BlockSize]byte
		if err := s.loadEntry(&e, tmp[:]); err != nil {
			return err
		}
		fillUnknown(out, known, tmp[:])
		return nil
	}
	fillUnknown(out, known, nil)
	return nil
}

// fillUnknown copies the sectors not marked in known from src (zeros if nil).
func fillUnknown(out []byte, known uint8, src []byte) {
	for i := 0; i < sectorsPerBlock; i++ {
		if known&(1<<i) != 0 {
			continue
		}
		d := out[i*SectorSize : (i+1)*SectorSize]
		if src == nil {
			clear(d)
		} else {
			copy(d, src[i*SectorSize:])
		}
	}
}

// Mapped reports whether sector is mapped and how many sectors from it (up
// to max) share that state, at block granularity.
func (v *Volume) Mapped(ctx context.Context, sector, maxSectors uint64) (bool, uint64, error) {
	st := v.st.Load()
	if err := st.check(sector, 1); err != nil {
		return false, 0, err
	}
	size := uint64(st.rec.Size) / SectorSize
	maxSectors = min(maxSectors, size-sector)
	const scanBlocks = 1 << 16
	s := v.s
	first := true
	var state bool
	var run uint64
	for run < maxSectors {
		b := (sector + run) / sectorsPerBlock
		m, err := s.blockMapped(st.chain, b)
		if err != nil {
			return false, 0, err
		}
		if first {
			state, first = m, false
		} else if m != state {
			break
		}
		blockEnd := (b + 1) * sectorsPerBlock
		run = min(blockEnd-sector, maxSectors)
		if run/sectorsPerBlock > scanBlocks {
			break
		}
	}
	return state, run, nil
}

// blockMapped: does block b hold written data (pending or stored)?
func (s *Store) blockMapped(chain []chainLink, b uint64) (bool, error) {
	for _, link := range chain {
		if b >= link.limit {
			return false, nil
		}
		s.pend.mu.RLock()
		st := s.pend.media[link.medium].state(b)
		s.pend.mu.RUnlock()
		switch st {
		case opWrite, opWriteSame:
			return true, nil
		case opUnmap:
			return false, nil
		}
		e, ok, err := s.mapGet(link.medium, b)
		if err != nil {
			return false, err
		}
		if ok {
			return e.kind != entryUnmapped, nil
		}
	}
	return false, nil
}

// Flush waits until every write acknowledged so far has left NVRAM for the
// segments (durability does not need it; space reports and tests do).
func (s *Store) Flush() error { return s.flushAll() }

// MaxAtomic is the largest write that is atomic: it is one NVRAM record,
// replayed entirely or not at all after a crash, and it enters the read
// index under one lock; a read that may have overlapped its entry is redone
// (see read), so no reader sees part of it.
func (v *Volume) MaxAtomic() int { return v.s.maxIO }
