package array

// KMIP servers: where the array fetches its security token's key (and,
// later, host keys), as Purity's purekmip manages them. A server object
// names one or more addresses of one KMIP service (a cluster: tried in
// order), the array certificate it presents, and the CA that signed the
// server's certificate.
//
// Object "kmip/<lower name>", format version KMIPRecordVersion (1): JSON
//
//	{"version": 1,                      format version
//	 "name": "kms1",                    the name as given (1-63 characters)
//	 "uris": ["host:port", ...],        1 to keys.MaxKMIPAddrs addresses
//	 "certificate": "kmip-cert",        name of an array certificate (cert/)
//	 "ca": "-----BEGIN CERTIFICATE..."} the server CA, PEM, 1 to
//	                                    kmipCACertsMax certificates,
//	                                    at most kmipCABytesMax bytes
//
// EncodeKMIPServer and DecodeKMIPServer are the codec; DecodeKMIPServer
// checks every field (FuzzDecodeKMIPServer).

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"vfa/keys"
)

// KMIPRecordVersion is the format version of a KMIP server object.
const KMIPRecordVersion = 1

// Limits of a KMIP server object.
const (
	kmipCABytesMax  = 64 << 10
	kmipCACertsMax  = 16
	kmipRecordMax   = 96 << 10
	kmipKeyPrefix   = "kmip/"
	defaultKMIPDial = keys.DefaultKMIPDialTimeout
)

// KMIP server errors.
var (
	ErrBadKMIPRecord = errors.New("malformed KMIP server record")
	ErrBadCA         = errors.New("not a PEM CA certificate")
)

// KMIPServer is a KMIP server object.
type KMIPServer struct {
	Name        string   `json:"name"`
	URIs        []string `json:"uris"`
	Certificate string   `json:"certificate"`
	CA          string   `json:"ca"`
}

type kmipRecord struct {
	Version int `json:"version"`
	KMIPServer
}

func kmipKey(name string) string { return kmipKeyPrefix + lower(name) }

// EncodeKMIPServer encodes a KMIP server object after checking it.
func EncodeKMIPServer(s KMIPServer) ([]byte, error) {
	if err := checkKMIPServer(&s); err != nil {
		return nil, err
	}
	return json.Marshal(kmipRecord{Version: KMIPRecordVersion, KMIPServer: s})
}

// DecodeKMIPServer decodes and checks a KMIP server object.
func DecodeKMIPServer(b []byte) (KMIPServer, error) {
	if len(b) > kmipRecordMax {
		return KMIPServer{}, fmt.Errorf("%w: %d bytes", ErrBadKMIPRecord, len(b))
	}
	var r kmipRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return KMIPServer{}, fmt.Errorf("%w: %v", ErrBadKMIPRecord, err)
	}
	if r.Version != KMIPRecordVersion {
		return KMIPServer{}, fmt.Errorf("%w: version %d (this build reads %d)", ErrBadKMIPRecord, r.Version, KMIPRecordVersion)
	}
	if err := checkKMIPServer(&r.KMIPServer); err != nil {
		return KMIPServer{}, fmt.Errorf("%w: %v", ErrBadKMIPRecord, err)
	}
	return r.KMIPServer, nil
}

