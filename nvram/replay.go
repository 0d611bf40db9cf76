package nvram

import (
	"errors"
	"fmt"
	"io"
)

// replayWindow is how much of the region Replay reads per ReadAt.
const replayWindow = 4 << 20

// Replay reads the records that follow position from (the caller's
// checkpoint; Position{Seq: 1} on a fresh, zeroed device) in order and calls
// fn for each with its seq, its payload (a new slice the caller may keep) and
// the position after it. It stops at the first record that is missing, torn,
// unauthentic, out of sequence, at the wrong offset, or of a lower epoch than
// the record before it, and returns that position: the end of the log, where
// Open continues.
//
// Errors: an I/O error reading the file (the log is not ended by it: the
// caller must not append); an error from fn (returned wrapped, with the
// position of the record fn refused); ErrEpoch if a record carries o.Epoch
// or a later epoch; ErrCorrupt, together with the valid end of the intact
// prefix, when a damaged record is followed by records proving it had been
// durable (see the package comment).
func Replay(o Options, from Position, fn func(seq uint64, payload []byte, end Position) error) (Position, error) {
	c, err := o.config()
	if err != nil {
		return from, fmt.Errorf("nvram: replay: %w", err)
	}
	if err := c.checkPos(from); err != nil {
		return from, fmt.Errorf("nvram: replay: from: %w", err)
	}
	r := &reader{c: c, fresh: o.Epoch}
	cur := from
	var walked int64
	for {
		st, err := r.next(cur, true)
		if err != nil {
			return cur, fmt.Errorf("nvram: replay at %+v: %w", cur, err)
		}
		if !st.ok {
			if st.damaged {
				if err := r.probe(st.h.seq, st.resume, walked+st.walked); err != nil {
					return cur, fmt.Errorf("nvram: replay at %+v: %w", cur, err)
				}
			}
			return cur, nil
		}
		if walked += st.walked; walked > c.size {
			// Impossible without forged records: a chain longer than the
			// region would overlap itself.
			return cur, fmt.Errorf("nvram: replay at %+v: %w: record chain longer than the region", cur, ErrCorrupt)
		}
		if err := fn(st.h.seq, st.payload, st.end); err != nil {
			return cur, fmt.Errorf("nvram: replay: apply seq %d: %w", st.h.seq, err)
		}
		cur = st.end
	}
}

// reader walks the record chain of a region.
type reader struct {
	c       *config
	fresh   uint32 // if non-zero, records of this epoch or later are an error
	buf     []byte // window of the region
	start   int64  // region offset of buf[0]
	n       int64  // valid bytes in buf
	scratch []byte // plaintext of records that are not handed out
	nonce   [nonceLen]byte
}

// step is the outcome of reading the record expected at a position.
type step struct {
	ok      bool
	h       header
	payload []byte
	end     Position // after the record
	walked  int64    // region bytes from the position to end, skipped tail included

	// damaged: a header claims to be the expected record but the record does
	// not authenticate (a torn write or damage). resume is the position
	// just past it, per its header.
	damaged bool
	resume  Position
}

// next reads the record expected at p. keep asks for a payload the caller
// may keep; otherwise it is decrypted into scratch space.
func (r *reader) next(p Position, keep bool) (step, error) {
	var st step
	off, minEpoch := p.Off, p.Epoch
	if r.c.size-off < minSpan {
		st.walked, off = r.c.size-off, 0
	}
	h, ok, err := r.record(off, p.Seq, minEpoch, keep, &st)
	if err != nil || !ok {
		return st, err
	}
	if h.kind == kindWrap {
		if off == 0 {
			return st, nil
		}
		st.walked += r.c.size - off
		off, minEpoch = 0, h.epoch
		if h, ok, err = r.record(0, p.Seq, minEpoch, keep, &st); err != nil || !ok {
			return st, err
		}
		if h.kind == kindWrap {
			return st, nil
		}
	}
	span := spanOf(int(h.length))
	st.ok, st.h = true, h
	st.walked += span
	st.end = Position{Seq: h.seq + 1, Off: off + span, Epoch: h.epoch}
	return st, nil
}

