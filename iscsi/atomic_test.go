package iscsi

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"vfa/iscsi/iscsitest"
)

func writeAtomicCDB(lba uint64, boundary, blocks uint16) []byte {
	c := make([]byte, 16)
	c[0] = opWriteAtomic16
	binary.BigEndian.PutUint64(c[2:10], lba)
	binary.BigEndian.PutUint16(c[10:12], boundary)
	binary.BigEndian.PutUint16(c[12:14], blocks)
	return c
}

func TestWriteAtomic(t *testing.T) {
	e := newExecEnv(t, 8192)
	maxBlocks := uint16(iscsitest.DefaultAtomicMax / 512)
	for _, tc := range []struct {
		name     string
		cdb      []byte
		dataLen  int // data-out bytes (default: the transfer length)
		want     senseCode
		field    int // CDB byte the field pointer names (INVALID FIELD IN CDB)
		modCDB   func(c []byte)
		written  bool
		wantData bool
	}{
		{name: "aligned", cdb: writeAtomicCDB(64, 0, 16), written: true},
		{name: "the most", cdb: writeAtomicCDB(0, 0, maxBlocks), written: true},
		{name: "at the end", cdb: writeAtomicCDB(8192-8, 0, 8), written: true},
		{name: "zero blocks", cdb: writeAtomicCDB(0, 0, 0)},
		{name: "with boundary", cdb: writeAtomicCDB(0, 8, 4096), written: true},
		{name: "misaligned", cdb: writeAtomicCDB(1, 0, 8), want: scInvalidFieldCDB, field: 2},
		{name: "granularity", cdb: writeAtomicCDB(0, 0, 9), want: scInvalidFieldCDB, field: 12},
		{name: "too long", cdb: writeAtomicCDB(0, 0, maxBlocks+8), want: scInvalidFieldCDB, field: 12},
		{name: "boundary too big", cdb: writeAtomicCDB(0, maxBlocks+8, 16), want: scInvalidFieldCDB, field: 10},
		{name: "boundary granularity", cdb: writeAtomicCDB(0, 4, 16), want: scInvalidFieldCDB, field: 10},
		{name: "beyond max transfer with boundary", cdb: writeAtomicCDB(0, 8, 8192+8), want: scInvalidFieldCDB, field: 12},
		{name: "WRPROTECT", cdb: writeAtomicCDB(0, 0, 8), modCDB: func(c []byte) { c[1] = 0x20 }, want: scInvalidFieldCDB, field: 1},
		{name: "beyond the end", cdb: writeAtomicCDB(8192-8, 0, 16), want: scLBAOutOfRange},
		{name: "zero blocks past the end", cdb: writeAtomicCDB(8192+8, 0, 0), want: scLBAOutOfRange},
		{name: "LBA 2^63", cdb: writeAtomicCDB(1<<63, 0, 8), want: scLBAOutOfRange},
		{name: "short data-out", cdb: writeAtomicCDB(128, 0, 16), dataLen: 8 * 512, want: scInvalidFieldCDB, field: 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.modCDB != nil {
				tc.modCDB(tc.cdb)
			}
			n := int(binary.BigEndian.Uint16(tc.cdb[12:14])) * 512
			if tc.dataLen > 0 {
				n = tc.dataLen
			}
			data := pattern(n, byte(len(tc.name)))
			lba := binary.BigEndian.Uint64(tc.cdb[2:10])
			before := e.dev.Stats().Writes
			var out []byte
			if n > 0 {
				out = data
			}
			r := e.run(tc.cdb, out, 0).result()
			if tc.want == (senseCode{}) {
				expectGood(t, "WRITE ATOMIC(16)", r, nil)
			} else {
				expectSense(t, "WRITE ATOMIC(16)", r, nil, tc.want)
				if tc.want == scInvalidFieldCDB && (r.sense[15]&0xc0 != 0xc0 || int(binary.BigEndian.Uint16(r.sense[16:18])) != tc.field) {
					t.Fatalf("field pointer % x, want CDB byte %d", r.sense[15:18], tc.field)
				}
			}
			if wrote := e.dev.Stats().Writes != before; wrote != tc.written {
				t.Fatalf("wrote %v, want %v", wrote, tc.written)
			}
			if tc.written {
				got := make([]byte, n)
				e.dev.ReadAt(t.Context(), got, lba)
				if !bytes.Equal(got, data) {
					t.Fatal("data differs")
				}
			}
		})
	}
	// With ATOMIC BOUNDARY the write is split into atomic writes of that
	// many blocks.
	before := e.dev.Stats().Writes
	e.run(writeAtomicCDB(0, 16, 64), pattern(64*512, 1), 0)
	if n := e.dev.Stats().Writes - before; n != 4 {
		t.Fatalf("boundary 16 over 64 blocks: %d writes, want 4", n)
	}
}

