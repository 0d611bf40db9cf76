package iscsi

// Third-party copy (SPC-4 §5.17, §6.4, §6.18, §7.8.17): EXTENDED COPY(LID1)
// with block-to-block segment descriptors between logical units of this
// target, RECEIVE COPY STATUS(LID1), RECEIVE COPY OPERATING PARAMETERS and
// the Third-party Copy VPD page. This is VMware's VAAI "full copy" (XCOPY):
// the host names the source and destination volumes by their NAA
// designators and the array moves the blocks without them crossing the
// network.
//
// The EXTENDED COPY(LID1) parameter list, as parseXCopy decodes it (all
// integers big-endian):
//
//	header, 16 bytes
//	  0       LIST IDENTIFIER
//	  1       bit 5 STR (ignored), bits 4-3 LIST ID USAGE, bits 2-0 PRIORITY (ignored)
//	  2-3     TARGET DESCRIPTOR LIST LENGTH (bytes)
//	  8-11    SEGMENT DESCRIPTOR LIST LENGTH (bytes)
//	  12-15   INLINE DATA LENGTH (must be 0: no inline data)
//	identification target descriptor (type E4h), 32 bytes each
//	  0       E4h
//	  1       bits 7-6 LU ID TYPE and bit 5 NUL (obsolete in SPC-4, ignored),
//	          bits 4-0 PERIPHERAL DEVICE TYPE (must be 0: block device)
//	  2-3     RELATIVE INITIATOR PORT IDENTIFIER (ignored: one port)
//	  4-23    a designation descriptor: code set, association and type,
//	          length, designator; only a binary 16-byte NAA designator of a
//	          logical unit (as VPD page 83h shows it) names a volume
//	  28      bit 2 PAD (no effect: every block is 512 bytes)
//	  29-31   DISK BLOCK LENGTH (must be 512)
//	block device to block device segment descriptor (type 02h), 28 bytes each
//	  0       02h
//	  1       bit 1 DC, bit 0 CAT (no effect: equal block lengths)
//	  2-3     DESCRIPTOR LENGTH (0018h)
//	  4-5     SOURCE TARGET DESCRIPTOR INDEX
//	  6-7     DESTINATION TARGET DESCRIPTOR INDEX
//	  10-11   BLOCK DEVICE NUMBER OF BLOCKS
//	  12-19   SOURCE BLOCK DEVICE LOGICAL BLOCK ADDRESS
//	  20-27   DESTINATION BLOCK DEVICE LOGICAL BLOCK ADDRESS
//
// Processing: the whole list is checked first (parseXCopy, then every
// segment's copy targets and ranges), so a malformed list copies nothing.
// The copy targets are the logical units the initiator sees: a designator
// of a volume not mapped to it is an unreachable copy target. Segments are
// then copied in order through the BlockDevices, in chunks of at most
// xcopyChunk bytes read from the source and written to the destination.
// Runs the source reports unmapped are unmapped on the destination instead
// (they read as zeros either way; a clone of a thin volume stays thin).
// When the destination range lies above an overlapping source range of the
// same volume the segment is copied from its end, so the result is as if
// every block had been read before any was written.
//
// Errors:
//
//	parameter list length 0                 GOOD, nothing copied
//	list shorter than its lengths say, or
//	  descriptor lists > xcopyMaxDescListLen ILLEGAL REQUEST, 1A/00 PARAMETER LIST LENGTH ERROR
//	more than xcopyMaxTargetDescs targets   ILLEGAL REQUEST, 26/06 TOO MANY TARGET DESCRIPTORS
//	a target descriptor other than E4h      ILLEGAL REQUEST, 26/07 UNSUPPORTED TARGET DESCRIPTOR TYPE CODE
//	more than xcopyMaxSegmentDescs segments ILLEGAL REQUEST, 26/08 TOO MANY SEGMENT DESCRIPTORS
//	a segment descriptor other than 02h     ILLEGAL REQUEST, 26/09 UNSUPPORTED SEGMENT DESCRIPTOR TYPE CODE
//	other bad fields (block length, device
//	  type, LIST ID USAGE, inline data)     ILLEGAL REQUEST, 26/00 INVALID FIELD IN PARAMETER LIST
//	a LIST IDENTIFIER still in use           ILLEGAL REQUEST, 00/16 OPERATION IN PROGRESS
//	no such target descriptor, no volume
//	  with that designator, reservation
//	  conflict on it, volume gone           COPY ABORTED, 0D/02 COPY TARGET DEVICE NOT REACHABLE
//	a range beyond a volume's end           COPY ABORTED, 00/00
//	destination software write protected   COPY ABORTED, 27/02 WRITE PROTECTED
//	a BlockDevice error while copying       COPY ABORTED with senseForError's ASC/ASCQ
//
// COPY ABORTED sense data carries the failing segment's index in the
// COMMAND-SPECIFIC INFORMATION field and, for errors found in its
// descriptor, a segment pointer (SD=1) to the field.
//
// Copy status: while a copy with a LIST ID USAGE other than 11b runs, its
// list identifier is busy for the I_T nexus; with LIST ID USAGE 00b its
// final status is held until RECEIVE COPY STATUS returns it, the I_T nexus
// is lost or the logical unit is reset. At most 256 list identifiers exist,
// so held state per I_T nexus is bounded.

