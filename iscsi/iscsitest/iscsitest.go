// Package iscsitest provides in-memory implementations of array.Frontend and
// array.BlockDevice for testing the iSCSI target (and anything else that
// consumes those interfaces) without an array.
//
// MemDevice is a faithful thin-provisioned disk: storage is allocated in
// 4 KiB chunks on first write, unmapped sectors read as zeros, every method
// is safe for concurrent use (CompareAndWrite is atomic, and so is every
// WriteAt: it holds the device lock, so no reader sees part of it; AtomicMax
// reports DefaultAtomicMax unless SetAtomicMax changes it), and faults can
// be injected per LBA range and operation. Frontend holds hosts (initiator
// names, CHAP, LUNs) and signals changes to its subscribers.
package iscsitest

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"vfa/array"
)

const (
	sector      = array.SectorSize
	chunkSecs   = 8 // sectors per allocation chunk (4 KiB)
	chunkBytes  = sector * chunkSecs
	maxSectors  = 1 << 40
	maxFaults   = 1024
	maxHosts    = 1024
	maxChanSubs = 1024

	// DefaultAtomicMax is what a new MemDevice reports as AtomicMax.
	DefaultAtomicMax = 1 << 20
)

// Op selects the operations a fault applies to.
type Op uint8

const (
	OpRead  Op = 1 << iota // ReadAt, CompareAndWrite's compare, Mapped
	OpWrite                // WriteAt, WriteSame, Unmap, CompareAndWrite
	OpFlush                // Flush
	OpAll   = OpRead | OpWrite | OpFlush
)

// Fault makes operations that touch [LBA, LBA+Sectors) fail with Err.
type Fault struct {
	LBA, Sectors uint64
	Op           Op
	Err          error
}

// MemDevice is an in-memory array.BlockDevice.
type MemDevice struct {
	serial, name string

	mu      sync.RWMutex
	sectors uint64
	chunks  map[uint64]*[chunkBytes]byte // by chunk index; absent = unmapped
	faults  []Fault

	atomicMax atomic.Int64

	reads, writes, writeSames, unmaps, compares, flushes, mapped atomic.Uint64
}

// Stats counts calls by kind.
type Stats struct {
	Reads, Writes, WriteSames, Unmaps, Compares, Flushes, Mapped uint64
}

// NewMemDevice returns an empty (fully unmapped) device.
func NewMemDevice(serial, name string, sectors uint64) *MemDevice {
	if sectors > maxSectors {
		panic(fmt.Sprintf("iscsitest: %d sectors is more than %d", sectors, uint64(maxSectors)))
	}
	d := &MemDevice{serial: serial, name: name, sectors: sectors, chunks: make(map[uint64]*[chunkBytes]byte)}
	d.atomicMax.Store(DefaultAtomicMax)
	return d
}

// AtomicMax is the largest WriteAt, in bytes, that the device promises to be
// atomic. Every WriteAt holds the device lock for its whole length, so any
// size would be; the limit is what the device advertises.
func (d *MemDevice) AtomicMax() int { return int(d.atomicMax.Load()) }

// SetAtomicMax changes what AtomicMax reports (0: no atomic writes).
func (d *MemDevice) SetAtomicMax(n int) { d.atomicMax.Store(int64(max(n, 0))) }

func (d *MemDevice) Serial() string { return d.serial }
func (d *MemDevice) Name() string   { return d.name }

func (d *MemDevice) Sectors() uint64 {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.sectors
}

// Resize changes the capacity; sectors beyond a shrunk end are discarded.
func (d *MemDevice) Resize(sectors uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if sectors < d.sectors {
		d.zeroLocked(sectors, d.sectors-sectors)
	}
	d.sectors = sectors
}

// InjectFault adds a fault; it returns an error when too many are set.
func (d *MemDevice) InjectFault(f Fault) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.faults) >= maxFaults {
		return fmt.Errorf("iscsitest: more than %d faults", maxFaults)
	}
	d.faults = append(d.faults, f)
	return nil
}

// ClearFaults removes every fault.
func (d *MemDevice) ClearFaults() {
	d.mu.Lock()
	d.faults = nil
	d.mu.Unlock()
}

// Stats returns the call counters.
func (d *MemDevice) Stats() Stats {
	return Stats{
		Reads: d.reads.Load(), Writes: d.writes.Load(), WriteSames: d.writeSames.Load(),
		Unmaps: d.unmaps.Load(), Compares: d.compares.Load(), Flushes: d.flushes.Load(),
		Mapped: d.mapped.Load(),
	}
}

