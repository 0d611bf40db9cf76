package mgmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
)

// SSH-level behaviour with the Go client: logins, the shells, limits.

// withPassword sets pureuser up with a generated password (and no key).
func withPassword(pw *string) harnessOpt {
	return func(h *harness) {
		h.setup = func(h *harness) {
			p, err := SetupAdmin(h.a, "")
			if err != nil {
				h.t.Fatal(err)
			}
			*pw = p
		}
	}
}

func TestPasswordLogin(t *testing.T) {
	var pw string
	delay := 150 * time.Millisecond
	h := newHarness(t, withPassword(&pw), withConfig(func(c *Config) { c.LoginFailDelay = delay }))
	if len(pw) != 20 {
		t.Fatalf("generated password %q: want 20 characters", pw)
	}
	ad, err := h.a.Admin(AdminUser)
	if err != nil {
		t.Fatal(err)
	}
	if ad.PasswordHash == "" || strings.Contains(ad.PasswordHash, pw) || !strings.HasPrefix(ad.PasswordHash, "$argon2id$") {
		t.Fatalf("stored hash %q", ad.PasswordHash)
	}
	if len(ad.PublicKeys) != 0 {
		t.Fatalf("password setup stored keys %v", ad.PublicKeys)
	}

	c, err := h.dial(AdminUser, gossh.Password(pw))
	if err != nil {
		t.Fatalf("login with the generated password: %v", err)
	}
	c.Close()

	// Refused: wrong password, wrong user, a key that is not authorized.
	for _, tc := range []struct {
		name, user string
		auth       gossh.AuthMethod
		delayed    bool
	}{
		{"wrong password", AdminUser, gossh.Password(pw + "x"), true},
		{"empty password", AdminUser, gossh.Password(""), true},
		{"unknown user", "root", gossh.Password(pw), true},
		{"unknown key", AdminUser, gossh.PublicKeys(h.signer), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t0 := time.Now()
			c, err := h.dial(tc.user, tc.auth)
			if err == nil {
				c.Close()
				t.Fatal("login accepted")
			}
			if !strings.Contains(err.Error(), "unable to authenticate") {
				t.Fatalf("error %v", err)
			}
			if tc.delayed && time.Since(t0) < delay {
				t.Fatalf("refused after %v, before the delay of %v", time.Since(t0), delay)
			}
		})
	}
}

func TestKeyAndPasswordChange(t *testing.T) {
	h := newHarness(t)
	if c, err := h.dial(AdminUser, gossh.Password("a-new-password")); err == nil {
		c.Close()
		t.Fatal("password login before a password was set")
	}
	if _, errs, code := h.run("pureadmin setattr --password", "a-new-password\n"); code != 0 {
		t.Fatalf("set password: %s", errs)
	}
	c, err := h.dial(AdminUser, gossh.Password("a-new-password"))
	if err != nil {
		t.Fatalf("login with the new password: %v", err)
	}
	c.Close()

	// Replace the keys: the new key logs in, the old one no longer does.
	_, priv := newTestSigner(t)
	line := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(priv.PublicKey())))
	if _, errs, code := h.run("pureadmin setattr --publickey", line+"\n"); code != 0 {
		t.Fatalf("set key: %s", errs)
	}
	if c, err = h.dial(AdminUser, gossh.PublicKeys(priv)); err != nil {
		t.Fatalf("login with the new key: %v", err)
	}
	c.Close()
	if c, err = h.dial(AdminUser, gossh.PublicKeys(h.signer)); err == nil {
		c.Close()
		t.Fatal("the replaced key still logs in")
	}
}

