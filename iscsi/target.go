package iscsi

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"vfa/array"
)

// Config configures a Target. The zero value of every field but Frontend
// is usable.
type Config struct {
	// Frontend supplies the target name, host/CHAP lookups and LUN lists.
	Frontend array.Frontend
	// Listen lists the addresses to listen on (default "127.0.0.1:3260").
	Listen []string
	// Portals lists the "host:port" addresses SendTargets advertises
	// (default: the addresses actually bound by Listen). Set it when
	// initiators reach the target through NAT, e.g. QEMU guests that see
	// the host as 10.0.2.2.
	Portals []string
	// Alias is sent as TargetAlias when set.
	Alias string
	// Logger receives connection and session events (default: discard).
	Logger *slog.Logger

	// MaxSessions bounds the sessions (default 256).
	MaxSessions int
	// MaxConnections bounds TCP connections, logged in or not (default 1024).
	MaxConnections int
	// MaxConnectionsPerSession is the most we agree to for the
	// MaxConnections key (default 1).
	MaxConnectionsPerSession int
	// CmdWindow is the number of commands a session may have in flight: the
	// CmdSN window (default 128).
	CmdWindow int
	// MaxImmediateCommands bounds immediate commands in flight per session
	// (default 16); more are rejected.
	MaxImmediateCommands int
	// MaxRecvDataSegmentLength is the longest data segment we accept
	// (default 256 KiB, at most 16 MiB-1).
	MaxRecvDataSegmentLength int
	// MaxBurstLength bounds Data-In sequences and R2T sizes (default 1 MiB).
	MaxBurstLength int
	// FirstBurstLength bounds unsolicited data (default 256 KiB).
	FirstBurstLength int
	// MaxOutstandingR2T bounds R2Ts outstanding per command (default 4, at
	// most 16).
	MaxOutstandingR2T int
	// RequireInitialR2T refuses unsolicited Data-Out (InitialR2T=Yes).
	RequireInitialR2T bool
	// DisableImmediateData refuses immediate data (ImmediateData=No).
	DisableImmediateData bool
	// MaxTransferLength bounds the data of one SCSI command in bytes; it is
	// reported in the Block Limits VPD page (default 4 MiB).
	MaxTransferLength int
	// MaxAHSLength bounds the additional header segments of a PDU (default
	// 1020, the protocol's maximum).
	MaxAHSLength int
	// MaxTextLength bounds the key=value text of one login or text
	// negotiation (default 64 KiB).
	MaxTextLength int
	// LoginTimeout bounds the login phase of a connection (default 30 s).
	LoginTimeout time.Duration
	// NopInterval is how long a connection may be idle before the target
	// pings it with a NOP-In (default 10 s; negative disables pings).
	NopInterval time.Duration
	// NopTimeout is how long a ping may go unanswered before the
	// connection is dropped (default 30 s).
	NopTimeout time.Duration
}

// Limits that are not configurable.
const (
	maxR2TPerTask     = 16
	maxCmdWindow      = 4096
	maxSessionLUNs    = 16384
	maxUnitAttentions = 16
	maxRegistrations  = 1024
	maxParamData      = 256 << 10 // data of non-block commands
	portalGroupTag    = 1
)

// Errors.
var (
	// ErrClosed is returned by Serve after Close.
	ErrClosed = errors.New("iscsi: target closed")
	// ErrConfig reports an unusable Config.
	ErrConfig = errors.New("iscsi: invalid config")
)

