package mgmt

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
	"net"
	"strings"
	"testing"
	"time"

	"vfa/array"
	"vfa/phonehome"
)

// phCA is a throwaway certificate authority.
type phCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  string
}

func newPhCA(t *testing.T, name string) *phCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return &phCA{cert: c, key: key, pem: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))}
}

// sign issues a certificate for pub: a server on 127.0.0.1, or a client.
func (ca *phCA) sign(t *testing.T, subj pkix.Name, pub any, server bool) []byte {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: subj,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func (ca *phCA) pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// startReceiver runs a vfa cloud receiver with a server certificate of
// serverCA for clients of clientCA.
func startReceiver(t *testing.T, serverCA, clientCA *phCA) (*phonehome.Cloud, chan phonehome.Received) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der := serverCA.sign(t, pkix.Name{CommonName: "receiver"}, key.Public(), true)
	got := make(chan phonehome.Received, 1000)
	cl, err := phonehome.NewCloud(phonehome.CloudConfig{Addr: "127.0.0.1:0", StoreDir: t.TempDir(), ClientCAs: clientCA.pool(),
		Certificate: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key},
		OnStored:    func(r phonehome.Received, d *phonehome.Document) { got <- r }})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cl.Serve(context.Background()) }()
	t.Cleanup(func() { cl.Close(); <-done })
	return cl, got
}

// TestPhoneHomeCLI: configured with the CLI, phone home first fails
// (the endpoint's certificate is from another CA): purearray list
// --phonehome and purealert list say why. With the right CA it uploads,
// and purearray phonehome --send-now sends at once.
func TestPhoneHomeCLI(t *testing.T) {
	serverCA, clientCA, otherCA := newPhCA(t, "server CA"), newPhCA(t, "client CA"), newPhCA(t, "other CA")
	cl, got := startReceiver(t, serverCA, clientCA)
	h := newHarness(t)
	run := func(cmd, stdin string) string {
		t.Helper()
		out, errs, code := h.run(cmd, stdin)
		if code != 0 {
			t.Fatalf("%s: %s", cmd, errs)
		}
		return out
	}
	run("purearray setattr --phonehome-endpoint https://"+cl.Addr().String()+"/upload", "")
	run("purearray setattr --phonehome-ca-certificate", otherCA.pem)
	run("purearray enable phonehome", "")
	// The array's certificate, signed by the receiver's client CA.
	csr, err := h.a.CertificateRequest(array.PhoneHomeCertificate, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode([]byte(csr))
	req, _ := x509.ParseCertificateRequest(b.Bytes)
	signed := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: clientCA.sign(t, req.Subject, req.PublicKey, false)})
	if _, err := h.a.ImportCertificate(array.PhoneHomeCertificate, signed); err != nil {
		t.Fatal(err)
	}
	alerts := make(chan array.Alert, 100)
	h.a.OnAlert(func(al array.Alert) { alerts <- al })
	u, err := phonehome.Start(h.a, phonehome.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for al := range alerts {
		if al.Code == phonehome.CodeUpload && al.Closed.IsZero() {
			break
		}
	}
	if err := u.Close(); err != nil { // writes the status now
		t.Fatal(err)
	}
	out := run("purearray list --phonehome --nvp", "")
	if !strings.Contains(out, "Last Error=the endpoint's certificate is not signed by the configured CA") ||
		!strings.Contains(out, "Phonehome=enabled") || strings.Contains(out, "Spooled=0\n") {
		t.Fatalf("list --phonehome:\n%s", out)
	}
	if out := run("purealert list", ""); !strings.Contains(out, "phonehome.upload") || !strings.Contains(out, "not signed by the configured CA") {
		t.Fatalf("purealert list:\n%s", out)
	}
	select {
	case r := <-got:
		t.Fatalf("the receiver got %+v", r)
	default:
	}
	// The right CA: the spooled documents go out, in order.
	run("purearray setattr --phonehome-ca-certificate", serverCA.pem)
	u, err = phonehome.Start(h.a, phonehome.Config{BackoffMin: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	if r := <-got; r.Seq != 1 || r.Kind != "diagnostics" {
		t.Fatalf("first upload %+v", r)
	}
	run("purearray phonehome --send-now", "")
	for r := range got {
		if r.Manual == "send-now" && r.Kind == "logs" {
			break
		}
	}
	if out := run("puremessage list --audit --csv", ""); !strings.Contains(out, "purearray phonehome --send-now,ok") {
		t.Fatalf("audit:\n%s", out)
	}
}
