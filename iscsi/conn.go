package iscsi

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// conn is one TCP connection: login, then full feature phase with one
// reader goroutine (serve) and one writer goroutine (writeLoop).
type conn struct {
	t      *Target
	nc     net.Conn
	remote string
	ctx    context.Context
	cancel context.CancelFunc

	sess   *session
	cid    uint16
	params connParams

	pr pduReader
	bw *bufio.Writer
	pw pduWriter // writer goroutine only

	out        chan outItem
	done       chan struct{}
	closeOnce  sync.Once
	writerDone chan struct{}
	taskWG     sync.WaitGroup
	ffp        atomic.Bool // reached full feature phase
	loggedOut  atomic.Bool // a Logout completed: not a connection failure
	flushing   atomic.Bool // a Reject that ends the connection is queued

	statSN uint32 // owned by login, then by the writer

	// Reader-owned.
	nextTTT uint32
	text    textState

	// Idle detection: the reader counts PDUs, the writer pings.
	rx        atomic.Uint64
	pingTTT   uint32 // writer-owned: outstanding ping, 0 = none
	pingSince time.Time
	pingAck   atomic.Uint32 // reader: TTT of the last ping answered
	lastRx    uint64
	idleSince time.Time
}

// textState is a multi-PDU Text exchange in full feature phase.
type textState struct {
	req  []byte // request text accumulated across C=1 PDUs
	resp []byte // response text still to send
	ttt  uint32
}

// outItem is one unit of work for the writer.
type outItem struct {
	kind       uint8
	hdr        bhs
	data       []byte
	task       *task
	stat       bool // carries StatSN and advances it
	closeAfter bool // close the connection once written
	after      func()
}

const (
	outPDU  = iota // control PDU: hdr + data
	outR2T         // R2T: stamped, StatSN not advanced
	outTask        // a task's Data-In and status
	outPing        // target NOP-In
)

func newConn(t *Target, nc net.Conn) *conn {
	c := &conn{
		t:          t,
		nc:         nc,
		remote:     nc.RemoteAddr().String(),
		done:       make(chan struct{}),
		writerDone: make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(t.ctx)
	c.pr = pduReader{
		r:       bufio.NewReaderSize(nc, 64<<10),
		maxData: defMaxRecvDSL,
		maxAHS:  t.cfg.MaxAHSLength,
	}
	c.bw = bufio.NewWriterSize(nc, 64<<10)
	c.pw.w = c.bw
	return c
}

// close drops the connection; safe to call from anywhere, more than once.
func (c *conn) close() {
	c.closeOnce.Do(func() {
		close(c.done)
		c.cancel()
		c.nc.Close()
	})
}

// serve runs the connection to its end.
func (c *conn) serve() {
	defer c.t.removeConn(c)
	c.nc.SetDeadline(time.Now().Add(c.t.cfg.LoginTimeout))
	if err := c.login(); err != nil {
		if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
			c.t.log.Info("iscsi: login failed", "remote", c.remote, "err", err)
		}
		c.close()
		if c.sess != nil {
			// The session was made but the final response not delivered.
			c.loggedOut.Store(true)
			c.t.leaveSession(c)
		}
		return
	}
	c.nc.SetDeadline(time.Time{})
	c.out = make(chan outItem, 4*c.sess.window+64)
	c.pw.hdrDigest, c.pw.dataDigest = c.params.HeaderDigest, c.params.DataDigest
	c.ffp.Store(true)
	c.t.spawn(c.writeLoop)
	err := c.readLoop()
	c.teardown(err)
}

// Reader.

func (c *conn) readLoop() error {
	for {
		if err := c.pr.readHeader(); err != nil {
			return c.readError(err)
		}
		c.rx.Add(1)
		var err error
		switch c.pr.hdr.opcode() {
		case opSCSICmd:
			err = c.onSCSICmd()
		case opDataOut:
			err = c.onDataOut()
		case opNopOut:
			err = c.onNopOut()
		case opTMFReq:
			err = c.onTMF()
		case opTextReq:
			err = c.onText()
		case opLogoutReq:
			err = c.onLogout()
		case opSNACKReq:
			// ErrorRecoveryLevel 0 has no SNACK.
			err = c.rejectSkip(rejectNotSupported)
		case opLoginReq:
			err = c.protocolError(rejectProtocol, "login request in full feature phase")
		default:
			err = c.rejectSkip(rejectNotSupported)
		}
		if err != nil {
			return c.readError(err)
		}
	}
}

