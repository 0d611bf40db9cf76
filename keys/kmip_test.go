package keys_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/ovh/kmip-go"

	"vfa/keys"
	"vfa/keys/kmiptest"
)

// clientCert makes a key pair for common name cn and has srv's CA sign it.
func clientCert(t *testing.T, srv *kmiptest.Server, cn string, notBefore, notAfter time.Time) tls.Certificate {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: cn}}, k)
	if err != nil {
		t.Fatal(err)
	}
	crt, err := srv.SignCSR(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), notBefore, notAfter)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(crt)
	leaf, _ := x509.ParseCertificate(b.Bytes)
	return tls.Certificate{Certificate: [][]byte{b.Bytes}, PrivateKey: k, Leaf: leaf}
}

func pool(pemText []byte) *x509.CertPool {
	p := x509.NewCertPool()
	p.AppendCertsFromPEM(pemText)
	return p
}

func newServer(t *testing.T, o kmiptest.Options) *kmiptest.Server {
	t.Helper()
	srv, err := kmiptest.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	return srv
}

func config(t *testing.T, srv *kmiptest.Server) keys.KMIPConfig {
	now := time.Now()
	return keys.KMIPConfig{Addrs: []string{srv.Addr()}, Certificate: clientCert(t, srv, "purefa", now.Add(-time.Hour), now.Add(time.Hour)),
		RootCAs: pool(srv.CAPEM()), DialTimeout: 2 * time.Second, OpTimeout: 2 * time.Second}
}

func TestKMIPKeyLifecycle(t *testing.T) {
	srv := newServer(t, kmiptest.Options{})
	ctx := context.Background()
	c, err := keys.DialKMIP(ctx, config(t, srv))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Version() != "1.4" || c.Addr() != srv.Addr() {
		t.Fatalf("version %s addr %s", c.Version(), c.Addr())
	}
	if ids, err := c.Locate(ctx, "vfa-rdl"); err != nil || len(ids) != 0 {
		t.Fatalf("locate on an empty server: %v %v", ids, err)
	}
	uid, err := c.CreateAES256(ctx, "vfa-rdl")
	if err != nil {
		t.Fatal(err)
	}
	// PreActive: the server would hand the key out (as PyKMIP does), the
	// client must not.
	if _, err := c.GetKey(ctx, uid); err != nil {
		t.Fatalf("get of a pre-active key: %v", err)
	}
	if _, err := c.FetchActiveKey(ctx, uid); !errors.Is(err, keys.ErrKeyNotActive) || errors.Is(err, keys.ErrKeyRevoked) {
		t.Fatalf("pre-active: %v", err)
	}
	if err := c.Activate(ctx, uid); err != nil {
		t.Fatal(err)
	}
	key, err := c.FetchActiveKey(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if ks := srv.Keys(); len(ks) != 1 || !bytes.Equal(ks[0].Value, key) || len(key) != keys.KeySize {
		t.Fatalf("fetched key differs from the server's")
	}
	if ids, err := c.Locate(ctx, "vfa-rdl"); err != nil || len(ids) != 1 || ids[0] != uid {
		t.Fatalf("locate: %v %v", ids, err)
	}
	// A key of another owner: permission denied is an authentication failure.
	other := srv.CreateKey("theirs", "someone-else", 256)
	if _, err := c.FetchActiveKey(ctx, other.UID); !errors.Is(err, keys.ErrKMIPAuth) {
		t.Fatalf("other owner's key: %v", err)
	}
	if err := c.Destroy(ctx, uid); !errors.Is(err, keys.ErrKMIPAuth) { // refused while Active
		t.Fatalf("destroy active: %v", err)
	}

	for _, tc := range []struct {
		name  string
		apply func(uid string) error
		want  error
	}{
		{"compromised", func(uid string) error { return srv.Revoke(uid, kmip.RevocationReasonCodeKeyCompromise) }, keys.ErrKeyRevoked},
		{"deactivated", func(uid string) error { return srv.Revoke(uid, kmip.RevocationReasonCodeCessationOfOperation) }, keys.ErrKeyDeactivated},
		{"destroyed", func(uid string) error {
			_ = srv.Revoke(uid, kmip.RevocationReasonCodeCessationOfOperation)
			return srv.Destroy(uid)
		}, keys.ErrKeyDestroyed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := c.CreateAES256(ctx, "k-"+tc.name)
			if err != nil {
				t.Fatal(err)
			}
			if err := c.Activate(ctx, u); err != nil {
				t.Fatal(err)
			}
			if err := tc.apply(u); err != nil {
				t.Fatal(err)
			}
			_, err = c.FetchActiveKey(ctx, u)
			if !errors.Is(err, tc.want) || !errors.Is(err, keys.ErrKeyNotActive) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKMIPFailures(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	for _, tc := range []struct {
		name   string
		maxTLS uint16
		setup  func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig)
		want   error
		detail string
	}{
		{"unreachable", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) { srv.Stop() },
			keys.ErrKMIPUnreachable, "connection refused"},
		{"hung", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) {
			srv.SetHang(true)
			cfg.DialTimeout = 200 * time.Millisecond
		}, keys.ErrKMIPUnreachable, "no answer within 200ms"},
		{"server not trusted", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) {
			other := newServer(t, kmiptest.Options{})
			cfg.RootCAs = pool(other.CAPEM())
		}, keys.ErrKMIPUntrusted, "authority other than the configured CA"},
		{"client CA not trusted TLS 1.2", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) { srv.TrustClients(false) },
			keys.ErrKMIPHandshake, "unknown certificate authority"},
		{"client CA not trusted TLS 1.3", tls.VersionTLS13, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) { srv.TrustClients(false) },
			keys.ErrKMIPHandshake, "unknown certificate authority"},
		{"expired client certificate", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) {
			cfg.Certificate = clientCert(t, srv, "purefa", now.Add(-48*time.Hour), now.Add(-24*time.Hour))
		}, keys.ErrKMIPHandshake, "expired certificate"},
		{"authentication refused", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) { srv.SetAuthFail(true) },
			keys.ErrKMIPAuth, "AuthenticationNotSuccessful"},
		{"not a TLS server", 0, func(t *testing.T, srv *kmiptest.Server, cfg *keys.KMIPConfig) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { ln.Close() })
			go func() {
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					c.Write([]byte("HTTP/1.0 400 Bad Request\r\n\r\n"))
					c.Close()
				}
			}()
			cfg.Addrs = []string{ln.Addr().String()}
		}, keys.ErrKMIPNotReady, "does not speak TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := newServer(t, kmiptest.Options{MaxTLS: tc.maxTLS})
			cfg := config(t, srv)
			tc.setup(t, srv, &cfg)
			c, err := keys.DialKMIP(ctx, cfg)
			if err == nil {
				c.Close()
				t.Fatal("dial succeeded")
			}
			var ke *keys.KMIPError
			if !errors.Is(err, tc.want) || !errors.As(err, &ke) || !strings.Contains(err.Error(), tc.detail) {
				t.Fatalf("got %v, want %v with %q", err, tc.want, tc.detail)
			}
			for _, other := range []error{keys.ErrKMIPUnreachable, keys.ErrKMIPHandshake, keys.ErrKMIPUntrusted, keys.ErrKMIPAuth, keys.ErrKMIPNotReady} {
				if other != tc.want && errors.Is(err, other) {
					t.Fatalf("%v is also %v", err, other)
				}
			}
		})
	}
}

