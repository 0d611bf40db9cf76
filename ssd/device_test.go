package ssd

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
)

func TestCreateOpen(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 8, testAU, testCapacity)
	d, sb, err := Open(fs, ta.path(3))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if d.Name() != "ssd03" || d.Slot() != 3 || d.Failed() != nil {
		t.Fatalf("name %q slot %d failed %v", d.Name(), d.Slot(), d.Failed())
	}
	if sb.ArrayID != ta.arrayID || sb.Devices != 8 || sb.AUSize != testAU || sb.Capacity != testCapacity || sb.Kind != devsb.KindSSD {
		t.Fatalf("superblock %+v", sb)
	}
	st, _ := fs.Stat(ta.path(3))
	if st.Size() != testCapacity {
		t.Fatalf("file size %d, want %d", st.Size(), testCapacity)
	}
	// Both copies are valid from the start: tear one, the other is read.
	ta.writeAt(t, 3, 100, []byte{1, 2, 3})
	d2, sb2, err := Open(fs, ta.path(3))
	if err != nil {
		t.Fatalf("one torn copy: %v", err)
	}
	d2.Close()
	if sb2.ArrayID != ta.arrayID {
		t.Fatal("wrong superblock after a torn copy")
	}
}

func TestCreateRefuses(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	if _, err := Create(fs, ta.path(0), ta.sb(0)); !errors.Is(err, ErrExists) {
		t.Fatalf("create over an existing device: %v", err)
	}
	for _, tc := range []struct {
		name string
		mut  func(*devsb.Superblock)
	}{
		{"AU not page multiple", func(sb *devsb.Superblock) { sb.AUSize = 10000 }},
		{"AU too small", func(sb *devsb.Superblock) { sb.AUSize = 4096 }},
		{"AU too large", func(sb *devsb.Superblock) { sb.AUSize = MaxAUSize * 2 }},
		{"no AU", func(sb *devsb.Superblock) { sb.Capacity = int64(sb.AUSize) }},
		{"too few devices", func(sb *devsb.Superblock) { sb.Devices = 5 }},
		{"too many devices", func(sb *devsb.Superblock) { sb.Devices = 25 }},
		{"slot beyond", func(sb *devsb.Superblock) { sb.Slot = 6 }},
		{"nvram", func(sb *devsb.Superblock) { sb.Kind = devsb.KindNVRAM }},
	} {
		sb := ta.sb(0)
		tc.mut(sb)
		if _, err := Create(fs, "other/x.dev", sb); err == nil {
			t.Errorf("%s: created", tc.name)
		}
	}
}

func TestOpenFailures(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	if _, _, err := Open(fs, "ssd/ssd09.dev"); !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "ssd09") {
		t.Fatalf("missing: %v", err)
	}
	// Both superblock copies bad.
	ta.writeAt(t, 2, 10, []byte{1})
	ta.writeAt(t, 2, devsb.Size+10, []byte{1})
	if _, _, err := Open(fs, ta.path(2)); !errors.Is(err, ErrBadSuperblock) || !strings.Contains(err.Error(), "ssd02") {
		t.Fatalf("bad superblocks: %v", err)
	}
	// Not a device at all.
	f, _ := fs.Create("ssd/junk.dev", vfs.WriteCategoryUnspecified)
	f.Write(make([]byte, 100))
	f.Close()
	if _, _, err := Open(fs, "ssd/junk.dev"); !errors.Is(err, ErrBadSuperblock) {
		t.Fatalf("junk: %v", err)
	}
}

// truncate rewrites a MemFS file with only its first n bytes.
func truncate(t *testing.T, fs vfs.FS, path string, n int64) {
	t.Helper()
	f, _ := fs.Open(path)
	b := make([]byte, n)
	if _, err := f.ReadAt(b, 0); err != nil {
		t.Fatal(err)
	}
	f.Close()
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(b)
	f.Close()
}

func TestOpenTruncatedRealFile(t *testing.T) {
	dir := t.TempDir()
	sb := &devsb.Superblock{ArrayID: [16]byte{1}, DeviceID: [16]byte{2}, Slot: 3, Devices: 8, AUSize: DefaultAUSize, Capacity: 64 << 20}
	path := filepath.Join(dir, "ssd03.dev")
	d, err := Create(vfs.Default, path, sb)
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if err := os.Truncate(path, 12<<20); err != nil {
		t.Fatal(err)
	}
	d, got, err := Open(vfs.Default, path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got.Slot != 3 {
		t.Fatal("superblock of a truncated device not returned")
	}
	err = d.Failed()
	if !errors.Is(err, ErrTruncated) || err.Error() != "ssd03: truncated: 12 MiB of 64 MiB" {
		t.Fatalf("failed = %v", err)
	}
}

func TestFmtBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 bytes", 1023: "1023 bytes", 1024: "1 KiB", 1536: "1.5 KiB", 12 << 20: "12 MiB", 3 << 40: "3 TiB", 5 << 50: "5120 TiB"} {
		if got := fmtBytes(n); got != want {
			t.Errorf("fmtBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestUpdateSuperblock(t *testing.T) {
	fs := vfs.NewMem()
	ta := newTestArray(t, fs, "ssd", 6, testAU, testCapacity)
	s := ta.open(t)
	share := bytes.Repeat([]byte{5}, 33)
	if err := s.UpdateSuperblock(1, func(sb *devsb.Superblock) {
		sb.Cur = devsb.KeySlot{Gen: 9, Threshold: 5, AKShare: share, WrappedMediaKey: []byte{1, 2}}
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.UpdateSuperblock(1, func(sb *devsb.Superblock) { sb.Slot = 2 }); err == nil {
		t.Fatal("identity change accepted")
	}
	if err := s.UpdateSuperblock(1, func(sb *devsb.Superblock) { sb.Extra = make([]byte, devsb.MaxField+1) }); err == nil {
		t.Fatal("oversized field accepted")
	}
	if s.Device(1).Failed() != nil {
		t.Fatal("a refused update failed the device")
	}
	gen := s.Device(1).Superblock().Generation
	s.Close()
	d, sb, err := Open(fs, ta.path(1))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	if sb.Cur.Gen != 9 || !bytes.Equal(sb.Cur.AKShare, share) || sb.Generation != gen {
		t.Fatalf("after reopen: %+v", sb.Cur)
	}
}
