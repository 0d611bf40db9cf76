package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

// rawConn is a logged-in connection driven PDU by PDU (no reader goroutine).
func rawLogin(t *testing.T, h *harness, mod func(*iniConfig)) *initiator {
	t.Helper()
	cfg := iniConfig{Initiator: iniA, Target: testIQN}
	if mod != nil {
		mod(&cfg)
	}
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	in := &initiator{tb: t, nc: nc, br: bufio.NewReaderSize(nc, 64<<10), cfg: cfg, waiting: map[uint32]chan iniResp{},
		other: make(chan iniResp, 64), targetDSL: defMaxRecvDSL, immediate: true, initialR2T: true,
		firstBurst: defFirstBurst, maxBurst: defMaxBurst, loginKeys: map[string]string{}, itt: 0x1000}
	in.cfg.ISID = [6]byte{0x80, 0, 0, 0, 0, 9}
	in.cfg.MaxRecvDSL = 262144
	in.cond = sync.NewCond(&in.mu)
	if err := in.login(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(in.close)
	return in
}

// expectClosed reads until the target closes the connection, returning the
// PDUs it sent first.
func expectClosed(t *testing.T, in *initiator) []iniResp {
	t.Helper()
	var got []iniResp
	for {
		r, err := in.recv()
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || isReset(err) {
				return got
			}
			t.Fatalf("waiting for close: %v", err)
		}
		got = append(got, r)
	}
}

func isReset(err error) bool { return errors.Is(err, syscall.ECONNRESET) }

func TestMalformedStreams(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxRecvDataSegmentLength = 8192 })
	// A healthy session that must survive everything below.
	good := h.login(iniA2)
	good.clearUA(0)

	t.Run("garbage", func(t *testing.T) {
		nc, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		nc.Write(bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 100))
		nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.ReadAll(nc); err != nil && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("garbage: connection not closed: %v", err)
		}
	})
	t.Run("bad opcode", func(t *testing.T) {
		in := rawLogin(t, h, nil)
		var hd bhs
		hd[0] = 0x1c // vendor opcode
		hd[1] = flagFinal
		hd.setITT(77)
		in.send(&hd, []byte("hello"))
		r, err := in.recv()
		if err != nil || r.hdr.opcode() != opReject || r.hdr[2] != rejectNotSupported ||
			!bytes.Equal(r.data[:bhsLen], hd[:]) {
			t.Fatalf("bad opcode: %v %x", err, r.hdr[:4])
		}
		// The connection still works.
		var nop bhs
		nop[0] = opNopOut | flagImmediate
		nop[1] = flagFinal
		nop.setITT(78)
		nop.put32(offTTT, reservedTag)
		in.send(&nop, []byte("ping"))
		r, err = in.recv()
		if err != nil || r.hdr.opcode() != opNopIn || string(r.data) != "ping" {
			t.Fatalf("NOP after reject: %v %x %q", err, r.hdr[:4], r.data)
		}
	})
	t.Run("oversized data segment", func(t *testing.T) {
		in := rawLogin(t, h, nil)
		var hd bhs
		hd[0] = opNopOut | flagImmediate
		hd[1] = flagFinal
		hd.setITT(5)
		hd.put32(offTTT, reservedTag)
		in.send(&hd, make([]byte, 8192+4))
		got := expectClosed(t, in)
		if len(got) != 1 || got[0].hdr.opcode() != opReject || got[0].hdr[2] != rejectProtocol {
			t.Fatalf("oversized: got %d PDUs", len(got))
		}
	})
	t.Run("bad header digest", func(t *testing.T) {
		in := rawLogin(t, h, func(c *iniConfig) { c.HeaderDigest = "CRC32C" })
		raw := make([]byte, bhsLen+4)
		raw[0] = opNopOut | flagImmediate
		raw[1] = flagFinal
		binary.BigEndian.PutUint32(raw[16:], 9)
		binary.BigEndian.PutUint32(raw[20:], reservedTag)
		binary.LittleEndian.PutUint32(raw[bhsLen:], 0x12345678) // wrong
		in.nc.Write(raw)
		if got := expectClosed(t, in); len(got) != 0 {
			t.Fatalf("bad header digest: target answered %d PDUs", len(got))
		}
	})
	t.Run("bad data digest", func(t *testing.T) {
		in := rawLogin(t, h, func(c *iniConfig) { c.HeaderDigest, c.DataDigest = "CRC32C", "CRC32C" })
		var hd bhs
		hd[0] = opNopOut | flagImmediate
		hd[1] = flagFinal
		hd.setITT(9)
		hd.put32(offTTT, reservedTag)
		hd.setDataLen(4)
		raw := append([]byte(nil), hd[:]...)
		raw = binary.LittleEndian.AppendUint32(raw, crcOf(hd[:]))
		raw = append(raw, "ping"...)
		raw = binary.LittleEndian.AppendUint32(raw, crcOf([]byte("pong")))
		in.nc.Write(raw)
		got := expectClosed(t, in)
		if len(got) != 1 || got[0].hdr.opcode() != opReject || got[0].hdr[2] != rejectDataDigest {
			t.Fatalf("bad data digest: %d PDUs", len(got))
		}
	})
	t.Run("login request in full feature phase", func(t *testing.T) {
		in := rawLogin(t, h, nil)
		var hd bhs
		hd[0] = opLoginReq | flagImmediate
		in.send(&hd, nil)
		got := expectClosed(t, in)
		if len(got) != 1 || got[0].hdr.opcode() != opReject {
			t.Fatalf("login in FFP: %d PDUs", len(got))
		}
	})
	r, err := good.read10(0, 0, 8)
	expectGood(t, "other session after malformed streams", r, err)
}

