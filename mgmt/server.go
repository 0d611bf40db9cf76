package mgmt

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	gssh "github.com/gliderlabs/ssh"
	gossh "golang.org/x/crypto/ssh"

	"vfa/array"
)

// Config configures a management server. The zero value of every field is a
// useful default.
type Config struct {
	// Addr is the TCP address to listen on (default 127.0.0.1:2222; ":0"
	// style addresses pick a free port, see Server.Addr).
	Addr string
	// Portals are the iSCSI portals ("host:port") pureport lists.
	Portals []string
	Logger  *slog.Logger
	// Now is the clock (default time.Now). Give the array the same one.
	Now func() time.Time
	// DestroyedRetention is how long a destroyed volume stays recoverable
	// before it is eradicated automatically (default 24h).
	DestroyedRetention time.Duration
	// EradicateInterval is how often destroyed volumes are checked for
	// expiry (default: a minute, or the retention if that is shorter).
	EradicateInterval time.Duration
	// LoginFailDelay is how long a refused password login waits before it
	// is answered (default 2s).
	LoginFailDelay time.Duration
	// MaxConnections bounds concurrent SSH connections, authenticated or
	// not (default 16); more are closed at once and logged.
	MaxConnections int
	// IdleTimeout closes a connection that sends or receives nothing for
	// this long (default 1h).
	IdleTimeout time.Duration
	// MaxSessions bounds concurrent sessions (exec or shell) over all
	// connections (default 64); more are refused with an error.
	MaxSessions int
	// LoginGraceTime closes a connection that has not authenticated this
	// long after it was accepted (default 1m), so that idle unauthenticated
	// connections cannot hold every connection slot.
	LoginGraceTime time.Duration
}

// Defaults.
const (
	DefaultAddr               = "127.0.0.1:2222"
	DefaultDestroyedRetention = 24 * time.Hour
	defaultLoginFailDelay     = 2 * time.Second
	defaultMaxConnections     = 16
	defaultIdleTimeout        = time.Hour
	defaultLoginGraceTime     = time.Minute
	defaultMaxSessions        = 64
	// AdminUser is the one administrator account.
	AdminUser = "pureuser"
)

// Errors of the server's lifecycle.
var (
	ErrClosed = errors.New("mgmt: server closed")
)

// Server is an SSH management server for one array.
type Server struct {
	a    *array.Array
	c    Config
	log  *slog.Logger
	ln   net.Listener
	ssh  *gssh.Server
	cmds *registry

	// cmdMu serialises the commands that change anything, so that a
	// command's checks still hold when it applies its changes.
	cmdMu sync.Mutex
	// connSlots bounds concurrent connections.
	connSlots chan struct{}

	done      chan struct{}
	closeOnce sync.Once
	serving   sync.WaitGroup
	// sessions counts running session handlers; Close waits for them so
	// that no command touches the array after Close returns.
	sessMu   sync.Mutex
	closing  bool
	started  bool // Serve was called
	active   int  // running sessions (sessMu)
	sessions sync.WaitGroup
}

// New prepares a management server for a: it loads (or creates) the SSH host
// key and binds c.Addr. Serve runs it.
func New(a *array.Array, c Config) (*Server, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.DestroyedRetention <= 0 {
		c.DestroyedRetention = DefaultDestroyedRetention
	}
	if c.EradicateInterval <= 0 {
		c.EradicateInterval = min(time.Minute, c.DestroyedRetention)
	}
	if c.LoginFailDelay <= 0 {
		c.LoginFailDelay = defaultLoginFailDelay
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = defaultMaxConnections
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = defaultIdleTimeout
	}
	if c.MaxSessions <= 0 {
		c.MaxSessions = defaultMaxSessions
	}
	if c.LoginGraceTime <= 0 {
		c.LoginGraceTime = defaultLoginGraceTime
	}
	signer, err := hostSigner(a)
	if err != nil {
		return nil, err
	}
	if ok, err := HasAdmin(a); err != nil {
		return nil, err
	} else if !ok {
		c.Logger.Warn("mgmt: pureuser has no password and no public key; nobody can log in")
	}
	s := &Server{a: a, c: c, log: c.Logger, connSlots: make(chan struct{}, c.MaxConnections), done: make(chan struct{})}
	s.cmds = newRegistry()
	s.ssh = &gssh.Server{
		Handler:          s.handleSession,
		HostSigners:      []gssh.Signer{signer},
		Version:          "vfa",
		PasswordHandler:  s.checkPassword,
		PublicKeyHandler: s.checkPublicKey,
		ConnCallback:     s.admitConn,
		IdleTimeout:      c.IdleTimeout,
		// No port forwarding, no subsystems (sftp): the defaults refuse them.
		SubsystemHandlers: map[string]gssh.SubsystemHandler{},
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		return nil, fmt.Errorf("mgmt: listen %s: %w", c.Addr, err)
	}
	s.ln = ln
	return s, nil
}

// Addr is the address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Serve answers SSH connections and runs the automatic eradication of
// expired destroyed volumes until ctx is done or Close is called. It returns
// nil after a Close or a cancelled ctx. It may be called once.
func (s *Server) Serve(ctx context.Context) error {
	s.sessMu.Lock()
	switch {
	case s.closing:
		s.sessMu.Unlock()
		return ErrClosed
	case s.started:
		s.sessMu.Unlock()
		return errors.New("mgmt: Serve called twice")
	}
	s.started = true
	s.serving.Add(2)
	s.sessMu.Unlock()
	defer s.serving.Done()
	stop := context.AfterFunc(ctx, func() { _ = s.Close() })
	defer stop()
	go func() {
		defer s.serving.Done()
		s.eradicateLoop()
	}()
	err := s.ssh.Serve(s.ln)
	select {
	case <-s.done:
		return nil
	default:
	}
	return fmt.Errorf("mgmt: serve: %w", err)
}

