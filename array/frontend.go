package array

import (
	"context"
	"errors"
)

// This file is the contract between the array and its front ends (the iSCSI
// target today). A front end sees volumes only as BlockDevices and learns who
// may see which LUN from a Frontend. It never reaches into datapath.

// SectorSize is the logical block size of every volume, in bytes.
const SectorSize = 512

// Errors a BlockDevice returns. Front ends map them to protocol status (for
// SCSI: sense data) with errors.Is; anything else is a hardware/medium error.
var (
	// ErrLocked: the array is locked (no key); the LUN is NOT READY.
	ErrLocked = errors.New("array is locked")
	// ErrOutOfRange: the I/O reaches beyond the end of the volume.
	ErrOutOfRange = errors.New("logical block address out of range")
	// ErrInvalid: a zero-length, misaligned or otherwise malformed request.
	ErrInvalid = errors.New("invalid request")
	// ErrMedium: stored data could not be read back intact (after parity repair).
	ErrMedium = errors.New("unrecovered read error")
	// ErrNoSpace: the array has no space for the write; nothing was written.
	ErrNoSpace = errors.New("array is out of space")
	// ErrHostKey: the volume's host key is unavailable; nothing was written in
	// the clear and nothing is returned.
	ErrHostKey = errors.New("host key unavailable")
	// ErrGone: the volume was destroyed or disconnected while the command ran.
	ErrGone = errors.New("volume no longer available")
)

// BlockDevice is a volume as a front end sees it. Addresses and lengths are in
// SectorSize units; buffers are whole sectors. Every method is safe for
// concurrent use. A method that returns nil has done all it was asked: a
// write that returns nil is durable (it survives a crash).
type BlockDevice interface {
	// Serial is the volume's 24-hex-digit serial number (upper case).
	Serial() string
	// Name is the volume's name.
	Name() string
	// Sectors is the volume's size in logical blocks.
	Sectors() uint64

	ReadAt(ctx context.Context, p []byte, lba uint64) error
	WriteAt(ctx context.Context, p []byte, lba uint64) error
	// Unmap deallocates; unmapped sectors read back as zeros.
	Unmap(ctx context.Context, lba, sectors uint64) error
	// WriteSame writes the one-sector pattern to every sector of the range.
	// With unmap set, and a zero pattern, the range is deallocated instead.
	WriteSame(ctx context.Context, pattern []byte, lba, sectors uint64, unmap bool) error
	// CompareAndWrite atomically compares len(compare) bytes at lba with
	// compare and, only if all are equal, writes data there. It returns the
	// byte offset of the first mismatch, or -1 when it wrote.
	CompareAndWrite(ctx context.Context, lba uint64, compare, data []byte) (mismatch int, err error)
	// Flush returns once every write that returned before it is durable.
	Flush(ctx context.Context) error
	// Mapped reports whether lba is mapped (holds written data) and how many
	// sectors from lba on share that state, up to max.
	Mapped(ctx context.Context, lba, max uint64) (mapped bool, sectors uint64, err error)
	// AtomicMax is the largest write, in bytes, that is atomic: a WriteAt of
	// at most AtomicMax bytes is, after a crash and to every concurrent
	// reader, either done entirely or not at all. 0 means no write is
	// promised to be atomic.
	AtomicMax() int
}

// CHAP holds a host's CHAP credentials. Empty User means CHAP is not
// required for that host. TargetUser/TargetSecret enable mutual CHAP.
type CHAP struct {
	User, Secret             string
	TargetUser, TargetSecret string
}

// LUN is one volume as seen by one initiator.
type LUN struct {
	Number uint64
	Device BlockDevice
}

// Frontend is what a front end needs from the array.
type Frontend interface {
	// TargetName is the array's iSCSI target name.
	TargetName() string
	// Ready is nil when the array serves data, or an error (ErrLocked) that
	// says why not.
	Ready() error
	// Host returns the name of the host an initiator belongs to, its CHAP
	// settings and ok; ok is false for an initiator in no host (it may log in
	// but sees no LUNs, and CHAP is not required of it).
	Host(initiator string) (host string, chap CHAP, ok bool)
	// LUNs lists the LUNs an initiator sees, sorted by number. An initiator in
	// no host sees none.
	LUNs(initiator string) []LUN
	// Changes returns a channel that receives a value after any change to
	// hosts, connections or volume sizes, and a function that stops it.
	Changes() (<-chan struct{}, func())
}
