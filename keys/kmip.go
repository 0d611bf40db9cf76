package keys

// The KMIP client of the security token (Rapid Data Locking): the one part
// of package keys that does network I/O. It speaks KMIP 1.x over mutual TLS
// (1.2 or 1.3) with the array's own client certificate, through
// github.com/ovh/kmip-go, and turns every way a server can fail into one of
// a few named errors, so that the array can say exactly why it is locked:
//
//	ErrKMIPUnreachable  no TCP connection (refused, timed out, no route)
//	ErrKMIPHandshake    the server refused the TLS handshake (it does not
//	                    trust, or finds expired or revoked, the array's
//	                    certificate); the alert is in the message
//	ErrKMIPUntrusted    the array does not trust the server's certificate
//	ErrKMIPAuth         TLS worked, KMIP refused the client
//	                    (AuthenticationNotSuccessful, PermissionDenied)
//	ErrKMIPNotReady     the server answered, but not as a KMIP server that
//	                    can serve the request (no common protocol version,
//	                    an operation failed, a malformed answer)
//
// and, for the key itself, ErrKeyNotActive with ErrKeyRevoked (state
// Compromised), ErrKeyDeactivated or ErrKeyDestroyed (Destroyed, or no
// longer on the server).
//
// Invariants:
//   - a key is handed out only after its State attribute was read as Active
//     on the same connection (PyKMIP's Get returns keys in every state but
//     Destroyed), and only if it is a 256-bit AES key;
//   - every dial and every operation is bounded by a timeout, the address
//     list, the names and the located items by limits;
//   - a tls.Config is built per dial and never shared (kmip-go mutates it);
//   - Close never panics (kmip-go's Close panics after a failed reconnect).

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"
	"github.com/ovh/kmip-go/ttlv"
)

// Limits and defaults of the KMIP client.
const (
	DefaultKMIPDialTimeout = 5 * time.Second
	DefaultKMIPOpTimeout   = 10 * time.Second
	// MaxKMIPAddrs bounds the failover list of one KMIP server object.
	MaxKMIPAddrs = 8
	// MaxKMIPKeyName bounds a key name.
	MaxKMIPKeyName = 256
	// maxKMIPLocated bounds the identifiers a Locate returns.
	maxKMIPLocated = 64
	// maxKMIPMessage bounds one KMIP message received.
	maxKMIPMessage = 1 << 20
)

// Errors of the KMIP client; test them with errors.Is.
var (
	ErrKMIPUnreachable = errors.New("KMIP server unreachable")
	ErrKMIPHandshake   = errors.New("TLS handshake refused by the KMIP server")
	ErrKMIPUntrusted   = errors.New("KMIP server certificate not trusted")
	ErrKMIPAuth        = errors.New("KMIP authentication refused")
	ErrKMIPNotReady    = errors.New("KMIP server is not ready for KMIP operations")
	// ErrKeyNotActive: the key's State is not Active. One of the three below
	// comes with it when the state says more.
	ErrKeyNotActive   = errors.New("key not active")
	ErrKeyRevoked     = errors.New("key revoked")
	ErrKeyDeactivated = errors.New("key deactivated")
	ErrKeyDestroyed   = errors.New("key destroyed")
)

// KMIPError is a failure of one KMIP server address. errors.Is(err, Kind)
// holds, and so does errors.Is(err, Err).
type KMIPError struct {
	Addr   string
	Kind   error  // one of the ErrKMIP* sentinels
	Detail string // what was seen, for people ("unknown certificate authority")
	Err    error  // the underlying error, if any
}

func (e *KMIPError) Error() string {
	s := e.Addr + ": " + e.Kind.Error()
	if e.Detail != "" {
		s += " (" + e.Detail + ")"
	}
	return s
}