func TestHostKeyPersists(t *testing.T) {
	h := newHarness(t)
	first, err := HostKey(h.a)
	if err != nil {
		t.Fatal(err)
	}
	var seen gossh.PublicKey
	c, err := gossh.Dial("tcp", h.addr(), &gossh.ClientConfig{User: AdminUser, Auth: []gossh.AuthMethod{gossh.PublicKeys(h.signer)},
		HostKeyCallback: func(_ string, _ net.Addr, k gossh.PublicKey) error { seen = k; return nil }})
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
	if got := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(seen))); got != first {
		t.Fatalf("server presented %s, HostKey says %s", got, first)
	}
	h.restart()
	second, err := HostKey(h.a)
	if err != nil {
		t.Fatal(err)
	}
	if first != second {
		t.Fatalf("host key changed across a restart: %s then %s", first, second)
	}
	h.ok("purevol list") // FixedHostKey(second) accepts the restarted server
}

// TestShellWithoutPty runs commands piped into a shell session.
func TestShellWithoutPty(t *testing.T) {
	h := newHarness(t)
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	sess.Stdout, sess.Stderr = &out, &errb
	sess.Stdin = strings.NewReader("purevol create --size 1G piped\npurevol list --csv --notitle\npurevol nosuch\nexit\npurevol create --size 1G never\n")
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	err = sess.Wait()
	var ee *gossh.ExitError
	if !errors.As(err, &ee) || ee.ExitStatus() != 1 {
		t.Fatalf("exit: %v; want status 1 (the last command failed)", err)
	}
	if !strings.Contains(out.String(), "piped,1073741824,") || strings.Contains(out.String(), "never") {
		t.Fatalf("stdout:\n%s", out.String())
	}
	if errb.String() != "Error on purevol: Unknown subcommand \"nosuch\"; type \"purevol --help\" for its subcommands.\n" {
		t.Fatalf("stderr %q", errb.String())
	}
	if _, err := h.a.LookupVolume("never"); err == nil {
		t.Fatal("a command after exit ran")
	}
}

// ptySession is an interactive session driven through a pty request.
type ptySession struct {
	t     *testing.T
	sess  *gossh.Session
	in    io.WriteCloser
	mu    sync.Mutex
	cond  *sync.Cond
	buf   bytes.Buffer
	done  bool
	mark  int // expect searches from here
	errCh chan error
}

func startPty(t *testing.T, c *gossh.Client) *ptySession {
	t.Helper()
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	p := &ptySession{t: t, sess: sess, errCh: make(chan error, 1)}
	p.cond = sync.NewCond(&p.mu)
	if err := sess.RequestPty("xterm", 40, 200, gossh.TerminalModes{}); err != nil {
		t.Fatal(err)
	}
	if p.in, err = sess.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	out, err := sess.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := out.Read(b)
			p.mu.Lock()
			p.buf.Write(b[:n])
			if err != nil {
				p.done = true
			}
			p.cond.Broadcast()
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	if err := sess.Shell(); err != nil {
		t.Fatal(err)
	}
	go func() { p.errCh <- sess.Wait() }()
	return p
}

// expect waits until the output after the last match contains s, and returns
// that output. The deadline only bounds a failing test.
func (p *ptySession) expect(s string) string {
	p.t.Helper()
	deadline := time.AfterFunc(20*time.Second, func() {
		p.mu.Lock()
		p.done = true
		p.cond.Broadcast()
		p.mu.Unlock()
	})
	defer deadline.Stop()
	p.mu.Lock()
	defer p.mu.Unlock()
	for {
		all := p.buf.String()
		if i := strings.Index(all[p.mark:], s); i >= 0 {
			got := all[p.mark : p.mark+i+len(s)]
			p.mark += i + len(s)
			return got
		}
		if p.done {
			p.t.Fatalf("never saw %q; output after the last match:\n%q", s, all[p.mark:])
		}
		p.cond.Wait()
	}
}

func (p *ptySession) send(s string) {
	p.t.Helper()
	if _, err := io.WriteString(p.in, s); err != nil {
		p.t.Fatal(err)
	}
}

