package datapath

// NVRAM record payloads. The nvram package seals, orders and persists opaque
// payloads; this file encodes what the data path puts in them.
//
// Payload layout, format version 1 (integers little-endian):
//
//	off len field
//	  0   1 version (recordVersion)
//	  1   1 op: 1 = write, 2 = write same (pattern), 3 = unmap (reads zero)
//	  2   2 reserved, zero
//	  4   4 reserved, zero
//	  8   8 medium id the write belongs to
//	 16   8 first sector (512-byte units, medium-relative)
//	 24   8 sector count (>= 1)
//	 32   - data: write: count*512 bytes; write same: one 512-byte sector;
//	          unmap: nothing
//
// The medium (not the volume) is recorded so that a snapshot taken after the
// write was acknowledged, but before it was flushed, still contains it.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const (
	recordVersion    = 1
	recordHeaderSize = 32

	opWrite     = 1
	opWriteSame = 2
	opUnmap     = 3
)

// record is a decoded NVRAM payload. data aliases the payload.
type record struct {
	op      uint8
	medium  uint64
	sector  uint64
	sectors uint64
	data    []byte
}

var errBadRecord = errors.New("malformed nvram record")

func appendRecordHeader(b []byte, op uint8, medium, sector, sectors uint64) []byte {
	b = append(b, recordVersion, op, 0, 0, 0, 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, medium)
	b = binary.LittleEndian.AppendUint64(b, sector)
	b = binary.LittleEndian.AppendUint64(b, sectors)
	return b
}

func decodeRecord(p []byte) (record, error) {
	if len(p) < recordHeaderSize {
		return record{}, fmt.Errorf("%w: %d bytes", errBadRecord, len(p))
	}
	if p[0] != recordVersion {
		return record{}, fmt.Errorf("%w: version %d", errBadRecord, p[0])
	}
	r := record{
		op:      p[1],
		medium:  binary.LittleEndian.Uint64(p[8:]),
		sector:  binary.LittleEndian.Uint64(p[16:]),
		sectors: binary.LittleEndian.Uint64(p[24:]),
		data:    p[recordHeaderSize:],
	}
	if r.sectors == 0 || r.sector+r.sectors < r.sector {
		return record{}, fmt.Errorf("%w: sectors %d at %d", errBadRecord, r.sectors, r.sector)
	}
	switch r.op {
	case opWrite:
		if r.sectors > uint64(len(r.data))/SectorSize || uint64(len(r.data)) != r.sectors*SectorSize {
			return record{}, fmt.Errorf("%w: write of %d sectors carries %d bytes", errBadRecord, r.sectors, len(r.data))
		}
	case opWriteSame:
		if len(r.data) != SectorSize {
			return record{}, fmt.Errorf("%w: write same pattern of %d bytes", errBadRecord, len(r.data))
		}
	case opUnmap:
		if len(r.data) != 0 {
			return record{}, fmt.Errorf("%w: unmap carries data", errBadRecord)
		}
	default:
		return record{}, fmt.Errorf("%w: op %d", errBadRecord, r.op)
	}
	return r, nil
}