// Unwrap makes errors.Is see Kind and Err.
func (e *KMIPError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// KMIPConfig says how to reach a KMIP server.
type KMIPConfig struct {
	// Addrs are "host:port" addresses of the same server (a cluster), tried
	// in order until one answers (failover); at most MaxKMIPAddrs.
	Addrs []string
	// Certificate is the array's client certificate with its private key.
	Certificate tls.Certificate
	// RootCAs verifies the server's certificate.
	RootCAs *x509.CertPool
	// DialTimeout bounds the TCP connect, the TLS handshake and the KMIP
	// version negotiation of one address (default DefaultKMIPDialTimeout).
	DialTimeout time.Duration
	// OpTimeout bounds one operation (default DefaultKMIPOpTimeout).
	OpTimeout time.Duration
}

// CheckKMIPAddr checks one "host:port" address.
func CheckKMIPAddr(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not HOST:PORT: %v", addr, strings.TrimPrefix(err.Error(), "address "+addr+": "))
	}
	if host == "" {
		return fmt.Errorf("%q has no host", addr)
	}
	if len(host) > 253 {
		return fmt.Errorf("%q: host name too long", addr)
	}
	n := 0
	for _, c := range port {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q: port %q is not a number", addr, port)
		}
		n = n*10 + int(c-'0')
		if n > 65535 {
			break
		}
	}
	if port == "" || n < 1 || n > 65535 {
		return fmt.Errorf("%q: port %q is not from 1 to 65535", addr, port)
	}
	for _, c := range host {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_:", c)) {
			return fmt.Errorf("%q: host %q has a character %q that no host name or address has", addr, host, c)
		}
	}
	return nil
}

func (c *KMIPConfig) check() error {
	if len(c.Addrs) == 0 {
		return errors.New("no KMIP server address")
	}
	if len(c.Addrs) > MaxKMIPAddrs {
		return fmt.Errorf("%d KMIP server addresses (at most %d)", len(c.Addrs), MaxKMIPAddrs)
	}
	for _, a := range c.Addrs {
		if err := CheckKMIPAddr(a); err != nil {
			return err
		}
	}
	if len(c.Certificate.Certificate) == 0 || c.Certificate.PrivateKey == nil {
		return errors.New("no client certificate")
	}
	if c.RootCAs == nil {
		return errors.New("no CA certificate for the server")
	}
	return nil
}

// kmipCipherSuites are Go's secure TLS 1.2 suites plus the one PyKMIP's RSA
// server certificate needs (TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256, which Go
// does not offer by default). Setting the list replaces Go's defaults.
func kmipCipherSuites() []uint16 {
	var ids []uint16
	for _, s := range tls.CipherSuites() {
		ids = append(ids, s.ID)
	}
	return append(ids, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256)
}

// KMIPClient is a connection to one address of a KMIP server. Its methods
// are safe for concurrent use (operations are serialised).
type KMIPClient struct {
	c    *kmipclient.Client
	addr string
	opTO time.Duration
	mu   sync.Mutex
}

// failCapture records the first failed batch item a connection saw; it lets
// the version negotiation inside kmipclient.DialContext, which flattens
// errors to strings, be classified by its Result Reason.
type failCapture struct {
	mu     sync.Mutex
	set    bool
	op     kmip.Operation
	reason kmip.ResultReason
	msg    string
}

func (f *failCapture) middleware(next kmipclient.Next, ctx context.Context, m *kmip.RequestMessage) (*kmip.ResponseMessage, error) {
	resp, err := next(ctx, m)
	if err == nil && resp != nil {
		for i := range resp.BatchItem {
			bi := &resp.BatchItem[i]
			if bi.ResultStatus != kmip.ResultStatusSuccess {
				f.mu.Lock()
				if !f.set {
					f.set, f.op, f.reason, f.msg = true, bi.Operation, bi.ResultReason, bi.ResultMessage
				}
				f.mu.Unlock()
			}
		}
	}
	return resp, err
}

