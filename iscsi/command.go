package iscsi

// Reception of SCSI commands and their data-out (RFC 7143 §11.3, §11.7,
// §11.8), and task management (§11.5).

import (
	"encoding/binary"
	"fmt"
)

// AHS types.
const (
	ahsExtendedCDB = 1
	ahsBidiRead    = 2
)

// onSCSICmd handles a SCSI Command PDU.
func (c *conn) onSCSICmd() error {
	h := &c.pr.hdr
	s := c.sess
	if s.discovery {
		return c.protocolError(rejectProtocol, "SCSI command in a discovery session")
	}
	imm := h.immediate()
	cmdSN := h.u32(offCmdSN)
	dataLen := h.dataLen()
	flags := h[1]
	read := flags&flagRead != 0
	write := flags&flagWrite != 0
	edtl := h.u32(20)

	if dataLen > 0 {
		switch {
		case !write:
			return c.protocolError(rejectProtocol, "immediate data without W bit")
		case !s.params.ImmediateData:
			return c.protocolError(rejectProtocol, "immediate data not negotiated")
		case uint32(dataLen) > edtl:
			return c.protocolError(rejectProtocol, "immediate data beyond expected length")
		case dataLen > s.params.FirstBurstLength:
			return c.protocolError(rejectProtocol, "immediate data beyond FirstBurstLength")
		}
	}

	s.mu.Lock()
	verdict := s.admit(cmdSN, imm, true)
	if verdict == snDeliver && imm {
		s.immInflight++
	}
	s.mu.Unlock()
	switch verdict {
	case snDrop:
		return c.pr.readData(nil)
	case snBusy:
		return c.rejectSkip(rejectImmediate)
	}

	t := c.t.tasks.get()
	t.sess = s
	t.conn = c
	t.itt = h.itt()
	t.cmdSN = cmdSN
	t.lunField = h.lun()
	t.attr = flags & attrMask
	if t.attr == attrUntagged || t.attr == attrACA || t.attr > attrHeadOfQueue {
		t.attr = attrSimple
	}
	t.read, t.write, t.immediate = read, write, imm
	t.edtl = edtl
	t.readEDTL = edtl
	t.counted = verdict == snDeliver && !imm
	t.immCounted = verdict == snDeliver && imm
	copy(t.cdb[:16], h[32:48])
	t.cdbLen = 16
	if err := t.parseAHS(c.pr.ahs[:c.pr.ahsN]); err != nil {
		s.mu.Lock()
		t.completeLocked()
		s.mu.Unlock()
		return c.protocolError(rejectProtocol, err.Error())
	}
	t.lun = s.lookup(t.lunField)
	t.plan()

	// Unsolicited data: immediate data, then Data-Out up to FirstBurstLength
	// unless InitialR2T or the F bit says otherwise.
	unsol := uint32(dataLen)
	if write && !s.params.InitialR2T && flags&flagFinal == 0 {
		unsol = max(unsol, min(edtl, uint32(s.params.FirstBurstLength)))
	}
	t.unsolEnd = unsol
	t.unsolNext = uint32(dataLen)
	if write {
		t.wantOut = min(t.outWant, edtl)
	}
	t.solEnd = t.wantOut
	t.r2tNext = unsol
	t.burst = uint32(min(s.params.MaxBurstLength, c.t.cfg.MaxBurstLength))
	t.maxR2T = min(s.params.MaxOutstandingR2T, c.t.cfg.MaxOutstandingR2T)
	t.outArea = max(int(unsol), int(t.wantOut), t.inBuf())
	t.setBuffer(t.outArea + t.info.medium)
	if err := c.pr.readData(t.buf[:dataLen]); err != nil {
		return err
	}

	// Once registered and started, a task that needs no more data may
	// complete and be recycled at once: decide about R2Ts now.
	needR2T := t.r2tNext < t.solEnd
	s.mu.Lock()
	if old := s.tasks[t.itt]; old != nil && !old.completed {
		t.completeLocked()
		s.mu.Unlock()
		return c.protocolError(rejectProtocol, fmt.Sprintf("task tag %#x in use", t.itt))
	}
	s.tasks[t.itt] = t
	c.taskWG.Add(1)
	t.dataReady = t.unsolNext == t.unsolEnd && t.r2tNext >= t.solEnd
	switch verdict {
	case snDeliver:
		t.delivered = true
		s.orderAdd(t)
		t.maybeStartLocked()
	case snQueue:
		s.pending[cmdSN] = pendingPDU{c: c, task: t}
	}
	s.mu.Unlock()
	if needR2T {
		c.issueR2Ts(t)
	}
	if verdict == snDeliver && !imm {
		c.deliverPending()
	}
	return nil
}

