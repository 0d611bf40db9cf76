package iscsi

// Reservations: SPC-4 persistent reservations (PERSISTENT RESERVE IN/OUT)
// and SPC-2 RESERVE(6)/RELEASE(6). State lives in the logical unit, shared
// by all sessions, in memory (APTPL is not supported: nothing persists
// across a target restart). One target port exists, so an I_T nexus is
// identified by the initiator port name alone.

import (
	"encoding/binary"
	"slices"
)

// Persistent reservation types.
const (
	prWE   = 0x1 // write exclusive
	prEA   = 0x3 // exclusive access
	prWERO = 0x5 // write exclusive, registrants only
	prEARO = 0x6 // exclusive access, registrants only
	prWEAR = 0x7 // write exclusive, all registrants
	prEAAR = 0x8 // exclusive access, all registrants
)

// PERSISTENT RESERVE OUT service actions.
const (
	proRegister       = 0x0
	proReserve        = 0x1
	proRelease        = 0x2
	proClear          = 0x3
	proPreempt        = 0x4
	proPreemptAbort   = 0x5
	proRegisterIgnore = 0x6
)

type prReg struct {
	nexus string
	key   uint64
}

type prState struct {
	gen    uint32
	regs   []prReg // registration order
	holder string  // for types other than all-registrants
	typ    byte    // 0: no persistent reservation
}

func validPRType(t byte) bool {
	switch t {
	case prWE, prEA, prWERO, prEARO, prWEAR, prEAAR:
		return true
	}
	return false
}

func allRegistrants(t byte) bool { return t == prWEAR || t == prEAAR }

func (p *prState) find(nexus string) int {
	for i, r := range p.regs {
		if r.nexus == nexus {
			return i
		}
	}
	return -1
}

func (p *prState) registered(nexus string) bool { return p.find(nexus) >= 0 }

func (p *prState) isHolder(nexus string) bool {
	if p.typ == 0 {
		return false
	}
	if allRegistrants(p.typ) {
		return p.registered(nexus)
	}
	return p.holder == nexus
}

// conflicts reports whether a command from nexus conflicts with the
// reservations held (SPC-4 tables 44 and 61, SPC-2 §5.5.1).
func (lu *logicalUnit) conflicts(nexus string, op *opDesc, cdb []byte) bool {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.spc2 != "" && lu.spc2 != nexus {
		return op.flags&opSPC2OK == 0
	}
	p := &lu.pr
	if p.typ == 0 || op.flags&opPRAlways != 0 || p.isHolder(nexus) {
		return false
	}
	write := op.flags&opPRRead == 0
	if op.code == 0x1e && cdb[4]&0x03 == 0 {
		write = false // PREVENT ALLOW with PREVENT=0 is always allowed
	}
	switch p.typ {
	case prWE:
		return write
	case prEA:
		return true
	case prWERO, prWEAR:
		return write && !p.registered(nexus)
	case prEARO, prEAAR:
		return !p.registered(nexus)
	}
	return false
}

// execPRIn handles PERSISTENT RESERVE IN.
func execPRIn(t *task) {
	lu := t.lun.lu
	sa := t.cdb[1] & 0x1f
	out := make([]byte, 0, 64)
	lu.mu.Lock()
	p := &lu.pr
	switch sa {
	case 0: // READ KEYS
		out = binary.BigEndian.AppendUint32(out, p.gen)
		out = binary.BigEndian.AppendUint32(out, uint32(8*len(p.regs)))
		for _, r := range p.regs {
			out = binary.BigEndian.AppendUint64(out, r.key)
		}
	case 1: // READ RESERVATION
		out = binary.BigEndian.AppendUint32(out, p.gen)
		if p.typ == 0 {
			out = binary.BigEndian.AppendUint32(out, 0)
			break
		}
		out = binary.BigEndian.AppendUint32(out, 16)
		var key uint64
		if !allRegistrants(p.typ) {
			if i := p.find(p.holder); i >= 0 {
				key = p.regs[i].key
			}
		}
		out = binary.BigEndian.AppendUint64(out, key)
		out = append(out, 0, 0, 0, 0, 0, p.typ, 0, 0)
	case 2: // REPORT CAPABILITIES
		out = append(out, 0, 8,
			0x10|0x04,                      // CRH, ATP_C
			0x80,                           // TMV; ALLOW COMMANDS 000b
			0x80|0x40|0x20|0x08|0x02, 0x01, // type mask
			0, 0)
	case 3: // READ FULL STATUS
		out = binary.BigEndian.AppendUint32(out, p.gen)
		out = append(out, 0, 0, 0, 0) // length, filled below
		for _, r := range p.regs {
			tid := transportID(r.nexus)
			if len(out)+24+len(tid) > maxParamData {
				break
			}
			out = binary.BigEndian.AppendUint64(out, r.key)
			out = append(out, 0, 0, 0, 0)
			flags := byte(0x02) // ALL_TG_PT: there is one target port
			var scopeType byte
			if p.isHolder(r.nexus) {
				flags |= 0x01
				scopeType = p.typ
			}
			out = append(out, flags, scopeType, 0, 0, 0, 0)
			out = binary.BigEndian.AppendUint16(out, 1) // relative target port
			out = binary.BigEndian.AppendUint32(out, uint32(len(tid)))
			out = append(out, tid...)
		}
		binary.BigEndian.PutUint32(out[4:8], uint32(len(out)-8))
	default:
		lu.mu.Unlock()
		t.badCDB(1, 4)
		return
	}
	lu.mu.Unlock()
	t.dataIn(out, int(binary.BigEndian.Uint16(t.cdb[7:9])))
}

