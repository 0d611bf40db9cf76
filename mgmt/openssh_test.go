package mgmt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// The stock OpenSSH client against the server: key login, password login
// through sshpass, exec mode with exit statuses, an interactive session on a
// pty (ssh -tt), and refused logins. In CI (CI=true) a missing ssh, sshpass
// or ssh-keygen is a failure, not a skip.

type openssh struct {
	t          *testing.T
	h          *harness
	ssh        string
	key        string // private key file
	pub        string // its authorized_keys line
	knownHosts string
}

func newOpenSSH(t *testing.T, opts ...harnessOpt) *openssh {
	t.Helper()
	o := &openssh{t: t, ssh: needTool(t, "ssh")}
	keygen := needTool(t, "ssh-keygen")
	dir := t.TempDir()
	o.key = filepath.Join(dir, "id_ed25519")
	if out, err := exec.Command(keygen, "-q", "-t", "ed25519", "-N", "", "-C", "admin@openssh", "-f", o.key).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v: %s", err, out)
	}
	pub, err := os.ReadFile(o.key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	o.pub = strings.TrimSpace(string(pub))
	o.knownHosts = filepath.Join(dir, "known_hosts")
	// pureuser gets both the OpenSSH key and the harness's Go key, as
	// `vfa init --admin-key` would with a two-line .pub file.
	opts = append([]harnessOpt{func(h *harness) {
		if h.setup == nil {
			h.setup = func(h *harness) {
				if _, err := SetupAdmin(h.a, o.pub+"\n"+h.pubKey+"\n"); err != nil {
					h.t.Fatal(err)
				}
			}
		}
	}}, opts...)
	o.h = newHarness(t, opts...)
	o.writeKnownHosts()
	return o
}

// writeKnownHosts records the array's host key for StrictHostKeyChecking.
func (o *openssh) writeKnownHosts() {
	hk, err := HostKey(o.h.a)
	if err != nil {
		o.t.Fatal(err)
	}
	line := fmt.Sprintf("[127.0.0.1]:%s %s\n", o.port(), hk)
	if err := os.WriteFile(o.knownHosts, []byte(line), 0o600); err != nil {
		o.t.Fatal(err)
	}
}

func (o *openssh) port() string {
	_, port, _ := strings.Cut(o.h.addr(), ":")
	return port
}

// args are the ssh options every test uses: no user configuration, strict
// host key checking against our known_hosts, and no agent.
func (o *openssh) args(extra ...string) []string {
	a := []string{"-F", "/dev/null", "-p", o.port(),
		"-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + o.knownHosts, "-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "IdentityAgent=none", "-o", "ConnectTimeout=20", "-o", "LogLevel=ERROR"}
	return append(a, extra...)
}

func (o *openssh) keyArgs(extra ...string) []string {
	return o.args(append([]string{"-i", o.key, "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
		"-o", "PasswordAuthentication=no", "-o", "KbdInteractiveAuthentication=no"}, extra...)...)
}

type result struct {
	stdout, stderr string
	code           int
	took           time.Duration
}

func (o *openssh) exec(name string, args []string, stdin string) result {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	t0 := time.Now()
	err := cmd.Run()
	r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(t0)}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	default:
		o.t.Fatalf("%s %v: %v", name, args, err)
	}
	return r
}

// run runs a command with key login.
func (o *openssh) run(command ...string) result {
	o.t.Helper()
	return o.exec(o.ssh, o.keyArgs(append([]string{"pureuser@127.0.0.1"}, command...)...), "")
}

