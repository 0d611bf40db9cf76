package iscsi

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"testing"
)

func encodePDU(t testing.TB, h bhs, data []byte, hd, dd bool) []byte {
	var buf bytes.Buffer
	w := bufio.NewWriter(&buf)
	if err := writePDU(w, &h, data, hd, dd); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	return buf.Bytes()
}

func TestPDURoundTrip(t *testing.T) {
	var h bhs
	h[0] = opSCSICmd | flagImmediate
	h[1] = flagFinal | flagRead | attrOrdered
	h.setLUN(encodeLUN(300))
	h.setITT(0xdeadbeef)
	h.put32(offCmdSN, 42)
	for _, tc := range []struct {
		name   string
		data   []byte
		hd, dd bool
	}{
		{"empty", nil, false, false},
		{"aligned", bytes.Repeat([]byte{1, 2, 3, 4}, 8), false, false},
		{"padded", []byte("hello"), false, false},
		{"digests", []byte("hello, digests"), true, true},
		{"header digest only", []byte{9}, true, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := encodePDU(t, h, tc.data, tc.hd, tc.dd)
			if len(raw)%4 != 0 {
				t.Fatalf("PDU of %d bytes is not 4-byte aligned", len(raw))
			}
			p, n, err := decodePDU(raw, tc.hd, tc.dd, 1<<20)
			if err != nil || n != len(raw) {
				t.Fatalf("decode: n=%d err=%v", n, err)
			}
			want := h
			want.setDataLen(len(tc.data))
			if p.hdr != want {
				t.Fatalf("header differs")
			}
			if !bytes.Equal(p.data, tc.data) {
				t.Fatalf("data %q, want %q", p.data, tc.data)
			}
			if got, _ := decodeLUN(p.hdr.lun()); got != 300 {
				t.Fatalf("LUN %d", got)
			}
			// The streaming reader agrees.
			pr := pduReader{r: bufio.NewReader(bytes.NewReader(raw)), hdrDigest: tc.hd, dataDigest: tc.dd,
				maxData: 1 << 20, maxAHS: maxAHSLen}
			if err := pr.readHeader(); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, pr.hdr.dataLen())
			if err := pr.readData(buf); err != nil || !bytes.Equal(buf, tc.data) {
				t.Fatalf("readData: %v %q", err, buf)
			}
		})
	}
}

func TestPDUErrors(t *testing.T) {
	var h bhs
	h[0] = opNopOut
	raw := encodePDU(t, h, []byte("payload"), true, true)
	flip := func(i int) []byte {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x40
		return b
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		max  int
		want error
	}{
		{"header digest", flip(3), 1 << 20, errHeaderDigest},
		{"data digest", flip(bhsLen + 4 + 1), 1 << 20, errDataDigest},
		{"too long", raw, 4, errDataTooLong},
		{"truncated", raw[:bhsLen+2], 1 << 20, errShortPDU},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := decodePDU(tc.raw, true, true, tc.max); !errors.Is(err, tc.want) {
				t.Fatalf("decodePDU: %v, want %v", err, tc.want)
			}
			pr := pduReader{r: bufio.NewReader(bytes.NewReader(tc.raw)), hdrDigest: true, dataDigest: true,
				maxData: tc.max, maxAHS: maxAHSLen}
			err := pr.readHeader()
			if err == nil {
				err = pr.readData(make([]byte, pr.hdr.dataLen()))
			}
			want := tc.want
			if want == errShortPDU {
				want = io.ErrUnexpectedEOF
			}
			if !errors.Is(err, want) {
				t.Fatalf("pduReader: %v, want %v", err, want)
			}
		})
	}
}

