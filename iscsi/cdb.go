package iscsi

// CDB decoding: the table of supported commands (which REPORT SUPPORTED
// OPERATION CODES reports), and planning, which decides before any data
// moves how much data-out a command takes and how much data-in it may
// return, and finds CDB errors (reported after unit attentions and
// reservation conflicts, as SAM orders them).

import (
	"encoding/binary"

	"vfa/array"
)

type dataDir uint8

const (
	dirNone dataDir = iota
	dirIn
	dirOut
)

type opFlags uint16

const (
	opNoLUN    opFlags = 1 << iota // served for unmapped LUNs too
	opNoUA                         // not blocked by a unit attention
	opPRAlways                     // never conflicts with a persistent reservation
	opPRRead                       // read class for reservation conflicts
	opSPC2OK                       // allowed under another nexus's RESERVE(6)
	opWrite                        // modifies the medium (software write protect)
)

// opDesc describes one supported command (or service action).
type opDesc struct {
	code    byte
	sa      uint16
	hasSA   bool
	name    string
	usage   []byte // CDB usage data; its length is the CDB length
	plan    func(t *task)
	exec    func(t *task)
	flags   opFlags
	timeout uint32 // recommended command timeout, seconds
}

// cdbInfo is what planning learned about a CDB.
type cdbInfo struct {
	op      *opDesc
	dir     dataDir
	lba     uint64
	blocks  uint64
	inAlloc int // data-in buffer needed
	medium  int // buffer to read the medium into (verify, ORWRITE)
	hasErr  bool
	err     senseCode
	errX    senseExtra
}

func (i *cdbInfo) fail(sc senseCode, x senseExtra) {
	if !i.hasErr {
		i.hasErr, i.err, i.errX = true, sc, x
	}
}

func (i *cdbInfo) badCDB(idx, bit int) {
	x := senseExtra{sksv: true, cdbField: true, field: uint16(idx)}
	if bit >= 0 {
		x.bitValid, x.bit = true, byte(bit)
	}
	i.fail(scInvalidFieldCDB, x)
}

// Opcodes.
const (
	opTestUnitReady  = 0x00
	opRequestSense   = 0x03
	opRead6          = 0x08
	opWrite6         = 0x0a
	opInquiry        = 0x12
	opModeSelect6    = 0x15
	opReserve6       = 0x16
	opRelease6       = 0x17
	opModeSense6     = 0x1a
	opStartStop      = 0x1b
	opPreventAllow   = 0x1e
	opReadCapacity10 = 0x25
	opRead10         = 0x28
	opWrite10        = 0x2a
	opWriteVerify10  = 0x2e
	opVerify10       = 0x2f
	opPrefetch10     = 0x34
	opSyncCache10    = 0x35
	opReadDefect10   = 0x37
	opWriteSame10    = 0x41
	opUnmap          = 0x42
	opModeSelect10   = 0x55
	opModeSense10    = 0x5a
	opPRIn           = 0x5e
	opPROut          = 0x5f
	opExtendedCopy   = 0x83
	opReceiveCopy    = 0x84
	opRead16         = 0x88
	opCompareWrite   = 0x89
	opWrite16        = 0x8a
	opOrWrite        = 0x8b
	opWriteVerify16  = 0x8e
	opVerify16       = 0x8f
	opPrefetch16     = 0x90
	opSyncCache16    = 0x91
	opWriteSame16    = 0x93
	opWriteAtomic16  = 0x9c
	opServiceIn16    = 0x9e
	opReportLUNs     = 0xa0
	opMaintenanceIn  = 0xa3
	opRead12         = 0xa8
	opWrite12        = 0xaa
	opWriteVerify12  = 0xae
	opVerify12       = 0xaf
	opReadDefect12   = 0xb7

	saReadCapacity16 = 0x10
	saGetLBAStatus   = 0x12
	saReportTPG      = 0x0a
	saReportOpcodes  = 0x0c
	saReportTMF      = 0x0d
	saXCopyLID1      = 0x00
	saCopyStatus     = 0x00
	saCopyOpParams   = 0x03
)

