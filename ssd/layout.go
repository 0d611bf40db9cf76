// Segment and page format on the virtual SSDs, format version 1.
//
// # Device file
//
//	offset 0          superblock copy 0 (devsb.Size bytes, see internal/devsb)
//	offset 4096       superblock copy 1
//	offset 8192       unused up to AUSize (the first AU-sized area is reserved)
//	offset AUSize*(a+1) AU a, for a in [0, Capacity/AUSize - 1)
//
// AUSize is a multiple of PageSize and at least devsb.DataOffset. An AU is a
// sequence of AUSize/PageSize pages; page r of AU a starts at device offset
// AUSize*(a+1) + r*PageSize.
//
// # Segment
//
// A segment is written at one AU index a on every one of the n devices of a
// set (n in [MinDevices, MaxDevices]). Page r of AU a on every device forms
// stripe row r. A row has n columns: D = n-2 data columns and 2 parity
// columns. Column c of AU a lives on the device with slot (c + a) mod n, so
// the parity columns rotate over the devices from one AU to the next and
// every device serves reads.
//
// The segment payload is laid out row by row, P = PagePayload bytes per data
// column: payload byte x lives in row x / (D*P), column (x mod (D*P)) / P, at
// byte (x mod (D*P)) mod P of that page's payload. Equivalently, the data
// pages taken in row-major order hold consecutive P-byte slices of the
// payload. A segment shorter than the AU's capacity (a partial segment) uses
// only the first ceil(len/(D*P)) rows; its last row is zero-padded, and rows
// beyond it are neither written nor read.
//
// The two parity columns hold Reed-Solomon parity over GF(2^8) as computed by
// github.com/klauspost/reedsolomon New(D, 2) with its default matrix, over the
// plaintext payload of the D data pages of the row, bytewise. (Encoding the
// whole segment in one call over column-concatenated shards gives the same
// bytes as encoding each row.) Changing the library's default matrix would
// change this format.
//
// # Page (PageSize = 4096 bytes)
//
//	off   len   field
//	   0  4084  payload (PagePayload bytes), AES-256-CTR encrypted with the
//	            device's media key
//	4084     8  segment id, little-endian, in the clear
//	4092     4  CRC32C (Castagnoli), little-endian, over bytes [0, 4092) of
//	            the page followed by its 7-byte address: row (uint32 LE),
//	            slot (uint16 LE), FormatVersion (uint8)
//
// The CRC covers the encrypted bytes, so scrubbing checks a page without any
// key. Binding the address into the CRC makes a page written at the wrong row
// or onto the wrong device fail its check; the segment id makes a stale page
// (left over from an earlier segment in a reused AU) fail it. Segment id 0 is
// reserved: an unwritten (all-zero) page carries it.
//
// Encryption: all pages of one segment on one device (slot) share one
// AES-256-CTR keystream under that device's media key, whose initial counter
// block is, big-endian, segment id (8 bytes) || slot (2 bytes) || 0 (6
// bytes). Page r uses keystream bytes [r*PageSize, r*PageSize+PagePayload):
// its counter blocks are r*256 to r*256+255, so pages never share a block,
// a column of a segment is encrypted with one stream, and the counter never
// carries into the slot (r < 2^40). Segment ids are never reused and each
// device has its own key, so a (key, counter) pair never covers two
// different plaintexts; a repair rewrites a page with exactly the bytes
// first written there.

package ssd

import (
	"crypto/cipher"
	"encoding/binary"
	"errors"
	"hash/crc32"
)

// Format constants.
const (
	// FormatVersion is the version of the segment and page format above.
	FormatVersion = 1
	// PageSize is the size of one page on media.
	PageSize = 4096
	// PagePayload is the number of payload bytes one page carries.
	PagePayload = 4084
	// ParityShards is the number of parity columns in every row.
	ParityShards = 2
	// MinDevices and MaxDevices bound the number of devices in a set.
	MinDevices = 6
	MaxDevices = 24
	// DefaultAUSize is the allocation-unit size new arrays use.
	DefaultAUSize = 1 << 20
	// MaxAUSize bounds the allocation-unit size (and so every buffer).
	MaxAUSize = 64 << 20
	// MinAUSize is the smallest allocation unit: it must hold both superblocks.
	MinAUSize = 8192

	trailerSegOff = PagePayload     // segment id
	trailerCRCOff = PagePayload + 8 // CRC32C
)

