package datapath

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Crash tests. Writers each own a disjoint range of a volume and write
// whole 4 KiB blocks sequentially, so at any instant each writer has an
// acknowledged history and at most one write in flight. After a crash every
// block must hold its last acknowledged content, or the content of the
// write that was in flight.

const (
	crashWriters      = 4
	crashBlocksEach   = 96
	crashVolumeBlocks = crashWriters * crashBlocksEach
)

// blockContent is the deterministic content of a write (writer, counter);
// the first bytes identify it so a mismatch report is readable. A quarter of
// the writes repeat earlier content (dedup) and some are zero.
func blockContent(w, n int, p []byte) {
	id := n
	if n%4 == 3 {
		id = n / 2 // a duplicate of an earlier write
	}
	if n%11 == 5 {
		clear(p)
		return
	}
	fill(p, uint64(w)<<32|uint64(id))
	binary.LittleEndian.PutUint32(p, uint32(w))
	binary.LittleEndian.PutUint32(p[4:], uint32(id))
}

// blockState: the content of the acknowledged write (nil = never written,
// reads zero) and of the write in flight (nil = none).
type blockState struct{ acked, inflight []byte }

func content(w, n int) []byte {
	p := make([]byte, BlockSize)
	blockContent(w, n, p)
	return p
}

// verifyBlocks checks every block against the expected states.
func verifyBlocks(t testing.TB, v *Volume, states []blockState) {
	t.Helper()
	ctx := context.Background()
	got := make([]byte, BlockSize)
	zero := make([]byte, BlockSize)
	for b, st := range states {
		if err := v.Read(ctx, got, uint64(b*sectorsPerBlock)); err != nil {
			t.Fatalf("block %d: read: %v", b, err)
		}
		want := st.acked
		if want == nil {
			want = zero
		}
		if string(got) == string(want) || (st.inflight != nil && string(got) == string(st.inflight)) {
			continue
		}
		t.Fatalf("block %d: content %x... is neither the acknowledged write (%x...) nor the one in flight", b, got[:8], want[:8])
	}
}

// TestCrashMemFS crashes an in-memory file system (dropping a random share
// of unsynced writes) while writers, the flusher, GC and key rotation run,
// then reboots and checks every acknowledged write.
func TestCrashMemFS(t *testing.T) {
	iterations := 12
	if testing.Short() {
		iterations = 4
	}
	var gcSegments uint64
	for it := 0; it < iterations; it++ {
		t.Run(fmt.Sprintf("seed%d", it), func(t *testing.T) { gcSegments += crashOnce(t, uint64(it)) })
	}
	if gcSegments == 0 {
		t.Error("no crash happened after GC had moved anything: the test does not cover GC")
	}
}

func crashOnce(t *testing.T, seed uint64) uint64 {
	r := rand.New(rand.NewPCG(seed, 77))
	fs := vfs.NewCrashableMem()
	s := newTestStore(t, fs, func(o *Options) { o.FlushBytes = 64 << 10; o.FlushDelay = 5 * time.Millisecond })
	info, err := s.CreateVolume("crash", crashVolumeBlocks*BlockSize)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	states := make([]blockState, crashVolumeBlocks)
	var mu sync.Mutex
	var stop atomic.Bool
	var wg sync.WaitGroup
	for w := 0; w < crashWriters; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rr := rand.New(rand.NewPCG(seed, uint64(w)))
			buf := make([]byte, BlockSize)
			for n := 0; !stop.Load(); n++ {
				b := w*crashBlocksEach + rr.IntN(crashBlocksEach)
				blockContent(w, n, buf)
				c := append([]byte(nil), buf...)
				mu.Lock()
				states[b].inflight = c
				mu.Unlock()
				err := v.Write(context.Background(), buf, uint64(b*sectorsPerBlock))
				mu.Lock()
				if err == nil {
					states[b].acked = c
				}
				states[b].inflight = nil
				mu.Unlock()
				if err != nil {
					return
				}
			}
		}(w)
	}
	// Rotate the array key now and then while writing.
	wg.Add(1)
	go func() {
		defer wg.Done()
		rr := rand.New(rand.NewPCG(seed, 99))
		for i := 0; !stop.Load(); i++ {
			time.Sleep(time.Duration(2+rr.IntN(10)) * time.Millisecond)
			switch i % 4 {
			case 0:
				_ = s.RotateKeys("crash test")
			default:
				_ = s.gcFromTest() // relocate live blocks of overwritten segments
			}
		}
	}()
	// Crash at a random moment after GC has relocated something, so that
	// crashes land among relocations, rotations and flushes.
	for deadline := time.Now().Add(30 * time.Second); s.gcStats.segments.Load() == 0 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	time.Sleep(time.Duration(r.IntN(200)) * time.Millisecond)
	// Crash: the clone is taken atomically; the states must be read at the
	// same instant, so writers are held while it happens.
	mu.Lock()
	crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: r.IntN(101), RNG: rand.New(rand.NewPCG(seed, 3))})
	snapshot := append([]blockState(nil), states...)
	mu.Unlock()
	stop.Store(true)
	wg.Wait()
	gcSegments := s.gcStats.segments.Load()
	s.Close()
	t.Logf("crash after %d segments collected by GC and key generation %d", gcSegments, s.KeyGeneration())

	s2 := newTestStore(t, crashed)
	defer s2.Close()
	v2, err := s2.Lookup("crash")
	if err != nil {
		t.Fatal(err)
	}
	verifyBlocks(t, v2, snapshot)
	// The rebooted array keeps working and the data survives a flush.
	buf := make([]byte, BlockSize)
	blockContent(0, 1<<20, buf)
	if err := v2.Write(context.Background(), buf, 0); err != nil {
		t.Fatal(err)
	}
	if err := s2.flushAll(); err != nil {
		t.Fatal(err)
	}
	checkSpace(t, s2)
	checkRefs(t, s2)
	return gcSegments
}

