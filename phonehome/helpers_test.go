package phonehome

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/array"
)

// Test fixtures: a small PKI, in-memory arrays, a receiver, and waiting on
// what the uploader and the receiver report (never on time alone).

const waitMax = 60 * time.Second // generous: CI machines are slow, more so under -race

// testCA is a certificate authority.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name, Organization: []string{"vfa test"}},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &testCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

func (ca *testCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

var serialCounter atomic.Int64

// issue makes a leaf certificate: for a server on 127.0.0.1 and localhost,
// or for a client.
func (ca *testCA) issue(t testing.TB, cn string, server bool) (tls.Certificate, []byte, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(100 + serialCounter.Add(1)), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageDigitalSignature}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	return c, certPEM, keyPEM
}

// signCSR signs a PEM CSR as a client certificate.
func (ca *testCA) signCSR(t testing.TB, csrPEM string) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(csrPEM))
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(100 + serialCounter.Add(1)), Subject: csr.Subject,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, csr.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// Arrays. Initialising one takes a while (longer under -race); tests start
// from copies of one initialised array (they share its id), except where
// distinct arrays are needed (newDistinctArray).
var arrayTemplate struct {
	once sync.Once
	fs   *vfs.MemFS
	err  error
}

func memArrayFS(t testing.TB) vfs.FS {
	t.Helper()
	arrayTemplate.once.Do(func() {
		fs := vfs.NewCrashableMem()
		_, err := array.Init(fs, "/a", array.InitOptions{Name: "lab-1", SSDs: 6, SSDSize: 16 << 20, NVRAMSize: 8 << 20, AUSize: 64 << 10})
		arrayTemplate.fs, arrayTemplate.err = fs, err
	})
	if arrayTemplate.err != nil {
		t.Fatal(arrayTemplate.err)
	}
	return arrayTemplate.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: mrand.New(mrand.NewPCG(1, 1))})
}

// openArray opens the array in fs; it is closed at the end of the test
// (closing twice is harmless).
func openArray(t testing.TB, fs vfs.FS) *array.Array {
	t.Helper()
	a, err := array.Open(array.Options{Dir: "/a", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// newDistinctArray makes a new small array of its own (own id).
func newDistinctArray(t testing.TB, name string) *array.Array {
	t.Helper()
	fs := vfs.NewMem()
	if _, err := array.Init(fs, "/a", array.InitOptions{Name: name, SSDs: 6, SSDSize: 4 << 20, NVRAMSize: 4 << 20, AUSize: 64 << 10}); err != nil {
		t.Fatal(err)
	}
	return openArray(t, fs)
}

// enroll has the array's phonehome certificate signed by ca.
func enroll(t testing.TB, a *array.Array, ca *testCA) {
	t.Helper()
	if _, err := a.EnsurePhoneHomeCertificate(); err != nil {
		t.Fatal(err)
	}
	csr, err := a.CertificateRequest(array.PhoneHomeCertificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.ImportCertificate(array.PhoneHomeCertificate, ca.signCSR(t, csr)); err != nil {
		t.Fatal(err)
	}
}

// configure sets and enables phone home.
func configure(t testing.TB, a *array.Array, endpoint string, serverCA *testCA, diag, logs time.Duration, proxy string) {
	t.Helper()
	_, err := a.UpdatePhoneHomeSettings(func(s *array.PhoneHomeSettings) error {
		*s = array.PhoneHomeSettings{Enabled: true, Endpoint: endpoint, CACertificate: serverCA.pem, Proxy: proxy,
			DiagnosticsInterval: diag, LogsInterval: logs}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// startUploader starts an uploader closed at the end of the test.
func startUploader(t testing.TB, a *array.Array, c Config) *Uploader {
	t.Helper()
	if c.BackoffMin == 0 {
		c.BackoffMin = 5 * time.Millisecond
	}
	if c.BackoffMax == 0 {
		c.BackoffMax = 50 * time.Millisecond
	}
	if c.StatusInterval == 0 {
		c.StatusInterval = 5 * time.Millisecond
	}
	if c.Version == "" {
		c.Version = "test"
	}
	u, err := Start(a, c)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

// stored is one document a test receiver stored.
type stored struct {
	rec Received
	doc *Document
}

// testCloud is a receiver on a loopback port.
type testCloud struct {
	*Cloud
	t        testing.TB
	dir      string
	docs     chan stored
	overflow atomic.Int64
	served   chan error
	stopped  sync.Once
}

// startCloud runs a receiver with a server certificate from serverCA that
// accepts clients of clientCA, storing in dir, on addr ("" for any port).
func startCloud(t testing.TB, serverCA, clientCA *testCA, dir, addr string) *testCloud {
	t.Helper()
	cert, _, _ := serverCA.issue(t, "receiver", true)
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	tc := &testCloud{t: t, dir: dir, docs: make(chan stored, 100000), served: make(chan error, 1)}
	cl, err := NewCloud(CloudConfig{Addr: addr, Certificate: cert, ClientCAs: clientCA.pool(), StoreDir: dir,
		OnStored: func(r Received, d *Document) {
			select {
			case tc.docs <- stored{r, d}:
			default:
				tc.overflow.Add(1)
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	tc.Cloud = cl
	go func() { tc.served <- cl.Serve(context.Background()) }()
	t.Cleanup(tc.stop)
	return tc
}

func (tc *testCloud) endpoint() string { return "https://" + tc.Addr().String() + "/upload" }

func (tc *testCloud) stop() {
	tc.stopped.Do(func() {
		tc.Close()
		if err := <-tc.served; err != nil {
			tc.t.Errorf("receiver: %v", err)
		}
		if n := tc.overflow.Load(); n > 0 {
			tc.t.Errorf("receiver: %d documents overflowed the test channel", n)
		}
	})
}

// next waits for the next stored document.
func (tc *testCloud) next(t testing.TB) stored {
	t.Helper()
	select {
	case s := <-tc.docs:
		return s
	case <-time.After(waitMax):
		t.Fatalf("no document arrived within %v", waitMax)
		return stored{}
	}
}

// until collects stored documents until done says enough.
func (tc *testCloud) until(t testing.TB, done func(got []stored) bool) []stored {
	t.Helper()
	var got []stored
	for !done(got) {
		got = append(got, tc.next(t))
	}
	return got
}

// alertWatch delivers an array's alert changes.
func alertWatch(a *array.Array) <-chan array.Alert {
	ch := make(chan array.Alert, 10000)
	a.OnAlert(func(al array.Alert) {
		select {
		case ch <- al:
		default:
		}
	})
	return ch
}

// waitAlert waits for an alert with code to open (closed false) or close.
func waitAlert(t testing.TB, ch <-chan array.Alert, code string, closed bool) array.Alert {
	t.Helper()
	deadline := time.After(waitMax)
	for {
		select {
		case al := <-ch:
			if al.Code == code && al.Closed.IsZero() != closed {
				return al
			}
		case <-deadline:
			t.Fatalf("alert %s (closed %v) not seen within %v", code, closed, waitMax)
		}
	}
}