// DialKMIP connects to the first address of cfg that completes TLS and KMIP
// version negotiation. When none does, the error is the most telling
// address's *KMIPError (a refusal by a server that was reached says more
// than an address that could not be reached), with the others in its text.
func DialKMIP(ctx context.Context, cfg KMIPConfig) (*KMIPClient, error) {
	if err := cfg.check(); err != nil {
		return nil, fmt.Errorf("kmip: %w", err)
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = DefaultKMIPDialTimeout
	}
	if cfg.OpTimeout <= 0 {
		cfg.OpTimeout = DefaultKMIPOpTimeout
	}
	var best *KMIPError
	var others []string
	for _, addr := range cfg.Addrs {
		c, err := dialOne(ctx, cfg, addr)
		if err == nil {
			return c, nil
		}
		var ke *KMIPError
		if !errors.As(err, &ke) {
			ke = &KMIPError{Addr: addr, Kind: ErrKMIPNotReady, Detail: err.Error(), Err: err}
		}
		if best == nil || kmipRank(ke.Kind) > kmipRank(best.Kind) {
			if best != nil {
				others = append(others, best.Error())
			}
			best = ke
		} else {
			others = append(others, ke.Error())
		}
		if ctx.Err() != nil {
			break
		}
	}
	if len(others) > 0 {
		cp := *best
		cp.Detail = strings.TrimSpace(cp.Detail + "; also " + strings.Join(others, "; "))
		best = &cp
	}
	return nil, best
}

// kmipRank orders failure kinds by how much they say.
func kmipRank(kind error) int {
	switch kind {
	case ErrKMIPAuth:
		return 5
	case ErrKMIPHandshake:
		return 4
	case ErrKMIPUntrusted:
		return 3
	case ErrKMIPNotReady:
		return 2
	}
	return 1
}

func dialOne(ctx context.Context, cfg KMIPConfig, addr string) (*KMIPClient, error) {
	host, _, _ := net.SplitHostPort(addr)
	cert := cfg.Certificate
	tc := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    cfg.RootCAs,
		// Always present the array's certificate, even when the server's
		// list of acceptable CAs does not name its issuer: the server then
		// says why it refuses it (unknown CA, expired), and the array can
		// report that instead of a bare "certificate required".
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		ServerName:           host,
		CipherSuites:         kmipCipherSuites(),
	}
	dctx, cancel := context.WithTimeout(ctx, cfg.DialTimeout)
	defer cancel()
	fc := &failCapture{}
	dialer := func(ctx context.Context) (net.Conn, error) {
		d := tls.Dialer{NetDialer: &net.Dialer{Timeout: cfg.DialTimeout}, Config: tc}
		return d.DialContext(ctx, "tcp", addr)
	}
	c, err := kmipclient.DialContext(dctx, addr,
		kmipclient.WithDialerUnsafe(dialer),
		kmipclient.WithMiddlewares(fc.middleware),
		kmipclient.WithMaxMessageSize(maxKMIPMessage))
	if err != nil {
		fc.mu.Lock()
		defer fc.mu.Unlock()
		if fc.set {
			return nil, kmipResultError(addr, fc.op, fc.reason, fc.msg)
		}
		return nil, classifyTransport(addr, err, cfg.DialTimeout)
	}
	return &KMIPClient{c: c, addr: addr, opTO: cfg.OpTimeout}, nil
}

