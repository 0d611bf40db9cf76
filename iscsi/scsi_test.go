package iscsi

import (
	"bytes"
	"encoding/binary"
	"sync"
	"testing"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

// execEnv runs CDBs through plan and execute without the network.
type execEnv struct {
	tgt *Target
	s   *session
	c   *conn
	dev *iscsitest.MemDevice
}

func newExecEnv(tb testing.TB, sectors uint64) *execEnv {
	tb.Helper()
	fe := iscsitest.NewFrontend(testIQN)
	dev := iscsitest.NewMemDevice(serial0, "v", sectors)
	fe.SetHost(iscsitest.Host{Name: "a", Initiators: []string{iniA}, LUNs: []array.LUN{{Number: 0, Device: dev}}})
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
	e := &execEnv{tgt: tgt, s: s, c: c, dev: dev}
	e.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0) // consume POWER ON
	return e
}

// run executes one CDB with data-out out (write when non-nil) and expected
// data-in length edtl (read when out is nil and edtl > 0).
func (e *execEnv) run(cdb []byte, out []byte, edtl int) *task {
	t := &task{sess: e.s, conn: e.c}
	copy(t.cdb[:], cdb)
	t.cdbLen = max(16, len(cdb))
	t.write = out != nil
	t.read = out == nil && edtl > 0
	if t.write && edtl == 0 {
		edtl = len(out)
	}
	t.edtl, t.readEDTL = uint32(edtl), uint32(edtl)
	t.lunField = encodeLUN(0)
	t.lun = e.s.lookup(t.lunField)
	t.plan()
	if t.write {
		t.wantOut = min(t.outWant, t.edtl)
	}
	t.outArea = max(len(out), int(t.wantOut), t.inBuf())
	t.buf = make([]byte, t.outArea+t.info.medium)
	copy(t.buf, out)
	e.tgt.execute(t)
	return t
}

func (t *task) result() *scsiResult {
	r := &scsiResult{status: t.status, sense: t.sense[2 : 2+t.senseLen]}
	if t.info.dir == dirIn && t.read {
		r.data = t.buf[:min(t.inLen, int(t.readEDTL))]
	}
	r.resFlags, r.residual = t.residual()
	return r
}

func cdb16(op byte, lba uint64, n uint32) []byte {
	c := make([]byte, 16)
	c[0] = op
	binary.BigEndian.PutUint64(c[2:10], lba)
	binary.BigEndian.PutUint32(c[10:14], n)
	return c
}

