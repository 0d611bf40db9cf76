package phonehome

// The spool's on-disk format. The spool is the directory <data dir>/spool/
// holding one file per document waiting to be sent, and one state file:
//
//	<seq: 16 lower-case hex digits>.doc   a document (layout below)
//	<seq>.tmp                             a document being written; removed
//	                                      at open (it was never acknowledged)
//	state                                 the spool's counters (layout below)
//	state.tmp                             a state being written; removed at open
//
// A file reaches its final name only after its contents are synced (write
// the .tmp file, fsync, rename, fsync the directory), so a crash leaves
// either the old file or the new one, never a torn one. A file that fails
// its checksums anyway (the medium went bad) is removed and reported.
//
// Document file, format version 1 (integers little-endian):
//
//	offset  size  field
//	0       4     magic "VFAD"
//	4       1     version (1)
//	5       1     kind: 1 diagnostics, 2 logs, 3 alerts
//	6       1     flags: bit 0 manual (asked for by an administrator);
//	              the other bits are zero
//	7       1     zero
//	8       8     sequence number (>= 1; the file name says the same)
//	16      8     created, Unix nanoseconds (int64)
//	24      8     audit cursor: the highest audit-log id this document or
//	              an earlier one covers (0: none)
//	32      4     body length in bytes (1 to DocumentBytesMax)
//	36      4     CRC-32C (Castagnoli) of the body
//	40      4     CRC-32C of bytes 0 to 39
//	44      ...   body: the gzip-compressed JSON document, exactly as it is
//	              POSTed to the endpoint
//
// Nothing follows the body.
//
// State file, format version 1 (40 bytes):
//
//	0   4  magic "VFAS"
//	4   1  version (1)
//	5   3  zero
//	8   8  next sequence number to assign (>= 1)
//	16  8  audit cursor (highest audit-log id already spooled)
//	24  8  documents dropped or cancelled so far, in total
//	32  4  zero
//	36  4  CRC-32C of bytes 0 to 35
//
// The state is only written when removing a file would lose a counter: at
// open, the next sequence number is the larger of the state's and one more
// than the highest spooled document's, and the audit cursor likewise, so
// appending a document needs no state write. Before the spool removes the
// document with the highest sequence number (or audit cursor), it writes
// the state first.

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"time"
)

// SpoolFormatVersion is the version of the spool's files.
const SpoolFormatVersion = 1

// Sizes of the spool's files.
const (
	docHeaderSize = 44
	stateSize     = 40
	// DocumentBytesMax bounds one document's compressed body.
	DocumentBytesMax = 8 << 20
)

var (
	docMagic   = [4]byte{'V', 'F', 'A', 'D'}
	stateMagic = [4]byte{'V', 'F', 'A', 'S'}
	castagnoli = crc32.MakeTable(crc32.Castagnoli)
)

// ErrSpoolCorrupt: a spool file does not decode or fails its checksum.
var ErrSpoolCorrupt = errors.New("phonehome: spool file is corrupt")

// Kind is a document's kind.
type Kind uint8

// Document kinds.
const (
	KindDiagnostics Kind = 1
	KindLogs        Kind = 2
	KindAlerts      Kind = 3
)

func (k Kind) String() string {
	switch k {
	case KindDiagnostics:
		return "diagnostics"
	case KindLogs:
		return "logs"
	case KindAlerts:
		return "alerts"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

func (k Kind) valid() bool { return k >= KindDiagnostics && k <= KindAlerts }

// kindOf parses a kind name.
func kindOf(s string) (Kind, bool) {
	for k := KindDiagnostics; k <= KindAlerts; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

// Entry describes one spooled document.
type Entry struct {
	Seq         uint64
	Kind        Kind
	Manual      bool
	Created     time.Time
	AuditCursor uint64
	Size        int64 // bytes of the file: header and body
}

const flagManual = 1

// appendDocHeader appends the header of a document with a body of bodyLen
// bytes and checksum bodyCRC.
func appendDocHeader(b []byte, e Entry, bodyLen int, bodyCRC uint32) []byte {
	start := len(b)
	b = append(b, docMagic[:]...)
	var flags byte
	if e.Manual {
		flags |= flagManual
	}
	b = append(b, SpoolFormatVersion, byte(e.Kind), flags, 0)
	b = binary.LittleEndian.AppendUint64(b, e.Seq)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Created.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, e.AuditCursor)
	b = binary.LittleEndian.AppendUint32(b, uint32(bodyLen))
	b = binary.LittleEndian.AppendUint32(b, bodyCRC)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b[start:], castagnoli))
}

// EncodeDocFile encodes a spooled document: header and body.
func EncodeDocFile(e Entry, body []byte) ([]byte, error) {
	if !e.Kind.valid() || e.Seq == 0 {
		return nil, fmt.Errorf("phonehome: spool: bad entry kind %d seq %d", e.Kind, e.Seq)
	}
	if len(body) == 0 || len(body) > DocumentBytesMax {
		return nil, fmt.Errorf("%w: document of %d bytes (1 to %d)", ErrTooLarge, len(body), DocumentBytesMax)
	}
	b := make([]byte, 0, docHeaderSize+len(body))
	b = appendDocHeader(b, e, len(body), crc32.Checksum(body, castagnoli))
	return append(b, body...), nil
}

