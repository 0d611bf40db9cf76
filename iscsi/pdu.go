package iscsi

// This file is the iSCSI PDU codec (RFC 7143 §11): the 48-byte Basic Header
// Segment, additional header segments, padding and CRC32C digests.
//
// Wire layout of one PDU:
//
//	BHS            48 bytes
//	AHS            TotalAHSLength*4 bytes (byte 4 of the BHS)
//	HeaderDigest   4 bytes, CRC32C of BHS+AHS, if negotiated
//	DataSegment    DataSegmentLength bytes (bytes 5-7 of the BHS)
//	Padding        0-3 zero bytes to a 4-byte boundary
//	DataDigest     4 bytes, CRC32C of data+padding, if negotiated and the
//	               data segment is not empty
//
// Digests are sent least significant byte first (as every initiator does).
// Multi-byte header fields are big-endian.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
)

// Opcodes (RFC 7143 §11.1.1).
const (
	opNopOut    = 0x00
	opSCSICmd   = 0x01
	opTMFReq    = 0x02
	opLoginReq  = 0x03
	opTextReq   = 0x04
	opDataOut   = 0x05
	opLogoutReq = 0x06
	opSNACKReq  = 0x10

	opNopIn      = 0x20
	opSCSIResp   = 0x21
	opTMFResp    = 0x22
	opLoginResp  = 0x23
	opTextResp   = 0x24
	opDataIn     = 0x25
	opLogoutResp = 0x26
	opR2T        = 0x31
	opAsync      = 0x32
	opReject     = 0x3f
)

// Header flag bits.
const (
	flagImmediate = 0x40 // byte 0
	flagFinal     = 0x80 // byte 1
	flagContinue  = 0x40 // byte 1, login and text
	flagRead      = 0x40 // byte 1, SCSI command
	flagWrite     = 0x20 // byte 1, SCSI command
	attrMask      = 0x07 // byte 1, SCSI command task attribute

	flagStatus    = 0x01 // byte 1, Data-In: S
	flagUnderflow = 0x02 // U
	flagOverflow  = 0x04 // O
	flagTransit   = 0x80 // byte 1, login: T
)

// Reject reasons (RFC 7143 §11.17.1).
const (
	rejectDataDigest   = 0x02
	rejectSNACK        = 0x03
	rejectProtocol     = 0x04
	rejectNotSupported = 0x05
	rejectImmediate    = 0x06
	rejectTaskInProg   = 0x07
	rejectInvalidField = 0x09
	rejectResources    = 0x0a
	rejectWaitLogout   = 0x0c
)

const (
	bhsLen        = 48
	digestLen     = 4
	maxAHSLen     = 255 * 4
	maxDataSegLen = 1<<24 - 1
	reservedTag   = 0xffffffff
)

// Codec errors.
var (
	errHeaderDigest = errors.New("header digest mismatch")
	errDataDigest   = errors.New("data digest mismatch")
	errDataTooLong  = errors.New("data segment longer than MaxRecvDataSegmentLength")
	errAHSTooLong   = errors.New("additional header segments too long")
	errShortPDU     = errors.New("truncated PDU")
	errNotLogin     = errors.New("not a login request")
)

// crcTable is the CRC32C (Castagnoli) table; it is never written after init.
var crcTable = crc32.MakeTable(crc32.Castagnoli)

// bhs is a Basic Header Segment.
type bhs [bhsLen]byte

func (h *bhs) opcode() uint8           { return h[0] & 0x3f }
func (h *bhs) immediate() bool         { return h[0]&flagImmediate != 0 }
func (h *bhs) final() bool             { return h[1]&flagFinal != 0 }
func (h *bhs) ahsLen() int             { return int(h[4]) * 4 }
func (h *bhs) dataLen() int            { return int(h[5])<<16 | int(h[6])<<8 | int(h[7]) }
func (h *bhs) lun() uint64             { return binary.BigEndian.Uint64(h[8:16]) }
func (h *bhs) itt() uint32             { return binary.BigEndian.Uint32(h[16:20]) }
func (h *bhs) u32(off int) uint32      { return binary.BigEndian.Uint32(h[off : off+4]) }
func (h *bhs) u16(off int) uint16      { return binary.BigEndian.Uint16(h[off : off+2]) }
func (h *bhs) put32(off int, v uint32) { binary.BigEndian.PutUint32(h[off:off+4], v) }
func (h *bhs) put16(off int, v uint16) { binary.BigEndian.PutUint16(h[off:off+2], v) }
func (h *bhs) setLUN(l uint64)         { binary.BigEndian.PutUint64(h[8:16], l) }
func (h *bhs) setITT(v uint32)         { h.put32(16, v) }

