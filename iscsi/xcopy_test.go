package iscsi

import (
	"bytes"
	"encoding/binary"
	"slices"
	"testing"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

// copyEnv is an execEnv whose initiator sees dev0 at LUN 0 (the copy
// manager) and dev1 at LUN 1; other exists on the array but is mapped to
// another host.
type copyEnv struct {
	*execEnv
	dev1, other *iscsitest.MemDevice
}

const serial2 = "FEDCBA9876543210FEDCBA98"

func newCopyEnv(tb testing.TB, sectors uint64) *copyEnv {
	tb.Helper()
	fe := iscsitest.NewFrontend(testIQN)
	dev0 := iscsitest.NewMemDevice(serial0, "v0", sectors)
	dev1 := iscsitest.NewMemDevice(serial1, "v1", sectors)
	other := iscsitest.NewMemDevice(serial2, "v2", sectors)
	fe.SetHost(iscsitest.Host{Name: "a", Initiators: []string{iniA},
		LUNs: []array.LUN{{Number: 0, Device: dev0}, {Number: 1, Device: dev1}}})
	fe.SetHost(iscsitest.Host{Name: "b", Initiators: []string{iniB},
		LUNs: []array.LUN{{Number: 0, Device: other}}})
	tgt, err := New(Config{Frontend: fe, Listen: []string{"127.0.0.1:0"}, Logger: testLogger(tb)})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { tgt.Close() })
	c := &conn{t: tgt, done: make(chan struct{}), writerDone: make(chan struct{})}
	c.ctx, c.cancel = tgt.ctx, func() {}
	s := newSession(tgt, [6]byte{1}, iniA, "", false, defaultSessionParams(), 1)
	c.sess = s
	s.refreshLUNs()
	e := &copyEnv{execEnv: &execEnv{tgt: tgt, s: s, c: c, dev: dev0}, dev1: dev1, other: other}
	e.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0) // consume POWER ON
	return e
}

// identTarget is an identification target descriptor naming the volume
// with this serial by its NAA designator, as VMware sends it.
func identTarget(serial string) []byte {
	d := make([]byte, xcopyTargetDescLen)
	d[0] = descTypeIdentTarget
	naa := naaID(serial)
	d[4], d[5], d[7] = 0x01, 0x03, 16
	copy(d[8:24], naa[:])
	d[30] = 0x02 // 512-byte blocks
	return d
}

type xcSeg struct {
	src, dst       uint16
	blocks         uint16
	srcLBA, dstLBA uint64
}

func (s xcSeg) encode() []byte {
	d := make([]byte, xcopyB2BDescLen)
	d[0] = descTypeBlockToBlock
	binary.BigEndian.PutUint16(d[2:4], xcopyB2BDescLen-4)
	binary.BigEndian.PutUint16(d[4:6], s.src)
	binary.BigEndian.PutUint16(d[6:8], s.dst)
	binary.BigEndian.PutUint16(d[10:12], s.blocks)
	binary.BigEndian.PutUint64(d[12:20], s.srcLBA)
	binary.BigEndian.PutUint64(d[20:28], s.dstLBA)
	return d
}

// xcopyParams builds a parameter list from encoded descriptors.
func xcopyParams(listID, usage byte, targets, segs [][]byte) []byte {
	var tl, sl []byte
	for _, d := range targets {
		tl = append(tl, d...)
	}
	for _, d := range segs {
		sl = append(sl, d...)
	}
	h := make([]byte, xcopyHeaderLen)
	h[0] = listID
	h[1] = usage << 3
	binary.BigEndian.PutUint16(h[2:4], uint16(len(tl)))
	binary.BigEndian.PutUint32(h[8:12], uint32(len(sl)))
	return slices.Concat(h, tl, sl)
}

func segs(ss ...xcSeg) [][]byte {
	var out [][]byte
	for _, s := range ss {
		out = append(out, s.encode())
	}
	return out
}

func xcopyCDB(plen int) []byte {
	c := make([]byte, 16)
	c[0] = opExtendedCopy
	binary.BigEndian.PutUint32(c[10:14], uint32(plen))
	return c
}