// checkKMIPServer validates every field.
func checkKMIPServer(s *KMIPServer) error {
	if err := ValidName(s.Name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := CheckKMIPURIs(s.URIs); err != nil {
		return err
	}
	if err := ValidName(s.Certificate); err != nil {
		return fmt.Errorf("%w: certificate: %v", ErrInvalid, err)
	}
	if _, err := ParseCA([]byte(s.CA)); err != nil {
		return err
	}
	return nil
}

// CheckKMIPURIs checks a server's address list: 1 to keys.MaxKMIPAddrs
// distinct HOST:PORT addresses.
func CheckKMIPURIs(uris []string) error {
	if len(uris) == 0 {
		return fmt.Errorf("%w: at least one URI (HOST:PORT) is required", ErrInvalid)
	}
	if len(uris) > keys.MaxKMIPAddrs {
		return fmt.Errorf("%w: %d URIs, at most %d", ErrInvalid, len(uris), keys.MaxKMIPAddrs)
	}
	seen := map[string]bool{}
	for _, u := range uris {
		if err := keys.CheckKMIPAddr(u); err != nil {
			return fmt.Errorf("%w: URI %v", ErrInvalid, err)
		}
		if seen[lower(u)] {
			return fmt.Errorf("%w: URI %s is listed twice", ErrInvalid, u)
		}
		seen[lower(u)] = true
	}
	return nil
}

// ParseCA reads a PEM CA bundle: only CERTIFICATE blocks, 1 to
// kmipCACertsMax of them, each one parsing.
func ParseCA(pemText []byte) (*x509.CertPool, error) {
	if len(pemText) > kmipCABytesMax {
		return nil, fmt.Errorf("%w: %d bytes (at most %d)", ErrBadCA, len(pemText), kmipCABytesMax)
	}
	certs, trailing, err := pemCertificates(pemText)
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrBadCA, err)
	case len(certs) == 0:
		return nil, ErrBadCA
	case len(certs) > kmipCACertsMax:
		return nil, fmt.Errorf("%w: more than %d certificates", ErrBadCA, kmipCACertsMax)
	case trailing != "":
		return nil, fmt.Errorf("%w: text after the last certificate", ErrBadCA)
	}
	p := x509.NewCertPool()
	for _, c := range certs {
		p.AddCert(c)
	}
	return p, nil
}

// KMIPServers lists the KMIP server objects by name.
func (a *Array) KMIPServers() ([]KMIPServer, error) {
	kvs, err := a.store.ObjectList(kmipKeyPrefix)
	if err != nil {
		return nil, err
	}
	out := make([]KMIPServer, 0, len(kvs))
	for _, kv := range kvs {
		s, err := DecodeKMIPServer(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return lower(out[i].Name) < lower(out[j].Name) })
	return out, nil
}

// KMIPServerByName returns one KMIP server object.
func (a *Array) KMIPServerByName(name string) (KMIPServer, error) {
	v, ok, err := a.store.ObjectGet(kmipKey(name))
	if err != nil {
		return KMIPServer{}, err
	}
	if !ok {
		return KMIPServer{}, fmt.Errorf("KMIP server %s %w", name, ErrNotFound)
	}
	return DecodeKMIPServer(v)
}

// CreateKMIPServer stores a new KMIP server object. Its certificate must
// exist.
func (a *Array) CreateKMIPServer(s KMIPServer) (KMIPServer, error) {
	b, err := EncodeKMIPServer(s)
	if err != nil {
		return KMIPServer{}, err
	}
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	if _, err := a.certRecord(s.Certificate); err != nil {
		return KMIPServer{}, err
	}
	if _, ok, err := a.store.ObjectGet(kmipKey(s.Name)); err != nil {
		return KMIPServer{}, err
	} else if ok {
		return KMIPServer{}, fmt.Errorf("KMIP server %s %w", s.Name, ErrExists)
	}
	if err := a.store.ObjectUpdate(map[string][]byte{kmipKey(s.Name): b}, nil); err != nil {
		return KMIPServer{}, err
	}
	return s, nil
}

// UpdateKMIPServer changes a KMIP server object with fn (the name cannot
// change); the result is checked before it is stored.
func (a *Array) UpdateKMIPServer(name string, fn func(s *KMIPServer) error) (KMIPServer, error) {
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	cur, err := a.KMIPServerByName(name)
	if err != nil {
		return KMIPServer{}, err
	}
	next := cur
	next.URIs = append([]string(nil), cur.URIs...)
	if err := fn(&next); err != nil {
		return KMIPServer{}, err
	}
	next.Name = cur.Name
	b, err := EncodeKMIPServer(next)
	if err != nil {
		return KMIPServer{}, err
	}
	if lower(next.Certificate) != lower(cur.Certificate) {
		if _, err := a.certRecord(next.Certificate); err != nil {
			return KMIPServer{}, err
		}
	}
	if err := a.store.ObjectUpdate(map[string][]byte{kmipKey(name): b}, nil); err != nil {
		return KMIPServer{}, err
	}
	return next, nil
}