import (
	"encoding/binary"
	"errors"

	"vfa/array"
)

// Copy manager limits (RECEIVE COPY OPERATING PARAMETERS, VPD page 8Fh).
const (
	xcopyHeaderLen       = 16
	xcopyTargetDescLen   = 32
	xcopyB2BDescLen      = 28
	xcopyMaxTargetDescs  = 8
	xcopyMaxSegmentDescs = 32
	// xcopyMaxDescListLen fits the most of both descriptor kinds.
	xcopyMaxDescListLen = xcopyMaxTargetDescs*xcopyTargetDescLen + xcopyMaxSegmentDescs*xcopyB2BDescLen
	// xcopyMaxParamLen bounds the parameter list (there is no inline data).
	xcopyMaxParamLen = 4096
	// xcopyMaxSegmentBytes is the longest segment: 65535 blocks.
	xcopyMaxSegmentBytes = 0xffff * sectorSize
	// xcopyChunk is the staging buffer; with the parameter list it is one
	// 1 MiB pool buffer, and it is a multiple of the 4 KiB physical block.
	xcopyChunk = 1<<20 - xcopyMaxParamLen

	descTypeBlockToBlock = 0x02
	descTypeIdentTarget  = 0xe4

	listIDHold    = 0 // hold the status for RECEIVE COPY STATUS
	listIDNoHold  = 2 // the list identifier is unique, nothing is held
	listIDNoList  = 3 // no list identifier (must be 0)
	listIDInvalid = 1
)

// xcopyTarget is one identification target descriptor.
type xcopyTarget struct {
	naa   [16]byte
	naaOK bool // the designator is a 16-byte NAA designator of a logical unit
}

// xcopySegment is one block-to-block segment descriptor.
type xcopySegment struct {
	off            int // offset of the descriptor in the parameter list
	src, dst       uint16
	blocks         uint64
	srcLBA, dstLBA uint64
}

// xcopyList is a decoded EXTENDED COPY(LID1) parameter list.
type xcopyList struct {
	listID    byte
	usage     byte // LIST ID USAGE
	nTargets  int
	nSegments int
	targets   [xcopyMaxTargetDescs]xcopyTarget
	segments  [xcopyMaxSegmentDescs]xcopySegment
}

// xcopyError is a rejected parameter list: the sense to report.
type xcopyError struct {
	sc senseCode
	x  senseExtra
}

func paramLenError() xcopyError { return xcopyError{sc: scParamLen} }

// paramField points at byte off (and bit, if bit >= 0) of the parameter
// list.
func paramField(sc senseCode, off, bit int) xcopyError {
	x := senseExtra{sksv: true, field: uint16(min(off, 0xffff))}
	if bit >= 0 {
		x.bitValid, x.bit = true, byte(bit)
	}
	return xcopyError{sc: sc, x: x}
}

