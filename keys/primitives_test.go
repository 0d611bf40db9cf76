package keys

import (
	"bytes"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestThreshold(t *testing.T) {
	// at least half of the drives plus two, never more than n
	want := map[int]int{2: 2, 3: 3, 4: 4, 5: 4, 6: 5, 7: 5, 8: 6, 9: 6, 10: 7, 11: 7, 12: 8, 16: 10, 20: 12, 23: 13, 24: 14}
	for n, w := range want {
		if got := Threshold(n); got != w {
			t.Errorf("Threshold(%d) = %d, want %d", n, got, w)
		}
	}
}

// subsets calls f with every subset of {0..n-1} as a bit mask.
func forEachSubset(n int, f func(mask uint32)) {
	for m := uint32(0); m < 1<<n; m++ {
		f(m)
	}
}

func pick(shares [][]byte, mask uint32) [][]byte {
	var out [][]byte
	for i := range shares {
		if mask&(1<<i) != 0 {
			out = append(out, shares[i])
		}
	}
	return out
}

func popcount(m uint32) int {
	c := 0
	for ; m != 0; m &= m - 1 {
		c++
	}
	return c
}

// Every subset of the shares for n = 6 and 8 (exhaustive), and random subsets
// of every size for n = 12 and 24: t or more shares give the secret, fewer do
// not.
func TestShamirSubsets(t *testing.T) {
	secret := NewKey()
	for _, n := range []int{6, 8} {
		th := Threshold(n)
		shares, err := Split(secret, n, th)
		if err != nil {
			t.Fatal(err)
		}
		if len(shares) != n || len(shares[0]) != KeySize+ShareOverhead {
			t.Fatalf("n=%d: %d shares of %d bytes", n, len(shares), len(shares[0]))
		}
		tried := 0
		forEachSubset(n, func(mask uint32) {
			k := popcount(mask)
			if k < 2 {
				return
			}
			tried++
			got, err := Combine(pick(shares, mask))
			if err != nil {
				t.Fatalf("n=%d mask %b: %v", n, mask, err)
			}
			if eq := bytes.Equal(got, secret); eq != (k >= th) {
				t.Fatalf("n=%d t=%d: %d shares (mask %b) give the secret: %v", n, th, k, mask, eq)
			}
		})
		t.Logf("n=%d t=%d: %d subsets", n, th, tried)
	}
	r := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{12, 24} {
		th := Threshold(n)
		shares, err := Split(secret, n, th)
		if err != nil {
			t.Fatal(err)
		}
		for k := 2; k <= n; k++ {
			for range 20 {
				perm := r.Perm(n)
				var sub [][]byte
				for _, i := range perm[:k] {
					sub = append(sub, shares[i])
				}
				got, err := Combine(sub)
				if err != nil {
					t.Fatal(err)
				}
				if eq := bytes.Equal(got, secret); eq != (k >= th) {
					t.Fatalf("n=%d: %d shares give the secret: %v", n, k, eq)
				}
			}
		}
	}
}

// A share made later for a new holder combines with any t-1 of the original
// shares to the secret, and the original shares are unchanged.
func TestExtendShare(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 7))
	for _, n := range []int{6, 8, 13, 24} {
		tt := Threshold(n)
		secret := NewKey()
		shares, err := Split(secret, n, tt)
		if err != nil {
			t.Fatal(err)
		}
		// The device in a random slot is lost; the rest make its successor.
		lost := r.IntN(n)
		rest := slices.Delete(slices.Clone(shares), lost, lost+1)
		x := FreeShareX(rest)
		for _, w := range rest {
			if x == 0 || w[len(w)-1] == x {
				t.Fatalf("free x %d is taken", x)
			}
		}
		nw, err := ExtendShare(rest[:tt], x)
		if err != nil {
			t.Fatal(err)
		}
		if len(nw) != len(shares[0]) || nw[len(nw)-1] != x {
			t.Fatalf("new share of %d bytes, x %d", len(nw), nw[len(nw)-1])
		}
		for trial := 0; trial < 20; trial++ {
			pick := slices.Clone(rest)
			r.Shuffle(len(pick), func(i, j int) { pick[i], pick[j] = pick[j], pick[i] })
			got, err := Combine(append(pick[:tt-1:tt-1], nw))
			if err != nil || !bytes.Equal(got, secret) {
				t.Fatalf("n=%d: new share with %d others: %x %v", n, tt-1, got, err)
			}
		}
		// Too few old shares give a share that does not combine.
		bad, err := ExtendShare(rest[:tt-1], x)
		if err != nil {
			t.Fatal(err)
		}
		if got, _ := Combine(append(slices.Clone(rest[:tt-1]), bad)); bytes.Equal(got, secret) {
			t.Fatalf("n=%d: a share from %d shares combined", n, tt-1)
		}
	}
	if _, err := ExtendShare([][]byte{{1, 2, 3}, {4, 5, 6}}, 0); err == nil {
		t.Fatal("x 0 accepted")
	}
	if _, err := ExtendShare([][]byte{{1, 2, 3}, {4, 5, 6}}, 3); err == nil {
		t.Fatal("a taken x accepted")
	}
}

func TestSplitCombineErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		secret []byte
		n, t   int
	}{
		{"threshold 1", NewKey(), 3, 1},
		{"threshold above n", NewKey(), 3, 4},
		{"too many shares", NewKey(), 256, 10},
		{"empty secret", nil, 3, 2},
		{"huge secret", make([]byte, maxSecretSize+1), 3, 2},
	} {
		if _, err := Split(tc.secret, tc.n, tc.t); err == nil {
			t.Errorf("%s: Split succeeded", tc.name)
		}
	}
	shares, _ := Split(NewKey(), 3, 2)
	for _, tc := range []struct {
		name   string
		shares [][]byte
	}{
		{"one share", shares[:1]},
		{"duplicate", [][]byte{shares[0], shares[0]}},
		{"lengths differ", [][]byte{shares[0], shares[1][:10]}},
		{"one-byte shares", [][]byte{{1}, {2}}},
	} {
		if _, err := Combine(tc.shares); err == nil {
			t.Errorf("%s: Combine succeeded", tc.name)
		}
	}
}

// RFC 3394 section 4 test vectors (4.1 to 4.6).
func TestWrapRFC3394(t *testing.T) {
	const kek = "000102030405060708090A0B0C0D0E0F101112131415161718191A1B1C1D1E1F"
	const data = "00112233445566778899AABBCCDDEEFF000102030405060708090A0B0C0D0E0F"
	for _, tc := range []struct {
		sec          string
		kekLen, dLen int
		want         string
	}{
		{"4.1", 16, 16, "1FA68B0A8112B447 AEF34BD8FB5A7B82 9D3E862371D2CFE5"},
		{"4.2", 24, 16, "96778B25AE6CA435 F92B5B97C050AED2 468AB8A17AD84E5D"},
		{"4.3", 32, 16, "64E8C3F9CE0F5BA2 63E9777905818A2A 93C8191E7D6E8AE7"},
		{"4.4", 24, 24, "031D33264E15D332 68F24EC260743EDC E1C6C7DDEE725A93 6BA814915C6762D2"},
		{"4.5", 32, 24, "A8F9BC1612C68B3F F6E6F4FBE30E71E4 769C8B80A32CB895 8CD5D17D6B254DA1"},
		{"4.6", 32, 32, "28C9F404C4B810F4 CBCCB35CFB87F826 3F5786E2D80ED326 CBC7F0E71A99F43B FB988B9B7A02DD21"},
	} {
		k := unhex(t, kek)[:tc.kekLen]
		d := unhex(t, data)[:tc.dLen]
		want := unhex(t, tc.want)
		got, err := Wrap(k, d)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: Wrap = %X, %v; want %X", tc.sec, got, err, want)
		}
		back, err := Unwrap(k, want)
		if err != nil || !bytes.Equal(back, d) {
			t.Errorf("%s: Unwrap = %X, %v; want %X", tc.sec, back, err, d)
		}
	}
}

