package iscsi

// SPC-4 commands: INQUIRY and its VPD pages, REPORT LUNS, REQUEST SENSE,
// TEST UNIT READY, MODE SENSE/SELECT, REPORT SUPPORTED OPERATION CODES,
// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS, REPORT TARGET PORT GROUPS,
// START STOP UNIT, PREVENT ALLOW MEDIUM REMOVAL.

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// Identity.
const (
	inqVendor   = "PURE    "
	inqProduct  = "FlashArray      "
	inqRevision = "8888"
	pureOUI     = 0x24a937
)

// Version descriptors (SPC-4 table 29).
var versionDescriptors = [...]uint16{
	0x00a0, // SAM-5
	0x0960, // iSCSI
	0x0460, // SPC-4
	0x04c0, // SBC-3
}

const (
	vpdSupported       = 0x00
	vpdSerial          = 0x80
	vpdDeviceID        = 0x83
	vpdExtendedInquiry = 0x86
	vpdThirdPartyCopy  = 0x8f
	vpdBlockLimits     = 0xb0
	vpdBlockDevChar    = 0xb1
	vpdProvisioning    = 0xb2
)

var supportedVPD = [...]byte{vpdSupported, vpdSerial, vpdDeviceID, vpdExtendedInquiry,
	vpdThirdPartyCopy, vpdBlockLimits, vpdBlockDevChar, vpdProvisioning}

func execInquiry(t *task) {
	cdb := t.cdb[:]
	alloc := int(binary.BigEndian.Uint16(cdb[3:5]))
	evpd := cdb[1]&0x01 != 0
	if cdb[1]&0x02 != 0 { // CMDDT (obsolete)
		t.badCDB(1, 1)
		return
	}
	if !evpd {
		if cdb[2] != 0 {
			t.badCDB(2, -1)
			return
		}
		var b [96]byte
		b[0] = 0x00 // peripheral qualifier 000b, direct access block device
		if t.lun == nil {
			b[0] = 0x7f // qualifier 011b: no device at this LUN
		}
		b[2] = 0x06        // SPC-4
		b[3] = 0x10 | 0x02 // HISUP, response data format 2
		b[4] = byte(len(b) - 5)
		b[5] = 0x10 | 0x08 // TPGS 01b: implicit ALUA; 3PC: EXTENDED COPY
		b[7] = 0x02        // CMDQUE
		copy(b[8:16], inqVendor)
		copy(b[16:32], inqProduct)
		copy(b[32:36], inqRevision)
		for i, v := range versionDescriptors {
			binary.BigEndian.PutUint16(b[58+2*i:], v)
		}
		t.dataIn(b[:], alloc)
		return
	}
	if t.lun == nil {
		t.fail(scLUNotSupported)
		return
	}
	var page []byte
	switch cdb[2] {
	case vpdSupported:
		page = vpdPage(vpdSupported, supportedVPD[:])
	case vpdSerial:
		page = vpdPage(vpdSerial, []byte(t.lun.lu.serial))
	case vpdDeviceID:
		page = vpdPage(vpdDeviceID, t.deviceIDs())
	case vpdExtendedInquiry:
		var b [60]byte
		b[1] = 0x07 // HEADSUP, ORDSUP, SIMPSUP
		b[3] = 0x01 // LUICLR
		page = vpdPage(vpdExtendedInquiry, b[:])
	case vpdThirdPartyCopy:
		page = vpdPage(vpdThirdPartyCopy, thirdPartyCopyPage(t.conn.t.cfg.CmdWindow))
	case vpdBlockLimits:
		page = vpdPage(vpdBlockLimits, t.blockLimits())
	case vpdBlockDevChar:
		var b [60]byte
		binary.BigEndian.PutUint16(b[0:2], 1) // non-rotating medium
		page = vpdPage(vpdBlockDevChar, b[:])
	case vpdProvisioning:
		// LBPU, LBPWS, LBPWS10, LBPRZ; provisioning type 010b: thin.
		page = vpdPage(vpdProvisioning, []byte{0, 0x80 | 0x40 | 0x20 | 0x04, 0x02, 0})
	default:
		t.badCDB(2, -1)
		return
	}
	t.dataIn(page, alloc)
}