// parseXCopy decodes an EXTENDED COPY(LID1) parameter list into l. It
// checks the lengths and limits in the order SPC-4 gives them (the
// descriptor list length before the descriptor counts) and every field it
// understands; it does not look at volumes. ok is false with the error to
// report.
func parseXCopy(data []byte, l *xcopyList) (e xcopyError, ok bool) {
	*l = xcopyList{}
	if len(data) < xcopyHeaderLen {
		return paramLenError(), false
	}
	l.listID = data[0]
	l.usage = (data[1] >> 3) & 3
	tdl := int(binary.BigEndian.Uint16(data[2:4]))
	sdl := uint64(binary.BigEndian.Uint32(data[8:12]))
	idl := uint64(binary.BigEndian.Uint32(data[12:16]))
	if uint64(tdl)+sdl > xcopyMaxDescListLen {
		return paramLenError(), false
	}
	if xcopyHeaderLen+uint64(tdl)+sdl+idl > uint64(len(data)) {
		return paramLenError(), false
	}
	switch {
	case l.usage == listIDInvalid:
		return paramField(scInvalidFieldParam, 1, 4), false
	case l.usage == listIDNoList && l.listID != 0:
		return paramField(scInvalidFieldParam, 0, 7), false
	case idl != 0:
		return paramField(scInvalidFieldParam, 12, 7), false
	}

	off, end := xcopyHeaderLen, xcopyHeaderLen+tdl
	for off < end {
		if l.nTargets == xcopyMaxTargetDescs {
			return xcopyError{sc: scTooManyTargetDescs}, false
		}
		if data[off] != descTypeIdentTarget {
			return paramField(scUnsupportedTgtDesc, off, 7), false
		}
		if off+xcopyTargetDescLen > end {
			return paramLenError(), false
		}
		d := data[off : off+xcopyTargetDescLen]
		if d[1]&0x1f != 0 {
			return paramField(scInvalidFieldParam, off+1, 4), false
		}
		if n := uint32(d[29])<<16 | uint32(d[30])<<8 | uint32(d[31]); n != sectorSize {
			return paramField(scInvalidFieldParam, off+29, 7), false
		}
		dlen := int(d[7])
		if dlen > 16 {
			return paramField(scInvalidFieldParam, off+7, 7), false
		}
		t := &l.targets[l.nTargets]
		codeSet, assoc, typ := d[4]&0x0f, (d[5]>>4)&3, d[5]&0x0f
		t.naaOK = codeSet == 1 && assoc == 0 && typ == 3 && dlen == 16
		copy(t.naa[:], d[8:24])
		l.nTargets++
		off += xcopyTargetDescLen
	}

	off, end = end, end+int(sdl)
	for off < end {
		if l.nSegments == xcopyMaxSegmentDescs {
			return xcopyError{sc: scTooManySegmentDescs}, false
		}
		if off+4 > end {
			return paramLenError(), false
		}
		if data[off] != descTypeBlockToBlock {
			return paramField(scUnsupportedSegDesc, off, 7), false
		}
		if int(binary.BigEndian.Uint16(data[off+2:off+4]))+4 != xcopyB2BDescLen {
			return paramField(scInvalidFieldParam, off+2, 7), false
		}
		if off+xcopyB2BDescLen > end {
			return paramLenError(), false
		}
		d := data[off : off+xcopyB2BDescLen]
		l.segments[l.nSegments] = xcopySegment{
			off:    off,
			src:    binary.BigEndian.Uint16(d[4:6]),
			dst:    binary.BigEndian.Uint16(d[6:8]),
			blocks: uint64(binary.BigEndian.Uint16(d[10:12])),
			srcLBA: binary.BigEndian.Uint64(d[12:20]),
			dstLBA: binary.BigEndian.Uint64(d[20:28]),
		}
		l.nSegments++
		off += xcopyB2BDescLen
	}
	return xcopyError{}, true
}

