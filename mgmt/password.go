package mgmt

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
)

// Passwords are stored only as argon2id hashes (RFC 9106) in the PHC string
// form "$argon2id$v=19$m=<KiB>,t=<passes>,p=<lanes>$<salt>$<hash>" (salt and
// hash unpadded standard base64). The parameters travel with the hash, so
// they can be raised later without invalidating stored passwords; verifying
// refuses parameters beyond hashParamsMax so a damaged record cannot make a
// login attempt take unbounded memory or time.

// Cost of a new hash: 64 MiB, two passes, two lanes (RFC 9106 §4's second
// recommended option with the lanes matched to this machine's two cores).
const (
	hashMemoryKiB = 64 << 10
	hashPasses    = 2
	hashLanes     = 2
	hashSaltLen   = 16
	hashKeyLen    = 32

	hashMemoryKiBMax = 1 << 20 // 1 GiB
	hashPassesMax    = 16
	hashLanesMax     = 16

	passwordMin = 8
	passwordMax = 128
)

var errBadHash = errors.New("malformed password hash")

// hashPassword returns the PHC string of password with a fresh salt.
func hashPassword(password string) (string, error) {
	salt := make([]byte, hashSaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", err
	}
	return encodeHash(hashMemoryKiB, hashPasses, hashLanes, salt,
		argon2.IDKey([]byte(password), salt, hashPasses, hashMemoryKiB, hashLanes, hashKeyLen)), nil
}

func encodeHash(m, t uint32, p uint8, salt, key []byte) string {
	enc := base64.RawStdEncoding
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, t, p, enc.EncodeToString(salt), enc.EncodeToString(key))
}

type hashParams struct {
	m, t      uint32
	p         uint8
	salt, key []byte
}

// decodeHash parses a PHC string, refusing parameters over the limits.
func decodeHash(s string) (hashParams, error) {
	parts := strings.Split(s, "$")
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" || parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return hashParams{}, errBadHash
	}
	var hp hashParams
	for _, kv := range strings.Split(parts[3], ",") {
		k, v, ok := strings.Cut(kv, "=")
		n, err := strconv.ParseUint(v, 10, 32)
		if !ok || err != nil || n == 0 {
			return hashParams{}, errBadHash
		}
		switch k {
		case "m":
			hp.m = uint32(n)
		case "t":
			hp.t = uint32(n)
		case "p":
			if n > 255 {
				return hashParams{}, errBadHash
			}
			hp.p = uint8(n)
		default:
			return hashParams{}, errBadHash
		}
	}
	if hp.m == 0 || hp.t == 0 || hp.p == 0 || hp.m > hashMemoryKiBMax || hp.t > hashPassesMax || hp.p > hashLanesMax || hp.m < 8*uint32(hp.p) {
		return hashParams{}, errBadHash
	}
	var err error
	if hp.salt, err = base64.RawStdEncoding.DecodeString(parts[4]); err != nil || len(hp.salt) < 8 || len(hp.salt) > 64 {
		return hashParams{}, errBadHash
	}
	if hp.key, err = base64.RawStdEncoding.DecodeString(parts[5]); err != nil || len(hp.key) < 16 || len(hp.key) > 64 {
		return hashParams{}, errBadHash
	}
	return hp, nil
}

// checkPassword reports whether password matches the stored hash, in time
// independent of where they differ.
func checkPassword(stored, password string) bool {
	hp, err := decodeHash(stored)
	if err != nil || len(password) > passwordMax {
		return false
	}
	key := argon2.IDKey([]byte(password), hp.salt, hp.t, hp.m, hp.p, uint32(len(hp.key)))
	return subtle.ConstantTimeCompare(key, hp.key) == 1
}

// checkNewPassword applies the password rules.
func checkNewPassword(pw string) error {
	if len(pw) < passwordMin || len(pw) > passwordMax {
		return fmt.Errorf("password must be %d to %d characters", passwordMin, passwordMax)
	}
	for _, c := range pw {
		if c < ' ' || c == 0x7f {
			return errors.New("password may not contain control characters")
		}
	}
	return nil
}

// generatePassword makes a random password of 20 characters from an alphabet
// without look-alikes (about 116 bits).
func generatePassword() (string, error) {
	const alphabet = "abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
	buf := make([]byte, 20)
	out := make([]byte, 0, len(buf))
	for len(out) < len(buf) {
		if _, err := rand.Read(buf); err != nil {
			return "", err
		}
		for _, b := range buf {
			// Rejection sampling keeps the choice uniform.
			if int(b) < 256/len(alphabet)*len(alphabet) && len(out) < cap(out) {
				out = append(out, alphabet[int(b)%len(alphabet)])
			}
		}
	}
	return string(out), nil
}