func (c *Config) normalize() error {
	if c.Frontend == nil {
		return fmt.Errorf("%w: no Frontend", ErrConfig)
	}
	if len(c.Listen) == 0 {
		c.Listen = []string{"127.0.0.1:3260"}
	}
	def := func(v *int, d, lo, hi int, name string) error {
		if *v == 0 {
			*v = d
		}
		if *v < lo || *v > hi {
			return fmt.Errorf("%w: %s %d not in [%d, %d]", ErrConfig, name, *v, lo, hi)
		}
		return nil
	}
	for _, e := range []error{
		def(&c.MaxSessions, 256, 1, 65535, "MaxSessions"),
		def(&c.MaxConnections, 1024, 1, 1<<20, "MaxConnections"),
		def(&c.MaxConnectionsPerSession, 1, 1, 65535, "MaxConnectionsPerSession"),
		def(&c.CmdWindow, 128, 1, maxCmdWindow, "CmdWindow"),
		def(&c.MaxImmediateCommands, 16, 1, 1024, "MaxImmediateCommands"),
		def(&c.MaxRecvDataSegmentLength, 256<<10, 512, maxDataSegLen, "MaxRecvDataSegmentLength"),
		def(&c.MaxBurstLength, 1<<20, 512, maxDataSegLen, "MaxBurstLength"),
		def(&c.FirstBurstLength, 256<<10, 512, maxDataSegLen, "FirstBurstLength"),
		def(&c.MaxOutstandingR2T, 4, 1, maxR2TPerTask, "MaxOutstandingR2T"),
		def(&c.MaxTransferLength, 4<<20, 4096, 32<<20, "MaxTransferLength"),
		def(&c.MaxAHSLength, maxAHSLen, 0, maxAHSLen, "MaxAHSLength"),
		def(&c.MaxTextLength, 64<<10, 8192, 1<<20, "MaxTextLength"),
	} {
		if e != nil {
			return e
		}
	}
	if c.FirstBurstLength > c.MaxBurstLength {
		c.FirstBurstLength = c.MaxBurstLength
	}
	c.MaxTransferLength &^= array.SectorSize - 1
	if c.LoginTimeout <= 0 {
		c.LoginTimeout = 30 * time.Second
	}
	if c.NopInterval == 0 {
		c.NopInterval = 10 * time.Second
	}
	if c.NopTimeout <= 0 {
		c.NopTimeout = 30 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

// Target is an iSCSI target serving one array's volumes.
type Target struct {
	cfg       Config
	log       *slog.Logger
	fe        array.Frontend
	lim       ourLimits
	listeners []net.Listener
	portals   []string
	bufs      bufPool
	tasks     taskPool

	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	conns    map[*conn]struct{}
	sessions map[uint16]*session
	nextTSIH uint16
	lus      map[string]*logicalUnit
	refusing int // connections over the limit being answered

	wg sync.WaitGroup // connection and helper goroutines
}

// New checks cfg and binds the listen addresses. Call Serve to accept
// connections and Close to stop.
func New(cfg Config) (*Target, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	t := &Target{
		cfg:      cfg,
		log:      cfg.Logger,
		fe:       cfg.Frontend,
		conns:    make(map[*conn]struct{}),
		sessions: make(map[uint16]*session),
		lus:      make(map[string]*logicalUnit),
	}
	t.lim = ourLimits{
		maxConnections:    cfg.MaxConnectionsPerSession,
		initialR2T:        cfg.RequireInitialR2T,
		immediateData:     !cfg.DisableImmediateData,
		maxRecvDSL:        cfg.MaxRecvDataSegmentLength,
		maxBurst:          cfg.MaxBurstLength,
		firstBurst:        cfg.FirstBurstLength,
		maxOutstandingR2T: cfg.MaxOutstandingR2T,
		alias:             cfg.Alias,
	}
	t.ctx, t.cancel = context.WithCancel(context.Background())
	for _, addr := range cfg.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			for _, l := range t.listeners {
				l.Close()
			}
			t.cancel()
			return nil, fmt.Errorf("iscsi: listen %s: %w", addr, err)
		}
		t.listeners = append(t.listeners, l)
	}
	if len(cfg.Portals) > 0 {
		t.portals = append([]string(nil), cfg.Portals...)
	} else {
		for _, l := range t.listeners {
			t.portals = append(t.portals, l.Addr().String())
		}
	}
	return t, nil
}