func planExtendedCopy(t *task) {
	plen := binary.BigEndian.Uint32(t.cdb[10:14])
	if plen > xcopyMaxParamLen {
		t.info.fail(scParamLen, senseExtra{})
		return
	}
	if plen == 0 {
		return
	}
	t.info.dir = dirOut
	t.outWant = plen
	t.info.medium = xcopyChunk
}

// copyRecord is the status of one EXTENDED COPY with a list identifier;
// guarded by the logical unit's mu.
type copyRecord struct {
	done, failed bool
	hold         bool // LIST ID USAGE 00b: kept after completion
	segments     uint16
	bytes        uint64
}

// startCopy registers a copy under its list identifier; false if one with
// that identifier is still running for the nexus. A completed one's held
// status is replaced.
func (lu *logicalUnit) startCopy(ns *nexusState, id byte, hold bool) (*copyRecord, bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	if r := ns.copies[id]; r != nil && !r.done {
		return nil, false
	}
	if ns.copies == nil {
		ns.copies = make(map[byte]*copyRecord)
	}
	r := &copyRecord{hold: hold}
	ns.copies[id] = r
	return r, true
}

// copyProgress records segments and bytes done so far.
func (lu *logicalUnit) copyProgress(r *copyRecord, segments int, bytes uint64) {
	lu.mu.Lock()
	r.segments, r.bytes = uint16(segments), bytes
	lu.mu.Unlock()
}

// endCopy completes a copy; without hold its identifier is freed.
func (lu *logicalUnit) endCopy(ns *nexusState, id byte, r *copyRecord, failed bool) {
	lu.mu.Lock()
	defer lu.mu.Unlock()
	r.done, r.failed = true, failed
	if !r.hold && ns.copies[id] == r {
		delete(ns.copies, id)
	}
}

// execExtendedCopy runs EXTENDED COPY(LID1).
func execExtendedCopy(t *task) {
	if binary.BigEndian.Uint32(t.cdb[10:14]) == 0 {
		return
	}
	l := new(xcopyList)
	if e, ok := parseXCopy(t.dataOut(), l); !ok {
		t.check(e.sc, e.x)
		return
	}
	var rec *copyRecord
	lu, ns := t.lun.lu, t.lun.ns
	if l.usage != listIDNoList {
		var ok bool
		if rec, ok = lu.startCopy(ns, l.listID, l.usage == listIDHold); !ok {
			t.fail(scOperationInProgress)
			return
		}
	}
	ok := t.runCopy(l, rec)
	if rec != nil {
		lu.endCopy(ns, l.listID, rec, !ok)
	}
}

// copyTarget resolves target descriptor idx to a LUN of this I_T nexus.
func (t *task) copyTarget(l *xcopyList, idx uint16) *lunEntry {
	if int(idx) >= l.nTargets || !l.targets[idx].naaOK {
		return nil
	}
	want := l.targets[idx].naa
	for _, e := range t.sess.luns.Load().entries {
		if naaID(e.lu.serial) == want {
			return e
		}
	}
	return nil
}

// copyConflicts reports whether this nexus may not read (or write) the
// copy target under the reservations held on it.
func (t *task) copyConflicts(e *lunEntry, write bool) bool {
	if !e.lu.reserved.Load() {
		return false
	}
	op := opTable.byCode[opRead16]
	if write {
		op = opTable.byCode[opWrite16]
	}
	return e.lu.conflicts(t.sess.nexus, op, t.cdb[:])
}

// copyAborted ends the task with COPY ABORTED for segment seg, pointing at
// byte field of its descriptor when field >= 0.
func (t *task) copyAborted(sc senseCode, seg, field int) {
	x := senseExtra{csi: uint64(seg)}
	if field >= 0 {
		x.sksv, x.segment, x.field = true, true, uint16(field)
	}
	t.check(sc, x)
}

