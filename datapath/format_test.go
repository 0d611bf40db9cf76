package datapath

import (
	"bytes"
	"testing"
)

// The metadata values and NVRAM payloads are decoded from disk: the
// decoders must reject anything malformed without panicking, and accept
// exactly what the encoders produce.

func TestMetaRoundTrip(t *testing.T) {
	fp := FP{1, 2, 3}
	de := mapEntry{kind: entryData, fp: fp, hint: location{seg: 7, off: 8192, length: 1234, flags: flagLZ4}}
	if e, err := decodeMapEntry(de.encode()); err != nil || e != de {
		t.Fatal(e, err)
	}
	for _, k := range []uint8{entryZero, entryUnmapped} {
		if e, err := decodeMapEntry(mapEntry{kind: k}.encode()); err != nil || e.kind != k {
			t.Fatal(e, err)
		}
	}
	l := location{seg: 9, off: 77, length: 4112, flags: flagLZ4, refs: 3}
	if got, err := decodeLocation(l.encode()); err != nil || got != l {
		t.Fatal(got, err)
	}
	m := mediumRec{parent: 4, refs: 2, limit: 100, mapped: 7}
	if got, err := decodeMedium(m.encode()); err != nil || got != m {
		t.Fatal(got, err)
	}
	sg := segmentRec{au: 3, rows: 4, fill: 5, liveBytes: 6, liveBlocks: 7}
	if got, err := decodeSegment(sg.encode()); err != nil || got != sg {
		t.Fatal(got, err)
	}
	es := []sumEntry{{off: 0, fp: fp}, {off: 4112, fp: FP{9}}}
	if got, err := decodeSummary(encodeSummary(es)); err != nil || len(got) != 2 || got[1] != es[1] {
		t.Fatal(got, err)
	}
	rec := appendRecordHeader(nil, opWrite, 5, 8, 1)
	rec = append(rec, bytes.Repeat([]byte{7}, SectorSize)...)
	if r, err := decodeRecord(rec); err != nil || r.medium != 5 || r.sector != 8 || len(r.data) != SectorSize {
		t.Fatal(r, err)
	}
}

func FuzzDecodeMeta(f *testing.F) {
	f.Add(byte(0), mapEntry{kind: entryData}.encode())
	f.Add(byte(1), location{seg: 1}.encode())
	f.Add(byte(2), mediumRec{}.encode())
	f.Add(byte(3), segmentRec{}.encode())
	f.Add(byte(4), encodeSummary([]sumEntry{{off: 1}}))
	f.Add(byte(5), append(appendRecordHeader(nil, opWriteSame, 1, 2, 3), make([]byte, SectorSize)...))
	f.Add(byte(6), encodeU64s(3, 5))
	f.Fuzz(func(t *testing.T, which byte, v []byte) {
		switch which % 7 {
		case 6: // control values ("rebuild" has any number of them)
			if len(v) > 0 {
				if u, err := decodeU64s(v, (len(v)-1)/8); err == nil && !bytes.Equal(encodeU64s(u...), v) {
					t.Fatalf("control value does not re-encode")
				}
			}
		case 0:
			if e, err := decodeMapEntry(v); err == nil && !bytes.Equal(e.encode(), v) {
				t.Fatalf("map entry does not re-encode")
			}
		case 1:
			if l, err := decodeLocation(v); err == nil && !bytes.Equal(l.encode(), v) {
				t.Fatalf("location does not re-encode")
			}
		case 2:
			if m, err := decodeMedium(v); err == nil && !bytes.Equal(m.encode(), v) {
				t.Fatalf("medium does not re-encode")
			}
		case 3:
			if s, err := decodeSegment(v); err == nil && !bytes.Equal(s.encode(), v) {
				t.Fatalf("segment does not re-encode")
			}
		case 4:
			if es, err := decodeSummary(v); err == nil && !bytes.Equal(encodeSummary(es), v) {
				t.Fatalf("summary does not re-encode")
			}
		case 5:
			if r, err := decodeRecord(v); err == nil {
				got := append(appendRecordHeader(nil, r.op, r.medium, r.sector, r.sectors), r.data...)
				if !bytes.Equal(got[8:], v[8:]) {
					t.Fatalf("record does not re-encode")
				}
			}
		}
	})
}
