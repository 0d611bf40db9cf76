package iscsi

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"vfa/array"
)

// session is one iSCSI session: an I_T nexus with one or more connections.
type session struct {
	t         *Target
	tsih      uint16
	isid      [6]byte
	initiator string
	alias     string
	nexus     string // initiator port name: "<name>,i,0x<isid>"
	discovery bool
	params    sessionParams
	window    uint32

	mu          sync.Mutex
	cond        sync.Cond // on mu: task completion, aborts, ordering
	waiters     int       // goroutines waiting on cond
	expCmdSN    uint32
	inflight    uint32 // non-immediate commands delivered, not completed
	immInflight int
	pending     map[uint32]pendingPDU // CmdSN > ExpCmdSN, in the window
	tasks       map[uint32]*task      // by initiator task tag
	conns       []*conn
	ended       bool

	// sn holds ExpCmdSN<<32 | MaxCmdSN for the writers.
	sn atomic.Uint64

	lunMu sync.Mutex // serializes LUN table rebuilds
	luns  atomic.Pointer[lunTable]

	// Workers run tasks; idle ones wait on work. They are created on
	// demand, so at most as many exist as tasks ever ran at once (bounded
	// by the CmdSN window and MaxImmediateCommands), and exit when the
	// session ends. Reusing them keeps goroutine creation off the I/O path.
	work        chan *task
	idleWorkers int
	workers     int
	workersDone bool

	// Task ordering (SAM task attributes): tasks in delivery order.
	ordHead, ordTail *task
	nOrdered         int
}

// pendingPDU is a request that arrived ahead of ExpCmdSN.
type pendingPDU struct {
	c    *conn
	task *task // SCSI command, already receiving data
	hdr  bhs   // other requests
	data []byte
	tomb bool // ABORT TASK named this CmdSN: consider it received
}

func newSession(t *Target, isid [6]byte, initiator, alias string, discovery bool, params sessionParams, cmdSN uint32) *session {
	s := &session{
		t:         t,
		isid:      isid,
		initiator: initiator,
		alias:     alias,
		nexus:     initiatorPortName(initiator, isid),
		discovery: discovery,
		params:    params,
		window:    uint32(t.cfg.CmdWindow),
		expCmdSN:  cmdSN,
		pending:   make(map[uint32]pendingPDU),
		tasks:     make(map[uint32]*task),
	}
	s.cond.L = &s.mu
	s.work = make(chan *task, int(s.window)+t.cfg.MaxImmediateCommands)
	s.updateSN()
	return s
}

// dispatch hands a task to an idle worker or starts one; s.mu held.
func (s *session) dispatch(t *task) {
	if s.idleWorkers > 0 {
		s.idleWorkers--
		s.work <- t // buffered: one slot per idle worker at least
		return
	}
	s.workers++
	tgt := s.t
	tgt.wg.Add(1)
	go s.worker(t)
}

// worker runs tasks until the session ends.
func (s *session) worker(t *task) {
	defer s.t.wg.Done()
	for {
		t.run()
		s.mu.Lock()
		if s.workersDone {
			s.workers--
			s.mu.Unlock()
			return
		}
		s.idleWorkers++
		s.mu.Unlock()
		var ok bool
		if t, ok = <-s.work; !ok {
			return
		}
	}
}

// stopWorkers ends the idle workers; call once no task can start any more.
func (s *session) stopWorkers() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.workersDone {
		s.workersDone = true
		close(s.work)
	}
}

func initiatorPortName(name string, isid [6]byte) string {
	return fmt.Sprintf("%s,i,0x%012x", name, isid[:])
}

// updateSN publishes ExpCmdSN and MaxCmdSN; call with s.mu held.
func (s *session) updateSN() {
	maxSN := s.expCmdSN - 1 + s.window - s.inflight
	s.sn.Store(uint64(s.expCmdSN)<<32 | uint64(maxSN))
}

func (s *session) snapshotSN() (exp, max uint32) {
	v := s.sn.Load()
	return uint32(v >> 32), uint32(v)
}

// cmdSNVerdict says what to do with a request.
type cmdSNVerdict int

const (
	snDeliver cmdSNVerdict = iota // process now
	snQueue                       // ahead of ExpCmdSN: hold
	snDrop                        // outside the window: ignore silently
	snBusy                        // too many immediate commands: reject
)

