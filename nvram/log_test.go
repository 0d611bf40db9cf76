package nvram

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"unsafe"

	"github.com/cockroachdb/pebble/v2/vfs"
)

func TestFreshRegionReplaysNothing(t *testing.T) {
	const size = 64 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	got, end, err := replayAll(t, testOptions(f, size, 1, 0), Position{Seq: 1})
	if err != nil || len(got) != 0 || end != (Position{Seq: 1}) {
		t.Fatalf("replay of zeroed region: %v records, end %+v, err %v", got, end, err)
	}
	// A file shorter than the region reads as zeros past its end.
	short := vfs.NewMemFile(make([]byte, 100))
	got, end, err = replayAll(t, Options{File: short, Size: size, Key: testKey(1)}, Position{Seq: 1})
	if err != nil || len(got) != 0 || end != (Position{Seq: 1}) {
		t.Fatalf("replay of short file: %v records, end %+v, err %v", got, end, err)
	}
}

func TestRoundTrip(t *testing.T) {
	const size = 256 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	var durable []rec
	ptrs := map[uint64]*byte{}
	o := testOptions(f, size, 1, 0)
	o.OnDurable = func(seq uint64, p []byte, end Position) {
		durable = append(durable, rec{seq, p, end})
		if len(p) > 0 {
			ptrs[seq] = &p[0]
		}
	}
	l, err := Open(o, Position{Seq: 1}, Position{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	sizes := []int{0, 1, 4096, 4104, 100, 15, 16, 17, 30000}
	var want []rec
	for i, n := range sizes {
		p := pattern(n, byte(i))
		seq, end, err := l.Append(context.Background(), p)
		if err != nil {
			t.Fatal(err)
		}
		if seq != uint64(i+1) || end.Seq != seq+1 || end.Epoch != 1 {
			t.Fatalf("append %d: seq %d end %+v", i, seq, end)
		}
		// OnDurable ran before Append returned, in order, with the
		// caller's own slice.
		if len(durable) != i+1 || durable[i].seq != seq || durable[i].end != end {
			t.Fatalf("append %d: OnDurable saw %v", i, durable)
		}
		if n > 0 && ptrs[seq] != unsafe.SliceData(p) {
			t.Fatalf("append %d: OnDurable got a copy, not the caller's slice", i)
		}
		want = append(want, rec{seq, p, end})
	}
	st := l.Stats()
	if st.Appends != uint64(len(sizes)) || st.Syncs != uint64(len(sizes)) || st.Durable != uint64(len(sizes)) {
		t.Fatalf("stats %+v", st)
	}
	var payload, logBytes uint64
	for _, n := range sizes {
		payload += uint64(n)
		logBytes += uint64(spanOf(n))
	}
	if st.PayloadBytes != payload || st.LogBytes != logBytes || st.UsedBytes != int64(logBytes) {
		t.Fatalf("stats bytes: %+v, want payload %d log %d", st, payload, logBytes)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.Append(context.Background(), []byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("append after close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}

	got, end, err := replayAll(t, testOptions(f, size, 2, 0), Position{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	checkRecs(t, got, want)
	if end != want[len(want)-1].end {
		t.Fatalf("end %+v, want %+v", end, want[len(want)-1].end)
	}
	// From a checkpoint in the middle: the suffix.
	got, _, err = replayAll(t, testOptions(f, size, 2, 0), want[3].end)
	if err != nil {
		t.Fatal(err)
	}
	checkRecs(t, got, want[4:])

	// The next boot continues the sequence, and the boot after sees both.
	l2, err := Open(testOptions(f, size, 2, 0), want[3].end, end)
	if err != nil {
		t.Fatal(err)
	}
	seq, end2, err := l2.Append(context.Background(), []byte("boot 2"))
	if err != nil || seq != uint64(len(sizes)+1) || end2.Epoch != 2 {
		t.Fatalf("boot 2 append: seq %d end %+v err %v", seq, end2, err)
	}
	if err := l2.Close(); err != nil {
		t.Fatal(err)
	}
	got, end, err = replayAll(t, testOptions(f, size, 3, 0), want[3].end)
	if err != nil {
		t.Fatal(err)
	}
	checkRecs(t, got, append(want[4:], rec{seq, []byte("boot 2"), end2}))
	if end != end2 {
		t.Fatalf("end %+v, want %+v", end, end2)
	}
}

func checkRecs(t testing.TB, got, want []rec) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d records %v, want %d", len(got), got, len(want))
	}
	for i := range got {
		if got[i].seq != want[i].seq || !bytes.Equal(got[i].payload, want[i].payload) || got[i].end != want[i].end {
			t.Fatalf("record %d: got %v, want %v", i, got[i], want[i])
		}
	}
}

func TestWrongKeyReplaysNothing(t *testing.T) {
	const size = 64 << 10
	fs := vfs.NewMem()
	createDev(t, fs, size)
	f := openDev(t, fs, size)
	l, err := Open(testOptions(f, size, 1, 0), Position{Seq: 1}, Position{Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		if _, _, err := l.Append(context.Background(), pattern(100, byte(i))); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	o := testOptions(f, size, 2, 0)
	o.Key = testKey(9)
	got, end, err := replayAll(t, o, Position{Seq: 1})
	if err != nil || len(got) != 0 || end != (Position{Seq: 1}) {
		t.Fatalf("wrong key: %d records, end %+v, err %v", len(got), end, err)
	}
	// A region shifted by 16 bytes (records at the wrong offset) too.
	o = testOptions(f, size-16, 2, 0)
	o.Offset += 16
	if got, _, err := replayAll(t, o, Position{Seq: 1}); err != nil || len(got) != 0 {
		t.Fatalf("shifted region: %d records, err %v", len(got), err)
	}
}

// TestWrapRules places records so that each wrap case happens: a record
// ending exactly at the end of the region, fewer than minSpan bytes left
// (implicit wrap, no marker), and wrap markers.
func TestWrapRules(t *testing.T) {
	const size = 4096
	for _, tc := range []struct {
		name    string
		payload int   // payload bytes of every record
		tail    int64 // where the region-filling records end
		marker  bool
	}{
		{"exact end", 1024 - 56, 4096, false},     // 4 spans of 1024
		{"16 bytes left", 1360 - 56, 4080, false}, // 3 spans of 1360
		{"48 bytes left", 368 - 56, 4048, false},  // 11 spans of 368
		{"64 bytes left", 1008 - 56, 4032, true},  // 4 spans of 1008
		{"160 bytes left", 1968 - 56, 3936, true}, // 2 spans of 1968
		{"32 bytes left", 2032 - 56, 4064, false}, // 2 spans of 2032
	} {
		t.Run(tc.name, func(t *testing.T) {
			fs := vfs.NewMem()
			createDev(t, fs, size)
			f := openDev(t, fs, size)
			l, err := Open(testOptions(f, size, 1, 1976), Position{Seq: 1}, Position{Seq: 1})
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			var last Position
			for i := 0; l.Stats().Next.Off+spanOf(tc.payload) <= size; i++ {
				if _, last, err = l.Append(ctx, pattern(tc.payload, byte(i))); err != nil {
					t.Fatal(err)
				}
			}
			if last.Off != tc.tail {
				t.Fatalf("records end at %d, want %d", last.Off, tc.tail)
			}
			// The region is (nearly) full: release it all; the next record
			// must wrap to offset 0.
			if err := l.Release(last); err != nil {
				t.Fatal(err)
			}
			p := pattern(tc.payload, 99)
			seq, end, err := l.Append(ctx, p)
			if err != nil {
				t.Fatal(err)
			}
			if end.Off != spanOf(len(p)) {
				t.Fatalf("wrapped record ends at %d, want %d", end.Off, spanOf(len(p)))
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			hb := make([]byte, headerLen)
			if size-last.Off >= headerLen {
				if _, err := f.ReadAt(hb, testBase+last.Off); err != nil {
					t.Fatal(err)
				}
			}
			h, herr := decodeHeader(hb)
			hasMarker := herr == nil && h.kind == kindWrap && h.off == last.Off && h.seq == seq
			if hasMarker != (size-last.Off >= minSpan) || hasMarker != tc.marker {
				t.Fatalf("tail at %d: marker %v (%+v, %v), want %v", last.Off, hasMarker, h, herr, tc.marker)
			}
			got, gotEnd, err := replayAll(t, testOptions(f, size, 2, 1976), last)
			if err != nil {
				t.Fatal(err)
			}
			checkRecs(t, got, []rec{{seq, p, end}})
			if gotEnd != end {
				t.Fatalf("end %+v, want %+v", gotEnd, end)
			}
			// From the start, the first record was overwritten by the
			// wrapped one (a later seq at offset 0): nothing replays.
			if got, _, err := replayAll(t, testOptions(f, size, 2, 1976), Position{Seq: 1}); err != nil || len(got) != 0 {
				t.Fatalf("from the start: %v, %v", got, err)
			}
		})
	}
}