// Page check failures. They are internal: a caller sees the repaired data or
// ErrUnrecoverable.
var (
	errPageStale    = errors.New("page belongs to another segment")
	errPageChecksum = errors.New("page checksum mismatch")
	errPageSize     = errors.New("page is not PageSize bytes")
)

// castagnoli returns the CRC32C table (crc32 caches it after the first call).
func castagnoli() *crc32.Table { return crc32.MakeTable(crc32.Castagnoli) }

// pageCRC is the CRC32C of page[:trailerCRCOff] followed by the page
// address (row uint32 LE, slot uint16 LE, FormatVersion). The address bytes
// are folded in one by one with the table (the bytewise CRC update), which
// gives the same value as crc32.Update over them without a heap slice.
func pageCRC(page []byte, row, slot int) uint32 {
	tab := castagnoli()
	c := ^crc32.Update(0, tab, page[:trailerCRCOff])
	addr := uint64(uint32(row)) | uint64(uint16(slot))<<32 | uint64(FormatVersion)<<48
	for range 7 {
		c = tab[byte(c)^byte(addr)] ^ c>>8
		addr >>= 8
	}
	return ^c
}

// pageTrailer is the decoded trailer of a page.
type pageTrailer struct {
	segID uint64
	crc   uint32
}

// decodeTrailer parses a page's trailer without checking anything. It is the
// inner decoder that the fuzzer drives.
func decodeTrailer(page []byte) (pageTrailer, error) {
	if len(page) != PageSize {
		return pageTrailer{}, errPageSize
	}
	return pageTrailer{
		segID: binary.LittleEndian.Uint64(page[trailerSegOff:]),
		crc:   binary.LittleEndian.Uint32(page[trailerCRCOff:]),
	}, nil
}

// checkPage verifies that page is the intact page (row, slot) of segment
// segID. It needs no key.
func checkPage(page []byte, segID uint64, row, slot int) error {
	t, err := decodeTrailer(page)
	if err != nil {
		return err
	}
	if t.crc != pageCRC(page, row, slot) {
		return errPageChecksum
	}
	if t.segID != segID {
		return errPageStale
	}
	return nil
}

// ctrScratch is per-goroutine scratch for xorPage, kept in pooled buffers so
// that nothing escapes to the heap per page.
type ctrScratch struct {
	iv   [16]byte
	skip [16]byte // at least PageSize-PagePayload
}

// keystream returns the CTR stream of segment segID on slot, positioned at
// byte pos of the (segment, slot) keystream.
func keystream(blk cipher.Block, sc *ctrScratch, segID uint64, slot int, pos int64) cipher.Stream {
	binary.BigEndian.PutUint64(sc.iv[0:], segID)
	binary.BigEndian.PutUint64(sc.iv[8:], uint64(slot)<<48|uint64(pos/16))
	st := cipher.NewCTR(blk, sc.iv[:])
	if r := pos % 16; r != 0 {
		st.XORKeyStream(sc.skip[:r], sc.skip[:r])
	}
	return st
}

// xorPage XORs src into dst with the keystream of page (segID, row, slot)
// starting at payload byte off. It both encrypts and decrypts.
func xorPage(blk cipher.Block, sc *ctrScratch, segID uint64, row, slot, off int, dst, src []byte) {
	keystream(blk, sc, segID, slot, int64(row)*PageSize+int64(off)).XORKeyStream(dst, src)
}

// sealTrailer writes the trailer of page (row, slot) of segment segID, whose
// payload is already encrypted.
func sealTrailer(page []byte, segID uint64, row, slot int) {
	binary.LittleEndian.PutUint64(page[trailerSegOff:], segID)
	binary.LittleEndian.PutUint32(page[trailerCRCOff:], pageCRC(page, row, slot))
}