func TestInteractiveShell(t *testing.T) {
	h := newHarness(t)
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := startPty(t, c)
	prompt := "pureuser@vfa-test> "
	p.expect("Welcome to vfa-test")
	p.expect(prompt)

	p.send("purevol create --size 2G shellvol\r")
	if out := p.expect(prompt); !strings.Contains(out, "shellvol  2G") {
		t.Fatalf("create output:\n%q", out)
	}
	// Line editing: a typo erased with backspace; Ctrl-A and a word inserted
	// at the start of the line.
	p.send("--help purevol listx\x7f")
	p.send("\x01\x1b[3~") // Home, then an unsupported key (ignored)
	p.send("\x0b")        // Ctrl-K: delete to the end of the line
	p.send("purevol list --csv --notitle\r")
	if out := p.expect(prompt); !strings.Contains(out, "shellvol,2147483648,") {
		t.Fatalf("edited line output:\n%q", out)
	}
	// Ctrl-C abandons the line being typed.
	p.send("purevol destroy shellvol\x03")
	p.expect(prompt)
	if v, err := h.a.LookupVolume("shellvol"); err != nil || !v.Destroyed.IsZero() {
		t.Fatalf("Ctrl-C did not abandon the line: %+v %v", v, err)
	}
	p.send("purehost create --iqnlist iqn.2005-03.org.open-iscsi:sh sh1\r")
	p.expect(prompt)
	p.send("purevol connect --host sh1 shellvol\r")
	p.expect(prompt)
	p.send("purevol list --connect\r")
	if out := p.expect(prompt); !strings.Contains(out, "shellvol  2G    1    -           sh1") {
		t.Fatalf("connect listing:\n%q", out)
	}
	// History: Up recalls the last command.
	p.send("\x1b[A\r")
	if out := p.expect(prompt); !strings.Contains(out, "shellvol  2G    1    -           sh1") {
		t.Fatalf("recalled command output:\n%q", out)
	}
	// Errors go to the terminal too.
	p.send("purevol nosuch\r")
	if out := p.expect(prompt); !strings.Contains(out, "Error on purevol: Unknown subcommand") {
		t.Fatalf("error output:\n%q", out)
	}
	// Passwords are prompted for twice without echo; a mismatch changes
	// nothing.
	p.send("pureadmin setattr --password\r")
	p.expect("Enter new password: ")
	p.send("first-password\r")
	p.expect("Retype new password: ")
	p.send("other-password\r")
	if out := p.expect(prompt); !strings.Contains(out, "Error on pureuser: The two passwords do not match.") || strings.Contains(out, "first-password") {
		t.Fatalf("mismatch output:\n%q", out)
	}
	p.send("pureadmin setattr --password\r")
	p.expect("Enter new password: ")
	p.send("shell-password\r")
	p.expect("Retype new password: ")
	p.send("shell-password\r")
	if out := p.expect(prompt); strings.Contains(out, "shell-password") {
		t.Fatalf("the password was echoed:\n%q", out)
	}
	// Public keys are pasted, one per line, up to an empty line.
	p.send("pureadmin setattr --publickey\r")
	p.expect("Enter public keys, one per line, then an empty line:")
	p.send(h.pubKey + "\r" + newTestKey(t) + "\r\r")
	if out := p.expect(prompt); !strings.Contains(out, "Name\r\npureuser") {
		t.Fatalf("publickey output:\n%q", out)
	}
	p.send("pureadmin list --csv --notitle\r")
	if out := p.expect(prompt); !strings.Contains(out, "pureuser,local,array_admin,yes,2") {
		t.Fatalf("admin list after the keys:\n%q", out)
	}
	// The prompt follows a rename.
	p.send("purearray rename renamed\r")
	p.expect("pureuser@renamed> ")
	p.send("exit\r")
	if err := <-p.errCh; err != nil {
		t.Fatalf("session end: %v", err)
	}
	if pc, err := h.dial(AdminUser, gossh.Password("shell-password")); err != nil {
		t.Fatalf("the password set in the shell does not log in: %v", err)
	} else {
		pc.Close()
	}
}