func (e *copyEnv) xcopy(params []byte) *scsiResult {
	return e.run(xcopyCDB(len(params)), params, 0).result()
}

func (e *copyEnv) copyStatus(id byte) *scsiResult {
	c := make([]byte, 16)
	c[0], c[1], c[2] = opReceiveCopy, saCopyStatus, id
	binary.BigEndian.PutUint32(c[10:14], 64)
	return e.run(c, nil, 64).result()
}

func readDev(t *testing.T, d *iscsitest.MemDevice, lba uint64, blocks int) []byte {
	t.Helper()
	b := make([]byte, blocks*512)
	if err := d.ReadAt(t.Context(), b, lba); err != nil {
		t.Fatal(err)
	}
	return b
}

func writeDev(t *testing.T, d *iscsitest.MemDevice, lba uint64, data []byte) {
	t.Helper()
	if err := d.WriteAt(t.Context(), data, lba); err != nil {
		t.Fatal(err)
	}
}

// fixedSense decodes what copy errors report in fixed-format sense data.
type copySense struct {
	code    senseCode
	csi     uint32
	sksv    bool
	sd      bool
	field   uint16
	cdField bool
}

func decodeCopySense(t *testing.T, r *scsiResult) copySense {
	t.Helper()
	s := r.sense
	if r.status != statusCheckCondition || len(s) < 18 || s[0]&0x7f != 0x70 {
		t.Fatalf("want fixed-format CHECK CONDITION, got status %#x sense % x", r.status, s)
	}
	return copySense{
		code:    senseCode{s[2] & 0xf, s[12], s[13]},
		csi:     binary.BigEndian.Uint32(s[8:12]),
		sksv:    s[15]&0x80 != 0,
		cdField: s[15]&0x40 != 0,
		sd:      s[15]&0x20 != 0,
		field:   binary.BigEndian.Uint16(s[16:18]),
	}
}

func TestExtendedCopy(t *testing.T) {
	e := newCopyEnv(t, 1<<17) // 64 MiB each
	t0, t1 := identTarget(serial0), identTarget(serial1)

	// Between two LUNs, two segments, several chunks each (the second is
	// 65535 blocks, the longest a segment can be).
	a := pattern(4<<20, 3)
	writeDev(t, e.dev, 0, a)
	big := pattern(0xffff*512, 9)
	writeDev(t, e.dev, 20000, big)
	r := e.xcopy(xcopyParams(1, listIDHold, [][]byte{t0, t1},
		segs(xcSeg{0, 1, 8192, 0, 100}, xcSeg{0, 1, 0xffff, 20000, 30000})))
	expectGood(t, "copy LUN 0 to LUN 1", r, nil)
	if !bytes.Equal(readDev(t, e.dev1, 100, 8192), a) || !bytes.Equal(readDev(t, e.dev1, 30000, 0xffff), big) {
		t.Fatal("copied data differs")
	}
	// Its held status: completed, 2 segments, the bytes; returned once.
	r = e.copyStatus(1)
	expectGood(t, "copy status", r, nil)
	want := make([]byte, 12)
	binary.BigEndian.PutUint32(want[0:4], 8)
	want[4] = 0x01
	binary.BigEndian.PutUint16(want[5:7], 2)
	binary.BigEndian.PutUint32(want[8:12], (8192+0xffff)*512)
	if !bytes.Equal(r.data, want) {
		t.Fatalf("copy status % x, want % x", r.data, want)
	}
	expectSense(t, "copy status again", e.copyStatus(1), nil, scInvalidFieldCDB)

	// LIST ID USAGE 10b and 11b hold nothing.
	expectGood(t, "copy, no hold", e.xcopy(xcopyParams(2, listIDNoHold, [][]byte{t0}, segs(xcSeg{0, 0, 8, 0, 5000}))), nil)
	expectSense(t, "status without hold", e.copyStatus(2), nil, scInvalidFieldCDB)
	expectGood(t, "copy, no list", e.xcopy(xcopyParams(0, listIDNoList, [][]byte{t0}, segs(xcSeg{0, 0, 8, 0, 5000}))), nil)

	// A list identifier still in use.
	rec, ok := e.s.luns.Load().entries[0].lu.startCopy(e.s.luns.Load().entries[0].ns, 7, true)
	if !ok {
		t.Fatal("startCopy")
	}
	expectSense(t, "list id in use", e.xcopy(xcopyParams(7, listIDHold, [][]byte{t0}, segs(xcSeg{0, 0, 8, 0, 5000}))), nil, scOperationInProgress)
	r = e.copyStatus(7)
	expectGood(t, "status in progress", r, nil)
	if r.data[4] != 0x00 {
		t.Fatalf("in-progress status %#x", r.data[4])
	}
	e.s.luns.Load().entries[0].lu.endCopy(e.s.luns.Load().entries[0].ns, 7, rec, false)

	// Parameter list length 0 copies nothing and is not an error.
	expectGood(t, "empty", e.run(xcopyCDB(0), nil, 0).result(), nil)
}

