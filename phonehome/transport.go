package phonehome

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"time"

	"vfa/array"
)

// The transport: HTTPS POST over TLS 1.3 only, the array's phonehome
// certificate as the client identity, the endpoint verified against the
// configured CA (and its host name), an optional HTTP proxy (CONNECT, so
// TLS stays end to end). The endpoint's answer is reduced to success or
// failure: its body is read (at most responseBytesMax, to reuse the
// connection) and discarded, redirects are not followed, nothing in it
// reaches the array.

const (
	responseBytesMax    = 64 << 10
	tlsHandshakeTimeout = 15 * time.Second
)

// Upload errors. A failed upload's error wraps one of them when the cause is
// known.
var (
	ErrNotTLS13       = errors.New("the endpoint does not offer TLS 1.3")
	ErrUnknownCA      = errors.New("the endpoint's certificate is not signed by the configured CA")
	ErrClientRefused  = errors.New("the endpoint refused the array's client certificate")
	ErrRefusedStatus  = errors.New("the endpoint refused the document")
	ErrRejectedStatus = errors.New("the endpoint rejected the document as too large")
	ErrUnreachable    = errors.New("cannot reach the endpoint")
)

// client is one configured HTTP client; it is rebuilt when the settings or
// the certificate change (which is how a new phonehome certificate takes
// effect on the next upload).
type client struct {
	key      [sha256.Size]byte // settings and certificate stamp
	endpoint string
	http     *http.Client
	tr       *http.Transport
}

func clientKey(s array.PhoneHomeSettings, stamp [sha256.Size]byte) [sha256.Size]byte {
	h := sha256.New()
	for _, v := range []string{s.Endpoint, s.CACertificate, s.Proxy} {
		fmt.Fprintf(h, "%d:%s", len(v), v)
	}
	h.Write(stamp[:])
	var k [sha256.Size]byte
	h.Sum(k[:0])
	return k
}

// newClient builds a client for the settings with the given certificate.
func newClient(s array.PhoneHomeSettings, cert tls.Certificate, key [sha256.Size]byte, timeout time.Duration) (*client, error) {
	cas, err := array.ParsePhoneHomeCA(s.CACertificate)
	if err != nil {
		return nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	for _, c := range cas {
		pool.AddCert(c)
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		MaxVersion: tls.VersionTLS13,
		RootCAs:    pool,
		// Always present the array's certificate, whatever CAs the server
		// names: the server decides.
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil },
		NextProtos:           []string{"http/1.1"},
	}
	tr := &http.Transport{
		TLSClientConfig:       tc,
		TLSHandshakeTimeout:   tlsHandshakeTimeout,
		ResponseHeaderTimeout: timeout,
		MaxIdleConns:          1,
		MaxIdleConnsPerHost:   1,
		IdleConnTimeout:       90 * time.Second,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     false,
	}
	if s.Proxy != "" {
		pu, err := url.Parse(s.Proxy)
		if err != nil {
			return nil, fmt.Errorf("proxy: %w", err)
		}
		tr.Proxy = http.ProxyURL(pu)
	}
	hc := &http.Client{Transport: tr, Timeout: timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return &client{key: key, endpoint: s.Endpoint, http: hc, tr: tr}, nil
}

func (c *client) close() {
	if c != nil {
		c.tr.CloseIdleConnections()
	}
}

// post sends one document body. A nil error means the endpoint answered 2xx.
func (c *client) post(ctx context.Context, body []byte, kind Kind, seq uint64, arrayID string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.endpoint, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Content-Encoding", "gzip")
	req.Header.Set("User-Agent", "vfa-phonehome/1")
	req.Header.Set("X-Vfa-Array", arrayID)
	req.Header.Set("X-Vfa-Seq", fmt.Sprint(seq))
	req.Header.Set("X-Vfa-Kind", kind.String())
	resp, err := c.http.Do(req)
	if err != nil {
		return classify(err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, responseBytesMax))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusRequestEntityTooLarge:
		// About this document only: it will never fit. (400 is not: nginx,
		// for one, answers 400 when it refuses the client certificate, so a
		// 400 is retried like any other refusal.)
		return fmt.Errorf("%w: it answered %s", ErrRejectedStatus, resp.Status)
	default:
		return fmt.Errorf("%w: it answered %s", ErrRefusedStatus, resp.Status)
	}
}

// classify names the cause of a failed request where it is known.
func classify(err error) error {
	var (
		unknownCA x509.UnknownAuthorityError
		hostErr   x509.HostnameError
		certErr   *tls.CertificateVerificationError
		alert     tls.AlertError
		opErr     *net.OpError
	)
	msg := err.Error()
	switch {
	case errors.As(err, &unknownCA):
		return fmt.Errorf("%w: %v", ErrUnknownCA, err)
	case errors.As(err, &hostErr):
		return fmt.Errorf("the endpoint's certificate is not valid for its host name: %w", err)
	case errors.As(err, &certErr):
		return fmt.Errorf("the endpoint's certificate does not verify: %w", err)
	case errors.As(err, &alert) && (alert == 70 || strings.Contains(msg, "protocol version")):
		return fmt.Errorf("%w: %v", ErrNotTLS13, err)
	case strings.Contains(msg, "protocol version not supported") || strings.Contains(msg, "server selected unsupported protocol version"):
		return fmt.Errorf("%w: %v", ErrNotTLS13, err)
	case errors.As(err, &alert) && (alert == 42 || alert == 43 || alert == 44 || alert == 45 || alert == 46 || alert == 48 || alert == 49 || alert == 116):
		// bad_certificate, unsupported_certificate, certificate_revoked,
		// certificate_expired, certificate_unknown, unknown_ca,
		// access_denied, certificate_required
		return fmt.Errorf("%w: %v", ErrClientRefused, err)
	case strings.Contains(msg, "remote error: tls: "):
		return fmt.Errorf("%w: %v", ErrClientRefused, err)
	case errors.Is(err, syscall.ECONNREFUSED), errors.As(err, &opErr) && opErr.Op == "dial":
		return fmt.Errorf("%w: %v", ErrUnreachable, err)
	}
	return err
}
