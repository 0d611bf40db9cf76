package mgmt

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
	gossh "golang.org/x/crypto/ssh"

	"vfa/array"
)

// The test harness: an in-memory array with small devices, a management
// server on a loopback port, a fake clock, and an SSH client key.

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock {
	return &fakeClock{t: time.Date(2025, 3, 14, 9, 26, 53, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// initialized holds one freshly initialised array's files. Initialising an
// array takes seconds under the race detector, so every harness starts from
// a copy of these files instead (the arrays then share an id, which the
// tests never rely on).
var initialized struct {
	once sync.Once
	fs   *vfs.MemFS
	err  error
}

func freshArrayFS(t testing.TB) vfs.FS {
	t.Helper()
	initialized.once.Do(func() {
		fs := vfs.NewCrashableMem()
		_, err := array.Init(fs, "/array", array.InitOptions{Name: "vfa-test", SSDs: 6, SSDSize: 16 << 20, NVRAMSize: 8 << 20, AUSize: 64 << 10})
		initialized.fs, initialized.err = fs, err
	})
	if initialized.err != nil {
		t.Fatal(initialized.err)
	}
	// 100%: the copy is identical, synced or not.
	return initialized.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: mrand.New(mrand.NewPCG(1, 1))})
}

type harness struct {
	t      testing.TB
	fs     vfs.FS
	dir    string
	clock  *fakeClock
	a      *array.Array
	srv    *Server
	cfg    Config
	signer gossh.Signer // pureuser's key
	pubKey string       // its authorized_keys line
	client *gossh.Client
	served chan error
	setup  func(*harness) // sets up pureuser (default: with signer's key)
}

type harnessOpt func(*harness)

func withConfig(f func(*Config)) harnessOpt { return func(h *harness) { f(&h.cfg) } }

func newHarness(t testing.TB, opts ...harnessOpt) *harness {
	t.Helper()
	h := &harness{t: t, fs: freshArrayFS(t), dir: "/array", clock: newClock()}
	h.cfg = Config{Addr: "127.0.0.1:0", Portals: []string{"127.0.0.1:3260"}, LoginFailDelay: 50 * time.Millisecond}
	for _, o := range opts {
		o(h)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if h.signer, err = gossh.NewSignerFromKey(priv); err != nil {
		t.Fatal(err)
	}
	h.pubKey = strings.TrimSpace(string(gossh.MarshalAuthorizedKey(h.signer.PublicKey()))) + " test@harness"
	h.open()
	if h.setup != nil {
		h.setup(h)
	} else if _, err := SetupAdmin(h.a, h.pubKey); err != nil {
		t.Fatal(err)
	}
	h.start()
	t.Cleanup(h.stop)
	return h
}

func (h *harness) open() {
	a, err := array.Open(array.Options{Dir: h.dir, FS: h.fs, Now: h.clock.Now})
	if err != nil {
		h.t.Fatal(err)
	}
	h.a = a
}

func (h *harness) start() {
	cfg := h.cfg
	cfg.Now = h.clock.Now
	srv, err := New(h.a, cfg)
	if err != nil {
		h.t.Fatal(err)
	}
	h.srv = srv
	h.served = make(chan error, 1)
	go func() { h.served <- srv.Serve(context.Background()) }()
}

// stop closes the server and the array.
func (h *harness) stop() {
	if h.client != nil {
		h.client.Close()
		h.client = nil
	}
	if h.srv != nil {
		if err := h.srv.Close(); err != nil {
			h.t.Errorf("server close: %v", err)
		}
		if err := <-h.served; err != nil {
			h.t.Errorf("serve: %v", err)
		}
		h.srv = nil
	}
	if h.a != nil {
		if err := h.a.Close(); err != nil {
			h.t.Errorf("array close: %v", err)
		}
		h.a = nil
	}
}

// restart closes the server and the array (flushing everything) and opens
// both again on the same files.
func (h *harness) restart() {
	h.stop()
	h.open()
	h.start()
}

func (h *harness) addr() string { return h.srv.Addr().String() }

func (h *harness) hostKeyCallback() gossh.HostKeyCallback {
	line, err := HostKey(h.a)
	if err != nil {
		h.t.Fatal(err)
	}
	pk, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
	if err != nil {
		h.t.Fatal(err)
	}
	return gossh.FixedHostKey(pk)
}

func (h *harness) dial(user string, auth ...gossh.AuthMethod) (*gossh.Client, error) {
	return gossh.Dial("tcp", h.addr(), &gossh.ClientConfig{User: user, Auth: auth, HostKeyCallback: h.hostKeyCallback(), Timeout: 10 * time.Second})
}

// run runs one command over SSH (exec) and returns stdout, stderr and the
// exit status.
func (h *harness) run(cmd, stdin string) (string, string, int) {
	h.t.Helper()
	if h.client == nil {
		c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
		if err != nil {
			h.t.Fatalf("dial: %v", err)
		}
		h.client = c
	}
	sess, err := h.client.NewSession()
	if err != nil {
		h.t.Fatalf("session: %v", err)
	}
	defer sess.Close()
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	sess.Stdin = strings.NewReader(stdin)
	code := 0
	if err := sess.Run(cmd); err != nil {
		var ee *gossh.ExitError
		if !errors.As(err, &ee) {
			h.t.Fatalf("%s: %v", cmd, err)
		}
		code = ee.ExitStatus()
	}
	return out.String(), errb.String(), code
}

// ok runs a command that must succeed and returns its output.
func (h *harness) ok(cmd string) string {
	h.t.Helper()
	out, errs, code := h.run(cmd, "")
	if code != 0 || errs != "" {
		h.t.Fatalf("%s: exit %d: %s", cmd, code, errs)
	}
	return out
}

// fail runs a command that must fail and returns its error line.
func (h *harness) fail(cmd string) string {
	h.t.Helper()
	out, errs, code := h.run(cmd, "")
	if code != 1 || errs == "" {
		h.t.Fatalf("%s: exit %d, stderr %q, stdout %q; want a failure", cmd, code, errs, out)
	}
	return errs
}

// needTool finds an external program; in CI a missing one is a failure.
func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (CI requires it): %v", name, err)
		}
		t.Skipf("%s is not installed: %v", name, err)
	}
	return p
}

// newTestKey returns a fresh public key as an authorized_keys line.
func newTestKey(t testing.TB) string {
	line, _ := newTestSigner(t)
	return line
}

// newTestSigner returns a fresh key: its authorized_keys line and signer.
func newTestSigner(t testing.TB) (string, gossh.Signer) {
	t.Helper()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := gossh.NewSignerFromKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(gossh.MarshalAuthorizedKey(s.PublicKey()))) + " second@test", s
}