func TestExtendedCopyOverlapAndThin(t *testing.T) {
	e := newCopyEnv(t, 1<<15)
	t0, t1 := identTarget(serial0), identTarget(serial1)
	n := 3 * xcopyChunk / 512 // several chunks
	for _, tc := range []struct {
		name     string
		src, dst uint64
	}{
		{"dst above src", 0, 1000},
		{"dst below src", 1000, 0},
		{"same range", 64, 64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := pattern(n*512, byte(tc.src))
			writeDev(t, e.dev, tc.src, data)
			r := e.xcopy(xcopyParams(0, listIDNoList, [][]byte{t0}, segs(xcSeg{0, 0, uint16(n), tc.src, tc.dst})))
			expectGood(t, "overlapping copy", r, nil)
			if !bytes.Equal(readDev(t, e.dev, tc.dst, n), data) {
				t.Fatal("overlapping copy is not as if the source was read first")
			}
		})
	}

	// Unmapped source runs are unmapped on the destination: written
	// chunks at 0 and 64, a hole between; the destination had data.
	writeDev(t, e.dev1, 8000, bytes.Repeat([]byte{0xee}, 128*512))
	e.dev.Unmap(t.Context(), 10000, 128)
	writeDev(t, e.dev, 10000, bytes.Repeat([]byte{1}, 8*512))
	writeDev(t, e.dev, 10064, bytes.Repeat([]byte{2}, 8*512))
	before := e.dev1.MappedChunks()
	r := e.xcopy(xcopyParams(0, listIDNoList, [][]byte{t0, t1}, segs(xcSeg{0, 1, 128, 10000, 8000})))
	expectGood(t, "thin copy", r, nil)
	got := readDev(t, e.dev1, 8000, 128)
	want := make([]byte, 128*512)
	copy(want, bytes.Repeat([]byte{1}, 8*512))
	copy(want[64*512:], bytes.Repeat([]byte{2}, 8*512))
	if !bytes.Equal(got, want) {
		t.Fatal("thin copy data")
	}
	if after := e.dev1.MappedChunks(); after != before-16+2 {
		t.Fatalf("destination has %d mapped chunks, want %d: holes were written, not unmapped", after, before-16+2)
	}
}

