// Package kmiptest is an in-process KMIP server for tests of the security
// token: mutual TLS with its own test CA, KMIP 1.0-1.4 through kmip-go's
// kmipserver router, and the key lifecycle a key manager has (PreActive →
// Active → Deactivated or Compromised → Destroyed), with the behaviour of
// PyKMIP where it matters to the array: Get returns a key in every state but
// Destroyed, Destroy refuses an Active key, objects belong to the client
// certificate's common name, and a destroyed key is not found any more.
//
// A test can break it in every way the array must tell apart: stop it
// (unreachable), make it hang (no answer), stop trusting the client CA (TLS
// alert unknown certificate authority), refuse KMIP authentication, answer
// every operation with a failure (not ready), revoke, deactivate or destroy a
// key, or put another key under the same name.
//
// Nothing here is package-level state: any number of servers can run at once.
package kmiptest

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipserver"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// Options configure a Server.
type Options struct {
	// MaxTLS is the highest TLS version offered (default TLS 1.2, as PyKMIP).
	MaxTLS uint16
	// Addr to listen on (default 127.0.0.1:0).
	Addr string
}

// Key is a managed key as the server holds it.
type Key struct {
	UID   string
	Name  string
	Owner string // client certificate common name
	State kmip.State
	Value []byte
}

// Server is an in-process KMIP server.
type Server struct {
	o      Options
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	caPEM  []byte
	srvTLS tls.Certificate
	exec   *kmipserver.BatchExecutor

	mu        sync.Mutex
	addr      string
	ln        net.Listener
	conns     map[net.Conn]struct{}
	keys      map[string]*Key
	nextID    int
	clientCAs *x509.CertPool
	authFail  bool
	notReady  bool
	hang      bool
	wg        sync.WaitGroup
}

type ctxPeer struct{}

// New starts a server.
func New(o Options) (*Server, error) {
	if o.MaxTLS == 0 {
		o.MaxTLS = tls.VersionTLS12
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	s := &Server{o: o, keys: map[string]*Key{}, conns: map[net.Conn]struct{}{}, nextID: 1}
	var err error
	if s.ca, s.caKey, err = newCA("kmiptest CA"); err != nil {
		return nil, err
	}
	s.caPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.ca.Raw})
	s.clientCAs = x509.NewCertPool()
	s.clientCAs.AddCert(s.ca)
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := s.sign(&x509.Certificate{Subject: pkix.Name{CommonName: "kmiptest server"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}, srvKey.Public())
	if err != nil {
		return nil, err
	}
	s.srvTLS = tls.Certificate{Certificate: [][]byte{der}, PrivateKey: srvKey}
	s.exec = kmipserver.NewBatchExecutor()
	s.exec.Use(s.gate)
	s.exec.Route(kmip.OperationCreate, kmipserver.HandleFunc(s.create))
	s.exec.Route(kmip.OperationActivate, kmipserver.HandleFunc(s.activate))
	s.exec.Route(kmip.OperationGet, kmipserver.HandleFunc(s.get))
	s.exec.Route(kmip.OperationGetAttributes, kmipserver.HandleFunc(s.getAttributes))
	s.exec.Route(kmip.OperationLocate, kmipserver.HandleFunc(s.locate))
	s.exec.Route(kmip.OperationRevoke, kmipserver.HandleFunc(s.revoke))
	s.exec.Route(kmip.OperationDestroy, kmipserver.HandleFunc(s.destroy))
	s.addr = o.Addr
	if err := s.Start(); err != nil {
		return nil, err
	}
	return s, nil
}

func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k)
	if err != nil {
		return nil, nil, err
	}
	c, err := x509.ParseCertificate(der)
	return c, k, err
}

func (s *Server) sign(tmpl *x509.Certificate, pub any) ([]byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 100))
	if err != nil {
		return nil, err
	}
	tmpl.SerialNumber = serial
	return x509.CreateCertificate(rand.Reader, tmpl, s.ca, pub, s.caKey)
}

// CAPEM is the PEM of the CA that signed the server's certificate and signs
// the clients' (give it to the array as the server's CA).
func (s *Server) CAPEM() []byte { return append([]byte(nil), s.caPEM...) }

