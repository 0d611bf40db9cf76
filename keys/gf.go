package keys

import "fmt"

// combineInto is Combine for Unlock's hot loop: it computes the same
// interpolation at x = 0 as vault's shamir.Combine (GF(2^8) with the AES
// polynomial x^8+x^4+x^3+x+1, share = y bytes then x), but computes each
// share's Lagrange coefficient once instead of once per byte, which makes
// it about two orders of magnitude faster for 24 shares. A test checks it
// against shamir.Combine. out must be len(share)-1 bytes; coef is scratch of
// len(shares) bytes.
func combineInto(out, coef []byte, shares [][]byte) error {
	m := len(shares)
	if m < MinShareHolders || m > MaxShareHolders || len(coef) < m {
		return fmt.Errorf("keys: combine: %d shares", m)
	}
	l := len(shares[0])
	if l < 2 || len(out) != l-1 {
		return fmt.Errorf("keys: combine: share of %d bytes", l)
	}
	for _, s := range shares {
		if len(s) != l {
			return fmt.Errorf("keys: combine: shares of %d and %d bytes", l, len(s))
		}
		if s[l-1] == 0 {
			return fmt.Errorf("keys: combine: share with x = 0")
		}
	}
	for i, s := range shares {
		xi := s[l-1]
		// L_i(0) = prod_{j != i} x_j / (x_i - x_j); subtraction is XOR.
		num, den := byte(1), byte(1)
		for j, t := range shares {
			if j == i {
				continue
			}
			xj := t[l-1]
			if xj == xi {
				return fmt.Errorf("keys: combine: duplicate share")
			}
			num = gfMul(num, xj)
			den = gfMul(den, xi^xj)
		}
		coef[i] = gfMul(num, gfInv(den))
	}
	for b := range out {
		var acc byte
		for i, s := range shares {
			acc ^= gfMul(s[b], coef[i])
		}
		out[b] = acc
	}
	return nil
}

// gfMul multiplies in GF(2^8) mod x^8+x^4+x^3+x+1, in time independent of
// its inputs (no branches or tables on secret data).
func gfMul(a, b byte) byte {
	var r byte
	for range 8 {
		r ^= a & -(b & 1)
		b >>= 1
		a = a<<1 ^ 0x1b&-(a>>7)
	}
	return r
}

// gfInv is the multiplicative inverse, a^254 (0 for 0).
func gfInv(a byte) byte {
	p := gfMul(a, a) // a^2
	r := p
	for range 6 { // times a^4, a^8, ..., a^128
		p = gfMul(p, p)
		r = gfMul(r, p)
	}
	return r
}
