package array

// Certificates: the array's own TLS identities (for KMIP servers and phone
// home), as Purity's purecert manages them. Each is a private key and a
// certificate, self-signed at creation and optionally replaced by one a CA
// signed from the array's CSR.
//
// Object "cert/<lower name>": JSON of certRecord, format version 1. The
// private key is PKCS#8 DER sealed with AES-256-GCM under a key derived from
// the system key (datapath/systemkey.go), so it can be used while the array
// is locked (to reach the KMIP server that unlocks it) and is never stored
// in the clear:
//
//	sealed = nonce (12) || AES-256-GCM(systemKey("certificates"), nonce,
//	         PKCS#8, aad = "vfa cert " + lower name)

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"time"
)

const certRecordVersion = 1

// Certificate status values.
const (
	CertSelfSigned = "self-signed"
	CertImported   = "imported"
)

// CertOptions describe a new certificate's key and subject.
type CertOptions struct {
	CommonName         string
	Organization       string
	OrganizationalUnit string
	Locality           string
	State              string
	Country            string
	Email              string
	KeyAlgorithm       string // "rsa" (default) or "ec" (P-256)
	KeySize            int    // RSA: 2048 (default) or 4096
	Days               int    // validity (default 3650)
}

// CertInfo describes a stored certificate.
type CertInfo struct {
	Name       string
	Status     string // self-signed | imported
	KeyAlgo    string // rsa | ec
	KeySize    int
	IssuedTo   string
	IssuedBy   string
	ValidFrom  time.Time
	ValidTo    time.Time
	CommonName string
	PEM        string
	Cert       *x509.Certificate
}

type certRecord struct {
	Version int    `json:"version"`
	Name    string `json:"name"`
	Status  string `json:"status"`
	Key     []byte `json:"key"`  // sealed PKCS#8
	Cert    []byte `json:"cert"` // DER
}

// Certificate errors.
var (
	ErrCertMismatch     = errors.New("certificate does not match the private key")
	ErrCertIntermediate = errors.New("intermediate certificates are not accepted: give the array's certificate only")
	ErrNotPEM           = errors.New("not a PEM certificate")
)

func certKey(name string) string { return "cert/" + lower(name) }

func (a *Array) certCipher(name string) (cipher.AEAD, []byte, error) {
	k, err := a.store.SystemKey("certificates")
	if err != nil {
		return nil, nil, err
	}
	blk, err := aes.NewCipher(k)
	if err != nil {
		return nil, nil, err
	}
	g, err := cipher.NewGCM(blk)
	if err != nil {
		return nil, nil, err
	}
	return g, []byte("vfa cert " + lower(name)), nil
}

func (a *Array) sealKey(name string, der []byte) ([]byte, error) {
	g, aad, err := a.certCipher(name)
	if err != nil {
		return nil, err
	}
	nonce := make([]byte, g.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	return g.Seal(nonce, nonce, der, aad), nil
}

func (a *Array) openKey(name string, sealed []byte) (crypto.Signer, error) {
	g, aad, err := a.certCipher(name)
	if err != nil {
		return nil, err
	}
	if len(sealed) < g.NonceSize() {
		return nil, fmt.Errorf("certificate %s: sealed key too short", name)
	}
	der, err := g.Open(nil, sealed[:g.NonceSize()], sealed[g.NonceSize():], aad)
	if err != nil {
		return nil, fmt.Errorf("certificate %s: private key does not unseal: %w", name, err)
	}
	k, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, err
	}
	s, ok := k.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("certificate %s: unusable key type", name)
	}
	return s, nil
}

func subject(o CertOptions) pkix.Name {
	n := pkix.Name{CommonName: o.CommonName}
	add := func(dst *[]string, v string) {
		if v != "" {
			*dst = []string{v}
		}
	}
	add(&n.Organization, o.Organization)
	add(&n.OrganizationalUnit, o.OrganizationalUnit)
	add(&n.Locality, o.Locality)
	add(&n.Province, o.State)
	add(&n.Country, o.Country)
	return n
}