// classifyTransport names a connection-level failure.
func classifyTransport(addr string, err error, timeout time.Duration) *KMIPError {
	ke := &KMIPError{Addr: addr, Err: err}
	var cve *tls.CertificateVerificationError
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	var oe *net.OpError
	var dnse *net.DNSError
	var rhe tls.RecordHeaderError
	switch {
	case errors.As(err, &cve) || errors.As(err, &ua) || errors.As(err, &he) || errors.As(err, &ci):
		ke.Kind = ErrKMIPUntrusted
		ke.Detail = strings.TrimPrefix(untrustedDetail(err), "tls: ")
	case errors.As(err, &oe) && oe.Op == "remote error":
		ke.Kind = ErrKMIPHandshake
		alert := strings.TrimPrefix(oe.Err.Error(), "tls: ")
		ke.Detail = alert + handshakeHint(alert)
	case errors.As(err, &dnse):
		ke.Kind, ke.Detail = ErrKMIPUnreachable, "host name not found: "+dnse.Name
	case errors.Is(err, syscall.ECONNREFUSED):
		ke.Kind, ke.Detail = ErrKMIPUnreachable, "connection refused"
	case errors.Is(err, syscall.EHOSTUNREACH) || errors.Is(err, syscall.ENETUNREACH):
		ke.Kind, ke.Detail = ErrKMIPUnreachable, "no route to host"
	case errors.Is(err, context.DeadlineExceeded) || isTimeout(err):
		ke.Kind, ke.Detail = ErrKMIPUnreachable, fmt.Sprintf("no answer within %v", timeout)
	case errors.As(err, &rhe):
		ke.Kind, ke.Detail = ErrKMIPNotReady, "the server does not speak TLS"
	case errors.Is(err, context.Canceled):
		ke.Kind, ke.Detail = ErrKMIPUnreachable, "canceled"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.ErrClosedPipe) || errors.Is(err, syscall.ECONNRESET):
		ke.Kind, ke.Detail = ErrKMIPNotReady, "the server closed the connection"
	case strings.HasPrefix(err.Error(), "tls: "):
		ke.Kind, ke.Detail = ErrKMIPHandshake, strings.TrimPrefix(err.Error(), "tls: ")
	default:
		ke.Kind, ke.Detail = ErrKMIPNotReady, err.Error()
	}
	return ke
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func untrustedDetail(err error) string {
	var ua x509.UnknownAuthorityError
	var he x509.HostnameError
	var ci x509.CertificateInvalidError
	switch {
	case errors.As(err, &ua):
		return "signed by an authority other than the configured CA"
	case errors.As(err, &he):
		return he.Error()
	case errors.As(err, &ci):
		return ci.Error()
	}
	return err.Error()
}

// handshakeHint says what a TLS alert from the server means for the array.
func handshakeHint(alert string) string {
	switch alert {
	case "unknown certificate authority":
		return ": the server does not trust the CA that signed the array's certificate"
	case "expired certificate":
		return ": the server finds the array's certificate expired"
	case "revoked certificate":
		return ": the server has revoked the array's certificate"
	case "bad certificate", "unsupported certificate", "unknown certificate", "certificate required", "handshake failure":
		return ": the server does not accept the array's certificate"
	}
	return ""
}

// kmipResultError names a failed KMIP operation.
func kmipResultError(addr string, op kmip.Operation, reason kmip.ResultReason, msg string) *KMIPError {
	d := ttlv.EnumStr(reason)
	if op != 0 {
		d = ttlv.EnumStr(op) + ": " + d
	}
	if msg != "" {
		d += ": " + msg
	}
	kind := ErrKMIPNotReady
	switch reason {
	case kmip.ResultReasonAuthenticationNotSuccessful, kmip.ResultReasonPermissionDenied:
		kind = ErrKMIPAuth
	}
	return &KMIPError{Addr: addr, Kind: kind, Detail: d}
}

// Addr is the address the client is connected to.
func (c *KMIPClient) Addr() string { return c.addr }

// Version is the negotiated KMIP protocol version ("1.4").
func (c *KMIPClient) Version() string {
	v := c.c.Version()
	return fmt.Sprintf("%d.%d", v.ProtocolVersionMajor, v.ProtocolVersionMinor)
}

// Close closes the connection.
func (c *KMIPClient) Close() (err error) {
	defer func() {
		if r := recover(); r != nil { // kmip-go panics when its last reconnect failed
			err = nil
		}
	}()
	return c.c.Close()
}

// do runs one operation and returns its payload or a classified error. A
// failed item with reason ItemNotFound is returned as errItemNotFound.
func (c *KMIPClient) do(ctx context.Context, req kmip.OperationPayload) (kmip.OperationPayload, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, c.opTO)
	defer cancel()
	res, err := c.c.Batch(ctx, req)
	if err != nil {
		return nil, classifyTransport(c.addr, err, c.opTO)
	}
	bi := &res[0]
	if bi.ResultStatus != kmip.ResultStatusSuccess {
		if bi.ResultReason == kmip.ResultReasonItemNotFound {
			return nil, errItemNotFound
		}
		return nil, kmipResultError(c.addr, req.Operation(), bi.ResultReason, bi.ResultMessage)
	}
	if bi.ResponsePayload == nil {
		return nil, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: ttlv.EnumStr(req.Operation()) + ": empty response"}
	}
	return bi.ResponsePayload, nil
}

