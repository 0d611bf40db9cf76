package keys

// The sealed share written by GCMSealer, format version SealedVersion:
//
//	off  len  field
//	  0    1  format version (SealedVersion = 1)
//	  1   12  nonce (random per Seal)
//	 13    n  AES-256-GCM ciphertext of the share, then the 16-byte tag;
//	          additional data: the label "vfa sealed share" and the version byte
//
// So a sealed share is len(share) + SealedOverhead bytes. The key is the
// security token's key (a token file or a KMIP key); the array never stores it.

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
)

// Sealer seals each stored array key share with a key the array does not keep
// (Rapid Data Locking). Open must reverse Seal and fail on anything Seal did
// not produce with the same key.
type Sealer interface {
	Seal(share []byte) ([]byte, error)
	Open(sealed []byte) ([]byte, error)
}

const (
	// SealedVersion is the format version of a GCMSealer sealed share.
	SealedVersion = 1
	gcmNonceSize  = 12
	gcmTagSize    = 16
	// SealedOverhead is how much longer GCMSealer makes a share.
	SealedOverhead = 1 + gcmNonceSize + gcmTagSize
	// maxSealInput bounds what GCMSealer seals.
	maxSealInput = 1024
	sealedAAD    = "vfa sealed share"
	// labelTokenSignature is the HMAC message of TokenSignature.
	labelTokenSignature = "vfa security token signature"
)

// GCMSealer is a Sealer built from a 32-byte token key with AES-256-GCM.
// It is safe for concurrent use.
type GCMSealer struct {
	aead cipher.AEAD
}

// NewGCMSealer returns a sealer for a KeySize token key.
func NewGCMSealer(key []byte) (*GCMSealer, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("keys: sealer: token key of %d bytes, want %d", len(key), KeySize)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("keys: sealer: %w", err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("keys: sealer: %w", err)
	}
	return &GCMSealer{aead: aead}, nil
}

func sealAAD(version byte) []byte {
	return append([]byte(sealedAAD), version)
}

// Seal encrypts share under the token key with a fresh random nonce.
func (g *GCMSealer) Seal(share []byte) ([]byte, error) {
	if len(share) == 0 || len(share) > maxSealInput {
		return nil, fmt.Errorf("keys: seal: share of %d bytes (1..%d)", len(share), maxSealInput)
	}
	out := make([]byte, 1+gcmNonceSize, len(share)+SealedOverhead)
	out[0] = SealedVersion
	rand.Read(out[1 : 1+gcmNonceSize])
	return g.aead.Seal(out, out[1:1+gcmNonceSize], share, sealAAD(SealedVersion)), nil
}

// Open decrypts a sealed share. A wrong token key or a damaged share gives an
// error wrapping ErrTokenMismatch; a malformed one an error wrapping ErrFormat.
func (g *GCMSealer) Open(sealed []byte) ([]byte, error) {
	version, nonce, ct, err := decodeSealed(sealed)
	if err != nil {
		return nil, fmt.Errorf("keys: open sealed share: %w", err)
	}
	share, err := g.aead.Open(nil, nonce, ct, sealAAD(version))
	if err != nil {
		return nil, fmt.Errorf("keys: open sealed share: %w", ErrTokenMismatch)
	}
	return share, nil
}

// decodeSealed splits a sealed share into its fields without decrypting it.
func decodeSealed(b []byte) (version byte, nonce, ct []byte, err error) {
	if len(b) < SealedOverhead+1 || len(b) > maxSealInput+SealedOverhead {
		return 0, nil, nil, fmt.Errorf("%w: sealed share of %d bytes", ErrFormat, len(b))
	}
	if b[0] != SealedVersion {
		return 0, nil, nil, fmt.Errorf("%w: sealed share version %d (this build reads %d)", ErrFormat, b[0], SealedVersion)
	}
	return b[0], b[1 : 1+gcmNonceSize], b[1+gcmNonceSize:], nil
}

// TokenSignature identifies a token key without revealing it: 64 hex digits
// of HMAC-SHA256(key, "vfa security token signature"). The array records it
// when the token is enrolled and compares it with the key offered at boot.
func TokenSignature(key []byte) string {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(labelTokenSignature))
	return hex.EncodeToString(m.Sum(nil))
}