func TestUnwrapRejects(t *testing.T) {
	kek, key := NewKey(), NewKey()
	w, err := Wrap(kek, key)
	if err != nil || len(w) != WrappedKeySize {
		t.Fatalf("%d bytes, %v", len(w), err)
	}
	if _, err := Unwrap(NewKey(), w); !errors.Is(err, ErrUnwrap) {
		t.Errorf("wrong kek: %v", err)
	}
	for i := range w {
		for _, bit := range []byte{1, 0x80} {
			c := bytes.Clone(w)
			c[i] ^= bit
			if _, err := Unwrap(kek, c); !errors.Is(err, ErrUnwrap) {
				t.Fatalf("byte %d bit %x flipped: %v", i, bit, err)
			}
		}
	}
	for _, l := range []int{0, 8, 16, 39, 41} {
		if _, err := Unwrap(kek, make([]byte, l)); !errors.Is(err, ErrUnwrap) {
			t.Errorf("%d bytes: %v", l, err)
		}
	}
	for _, l := range []int{0, 8, 15, 17, maxWrapInput + 8} {
		if _, err := Wrap(kek, make([]byte, l)); err == nil {
			t.Errorf("Wrap of %d bytes succeeded", l)
		}
	}
	if _, err := Wrap(kek[:5], key); err == nil {
		t.Error("Wrap with a 5-byte kek succeeded")
	}
}

// The derivations are HKDF-SHA256 with the documented info strings; the
// expected values were computed independently (Python hmac/hashlib).
func TestDeriveKnownAnswers(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	var aid, did [16]byte
	for i := range aid {
		aid[i], did[i] = 1, 2
	}
	if got, want := hex.EncodeToString(UnlockKey(key, aid, did, 7)), "ccec5c23a6a249f51526e439c92c67ecb44d1b6964140ff6ffe4374ac1eb10a3"; got != want {
		t.Errorf("UnlockKey = %s, want %s", got, want)
	}
	if got, want := hex.EncodeToString(Derive(key, LabelDedupFingerprint)), "c50230f19d651b81a7d1bf8c12fd78d1374d466bc00b9c709587d76aeb086e13"; got != want {
		t.Errorf("Derive = %s, want %s", got, want)
	}
	k := &Keys{DEK: key}
	if !bytes.Equal(k.DedupKey(), Derive(key, LabelDedupFingerprint)) {
		t.Error("DedupKey differs from Derive(DEK, LabelDedupFingerprint)")
	}
}

func TestUnlockKeyBindsEveryInput(t *testing.T) {
	ak := NewKey()
	aid, did := [16]byte{1}, [16]byte{2}
	base := UnlockKey(ak, aid, did, 5)
	for name, other := range map[string][]byte{
		"array key":  UnlockKey(NewKey(), aid, did, 5),
		"array id":   UnlockKey(ak, [16]byte{3}, did, 5),
		"device id":  UnlockKey(ak, aid, [16]byte{3}, 5),
		"generation": UnlockKey(ak, aid, did, 6),
		"label":      Derive(ak, "other"),
	} {
		if bytes.Equal(base, other) {
			t.Errorf("changing the %s leaves the unlock key unchanged", name)
		}
	}
	if !bytes.Equal(base, UnlockKey(ak, aid, did, 5)) {
		t.Error("UnlockKey is not deterministic")
	}
	if a, b := NewKey(), NewKey(); len(a) != KeySize || bytes.Equal(a, b) {
		t.Error("NewKey returns equal or short keys")
	}
}