func TestNopOut(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.mu.Lock()
	exp0 := in.expCmdSN
	in.mu.Unlock()
	// Non-immediate NOP-Outs consume CmdSN and advance ExpCmdSN: this is
	// what libiscsi and QEMU send every 5 s.
	for i := range 3 {
		r, err := in.nop(false, []byte("abc"))
		if err != nil {
			t.Fatal(err)
		}
		if string(r.data) != "abc" {
			t.Fatalf("ping data %q", r.data)
		}
		if got := r.hdr.u32(offExpCmdSN); got != exp0+uint32(i)+1 {
			t.Fatalf("ExpCmdSN %d after %d NOP-Outs from %d", got, i+1, exp0)
		}
	}
	if _, err := in.nop(true, nil); err != nil {
		t.Fatal(err)
	}
	in.clearUA(0)
	r, err := in.tur(0)
	expectGood(t, "TUR after NOPs", r, err)
}

func TestTargetPing(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.NopInterval = 50 * time.Millisecond
		c.NopTimeout = 200 * time.Millisecond
	})
	in := h.login(iniA)
	// Answered pings keep an idle session alive.
	for range 3 {
		r, err := in.waitOther(opNopIn, 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if r.hdr.itt() != reservedTag || r.hdr.u32(offTTT) == reservedTag {
			t.Fatalf("ping ITT %#x TTT %#x", r.hdr.itt(), r.hdr.u32(offTTT))
		}
	}
	in.clearUA(0)
	r, err := in.tur(0)
	expectGood(t, "TUR between pings", r, err)

	// A peer that stops answering is dropped.
	dead := h.login(iniA2, func(c *iniConfig) { c.NoPingAnswer = true })
	for {
		if _, ok := <-dead.other; !ok {
			break // connection closed by the target
		}
	}
}

