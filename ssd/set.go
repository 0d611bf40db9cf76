package ssd

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/klauspost/reedsolomon"

	"vfa/internal/devsb"
)

// MediaKeySize is the length of a device media key (AES-256).
const MediaKeySize = 32

// auLockStripes is the number of locks that serialise a repair write against
// a WriteSegment claiming the same AU.
const auLockStripes = 64

// member is a device in its slot with its media key schedule.
type member struct {
	dev   *Device
	block cipher.Block
}

// slotState is one slot of a set and its counters.
type slotState struct {
	m           atomic.Pointer[member] // nil: missing
	repaired    atomic.Uint64
	badPages    atomic.Uint64
	readErrors  atomic.Uint64
	writeErrors atomic.Uint64
}

// usable returns the slot's member when it can be read and written.
func (st *slotState) usable() *member {
	m := st.m.Load()
	if m == nil || m.dev.failure.Load() != nil {
		return nil
	}
	return m
}

// Set is the devices of one array, striped with two parity columns. All
// methods are safe for concurrent use, except Close, which must not overlap
// any other call.
type Set struct {
	geo      geometry
	auCount  int
	arrayID  [16]byte
	enc      reedsolomon.Encoder
	slots    []slotState
	auLocks  [auLockStripes]sync.Mutex
	auOwner  []atomic.Uint64 // segment id last claimed per AU since NewSet; 0 = unknown
	auNext   []int           // per AU: first row the owner has not written; guarded by auLocks
	closed   atomic.Bool
	mu       sync.Mutex // guards retired
	retired  []*Device  // failed devices replaced by Attach; closed by Close
	readBufs sync.Pool  // *readBuf
	rowBufs  sync.Pool  // *rowBuf
	segBufs  sync.Pool  // *segBuf

	degradedReads atomic.Uint64
	unrecoverable atomic.Uint64
	segments      atomic.Uint64
}

