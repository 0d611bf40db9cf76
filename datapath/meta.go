package datapath

// The metadata key space (Pebble). Keys are laid out so that one medium's
// block map is one contiguous range. Every value starts with a version byte
// (metaVersion); integers are big-endian in keys (so they sort) and
// little-endian in values. No value holds user data in the clear: fingerprints
// are keyed BLAKE3 digests and locations are addresses.
//
//	key                                  value
//	'c' name                             control values (below)
//	'v' volume id (8)                    volume record: version, JSON of volumeRecord
//	'n' lower-case name                  volume id (8)
//	'm' medium id (8)                    medium record: version, parent (8), refs (4),
//	                                     parent limit in blocks (8), mapped blocks (8)
//	'l' medium id (8) block (8)          map entry: version, kind (1); for data also
//	                                     fingerprint (32) and a location hint: segment
//	                                     id (8), offset (4), stored length (4), flags (1)
//	                                     kind 1 = data, 2 = zero block, 3 = unmapped
//	                                     (a tombstone that hides the parent's block).
//	                                     The hint is where the block was when the entry
//	                                     was written; it is valid while that segment
//	                                     exists (segments are immutable and ids are
//	                                     never reused), so reads skip the dedup index
//	                                     until GC moves the block.
//	'd' fingerprint (32)                 dedup entry: version, segment id (8), offset (4),
//	                                     stored length (4), flags (1: bit 0 = LZ4),
//	                                     references (8)
//	'r' segment id (8) offset (4)        segment summary: version, count (4), then count
//	                                     entries of offset (4) + fingerprint (32): the
//	                                     blocks one flush (or GC pass) stored in that
//	                                     segment, the key's offset being the first.
//	                                     Entries are not removed when a block dies; GC
//	                                     checks each against the dedup index.
//	's' segment id (8)                   segment record: version, AU (4), rows written (4),
//	                                     payload fill (4), live bytes (8), live blocks (8)
//	'o' ...                              array objects, owned by package array
//
// Control values ('c' + name):
//
//	"checkpoint"  NVRAM position of the next record to apply: seq (8), offset (8),
//	              epoch (8) (the lowest epoch a record there may carry)
//	"segid"       segment ids below this were handed out (reservations persist first)
//	"ids"         next medium id (8), next volume id (8)
//	"space"       live unique blocks (8), their stored bytes (8)
//	"keyrot"      unix nanoseconds of the last key rotation (8)
//	"keyset"      hex SHA-256 of the usable SSDs' ids at the last rotation
//	"rebuild"     SSD slots admitted and not yet fully rebuilt (8 each; absent
//	              when none; see rebuild.go)
//
// A block is 4 KiB; a block number is the byte offset divided by 4096 within a
// medium. Every change to the map, the dedup index, the segment table and the
// checkpoint made by one flush is one Pebble batch, committed with sync.

import (
	"encoding/binary"
	"errors"
	"fmt"
)

const metaVersion = 1

const (
	pfxControl = 'c'
	pfxVolume  = 'v'
	pfxName    = 'n'
	pfxMedium  = 'm'
	pfxMap     = 'l'
	pfxDedup   = 'd'
	pfxReverse = 'r'
	pfxSegment = 's'
	pfxObject  = 'o'
)

const (
	entryData     = 1
	entryZero     = 2
	entryUnmapped = 3
)

var errBadMeta = errors.New("malformed metadata value")

// FP is a keyed BLAKE3-256 fingerprint of a 4 KiB block.
type FP [32]byte

func controlKey(name string) []byte { return append([]byte{pfxControl}, name...) }

func u64Key(pfx byte, id uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte{pfx}, id)
}

func mapKey(medium, block uint64) []byte {
	k := make([]byte, 17)
	k[0] = pfxMap
	binary.BigEndian.PutUint64(k[1:], medium)
	binary.BigEndian.PutUint64(k[9:], block)
	return k
}

