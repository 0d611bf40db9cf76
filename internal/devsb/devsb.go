// Package devsb encodes the superblock that starts every vfa device file (each
// virtual SSD and the NVRAM).
//
// A device keeps two copies of its superblock so that a torn write of one copy
// leaves the other intact. Every write increments Generation and goes to the
// copy slot Generation%2, so the newest valid copy always wins and the copy it
// replaces is the older one.
//
// On-disk layout, format version 1 (all integers little-endian):
//
//	device offset 0      copy slot 0  (Size bytes)
//	device offset Size   copy slot 1  (Size bytes)
//	device offset 2*Size device data (AUs for an SSD, the log for NVRAM)
//
// One copy (Size = 4096 bytes):
//
//	off  len  field
//	  0    8  magic "VFADEVSB"
//	  8    4  format version (Version)
//	 12    1  kind (1 = SSD, 2 = NVRAM)
//	 13    3  reserved, zero
//	 16    8  generation (superblock write counter, >= 1)
//	 24   16  array id
//	 40   16  device id (uuid)
//	 56    2  slot (SSD index; 0 for NVRAM)
//	 58    2  devices in the array (SSD count)
//	 60    4  allocation-unit size in bytes (SSD; 0 for NVRAM)
//	 64    8  capacity in bytes (the device file's full size)
//	 72    8  epoch (NVRAM boot epoch; 0 for SSD)
//	 80    -  key slot "current", then key slot "previous", each:
//	            8  key generation (0 = empty slot)
//	            1  threshold (shares needed to rebuild the array key)
//	            1  flags (bit 0: AK share sealed by the security token)
//	            2  length of AK share      (<= MaxField)
//	            2  length of DEK partition (<= MaxField)
//	            2  length of wrapped media key (<= MaxField)
//	            n  AK share, DEK partition, wrapped media key
//	  -    2  length of extra (<= MaxField), then extra bytes
//	 4064  32 SHA-256 of bytes [0, 4064)
//
// Bytes between the last field and offset 4064 are zero. A copy whose magic,
// version or checksum is wrong is invalid; Read reports why both copies failed
// when neither is valid.
package devsb

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Size is the size of one superblock copy; Copies copies start the device, so
// device data starts at DataOffset.
const (
	Size       = 4096
	Copies     = 2
	DataOffset = Size * Copies
	Version    = 1
	MaxField   = 256
	sumOffset  = Size - sha256.Size
)

var magic = [8]byte{'V', 'F', 'A', 'D', 'E', 'V', 'S', 'B'}

// Kind says what a device is.
type Kind uint8

const (
	KindSSD   Kind = 1
	KindNVRAM Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindSSD:
		return "ssd"
	case KindNVRAM:
		return "nvram"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Errors returned by Unmarshal and Read.
var (
	ErrBadMagic = errors.New("not a vfa device (bad magic)")
	ErrVersion  = errors.New("unsupported superblock format version")
	ErrChecksum = errors.New("superblock checksum mismatch")
	ErrCorrupt  = errors.New("superblock fields out of range")
)

// KeySlot is one generation of key material held by a device.
type KeySlot struct {
	Gen             uint64 // array key generation; 0 means the slot is empty
	Threshold       uint8  // shares needed to rebuild the array key
	Sealed          bool   // AKShare is sealed by the security token
	AKShare         []byte // this device's share of the array key (nil for NVRAM)
	DEKPart         []byte // this device's partition of the wrapped DEK (nil for NVRAM)
	WrappedMediaKey []byte // the device media key wrapped by its unlock key
}

// Superblock is the decoded form of one copy.
type Superblock struct {
	Kind       Kind
	Generation uint64
	ArrayID    [16]byte
	DeviceID   [16]byte
	Slot       uint16
	Devices    uint16
	AUSize     uint32
	Capacity   int64
	Epoch      uint64
	Cur, Prev  KeySlot
	Extra      []byte
}

// Marshal encodes sb into exactly Size bytes.
func (sb *Superblock) Marshal() ([]byte, error) {
	b := make([]byte, 0, Size)
	b = append(b, magic[:]...)
	b = binary.LittleEndian.AppendUint32(b, Version)
	b = append(b, byte(sb.Kind), 0, 0, 0)
	b = binary.LittleEndian.AppendUint64(b, sb.Generation)
	b = append(b, sb.ArrayID[:]...)
	b = append(b, sb.DeviceID[:]...)
	b = binary.LittleEndian.AppendUint16(b, sb.Slot)
	b = binary.LittleEndian.AppendUint16(b, sb.Devices)
	b = binary.LittleEndian.AppendUint32(b, sb.AUSize)
	b = binary.LittleEndian.AppendUint64(b, uint64(sb.Capacity))
	b = binary.LittleEndian.AppendUint64(b, sb.Epoch)
	for _, ks := range []*KeySlot{&sb.Cur, &sb.Prev} {
		if len(ks.AKShare) > MaxField || len(ks.DEKPart) > MaxField || len(ks.WrappedMediaKey) > MaxField {
			return nil, fmt.Errorf("superblock: key slot field longer than %d bytes", MaxField)
		}
		b = binary.LittleEndian.AppendUint64(b, ks.Gen)
		var flags byte
		if ks.Sealed {
			flags |= 1
		}
		b = append(b, ks.Threshold, flags)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(ks.AKShare)))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(ks.DEKPart)))
		b = binary.LittleEndian.AppendUint16(b, uint16(len(ks.WrappedMediaKey)))
		b = append(b, ks.AKShare...)
		b = append(b, ks.DEKPart...)
		b = append(b, ks.WrappedMediaKey...)
	}
	if len(sb.Extra) > MaxField {
		return nil, fmt.Errorf("superblock: extra longer than %d bytes", MaxField)
	}
	b = binary.LittleEndian.AppendUint16(b, uint16(len(sb.Extra)))
	b = append(b, sb.Extra...)
	if len(b) > sumOffset {
		return nil, errors.New("superblock: fields do not fit")
	}
	b = b[:Size]
	sum := sha256.Sum256(b[:sumOffset])
	copy(b[sumOffset:], sum[:])
	return b, nil
}