// CreateCertificate makes a new key and a self-signed certificate.
func (a *Array) CreateCertificate(name string, o CertOptions) (CertInfo, error) {
	if err := ValidName(name); err != nil {
		return CertInfo{}, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if o.CommonName == "" {
		return CertInfo{}, fmt.Errorf("%w: a common name is required", ErrInvalid)
	}
	if o.Days == 0 {
		o.Days = 3650
	}
	if o.Days < 1 || o.Days > 36500 {
		return CertInfo{}, fmt.Errorf("%w: validity of %d days", ErrInvalid, o.Days)
	}
	var key crypto.Signer
	var err error
	switch strings.ToLower(o.KeyAlgorithm) {
	case "", "rsa":
		if o.KeySize == 0 {
			o.KeySize = 2048
		}
		if o.KeySize != 2048 && o.KeySize != 4096 {
			return CertInfo{}, fmt.Errorf("%w: RSA key size %d (2048 or 4096)", ErrInvalid, o.KeySize)
		}
		key, err = rsa.GenerateKey(rand.Reader, o.KeySize)
	case "ec":
		if o.KeySize != 0 && o.KeySize != 256 {
			return CertInfo{}, fmt.Errorf("%w: EC key size %d (256)", ErrInvalid, o.KeySize)
		}
		key, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return CertInfo{}, fmt.Errorf("%w: key algorithm %q (rsa or ec)", ErrInvalid, o.KeyAlgorithm)
	}
	if err != nil {
		return CertInfo{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	if err != nil {
		return CertInfo{}, err
	}
	now := a.o.Now().UTC().Add(-time.Minute)
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: subject(o), NotBefore: now, NotAfter: now.AddDate(0, 0, o.Days),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
	}
	if o.Email != "" {
		tmpl.EmailAddresses = []string{o.Email}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return CertInfo{}, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return CertInfo{}, err
	}
	sealed, err := a.sealKey(name, pk)
	if err != nil {
		return CertInfo{}, err
	}
	rec := certRecord{Version: certRecordVersion, Name: name, Status: CertSelfSigned, Key: sealed, Cert: der}
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	if _, ok, _ := a.store.ObjectGet(certKey(name)); ok {
		return CertInfo{}, fmt.Errorf("certificate %s %w", name, ErrExists)
	}
	if err := a.store.ObjectUpdate(map[string][]byte{certKey(name): mustJSON(&rec)}, nil); err != nil {
		return CertInfo{}, err
	}
	return certInfo(&rec)
}

func (a *Array) certRecord(name string) (*certRecord, error) {
	v, ok, err := a.store.ObjectGet(certKey(name))
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("certificate %s %w", name, ErrNotFound)
	}
	var rec certRecord
	if err := json.Unmarshal(v, &rec); err != nil || rec.Version != certRecordVersion {
		return nil, fmt.Errorf("certificate %s: unreadable record (version %d): %v", name, rec.Version, err)
	}
	return &rec, nil
}

func certInfo(rec *certRecord) (CertInfo, error) {
	c, err := x509.ParseCertificate(rec.Cert)
	if err != nil {
		return CertInfo{}, err
	}
	ci := CertInfo{Name: rec.Name, Status: rec.Status, IssuedTo: c.Subject.String(), IssuedBy: c.Issuer.String(),
		ValidFrom: c.NotBefore, ValidTo: c.NotAfter, CommonName: c.Subject.CommonName, Cert: c,
		PEM: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: rec.Cert}))}
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		ci.KeyAlgo, ci.KeySize = "rsa", k.N.BitLen()
	case *ecdsa.PublicKey:
		ci.KeyAlgo, ci.KeySize = "ec", k.Curve.Params().BitSize
	}
	return ci, nil
}

// Certificate describes one stored certificate.
func (a *Array) Certificate(name string) (CertInfo, error) {
	rec, err := a.certRecord(name)
	if err != nil {
		return CertInfo{}, err
	}
	return certInfo(rec)
}

// Certificates lists the stored certificates by name.
func (a *Array) Certificates() ([]CertInfo, error) {
	kvs, err := a.store.ObjectList("cert/")
	if err != nil {
		return nil, err
	}
	var out []CertInfo
	for _, kv := range kvs {
		var rec certRecord
		if err := json.Unmarshal(kv.Value, &rec); err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		ci, err := certInfo(&rec)
		if err != nil {
			return nil, err
		}
		out = append(out, ci)
	}
	sort.Slice(out, func(i, j int) bool { return lower(out[i].Name) < lower(out[j].Name) })
	return out, nil
}

// CertificateRequest returns a PEM CSR for the certificate's key and subject.
func (a *Array) CertificateRequest(name string, o *CertOptions) (string, error) {
	rec, err := a.certRecord(name)
	if err != nil {
		return "", err
	}
	key, err := a.openKey(rec.Name, rec.Key)
	if err != nil {
		return "", err
	}
	c, err := x509.ParseCertificate(rec.Cert)
	if err != nil {
		return "", err
	}
	subj := c.Subject
	if o != nil && o.CommonName != "" {
		subj = subject(*o)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: subj}, key)
	if err != nil {
		return "", err
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})), nil
}