// Addr is "127.0.0.1:port".
func (s *Server) Addr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// SignCSR signs a PEM certificate signing request as a client certificate
// (clientAuth) valid from notBefore to notAfter, and returns it as PEM.
func (s *Server) SignCSR(csrPEM []byte, notBefore, notAfter time.Time) ([]byte, error) {
	b, _ := pem.Decode(csrPEM)
	if b == nil || b.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("kmiptest: not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(b.Bytes)
	if err != nil {
		return nil, err
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, err
	}
	der, err := s.sign(&x509.Certificate{Subject: csr.Subject, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}, csr.PublicKey)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// Start listens (again, on the same address after Stop).
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.ln, s.addr = ln, ln.Addr().String()
	s.wg.Add(1)
	go s.accept(ln)
	return nil
}

// Stop closes the listener and every connection: the server is down (its
// keys are kept for Start).
func (s *Server) Stop() {
	s.mu.Lock()
	ln := s.ln
	s.ln = nil
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
	s.wg.Wait()
}

// Close stops the server for good.
func (s *Server) Close() { s.Stop() }

// SetHang makes new connections be accepted and never answered.
func (s *Server) SetHang(on bool) { s.mu.Lock(); s.hang = on; s.mu.Unlock() }

// SetAuthFail answers every request with AuthenticationNotSuccessful (as a
// server does for a certificate it accepts in TLS but not for KMIP).
func (s *Server) SetAuthFail(on bool) { s.mu.Lock(); s.authFail = on; s.mu.Unlock() }

// SetNotReady answers every operation but DiscoverVersions with a failure.
func (s *Server) SetNotReady(on bool) { s.mu.Lock(); s.notReady = on; s.mu.Unlock() }

// TrustClients sets whether the server trusts client certificates signed by
// its CA. Without that trust, handshakes end with "unknown certificate
// authority".
func (s *Server) TrustClients(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.clientCAs = x509.NewCertPool()
	if on {
		s.clientCAs.AddCert(s.ca)
		return
	}
	other, _, err := newCA("kmiptest other CA")
	if err == nil {
		s.clientCAs.AddCert(other)
	}
}

func (s *Server) accept(ln net.Listener) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		if s.ln != ln {
			s.mu.Unlock()
			c.Close()
			return
		}
		s.conns[c] = struct{}{}
		hang := s.hang
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
				c.Close()
			}()
			if hang {
				buf := make([]byte, 1024)
				for {
					if _, err := c.Read(buf); err != nil {
						return
					}
				}
			}
			s.serve(c)
		}()
	}
}

func (s *Server) tlsConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{s.srvTLS},
		MinVersion:   tls.VersionTLS12,
		MaxVersion:   s.o.MaxTLS,
		ClientAuth:   tls.RequireAndVerifyClientCert,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			s.mu.Lock()
			pool := s.clientCAs
			s.mu.Unlock()
			return &tls.Config{Certificates: []tls.Certificate{s.srvTLS}, MinVersion: tls.VersionTLS12,
				MaxVersion: s.o.MaxTLS, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool}, nil
		},
	}
}

func (s *Server) serve(c net.Conn) {
	tc := tls.Server(c, s.tlsConfig())
	_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
	if err := tc.Handshake(); err != nil {
		return
	}
	_ = tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	owner := ""
	if len(st.PeerCertificates) > 0 {
		owner = st.PeerCertificates[0].Subject.CommonName
	}
	ctx := context.WithValue(context.Background(), ctxPeer{}, owner)
	stream := ttlv.NewStream(tc, 1<<20)
	for {
		var req kmip.RequestMessage
		if err := stream.Recv(&req); err != nil {
			return
		}
		resp := s.exec.HandleRequest(ctx, &req)
		if err := stream.Send(resp); err != nil {
			return
		}
	}
}

