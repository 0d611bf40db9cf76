package phonehome

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"vfa/array"
)

// TestRefusals: an endpoint that offers only TLS 1.2, one whose certificate
// is not from the configured CA, and one that requires a client certificate
// the array does not have. Nothing is sent; the reason is in the status and
// in an alert; the documents stay spooled.
func TestRefusals(t *testing.T) {
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "client CA"), newTestCA(t, "other CA")
	tests := []struct {
		name     string
		endpoint func(t *testing.T) (url string, received func() int)
		enroll   bool
		reason   string
	}{
		{"tls12 only", func(t *testing.T) (string, func() int) {
			var n atomic.Int64
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { n.Add(1) }))
			cert, _, _ := serverCA.issue(t, "tls12", true)
			srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MaxVersion: tls.VersionTLS12,
				ClientAuth: tls.RequestClientCert}
			srv.StartTLS()
			t.Cleanup(srv.Close)
			return srv.URL + "/upload", func() int { return int(n.Load()) }
		}, true, "does not offer TLS 1.3"},
		{"wrong CA", func(t *testing.T) (string, func() int) {
			c := startCloud(t, otherCA, clientCA, t.TempDir(), "")
			return c.endpoint(), func() int { return len(c.Fleet()) }
		}, true, "not signed by the configured CA"},
		{"client certificate refused", func(t *testing.T) (string, func() int) {
			c := startCloud(t, serverCA, clientCA, t.TempDir(), "")
			return c.endpoint(), func() int { return len(c.Fleet()) }
		}, false, "refused the array's client certificate"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			url, received := tt.endpoint(t)
			a := openArray(t, memArrayFS(t))
			if tt.enroll {
				enroll(t, a, clientCA)
			}
			alerts := alertWatch(a)
			configure(t, a, url, serverCA, time.Hour, time.Hour, "")
			u := startUploader(t, a, Config{})
			al := waitAlert(t, alerts, CodeUpload, false)
			if !strings.Contains(al.Message, tt.reason) || al.Component != "phonehome" {
				t.Fatalf("alert %q, want it to say %q", al.Message, tt.reason)
			}
			st := u.Status()
			if !strings.Contains(st.LastError, tt.reason) || st.LastErrorTime.IsZero() || !st.LastSuccess.IsZero() {
				t.Fatalf("status %+v", st)
			}
			if n := received(); n != 0 {
				t.Fatalf("the endpoint received %d", n)
			}
			if st.SpooledDocuments == 0 {
				t.Fatal("the refused document left the spool")
			}
			if err := u.Close(); err != nil {
				t.Fatal(err)
			}
			// The status the CLI shows says the same.
			stored, err := a.PhoneHomeStatus()
			if err != nil || !strings.Contains(stored.LastError, tt.reason) || stored.Running {
				t.Fatalf("stored status %+v %v", stored, err)
			}
			if n := received(); n != 0 {
				t.Fatalf("the endpoint received %d", n)
			}
		})
	}
}

// TestRotation: a self-signed certificate is refused; once the CA-signed
// one is imported, the next upload uses it, and so does a later one.
func TestRotation(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), "")
	a := openArray(t, memArrayFS(t))
	alerts := alertWatch(a)
	configure(t, a, cloud.endpoint(), serverCA, time.Hour, time.Hour, "")
	startUploader(t, a, Config{})
	waitAlert(t, alerts, CodeUpload, false)
	enroll(t, a, clientCA)
	first := cloud.next(t) // the spooled diagnostics, sent by a retry
	waitAlert(t, alerts, CodeUpload, true)
	if first.doc.Seq != 1 {
		t.Fatalf("first stored seq %d", first.doc.Seq)
	}
	// Replace it with a new key and certificate.
	if err := a.DeleteCertificate(array.PhoneHomeCertificate, nil); err != nil {
		t.Fatal(err)
	}
	enroll(t, a, clientCA)
	if _, err := a.RequestPhoneHome(array.PhoneHomeSendNow, "test"); err != nil {
		t.Fatal(err)
	}
	// Documents made before the rotation may still go out with the old
	// certificate; the ones asked for after it carry the new one.
	next := cloud.until(t, func(got []stored) bool {
		return len(got) > 0 && got[len(got)-1].doc.Logs != nil && got[len(got)-1].doc.Manual == "send-now"
	})
	n := 0
	for _, s := range next {
		if s.doc.Manual != "send-now" {
			continue
		}
		n++
		if s.rec.Identity.SHA256 == first.rec.Identity.SHA256 || s.rec.Identity.Subject != first.rec.Identity.Subject {
			t.Fatalf("after rotation: %+v, before %+v", s.rec.Identity, first.rec.Identity)
		}
	}
	if n != 2 {
		t.Fatalf("%d send-now documents", n)
	}
}
