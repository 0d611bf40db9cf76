package iscsi

// CHAP (RFC 1994) as iSCSI uses it (RFC 7143 §12.1.3): the target sends
// CHAP_A=5 (MD5), an identifier CHAP_I and a random challenge CHAP_C; the
// initiator answers CHAP_N (its user name) and CHAP_R = MD5(I || secret || C).
// For mutual CHAP the initiator also sends CHAP_I and CHAP_C, and the target
// answers CHAP_N and CHAP_R computed with the target secret. A challenge equal
// to the one the target sent is a reflection attack and is refused.

import (
	"crypto/md5"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
)

const (
	chapMD5          = 5
	chapChallengeLen = 16   // bytes of challenge we send
	chapMaxBinary    = 1024 // longest CHAP_C / CHAP_R we accept, in bytes
)

var errBinary = errors.New("malformed binary value")

// chapResponse computes the CHAP response MD5(id || secret || challenge).
func chapResponse(id byte, secret string, challenge []byte) [md5.Size]byte {
	h := md5.New()
	h.Write([]byte{id})
	h.Write([]byte(secret))
	h.Write(challenge)
	var out [md5.Size]byte
	h.Sum(out[:0])
	return out
}

// chapVerify reports whether resp is the right response; constant time.
func chapVerify(id byte, secret string, challenge, resp []byte) bool {
	want := chapResponse(id, secret, challenge)
	return len(resp) == len(want) && subtle.ConstantTimeCompare(want[:], resp) == 1
}

// decodeBinary decodes an RFC 7143 binary value: 0x/0X hex or 0b/0B base64.
func decodeBinary(v string) ([]byte, error) {
	if len(v) < 3 {
		return nil, errBinary
	}
	var (
		b   []byte
		err error
	)
	switch v[:2] {
	case "0x", "0X":
		s := v[2:]
		if len(s)%2 == 1 {
			s = "0" + s
		}
		b, err = hex.DecodeString(s)
	case "0b", "0B":
		b, err = base64.StdEncoding.DecodeString(v[2:])
		if err != nil {
			b, err = base64.RawStdEncoding.DecodeString(v[2:])
		}
	default:
		return nil, errBinary
	}
	if err != nil || len(b) == 0 || len(b) > chapMaxBinary {
		return nil, errBinary
	}
	return b, nil
}

func encodeHex(b []byte) string {
	return "0x" + strings.ToUpper(hex.EncodeToString(b))
}
