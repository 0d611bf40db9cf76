package ssd

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
	"github.com/cockroachdb/pebble/v2/vfs/errorfs"
)

var bg = context.Background()

// segLens returns payload lengths that exercise full and partial segments.
func segLens(s *Set) []int {
	rp, sp := s.RowPayload(), s.SegmentPayload()
	return []int{1, PagePayload - 1, PagePayload + 1, rp - 1, rp, rp + 1, 3*rp + 17, sp - 1, sp}
}

func TestRoundTrip(t *testing.T) {
	for _, n := range []int{6, 8, 24} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ta := newTestArray(t, vfs.NewMem(), "ssd", n, testAU, testCapacity)
			s := ta.open(t)
			if s.AUCount() != 8 || s.RowPayload() != (n-2)*PagePayload || s.SegmentPayload() != 16*(n-2)*PagePayload || s.Width() != n {
				t.Fatalf("geometry: %d AUs, row %d, segment %d", s.AUCount(), s.RowPayload(), s.SegmentPayload())
			}
			want := map[int][]byte{}
			for au, l := range segLens(s)[:s.AUCount()] {
				want[au] = payload(uint64(au), l)
				if err := s.WriteSegment(bg, au, uint64(100+au), want[au]); err != nil {
					t.Fatal(err)
				}
			}
			for au, w := range want {
				checkAll(t, s, au, uint64(100+au), w)
			}
			if totalRepaired(s) != 0 || s.Stats().DegradedReads != 0 || s.Stats().Writes != uint64(len(want)) {
				t.Fatalf("a clean round trip repaired something: %+v", s.Stats())
			}
			// And again after reopening.
			s.Close()
			s = ta.open(t)
			for au, w := range want {
				checkAll(t, s, au, uint64(100+au), w)
			}
		})
	}
}

func TestArgumentLimits(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	p := make([]byte, 10)
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"au -1", s.WriteSegment(bg, -1, 1, p)},
		{"au beyond", s.WriteSegment(bg, s.AUCount(), 1, p)},
		{"segment 0", s.WriteSegment(bg, 0, 0, p)},
		{"empty", s.WriteSegment(bg, 0, 1, nil)},
		{"too long", s.WriteSegment(bg, 0, 1, make([]byte, s.SegmentPayload()+1))},
		{"read past end", s.Read(bg, 0, 1, int64(s.SegmentPayload())-5, p)},
		{"read negative", s.Read(bg, 0, 1, -1, p)},
		{"read au", s.Read(bg, 99, 1, 0, p)},
		{"scrub empty", func() error { _, err := s.Scrub(bg, 0, 1, 0); return err }()},
	} {
		if !errors.Is(tc.err, ErrRange) {
			t.Errorf("%s: %v", tc.name, tc.err)
		}
	}
	ctx, cancel := context.WithCancel(bg)
	cancel()
	if err := s.WriteSegment(ctx, 0, 1, p); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled write: %v", err)
	}
	s.Close()
	if err := s.Read(bg, 0, 1, 0, p); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
}

// Every combination of one and two missing devices reads back exactly, for
// segments written with all devices present and for segments written with
// those devices missing.
func TestMissingDevices(t *testing.T) {
	for _, n := range []int{6, 8} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ta := newTestArray(t, vfs.NewMem(), "ssd", n, testAU, testCapacity)
			s := ta.open(t)
			lens := segLens(s)
			want := map[int][]byte{}
			for au := range 4 {
				want[au] = payload(uint64(au), lens[(au*2+1)%len(lens)])
				if err := s.WriteSegment(bg, au, uint64(au+1), want[au]); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()
			var combos [][]int
			for i := range n {
				combos = append(combos, []int{i})
				for j := i + 1; j < n; j++ {
					combos = append(combos, []int{i, j})
				}
			}
			seg := uint64(100)
			for _, miss := range combos {
				s := ta.open(t, miss...)
				for au, w := range want {
					checkAll(t, s, au, uint64(au+1), w)
				}
				if totalRepaired(s) != 0 {
					t.Fatalf("missing %v: repaired pages on absent devices", miss)
				}
				if s.Stats().DegradedReads == 0 {
					t.Fatalf("missing %v: no degraded read counted", miss)
				}
				h := s.Health()
				for _, m := range miss {
					if h[m].State != StateMissing {
						t.Fatalf("missing %v: slot %d is %v", miss, m, h[m].State)
					}
				}
				// A degraded write, read back degraded ...
				au := 4 + int(seg)%4
				seg++
				w := payload(seg, lens[int(seg)%len(lens)])
				if err := s.WriteSegment(bg, au, seg, w); err != nil {
					t.Fatalf("missing %v: degraded write: %v", miss, err)
				}
				checkAll(t, s, au, seg, w)
				s.Close()
				// ... and with the devices back: reads and a scrub repair
				// every page of theirs exactly once.
				s = ta.open(t)
				checkAll(t, s, au, seg, w)
				if _, err := s.Scrub(bg, au, seg, len(w)); err != nil {
					t.Fatal(err)
				}
				if got, want := totalRepaired(s), uint64(s.geo.rows(len(w))*len(miss)); got != want {
					t.Fatalf("missing %v: repaired %d pages, want %d", miss, got, want)
				}
				if k, _ := s.Scrub(bg, au, seg, len(w)); k != 0 {
					t.Fatalf("missing %v: second scrub repaired %d", miss, k)
				}
				s.Close()
			}
		})
	}
}