// MappedChunks returns how many 4 KiB chunks hold data.
func (d *MemDevice) MappedChunks() int {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return len(d.chunks)
}

func (d *MemDevice) faultLocked(op Op, lba, n uint64) error {
	for _, f := range d.faults {
		if f.Op&op == 0 {
			continue
		}
		if n == 0 {
			n = 1
		}
		if lba < f.LBA+f.Sectors && f.LBA < lba+n {
			return f.Err
		}
	}
	return nil
}

func (d *MemDevice) check(ctx context.Context, p []byte, lba uint64) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	if len(p) == 0 || len(p)%sector != 0 {
		return 0, array.ErrInvalid
	}
	n := uint64(len(p) / sector)
	if lba > d.sectors || n > d.sectors-lba {
		return 0, array.ErrOutOfRange
	}
	return n, nil
}

func (d *MemDevice) ReadAt(ctx context.Context, p []byte, lba uint64) error {
	d.reads.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	n, err := d.check(ctx, p, lba)
	if err != nil {
		return err
	}
	if err := d.faultLocked(OpRead, lba, n); err != nil {
		return err
	}
	d.readLocked(p, lba)
	return nil
}

func (d *MemDevice) readLocked(p []byte, lba uint64) {
	off := lba * sector
	for len(p) > 0 {
		ci, co := off/chunkBytes, off%chunkBytes
		k := min(uint64(len(p)), chunkBytes-co)
		if c := d.chunks[ci]; c != nil {
			copy(p[:k], c[co:co+k])
		} else {
			clear(p[:k])
		}
		p = p[k:]
		off += k
	}
}

func (d *MemDevice) WriteAt(ctx context.Context, p []byte, lba uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writes.Add(1)
	n, err := d.check(ctx, p, lba)
	if err != nil {
		return err
	}
	if err := d.faultLocked(OpWrite, lba, n); err != nil {
		return err
	}
	d.writeLocked(p, lba)
	return nil
}

func (d *MemDevice) writeLocked(p []byte, lba uint64) {
	off := lba * sector
	for len(p) > 0 {
		ci, co := off/chunkBytes, off%chunkBytes
		k := min(uint64(len(p)), chunkBytes-co)
		c := d.chunks[ci]
		if c == nil {
			c = new([chunkBytes]byte)
			d.chunks[ci] = c
		}
		copy(c[co:co+k], p[:k])
		p = p[k:]
		off += k
	}
}

// zeroLocked deallocates whole chunks in the range and zeroes the sectors
// of partly covered ones.
func (d *MemDevice) zeroLocked(lba, n uint64) {
	off, end := lba*sector, (lba+n)*sector
	for off < end {
		ci, co := off/chunkBytes, off%chunkBytes
		k := min(end-off, chunkBytes-co)
		if c := d.chunks[ci]; c != nil {
			if k == chunkBytes {
				delete(d.chunks, ci)
			} else {
				clear(c[co : co+k])
				if *c == [chunkBytes]byte{} {
					delete(d.chunks, ci)
				}
			}
		}
		off += k
	}
}

func (d *MemDevice) Unmap(ctx context.Context, lba, sectors uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.unmaps.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if lba > d.sectors || sectors > d.sectors-lba {
		return array.ErrOutOfRange
	}
	if err := d.faultLocked(OpWrite, lba, sectors); err != nil {
		return err
	}
	d.zeroLocked(lba, sectors)
	return nil
}

func (d *MemDevice) WriteSame(ctx context.Context, pattern []byte, lba, sectors uint64, unmap bool) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.writeSames.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(pattern) != sector || sectors == 0 {
		return array.ErrInvalid
	}
	if lba > d.sectors || sectors > d.sectors-lba {
		return array.ErrOutOfRange
	}
	if err := d.faultLocked(OpWrite, lba, sectors); err != nil {
		return err
	}
	if bytes.Equal(pattern, zeroSector[:]) {
		// Unmapped sectors read as zeros: deallocating is writing zeros.
		d.zeroLocked(lba, sectors)
		return nil
	}
	for i := uint64(0); i < sectors; i++ {
		d.writeLocked(pattern, lba+i)
	}
	return nil
}

var zeroSector [sector]byte

