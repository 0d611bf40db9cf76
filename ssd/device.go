package ssd

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
)

// Errors callers act on. Test with errors.Is.
var (
	// ErrMissing: the device file does not exist.
	ErrMissing = errors.New("device file missing")
	// ErrExists: Create found a file already at the path.
	ErrExists = errors.New("device file already exists")
	// ErrBadSuperblock: neither superblock copy is valid, or the valid one does
	// not describe an SSD of a sane shape.
	ErrBadSuperblock = errors.New("no valid superblock")
	// ErrTruncated: the device file is shorter than its capacity.
	ErrTruncated = errors.New("truncated")
	// ErrDeviceFailed: the device failed at run time (an I/O error on write or
	// sync, or marked failed by the caller).
	ErrDeviceFailed = errors.New("device failed")
	// ErrForeign: a device belongs to another array.
	ErrForeign = errors.New("device belongs to another array")
	// ErrMismatch: devices disagree on the shape of the set (device count, AU
	// size, slot), or a slot is taken twice.
	ErrMismatch = errors.New("devices do not form one set")
	// ErrHostFull: the file system holding the device files has no space
	// left (ENOSPC). It is the host's condition, not the device's: the
	// devices stay in service, and the rows of the failed write must not be
	// used (the caller abandons them, as after any failed write).
	ErrHostFull = errors.New("host file system full")
	// ErrTooManyFailed: more than two devices of the set are missing or failed.
	ErrTooManyFailed = errors.New("too many devices missing or failed")
	// ErrUnrecoverable: a stripe row has more than two bad pages (or its pages
	// disagree with its parity in a way that cannot be located); the data is
	// lost. The caller maps it to MEDIUM ERROR.
	ErrUnrecoverable = errors.New("unrecoverable read error")
	// ErrRange: an AU index, payload range, length or segment id is out of
	// range.
	ErrRange = errors.New("out of range")
	// ErrClosed: the set or device is closed.
	ErrClosed = errors.New("closed")
	// ErrRewrite: rows of a segment that were already written are written
	// again (which would reuse their keystream).
	ErrRewrite = errors.New("segment rows already written")
	// ErrInUse: the device already belongs to a set.
	ErrInUse = errors.New("device already in a set")
)

// Device is one open virtual SSD file. It is safe for concurrent use.
type Device struct {
	name string // "ssd03": the file's base name without ".dev"
	path string
	f    vfs.File

	// Identity and shape, fixed at Open/Create.
	arrayID  [16]byte
	deviceID [16]byte
	slot     int
	devices  int
	auSize   int64
	capacity int64

	sbMu sync.Mutex // serialises superblock writes
	sb   *devsb.Superblock

	failure atomic.Pointer[error] // first reason the device failed; nil = healthy
	inSet   atomic.Bool
	closed  atomic.Bool
}

// deviceName derives "ssd03" from ".../ssd03.dev".
func deviceName(fsys vfs.FS, path string) string {
	return strings.TrimSuffix(fsys.PathBase(path), ".dev")
}

// checkShape validates the fields of an SSD superblock that the set relies on.
func checkShape(sb *devsb.Superblock) error {
	switch {
	case sb.Kind != devsb.KindSSD:
		return fmt.Errorf("kind %s, not an ssd", sb.Kind)
	case sb.Devices < MinDevices || sb.Devices > MaxDevices:
		return fmt.Errorf("device count %d not in [%d, %d]", sb.Devices, MinDevices, MaxDevices)
	case sb.Slot >= sb.Devices:
		return fmt.Errorf("slot %d of %d devices", sb.Slot, sb.Devices)
	case sb.AUSize%PageSize != 0 || sb.AUSize < MinAUSize || sb.AUSize > MaxAUSize:
		return fmt.Errorf("AU size %d is not a multiple of %d in [%d, %d]", sb.AUSize, PageSize, MinAUSize, MaxAUSize)
	case sb.Capacity < 2*int64(sb.AUSize):
		return fmt.Errorf("capacity %d holds no AU of %d bytes", sb.Capacity, sb.AUSize)
	}
	return nil
}

