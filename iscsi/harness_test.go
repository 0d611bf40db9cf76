package iscsi

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

const (
	testIQN   = "iqn.2010-06.com.purestorage:flasharray.test"
	iniA      = "iqn.1994-05.com.example:host-a"
	iniA2     = "iqn.1994-05.com.example:host-a2"
	iniB      = "iqn.1994-05.com.example:host-b"
	iniNobody = "iqn.1994-05.com.example:nobody"
	serial0   = "0123456789ABCDEF01234567"
	serial1   = "89ABCDEF0123456789ABCDEF"
	testMiB   = 64
)

// harness is a target on 127.0.0.1 over the memory frontend: host "a"
// (iniA, iniA2) sees dev0 at LUN 0; host "b" (iniB) sees dev1 at LUN 3.
type harness struct {
	t    testing.TB
	fe   *iscsitest.Frontend
	tgt  *Target
	addr string
	dev0 *iscsitest.MemDevice
	dev1 *iscsitest.MemDevice
	done chan error

	noLeakCheck bool
}

func newHarness(t testing.TB, mod func(*Config)) *harness {
	t.Helper()
	h := &harness{t: t, fe: iscsitest.NewFrontend(testIQN), done: make(chan error, 1)}
	h.dev0 = iscsitest.NewMemDevice(serial0, "vol0", testMiB<<11)
	h.dev1 = iscsitest.NewMemDevice(serial1, "vol1", testMiB<<11)
	h.fe.SetHost(iscsitest.Host{Name: "a", Initiators: []string{iniA, iniA2},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}}})
	h.fe.SetHost(iscsitest.Host{Name: "b", Initiators: []string{iniB},
		LUNs: []array.LUN{{Number: 3, Device: h.dev1}}})
	cfg := Config{
		Frontend: h.fe,
		Listen:   []string{"127.0.0.1:0"},
		Logger:   testLogger(t),
	}
	if mod != nil {
		mod(&cfg)
	}
	tgt, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	h.tgt = tgt
	h.addr = tgt.Addrs()[0].String()
	go func() { h.done <- tgt.Serve(context.Background()) }()
	t.Cleanup(h.stop)
	return h
}

// stop closes the target and checks that none of its goroutines remain.
func (h *harness) stop() {
	h.tgt.Close()
	if err := <-h.done; err != nil && !errors.Is(err, ErrClosed) {
		h.t.Errorf("Serve: %v", err)
	}
	h.done <- ErrClosed
	if h.noLeakCheck {
		return
	}
	if leaked := targetGoroutines(); leaked != "" {
		h.t.Errorf("goroutines left after Close:\n%s", leaked)
	}
}

// targetGoroutines returns the stacks of goroutines running target code. A
// goroutine that has signalled Close may still be returning, so the check
// is repeated for up to a second before it reports.
func targetGoroutines() string {
	deadline := time.Now().Add(time.Second)
	for {
		s := targetGoroutinesNow()
		if s == "" || time.Now().After(deadline) {
			return s
		}
		runtime.Gosched()
	}
}

// targetGoroutinesNow returns the stacks of goroutines running target code
// (not test code).
func targetGoroutinesNow() string {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	var out []string
	for _, g := range strings.Split(string(buf), "\n\n") {
		if strings.Contains(g, "vfa/iscsi.(*") && !strings.Contains(g, "_test.go") &&
			!strings.Contains(g, "testing.tRunner") {
			out = append(out, g)
		}
	}
	return strings.Join(out, "\n\n")
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("ISCSI_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func (h *harness) login(ini string, mod ...func(*iniConfig)) *initiator {
	h.t.Helper()
	cfg := iniConfig{Initiator: ini, Target: testIQN}
	for _, m := range mod {
		m(&cfg)
	}
	return mustLogin(h.t, h.addr, cfg)
}

func expectSense(t testing.TB, what string, r *scsiResult, err error, want senseCode) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.status != statusCheckCondition || r.code() != want {
		t.Fatalf("%s: status %#x sense %v, want CHECK CONDITION %v", what, r.status, r.code(), want)
	}
}

func expectGood(t testing.TB, what string, r *scsiResult, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if r.status != statusGood {
		t.Fatalf("%s: status %#x sense %v, want GOOD", what, r.status, r.code())
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = seed + byte(i*7) + byte(i>>9)
	}
	return b
}

// waitFor retries cond (each try is a round trip to the target) until it
// holds or 10 s pass.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		runtime.Gosched()
	}
}