// gate applies the failure modes before any operation runs.
func (s *Server) gate(next kmipserver.Next, ctx context.Context, m *kmip.RequestMessage) (*kmip.ResponseMessage, error) {
	s.mu.Lock()
	authFail, notReady := s.authFail, s.notReady
	s.mu.Unlock()
	if authFail {
		return nil, kmipserver.Errorf(kmip.ResultReasonAuthenticationNotSuccessful, "client not authorised")
	}
	if notReady {
		for _, bi := range m.BatchItem {
			if bi.Operation != kmip.OperationDiscoverVersions {
				return nil, kmipserver.Errorf(kmip.ResultReasonGeneralFailure, "key store offline")
			}
		}
	}
	return next(ctx, m)
}

func owner(ctx context.Context) string {
	o, _ := ctx.Value(ctxPeer{}).(string)
	return o
}

// lookup finds a live key the caller may use (s.mu held).
func (s *Server) lookup(ctx context.Context, uid string) (*Key, error) {
	k := s.keys[uid]
	if k == nil || k.State == kmip.StateDestroyed || k.State == kmip.StateDestroyedCompromised {
		return nil, kmipserver.ErrItemNotFound
	}
	if k.Owner != owner(ctx) {
		return nil, kmipserver.ErrPermissionDenied
	}
	return k, nil
}

func (s *Server) create(ctx context.Context, req *payloads.CreateRequestPayload) (*payloads.CreateResponsePayload, error) {
	if req.ObjectType != kmip.ObjectTypeSymmetricKey {
		return nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "only symmetric keys")
	}
	name, length := "", int32(0)
	for _, a := range req.TemplateAttribute.Attribute {
		switch a.AttributeName {
		case kmip.AttributeNameName:
			if n, ok := a.AttributeValue.(kmip.Name); ok {
				name = n.NameValue
			}
		case kmip.AttributeNameCryptographicLength:
			length, _ = a.AttributeValue.(int32)
		case kmip.AttributeNameCryptographicAlgorithm:
			if a.AttributeValue != kmip.CryptographicAlgorithmAES {
				return nil, kmipserver.Errorf(kmip.ResultReasonFeatureNotSupported, "only AES")
			}
		}
	}
	if length != 128 && length != 256 {
		return nil, kmipserver.Errorf(kmip.ResultReasonInvalidField, "length %d", length)
	}
	k := s.CreateKey(name, owner(ctx), int(length))
	return &payloads.CreateResponsePayload{ObjectType: kmip.ObjectTypeSymmetricKey, UniqueIdentifier: k.UID}, nil
}

// CreateKey makes a PreActive AES key of bits bits owned by owner (a client
// certificate's common name), as a key manager's administrator would.
func (s *Server) CreateKey(name, owner string, bits int) Key {
	v := make([]byte, bits/8)
	_, _ = rand.Read(v)
	s.mu.Lock()
	defer s.mu.Unlock()
	k := &Key{UID: strconv.Itoa(s.nextID), Name: name, Owner: owner, State: kmip.StatePreActive, Value: v}
	s.nextID++
	s.keys[k.UID] = k
	return *k
}