// runCopy checks every segment against its copy targets, then copies them
// in order. It returns false when the task ended with an error.
func (t *task) runCopy(l *xcopyList, rec *copyRecord) bool {
	var src, dst [xcopyMaxSegmentDescs]*lunEntry
	for i := range l.nSegments {
		s := &l.segments[i]
		if src[i] = t.copyTarget(l, s.src); src[i] == nil || t.copyConflicts(src[i], false) {
			t.copyAborted(scCopyTargetUnreach, i, 4)
			return false
		}
		if dst[i] = t.copyTarget(l, s.dst); dst[i] == nil || t.copyConflicts(dst[i], true) {
			t.copyAborted(scCopyTargetUnreach, i, 6)
			return false
		}
		if c := src[i].dev.Sectors(); s.srcLBA > c || s.blocks > c-s.srcLBA {
			t.copyAborted(scCopyAbortedNoSense, i, 12)
			return false
		}
		if c := dst[i].dev.Sectors(); s.dstLBA > c || s.blocks > c-s.dstLBA {
			t.copyAborted(scCopyAbortedNoSense, i, 20)
			return false
		}
		if dst[i].lu.swp.Load() {
			t.copyAborted(scCopyWriteProtected, i, 6)
			return false
		}
	}
	buf := t.medium()
	var bytes uint64
	for i := range l.nSegments {
		s := &l.segments[i]
		if write, err := t.copySegment(src[i], dst[i], s, buf); err != nil {
			sc := senseForError(err, write)
			sc.key = skCopyAborted
			if errors.Is(err, array.ErrGone) {
				sc = scCopyTargetUnreach
			}
			t.copyAborted(sc, i, -1)
			return false
		}
		bytes += s.blocks * sectorSize
		if rec != nil {
			t.lun.lu.copyProgress(rec, i+1, bytes)
		}
	}
	return true
}

// errCopyAborted stops a copy whose task was aborted.
var errCopyAborted = errors.New("iscsi: copy aborted")

// copySegment copies one segment through buf; write tells whether a failure
// was the destination's.
func (t *task) copySegment(from, to *lunEntry, s *xcopySegment, buf []byte) (write bool, err error) {
	ctx := t.conn.ctx
	src, dst := from.dev, to.dev
	chunk := uint64(len(buf) / sectorSize)
	n := s.blocks
	if from.lu == to.lu && s.dstLBA > s.srcLBA && s.dstLBA < s.srcLBA+n {
		// The destination overlaps the source from above: copy backwards.
		for done := uint64(0); done < n; {
			if t.state.Load() != taskActive {
				return false, errCopyAborted
			}
			k := min(chunk, n-done)
			off := n - done - k
			p := buf[:k*sectorSize]
			if err := src.ReadAt(ctx, p, s.srcLBA+off); err != nil {
				return false, err
			}
			if err := dst.WriteAt(ctx, p, s.dstLBA+off); err != nil {
				return true, err
			}
			done += k
		}
		return false, nil
	}
	for off := uint64(0); off < n; {
		if t.state.Load() != taskActive {
			return false, errCopyAborted
		}
		mapped, run, err := src.Mapped(ctx, s.srcLBA+off, n-off)
		if err != nil {
			return false, err
		}
		run = min(max(run, 1), n-off)
		if !mapped {
			if err := dst.Unmap(ctx, s.dstLBA+off, run); err != nil {
				return true, err
			}
			off += run
			continue
		}
		k := min(run, chunk)
		p := buf[:k*sectorSize]
		if err := src.ReadAt(ctx, p, s.srcLBA+off); err != nil {
			return false, err
		}
		if err := dst.WriteAt(ctx, p, s.dstLBA+off); err != nil {
			return true, err
		}
		off += k
	}
	return false, nil
}