// transportID encodes an iSCSI initiator port TransportID (SPC-4 §7.6.4.6,
// format 01b: name and ISID).
func transportID(nexus string) []byte {
	n := len(nexus) + 1
	n = (n + 3) &^ 3
	if n < 20 {
		n = 20
	}
	b := make([]byte, 4+n)
	b[0] = 0x40 | 0x05
	binary.BigEndian.PutUint16(b[2:4], uint16(n))
	copy(b[4:], nexus)
	return b
}

// execPROut handles PERSISTENT RESERVE OUT.
func execPROut(t *task) {
	cdb := t.cdb[:]
	sa := cdb[1] & 0x1f
	scope := cdb[2] >> 4
	typ := cdb[2] & 0x0f
	plen := binary.BigEndian.Uint32(cdb[5:9])
	if sa > proRegisterIgnore {
		t.badCDB(1, 4)
		return
	}
	if plen != 24 {
		t.fail(scParamLen)
		return
	}
	data := t.buf[:t.wantOut]
	if len(data) < 24 {
		t.fail(scParamLen)
		return
	}
	key := binary.BigEndian.Uint64(data[0:8])
	sakey := binary.BigEndian.Uint64(data[8:16])
	flags := data[20]
	if flags&0x08 != 0 { // SPEC_I_PT
		t.badParam(20, 3)
		return
	}
	if flags&0x01 != 0 { // APTPL: not supported
		t.badParam(20, 0)
		return
	}
	switch sa {
	case proReserve, proRelease, proPreempt, proPreemptAbort:
		if scope != 0 {
			t.badCDB(2, 7)
			return
		}
		if !validPRType(typ) {
			t.badCDB(2, 3)
			return
		}
	}

	lu := t.lun.lu
	me := t.sess.nexus
	var preempted []string
	lu.mu.Lock()
	p := &lu.pr
	i := p.find(me)
	myKey := uint64(0)
	if i >= 0 {
		myKey = p.regs[i].key
	}
	status := statusGood
	switch sa {
	case proRegister, proRegisterIgnore:
		if sa == proRegister && ((i < 0 && key != 0) || (i >= 0 && key != myKey)) {
			status = statusResvConflict
			break
		}
		switch {
		case sakey == 0 && i >= 0:
			lu.unregisterLocked(me)
			p.gen++
		case sakey == 0:
			// Nothing registered, nothing to do.
		case i >= 0:
			p.regs[i].key = sakey
			p.gen++
		default:
			if len(p.regs) >= maxRegistrations {
				lu.mu.Unlock()
				t.fail(scInsufficientRegRes)
				return
			}
			p.regs = append(p.regs, prReg{nexus: me, key: sakey})
			p.gen++
		}
	case proReserve:
		if i < 0 || key != myKey {
			status = statusResvConflict
			break
		}
		if p.typ == 0 {
			p.typ, p.holder = typ, me
			break
		}
		if !p.isHolder(me) || p.typ != typ {
			status = statusResvConflict
		}
	case proRelease:
		if i < 0 || key != myKey {
			status = statusResvConflict
			break
		}
		if p.typ == 0 || !p.isHolder(me) {
			break
		}
		if p.typ != typ {
			lu.mu.Unlock()
			t.fail(scInvalidReleasePR)
			return
		}
		old := p.typ
		p.typ, p.holder = 0, ""
		if old != prWE && old != prEA {
			for _, r := range p.regs {
				if r.nexus != me {
					lu.uaNexusLocked(r.nexus, uaReservationsRelease)
				}
			}
		}
	case proClear:
		if i < 0 || key != myKey {
			status = statusResvConflict
			break
		}
		for _, r := range p.regs {
			if r.nexus != me {
				lu.uaNexusLocked(r.nexus, uaReservationsPreempt)
			}
		}
		p.regs = p.regs[:0]
		p.typ, p.holder = 0, ""
		p.gen++
	case proPreempt, proPreemptAbort:
		if i < 0 || key != myKey {
			status = statusResvConflict
			break
		}
		var ok bool
		preempted, ok = lu.preemptLocked(me, sakey, typ)
		if !ok {
			if sakey == 0 && !(p.typ != 0 && allRegistrants(p.typ)) {
				lu.mu.Unlock()
				t.badParam(8, -1)
				return
			}
			status = statusResvConflict
		}
	}
	lu.updateReserved()
	lu.mu.Unlock()
	if status == statusResvConflict {
		t.conflict()
		return
	}
	if sa == proPreemptAbort && len(preempted) > 0 {
		waitAll(t.conn.t.abortNexusTasks(lu, preempted))
	}
}