func TestThreeMissingRefused(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	_, err := ta.tryOpen(1, 4, 6)
	if !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("got %v", err)
	}
	for _, name := range []string{"ssd01", "ssd04", "ssd06"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("error %q does not name %s", err, name)
		}
	}
	// A failed (truncated) device counts like a missing one.
	truncate(t, ta.fs, ta.path(2), testAU)
	if _, err := ta.tryOpen(1, 4); !errors.Is(err, ErrTooManyFailed) || !strings.Contains(err.Error(), "truncated") {
		t.Fatalf("two missing and one truncated: %v", err)
	}
}

func TestTruncatedDevice(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	w := payload(1, s.SegmentPayload())
	if err := s.WriteSegment(bg, 3, 7, w); err != nil {
		t.Fatal(err)
	}
	s.Close()
	truncate(t, ta.fs, ta.path(5), 200<<10)
	s = ta.open(t)
	h := s.Health()[5]
	if h.State != StateFailed || h.Reason != "ssd05: truncated: 200 KiB of 576 KiB" {
		t.Fatalf("health %+v", h)
	}
	checkAll(t, s, 3, 7, w)
	// Writes go on without it.
	w2 := payload(2, 5000)
	if err := s.WriteSegment(bg, 4, 8, w2); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, 4, 8, w2)
}

func TestForeignAndMismatchedDevices(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "a", 8, testAU, testCapacity)
	other := newTestArray(t, fs, "b", 8, testAU, testCapacity)
	other.arrayID[0] = 0xee
	fs.Remove(other.path(3))
	d, err := Create(fs, other.path(3), other.sb(3))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	open := func(swap map[int]string) error {
		devs := make([]*Device, 8)
		for i := range devs {
			p := ta.path(i)
			if q, ok := swap[i]; ok {
				p = q
			}
			if p == "" {
				continue
			}
			d, _, err := Open(fs, p)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			devs[i] = d
		}
		s, err := NewSet(devs, ta.keys)
		if err == nil {
			s.Close()
		}
		return err
	}
	if err := open(map[int]string{3: other.path(3)}); !errors.Is(err, ErrForeign) || !strings.Contains(err.Error(), "ssd03") {
		t.Fatalf("foreign device: %v", err)
	}
	if err := open(map[int]string{3: ta.path(4), 4: ""}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("device in the wrong slot: %v", err)
	}
	small := newTestArray(t, fs, "c", 6, testAU, testCapacity)
	small.arrayID = ta.arrayID
	fs.Remove(small.path(2))
	if d, err := Create(fs, small.path(2), small.sb(2)); err != nil {
		t.Fatal(err)
	} else {
		d.Close()
	}
	if err := open(map[int]string{2: small.path(2)}); !errors.Is(err, ErrMismatch) {
		t.Fatalf("device of a 6-wide set: %v", err)
	}
	// The same device twice.
	d1, _, _ := Open(fs, ta.path(0))
	defer d1.Close()
	devs := make([]*Device, 8)
	for i := range devs {
		devs[i] = d1
	}
	if _, err := NewSet(devs, ta.keys); !errors.Is(err, ErrMismatch) && !errors.Is(err, ErrInUse) {
		t.Fatalf("one device in every slot: %v", err)
	}
	// Bad key length.
	keys := append([][]byte(nil), ta.keys...)
	keys[2] = keys[2][:16]
	devs = make([]*Device, 8)
	for i := range devs {
		devs[i], _, _ = Open(fs, ta.path(i))
		defer devs[i].Close()
	}
	if _, err := NewSet(devs, keys); err == nil {
		t.Fatal("short media key accepted")
	}
}