// record reads and checks the record at region offset off, expected to have
// the given seq and an epoch of at least minEpoch. ok means it is valid (a
// data record's plaintext is in st.payload when keep). If its header matches
// but it does not authenticate, st.damaged is set. err is an I/O or epoch
// error.
func (r *reader) record(off int64, seq uint64, minEpoch uint32, keep bool, st *step) (h header, ok bool, err error) {
	hb, err := r.get(off, headerLen)
	if err != nil {
		return h, false, err
	}
	h, err = decodeHeader(hb)
	if err != nil || h.seq != seq || h.off != off || h.epoch < minEpoch {
		return h, false, nil
	}
	span := spanOf(int(h.length))
	if off+span > r.c.size {
		return h, false, nil
	}
	rec, err := r.get(off, headerLen+int64(h.length)+tagLen)
	if err != nil {
		return h, false, err
	}
	var dst []byte
	if keep && h.kind == kindData {
		dst = make([]byte, 0, h.length)
	} else {
		dst = r.scratch[:0]
	}
	pt, aerr := openRecord(r.c.aead, dst, &h, rec, &r.nonce)
	if aerr != nil {
		st.damaged, st.h = true, h
		if h.kind == kindWrap {
			st.resume = Position{Seq: h.seq, Off: 0, Epoch: minEpoch}
		} else {
			st.resume = Position{Seq: h.seq + 1, Off: off + span, Epoch: minEpoch}
		}
		return h, false, nil
	}
	if r.fresh != 0 && h.epoch >= r.fresh {
		return h, false, fmt.Errorf("%w: record seq %d has epoch %d, this boot is epoch %d", ErrEpoch, h.seq, h.epoch, r.fresh)
	}
	if keep && h.kind == kindData {
		st.payload = pt
	} else if cap(pt) > cap(r.scratch) {
		r.scratch = pt[:0]
	}
	return h, true, nil
}

// probe walks on, without applying anything, past a damaged record with seq
// bad, starting at p. If a later record's durable watermark covers bad, the
// damaged record had been durable: ErrCorrupt. walked bounds the walk to one
// lap of the region.
func (r *reader) probe(bad uint64, p Position, walked int64) error {
	fresh := r.fresh
	r.fresh = 0
	defer func() { r.fresh = fresh }()
	for walked <= r.c.size {
		st, err := r.next(p, false)
		if err != nil {
			return err
		}
		switch {
		case st.ok:
			if st.h.durable >= bad {
				return fmt.Errorf("%w: record seq %d is damaged but record seq %d shows it was durable", ErrCorrupt, bad, st.h.seq)
			}
			walked += st.walked
			p = st.end
		case st.damaged:
			walked += spanOf(int(st.h.length))
			p = st.resume
		default:
			return nil
		}
	}
	return nil
}

// get returns n bytes of the region at off (off+n <= size), reading through
// the window. Bytes past the end of the file read as zeros.
func (r *reader) get(off, n int64) ([]byte, error) {
	if off >= r.start && off+n <= r.start+r.n {
		return r.buf[off-r.start : off-r.start+n], nil
	}
	want := min(max(n, replayWindow), r.c.size-off)
	if want < n {
		return nil, fmt.Errorf("%w: read of %d bytes at region offset %d past the region", ErrInvalid, n, off)
	}
	if int64(cap(r.buf)) < want {
		r.buf = make([]byte, want)
	}
	b := r.buf[:want]
	r.start, r.n = off, 0
	k, err := r.c.file.ReadAt(b, r.c.base+off)
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("nvram: read region offset %d: %w", off, err)
	}
	if err == nil && int64(k) < want {
		return nil, fmt.Errorf("nvram: read region offset %d: short read %d of %d", off, k, want)
	}
	clear(b[k:])
	r.buf, r.n = b, want
	return b[:n], nil
}
