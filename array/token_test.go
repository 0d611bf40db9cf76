package array

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/ovh/kmip-go"

	"vfa/internal/devsb"
	"vfa/keys"
	"vfa/keys/kmiptest"
)

// The security token against an in-process KMIP server (keys/kmiptest) and
// with a token file: enabling, every way the key can be missing at boot
// (each leaves the array locked with its reason and serving nothing), the
// unlock retry, the running checks, and the crypto-erase of disabling.

type tclock struct {
	mu sync.Mutex
	d  time.Duration
}

func (c *tclock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Add(c.d)
}

func (c *tclock) Advance(d time.Duration) { c.mu.Lock(); c.d += d; c.mu.Unlock() }

func tokenOptions(fs vfs.FS, clock *tclock) Options {
	return Options{Dir: "/a", FS: fs, Now: clock.Now, KMIPCheckInterval: -1, KMIPTimeout: time.Second, UnlockRetry: time.Hour}
}

func openOpts(t *testing.T, o Options) *Array {
	t.Helper()
	a, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func cloneFS(fs vfs.FS) *vfs.MemFS {
	return fs.(*vfs.MemFS).CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 1))})
}

// setupKMIPServer makes the array's certificate, has the KMS CA sign its
// CSR, imports it and defines the KMIP server object "kms1".
func setupKMIPServer(t *testing.T, a *Array, srv *kmiptest.Server) {
	t.Helper()
	if _, err := a.CreateCertificate("kmip-cert", CertOptions{CommonName: "purefa", Organization: "vfa", KeyAlgorithm: "ec"}); err != nil {
		t.Fatal(err)
	}
	csr, err := a.CertificateRequest("kmip-cert", nil)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := srv.SignCSR([]byte(csr), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ImportCertificate("kmip-cert", signed); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateKMIPServer(KMIPServer{Name: "kms1", URIs: []string{srv.Addr()}, Certificate: "kmip-cert", CA: string(srv.CAPEM())}); err != nil {
		t.Fatal(err)
	}
}

var marker = []byte("RDL-PLAINTEXT-MARKER:top secret payroll data:")

func markerData() []byte {
	return bytes.Repeat(append(marker, make([]byte, 64-len(marker))...), 8192/64)
}

func writeMarker(t *testing.T, a *Array) {
	t.Helper()
	if _, err := a.CreateVolume("v1", 1<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := a.Device("v1")
	if err != nil {
		t.Fatal(err)
	}
	if err := dev.WriteAt(context.Background(), markerData(), 0); err != nil {
		t.Fatal(err)
	}
}

func checkMarker(t *testing.T, a *Array) {
	t.Helper()
	dev, err := a.Device("v1")
	if err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 8192)
	if err := dev.ReadAt(context.Background(), got, 0); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, markerData()) {
		t.Fatal("data read back differs")
	}
}

// noPlaintext reads every file of the data directory: the marker must not
// be anywhere.
func noPlaintext(t *testing.T, fs vfs.FS) {
	t.Helper()
	var walk func(dir string)
	n := 0
	walk = func(dir string) {
		names, err := fs.List(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range names {
			p := filepath.Join(dir, name)
			st, err := fs.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if st.IsDir() {
				walk(p)
				continue
			}
			f, err := fs.Open(p)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, st.Size())
			_, err = io.ReadFull(f, b)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			n++
			if bytes.Contains(b, marker[:20]) {
				t.Fatalf("plaintext of the written data found in %s", p)
			}
		}
	}
	walk("/a")
	if n < 8 {
		t.Fatalf("only %d files read", n)
	}
}