// corruption names a way to damage the pages of a written segment.
type corruption struct {
	name  string
	col   int  // column (>= n-2: parity)
	off   int  // byte offset within the page
	scrub bool // parity pages are only read by Scrub and rebuilds
}

func TestBitFlipsAreRepaired(t *testing.T) {
	const n = 8
	for _, tc := range []corruption{
		{"data payload", 2, 1000, false},
		{"data first byte", 0, 0, false},
		{"data segment id", 5, trailerSegOff + 3, false},
		{"data crc", 1, trailerCRCOff + 1, false},
		{"parity payload", 6, 2000, true},
		{"parity trailer", 7, trailerSegOff, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ta := newTestArray(t, vfs.NewMem(), "ssd", n, testAU, testCapacity)
			s := ta.open(t)
			const au, seg, row = 3, 55, 2
			w := payload(9, s.SegmentPayload())
			if err := s.WriteSegment(bg, au, seg, w); err != nil {
				t.Fatal(err)
			}
			slot, off := pageAddr(s, au, row, tc.col)
			orig := ta.readAt(t, slot, off, PageSize)
			ta.flip(t, slot, off+int64(tc.off), 3)
			if tc.scrub {
				k, err := s.Scrub(bg, au, seg, len(w))
				if err != nil || k != 1 {
					t.Fatalf("scrub repaired %d: %v", k, err)
				}
			}
			checkAll(t, s, au, seg, w)
			h := s.Health()[slot]
			if h.RepairedPages != 1 || h.BadPages != 1 {
				t.Fatalf("health %+v", h)
			}
			if got := ta.readAt(t, slot, off, PageSize); !bytes.Equal(got, orig) {
				t.Fatal("the repaired page differs from the page first written")
			}
			// Second pass: nothing left to repair.
			checkAll(t, s, au, seg, w)
			if k, err := s.Scrub(bg, au, seg, len(w)); k != 0 || err != nil {
				t.Fatalf("second scrub: %d %v", k, err)
			}
			if totalRepaired(s) != 1 {
				t.Fatalf("repaired %d pages in total", totalRepaired(s))
			}
		})
	}
}

func TestStalePage(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	const au = 2
	old := payload(1, s.SegmentPayload())
	if err := s.WriteSegment(bg, au, 10, old); err != nil {
		t.Fatal(err)
	}
	slot, off := pageAddr(s, au, 0, 4)
	kept := ta.readAt(t, slot, off, 4*PageSize)
	w := payload(2, s.SegmentPayload())
	if err := s.WriteSegment(bg, au, 11, w); err != nil {
		t.Fatal(err)
	}
	ta.writeAt(t, slot, off, kept) // the device "lost" the new pages of rows 0-3
	checkAll(t, s, au, 11, w)
	if h := s.Health()[slot]; h.RepairedPages != 4 {
		t.Fatalf("health %+v", h)
	}
	checkAll(t, s, au, 11, w)
	if totalRepaired(s) != 4 {
		t.Fatal("second read repaired again")
	}
	// Reading the old segment finds every page stale: an error, never the
	// new segment's bytes.
	if err := s.Read(bg, au, 10, 0, make([]byte, 100)); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("read of an overwritten segment: %v", err)
	}
}

// Rows beyond a partial segment are never read as data, even when an older
// segment left valid-looking pages there.
func TestPartialSegmentRows(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	if err := s.WriteSegment(bg, 0, 1, payload(1, s.SegmentPayload())); err != nil {
		t.Fatal(err)
	}
	w := payload(2, s.RowPayload()+10) // two rows
	if err := s.WriteSegment(bg, 0, 2, w); err != nil {
		t.Fatal(err)
	}
	checkAll(t, s, 0, 2, w)
	if err := s.Read(bg, 0, 2, int64(2*s.RowPayload()), make([]byte, 10)); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("read past the partial segment: %v", err)
	}
	// Rows 2.. still hold segment 1's pages: a scrub of segment 2 leaves them.
	if k, err := s.Scrub(bg, 0, 2, len(w)); k != 0 || err != nil {
		t.Fatalf("scrub: %d %v", k, err)
	}
}

