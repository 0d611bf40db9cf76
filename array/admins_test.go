package array

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestAdminCodec(t *testing.T) {
	ad := Admin{Name: "pureuser", PasswordHash: "$argon2id$v=19$m=1,t=1,p=1$abc$def", PublicKeys: []string{"ssh-ed25519 AAAA a", "ssh-rsa BBBB b"},
		Created: time.Unix(100, 5).UTC(), Changed: time.Unix(200, 6).UTC()}
	b, err := EncodeAdmin(ad)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAdmin(b)
	if err != nil || !reflect.DeepEqual(got, ad) {
		t.Fatalf("round trip %+v %v", got, err)
	}
	for _, bad := range []Admin{
		{Name: ""},
		{Name: strings.Repeat("a", 33)},
		{Name: "x", PasswordHash: strings.Repeat("h", 257)},
		{Name: "x", PublicKeys: make([]string, AdminKeysMax+1)},
		{Name: "x", PublicKeys: []string{""}},
	} {
		if _, err := EncodeAdmin(bad); err == nil {
			t.Errorf("encoded %+v", bad)
		}
	}
	for _, bad := range [][]byte{nil, b[:16], append([]byte{9}, b[1:]...), append(append([]byte(nil), b...), 1), b[:len(b)-2]} {
		if _, err := DecodeAdmin(bad); !errors.Is(err, ErrBadAdminRecord) {
			t.Errorf("decoded % x: %v", bad, err)
		}
	}
}

func FuzzDecodeAdmin(f *testing.F) {
	b, _ := EncodeAdmin(Admin{Name: "pureuser", PasswordHash: "h", PublicKeys: []string{"k"}})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		ad, err := DecodeAdmin(b)
		if err != nil {
			return
		}
		again, err := EncodeAdmin(ad)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", ad, err)
		}
		ad2, err := DecodeAdmin(again)
		if err != nil || !reflect.DeepEqual(ad, ad2) {
			t.Fatalf("re-decode %+v %v", ad2, err)
		}
	})
}

func TestAdminsStore(t *testing.T) {
	a := openMemArray(t, nil)
	if _, err := a.Admin("pureuser"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before: %v", err)
	}
	if err := a.PutAdmin(Admin{Name: "bad name"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad name: %v", err)
	}
	ad := Admin{Name: "pureuser", PasswordHash: "h"}
	if err := a.PutAdmin(ad); err != nil {
		t.Fatal(err)
	}
	got, err := a.Admin("PUREUSER")
	if err != nil || got.PasswordHash != "h" {
		t.Fatalf("%+v %v", got, err)
	}
	ad.PasswordHash, ad.PublicKeys = "", []string{"k1"}
	if err := a.PutAdmin(ad); err != nil {
		t.Fatal(err)
	}
	all, err := a.Admins()
	if err != nil || len(all) != 1 || all[0].PasswordHash != "" || len(all[0].PublicKeys) != 1 {
		t.Fatalf("%+v %v", all, err)
	}
}

func TestSettings(t *testing.T) {
	a := openMemArray(t, nil)
	if _, ok, err := a.Setting("x.y"); ok || err != nil {
		t.Fatalf("unset: %v %v", ok, err)
	}
	if err := a.SetSetting("x.y", []byte("v")); err != nil {
		t.Fatal(err)
	}
	if v, ok, err := a.Setting("x.y"); !ok || err != nil || string(v) != "v" {
		t.Fatalf("%q %v %v", v, ok, err)
	}
	if err := a.SetSetting("x.y", nil); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.Setting("x.y"); ok {
		t.Fatal("deleted setting still set")
	}
	for _, bad := range []string{"", "Upper", "a/b", strings.Repeat("a", 65)} {
		if err := a.SetSetting(bad, []byte("v")); !errors.Is(err, ErrInvalid) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if err := a.SetSetting("big", make([]byte, settingValueMax+1)); !errors.Is(err, ErrInvalid) {
		t.Errorf("big value: %v", err)
	}
}

func TestRenameHost(t *testing.T) {
	a := openMemArray(t, nil)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(a.CreateHost("h1", []string{"iqn.2005-03.org.open-iscsi:h1"}))
	must(a.CreateHost("h2", nil))
	must(a.CreateHostGroup("g", []string{"h1"}))
	_, err := a.CreateVolume("v", 1<<30)
	must(err)
	_, err = a.Connect("v", "h1", false, 5)
	must(err)
	if err := a.RenameHost("h1", "H2"); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto another host: %v", err)
	}
	if err := a.RenameHost("nosuch", "x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename a missing host: %v", err)
	}
	if err := a.RenameHost("h1", "bad_name"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("rename to a bad name: %v", err)
	}
	must(a.RenameHost("h1", "web"))
	must(a.RenameHost("web", "WEB"))
	check := func() {
		t.Helper()
		if h, _, ok := a.Host("iqn.2005-03.org.open-iscsi:h1"); !ok || h != "WEB" {
			t.Fatalf("initiator's host %q %v", h, ok)
		}
		if luns := a.LUNs("iqn.2005-03.org.open-iscsi:h1"); len(luns) != 1 || luns[0].Number != 5 {
			t.Fatalf("LUNs %+v", luns)
		}
		if gs := a.HostGroups(); len(gs) != 1 || !reflect.DeepEqual(gs[0].Hosts, []string{"WEB"}) {
			t.Fatalf("groups %+v", gs)
		}
		if cs := a.Connections(); len(cs) != 1 || cs[0].Host != "WEB" {
			t.Fatalf("connections %+v", cs)
		}
	}
	check()
	// Persisted: the same after a reopen.
	fs := a.o.FS
	a.Close()
	a = openMemArray(t, fs)
	check()
	if err := a.DeleteHost("WEB"); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete with a connection: %v", err)
	}
}