func TestSCSICommands(t *testing.T) {
	e := newExecEnv(t, 4096)
	good := func(what string, tk *task) *scsiResult {
		t.Helper()
		r := tk.result()
		expectGood(t, what, r, nil)
		return r
	}
	bad := func(what string, tk *task, want senseCode) *scsiResult {
		t.Helper()
		r := tk.result()
		expectSense(t, what, r, nil, want)
		return r
	}

	// COMPARE AND WRITE: the miscompare offset is in INFORMATION.
	good("write", e.run(cdb16(opWrite16, 8, 1), bytes.Repeat([]byte{'A'}, 512), 0))
	caw := cdb16(opCompareWrite, 8, 0)
	caw[13] = 1
	buf := append(bytes.Repeat([]byte{'A'}, 512), bytes.Repeat([]byte{'B'}, 512)...)
	buf[100] = 'x'
	r := bad("CAW miscompare", e.run(caw, buf, 0), scMiscompare)
	if r.sense[0]&0x80 == 0 || binary.BigEndian.Uint32(r.sense[3:7]) != 100 {
		t.Fatalf("miscompare INFORMATION: % x", r.sense[:8])
	}
	buf[100] = 'A'
	good("CAW", e.run(caw, buf, 0))
	bad("CAW wrong data length", e.run(caw, buf[:512], 0), scInvalidFieldCDB)

	// VERIFY with BYTCHK 11b compares one block with every block.
	good("write B", e.run(cdb16(opWrite16, 16, 4), bytes.Repeat([]byte{'B'}, 2048), 0))
	v := cdb16(opVerify16, 16, 4)
	v[1] = 0x06
	good("verify bytchk 3", e.run(v, bytes.Repeat([]byte{'B'}, 512), 0))
	other := bytes.Repeat([]byte{'B'}, 512)
	other[7] = 0
	r = bad("verify bytchk 3 mismatch", e.run(v, other, 0), scMiscompare)
	if binary.BigEndian.Uint32(r.sense[3:7]) != 7 {
		t.Fatalf("verify INFORMATION % x", r.sense[:8])
	}

	// ORWRITE.
	good("orwrite", e.run(cdb16(opOrWrite, 16, 1), bytes.Repeat([]byte{0x40}, 512), 0))
	rd := good("read", e.run(cdb16(opRead16, 16, 1), nil, 512))
	if rd.data[0] != 'B'|0x40 {
		t.Fatalf("ORWRITE result %#x", rd.data[0])
	}

	// WRITE SAME with UNMAP deallocates; GET LBA STATUS reports it.
	ws := cdb16(opWriteSame16, 0, 64)
	ws[1] = 0x08
	good("write after", e.run(cdb16(opWrite16, 64, 8), bytes.Repeat([]byte{1}, 4096), 0))
	good("write same unmap", e.run(ws, bytes.Repeat([]byte{0xff}, 512), 0))
	gls := cdb16(opServiceIn16, 0, 64)
	gls[1] = saGetLBAStatus
	r = good("get lba status", e.run(gls, nil, 64))
	if binary.BigEndian.Uint64(r.data[8:16]) != 0 || binary.BigEndian.Uint32(r.data[16:20]) != 64 || r.data[20] != 1 ||
		binary.BigEndian.Uint64(r.data[24:32]) != 64 || binary.BigEndian.Uint32(r.data[32:36]) != 8 || r.data[36] != 0 {
		t.Fatalf("GET LBA STATUS % x", r.data)
	}
	// An unaligned starting LBA is reported from the next 4 KiB block.
	binary.BigEndian.PutUint64(gls[2:10], 3)
	r = good("get lba status unaligned", e.run(gls, nil, 64))
	if binary.BigEndian.Uint64(r.data[8:16]) != 8 {
		t.Fatalf("GET LBA STATUS at 3 starts at %d", binary.BigEndian.Uint64(r.data[8:16]))
	}

	// UNMAP parameter list checks.
	um := []byte{opUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}
	param := func(lba uint64, n uint32) []byte {
		p := make([]byte, 24)
		binary.BigEndian.PutUint16(p[0:2], 22)
		binary.BigEndian.PutUint16(p[2:4], 16)
		binary.BigEndian.PutUint64(p[8:16], lba)
		binary.BigEndian.PutUint32(p[16:20], n)
		return p
	}
	good("unmap", e.run(um, param(8, 8), 0))
	bad("unmap beyond the end", e.run(um, param(4090, 8), 0), scLBAOutOfRange)
	bad("unmap short list", e.run([]byte{opUnmap, 0, 0, 0, 0, 0, 0, 0, 4, 0}, make([]byte, 4), 0), scParamLen)

	// REPORT SUPPORTED OPERATION CODES for one command.
	rsoc := []byte{opMaintenanceIn, saReportOpcodes, 1, opRead10, 0, 0, 0, 0, 1, 0, 0, 0}
	r = good("rsoc read10", e.run(rsoc, nil, 256))
	if r.data[1]&7 != 3 || binary.BigEndian.Uint16(r.data[2:4]) != 10 || r.data[4] != opRead10 || r.data[5]&0x18 != 0x18 {
		t.Fatalf("RSOC READ(10) % x", r.data)
	}
	rsoc[3] = 0x7f // not supported
	r = good("rsoc unsupported", e.run(rsoc, nil, 256))
	if r.data[1]&7 != 1 {
		t.Fatalf("RSOC unsupported % x", r.data)
	}
	rsoc[3] = opServiceIn16 // has service actions: option 1 is invalid
	bad("rsoc option 1 with SA", e.run(rsoc, nil, 256), scInvalidFieldCDB)

	// INQUIRY truncates to the allocation length; EVPD=0 with a page code
	// is invalid.
	r = good("inquiry 5", e.run([]byte{opInquiry, 0, 0, 0, 5, 0}, nil, 5))
	if len(r.data) != 5 || r.data[4] != 91 {
		t.Fatalf("INQUIRY(5) % x", r.data)
	}
	bad("inquiry page without EVPD", e.run([]byte{opInquiry, 0, 0x80, 0, 255, 0}, nil, 255), scInvalidFieldCDB)
	bad("inquiry unknown VPD", e.run([]byte{opInquiry, 1, 0x99, 0, 255, 0}, nil, 255), scInvalidFieldCDB)

	// Unknown opcode and protection fields.
	bad("unknown opcode", e.run([]byte{0xc0, 0, 0, 0, 0, 0}, nil, 0), scInvalidOpcode)
	rp := cdb16(opRead16, 0, 1)
	rp[1] = 0x20
	bad("RDPROTECT", e.run(rp, nil, 512), scInvalidFieldCDB)
	bad("too long", e.run(cdb16(opRead16, 0, 1<<20), nil, 512), scInvalidFieldCDB)
	bad("LBA beyond", e.run(cdb16(opRead16, 4096, 1), nil, 512), scLBAOutOfRange)

	// D_SENSE: MODE SELECT switches to descriptor sense data; the other
	// nexuses get MODE PARAMETERS CHANGED.
	r = good("mode sense control", e.run([]byte{opModeSense6, 0x08, mpControl, 0, 255, 0}, nil, 255))
	page := append([]byte(nil), r.data[4:]...)
	page[2] |= 0x04
	sel := append([]byte{0, 0, 0, 0}, page...)
	good("mode select D_SENSE", e.run([]byte{opModeSelect6, 0x10, 0, 0, byte(len(sel)), 0}, sel, 0))
	r = bad("descriptor sense", e.run(cdb16(opRead16, 4096, 1), nil, 512), scLBAOutOfRange)
	if r.sense[0] != 0x72 {
		t.Fatalf("sense format %#x with D_SENSE", r.sense[0])
	}
	page[3] ^= 0x10 // queue algorithm modifier is not changeable
	sel = append([]byte{0, 0, 0, 0}, page...)
	bad("mode select unchangeable", e.run([]byte{opModeSelect6, 0x10, 0, 0, byte(len(sel)), 0}, sel, 0), scInvalidFieldParam)
	bad("mode sense saved", e.run([]byte{opModeSense6, 0, 0xc0 | mpControl, 0, 255, 0}, nil, 255), scSavingNotSupported)

	// SYNCHRONIZE CACHE reports a flush failure.
	e.dev.InjectFault(iscsitest.Fault{Op: iscsitest.OpFlush, LBA: 0, Sectors: 4096, Err: array.ErrMedium})
	bad("sync cache error", e.run([]byte{opSyncCache10, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, 0), scWriteError)
	e.dev.ClearFaults()

	// REQUEST SENSE returns a pending unit attention and clears it.
	e.s.luns.Load().entries[0].lu.addUA(e.s.luns.Load().entries[0].ns, uaCapacityChanged)
	r = good("request sense", e.run([]byte{opRequestSense, 0, 0, 0, 252, 0}, nil, 252))
	if k, a, q := (&scsiResult{sense: r.data}).senseKey(); k != skUnitAttention || a != 0x2a || q != 0x09 {
		t.Fatalf("REQUEST SENSE %x/%x/%x", k, a, q)
	}
	good("TUR after REQUEST SENSE", e.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0))
}