// opTable lists the supported commands; it is built once, at package
// initialisation, and never written afterwards.
var opTable *opIndex

func init() { opTable = buildOpTable() }

type opIndex struct {
	byCode [256]*opDesc
	bySA   map[byte][]*opDesc
	all    []*opDesc
}

func buildOpTable() *opIndex {
	const (
		always = opPRAlways
		read   = opPRRead
		spc2   = opSPC2OK
	)
	lba10 := []byte{0xff, 0xff, 0xff, 0xff}
	lba16 := []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}
	cat := func(parts ...[]byte) []byte {
		var out []byte
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	u := func(b ...byte) []byte { return b }
	ops := []*opDesc{
		{code: opTestUnitReady, name: "TEST UNIT READY", usage: u(0x00, 0, 0, 0, 0, 0),
			exec: execTestUnitReady, flags: always},
		{code: opRequestSense, name: "REQUEST SENSE", usage: u(0x03, 0x01, 0, 0, 0xff, 0),
			plan: planAlloc(4, 1), exec: execRequestSense, flags: always | opNoLUN | opNoUA | spc2},
		{code: opRead6, name: "READ(6)", usage: u(0x08, 0x1f, 0xff, 0xff, 0xff, 0),
			plan: planRW, exec: execRead, flags: read},
		{code: opWrite6, name: "WRITE(6)", usage: u(0x0a, 0x1f, 0xff, 0xff, 0xff, 0),
			plan: planRW, exec: execWrite, flags: opWrite},
		{code: opInquiry, name: "INQUIRY", usage: u(0x12, 0x01, 0xff, 0xff, 0xff, 0),
			plan: planAlloc(3, 2), exec: execInquiry, flags: always | opNoLUN | opNoUA | spc2},
		{code: opModeSelect6, name: "MODE SELECT(6)", usage: u(0x15, 0x11, 0, 0, 0xff, 0),
			plan: planParam(4, 1), exec: execModeSelect},
		{code: opReserve6, name: "RESERVE(6)", usage: u(0x16, 0, 0, 0, 0, 0),
			exec: execReserve6, flags: always},
		{code: opRelease6, name: "RELEASE(6)", usage: u(0x17, 0, 0, 0, 0, 0),
			exec: execRelease6, flags: always | spc2},
		{code: opModeSense6, name: "MODE SENSE(6)", usage: u(0x1a, 0x08, 0xff, 0xff, 0xff, 0),
			plan: planAlloc(4, 1), exec: execModeSense, flags: read},
		{code: opStartStop, name: "START STOP UNIT", usage: u(0x1b, 0x01, 0, 0x0f, 0xf7, 0),
			exec: execStartStop},
		{code: opPreventAllow, name: "PREVENT ALLOW MEDIUM REMOVAL", usage: u(0x1e, 0, 0, 0, 0x03, 0),
			exec: execPreventAllow},
		{code: opReadCapacity10, name: "READ CAPACITY(10)", usage: u(0x25, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0x01, 0),
			plan: planReadCapacity10, exec: execReadCapacity10, flags: always},
		{code: opRead10, name: "READ(10)", usage: cat(u(0x28, 0x18), lba10, u(0, 0xff, 0xff, 0)),
			plan: planRW, exec: execRead, flags: read},
		{code: opWrite10, name: "WRITE(10)", usage: cat(u(0x2a, 0x18), lba10, u(0, 0xff, 0xff, 0)),
			plan: planRW, exec: execWrite, flags: opWrite},
		{code: opWriteVerify10, name: "WRITE AND VERIFY(10)", usage: cat(u(0x2e, 0x12), lba10, u(0, 0xff, 0xff, 0)),
			plan: planRW, exec: execWriteVerify, flags: opWrite},
		{code: opVerify10, name: "VERIFY(10)", usage: cat(u(0x2f, 0x16), lba10, u(0, 0xff, 0xff, 0)),
			plan: planVerify, exec: execVerify, flags: read},
		{code: opPrefetch10, name: "PRE-FETCH(10)", usage: cat(u(0x34, 0x02), lba10, u(0, 0xff, 0xff, 0)),
			plan: planRange, exec: execPrefetch, flags: read},
		{code: opSyncCache10, name: "SYNCHRONIZE CACHE(10)", usage: cat(u(0x35, 0x02), lba10, u(0, 0xff, 0xff, 0)),
			plan: planRange, exec: execSyncCache},
		{code: opReadDefect10, name: "READ DEFECT DATA(10)", usage: u(0x37, 0, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0),
			plan: planAlloc(7, 2), exec: execReadDefect, flags: read},
		{code: opWriteSame10, name: "WRITE SAME(10)", usage: cat(u(0x41, 0x08), lba10, u(0, 0xff, 0xff, 0)),
			plan: planWriteSame, exec: execWriteSame, flags: opWrite},
		{code: opUnmap, name: "UNMAP", usage: u(0x42, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0),
			plan: planParam(7, 2), exec: execUnmap, flags: opWrite},
		{code: opModeSelect10, name: "MODE SELECT(10)", usage: u(0x55, 0x11, 0, 0, 0, 0, 0, 0xff, 0xff, 0),
			plan: planParam(7, 2), exec: execModeSelect},
		{code: opModeSense10, name: "MODE SENSE(10)", usage: u(0x5a, 0x18, 0xff, 0xff, 0, 0, 0, 0xff, 0xff, 0),
			plan: planAlloc(7, 2), exec: execModeSense, flags: read},
		{code: opRead16, name: "READ(16)", usage: cat(u(0x88, 0x18), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execRead, flags: read},
		{code: opCompareWrite, name: "COMPARE AND WRITE", usage: cat(u(0x89, 0x18), lba16, u(0, 0, 0, 0xff, 0, 0)),
			plan: planCompareWrite, exec: execCompareWrite, flags: opWrite},
		{code: opWrite16, name: "WRITE(16)", usage: cat(u(0x8a, 0x18), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execWrite, flags: opWrite},
		{code: opOrWrite, name: "ORWRITE(16)", usage: cat(u(0x8b, 0x18), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execOrWrite, flags: opWrite},
		{code: opWriteVerify16, name: "WRITE AND VERIFY(16)", usage: cat(u(0x8e, 0x12), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execWriteVerify, flags: opWrite},
		{code: opVerify16, name: "VERIFY(16)", usage: cat(u(0x8f, 0x16), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planVerify, exec: execVerify, flags: read},
		{code: opPrefetch16, name: "PRE-FETCH(16)", usage: cat(u(0x90, 0x02), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRange, exec: execPrefetch, flags: read},
		{code: opSyncCache16, name: "SYNCHRONIZE CACHE(16)", usage: cat(u(0x91, 0x02), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRange, exec: execSyncCache},
		{code: opWriteSame16, name: "WRITE SAME(16)", usage: cat(u(0x93, 0x09), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planWriteSame, exec: execWriteSame, flags: opWrite},
		{code: opWriteAtomic16, name: "WRITE ATOMIC(16)", usage: cat(u(0x9c, 0x18), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planWriteAtomic, exec: execWriteAtomic, flags: opWrite},
		{code: opExtendedCopy, sa: saXCopyLID1, hasSA: true, name: "EXTENDED COPY(LID1)",
			usage: u(0x83, saXCopyLID1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planExtendedCopy, exec: execExtendedCopy, timeout: 120},
		{code: opReceiveCopy, sa: saCopyStatus, hasSA: true, name: "RECEIVE COPY STATUS(LID1)",
			usage: u(0x84, saCopyStatus, 0xff, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planAlloc(10, 4), exec: execCopyStatus, flags: read},
		{code: opReceiveCopy, sa: saCopyOpParams, hasSA: true, name: "RECEIVE COPY OPERATING PARAMETERS",
			usage: u(0x84, saCopyOpParams, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planAlloc(10, 4), exec: execCopyOpParams, flags: read},
		{code: opServiceIn16, sa: saReadCapacity16, hasSA: true, name: "READ CAPACITY(16)",
			usage: cat(u(0x9e, saReadCapacity16), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan:  planAlloc(10, 4), exec: execReadCapacity16, flags: always},
		{code: opServiceIn16, sa: saGetLBAStatus, hasSA: true, name: "GET LBA STATUS",
			usage: cat(u(0x9e, saGetLBAStatus), lba16, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan:  planGetLBAStatus, exec: execGetLBAStatus, flags: read},
		{code: opReportLUNs, name: "REPORT LUNS", usage: u(0xa0, 0, 0xff, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan: planReportLUNs, exec: execReportLUNs, flags: always | opNoLUN | opNoUA | spc2},
		{code: opMaintenanceIn, sa: saReportTPG, hasSA: true, name: "REPORT TARGET PORT GROUPS",
			usage: u(0xa3, 0xea, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planAlloc(6, 4), exec: execReportTPG, flags: always | spc2},
		{code: opMaintenanceIn, sa: saReportOpcodes, hasSA: true, name: "REPORT SUPPORTED OPERATION CODES",
			usage: u(0xa3, 0x0c, 0x87, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planAlloc(6, 4), exec: execReportOpcodes, flags: always | spc2},
		{code: opMaintenanceIn, sa: saReportTMF, hasSA: true, name: "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
			usage: u(0xa3, 0x0d, 0x80, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan:  planAlloc(6, 4), exec: execReportTMF, flags: always | spc2},
		{code: opRead12, name: "READ(12)", usage: cat(u(0xa8, 0x18), lba10, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execRead, flags: read},
		{code: opWrite12, name: "WRITE(12)", usage: cat(u(0xaa, 0x18), lba10, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execWrite, flags: opWrite},
		{code: opWriteVerify12, name: "WRITE AND VERIFY(12)", usage: cat(u(0xae, 0x12), lba10, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planRW, exec: execWriteVerify, flags: opWrite},
		{code: opVerify12, name: "VERIFY(12)", usage: cat(u(0xaf, 0x16), lba10, u(0xff, 0xff, 0xff, 0xff, 0, 0)),
			plan: planVerify, exec: execVerify, flags: read},
		{code: opReadDefect12, name: "READ DEFECT DATA(12)", usage: u(0xb7, 0x1f, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0),
			plan: planAlloc(6, 4), exec: execReadDefect, flags: read},
	}
	for sa := range uint16(4) {
		ops = append(ops, &opDesc{code: opPRIn, sa: sa, hasSA: true, name: "PERSISTENT RESERVE IN",
			usage: u(0x5e, byte(sa), 0, 0, 0, 0, 0, 0xff, 0xff, 0),
			plan:  planAlloc(7, 2), exec: execPRIn, flags: always})
	}
	for sa := range uint16(proRegisterIgnore + 1) {
		ops = append(ops, &opDesc{code: opPROut, sa: sa, hasSA: true, name: "PERSISTENT RESERVE OUT",
			usage: u(0x5f, byte(sa), 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff, 0),
			plan:  planParam(5, 4), exec: execPROut, flags: always})
	}
	idx := &opIndex{bySA: make(map[byte][]*opDesc), all: ops}
	for _, op := range ops {
		if op.timeout == 0 {
			op.timeout = 30
		}
		if op.hasSA {
			idx.bySA[op.code] = append(idx.bySA[op.code], op)
		} else {
			idx.byCode[op.code] = op
		}
	}
	return idx
}

// saOf returns the service action field of a CDB whose opcode has them.
func saOf(cdb []byte) uint16 { return uint16(cdb[1] & 0x1f) }

// lookupOp finds the command a CDB names. With saInvalid, the opcode is
// known but its service action is not.
func lookupOp(cdb []byte) (op *opDesc, saInvalid bool) {
	if op := opTable.byCode[cdb[0]]; op != nil {
		return op, false
	}
	list, ok := opTable.bySA[cdb[0]]
	if !ok {
		return nil, false
	}
	sa := saOf(cdb)
	for _, op := range list {
		if op.sa == sa {
			return op, false
		}
	}
	return nil, true
}

// plan decodes the CDB before any data moves.
func (t *task) plan() {
	cdb := t.cdb[:t.cdbLen]
	op, saInvalid := lookupOp(cdb)
	t.info = cdbInfo{op: op}
	if op == nil {
		if saInvalid {
			// PR IN/OUT with a bad service action still has a command
			// to blame; the others report the field.
			t.info.badCDB(1, 4)
		} else {
			t.info.fail(scInvalidOpcode, senseExtra{})
		}
		return
	}
	if t.lun == nil && op.flags&opNoLUN == 0 {
		t.info.fail(scLUNotSupported, senseExtra{})
		return
	}
	if op.plan != nil {
		op.plan(t)
	}
}

// inBuf is the data buffer size the command needs for data-in.
func (t *task) inBuf() int {
	if t.info.dir == dirIn {
		return t.info.inAlloc
	}
	return 0
}

func (t *task) capacity() uint64 {
	if t.lun == nil {
		return 0
	}
	return t.lun.dev.Sectors()
}

// rwFields decodes the LBA and transfer length of the block commands.
func rwFields(cdb []byte) (lba, blocks uint64, lenIdx int) {
	switch cdb[0] >> 5 {
	case 0: // 6-byte
		lba = uint64(cdb[1]&0x1f)<<16 | uint64(cdb[2])<<8 | uint64(cdb[3])
		blocks = uint64(cdb[4])
		return lba, blocks, 4
	case 1, 2: // 10-byte
		return uint64(binary.BigEndian.Uint32(cdb[2:6])), uint64(binary.BigEndian.Uint16(cdb[7:9])), 7
	case 5: // 12-byte
		return uint64(binary.BigEndian.Uint32(cdb[2:6])), uint64(binary.BigEndian.Uint32(cdb[6:10])), 6
	case 4: // 16-byte
		return binary.BigEndian.Uint64(cdb[2:10]), uint64(binary.BigEndian.Uint32(cdb[10:14])), 10
	}
	return 0, 0, 0
}

// checkRange reports LBA OUT OF RANGE for [lba, lba+blocks) beyond the end.
func (t *task) checkRange(lba, blocks uint64) bool {
	c := t.capacity()
	if lba > c || blocks > c-lba {
		t.info.fail(scLBAOutOfRange, senseExtra{})
		return false
	}
	return true
}

// planRW plans READ, WRITE, WRITE AND VERIFY and ORWRITE.
func planRW(t *task) {
	cdb := t.cdb[:]
	lba, blocks, lenIdx := rwFields(cdb)
	op := cdb[0]
	if op == opRead6 || op == opWrite6 {
		if blocks == 0 {
			blocks = 256
		}
	} else if cdb[1]&0xe0 != 0 {
		t.info.badCDB(1, 7) // RDPROTECT / WRPROTECT / ORPROTECT: no PI
	}
	t.info.lba, t.info.blocks = lba, blocks
	if blocks*array.SectorSize > uint64(t.conn.t.cfg.MaxTransferLength) {
		t.info.badCDB(lenIdx, -1)
	}
	t.checkRange(lba, blocks)
	if t.info.hasErr {
		return
	}
	n := int(blocks) * array.SectorSize
	switch op {
	case opRead6, opRead10, opRead12, opRead16:
		t.info.dir = dirIn
		t.info.inAlloc = n
	default:
		t.info.dir = dirOut
		t.outWant = uint32(n)
		switch op {
		case opOrWrite:
			t.info.medium = 2 * n // current data, then the OR of both
		case opWriteVerify10, opWriteVerify12, opWriteVerify16:
			t.info.medium = n // read back to compare
		}
	}
}

// planVerify plans VERIFY(10/12/16): BYTCHK 00b compares nothing, 01b the
// data-out, 11b one block of data-out against every block.
func planVerify(t *task) {
	cdb := t.cdb[:]
	lba, blocks, lenIdx := rwFields(cdb)
	t.info.lba, t.info.blocks = lba, blocks
	if cdb[1]&0xe0 != 0 {
		t.info.badCDB(1, 7)
	}
	bytchk := (cdb[1] >> 1) & 3
	if bytchk == 2 {
		t.info.badCDB(1, 2)
	}
	if blocks*array.SectorSize > uint64(t.conn.t.cfg.MaxTransferLength) {
		t.info.badCDB(lenIdx, -1)
	}
	t.checkRange(lba, blocks)
	if t.info.hasErr {
		return
	}
	switch bytchk {
	case 1:
		t.info.dir = dirOut
		t.outWant = uint32(blocks * array.SectorSize)
	case 3:
		t.info.dir = dirOut
		if blocks > 0 {
			t.outWant = array.SectorSize
		}
	}
	// The medium is read to compare (or to check it is readable).
	t.info.medium = int(blocks) * array.SectorSize
}

// planRange plans PRE-FETCH and SYNCHRONIZE CACHE.
func planRange(t *task) {
	lba, blocks, _ := rwFields(t.cdb[:])
	t.info.lba, t.info.blocks = lba, blocks
	t.checkRange(lba, blocks)
}

// Block limits we report (Block Limits VPD page).
const (
	maxWriteSameBlocks = 65535 // 32 MiB - 512 B
	maxCompareBlocks   = 255
	maxUnmapBlocks     = 1 << 20
	maxUnmapDescs      = 256
	optimalGranularity = 8 // 4 KiB physical blocks
)

func planWriteSame(t *task) {
	cdb := t.cdb[:]
	lba, blocks, lenIdx := rwFields(cdb)
	if cdb[1]&0xe0 != 0 {
		t.info.badCDB(1, 7)
	}
	anchor := cdb[1]&0x10 != 0
	ndob := cdb[0] == opWriteSame16 && cdb[1]&0x01 != 0 // no data-out: zeros
	if anchor {
		// ANC_SUP is 0: anchored is not supported (and needs UNMAP).
		t.info.badCDB(1, 4)
	}
	c := t.capacity()
	if blocks == 0 && lba <= c {
		blocks = c - lba // WSNZ=0: to the end of the medium
	}
	if blocks > maxWriteSameBlocks {
		t.info.badCDB(lenIdx, -1)
	}
	t.checkRange(lba, blocks)
	t.info.lba, t.info.blocks = lba, blocks
	if t.info.hasErr {
		return
	}
	if !ndob {
		t.info.dir = dirOut
		t.outWant = array.SectorSize
	}
}

// Atomic writes (WRITE ATOMIC(16), Block Limits VPD page): the starting LBA
// is a multiple of atomicAlignment and the length a multiple of
// atomicGranularity, the 4 KiB physical block; the longest is the device's
// AtomicMax (atomicLimits).
const (
	atomicAlignment   = optimalGranularity
	atomicGranularity = optimalGranularity
)

// atomicLimits returns, in logical blocks, the longest atomic write of dev
// (0: none; at most the maximum transfer length maxXfer) and the longest
// WRITE ATOMIC(16) with a non-zero ATOMIC BOUNDARY, which is split into
// atomic writes of ATOMIC BOUNDARY blocks each (at most maxAtomic).
func atomicLimits(dev array.BlockDevice, maxXfer uint32) (maxAtomic, maxWithBoundary uint32) {
	n := dev.AtomicMax()
	if n <= 0 {
		return 0, 0
	}
	blocks := min(uint64(n)/sectorSize, uint64(maxXfer)) &^ (atomicGranularity - 1)
	if blocks == 0 {
		return 0, 0
	}
	return uint32(blocks), maxXfer &^ (atomicGranularity - 1)
}

// planWriteAtomic plans WRITE ATOMIC(16) (SBC-4): the alignment,
// granularity, length and boundary rules of the Block Limits page, each
// broken rule an INVALID FIELD IN CDB pointing at its field. A logical unit
// whose device makes no write atomic does not support the command.
func planWriteAtomic(t *task) {
	cdb := t.cdb[:]
	lba := binary.BigEndian.Uint64(cdb[2:10])
	boundary := uint64(binary.BigEndian.Uint16(cdb[10:12]))
	blocks := uint64(binary.BigEndian.Uint16(cdb[12:14]))
	maxAtomic, maxWithBoundary := atomicLimits(t.lun.dev, uint32(t.conn.t.cfg.MaxTransferLength/sectorSize))
	if maxAtomic == 0 {
		t.info.fail(scInvalidOpcode, senseExtra{})
		return
	}
	if cdb[1]&0xe0 != 0 {
		t.info.badCDB(1, 7) // WRPROTECT: no protection information
	}
	switch {
	case boundary == 0 && blocks > uint64(maxAtomic):
		t.info.badCDB(12, -1)
	case boundary > uint64(maxAtomic) || boundary%atomicGranularity != 0:
		t.info.badCDB(10, -1)
	case boundary != 0 && blocks > uint64(maxWithBoundary):
		t.info.badCDB(12, -1)
	}
	if lba%atomicAlignment != 0 {
		t.info.badCDB(2, -1)
	}
	if blocks%atomicGranularity != 0 {
		t.info.badCDB(12, -1)
	}
	t.checkRange(lba, blocks)
	t.info.lba, t.info.blocks = lba, blocks
	if t.info.hasErr || blocks == 0 {
		return
	}
	t.info.dir = dirOut
	t.outWant = uint32(blocks * sectorSize)
}

func planCompareWrite(t *task) {
	cdb := t.cdb[:]
	lba := binary.BigEndian.Uint64(cdb[2:10])
	blocks := uint64(cdb[13])
	if cdb[1]&0xe0 != 0 {
		t.info.badCDB(1, 7)
	}
	if blocks > maxCompareBlocks {
		t.info.badCDB(13, -1)
	}
	t.checkRange(lba, blocks)
	t.info.lba, t.info.blocks = lba, blocks
	if t.info.hasErr {
		return
	}
	t.info.dir = dirOut
	t.outWant = uint32(2 * blocks * array.SectorSize)
}

func planGetLBAStatus(t *task) {
	cdb := t.cdb[:]
	lba := binary.BigEndian.Uint64(cdb[2:10])
	alloc := binary.BigEndian.Uint32(cdb[10:14])
	if lba >= t.capacity() {
		t.info.fail(scLBAOutOfRange, senseExtra{})
		return
	}
	t.info.lba = lba
	t.info.dir = dirIn
	t.info.inAlloc = int(min(alloc, 8+16*maxLBAStatusDescs))
}

const maxLBAStatusDescs = 64

func planReadCapacity10(t *task) {
	cdb := t.cdb[:]
	if cdb[8]&1 == 0 && binary.BigEndian.Uint32(cdb[2:6]) != 0 {
		t.info.badCDB(2, -1)
	}
	t.info.dir = dirIn
	t.info.inAlloc = 8
}

func planReportLUNs(t *task) {
	cdb := t.cdb[:]
	alloc := binary.BigEndian.Uint32(cdb[6:10])
	if cdb[2] > 2 {
		t.info.badCDB(2, -1)
	}
	if alloc < 16 {
		t.info.badCDB(6, -1)
	}
	t.info.dir = dirIn
	t.info.inAlloc = int(min(alloc, 8+8*maxSessionLUNs))
}

// planAlloc plans a data-in command whose allocation length is n bytes at
// CDB offset off.
func planAlloc(off, n int) func(t *task) {
	return func(t *task) {
		var alloc uint32
		switch n {
		case 1:
			alloc = uint32(t.cdb[off])
		case 2:
			alloc = uint32(binary.BigEndian.Uint16(t.cdb[off:]))
		case 4:
			alloc = binary.BigEndian.Uint32(t.cdb[off:])
		}
		t.info.dir = dirIn
		t.info.inAlloc = int(min(alloc, maxParamData))
	}
}

// planParam plans a data-out command whose parameter list length is n
// bytes at CDB offset off.
func planParam(off, n int) func(t *task) {
	return func(t *task) {
		var plen uint32
		switch n {
		case 1:
			plen = uint32(t.cdb[off])
		case 2:
			plen = uint32(binary.BigEndian.Uint16(t.cdb[off:]))
		case 4:
			plen = binary.BigEndian.Uint32(t.cdb[off:])
		}
		if plen > maxParamData {
			t.info.fail(scParamLen, senseExtra{})
			return
		}
		t.info.dir = dirOut
		t.outWant = plen
	}
}
