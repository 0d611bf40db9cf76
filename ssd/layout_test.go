package ssd

import (
	"bytes"
	"crypto/aes"
	"errors"
	"fmt"
	"hash/crc32"
	"testing"
)

func TestPageRoundTripAndChecks(t *testing.T) {
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	sc := &ctrScratch{}
	plain := payload(1, PagePayload)
	page := make([]byte, PageSize)
	sealPage(page, plain, blk, sc, 42, 5, 3)
	if err := checkPage(page, 42, 5, 3); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(page, plain[:64]) {
		t.Fatal("payload stored in the clear")
	}
	// Decrypting any sub-range at any offset gives the plaintext back.
	for _, r := range [][2]int{{0, PagePayload}, {1, 17}, {15, 16}, {16, 33}, {4000, PagePayload}, {4083, PagePayload}} {
		got := make([]byte, r[1]-r[0])
		xorPage(blk, sc, 42, 5, 3, r[0], got, page[r[0]:r[1]])
		if !bytes.Equal(got, plain[r[0]:r[1]]) {
			t.Fatalf("decrypt [%d,%d) wrong", r[0], r[1])
		}
	}
	for _, tc := range []struct {
		name      string
		seg       uint64
		row, slot int
		mut       func([]byte)
		want      error
	}{
		{"other segment", 43, 5, 3, nil, errPageStale},
		{"other row", 42, 6, 3, nil, errPageChecksum},
		{"other slot", 42, 5, 4, nil, errPageChecksum},
		{"payload bit", 42, 5, 3, func(p []byte) { p[100] ^= 4 }, errPageChecksum},
		{"segment id bit", 42, 5, 3, func(p []byte) { p[trailerSegOff] ^= 1 }, errPageChecksum},
		{"crc bit", 42, 5, 3, func(p []byte) { p[PageSize-1] ^= 0x80 }, errPageChecksum},
		{"zero page", 42, 5, 3, func(p []byte) { clear(p) }, errPageChecksum},
		{"short", 42, 5, 3, nil, errPageSize},
	} {
		p := bytes.Clone(page)
		if tc.mut != nil {
			tc.mut(p)
		}
		if tc.name == "short" {
			p = p[:100]
		}
		if err := checkPage(p, tc.seg, tc.row, tc.slot); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, err, tc.want)
		}
	}
}

// pageCRC is the CRC32C of the page prefix followed by the address bytes.
func TestPageCRCDefinition(t *testing.T) {
	page := payload(5, PageSize)
	for _, a := range [][2]int{{0, 0}, {1, 2}, {255, 23}, {1<<32 - 1, 1<<16 - 1}} {
		want := crc32.Checksum(append(append([]byte(nil), page[:trailerCRCOff]...),
			byte(a[0]), byte(a[0]>>8), byte(a[0]>>16), byte(a[0]>>24), byte(a[1]), byte(a[1]>>8), FormatVersion),
			crc32.MakeTable(crc32.Castagnoli))
		if got := pageCRC(page, a[0], a[1]); got != want {
			t.Fatalf("address %v: crc %08x, want %08x", a, got, want)
		}
	}
	if n := testing.AllocsPerRun(10, func() { pageCRC(page, 3, 4) }); n != 0 {
		t.Fatalf("pageCRC allocates %v times", n)
	}
}

// A column sealed with one keystream is page for page what sealPage (the
// repair path) produces.
func TestSealColumnMatchesSealPage(t *testing.T) {
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{3}, 32))
	const rows = 5
	plain := payload(2, rows*PagePayload)
	media := make([]byte, rows*PageSize)
	sealColumn(media, plain, 0, rows, blk, &ctrScratch{}, 77, 4)
	for r := range rows {
		page := make([]byte, PageSize)
		sealPage(page, plain[r*PagePayload:], blk, &ctrScratch{}, 77, r, 4)
		if !bytes.Equal(page, media[r*PageSize:(r+1)*PageSize]) {
			t.Fatalf("row %d differs", r)
		}
	}
}

// The same plaintext under another segment id, row or slot gives another
// ciphertext: the counter block is unique per (segment, row, slot).
func TestPageKeystreamUnique(t *testing.T) {
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{7}, 32))
	sc := &ctrScratch{}
	plain := make([]byte, PagePayload)
	seen := map[string]string{}
	for _, a := range [][3]int{{1, 0, 0}, {2, 0, 0}, {1, 1, 0}, {1, 0, 1}, {1 << 32, 0, 0}, {1, 1 << 16, 0}} {
		page := make([]byte, PageSize)
		sealPage(page, plain, blk, sc, uint64(a[0]), a[1], a[2])
		// Every 16-byte block of the keystream must be new.
		for i := 0; i+16 <= PagePayload; i += 16 {
			k := string(page[i : i+16])
			if prev, ok := seen[k]; ok {
				t.Fatalf("keystream block repeats: %v at %d and %s", a, i, prev)
			}
			seen[k] = fmt.Sprint(a, i)
		}
	}
}