func TestCmdSNWindow(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CmdWindow = 8 })
	in := rawLogin(t, h, nil)
	if in.maxCmdSN != in.expCmdSN+8-1 {
		t.Fatalf("MaxCmdSN %d, ExpCmdSN %d, window 8", in.maxCmdSN, in.expCmdSN)
	}
	tur := func(cmdSN uint32, itt uint32) {
		var hd bhs
		hd[0] = opSCSICmd
		hd[1] = flagFinal | attrSimple
		hd.setITT(itt)
		hd.put32(offCmdSN, cmdSN)
		in.send(&hd, nil)
	}
	// Outside the window: silently ignored.
	tur(in.maxCmdSN+1, 100)
	tur(in.expCmdSN-1, 101)
	// In order: answered, even after the ignored ones.
	tur(in.expCmdSN, 102)
	r, err := in.recv()
	if err != nil || r.hdr.opcode() != opSCSIResp || r.hdr.itt() != 102 {
		t.Fatalf("in-window command: %v op %#x itt %d", err, r.hdr.opcode(), r.hdr.itt())
	}
	if got := r.hdr.u32(offExpCmdSN); got != in.expCmdSN+1 {
		t.Fatalf("ExpCmdSN %d, want %d", got, in.expCmdSN+1)
	}
	// Ahead of ExpCmdSN (a gap): held until the gap is filled, then both
	// run in CmdSN order.
	exp := in.expCmdSN + 1
	tur(exp+1, 104)
	tur(exp, 103)
	seen := map[uint32]bool{}
	for range 2 {
		r, err := in.recv()
		if err != nil || r.hdr.opcode() != opSCSIResp {
			t.Fatalf("held command: %v", err)
		}
		seen[r.hdr.itt()] = true
	}
	if !seen[103] || !seen[104] {
		t.Fatalf("answers %v", seen)
	}
}