// parseAHS reads an extended CDB and the expected bidirectional read length.
func (t *task) parseAHS(b []byte) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("truncated AHS")
		}
		n := int(binary.BigEndian.Uint16(b[0:2]))
		typ := b[2]
		total := pad4(3 + n)
		if total > len(b) || n < 1 {
			return fmt.Errorf("bad AHS length %d", n)
		}
		body := b[3 : 3+n] // starts with the type-specific byte
		switch typ {
		case ahsExtendedCDB:
			ext := body[1:]
			if 16+len(ext) > maxCDBLen {
				return fmt.Errorf("extended CDB of %d bytes", 16+len(ext))
			}
			copy(t.cdb[16:], ext)
			t.cdbLen = 16 + len(ext)
		case ahsBidiRead:
			if n != 5 {
				return fmt.Errorf("bad bidirectional read AHS length %d", n)
			}
			t.readEDTL = binary.BigEndian.Uint32(body[1:5])
		}
		b = b[total:]
	}
	if !(t.read && t.write) {
		t.readEDTL = t.edtl
	}
	return nil
}

// issueR2Ts sends R2Ts while the command needs data and R2Ts may be
// outstanding. Reader goroutine only.
func (c *conn) issueR2Ts(t *task) {
	for t.nR2T < t.maxR2T && t.r2tNext < t.solEnd {
		n := min(t.burst, t.solEnd-t.r2tNext)
		ttt := c.newTTT()
		t.r2ts[t.nR2T] = r2tState{ttt: ttt, next: t.r2tNext, end: t.r2tNext + n}
		t.nR2T++
		var h bhs
		h[0] = opR2T
		h[1] = flagFinal
		h.setLUN(t.lunField)
		h.setITT(t.itt)
		h.put32(offTTT, ttt)
		h.put32(36, t.r2tSN)
		h.put32(40, t.r2tNext)
		h.put32(44, n)
		t.r2tSN++
		t.r2tSent++
		t.r2tNext += n
		c.queue(outItem{kind: outR2T, hdr: h})
	}
}

// onDataOut handles a SCSI Data-Out PDU.
func (c *conn) onDataOut() error {
	h := &c.pr.hdr
	s := c.sess
	itt := h.itt()
	ttt := h.u32(offTTT)
	dataSN := h.u32(36)
	off := h.u32(40)
	n := uint32(h.dataLen())
	final := h.final()

	s.mu.Lock()
	t := s.tasks[itt]
	ok := t != nil && t.conn == c && !t.completed && !t.dataReady
	s.mu.Unlock()
	if !ok {
		// Data for a task that ended (aborted, or answered early): drop.
		return c.pr.readData(nil)
	}
	if ttt == reservedTag {
		if off != t.unsolNext || dataSN != t.unsolSN || off+n > t.unsolEnd || off+n < off {
			return c.dataOutError(t, scDataOffsetError, false)
		}
		if err := c.readInto(t, off, n); err != nil {
			return err
		}
		t.unsolNext += n
		t.unsolSN++
		if final != (t.unsolNext == t.unsolEnd) {
			return c.dataOutError(t, scDataPhaseError, true)
		}
	} else {
		i := 0
		for i < t.nR2T && t.r2ts[i].ttt != ttt {
			i++
		}
		if i == t.nR2T {
			return c.dataOutError(t, scInvalidTTT, false)
		}
		r := &t.r2ts[i]
		if off != r.next || dataSN != r.dataSN || off+n > r.end || off+n < off {
			return c.dataOutError(t, scDataOffsetError, false)
		}
		if err := c.readInto(t, off, n); err != nil {
			return err
		}
		r.next += n
		r.dataSN++
		if final != (r.next == r.end) {
			return c.dataOutError(t, scDataPhaseError, true)
		}
		if final {
			t.nR2T--
			t.r2ts[i] = t.r2ts[t.nR2T]
			c.issueR2Ts(t)
		}
	}
	if t.unsolNext == t.unsolEnd && t.nR2T == 0 && t.r2tNext >= t.solEnd {
		s.mu.Lock()
		t.dataReady = true
		t.maybeStartLocked()
		s.mu.Unlock()
	}
	return nil
}

// dataOutError ends a task whose Data-Out broke the sequence rules
// (DataSN, buffer offset, length, target transfer tag): the PDU's data is
// dropped and the task completes with CHECK CONDITION, ABORTED COMMAND and
// the given code, so the connection and the other tasks carry on. Later
// Data-Out for the task is dropped. consumed says the PDU's data was read.
func (c *conn) dataOutError(t *task, sc senseCode, consumed bool) error {
	if !consumed {
		if err := c.pr.readData(nil); err != nil {
			return err
		}
	}
	t.dataErr = sc
	t.nR2T = 0
	t.solEnd = t.r2tNext
	s := c.sess
	s.mu.Lock()
	t.dataReady = true
	t.maybeStartLocked()
	s.mu.Unlock()
	return nil
}

