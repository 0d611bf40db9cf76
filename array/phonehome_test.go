package array

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"

	"vfa/datapath"
)

func testCAPEM(t testing.TB) string {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "cloud CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestPhoneHomeSettingsCheck(t *testing.T) {
	ca := testCAPEM(t)
	good := PhoneHomeSettings{Enabled: true, Endpoint: "https://cloud.example:8443/upload", CACertificate: ca, Proxy: "http://proxy:3128"}
	tests := []struct {
		name string
		edit func(s *PhoneHomeSettings)
		want error // nil: valid
	}{
		{"good", func(s *PhoneHomeSettings) {}, nil},
		{"disabled and empty", func(s *PhoneHomeSettings) { *s = PhoneHomeSettings{} }, nil},
		{"http endpoint", func(s *PhoneHomeSettings) { s.Endpoint = "http://cloud.example/upload" }, ErrInvalid},
		{"no host", func(s *PhoneHomeSettings) { s.Endpoint = "https:///upload" }, ErrInvalid},
		{"credentials", func(s *PhoneHomeSettings) { s.Endpoint = "https://u:p@cloud.example/" }, ErrInvalid},
		{"bad port", func(s *PhoneHomeSettings) { s.Endpoint = "https://cloud.example:99999/" }, ErrInvalid},
		{"long", func(s *PhoneHomeSettings) { s.Endpoint = "https://cloud.example/" + strings.Repeat("a", 3000) }, ErrInvalid},
		{"not PEM", func(s *PhoneHomeSettings) { s.CACertificate = "hello" }, ErrNotPEM},
		{"a key, not a certificate", func(s *PhoneHomeSettings) {
			s.CACertificate = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"
		}, ErrNotPEM},
		{"text after PEM", func(s *PhoneHomeSettings) { s.CACertificate = ca + "junk" }, ErrNotPEM},
		{"two CAs", func(s *PhoneHomeSettings) { s.CACertificate = ca + ca }, nil},
		{"proxy with path", func(s *PhoneHomeSettings) { s.Proxy = "http://proxy:3128/x" }, ErrInvalid},
		{"proxy with credentials", func(s *PhoneHomeSettings) { s.Proxy = "http://u:p@proxy:3128" }, ErrInvalid},
		{"socks proxy", func(s *PhoneHomeSettings) { s.Proxy = "socks5://proxy:1080" }, ErrInvalid},
		{"tiny interval", func(s *PhoneHomeSettings) { s.DiagnosticsInterval = time.Millisecond }, ErrInvalid},
		{"huge interval", func(s *PhoneHomeSettings) { s.LogsInterval = 30 * 24 * time.Hour }, ErrInvalid},
		{"enabled without endpoint", func(s *PhoneHomeSettings) { s.Endpoint = "" }, ErrPhoneHomeNotConfigured},
		{"enabled without CA", func(s *PhoneHomeSettings) { s.CACertificate = "" }, ErrPhoneHomeNotConfigured},
	}
	for _, tt := range tests {
		s := good
		tt.edit(&s)
		err := s.Check()
		if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
			t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
		}
		if err != nil {
			continue
		}
		b, err := EncodePhoneHomeSettings(s)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := DecodePhoneHomeSettings(b); err != nil || got != s {
			t.Errorf("%s: round trip %+v %v", tt.name, got, err)
		}
	}
	if d, l := (PhoneHomeSettings{}).Intervals(); d != 30*time.Second || l != time.Hour {
		t.Fatalf("defaults %v %v", d, l)
	}
	for _, bad := range []string{`{"version":2}`, `{"version":1,"enabled":true}`, `{"version":1,"endpoint":"ftp://x"}`, `[`} {
		if _, err := DecodePhoneHomeSettings([]byte(bad)); !errors.Is(err, ErrBadPhoneHomeRecord) {
			t.Errorf("%s: %v", bad, err)
		}
	}
}