func vpdPage(code byte, body []byte) []byte {
	b := make([]byte, 4+len(body))
	b[1] = code
	binary.BigEndian.PutUint16(b[2:4], uint16(len(body)))
	copy(b[4:], body)
	return b
}

// naaID returns the 16-byte NAA IEEE Registered Extended designator of a
// volume: 6h, Pure's OUI 24A937h, then 0h and the 24-hex-digit serial, as
// FlashArray volumes show (624a9370…). A serial that is not 24 hex digits
// is hashed into the same space.
func naaID(serial string) [16]byte {
	var id [16]byte
	binary.BigEndian.PutUint32(id[0:4], 0x6<<28|pureOUI<<4) // 624a9370
	raw, err := hex.DecodeString(serial)
	if err != nil || len(raw) != 12 {
		sum := sha256.Sum256([]byte(serial))
		raw = sum[:12]
	}
	copy(id[4:], raw)
	return id
}

// deviceIDs builds the designators of the Device Identification page.
func (t *task) deviceIDs() []byte {
	var out []byte
	desig := func(b0, b1 byte, body []byte) {
		out = append(out, b0, b1, 0, byte(len(body)))
		out = append(out, body...)
	}
	naa := naaID(t.lun.lu.serial)
	desig(0x01, 0x03, naa[:])                          // binary, LU, NAA
	desig(0x01, 0x95, []byte{0, 0, 0, portalGroupTag}) // PIV, target port, TPG
	desig(0x51, 0x94, []byte{0, 0, 0, 1})              // iSCSI, PIV, target port, relative port
	desig(0x53, 0x98, nameString(t.conn.t.targetPortName()))
	desig(0x53, 0xa8, nameString(t.conn.t.fe.TargetName())) // target device name
	return out
}

// nameString NUL-terminates and pads a SCSI name string to 4 bytes.
func nameString(s string) []byte {
	n := (len(s) + 4) &^ 3
	b := make([]byte, n)
	copy(b, s)
	return b
}

func (t *task) blockLimits() []byte {
	var b [60]byte
	maxXfer := uint32(t.conn.t.cfg.MaxTransferLength / 512)
	b[1] = maxCompareBlocks
	binary.BigEndian.PutUint16(b[2:4], optimalGranularity)
	binary.BigEndian.PutUint32(b[4:8], maxXfer)
	binary.BigEndian.PutUint32(b[8:12], min(maxXfer, 2048))
	binary.BigEndian.PutUint32(b[16:20], maxUnmapBlocks)
	binary.BigEndian.PutUint32(b[20:24], maxUnmapDescs)
	binary.BigEndian.PutUint32(b[24:28], optimalGranularity)
	binary.BigEndian.PutUint32(b[28:32], 0x80000000) // UGAVALID, alignment 0
	binary.BigEndian.PutUint64(b[32:40], maxWriteSameBlocks)
	// Atomic writes (page bytes 44-63): MAXIMUM ATOMIC TRANSFER LENGTH,
	// ATOMIC ALIGNMENT, ATOMIC TRANSFER LENGTH GRANULARITY, MAXIMUM ATOMIC
	// TRANSFER LENGTH WITH ATOMIC BOUNDARY, MAXIMUM ATOMIC BOUNDARY SIZE;
	// all zero when the device makes no write atomic.
	if maxAtomic, maxWithBoundary := atomicLimits(t.lun.dev, maxXfer); maxAtomic > 0 {
		binary.BigEndian.PutUint32(b[40:44], maxAtomic)
		binary.BigEndian.PutUint32(b[44:48], atomicAlignment)
		binary.BigEndian.PutUint32(b[48:52], atomicGranularity)
		binary.BigEndian.PutUint32(b[52:56], maxWithBoundary)
		binary.BigEndian.PutUint32(b[56:60], maxAtomic)
	}
	return b[:]
}

func execReportLUNs(t *task) {
	alloc := int(binary.BigEndian.Uint32(t.cdb[6:10]))
	var entries []*lunEntry
	if t.cdb[2] != 1 { // 01h: well-known LUNs only; we have none
		entries = t.sess.luns.Load().entries
	}
	b := make([]byte, 8+8*len(entries))
	binary.BigEndian.PutUint32(b[0:4], uint32(8*len(entries)))
	for i, e := range entries {
		binary.BigEndian.PutUint64(b[8+8*i:], encodeLUN(e.number))
	}
	t.dataIn(b, alloc)
}