// readError turns a read or protocol failure into the right reaction.
func (c *conn) readError(err error) error {
	switch {
	case errors.Is(err, errDataTooLong), errors.Is(err, errAHSTooLong):
		return c.protocolError(rejectProtocol, err.Error())
	case errors.Is(err, errDataDigest):
		return c.protocolError(rejectDataDigest, err.Error())
	case errors.Is(err, errHeaderDigest):
		// The length fields cannot be trusted: no resynchronisation at
		// ErrorRecoveryLevel 0, close at once.
		return fmt.Errorf("iscsi: %w", err)
	}
	return err
}

// protocolError sends a Reject carrying the offending header and ends the
// connection once it is written.
func (c *conn) protocolError(reason byte, msg string) error {
	c.flushing.Store(true)
	c.queue(c.rejectItem(reason, true))
	return fmt.Errorf("iscsi: protocol error (reject reason %#x): %s", reason, msg)
}

func (c *conn) rejectItem(reason byte, closeAfter bool) outItem {
	var h bhs
	h[0] = opReject
	h[1] = flagFinal
	h[2] = reason
	h.setITT(reservedTag)
	data := make([]byte, bhsLen)
	copy(data, c.pr.hdr[:])
	return outItem{kind: outPDU, hdr: h, data: data, stat: true, closeAfter: closeAfter}
}

// rejectSkip rejects the current PDU, skips its data and keeps serving.
func (c *conn) rejectSkip(reason byte) error {
	if err := c.pr.readData(nil); err != nil {
		return err
	}
	c.queue(c.rejectItem(reason, false))
	return nil
}

// teardown ends the connection: aborts its tasks, waits for them, and
// leaves the session (ending it if this was its last connection).
func (c *conn) teardown(err error) {
	if err != nil && !c.loggedOut.Load() && !c.t.closing() {
		level := slog.LevelInfo
		if errors.Is(err, io.EOF) {
			level = slog.LevelDebug // closed by the initiator
		}
		c.t.log.Log(context.Background(), level, "iscsi: connection ended", "remote", c.remote,
			"initiator", c.sess.initiator, "err", err)
	}
	if c.flushing.Load() {
		// Give the writer a moment to send the queued Reject.
		select {
		case <-c.writerDone:
		case <-time.After(2 * time.Second):
		}
	}
	c.close()
	<-c.writerDone
	s := c.sess
	s.abortTasks(func(t *task) bool { return t.conn == c }, false)
	all := make(chan struct{})
	c.t.spawn(func() {
		c.taskWG.Wait()
		close(all)
	})
	for waiting := true; waiting; {
		select {
		case it := <-c.out:
			c.discard(&it)
		case <-all:
			waiting = false
		}
	}
	for drained := false; !drained; {
		select {
		case it := <-c.out:
			c.discard(&it)
		default:
			drained = true
		}
	}
	c.t.leaveSession(c)
}

// queue hands an item to the writer, or discards it if the connection is
// gone.
func (c *conn) queue(it outItem) {
	select {
	case c.out <- it:
	case <-c.done:
		c.discard(&it)
	}
}

// tryQueue queues an item if there is room right away.
func (c *conn) tryQueue(it outItem) bool {
	select {
	case c.out <- it:
		return true
	default:
		return false
	}
}

func (c *conn) queueTask(t *task) {
	c.queue(outItem{kind: outTask, task: t})
}

// discard drops an item that will not be written.
func (c *conn) discard(it *outItem) {
	if it.kind == outTask {
		t := it.task
		t.state.CompareAndSwap(taskActive, taskAborted)
		t.state.CompareAndSwap(taskAbortedTAS, taskAborted)
		t.complete()
		t.recycle(false)
	}
}