func TestUnrecoverable(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	w := payload(3, s.SegmentPayload())
	if err := s.WriteSegment(bg, 1, 5, w); err != nil {
		t.Fatal(err)
	}
	for _, c := range []int{0, 3, 7} { // three bad pages in row 4
		slot, off := pageAddr(s, 1, 4, c)
		ta.flip(t, slot, off+50, 0)
	}
	rp := int64(s.RowPayload())
	got := make([]byte, PagePayload)
	if err := s.Read(bg, 1, 5, 4*rp, got); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("three bad pages: %v", err)
	}
	if s.Stats().Unrecoverable != 1 {
		t.Fatal("unrecoverable read not counted")
	}
	// Other rows are fine.
	mustRead(t, s, 1, 5, w, 3*rp, int(rp))
	mustRead(t, s, 1, 5, w, 5*rp, int(rp))
	k, err := s.Scrub(bg, 1, 5, len(w))
	if !errors.Is(err, ErrUnrecoverable) || k != 0 {
		t.Fatalf("scrub: %d %v", k, err)
	}
	// Two missing devices and one bad page in a row: lost as well.
	s.Close()
	s = ta.open(t, s.geo.slotOf(1, 1), s.geo.slotOf(1, 2))
	if err := s.Read(bg, 1, 5, 4*rp, got); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("two missing + one bad: %v", err)
	}
	mustRead(t, s, 1, 5, w, 6*rp, int(rp))
}

// resealPage overwrites page (row, col) with a validly sealed page holding
// the wrong plaintext: its CRC passes, only parity (or the datapath's GCM)
// can tell.
func resealPage(t *testing.T, ta *testArray, s *Set, au, row, col int, seg uint64) {
	slot, off := pageAddr(s, au, row, col)
	page := make([]byte, PageSize)
	sealPage(page, payload(999, PagePayload), s.slots[slot].m.Load().block, &ctrScratch{}, seg, row, slot)
	ta.writeAt(t, slot, off, page)
}

func TestReadRebuild(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	w := payload(4, s.SegmentPayload())
	const au, seg = 5, 77
	if err := s.WriteSegment(bg, au, seg, w); err != nil {
		t.Fatal(err)
	}
	rp := s.RowPayload()
	// A block that spans columns 0-2 of row 2 (as a compressed block can).
	off, l := int64(2*rp+PagePayload-10), PagePayload+40
	for _, col := range []int{2, 6} { // a covered data page, then a parity page
		resealPage(t, ta, s, au, 2, col, seg)
		got := make([]byte, l)
		if col == 2 {
			if err := s.Read(bg, au, seg, off, got); err != nil || bytes.Equal(got, w[off:off+int64(l)]) {
				t.Fatalf("the CRC-valid wrong page should slip past Read: %v", err)
			}
		}
		before := totalRepaired(s)
		if err := s.ReadRebuild(bg, au, seg, off, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, w[off:off+int64(l)]) {
			t.Fatalf("col %d: ReadRebuild returned wrong data", col)
		}
		if totalRepaired(s) != before+1 {
			t.Fatalf("col %d: repaired %d", col, totalRepaired(s)-before)
		}
		mustRead(t, s, au, seg, w, off, l)
	}
	// Consistent pages: the stored bytes, nothing repaired.
	got := make([]byte, l)
	if err := s.ReadRebuild(bg, au, seg, off, got); err != nil || !bytes.Equal(got, w[off:off+int64(l)]) {
		t.Fatalf("consistent row: %v", err)
	}
	// With two devices gone there is nothing to check against.
	s.Close()
	s = ta.open(t, s.geo.slotOf(au, 6), s.geo.slotOf(au, 7))
	if err := s.ReadRebuild(bg, au, seg, off, got); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("no redundancy: %v", err)
	}
	// With one gone, a wrong page is detected but cannot be located.
	s.Close()
	s = ta.open(t, s.geo.slotOf(au, 7))
	resealPage(t, ta, s, au, 2, 3, seg)
	if err := s.ReadRebuild(bg, au, seg, off, got); !errors.Is(err, ErrUnrecoverable) {
		t.Fatalf("one missing and one wrong page: %v", err)
	}
	// Scrub (all devices) finds and fixes it.
	s.Close()
	s = ta.open(t)
	if k, err := s.Scrub(bg, au, seg, len(w)); k != 1 || err != nil {
		t.Fatalf("scrub: %d %v", k, err)
	}
	checkAll(t, s, au, seg, w)
}

