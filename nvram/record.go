package nvram

// Record format, version 1.
//
// The log region is a sequence of records. Every record starts at a
// region-relative offset that is a multiple of recordAlign (16). All integers
// are little-endian.
//
//	off  len  field
//	  0    4  magic "NVRL"
//	  4    1  format version (FormatVersion = 1)
//	  5    1  kind: 1 = data record, 2 = wrap marker
//	  6    2  reserved, zero
//	  8    4  epoch: boot epoch of the writer
//	 12    4  payload length n (0 for a wrap marker)
//	 16    8  seq (< 2^63)
//	 24    8  region-relative offset of this record
//	 32    8  durable watermark: every seq <= this value was durable when
//	          this record was sealed
//	 40    n  payload, AES-256-GCM ciphertext
//	40+n  16  GCM tag
//	   -   -  zero padding up to the next multiple of 16 (not authenticated,
//	          never read)
//
// The span of a record (the bytes it occupies) is align16(56+n); the smallest
// span, that of a wrap marker, is minSpan = 64.
//
// Sealing: AES-256-GCM under the NVRAM media key. The 12-byte nonce is
// epoch (4 bytes LE) || seq (8 bytes LE) with bit 63 of the seq field set for
// a wrap marker. The boot epoch strictly increases across boots and seq
// strictly increases within a boot, so a (key, nonce) pair is never used
// twice; data record and wrap marker of the same seq differ in bit 63. The
// additional authenticated data is the whole 40-byte header, so epoch, seq,
// kind, length, the durable watermark and the record's own offset are all
// bound to the ciphertext: a record copied to another offset, or a header
// from one record glued to the body of another, fails authentication.
//
// Wrap rule (a record never straddles the end of the region): the writer at
// tail offset T with a record of span s
//   - writes it at T if T+s <= Size;
//   - otherwise, if Size-T >= minSpan, writes a wrap marker (kind 2, same seq
//     and epoch as the record that follows, offset T, n = 0) at T and the
//     record at offset 0;
//   - otherwise (fewer than minSpan bytes left) writes the record at offset 0
//     with no marker: a reader at an offset with fewer than minSpan bytes
//     before the end of the region continues at 0 (implicit wrap).
//
// A reader therefore finds the next record deterministically from the end of
// the previous one: implicit wrap if too close to the end; else the header at
// that offset, and if it is a wrap marker that authenticates, the data record
// at offset 0. A marker is never valid at offset 0.
//
// What a torn or stale record looks like: a zeroed or never-written slot fails
// the magic check; a record torn by a crash (some of its 4 KiB blocks written,
// others not) fails GCM authentication; a stale record from an earlier lap
// or an earlier boot has the wrong seq, the wrong offset, or an epoch lower
// than the record before it (see the package comment for why that rule is
// what keeps a stale record from being resurrected).

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"fmt"
)

// FormatVersion is the version of the record format written by this package.
const FormatVersion = 1

const (
	headerLen   = 40
	tagLen      = 16
	recordAlign = 16
	minSpan     = (headerLen + tagLen + recordAlign - 1) &^ (recordAlign - 1) // 64: a wrap marker
	nonceLen    = 12

	kindData uint8 = 1
	kindWrap uint8 = 2

	seqLimit   = uint64(1) << 63 // seq must stay below; bit 63 of the nonce marks a wrap marker
	markerFlag = uint64(1) << 63
)

var recordMagic = [4]byte{'N', 'V', 'R', 'L'}

// Reasons a header or record is rejected. They are internal: Replay treats
// every one of them as the end of the log.
var (
	errMagic    = errors.New("bad magic")
	errVersion  = errors.New("unsupported record version")
	errKind     = errors.New("bad record kind")
	errReserved = errors.New("reserved bytes not zero")
	errSeqRange = errors.New("seq out of range")
	errLength   = errors.New("payload length out of range")
	errAuth     = errors.New("record failed authentication")
)

// header is the decoded fixed part of a record.
type header struct {
	kind    uint8
	epoch   uint32
	length  uint32 // payload bytes
	seq     uint64
	off     int64 // region-relative offset of the record
	durable uint64
}

// spanOf is the number of region bytes a record with an n-byte payload takes.
func spanOf(n int) int64 {
	return (int64(headerLen+tagLen+n) + recordAlign - 1) &^ (recordAlign - 1)
}

