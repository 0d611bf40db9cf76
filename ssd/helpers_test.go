package ssd

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
)

// testArray is a directory of device files for one array.
type testArray struct {
	fs       vfs.FS
	dir      string
	n        int
	auSize   int64
	capacity int64
	arrayID  [16]byte
	keys     [][]byte
}

const (
	testAU       = 64 << 10 // 16 rows
	testCapacity = 9 * testAU
)

func newTestArray(t testing.TB, fs vfs.FS, dir string, n int, auSize, capacity int64) *testArray {
	t.Helper()
	ta := &testArray{fs: fs, dir: dir, n: n, auSize: auSize, capacity: capacity}
	ta.arrayID = [16]byte{0xa7, byte(n), 1, 2, 3}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		key := make([]byte, MediaKeySize)
		for j := range key {
			key[j] = byte(i*31 + j)
		}
		ta.keys = append(ta.keys, key)
		d, err := Create(fs, ta.path(i), ta.sb(i))
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
	}
	return ta
}

func (ta *testArray) path(i int) string { return ta.fs.PathJoin(ta.dir, fmt.Sprintf("ssd%02d.dev", i)) }

func (ta *testArray) sb(i int) *devsb.Superblock {
	return &devsb.Superblock{
		Kind: devsb.KindSSD, ArrayID: ta.arrayID, DeviceID: [16]byte{0xd, byte(i), ta.arrayID[1]},
		Slot: uint16(i), Devices: uint16(ta.n), AUSize: uint32(ta.auSize), Capacity: ta.capacity,
	}
}

// open opens every device except those in missing and builds a set.
func (ta *testArray) open(t testing.TB, missing ...int) *Set {
	t.Helper()
	s, err := ta.tryOpen(missing...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func (ta *testArray) tryOpen(missing ...int) (*Set, error) {
	devs := make([]*Device, ta.n)
	skip := map[int]bool{}
	for _, m := range missing {
		skip[m] = true
	}
	for i := range ta.n {
		if skip[i] {
			continue
		}
		d, _, err := Open(ta.fs, ta.path(i))
		if err != nil {
			return nil, err
		}
		devs[i] = d
	}
	s, err := NewSet(devs, ta.keys)
	if err != nil {
		for _, d := range devs {
			if d != nil {
				d.Close()
			}
		}
	}
	return s, err
}

// readFile and writeFile access raw device bytes behind the set's back.
func (ta *testArray) readAt(t testing.TB, slot int, off int64, n int) []byte {
	t.Helper()
	f, err := ta.fs.Open(ta.path(slot))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, n)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	return b
}

func (ta *testArray) writeAt(t testing.TB, slot int, off int64, b []byte) {
	t.Helper()
	f, err := ta.fs.OpenReadWrite(ta.path(slot), vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// flip inverts one bit of a device file.
func (ta *testArray) flip(t testing.TB, slot int, off int64, bit uint) {
	t.Helper()
	b := ta.readAt(t, slot, off, 1)
	b[0] ^= 1 << (bit % 8)
	ta.writeAt(t, slot, off, b)
}

// pageAddr is the slot and device offset of page (row, col) of AU au.
func pageAddr(s *Set, au, row, col int) (slot int, off int64) {
	return s.geo.slotOf(au, col), s.geo.pageOffset(au, row)
}

func payload(seed uint64, n int) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

// mustRead reads [off, off+n) and compares it with want.
func mustRead(t testing.TB, s *Set, au int, seg uint64, want []byte, off int64, n int) {
	t.Helper()
	got := make([]byte, n)
	if err := s.Read(context.Background(), au, seg, off, got); err != nil {
		t.Fatalf("read au %d seg %d [%d,+%d): %v", au, seg, off, n, err)
	}
	if !bytes.Equal(got, want[off:off+int64(n)]) {
		t.Fatalf("read au %d seg %d [%d,+%d): wrong data", au, seg, off, n)
	}
}

// checkAll reads the whole payload and a spread of sub-ranges.
func checkAll(t testing.TB, s *Set, au int, seg uint64, want []byte) {
	t.Helper()
	mustRead(t, s, au, seg, want, 0, len(want))
	r := rand.New(rand.NewPCG(uint64(au), seg))
	for range 12 {
		off := r.IntN(len(want))
		n := 1 + r.IntN(min(len(want)-off, 3*PagePayload))
		mustRead(t, s, au, seg, want, int64(off), n)
	}
}

func totalRepaired(s *Set) (n uint64) {
	for _, h := range s.Health() {
		n += h.RepairedPages
	}
	return n
}
