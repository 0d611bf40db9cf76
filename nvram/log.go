package nvram

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
)

// Log appends records to the log region. Its methods are safe for concurrent
// use.
type Log struct {
	c     *config
	stage []byte // sealed records waiting for the committer; a ring

	kick   chan struct{} // an appender sealed a record (buffered, 1)
	stop   chan struct{} // closed by Close
	exited chan struct{} // closed when the committer returns

	slots sync.Pool // *slot

	// Owned by the committer goroutine.
	batch   []*slot
	extents []extent

	mu      sync.Mutex
	head    Position // released: space before it may be overwritten
	tail    Position // where the next record goes
	durable uint64   // highest durable seq
	pending []*slot  // reserved, not yet completed, in seq order
	waiters []*waiter
	stTail  int64 // stage ring: next free byte
	stUsed  int64 // stage bytes in use from the oldest pending record to stTail
	err     error // sticky failure (wraps ErrFailed)
	closed  bool
	stats   Stats
}

// slot is one reserved record, from reservation to completion.
type slot struct {
	seq       uint64
	off       int64 // region offset of the record
	span      int64
	marker    int64 // region offset of its wrap marker, or -1
	stage     int64 // stage offset of the record (the marker, if any, is just before it)
	stageNeed int64 // stage bytes taken, including a skipped tail
	durable   uint64
	payload   []byte
	end       Position
	sealed    atomic.Bool
	err       error
	done      chan struct{} // buffered, 1: the committer signals completion
	nonce     [nonceLen]byte
}

// waiter is an Append waiting for space.
type waiter struct {
	ch    chan struct{}
	woken bool
}

// extent is one WriteAt: region offset, stage offset, length.
type extent struct{ off, stage, n int64 }

// Stats are counters since Open.
type Stats struct {
	Appends      uint64 // records made durable
	Syncs        uint64 // SyncData calls, one per batch
	WriteCalls   uint64 // WriteAt calls
	PayloadBytes uint64 // payload bytes made durable
	LogBytes     uint64 // region bytes written (headers, tags, padding, markers)
	BatchMax     uint64 // most records in one batch
	// BatchHist[i] counts batches of [2^i, 2^(i+1)) records; the last bucket
	// is open-ended.
	BatchHist  [8]uint64
	SpaceWaits uint64 // Appends that had to wait for space

	Queued    int      // records reserved and not yet completed
	UsedBytes int64    // region bytes between the released position and the tail
	SizeBytes int64    // region size
	Released  Position // oldest position not released
	Next      Position // where the next record goes
	Durable   uint64   // highest durable seq (Next.Seq-1 when idle)
	Err       error    // the sticky failure, if any
}

// Open starts appending at position at, which is the end returned by
// Replay. released is the oldest position whose records are still needed
// (the Replay start, i.e. the caller's checkpoint): the log never overwrites
// the space from released onwards until Release says so. o.Epoch must be
// greater than at.Epoch.
func Open(o Options, released, at Position) (*Log, error) {
	c, err := o.config()
	if err != nil {
		return nil, fmt.Errorf("nvram: open: %w", err)
	}
	if err := c.checkPos(released); err != nil {
		return nil, fmt.Errorf("nvram: open: released: %w", err)
	}
	if err := c.checkPos(at); err != nil {
		return nil, fmt.Errorf("nvram: open: at: %w", err)
	}
	if released.Seq > at.Seq || released.Epoch > at.Epoch || (released.Seq == at.Seq && released.Off != at.Off) {
		return nil, fmt.Errorf("nvram: open: %w: released %+v is after %+v", ErrInvalid, released, at)
	}
	if c.epoch == 0 || c.epoch <= at.Epoch {
		return nil, fmt.Errorf("nvram: open: %w: epoch %d, log holds epoch %d", ErrEpoch, c.epoch, at.Epoch)
	}
	l := &Log{
		c:       c,
		stage:   make([]byte, c.stageBytes),
		kick:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
		exited:  make(chan struct{}),
		head:    released,
		tail:    at,
		durable: at.Seq - 1,
	}
	l.slots.New = func() any { return &slot{done: make(chan struct{}, 1)} }
	go l.commitLoop()
	return l, nil
}

// Append seals payload into the next record and returns once it is durable,
// with its seq and the position after it (pass that to Release once the
// record is flushed and checkpointed). ctx bounds only the wait for space:
// once the record has a seq, Append waits for the write. The payload must not
// be modified until Append returns; OnDurable receives this very slice.
func (l *Log) Append(ctx context.Context, payload []byte) (uint64, Position, error) {
	if len(payload) > l.c.maxPayload {
		return 0, Position{}, fmt.Errorf("%w: %d bytes, limit %d", ErrTooLarge, len(payload), l.c.maxPayload)
	}
	if err := ctx.Err(); err != nil {
		return 0, Position{}, fmt.Errorf("nvram: append: %w", err)
	}
	s := l.slots.Get().(*slot)
	s.payload = payload
	l.mu.Lock()
	if err := l.reserveLocked(ctx, s); err != nil {
		l.mu.Unlock()
		s.payload = nil
		l.slots.Put(s)
		return 0, Position{}, err
	}
	l.mu.Unlock()

	l.seal(s)
	s.sealed.Store(true)
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-s.done

	seq, end, err := s.seq, s.end, s.err
	s.payload, s.err = nil, nil
	s.sealed.Store(false)
	l.slots.Put(s)
	if err != nil {
		return 0, Position{}, err
	}
	return seq, end, nil
}