// DeleteKMIPServer deletes a KMIP server object; it is refused while the
// security token uses it.
func (a *Array) DeleteKMIPServer(name string) error {
	a.token.mu.Lock()
	defer a.token.mu.Unlock()
	a.objects.mu.Lock()
	defer a.objects.mu.Unlock()
	s, err := a.KMIPServerByName(name)
	if err != nil {
		return err
	}
	rec, err := a.tokenRecord()
	if err != nil {
		return err
	}
	if rec != nil && rec.Type == TokenKMIP && lower(rec.Server) == lower(s.Name) {
		return fmt.Errorf("%w: KMIP server %s is used by the security token", ErrConflict, s.Name)
	}
	return a.store.ObjectUpdate(nil, []string{kmipKey(name)})
}

// CertificateUsers names the KMIP servers that use a certificate (for
// purecert delete).
func (a *Array) CertificateUsers(cert string) []string {
	list, err := a.KMIPServers()
	if err != nil {
		return nil
	}
	var out []string
	for _, s := range list {
		if lower(s.Certificate) == lower(cert) {
			out = append(out, "KMIP server "+s.Name)
		}
	}
	if u := a.PhoneHomeUses(cert); u != "" {
		out = append(out, u)
	}
	return out
}

// kmipConfig builds the client configuration of a server object: its
// certificate's key is unsealed with the system key, so this works while
// the array is locked.
func (a *Array) kmipConfig(s KMIPServer) (keys.KMIPConfig, error) {
	tc, err := a.TLSCertificate(s.Certificate)
	if err != nil {
		return keys.KMIPConfig{}, fmt.Errorf("KMIP server %s: certificate %s: %w", s.Name, s.Certificate, err)
	}
	pool, err := ParseCA([]byte(s.CA))
	if err != nil {
		return keys.KMIPConfig{}, fmt.Errorf("KMIP server %s: %w", s.Name, err)
	}
	return keys.KMIPConfig{Addrs: s.URIs, Certificate: tc, RootCAs: pool,
		DialTimeout: a.kmipDialTimeout(), OpTimeout: max(keys.DefaultKMIPOpTimeout, 2*a.kmipDialTimeout())}, nil
}

func (a *Array) kmipDialTimeout() time.Duration {
	if a.o.KMIPTimeout > 0 {
		return a.o.KMIPTimeout
	}
	return defaultKMIPDial
}

// dialKMIP connects to a server object.
func (a *Array) dialKMIP(ctx context.Context, s KMIPServer) (*keys.KMIPClient, error) {
	cfg, err := a.kmipConfig(s)
	if err != nil {
		return nil, err
	}
	return keys.DialKMIP(ctx, cfg)
}

// KMIPTest is the result of testing a KMIP server.
type KMIPTest struct {
	OK      bool
	Addr    string // the address that answered
	Version string // negotiated KMIP version
	Reason  string // why not OK, one line
	Err     error  // the error (keys.ErrKMIP* with errors.Is)
}

// TestKMIPServer connects to a KMIP server with the array's certificate
// (TLS, KMIP DiscoverVersions) and runs a Locate.
func (a *Array) TestKMIPServer(ctx context.Context, name string) (KMIPTest, error) {
	s, err := a.KMIPServerByName(name)
	if err != nil {
		return KMIPTest{}, err
	}
	c, err := a.dialKMIP(ctx, s)
	if err != nil {
		return KMIPTest{Reason: kmipReason(err), Err: err}, nil
	}
	defer c.Close()
	t := KMIPTest{Addr: c.Addr(), Version: c.Version()}
	if _, err := c.Locate(ctx, ""); err != nil {
		t.Reason, t.Err = kmipReason(err), err
		return t, nil
	}
	t.OK = true
	return t, nil
}

// kmipReason is a failure as one line for people: what kind of failure
// first, then what was seen.
func kmipReason(err error) string {
	var ke *keys.KMIPError
	if errors.As(err, &ke) {
		r := kmipKindText(ke.Kind) + " at " + ke.Addr
		if ke.Detail != "" {
			r += ": " + ke.Detail
		}
		return r
	}
	return err.Error()
}

func kmipKindText(kind error) string {
	switch kind {
	case keys.ErrKMIPUnreachable:
		return "unreachable"
	case keys.ErrKMIPHandshake:
		return "TLS handshake refused by the server"
	case keys.ErrKMIPUntrusted:
		return "server certificate not trusted"
	case keys.ErrKMIPAuth:
		return "KMIP authentication refused"
	case keys.ErrKMIPNotReady:
		return "server not ready for KMIP operations"
	}
	return kind.Error()
}
