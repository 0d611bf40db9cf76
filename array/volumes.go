package array

import (
	"context"
	"errors"
	"fmt"

	"vfa/datapath"
)

// Volumes as the array presents them: names validated, connections kept
// consistent, errors mapped onto the front-end error set.

// Volume describes a volume or snapshot.
type Volume = datapath.VolumeInfo

// mapErr turns data-path errors into the array's front-end errors (keeping
// the original text).
func mapErr(err error) error {
	if err == nil {
		return nil
	}
	var target error
	switch {
	case errors.Is(err, datapath.ErrLocked):
		target = ErrLocked
	case errors.Is(err, datapath.ErrOutOfRange):
		target = ErrOutOfRange
	case errors.Is(err, datapath.ErrInvalid):
		target = ErrInvalid
	case errors.Is(err, datapath.ErrNoSpace):
		target = ErrNoSpace
	case errors.Is(err, datapath.ErrHostKey):
		target = ErrHostKey
	case errors.Is(err, datapath.ErrDestroyed), errors.Is(err, datapath.ErrNotFound), errors.Is(err, datapath.ErrClosed):
		target = ErrGone
	case errors.Is(err, datapath.ErrMedium):
		target = ErrMedium
	default:
		return err
	}
	if errors.Is(err, target) {
		return err
	}
	return fmt.Errorf("%w: %v", target, err)
}

// CreateVolume makes a thin volume of size bytes.
func (a *Array) CreateVolume(name string, size int64) (Volume, error) {
	if err := ValidName(name); err != nil {
		return Volume{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := a.store.CreateVolume(name, size)
	if err == nil {
		a.changes.notify()
	}
	return v, err
}

// Volumes lists volumes and snapshots.
func (a *Array) Volumes() []Volume { return a.store.Volumes() }

// LookupVolume finds a volume or snapshot by name.
func (a *Array) LookupVolume(name string) (Volume, error) {
	v, err := a.store.Lookup(name)
	if err != nil {
		return Volume{}, err
	}
	return v.Info(), nil
}

// DestroyVolume destroys a volume: it is disconnected from every host and
// host group and can be recovered until it is eradicated.
func (a *Array) DestroyVolume(name string) error {
	v, err := a.store.Lookup(name)
	if err != nil {
		return err
	}
	if err := a.objects.disconnectAll(v.ID()); err != nil {
		return err
	}
	if err := a.store.DestroyVolume(v.ID()); err != nil {
		return err
	}
	a.changes.notify()
	return nil
}

// RecoverVolume undoes DestroyVolume (connections are not restored).
func (a *Array) RecoverVolume(name string) error {
	v, err := a.store.Lookup(name)
	if err != nil {
		return err
	}
	return a.store.RecoverVolume(v.ID())
}

// EradicateVolume deletes a destroyed volume for good.
func (a *Array) EradicateVolume(name string) error {
	v, err := a.store.Lookup(name)
	if err != nil {
		return err
	}
	return a.store.EradicateVolume(v.ID())
}

// RenameVolume renames a volume or snapshot.
func (a *Array) RenameVolume(name, newName string) error {
	if err := ValidName(newName); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := a.store.Lookup(name)
	if err != nil {
		return err
	}
	if err := a.store.RenameVolume(v.ID(), newName); err != nil {
		return err
	}
	a.changes.notify()
	return nil
}

// ResizeVolume changes a volume's size (shrinking needs truncate).
func (a *Array) ResizeVolume(name string, size int64, truncate bool) error {
	v, err := a.store.Lookup(name)
	if err != nil {
		return err
	}
	if err := a.store.ResizeVolume(v.ID(), size, truncate); err != nil {
		return err
	}
	a.changes.notify()
	return nil
}

// SnapshotVolume takes a snapshot named "<name>.<suffix>".
func (a *Array) SnapshotVolume(name, suffix string) (Volume, error) {
	if err := ValidName(suffix); err != nil {
		return Volume{}, fmt.Errorf("%w: suffix: %v", ErrInvalid, err)
	}
	v, err := a.store.Lookup(name)
	if err != nil {
		return Volume{}, err
	}
	return a.store.Snapshot(v.ID(), suffix)
}

// CopyVolume clones src (volume or snapshot) into dst.
func (a *Array) CopyVolume(src, dst string, overwrite bool) (Volume, error) {
	if err := ValidName(dst); err != nil {
		return Volume{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := a.store.Lookup(src)
	if err != nil {
		return Volume{}, err
	}
	out, err := a.store.CopyVolume(v.ID(), dst, overwrite)
	if err == nil {
		a.changes.notify()
	}
	return out, err
}

// Device returns the block device of a volume (for tests and tools that
// bypass LUN masking).
func (a *Array) Device(name string) (BlockDevice, error) {
	v, err := a.store.Lookup(name)
	if err != nil {
		return nil, err
	}
	return &volDev{v: v}, nil
}

// volDev adapts a datapath volume to BlockDevice.
type volDev struct{ v *datapath.Volume }

func (d *volDev) Serial() string  { return d.v.Info().Serial }
func (d *volDev) Name() string    { return d.v.Info().Name }
func (d *volDev) Sectors() uint64 { return uint64(d.v.Info().Size) / SectorSize }
func (d *volDev) ReadAt(ctx context.Context, p []byte, lba uint64) error {
	return mapErr(d.v.Read(ctx, p, lba))
}
func (d *volDev) WriteAt(ctx context.Context, p []byte, lba uint64) error {
	return mapErr(d.v.Write(ctx, p, lba))
}
func (d *volDev) Unmap(ctx context.Context, lba, n uint64) error {
	return mapErr(d.v.Unmap(ctx, lba, n))
}
func (d *volDev) WriteSame(ctx context.Context, pattern []byte, lba, n uint64, unmap bool) error {
	return mapErr(d.v.WriteSame(ctx, pattern, lba, n, unmap))
}
func (d *volDev) CompareAndWrite(ctx context.Context, lba uint64, cmp, data []byte) (int, error) {
	n, err := d.v.CompareAndWrite(ctx, lba, cmp, data)
	return n, mapErr(err)
}
func (d *volDev) Flush(ctx context.Context) error { return mapErr(d.v.Flush(ctx)) }
func (d *volDev) Mapped(ctx context.Context, lba, max uint64) (bool, uint64, error) {
	m, n, err := d.v.Mapped(ctx, lba, max)
	return m, n, mapErr(err)
}

// AtomicMax: a write that fits in one NVRAM record is replayed entirely or
// not at all, and enters the read index under one lock.
func (d *volDev) AtomicMax() int { return d.v.MaxAtomic() }

// Flush moves everything acknowledged so far from NVRAM into segments, so
// that the space report counts it.
func (a *Array) Flush() error { return mapErr(a.store.Flush()) }