func TestReadDataPartial(t *testing.T) {
	// Data beyond the caller's buffer is consumed and still digested.
	var h bhs
	h[0] = opDataOut
	data := bytes.Repeat([]byte("0123456789"), 1000)
	raw := encodePDU(t, h, data, false, true)
	raw = append(raw, encodePDU(t, h, []byte("next"), false, true)...)
	pr := pduReader{r: bufio.NewReaderSize(bytes.NewReader(raw), 16), dataDigest: true, maxData: 1 << 20, maxAHS: maxAHSLen}
	if err := pr.readHeader(); err != nil {
		t.Fatal(err)
	}
	dst := make([]byte, 100)
	if err := pr.readData(dst); err != nil || !bytes.Equal(dst, data[:100]) {
		t.Fatalf("partial: %v", err)
	}
	if err := pr.readHeader(); err != nil {
		t.Fatal(err)
	}
	dst = make([]byte, 4)
	if err := pr.readData(dst); err != nil || string(dst) != "next" {
		t.Fatalf("next PDU: %v %q", err, dst)
	}
}

func TestCRC32CVector(t *testing.T) {
	// RFC 3720 appendix B.4: 32 bytes of zeros.
	if got := crc32.Checksum(make([]byte, 32), crcTable); got != 0x8a9136aa {
		t.Fatalf("CRC32C(zeros) = %#x", got)
	}
}

func TestSerialArithmetic(t *testing.T) {
	for _, tc := range []struct {
		a, b uint32
		less bool
	}{
		{1, 2, true}, {2, 1, false}, {0xffffffff, 0, true}, {0, 0xffffffff, false}, {5, 5, false},
		{0x7fffffff, 0x80000000, true},
	} {
		if snLess(tc.a, tc.b) != tc.less {
			t.Errorf("snLess(%#x, %#x) != %v", tc.a, tc.b, tc.less)
		}
	}
}

func TestLUNEncoding(t *testing.T) {
	for _, n := range []uint64{0, 1, 255, 256, 1000, 16383} {
		v := encodeLUN(n)
		got, ok := decodeLUN(v)
		if !ok || got != n {
			t.Errorf("LUN %d -> %#x -> %d %v", n, v, got, ok)
		}
	}
	var b [8]byte
	b[0] = 0x40 | 0x01
	b[1] = 0x02
	if got, _ := decodeLUN(binary.BigEndian.Uint64(b[:])); got != 0x102 {
		t.Errorf("flat LUN %d", got)
	}
	if _, ok := decodeLUN(0xc000000000000000); ok {
		t.Error("extended addressing accepted")
	}
}

// FuzzDecodePDU feeds arbitrary bytes to the PDU decoder and checks that
// whatever decodes re-encodes to the same PDU.
func FuzzDecodePDU(f *testing.F) {
	var h bhs
	h[0] = opSCSICmd
	f.Add(encodePDU(f, h, []byte("seed"), false, false), false, false)
	f.Add(encodePDU(f, h, []byte("digests"), true, true), true, true)
	f.Add(make([]byte, bhsLen), false, false)
	f.Fuzz(func(t *testing.T, raw []byte, hd, dd bool) {
		p, n, err := decodePDU(raw, hd, dd, 1<<16)
		if err != nil {
			return
		}
		if n > len(raw) || len(p.data) != p.hdr.dataLen() {
			t.Fatalf("n=%d len=%d data=%d", n, len(raw), len(p.data))
		}
		if p.hdr.ahsLen() != 0 {
			return
		}
		again := encodePDU(t, p.hdr, p.data, hd, dd)
		p2, _, err := decodePDU(again, hd, dd, 1<<16)
		if err != nil || p2.hdr != p.hdr || !bytes.Equal(p2.data, p.data) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// FuzzPDUStream runs the streaming reader over arbitrary bytes.
func FuzzPDUStream(f *testing.F) {
	var h bhs
	h[0] = opDataOut
	f.Add(append(encodePDU(f, h, []byte("a"), true, true), encodePDU(f, h, nil, true, true)...), true, true)
	f.Fuzz(func(t *testing.T, raw []byte, hd, dd bool) {
		pr := pduReader{r: bufio.NewReader(bytes.NewReader(raw)), hdrDigest: hd, dataDigest: dd,
			maxData: 4096, maxAHS: maxAHSLen}
		for range 64 {
			if err := pr.readHeader(); err != nil {
				return
			}
			n := pr.hdr.dataLen()
			if err := pr.readData(make([]byte, n/2)); err != nil {
				return
			}
		}
	})
}