// Close stops listening, ends every connection and waits for Serve to return.
func (s *Server) Close() error {
	var err error
	s.closeOnce.Do(func() {
		s.sessMu.Lock()
		s.closing = true
		s.sessMu.Unlock()
		close(s.done)
		err = s.ssh.Close()
		if cerr := s.ln.Close(); err == nil && cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			err = cerr
		}
	})
	s.serving.Wait()
	s.sessions.Wait()
	return err
}

// connKey is the context key of a connection's *slotConn.
type connKey struct{}

// admitConn bounds concurrent connections and starts the login grace timer.
func (s *Server) admitConn(ctx gssh.Context, c net.Conn) net.Conn {
	select {
	case s.connSlots <- struct{}{}:
	default:
		s.log.Warn("mgmt: connection refused: too many connections", "remote", c.RemoteAddr().String(), "limit", s.c.MaxConnections)
		return nil
	}
	sc := &slotConn{Conn: c, release: func() { <-s.connSlots }}
	sc.grace = time.AfterFunc(s.c.LoginGraceTime, func() {
		if !sc.authed.Load() {
			s.log.Warn("mgmt: connection closed: no login within the grace time", "remote", c.RemoteAddr().String())
			_ = sc.shut()
		}
	})
	ctx.SetValue(connKey{}, sc)
	return sc
}

// loggedIn marks the connection of ctx as authenticated.
func loggedIn(ctx gssh.Context) {
	if sc, ok := ctx.Value(connKey{}).(*slotConn); ok {
		sc.authed.Store(true)
		sc.grace.Stop()
	}
}

// slotConn gives its connection slot back once, when it is closed.
type slotConn struct {
	net.Conn
	once    sync.Once
	release func()
	authed  atomic.Bool
	grace   *time.Timer
}

// Close stops the grace timer (set before the connection is handed out) and
// closes the connection.
func (c *slotConn) Close() error {
	c.grace.Stop()
	return c.shut()
}

func (c *slotConn) shut() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// failDelay holds a refused login for the configured delay (less if the
// server closes).
func (s *Server) failDelay() {
	t := time.NewTimer(s.c.LoginFailDelay)
	defer t.Stop()
	select {
	case <-t.C:
	case <-s.done:
	}
}

func (s *Server) checkPassword(ctx gssh.Context, password string) bool {
	if ctx.User() == AdminUser {
		ad, err := s.a.Admin(AdminUser)
		if err == nil && ad.PasswordHash != "" && checkPassword(ad.PasswordHash, password) {
			loggedIn(ctx)
			s.log.Info("mgmt: login", "user", ctx.User(), "remote", ctx.RemoteAddr().String(), "method", "password")
			return true
		}
		if err != nil && !errors.Is(err, array.ErrNotFound) {
			s.log.Error("mgmt: reading administrator", "err", err)
		}
	}
	s.log.Warn("mgmt: login refused", "user", ctx.User(), "remote", ctx.RemoteAddr().String(), "method", "password")
	s.failDelay()
	return false
}

func (s *Server) checkPublicKey(ctx gssh.Context, key gssh.PublicKey) bool {
	if ctx.User() != AdminUser {
		return false
	}
	ad, err := s.a.Admin(AdminUser)
	if err != nil {
		return false
	}
	want := key.Marshal()
	for _, line := range ad.PublicKeys {
		k, _, _, _, err := gossh.ParseAuthorizedKey([]byte(line))
		if err == nil && subtle.ConstantTimeCompare(k.Marshal(), want) == 1 {
			loggedIn(ctx)
			return true
		}
	}
	return false
}

// handleSession runs one SSH session: a command (exec), an interactive
// shell (with a pty), or commands read line by line from stdin (a shell
// without a pty). Its slot is given back before the client is told the exit
// status.
func (s *Server) handleSession(sess gssh.Session) {
	s.sessMu.Lock()
	if s.closing {
		s.sessMu.Unlock()
		_ = sess.Exit(1)
		return
	}
	if s.active >= s.c.MaxSessions {
		s.sessMu.Unlock()
		s.log.Warn("mgmt: session refused: too many sessions", "remote", sess.RemoteAddr().String(), "limit", s.c.MaxSessions)
		fmt.Fprintf(sess.Stderr(), "Error on session: Too many sessions (the limit is %d); try again later.\n", s.c.MaxSessions)
		_ = sess.Exit(1)
		return
	}
	s.active++
	s.sessions.Add(1)
	s.sessMu.Unlock()
	code := s.serveSession(sess)
	s.sessMu.Lock()
	s.active--
	s.sessMu.Unlock()
	s.sessions.Done()
	_ = sess.Exit(code)
}

func (s *Server) serveSession(sess gssh.Session) int {
	e := &env{s: s, user: sess.User(), source: sess.RemoteAddr().String()}
	if sess.Subsystem() != "" {
		fmt.Fprintf(sess.Stderr(), "Error on %s: Subsystems are not supported.\n", sess.Subsystem())
		return 1
	}
	pty, winCh, isPty := sess.Pty()
	if raw := sess.RawCommand(); raw != "" {
		e.setStdin(sess)
		return s.runLine(e, raw, sess, sess.Stderr())
	}
	if isPty {
		return s.interactive(e, sess, pty, winCh)
	}
	return s.lineShell(e, sess, sess, sess.Stderr())
}