// readInto reads n bytes of data-out at offset off into the task buffer;
// bytes beyond the buffer are read and dropped.
func (c *conn) readInto(t *task, off, n uint32) error {
	end := min(off+n, uint32(len(t.buf)))
	if off >= end {
		return c.pr.readData(nil)
	}
	return c.pr.readData(t.buf[off:end])
}

// Task management functions and responses (RFC 7143 §11.5, §11.6).
const (
	tmfAbortTask      = 1
	tmfAbortTaskSet   = 2
	tmfClearACA       = 3
	tmfClearTaskSet   = 4
	tmfLUReset        = 5
	tmfTargetWarm     = 6
	tmfTargetCold     = 7
	tmfTaskReassign   = 8
	tmfRespComplete   = 0
	tmfRespNoTask     = 1
	tmfRespNoLUN      = 2
	tmfRespNoReassign = 4
	tmfRespNotSupport = 5
)

func (c *conn) onTMF() error {
	if err := c.pr.readData(nil); err != nil {
		return err
	}
	h := c.pr.hdr
	if c.sess.discovery {
		return c.protocolError(rejectProtocol, "task management in a discovery session")
	}
	run, counted := c.admitControl(nil)
	if run {
		c.execTMF(&h, counted)
		c.deliverPending()
	}
	return nil
}

func (c *conn) execTMF(h *bhs, counted bool) {
	s := c.sess
	fn := h[1] & 0x7f
	lunField := h.lun()
	refITT := h.u32(20)
	tmfCmdSN := h.u32(offCmdSN)
	refCmdSN := h.u32(32)
	resp := byte(tmfRespComplete)
	var waits []*task
	var after func()

	switch fn {
	case tmfAbortTask:
		waits = s.abortTasks(func(x *task) bool {
			return x.itt == refITT && x.lunField == lunField && !x.completed
		}, false)
		if len(waits) > 0 {
			break
		}
		s.mu.Lock()
		if snLE(s.expCmdSN, refCmdSN) && snLess(refCmdSN, tmfCmdSN) {
			// Not arrived yet: consider it received (RFC 7143 §11.5.1 b).
			if p, held := s.pending[refCmdSN]; !held || p.task == nil {
				s.pending[refCmdSN] = pendingPDU{tomb: true}
			}
		} else {
			// Unknown, or it completed before the abort arrived.
			resp = tmfRespNoTask
		}
		s.mu.Unlock()
	case tmfAbortTaskSet, tmfClearTaskSet:
		if s.lookup(lunField) == nil {
			resp = tmfRespNoLUN
			break
		}
		waits = s.abortTasks(func(x *task) bool {
			return x.lunField == lunField && (x.delivered || x.immediate)
		}, false)
	case tmfLUReset:
		e := s.lookup(lunField)
		if e == nil {
			resp = tmfRespNoLUN
			break
		}
		waits = c.t.abortAll(s, func(x *task) bool { return x.lun != nil && x.lun.lu == e.lu })
		e.lu.reset(uaLUReset)
	case tmfTargetWarm, tmfTargetCold:
		waits = c.t.abortAll(s, func(*task) bool { return true })
		c.t.resetAll()
		if fn == tmfTargetCold {
			after = c.t.dropAllConns
		}
	case tmfTaskReassign:
		resp = tmfRespNoReassign
	default:
		resp = tmfRespNotSupport
	}

	itt := h.itt()
	c.t.spawn(func() {
		waitAll(waits)
		if counted {
			s.release()
		}
		var r bhs
		r[0] = opTMFResp
		r[1] = flagFinal
		r[2] = resp
		r.setITT(itt)
		c.queue(outItem{kind: outPDU, hdr: r, stat: true, after: after})
	})
}

// abortAll aborts matching tasks of every session: silently for the
// requesting session, with TASK ABORTED status for the others (TAS=1).
func (t *Target) abortAll(requester *session, match func(*task) bool) []*task {
	t.mu.Lock()
	sessions := make([]*session, 0, len(t.sessions))
	for _, s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.mu.Unlock()
	var waits []*task
	for _, s := range sessions {
		if s.discovery {
			continue
		}
		ts := s.abortTasks(match, s != requester)
		waits = append(waits, ts...)
	}
	return waits
}

// waitTasks across sessions: each task waits on its own session.
func waitAll(ts []*task) {
	for _, t := range ts {
		t.sess.waitTasks([]*task{t})
	}
}

// resetAll resets every logical unit (target reset).
func (t *Target) resetAll() {
	t.mu.Lock()
	lus := make([]*logicalUnit, 0, len(t.lus))
	for _, lu := range t.lus {
		lus = append(lus, lu)
	}
	t.mu.Unlock()
	for _, lu := range lus {
		lu.reset(uaTargetReset)
	}
}

// dropAllConns closes every connection (TARGET COLD RESET).
func (t *Target) dropAllConns() {
	t.mu.Lock()
	conns := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	for _, c := range conns {
		c.close()
	}
}