func cloneSB(sb *devsb.Superblock) *devsb.Superblock {
	c := *sb
	for _, ks := range []*devsb.KeySlot{&c.Cur, &c.Prev} {
		ks.AKShare = bytes.Clone(ks.AKShare)
		ks.DEKPart = bytes.Clone(ks.DEKPart)
		ks.WrappedMediaKey = bytes.Clone(ks.WrappedMediaKey)
	}
	c.Extra = bytes.Clone(sb.Extra)
	return &c
}

func newDevice(fsys vfs.FS, path string, f vfs.File, sb *devsb.Superblock) *Device {
	return &Device{
		name: deviceName(fsys, path), path: path, f: f,
		arrayID: sb.ArrayID, deviceID: sb.DeviceID, slot: int(sb.Slot), devices: int(sb.Devices),
		auSize: int64(sb.AUSize), capacity: sb.Capacity,
		sb: cloneSB(sb),
	}
}

// Create creates a sparse device file of sb.Capacity bytes at path and writes
// both superblock copies (generations sb.Generation+1 and +2). sb must
// describe an SSD (Kind may be left zero); Create does not modify it. An
// existing file is never overwritten (ErrExists).
func Create(fsys vfs.FS, path string, sb *devsb.Superblock) (*Device, error) {
	name := deviceName(fsys, path)
	sb = cloneSB(sb)
	if sb.Kind == 0 {
		sb.Kind = devsb.KindSSD
	}
	if err := checkShape(sb); err != nil {
		return nil, fmt.Errorf("ssd: create %s: %w", name, err)
	}
	if _, err := sb.Marshal(); err != nil {
		return nil, fmt.Errorf("ssd: create %s: %w", name, err)
	}
	if _, err := fsys.Stat(path); err == nil {
		return nil, fmt.Errorf("ssd: create %s: %w: %s", name, ErrExists, path)
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("ssd: create %s: %w", name, err)
	}
	f, err := fsys.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, fmt.Errorf("ssd: create %s: %w", name, err)
	}
	fail := func(err error) (*Device, error) {
		f.Close()
		fsys.Remove(path)
		return nil, fmt.Errorf("ssd: create %s: %w", name, err)
	}
	// A sparse file of the full capacity: write its last byte.
	if _, err := f.WriteAt([]byte{0}, sb.Capacity-1); err != nil {
		return fail(err)
	}
	// Two writes fill both copies, so each is valid from the start.
	for range devsb.Copies {
		if err := devsb.Write(f, sb); err != nil {
			return fail(err)
		}
	}
	if err := syncDir(fsys, path); err != nil {
		return fail(err)
	}
	return newDevice(fsys, path, f, sb), nil
}

func syncDir(fsys vfs.FS, path string) error {
	d, err := fsys.OpenDir(fsys.PathDir(path))
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Open opens an existing device file and returns it with its superblock (a
// copy the caller may keep). A missing file (ErrMissing), or one where
// neither superblock copy is valid (ErrBadSuperblock), is an error naming the
// device. A file shorter than its capacity opens as a failed device:
// Failed() then says why (ErrTruncated, e.g. "ssd03: truncated: 12 MiB of
// 64 MiB"), its superblock is still returned (it holds key material), and a
// Set treats it as unavailable.
func Open(fsys vfs.FS, path string) (*Device, *devsb.Superblock, error) {
	name := deviceName(fsys, path)
	if _, err := fsys.Stat(path); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("ssd: %s: %w: %s", name, ErrMissing, path)
		}
		return nil, nil, fmt.Errorf("ssd: %s: %w", name, err)
	}
	f, err := fsys.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return nil, nil, fmt.Errorf("ssd: %s: open: %w", name, err)
	}
	sb, err := devsb.Read(f)
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ssd: %s: %w: %w", name, ErrBadSuperblock, err)
	}
	if err := checkShape(sb); err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ssd: %s: %w: %v", name, ErrBadSuperblock, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("ssd: %s: stat: %w", name, err)
	}
	d := newDevice(fsys, path, f, sb)
	if size := st.Size(); size < sb.Capacity {
		d.fail(fmt.Errorf("%s: %w: %s of %s", name, ErrTruncated, fmtBytes(size), fmtBytes(sb.Capacity)))
	}
	return d, cloneSB(sb), nil
}