func TestKMIPNotReadyAndFailover(t *testing.T) {
	ctx := context.Background()
	srv := newServer(t, kmiptest.Options{})
	cfg := config(t, srv)
	dead, _ := net.Listen("tcp", "127.0.0.1:0")
	deadAddr := dead.Addr().String()
	dead.Close()
	cfg.Addrs = []string{deadAddr, srv.Addr()}
	c, err := keys.DialKMIP(ctx, cfg)
	if err != nil {
		t.Fatalf("failover: %v", err)
	}
	defer c.Close()
	if c.Addr() != srv.Addr() {
		t.Fatalf("connected to %s", c.Addr())
	}
	srv.SetNotReady(true)
	if _, err := c.Locate(ctx, ""); !errors.Is(err, keys.ErrKMIPNotReady) || !strings.Contains(err.Error(), "GeneralFailure") {
		t.Fatalf("not ready: %v", err)
	}
	srv.SetNotReady(false)
	// The server goes away under an open connection: a classified error,
	// and Close does not panic.
	srv.Stop()
	if _, err := c.Locate(ctx, ""); err == nil {
		t.Fatal("locate on a stopped server")
	}
	c.Close()
	c.Close()

	// Both addresses failing: the reached server's refusal wins, the other
	// address is in the text.
	srv.Start()
	srv.SetAuthFail(true)
	_, err = keys.DialKMIP(ctx, cfg)
	if !errors.Is(err, keys.ErrKMIPAuth) || !strings.Contains(err.Error(), deadAddr) {
		t.Fatalf("both failing: %v", err)
	}
}

func TestCheckKMIPAddr(t *testing.T) {
	for _, tc := range []struct {
		addr string
		ok   bool
	}{
		{"127.0.0.1:5696", true}, {"kms.example.com:5696", true}, {"[::1]:5696", true},
		{"kms.example.com", false}, {"127.0.0.1", false}, {":5696", false}, {"kms:0", false},
		{"kms:65536", false}, {"kms:http", false}, {"kms:", false}, {"km s:5696", false}, {"", false},
	} {
		if err := keys.CheckKMIPAddr(tc.addr); (err == nil) != tc.ok {
			t.Errorf("%q: %v", tc.addr, err)
		}
	}
	cfg := keys.KMIPConfig{Addrs: make([]string, keys.MaxKMIPAddrs+1)}
	if _, err := keys.DialKMIP(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("too many addresses: %v", err)
	}
}