func TestExtendedCopyErrors(t *testing.T) {
	e := newCopyEnv(t, 4096)
	t0, t1 := identTarget(serial0), identTarget(serial1)
	good := segs(xcSeg{0, 1, 8, 0, 8})
	tgt := func(mod func(d []byte)) [][]byte {
		d := identTarget(serial0)
		mod(d)
		return [][]byte{d, t1}
	}
	long := make([][]byte, xcopyMaxSegmentDescs+1)
	for i := range long {
		long[i] = good[0]
	}
	nine := make([][]byte, xcopyMaxTargetDescs+1)
	for i := range nine {
		nine[i] = t0
	}
	okList := xcopyParams(1, listIDHold, [][]byte{t0, t1}, good)
	hdr := func(mod func(h []byte)) []byte {
		p := slices.Clone(okList)
		mod(p)
		return p
	}
	for _, tc := range []struct {
		name   string
		params []byte
		want   senseCode
		field  int // parameter-list byte the field pointer names, -1 none
	}{
		{"short header", okList[:15], scParamLen, -1},
		{"truncated target", okList[:xcopyHeaderLen+xcopyTargetDescLen-1], scParamLen, -1},
		{"truncated segment", okList[:len(okList)-1], scParamLen, -1},
		{"lists over the maximum", xcopyParams(1, 0, nine, long), scParamLen, -1},
		{"too many targets", xcopyParams(1, 0, nine, good), scTooManyTargetDescs, -1},
		{"too many segments", xcopyParams(1, 0, [][]byte{t0}, long), scTooManySegmentDescs, -1},
		{"FC target descriptor", xcopyParams(1, 0, tgt(func(d []byte) { d[0] = 0xe0 }), good), scUnsupportedTgtDesc, 16},
		{"stream segment", xcopyParams(1, 0, [][]byte{t0}, [][]byte{{0x03, 0, 0, 0x10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}}), scUnsupportedSegDesc, 48},
		{"segment length", xcopyParams(1, 0, [][]byte{t0}, [][]byte{append([]byte{0x02, 0, 0, 0x14}, make([]byte, 24)...)}), scInvalidFieldParam, 50},
		{"tape target", xcopyParams(1, 0, tgt(func(d []byte) { d[1] = 0x01 }), good), scInvalidFieldParam, 17},
		{"4K block length", xcopyParams(1, 0, tgt(func(d []byte) { d[30] = 0x10; d[31] = 0 }), good), scInvalidFieldParam, 45},
		{"list id usage 01b", hdr(func(h []byte) { h[1] = 1 << 3 }), scInvalidFieldParam, 1},
		{"no list, id set", hdr(func(h []byte) { h[1] = 3 << 3 }), scInvalidFieldParam, 0},
		{"inline data", append(hdr(func(h []byte) { h[15] = 4 }), 0, 0, 0, 0), scInvalidFieldParam, 12},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := e.xcopy(tc.params)
			s := decodeCopySense(t, r)
			if s.code != tc.want {
				t.Fatalf("sense %v, want %v", s.code, tc.want)
			}
			if tc.field >= 0 && (!s.sksv || s.cdField || s.field != uint16(tc.field)) {
				t.Fatalf("field pointer sksv=%v cd=%v field=%d, want parameter byte %d", s.sksv, s.cdField, s.field, tc.field)
			}
		})
	}
	if e.dev1.Stats().Writes != 0 {
		t.Fatal("a rejected parameter list wrote")
	}

	// Errors of a segment: COPY ABORTED, the segment index in
	// COMMAND-SPECIFIC INFORMATION, a pointer into its descriptor.
	tOther := identTarget(serial2)
	tVendor := identTarget(serial1)
	tVendor[5] = 0x01 // T10 vendor ID designator, not NAA
	lu1 := e.s.luns.Load().entries[1].lu
	for _, tc := range []struct {
		name    string
		targets [][]byte
		segs    [][]byte
		setup   func()
		want    senseCode
		seg     uint32
		field   int
	}{
		{"no such target descriptor", [][]byte{t0}, segs(xcSeg{0, 0, 8, 0, 8}, xcSeg{0, 1, 8, 0, 8}), nil, scCopyTargetUnreach, 1, 6},
		{"volume not mapped to us", [][]byte{t0, tOther}, segs(xcSeg{1, 0, 8, 0, 8}), nil, scCopyTargetUnreach, 0, 4},
		{"not an NAA designator", [][]byte{t0, tVendor}, good, nil, scCopyTargetUnreach, 0, 6},
		{"source beyond the end", [][]byte{t0, t1}, segs(xcSeg{0, 1, 8, 4090, 0}), nil, scCopyAbortedNoSense, 0, 12},
		{"destination beyond the end", [][]byte{t0, t1}, segs(xcSeg{0, 1, 8, 0, 8}, xcSeg{0, 1, 2048, 0, 4095}), nil, scCopyAbortedNoSense, 1, 20},
		{"destination write protected", [][]byte{t0, t1}, good, func() { lu1.swp.Store(true) }, scCopyWriteProtected, 0, 6},
		{"destination reserved by another", [][]byte{t0, t1}, good, func() {
			lu1.swp.Store(false)
			lu1.mu.Lock()
			lu1.spc2 = "someone else"
			lu1.updateReserved()
			lu1.mu.Unlock()
		}, scCopyTargetUnreach, 0, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.setup != nil {
				tc.setup()
			}
			r := e.xcopy(xcopyParams(1, listIDHold, tc.targets, tc.segs))
			s := decodeCopySense(t, r)
			if s.code != tc.want || s.csi != tc.seg || !s.sksv || !s.sd || s.field != uint16(tc.field) {
				t.Fatalf("got %+v, want %v segment %d field %d (SD=1)", s, tc.want, tc.seg, tc.field)
			}
			r = e.copyStatus(1)
			expectGood(t, "status of the failed copy", r, nil)
			if r.data[4] != 0x02 || binary.BigEndian.Uint16(r.data[5:7]) != 0 {
				t.Fatalf("failed copy status % x", r.data)
			}
		})
	}
	lu1.mu.Lock()
	lu1.spc2 = ""
	lu1.updateReserved()
	lu1.mu.Unlock()
	if e.dev1.Stats().Writes != 0 || e.dev1.Stats().Unmaps != 0 {
		t.Fatal("a copy that failed its checks wrote")
	}

	// Device errors while copying: COPY ABORTED with the error's ASC, after
	// the segments before it were copied.
	writeDev(t, e.dev, 0, pattern(64*512, 1))
	for _, tc := range []struct {
		name  string
		fault iscsitest.Fault
		want  senseCode
	}{
		{"read error", iscsitest.Fault{LBA: 40, Sectors: 1, Op: iscsitest.OpRead, Err: array.ErrMedium}, senseCode{skCopyAborted, 0x11, 0x00}},
		{"write error", iscsitest.Fault{LBA: 2040, Sectors: 1, Op: iscsitest.OpWrite, Err: array.ErrMedium}, senseCode{skCopyAborted, 0x0c, 0x00}},
		{"out of space", iscsitest.Fault{LBA: 2040, Sectors: 1, Op: iscsitest.OpWrite, Err: array.ErrNoSpace}, senseCode{skCopyAborted, 0x27, 0x07}},
		{"volume gone", iscsitest.Fault{LBA: 2040, Sectors: 1, Op: iscsitest.OpWrite, Err: array.ErrGone}, scCopyTargetUnreach},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dev := e.dev
			if tc.fault.Op == iscsitest.OpWrite {
				dev = e.dev1
			}
			dev.InjectFault(tc.fault)
			defer dev.ClearFaults()
			r := e.xcopy(xcopyParams(1, listIDHold, [][]byte{t0, t1},
				segs(xcSeg{0, 1, 8, 0, 1000}, xcSeg{0, 1, 64, 0, 2000})))
			s := decodeCopySense(t, r)
			if s.code != tc.want || s.csi != 1 {
				t.Fatalf("got %+v, want %v in segment 1", s, tc.want)
			}
			r = e.copyStatus(1)
			expectGood(t, "status", r, nil)
			if r.data[4] != 0x02 || binary.BigEndian.Uint16(r.data[5:7]) != 1 {
				t.Fatalf("status % x: want failed after 1 segment", r.data)
			}
		})
	}
}

