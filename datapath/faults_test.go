package datapath

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
)

// Device faults: missing, truncated, corrupted, foreign and wrong-version
// device files, flipped bits in stored blocks, and a full array.

type eventLog struct {
	mu sync.Mutex
	ev []Event
}

func (l *eventLog) add(e Event) { l.mu.Lock(); l.ev = append(l.ev, e); l.mu.Unlock() }
func (l *eventLog) has(code, component string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, e := range l.ev {
		if e.Code == code && (component == "" || e.Component == component) {
			return true
		}
	}
	return false
}

// faultArray makes an array in a temp dir on real files with one volume of
// known content, flushed to the SSDs, and closes it.
func faultArray(t *testing.T) (Options, []byte) { return faultArrayN(t, 8) }

func faultArrayN(t *testing.T, n int) (Options, []byte) {
	dir := t.TempDir()
	o := testOptions(vfs.Default)
	o.Dir = dir
	o.SSDs = n
	if err := Create(o, testCreate()); err != nil {
		t.Fatal(err)
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(); err != nil {
		t.Fatal(err)
	}
	info, err := s.CreateVolume("data", 2<<20)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	data := make([]byte, info.Size)
	fill(data, 99)
	if err := v.Write(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil { // flushes everything to segments
		t.Fatal(err)
	}
	return o, data
}

func openWith(t *testing.T, o Options, log *eventLog) (*Store, error) {
	o.Events = log.add
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func checkData(t *testing.T, s *Store, data []byte, what string) {
	t.Helper()
	v, err := s.Lookup("data")
	if err != nil {
		t.Fatal(err)
	}
	(&model{v: v, data: data}).check(t, what)
}

func TestMissingDevices(t *testing.T) {
	for _, missing := range [][]int{{0}, {3}, {1, 4}, {0, 7}} {
		t.Run(fmt.Sprint(missing), func(t *testing.T) {
			o, data := faultArray(t)
			for _, slot := range missing {
				if err := os.Remove(ssdPath(o.Dir, slot)); err != nil {
					t.Fatal(err)
				}
			}
			var log eventLog
			s, err := openWith(t, o, &log)
			if err != nil {
				t.Fatalf("degraded array did not unlock: %v", err)
			}
			defer func() { s.Close() }()
			checkData(t, s, data, "degraded read")
			// The device set changed: the array key was rotated once.
			if g := s.KeyGeneration(); g != 2 || !log.has("keys.rotated", "") {
				t.Errorf("key generation %d after a device went missing, want 2", g)
			}
			for _, slot := range missing {
				if !log.has("device.failed", SSDName(slot)) {
					t.Errorf("no alert for missing %s", SSDName(slot))
				}
			}
			// Writes still work while degraded and read back after a flush.
			v, _ := s.Lookup("data")
			more := make([]byte, 64<<10)
			fill(more, 5)
			if err := v.Write(context.Background(), more, 8); err != nil {
				t.Fatal(err)
			}
			copy(data[8*SectorSize:], more)
			if err := s.flushAll(); err != nil {
				t.Fatal(err)
			}
			checkData(t, s, data, "degraded write")
			if sp := checkSpace(t, s); sp.Parity != float64(2-len(missing))/2 {
				t.Errorf("parity %.2f with %d missing", sp.Parity, len(missing))
			}
			// Another boot with the same devices does not rotate again.
			s.Close()
			s, err = openWith(t, o, &log)
			if err != nil {
				t.Fatal(err)
			}
			if g := s.KeyGeneration(); g != 2 {
				t.Errorf("key generation %d after an unchanged reboot, want 2", g)
			}
			checkData(t, s, data, "degraded reboot")
		})
	}
	t.Run("three", func(t *testing.T) {
		o, _ := faultArray(t)
		for _, slot := range []int{0, 2, 4} {
			os.Remove(ssdPath(o.Dir, slot))
		}
		var log eventLog
		_, err := openWith(t, o, &log)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "3 of 8 SSDs") {
			t.Fatalf("want a locked error naming 3 of 8 SSDs, got %v", err)
		}
	})
	// With 6 SSDs the key threshold is 5 (at least half plus two): two
	// missing devices leave too few shares, and the array says so.
	t.Run("six-two", func(t *testing.T) {
		o, _ := faultArrayN(t, 6)
		os.Remove(ssdPath(o.Dir, 1))
		os.Remove(ssdPath(o.Dir, 4))
		var log eventLog
		_, err := openWith(t, o, &log)
		if !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "4 of 6 shares available, 5 needed") {
			t.Fatalf("want a locked error counting shares, got %v", err)
		}
	})
}

func TestTruncatedAndCorruptDevices(t *testing.T) {
	o, data := faultArray(t)
	// ssd01 truncated to half, ssd04 with garbage over both superblocks.
	if err := os.Truncate(ssdPath(o.Dir, 1), 8<<20); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(ssdPath(o.Dir, 4), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	junk := make([]byte, devsb.DataOffset)
	for i := range junk {
		junk[i] = byte(i * 7)
	}
	f.WriteAt(junk, 0)
	f.Close()
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	checkData(t, s, data, "truncated + corrupt superblock")
	if !log.has("device.failed", "ssd04") {
		t.Error("no alert for the corrupt superblock")
	}
	s.Close()
}

func TestTornSuperblockFallsBack(t *testing.T) {
	o, data := faultArray(t)
	// Find the newest copy of ssd02's superblock and tear it.
	f, err := os.OpenFile(ssdPath(o.Dir, 2), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	sb, err := devsb.Read(f)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteAt(make([]byte, 512), int64(sb.Generation%devsb.Copies)*devsb.Size+1024)
	f.Close()
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkData(t, s, data, "torn superblock")
	if log.has("device.failed", "ssd02") {
		t.Error("a torn superblock copy should fall back to the other copy, not fail the device")
	}
}

func TestWrongVersionAndForeignDevice(t *testing.T) {
	alerts := func(log *eventLog) string {
		log.mu.Lock()
		defer log.mu.Unlock()
		var msgs []string
		for _, e := range log.ev {
			msgs = append(msgs, e.Component+": "+e.Message)
		}
		return strings.Join(msgs, "\n")
	}
	t.Run("other array and wrong version", func(t *testing.T) {
		o, data := faultArray(t)
		third, _ := faultArray(t)
		// ssd05 from another array, ssd03 claims format version 9.
		f, err := os.OpenFile(ssdPath(third.Dir, 5), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		sb, err := devsb.Read(f)
		if err != nil {
			t.Fatal(err)
		}
		sb.ArrayID[0] ^= 0xff
		if err := devsb.Write(f, sb); err != nil {
			t.Fatal(err)
		}
		f.Close()
		b, err := os.ReadFile(ssdPath(third.Dir, 5))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ssdPath(o.Dir, 5), b, 0o644); err != nil {
			t.Fatal(err)
		}
		f, err = os.OpenFile(ssdPath(o.Dir, 3), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		f.WriteAt([]byte{9, 0, 0, 0}, 8)
		f.WriteAt([]byte{9, 0, 0, 0}, devsb.Size+8)
		f.Close()
		var log eventLog
		s, err := openWith(t, o, &log)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkData(t, s, data, "foreign + wrong version")
		all := alerts(&log)
		if !strings.Contains(all, "ssd05: belongs to another array") || !strings.Contains(all, "version 9") {
			t.Errorf("alerts do not say why:\n%s", all)
		}
	})
	t.Run("same id, other keys", func(t *testing.T) {
		o, data := faultArray(t)
		other, _ := faultArray(t) // a re-initialised array with the same id
		b, err := os.ReadFile(ssdPath(other.Dir, 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(ssdPath(o.Dir, 0), b, 0o644); err != nil {
			t.Fatal(err)
		}
		var log eventLog
		s, err := openWith(t, o, &log)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		checkData(t, s, data, "device with other keys")
		if all := alerts(&log); !strings.Contains(all, "ssd00: device rejected at unlock") {
			t.Errorf("alerts do not say why:\n%s", all)
		}
	})
}

func TestBitFlipsRepaired(t *testing.T) {
	o, data := faultArray(t)
	// Flip bits all over the AU region of two devices (not the superblocks).
	r := rand.New(rand.NewPCG(5, 6))
	for _, slot := range []int{1, 2} {
		f, err := os.OpenFile(ssdPath(o.Dir, slot), os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		st, _ := f.Stat()
		for i := 0; i < 200; i++ {
			off := int64(64<<10) + r.Int64N(st.Size()-(64<<10))
			b := []byte{0}
			f.ReadAt(b, off)
			b[0] ^= 1 << r.IntN(8)
			f.WriteAt(b, off)
		}
		f.Close()
	}
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	checkData(t, s, data, "bit flips")
	checkData(t, s, data, "bit flips, second read")
}

func TestDeviceFull(t *testing.T) {
	fs := vfs.NewMem()
	var log eventLog
	s := newTestStore(t, fs, func(o *Options) { o.Events = log.add })
	defer func() { s.Close() }()
	ctx := context.Background()
	info, err := s.CreateVolume("big", 256<<20)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	// Incompressible unique data until the array says it is full.
	buf := make([]byte, 256<<10)
	r := rand.New(rand.NewPCG(1, 1))
	var written uint64
	var full error
	for written < uint64(info.Size) {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if err := v.Write(ctx, buf, written/SectorSize); err != nil {
			full = err
			break
		}
		written += uint64(len(buf))
	}
	if !errors.Is(full, ErrNoSpace) {
		t.Fatalf("writing %d bytes ended with %v, want ErrNoSpace", written, full)
	}
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	// Jobs run before the space check of a flusher round: the second job
	// runs only after a round that checked space.
	for i := 0; i < 2; i++ {
		if err := s.runJob(func(*flushBatch) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if !log.has("space.low", "array") {
		t.Error("no free space alert on a full array")
	}
	// Everything acknowledged reads back (the reads keep working when full).
	r = rand.New(rand.NewPCG(1, 1))
	got := make([]byte, len(buf))
	for off := uint64(0); off < written; off += uint64(len(buf)) {
		for i := range buf {
			buf[i] = byte(r.Uint32())
		}
		if err := v.Read(ctx, got, off/SectorSize); err != nil {
			t.Fatal(err)
		}
		if string(got) != string(buf) {
			t.Fatalf("data at %d lost after the array filled up", off)
		}
	}
	sp1 := checkSpace(t, s)
	// Unmap half: GC reclaims the space and writes are accepted again.
	if err := v.Unmap(ctx, 0, written/2/SectorSize); err != nil {
		t.Fatal(err)
	}
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20 && s.seg.freeBytes() < int64(written/4); i++ {
		if err := s.runJob(func(fb *flushBatch) error { return nil }); err != nil {
			t.Fatal(err)
		}
		if err := s.gcFromTest(); err != nil {
			t.Fatal(err)
		}
	}
	sp2 := checkSpace(t, s)
	if sp2.Used >= sp1.Used {
		t.Fatalf("GC freed nothing: used %d -> %d", sp1.Used, sp2.Used)
	}
	if err := v.Write(ctx, buf, 0); err != nil {
		t.Fatalf("write after GC: %v", err)
	}
}

var _ = filepath.Join

func TestSystemKeyWhileLockedAndDegraded(t *testing.T) {
	o, _ := faultArray(t)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	k1, err := s.SystemKey("certificates")
	if err != nil {
		t.Fatal(err)
	}
	if locked, _ := s.Locked(); !locked {
		t.Fatal("a store that was not unlocked says it is unlocked")
	}
	s.Close()
	os.Remove(ssdPath(o.Dir, 2))
	os.Remove(ssdPath(o.Dir, 6))
	s, err = Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k2, err := s.SystemKey("certificates")
	if err != nil || string(k1) != string(k2) {
		t.Fatalf("system key with two SSDs missing: %v (same: %v)", err, string(k1) == string(k2))
	}
	if other, _ := s.SystemKey("phonehome"); string(other) == string(k2) {
		t.Fatal("labels must derive different keys")
	}
}