// An I/O error on write marks the device failed; the write succeeds while at
// most two devices are unavailable, and fails beyond.
func TestWriteErrorFailsDevice(t *testing.T) {
	mem := vfs.NewMem()
	var mu sync.Mutex
	failing := map[string]errorfs.OpKind{}
	inj := errorfs.InjectorFunc(func(op errorfs.Op) error {
		mu.Lock()
		defer mu.Unlock()
		for name, kind := range failing {
			if strings.HasSuffix(op.Path, name) && op.Kind == kind {
				return errorfs.ErrInjected
			}
		}
		return nil
	})
	fs := errorfs.Wrap(mem, inj)
	ta := newTestArray(t, fs, "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	fail := func(name string, kind errorfs.OpKind) {
		mu.Lock()
		failing[name] = kind
		mu.Unlock()
	}
	w := payload(5, s.SegmentPayload())
	fail("ssd02.dev", errorfs.OpFileWriteAt)
	if err := s.WriteSegment(bg, 0, 1, w); err != nil {
		t.Fatalf("one failing device: %v", err)
	}
	h := s.Health()[2]
	if h.State != StateFailed || h.WriteErrors != 1 || !strings.Contains(h.Reason, "injected") || !strings.Contains(h.Reason, "ssd02") {
		t.Fatalf("health %+v", h)
	}
	checkAll(t, s, 0, 1, w)
	fail("ssd05.dev", errorfs.OpFileSyncData)
	if err := s.WriteSegment(bg, 1, 2, w); err != nil {
		t.Fatalf("two failing devices: %v", err)
	}
	if s.Health()[5].State != StateFailed {
		t.Fatal("sync error did not fail the device")
	}
	checkAll(t, s, 1, 2, w)
	checkAll(t, s, 0, 1, w)
	fail("ssd07.dev", errorfs.OpFileWriteAt)
	if err := s.WriteSegment(bg, 2, 3, w); !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("three failing devices: %v", err)
	}
	if err := s.WriteSegment(bg, 3, 4, w); !errors.Is(err, ErrTooManyFailed) {
		t.Fatalf("write with three failed: %v", err)
	}
	if s.Stats().Writes != 2 {
		t.Fatalf("stats %+v", s.Stats())
	}
}

// A failing repair write fails the device; the read still returns the data.
func TestRepairWriteError(t *testing.T) {
	mem := vfs.NewMem()
	var on sync.Map
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if _, ok := on.Load(op.Path); ok && op.Kind == errorfs.OpFileWriteAt {
			return errorfs.ErrInjected
		}
		return nil
	}))
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	w := payload(6, 3*s.RowPayload())
	if err := s.WriteSegment(bg, 0, 1, w); err != nil {
		t.Fatal(err)
	}
	slot, off := pageAddr(s, 0, 1, 1)
	ta.flip(t, slot, off+9, 1)
	on.Store(ta.path(slot), true)
	checkAll(t, s, 0, 1, w)
	if h := s.Health()[slot]; h.State != StateFailed || h.RepairedPages != 0 {
		t.Fatalf("health %+v", h)
	}
}