func TestCopyManagerReports(t *testing.T) {
	e := newCopyEnv(t, 4096)
	// RECEIVE COPY OPERATING PARAMETERS.
	c := make([]byte, 16)
	c[0], c[1] = opReceiveCopy, saCopyOpParams
	binary.BigEndian.PutUint32(c[10:14], 255)
	r := e.run(c, nil, 255).result()
	expectGood(t, "operating parameters", r, nil)
	d := r.data
	if len(d) != 46 || binary.BigEndian.Uint32(d[0:4]) != 42 ||
		binary.BigEndian.Uint16(d[8:10]) != xcopyMaxTargetDescs ||
		binary.BigEndian.Uint16(d[10:12]) != xcopyMaxSegmentDescs ||
		binary.BigEndian.Uint32(d[12:16]) != xcopyMaxDescListLen ||
		binary.BigEndian.Uint32(d[16:20]) != 0xffff*512 ||
		binary.BigEndian.Uint32(d[20:24]) != 0 || d[43] != 2 || d[44] != 0x02 || d[45] != 0xe4 {
		t.Fatalf("operating parameters % x", d)
	}
	// The limits fit the descriptors they allow, as libiscsi's DescrLimits
	// needs: the most targets plus one segment, and one target plus the
	// most segments.
	if (xcopyMaxTargetDescs+1)*xcopyTargetDescLen+xcopyB2BDescLen > xcopyMaxDescListLen ||
		xcopyTargetDescLen+(xcopyMaxSegmentDescs+1)*xcopyB2BDescLen > xcopyMaxDescListLen ||
		xcopyHeaderLen+xcopyMaxDescListLen > xcopyMaxParamLen {
		t.Fatal("descriptor limits are inconsistent")
	}

	// INQUIRY: 3PC set; VPD page 8Fh listed and well formed.
	r = e.run([]byte{opInquiry, 0, 0, 0, 96, 0}, nil, 96).result()
	expectGood(t, "INQUIRY", r, nil)
	if r.data[5]&0x08 == 0 {
		t.Fatal("3PC not set")
	}
	r = e.run([]byte{opInquiry, 1, 0, 0, 255, 0}, nil, 255).result()
	if !bytes.Contains(r.data[4:], []byte{0x86, 0x8f, 0xb0}) {
		t.Fatalf("supported VPD pages % x", r.data)
	}
	r = e.run([]byte{opInquiry, 1, 0x8f, 0, 255, 0}, nil, 255).result()
	expectGood(t, "VPD 8Fh", r, nil)
	page := r.data
	if page[1] != 0x8f || int(binary.BigEndian.Uint16(page[2:4])) != len(page)-4 {
		t.Fatalf("VPD 8Fh header % x", page[:4])
	}
	descs := map[uint16][]byte{}
	for off := 4; off < len(page); {
		if off+4 > len(page) {
			t.Fatalf("descriptor header past the end at %d", off)
		}
		typ, n := binary.BigEndian.Uint16(page[off:]), int(binary.BigEndian.Uint16(page[off+2:]))
		if n%4 != 0 || off+4+n > len(page) {
			t.Fatalf("descriptor %04x length %d", typ, n)
		}
		descs[typ] = page[off+4 : off+4+n]
		off += 4 + n
	}
	if sc := descs[0x0001]; len(sc) < 8 || !bytes.Equal(sc[:8], []byte{7, 0x83, 1, 0x00, 0x84, 2, 0x00, 0x03}) {
		t.Fatalf("supported commands % x", sc)
	}
	if pd := descs[0x0004]; len(pd) != 28 || binary.BigEndian.Uint16(pd[4:6]) != xcopyMaxTargetDescs ||
		binary.BigEndian.Uint16(pd[6:8]) != xcopyMaxSegmentDescs || binary.BigEndian.Uint32(pd[8:12]) != xcopyMaxDescListLen {
		t.Fatalf("parameter data % x", pd)
	}
	if sd := descs[0x0008]; len(sd) < 3 || !bytes.Equal(sd[:3], []byte{2, 0x02, 0xe4}) {
		t.Fatalf("supported descriptors % x", sd)
	}
	if g := descs[0x8001]; len(g) != 32 || binary.BigEndian.Uint32(g[8:12]) != 0xffff*512 || g[12] != 9 {
		t.Fatalf("general copy operations % x", g)
	}

	// REPORT SUPPORTED OPERATION CODES knows the new commands.
	for _, tc := range []struct {
		op byte
		sa uint16
	}{{opExtendedCopy, saXCopyLID1}, {opReceiveCopy, saCopyStatus}, {opReceiveCopy, saCopyOpParams}, {opWriteAtomic16, 0}} {
		c := []byte{opMaintenanceIn, saReportOpcodes, 0x02, tc.op, byte(tc.sa >> 8), byte(tc.sa), 0, 0, 1, 0, 0, 0}
		if tc.op == opWriteAtomic16 {
			c[2] = 0x01
		}
		r := e.run(c, nil, 256).result()
		expectGood(t, "REPORT SUPPORTED OPERATION CODES", r, nil)
		if r.data[1]&0x07 != 0x03 || r.data[4] != tc.op {
			t.Fatalf("opcode %#x/%d: % x", tc.op, tc.sa, r.data)
		}
	}
}