func (d *MemDevice) CompareAndWrite(ctx context.Context, lba uint64, compare, data []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.compares.Add(1)
	if len(compare) != len(data) {
		return -1, array.ErrInvalid
	}
	n, err := d.check(ctx, compare, lba)
	if err != nil {
		return -1, err
	}
	if err := d.faultLocked(OpRead|OpWrite, lba, n); err != nil {
		return -1, err
	}
	cur := make([]byte, len(compare))
	d.readLocked(cur, lba)
	for i := range cur {
		if cur[i] != compare[i] {
			return i, nil
		}
	}
	d.writeLocked(data, lba)
	return -1, nil
}

func (d *MemDevice) Flush(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.flushes.Add(1)
	if err := ctx.Err(); err != nil {
		return err
	}
	return d.faultLocked(OpFlush, 0, d.sectors)
}

func (d *MemDevice) Mapped(ctx context.Context, lba, max uint64) (bool, uint64, error) {
	d.mapped.Add(1)
	d.mu.RLock()
	defer d.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return false, 0, err
	}
	if lba >= d.sectors || max == 0 {
		return false, 0, array.ErrOutOfRange
	}
	if err := d.faultLocked(OpRead, lba, 1); err != nil {
		return false, 0, err
	}
	end := min(lba+max, d.sectors)
	ci := lba / chunkSecs
	mapped := d.chunks[ci] != nil
	n := uint64(0)
	for pos := lba; pos < end; {
		if (d.chunks[pos/chunkSecs] != nil) != mapped {
			break
		}
		next := min((pos/chunkSecs+1)*chunkSecs, end)
		n += next - pos
		pos = next
	}
	return mapped, n, nil
}

// Frontend is an in-memory array.Frontend.
type Frontend struct {
	mu     sync.Mutex
	name   string
	ready  error
	hosts  map[string]Host
	subs   map[int]chan struct{}
	nextID int
}

// Host is a host object: initiators, CHAP and the LUNs they see.
type Host struct {
	Name       string
	Initiators []string
	CHAP       array.CHAP
	LUNs       []array.LUN
}

// NewFrontend returns a frontend with no hosts.
func NewFrontend(targetName string) *Frontend {
	return &Frontend{name: targetName, hosts: make(map[string]Host), subs: make(map[int]chan struct{})}
}

// SetHost adds or replaces a host and signals a change.
func (f *Frontend) SetHost(h Host) error {
	f.mu.Lock()
	if _, ok := f.hosts[h.Name]; !ok && len(f.hosts) >= maxHosts {
		f.mu.Unlock()
		return fmt.Errorf("iscsitest: more than %d hosts", maxHosts)
	}
	h.Initiators = append([]string(nil), h.Initiators...)
	h.LUNs = append([]array.LUN(nil), h.LUNs...)
	f.hosts[h.Name] = h
	f.mu.Unlock()
	f.Notify()
	return nil
}

// RemoveHost deletes a host and signals a change.
func (f *Frontend) RemoveHost(name string) {
	f.mu.Lock()
	delete(f.hosts, name)
	f.mu.Unlock()
	f.Notify()
}

// SetReady sets what Ready returns (nil, or e.g. array.ErrLocked).
func (f *Frontend) SetReady(err error) {
	f.mu.Lock()
	f.ready = err
	f.mu.Unlock()
}

// Notify signals every subscriber (coalescing pending signals).
func (f *Frontend) Notify() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- struct{}{}:
		default:
		}
	}
}

func (f *Frontend) TargetName() string { return f.name }

func (f *Frontend) Ready() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.ready
}

func (f *Frontend) Host(initiator string) (string, array.CHAP, bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		for _, i := range h.Initiators {
			if i == initiator {
				return h.Name, h.CHAP, true
			}
		}
	}
	return "", array.CHAP{}, false
}

func (f *Frontend) LUNs(initiator string) []array.LUN {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, h := range f.hosts {
		for _, i := range h.Initiators {
			if i == initiator {
				return append([]array.LUN(nil), h.LUNs...)
			}
		}
	}
	return nil
}

func (f *Frontend) Changes() (<-chan struct{}, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	ch := make(chan struct{}, 1)
	if len(f.subs) >= maxChanSubs {
		close(ch) // a closed channel tells the caller nothing more comes
		return ch, func() {}
	}
	id := f.nextID
	f.nextID++
	f.subs[id] = ch
	var once sync.Once
	return ch, func() {
		once.Do(func() {
			f.mu.Lock()
			delete(f.subs, id)
			f.mu.Unlock()
		})
	}
}