// seal encodes s (and its wrap marker) into the stage.
func (l *Log) seal(s *slot) {
	h := header{kind: kindData, epoch: l.c.epoch, seq: s.seq, off: s.off, durable: s.durable}
	if s.marker >= 0 {
		m := h
		m.kind, m.off = kindWrap, s.marker
		sealRecord(l.c.aead, l.stage[s.stage-minSpan:s.stage], m, nil, &s.nonce)
	}
	sealRecord(l.c.aead, l.stage[s.stage:s.stage+s.span], h, s.payload, &s.nonce)
}

// reserveLocked gives s a seq, a region offset and stage space, waiting for
// space first come first served. l.mu is held; it is released while waiting.
func (l *Log) reserveLocked(ctx context.Context, s *slot) error {
	if err := l.refuseLocked(); err != nil {
		return err
	}
	if len(l.waiters) == 0 && l.tryReserveLocked(s) {
		return nil
	}
	w := &waiter{ch: make(chan struct{})}
	l.waiters = append(l.waiters, w)
	l.stats.SpaceWaits++
	for {
		l.mu.Unlock()
		select {
		case <-w.ch:
		case <-ctx.Done():
		}
		l.mu.Lock()
		err := l.refuseLocked()
		if err == nil && ctx.Err() != nil {
			err = fmt.Errorf("nvram: append: waiting for space: %w", ctx.Err())
		}
		if err != nil {
			l.removeWaiterLocked(w)
			return err
		}
		if l.waiters[0] == w && l.tryReserveLocked(s) {
			l.removeWaiterLocked(w) // wakes the next waiter, which may fit too
			return nil
		}
		if w.woken {
			w.ch, w.woken = make(chan struct{}), false
		}
	}
}

func (l *Log) refuseLocked() error {
	if l.err != nil {
		return l.err
	}
	if l.closed {
		return ErrClosed
	}
	if l.tail.Seq >= seqLimit-1 {
		return fmt.Errorf("%w: seq space exhausted", ErrInvalid) // 2^63 records
	}
	return nil
}

func (l *Log) removeWaiterLocked(w *waiter) {
	for i, x := range l.waiters {
		if x == w {
			l.waiters = append(l.waiters[:i], l.waiters[i+1:]...)
			break
		}
	}
	l.wakeHeadLocked()
}

// wakeHeadLocked lets the first waiter re-check for space.
func (l *Log) wakeHeadLocked() {
	if len(l.waiters) > 0 && !l.waiters[0].woken {
		l.waiters[0].woken = true
		close(l.waiters[0].ch)
	}
}

func (l *Log) wakeAllLocked() {
	for _, w := range l.waiters {
		if !w.woken {
			w.woken = true
			close(w.ch)
		}
	}
}

// tryReserveLocked reserves s if both the region and the stage have room.
func (l *Log) tryReserveLocked(s *slot) bool {
	size := l.c.size
	span := spanOf(len(s.payload))
	t := l.tail.Off
	off, marker, need := t, int64(-1), span
	if t+span > size {
		off, need = 0, size-t+span
		if size-t >= minSpan {
			marker = t
		}
	}
	if l.c.dist(l.head, l.tail)+need > size {
		return false
	}
	stNeed := span
	if marker >= 0 {
		stNeed += minSpan
	}
	if l.stUsed == 0 {
		l.stTail = 0
	}
	st, stTake := l.stTail, stNeed
	if st+stNeed > int64(len(l.stage)) {
		st, stTake = 0, int64(len(l.stage))-l.stTail+stNeed
	}
	if l.stUsed+stTake > int64(len(l.stage)) {
		return false
	}
	l.stTail = st + stNeed
	l.stUsed += stTake

	s.seq = l.tail.Seq
	s.off, s.span, s.marker = off, span, marker
	s.stage, s.stageNeed = st, stTake
	if marker >= 0 {
		s.stage += minSpan
	}
	s.durable = l.durable
	l.tail = Position{Seq: s.seq + 1, Off: off + span, Epoch: l.c.epoch}
	s.end = l.tail
	l.pending = append(l.pending, s)
	return true
}

// Release declares that every record before p has been flushed and that a
// checkpoint at or after p is durable: the space before p may be
// overwritten. p must be a position returned by Append or Replay (or the
// released position given to Open). Releasing an older position than an
// earlier Release is a no-op.
func (l *Log) Release(p Position) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.c.checkPos(p); err != nil {
		return fmt.Errorf("nvram: release: %w", err)
	}
	if p.Seq <= l.head.Seq {
		return nil
	}
	if p.Seq > l.durable+1 || l.c.dist(l.head, p) > l.c.dist(l.head, l.tail) {
		return fmt.Errorf("nvram: release: %w: %+v is not between %+v and durable seq %d", ErrInvalid, p, l.head, l.durable)
	}
	l.head = p
	l.wakeHeadLocked()
	return nil
}