// TestCopyStatusNexusLoss: held copy status goes with the I_T nexus.
func TestCopyStatusNexusLoss(t *testing.T) {
	e := newCopyEnv(t, 4096)
	// A registration keeps the nexus's state on the logical unit across
	// the loss, so only the copy status is to go.
	reg := make([]byte, 24)
	binary.BigEndian.PutUint64(reg[8:16], 0x1234)
	expectGood(t, "register", e.run([]byte{opPROut, proRegister, 0, 0, 0, 0, 0, 0, 24, 0}, reg, 0).result(), nil)
	p := xcopyParams(5, listIDHold, [][]byte{identTarget(serial0)}, segs(xcSeg{0, 0, 8, 0, 8}))
	expectGood(t, "copy", e.xcopy(p), nil)
	e.s.detachLUNs()
	e.s.refreshLUNs()
	for range 4 { // POWER ON and the like
		if e.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0).status == statusGood {
			break
		}
	}
	expectSense(t, "status after nexus loss", e.copyStatus(5), nil, scInvalidFieldCDB)
}

// encodeXCopyList writes a decoded list back as a parameter list; every
// field parseXCopy keeps survives the round trip.
func encodeXCopyList(l *xcopyList) []byte {
	var targets, sg [][]byte
	for _, tg := range l.targets[:l.nTargets] {
		d := identTarget(serial0)
		if !tg.naaOK {
			d[4], d[5] = 0x02, 0x01 // ASCII T10 vendor ID: not a volume
		}
		copy(d[8:24], tg.naa[:])
		targets = append(targets, d)
	}
	for _, s := range l.segments[:l.nSegments] {
		sg = append(sg, xcSeg{s.src, s.dst, uint16(s.blocks), s.srcLBA, s.dstLBA}.encode())
	}
	return xcopyParams(l.listID, l.usage, targets, sg)
}