var errItemNotFound = errors.New("no such object on the KMIP server")

func (c *KMIPClient) badAnswer(op string, got any) error {
	return &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: fmt.Sprintf("%s: unexpected answer %T", op, got)}
}

// Locate returns the unique identifiers of the objects named name (an empty
// name: any object; the server decides which it shows this client), at most
// a bounded number.
func (c *KMIPClient) Locate(ctx context.Context, name string) ([]string, error) {
	if len(name) > MaxKMIPKeyName {
		return nil, fmt.Errorf("kmip: key name of %d bytes (at most %d)", len(name), MaxKMIPKeyName)
	}
	req := &payloads.LocateRequestPayload{MaximumItems: maxKMIPLocated}
	if name != "" {
		req.Attribute = []kmip.Attribute{{AttributeName: kmip.AttributeNameName,
			AttributeValue: kmip.Name{NameValue: name, NameType: kmip.NameTypeUninterpretedTextString}}}
	}
	p, err := c.do(ctx, req)
	if errors.Is(err, errItemNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	r, ok := p.(*payloads.LocateResponsePayload)
	if !ok {
		return nil, c.badAnswer("Locate", p)
	}
	if len(r.UniqueIdentifier) > maxKMIPLocated {
		return r.UniqueIdentifier[:maxKMIPLocated], nil
	}
	return r.UniqueIdentifier, nil
}

// CreateAES256 creates a 256-bit AES key (usage encrypt and decrypt) named
// name, and returns its unique identifier. The key starts PreActive.
func (c *KMIPClient) CreateAES256(ctx context.Context, name string) (string, error) {
	if name == "" || len(name) > MaxKMIPKeyName {
		return "", fmt.Errorf("kmip: key name of %d bytes (1 to %d)", len(name), MaxKMIPKeyName)
	}
	req := &payloads.CreateRequestPayload{ObjectType: kmip.ObjectTypeSymmetricKey, TemplateAttribute: kmip.TemplateAttribute{
		Attribute: []kmip.Attribute{
			{AttributeName: kmip.AttributeNameCryptographicAlgorithm, AttributeValue: kmip.CryptographicAlgorithmAES},
			{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(256)},
			{AttributeName: kmip.AttributeNameCryptographicUsageMask, AttributeValue: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt},
			{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: name, NameType: kmip.NameTypeUninterpretedTextString}},
		}}}
	p, err := c.do(ctx, req)
	if errors.Is(err, errItemNotFound) {
		err = &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: "Create: ItemNotFound"}
	}
	if err != nil {
		return "", err
	}
	r, ok := p.(*payloads.CreateResponsePayload)
	if !ok || r.UniqueIdentifier == "" {
		return "", c.badAnswer("Create", p)
	}
	return r.UniqueIdentifier, nil
}

// Activate makes a PreActive key Active.
func (c *KMIPClient) Activate(ctx context.Context, uid string) error {
	_, err := c.do(ctx, &payloads.ActivateRequestPayload{UniqueIdentifier: uid})
	if errors.Is(err, errItemNotFound) {
		return &KeyStateError{UID: uid, State: kmip.StateDestroyed}
	}
	return err
}

// Destroy destroys a key (the server refuses an Active one).
func (c *KMIPClient) Destroy(ctx context.Context, uid string) error {
	_, err := c.do(ctx, &payloads.DestroyRequestPayload{UniqueIdentifier: uid})
	if errors.Is(err, errItemNotFound) {
		return nil
	}
	return err
}

