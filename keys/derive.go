package keys

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
)

// KeySize is the size of every key of the hierarchy (AES-256).
const KeySize = 32

// Labels of keys derived with Derive.
const (
	// LabelDedupFingerprint derives the dedup fingerprint key from the DEK.
	LabelDedupFingerprint = "vfa dedup fingerprint"
	// labelUnlock is the HKDF info prefix of device unlock keys.
	labelUnlock = "vfa device unlock key v1"
)

// NewKey returns KeySize bytes from crypto/rand.
func NewKey() []byte {
	k := make([]byte, KeySize)
	rand.Read(k) // never fails (it crashes the process instead)
	return k
}

// Derive derives a KeySize sub-key of key for the use named by label, with
// HKDF-SHA256 (RFC 5869, no salt, info = label). Different labels give
// independent keys; the same key and label always give the same result.
func Derive(key []byte, label string) []byte {
	return hkdfKey(key, label)
}

// UnlockKey derives the key that wraps a device's media key for one
// generation: HKDF-SHA256 of the array key with info
// "vfa device unlock key v1" || array id || device id || generation (8 bytes,
// big-endian). It is never stored.
func UnlockKey(ak []byte, arrayID, deviceID [16]byte, gen uint64) []byte {
	info := make([]byte, 0, len(labelUnlock)+16+16+8)
	info = append(info, labelUnlock...)
	info = append(info, arrayID[:]...)
	info = append(info, deviceID[:]...)
	info = binary.BigEndian.AppendUint64(info, gen)
	return hkdfKey(ak, string(info))
}

func hkdfKey(secret []byte, info string) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, info, KeySize)
	if err != nil {
		// Only reachable for output lengths HKDF-SHA256 cannot produce, or in
		// FIPS-only mode with a secret shorter than 112 bits: both programming
		// errors, as every key of the hierarchy is KeySize bytes.
		panic("keys: hkdf: " + err.Error())
	}
	return k
}