func (s *Server) activate(ctx context.Context, req *payloads.ActivateRequestPayload) (*payloads.ActivateResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.lookup(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if k.State != kmip.StatePreActive {
		return nil, kmipserver.Errorf(kmip.ResultReasonIllegalOperation, "key is not pre-active")
	}
	k.State = kmip.StateActive
	return &payloads.ActivateResponsePayload{UniqueIdentifier: k.UID}, nil
}

func (s *Server) get(ctx context.Context, req *payloads.GetRequestPayload) (*payloads.GetResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.lookup(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	v := append([]byte(nil), k.Value...)
	return &payloads.GetResponsePayload{ObjectType: kmip.ObjectTypeSymmetricKey, UniqueIdentifier: k.UID,
		Object: &kmip.SymmetricKey{KeyBlock: kmip.KeyBlock{KeyFormatType: kmip.KeyFormatTypeRaw,
			KeyValue:               &kmip.KeyValue{Plain: &kmip.PlainKeyValue{KeyMaterial: kmip.KeyMaterial{Bytes: &v}}},
			CryptographicAlgorithm: kmip.CryptographicAlgorithmAES, CryptographicLength: int32(len(v) * 8)}}}, nil
}

func (s *Server) getAttributes(ctx context.Context, req *payloads.GetAttributesRequestPayload) (*payloads.GetAttributesResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.lookup(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	all := []kmip.Attribute{
		{AttributeName: kmip.AttributeNameState, AttributeValue: k.State},
		{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: k.Name, NameType: kmip.NameTypeUninterpretedTextString}},
	}
	resp := &payloads.GetAttributesResponsePayload{UniqueIdentifier: k.UID}
	for _, a := range all {
		want := len(req.AttributeName) == 0
		for _, n := range req.AttributeName {
			want = want || n == a.AttributeName
		}
		if want {
			resp.Attribute = append(resp.Attribute, a)
		}
	}
	return resp, nil
}

func (s *Server) locate(ctx context.Context, req *payloads.LocateRequestPayload) (*payloads.LocateResponsePayload, error) {
	name := ""
	for _, a := range req.Attribute {
		if n, ok := a.AttributeValue.(kmip.Name); ok && a.AttributeName == kmip.AttributeNameName {
			name = n.NameValue
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	resp := &payloads.LocateResponsePayload{}
	for i := 1; i < s.nextID; i++ {
		k := s.keys[strconv.Itoa(i)]
		if k == nil || k.Owner != owner(ctx) || k.State == kmip.StateDestroyed || k.State == kmip.StateDestroyedCompromised {
			continue
		}
		if name == "" || k.Name == name {
			resp.UniqueIdentifier = append(resp.UniqueIdentifier, k.UID)
		}
		if req.MaximumItems > 0 && len(resp.UniqueIdentifier) >= int(req.MaximumItems) {
			break
		}
	}
	return resp, nil
}

func (s *Server) revoke(ctx context.Context, req *payloads.RevokeRequestPayload) (*payloads.RevokeResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.lookup(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	k.State = revokedState(req.RevocationReason.RevocationReasonCode)
	return &payloads.RevokeResponsePayload{UniqueIdentifier: k.UID}, nil
}

func revokedState(code kmip.RevocationReasonCode) kmip.State {
	if code == kmip.RevocationReasonCodeKeyCompromise || code == kmip.RevocationReasonCodeCACompromise {
		return kmip.StateCompromised
	}
	return kmip.StateDeactivated
}

func (s *Server) destroy(ctx context.Context, req *payloads.DestroyRequestPayload) (*payloads.DestroyResponsePayload, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.lookup(ctx, req.UniqueIdentifier)
	if err != nil {
		return nil, err
	}
	if k.State == kmip.StateActive {
		return nil, kmipserver.Errorf(kmip.ResultReasonPermissionDenied, "an active key cannot be destroyed")
	}
	k.State = kmip.StateDestroyed
	return &payloads.DestroyResponsePayload{UniqueIdentifier: k.UID}, nil
}

// Keys lists every key the server has ever held, destroyed ones included.
func (s *Server) Keys() []Key {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Key
	for i := 1; i < s.nextID; i++ {
		if k := s.keys[strconv.Itoa(i)]; k != nil {
			out = append(out, *k)
		}
	}
	return out
}

func (s *Server) setState(uid string, f func(k *Key) error) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k := s.keys[uid]
	if k == nil {
		return fmt.Errorf("kmiptest: no key %s", uid)
	}
	return f(k)
}

// Activate makes a key Active (as its administrator).
func (s *Server) Activate(uid string) error {
	return s.setState(uid, func(k *Key) error { k.State = kmip.StateActive; return nil })
}

// Revoke revokes a key: KeyCompromise makes it Compromised, any other
// reason Deactivated.
func (s *Server) Revoke(uid string, code kmip.RevocationReasonCode) error {
	return s.setState(uid, func(k *Key) error { k.State = revokedState(code); return nil })
}

// Destroy destroys a key that is not Active.
func (s *Server) Destroy(uid string) error {
	return s.setState(uid, func(k *Key) error {
		if k.State == kmip.StateActive {
			return errors.New("kmiptest: an active key cannot be destroyed")
		}
		k.State = kmip.StateDestroyed
		return nil
	})
}
