package keys

import (
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
