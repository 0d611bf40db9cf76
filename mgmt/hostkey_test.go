package mgmt

import (
	"bytes"
	"crypto/ed25519"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/array"
)

func TestHostKeyRecord(t *testing.T) {
	seed := bytes.Repeat([]byte{7}, ed25519.SeedSize)
	rec, err := encodeHostKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	if len(rec) != hostKeyRecordLen || rec[0] != hostKeyFormatVersion || rec[1] != hostKeyTypeEd25519 {
		t.Fatalf("record % x", rec)
	}
	key, err := decodeHostKey(rec)
	if err != nil || !bytes.Equal(key.Seed(), seed) {
		t.Fatalf("decode: %v", err)
	}
	for _, bad := range [][]byte{nil, rec[:33], append(rec, 0), append([]byte{2}, rec[1:]...), append([]byte{1, 2}, rec[2:]...)} {
		if _, err := decodeHostKey(bad); err == nil {
			t.Errorf("decoded bad record % x", bad)
		}
	}
	if _, err := encodeHostKey(seed[:31]); err == nil {
		t.Error("encoded a short seed")
	}
}

func FuzzDecodeHostKey(f *testing.F) {
	rec, _ := encodeHostKey(make([]byte, ed25519.SeedSize))
	f.Add(rec)
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		key, err := decodeHostKey(b)
		if err != nil {
			return
		}
		again, err := encodeHostKey(key.Seed())
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("round trip: % x -> % x (%v)", b, again, err)
		}
	})
}

// TestSetupAdminCreatesHostKey: vfa init's SetupAdmin makes the host key, and
// a damaged stored key is an error, not a silent new key.
func TestSetupAdminCreatesHostKey(t *testing.T) {
	fs := vfs.NewMem()
	if _, err := array.Init(fs, "/a", array.InitOptions{SSDs: 6, SSDSize: 16 << 20, NVRAMSize: 8 << 20, AUSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	a, err := array.Open(array.Options{Dir: "/a", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if ok, err := HasAdmin(a); err != nil || ok {
		t.Fatalf("HasAdmin before setup: %v %v", ok, err)
	}
	if _, ok, _ := a.Setting(hostKeySetting); ok {
		t.Fatal("host key before setup")
	}
	if _, err := SetupAdmin(a, "not a key"); err == nil {
		t.Fatal("SetupAdmin accepted a bad key")
	}
	pw, err := SetupAdmin(a, "")
	if err != nil || pw == "" {
		t.Fatalf("SetupAdmin: %q %v", pw, err)
	}
	if ok, err := HasAdmin(a); err != nil || !ok {
		t.Fatalf("HasAdmin after setup: %v %v", ok, err)
	}
	k1, err := HostKey(a)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := HostKey(a)
	if k1 != k2 {
		t.Fatal("HostKey changed between calls")
	}
	if err := a.SetSetting(hostKeySetting, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := HostKey(a); err == nil {
		t.Fatal("a damaged host key record was accepted")
	}
	if _, err := New(a, Config{Addr: "127.0.0.1:0"}); err == nil {
		t.Fatal("New started with a damaged host key")
	}
}