func decodeMapKey(k []byte) (medium, block uint64, ok bool) {
	if len(k) != 17 || k[0] != pfxMap {
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(k[1:]), binary.BigEndian.Uint64(k[9:]), true
}

func dedupKey(fp *FP) []byte { return append([]byte{pfxDedup}, fp[:]...) }

// sumEntry is one block of a segment summary.
type sumEntry struct {
	off uint32
	fp  FP
}

const sumEntrySize = 4 + 32

func encodeSummary(es []sumEntry) []byte {
	b := make([]byte, 0, 5+len(es)*sumEntrySize)
	b = append(b, metaVersion)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(es)))
	for _, e := range es {
		b = binary.LittleEndian.AppendUint32(b, e.off)
		b = append(b, e.fp[:]...)
	}
	return b
}

func decodeSummary(v []byte) ([]sumEntry, error) {
	if len(v) < 5 || v[0] != metaVersion {
		return nil, fmt.Errorf("%w: segment summary", errBadMeta)
	}
	n := int(binary.LittleEndian.Uint32(v[1:]))
	if n < 0 || len(v)-5 != n*sumEntrySize {
		return nil, fmt.Errorf("%w: segment summary of %d entries in %d bytes", errBadMeta, n, len(v))
	}
	es := make([]sumEntry, n)
	for i := range es {
		p := v[5+i*sumEntrySize:]
		es[i].off = binary.LittleEndian.Uint32(p)
		copy(es[i].fp[:], p[4:36])
	}
	return es, nil
}

func reverseKey(seg uint64, off uint32) []byte {
	k := make([]byte, 13)
	k[0] = pfxReverse
	binary.BigEndian.PutUint64(k[1:], seg)
	binary.BigEndian.PutUint32(k[9:], off)
	return k
}

// mapEntry is one block of a medium's map.
type mapEntry struct {
	kind uint8
	fp   FP
	hint location // refs unused; seg 0 = no hint
}

const mapDataEntrySize = 2 + 32 + 8 + 4 + 4 + 1

func (e mapEntry) encode() []byte {
	if e.kind == entryData {
		b := make([]byte, 2+32, mapDataEntrySize)
		b[0], b[1] = metaVersion, e.kind
		copy(b[2:], e.fp[:])
		b = binary.LittleEndian.AppendUint64(b, e.hint.seg)
		b = binary.LittleEndian.AppendUint32(b, e.hint.off)
		b = binary.LittleEndian.AppendUint32(b, e.hint.length)
		return append(b, e.hint.flags)
	}
	return []byte{metaVersion, e.kind}
}

// sameBlock: two entries name the same content.
func (e mapEntry) sameBlock(o mapEntry) bool { return e.kind == o.kind && e.fp == o.fp }

func decodeMapEntry(v []byte) (mapEntry, error) {
	if len(v) < 2 || v[0] != metaVersion {
		return mapEntry{}, fmt.Errorf("%w: map entry", errBadMeta)
	}
	e := mapEntry{kind: v[1]}
	switch e.kind {
	case entryData:
		if len(v) != mapDataEntrySize {
			return mapEntry{}, fmt.Errorf("%w: map entry length %d", errBadMeta, len(v))
		}
		copy(e.fp[:], v[2:34])
		e.hint = location{seg: binary.LittleEndian.Uint64(v[34:]), off: binary.LittleEndian.Uint32(v[42:]),
			length: binary.LittleEndian.Uint32(v[46:]), flags: v[50]}
	case entryZero, entryUnmapped:
		if len(v) != 2 {
			return mapEntry{}, fmt.Errorf("%w: map entry length %d", errBadMeta, len(v))
		}
	default:
		return mapEntry{}, fmt.Errorf("%w: map entry kind %d", errBadMeta, e.kind)
	}
	return e, nil
}

// location is where a unique block is stored, and how many map entries
// reference it.
type location struct {
	seg    uint64
	off    uint32
	length uint32
	flags  uint8
	refs   uint64
}

const flagLZ4 = 1