func (h *bhs) setDataLen(n int) {
	h[5] = byte(n >> 16)
	h[6] = byte(n >> 8)
	h[7] = byte(n)
}

// Common field offsets.
const (
	offTTT      = 20
	offCmdSN    = 24 // initiator PDUs
	offExpStat  = 28 // initiator PDUs
	offStatSN   = 24 // target PDUs
	offExpCmdSN = 28 // target PDUs
	offMaxCmdSN = 32 // target PDUs
)

func pad4(n int) int { return (n + 3) &^ 3 }

// pduReader reads PDUs from a connection. It owns a buffered reader; data
// segments are read straight into the caller's buffer.
type pduReader struct {
	r          *bufio.Reader
	hdrDigest  bool
	dataDigest bool
	maxData    int // MaxRecvDataSegmentLength we declared
	maxAHS     int
	hdr        bhs
	loginOnly  bool // before full feature phase only Login Requests are valid
	ahs        [maxAHSLen]byte
	ahsN       int
	scratch    [digestLen]byte
}

// readHeader reads the BHS, any AHS and the header digest. On
// errDataTooLong the header is valid (and digest-checked) and the caller may
// send a Reject before closing.
func (p *pduReader) readHeader() error {
	if _, err := io.ReadFull(p.r, p.hdr[:]); err != nil {
		return err
	}
	p.ahsN = p.hdr.ahsLen()
	if p.loginOnly && (p.hdr.opcode() != opLoginReq || p.ahsN != 0) {
		return errNotLogin
	}
	if p.ahsN > p.maxAHS {
		return errAHSTooLong
	}
	if p.ahsN > 0 {
		if _, err := io.ReadFull(p.r, p.ahs[:p.ahsN]); err != nil {
			return noEOF(err)
		}
	}
	if p.hdrDigest {
		if _, err := io.ReadFull(p.r, p.scratch[:]); err != nil {
			return noEOF(err)
		}
		sum := crc32.Update(0, crcTable, p.hdr[:])
		sum = crc32.Update(sum, crcTable, p.ahs[:p.ahsN])
		if binary.LittleEndian.Uint32(p.scratch[:]) != sum {
			return errHeaderDigest
		}
	}
	if p.hdr.dataLen() > p.maxData {
		return errDataTooLong
	}
	return nil
}

var zeroPad [4]byte

// readData reads the data segment of the current PDU. The first len(dst)
// bytes go to dst (len(dst) must not exceed the segment length); the rest is
// read and discarded. Padding and the data digest are consumed and checked.
func (p *pduReader) readData(dst []byte) error {
	n := p.hdr.dataLen()
	if n == 0 {
		return nil
	}
	if len(dst) > n {
		return fmt.Errorf("iscsi: readData: buffer %d > segment %d", len(dst), n)
	}
	if _, err := io.ReadFull(p.r, dst); err != nil {
		return noEOF(err)
	}
	var sum uint32
	if p.dataDigest {
		sum = crc32.Update(0, crcTable, dst)
	}
	rest := pad4(n) - len(dst)
	for rest > 0 {
		chunk, err := p.r.Peek(min(rest, p.r.Size()))
		if len(chunk) == 0 {
			return noEOF(err)
		}
		if p.dataDigest {
			sum = crc32.Update(sum, crcTable, chunk)
		}
		p.r.Discard(len(chunk))
		rest -= len(chunk)
	}
	if p.dataDigest {
		if _, err := io.ReadFull(p.r, p.scratch[:]); err != nil {
			return noEOF(err)
		}
		if binary.LittleEndian.Uint32(p.scratch[:]) != sum {
			return errDataDigest
		}
	}
	return nil
}

func noEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// pduWriter writes PDUs through a buffered writer. Headers are copied into
// its scratch space first, so callers' header variables stay on their
// stacks (no allocation per PDU).
type pduWriter struct {
	w          *bufio.Writer
	hdrDigest  bool
	dataDigest bool
	scratch    [bhsLen + digestLen]byte
	pad        [4 + digestLen]byte
}

// write writes one PDU: header, digest, data, padding, data digest. It sets
// the header's data segment length and clears its AHS length.
func (p *pduWriter) write(h *bhs, data []byte) error {
	h.setDataLen(len(data))
	h[4] = 0
	n := copy(p.scratch[:], h[:])
	if p.hdrDigest {
		// Digest the copy: crc32 would make h escape.
		binary.LittleEndian.PutUint32(p.scratch[n:], crc32.Update(0, crcTable, p.scratch[:n]))
		n += digestLen
	}
	p.w.Write(p.scratch[:n])
	if len(data) == 0 {
		return nil
	}
	p.w.Write(data)
	padN := pad4(len(data)) - len(data)
	tail := p.pad[:padN]
	clear(tail)
	if p.dataDigest {
		sum := crc32.Update(0, crcTable, data)
		sum = crc32.Update(sum, crcTable, tail)
		tail = binary.LittleEndian.AppendUint32(tail, sum)
	}
	_, err := p.w.Write(tail)
	return err
}

// writePDU writes one PDU (login phase and tests; allocates).
func writePDU(w *bufio.Writer, h *bhs, data []byte, hdrDigest, dataDigest bool) error {
	p := &pduWriter{w: w, hdrDigest: hdrDigest, dataDigest: dataDigest}
	return p.write(h, data)
}

// decodedPDU is a PDU parsed from a byte slice (tests, fuzzing, login).
type decodedPDU struct {
	hdr  bhs
	ahs  []byte
	data []byte
}

// decodePDU parses one PDU from b and returns it and the number of bytes
// used. It applies the same checks as pduReader.
func decodePDU(b []byte, hdrDigest, dataDigest bool, maxData int) (decodedPDU, int, error) {
	var p decodedPDU
	if len(b) < bhsLen {
		return p, 0, errShortPDU
	}
	copy(p.hdr[:], b)
	off := bhsLen
	ahsN := p.hdr.ahsLen()
	if len(b) < off+ahsN {
		return p, 0, errShortPDU
	}
	p.ahs = b[off : off+ahsN]
	off += ahsN
	if hdrDigest {
		if len(b) < off+digestLen {
			return p, 0, errShortPDU
		}
		sum := crc32.Checksum(b[:off], crcTable)
		if binary.LittleEndian.Uint32(b[off:]) != sum {
			return p, 0, errHeaderDigest
		}
		off += digestLen
	}
	n := p.hdr.dataLen()
	if n > maxData {
		return p, 0, errDataTooLong
	}
	if n > 0 {
		if len(b) < off+pad4(n) {
			return p, 0, errShortPDU
		}
		p.data = b[off : off+n]
		padded := b[off : off+pad4(n)]
		off += pad4(n)
		if dataDigest {
			if len(b) < off+digestLen {
				return p, 0, errShortPDU
			}
			if binary.LittleEndian.Uint32(b[off:]) != crc32.Checksum(padded, crcTable) {
				return p, 0, errDataDigest
			}
			off += digestLen
		}
	}
	return p, off, nil
}

func crcUpdate(sum uint32, p []byte) uint32 { return crc32.Update(sum, crcTable, p) }

// serial number arithmetic (RFC 1982, 32 bits) for CmdSN and friends.
func snLess(a, b uint32) bool { return a != b && int32(a-b) < 0 }
func snLE(a, b uint32) bool   { return a == b || int32(a-b) < 0 }