// NewSet builds a set from its devices, indexed by slot (nil = missing), and
// their media keys (MediaKeySize bytes each; ignored for missing devices).
// Every present device must come from the same array (ErrForeign), agree on
// the device count (= len(devs)) and AU size, and sit at the index of its
// slot (ErrMismatch). With more than two devices missing or failed NewSet
// fails with ErrTooManyFailed naming them. On success the set owns the
// devices and Close closes them; on error the caller still owns them.
func NewSet(devs []*Device, mediaKeys [][]byte) (*Set, error) {
	n := len(devs)
	if n < MinDevices || n > MaxDevices {
		return nil, fmt.Errorf("ssd: new set: %w: %d devices, want %d to %d", ErrMismatch, n, MinDevices, MaxDevices)
	}
	if len(mediaKeys) != n {
		return nil, fmt.Errorf("ssd: new set: %d media keys for %d devices", len(mediaKeys), n)
	}
	// The array is the one most present devices belong to.
	votes := map[[16]byte]int{}
	var arrayID [16]byte
	for _, d := range devs {
		if d == nil {
			continue
		}
		votes[d.arrayID]++
		if votes[d.arrayID] > votes[arrayID] {
			arrayID = d.arrayID
		}
	}
	if len(votes) == 0 {
		return nil, fmt.Errorf("ssd: new set: %w: no device present", ErrTooManyFailed)
	}
	var foreign []string
	for _, d := range devs {
		if d != nil && d.arrayID != arrayID {
			foreign = append(foreign, fmt.Sprintf("%s (array %x)", d.name, d.arrayID))
		}
	}
	if len(foreign) > 0 {
		return nil, fmt.Errorf("ssd: new set: %w: %s (the set's array is %x)", ErrForeign, strings.Join(foreign, ", "), arrayID)
	}
	var auSize, capacity int64
	seenDev := map[[16]byte]string{}
	seenPtr := map[*Device]bool{}
	var unavailable []string
	for i, d := range devs {
		if d == nil {
			unavailable = append(unavailable, fmt.Sprintf("ssd%02d missing", i))
			continue
		}
		switch {
		case d.closed.Load():
			return nil, fmt.Errorf("ssd: new set: %s: %w", d.name, ErrClosed)
		case d.inSet.Load() || seenPtr[d]:
			return nil, fmt.Errorf("ssd: new set: %s: %w", d.name, ErrInUse)
		case d.devices != n:
			return nil, fmt.Errorf("ssd: new set: %w: %s belongs to a set of %d devices, not %d", ErrMismatch, d.name, d.devices, n)
		case d.slot != i:
			return nil, fmt.Errorf("ssd: new set: %w: %s holds slot %d, given as slot %d", ErrMismatch, d.name, d.slot, i)
		case auSize != 0 && d.auSize != auSize:
			return nil, fmt.Errorf("ssd: new set: %w: %s has AU size %d, others %d", ErrMismatch, d.name, d.auSize, auSize)
		case seenDev[d.deviceID] != "":
			return nil, fmt.Errorf("ssd: new set: %w: %s and %s are the same device %x", ErrMismatch, seenDev[d.deviceID], d.name, d.deviceID)
		case len(mediaKeys[i]) != MediaKeySize:
			return nil, fmt.Errorf("ssd: new set: %s: media key is %d bytes, want %d", d.name, len(mediaKeys[i]), MediaKeySize)
		}
		seenPtr[d] = true
		seenDev[d.deviceID] = d.name
		auSize = d.auSize
		if capacity == 0 || d.capacity < capacity {
			capacity = d.capacity
		}
		if err := d.Failed(); err != nil {
			unavailable = append(unavailable, fmt.Sprintf("%s failed (%v)", d.name, err))
		}
	}
	if len(unavailable) > ParityShards {
		return nil, fmt.Errorf("ssd: new set: %w: %d of %d: %s", ErrTooManyFailed, len(unavailable), n, strings.Join(unavailable, ", "))
	}
	geo := newGeometry(n, auSize)
	enc, err := reedsolomon.New(geo.d, ParityShards)
	if err != nil {
		return nil, fmt.Errorf("ssd: new set: %w", err)
	}
	s := &Set{
		geo:     geo,
		auCount: int(capacity/auSize) - 1,
		arrayID: arrayID,
		enc:     enc,
		slots:   make([]slotState, n),
	}
	s.auOwner = make([]atomic.Uint64, s.auCount)
	s.auNext = make([]int, s.auCount)
	for i, d := range devs {
		if d == nil {
			continue
		}
		blk, err := aes.NewCipher(mediaKeys[i])
		if err != nil {
			return nil, fmt.Errorf("ssd: new set: %s: %w", d.name, err)
		}
		s.slots[i].m.Store(&member{dev: d, block: blk})
	}
	for _, d := range devs {
		if d != nil {
			d.inSet.Store(true)
		}
	}
	return s, nil
}

// Width is the number of devices (columns) of the set.
func (s *Set) Width() int { return s.geo.n }

// AUSize is the allocation-unit size in bytes.
func (s *Set) AUSize() int64 { return s.geo.auSize }

// SegmentPayload is the largest segment payload in bytes.
func (s *Set) SegmentPayload() int { return s.geo.segmentPayload() }

// RowPayload is the number of payload bytes in one stripe row.
func (s *Set) RowPayload() int { return s.geo.rowPayload() }

// AUCount is the number of AU indexes a segment can be written at.
func (s *Set) AUCount() int { return s.auCount }

// ArrayID is the id of the array the devices belong to.
func (s *Set) ArrayID() [16]byte { return s.arrayID }

// State says whether a slot's device can be used.
type State uint8

const (
	StateOK State = iota
	StateMissing
	StateFailed
)

func (st State) String() string {
	switch st {
	case StateOK:
		return "ok"
	case StateMissing:
		return "missing"
	case StateFailed:
		return "failed"
	}
	return fmt.Sprintf("state(%d)", uint8(st))
}

// DeviceHealth is one slot as Health reports it. The counters only grow;
// a caller raises an alert when one moves.
type DeviceHealth struct {
	Slot   int
	Name   string // "ssd03"; for a missing device the name its slot implies
	State  State
	Reason string // why the device is failed; empty otherwise

	RepairedPages uint64 // pages rebuilt from parity and rewritten in place
	BadPages      uint64 // pages that failed their check (CRC, stale, misplaced, or disagreeing with parity)
	ReadErrors    uint64 // reads that returned an I/O error or came up short
	WriteErrors   uint64 // writes or syncs that returned an error
}