// A read error (not a checksum failure) is rebuilt around and counted.
func TestReadErrorRebuilt(t *testing.T) {
	mem := vfs.NewMem()
	var bad sync.Map
	fs := errorfs.Wrap(mem, errorfs.InjectorFunc(func(op errorfs.Op) error {
		if _, ok := bad.Load(op.Path); ok && op.Kind == errorfs.OpFileReadAt {
			return errorfs.ErrInjected
		}
		return nil
	}))
	ta := newTestArray(t, fs, "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	w := payload(7, s.SegmentPayload())
	if err := s.WriteSegment(bg, 2, 9, w); err != nil {
		t.Fatal(err)
	}
	bad.Store(ta.path(4), true)
	checkAll(t, s, 2, 9, w)
	if h := s.Health()[4]; h.ReadErrors == 0 || h.State != StateOK {
		t.Fatalf("health %+v", h)
	}
}

func TestFailAndAttach(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 8, testAU, testCapacity)
	s := ta.open(t)
	want := map[int][]byte{}
	for au := range 4 {
		want[au] = payload(uint64(au), s.SegmentPayload()-au*999)
		if err := s.WriteSegment(bg, au, uint64(au+1), want[au]); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Fail(3, "drill"); err != nil {
		t.Fatal(err)
	}
	if h := s.Health()[3]; h.State != StateFailed || !strings.Contains(h.Reason, "drill") {
		t.Fatalf("health %+v", h)
	}
	// Replace ssd03 by a blank device with a new key.
	fs.Remove(ta.path(3))
	sb := ta.sb(3)
	sb.DeviceID[15] = 0x99
	d, err := Create(fs, ta.path(3), sb)
	if err != nil {
		t.Fatal(err)
	}
	ta.keys[3] = bytes.Repeat([]byte{0x33}, 32)
	if err := s.Attach(3, d, ta.keys[3]); err != nil {
		t.Fatal(err)
	}
	for au, w := range want {
		if _, err := s.Scrub(bg, au, uint64(au+1), len(w)); err != nil {
			t.Fatal(err)
		}
	}
	if h := s.Health()[3]; h.State != StateOK || h.RepairedPages == 0 {
		t.Fatalf("health after rebuild %+v", h)
	}
	// Now ssd03 carries its share: lose two others and read everything.
	s.Close()
	s = ta.open(t, 0, 7)
	for au, w := range want {
		checkAll(t, s, au, uint64(au+1), w)
	}
}

func TestAttachRefuses(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	s := ta.open(t, 2)
	other := newTestArray(t, fs, "x", 6, testAU, testCapacity)
	other.arrayID[0] = 1
	fs.Remove(other.path(2))
	d, _ := Create(fs, other.path(2), other.sb(2))
	defer d.Close()
	if err := s.Attach(2, d, ta.keys[2]); !errors.Is(err, ErrForeign) {
		t.Fatalf("foreign: %v", err)
	}
	if err := s.Attach(1, s.Device(1), ta.keys[1]); err == nil {
		t.Fatal("attached over a healthy device")
	}
}

// Many readers and writers at once, with one device missing so that reads
// rebuild and repair concurrently. Run with -race.
func TestConcurrentReadWrite(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 8, testAU, testCapacity)
	s := ta.open(t, 7)
	want := make([][]byte, 4)
	for au := range want {
		want[au] = payload(uint64(au), s.SegmentPayload()-au*1000)
		if err := s.WriteSegment(bg, au, uint64(au+1), want[au]); err != nil {
			t.Fatal(err)
		}
	}
	// Damage some pages so that readers repair while others read.
	for r := range 8 {
		slot, off := pageAddr(s, r%4, r, r%6)
		ta.flip(t, slot, off+int64(r*7), uint(r))
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := range 6 {
		wg.Go(func() {
			rnd := rand.New(rand.NewPCG(uint64(g), 1))
			buf := make([]byte, 3*PagePayload)
			for range 300 {
				au := rnd.IntN(4)
				w := want[au]
				off := rnd.IntN(len(w))
				n := 1 + rnd.IntN(min(len(buf), len(w)-off))
				if err := s.Read(bg, au, uint64(au+1), int64(off), buf[:n]); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(buf[:n], w[off:off+n]) {
					errs <- fmt.Errorf("reader %d: wrong data at au %d off %d", g, au, off)
					return
				}
			}
		})
	}
	for g := range 2 {
		wg.Go(func() {
			for i := range 6 {
				au := 4 + 2*g + i%2
				seg := uint64(1000*(g+1) + i)
				w := payload(seg, s.SegmentPayload()/(i+1))
				if err := s.WriteSegment(bg, au, seg, w); err != nil {
					errs <- err
					return
				}
				got := make([]byte, len(w))
				if err := s.Read(bg, au, seg, 0, got); err != nil || !bytes.Equal(got, w) {
					errs <- fmt.Errorf("writer %d: read back %v", g, err)
					return
				}
			}
		})
	}
	wg.Go(func() {
		for au := range 4 {
			if _, err := s.Scrub(bg, au, uint64(au+1), len(want[au])); err != nil {
				errs <- err
				return
			}
			s.Health()
		}
	})
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for au := range want {
		checkAll(t, s, au, uint64(au+1), want[au])
	}
}

// A repair for an old segment never writes into an AU that a newer segment
// has claimed.
func TestRepairRespectsNewerSegment(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	old := payload(1, s.SegmentPayload())
	if err := s.WriteSegment(bg, 0, 1, old); err != nil {
		t.Fatal(err)
	}
	row := s.getRowBuf()
	// Rebuild row 0 of segment 1 with a page marked bad ...
	slot, off := pageAddr(s, 0, 0, 2)
	ta.flip(t, slot, off+1, 1)
	// ... after segment 2 has claimed the AU (the write itself not yet done).
	s.claim(0, 2, 0, 1)
	if k, err := s.fixRow(row, 0, 1, 0, fixErasures, 0); err != nil || k != 0 {
		t.Fatalf("repair into a claimed AU: %d %v", k, err)
	}
	if !bytes.Equal(row.shards[2][:100], old[2*PagePayload:2*PagePayload+100]) {
		t.Fatal("rebuild wrong")
	}
}

// After WriteSegment returns, the segment survives a crash that drops every
// unsynced write.
func TestCrashAfterWrite(t *testing.T) {
	fs := vfs.NewCrashableMem()
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	if err := syncDir(fs, "ssd"); err != nil { // make the directory itself durable
		t.Fatal(err)
	}
	s := ta.open(t)
	w := payload(8, s.SegmentPayload()-3)
	if err := s.WriteSegment(bg, 6, 42, w); err != nil {
		t.Fatal(err)
	}
	crashed := fs.CrashClone(vfs.CrashCloneCfg{})
	ta2 := *ta
	ta2.fs = crashed
	s2 := ta2.open(t)
	checkAll(t, s2, 6, 42, w)
	if totalRepaired(s2) != 0 {
		t.Fatal("synced segment needed repair after a crash")
	}
}

// Writing a segment a few rows at a time gives the same pages as writing it
// at once; rows already written are refused.
func TestWriteRows(t *testing.T) {
	ta := newTestArray(t, vfs.NewMem(), "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	rp := s.RowPayload()
	w := payload(11, s.SegmentPayload())
	// AUs 0 and 6 put every column on the same slot (rotation by au mod n).
	if err := s.WriteSegment(bg, 0, 500, w); err != nil {
		t.Fatal(err)
	}
	for _, part := range [][2]int{{0, 2}, {2, 3}, {5, 1}, {6, 10}} {
		if err := s.WriteRows(bg, 6, 500, part[0], w[part[0]*rp:(part[0]+part[1])*rp]); err != nil {
			t.Fatalf("rows %v: %v", part, err)
		}
	}
	for slot := range 6 {
		a := ta.readAt(t, slot, s.geo.pageOffset(0, 0), testAU)
		b := ta.readAt(t, slot, s.geo.pageOffset(6, 0), testAU)
		if !bytes.Equal(a, b) {
			t.Fatalf("slot %d: pages written row by row differ from the one-shot write", slot)
		}
	}
	checkAll(t, s, 6, 500, w)

	if err := s.WriteRows(bg, 1, 600, 0, w[:2*rp]); err != nil {
		t.Fatal(err)
	}
	for _, first := range []int{0, 1} {
		if err := s.WriteRows(bg, 1, 600, first, w[:rp]); !errors.Is(err, ErrRewrite) {
			t.Fatalf("rewrite from row %d: %v", first, err)
		}
	}
	if err := s.WriteRows(bg, 1, 600, 2, w[:rp+1]); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteRows(bg, 1, 600, 15, w[:rp+1]); !errors.Is(err, ErrRange) {
		t.Fatalf("rows past the AU: %v", err)
	}
	if err := s.WriteRows(bg, 1, 601, 0, w[:rp]); err != nil {
		t.Fatalf("a new segment on the AU: %v", err)
	}
	// The refused rewrite left segment 600's rows alone until 601 took the AU.
	if err := s.Read(bg, 1, 601, 0, make([]byte, rp)); err != nil {
		t.Fatal(err)
	}
}