// Addrs returns the bound listen addresses.
func (t *Target) Addrs() []net.Addr {
	out := make([]net.Addr, len(t.listeners))
	for i, l := range t.listeners {
		out[i] = l.Addr()
	}
	return out
}

// Serve accepts connections until ctx is done or Close is called. It
// returns ErrClosed after Close, ctx.Err() when ctx ends, or the error that
// stopped a listener.
func (t *Target) Serve(ctx context.Context) error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return ErrClosed
	}
	t.mu.Unlock()

	errc := make(chan error, len(t.listeners))
	for _, l := range t.listeners {
		t.wg.Add(1)
		go func() {
			defer t.wg.Done()
			errc <- t.acceptLoop(l)
		}()
	}
	changes, stop := t.fe.Changes()
	defer stop()

	var err error
loop:
	for {
		select {
		case <-ctx.Done():
			err = ctx.Err()
			break loop
		case <-t.ctx.Done():
			err = ErrClosed
			break loop
		case e := <-errc:
			if t.ctx.Err() != nil {
				err = ErrClosed
			} else {
				err = e
			}
			break loop
		case _, ok := <-changes:
			if !ok {
				changes = nil
				continue
			}
			t.refresh()
		}
	}
	t.Close()
	return err
}

func (t *Target) acceptLoop(l net.Listener) error {
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if t.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				select {
				case <-time.After(delay):
				case <-t.ctx.Done():
					return nil
				}
				continue
			}
			return fmt.Errorf("iscsi: accept on %s: %w", l.Addr(), err)
		}
		delay = 0
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			nc.Close()
			return nil
		}
		if len(t.conns) >= t.cfg.MaxConnections {
			busy := t.refusing >= maxRefusing
			if !busy {
				t.refusing++
				t.wg.Add(1)
			}
			t.mu.Unlock()
			t.log.Warn("iscsi: connection refused: limit reached",
				"remote", nc.RemoteAddr().String(), "limit", t.cfg.MaxConnections)
			if busy {
				nc.Close()
				continue
			}
			go func() {
				defer t.wg.Done()
				refuseLogin(nc, t.ctx)
				t.mu.Lock()
				t.refusing--
				t.mu.Unlock()
			}()
			continue
		}
		c := newConn(t, nc)
		t.conns[c] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go func() {
			defer t.wg.Done()
			c.serve()
		}()
	}
}

// maxRefusing bounds the connections over MaxConnections that get a login
// refusal; beyond it they are closed at once.
const maxRefusing = 16

// refuseLogin answers the first Login Request of a connection over the
// connection limit with 0302 (out of resources) and closes it.
func refuseLogin(nc net.Conn, ctx context.Context) {
	defer nc.Close()
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	nc.SetDeadline(time.Now().Add(5 * time.Second))
	pr := pduReader{r: bufio.NewReaderSize(nc, 512), maxData: loginMaxDSL, loginOnly: true}
	if pr.readHeader() != nil || pr.readData(nil) != nil {
		return
	}
	var h bhs
	h[0] = opLoginResp
	copy(h[8:14], pr.hdr[8:14])
	h.setITT(pr.hdr.itt())
	h.put32(offStatSN, pr.hdr.u32(offExpStat))
	h.put32(offExpCmdSN, pr.hdr.u32(offCmdSN))
	h.put32(offMaxCmdSN, pr.hdr.u32(offCmdSN))
	h.put16(36, loginOutOfResources)
	w := bufio.NewWriter(nc)
	writePDU(w, &h, nil, false, false)
	w.Flush()
}