// --- SIGKILL of a real process ----------------------------------------------

// TestCrashKill9 runs a child process that writes to real device files and
// kills it with SIGKILL at a random moment, then reboots the array in this
// process and checks every write the child reported as acknowledged.
// VFA_CRASH_ITERATIONS sets the count (default 50; `make soak` runs 1000).
func TestCrashKill9(t *testing.T) {
	if os.Getenv("VFA_CRASH_CHILD") != "" {
		crashChild()
		return
	}
	iterations := 50
	if s := os.Getenv("VFA_CRASH_ITERATIONS"); s != "" {
		iterations, _ = strconv.Atoi(s)
	}
	dir := t.TempDir()
	o := testOptions(vfs.Default)
	o.Dir = dir
	if err := Create(o, testCreate()); err != nil {
		t.Fatal(err)
	}
	states := make([]blockState, crashVolumeBlocks)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	var acks atomic.Int64
	defer func() { t.Logf("%d kill -9 iterations, %d acknowledged writes verified", iterations, acks.Load()) }()
	for it := 0; it < iterations; it++ {
		runChild(t, dir, it, states, time.Duration(50+r.IntN(400))*time.Millisecond, &acks)
		s, err := Open(withDir(o, dir))
		if err != nil {
			t.Fatalf("iteration %d: open: %v", it, err)
		}
		if err := s.Unlock(); err != nil {
			t.Fatalf("iteration %d: unlock: %v", it, err)
		}
		v, err := s.Lookup("crash")
		if err != nil {
			t.Fatalf("iteration %d: %v", it, err)
		}
		verifyBlocks(t, v, states)
		if _, _, err := s.Space(); err != nil {
			t.Fatalf("iteration %d: space: %v", it, err)
		}
		// What was in flight is now settled one way or the other: take what
		// is there as the acknowledged state for the next round.
		got := make([]byte, BlockSize)
		for b := range states {
			if err := v.Read(context.Background(), got, uint64(b*sectorsPerBlock)); err != nil {
				t.Fatal(err)
			}
			states[b] = blockState{acked: append([]byte(nil), got...)}
		}
		s.Close()
	}
}

func withDir(o Options, dir string) Options { o.Dir = dir; return o }

// runChild starts the writer child on dir for d, kills it, and folds the
// acknowledgements it printed into states.
func runChild(t *testing.T, dir string, it int, states []blockState, d time.Duration, acks *atomic.Int64) {
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrashKill9$", "-test.v=false")
	cmd.Env = append(os.Environ(), "VFA_CRASH_CHILD="+dir, fmt.Sprintf("VFA_CRASH_BASE=%d", (it+1)*1_000_000))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		first := true
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 1 && f[0] == "ready" && first {
				first = false
				close(ready)
				continue
			}
			if len(f) != 3 {
				continue
			}
			b, _ := strconv.Atoi(f[1])
			n, _ := strconv.Atoi(f[2])
			if b < 0 || b >= len(states) {
				continue
			}
			w := b / crashBlocksEach
			switch f[0] {
			case "start":
				states[b].inflight = content(w, n)
			case "ack":
				acks.Add(1)
				states[b].acked = content(w, n)
				states[b].inflight = nil
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child did not become ready")
	}
	time.Sleep(d)
	_ = cmd.Process.Signal(syscall.SIGKILL)
	<-done
	_ = cmd.Wait()
}

// crashChild is the child's body: open, write forever, print progress.
func crashChild() {
	dir := os.Getenv("VFA_CRASH_CHILD")
	base, _ := strconv.Atoi(os.Getenv("VFA_CRASH_BASE"))
	o := testOptions(vfs.Default)
	o.Dir = dir
	o.FlushBytes = 64 << 10
	o.FlushDelay = 5 * time.Millisecond
	s, err := Open(o)
	if err == nil {
		err = s.Unlock()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	v, err := s.Lookup("crash")
	if errors.Is(err, ErrNotFound) {
		var info VolumeInfo
		info, err = s.CreateVolume("crash", crashVolumeBlocks*BlockSize)
		if err == nil {
			v, err = s.Volume(info.ID)
		}
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	w := bufio.NewWriter(os.Stdout)
	var mu sync.Mutex
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Fprintf(w, format, args...)
		w.Flush()
		mu.Unlock()
	}
	say("ready\n")
	var wg sync.WaitGroup
	for wr := 0; wr < crashWriters; wr++ {
		wg.Add(1)
		go func(wr int) {
			defer wg.Done()
			rr := rand.New(rand.NewPCG(uint64(base), uint64(wr)))
			buf := make([]byte, BlockSize)
			for n := base; ; n++ {
				b := wr*crashBlocksEach + rr.IntN(crashBlocksEach)
				blockContent(wr, n, buf)
				say("start %d %d\n", b, n)
				if err := v.Write(context.Background(), buf, uint64(b*sectorsPerBlock)); err != nil {
					fmt.Fprintln(os.Stderr, "child write:", err)
					os.Exit(3)
				}
				say("ack %d %d\n", b, n)
				if rr.IntN(50) == 0 {
					_ = s.RotateKeys("kill -9 test")
				}
			}
		}(wr)
	}
	wg.Wait()
}