func (l location) encode() []byte {
	b := make([]byte, 0, 26)
	b = append(b, metaVersion)
	b = binary.LittleEndian.AppendUint64(b, l.seg)
	b = binary.LittleEndian.AppendUint32(b, l.off)
	b = binary.LittleEndian.AppendUint32(b, l.length)
	b = append(b, l.flags)
	b = binary.LittleEndian.AppendUint64(b, l.refs)
	return b
}

func decodeLocation(v []byte) (location, error) {
	if len(v) != 26 || v[0] != metaVersion {
		return location{}, fmt.Errorf("%w: dedup entry", errBadMeta)
	}
	return location{
		seg:    binary.LittleEndian.Uint64(v[1:]),
		off:    binary.LittleEndian.Uint32(v[9:]),
		length: binary.LittleEndian.Uint32(v[13:]),
		flags:  v[17],
		refs:   binary.LittleEndian.Uint64(v[18:]),
	}, nil
}

// mediumRec is a medium: a block map with an optional parent it falls back to.
type mediumRec struct {
	parent uint64 // 0 = none
	refs   uint32 // owners (a volume or snapshot using it as its medium) + child media
	limit  uint64 // blocks at or beyond limit are not looked up in the parent
	mapped uint64 // data and zero entries in this medium's own map
}

func (m mediumRec) encode() []byte {
	b := make([]byte, 0, 29)
	b = append(b, metaVersion)
	b = binary.LittleEndian.AppendUint64(b, m.parent)
	b = binary.LittleEndian.AppendUint32(b, m.refs)
	b = binary.LittleEndian.AppendUint64(b, m.limit)
	b = binary.LittleEndian.AppendUint64(b, m.mapped)
	return b
}

func decodeMedium(v []byte) (mediumRec, error) {
	if len(v) != 29 || v[0] != metaVersion {
		return mediumRec{}, fmt.Errorf("%w: medium", errBadMeta)
	}
	return mediumRec{
		parent: binary.LittleEndian.Uint64(v[1:]),
		refs:   binary.LittleEndian.Uint32(v[9:]),
		limit:  binary.LittleEndian.Uint64(v[13:]),
		mapped: binary.LittleEndian.Uint64(v[21:]),
	}, nil
}

// segmentRec is one segment: an AU index on every SSD holding packed blocks.
type segmentRec struct {
	au         uint32
	rows       uint32 // stripe rows written
	fill       uint32 // payload bytes used (blocks are packed; rows are padded)
	liveBytes  uint64
	liveBlocks uint64
}

func (s segmentRec) encode() []byte {
	b := make([]byte, 0, 29)
	b = append(b, metaVersion)
	b = binary.LittleEndian.AppendUint32(b, s.au)
	b = binary.LittleEndian.AppendUint32(b, s.rows)
	b = binary.LittleEndian.AppendUint32(b, s.fill)
	b = binary.LittleEndian.AppendUint64(b, s.liveBytes)
	b = binary.LittleEndian.AppendUint64(b, s.liveBlocks)
	return b
}

func decodeSegment(v []byte) (segmentRec, error) {
	if len(v) != 29 || v[0] != metaVersion {
		return segmentRec{}, fmt.Errorf("%w: segment", errBadMeta)
	}
	return segmentRec{
		au:         binary.LittleEndian.Uint32(v[1:]),
		rows:       binary.LittleEndian.Uint32(v[5:]),
		fill:       binary.LittleEndian.Uint32(v[9:]),
		liveBytes:  binary.LittleEndian.Uint64(v[13:]),
		liveBlocks: binary.LittleEndian.Uint64(v[21:]),
	}, nil
}

func encodeU64s(vs ...uint64) []byte {
	b := make([]byte, 0, 1+8*len(vs))
	b = append(b, metaVersion)
	for _, v := range vs {
		b = binary.LittleEndian.AppendUint64(b, v)
	}
	return b
}

func decodeU64s(v []byte, n int) ([]uint64, error) {
	if len(v) != 1+8*n || v[0] != metaVersion {
		return nil, fmt.Errorf("%w: control value", errBadMeta)
	}
	out := make([]uint64, n)
	for i := range out {
		out[i] = binary.LittleEndian.Uint64(v[1+8*i:])
	}
	return out, nil
}
