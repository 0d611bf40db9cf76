package iscsi

// A task is one SCSI command from arrival to its response. The reader
// goroutine of its connection creates it, reads its data-out (immediate,
// unsolicited and R2T-solicited) into one pooled buffer, and starts a
// goroutine that waits for the task attribute's ordering, executes the CDB
// and queues the response; the writer sends Data-In and status, then
// returns the buffer and the task to their pools.

import (
	"sync"
	"sync/atomic"
)

// Task states (task.state).
const (
	taskActive     = iota
	taskAborted    // aborted: nothing more is sent
	taskAbortedTAS // aborted by another I_T nexus: send TASK ABORTED
	taskSent       // the writer took the response
)

// SAM task attributes as iSCSI encodes them.
const (
	attrUntagged    = 0
	attrSimple      = 1
	attrOrdered     = 2
	attrHeadOfQueue = 3
	attrACA         = 4
)

const maxCDBLen = 16 + 4*64 // BHS CDB plus an extended-CDB AHS

type r2tState struct {
	ttt    uint32
	next   uint32 // next expected buffer offset
	end    uint32
	dataSN uint32
}

type task struct {
	sess *session
	conn *conn

	// From the SCSI Command PDU.
	itt       uint32
	cmdSN     uint32
	lunField  uint64
	attr      uint8
	read      bool
	write     bool
	immediate bool
	edtl      uint32 // expected data transfer length (write, or read if !write)
	readEDTL  uint32 // expected read length (bidirectional AHS or edtl)
	cdb       [maxCDBLen]byte
	cdbLen    int

	lun  *lunEntry // nil: LUN not mapped
	info cdbInfo

	// Data buffer: data-out lands here, data-in is built here.
	bufp    *[]byte
	buf     []byte
	outArea int // buf[:outArea] holds data-out or data-in; the medium area follows

	// Data-out bookkeeping (reader-owned).
	wantOut   uint32 // bytes of data-out the command takes: min(CDB, EDTL)
	unsolEnd  uint32 // end of unsolicited data
	unsolNext uint32
	unsolSN   uint32
	solEnd    uint32 // end of the solicited range
	r2tNext   uint32 // next offset to solicit
	r2tSN     uint32
	r2ts      [maxR2TPerTask]r2tState
	nR2T      int
	r2tSent   uint32
	maxR2T    int
	burst     uint32

	// Guarded by sess.mu.
	delivered  bool
	dataReady  bool
	started    bool
	completed  bool
	counted    bool // holds a CmdSN window slot
	immCounted bool
	inOrder    bool
	ordPrev    *task
	ordNext    *task

	state atomic.Int32

	// dataErr, when set, ends the task with this sense: its data-out broke
	// the sequence rules.
	dataErr senseCode

	// Result.
	status   byte
	senseLen int
	sense    [2 + maxSenseLen]byte // 2-byte SenseLength then sense data
	inLen    int                   // data-in bytes produced (before EDTL)
	outWant  uint32                // data-out bytes the CDB asked for
}

type taskPool struct{ p sync.Pool }

func (tp *taskPool) get() *task {
	if v := tp.p.Get(); v != nil {
		return v.(*task)
	}
	return new(task)
}

func (tp *taskPool) put(t *task) {
	*t = task{}
	tp.p.Put(t)
}

// abort moves an active task to an aborted state; s.mu held. It returns
// false if the task's response was already taken by the writer (or it was
// aborted before).
func (t *task) abort(tas bool) bool {
	to := int32(taskAborted)
	if tas {
		to = taskAbortedTAS
	}
	return t.state.CompareAndSwap(taskActive, to)
}

// completeLocked removes the task from its session and frees its window
// slot; s.mu held.
func (t *task) completeLocked() {
	s := t.sess
	if t.completed {
		return
	}
	t.completed = true
	if s.tasks[t.itt] == t {
		delete(s.tasks, t.itt)
	}
	if t.counted {
		t.counted = false
		s.inflight--
		s.updateSN()
	}
	if t.immCounted {
		t.immCounted = false
		s.immInflight--
	}
	s.orderRemove(t)
	s.broadcast()
}

func (t *task) complete() {
	t.sess.mu.Lock()
	t.completeLocked()
	t.sess.mu.Unlock()
}

// recycle returns the buffer and the task to their pools after the writer
// sent the response. Aborted tasks are left to the garbage collector: a TMF
// may still hold them, and a reader may still be filling their buffer.
func (t *task) recycle(pooled bool) {
	c := t.conn
	if pooled {
		c.t.bufs.put(t.bufp)
		c.t.tasks.put(t)
	}
	c.taskWG.Done()
}

// setBuffer gives the task a pooled buffer of n bytes.
func (t *task) setBuffer(n int) {
	if n == 0 {
		t.bufp, t.buf = nil, nil
		return
	}
	t.bufp = t.conn.t.bufs.get(n)
	t.buf = *t.bufp
}

// run executes the task once its data is in and ordering allows.
func (t *task) run() {
	c := t.conn
	if t.sess.waitOrder(t) {
		c.t.execute(t)
	}
	if t.state.Load() == taskAborted {
		t.endAborted()
		return
	}
	c.queueTask(t) // the writer sends TASK ABORTED for an abortedTAS task
}

// endAborted finishes a silently aborted task.
func (t *task) endAborted() {
	t.complete()
	t.conn.taskWG.Done()
}

// medium is the buffer area for reading the medium (verify, ORWRITE).
func (t *task) medium() []byte { return t.buf[t.outArea : t.outArea+t.info.medium] }

// dataOut is the data-out the command takes.
func (t *task) dataOut() []byte { return t.buf[:t.wantOut] }

// dataIn copies response data into the buffer, truncated to the
// allocation length alloc and the buffer.
func (t *task) dataIn(full []byte, alloc int) {
	n := min(len(full), alloc, len(t.buf))
	copy(t.buf, full[:n])
	t.inLen = n
}

// maybeStart starts the task if it is delivered and its data is in; s.mu
// held.
func (t *task) maybeStartLocked() {
	if t.started || t.completed || !t.delivered || !t.dataReady {
		return
	}
	t.started = true
	t.sess.dispatch(t)
}
