package nvram

import (
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Limits and defaults.
const (
	// DefaultMaxPayload is the payload limit when Options.MaxPayload is 0
	// (lowered to what the region can hold when the region is small).
	DefaultMaxPayload = 1<<20 + 4<<10
	// MaxPayloadLimit is the largest payload any configuration may allow;
	// Replay rejects longer records without reading them.
	MaxPayloadLimit = 64 << 20
	// DefaultStageBytes bounds the sealed bytes waiting for, or in, a write
	// when Options.StageBytes is 0.
	DefaultStageBytes = 16 << 20
	// KeySize is the media key size (AES-256).
	KeySize = 32
)

// Errors a caller must act on; test with errors.Is.
var (
	// ErrTooLarge: the payload is longer than the configured maximum.
	ErrTooLarge = errors.New("nvram: payload too large")
	// ErrClosed: the log is closed.
	ErrClosed = errors.New("nvram: log closed")
	// ErrFailed: a write or sync of the log failed; nothing will be
	// acknowledged any more. The error also wraps the I/O error.
	ErrFailed = errors.New("nvram: log failed")
	// ErrCorrupt: Replay found a damaged record followed by records proving it
	// had been durable: acknowledged writes may be lost.
	ErrCorrupt = errors.New("nvram: log corrupt")
	// ErrEpoch: the boot epoch is not greater than the epoch of records
	// already in the log (the caller did not bump it).
	ErrEpoch = errors.New("nvram: epoch not fresh")
	// ErrInvalid: bad options or position.
	ErrInvalid = errors.New("nvram: invalid argument")
)

// Position names a record boundary in the log: the seq and region-relative
// offset of the next record, and the epoch of the record that ends there
// (the lowest epoch the next record may have). The zero Position of a fresh
// device is {Seq: 1}. Callers store it as their checkpoint.
type Position struct {
	Seq   uint64
	Off   int64
	Epoch uint32
}

// Options configure Replay and Open.
type Options struct {
	// File holds the log; the package writes only inside [Offset,
	// Offset+Size) and does not close it.
	File vfs.File
	// Offset and Size delimit the region in File. Size is rounded down to a
	// multiple of 16.
	Offset, Size int64
	// Key is the 32-byte media key.
	Key []byte
	// Epoch is this boot's epoch, greater than that of every earlier boot.
	// Open requires it (>= 1). Replay uses it, when non-zero, to refuse a log
	// that already holds records of this epoch or a later one.
	Epoch uint32
	// MaxPayload is the largest payload Append accepts. 0 means
	// DefaultMaxPayload, lowered if needed so that a record fits in half
	// the region. A non-zero value must fit in half the region and be at
	// most MaxPayloadLimit.
	MaxPayload int
	// StageBytes bounds the memory holding sealed records not yet written
	// (0: min(DefaultStageBytes, Size), at least two maximal records).
	StageBytes int
	// OnDurable, if set, is called by the committer for each record in seq
	// order after its sync and before its Append returns, with the position
	// after the record (what Append will return). payload is the caller's own
	// slice, not a copy. It runs on the committer: keep it short, and do not
	// call Append or Close from it (Release and Stats are fine).
	OnDurable func(seq uint64, payload []byte, end Position)
}

// config is the validated form of Options.
type config struct {
	file       vfs.File
	base, size int64
	aead       cipher.AEAD
	epoch      uint32
	maxPayload int
	stageBytes int64
	onDurable  func(uint64, []byte, Position)
}

func (o *Options) config() (*config, error) {
	c := &config{
		file:      o.File,
		base:      o.Offset,
		size:      o.Size &^ (recordAlign - 1),
		epoch:     o.Epoch,
		onDurable: o.OnDurable,
	}
	if c.file == nil {
		return nil, fmt.Errorf("%w: no file", ErrInvalid)
	}
	if c.base < 0 || c.size < 4*minSpan || c.base > 1<<62-c.size {
		return nil, fmt.Errorf("%w: region offset %d size %d", ErrInvalid, o.Offset, o.Size)
	}
	if len(o.Key) != KeySize {
		return nil, fmt.Errorf("%w: key is %d bytes, want %d", ErrInvalid, len(o.Key), KeySize)
	}
	block, err := aes.NewCipher(o.Key)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if c.aead, err = cipher.NewGCM(block); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	// A record may take at most half the region: then, with the region
	// empty, it always fits at the tail or (behind a wrap marker) at 0.
	fit := int(c.size/2) - headerLen - tagLen - recordAlign
	switch {
	case o.MaxPayload < 0 || o.MaxPayload > MaxPayloadLimit:
		return nil, fmt.Errorf("%w: max payload %d", ErrInvalid, o.MaxPayload)
	case o.MaxPayload == 0:
		c.maxPayload = min(DefaultMaxPayload, fit)
	case o.MaxPayload > fit:
		return nil, fmt.Errorf("%w: max payload %d does not fit in half of a %d-byte region", ErrInvalid, o.MaxPayload, c.size)
	default:
		c.maxPayload = o.MaxPayload
	}
	maxSpan := spanOf(c.maxPayload) + minSpan // a record behind a wrap marker
	switch {
	case o.StageBytes < 0:
		return nil, fmt.Errorf("%w: stage bytes %d", ErrInvalid, o.StageBytes)
	case o.StageBytes == 0:
		c.stageBytes = max(min(DefaultStageBytes, c.size), 2*maxSpan)
	case int64(o.StageBytes) < maxSpan:
		return nil, fmt.Errorf("%w: stage bytes %d below one record (%d)", ErrInvalid, o.StageBytes, maxSpan)
	default:
		c.stageBytes = int64(o.StageBytes)
	}
	c.stageBytes &^= recordAlign - 1
	return c, nil
}

// checkPos reports whether p can be a position in a region of c.size bytes.
func (c *config) checkPos(p Position) error {
	if p.Seq == 0 || p.Seq >= seqLimit || p.Off < 0 || p.Off > c.size || p.Off%recordAlign != 0 {
		return fmt.Errorf("%w: position %+v in a %d-byte region", ErrInvalid, p, c.size)
	}
	return nil
}

// dist is the number of region bytes from position a forward to position b
// (b not before a). Equal offsets mean no bytes when the seqs match and the
// whole region otherwise.
func (c *config) dist(a, b Position) int64 {
	d := b.Off - a.Off
	if d < 0 || (d == 0 && a.Seq != b.Seq) {
		d += c.size
	}
	return d
}