func TestPersistentReservations(t *testing.T) {
	e := newExecEnv(t, 4096)
	lu := e.s.luns.Load().entries[0].lu
	other := newSession(e.tgt, [6]byte{2}, iniA, "", false, defaultSessionParams(), 1)
	other.refreshLUNs()
	ec := &execEnv{tgt: e.tgt, s: other, c: &conn{t: e.tgt, ctx: e.tgt.ctx, sess: other}, dev: e.dev}
	ec.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0)
	prout := func(env *execEnv, sa, typ byte, key, sakey uint64) *scsiResult {
		cdb := []byte{opPROut, sa, typ, 0, 0, 0, 0, 0, 24, 0}
		p := make([]byte, 24)
		binary.BigEndian.PutUint64(p[0:8], key)
		binary.BigEndian.PutUint64(p[8:16], sakey)
		return env.run(cdb, p, 0).result()
	}
	if r := prout(e, proRegister, 0, 0, 0xa); r.status != statusGood {
		t.Fatalf("register: %#x", r.status)
	}
	if r := prout(ec, proRegister, 0, 0, 0xb); r.status != statusGood {
		t.Fatalf("register b: %#x", r.status)
	}
	if r := prout(e, proReserve, prWE, 0xa, 0); r.status != statusGood {
		t.Fatalf("reserve: %#x", r.status)
	}
	// Write exclusive: the other nexus reads but does not write.
	if r := ec.run(cdb16(opRead16, 0, 1), nil, 512).result(); r.status != statusGood {
		t.Fatalf("read by other: %#x", r.status)
	}
	if r := ec.run(cdb16(opWrite16, 0, 1), make([]byte, 512), 0).result(); r.status != statusResvConflict {
		t.Fatalf("write by other: %#x", r.status)
	}
	// A wrong key is a conflict.
	if r := prout(ec, proRelease, prWE, 0xc, 0); r.status != statusResvConflict {
		t.Fatalf("release with a wrong key: %#x", r.status)
	}
	// PREEMPT by the other nexus takes the reservation and removes the
	// holder's registration, with a unit attention for it.
	if r := prout(ec, proPreempt, prEA, 0xb, 0xa); r.status != statusGood {
		t.Fatalf("preempt: %#x", r.status)
	}
	if r := e.run([]byte{opTestUnitReady, 0, 0, 0, 0, 0}, nil, 0).result(); r.code() != uaRegistrationsPreemp {
		t.Fatalf("preempted nexus: %v", r.code())
	}
	if r := e.run(cdb16(opRead16, 0, 1), nil, 512).result(); r.status != statusResvConflict {
		t.Fatalf("read under EA by a non-registrant: %#x", r.status)
	}
	lu.mu.Lock()
	typ, holder, n := lu.pr.typ, lu.pr.holder, len(lu.pr.regs)
	lu.mu.Unlock()
	if typ != prEA || holder != other.nexus || n != 1 {
		t.Fatalf("after preempt: type %d holder %s registrations %d", typ, holder, n)
	}
	// RESERVE(6) conflicts while registrations exist.
	if r := e.run([]byte{opReserve6, 0, 0, 0, 0, 0}, nil, 0).result(); r.status != statusResvConflict {
		t.Fatalf("RESERVE(6) with registrations: %#x", r.status)
	}
	// CLEAR removes everything.
	if r := prout(ec, proClear, 0, 0xb, 0); r.status != statusGood {
		t.Fatalf("clear: %#x", r.status)
	}
	if lu.reserved.Load() {
		t.Fatal("reserved after CLEAR")
	}
	// APTPL is refused: nothing persists across a restart.
	cdb := []byte{opPROut, proRegister, 0, 0, 0, 0, 0, 0, 24, 0}
	p := make([]byte, 24)
	binary.BigEndian.PutUint64(p[8:16], 5)
	p[20] = 1
	if r := e.run(cdb, p, 0).result(); r.code() != scInvalidFieldParam {
		t.Fatalf("APTPL: %v", r.code())
	}
}

