package keys

import (
	"bytes"
	"fmt"

	"github.com/hashicorp/vault/shamir"
)

// Limits of the secret sharing (those of GF(2^8) Shamir: x is one non-zero byte).
const (
	MinShareHolders = 2
	MaxShareHolders = 255
	// ShareOverhead is how much longer a share is than its secret (the x byte).
	ShareOverhead = shamir.ShareOverhead
	// maxSecretSize bounds what Split and Combine accept.
	maxSecretSize = 1024
)

// Threshold is the number of shares that rebuild the array key for n share
// holders: at least half of the drives plus two, and never more than n.
func Threshold(n int) int {
	return min(n, n/2+2)
}

// Split splits secret into n shares, any t of which rebuild it with Combine.
// Each share is len(secret)+ShareOverhead bytes.
func Split(secret []byte, n, t int) ([][]byte, error) {
	if t < MinShareHolders || t > n || n > MaxShareHolders {
		return nil, fmt.Errorf("keys: split: threshold %d of %d shares out of range [%d, n <= %d]", t, n, MinShareHolders, MaxShareHolders)
	}
	if len(secret) == 0 || len(secret) > maxSecretSize {
		return nil, fmt.Errorf("keys: split: secret of %d bytes (1..%d)", len(secret), maxSecretSize)
	}
	shares, err := shamir.Split(secret, n, t)
	if err != nil {
		return nil, fmt.Errorf("keys: split: %w", err)
	}
	return shares, nil
}

// Combine rebuilds a secret from shares made by one Split. Given at least the
// threshold of consistent shares it returns the secret; given fewer, or shares
// of different splits, it returns a wrong secret without error (Shamir shares
// carry no integrity), so callers verify the result (see Unwrap).
func Combine(shares [][]byte) ([]byte, error) {
	if len(shares) < MinShareHolders || len(shares) > MaxShareHolders {
		return nil, fmt.Errorf("keys: combine: %d shares (%d..%d)", len(shares), MinShareHolders, MaxShareHolders)
	}
	l := len(shares[0])
	if l <= ShareOverhead || l > maxSecretSize+ShareOverhead {
		return nil, fmt.Errorf("keys: combine: share of %d bytes", l)
	}
	secret, err := shamir.Combine(shares)
	if err != nil {
		return nil, fmt.Errorf("keys: combine: %w", err)
	}
	return secret, nil
}

// ExtendShare makes a new share of the secret behind shares (at least the
// threshold of consistent shares of one Split) at x coordinate x, for a
// device that joins after the split (a replaced drive). Shamir shares are
// points of a polynomial p over GF(2^8), one per secret byte, with x in the
// share's last byte; Combine interpolates p at 0. Addition in GF(2^8) is
// XOR, so moving every sample by x (x_i -> x_i ^ x) gives the polynomial
// q(z) = p(z ^ x) of the same degree, and Combine of the moved samples is
// q(0) = p(x): the new share's value. x must be non-zero and differ from
// every given share's x. Like Combine, ExtendShare cannot tell a wrong set
// of shares from a right one: the caller checks the shares first.
func ExtendShare(shares [][]byte, x byte) ([]byte, error) {
	if x == 0 {
		return nil, fmt.Errorf("keys: extend share: x must be non-zero")
	}
	moved := make([][]byte, len(shares))
	for i, s := range shares {
		if len(s) <= ShareOverhead {
			return nil, fmt.Errorf("keys: extend share: share of %d bytes", len(s))
		}
		if s[len(s)-1] == x {
			return nil, fmt.Errorf("keys: extend share: x %d is already taken", x)
		}
		m := bytes.Clone(s)
		m[len(m)-1] ^= x
		moved[i] = m
	}
	y, err := Combine(moved)
	for _, m := range moved {
		clear(m)
	}
	if err != nil {
		return nil, fmt.Errorf("keys: extend share: %w", err)
	}
	return append(y, x), nil
}

// FreeShareX is an x coordinate that none of shares uses.
func FreeShareX(shares [][]byte) byte {
	var used [256]bool
	for _, s := range shares {
		if len(s) > 0 {
			used[s[len(s)-1]] = true
		}
	}
	for x := 1; x < 256; x++ {
		if !used[x] {
			return byte(x)
		}
	}
	return 0
}
