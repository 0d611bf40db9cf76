package iscsi

import (
	"sync"
	"sync/atomic"

	"vfa/array"
)

// logicalUnit is the state one volume (keyed by serial) has in the target,
// shared by every session that maps it: unit attentions per I_T nexus,
// reservations, and mode settings.
type logicalUnit struct {
	t      *Target
	serial string
	dev    atomic.Pointer[devRef]

	// reserved is set while any reservation (SPC-2 or persistent) is held,
	// so the per-command check costs one atomic load otherwise.
	reserved atomic.Bool
	dsense   atomic.Bool // control mode page D_SENSE
	swp      atomic.Bool // control mode page SWP: software write protect

	mu      sync.Mutex
	nexus   map[string]*nexusState
	sectors uint64 // capacity last reported
	spc2    string // I_T nexus holding a RESERVE(6), "" if none
	pr      prState
}

type devRef struct{ dev array.BlockDevice }

// nexusState is one I_T nexus's view of a logical unit.
type nexusState struct {
	id   string
	uaN  atomic.Int32 // pending unit attentions (fast check)
	ua   []senseCode  // guarded by lu.mu
	refs int          // sessions attached, guarded by lu.mu
	// copies are the EXTENDED COPY list identifiers in use or holding
	// status (xcopy.go), guarded by lu.mu; at most 256.
	copies map[byte]*copyRecord
}

func newLogicalUnit(t *Target, serial string, sectors uint64) *logicalUnit {
	return &logicalUnit{
		t:       t,
		serial:  serial,
		nexus:   make(map[string]*nexusState),
		sectors: sectors,
	}
}

// attach registers a session of the nexus and gives it the POWER ON, RESET
// unit attention a new I_T nexus sees first.
func (lu *logicalUnit) attach(nexus string) *nexusState {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns := lu.nexus[nexus]
	if ns == nil {
		ns = &nexusState{id: nexus}
		lu.nexus[nexus] = ns
	}
	ns.refs++
	ns.ua = append(ns.ua[:0], uaPowerOn)
	ns.uaN.Store(1)
	return ns
}

// detach drops a session of the nexus. On I_T nexus loss an SPC-2
// reservation it holds is released.
func (lu *logicalUnit) detach(ns *nexusState, nexusLoss bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	ns.refs--
	if nexusLoss || ns.refs <= 0 {
		ns.copies = nil // held copy status goes with the I_T nexus
	}
	if nexusLoss && lu.spc2 == ns.id {
		lu.spc2 = ""
		lu.updateReserved()
	}
	if ns.refs <= 0 && !lu.pr.registered(ns.id) {
		delete(lu.nexus, ns.id)
	}
}

// addUA queues a unit attention for one nexus; lu.mu not held.
func (lu *logicalUnit) addUA(ns *nexusState, sc senseCode) {
	lu.mu.Lock()
	lu.addUALocked(ns, sc)
	lu.mu.Unlock()
}

func (lu *logicalUnit) addUALocked(ns *nexusState, sc senseCode) {
	for _, u := range ns.ua {
		if u == sc {
			return
		}
	}
	if sc.asc == 0x29 {
		// A reset supersedes every older condition.
		ns.ua = ns.ua[:0]
	}
	if len(ns.ua) >= maxUnitAttentions {
		// Keep the oldest; the newest is reported as the reset class
		// would be: drop the second oldest to make room.
		ns.ua = append(ns.ua[:1], ns.ua[2:]...)
	}
	ns.ua = append(ns.ua, sc)
	ns.uaN.Store(int32(len(ns.ua)))
}

// addUAAll queues a unit attention for every nexus but except (nil: all);
// lu.mu held.
func (lu *logicalUnit) addUAAllLocked(except string, sc senseCode) {
	for id, ns := range lu.nexus {
		if id != except {
			lu.addUALocked(ns, sc)
		}
	}
}

// popUA takes the oldest unit attention of the nexus.
func (lu *logicalUnit) popUA(ns *nexusState) (senseCode, bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if len(ns.ua) == 0 {
		return senseCode{}, false
	}
	sc := ns.ua[0]
	ns.ua = append(ns.ua[:0], ns.ua[1:]...)
	ns.uaN.Store(int32(len(ns.ua)))
	return sc, true
}

// reset is a logical unit reset: SPC-2 reservations and held copy status
// go, persistent reservations stay, and every nexus gets a unit attention.
func (lu *logicalUnit) reset(sc senseCode) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	for _, ns := range lu.nexus {
		ns.copies = nil
	}
	lu.spc2 = ""
	lu.updateReserved()
	lu.addUAAllLocked("", sc)
}

// checkCapacity raises CAPACITY DATA HAS CHANGED when the size changed.
func (lu *logicalUnit) checkCapacity() {
	ref := lu.dev.Load()
	if ref == nil {
		return
	}
	n := ref.dev.Sectors()
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if n != lu.sectors {
		lu.sectors = n
		lu.addUAAllLocked("", uaCapacityChanged)
	}
}

// updateReserved refreshes the fast flag; lu.mu held.
func (lu *logicalUnit) updateReserved() {
	lu.reserved.Store(lu.spc2 != "" || lu.pr.typ != 0)
}