// admit applies the CmdSN rules (RFC 7143 §4.2.2.1) to a request; with
// snDeliver for a non-immediate request ExpCmdSN has advanced and the
// request counts as in flight. Call with s.mu held.
func (s *session) admit(cmdSN uint32, immediate, countImm bool) cmdSNVerdict {
	if immediate {
		if countImm && s.immInflight >= s.t.cfg.MaxImmediateCommands {
			return snBusy
		}
		return snDeliver
	}
	_, maxSN := s.snapshotSN()
	switch {
	case cmdSN == s.expCmdSN:
		s.expCmdSN++
		s.inflight++
		s.updateSN()
		return snDeliver
	case snLess(s.expCmdSN, cmdSN) && snLE(cmdSN, maxSN):
		if _, dup := s.pending[cmdSN]; dup {
			return snDrop
		}
		return snQueue
	}
	return snDrop
}

// nextPending removes and returns the request whose CmdSN is ExpCmdSN, if
// held, advancing ExpCmdSN. Call with s.mu held.
func (s *session) nextPending() (pendingPDU, bool) {
	for {
		p, ok := s.pending[s.expCmdSN]
		if !ok {
			return p, false
		}
		delete(s.pending, s.expCmdSN)
		s.expCmdSN++
		if p.tomb {
			s.updateSN()
			continue
		}
		s.inflight++
		s.updateSN()
		return p, true
	}
}

// uncount releases the window slot of a non-immediate request that
// completed without a task (NOP-Out, Text, Logout, TMF). Call with s.mu held.
func (s *session) uncount() {
	s.inflight--
	s.updateSN()
}

func (s *session) release() {
	s.mu.Lock()
	s.uncount()
	s.mu.Unlock()
}

// broadcast wakes goroutines waiting on s.cond; call with s.mu held.
func (s *session) broadcast() {
	if s.waiters > 0 {
		s.cond.Broadcast()
	}
}

func (s *session) wait() {
	s.waiters++
	s.cond.Wait()
	s.waiters--
}

// Ordering. A SIMPLE (or untagged) task may start when no ORDERED task
// delivered before it is still incomplete; an ORDERED task when every task
// delivered before it is complete; a HEAD OF QUEUE task at once.

func (s *session) orderAdd(t *task) {
	t.inOrder = true
	t.ordPrev = s.ordTail
	t.ordNext = nil
	if s.ordTail != nil {
		s.ordTail.ordNext = t
	} else {
		s.ordHead = t
	}
	s.ordTail = t
	if t.attr == attrOrdered {
		s.nOrdered++
	}
}

func (s *session) orderRemove(t *task) {
	if !t.inOrder {
		return
	}
	t.inOrder = false
	if t.ordPrev != nil {
		t.ordPrev.ordNext = t.ordNext
	} else {
		s.ordHead = t.ordNext
	}
	if t.ordNext != nil {
		t.ordNext.ordPrev = t.ordPrev
	} else {
		s.ordTail = t.ordPrev
	}
	t.ordPrev, t.ordNext = nil, nil
	if t.attr == attrOrdered {
		s.nOrdered--
	}
}

// mayStart reports whether t's task attribute lets it start; s.mu held.
func (s *session) mayStart(t *task) bool {
	switch t.attr {
	case attrHeadOfQueue:
		return true
	case attrOrdered:
		return s.ordHead == t
	}
	if s.nOrdered == 0 {
		return true
	}
	for p := t.ordPrev; p != nil; p = p.ordPrev {
		if p.attr == attrOrdered {
			return false
		}
	}
	return true
}

// waitOrder blocks until t may start; it returns false if t was aborted
// meanwhile.
func (s *session) waitOrder(t *task) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if t.state.Load() != taskActive {
			return false
		}
		if s.mayStart(t) {
			return true
		}
		s.wait()
	}
}

// LUN table.

type lunTable struct {
	entries []*lunEntry // sorted by number
}

// lunEntry is one LUN as a session sees it.
type lunEntry struct {
	number uint64
	dev    array.BlockDevice
	lu     *logicalUnit
	ns     *nexusState
}

func (lt *lunTable) find(n uint64) *lunEntry {
	if lt == nil {
		return nil
	}
	e := lt.entries
	lo, hi := 0, len(e)
	for lo < hi {
		m := (lo + hi) / 2
		switch {
		case e[m].number == n:
			return e[m]
		case e[m].number < n:
			lo = m + 1
		default:
			hi = m
		}
	}
	return nil
}

