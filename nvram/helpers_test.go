package nvram

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// testBase is where the region starts in test device files, as on a real
// device (after two 4 KiB superblock copies).
const testBase = 8192

var errInjected = errors.New("injected I/O error")

func testKey(i byte) []byte {
	k := make([]byte, KeySize)
	for j := range k {
		k[j] = i*31 + byte(j)
	}
	return k
}

// pattern is n deterministic bytes.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	x := uint32(seed)*2654435761 + 1
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// testFile wraps a device file: it fails the test on any write outside the
// region, and can inject errors or hold SyncData.
type testFile struct {
	vfs.File
	t         testing.TB
	lo, hi    int64
	failWrite atomic.Bool
	failSync  atomic.Bool
	gate      atomic.Pointer[chan struct{}] // WriteAt and SyncData wait for it to close
	syncs     atomic.Int64
	writes    atomic.Int64
	// syncYields makes SyncData yield the processor this many times, as a
	// real sync would, so that appenders queue up behind it (MemFS syncs
	// are too fast for group commit to form batches otherwise).
	syncYields int
}

func (f *testFile) WriteAt(p []byte, off int64) (int, error) {
	if off < f.lo || off+int64(len(p)) > f.hi {
		f.t.Errorf("write of %d bytes at %d outside region [%d, %d)", len(p), off, f.lo, f.hi)
	}
	f.writes.Add(1)
	if g := f.gate.Load(); g != nil {
		<-*g
	}
	if f.failWrite.Load() {
		return 0, errInjected
	}
	return f.File.WriteAt(p, off)
}

func (f *testFile) SyncData() error {
	if g := f.gate.Load(); g != nil {
		<-*g
	}
	f.syncs.Add(1)
	for range f.syncYields {
		runtime.Gosched()
	}
	if f.failSync.Load() {
		return errInjected
	}
	return f.File.SyncData()
}

// createDev makes a zeroed device file of testBase+size bytes on fs.
func createDev(t testing.TB, fs vfs.FS, size int64) {
	t.Helper()
	f, err := fs.Create("nvram0.dev", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, testBase+size)); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	d, err := fs.OpenDir("")
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Sync(); err != nil {
		t.Fatal(err)
	}
	_ = d.Close()
}

// openDev opens the device file on fs, wrapped in a testFile.
func openDev(t testing.TB, fs vfs.FS, size int64) *testFile {
	t.Helper()
	f, err := fs.OpenReadWrite("nvram0.dev", vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return &testFile{File: f, t: t, lo: testBase, hi: testBase + size}
}

func testOptions(f vfs.File, size int64, epoch uint32, maxPayload int) Options {
	return Options{File: f, Offset: testBase, Size: size, Key: testKey(1), Epoch: epoch, MaxPayload: maxPayload}
}

type rec struct {
	seq     uint64
	payload []byte
	end     Position
}

func replayAll(t testing.TB, o Options, from Position) ([]rec, Position, error) {
	t.Helper()
	var out []rec
	end, err := Replay(o, from, func(seq uint64, p []byte, end Position) error {
		out = append(out, rec{seq, p, end})
		return nil
	})
	return out, end, err
}

// waitFor spins (yielding, no sleeping) until cond holds.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for i := 0; !cond(); i++ {
		if i > 50_000_000 {
			t.Fatalf("gave up waiting for %s", what)
		}
		runtime.Gosched()
	}
}

// queuedSealed reports how many records are reserved and how many of those
// are sealed.
func (l *Log) queuedSealed() (queued, sealed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, s := range l.pending {
		if s.sealed.Load() {
			sealed++
		}
	}
	return len(l.pending), sealed
}

func (r rec) String() string {
	return fmt.Sprintf("{seq %d, %d bytes, end %+v}", r.seq, len(r.payload), r.end)
}