func TestManyInFlight(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.CmdWindow = 32 })
	in := h.login(iniA)
	in.clearUA(0)
	const workers, perWorker, blocks = 48, 40, 16
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perWorker {
				lba := uint32(w*perWorker*blocks + i*blocks)
				data := pattern(blocks*512, byte(w+i))
				r, err := in.write10(0, lba, data)
				if err != nil || r.status != statusGood {
					errs <- errors.New("write failed")
					return
				}
				r, err = in.read10(0, lba, blocks)
				if err != nil || r.status != statusGood || !bytes.Equal(r.data, data) {
					errs <- errors.New("read back differs")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.maxCmdSN-in.expCmdSN+1 != 32 {
		t.Fatalf("window after load: ExpCmdSN %d MaxCmdSN %d", in.expCmdSN, in.maxCmdSN)
	}
}

func TestTaskManagement(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.clearUA(0)
	other := h.login(iniA2)
	other.clearUA(0)

	// ABORT TASK of a finished task: task does not exist.
	var itt, cmdSN uint32
	r, err := in.command(make([]byte, 6), nil, cmdOpts{onSent: func(i, c uint32) { itt, cmdSN = i, c }})
	expectGood(t, "TUR", r, err)
	if resp, err := in.tmf(tmfAbortTask, 0, itt, cmdSN); err != nil || resp != tmfRespNoTask {
		t.Fatalf("ABORT TASK of a done task: %v %d", err, resp)
	}

	// ABORT TASK of a write waiting for its data: function complete, and
	// no response for the write ever comes.
	cdb := make([]byte, 10)
	cdb[0] = opWrite10
	cdb[8] = 8
	itt = in.nextITT()
	ch := make(chan iniResp, 4)
	in.mu.Lock()
	in.waiting[itt] = ch
	sn := in.cmdSN
	in.cmdSN++
	in.mu.Unlock()
	var hd bhs
	hd[0] = opSCSICmd
	hd[1] = flagWrite | attrSimple // F=0? no: no unsolicited data follows
	hd[1] |= flagFinal
	hd.setITT(itt)
	hd.put32(20, 4096)
	hd.put32(offCmdSN, sn)
	copy(hd[32:], cdb)
	in.send(&hd, nil) // no immediate data: the target sends an R2T
	r2t := <-ch
	if r2t.hdr.opcode() != opR2T {
		t.Fatalf("expected R2T, got %#x", r2t.hdr.opcode())
	}
	if resp, err := in.tmf(tmfAbortTask, 0, itt, sn); err != nil || resp != tmfRespComplete {
		t.Fatalf("ABORT TASK: %v %d", err, resp)
	}
	select {
	case r := <-ch:
		t.Fatalf("aborted task answered: %#x", r.hdr.opcode())
	default:
	}

	// Unsupported function.
	if resp, err := in.tmf(tmfClearACA, 0, 0, 0); err != nil || resp != tmfRespNotSupport {
		t.Fatalf("CLEAR ACA: %v %d", err, resp)
	}
	if resp, err := in.tmf(tmfTaskReassign, 0, 0, 0); err != nil || resp != tmfRespNoReassign {
		t.Fatalf("TASK REASSIGN: %v %d", err, resp)
	}
	// LU-scoped functions on a LUN we do not have.
	if resp, err := in.tmf(tmfLUReset, 7, 0, 0); err != nil || resp != tmfRespNoLUN {
		t.Fatalf("LU RESET of LUN 7: %v %d", err, resp)
	}
	// ABORT TASK SET, then LU RESET: every nexus gets a unit attention.
	if resp, err := in.tmf(tmfAbortTaskSet, 0, 0, 0); err != nil || resp != tmfRespComplete {
		t.Fatalf("ABORT TASK SET: %v %d", err, resp)
	}
	if resp, err := in.tmf(tmfLUReset, 0, 0, 0); err != nil || resp != tmfRespComplete {
		t.Fatalf("LU RESET: %v %d", err, resp)
	}
	for _, x := range []*initiator{in, other} {
		r, err := x.tur(0)
		expectSense(t, "TUR after LU RESET", r, err, uaLUReset)
	}
	// TARGET WARM RESET keeps the connections.
	if resp, err := in.tmf(tmfTargetWarm, 0, 0, 0); err != nil || resp != tmfRespComplete {
		t.Fatalf("TARGET WARM RESET: %v %d", err, resp)
	}
	r, err = in.tur(0)
	expectSense(t, "TUR after warm reset", r, err, uaTargetReset)
	// TARGET COLD RESET drops every connection after the response.
	if resp, err := in.tmf(tmfTargetCold, 0, 0, 0); err != nil || resp != tmfRespComplete {
		t.Fatalf("TARGET COLD RESET: %v %d", err, resp)
	}
	for _, x := range []*initiator{in, other} {
		for range x.other {
		}
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.clearUA(0)
	if resp, err := in.logout(logoutCloseConn); err != nil || resp != 0 {
		t.Fatalf("logout: %v %d", err, resp)
	}
	for range in.other {
	}
	in2 := h.login(iniA)
	if resp, err := in2.logout(logoutCloseSession); err != nil || resp != 0 {
		t.Fatalf("logout session: %v %d", err, resp)
	}
	for range in2.other {
	}
	// The target ends the session once the closed connection is torn down.
	waitFor(t, "session end", func() bool {
		h.tgt.mu.Lock()
		defer h.tgt.mu.Unlock()
		return len(h.tgt.sessions) == 0
	})
}

func TestSessionReinstatement(t *testing.T) {
	h := newHarness(t, nil)
	isid := func(c *iniConfig) { c.ISID = [6]byte{0x80, 1, 2, 3, 4, 5} }
	old := h.login(iniA, isid)
	old.clearUA(0)
	// Reserve from the old session; reinstatement is I_T nexus loss, which
	// releases it.
	r, err := old.simple(0, []byte{opReserve6, 0, 0, 0, 0, 0}, 0)
	expectGood(t, "RESERVE(6)", r, err)
	fresh := h.login(iniA, isid)
	for range old.other {
	} // the old session's connection is closed
	fresh.clearUA(0)
	b := h.login(iniA2)
	b.clearUA(0)
	r, err = b.simple(0, []byte{opReserve6, 0, 0, 0, 0, 0}, 0)
	expectGood(t, "RESERVE(6) after reinstatement", r, err)
}

func TestConnectionLossAbortsTasks(t *testing.T) {
	h := newHarness(t, nil)
	h.dev0.InjectFault(iscsitest.Fault{}) // no-op fault: exercise the list
	in := h.login(iniA)
	in.clearUA(0)
	// Leave writes waiting for R2T data, then drop the connection.
	for i := range 8 {
		var hd bhs
		hd[0] = opSCSICmd
		hd[1] = flagFinal | flagWrite | attrSimple
		hd.setITT(uint32(500 + i))
		in.mu.Lock()
		hd.put32(offCmdSN, in.cmdSN)
		in.cmdSN++
		in.mu.Unlock()
		hd.put32(20, 65536)
		hd[32] = opWrite10
		hd[32+8] = 128
		in.send(&hd, nil)
	}
	in.close()
	// Close waits for every goroutine; the harness checks for leaks.
}

func TestTwoTargetsIndependent(t *testing.T) {
	h1 := newHarness(t, nil)
	h2 := newHarness(t, nil)
	h2.noLeakCheck = true // h1's goroutines still run when h2 stops; h1 checks both
	a1 := h1.login(iniA)
	a2 := h2.login(iniA)
	a1.clearUA(0)
	a2.clearUA(0)
	r, err := a1.write10(0, 10, pattern(4096, 1))
	expectGood(t, "write via target 1", r, err)
	r, err = a2.read10(0, 10, 8)
	expectGood(t, "read via target 2", r, err)
	if !bytes.Equal(r.data, make([]byte, 4096)) {
		t.Fatal("target 2 sees target 1's write")
	}
	r, err = a1.simple(0, []byte{opReserve6, 0, 0, 0, 0, 0}, 0)
	expectGood(t, "reserve on target 1", r, err)
	b2 := h2.login(iniA2)
	b2.clearUA(0)
	r, err = b2.simple(0, []byte{opReserve6, 0, 0, 0, 0, 0}, 0)
	expectGood(t, "reserve on target 2 is independent", r, err)
}

func TestErrorMapping(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.clearUA(0)
	errOther := errors.New("disk on fire")
	for _, tc := range []struct {
		err   error
		read  senseCode
		write senseCode
	}{
		{array.ErrMedium, scUnrecoveredRead, scWriteError},
		{array.ErrLocked, scNotReadyUnavailable, scNotReadyUnavailable},
		{array.ErrNoSpace, scSpaceAllocFailed, scSpaceAllocFailed},
		{array.ErrHostKey, scHostKeyUnavailable, scHostKeyUnavailable},
		{array.ErrGone, scLUNotSupported, scLUNotSupported},
		{array.ErrOutOfRange, scLBAOutOfRange, scLBAOutOfRange},
		{errOther, scInternalFailure, scInternalFailure},
	} {
		h.dev0.ClearFaults()
		h.dev0.InjectFault(iscsitest.Fault{LBA: 100, Sectors: 1, Op: iscsitest.OpAll, Err: tc.err})
		r, err := in.read10(0, 96, 8)
		expectSense(t, "read "+tc.err.Error(), r, err, tc.read)
		if len(r.data) != 0 {
			t.Fatalf("%v: read returned %d bytes of data", tc.err, len(r.data))
		}
		r, err = in.write10(0, 99, make([]byte, 1024))
		expectSense(t, "write "+tc.err.Error(), r, err, tc.write)
		// Outside the faulty LBA all is well.
		r, err = in.read10(0, 0, 8)
		expectGood(t, "read elsewhere", r, err)
	}
	h.dev0.ClearFaults()
	// A locked array: TEST UNIT READY says NOT READY too, and REPORT TARGET
	// PORT GROUPS shows the port group unavailable.
	h.fe.SetReady(array.ErrLocked)
	r, err := in.tur(0)
	expectSense(t, "TUR while locked", r, err, scNotReadyUnavailable)
	rtpg := []byte{opMaintenanceIn, saReportTPG, 0, 0, 0, 0, 0, 0, 0, 64, 0, 0}
	r, err = in.simple(0, rtpg, 64)
	expectGood(t, "RTPG", r, err)
	if r.data[4]&0x0f != 3 {
		t.Fatalf("RTPG state %#x while locked", r.data[4])
	}
	h.fe.SetReady(nil)
	r, err = in.tur(0)
	expectGood(t, "TUR after unlock", r, err)
	// Out of range is caught before the device is called.
	before := h.dev0.Stats().Reads
	r, err = in.read10(0, uint32(h.dev0.Sectors()-4), 8)
	expectSense(t, "read beyond the end", r, err, scLBAOutOfRange)
	if h.dev0.Stats().Reads != before {
		t.Fatal("device called for an out-of-range read")
	}
}

// gateDevice blocks ReadAt at one LBA until released, to hold a command in
// flight.
type gateDevice struct {
	*iscsitest.MemDevice
	lba     uint64
	entered chan struct{}
	release chan struct{}
}

func (g *gateDevice) ReadAt(ctx context.Context, p []byte, lba uint64) error {
	if lba == g.lba {
		g.entered <- struct{}{}
		<-g.release
	}
	return g.MemDevice.ReadAt(ctx, p, lba)
}

func TestTaskAttributes(t *testing.T) {
	h := newHarness(t, nil)
	gate := &gateDevice{MemDevice: h.dev0, lba: 777, entered: make(chan struct{}), release: make(chan struct{})}
	h.fe.SetHost(iscsitest.Host{Name: "a", Initiators: []string{iniA}, LUNs: []array.LUN{{Number: 0, Device: gate}}})
	h.tgt.refresh()
	in := h.login(iniA)
	in.clearUA(0)
	var mu sync.Mutex
	statSN := map[string]uint32{}
	var wg sync.WaitGroup
	run := func(name string, attr byte, cdb []byte, alloc int) {
		sent := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := in.command(cdb, nil, cmdOpts{attr: attr, read: alloc > 0, edtl: alloc,
				onSent: func(uint32, uint32) { close(sent) }})
			if err != nil || r.status != statusGood {
				t.Errorf("%s: %v", name, err)
				return
			}
			mu.Lock()
			statSN[name] = r.statSN
			mu.Unlock()
		}()
		<-sent
	}
	read := make([]byte, 10)
	read[0] = opRead10
	binary.BigEndian.PutUint32(read[2:6], 777)
	read[8] = 1
	run("simple read", attrSimple, read, 512)
	<-gate.entered // the read is in the device
	run("ordered TUR", attrOrdered, make([]byte, 6), 0)
	// A non-immediate NOP is answered only after the target took the
	// ordered command (CmdSN order): it now waits behind the read.
	if _, err := in.nop(false, nil); err != nil {
		t.Fatal(err)
	}
	// Head of queue runs at once, while the other two wait.
	r, err := in.command(make([]byte, 6), nil, cmdOpts{attr: attrHeadOfQueue, timeout: 5 * time.Second})
	expectGood(t, "head of queue TUR while a read blocks", r, err)
	close(gate.release)
	wg.Wait()
	// StatSN gives the order the target answered in.
	if !(r.statSN < statSN["simple read"] && statSN["simple read"] < statSN["ordered TUR"]) {
		t.Fatalf("answer order (StatSN) HOQ %d, %v: want head of queue, simple, ordered", r.statSN, statSN)
	}
}

func TestMultipleConnections(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxConnectionsPerSession = 2 })
	isid := [6]byte{0x80, 0, 0, 0, 0x42, 1}
	c0 := h.login(iniA, func(c *iniConfig) {
		c.ISID = isid
		c.ExtraKeys = []textKV{{"MaxConnections", "4"}}
	})
	if c0.loginKeys["MaxConnections"] != "2" {
		t.Fatalf("MaxConnections=%s", c0.loginKeys["MaxConnections"])
	}
	c0.clearUA(0)
	join := func(cid uint16) (*initiator, error) {
		return dialInitiator(t, h.addr, iniConfig{Initiator: iniA, Target: testIQN, ISID: isid, TSIH: c0.tsih, CID: cid})
	}
	c1, err := join(1)
	if err != nil {
		t.Fatal(err)
	}
	defer c1.close()
	// A third connection is one too many.
	var le *loginError
	if _, err := join(2); !errors.As(err, &le) || le.status != loginTooManyConns {
		t.Fatalf("third connection: %v", err)
	}
	// CmdSN is session-wide: alternate the connections.
	data := pattern(4096, 9)
	for i := range 6 {
		a, b := c0, c1
		if i%2 == 1 {
			a, b = c1, c0
		}
		a.mu.Lock()
		b.mu.Lock()
		a.cmdSN = max(a.cmdSN, b.cmdSN)
		b.cmdSN = a.cmdSN + 1
		a.maxCmdSN = max(a.maxCmdSN, b.maxCmdSN)
		b.mu.Unlock()
		a.mu.Unlock()
		r, err := a.write10(0, uint32(100+i*8), data)
		expectGood(t, "write on alternating connections", r, err)
	}
	// Logging out one connection leaves the session.
	if resp, err := c1.logout(logoutCloseConn); err != nil || resp != 0 {
		t.Fatalf("logout connection: %v %d", err, resp)
	}
	c0.mu.Lock()
	c0.cmdSN = max(c0.cmdSN, c1.cmdSN)
	c0.mu.Unlock()
	r, err := c0.read10(0, 100, 8)
	expectGood(t, "read after the other connection left", r, err)
}