// Close stops the listeners, drops every connection (their commands are
// aborted) and waits for all goroutines. It is safe to call more than once.
func (t *Target) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		t.wg.Wait()
		return nil
	}
	t.closed = true
	t.cancel()
	for _, l := range t.listeners {
		l.Close()
	}
	conns := make([]*conn, 0, len(t.conns))
	for c := range t.conns {
		conns = append(conns, c)
	}
	t.mu.Unlock()
	// Tell initiators in full feature phase that all connections are
	// going (AsyncEvent 3, Time2Wait 2 s) so they reconnect later, give the
	// writers a moment to send it, then close everything.
	var wait []*conn
	for _, c := range conns {
		if c.ffp.Load() && c.tryQueue(asyncDropItem()) {
			wait = append(wait, c)
		}
	}
	deadline := time.NewTimer(time.Second)
	defer deadline.Stop()
	for _, c := range wait {
		select {
		case <-c.writerDone:
		case <-deadline.C:
		}
	}
	for _, c := range conns {
		c.close()
	}
	t.wg.Wait()
	return nil
}

// AsyncEvent codes (RFC 7143 §11.9.1).
const (
	asyncSCSIEvent = 0
	asyncLogout    = 1
	asyncDropConn  = 2
	asyncDropAll   = 3
)

func asyncDropItem() outItem {
	var h bhs
	h[0] = opAsync
	h[1] = flagFinal
	h.setITT(reservedTag)
	h[36] = asyncDropAll
	h.put16(40, defTime2Wait) // Parameter2: Time2Wait
	h.put16(42, 0)            // Parameter3: Time2Retain
	return outItem{kind: outPDU, hdr: h, stat: true, closeAfter: true}
}

// spawn runs f in a goroutine that Close waits for.
func (t *Target) spawn(f func()) {
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		f()
	}()
}

func (t *Target) removeConn(c *conn) {
	t.mu.Lock()
	delete(t.conns, c)
	t.mu.Unlock()
}

// refresh re-reads the LUN lists of all sessions and the capacity of all
// logical units, and raises the unit attentions the changes call for.
func (t *Target) refresh() {
	t.mu.Lock()
	sessions := make([]*session, 0, len(t.sessions))
	for _, s := range t.sessions {
		sessions = append(sessions, s)
	}
	t.mu.Unlock()
	for _, s := range sessions {
		if !s.discovery {
			s.refreshLUNs()
		}
	}
	t.mu.Lock()
	lus := make([]*logicalUnit, 0, len(t.lus))
	for _, lu := range t.lus {
		lus = append(lus, lu)
	}
	t.mu.Unlock()
	for _, lu := range lus {
		lu.checkCapacity()
	}
}

// attachLU returns the shared logical-unit state of a device, creating it,
// with the nexus attached (lock order: t.mu, then lu.mu).
func (t *Target) attachLU(dev array.BlockDevice, nexus string) (*logicalUnit, *nexusState) {
	serial := dev.Serial()
	t.mu.Lock()
	defer t.mu.Unlock()
	lu := t.lus[serial]
	if lu == nil {
		lu = newLogicalUnit(t, serial, dev.Sectors())
		t.lus[serial] = lu
	}
	lu.dev.Store(&devRef{dev})
	return lu, lu.attach(nexus)
}

// pruneLU forgets a logical unit no session uses and that holds no state
// worth keeping (registrations, reservations, changed mode pages).
func (t *Target) pruneLU(lu *logicalUnit) {
	t.mu.Lock()
	defer t.mu.Unlock()
	lu.mu.Lock()
	defer lu.mu.Unlock()
	for id, ns := range lu.nexus {
		if ns.refs <= 0 && !lu.pr.registered(id) {
			delete(lu.nexus, id)
		}
	}
	if len(lu.nexus) == 0 && len(lu.pr.regs) == 0 && lu.spc2 == "" && lu.pr.typ == 0 &&
		!lu.dsense.Load() && !lu.swp.Load() && t.lus[lu.serial] == lu {
		delete(t.lus, lu.serial)
	}
}

// targetPortName is the SCSI name string of our one target port.
func (t *Target) targetPortName() string {
	return fmt.Sprintf("%s,t,0x%04x", t.fe.TargetName(), portalGroupTag)
}