func TestAtomicBlockLimits(t *testing.T) {
	e := newExecEnv(t, 8192)
	limits := func() []byte {
		r := e.run([]byte{opInquiry, 1, vpdBlockLimits, 0, 255, 0}, nil, 255).result()
		expectGood(t, "Block Limits", r, nil)
		if len(r.data) != 64 {
			t.Fatalf("Block Limits page of %d bytes", len(r.data))
		}
		return r.data
	}
	u32 := func(b []byte, off int) uint32 { return binary.BigEndian.Uint32(b[off:]) }
	maxXfer := uint32(4 << 20 / 512)
	for _, tc := range []struct {
		atomicMax                           int
		maxAtomic, align, gran, withB, maxB uint32
	}{
		{iscsitest.DefaultAtomicMax, 2048, 8, 8, maxXfer, 2048},
		{64<<20 + 4096, maxXfer, 8, 8, maxXfer, maxXfer}, // capped by the transfer length
		{6000, 8, 8, 8, maxXfer, 8},                      // rounded down to the granularity
		{2048, 0, 0, 0, 0, 0},                            // less than one granule: none
		{0, 0, 0, 0, 0, 0},
	} {
		e.dev.SetAtomicMax(tc.atomicMax)
		b := limits()
		got := [5]uint32{u32(b, 44), u32(b, 48), u32(b, 52), u32(b, 56), u32(b, 60)}
		if want := [5]uint32{tc.maxAtomic, tc.align, tc.gran, tc.withB, tc.maxB}; got != want {
			t.Fatalf("AtomicMax %d: atomic fields %v, want %v", tc.atomicMax, got, want)
		}
		if got[0] > u32(b, 8) || got[3] > u32(b, 8) {
			t.Fatal("an atomic limit exceeds MAXIMUM TRANSFER LENGTH")
		}
	}
	// Without atomic writes the logical unit does not support the command.
	r := e.run(writeAtomicCDB(0, 0, 8), pattern(4096, 1), 0).result()
	expectSense(t, "WRITE ATOMIC without atomic writes", r, nil, scInvalidOpcode)
}

// TestWriteAtomicConcurrentReader: a reader racing WRITE ATOMIC(16)s of
// 1 MiB through the target sees one whole write or another, never a mix.
func TestWriteAtomicConcurrentReader(t *testing.T) {
	h := newHarness(t, nil)
	w, rd := h.login(iniA), h.login(iniA2, func(c *iniConfig) { c.ISID = [6]byte{0x80, 0, 0, 0, 0, 2} })
	w.clearUA(0)
	rd.clearUA(0)
	const blocks = 2048
	const rounds = 100
	var wg sync.WaitGroup
	done := make(chan struct{})
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer close(done)
		for i := range rounds {
			data := bytes.Repeat([]byte{byte('A' + i%2)}, blocks*512)
			r, err := w.command(writeAtomicCDB(0, 0, blocks), data, cmdOpts{edtl: -1})
			if err != nil || r.status != statusGood {
				t.Errorf("WRITE ATOMIC round %d: %v %+v", i, err, r)
				return
			}
		}
	}()
	reads := 0
	for {
		select {
		case <-done:
			wg.Wait()
			if reads == 0 {
				t.Log("no read overlapped the writes")
			}
			return
		default:
		}
		r, err := rd.command(cdb16(opRead16, 0, blocks), nil, cmdOpts{read: true, edtl: blocks * 512})
		if err != nil || r.status != statusGood {
			t.Fatalf("READ: %v", err)
		}
		if first := r.data[0]; bytes.Count(r.data, []byte{first}) != len(r.data) {
			t.Fatalf("read %d saw a torn atomic write: starts %q, %d of %d bytes equal", reads, first, bytes.Count(r.data, []byte{first}), len(r.data))
		}
		reads++
		if reads > 10000 {
			t.Fatal("reads did not end")
		}
	}
}