// sealedSlots counts the SSD key slots with shares, and how many of them
// are sealed.
func sealedSlots(t *testing.T, fs vfs.FS) (sealed, shares int) {
	t.Helper()
	for i := 0; i < 6; i++ {
		f, err := fs.Open(filepath.Join("/a", "ssd", ssdName(i)))
		if err != nil {
			continue
		}
		sb, err := devsb.Read(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		for _, sl := range []devsb.KeySlot{sb.Cur, sb.Prev} {
			if len(sl.AKShare) > 0 {
				shares++
				if sl.Sealed {
					sealed++
				}
			}
		}
	}
	return sealed, shares
}

func ssdName(i int) string { return "ssd0" + string(rune('0'+i)) + ".dev" }

func newKMS(t *testing.T) *kmiptest.Server {
	t.Helper()
	srv, err := kmiptest.New(kmiptest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

// enabledArray returns the files of an array with data written and the
// security token enabled on srv, closed.
func enabledArray(t *testing.T, srv *kmiptest.Server, clock *tclock) (*vfs.MemFS, TokenStatus) {
	t.Helper()
	fs := newMemFS(t)
	a := openOpts(t, tokenOptions(fs, clock))
	setupKMIPServer(t, a, srv)
	if kt, err := a.TestKMIPServer(context.Background(), "kms1"); err != nil || !kt.OK {
		t.Fatalf("purekmip test: %+v %v", kt, err)
	}
	writeMarker(t, a)
	if _, err := a.EnableTokenKMIP(context.Background(), "nosuch"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown server: %v", err)
	}
	st, err := a.EnableTokenKMIP(context.Background(), "kms1")
	if err != nil {
		t.Fatal(err)
	}
	if !st.Enabled || st.Status != "enabled" || st.Type != TokenKMIP || len(st.Signature) != 64 || st.Server != "kms1" {
		t.Fatalf("status %+v", st)
	}
	if _, err := a.EnableTokenKMIP(context.Background(), "kms1"); !errors.Is(err, ErrTokenEnabled) {
		t.Fatalf("second enable: %v", err)
	}
	if !a.Store().KeysSealed() {
		t.Fatal("keys not sealed after enabling")
	}
	if err := a.DeleteKMIPServer("kms1"); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete the token's server: %v", err)
	}
	if users := a.CertificateUsers("KMIP-CERT"); len(users) != 1 {
		t.Fatalf("certificate users %v", users)
	}
	if tt, err := a.TestToken(context.Background()); err != nil || !tt.OK {
		t.Fatalf("test token: %+v %v", tt, err)
	}
	checkMarker(t, a)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if sealed, shares := sealedSlots(t, fs); sealed != shares || shares < 6 {
		t.Fatalf("%d of %d stored shares sealed", sealed, shares)
	}
	ks := srv.Keys()
	if len(ks) != 1 || ks[0].State != kmip.StateActive || ks[0].Name != "vfa-rdl-"+a.Config().ID || ks[0].UID != st.Record.UID ||
		keys.TokenSignature(ks[0].Value) != st.Signature {
		t.Fatalf("server keys %+v", ks)
	}
	return fs.(*vfs.MemFS), st
}

// waitUnlocked waits for the unlock retry loop to unlock a (it notifies
// Changes when it does).
func waitUnlocked(t *testing.T, a *Array) {
	t.Helper()
	ch, stop := a.Changes()
	defer stop()
	deadline := time.After(20 * time.Second)
	for {
		if locked, _ := a.Locked(); !locked {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			_, why := a.Locked()
			t.Fatalf("still locked: %s", why)
		}
	}
}

// shortCases are the boot cases -short runs: one of each kind of failure.
var shortCases = map[string]bool{"revoked": true, "unreachable": true, "certificate not trusted": true, "replaced by another key of the same name": true}

func TestTokenKMIPBoot(t *testing.T) {
	srv := newKMS(t)
	clock := &tclock{}
	base, st := enabledArray(t, srv, clock)
	uid := st.Record.UID

	// Restart with the key reachable: unlocked, data intact.
	a := openOpts(t, tokenOptions(cloneFS(base), clock))
	if locked, why := a.Locked(); locked {
		t.Fatalf("locked: %s", why)
	}
	checkMarker(t, a)
	a.Close()

	reactivate := func() error { return srv.Activate(uid) }
	for _, tc := range []struct {
		name    string
		breakIt func(t *testing.T)
		want    []string
		wantErr error
		// fix restores access; nil: the array stays locked for good.
		fix func(t *testing.T)
	}{
		{"revoked", func(t *testing.T) { srv.Revoke(uid, kmip.RevocationReasonCodeKeyCompromise) },
			[]string{"security token: key revoked", "Compromised"}, keys.ErrKeyRevoked, func(t *testing.T) { reactivate() }},
		{"deactivated", func(t *testing.T) { srv.Revoke(uid, kmip.RevocationReasonCodeCessationOfOperation) },
			[]string{"key deactivated", "Deactivated"}, keys.ErrKeyDeactivated, func(t *testing.T) { reactivate() }},
		{"destroyed", func(t *testing.T) {
			srv.Revoke(uid, kmip.RevocationReasonCodeCessationOfOperation)
			srv.Destroy(uid)
		}, []string{"key destroyed", "cannot be unlocked any more"}, keys.ErrKeyDestroyed, nil},
		{"unreachable", func(t *testing.T) { srv.Stop() },
			[]string{"Cannot connect and authenticate with the server", "unreachable", "connection refused"}, keys.ErrKMIPUnreachable,
			func(t *testing.T) { srv.Start() }},
		{"hung", func(t *testing.T) { srv.SetHang(true) },
			[]string{"unreachable", "no answer within 1s"}, keys.ErrKMIPUnreachable, func(t *testing.T) { srv.SetHang(false) }},
		{"certificate not trusted", func(t *testing.T) { srv.TrustClients(false) },
			[]string{"TLS handshake refused by the server", "unknown certificate authority"}, keys.ErrKMIPHandshake,
			func(t *testing.T) { srv.TrustClients(true) }},
		{"authentication refused", func(t *testing.T) { srv.SetAuthFail(true) },
			[]string{"KMIP authentication refused", "AuthenticationNotSuccessful"}, keys.ErrKMIPAuth, func(t *testing.T) { srv.SetAuthFail(false) }},
		{"not ready", func(t *testing.T) { srv.SetNotReady(true) },
			[]string{"Server is not ready for KMIP operations", "GeneralFailure"}, keys.ErrKMIPNotReady, func(t *testing.T) { srv.SetNotReady(false) }},
		{"replaced by another key of the same name", func(t *testing.T) {
			srv.Revoke(uid, kmip.RevocationReasonCodeCessationOfOperation)
			srv.Destroy(uid)
			k := srv.CreateKey("vfa-rdl-"+a.Config().ID, "purefa", 256)
			srv.Activate(k.UID)
		}, []string{"key mismatch", "not the enrolled key"}, ErrTokenMismatch, nil},
	} {
		if testing.Short() && !shortCases[tc.name] {
			continue // each case boots an array: seconds under the race detector
		}
		t.Run(tc.name, func(t *testing.T) {
			fs := cloneFS(base)
			srv.Start()
			reactivate()
			tc.breakIt(t)
			o := tokenOptions(fs, clock)
			a := openOpts(t, o)
			locked, why := a.Locked()
			if !locked {
				t.Fatal("unlocked without its key")
			}
			for _, w := range tc.want {
				if !strings.Contains(why, w) {
					t.Errorf("reason %q lacks %q", why, w)
				}
			}
			tok, _ := a.Token()
			if tok.Status != "locked: "+why {
				t.Errorf("token status %q", tok.Status)
			}
			if al := a.Alerts(false); len(al) == 0 || al[0].Code != "array.locked" || !strings.Contains(al[0].Message, tc.want[0]) {
				t.Errorf("alerts %+v", al)
			}
			dev, err := a.Device("v1")
			if err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 4096)
			if err := dev.ReadAt(context.Background(), buf, 0); !errors.Is(err, ErrLocked) {
				t.Fatalf("read while locked: %v", err)
			}
			if err := a.Ready(); !errors.Is(err, ErrLocked) {
				t.Fatalf("ready: %v", err)
			}
			err = a.TryUnlock()
			if !errors.Is(err, tc.wantErr) {
				t.Fatalf("retry: %v, want %v", err, tc.wantErr)
			}
			noPlaintext(t, fs)
			if tc.fix == nil {
				return
			}
			tc.fix(t)
			if err := a.TryUnlock(); err != nil {
				t.Fatalf("unlock after access came back: %v", err)
			}
			if len(a.Alerts(false)) != 0 {
				t.Fatalf("alerts left open: %+v", a.Alerts(false))
			}
			checkMarker(t, a)
		})
	}

	// The retry loop unlocks by itself when the server comes back.
	t.Run("retry loop", func(t *testing.T) {
		srv.Start()
		reactivate()
		srv.Stop()
		o := tokenOptions(cloneFS(base), clock)
		o.UnlockRetry = 20 * time.Millisecond
		a := openOpts(t, o)
		if locked, _ := a.Locked(); !locked {
			t.Fatal("unlocked with the server down")
		}
		srv.Start()
		waitUnlocked(t, a)
		checkMarker(t, a)
	})

	// The array does not trust the server's certificate.
	t.Run("server not trusted", func(t *testing.T) {
		srv.Start()
		fs := cloneFS(base)
		a := openOpts(t, tokenOptions(fs, clock))
		other := newKMS(t)
		if _, err := a.UpdateKMIPServer("kms1", func(s *KMIPServer) error { s.CA = string(other.CAPEM()); return nil }); err != nil {
			t.Fatal(err)
		}
		a.Close()
		a = openOpts(t, tokenOptions(fs, clock))
		if locked, why := a.Locked(); !locked || !strings.Contains(why, "server certificate not trusted") {
			t.Fatalf("locked %v: %s", locked, why)
		}
	})
}

func TestTokenRunningChecks(t *testing.T) {
	srv := newKMS(t)
	clock := &tclock{}
	base, st := enabledArray(t, srv, clock)
	a := openOpts(t, tokenOptions(cloneFS(base), clock))
	ctx := context.Background()
	if r := a.CheckToken(ctx); r != "" {
		t.Fatalf("healthy check: %s", r)
	}
	for _, tc := range []struct {
		name       string
		breakIt    func()
		fix        func()
		want       string
		testWanted string
	}{
		{"revoked", func() { srv.Revoke(st.Record.UID, kmip.RevocationReasonCodeKeyCompromise) }, func() { srv.Activate(st.Record.UID) },
			"key revoked", "key revoked"},
		{"unreachable", srv.Stop, func() { srv.Start() }, "Cannot connect and authenticate with the server", "Cannot connect"},
		{"certificate expired", func() { clock.Advance(48 * time.Hour) }, func() { clock.Advance(-48 * time.Hour) },
			"certificate kmip-cert expired", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.breakIt()
			r := a.CheckToken(ctx)
			if !strings.Contains(r, tc.want) {
				t.Fatalf("check: %q", r)
			}
			tok, _ := a.Token()
			if !strings.HasPrefix(tok.Status, "degraded: ") {
				t.Fatalf("status %q", tok.Status)
			}
			if al := a.Alerts(false); len(al) != 1 || al[0].Code != alertTokenDegraded {
				t.Fatalf("alerts %+v", al)
			}
			if tc.testWanted != "" {
				if tt, _ := a.TestToken(ctx); tt.OK || !strings.HasPrefix(tt.Reason, tc.testWanted) {
					t.Fatalf("test: %+v", tt)
				}
			}
			checkMarker(t, a) // data stays available
			tc.fix()
			if r := a.CheckToken(ctx); r != "" {
				t.Fatalf("after the fix: %s", r)
			}
			if al := a.Alerts(false); len(al) != 0 {
				t.Fatalf("alerts %+v", al)
			}
		})
	}
}