func execRequestSense(t *task) {
	desc := t.cdb[1]&0x01 != 0
	alloc := int(t.cdb[4])
	sc := scNone
	if t.lun == nil {
		sc = scLUNotSupported
	} else if t.lun.ns.uaN.Load() > 0 {
		if ua, ok := t.lun.lu.popUA(t.lun.ns); ok {
			sc = ua
		}
	} else if t.conn.t.fe.Ready() != nil {
		sc = scNotReadyUnavailable
	}
	var b [32]byte
	n := buildSense(b[:], desc, sc, senseExtra{})
	t.dataIn(b[:n], alloc)
}

func execTestUnitReady(t *task) {
	if t.conn.t.fe.Ready() != nil {
		t.fail(scNotReadyUnavailable)
	}
}

func execStartStop(t *task) {
	cdb := t.cdb[:]
	if cdb[4]&0x02 != 0 { // LOEJ: the medium is not removable
		t.badCDB(4, 1)
		return
	}
	// A shared array volume is never stopped by one initiator: START,
	// STOP and power conditions complete without effect.
}

func execPreventAllow(t *task) {
	if t.cdb[4]&0x03 > 1 {
		t.badCDB(4, 1)
	}
}

// Mode pages.
const (
	mpCaching  = 0x08
	mpControl  = 0x0a
	mpInfoExc  = 0x1c
	mpAllPages = 0x3f
)

// modePage appends one mode page for page control pc (0 current, 1
// changeable, 2 default).
func (t *task) modePage(out []byte, code byte, pc byte) []byte {
	lu := t.lun.lu
	switch code {
	case mpCaching:
		p := make([]byte, 20)
		p[0], p[1] = mpCaching, 18
		// WCE=0: a write is durable when it completes; RCD=0.
		return append(out, p...)
	case mpControl:
		p := make([]byte, 12)
		p[0], p[1] = mpControl, 10
		switch pc {
		case 1:
			p[2] = 0x04 // D_SENSE
			p[4] = 0x08 // SWP
		default:
			p[2] = 0x20 // TST 001b: one task set per I_T nexus
			p[3] = 0x10 // queue algorithm modifier 1: unrestricted
			p[5] = 0x40 // TAS
			binary.BigEndian.PutUint16(p[8:10], 600)
			if pc == 0 {
				if lu.dsense.Load() {
					p[2] |= 0x04
				}
				if lu.swp.Load() {
					p[4] |= 0x08
				}
			}
		}
		return append(out, p...)
	case mpInfoExc:
		p := make([]byte, 12)
		p[0], p[1] = mpInfoExc, 10
		if pc != 1 {
			p[2] = 0x08 // DEXCPT: no informational exception reporting
		}
		return append(out, p...)
	}
	return out
}

func execModeSense(t *task) {
	cdb := t.cdb[:]
	ten := cdb[0] == opModeSense10
	dbd := cdb[1]&0x08 != 0
	llbaa := ten && cdb[1]&0x10 != 0
	pc := cdb[2] >> 6
	code := cdb[2] & 0x3f
	sub := cdb[3]
	var alloc int
	if ten {
		alloc = int(binary.BigEndian.Uint16(cdb[7:9]))
	} else {
		alloc = int(cdb[4])
	}
	if pc == 3 {
		t.fail(scSavingNotSupported)
		return
	}
	var pages []byte
	switch {
	case code == mpAllPages && (sub == 0 || sub == 0xff):
		for _, c := range []byte{mpCaching, mpControl, mpInfoExc} {
			pages = t.modePage(pages, c, pc)
		}
	case sub == 0 && (code == mpCaching || code == mpControl || code == mpInfoExc):
		pages = t.modePage(pages, code, pc)
	default:
		t.badCDB(2, 5)
		return
	}
	var bd []byte
	if !dbd {
		c := t.capacity()
		if llbaa {
			bd = make([]byte, 16)
			binary.BigEndian.PutUint64(bd[0:8], c)
			binary.BigEndian.PutUint32(bd[12:16], 512)
		} else {
			bd = make([]byte, 8)
			binary.BigEndian.PutUint32(bd[0:4], uint32(min(c, 0xffffffff)))
			bd[5], bd[6], bd[7] = 0, 0x02, 0x00 // 512
		}
	}
	dsp := byte(0x10) // DPOFUA
	if t.lun.lu.swp.Load() {
		dsp |= 0x80 // WP
	}
	var out []byte
	if ten {
		out = make([]byte, 8, 8+len(bd)+len(pages))
		out[3] = dsp
		if llbaa {
			out[4] = 0x01
		}
		binary.BigEndian.PutUint16(out[6:8], uint16(len(bd)))
	} else {
		out = make([]byte, 4, 4+len(bd)+len(pages))
		out[2] = dsp
		out[3] = byte(len(bd))
	}
	out = append(out, bd...)
	out = append(out, pages...)
	if ten {
		binary.BigEndian.PutUint16(out[0:2], uint16(len(out)-2))
	} else {
		out[0] = byte(len(out) - 1)
	}
	t.dataIn(out, alloc)
}

