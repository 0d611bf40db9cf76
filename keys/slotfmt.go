package keys

// The key-slot fields that keys defines (the superblock stores them as opaque
// byte strings of at most MaxFieldSize bytes each), format version
// FieldVersion:
//
// Slot.AKShare, this device's share of the array key:
//
//	off  len  field
//	  0    1  format version (FieldVersion = 1)
//	  1    8  split id: random per generation, the same in every share and
//	          partition of that generation's split (tells splits apart even
//	          when two share a generation number)
//	  9    n  unsealed: the Shamir share, KeySize+1 = 33 bytes (y bytes, then x)
//	          sealed (Slot.Sealed): the Sealer's output for that share,
//	          1..MaxFieldSize-9 bytes
//
// Slot.DEKPart, this device's partition of the wrapped DEK:
//
//	off  len  field
//	  0    1  format version (FieldVersion = 1)
//	  1    8  split id (equal to the AKShare's)
//	  9   41  the Shamir share of the 40-byte wrapped DEK (y bytes, then x)
//
// Slot.WrappedMediaKey is the RFC 3394 wrapping of the 32-byte media key,
// WrappedKeySize = 40 bytes, with no header. A slot without a share (NVRAM, or
// a share holder's slot that only carries its media key) has empty AKShare and
// DEKPart.

import (
	"encoding/binary"
	"fmt"
)

const (
	// FieldVersion is the format version of the AKShare and DEKPart fields.
	FieldVersion = 1
	// MaxFieldSize is the longest slot field the superblock stores.
	MaxFieldSize = 256
	fieldHeader  = 1 + 8
	akShareSize  = KeySize + ShareOverhead
	dekPartSize  = WrappedKeySize + ShareOverhead
	// MaxSealedShareSize is the longest sealed share a Sealer may return.
	MaxSealedShareSize = MaxFieldSize - fieldHeader
)

// splitID tells the shares of one Split apart from those of another.
type splitID uint64

// encodeShareField builds a Slot.AKShare or Slot.DEKPart field.
func encodeShareField(id splitID, body []byte) []byte {
	b := make([]byte, 0, fieldHeader+len(body))
	b = append(b, FieldVersion)
	b = binary.BigEndian.AppendUint64(b, uint64(id))
	return append(b, body...)
}

// decodeShareField checks a field's header and returns its split id and body
// (aliasing b). bodyLen is the exact body length wanted, or -1 for a sealed
// body of 1..MaxSealedShareSize bytes.
func decodeShareField(b []byte, bodyLen int) (splitID, []byte, error) {
	if len(b) < fieldHeader || len(b) > MaxFieldSize {
		return 0, nil, fmt.Errorf("%w: share field of %d bytes", ErrFormat, len(b))
	}
	if b[0] != FieldVersion {
		return 0, nil, fmt.Errorf("%w: share field version %d (this build reads %d)", ErrFormat, b[0], FieldVersion)
	}
	id := splitID(binary.BigEndian.Uint64(b[1:fieldHeader]))
	body := b[fieldHeader:]
	switch {
	case bodyLen < 0 && len(body) == 0:
		return 0, nil, fmt.Errorf("%w: empty sealed share", ErrFormat)
	case bodyLen >= 0 && len(body) != bodyLen:
		return 0, nil, fmt.Errorf("%w: share of %d bytes, want %d", ErrFormat, len(body), bodyLen)
	}
	return id, body, nil
}

// slotShare is the decoded share material of one share-holder slot.
type slotShare struct {
	split  splitID
	share  []byte // the raw AK share, or the sealed one if sealed
	sealed bool
	part   []byte // the DEK partition
}

// decodeSlotShare decodes a slot's AKShare and DEKPart fields and checks that
// they belong to one split.
func decodeSlotShare(s *Slot) (slotShare, error) {
	akLen := akShareSize
	if s.Sealed {
		akLen = -1
	}
	ida, share, err := decodeShareField(s.AKShare, akLen)
	if err != nil {
		return slotShare{}, fmt.Errorf("array key share: %w", err)
	}
	idd, part, err := decodeShareField(s.DEKPart, dekPartSize)
	if err != nil {
		return slotShare{}, fmt.Errorf("DEK partition: %w", err)
	}
	if ida != idd {
		return slotShare{}, fmt.Errorf("%w: array key share and DEK partition of different splits", ErrFormat)
	}
	return slotShare{split: ida, share: share, sealed: s.Sealed, part: part}, nil
}