// FuzzDecodePhoneHomeSettings: what decodes is valid and re-encodes to
// itself.
func FuzzDecodePhoneHomeSettings(f *testing.F) {
	f.Add([]byte(`{"version":1,"enabled":false,"endpoint":"https://x/"}`))
	f.Add([]byte(`{"version":1,"diagnostics_interval_ns":30000000000}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := DecodePhoneHomeSettings(in)
		if err != nil {
			return
		}
		b, err := EncodePhoneHomeSettings(s)
		if err != nil {
			t.Fatalf("decoded settings do not encode: %v", err)
		}
		if s2, err := DecodePhoneHomeSettings(b); err != nil || s2 != s {
			t.Fatalf("round trip: %+v %v", s2, err)
		}
	})
}

// FuzzDecodePhoneHomeStatus and requests: never panic, stay in bounds.
func FuzzDecodePhoneHomeStatus(f *testing.F) {
	b, _ := EncodePhoneHomeStatus(PhoneHomeStatus{Running: true, LastError: "x", SpooledDocuments: 3})
	f.Add(b)
	r, _ := EncodePhoneHomeRequest(PhoneHomeRequest{Kind: PhoneHomeSendNow})
	f.Add(r)
	f.Fuzz(func(t *testing.T, in []byte) {
		if st, err := DecodePhoneHomeStatus(in); err == nil {
			if st.SpooledDocuments < 0 || len(st.LastError) > phoneHomeErrorMax {
				t.Fatalf("%+v", st)
			}
		}
		if r, err := DecodePhoneHomeRequest("id", in); err == nil {
			if checkRequestKind(r.Kind) != nil || r.ID != "id" {
				t.Fatalf("%+v", r)
			}
		}
	})
}

func TestPhoneHomeObjects(t *testing.T) {
	fs := newMemFS(t)
	a := openMemArray(t, fs)
	changes, stop := a.Changes()
	defer stop()
	if s, err := a.PhoneHomeSettings(); err != nil || s != (PhoneHomeSettings{}) {
		t.Fatalf("unset: %+v %v", s, err)
	}
	// Enabling without an endpoint and a CA is refused, and changes nothing.
	if _, err := a.UpdatePhoneHomeSettings(func(s *PhoneHomeSettings) error { s.Enabled = true; return nil }); !errors.Is(err, ErrPhoneHomeNotConfigured) {
		t.Fatalf("enable: %v", err)
	}
	if _, err := a.Certificate(PhoneHomeCertificate); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused change made the certificate: %v", err)
	}
	ca := testCAPEM(t)
	s, err := a.UpdatePhoneHomeSettings(func(s *PhoneHomeSettings) error {
		s.Endpoint, s.CACertificate = "https://cloud.example/upload", ca
		return nil
	})
	if err != nil || s.Enabled {
		t.Fatalf("%+v %v", s, err)
	}
	select {
	case <-changes:
	default:
		t.Fatal("no change notification")
	}
	// Setting the endpoint made the client certificate.
	ci, err := a.Certificate(PhoneHomeCertificate)
	if err != nil || ci.CommonName != "t" || ci.KeyAlgo != "ec" || !strings.Contains(ci.IssuedTo, "OU=array "+a.Config().ID) {
		t.Fatalf("certificate %+v %v", ci, err)
	}
	stamp, err := a.CertificateStamp(PhoneHomeCertificate)
	if err != nil {
		t.Fatal(err)
	}
	if created, err := a.EnsurePhoneHomeCertificate(); created || err != nil {
		t.Fatalf("ensure again: %v %v", created, err)
	}
	if again, _ := a.CertificateStamp(PhoneHomeCertificate); again != stamp {
		t.Fatal("stamp changed without a change")
	}
	if _, err := a.UpdatePhoneHomeSettings(func(s *PhoneHomeSettings) error { s.Enabled = true; return nil }); err != nil {
		t.Fatal(err)
	}
	if a.PhoneHomeUses("PhoneHome") != "phone home" || a.PhoneHomeUses("kmip") != "" {
		t.Fatal("in use")
	}

	// Requests are kept in order, bounded, and deleted when done.
	for i := 0; i < phoneHomeRequestsMax; i++ {
		kind := []string{PhoneHomeSendNow, PhoneHomeSendToday, PhoneHomeCancel}[i%3]
		if _, err := a.RequestPhoneHome(kind, "pureuser"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.RequestPhoneHome(PhoneHomeSendNow, "pureuser"); !errors.Is(err, ErrPhoneHomeBusy) {
		t.Fatalf("17th request: %v", err)
	}
	if _, err := a.RequestPhoneHome("reboot", "pureuser"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("bad kind: %v", err)
	}
	reqs, err := a.PhoneHomeRequests()
	if err != nil || len(reqs) != phoneHomeRequestsMax {
		t.Fatalf("%d requests %v", len(reqs), err)
	}
	for i, r := range reqs {
		if want := []string{PhoneHomeSendNow, PhoneHomeSendToday, PhoneHomeCancel}[i%3]; r.Kind != want || r.User != "pureuser" {
			t.Fatalf("request %d: %+v", i, r)
		}
	}
	if err := a.DonePhoneHomeRequests([]string{reqs[0].ID, reqs[1].ID}); err != nil {
		t.Fatal(err)
	}
	if left, _ := a.PhoneHomeRequests(); len(left) != phoneHomeRequestsMax-2 || left[0].ID != reqs[2].ID {
		t.Fatalf("left %d", len(left))
	}

	// The status round-trips and survives a restart, like the settings.
	st := PhoneHomeStatus{Running: true, LastError: strings.Repeat("e", 2000), SpooledDocuments: 4, SpooledBytes: 400, NextSeq: 9}
	if err := a.PutPhoneHomeStatus(st); err != nil {
		t.Fatal(err)
	}
	a.Close()
	a = openMemArray(t, fs)
	got, err := a.PhoneHomeStatus()
	if err != nil || got.NextSeq != 9 || len(got.LastError) != phoneHomeErrorMax || !strings.HasSuffix(got.LastError, "...") {
		t.Fatalf("status %+v %v", got, err)
	}
	if s, err := a.PhoneHomeSettings(); err != nil || !s.Enabled || s.CACertificate != ca {
		t.Fatalf("settings after restart %+v %v", s, err)
	}
}

func TestPhoneHomeEvent(t *testing.T) {
	a := openMemArray(t, nil)
	var seen []Alert
	a.OnAlert(func(al Alert) { seen = append(seen, al) })
	a.PhoneHomeEvent(datapath.Warning, "phonehome.upload", "refused", false)
	a.PhoneHomeEvent(datapath.Warning, "phonehome.upload", "refused again", false)
	a.PhoneHomeEvent(datapath.Info, "phonehome.upload", "fine", true)
	if len(seen) != 2 || seen[0].Component != "phonehome" || !seen[0].Closed.IsZero() || seen[1].Closed.IsZero() || seen[1].Count != 2 {
		t.Fatalf("alerts %+v", seen)
	}
	evs := a.Events()
	if len(evs) != 3 || evs[2].Code != "phonehome.upload" || !evs[2].Clear {
		t.Fatalf("events %+v", evs)
	}
	fs, dir := a.PhoneHomeSpool()
	if fs == nil || dir != "/a/spool" {
		t.Fatalf("spool %v %q", fs, dir)
	}
}