// DecodeDocHeader decodes and checks a document header (its first
// docHeaderSize bytes); it returns the entry and the body's length and
// checksum.
func DecodeDocHeader(b []byte) (Entry, int, uint32, error) {
	if len(b) < docHeaderSize {
		return Entry{}, 0, 0, fmt.Errorf("%w: header of %d bytes", ErrSpoolCorrupt, len(b))
	}
	if got, want := binary.LittleEndian.Uint32(b[40:44]), crc32.Checksum(b[:40], castagnoli); got != want {
		return Entry{}, 0, 0, fmt.Errorf("%w: header checksum %08x, want %08x", ErrSpoolCorrupt, got, want)
	}
	return decodeDocFields(b[:40])
}

// decodeDocFields decodes the checksummed part of a header (40 bytes).
func decodeDocFields(b []byte) (Entry, int, uint32, error) {
	if len(b) != 40 {
		return Entry{}, 0, 0, fmt.Errorf("%w: header fields of %d bytes", ErrSpoolCorrupt, len(b))
	}
	if [4]byte(b[0:4]) != docMagic {
		return Entry{}, 0, 0, fmt.Errorf("%w: not a spooled document", ErrSpoolCorrupt)
	}
	if b[4] != SpoolFormatVersion {
		return Entry{}, 0, 0, fmt.Errorf("%w: document version %d, this build reads %d", ErrSpoolCorrupt, b[4], SpoolFormatVersion)
	}
	e := Entry{Kind: Kind(b[5]), Manual: b[6]&flagManual != 0}
	if !e.Kind.valid() || b[6]&^flagManual != 0 || b[7] != 0 {
		return Entry{}, 0, 0, fmt.Errorf("%w: kind %d flags %#x", ErrSpoolCorrupt, b[5], b[6])
	}
	e.Seq = binary.LittleEndian.Uint64(b[8:16])
	e.Created = time.Unix(0, int64(binary.LittleEndian.Uint64(b[16:24]))).UTC()
	e.AuditCursor = binary.LittleEndian.Uint64(b[24:32])
	n := binary.LittleEndian.Uint32(b[32:36])
	if e.Seq == 0 || n == 0 || n > DocumentBytesMax {
		return Entry{}, 0, 0, fmt.Errorf("%w: seq %d body of %d bytes", ErrSpoolCorrupt, e.Seq, n)
	}
	e.Size = docHeaderSize + int64(n)
	return e, int(n), binary.LittleEndian.Uint32(b[36:40]), nil
}

// DecodeDocFile decodes a whole document file and checks its body.
func DecodeDocFile(b []byte) (Entry, []byte, error) {
	e, n, sum, err := DecodeDocHeader(b)
	if err != nil {
		return Entry{}, nil, err
	}
	body := b[docHeaderSize:]
	if len(body) != n {
		return Entry{}, nil, fmt.Errorf("%w: seq %d: body of %d bytes, header says %d", ErrSpoolCorrupt, e.Seq, len(body), n)
	}
	if got := crc32.Checksum(body, castagnoli); got != sum {
		return Entry{}, nil, fmt.Errorf("%w: seq %d: body checksum %08x, want %08x", ErrSpoolCorrupt, e.Seq, got, sum)
	}
	return e, body, nil
}

// spoolState is the state file.
type spoolState struct {
	nextSeq     uint64
	auditCursor uint64
	dropped     uint64
}

// encodeState encodes the state file.
func encodeState(s spoolState) []byte {
	b := make([]byte, 0, stateSize)
	b = append(b, stateMagic[:]...)
	b = append(b, SpoolFormatVersion, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, s.nextSeq)
	b = binary.LittleEndian.AppendUint64(b, s.auditCursor)
	b = binary.LittleEndian.AppendUint64(b, s.dropped)
	b = binary.LittleEndian.AppendUint32(b, 0)
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli))
}

// decodeState checks and decodes the state file.
func decodeState(b []byte) (spoolState, error) {
	if len(b) != stateSize {
		return spoolState{}, fmt.Errorf("%w: state of %d bytes", ErrSpoolCorrupt, len(b))
	}
	if got, want := binary.LittleEndian.Uint32(b[36:40]), crc32.Checksum(b[:36], castagnoli); got != want {
		return spoolState{}, fmt.Errorf("%w: state checksum %08x, want %08x", ErrSpoolCorrupt, got, want)
	}
	return decodeStateFields(b[:36])
}

// decodeStateFields decodes the checksummed part of the state (36 bytes).
func decodeStateFields(b []byte) (spoolState, error) {
	if len(b) != 36 {
		return spoolState{}, fmt.Errorf("%w: state fields of %d bytes", ErrSpoolCorrupt, len(b))
	}
	if [4]byte(b[0:4]) != stateMagic {
		return spoolState{}, fmt.Errorf("%w: not a spool state", ErrSpoolCorrupt)
	}
	if b[4] != SpoolFormatVersion {
		return spoolState{}, fmt.Errorf("%w: state version %d, this build reads %d", ErrSpoolCorrupt, b[4], SpoolFormatVersion)
	}
	if b[5]|b[6]|b[7] != 0 || binary.LittleEndian.Uint32(b[32:36]) != 0 {
		return spoolState{}, fmt.Errorf("%w: reserved state bytes are set", ErrSpoolCorrupt)
	}
	s := spoolState{
		nextSeq:     binary.LittleEndian.Uint64(b[8:16]),
		auditCursor: binary.LittleEndian.Uint64(b[16:24]),
		dropped:     binary.LittleEndian.Uint64(b[24:32]),
	}
	if s.nextSeq == 0 {
		return spoolState{}, fmt.Errorf("%w: next sequence number 0", ErrSpoolCorrupt)
	}
	return s, nil
}

func crc32c(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