// KeyState reads a key's State attribute. A key the server no longer has is
// kmip.StateDestroyed.
func (c *KMIPClient) KeyState(ctx context.Context, uid string) (kmip.State, error) {
	p, err := c.do(ctx, &payloads.GetAttributesRequestPayload{UniqueIdentifier: uid, AttributeName: []kmip.AttributeName{kmip.AttributeNameState}})
	if errors.Is(err, errItemNotFound) {
		return kmip.StateDestroyed, nil
	}
	if err != nil {
		return 0, err
	}
	r, ok := p.(*payloads.GetAttributesResponsePayload)
	if !ok {
		return 0, c.badAnswer("GetAttributes", p)
	}
	for _, a := range r.Attribute {
		if a.AttributeName == kmip.AttributeNameState {
			if st, ok := a.AttributeValue.(kmip.State); ok {
				return st, nil
			}
			return 0, c.badAnswer("GetAttributes State", a.AttributeValue)
		}
	}
	return 0, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: "GetAttributes: no State attribute for key " + uid}
}

// KeyStateError is a key that is not Active. errors.Is(err,
// ErrKeyNotActive) holds, and so does errors.Is with ErrKeyRevoked,
// ErrKeyDeactivated or ErrKeyDestroyed when the state says so.
type KeyStateError struct {
	UID   string
	State kmip.State
}

func (e *KeyStateError) Error() string {
	if e.State == kmip.StateDestroyed {
		return "key " + e.UID + " is destroyed or no longer on the server"
	}
	return "key " + e.UID + " is in state " + ttlv.EnumStr(e.State)
}

// Unwrap gives the sentinels of the state.
func (e *KeyStateError) Unwrap() []error {
	switch e.State {
	case kmip.StateCompromised:
		return []error{ErrKeyNotActive, ErrKeyRevoked}
	case kmip.StateDeactivated:
		return []error{ErrKeyNotActive, ErrKeyDeactivated}
	case kmip.StateDestroyed, kmip.StateDestroyedCompromised:
		return []error{ErrKeyNotActive, ErrKeyDestroyed}
	}
	return []error{ErrKeyNotActive}
}

// StateError turns a key state other than Active into a *KeyStateError
// (nil for Active).
func StateError(uid string, st kmip.State) error {
	if st == kmip.StateActive {
		return nil
	}
	return &KeyStateError{UID: uid, State: st}
}

// GetKey returns a key's material, whatever its state: callers that unlock
// with it use FetchActiveKey.
func (c *KMIPClient) GetKey(ctx context.Context, uid string) ([]byte, error) {
	p, err := c.do(ctx, &payloads.GetRequestPayload{UniqueIdentifier: uid})
	if errors.Is(err, errItemNotFound) {
		return nil, &KeyStateError{UID: uid, State: kmip.StateDestroyed}
	}
	if err != nil {
		return nil, err
	}
	r, ok := p.(*payloads.GetResponsePayload)
	if !ok {
		return nil, c.badAnswer("Get", p)
	}
	sk, ok := r.Object.(*kmip.SymmetricKey)
	if !ok || r.ObjectType != kmip.ObjectTypeSymmetricKey {
		return nil, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: fmt.Sprintf("Get %s: a %s, not a symmetric key", uid, ttlv.EnumStr(r.ObjectType))}
	}
	if alg := sk.KeyBlock.CryptographicAlgorithm; alg != 0 && alg != kmip.CryptographicAlgorithmAES {
		return nil, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: fmt.Sprintf("Get %s: a %s key, not AES", uid, ttlv.EnumStr(alg))}
	}
	key, err := sk.KeyMaterial()
	if err != nil {
		return nil, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: fmt.Sprintf("Get %s: %v", uid, err)}
	}
	if len(key) != KeySize {
		return nil, &KMIPError{Addr: c.addr, Kind: ErrKMIPNotReady, Detail: fmt.Sprintf("Get %s: a %d-bit key, not 256-bit", uid, len(key)*8)}
	}
	return key, nil
}

// FetchActiveKey reads the key's State and, only if it is Active, its
// material: the security token's fetch at boot.
func (c *KMIPClient) FetchActiveKey(ctx context.Context, uid string) ([]byte, error) {
	st, err := c.KeyState(ctx, uid)
	if err != nil {
		return nil, err
	}
	if err := StateError(uid, st); err != nil {
		return nil, err
	}
	return c.GetKey(ctx, uid)
}
