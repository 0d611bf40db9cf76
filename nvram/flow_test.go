package nvram

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func newTestLog(t *testing.T, size int64, maxPayload int) (*Log, *testFile) {
	t.Helper()
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	l, err := Open(testOptions(f, size, 1, maxPayload), Position{Seq: 1}, Position{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l, f
}

type result struct {
	seq uint64
	end Position
	err error
}

func appendAsync(l *Log, ctx context.Context, p []byte) chan result {
	ch := make(chan result, 1)
	go func() {
		seq, end, err := l.Append(ctx, p)
		ch <- result{seq, end, err}
	}()
	return ch
}

// fill appends records of n bytes until the next would not fit, and returns
// the end of the last one.
func fill(t *testing.T, l *Log, n int) Position {
	t.Helper()
	var last Position
	for l.Stats().UsedBytes+spanOf(n)+minSpan <= l.Stats().SizeBytes {
		var err error
		if _, last, err = l.Append(context.Background(), pattern(n, 1)); err != nil {
			t.Fatal(err)
		}
	}
	return last
}

func TestBackpressure(t *testing.T) {
	const size = 16 << 10
	l, _ := newTestLog(t, size, 4000)
	ends := []Position{}
	for l.Stats().UsedBytes+spanOf(4000) <= size {
		_, end, err := l.Append(context.Background(), pattern(4000, 1))
		if err != nil {
			t.Fatal(err)
		}
		ends = append(ends, end)
	}
	before := l.Stats()
	// This one fits neither at the tail nor, behind a wrap marker, at 0
	// (the first record is not released): it waits.
	ch := appendAsync(l, context.Background(), pattern(4000, 2))
	waitFor(t, "append to wait for space", func() bool { return l.Stats().SpaceWaits == 1 })
	// A later, small record would fit at the tail, but must not overtake
	// the waiting one (first come, first served).
	ch2 := appendAsync(l, context.Background(), pattern(10, 3))
	waitFor(t, "second append to wait", func() bool { return l.Stats().SpaceWaits == 2 })
	select {
	case r := <-ch:
		t.Fatalf("append returned while the log was full: %+v", r)
	case r := <-ch2:
		t.Fatalf("small append overtook the waiting one: %+v", r)
	default:
	}
	if st := l.Stats(); st.Appends != before.Appends || st.Queued != 0 {
		t.Fatalf("stats moved while full: %+v", st)
	}
	// Releasing the first record makes room for the first waiter exactly;
	// the second then waits for the next release.
	if err := l.Release(ends[0]); err != nil {
		t.Fatal(err)
	}
	r := <-ch
	if r.err != nil || r.seq != uint64(len(ends)+1) || r.end.Off != spanOf(4000) {
		t.Fatalf("first waiter after release: %+v", r)
	}
	if st := l.Stats(); st.UsedBytes != size {
		t.Fatalf("region should be full: %+v", st)
	}
	select {
	case r := <-ch2:
		t.Fatalf("second waiter went through a full log: %+v", r)
	default:
	}
	if err := l.Release(ends[1]); err != nil {
		t.Fatal(err)
	}
	if r2 := <-ch2; r2.err != nil || r2.seq != r.seq+1 {
		t.Fatalf("second waiter: %+v", r2)
	}
}

func TestAppendCancel(t *testing.T) {
	const size = 16 << 10
	l, f := newTestLog(t, size, 4000)
	last := fill(t, l, 4000)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := l.Append(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
	ctx, cancel = context.WithCancel(context.Background())
	ch := appendAsync(l, ctx, pattern(4000, 2))
	waitFor(t, "append to wait for space", func() bool { return l.Stats().SpaceWaits == 1 })
	cancel()
	if r := <-ch; !errors.Is(r.err, context.Canceled) {
		t.Fatalf("cancelled wait: %+v", r)
	}
	// The cancelled append took no seq: the next one continues the
	// sequence and the log replays without a hole.
	if err := l.Release(last); err != nil {
		t.Fatal(err)
	}
	seq, end, err := l.Append(context.Background(), []byte("after"))
	if err != nil || seq != last.Seq {
		t.Fatalf("append after cancel: seq %d (want %d), %v", seq, last.Seq, err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	got, gotEnd, err := replayAll(t, testOptions(f, size, 2, 4000), last)
	if err != nil {
		t.Fatal(err)
	}
	checkRecs(t, got, []rec{{seq, []byte("after"), end}})
	if gotEnd != end {
		t.Fatalf("end %+v want %+v", gotEnd, end)
	}
}

func TestCloseWakesWaiters(t *testing.T) {
	l, _ := newTestLog(t, 16<<10, 4000)
	fill(t, l, 4000)
	ch := appendAsync(l, context.Background(), pattern(4000, 2))
	waitFor(t, "append to wait for space", func() bool { return l.Stats().SpaceWaits == 1 })
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if r := <-ch; !errors.Is(r.err, ErrClosed) {
		t.Fatalf("waiter after close: %+v", r)
	}
}

func TestTooLarge(t *testing.T) {
	l, _ := newTestLog(t, 64<<10, 1000)
	if _, _, err := l.Append(context.Background(), make([]byte, 1001)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("over MaxPayload: %v", err)
	}
	if _, _, err := l.Append(context.Background(), make([]byte, 1000)); err != nil {
		t.Fatalf("at MaxPayload: %v", err)
	}
	// Default MaxPayload on a small region: lowered to what fits.
	l2, _ := newTestLog(t, 64<<10, 0)
	if mp := l2.MaxPayload(); mp >= 32<<10 || mp < 30<<10 {
		t.Fatalf("default max payload in a 64 KiB region: %d", mp)
	}
	if _, _, err := l2.Append(context.Background(), make([]byte, 64<<10)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("payload larger than the region: %v", err)
	}
	l3, _ := newTestLog(t, 8<<20, 0)
	if mp := l3.MaxPayload(); mp != DefaultMaxPayload {
		t.Fatalf("default max payload: %d", mp)
	}
}

func TestOpenValidation(t *testing.T) {
	const size = 64 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	good := testOptions(f, size, 5, 0)
	p1 := Position{Seq: 1}
	for _, tc := range []struct {
		name         string
		mut          func(o *Options)
		released, at Position
		want         error
	}{
		{"ok", func(o *Options) {}, p1, Position{Seq: 7, Off: 640, Epoch: 4}, nil},
		{"no file", func(o *Options) { o.File = nil }, p1, p1, ErrInvalid},
		{"short key", func(o *Options) { o.Key = o.Key[:16] }, p1, p1, ErrInvalid},
		{"tiny region", func(o *Options) { o.Size = 200 }, p1, p1, ErrInvalid},
		{"negative offset", func(o *Options) { o.Offset = -1 }, p1, p1, ErrInvalid},
		{"max payload too big", func(o *Options) { o.MaxPayload = size / 2 }, p1, p1, ErrInvalid},
		{"max payload over limit", func(o *Options) { o.MaxPayload = MaxPayloadLimit + 1 }, p1, p1, ErrInvalid},
		{"stage too small", func(o *Options) { o.StageBytes = 100 }, p1, p1, ErrInvalid},
		{"epoch zero", func(o *Options) { o.Epoch = 0 }, p1, p1, ErrEpoch},
		{"epoch not fresh", func(o *Options) {}, p1, Position{Seq: 3, Off: 128, Epoch: 5}, ErrEpoch},
		{"seq zero", func(o *Options) {}, p1, Position{}, ErrInvalid},
		{"offset past region", func(o *Options) {}, p1, Position{Seq: 2, Off: size + 16}, ErrInvalid},
		{"offset unaligned", func(o *Options) {}, p1, Position{Seq: 2, Off: 8}, ErrInvalid},
		{"released after at", func(o *Options) {}, Position{Seq: 3, Off: 128}, Position{Seq: 2, Off: 64}, ErrInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.mut(&o)
			l, err := Open(o, tc.released, tc.at)
			if tc.want == nil {
				if err != nil {
					t.Fatal(err)
				}
				_ = l.Close()
				return
			}
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestReleaseValidation(t *testing.T) {
	l, _ := newTestLog(t, 64<<10, 0)
	_, e1, _ := l.Append(context.Background(), pattern(100, 1))
	_, e2, _ := l.Append(context.Background(), pattern(100, 2))
	for _, tc := range []struct {
		name string
		p    Position
		want error
	}{
		{"beyond durable", Position{Seq: e2.Seq + 1, Off: e2.Off + 64}, ErrInvalid},
		{"unaligned", Position{Seq: 2, Off: 3}, ErrInvalid},
		{"seq zero", Position{}, ErrInvalid},
		{"offset past tail", Position{Seq: 2, Off: e2.Off + 16}, ErrInvalid},
		{"ok", e1, nil},
		{"older: no-op", Position{Seq: 1}, nil},
		{"ok again", e2, nil},
	} {
		if err := l.Release(tc.p); !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Fatalf("%s: Release(%+v) = %v, want %v", tc.name, tc.p, err, tc.want)
		}
	}
	if st := l.Stats(); st.Released != e2 || st.UsedBytes != 0 {
		t.Fatalf("after releases: %+v", st)
	}
}

// TestGroupCommit holds the first sync, lets ten appenders queue behind
// it, and checks that they go out in one WriteAt and one SyncData.
func TestGroupCommit(t *testing.T) {
	const size = 256 << 10
	l, f := newTestLog(t, size, 0)
	gate := make(chan struct{})
	f.gate.Store(&gate)
	first := appendAsync(l, context.Background(), pattern(4096, 0))
	waitFor(t, "first record to reach sync", func() bool { return f.writes.Load() == 1 })
	var chs []chan result
	for i := 1; i <= 10; i++ {
		chs = append(chs, appendAsync(l, context.Background(), pattern(4096, byte(i))))
	}
	waitFor(t, "ten records sealed behind the sync", func() bool {
		q, s := l.queuedSealed()
		return q == 11 && s == 11
	})
	close(gate)
	if r := <-first; r.err != nil {
		t.Fatal(r.err)
	}
	seen := map[uint64]bool{}
	for _, ch := range chs {
		r := <-ch
		if r.err != nil || r.seq < 2 || r.seq > 11 || seen[r.seq] {
			t.Fatalf("queued append: %+v", r)
		}
		seen[r.seq] = true
	}
	st := l.Stats()
	if st.Syncs != 2 || st.WriteCalls != 2 || st.BatchMax != 10 || st.Appends != 11 {
		t.Fatalf("want 2 syncs and 2 writes for 11 records, batch of 10: %+v", st)
	}
	if st.BatchHist[0] != 1 || st.BatchHist[3] != 1 {
		t.Fatalf("batch histogram %v", st.BatchHist)
	}
	if f.syncs.Load() != 2 || f.writes.Load() != 2 {
		t.Fatalf("file saw %d syncs %d writes", f.syncs.Load(), f.writes.Load())
	}
}

func TestFailingFile(t *testing.T) {
	for _, tc := range []struct {
		name string
		arm  func(f *testFile)
	}{
		{"write", func(f *testFile) { f.failWrite.Store(true) }},
		{"sync", func(f *testFile) { f.failSync.Store(true) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const size = 256 << 10
			fs := vfs.NewMem()
			createDev(t, fs, size)
			f := openDev(t, fs, size)
			o := testOptions(f, size, 1, 0)
			var mu sync.Mutex
			var durable []uint64
			o.OnDurable = func(seq uint64, _ []byte, _ Position) {
				mu.Lock()
				durable = append(durable, seq)
				mu.Unlock()
			}
			l, err := Open(o, Position{Seq: 1}, Position{Seq: 1})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := l.Append(context.Background(), []byte("ok")); err != nil {
				t.Fatal(err)
			}
			// Hold the failing sync so that more appenders queue behind
			// the failing batch; all of them must fail.
			gate := make(chan struct{})
			f.gate.Store(&gate)
			tc.arm(f)
			var chs []chan result
			for i := range 5 {
				chs = append(chs, appendAsync(l, context.Background(), pattern(1000, byte(i))))
			}
			waitFor(t, "five records queued", func() bool { q, s := l.queuedSealed(); return q == 5 && s == 5 })
			close(gate)
			for _, ch := range chs {
				if r := <-ch; !errors.Is(r.err, ErrFailed) || !errors.Is(r.err, errInjected) {
					t.Fatalf("append in failing batch: %+v", r)
				}
			}
			// Sticky: the file works again, the log does not.
			f.failWrite.Store(false)
			f.failSync.Store(false)
			if _, _, err := l.Append(context.Background(), []byte("later")); !errors.Is(err, ErrFailed) {
				t.Fatalf("append after failure: %v", err)
			}
			if st := l.Stats(); !errors.Is(st.Err, ErrFailed) || st.Appends != 1 {
				t.Fatalf("stats after failure: %+v", st)
			}
			if err := l.Close(); !errors.Is(err, ErrFailed) {
				t.Fatalf("close after failure: %v", err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(durable) != 1 || durable[0] != 1 {
				t.Fatalf("OnDurable saw %v, want only seq 1", durable)
			}
		})
	}
}

func TestReplayReadError(t *testing.T) {
	const size = 64 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	_, _, err := replayAll(t, testOptions(readFailFile{f}, size, 1, 0), Position{Seq: 1})
	if !errors.Is(err, errInjected) {
		t.Fatalf("read error must not look like the end of the log: %v", err)
	}
}

type readFailFile struct{ vfs.File }

func (readFailFile) ReadAt([]byte, int64) (int, error) { return 0, errInjected }

func TestReplayCallbackError(t *testing.T) {
	const size = 64 << 10
	l, f := newTestLog(t, size, 0)
	_, e1, _ := l.Append(context.Background(), []byte("a"))
	_, _, _ = l.Append(context.Background(), []byte("b"))
	_ = l.Close()
	stop := errors.New("stop")
	end, err := Replay(testOptions(f, size, 2, 0), Position{Seq: 1}, func(seq uint64, _ []byte, _ Position) error {
		if seq == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || end != e1 {
		t.Fatalf("callback error: end %+v err %v", end, err)
	}
	// A log holding records of this boot's epoch: the epoch was not bumped.
	if _, _, err := replayAll(t, testOptions(f, size, 1, 0), Position{Seq: 1}); !errors.Is(err, ErrEpoch) {
		t.Fatalf("replay with a stale boot epoch: %v", err)
	}
}

// TestReleaseFromOnDurable: a caller may release space from inside
// OnDurable (the record is durable by then).
func TestReleaseFromOnDurable(t *testing.T) {
	const size = 16 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	o := testOptions(f, size, 1, 4000)
	var l *Log
	o.OnDurable = func(seq uint64, _ []byte, end Position) {
		if err := l.Release(end); err != nil {
			t.Errorf("release of seq %d from OnDurable: %v", seq, err)
		}
	}
	var err error
	if l, err = Open(o, Position{Seq: 1}, Position{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	// Many times the region: only possible if the releases work.
	for i := range 50 {
		if _, _, err := l.Append(context.Background(), pattern(4000, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if st := l.Stats(); st.UsedBytes != 0 || st.SpaceWaits != 0 {
		t.Fatalf("stats %+v", st)
	}
}