// execCopyStatus handles RECEIVE COPY STATUS(LID1): the status of the copy
// with the CDB's list identifier; a completed copy's status is returned
// once.
func execCopyStatus(t *task) {
	id := t.cdb[2]
	alloc := int(binary.BigEndian.Uint32(t.cdb[10:14]))
	lu, ns := t.lun.lu, t.lun.ns
	var b [12]byte
	lu.mu.Lock()
	r := ns.copies[id]
	if r != nil {
		binary.BigEndian.PutUint32(b[0:4], 8)
		switch {
		case !r.done:
			b[4] = 0x00 // in progress
		case r.failed:
			b[4] = 0x02 // completed with errors
		default:
			b[4] = 0x01 // completed without errors
		}
		binary.BigEndian.PutUint16(b[5:7], r.segments)
		count, units := r.bytes, byte(0) // 00h bytes, 01h KiB, 02h MiB...
		for count > 0xffffffff {
			count >>= 10
			units++
		}
		b[7] = units
		binary.BigEndian.PutUint32(b[8:12], uint32(count))
		if r.done {
			delete(ns.copies, id)
		}
	}
	lu.mu.Unlock()
	if r == nil {
		t.badCDB(2, -1) // no copy with this list identifier
		return
	}
	t.dataIn(b[:], alloc)
}

// execCopyOpParams handles RECEIVE COPY OPERATING PARAMETERS.
func execCopyOpParams(t *task) {
	alloc := int(binary.BigEndian.Uint32(t.cdb[10:14]))
	copies := t.conn.t.cfg.CmdWindow
	var b [46]byte
	binary.BigEndian.PutUint32(b[0:4], uint32(len(b)-4))
	b[4] = 0x01 // SNLID: LIST ID USAGE 11b is supported
	binary.BigEndian.PutUint16(b[8:10], xcopyMaxTargetDescs)
	binary.BigEndian.PutUint16(b[10:12], xcopyMaxSegmentDescs)
	binary.BigEndian.PutUint32(b[12:16], xcopyMaxDescListLen)
	binary.BigEndian.PutUint32(b[16:20], xcopyMaxSegmentBytes)
	// Inline data, held data, stream transfers: none (bytes 20-31).
	binary.BigEndian.PutUint16(b[34:36], uint16(min(copies, 0xffff))) // TOTAL CONCURRENT COPIES
	b[36] = byte(min(copies, 0xff))                                   // MAXIMUM CONCURRENT COPIES
	b[37] = 9                                                         // DATA SEGMENT GRANULARITY: 2^9 bytes
	b[43] = 2                                                         // implemented descriptor type codes
	b[44], b[45] = descTypeBlockToBlock, descTypeIdentTarget
	t.dataIn(b[:], alloc)
}

// thirdPartyCopyPage is the body of the Third-party Copy VPD page (8Fh):
// the commands, limits and descriptors of EXTENDED COPY(LID1).
func thirdPartyCopyPage(copies int) []byte {
	out := make([]byte, 0, 96)
	desc := func(typ uint16, body ...byte) {
		for len(body)%4 != 0 {
			body = append(body, 0)
		}
		out = binary.BigEndian.AppendUint16(out, typ)
		out = binary.BigEndian.AppendUint16(out, uint16(len(body)))
		out = append(out, body...)
	}
	// 0001h Supported Commands: 83h/00h, 84h/00h and 03h.
	desc(0x0001, 7, opExtendedCopy, 1, saXCopyLID1, opReceiveCopy, 2, saCopyStatus, saCopyOpParams)
	// 0004h Parameter Data.
	pd := make([]byte, 28)
	binary.BigEndian.PutUint16(pd[4:6], xcopyMaxTargetDescs)
	binary.BigEndian.PutUint16(pd[6:8], xcopyMaxSegmentDescs)
	binary.BigEndian.PutUint32(pd[8:12], xcopyMaxDescListLen)
	desc(0x0004, pd...)
	// 0008h Supported Descriptors.
	desc(0x0008, 2, descTypeBlockToBlock, descTypeIdentTarget)
	// 8001h General Copy Operations.
	gco := make([]byte, 32)
	binary.BigEndian.PutUint32(gco[0:4], uint32(copies))
	binary.BigEndian.PutUint32(gco[4:8], uint32(min(copies, 0xff)))
	binary.BigEndian.PutUint32(gco[8:12], xcopyMaxSegmentBytes)
	gco[12] = 9 // data segment granularity 2^9
	desc(0x8001, gco...)
	return out
}