// Unmarshal decodes one copy. It never panics on arbitrary input.
func Unmarshal(b []byte) (*Superblock, error) {
	if len(b) < Size {
		return nil, fmt.Errorf("%w: %d bytes", ErrCorrupt, len(b))
	}
	b = b[:Size]
	if !bytes.Equal(b[:8], magic[:]) {
		return nil, ErrBadMagic
	}
	if v := binary.LittleEndian.Uint32(b[8:]); v != Version {
		return nil, fmt.Errorf("%w %d (this build reads %d)", ErrVersion, v, Version)
	}
	sum := sha256.Sum256(b[:sumOffset])
	if !bytes.Equal(sum[:], b[sumOffset:]) {
		return nil, ErrChecksum
	}
	return decodeFields(b)
}

// decodeFields decodes a copy whose magic, version and checksum were checked.
// It is separate so that the fuzzer can reach it past the checksum.
func decodeFields(b []byte) (*Superblock, error) {
	r := reader{b: b[:sumOffset], off: 12}
	sb := &Superblock{}
	sb.Kind = Kind(r.u8())
	r.skip(3)
	sb.Generation = r.u64()
	copy(sb.ArrayID[:], r.bytes(16))
	copy(sb.DeviceID[:], r.bytes(16))
	sb.Slot = r.u16()
	sb.Devices = r.u16()
	sb.AUSize = r.u32()
	sb.Capacity = int64(r.u64())
	sb.Epoch = r.u64()
	for _, ks := range []*KeySlot{&sb.Cur, &sb.Prev} {
		ks.Gen = r.u64()
		ks.Threshold = r.u8()
		flags := r.u8()
		ks.Sealed = flags&1 != 0
		la, ld, lm := int(r.u16()), int(r.u16()), int(r.u16())
		if la > MaxField || ld > MaxField || lm > MaxField {
			return nil, fmt.Errorf("%w: key slot field length", ErrCorrupt)
		}
		ks.AKShare = r.clone(la)
		ks.DEKPart = r.clone(ld)
		ks.WrappedMediaKey = r.clone(lm)
	}
	le := int(r.u16())
	if le > MaxField {
		return nil, fmt.Errorf("%w: extra length", ErrCorrupt)
	}
	sb.Extra = r.clone(le)
	if r.err {
		return nil, fmt.Errorf("%w: fields overrun the superblock", ErrCorrupt)
	}
	if sb.Kind != KindSSD && sb.Kind != KindNVRAM {
		return nil, fmt.Errorf("%w: kind %d", ErrCorrupt, sb.Kind)
	}
	if sb.Generation == 0 || sb.Capacity < DataOffset {
		return nil, fmt.Errorf("%w: generation %d capacity %d", ErrCorrupt, sb.Generation, sb.Capacity)
	}
	return sb, nil
}

type reader struct {
	b   []byte
	off int
	err bool
}

func (r *reader) bytes(n int) []byte {
	if r.err || n < 0 || r.off+n > len(r.b) {
		r.err = true
		return make([]byte, n)
	}
	p := r.b[r.off : r.off+n]
	r.off += n
	return p
}
func (r *reader) skip(n int) { r.bytes(n) }
func (r *reader) u8() uint8  { return r.bytes(1)[0] }
func (r *reader) u16() uint16 {
	return binary.LittleEndian.Uint16(r.bytes(2))
}
func (r *reader) u32() uint32 { return binary.LittleEndian.Uint32(r.bytes(4)) }
func (r *reader) u64() uint64 { return binary.LittleEndian.Uint64(r.bytes(8)) }
func (r *reader) clone(n int) []byte {
	if n == 0 {
		return nil
	}
	return bytes.Clone(r.bytes(n))
}

// Read decodes both copies from f and returns the valid one with the highest
// generation. If neither copy is valid the error names both failures.
func Read(f io.ReaderAt) (*Superblock, error) {
	var best *Superblock
	var errs [Copies]error
	buf := make([]byte, Size)
	for i := 0; i < Copies; i++ {
		n, err := f.ReadAt(buf, int64(i)*Size)
		if n < Size {
			if err == nil || err == io.EOF {
				err = fmt.Errorf("%w: short read (%d bytes)", ErrCorrupt, n)
			}
			errs[i] = err
			continue
		}
		sb, err := Unmarshal(buf)
		if err != nil {
			errs[i] = err
			continue
		}
		if best == nil || sb.Generation > best.Generation {
			best = sb
		}
	}
	if best == nil {
		return nil, fmt.Errorf("superblock: copy 0: %v; copy 1: %w", errs[0], errs[1])
	}
	return best, nil
}

// WriterSyncer is the part of a device file that Write needs.
type WriterSyncer interface {
	io.WriterAt
	Sync() error
}

// Write increments sb.Generation, writes the copy to slot Generation%2 and
// syncs the file. The slot written never holds the newest valid copy, so a
// torn write leaves that copy readable. On error sb.Generation is restored, so
// a retry targets the same (already damaged) slot and never the good one.
func Write(f WriterSyncer, sb *Superblock) error {
	sb.Generation++
	b, err := sb.Marshal()
	if err == nil {
		_, err = f.WriteAt(b, int64(sb.Generation%Copies)*Size)
		if err == nil {
			err = f.Sync()
		}
	}
	if err != nil {
		sb.Generation--
		return fmt.Errorf("superblock: write: %w", err)
	}
	return nil
}
