package mgmt

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"vfa/array"
)

// The SSH host key, created once (at init, or on the first start of a
// management server) and kept in the array's settings as
// "mgmt.ssh-host-key", so clients see the same key across restarts.
//
// Record, format version 1 (34 bytes):
//
//	offset  size  field
//	0       1     version (1)
//	1       1     key type (1: Ed25519)
//	2       32    Ed25519 private key seed
//
// The metadata store is not encrypted by the array key (management must work
// while the array is locked), so the seed is as safe as the data directory.

const (
	hostKeySetting       = "mgmt.ssh-host-key"
	hostKeyFormatVersion = 1
	hostKeyTypeEd25519   = 1
	hostKeyRecordLen     = 2 + ed25519.SeedSize
)

var errBadHostKey = errors.New("malformed SSH host key record")

func encodeHostKey(seed []byte) ([]byte, error) {
	if len(seed) != ed25519.SeedSize {
		return nil, fmt.Errorf("mgmt: host key seed of %d bytes", len(seed))
	}
	return append([]byte{hostKeyFormatVersion, hostKeyTypeEd25519}, seed...), nil
}

// decodeHostKey returns the private key in a host key record.
func decodeHostKey(b []byte) (ed25519.PrivateKey, error) {
	if len(b) != hostKeyRecordLen {
		return nil, fmt.Errorf("%w: %d bytes", errBadHostKey, len(b))
	}
	if b[0] != hostKeyFormatVersion {
		return nil, fmt.Errorf("%w: version %d, this build reads %d", errBadHostKey, b[0], hostKeyFormatVersion)
	}
	if b[1] != hostKeyTypeEd25519 {
		return nil, fmt.Errorf("%w: key type %d", errBadHostKey, b[1])
	}
	return ed25519.NewKeyFromSeed(b[2:]), nil
}

// hostSigner loads the array's SSH host key, creating it when there is none.
func hostSigner(a *array.Array) (gossh.Signer, error) {
	v, ok, err := a.Setting(hostKeySetting)
	if err != nil {
		return nil, fmt.Errorf("mgmt: host key: %w", err)
	}
	if !ok {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return nil, err
		}
		if v, err = encodeHostKey(seed); err != nil {
			return nil, err
		}
		if err := a.SetSetting(hostKeySetting, v); err != nil {
			return nil, fmt.Errorf("mgmt: host key: %w", err)
		}
	}
	key, err := decodeHostKey(v)
	if err != nil {
		return nil, fmt.Errorf("mgmt: host key: %w", err)
	}
	s, err := gossh.NewSignerFromKey(key)
	if err != nil {
		return nil, fmt.Errorf("mgmt: host key: %w", err)
	}
	return s, nil
}

// HostKey returns the array's SSH host public key in authorized_keys form
// ("ssh-ed25519 AAAA..."), creating the key if needed: for known_hosts files
// and for `vfa init` to print.
func HostKey(a *array.Array) (string, error) {
	s, err := hostSigner(a)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))), nil
}
