package array

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Administrators: the accounts that may log in to the management interfaces
// and their credentials. The array stores them; it does not check them (the
// management shell hashes and verifies passwords and keys, and owns the
// format of the password hash string).
//
// Stored in the metadata store as "admin/<lower-case name>", value format
// version 1 (integers little-endian, "str" is a uvarint byte length followed
// by that many bytes):
//
//	offset  size  field
//	0       1     version (1)
//	1       8     created, Unix nanoseconds (int64)
//	9       8     changed (credentials last set), Unix nanoseconds (int64)
//	17      str   name (1 to 32 bytes)
//	.       str   password hash (0 to 256 bytes; empty: no password login)
//	.       uvarint  number of public keys (at most 32)
//	.       str   each public key, one authorized_keys line (1 to 8192 bytes)
//
// Nothing may follow the last key.

// AdminFormatVersion is the version of the administrator record.
const AdminFormatVersion = 1

// Limits of an administrator record.
const (
	adminNameMax   = 32
	adminHashMax   = 256
	AdminKeysMax   = 32
	adminKeyMax    = 8192
	adminKeyPrefix = "admin/"
)

// ErrBadAdminRecord: a stored administrator record does not decode.
var ErrBadAdminRecord = errors.New("malformed administrator record")

// Admin is one administrator account.
type Admin struct {
	Name         string
	PasswordHash string   // empty: no password login
	PublicKeys   []string // authorized_keys lines
	Created      time.Time
	Changed      time.Time
}

// EncodeAdmin encodes an administrator record.
func EncodeAdmin(ad Admin) ([]byte, error) {
	if len(ad.Name) == 0 || len(ad.Name) > adminNameMax {
		return nil, fmt.Errorf("%w: administrator name %q must be 1 to %d bytes", ErrInvalid, ad.Name, adminNameMax)
	}
	if len(ad.PasswordHash) > adminHashMax {
		return nil, fmt.Errorf("%w: password hash of %d bytes", ErrInvalid, len(ad.PasswordHash))
	}
	if len(ad.PublicKeys) > AdminKeysMax {
		return nil, fmt.Errorf("%w: %d public keys, at most %d", ErrInvalid, len(ad.PublicKeys), AdminKeysMax)
	}
	b := make([]byte, 0, 64+len(ad.PasswordHash))
	b = append(b, AdminFormatVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(ad.Created.UnixNano()))
	b = binary.LittleEndian.AppendUint64(b, uint64(ad.Changed.UnixNano()))
	b = appendStr(b, ad.Name)
	b = appendStr(b, ad.PasswordHash)
	b = binary.AppendUvarint(b, uint64(len(ad.PublicKeys)))
	for _, k := range ad.PublicKeys {
		if len(k) == 0 || len(k) > adminKeyMax {
			return nil, fmt.Errorf("%w: public key of %d bytes (1 to %d)", ErrInvalid, len(k), adminKeyMax)
		}
		b = appendStr(b, k)
	}
	return b, nil
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

// DecodeAdmin decodes an administrator record.
func DecodeAdmin(b []byte) (Admin, error) {
	bad := func(why string, args ...any) (Admin, error) {
		return Admin{}, fmt.Errorf("%w: %s", ErrBadAdminRecord, fmt.Sprintf(why, args...))
	}
	if len(b) < 17 {
		return bad("%d bytes", len(b))
	}
	if b[0] != AdminFormatVersion {
		return bad("version %d, this build reads %d", b[0], AdminFormatVersion)
	}
	ad := Admin{
		Created: time.Unix(0, int64(binary.LittleEndian.Uint64(b[1:9]))).UTC(),
		Changed: time.Unix(0, int64(binary.LittleEndian.Uint64(b[9:17]))).UTC(),
	}
	rest := b[17:]
	var err error
	if ad.Name, rest, err = readStr(rest, adminNameMax); err != nil {
		return bad("name: %v", err)
	}
	if ad.Name == "" {
		return bad("empty name")
	}
	if ad.PasswordHash, rest, err = readStr(rest, adminHashMax); err != nil {
		return bad("password hash: %v", err)
	}
	n, k := binary.Uvarint(rest)
	if k <= 0 || n > AdminKeysMax {
		return bad("key count")
	}
	rest = rest[k:]
	for i := uint64(0); i < n; i++ {
		var key string
		if key, rest, err = readStr(rest, adminKeyMax); err != nil {
			return bad("key %d: %v", i, err)
		}
		if key == "" {
			return bad("key %d is empty", i)
		}
		ad.PublicKeys = append(ad.PublicKeys, key)
	}
	if len(rest) != 0 {
		return bad("%d bytes after the last key", len(rest))
	}
	return ad, nil
}

// Admins lists the administrators by name.
func (a *Array) Admins() ([]Admin, error) {
	kvs, err := a.store.ObjectList(adminKeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("admins: %w", err)
	}
	out := make([]Admin, 0, len(kvs))
	for _, kv := range kvs {
		ad, err := DecodeAdmin(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("admins: %s: %w", kv.Key, err)
		}
		out = append(out, ad)
	}
	sort.Slice(out, func(i, j int) bool { return lower(out[i].Name) < lower(out[j].Name) })
	return out, nil
}

// Admin returns one administrator (ErrNotFound when there is none).
func (a *Array) Admin(name string) (Admin, error) {
	v, ok, err := a.store.ObjectGet(adminKeyPrefix + lower(name))
	if err != nil {
		return Admin{}, fmt.Errorf("admin %s: %w", name, err)
	}
	if !ok {
		return Admin{}, fmt.Errorf("administrator %s %w", name, ErrNotFound)
	}
	ad, err := DecodeAdmin(v)
	if err != nil {
		return Admin{}, fmt.Errorf("admin %s: %w", name, err)
	}
	return ad, nil
}

// PutAdmin creates or replaces an administrator record, durably.
func (a *Array) PutAdmin(ad Admin) error {
	if err := ValidName(ad.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	v, err := EncodeAdmin(ad)
	if err != nil {
		return err
	}
	if err := a.store.ObjectUpdate(map[string][]byte{adminKeyPrefix + lower(ad.Name): v}, nil); err != nil {
		return fmt.Errorf("admin %s: %w", ad.Name, err)
	}
	return nil
}