func (c *conn) newTTT() uint32 {
	c.nextTTT++
	if c.nextTTT == reservedTag || c.nextTTT == 0 {
		c.nextTTT = 1
	}
	return c.nextTTT
}

// readSmallData reads a non-SCSI data segment into a new buffer.
func (c *conn) readSmallData() ([]byte, error) {
	n := c.pr.hdr.dataLen()
	if n == 0 {
		return nil, c.pr.readData(nil)
	}
	b := make([]byte, n)
	return b, c.pr.readData(b)
}

// deliverPending processes requests that became in order.
func (c *conn) deliverPending() {
	s := c.sess
	for {
		s.mu.Lock()
		p, ok := s.nextPending()
		if ok && p.task != nil && p.task.completed {
			// Aborted while it waited for its turn.
			s.uncount()
			s.mu.Unlock()
			continue
		}
		if ok && p.task != nil {
			p.task.counted = true
			p.task.delivered = true
			s.orderAdd(p.task)
			p.task.maybeStartLocked()
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		if !ok {
			return
		}
		p.c.execQueued(p)
	}
}

// execQueued runs a held non-SCSI request.
func (c *conn) execQueued(p pendingPDU) {
	switch p.hdr.opcode() {
	case opNopOut:
		c.execNop(&p.hdr, p.data, true)
	case opTextReq:
		c.execText(&p.hdr, p.data, true)
	case opTMFReq:
		c.execTMF(&p.hdr, true)
	case opLogoutReq:
		c.execLogout(&p.hdr, true)
	}
}

// admitControl applies CmdSN rules to a non-SCSI request. It returns
// whether to execute it now and whether it holds a window slot.
func (c *conn) admitControl(data []byte) (run, counted bool) {
	h := &c.pr.hdr
	s := c.sess
	s.mu.Lock()
	v := s.admit(h.u32(offCmdSN), h.immediate(), false)
	if v == snQueue {
		s.pending[h.u32(offCmdSN)] = pendingPDU{c: c, hdr: *h, data: data}
	}
	s.mu.Unlock()
	return v == snDeliver, v == snDeliver && !h.immediate()
}

// NOP-Out (RFC 7143 §11.18).
func (c *conn) onNopOut() error {
	h := c.pr.hdr
	if ttt := h.u32(offTTT); ttt != reservedTag {
		// Answer to our ping.
		c.pingAck.Store(ttt)
		return c.pr.readData(nil)
	}
	if h.itt() == reservedTag {
		// A ping that wants no answer.
		return c.pr.readData(nil)
	}
	data, err := c.readSmallData()
	if err != nil {
		return err
	}
	run, counted := c.admitControl(data)
	if run {
		c.execNop(&h, data, counted)
		c.deliverPending()
	}
	return nil
}

func (c *conn) execNop(h *bhs, data []byte, counted bool) {
	if counted {
		c.sess.release()
	}
	var r bhs
	r[0] = opNopIn
	r[1] = flagFinal
	copy(r[8:16], h[8:16])
	r.setITT(h.itt())
	r.put32(offTTT, reservedTag)
	c.queue(outItem{kind: outPDU, hdr: r, data: data, stat: true})
}

// Text requests in full feature phase (SendTargets).
func (c *conn) onText() error {
	data, err := c.readSmallData()
	if err != nil {
		return err
	}
	h := c.pr.hdr
	run, counted := c.admitControl(data)
	if run {
		c.execText(&h, data, counted)
		c.deliverPending()
	}
	return nil
}

func (c *conn) execText(h *bhs, data []byte, counted bool) {
	if counted {
		c.sess.release()
	}
	st := &c.text
	ttt := h.u32(offTTT)
	reply := func(text []byte, final bool, ttt uint32) {
		var r bhs
		r[0] = opTextResp
		if final {
			r[1] = flagFinal
		} else {
			r[1] = flagContinue
		}
		r.setITT(h.itt())
		r.put32(offTTT, ttt)
		copy(r[8:16], h[8:16])
		c.queue(outItem{kind: outPDU, hdr: r, data: text, stat: true})
	}
	// Continuation of a long response.
	if ttt != reservedTag && ttt == st.ttt && len(st.resp) > 0 && len(data) == 0 {
		c.sendTextChunk(reply)
		return
	}
	if ttt != reservedTag && ttt != st.ttt {
		// A new exchange must start with the reserved tag; reset.
		st.req, st.resp = nil, nil
	}
	if len(st.req)+len(data) > c.t.cfg.MaxTextLength {
		st.req, st.resp = nil, nil
		c.queue(c.rejectItemFor(h, rejectResources))
		return
	}
	st.req = append(st.req, data...)
	if h[1]&flagContinue != 0 {
		st.ttt = c.newTTT()
		reply(nil, false, st.ttt)
		return
	}
	kvs, err := parseText(st.req)
	st.req = nil
	if err != nil {
		c.queue(c.rejectItemFor(h, rejectProtocol))
		return
	}
	var resp []byte
	for _, kv := range kvs {
		switch kv.key {
		case "SendTargets":
			resp = c.t.sendTargets(resp, kv.value, c.sess.discovery)
		case "MaxRecvDataSegmentLength", "HeaderDigest", "DataDigest", "MaxBurstLength",
			"FirstBurstLength", "InitialR2T", "ImmediateData", "MaxConnections",
			"MaxOutstandingR2T", "DataPDUInOrder", "DataSequenceInOrder",
			"ErrorRecoveryLevel", "DefaultTime2Wait", "DefaultTime2Retain":
			// Login-only keys; we do not renegotiate in full feature phase.
			resp = appendText(resp, kv.key, "Reject")
		default:
			resp = appendText(resp, kv.key, "NotUnderstood")
		}
	}
	st.resp = resp
	st.ttt = c.newTTT()
	c.sendTextChunk(reply)
}

func (c *conn) sendTextChunk(reply func([]byte, bool, uint32)) {
	st := &c.text
	n := len(st.resp)
	if n <= c.params.SendDSL {
		reply(st.resp, true, reservedTag)
		st.resp = nil
		return
	}
	chunk := st.resp[:c.params.SendDSL]
	st.resp = st.resp[c.params.SendDSL:]
	reply(chunk, false, st.ttt)
}

func (c *conn) rejectItemFor(h *bhs, reason byte) outItem {
	var r bhs
	r[0] = opReject
	r[1] = flagFinal
	r[2] = reason
	r.setITT(reservedTag)
	data := make([]byte, bhsLen)
	copy(data, h[:])
	return outItem{kind: outPDU, hdr: r, data: data, stat: true}
}

// Logout (RFC 7143 §11.14).
func (c *conn) onLogout() error {
	if err := c.pr.readData(nil); err != nil {
		return err
	}
	h := c.pr.hdr
	run, counted := c.admitControl(nil)
	if run {
		c.execLogout(&h, counted)
		c.deliverPending()
	}
	return nil
}

const (
	logoutCloseSession = 0
	logoutCloseConn    = 1
	logoutRecovery     = 2
)

func (c *conn) execLogout(h *bhs, counted bool) {
	reason := h[1] & 0x7f
	cid := h.u16(20)
	s := c.sess
	var r bhs
	r[0] = opLogoutResp
	r[1] = flagFinal
	r.setITT(h.itt())
	var victims []*conn
	switch reason {
	case logoutCloseSession:
		victims = s.connections()
	case logoutCloseConn:
		if target := s.connByCID(cid); target != nil {
			victims = []*conn{target}
		} else {
			r[2] = 1 // CID not found
		}
	default:
		r[2] = 2 // connection recovery is not supported
	}
	if counted {
		s.release()
	}
	closeSelf := false
	for _, v := range victims {
		if v == c {
			closeSelf = true
		}
	}
	c.t.spawn(func() {
		// Tasks still waiting for data will not get it: abort them; let
		// running ones finish and answer.
		for _, v := range victims {
			s.abortTasks(func(t *task) bool { return t.conn == v && !t.started }, false)
		}
		s.mu.Lock()
		for {
			busy := false
			for _, t := range s.tasks {
				for _, v := range victims {
					if t.conn == v && !t.completed {
						busy = true
					}
				}
			}
			if !busy {
				break
			}
			s.wait()
		}
		s.mu.Unlock()
		for _, v := range victims {
			v.loggedOut.Store(true)
			if v != c {
				v.close()
			}
		}
		c.queue(outItem{kind: outPDU, hdr: r, stat: true, closeAfter: closeSelf})
	})
}

// Writer.

func (c *conn) writeLoop() {
	defer close(c.writerDone)
	var tickC <-chan time.Time
	if c.t.cfg.NopInterval > 0 {
		tk := time.NewTicker(min(c.t.cfg.NopInterval, c.t.cfg.NopTimeout) / 2)
		defer tk.Stop()
		tickC = tk.C
		c.idleSince = time.Now()
	}
	for {
		select {
		case it := <-c.out:
			if !c.writeItem(&it) {
				return
			}
			for more := true; more; {
				select {
				case it := <-c.out:
					if !c.writeItem(&it) {
						return
					}
				default:
					more = false
				}
			}
			if err := c.bw.Flush(); err != nil {
				c.close()
				return
			}
		case now := <-tickC:
			if !c.idleCheck(now) {
				c.t.log.Info("iscsi: connection dropped: no answer to NOP-In",
					"remote", c.remote, "initiator", c.sess.initiator)
				c.close()
				return
			}
		case <-c.done:
			return
		}
	}
}

// idleCheck pings an idle connection and reports false when a ping went
// unanswered for NopTimeout.
func (c *conn) idleCheck(now time.Time) bool {
	rx := c.rx.Load()
	if rx != c.lastRx {
		c.lastRx = rx
		c.idleSince = now
		if c.pingTTT != 0 && c.pingAck.Load() == c.pingTTT {
			c.pingTTT = 0
		}
	}
	if c.pingTTT != 0 {
		if c.pingAck.Load() == c.pingTTT {
			c.pingTTT = 0
		} else if now.Sub(c.pingSince) >= c.t.cfg.NopTimeout {
			return false
		}
		return true
	}
	if now.Sub(c.idleSince) < c.t.cfg.NopInterval {
		return true
	}
	c.pingTTT = uint32(now.UnixNano()>>10)&0x7fffffff | 1
	c.pingSince = now
	var h bhs
	h[0] = opNopIn
	h[1] = flagFinal
	h.setITT(reservedTag)
	h.put32(offTTT, c.pingTTT)
	it := outItem{kind: outPing, hdr: h}
	if !c.writeItem(&it) {
		return false
	}
	return c.bw.Flush() == nil
}

// stamp fills StatSN, ExpCmdSN and MaxCmdSN into a target PDU header.
func (c *conn) stamp(h *bhs, advance bool) {
	h.put32(offStatSN, c.statSN)
	if advance {
		c.statSN++
	}
	exp, max := c.sess.snapshotSN()
	h.put32(offExpCmdSN, exp)
	h.put32(offMaxCmdSN, max)
}

// writeItem writes one item; false means the connection is finished.
func (c *conn) writeItem(it *outItem) bool {
	var err error
	switch it.kind {
	case outTask:
		err = c.writeTask(it.task)
	case outR2T, outPing:
		c.stamp(&it.hdr, false)
		err = c.pw.write(&it.hdr, nil)
	default:
		c.stamp(&it.hdr, it.stat)
		err = c.pw.write(&it.hdr, it.data)
	}
	if it.after != nil {
		c.bw.Flush()
		it.after()
	}
	if err != nil {
		c.close()
		return false
	}
	if it.closeAfter {
		c.bw.Flush()
		c.close()
		return false
	}
	return true
}

// writeTask sends a task's Data-In PDUs and status.
func (c *conn) writeTask(t *task) error {
	tas := false
	for {
		st := t.state.Load()
		if st == taskAborted {
			t.complete()
			t.recycle(false)
			return nil
		}
		if t.state.CompareAndSwap(st, taskSent) {
			tas = st == taskAbortedTAS
			break
		}
	}
	t.complete()
	var err error
	if tas {
		t.status = statusTaskAborted
		t.senseLen = 0
		t.inLen = 0
		err = c.writeStatus(t, 0, 0, 0)
	} else {
		err = c.writeResponse(t)
	}
	t.recycle(!tas)
	return err
}

// residual computes the residual flags and count (RFC 7143 §11.4.5).
func (t *task) residual() (flags byte, count uint32) {
	var want, exp uint32
	switch t.info.dir {
	case dirOut:
		want = t.outWant
		if t.write {
			exp = t.edtl
		}
	case dirIn:
		want = uint32(t.inLen)
		if t.read {
			exp = t.readEDTL
		}
	default:
		if t.read || t.write {
			exp = t.edtl
		}
	}
	switch {
	case want > exp:
		return flagOverflow, want - exp
	case want < exp:
		return flagUnderflow, exp - want
	}
	return 0, 0
}

func (c *conn) writeResponse(t *task) error {
	resFlags, resCount := t.residual()
	send := 0
	if t.info.dir == dirIn && t.read {
		send = min(t.inLen, int(t.readEDTL))
	}
	if send == 0 || t.senseLen > 0 {
		dataSN := uint32(0)
		if send > 0 {
			dataSN = c.writeDataIn(t, send, false, 0, 0)
			if dataSN == 0 {
				return errWrite
			}
		}
		return c.writeStatus(t, resFlags, resCount, dataSN)
	}
	if c.writeDataIn(t, send, true, resFlags, resCount) == 0 {
		return errWrite
	}
	return nil
}

var errWrite = errors.New("iscsi: write failed")

// writeDataIn writes send bytes of t.buf as Data-In PDUs, the last one with
// status when withStatus. It returns the number of PDUs written, 0 on error.
func (c *conn) writeDataIn(t *task, send int, withStatus bool, resFlags byte, resCount uint32) uint32 {
	seg := c.params.SendDSL
	burst := min(t.sess.params.MaxBurstLength, c.t.cfg.MaxBurstLength)
	var dataSN uint32
	inBurst := 0
	for off := 0; off < send; {
		n := min(seg, send-off, burst-inBurst)
		var h bhs
		h[0] = opDataIn
		last := off+n == send
		inBurst += n
		if last || inBurst == burst {
			h[1] |= flagFinal
			inBurst = 0
		}
		h.setLUN(t.lunField)
		h.setITT(t.itt)
		h.put32(offTTT, reservedTag)
		if last && withStatus {
			h[1] |= flagStatus | resFlags
			h[3] = t.status
			h.put32(44, resCount)
			c.stamp(&h, true)
		} else {
			exp, max := t.sess.snapshotSN()
			h.put32(offExpCmdSN, exp)
			h.put32(offMaxCmdSN, max)
		}
		h.put32(36, dataSN)
		h.put32(40, uint32(off))
		if err := c.pw.write(&h, t.buf[off:off+n]); err != nil {
			return 0
		}
		dataSN++
		off += n
	}
	return dataSN
}

func (c *conn) writeStatus(t *task, resFlags byte, resCount uint32, expDataSN uint32) error {
	var h bhs
	h[0] = opSCSIResp
	h[1] = flagFinal | resFlags
	h[2] = 0 // command completed at target
	h[3] = t.status
	h.setITT(t.itt)
	eds := expDataSN
	if t.info.dir == dirOut {
		eds = t.r2tSent
	}
	h.put32(36, eds)
	h.put32(44, resCount)
	c.stamp(&h, true)
	var data []byte
	if t.senseLen > 0 {
		binary.BigEndian.PutUint16(t.sense[0:2], uint16(t.senseLen))
		data = t.sense[:2+t.senseLen]
	}
	return c.pw.write(&h, data)
}

// connections returns the session's connections.
func (s *session) connections() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*conn(nil), s.conns...)
}

func (s *session) connByCID(cid uint16) *conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		if c.cid == cid {
			return c
		}
	}
	return nil
}
