package keys

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
)

// RFC 3394 AES key wrap with the default initial value.
const (
	// WrapOverhead is how much longer a wrapped key is than the key.
	WrapOverhead = 8
	// WrappedKeySize is the size of a wrapped KeySize key (40 bytes).
	WrappedKeySize = KeySize + WrapOverhead
	// maxWrapInput bounds the key data Wrap accepts.
	maxWrapInput = 1024
)

// defaultIV is the RFC 3394 section 2.2.3.1 default initial value.
const defaultIV uint64 = 0xA6A6A6A6A6A6A6A6

// Wrap wraps key (a multiple of 8 bytes, at least 16) with the AES key kek
// (16, 24 or 32 bytes) as RFC 3394 section 2.2.1 describes. The result is
// len(key)+WrapOverhead bytes.
func Wrap(kek, key []byte) ([]byte, error) {
	if len(key) < 16 || len(key)%8 != 0 || len(key) > maxWrapInput {
		return nil, fmt.Errorf("keys: wrap: key data of %d bytes (a multiple of 8, 16..%d)", len(key), maxWrapInput)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: wrap: %w", err)
	}
	n := len(key) / 8
	out := make([]byte, 8+len(key))
	copy(out[8:], key)
	var a [8]byte
	binary.BigEndian.PutUint64(a[:], defaultIV)
	var b [16]byte
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			r := out[8*i : 8*i+8]
			copy(b[:8], a[:])
			copy(b[8:], r)
			block.Encrypt(b[:], b[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a[:], binary.BigEndian.Uint64(b[:8])^t)
			copy(r, b[8:])
		}
	}
	copy(out[:8], a[:])
	return out, nil
}

// Unwrap reverses Wrap (RFC 3394 section 2.2.2) and checks the initial
// value: a wrong kek or damaged input gives an error wrapping ErrUnwrap.
func Unwrap(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 24 || len(wrapped)%8 != 0 || len(wrapped) > maxWrapInput+WrapOverhead {
		return nil, fmt.Errorf("keys: unwrap: %d bytes (a multiple of 8, 24..%d): %w", len(wrapped), maxWrapInput+WrapOverhead, ErrUnwrap)
	}
	block, err := aes.NewCipher(kek)
	if err != nil {
		return nil, fmt.Errorf("keys: unwrap: %w", err)
	}
	n := len(wrapped)/8 - 1
	out := make([]byte, 8*n)
	copy(out, wrapped[8:])
	var a [8]byte
	copy(a[:], wrapped[:8])
	var b [16]byte
	for j := 5; j >= 0; j-- {
		for i := n; i >= 1; i-- {
			r := out[8*(i-1) : 8*i]
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(b[:8], binary.BigEndian.Uint64(a[:])^t)
			copy(b[8:], r)
			block.Decrypt(b[:], b[:])
			copy(a[:], b[:8])
			copy(r, b[8:])
		}
	}
	var iv [8]byte
	binary.BigEndian.PutUint64(iv[:], defaultIV)
	if subtle.ConstantTimeCompare(a[:], iv[:]) != 1 {
		clear(out)
		return nil, fmt.Errorf("keys: unwrap: %w", ErrUnwrap)
	}
	return out, nil
}
