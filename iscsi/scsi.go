package iscsi

// Command execution: the checks SAM-5 puts before a command runs (logical
// unit, unit attention, reservation conflict, CDB errors), then the
// command itself (spc.go, sbc.go, pr.go).

// execute runs a task's SCSI command and leaves status, sense and data-in
// in the task.
func (tg *Target) execute(t *task) {
	t.status = statusGood
	t.senseLen = 0
	t.inLen = 0
	op := t.info.op
	e := t.lun
	if t.dataErr != (senseCode{}) {
		t.fail(t.dataErr)
		return
	}
	if e == nil {
		// Not a LUN of this initiator: only INQUIRY, REPORT LUNS and
		// REQUEST SENSE answer (SPC-4 §4.?: "LUN 0 shall answer").
		if op != nil && op.flags&opNoLUN != 0 && !t.info.hasErr {
			op.exec(t)
			return
		}
		if t.info.hasErr && t.info.err != scLUNotSupported {
			t.check(t.info.err, t.info.errX)
			return
		}
		t.fail(scLUNotSupported)
		return
	}
	if op == nil || op.flags&opNoUA == 0 {
		if e.ns.uaN.Load() > 0 {
			if sc, ok := e.lu.popUA(e.ns); ok {
				t.fail(sc)
				return
			}
		}
	}
	if op != nil && e.lu.reserved.Load() && e.lu.conflicts(t.sess.nexus, op, t.cdb[:]) {
		t.conflict()
		return
	}
	if t.info.hasErr {
		t.check(t.info.err, t.info.errX)
		return
	}
	if op.flags&opWrite != 0 && e.lu.swp.Load() {
		t.fail(scSoftwareWP)
		return
	}
	op.exec(t)
}