// Health reports every slot of the set.
func (s *Set) Health() []DeviceHealth {
	out := make([]DeviceHealth, len(s.slots))
	for i := range s.slots {
		st := &s.slots[i]
		h := DeviceHealth{
			Slot: i, Name: fmt.Sprintf("ssd%02d", i), State: StateMissing,
			RepairedPages: st.repaired.Load(), BadPages: st.badPages.Load(),
			ReadErrors: st.readErrors.Load(), WriteErrors: st.writeErrors.Load(),
		}
		if m := st.m.Load(); m != nil {
			h.Name, h.State = m.dev.name, StateOK
			if err := m.dev.Failed(); err != nil {
				h.State, h.Reason = StateFailed, err.Error()
			}
		}
		out[i] = h
	}
	return out
}

// ResetHealth zeroes the error counters of slot: its device was replaced
// and rebuilt, and what the old one (or the rebuild) counted no longer says
// anything about it.
func (s *Set) ResetHealth(slot int) {
	if slot < 0 || slot >= len(s.slots) {
		return
	}
	st := &s.slots[slot]
	st.repaired.Store(0)
	st.badPages.Store(0)
	st.readErrors.Store(0)
	st.writeErrors.Store(0)
}

// Stats are set-wide event counters.
type Stats struct {
	Writes        uint64 // WriteRows (and WriteSegment) calls that returned nil
	DegradedReads uint64 // Read calls that had to rebuild at least one row
	Unrecoverable uint64 // calls that returned ErrUnrecoverable
}

// Stats returns the set's counters.
func (s *Set) Stats() Stats {
	return Stats{
		Writes:        s.segments.Load(),
		DegradedReads: s.degradedReads.Load(),
		Unrecoverable: s.unrecoverable.Load(),
	}
}

// Unavailable is the number of slots whose device is missing or failed.
func (s *Set) Unavailable() int {
	k := 0
	for i := range s.slots {
		if s.slots[i].usable() == nil {
			k++
		}
	}
	return k
}

// Fail marks the device in slot failed (a drill, or the caller's own
// verdict). It is neither read nor written again until replaced with Attach.
func (s *Set) Fail(slot int, reason string) error {
	if slot < 0 || slot >= len(s.slots) {
		return fmt.Errorf("ssd: fail slot %d: %w", slot, ErrRange)
	}
	m := s.slots[slot].m.Load()
	if m == nil {
		return fmt.Errorf("ssd: fail ssd%02d: %w", slot, ErrMissing)
	}
	m.dev.fail(fmt.Errorf("%s: %w: %s", m.dev.name, ErrDeviceFailed, reason))
	return nil
}

