package array

import (
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// template holds one initialised array's files: initialising takes seconds
// under the race detector, so tests start from copies.
var template struct {
	once sync.Once
	fs   *vfs.MemFS
	err  error
}

// newMemFS returns a copy of a freshly initialised small array's files.
func newMemFS(t *testing.T) vfs.FS {
	t.Helper()
	template.once.Do(func() {
		fs := vfs.NewCrashableMem()
		_, err := Init(fs, "/a", InitOptions{Name: "t", SSDs: 6, SSDSize: 16 << 20, NVRAMSize: 8 << 20, AUSize: 64 << 10})
		template.fs, template.err = fs, err
	})
	if template.err != nil {
		t.Fatal(template.err)
	}
	return template.fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 100, RNG: rand.New(rand.NewPCG(1, 1))})
}

// openMemArray opens the array in fs (a fresh one when fs is nil).
func openMemArray(t *testing.T, fs vfs.FS) *Array {
	t.Helper()
	if fs == nil {
		fs = newMemFS(t)
	}
	a, err := Open(Options{Dir: "/a", FS: fs})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

func TestAuditEntryCodec(t *testing.T) {
	e := AuditEntry{Time: time.Unix(1700000000, 123).UTC(), User: "pureuser", Source: "127.0.0.1:5555", Command: "purevol create --size 1G 'a b'", Result: "ok"}
	b, err := EncodeAuditEntry(e)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeAuditEntry(9, b)
	e.ID = 9
	if err != nil || got != e {
		t.Fatalf("round trip: %+v %v", got, err)
	}
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short", b[:8]},
		{"version", append([]byte{2}, b[1:]...)},
		{"trailing", append(append([]byte(nil), b...), 0)},
		{"truncated", b[:len(b)-1]},
		{"not utf-8", func() []byte { c := append([]byte(nil), b...); c[len(c)-1] = 0xff; return c }()},
	} {
		if _, err := DecodeAuditEntry(1, tc.b); !errors.Is(err, ErrBadAuditRecord) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := EncodeAuditEntry(AuditEntry{User: strings.Repeat("u", auditUserMax+1)}); err == nil {
		t.Error("encoded an over-long user")
	}
}

func FuzzDecodeAuditEntry(f *testing.F) {
	b, _ := EncodeAuditEntry(AuditEntry{Time: time.Unix(1, 0), User: "u", Source: "s", Command: "c", Result: "r"})
	f.Add(b)
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := DecodeAuditEntry(1, b)
		if err != nil {
			return
		}
		again, err := EncodeAuditEntry(e)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", e, err)
		}
		e2, err := DecodeAuditEntry(1, again)
		if err != nil || e2 != e {
			t.Fatalf("re-decode: %+v %v", e2, err)
		}
	})
}

func FuzzDecodeAuditState(f *testing.F) {
	f.Add(encodeAuditState(auditState{first: 1, next: 5}))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeAuditState(b)
		if err != nil {
			return
		}
		if s.first == 0 || s.next < s.first {
			t.Fatalf("accepted %+v", s)
		}
		if string(encodeAuditState(s)) != string(b) {
			t.Fatalf("round trip of % x", b)
		}
	})
}

func TestAuditLogBounded(t *testing.T) {
	fs := newMemFS(t)
	a := openMemArray(t, fs)
	long := strings.Repeat("é", auditCommandMax) // 2 bytes each: must be cut at a rune boundary
	id, err := a.Audit(AuditEntry{User: "pureuser", Source: "10.0.0.1:22", Command: long, Result: "ok"})
	if err != nil || id != 1 {
		t.Fatalf("first id %d %v", id, err)
	}
	log, err := a.AuditLog(0, 0)
	if err != nil || len(log) != 1 {
		t.Fatal(log, err)
	}
	if c := log[0].Command; len(c) > auditCommandMax || !strings.HasSuffix(c, "...") || !strings.HasPrefix(c, "éé") {
		t.Fatalf("cut command: %d bytes, ends %q", len(c), c[len(c)-8:])
	}
	if log[0].Time.IsZero() {
		t.Fatal("no time set")
	}
	// Fill past the limit: the oldest entries go, in the same batches.
	for i := 2; i <= AuditEntriesMax+5; i++ {
		if _, err := a.Audit(AuditEntry{User: "u", Command: "c", Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	log, err = a.AuditLog(0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(log) != AuditEntriesMax || log[0].ID != 6 || log[len(log)-1].ID != AuditEntriesMax+5 {
		t.Fatalf("%d entries from %d to %d", len(log), log[0].ID, log[len(log)-1].ID)
	}
	if got, _ := a.AuditLog(AuditEntriesMax+3, 0); len(got) != 2 {
		t.Fatalf("after: %d entries", len(got))
	}
	if got, _ := a.AuditLog(0, 3); len(got) != 3 || got[0].ID != 6 {
		t.Fatalf("limit: %+v", got)
	}
	// The log and its ids survive a restart.
	a.Close()
	a = openMemArray(t, fs)
	id, err = a.Audit(AuditEntry{User: "u", Command: "after restart", Result: "ok"})
	if err != nil || id != AuditEntriesMax+6 {
		t.Fatalf("id after restart %d %v", id, err)
	}
}