func TestGeometry(t *testing.T) {
	for _, n := range []int{6, 8, 24} {
		g := newGeometry(n, testAU)
		if g.segmentPayload() != 16*(n-2)*PagePayload {
			t.Fatalf("n=%d: segment payload %d", n, g.segmentPayload())
		}
		for au := range 2 * n {
			seen := map[int]bool{}
			for c := range n {
				s := g.slotOf(au, c)
				if seen[s] || g.colOf(au, s) != c {
					t.Fatalf("n=%d au=%d: column %d -> slot %d is not a bijection", n, au, c, s)
				}
				seen[s] = true
			}
		}
		if g.pageOffset(0, 0) != testAU || g.pageOffset(2, 3) != 3*testAU+3*PageSize {
			t.Fatal("page offsets")
		}
	}
}

// checkSpan verifies that the pages the span names cover [off, off+l)
// exactly once, in order, with one contiguous run of rows per column.
func checkSpan(t testing.TB, g geometry, off int64, l int) {
	sp := g.span(off, l)
	covered := make([]bool, l)
	pages := 0
	for c := range g.d {
		r0, r1 := g.colRows(sp, c)
		for r := r0; r < r1; r++ {
			gp := r*g.d + c
			if gp < sp.first || gp > sp.last {
				t.Fatalf("off %d len %d: column %d row %d outside the span", off, l, c, r)
			}
			pages++
			b0, b1, pos := clip(gp, off, l)
			if b0 < 0 || b1 > PagePayload || b0 >= b1 || pos < 0 || pos+b1-b0 > l {
				t.Fatalf("off %d len %d: bad clip %d %d %d", off, l, b0, b1, pos)
			}
			// Payload byte x = gp*P + b lives in row x/(dP), column (x%(dP))/P.
			x := int64(gp)*PagePayload + int64(b0)
			rp := int64(g.rowPayload())
			if int(x/rp) != r || int(x%rp)/PagePayload != c {
				t.Fatalf("byte %d: row/col %d/%d, want %d/%d", x, r, c, x/rp, (x%rp)/PagePayload)
			}
			for i := pos; i < pos+b1-b0; i++ {
				if covered[i] {
					t.Fatalf("off %d len %d: byte %d covered twice", off, l, i)
				}
				covered[i] = true
			}
		}
	}
	if pages != sp.last-sp.first+1 {
		t.Fatalf("off %d len %d: %d pages in runs, span has %d", off, l, pages, sp.last-sp.first+1)
	}
	for i, ok := range covered {
		if !ok {
			t.Fatalf("off %d len %d: byte %d not covered", off, l, i)
		}
	}
}

func TestSpan(t *testing.T) {
	g := newGeometry(8, testAU)
	for _, c := range [][2]int{{0, 1}, {0, 4096}, {4083, 2}, {4084, 4084}, {0, g.rowPayload()}, {100, g.rowPayload()}, {g.rowPayload() - 1, 2}, {5000, 3 * g.rowPayload()}, {0, g.segmentPayload()}} {
		checkSpan(t, g, int64(c[0]), c[1])
	}
}

func FuzzSpan(f *testing.F) {
	f.Add(uint8(8), uint32(0), uint32(4096))
	f.Add(uint8(6), uint32(4083), uint32(5000))
	f.Fuzz(func(t *testing.T, n uint8, off, l uint32) {
		g := newGeometry(MinDevices+int(n)%(MaxDevices-MinDevices+1), testAU)
		o := int64(off) % int64(g.segmentPayload())
		ln := 1 + int(l)%int(int64(g.segmentPayload())-o)
		checkSpan(t, g, o, ln)
	})
}

// FuzzPage drives the page decoder: arbitrary bytes never panic it, a sealed
// page (so the fuzzer gets past the CRC) always checks and decrypts back,
// and any single flipped bit is detected.
func FuzzPage(f *testing.F) {
	f.Add([]byte("hello"), uint64(1), uint32(0), uint16(0), uint16(0))
	f.Add(bytes.Repeat([]byte{0xff}, PageSize), uint64(1<<40), uint32(255), uint16(23), uint16(32767))
	blk, _ := aes.NewCipher(bytes.Repeat([]byte{9}, 32))
	f.Fuzz(func(t *testing.T, data []byte, seg uint64, row uint32, slot uint16, bit uint16) {
		// The inner decoder on raw bytes.
		if tr, err := decodeTrailer(data); err == nil {
			_ = checkPage(data, tr.segID, int(row), int(slot))
		} else if len(data) == PageSize {
			t.Fatalf("decodeTrailer refused a full page: %v", err)
		}
		_ = checkPage(data, seg, int(row), int(slot))

		plain := make([]byte, PagePayload)
		copy(plain, data)
		page := make([]byte, PageSize)
		sc := &ctrScratch{}
		sealPage(page, plain, blk, sc, seg, int(row), int(slot))
		if err := checkPage(page, seg, int(row), int(slot)); err != nil {
			t.Fatalf("sealed page fails its check: %v", err)
		}
		tr, _ := decodeTrailer(page)
		if tr.segID != seg {
			t.Fatalf("segment id %d, want %d", tr.segID, seg)
		}
		got := make([]byte, PagePayload)
		xorPage(blk, sc, seg, int(row), int(slot), 0, got, page[:PagePayload])
		if !bytes.Equal(got, plain) {
			t.Fatal("round trip changed the payload")
		}
		page[int(bit)%PageSize] ^= 1 << (bit % 8)
		if checkPage(page, seg, int(row), int(slot)) == nil {
			t.Fatalf("flipped bit %d not detected", bit)
		}
	})
}