// fmtBytes formats a byte count for people: "12 MiB", "1.5 GiB", "4000 bytes".
func fmtBytes(n int64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB"}
	if n < 1<<10 {
		return fmt.Sprintf("%d bytes", n)
	}
	v, u := float64(n)/(1<<10), 0
	for v >= 1<<10 && u < len(units)-1 {
		v /= 1 << 10
		u++
	}
	if v == float64(int64(v)) {
		return fmt.Sprintf("%d %s", int64(v), units[u])
	}
	return fmt.Sprintf("%.1f %s", v, units[u])
}

// Name is the device's name, "ssd03" for ".../ssd03.dev".
func (d *Device) Name() string { return d.name }

// Path is the device file's path.
func (d *Device) Path() string { return d.path }

// Slot is the device's slot in its set.
func (d *Device) Slot() int { return d.slot }

// Superblock returns a copy of the device's current superblock.
func (d *Device) Superblock() *devsb.Superblock {
	d.sbMu.Lock()
	defer d.sbMu.Unlock()
	return cloneSB(d.sb)
}

// Failed returns why the device is failed, or nil while it is healthy.
func (d *Device) Failed() error {
	if p := d.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// fail marks the device failed; the first reason sticks.
func (d *Device) fail(reason error) {
	d.failure.CompareAndSwap(nil, &reason)
}

// UpdateSuperblock applies fn to a copy of the superblock and writes it
// durably with devsb.Write (the other copy keeps the previous generation).
// fn may change key slots, Epoch and Extra; a change to the device's identity
// or shape (kind, array id, device id, slot, device count, AU size,
// capacity) is refused. An I/O error marks the device failed.
func (d *Device) UpdateSuperblock(fn func(*devsb.Superblock)) error {
	if d.closed.Load() {
		return fmt.Errorf("ssd: %s: update superblock: %w", d.name, ErrClosed)
	}
	d.sbMu.Lock()
	defer d.sbMu.Unlock()
	sb := cloneSB(d.sb)
	fn(sb)
	if sb.Kind != d.sb.Kind || sb.ArrayID != d.sb.ArrayID || sb.DeviceID != d.sb.DeviceID ||
		sb.Slot != d.sb.Slot || sb.Devices != d.sb.Devices || sb.AUSize != d.sb.AUSize || sb.Capacity != d.sb.Capacity {
		return fmt.Errorf("ssd: %s: update superblock: identity or shape changed", d.name)
	}
	sb.Generation = d.sb.Generation
	if _, err := sb.Marshal(); err != nil {
		return fmt.Errorf("ssd: %s: update superblock: %w", d.name, err)
	}
	if err := devsb.Write(d.f, sb); err != nil {
		err = fmt.Errorf("ssd: %s: update superblock: %w", d.name, err)
		d.fail(fmt.Errorf("%s: %w: %w", d.name, ErrDeviceFailed, err))
		return err
	}
	d.sb = sb
	return nil
}

// Close closes the device file. It is idempotent. A device in a set is
// closed by the set's Close, not directly.
func (d *Device) Close() error {
	if !d.closed.CompareAndSwap(false, true) {
		return nil
	}
	if err := d.f.Close(); err != nil {
		return fmt.Errorf("ssd: %s: close: %w", d.name, err)
	}
	return nil
}
