package phonehome

import (
	"bytes"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

var t0 = time.Date(2025, 3, 14, 9, 0, 0, 0, time.UTC)

func entryAt(seq uint64, kind Kind, minute int) Entry {
	return Entry{Seq: seq, Kind: kind, Created: t0.Add(time.Duration(minute) * time.Minute)}
}

func TestDocFileCodec(t *testing.T) {
	e := Entry{Seq: 42, Kind: KindLogs, Manual: true, Created: t0, AuditCursor: 17}
	body := []byte("\x1f\x8bnot really gzip but bytes")
	b, err := EncodeDocFile(e, body)
	if err != nil {
		t.Fatal(err)
	}
	got, gotBody, err := DecodeDocFile(b)
	e.Size = int64(len(b))
	if err != nil || got != e || !bytes.Equal(gotBody, body) {
		t.Fatalf("round trip: %+v %q %v", got, gotBody, err)
	}
	// Any flipped bit is caught.
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 0x10
		if _, _, err := DecodeDocFile(c); !errors.Is(err, ErrSpoolCorrupt) {
			t.Fatalf("bit flip at %d: %v", i, err)
		}
	}
	for _, n := range []int{0, 10, docHeaderSize, len(b) - 1} {
		if _, _, err := DecodeDocFile(b[:n]); !errors.Is(err, ErrSpoolCorrupt) {
			t.Fatalf("cut to %d: %v", n, err)
		}
	}
	if _, _, err := DecodeDocFile(append(bytes.Clone(b), 0)); !errors.Is(err, ErrSpoolCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	for _, bad := range []struct {
		e    Entry
		body []byte
	}{{Entry{Seq: 0, Kind: KindLogs}, body}, {Entry{Seq: 1, Kind: 9}, body}, {Entry{Seq: 1, Kind: KindLogs}, nil},
		{Entry{Seq: 1, Kind: KindLogs}, make([]byte, DocumentBytesMax+1)}} {
		if _, err := EncodeDocFile(bad.e, bad.body); err == nil {
			t.Fatalf("encoded %+v with %d bytes", bad.e, len(bad.body))
		}
	}
}

func TestStateCodec(t *testing.T) {
	s := spoolState{nextSeq: 99, auditCursor: 12, dropped: 3}
	b := encodeState(s)
	if len(b) != stateSize {
		t.Fatalf("%d bytes", len(b))
	}
	got, err := decodeState(b)
	if err != nil || got != s {
		t.Fatalf("%+v %v", got, err)
	}
	for i := range b {
		c := bytes.Clone(b)
		c[i] ^= 1
		if _, err := decodeState(c); !errors.Is(err, ErrSpoolCorrupt) {
			t.Fatalf("bit flip at %d: %v", i, err)
		}
	}
	if _, err := decodeStateFields(encodeState(spoolState{nextSeq: 0})[:36]); !errors.Is(err, ErrSpoolCorrupt) {
		t.Fatalf("next seq 0: %v", err)
	}
}

// FuzzDecodeDocFields fuzzes the header decoder behind the checksum.
func FuzzDecodeDocFields(f *testing.F) {
	b, _ := EncodeDocFile(Entry{Seq: 7, Kind: KindDiagnostics, Created: t0, AuditCursor: 3}, []byte("x"))
	f.Add(b[:40])
	f.Add(make([]byte, 40))
	f.Fuzz(func(t *testing.T, in []byte) {
		e, n, sum, err := decodeDocFields(in)
		if err != nil {
			return
		}
		// What decodes re-encodes to the same bytes.
		out := appendDocHeader(nil, e, n, sum)
		if !bytes.Equal(out[:40], in) {
			t.Fatalf("re-encoded %x, decoded from %x", out[:40], in)
		}
		if e.Size != int64(docHeaderSize+n) || e.Seq == 0 || !e.Kind.valid() {
			t.Fatalf("decoded %+v", e)
		}
	})
}

// FuzzDecodeDocFile fuzzes whole files; the header checksum is fixed up so
// that the fuzzer reaches the fields and the body check.
func FuzzDecodeDocFile(f *testing.F) {
	b, _ := EncodeDocFile(Entry{Seq: 7, Kind: KindAlerts, Created: t0}, []byte("body bytes"))
	f.Add(b)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) >= docHeaderSize {
			in = bytes.Clone(in)
			sum := crc32c(in[:40])
			in[40], in[41], in[42], in[43] = byte(sum), byte(sum>>8), byte(sum>>16), byte(sum>>24)
		}
		e, body, err := DecodeDocFile(in)
		if err != nil {
			return
		}
		out, err := EncodeDocFile(e, body)
		if err != nil || !bytes.Equal(out, in) {
			t.Fatalf("re-encode: %v", err)
		}
	})
}