// ImportCertificate replaces a certificate with a signed one (PEM) that
// must match its private key. A chain (more than one certificate) or a CA
// certificate is refused.
func (a *Array) ImportCertificate(name string, pemText []byte) (CertInfo, error) {
	certs, _, err := pemCertificates(pemText)
	if err != nil {
		return CertInfo{}, fmt.Errorf("%w: %v", ErrNotPEM, err)
	}
	if len(certs) == 0 {
		return CertInfo{}, ErrNotPEM
	}
	if len(certs) > 1 {
		return CertInfo{}, ErrCertIntermediate
	}
	c := certs[0]
	if c.IsCA {
		return CertInfo{}, ErrCertIntermediate
	}
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	rec, err := a.certRecord(name)
	if err != nil {
		return CertInfo{}, err
	}
	key, err := a.openKey(rec.Name, rec.Key)
	if err != nil {
		return CertInfo{}, err
	}
	if !publicKeysEqual(key.Public(), c.PublicKey) {
		return CertInfo{}, ErrCertMismatch
	}
	rec.Cert, rec.Status = c.Raw, CertImported
	if err := a.store.ObjectUpdate(map[string][]byte{certKey(name): mustJSON(rec)}, nil); err != nil {
		return CertInfo{}, err
	}
	return certInfo(rec)
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	if k, ok := a.(eq); ok {
		return k.Equal(b)
	}
	return false
}

// pemCertificates parses the CERTIFICATE blocks of a PEM text, in order,
// and returns them with the text after the last block (trimmed). Any other
// block type, or a block that does not parse, is an error; callers bound
// the text's size and the count, and wrap the error in their own sentinel.
func pemCertificates(pemText []byte) (certs []*x509.Certificate, trailing string, err error) {
	rest := pemText
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			return nil, "", fmt.Errorf("PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, "", err
		}
		certs = append(certs, c)
	}
	return certs, strings.TrimSpace(string(rest)), nil
}

// DeleteCertificate deletes a certificate; inUse, when set, names what uses
// it (the caller checks KMIP servers and phone home) and refuses.
func (a *Array) DeleteCertificate(name string, inUse func(name string) string) error {
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	if _, err := a.certRecord(name); err != nil {
		return err
	}
	if inUse != nil {
		if user := inUse(name); user != "" {
			return fmt.Errorf("%w: certificate %s is used by %s", ErrConflict, name, user)
		}
	}
	return a.store.ObjectUpdate(nil, []string{certKey(name)})
}

// RenameCertificate renames a certificate that nothing uses (inUse, when
// set, names its users, as for DeleteCertificate). The private key is
// resealed under the new name (the name is the seal's AAD) and the new
// record replaces the old one in a single metadata update; a change of
// letter case only keeps the record and changes its display name.
func (a *Array) RenameCertificate(name, newName string, inUse func(name string) string) error {
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	rec, err := a.certRecord(name)
	if err != nil {
		return err
	}
	if lower(name) != lower(newName) {
		if _, err := a.certRecord(newName); err == nil {
			return fmt.Errorf("certificate %s %w", newName, ErrExists)
		} else if !errors.Is(err, ErrNotFound) {
			return err
		}
	}
	if inUse != nil {
		if user := inUse(rec.Name); user != "" {
			return fmt.Errorf("%w: certificate %s is used by %s", ErrConflict, rec.Name, user)
		}
	}
	key, err := a.openKey(rec.Name, rec.Key)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	sealed, err := a.sealKey(newName, der)
	if err != nil {
		return err
	}
	nr := *rec
	nr.Name, nr.Key = newName, sealed
	var del []string
	if certKey(name) != certKey(newName) {
		del = []string{certKey(name)}
	}
	return a.store.ObjectUpdate(map[string][]byte{certKey(newName): mustJSON(&nr)}, del)
}

// TLSCertificate returns the certificate with its private key, for use as
// a TLS client or server identity.
func (a *Array) TLSCertificate(name string) (tls.Certificate, error) {
	rec, err := a.certRecord(name)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := a.openKey(rec.Name, rec.Key)
	if err != nil {
		return tls.Certificate{}, err
	}
	c, err := x509.ParseCertificate(rec.Cert)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{rec.Cert}, PrivateKey: key, Leaf: c}, nil
}