func TestTextContinuation(t *testing.T) {
	var portals []string
	for i := range 60 {
		portals = append(portals, fmt.Sprintf("192.0.2.%d:3260", i))
	}
	h := newHarness(t, func(c *Config) { c.Portals = portals })
	in := mustLogin(t, h.addr, iniConfig{Initiator: iniA, MaxRecvDSL: 512})
	kvs, err := in.text(textKV{"SendTargets", "All"})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(kvMap(kvs)["TargetAddress"]); got != 60 {
		t.Fatalf("%d addresses across continued Text responses", got)
	}
}

func TestLoginContinuation(t *testing.T) {
	h := newHarness(t, nil)
	nc, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	in := &initiator{tb: t, nc: nc, br: bufio.NewReader(nc)}
	text := appendText(nil, "InitiatorName", iniA)
	text = appendText(text, "TargetName", testIQN)
	text = appendText(text, "SessionType", "Normal")
	send := func(flags byte, data []byte) iniResp {
		var hd bhs
		hd[0] = opLoginReq | flagImmediate
		hd[1] = flags
		hd[8] = 0x80
		hd.setITT(1)
		in.send(&hd, data)
		r, err := in.recv()
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Split the keys mid-pair across two PDUs with the C bit.
	cut := 20
	r := send(flagContinue|1<<2|3, text[:cut])
	if r.hdr[36] != 0 || len(r.data) != 0 || r.hdr[1]&flagTransit != 0 {
		t.Fatalf("continue: status %x data %q flags %#x", r.hdr[36:38], r.data, r.hdr[1])
	}
	r = send(flagTransit|1<<2|3, text[cut:])
	if r.hdr[36] != 0 || r.hdr[1]&flagTransit == 0 || r.hdr[1]&3 != 3 || r.hdr.u16(14) == 0 {
		t.Fatalf("final: status %x flags %#x tsih %d", r.hdr[36:38], r.hdr[1], r.hdr.u16(14))
	}
}

func TestExtendedCDB(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.clearUA(0)
	cdb := make([]byte, 32)
	cdb[0] = 0x7f // variable-length CDB: not supported, but parsed
	cdb[7] = 24
	r, err := in.command(cdb, nil, cmdOpts{})
	expectSense(t, "32-byte CDB", r, err, scInvalidOpcode)
	r, err = in.tur(0)
	expectGood(t, "TUR after a 32-byte CDB", r, err)
}

func TestDataOutSequenceError(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA, func(c *iniConfig) { c.MaxRecvDSL = 512 })
	in.clearUA(0)
	in.targetDSL = 512 // send 512-byte Data-Out PDUs
	cdb := make([]byte, 10)
	cdb[0] = opWrite10
	cdb[8] = 4
	r, err := in.command(cdb, make([]byte, 2048), cmdOpts{edtl: -1, noImmData: true,
		dataOutMod: func(h *bhs) { h.put32(36, 7) }})
	expectSense(t, "write with bad DataSN", r, err, scDataOffsetError)
	r, err = in.read10(0, 0, 4)
	expectGood(t, "read after the bad write", r, err)
}

func TestAsyncOnClose(t *testing.T) {
	h := newHarness(t, nil)
	in := h.login(iniA)
	in.clearUA(0)
	h.tgt.Close()
	r, err := in.waitOther(opAsync, 5*time.Second)
	if err != nil {
		t.Fatalf("no Async Message before the connection closed: %v", err)
	}
	if r.hdr[36] != asyncDropAll {
		t.Fatalf("AsyncEvent %d", r.hdr[36])
	}
}
