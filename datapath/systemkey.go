package datapath

// The system key: a 256-bit secret for the array's own configuration
// secrets (certificate private keys, its phone-home identity). It must be
// usable while the array is locked: the array needs its KMIP client
// certificate to fetch the key that unlocks it. So it is not part of the
// data key hierarchy and is never sealed by the security token; it is
// Shamir-split over the SSDs (threshold as for the array key) and stored in
// each SSD superblock's extra field. It protects configuration secrets
// against one stolen device or a copy of the metadata store, not against
// someone holding enough SSDs: data stays protected by the array key and
// the token.
//
// Superblock extra field, format version 1:
//
//	off len field
//	  0   1 version (systemShareVersion)
//	  1   1 kind: 1 = system key share
//	  2   8 split id (random; shares of different splits are never combined)
//	 10   n the Shamir share (33 bytes for a 32-byte key)

import (
	"errors"
	"fmt"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
	"vfa/keys"
	"vfa/ssd"
)

const (
	systemShareVersion = 1
	systemShareKind    = 1
	systemShareHeader  = 10
)

// ErrNoSystemKey: too few SSDs carry a share of the system key.
var ErrNoSystemKey = errors.New("system key unavailable")

func encodeSystemShare(split []byte, share []byte) []byte {
	b := []byte{systemShareVersion, systemShareKind}
	b = append(b, split...)
	return append(b, share...)
}

func decodeSystemShare(extra []byte) (split, share []byte, ok bool) {
	if len(extra) <= systemShareHeader || extra[0] != systemShareVersion || extra[1] != systemShareKind {
		return nil, nil, false
	}
	return extra[2:systemShareHeader], extra[systemShareHeader:], true
}

// loadSystemKey reads the system key shares from the SSD superblocks
// (without unlocking anything). An array without shares (made by an older
// build) gets a new system key written to every present SSD.
func (s *Store) loadSystemKey() error {
	var sbs []*devsb.Superblock
	var devs []*ssd.Device
	for i := 0; i < s.o.SSDs; i++ {
		d, sb, err := ssd.Open(s.o.FS, ssdPath(s.o.Dir, i))
		if err != nil {
			continue
		}
		if sb.ArrayID != s.o.ArrayID || d.Failed() != nil {
			d.Close()
			continue
		}
		devs = append(devs, d)
		sbs = append(sbs, sb)
	}
	defer func() {
		for _, d := range devs {
			d.Close()
		}
	}()
	t := keys.Threshold(s.o.SSDs)
	groups := map[string][][]byte{}
	for _, sb := range sbs {
		if split, share, ok := decodeSystemShare(sb.Extra); ok {
			groups[string(split)] = append(groups[string(split)], share)
		}
	}
	for _, shares := range groups {
		if len(shares) < t {
			continue
		}
		key, err := keys.Combine(shares[:t])
		if err == nil && len(key) == keys.KeySize {
			s.sysKey = key
			return nil
		}
	}
	if len(groups) > 0 {
		return fmt.Errorf("%w: fewer than %d SSDs hold a share", ErrNoSystemKey, t)
	}
	if len(devs) < s.o.SSDs {
		return fmt.Errorf("%w: no shares, and not every SSD is present to create them", ErrNoSystemKey)
	}
	return s.createSystemKey(devs)
}

func (s *Store) createSystemKey(devs []*ssd.Device) error {
	key := keys.NewKey()
	split := keys.NewKey()[:8]
	shares, err := keys.Split(key, len(devs), keys.Threshold(s.o.SSDs))
	if err != nil {
		return err
	}
	for i, d := range devs {
		extra := encodeSystemShare(split, shares[i])
		if err := d.UpdateSuperblock(func(sb *devsb.Superblock) { sb.Extra = extra }); err != nil {
			return fmt.Errorf("system key: %w", err)
		}
	}
	s.sysKey = key
	return nil
}

// SystemKey returns a key derived from the system key for one purpose
// (label). It is available while the array is locked.
func (s *Store) SystemKey(label string) ([]byte, error) {
	if s.sysKey == nil {
		return nil, s.sysKeyErr
	}
	return keys.Derive(s.sysKey, "vfa system: "+label), nil
}

// createSystemShares puts a fresh split of the system key on the devices of
// a new array (all SSDs present).
func createSystemShares(fs vfs.FS, dir string, n int) error {
	key := keys.NewKey()
	split := keys.NewKey()[:8]
	shares, err := keys.Split(key, n, keys.Threshold(n))
	if err != nil {
		return err
	}
	for i := 0; i < n; i++ {
		d, _, err := ssd.Open(fs, ssdPath(dir, i))
		if err != nil {
			return err
		}
		extra := encodeSystemShare(split, shares[i])
		err = d.UpdateSuperblock(func(sb *devsb.Superblock) { sb.Extra = extra })
		d.Close()
		if err != nil {
			return fmt.Errorf("system key: %w", err)
		}
	}
	return nil
}