// Attach puts dev (with its media key) into slot, which must be missing or
// hold a failed device (that one stays open, unused, until Close, as reads
// already under way may still hold it). dev must belong to the same
// array and have the set's shape. Pages dev does not yet hold fail their
// checks and are rebuilt as they are read; Scrub every live segment to
// rebuild it fully.
func (s *Set) Attach(slot int, dev *Device, mediaKey []byte) error {
	if s.closed.Load() {
		return fmt.Errorf("ssd: attach: %w", ErrClosed)
	}
	if slot < 0 || slot >= len(s.slots) {
		return fmt.Errorf("ssd: attach slot %d: %w", slot, ErrRange)
	}
	switch {
	case dev.closed.Load():
		return fmt.Errorf("ssd: attach %s: %w", dev.name, ErrClosed)
	case dev.arrayID != s.arrayID:
		return fmt.Errorf("ssd: attach %s: %w (array %x, the set's is %x)", dev.name, ErrForeign, dev.arrayID, s.arrayID)
	case dev.devices != s.geo.n || dev.slot != slot || dev.auSize != s.geo.auSize:
		return fmt.Errorf("ssd: attach %s: %w: slot %d of %d, AU size %d; the set wants slot %d of %d, AU size %d",
			dev.name, ErrMismatch, dev.slot, dev.devices, dev.auSize, slot, s.geo.n, s.geo.auSize)
	case dev.capacity < s.geo.auSize*int64(s.auCount+1):
		return fmt.Errorf("ssd: attach %s: %w: capacity %d is smaller than the set's %d AUs", dev.name, ErrMismatch, dev.capacity, s.auCount)
	case len(mediaKey) != MediaKeySize:
		return fmt.Errorf("ssd: attach %s: media key is %d bytes, want %d", dev.name, len(mediaKey), MediaKeySize)
	case dev.Failed() != nil:
		return fmt.Errorf("ssd: attach %s: %w", dev.name, dev.Failed())
	}
	blk, err := aes.NewCipher(mediaKey)
	if err != nil {
		return fmt.Errorf("ssd: attach %s: %w", dev.name, err)
	}
	if !dev.inSet.CompareAndSwap(false, true) {
		return fmt.Errorf("ssd: attach %s: %w", dev.name, ErrInUse)
	}
	st := &s.slots[slot]
	old := st.m.Load()
	if old != nil && old.dev.Failed() == nil {
		dev.inSet.Store(false)
		return fmt.Errorf("ssd: attach %s: slot %d holds healthy %s", dev.name, slot, old.dev.name)
	}
	if !st.m.CompareAndSwap(old, &member{dev: dev, block: blk}) {
		dev.inSet.Store(false)
		return fmt.Errorf("ssd: attach %s: slot %d changed concurrently", dev.name, slot)
	}
	if old != nil {
		s.mu.Lock()
		s.retired = append(s.retired, old.dev)
		s.mu.Unlock()
	}
	return nil
}

// UpdateSuperblock rewrites the superblock of the device in slot durably
// (see Device.UpdateSuperblock); the lead uses it to write key slots during
// key rotation.
func (s *Set) UpdateSuperblock(slot int, fn func(*devsb.Superblock)) error {
	if slot < 0 || slot >= len(s.slots) {
		return fmt.Errorf("ssd: update superblock slot %d: %w", slot, ErrRange)
	}
	m := s.slots[slot].m.Load()
	if m == nil {
		return fmt.Errorf("ssd: update superblock ssd%02d: %w", slot, ErrMissing)
	}
	return m.dev.UpdateSuperblock(fn)
}

// Device returns the device in slot, or nil if it is missing.
func (s *Set) Device(slot int) *Device {
	if slot < 0 || slot >= len(s.slots) {
		return nil
	}
	if m := s.slots[slot].m.Load(); m != nil {
		return m.dev
	}
	return nil
}

// Close closes every device. No other call may run during or after it.
func (s *Set) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	var errs []error
	for i := range s.slots {
		if m := s.slots[i].m.Load(); m != nil {
			errs = append(errs, m.dev.Close())
		}
	}
	s.mu.Lock()
	for _, d := range s.retired {
		errs = append(errs, d.Close())
	}
	s.mu.Unlock()
	return errors.Join(errs...)
}

// markWriteFailed records a write or sync error on slot and fails its device.
func (s *Set) markWriteFailed(slot int, m *member, what string, err error) {
	s.slots[slot].writeErrors.Add(1)
	m.dev.fail(fmt.Errorf("%s: %w: %s: %w", m.dev.name, ErrDeviceFailed, what, err))
}

// claim records that rows [firstRow, firstRow+rows) of segID are being
// written at au, so that no repair for an older segment writes into the AU
// from now on. Rows of segID written (or attempted) before are refused.
func (s *Set) claim(au int, segID uint64, firstRow, rows int) error {
	lk := &s.auLocks[au%auLockStripes]
	lk.Lock()
	defer lk.Unlock()
	if s.auOwner[au].Load() == segID && firstRow < s.auNext[au] {
		return fmt.Errorf("%w: rows below %d already written", ErrRewrite, s.auNext[au])
	}
	s.auOwner[au].Store(segID)
	s.auNext[au] = firstRow + rows
	return nil
}

// checkIO validates the arguments of Read-like calls.
func (s *Set) checkIO(au int, segID uint64, off int64, n int) error {
	if s.closed.Load() {
		return ErrClosed
	}
	if au < 0 || au >= s.auCount || segID == 0 || off < 0 || n < 0 || off+int64(n) > int64(s.geo.segmentPayload()) {
		return ErrRange
	}
	return nil
}