func TestOpenSSHExecWithKey(t *testing.T) {
	o := newOpenSSH(t)
	r := o.run("purevol", "create", "--size", "10G", "ossh-vol")
	if r.code != 0 || !strings.Contains(r.stdout, "ossh-vol  10G") {
		t.Fatalf("create: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	// The command line arrives as one string and is split by the server:
	// quoting works as in a shell.
	r = o.run("purehost create --iqnlist 'iqn.2005-03.org.open-iscsi:ossh' ossh-host")
	if r.code != 0 {
		t.Fatalf("host create: exit %d: %s", r.code, r.stderr)
	}
	if r = o.run("purevol connect --host ossh-host ossh-vol"); r.code != 0 {
		t.Fatalf("connect: exit %d: %s", r.code, r.stderr)
	}
	r = o.run("purevol list --connect --csv")
	want := "Name,Size,LUN,Host Group,Host\nossh-vol,10737418240,1,,ossh-host\n"
	if r.code != 0 || r.stdout != want {
		t.Fatalf("list: exit %d\n%q\nwant %q\n%s", r.code, r.stdout, want, r.stderr)
	}
	// Errors: one line on stderr, exit status 1, nothing on stdout.
	r = o.run("purevol create --size 1X bad")
	if r.code != 1 || r.stdout != "" || !strings.HasPrefix(r.stderr, "Error on purevol create: Invalid size \"1X\"") || strings.Count(r.stderr, "\n") != 1 {
		t.Fatalf("bad size: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	r = o.run("nosuchcommand")
	if r.code != 1 || r.stderr != "Error on nosuchcommand: Unknown command; type \"help\" for the list of commands.\n" {
		t.Fatalf("unknown command: exit %d stderr %q", r.code, r.stderr)
	}
	// Public keys are read from stdin: `ssh ... pureadmin setattr --publickey < key.pub`.
	r = o.exec(o.ssh, o.keyArgs("pureuser@127.0.0.1", "pureadmin", "setattr", "--publickey"), o.pub+"\n"+o.h.pubKey+"\n")
	if r.code != 0 {
		t.Fatalf("setattr --publickey: exit %d: %s", r.code, r.stderr)
	}
	r = o.run("pureadmin list --csv --notitle")
	if r.stdout != "pureuser,local,array_admin,no,2\n" {
		t.Fatalf("admin list %q", r.stdout)
	}
	// The host key survives a restart: strict checking against the same
	// known_hosts line (the port changes, so the line is rewritten with the
	// key read back from the array).
	before, _ := HostKey(o.h.a)
	o.h.restart()
	after, _ := HostKey(o.h.a)
	if before != after {
		t.Fatalf("host key changed across a restart")
	}
	o.writeKnownHosts()
	if r = o.run("purevol list --notitle --csv ossh-vol"); r.code != 0 || !strings.HasPrefix(r.stdout, "ossh-vol,") {
		t.Fatalf("after restart: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	// A host key that does not match known_hosts makes ssh refuse.
	if err := os.WriteFile(o.knownHosts, []byte(fmt.Sprintf("[127.0.0.1]:%s %s\n", o.port(), o.pub)), 0o600); err != nil {
		t.Fatal(err)
	}
	if r = o.run("purevol list"); r.code != 255 {
		t.Fatalf("wrong known host key: exit %d (want 255): %s", r.code, r.stderr)
	}
}

func TestOpenSSHPasswordLogin(t *testing.T) {
	sshpass := needTool(t, "sshpass")
	var pw string
	delay := 300 * time.Millisecond
	o := newOpenSSH(t, withPassword(&pw), withConfig(func(c *Config) { c.LoginFailDelay = delay }))
	pwArgs := func(cmd ...string) []string {
		a := append([]string{"-e", o.ssh}, o.args("-o", "PreferredAuthentications=password", "-o", "PubkeyAuthentication=no",
			"-o", "NumberOfPasswordPrompts=1", "pureuser@127.0.0.1")...)
		return append(a, cmd...)
	}
	withPw := func(p string) []string { return append(os.Environ(), "SSHPASS="+p) }
	run := func(p string, cmd ...string) result {
		t.Helper()
		c := exec.Command(sshpass, pwArgs(cmd...)...)
		c.Env = withPw(p)
		var out, errb bytes.Buffer
		c.Stdout, c.Stderr = &out, &errb
		t0 := time.Now()
		err := c.Run()
		r := result{stdout: out.String(), stderr: errb.String(), took: time.Since(t0)}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			r.code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return r
	}
	r := run(pw, "purearray", "list", "--csv", "--notitle")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "vfa-test,") {
		t.Fatalf("password login: exit %d %q %s", r.code, r.stdout, r.stderr)
	}
	// A wrong password is refused, after the delay; sshpass reports exit
	// status 5 (wrong password) or ssh's 255.
	r = run(pw+"-wrong", "purearray", "list")
	if r.code == 0 || r.stdout != "" {
		t.Fatalf("wrong password accepted: exit %d %q", r.code, r.stdout)
	}
	if r.code != 5 && r.code != 255 {
		t.Fatalf("wrong password: exit %d: %s", r.code, r.stderr)
	}
	if r.took < delay {
		t.Fatalf("wrong password refused after %v, before the delay of %v", r.took, delay)
	}
	// The key that is not authorized (this harness set up a password only)
	// is refused too.
	if r := o.run("purearray list"); r.code != 255 || !strings.Contains(r.stderr, "Permission denied") {
		t.Fatalf("unauthorized key: exit %d %q", r.code, r.stderr)
	}
	// And so is a user other than pureuser.
	c := exec.Command(sshpass, append(append([]string{"-e", o.ssh}, o.args("-o", "PreferredAuthentications=password",
		"-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1", "root@127.0.0.1")...), "purearray", "list")...)
	c.Env = withPw(pw)
	if out, err := c.CombinedOutput(); err == nil {
		t.Fatalf("root logged in: %s", out)
	}
}

// TestOpenSSHInteractive drives the interactive shell through a pty that
// ssh -tt requests, typing commands into ssh's stdin.
func TestOpenSSHInteractive(t *testing.T) {
	o := newOpenSSH(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, o.ssh, o.keyArgs("-tt", "pureuser@127.0.0.1")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out := &syncBuffer{}
	out.cond = sync.NewCond(&out.mu)
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- cmd.Wait()
		out.close()
	}()
	prompt := "pureuser@vfa-test> "
	send := func(s string) {
		t.Helper()
		if _, err := io.WriteString(stdin, s); err != nil {
			t.Fatal(err)
		}
	}
	out.expect(t, prompt)
	send("purevol create --size 3G tty-vol\r")
	if got := out.expect(t, prompt); !strings.Contains(got, "tty-vol  3G") {
		t.Fatalf("create:\n%q", got)
	}
	send("purehost create --iqnlist iqn.2005-03.org.open-iscsi:tty tty-host\r")
	out.expect(t, prompt)
	send("purevol connect --host tty-host tty-vol\r")
	if got := out.expect(t, prompt); !strings.Contains(got, "tty-vol  -           tty-host  1") {
		t.Fatalf("connect:\n%q", got)
	}
	send("purevol list --connect\r")
	if got := out.expect(t, prompt); !strings.Contains(got, "Name     Size  LUN  Host Group  Host") || !strings.Contains(got, "tty-vol  3G    1    -           tty-host") {
		t.Fatalf("list:\n%q", got)
	}
	send("exit\r")
	if err := <-done; err != nil {
		t.Fatalf("ssh: %v\n%s", err, out.String())
	}
	c, err := o.h.a.LookupVolume("tty-vol")
	if err != nil || c.Size != 3<<30 {
		t.Fatalf("volume after the session: %+v %v", c, err)
	}
}

// syncBuffer collects a process's output and lets a test wait for text.
type syncBuffer struct {
	mu     sync.Mutex
	cond   *sync.Cond
	buf    bytes.Buffer
	closed bool
	mark   int
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf.Write(p)
	b.cond.Broadcast()
	return len(p), nil
}

func (b *syncBuffer) close() {
	b.mu.Lock()
	b.closed = true
	b.cond.Broadcast()
	b.mu.Unlock()
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// expect waits for s after the previous match and returns the text up to it.
// The process's own deadline (the context) bounds a failing test.
func (b *syncBuffer) expect(t *testing.T, s string) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	for {
		all := b.buf.String()
		if i := strings.Index(all[b.mark:], s); i >= 0 {
			got := all[b.mark : b.mark+i+len(s)]
			b.mark += i + len(s)
			return got
		}
		if b.closed {
			t.Fatalf("never saw %q; output:\n%q", s, all)
		}
		b.cond.Wait()
	}
}