func TestLoginGraceAndConnectionLimit(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) {
		c.MaxConnections = 2
		c.LoginGraceTime = 200 * time.Millisecond
	}))
	// Two silent connections take both slots; a third is closed at once.
	var silent []net.Conn
	for i := 0; i < 2; i++ {
		c, err := net.Dial("tcp", h.addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		silent = append(silent, c)
	}
	// Wait until the server has admitted both (it sends its version first).
	for _, c := range silent {
		if _, err := c.Read(make([]byte, 4)); err != nil {
			t.Fatal(err)
		}
	}
	if c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer)); err == nil {
		c.Close()
		t.Fatal("a third connection was accepted over the limit of 2")
	}
	// The grace time closes the silent ones; then logins work again.
	for _, c := range silent {
		_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Fatalf("silent connection: %v (want it closed by the server)", err)
		}
	}
	// The slots were released before the connections were closed.
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		t.Fatalf("login after the silent connections closed: %v", err)
	}
	c.Close()
}

func TestConcurrentSessions(t *testing.T) {
	h := newHarness(t)
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	const n = 8
	var wg sync.WaitGroup
	errs := make(chan error, 2*n)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, cmd := range []string{
				fmt.Sprintf("purevol create --size 1G c%d-a c%d-b shared", i, i),
				fmt.Sprintf("purevol create --size 1G c%d-a c%d-b", i, i),
			} {
				sess, err := c.NewSession()
				if err != nil {
					errs <- err
					return
				}
				var out bytes.Buffer
				sess.Stderr = &out
				err = sess.Run(cmd)
				sess.Close()
				if err != nil && !strings.Contains(out.String(), "already exists") {
					errs <- fmt.Errorf("%s: %v %s", cmd, err, out.String())
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	// Exactly one session created "shared" (with its two companions); every
	// other session's first command created nothing; all second commands
	// but that one session's succeeded.
	vols := h.a.Volumes()
	if len(vols) != 2*n+1 {
		names := []string{}
		for _, v := range vols {
			names = append(names, v.Name)
		}
		t.Fatalf("%d volumes %v; want %d", len(vols), names, 2*n+1)
	}
	log, err := h.a.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != 2*n {
		t.Fatalf("%d audit entries, want %d", len(log), 2*n)
	}
}

func TestServeStopsWithContext(t *testing.T) {
	h := newHarness(t)
	srv, err := New(h.a, Config{Addr: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()
	c, err := gossh.Dial("tcp", srv.Addr().String(), &gossh.ClientConfig{User: AdminUser, Auth: []gossh.AuthMethod{gossh.PublicKeys(h.signer)},
		HostKeyCallback: h.hostKeyCallback()})
	if err != nil {
		t.Fatal(err)
	}
	sess, err := c.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	if out, err := sess.Output("exit"); err != nil || len(out) != 0 {
		t.Fatalf("exit in exec mode: %q %v", out, err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Serve after cancel: %v", err)
	}
	// The connection was closed with the server.
	if _, err := c.NewSession(); err == nil {
		t.Fatal("a session opened after the server stopped")
	}
	c.Close()
	if err := srv.Serve(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Serve after Close: %v", err)
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.Dial("tcp", srv.Addr().String()); err == nil {
		t.Fatal("still listening after Close")
	}
}

func TestSessionLimit(t *testing.T) {
	h := newHarness(t, withConfig(func(c *Config) { c.MaxSessions = 1 }))
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	p := startPty(t, c) // holds the one session
	p.expect("pureuser@vfa-test> ")
	_, errs, code := h.run("purevol list", "")
	if code != 1 || errs != "Error on session: Too many sessions (the limit is 1); try again later.\n" {
		t.Fatalf("second session: exit %d %q", code, errs)
	}
	p.send("exit\r")
	if err := <-p.errCh; err != nil {
		t.Fatal(err)
	}
	// The slot is free once the shell's handler has returned; the session
	// end the client saw comes after it.
	h.ok("purevol list")
}