// preemptLocked implements PREEMPT (SPC-4 §5.13.11.4). It returns the
// nexuses whose registrations were removed and whether anything matched.
func (lu *logicalUnit) preemptLocked(me string, sakey uint64, typ byte) ([]string, bool) {
	p := &lu.pr
	var removed []string
	removeKey := func(match func(prReg) bool) {
		p.regs = slices.DeleteFunc(p.regs, func(r prReg) bool {
			if r.nexus != me && match(r) {
				removed = append(removed, r.nexus)
				return true
			}
			return false
		})
	}
	switch {
	case p.typ != 0 && allRegistrants(p.typ) && sakey == 0:
		removeKey(func(prReg) bool { return true })
		p.typ, p.holder = typ, me
	case p.typ != 0 && !allRegistrants(p.typ) && p.holderKey() == sakey:
		removeKey(func(r prReg) bool { return r.key == sakey })
		p.typ, p.holder = typ, me
	default:
		if sakey == 0 {
			return nil, false
		}
		removeKey(func(r prReg) bool { return r.key == sakey })
		if len(removed) == 0 {
			return nil, false
		}
	}
	for _, n := range removed {
		lu.uaNexusLocked(n, uaRegistrationsPreemp)
	}
	p.gen++
	return removed, true
}

func (p *prState) holderKey() uint64 {
	if i := p.find(p.holder); i >= 0 {
		return p.regs[i].key
	}
	return 0
}

// unregisterLocked removes a registration and, if it held the reservation,
// releases it as SPC-4 §5.13.11.2.3 says.
func (lu *logicalUnit) unregisterLocked(nexus string) {
	p := &lu.pr
	i := p.find(nexus)
	if i < 0 {
		return
	}
	p.regs = slices.Delete(p.regs, i, i+1)
	if p.typ == 0 {
		return
	}
	if allRegistrants(p.typ) {
		if len(p.regs) == 0 {
			p.typ, p.holder = 0, ""
		}
		return
	}
	if p.holder == nexus {
		old := p.typ
		p.typ, p.holder = 0, ""
		if old == prWERO || old == prEARO {
			for _, r := range p.regs {
				lu.uaNexusLocked(r.nexus, uaReservationsRelease)
			}
		}
	}
}

// uaNexusLocked queues a unit attention for a nexus by name, creating its
// state if it is not logged in; lu.mu held.
func (lu *logicalUnit) uaNexusLocked(nexus string, sc senseCode) {
	ns := lu.nexus[nexus]
	if ns == nil {
		ns = &nexusState{id: nexus}
		lu.nexus[nexus] = ns
	}
	lu.addUALocked(ns, sc)
}

// abortNexusTasks aborts, with TASK ABORTED status, the tasks the given
// nexuses have on lu (PREEMPT AND ABORT).
func (t *Target) abortNexusTasks(lu *logicalUnit, nexuses []string) []*task {
	t.mu.Lock()
	var sessions []*session
	for _, s := range t.sessions {
		if slices.Contains(nexuses, s.nexus) {
			sessions = append(sessions, s)
		}
	}
	t.mu.Unlock()
	var out []*task
	for _, s := range sessions {
		out = append(out, s.abortTasks(func(x *task) bool { return x.lun != nil && x.lun.lu == lu }, true)...)
	}
	return out
}

// execReserve6 handles RESERVE(6).
func execReserve6(t *task) {
	if t.cdb[1]&0x1f != 0 {
		t.badCDB(1, 4)
		return
	}
	lu := t.lun.lu
	me := t.sess.nexus
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if len(lu.pr.regs) > 0 && !lu.pr.isHolder(me) {
		t.conflict()
		return
	}
	if lu.pr.typ != 0 {
		return // holder of a persistent reservation: no effect
	}
	if lu.spc2 != "" && lu.spc2 != me {
		t.conflict()
		return
	}
	lu.spc2 = me
	lu.updateReserved()
}

// execRelease6 handles RELEASE(6).
func execRelease6(t *task) {
	if t.cdb[1]&0x1f != 0 {
		t.badCDB(1, 4)
		return
	}
	lu := t.lun.lu
	me := t.sess.nexus
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if lu.pr.typ != 0 && !lu.pr.isHolder(me) {
		t.conflict()
		return
	}
	if lu.spc2 == me {
		lu.spc2 = ""
		lu.updateReserved()
	}
}