// refreshLUNs rebuilds the session's LUN table from the frontend. A change
// to an existing table raises REPORTED LUNS DATA HAS CHANGED on every LUN
// of the new table.
func (s *session) refreshLUNs() {
	s.lunMu.Lock()
	defer s.lunMu.Unlock()
	s.mu.Lock()
	ended := s.ended
	s.mu.Unlock()
	if ended {
		return
	}
	old := s.luns.Load()
	luns := s.t.fe.LUNs(s.initiator)
	if len(luns) > maxSessionLUNs {
		s.t.log.Warn("iscsi: too many LUNs for initiator; extra LUNs hidden",
			"initiator", s.initiator, "luns", len(luns), "limit", maxSessionLUNs)
		luns = luns[:maxSessionLUNs]
	}
	nt := &lunTable{entries: make([]*lunEntry, 0, len(luns))}
	changed := old != nil && len(old.entries) != len(luns)
	for _, l := range luns {
		if l.Device == nil || l.Number >= 1<<14 {
			continue
		}
		serial := l.Device.Serial()
		if oe := old.find(l.Number); oe != nil && oe.lu.serial == serial {
			oe.lu.dev.Store(&devRef{l.Device})
			nt.entries = append(nt.entries, &lunEntry{number: l.Number, dev: l.Device, lu: oe.lu, ns: oe.ns})
			continue
		}
		if old != nil {
			changed = true
		}
		lu, ns := s.t.attachLU(l.Device, s.nexus)
		nt.entries = append(nt.entries, &lunEntry{number: l.Number, dev: l.Device, lu: lu, ns: ns})
	}
	slices.SortFunc(nt.entries, func(a, b *lunEntry) int {
		switch {
		case a.number < b.number:
			return -1
		case a.number > b.number:
			return 1
		}
		return 0
	})
	// Drop duplicates the frontend should not have sent.
	nt.entries = slices.CompactFunc(nt.entries, func(a, b *lunEntry) bool { return a.number == b.number })
	if old != nil {
		for _, oe := range old.entries {
			if ne := nt.find(oe.number); ne == nil || ne.ns != oe.ns {
				changed = true
				if !s.stillUses(nt, oe.ns) {
					oe.lu.detach(oe.ns, false)
					s.t.pruneLU(oe.lu)
				}
			}
		}
	}
	s.luns.Store(nt)
	if changed {
		for _, e := range nt.entries {
			e.lu.addUA(e.ns, uaReportedLUNsChanged)
		}
	}
}

func (s *session) stillUses(lt *lunTable, ns *nexusState) bool {
	for _, e := range lt.entries {
		if e.ns == ns {
			return true
		}
	}
	return false
}

// detachLUNs releases the session's logical units (I_T nexus loss).
func (s *session) detachLUNs() {
	s.lunMu.Lock()
	defer s.lunMu.Unlock()
	lt := s.luns.Swap(&lunTable{})
	if lt == nil {
		return
	}
	for _, e := range lt.entries {
		e.lu.detach(e.ns, true)
		s.t.pruneLU(e.lu)
	}
}

// LUN field encoding (SAM-5 §4.7): peripheral device addressing for LUNs
// below 256, flat space addressing up to 16383.

func encodeLUN(n uint64) uint64 {
	var b [8]byte
	if n < 256 {
		b[1] = byte(n)
	} else {
		b[0] = 0x40 | byte(n>>8)&0x3f
		b[1] = byte(n)
	}
	return binary.BigEndian.Uint64(b[:])
}

// decodeLUN returns the LUN number of an 8-byte LUN field, or ok=false for
// an addressing method we do not use.
func decodeLUN(v uint64) (uint64, bool) {
	b0, b1 := byte(v>>56), byte(v>>48)
	if v&0x0000ffffffffffff != 0 {
		return 0, false
	}
	switch b0 >> 6 {
	case 0:
		if b0 != 0 {
			return 0, false
		}
		return uint64(b1), true
	case 1:
		return uint64(b0&0x3f)<<8 | uint64(b1), true
	}
	return 0, false
}

// lookup returns the LUN entry a LUN field names, or nil.
func (s *session) lookup(lunField uint64) *lunEntry {
	n, ok := decodeLUN(lunField)
	if !ok {
		return nil
	}
	return s.luns.Load().find(n)
}

// Abort support.

// abortTasks aborts the session's tasks that match; tas asks for TASK
// ABORTED status instead of silence. It returns the aborted tasks, to wait
// for with waitTasks. Call without s.mu.
func (s *session) abortTasks(match func(*task) bool, tas bool) []*task {
	var out []*task
	s.mu.Lock()
	for _, t := range s.tasks {
		if !match(t) {
			continue
		}
		if t.abort(tas) {
			out = append(out, t)
		}
	}
	// Tasks that are still receiving data (no goroutine runs them) end now.
	var notify []*task
	for _, t := range out {
		if !t.started && !t.completed {
			if tas {
				t.started = true
				notify = append(notify, t)
				continue
			}
			t.completeLocked()
			t.conn.taskWG.Done()
		}
	}
	s.broadcast()
	s.mu.Unlock()
	for _, t := range notify {
		t.conn.queueTask(t)
	}
	return out
}

// waitTasks waits until every task in ts has completed.
func (s *session) waitTasks(ts []*task) {
	if len(ts) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, t := range ts {
		for !t.completed {
			s.wait()
		}
	}
}