func TestTokenFile(t *testing.T) {
	clock := &tclock{}
	fs := newMemFS(t)
	if err := fs.MkdirAll("/usb", 0o755); err != nil {
		t.Fatal(err)
	}
	a := openOpts(t, tokenOptions(fs, clock))
	writeMarker(t, a)
	for _, bad := range []string{"relative/token", "/usb/../usb/t", ""} {
		if _, err := a.EnableTokenFile(bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	f, _ := fs.Create("/usb/garbage", vfs.WriteCategoryUnspecified)
	f.Write([]byte("not a token\n"))
	f.Close()
	if _, err := a.EnableTokenFile("/usb/garbage"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("garbage file: %v", err)
	}
	if tok, _ := a.Token(); tok.Enabled {
		t.Fatal("a refused enable enabled the token")
	}
	st, err := a.EnableTokenFile("/usb/rdl.token")
	if err != nil {
		t.Fatal(err)
	}
	if st.Type != TokenFile || st.Server != "/usb/rdl.token" || st.Status != "enabled" {
		t.Fatalf("%+v", st)
	}
	a.Close()
	tokenBytes := readAll(t, fs, "/usb/rdl.token")
	key, err := DecodeTokenFile(tokenBytes)
	if err != nil || keys.TokenSignature(key) != st.Signature {
		t.Fatalf("token file: %v", err)
	}

	// Remove the file: locked at the next boot; put it back: unlocks.
	fs.Remove("/usb/rdl.token")
	a = openOpts(t, tokenOptions(fs, clock))
	if locked, why := a.Locked(); !locked || !strings.Contains(why, "token file /usb/rdl.token is missing") {
		t.Fatalf("locked %v: %s", locked, why)
	}
	noPlaintext(t, fs)
	// Another key in its place: a mismatch.
	other, _ := EncodeTokenFile(keys.NewKey())
	writeFile(t, fs, "/usb/rdl.token", other)
	if err := a.TryUnlock(); !errors.Is(err, ErrTokenMismatch) {
		t.Fatalf("other key: %v", err)
	}
	writeFile(t, fs, "/usb/rdl.token", tokenBytes)
	if err := a.TryUnlock(); err != nil {
		t.Fatal(err)
	}
	checkMarker(t, a)
	if r := a.CheckToken(context.Background()); r != "" {
		t.Fatal(r)
	}
	fs.Remove("/usb/rdl.token")
	if r := a.CheckToken(context.Background()); !strings.Contains(r, "missing") {
		t.Fatalf("check without the file: %q", r)
	}
	checkMarker(t, a)
}

func readAll(t *testing.T, fs vfs.FS, p string) []byte {
	t.Helper()
	f, err := fs.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func writeFile(t *testing.T, fs vfs.FS, p string, b []byte) {
	t.Helper()
	f, err := fs.Create(p, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Sync()
	f.Close()
}

func TestTokenDisable(t *testing.T) {
	srv := newKMS(t)
	clock := &tclock{}
	base, st := enabledArray(t, srv, clock)

	for _, locked := range []bool{false, true} {
		name := "unlocked"
		if locked {
			name = "locked with the key destroyed"
		}
		t.Run(name, func(t *testing.T) {
			fs := cloneFS(base)
			srv.Activate(st.Record.UID)
			if locked {
				srv.Revoke(st.Record.UID, kmip.RevocationReasonCodeCessationOfOperation)
				srv.Destroy(st.Record.UID)
			}
			a := openOpts(t, tokenOptions(fs, clock))
			if isLocked, _ := a.Locked(); isLocked != locked {
				t.Fatalf("locked %v", isLocked)
			}
			if err := a.CreateHost("h1", []string{"iqn.2005-03.org.open-iscsi:h1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := a.Connect("v1", "h1", false, 1); err != nil {
				t.Fatal(err)
			}
			old, _ := a.Device("v1")
			if err := a.DisableToken(); err != nil {
				t.Fatal(err)
			}
			if isLocked, why := a.Locked(); isLocked {
				t.Fatalf("locked after the erase: %s", why)
			}
			if tok, _ := a.Token(); tok.Enabled || tok.Status != "disabled" {
				t.Fatalf("token %+v", tok)
			}
			if len(a.Volumes()) != 0 || len(a.Hosts()) != 0 || len(a.Connections()) != 0 {
				t.Fatalf("not empty: %v %v %v", a.Volumes(), a.Hosts(), a.Connections())
			}
			if _, err := a.Certificate("kmip-cert"); err != nil {
				t.Fatalf("certificates are kept: %v", err)
			}
			if _, err := a.KMIPServerByName("kms1"); err != nil {
				t.Fatalf("KMIP servers are kept: %v", err)
			}
			buf := make([]byte, 4096)
			if err := old.ReadAt(context.Background(), buf, 0); err == nil {
				t.Fatal("a volume handle from before the erase still reads")
			}
			if err := a.DisableToken(); !errors.Is(err, ErrTokenDisabled) {
				t.Fatalf("second disable: %v", err)
			}
			// Usable: a new volume takes writes, survives a restart, and the
			// array boots without a token.
			writeMarker(t, a)
			checkMarker(t, a)
			if sealed, _ := sealedSlots(t, fs); sealed != 0 {
				t.Fatalf("%d sealed shares after the erase", sealed)
			}
			a.Close()
			a = openOpts(t, tokenOptions(fs, clock))
			if isLocked, why := a.Locked(); isLocked {
				t.Fatalf("locked after a restart: %s", why)
			}
			checkMarker(t, a)
			if v := a.Volumes(); len(v) != 1 || v[0].ID < 2 {
				t.Fatalf("volumes %+v (ids are not reused)", v)
			}
		})
	}
}

func TestKMIPServerObjects(t *testing.T) {
	srv := newKMS(t)
	a := openMemArray(t, nil)
	if _, err := a.CreateCertificate("c1", CertOptions{CommonName: "purefa"}); err != nil {
		t.Fatal(err)
	}
	ca := string(srv.CAPEM())
	for _, tc := range []struct {
		s    KMIPServer
		want error
	}{
		{KMIPServer{Name: "k", URIs: []string{"127.0.0.1"}, Certificate: "c1", CA: ca}, ErrInvalid},
		{KMIPServer{Name: "k", URIs: nil, Certificate: "c1", CA: ca}, ErrInvalid},
		{KMIPServer{Name: "k", URIs: []string{"a:1", "A:1"}, Certificate: "c1", CA: ca}, ErrInvalid},
		{KMIPServer{Name: "k", URIs: []string{"a:1"}, Certificate: "nosuch", CA: ca}, ErrNotFound},
		{KMIPServer{Name: "k", URIs: []string{"a:1"}, Certificate: "c1", CA: "garbage"}, ErrBadCA},
		{KMIPServer{Name: "k", URIs: []string{"a:1"}, Certificate: "c1", CA: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"}, ErrBadCA},
		{KMIPServer{Name: "-k", URIs: []string{"a:1"}, Certificate: "c1", CA: ca}, ErrInvalid},
	} {
		if _, err := a.CreateKMIPServer(tc.s); !errors.Is(err, tc.want) {
			t.Errorf("%+v: %v, want %v", tc.s, err, tc.want)
		}
	}
	if l, _ := a.KMIPServers(); len(l) != 0 {
		t.Fatalf("refused creates left %v", l)
	}
	s := KMIPServer{Name: "kms1", URIs: []string{srv.Addr(), "kms2.example.com:5696"}, Certificate: "c1", CA: ca}
	if _, err := a.CreateKMIPServer(s); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateKMIPServer(s); !errors.Is(err, ErrExists) {
		t.Fatal(err)
	}
	// Self-signed certificate: the server refuses it in the handshake.
	kt, err := a.TestKMIPServer(context.Background(), "KMS1")
	if err != nil || kt.OK || !errors.Is(kt.Err, keys.ErrKMIPHandshake) || !strings.Contains(kt.Reason, "unknown certificate authority") {
		t.Fatalf("test with a self-signed certificate: %+v %v", kt, err)
	}
	if _, err := a.UpdateKMIPServer("kms1", func(s *KMIPServer) error { s.URIs = []string{"nope"}; return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatal(err)
	}
	if got, _ := a.KMIPServerByName("kms1"); len(got.URIs) != 2 {
		t.Fatalf("refused update changed %+v", got)
	}
	if err := a.DeleteCertificate("c1", func(n string) string { return strings.Join(a.CertificateUsers(n), ", ") }); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete used certificate: %v", err)
	}
	if err := a.DeleteKMIPServer("kms1"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.KMIPServerByName("kms1"); !errors.Is(err, ErrNotFound) {
		t.Fatal(err)
	}
}

func TestTokenCodecs(t *testing.T) {
	rec := TokenRecord{Type: TokenKMIP, Server: "kms1", KeyName: "vfa-rdl-x", UID: "3", Signature: strings.Repeat("ab", 32), Enabled: time.Unix(1700000000, 0).UTC()}
	b, err := EncodeTokenRecord(rec)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeTokenRecord(b); err != nil || got != rec {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range []TokenRecord{
		{Type: "usb", Signature: rec.Signature},
		{Type: TokenKMIP, Server: "kms1", KeyName: "n", UID: "1", Signature: "short"},
		{Type: TokenKMIP, Server: "kms1", KeyName: "n", UID: "1", Signature: strings.Repeat("AB", 32)},
		{Type: TokenKMIP, Server: "kms1", KeyName: "n", Signature: rec.Signature},
		{Type: TokenFile, File: "rel", Signature: rec.Signature},
		{Type: TokenFile, File: "/x", UID: "1", Signature: rec.Signature},
	} {
		if _, err := EncodeTokenRecord(bad); err == nil {
			t.Errorf("encoded %+v", bad)
		}
	}
	if _, err := DecodeTokenRecord([]byte(`{"version":2,"type":"file","file":"/x","signature":"` + rec.Signature + `"}`)); !errors.Is(err, ErrBadTokenRecord) {
		t.Fatal(err)
	}
	key := keys.NewKey()
	tf, _ := EncodeTokenFile(key)
	if got, err := DecodeTokenFile(tf); err != nil || !bytes.Equal(got, key) {
		t.Fatal(err)
	}
	for _, bad := range [][]byte{nil, []byte("vfa security token 1\n"), append([]byte("vfa security token 2"), tf[20:]...),
		bytes.ToUpper(tf), append(append([]byte{}, tf...), "x\n"...)} {
		if _, err := DecodeTokenFile(bad); !errors.Is(err, ErrBadTokenFile) {
			t.Errorf("%q: %v", bad, err)
		}
	}
}

func FuzzDecodeTokenRecord(f *testing.F) {
	b, _ := EncodeTokenRecord(TokenRecord{Type: TokenFile, File: "/usb/t", Signature: strings.Repeat("0", 64)})
	f.Add(b)
	b, _ = EncodeTokenRecord(TokenRecord{Type: TokenKMIP, Server: "k", KeyName: "n", UID: "1", Signature: strings.Repeat("0", 64)})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeTokenRecord(b)
		if err != nil {
			return
		}
		b2, err := EncodeTokenRecord(r)
		if err != nil {
			t.Fatalf("decoded record does not encode: %v", err)
		}
		if r2, err := DecodeTokenRecord(b2); err != nil || !r2.Enabled.Equal(r.Enabled) || r2.Signature != r.Signature {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzDecodeTokenFile(f *testing.F) {
	b, _ := EncodeTokenFile(make([]byte, 32))
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		k, err := DecodeTokenFile(b)
		if err != nil {
			return
		}
		b2, err := EncodeTokenFile(k)
		if err != nil || !bytes.Equal(bytes.TrimSuffix(b2, []byte("\n")), bytes.TrimSuffix(b, []byte("\n"))) {
			t.Fatalf("round trip: %q %q %v", b, b2, err)
		}
	})
}

func FuzzDecodeKMIPServer(f *testing.F) {
	srv, err := kmiptest.New(kmiptest.Options{})
	if err != nil {
		f.Fatal(err)
	}
	srv.Close()
	b, _ := EncodeKMIPServer(KMIPServer{Name: "kms1", URIs: []string{"127.0.0.1:5696"}, Certificate: "c1", CA: string(srv.CAPEM())})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := DecodeKMIPServer(b)
		if err != nil {
			return
		}
		b2, err := EncodeKMIPServer(s)
		if err != nil {
			t.Fatalf("decoded server does not encode: %v", err)
		}
		if s2, err := DecodeKMIPServer(b2); err != nil || s2.Name != s.Name || len(s2.URIs) != len(s.URIs) {
			t.Fatalf("round trip: %v", err)
		}
	})
}