func execModeSelect(t *task) {
	cdb := t.cdb[:]
	ten := cdb[0] == opModeSelect10
	if cdb[1]&0x01 != 0 { // SP: pages cannot be saved
		t.badCDB(1, 0)
		return
	}
	if cdb[1]&0x10 == 0 { // PF: only the standard page format
		t.badCDB(1, 4)
		return
	}
	data := t.dataOut()
	if len(data) == 0 {
		return
	}
	hdr := 4
	var bdLen int
	if ten {
		hdr = 8
		if len(data) < hdr {
			t.fail(scParamLen)
			return
		}
		bdLen = int(binary.BigEndian.Uint16(data[6:8]))
	} else {
		if len(data) < hdr {
			t.fail(scParamLen)
			return
		}
		bdLen = int(data[3])
	}
	if hdr+bdLen > len(data) {
		t.fail(scParamLen)
		return
	}
	if bdLen != 0 && bdLen != 8 && bdLen != 16 {
		t.badParam(hdr-1, -1)
		return
	}
	if bdLen > 0 {
		bd := data[hdr : hdr+bdLen]
		var blockLen uint32
		if bdLen == 8 {
			blockLen = uint32(bd[5])<<16 | uint32(bd[6])<<8 | uint32(bd[7])
		} else {
			blockLen = binary.BigEndian.Uint32(bd[12:16])
		}
		if blockLen != 512 {
			t.badParam(hdr+bdLen-1, -1)
			return
		}
	}
	lu := t.lun.lu
	dsense, swp := lu.dsense.Load(), lu.swp.Load()
	off := hdr + bdLen
	for off < len(data) {
		if off+2 > len(data) {
			t.fail(scParamLen)
			return
		}
		code := data[off] & 0x3f
		if data[off]&0x40 != 0 { // subpage format: none supported
			t.badParam(off, 6)
			return
		}
		plen := int(data[off+1])
		if off+2+plen > len(data) {
			t.fail(scParamLen)
			return
		}
		page := data[off : off+2+plen]
		cur := t.modePage(nil, code, 0)
		if cur == nil || len(cur) != len(page) {
			t.badParam(off, -1)
			return
		}
		changeable := t.modePage(nil, code, 1)
		for i := 2; i < len(page); i++ {
			if (page[i]^cur[i])&^changeable[i] != 0 {
				t.badParam(off+i, -1)
				return
			}
		}
		if code == mpControl {
			dsense = page[2]&0x04 != 0
			swp = page[4]&0x08 != 0
		}
		off += 2 + plen
	}
	changed := dsense != lu.dsense.Load() || swp != lu.swp.Load()
	lu.dsense.Store(dsense)
	lu.swp.Store(swp)
	if changed {
		lu.mu.Lock()
		lu.addUAAllLocked(t.sess.nexus, uaModeChanged)
		lu.mu.Unlock()
	}
}

