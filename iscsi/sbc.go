package iscsi

// SBC-3 commands (and SBC-4's WRITE ATOMIC(16)) over an array.BlockDevice: 512-byte logical blocks, 4 KiB
// physical blocks, thin provisioned with unmapped blocks reading as zeros.

import (
	"bytes"
	"encoding/binary"

	"vfa/array"
)

const (
	sectorSize = array.SectorSize
	lbppbExp   = 3 // 8 logical blocks per physical block
)

func execReadCapacity10(t *task) {
	var b [8]byte
	c := t.capacity()
	last := uint64(0xffffffff)
	if c > 0 && c-1 < last {
		last = c - 1
	}
	binary.BigEndian.PutUint32(b[0:4], uint32(last))
	binary.BigEndian.PutUint32(b[4:8], sectorSize)
	t.dataIn(b[:], 8)
}

func execReadCapacity16(t *task) {
	var b [32]byte
	c := t.capacity()
	if c > 0 {
		binary.BigEndian.PutUint64(b[0:8], c-1)
	}
	binary.BigEndian.PutUint32(b[8:12], sectorSize)
	b[13] = lbppbExp
	b[14] = 0x80 | 0x40 // LBPME, LBPRZ; lowest aligned LBA 0
	t.dataIn(b[:], int(binary.BigEndian.Uint32(t.cdb[10:14])))
}

func execRead(t *task) {
	n := int(t.info.blocks) * sectorSize
	if n == 0 {
		return
	}
	if err := t.lun.dev.ReadAt(t.conn.ctx, t.buf[:n], t.info.lba); err != nil {
		t.deviceError(err, false)
		return
	}
	t.inLen = n
}

// wholeBlocks returns the data-out the command may use: whole blocks only.
// Less data than the CDB asked for (expected transfer length too small) is
// used as far as it goes; a partial block is an error.
func (t *task) wholeBlocks() ([]byte, bool) {
	data := t.dataOut()
	if len(data)%sectorSize != 0 {
		t.fail(scInvalidFieldIU)
		return nil, false
	}
	return data, true
}

func execWrite(t *task) {
	data, ok := t.wholeBlocks()
	if !ok || len(data) == 0 {
		return
	}
	if err := t.lun.dev.WriteAt(t.conn.ctx, data, t.info.lba); err != nil {
		t.deviceError(err, true)
	}
}

// execWriteAtomic writes the data-out with one WriteAt, which the device
// makes atomic (planWriteAtomic kept it within AtomicMax), or with a
// non-zero ATOMIC BOUNDARY in atomic pieces of that many blocks. A data-out
// shorter than the CDB's transfer length writes nothing: a prefix is not
// all of an atomic write.
func execWriteAtomic(t *task) {
	n := int(t.info.blocks) * sectorSize
	if n == 0 {
		return
	}
	data := t.dataOut()
	if len(data) != n {
		t.badCDB(12, -1)
		return
	}
	step := n
	if b := int(binary.BigEndian.Uint16(t.cdb[10:12])); b != 0 {
		step = b * sectorSize
	}
	for off := 0; off < n; off += step {
		end := min(off+step, n)
		if err := t.lun.dev.WriteAt(t.conn.ctx, data[off:end], t.info.lba+uint64(off/sectorSize)); err != nil {
			t.deviceError(err, true)
			return
		}
	}
}

// execWriteVerify writes, then with BYTCHK reads back and compares.
func execWriteVerify(t *task) {
	data, ok := t.wholeBlocks()
	if !ok || len(data) == 0 {
		return
	}
	dev := t.lun.dev
	if err := dev.WriteAt(t.conn.ctx, data, t.info.lba); err != nil {
		t.deviceError(err, true)
		return
	}
	if t.cdb[1]&0x02 == 0 {
		return
	}
	m := t.medium()[:len(data)]
	if err := dev.ReadAt(t.conn.ctx, m, t.info.lba); err != nil {
		t.deviceError(err, false)
		return
	}
	if i := mismatch(m, data); i >= 0 {
		t.check(scMiscompare, senseExtra{info: uint64(i), infoValid: true})
	}
}

// mismatch returns the offset of the first differing byte, or -1.
func mismatch(a, b []byte) int {
	if bytes.Equal(a, b) {
		return -1
	}
	for i := range a {
		if a[i] != b[i] {
			return i
		}
	}
	return -1
}

func execVerify(t *task) {
	n := int(t.info.blocks) * sectorSize
	if n == 0 {
		return
	}
	m := t.medium()[:n]
	if err := t.lun.dev.ReadAt(t.conn.ctx, m, t.info.lba); err != nil {
		t.deviceError(err, false)
		return
	}
	switch (t.cdb[1] >> 1) & 3 {
	case 1:
		data, ok := t.wholeBlocks()
		if !ok {
			return
		}
		if i := mismatch(m[:len(data)], data); i >= 0 {
			t.check(scMiscompare, senseExtra{info: uint64(i), infoValid: true})
		}
	case 3:
		data := t.dataOut()
		if len(data) != sectorSize {
			t.fail(scInvalidFieldIU)
			return
		}
		for off := 0; off < n; off += sectorSize {
			if i := mismatch(m[off:off+sectorSize], data); i >= 0 {
				t.check(scMiscompare, senseExtra{info: uint64(off + i), infoValid: true})
				return
			}
		}
	}
}

func execPrefetch(t *task) {
	// There is no cache to load: GOOD (SBC-3: the blocks are not all in
	// cache, so not CONDITION MET).
}

func execSyncCache(t *task) {
	if err := t.lun.dev.Flush(t.conn.ctx); err != nil {
		t.deviceError(err, true)
	}
}