// encode writes the header into b[:headerLen].
func (h *header) encode(b []byte) {
	_ = b[headerLen-1]
	copy(b[0:4], recordMagic[:])
	b[4] = FormatVersion
	b[5] = h.kind
	b[6], b[7] = 0, 0
	binary.LittleEndian.PutUint32(b[8:], h.epoch)
	binary.LittleEndian.PutUint32(b[12:], h.length)
	binary.LittleEndian.PutUint64(b[16:], h.seq)
	binary.LittleEndian.PutUint64(b[24:], uint64(h.off))
	binary.LittleEndian.PutUint64(b[32:], h.durable)
}

// decodeHeader parses b[:headerLen]. It checks only what can be checked
// without the key and without knowing where the record was expected; it never
// panics on arbitrary input.
func decodeHeader(b []byte) (header, error) {
	var h header
	if len(b) < headerLen {
		return h, fmt.Errorf("%w: %d header bytes", errLength, len(b))
	}
	if [4]byte(b[0:4]) != recordMagic {
		return h, errMagic
	}
	if b[4] != FormatVersion {
		return h, fmt.Errorf("%w %d", errVersion, b[4])
	}
	h.kind = b[5]
	if h.kind != kindData && h.kind != kindWrap {
		return h, fmt.Errorf("%w %d", errKind, h.kind)
	}
	if b[6] != 0 || b[7] != 0 {
		return h, errReserved
	}
	h.epoch = binary.LittleEndian.Uint32(b[8:])
	h.length = binary.LittleEndian.Uint32(b[12:])
	h.seq = binary.LittleEndian.Uint64(b[16:])
	off := binary.LittleEndian.Uint64(b[24:])
	h.durable = binary.LittleEndian.Uint64(b[32:])
	if h.seq == 0 || h.seq >= seqLimit {
		return h, errSeqRange
	}
	if off >= 1<<62 || off%recordAlign != 0 {
		return h, fmt.Errorf("%w: offset %d", errLength, off)
	}
	h.off = int64(off)
	if h.length > MaxPayloadLimit || (h.kind == kindWrap && h.length != 0) {
		return h, fmt.Errorf("%w: %d", errLength, h.length)
	}
	return h, nil
}

// nonce derives the GCM nonce of a record from its header.
func (h *header) nonce() [nonceLen]byte {
	var n [nonceLen]byte
	h.putNonce(&n)
	return n
}

// putNonce writes the nonce into n (callers keep n in memory that is
// already on the heap, so that passing it to the AEAD does not allocate).
func (h *header) putNonce(n *[nonceLen]byte) {
	binary.LittleEndian.PutUint32(n[0:], h.epoch)
	s := h.seq
	if h.kind == kindWrap {
		s |= markerFlag
	}
	binary.LittleEndian.PutUint64(n[4:], s)
}

// sealRecord encodes the record described by h with the given payload into
// dst, which must be exactly spanOf(len(payload)) bytes. h.length is set from
// the payload. nonce is scratch space; with it on the heap, sealRecord does
// not allocate.
func sealRecord(aead cipher.AEAD, dst []byte, h header, payload []byte, nonce *[nonceLen]byte) {
	h.length = uint32(len(payload))
	h.encode(dst[:headerLen])
	h.putNonce(nonce)
	end := headerLen + len(payload) + tagLen
	aead.Seal(dst[headerLen:headerLen:end], nonce[:], payload, dst[:headerLen])
	clear(dst[end:])
}

// openRecord authenticates and decrypts a record whose header h was decoded
// from rec[:headerLen]. rec must hold at least headerLen+h.length+tagLen
// bytes. The plaintext is appended to dst[:0] (so dst may be reused or nil).
// nonce is scratch space, as for sealRecord.
func openRecord(aead cipher.AEAD, dst []byte, h *header, rec []byte, nonce *[nonceLen]byte) ([]byte, error) {
	end := headerLen + int(h.length) + tagLen
	if len(rec) < end {
		return nil, fmt.Errorf("%w: record needs %d bytes, have %d", errLength, end, len(rec))
	}
	h.putNonce(nonce)
	out, err := aead.Open(dst[:0], nonce[:], rec[headerLen:end], rec[:headerLen])
	if err != nil {
		return nil, errAuth
	}
	return out, nil
}