// FuzzParseXCopy decodes arbitrary parameter lists: no panic, limits held,
// and a list that decodes re-encodes to the same decoded list.
func FuzzParseXCopy(f *testing.F) {
	t0, t1 := identTarget(serial0), identTarget(serial1)
	f.Add(xcopyParams(1, listIDHold, [][]byte{t0, t1}, segs(xcSeg{0, 1, 8, 0, 8}, xcSeg{1, 0, 16, 100, 200})))
	f.Add(xcopyParams(0, listIDNoList, [][]byte{t0}, nil))
	f.Add(xcopyParams(1, 0, [][]byte{{0xe0}}, nil))
	f.Add(make([]byte, 16))
	f.Fuzz(func(t *testing.T, data []byte) {
		var l xcopyList
		e, ok := parseXCopy(data, &l)
		if !ok {
			if e.sc.key != skIllegalRequest {
				t.Fatalf("rejection with sense key %#x", e.sc.key)
			}
			return
		}
		if l.nTargets > xcopyMaxTargetDescs || l.nSegments > xcopyMaxSegmentDescs ||
			xcopyHeaderLen+l.nTargets*xcopyTargetDescLen+l.nSegments*xcopyB2BDescLen > len(data) {
			t.Fatalf("decoded %d targets, %d segments from %d bytes", l.nTargets, l.nSegments, len(data))
		}
		for _, s := range l.segments[:l.nSegments] {
			if s.blocks > 0xffff || s.off+xcopyB2BDescLen > len(data) {
				t.Fatalf("segment %+v", s)
			}
		}
		var again xcopyList
		if e, ok := parseXCopy(encodeXCopyList(&l), &again); !ok || again != l {
			t.Fatalf("round trip: %v %v\n%+v\n%+v", e, ok, l, again)
		}
	})
}
