// Package keys holds the array's key hierarchy: secret sharing of the array
// key, RFC 3394 key wrap, key derivation, the security-token seam and the
// logic of unlocking and rotating the hierarchy.
//
// The hierarchy:
//
//   - Array key (AK), 256-bit, random per generation. Split with Shamir secret
//     sharing into one share per SSD; any Threshold(n) shares rebuild it. No
//     device holds the whole key and NVRAM holds no share.
//   - DEK, 256-bit, random once per array; it encrypts all data and never
//     changes. It is stored wrapped by the AK (RFC 3394) and the 40-byte
//     wrapped DEK is itself Shamir-split across the SSDs with the same
//     threshold, so a device holds a share of the AK and a partition of the
//     wrapped DEK.
//   - Media keys, one random 256-bit key per device (every SSD and the NVRAM).
//     Each device stores its media key wrapped by its unlock key,
//     UnlockKey(AK, array id, device id, generation), which is derived, never
//     stored, and changes with every rotation. Media keys themselves survive
//     rotation unchanged.
//
// Each device superblock keeps two key slots, Cur and Prev. A rotation to
// generation g+1 gives every present device Cur = its slot of g+1 and Prev = its
// slot of g (see Rotate, which also says in which order to write them), so the
// generation that was current before an interrupted rotation stays complete on
// every device, and a new generation counts once it is on at least Threshold
// shares. Shares carry a random split id, so the shares of two splits that
// share a generation number (a retried rotation, another array's device) are
// never combined.
//
// The key hierarchy does no I/O: the caller reads the slots from the device
// superblocks, hands them to Unlock, and writes back the SlotWrites that Create
// and Rotate return. Everything there is a function of its arguments and
// crypto/rand. The one exception is kmip.go, the KMIP client that fetches the
// security-token key over the network (its connections are the caller's,
// per call). There is no package-level mutable state, so any number of arrays
// can use the package side by side.
//
// Invariants:
//   - A key is only ever accepted after an integrity check: an AK is used only
//     if it unwraps the DEK (RFC 3394 check) and at least Threshold share
//     holders' media keys unwrap under it for the given array id; a device's
//     media key only if it unwraps under that device's unlock key.
//   - Rotation never changes the DEK or an existing device's media key.
//   - A generation sealed by a security token is never bypassed: if it has
//     enough shares but the token is missing or fails, Unlock fails rather
//     than fall back to an older generation.
//   - Every input length is bounded; a bound that is hit is an error.
package keys

import "errors"

// Errors a caller must act on; test them with errors.Is.
var (
	// ErrTooFewShares: fewer shares of every generation than its threshold.
	// The error returned is a *SharesError carrying the counts.
	ErrTooFewShares = errors.New("not enough array key shares")
	// ErrTokenRequired: the shares needed are sealed by a security token and
	// no Sealer was given (or a sealed rotation was asked for without one).
	ErrTokenRequired = errors.New("security token required")
	// ErrUnwrap: an RFC 3394 unwrap failed its integrity check (wrong key or
	// corrupt data).
	ErrUnwrap = errors.New("key unwrap integrity check failed")
	// ErrKeyMismatch: key material read from devices does not verify: the
	// shares do not combine into a key that unwraps the DEK and the devices'
	// media keys, or a device's media key does not unwrap (the device is not
	// this array's, or it is corrupt).
	ErrKeyMismatch = errors.New("key material does not verify")
	// ErrNoKeySlot: a device has no slot of a generation that can be
	// unlocked (a blank device, or one absent for too many rotations).
	ErrNoKeySlot = errors.New("no key slot of an unlockable generation")
	// ErrTokenMismatch: a sealed share does not open with the sealer's key.
	ErrTokenMismatch = errors.New("sealed share does not open with this token key")
	// ErrGeneration: a rotation was asked for a generation that is not above
	// every generation already in use.
	ErrGeneration = errors.New("key generation not above the current one")
	// ErrFormat: a stored key field is malformed.
	ErrFormat = errors.New("malformed key field")
)