// execReportOpcodes handles REPORT SUPPORTED OPERATION CODES.
func execReportOpcodes(t *task) {
	cdb := t.cdb[:]
	rctd := cdb[2]&0x80 != 0
	opt := cdb[2] & 0x07
	reqOp := cdb[3]
	reqSA := binary.BigEndian.Uint16(cdb[4:6])
	alloc := int(binary.BigEndian.Uint32(cdb[6:10]))
	timeouts := func(out []byte, op *opDesc) []byte {
		out = append(out, 0, 0x0a, 0, 0)
		out = binary.BigEndian.AppendUint32(out, 1)           // nominal, s
		return binary.BigEndian.AppendUint32(out, op.timeout) // recommended, s
	}
	switch opt {
	case 0:
		out := make([]byte, 4, 4+len(opTable.all)*20)
		for _, op := range sortedOps() {
			out = append(out, op.code, 0)
			out = binary.BigEndian.AppendUint16(out, op.sa)
			flags := byte(0)
			if op.hasSA {
				flags |= 0x01
			}
			if rctd {
				flags |= 0x02
			}
			out = append(out, 0, flags)
			out = binary.BigEndian.AppendUint16(out, uint16(len(op.usage)))
			if rctd {
				out = timeouts(out, op)
			}
		}
		binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
		t.dataIn(out, alloc)
	case 1, 2, 3:
		_, hasSA := opTable.bySA[reqOp]
		if opt == 1 && hasSA {
			t.badCDB(3, -1)
			return
		}
		if opt == 2 && !hasSA && opTable.byCode[reqOp] != nil {
			t.badCDB(3, -1)
			return
		}
		var found *opDesc
		if hasSA && opt != 1 {
			for _, op := range opTable.bySA[reqOp] {
				if op.sa == reqSA {
					found = op
				}
			}
		} else if !hasSA {
			found = opTable.byCode[reqOp]
		}
		out := make([]byte, 4, 64)
		if found == nil {
			out[1] = 0x01 // not supported
		} else {
			out[1] = 0x03 // supported, conforming
			if rctd {
				out[1] |= 0x80
			}
			binary.BigEndian.PutUint16(out[2:4], uint16(len(found.usage)))
			out = append(out, found.usage...)
			if rctd {
				out = timeouts(out, found)
			}
		}
		t.dataIn(out, alloc)
	default:
		t.badCDB(2, 2)
	}
}

// sortedOps lists the command table by opcode, then service action.
func sortedOps() []*opDesc {
	out := make([]*opDesc, 0, len(opTable.all))
	for c := 0; c < 256; c++ {
		if op := opTable.byCode[c]; op != nil {
			out = append(out, op)
		}
		out = append(out, opTable.bySA[byte(c)]...)
	}
	return out
}

func execReportTMF(t *task) {
	alloc := int(binary.BigEndian.Uint32(t.cdb[6:10]))
	// ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET,
	// TARGET RESET.
	b := []byte{0x80 | 0x40 | 0x10 | 0x08 | 0x02, 0, 0, 0}
	if t.cdb[2]&0x80 != 0 { // REPD: extended format
		b = append(b, make([]byte, 12)...)
		b[3] = 0x0c
	}
	t.dataIn(b, alloc)
}

// execReportTPG reports the one target port group: active/optimized, or
// unavailable while the array is locked.
func execReportTPG(t *task) {
	alloc := int(binary.BigEndian.Uint32(t.cdb[6:10]))
	extended := t.cdb[1]>>5 == 1
	state := byte(0x00)
	if t.conn.t.fe.Ready() != nil {
		state = 0x03
	}
	desc := []byte{
		0x80 | state, // PREF
		0x08 | 0x01,  // U_SUP, AO_SUP
		0, portalGroupTag,
		0, 0, 0, 1, // status, vendor, one port
		0, 0, 0, 1, // relative target port 1
	}
	var out []byte
	if extended {
		out = make([]byte, 8)
		out[4] = 0x10 // format type 001b
	} else {
		out = make([]byte, 4)
	}
	out = append(out, desc...)
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	if extended {
		binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-8))
	}
	t.dataIn(out, alloc)
}

// execReadDefect reports an empty defect list in the requested format.
func execReadDefect(t *task) {
	cdb := t.cdb[:]
	var out []byte
	var alloc int
	if cdb[0] == opReadDefect10 {
		alloc = int(binary.BigEndian.Uint16(cdb[7:9]))
		out = []byte{0, cdb[2] & 0x1f, 0, 0}
	} else {
		alloc = int(binary.BigEndian.Uint32(cdb[6:10]))
		out = []byte{0, cdb[1] & 0x1f, 0, 0, 0, 0, 0, 0}
	}
	t.dataIn(out, alloc)
}

// String forms used in logs and tests.
func (sc senseCode) String() string {
	return fmt.Sprintf("%x/%02x/%02x", sc.key, sc.asc, sc.ascq)
}