func execWriteSame(t *task) {
	cdb := t.cdb[:]
	unmap := cdb[1]&0x08 != 0
	ndob := cdb[0] == opWriteSame16 && cdb[1]&0x01 != 0
	var pattern []byte
	if ndob {
		pattern = zeroBlock[:]
	} else {
		if !t.write || t.edtl != sectorSize {
			// The data-out must be exactly one logical block.
			t.badCDB(0, -1)
			return
		}
		pattern = t.dataOut()
	}
	if t.info.blocks == 0 {
		return
	}
	var err error
	if unmap {
		// UNMAP=1 deallocates whatever the data-out holds (as LIO and tgtd
		// do, and as iscsi-test-cu's WriteSame*.UnmapUntilEnd expects);
		// with LBPRZ=1 the blocks then read as zeros.
		err = t.lun.dev.Unmap(t.conn.ctx, t.info.lba, t.info.blocks)
	} else {
		err = t.lun.dev.WriteSame(t.conn.ctx, pattern, t.info.lba, t.info.blocks, false)
	}
	if err != nil {
		t.deviceError(err, true)
	}
}

var zeroBlock [sectorSize]byte

func execUnmap(t *task) {
	if t.cdb[1]&0x01 != 0 { // ANCHOR: ANC_SUP is 0
		t.badCDB(1, 0)
		return
	}
	plen := int(binary.BigEndian.Uint16(t.cdb[7:9]))
	if plen == 0 {
		return
	}
	data := t.dataOut()
	if plen < 8 || len(data) < 8 {
		t.fail(scParamLen)
		return
	}
	bdLen := int(binary.BigEndian.Uint16(data[2:4]))
	bdLen = min(bdLen, len(data)-8) &^ 15
	n := bdLen / 16
	if n > maxUnmapDescs {
		t.badParam(2, -1) // more descriptors than the Block Limits page allows
		return
	}
	c := t.capacity()
	var total uint64
	for i := range n {
		d := data[8+16*i:]
		lba := binary.BigEndian.Uint64(d[0:8])
		cnt := uint64(binary.BigEndian.Uint32(d[8:12]))
		if lba > c || cnt > c-lba {
			t.fail(scLBAOutOfRange)
			return
		}
		total += cnt
	}
	if total > maxUnmapBlocks {
		t.badParam(8, -1)
		return
	}
	for i := range n {
		d := data[8+16*i:]
		lba := binary.BigEndian.Uint64(d[0:8])
		cnt := uint64(binary.BigEndian.Uint32(d[8:12]))
		if cnt == 0 {
			continue
		}
		if err := t.lun.dev.Unmap(t.conn.ctx, lba, cnt); err != nil {
			t.deviceError(err, true)
			return
		}
	}
}

// execGetLBAStatus reports mapped and deallocated extents from the starting
// LBA. Provisioning is tracked per 4 KiB physical block, so a starting LBA
// inside a physical block is reported from the next physical block
// boundary (what iscsi-test-cu's GetLBAStatus.UnmapSingle expects; QEMU
// queries aligned addresses).
func execGetLBAStatus(t *task) {
	alloc := int(binary.BigEndian.Uint32(t.cdb[10:14]))
	c := t.capacity()
	lba := t.info.lba
	if r := lba % optimalGranularity; r != 0 && lba-r+optimalGranularity < c {
		lba += optimalGranularity - r
	}
	maxDescs := min(max((alloc-8)/16, 1), maxLBAStatusDescs)
	out := make([]byte, 8, 8+16*maxDescs)
	for d := 0; d < maxDescs && lba < c; d++ {
		mapped, n, err := t.lun.dev.Mapped(t.conn.ctx, lba, min(c-lba, 0xffffffff))
		if err != nil {
			t.deviceError(err, false)
			return
		}
		if n == 0 {
			n = 1
		}
		n = min(n, c-lba)
		out = binary.BigEndian.AppendUint64(out, lba)
		out = binary.BigEndian.AppendUint32(out, uint32(n))
		state := byte(0) // mapped
		if !mapped {
			state = 1 // deallocated
		}
		out = append(out, state, 0, 0, 0)
		lba += n
	}
	binary.BigEndian.PutUint32(out[0:4], uint32(len(out)-4))
	t.dataIn(out, alloc)
}

func execCompareWrite(t *task) {
	n := int(t.info.blocks) * sectorSize
	if !t.write || t.edtl != uint32(2*n) {
		// The data-out must hold exactly the compare and write data.
		t.badCDB(13, -1)
		return
	}
	if n == 0 {
		return
	}
	data := t.dataOut()
	at, err := t.lun.dev.CompareAndWrite(t.conn.ctx, t.info.lba, data[:n], data[n:2*n])
	if err != nil {
		t.deviceError(err, true)
		return
	}
	if at >= 0 {
		t.check(scMiscompare, senseExtra{info: uint64(at), infoValid: true})
	}
}

// execOrWrite ORs the data-out into the medium atomically: read, OR,
// compare-and-write, retried while other writers change the blocks.
func execOrWrite(t *task) {
	data, ok := t.wholeBlocks()
	if !ok || len(data) == 0 {
		return
	}
	n := len(data)
	m := t.medium()
	cur, next := m[:n], m[n:2*n]
	dev := t.lun.dev
	for try := 0; try < 16; try++ {
		if err := dev.ReadAt(t.conn.ctx, cur, t.info.lba); err != nil {
			t.deviceError(err, false)
			return
		}
		for i := range next {
			next[i] = cur[i] | data[i]
		}
		at, err := dev.CompareAndWrite(t.conn.ctx, t.info.lba, cur, next)
		if err != nil {
			t.deviceError(err, true)
			return
		}
		if at < 0 {
			return
		}
	}
	t.fail(scInternalFailure)
}