// sealColumn encodes rows [firstRow, firstRow+rows) of one column of
// segment segID: plain holds rows*PagePayload bytes, media receives
// rows*PageSize. One keystream covers the column.
func sealColumn(media, plain []byte, firstRow, rows int, blk cipher.Block, sc *ctrScratch, segID uint64, slot int) {
	st := keystream(blk, sc, segID, slot, int64(firstRow)*PageSize)
	for i := range rows {
		page := media[i*PageSize : (i+1)*PageSize]
		st.XORKeyStream(page[:PagePayload], plain[i*PagePayload:(i+1)*PagePayload])
		if i+1 < rows {
			st.XORKeyStream(sc.skip[:PageSize-PagePayload], sc.skip[:PageSize-PagePayload])
		}
		sealTrailer(page, segID, firstRow+i, slot)
	}
}

// sealPage encodes plain (PagePayload bytes) as page (row, slot) of segment
// segID into page (PageSize bytes).
func sealPage(page, plain []byte, blk cipher.Block, sc *ctrScratch, segID uint64, row, slot int) {
	xorPage(blk, sc, segID, row, slot, 0, page[:PagePayload], plain[:PagePayload])
	sealTrailer(page, segID, row, slot)
}

// geometry is the shape of a set's segments.
type geometry struct {
	n         int   // devices (columns per row)
	d         int   // data columns per row
	auSize    int64 // bytes per AU
	rowsPerAU int   // pages per AU
}

func newGeometry(n int, auSize int64) geometry {
	return geometry{n: n, d: n - ParityShards, auSize: auSize, rowsPerAU: int(auSize / PageSize)}
}

// rowPayload is the number of payload bytes in one stripe row.
func (g geometry) rowPayload() int { return g.d * PagePayload }

// segmentPayload is the largest payload of one segment.
func (g geometry) segmentPayload() int { return g.rowsPerAU * g.rowPayload() }

// rows is the number of rows a payload of length l occupies.
func (g geometry) rows(l int) int { return (l + g.rowPayload() - 1) / g.rowPayload() }

// slotOf is the device slot that holds column col of AU au.
func (g geometry) slotOf(au, col int) int { return (col + au) % g.n }

// colOf is the column of AU au that device slot holds.
func (g geometry) colOf(au, slot int) int { return (slot - au%g.n + g.n) % g.n }

// pageOffset is the device offset of page row of AU au.
func (g geometry) pageOffset(au, row int) int64 {
	return g.auSize*int64(au+1) + int64(row)*PageSize
}

// pageSpan describes the data pages that payload range [off, off+length)
// touches. Data pages are numbered in row-major order: page gp is row
// gp / d, column gp % d, and holds payload bytes [gp*P, (gp+1)*P).
type pageSpan struct {
	first, last int // first and last data page touched
}

func (g geometry) span(off int64, length int) pageSpan {
	return pageSpan{first: int(off / PagePayload), last: int((off + int64(length) - 1) / PagePayload)}
}

// colRows returns the rows [r0, r1) of column col that the span touches.
func (g geometry) colRows(s pageSpan, col int) (r0, r1 int) {
	// First gp >= s.first with gp % d == col, and last gp <= s.last.
	r0 = s.first / g.d
	if r0*g.d+col < s.first {
		r0++
	}
	r1 = s.last / g.d
	if r1*g.d+col > s.last {
		r1--
	}
	return r0, r1 + 1
}

// clip returns the payload bytes of data page gp that fall inside
// [off, off+length): the byte range [b0, b1) within the page and the offset
// pos in the caller's buffer where b0 goes.
func clip(gp int, off int64, length int) (b0, b1, pos int) {
	start := int64(gp) * PagePayload
	lo := max(off, start)
	hi := min(off+int64(length), start+PagePayload)
	return int(lo - start), int(hi - start), int(lo - off)
}