func TestORWriteAtomic(t *testing.T) {
	e := newExecEnv(t, 64)
	var wg sync.WaitGroup
	for bit := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := bytes.Repeat([]byte{1 << bit}, 512)
			if r := e.run(cdb16(opOrWrite, 0, 1), data, 0).result(); r.status != statusGood {
				t.Errorf("ORWRITE: %#x %v", r.status, r.code())
			}
		}()
	}
	wg.Wait()
	r := e.run(cdb16(opRead16, 0, 1), nil, 512).result()
	if !bytes.Equal(r.data, bytes.Repeat([]byte{0xff}, 512)) {
		t.Fatalf("concurrent ORWRITEs lost bits: %x", r.data[:4])
	}
}

// FuzzCDB runs arbitrary CDBs with arbitrary data through planning and
// execution.
func FuzzCDB(f *testing.F) {
	for _, c := range [][]byte{
		cdb16(opRead16, 0, 1), cdb16(opWriteSame16, 0, 0), cdb16(opCompareWrite, 0, 0),
		{opInquiry, 1, 0xb0, 0, 255, 0}, {opModeSense10, 0x10, 0x3f, 0xff, 0, 0, 0, 1, 0, 0},
		{opPROut, proPreemptAbort, prEAAR, 0, 0, 0, 0, 0, 24, 0},
		{opMaintenanceIn, saReportOpcodes, 0x80, 0, 0, 0, 0, 1, 0, 0, 0, 0},
		{opUnmap, 0, 0, 0, 0, 0, 0, 0, 24, 0}, {opModeSelect10, 0x10, 0, 0, 0, 0, 0, 0, 20, 0},
		writeAtomicCDB(8, 0, 8), writeAtomicCDB(0, 8, 16), xcopyCDB(76),
		{opReceiveCopy, saCopyStatus, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0},
		{opReceiveCopy, saCopyOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0},
	} {
		f.Add(c, []byte{}, uint16(512), false)
		f.Add(c, make([]byte, 24), uint16(24), true)
	}
	f.Add(xcopyCDB(76), xcopyParams(1, listIDHold, [][]byte{identTarget(serial0)}, segs(xcSeg{0, 0, 8, 0, 64})), uint16(76), true)
	e := newExecEnv(f, 2048)
	f.Fuzz(func(t *testing.T, cdb, out []byte, edtl uint16, write bool) {
		if len(cdb) == 0 || len(cdb) > maxCDBLen {
			return
		}
		if !write {
			out = nil
		} else if out == nil {
			out = []byte{}
		}
		tk := e.run(cdb, out, int(edtl))
		if tk.senseLen > maxSenseLen || tk.inLen > len(tk.buf) || tk.inLen < 0 {
			t.Fatalf("senseLen %d inLen %d buf %d", tk.senseLen, tk.inLen, len(tk.buf))
		}
		switch tk.status {
		case statusGood, statusCheckCondition, statusResvConflict:
		default:
			t.Fatalf("status %#x", tk.status)
		}
		if tk.status == statusCheckCondition && tk.senseLen == 0 {
			t.Fatal("CHECK CONDITION without sense")
		}
		tk.residual()
		// Reservations the fuzzer took must not leak into the next run.
		lu := e.s.luns.Load().entries[0].lu
		lu.mu.Lock()
		lu.pr = prState{}
		lu.spc2 = ""
		lu.updateReserved()
		lu.mu.Unlock()
		lu.swp.Store(false)
	})
}