// Stats returns a snapshot of the counters.
func (l *Log) Stats() Stats {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.stats
	s.Queued = len(l.pending)
	s.UsedBytes = l.c.dist(l.head, l.tail)
	s.SizeBytes = l.c.size
	s.Released, s.Next, s.Durable, s.Err = l.head, l.tail, l.durable, l.err
	return s
}

// MaxPayload is the largest payload Append accepts.
func (l *Log) MaxPayload() int { return l.c.maxPayload }

// Close refuses new appends, waits for the queued ones to complete, and stops
// the committer. It does not close the file. It returns the sticky failure,
// if the log failed.
func (l *Log) Close() error {
	l.mu.Lock()
	if !l.closed {
		l.closed = true
		l.wakeAllLocked()
		close(l.stop)
	}
	l.mu.Unlock()
	<-l.exited
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.err
}

// commitLoop is the committer goroutine.
func (l *Log) commitLoop() {
	defer close(l.exited)
	stopping := false
	for {
		l.mu.Lock()
		n := 0
		for n < len(l.pending) && l.pending[n].sealed.Load() {
			n++
		}
		if n == 0 && stopping && len(l.pending) == 0 {
			l.mu.Unlock()
			return
		}
		l.batch = append(l.batch[:0], l.pending[:n]...)
		failed := l.err
		l.mu.Unlock()

		if n == 0 {
			if stopping {
				<-l.kick
			} else {
				select {
				case <-l.kick:
				case <-l.stop:
					stopping = true
				}
			}
			continue
		}
		l.commit(failed)
		// The appenders just woken usually append again at once: let them
		// seal before the next batch is cut, so that they share its sync
		// instead of waiting a whole extra sync.
		runtime.Gosched()
	}
}

// commit writes, syncs and completes l.batch.
func (l *Log) commit(failed error) {
	batch := l.batch
	err := failed
	var writes, logBytes int64
	if err == nil {
		writes, logBytes, err = l.write(batch)
	}
	last := batch[len(batch)-1]
	if err == nil {
		// Durable from here: OnDurable's receiver may Release these records.
		l.mu.Lock()
		l.durable = last.seq
		l.mu.Unlock()
		if l.c.onDurable != nil {
			for _, s := range batch {
				l.c.onDurable(s.seq, s.payload, s.end)
			}
		}
	}

	l.mu.Lock()
	// The stage is freed in reservation order, so what stays in use runs
	// from the next pending record to stTail.
	n := copy(l.pending, l.pending[len(batch):])
	clear(l.pending[n:])
	l.pending = l.pending[:n]
	for _, s := range batch {
		l.stUsed -= s.stageNeed
	}
	if err == nil {
		st := &l.stats
		st.Appends += uint64(len(batch))
		st.Syncs++
		st.WriteCalls += uint64(writes)
		st.LogBytes += uint64(logBytes)
		for _, s := range batch {
			st.PayloadBytes += uint64(len(s.payload))
		}
		st.BatchMax = max(st.BatchMax, uint64(len(batch)))
		b := 0
		for k := len(batch); k > 1 && b < len(st.BatchHist)-1; k >>= 1 {
			b++
		}
		st.BatchHist[b]++
		l.wakeHeadLocked()
	} else if l.err == nil {
		l.err = fmt.Errorf("%w: %w", ErrFailed, err)
		l.wakeAllLocked()
	}
	err = l.err
	l.mu.Unlock()

	for i, s := range batch {
		s.err = err
		batch[i] = nil
		s.done <- struct{}{}
	}
}

// write writes the batch's records with as few WriteAt calls as the layout
// allows, then syncs once.
func (l *Log) write(batch []*slot) (writes, bytes int64, err error) {
	ext := l.extents[:0]
	add := func(off, st, n int64) {
		if k := len(ext) - 1; k >= 0 && ext[k].off+ext[k].n == off && ext[k].stage+ext[k].n == st {
			ext[k].n += n
			return
		}
		ext = append(ext, extent{off: off, stage: st, n: n})
	}
	for _, s := range batch {
		if s.marker >= 0 {
			add(s.marker, s.stage-minSpan, minSpan)
		}
		add(s.off, s.stage, s.span)
	}
	l.extents = ext
	for _, e := range ext {
		n, err := l.c.file.WriteAt(l.stage[e.stage:e.stage+e.n], l.c.base+e.off)
		writes++
		bytes += int64(n)
		if err == nil && int64(n) != e.n {
			err = fmt.Errorf("short write: %d of %d bytes", n, e.n)
		}
		if err != nil {
			return writes, bytes, fmt.Errorf("nvram: write at region offset %d: %w", e.off, err)
		}
	}
	if err := l.c.file.SyncData(); err != nil {
		return writes, bytes, fmt.Errorf("nvram: sync: %w", err)
	}
	return writes, bytes, nil
}