func TestGCMSealer(t *testing.T) {
	key := NewKey()
	s, err := NewGCMSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	share := bytes.Repeat([]byte{7}, akShareSize)
	a, err := s.Seal(share)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Seal(share)
	if len(a) != len(share)+SealedOverhead || bytes.Equal(a, b) || bytes.Contains(a, share[:8]) {
		t.Fatalf("sealed %d bytes, two seals equal: %v", len(a), bytes.Equal(a, b))
	}
	for _, sl := range [][]byte{a, b} {
		if got, err := s.Open(sl); err != nil || !bytes.Equal(got, share) {
			t.Fatalf("Open = %x, %v", got, err)
		}
	}
	other, _ := NewGCMSealer(NewKey())
	if _, err := other.Open(a); !errors.Is(err, ErrTokenMismatch) {
		t.Errorf("wrong key: %v", err)
	}
	for i := 1; i < len(a); i++ {
		c := bytes.Clone(a)
		c[i] ^= 1
		if _, err := s.Open(c); !errors.Is(err, ErrTokenMismatch) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
	bad := bytes.Clone(a)
	bad[0] = 2
	for name, in := range map[string][]byte{"version": bad, "short": a[:SealedOverhead], "empty": nil} {
		if _, err := s.Open(in); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := NewGCMSealer(key[:16]); err == nil {
		t.Error("16-byte token key accepted")
	}
	if _, err := s.Seal(nil); err == nil {
		t.Error("empty share sealed")
	}
}

func TestTokenSignature(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	// HMAC-SHA256(key, "vfa security token signature"), computed independently.
	const want = "9b8333cfdb4b400300a1e834bcdf1d7be5df2427204e5347d252c9630cb4035a"
	if got := TokenSignature(key); got != want {
		t.Errorf("TokenSignature = %s, want %s", got, want)
	}
	if TokenSignature(key) != TokenSignature(bytes.Clone(key)) {
		t.Error("signature not stable")
	}
	other := bytes.Clone(key)
	other[31] ^= 1
	if TokenSignature(other) == want {
		t.Error("different keys, same signature")
	}
	if strings.Contains(TokenSignature(key), hex.EncodeToString(key[:8])) {
		t.Error("signature reveals the key")
	}
}

func TestRotationDue(t *testing.T) {
	t0 := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name     string
		last     time.Time
		now      time.Time
		interval time.Duration
		want     bool
	}{
		{"just rotated", t0, t0, 0, false},
		{"default interval not reached", t0, t0.Add(24*time.Hour - time.Nanosecond), 0, false},
		{"default interval reached", t0, t0.Add(24 * time.Hour), 0, true},
		{"negative interval means default", t0, t0.Add(23 * time.Hour), -time.Hour, false},
		{"custom interval", t0, t0.Add(time.Hour), time.Hour, true},
		{"custom interval not reached", t0, t0.Add(59 * time.Minute), time.Hour, false},
		{"never rotated", time.Time{}, t0, 0, true},
		{"clock went backwards", t0, t0.Add(-time.Minute), 0, true},
	} {
		if got := RotationDue(tc.last, tc.now, tc.interval); got != tc.want {
			t.Errorf("%s: RotationDue = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestShareFieldFormat(t *testing.T) {
	body := bytes.Repeat([]byte{9}, akShareSize)
	f := encodeShareField(0x0102030405060708, body)
	if len(f) != fieldHeader+akShareSize || f[0] != FieldVersion || !bytes.Equal(f[1:9], []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
		t.Fatalf("field % x", f)
	}
	id, got, err := decodeShareField(f, akShareSize)
	if err != nil || id != 0x0102030405060708 || !bytes.Equal(got, body) {
		t.Fatalf("decode: %x %x %v", id, got, err)
	}
	for _, tc := range []struct {
		name    string
		in      []byte
		bodyLen int
	}{
		{"empty", nil, akShareSize},
		{"header only, sealed", f[:fieldHeader], -1},
		{"short body", f[:len(f)-1], akShareSize},
		{"long body", append(bytes.Clone(f), 0), akShareSize},
		{"version", append([]byte{2}, f[1:]...), akShareSize},
		{"too long", make([]byte, MaxFieldSize+1), -1},
	} {
		if _, _, err := decodeShareField(tc.in, tc.bodyLen); !errors.Is(err, ErrFormat) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	// AK share and DEK partition of different splits.
	sl := Slot{Gen: 1, AKShare: f, DEKPart: encodeShareField(9, make([]byte, dekPartSize))}
	if _, err := decodeSlotShare(&sl); !errors.Is(err, ErrFormat) {
		t.Errorf("mixed splits: %v", err)
	}
}

func FuzzDecodeShareField(f *testing.F) {
	f.Add(encodeShareField(1, make([]byte, akShareSize)), int8(0))
	f.Add(encodeShareField(2, make([]byte, 70)), int8(-1))
	f.Add([]byte{1}, int8(-1))
	f.Fuzz(func(t *testing.T, b []byte, sel int8) {
		want := akShareSize
		switch {
		case sel < 0:
			want = -1
		case sel%2 == 1:
			want = dekPartSize
		}
		id, body, err := decodeShareField(b, want)
		if err != nil {
			return
		}
		if want >= 0 && len(body) != want || len(body) == 0 {
			t.Fatalf("body of %d bytes accepted (want %d)", len(body), want)
		}
		if again := encodeShareField(id, body); !bytes.Equal(again, b) {
			t.Fatalf("re-encoding differs: %x vs %x", again, b)
		}
	})
}

func FuzzSealedOpen(f *testing.F) {
	s, _ := NewGCMSealer(make([]byte, KeySize))
	// The one valid input, built deterministically (every fuzz worker builds
	// the same): version, a zero nonce, the sealed zero share.
	sealed := append([]byte{SealedVersion}, make([]byte, gcmNonceSize)...)
	sealed = s.aead.Seal(sealed, sealed[1:], make([]byte, akShareSize), sealAAD(SealedVersion))
	if _, err := s.Open(sealed); err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add([]byte{SealedVersion})
	f.Fuzz(func(t *testing.T, b []byte) {
		v, nonce, ct, err := decodeSealed(b)
		if err == nil && (v != SealedVersion || len(nonce) != gcmNonceSize || len(ct) <= gcmTagSize) {
			t.Fatalf("bad split: v=%d nonce %d ct %d", v, len(nonce), len(ct))
		}
		if out, err := s.Open(b); err == nil && !bytes.Equal(b, sealed) {
			t.Fatalf("forged sealed share opened: %x", out)
		}
	})
}

// combineInto computes what vault's shamir.Combine computes, for any set of
// shares (enough or not) of any split.
func TestCombineIntoMatchesVault(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, n := range []int{2, 3, 6, 8, 24, 40} {
		for _, size := range []int{1, KeySize, WrappedKeySize} {
			secret := make([]byte, size)
			for i := range secret {
				secret[i] = byte(r.Uint32())
			}
			shares, err := Split(secret, n, Threshold(n))
			if err != nil {
				t.Fatal(err)
			}
			for range 30 {
				k := 2 + r.IntN(n-1)
				perm := r.Perm(n)
				var sub [][]byte
				for _, i := range perm[:k] {
					sub = append(sub, shares[i])
				}
				want, err := Combine(sub)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]byte, size)
				if err := combineInto(got, make([]byte, k), sub); err != nil || !bytes.Equal(got, want) {
					t.Fatalf("n=%d k=%d: %x, %v; vault %x", n, k, got, err, want)
				}
			}
		}
	}
	sh, _ := Split(NewKey(), 3, 2)
	out, coef := make([]byte, KeySize), make([]byte, 3)
	for name, in := range map[string][][]byte{
		"one":       sh[:1],
		"duplicate": {sh[0], sh[0]},
		"x zero":    {append(bytes.Clone(sh[0][:KeySize]), 0), sh[1]},
		"lengths":   {sh[0], sh[1][1:]},
	} {
		if err := combineInto(out, coef, in); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestGFField(t *testing.T) {
	for a := 1; a < 256; a++ {
		if p := gfMul(byte(a), gfInv(byte(a))); p != 1 {
			t.Fatalf("%d * inv(%d) = %d", a, a, p)
		}
	}
	// FIPS-197 section 4.2: {57} * {83} = {c1}, {57} * {13} = {fe}.
	if gfMul(0x57, 0x83) != 0xc1 || gfMul(0x57, 0x13) != 0xfe {
		t.Fatal("gfMul disagrees with FIPS-197")
	}
}

func FuzzCombineInto(f *testing.F) {
	sh, _ := Split([]byte("secret"), 4, 3)
	f.Add(sh[0], sh[1], sh[2])
	f.Fuzz(func(t *testing.T, a, b, c []byte) {
		in := [][]byte{a, b, c}
		want, werr := Combine(in)
		got := make([]byte, max(len(a)-1, 0))
		gerr := combineInto(got, make([]byte, 3), in)
		if werr == nil && gerr == nil && !bytes.Equal(got, want) {
			t.Fatalf("combineInto %x, vault %x", got, want)
		}
		if werr == nil && gerr != nil && !slices.ContainsFunc(in, func(s []byte) bool { return len(s) > 0 && s[len(s)-1] == 0 }) {
			t.Fatalf("vault combines, combineInto fails: %v", gerr)
		}
	})
}

func FuzzUnwrap(f *testing.F) {
	kek := make([]byte, KeySize)
	w, _ := Wrap(kek, make([]byte, KeySize))
	f.Add(w)
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := Unwrap(kek, b)
		if err != nil {
			return
		}
		// Only a genuine wrapping unwraps, and it re-wraps to itself.
		if again, err := Wrap(kek, key); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("unwrapped %x re-wraps to %x, %v", key, again, err)
		}
	})
}