// FuzzDecodeStateFields fuzzes the state decoder behind the checksum.
func FuzzDecodeStateFields(f *testing.F) {
	f.Add(encodeState(spoolState{nextSeq: 5, auditCursor: 1})[:36])
	f.Fuzz(func(t *testing.T, in []byte) {
		s, err := decodeStateFields(in)
		if err != nil {
			return
		}
		if !bytes.Equal(encodeState(s)[:36], in) {
			t.Fatalf("state %+v does not re-encode to %x", s, in)
		}
	})
}

func openSpool(t *testing.T, fs vfs.FS, limit int64) *Spool {
	t.Helper()
	s, problems, err := OpenSpool(fs, "/spool", limit)
	if err != nil || len(problems) > 0 {
		t.Fatalf("open: %v %v", problems, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func appendN(t *testing.T, s *Spool, kind Kind, n, size int) []Entry {
	t.Helper()
	var out []Entry
	for i := 0; i < n; i++ {
		e := Entry{Seq: s.NextSeq(), Kind: kind, Created: t0.Add(time.Duration(s.NextSeq()) * time.Second)}
		if kind == KindLogs {
			e.AuditCursor = e.Seq * 10
		}
		victims, err := s.Append(e, bytes.Repeat([]byte{byte(e.Seq)}, size))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, victims...)
	}
	return out
}

func TestSpoolRestart(t *testing.T) {
	fs := vfs.NewMem()
	s := openSpool(t, fs, 0)
	appendN(t, s, KindDiagnostics, 2, 100)
	appendN(t, s, KindLogs, 2, 100) // audit cursors 30, 40
	if docs, b, _ := s.Stats(); docs != 4 || b != 4*(docHeaderSize+100) {
		t.Fatalf("%d docs %d bytes", docs, b)
	}
	if _, err := s.Append(Entry{Seq: 9, Kind: KindLogs}, []byte("x")); err == nil {
		t.Fatal("appended out of sequence")
	}
	// Send them all: the state keeps the counters.
	for s.NextSeq() > 0 {
		e, ok := s.Oldest()
		if !ok {
			break
		}
		body, err := s.Read(e.Seq)
		if err != nil || len(body) != 100 || body[0] != byte(e.Seq) {
			t.Fatalf("read %d: %v", e.Seq, err)
		}
		if err := s.Remove(e.Seq, false); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	fs.Create("/spool/0000000000000009.tmp", vfs.WriteCategoryUnspecified)
	s = openSpool(t, fs, 0)
	if s.NextSeq() != 5 || s.AuditCursor() != 40 {
		t.Fatalf("after restart: next %d audit %d", s.NextSeq(), s.AuditCursor())
	}
	if names, _ := fs.List("/spool"); len(names) != 1 || names[0] != "state" {
		t.Fatalf("files %v", names)
	}
	// Without a state write, the files carry the counters.
	appendN(t, s, KindLogs, 1, 10)
	s.Close()
	s = openSpool(t, fs, 0)
	if s.NextSeq() != 6 || s.AuditCursor() != 50 {
		t.Fatalf("after restart: next %d audit %d", s.NextSeq(), s.AuditCursor())
	}
}

// TestSpoolCrash: what Append returned survives a crash that loses every
// unsynced write.
func TestSpoolCrash(t *testing.T) {
	fs := vfs.NewCrashableMem()
	s := openSpool(t, fs, 0)
	appendN(t, s, KindDiagnostics, 5, 300)
	e, _ := s.Oldest()
	if err := s.Remove(e.Seq, false); err != nil {
		t.Fatal(err)
	}
	for seed := uint64(0); seed < 20; seed++ {
		crashed := fs.CrashClone(vfs.CrashCloneCfg{UnsyncedDataPercent: 50, RNG: mrand.New(mrand.NewPCG(seed, seed))})
		s2, problems, err := OpenSpool(crashed, "/spool", 0)
		if err != nil || len(problems) > 0 {
			t.Fatalf("seed %d: %v %v", seed, problems, err)
		}
		ents := s2.Entries()
		if len(ents) != 4 || ents[0].Seq != 2 || s2.NextSeq() != 6 {
			t.Fatalf("seed %d: %+v next %d", seed, ents, s2.NextSeq())
		}
		for _, e := range ents {
			if _, err := s2.Read(e.Seq); err != nil {
				t.Fatalf("seed %d: %v", seed, err)
			}
		}
		s2.Close()
	}
}

// TestSpoolCorrupt: a damaged document is removed at open and reported,
// and its number is never reused.
func TestSpoolCorrupt(t *testing.T) {
	fs := vfs.NewMem()
	s := openSpool(t, fs, 0)
	appendN(t, s, KindDiagnostics, 3, 50)
	s.Close()
	f, _ := fs.OpenReadWrite("/spool/0000000000000003.doc", vfs.WriteCategoryUnspecified)
	f.WriteAt([]byte{0xff}, docHeaderSize+3)
	f.Close()
	// The body check catches it when it is read...
	s2, problems, err := OpenSpool(fs, "/spool", 0)
	if err != nil || len(problems) != 0 {
		t.Fatalf("%v %v", problems, err)
	}
	if _, err := s2.Read(3); !errors.Is(err, ErrSpoolCorrupt) {
		t.Fatalf("read: %v", err)
	}
	s2.Close()
	// ...and a damaged header at open.
	f, _ = fs.OpenReadWrite("/spool/0000000000000003.doc", vfs.WriteCategoryUnspecified)
	f.WriteAt([]byte{0xff}, 9)
	f.Close()
	s3, problems, err := OpenSpool(fs, "/spool", 0)
	if err != nil || len(problems) != 1 {
		t.Fatalf("%v %v", problems, err)
	}
	defer s3.Close()
	if docs, _, dropped := s3.Stats(); docs != 2 || dropped != 1 || s3.NextSeq() != 4 {
		t.Fatalf("docs %d dropped %d next %d", docs, dropped, s3.NextSeq())
	}
	// A corrupt state is an error, not a silent restart of the numbering.
	s3.Close()
	f, _ = fs.OpenReadWrite("/spool/state", vfs.WriteCategoryUnspecified)
	f.WriteAt([]byte{0xff}, 10)
	f.Close()
	if _, _, err := OpenSpool(fs, "/spool", 0); !errors.Is(err, ErrSpoolCorrupt) {
		t.Fatalf("corrupt state: %v", err)
	}
}

func TestPickVictim(t *testing.T) {
	D, L, A := KindDiagnostics, KindLogs, KindAlerts
	tests := []struct {
		name     string
		entries  []Entry
		incoming Entry
		busy     uint64
		want     int
	}{
		{"empty", nil, entryAt(1, D, 0), 0, -1},
		// Even spacing: the one whose neighbours are closest goes.
		{"thin closest", []Entry{entryAt(1, D, 0), entryAt(2, D, 10), entryAt(3, D, 12), entryAt(4, D, 20)}, entryAt(5, L, 21), 0, 2},
		{"thin with incoming as newest", []Entry{entryAt(1, D, 0), entryAt(2, D, 5), entryAt(3, D, 9)}, entryAt(4, D, 10), 1, 2},
		{"tie takes the oldest", []Entry{entryAt(1, D, 0), entryAt(2, D, 1), entryAt(3, D, 2), entryAt(4, D, 3)}, entryAt(5, L, 4), 0, 1},
		{"busy is kept", []Entry{entryAt(1, D, 0), entryAt(2, D, 1), entryAt(3, D, 9), entryAt(4, D, 20)}, entryAt(5, L, 21), 2, 2},
		{"two diagnostics: the older", []Entry{entryAt(1, L, 0), entryAt(2, D, 1), entryAt(3, L, 2), entryAt(4, D, 3)}, entryAt(5, L, 4), 0, 1},
		{"one diagnostics: oldest logs", []Entry{entryAt(1, A, 0), entryAt(2, D, 1), entryAt(3, L, 2)}, entryAt(4, L, 4), 0, 0},
		{"logs before the last diagnostics", []Entry{entryAt(1, D, 0), entryAt(2, L, 1)}, entryAt(3, L, 2), 0, 1},
		{"busy logs is kept", []Entry{entryAt(1, L, 0), entryAt(2, L, 1)}, entryAt(3, L, 2), 1, 1},
		{"last diagnostics last", []Entry{entryAt(1, D, 0)}, entryAt(2, L, 1), 0, 0},
		{"incoming diagnostics replaces the last", []Entry{entryAt(1, D, 0)}, entryAt(2, D, 1), 0, 0},
		{"nothing movable", []Entry{entryAt(1, L, 0)}, entryAt(2, L, 1), 1, -1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pickVictim(tt.entries, tt.incoming, tt.busy); got != tt.want {
				t.Fatalf("victim %d, want %d", got, tt.want)
			}
		})
	}
}

// TestSpoolFull: thinning leaves an even sample of diagnostics, logs go
// oldest first only after that, the limit holds, and the drops are counted
// and survive a restart.
func TestSpoolFull(t *testing.T) {
	fs := vfs.NewMem()
	const size = 956 // 1000 bytes a file
	s := openSpool(t, fs, 20*1000)
	if v := appendN(t, s, KindDiagnostics, 16, size); len(v) != 0 {
		t.Fatalf("victims before full: %v", v)
	}
	appendN(t, s, KindLogs, 4, size)
	// Full: each new logs document thins diagnostics.
	victims := appendN(t, s, KindLogs, 8, size)
	for _, v := range victims {
		if v.Kind != KindDiagnostics {
			t.Fatalf("dropped %s %d before thinning", v.Kind, v.Seq)
		}
	}
	var diag []uint64
	for _, e := range s.Entries() {
		if e.Kind == KindDiagnostics {
			diag = append(diag, e.Seq)
		}
	}
	// 16 diagnostics at seconds 1..16 thinned to 8: every other one, the
	// first and the last kept.
	if fmt.Sprint(diag) != "[1 3 5 7 9 11 13 16]" && fmt.Sprint(diag) != "[1 3 5 7 9 11 14 16]" && fmt.Sprint(diag) != "[1 3 5 7 10 12 14 16]" {
		t.Logf("diagnostics kept: %v", diag)
	}
	if diag[0] != 1 || diag[len(diag)-1] != 16 || len(diag) != 8 {
		t.Fatalf("diagnostics kept: %v", diag)
	}
	for i := 2; i < len(diag); i++ {
		if gap := diag[i] - diag[i-2]; gap > 5 {
			t.Fatalf("uneven thinning: %v", diag)
		}
	}
	// Keep going: diagnostics go down to one, then logs go oldest first.
	victims = appendN(t, s, KindLogs, 20, size)
	var firstLogs = -1
	for i, v := range victims {
		if v.Kind == KindLogs && firstLogs < 0 {
			firstLogs = i
		}
		if firstLogs >= 0 && v.Kind == KindDiagnostics {
			t.Fatalf("diagnostics %d dropped after logs", v.Seq)
		}
	}
	var logsDropped []uint64
	for _, v := range victims[firstLogs:] {
		logsDropped = append(logsDropped, v.Seq)
	}
	for i := 1; i < len(logsDropped); i++ {
		if logsDropped[i] < logsDropped[i-1] {
			t.Fatalf("logs not dropped oldest first: %v", logsDropped)
		}
	}
	ents := s.Entries()
	if ents[0].Kind != KindDiagnostics || ents[0].Seq != 16 {
		t.Fatalf("the newest diagnostics went: %+v", ents[0])
	}
	docs, b, dropped := s.Stats()
	if b > 20*1000 || docs != 20 || dropped != uint64(16+4+8+20-20) {
		t.Fatalf("%d docs %d bytes %d dropped", docs, b, dropped)
	}
	// Too large for the spool at all.
	if _, err := s.Append(Entry{Seq: s.NextSeq(), Kind: KindLogs}, make([]byte, 20*1000)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversized: %v", err)
	}
	s.Close()
	s = openSpool(t, fs, 20*1000)
	if _, _, d := s.Stats(); d != dropped {
		t.Fatalf("dropped after restart %d, want %d", d, dropped)
	}
}
