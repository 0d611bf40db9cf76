package array

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

// signCSR signs a PEM CSR with a throwaway CA, as a KMS administrator would.
func signCSR(t *testing.T, csrPEM string, isCA bool) []byte {
	t.Helper()
	b, _ := pem.Decode([]byte(csrPEM))
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		t.Fatalf("not a CSR: %q", csrPEM)
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil || csr.CheckSignature() != nil {
		t.Fatalf("bad CSR: %v", err)
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	ca := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"}, IsCA: true,
		BasicConstraintsValid: true, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, ca, ca, caKey.Public(), caKey)
	caCert, _ := x509.ParseCertificate(caDER)
	leaf := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: csr.Subject, NotBefore: time.Now().Add(-time.Hour),
		NotAfter: time.Now().Add(24 * time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		IsCA: isCA, BasicConstraintsValid: isCA}
	der, err := x509.CreateCertificate(rand.Reader, leaf, caCert, csr.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func TestCertificates(t *testing.T) {
	fs := newMemFS(t)
	a := openMemArray(t, fs)
	defer func() { a.Close() }()
	for _, o := range []CertOptions{{CommonName: "purefa", Organization: "vfa"}, {CommonName: "ec", KeyAlgorithm: "ec"}} {
		name := "kmip-" + o.CommonName
		ci, err := a.CreateCertificate(name, o)
		if err != nil {
			t.Fatal(err)
		}
		if ci.Status != CertSelfSigned || ci.CommonName != o.CommonName || ci.IssuedBy != ci.IssuedTo {
			t.Fatalf("%+v", ci)
		}
	}
	if _, err := a.CreateCertificate("kmip-purefa", CertOptions{CommonName: "x"}); !errors.Is(err, ErrExists) {
		t.Fatalf("duplicate: %v", err)
	}
	for _, bad := range []CertOptions{{}, {CommonName: "x", KeySize: 1024}, {CommonName: "x", KeyAlgorithm: "dsa"}, {CommonName: "x", Days: -1}} {
		if _, err := a.CreateCertificate("bad", bad); !errors.Is(err, ErrInvalid) {
			t.Fatalf("%+v: %v", bad, err)
		}
	}
	csr, err := a.CertificateRequest("kmip-purefa", nil)
	if err != nil {
		t.Fatal(err)
	}
	// Garbage, a chain, a CA certificate and another key's certificate are refused.
	if _, err := a.ImportCertificate("kmip-purefa", []byte("garbage")); !errors.Is(err, ErrNotPEM) {
		t.Fatalf("garbage: %v", err)
	}
	signed := signCSR(t, csr, false)
	if _, err := a.ImportCertificate("kmip-purefa", append(append([]byte{}, signed...), signed...)); !errors.Is(err, ErrCertIntermediate) {
		t.Fatalf("chain: %v", err)
	}
	if _, err := a.ImportCertificate("kmip-purefa", signCSR(t, csr, true)); !errors.Is(err, ErrCertIntermediate) {
		t.Fatalf("CA: %v", err)
	}
	otherCSR, _ := a.CertificateRequest("kmip-ec", nil)
	if _, err := a.ImportCertificate("kmip-purefa", signCSR(t, otherCSR, false)); !errors.Is(err, ErrCertMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if ci, _ := a.Certificate("kmip-purefa"); ci.Status != CertSelfSigned {
		t.Fatal("a refused import changed the certificate")
	}
	ci, err := a.ImportCertificate("kmip-purefa", signed)
	if err != nil || ci.Status != CertImported || !strings.Contains(ci.IssuedBy, "test CA") {
		t.Fatalf("import: %+v %v", ci, err)
	}
	// The key survives a restart and is usable while the array is locked.
	a.Close()
	a = openMemArray(t, fs)
	tc, err := a.TLSCertificate("kmip-purefa")
	if err != nil || tc.Leaf.Subject.CommonName != "purefa" {
		t.Fatalf("tls certificate: %v", err)
	}
	// The private key is not stored in the clear.
	kv, _, _ := a.store.ObjectGet(certKey("kmip-purefa"))
	der, _ := x509.MarshalPKCS8PrivateKey(tc.PrivateKey)
	if strings.Contains(string(kv), base64.StdEncoding.EncodeToString(der)[8:60]) || strings.Contains(string(kv), string(der[len(der)-40:])) {
		t.Fatal("private key bytes found in the metadata record")
	}
	if err := a.DeleteCertificate("kmip-purefa", func(string) string { return "KMIP server kms1" }); !errors.Is(err, ErrConflict) {
		t.Fatalf("delete in use: %v", err)
	}
	if err := a.DeleteCertificate("kmip-purefa", nil); err != nil {
		t.Fatal(err)
	}
	if list, _ := a.Certificates(); len(list) != 1 || list[0].Name != "kmip-ec" {
		t.Fatalf("list: %+v", list)
	}
}

func TestRenameCertificate(t *testing.T) {
	a := openMemArray(t, newMemFS(t))
	if _, err := a.CreateCertificate("one", CertOptions{CommonName: "one", KeyAlgorithm: "ec"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateCertificate("two", CertOptions{CommonName: "two", KeyAlgorithm: "ec"}); err != nil {
		t.Fatal(err)
	}
	before, err := a.TLSCertificate("one")
	if err != nil {
		t.Fatal(err)
	}
	if err := a.RenameCertificate("one", "TWO", nil); !errors.Is(err, ErrExists) {
		t.Fatalf("rename onto an existing name: %v", err)
	}
	if err := a.RenameCertificate("one", "three", func(string) string { return "KMIP server kms1" }); !errors.Is(err, ErrConflict) {
		t.Fatalf("rename in use: %v", err)
	}
	if err := a.RenameCertificate("nosuch", "three", nil); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rename missing: %v", err)
	}
	if err := a.RenameCertificate("one", "Three", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Certificate("one"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old name still there: %v", err)
	}
	after, err := a.TLSCertificate("three")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(after.Certificate[0], before.Certificate[0]) || !after.PrivateKey.(*ecdsa.PrivateKey).Equal(before.PrivateKey) {
		t.Fatal("the renamed certificate has another certificate or key")
	}
	if ci, _ := a.Certificate("three"); ci.Name != "Three" {
		t.Fatalf("display name %q", ci.Name)
	}
}

func TestPhoneHomeCertificateInUse(t *testing.T) {
	a := openMemArray(t, newMemFS(t))
	if _, err := a.EnsurePhoneHomeCertificate(); err != nil {
		t.Fatal(err)
	}
	ca, err := a.Certificate(PhoneHomeCertificate) // any PEM certificate will do as the CA here
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.UpdatePhoneHomeSettings(func(s *PhoneHomeSettings) error {
		s.Enabled, s.Endpoint, s.CACertificate = true, "https://collector.example:8443/upload", ca.PEM
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	inUse := func(n string) string { return strings.Join(a.CertificateUsers(n), ", ") }
	if err := a.DeleteCertificate(PhoneHomeCertificate, inUse); !errors.Is(err, ErrConflict) || !strings.Contains(err.Error(), "phone home") {
		t.Fatalf("deleting the certificate phone home uses: %v", err)
	}
}
