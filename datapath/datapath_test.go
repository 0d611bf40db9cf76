package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Test arrays are small: 6 SSDs of 16 MiB with 64 KiB AUs, 8 MiB NVRAM.
var testArrayID = [16]byte{0xa1, 0xb2, 0xc3, 0xd4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}

func testOptions(fs vfs.FS) Options {
	return Options{Dir: "arr", FS: fs, ArrayID: testArrayID, SSDs: 6, FlushDelay: 20 * time.Millisecond,
		FlushBytes: 256 << 10, PendingLimit: 4 << 20, CacheBytes: 4 << 20, KeyRotation: -1}
}

func testCreate() CreateOptions {
	return CreateOptions{SSDSize: 16 << 20, NVRAMSize: 8 << 20, AUSize: 64 << 10}
}

func newTestStore(t testing.TB, fs vfs.FS, mut ...func(*Options)) *Store {
	t.Helper()
	o := testOptions(fs)
	for _, m := range mut {
		m(&o)
	}
	if _, err := fs.Stat("arr/meta"); err != nil {
		if err := Create(o, testCreate()); err != nil {
			t.Fatal(err)
		}
	}
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Unlock(); err != nil {
		s.Close()
		t.Fatal(err)
	}
	return s
}

func reopen(t testing.TB, s *Store, fs vfs.FS) *Store {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	return newTestStore(t, fs)
}

// model is the expected content of one volume.
type model struct {
	v    *Volume
	data []byte
}

func (m *model) check(t testing.TB, what string) {
	t.Helper()
	ctx := context.Background()
	got := make([]byte, len(m.data))
	// Read in uneven pieces to exercise partial blocks.
	for off := 0; off < len(got); {
		n := min(len(got)-off, (1+off/SectorSize%7)*3*SectorSize)
		if err := m.v.Read(ctx, got[off:off+n], uint64(off/SectorSize)); err != nil {
			t.Fatalf("%s: read at %d: %v", what, off, err)
		}
		off += n
	}
	compare := func(how string) {
		if !bytes.Equal(got, m.data) {
			for i := range got {
				if got[i] != m.data[i] {
					t.Fatalf("%s (%s): first difference at byte %d (sector %d): got %#x want %#x", what, how, i, i/SectorSize, got[i], m.data[i])
				}
			}
		}
	}
	compare("small reads")
	// And in large reads (the multi-block path), some not block aligned.
	clear(got)
	for off, i := 0, 0; off < len(got); i++ {
		n := min(len(got)-off, (1<<20)+(i%3)*SectorSize)
		if err := m.v.Read(ctx, got[off:off+n], uint64(off/SectorSize)); err != nil {
			t.Fatalf("%s: large read at %d: %v", what, off, err)
		}
		off += n
	}
	compare("large reads")
}

// fill writes deterministic, compressible-ish content for a seed.
func fill(p []byte, seed uint64) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	for i := 0; i < len(p); i += 64 {
		if r.IntN(4) == 0 {
			clear(p[i:min(i+64, len(p))])
			continue
		}
		for j := i; j < min(i+64, len(p)); j++ {
			p[j] = byte('a' + r.IntN(8))
		}
	}
}

func TestWriteReadModel(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer func() { s.Close() }()
	ctx := context.Background()
	info, err := s.CreateVolume("vol1", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	m := &model{v: v, data: make([]byte, info.Size)}
	m.check(t, "empty volume")
	r := rand.New(rand.NewPCG(1, 2))
	sectors := uint64(info.Size / SectorSize)
	for i := 0; i < 400; i++ {
		n := uint64(1 + r.IntN(64))
		if r.IntN(5) == 0 {
			n = uint64(8 * (1 + r.IntN(32)))
		}
		at := uint64(r.IntN(int(sectors - n)))
		switch op := r.IntN(10); {
		case op < 6:
			buf := make([]byte, n*SectorSize)
			if r.IntN(3) == 0 {
				// a duplicate of earlier content: dedup
				fill(buf, uint64(r.IntN(4)))
			} else {
				fill(buf, r.Uint64())
			}
			if err := v.Write(ctx, buf, at); err != nil {
				t.Fatal(err)
			}
			copy(m.data[at*SectorSize:], buf)
		case op < 8:
			if err := v.Unmap(ctx, at, n); err != nil {
				t.Fatal(err)
			}
			clear(m.data[at*SectorSize : (at+n)*SectorSize])
		default:
			pat := make([]byte, SectorSize)
			if r.IntN(2) == 0 {
				fill(pat, r.Uint64())
			}
			if err := v.WriteSame(ctx, pat, at, n, r.IntN(2) == 0); err != nil {
				t.Fatal(err)
			}
			for k := at; k < at+n; k++ {
				copy(m.data[k*SectorSize:], pat)
			}
		}
		if i%97 == 0 {
			m.check(t, fmt.Sprintf("op %d", i))
		}
	}
	m.check(t, "before flush")
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	m.check(t, "after flush")
	s = reopen(t, s, fs)
	v, _ = s.Volume(info.ID)
	m.v = v
	m.check(t, "after reopen")
}

func TestBadInput(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer s.Close()
	ctx := context.Background()
	info, err := s.CreateVolume("v", 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	sectors := uint64(info.Size / SectorSize)
	buf := make([]byte, 4096)
	fill(buf, 7)
	cases := []struct {
		name string
		err  error
		do   func() error
	}{
		{"write past end", ErrOutOfRange, func() error { return v.Write(ctx, buf, sectors-1) }},
		{"read past end", ErrOutOfRange, func() error { return v.Read(ctx, buf, sectors) }},
		{"zero-length write", ErrInvalid, func() error { return v.Write(ctx, nil, 0) }},
		{"misaligned write", ErrInvalid, func() error { return v.Write(ctx, buf[:100], 0) }},
		{"misaligned read", ErrInvalid, func() error { return v.Read(ctx, buf[:513], 0) }},
		{"unmap past end", ErrOutOfRange, func() error { return v.Unmap(ctx, sectors-2, 3) }},
		{"unmap zero", ErrInvalid, func() error { return v.Unmap(ctx, 0, 0) }},
		{"write same short pattern", ErrInvalid, func() error { return v.WriteSame(ctx, buf[:10], 0, 1, false) }},
		{"write same past end", ErrOutOfRange, func() error { return v.WriteSame(ctx, buf[:512], sectors, 1, false) }},
		{"caw length mismatch", ErrInvalid, func() error { _, err := v.CompareAndWrite(ctx, 0, buf[:512], buf[:1024]); return err }},
		{"volume too big", ErrInvalid, func() error { _, err := s.CreateVolume("big", MaxVolumeSize+512); return err }},
		{"volume not sectors", ErrInvalid, func() error { _, err := s.CreateVolume("odd", 1000); return err }},
		{"duplicate name", ErrExists, func() error { _, err := s.CreateVolume("V", 1<<20); return err }},
		{"shrink without truncate", ErrInvalid, func() error { return s.ResizeVolume(info.ID, 512<<10, false) }},
		{"eradicate live volume", ErrNotDestroyed, func() error { return s.EradicateVolume(info.ID) }},
	}
	for _, c := range cases {
		if err := c.do(); !errors.Is(err, c.err) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.err)
		}
	}
	// Nothing changed: the volume is still empty and its size unchanged.
	got := make([]byte, info.Size)
	if err := v.Read(ctx, got, 0); err != nil {
		t.Fatal(err)
	}
	if !isZero(got) {
		t.Fatal("a rejected request changed data")
	}
	if v.Info().Size != info.Size {
		t.Fatal("a rejected resize changed the size")
	}
	if len(s.Volumes()) != 1 {
		t.Fatalf("volumes: %+v", s.Volumes())
	}
}

func TestCompareAndWrite(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer s.Close()
	ctx := context.Background()
	info, _ := s.CreateVolume("v", 1<<20)
	v, _ := s.Volume(info.ID)
	a := bytes.Repeat([]byte{0xaa}, 1024)
	b := bytes.Repeat([]byte{0xbb}, 1024)
	if err := v.Write(ctx, a, 10); err != nil {
		t.Fatal(err)
	}
	cmp := bytes.Clone(a)
	cmp[700] = 0
	if n, err := v.CompareAndWrite(ctx, 10, cmp, b); err != nil || n != 700 {
		t.Fatalf("miscompare: n=%d err=%v", n, err)
	}
	if n, err := v.CompareAndWrite(ctx, 10, a, b); err != nil || n != -1 {
		t.Fatalf("compare equal: n=%d err=%v", n, err)
	}
	got := make([]byte, 1024)
	if err := v.Read(ctx, got, 10); err != nil || !bytes.Equal(got, b) {
		t.Fatalf("after caw: %v", err)
	}
}

func TestSnapshotsAndCopies(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer func() { s.Close() }()
	ctx := context.Background()
	info, _ := s.CreateVolume("src", 2<<20)
	v, _ := s.Volume(info.ID)
	orig := make([]byte, info.Size)
	fill(orig, 42)
	if err := v.Write(ctx, orig, 0); err != nil {
		t.Fatal(err)
	}
	snap, err := s.Snapshot(info.ID, "s1")
	if err != nil {
		t.Fatal(err)
	}
	if snap.Name != "src.s1" || !snap.Snapshot {
		t.Fatalf("snapshot: %+v", snap)
	}
	// Overwrite half the volume after the snapshot (some of it before flush).
	over := make([]byte, info.Size/2)
	fill(over, 43)
	if err := v.Write(ctx, over, 100); err != nil {
		t.Fatal(err)
	}
	cur := bytes.Clone(orig)
	copy(cur[100*SectorSize:], over)
	sv, _ := s.Volume(snap.ID)
	(&model{v: sv, data: orig}).check(t, "snapshot")
	(&model{v: v, data: cur}).check(t, "volume")
	// A copy of the snapshot and a copy of the live volume.
	c1, err := s.CopyVolume(snap.ID, "fromsnap", false)
	if err != nil {
		t.Fatal(err)
	}
	c2, err := s.CopyVolume(info.ID, "fromvol", false)
	if err != nil {
		t.Fatal(err)
	}
	cv1, _ := s.Volume(c1.ID)
	cv2, _ := s.Volume(c2.ID)
	// Write to the copies and to the source: all independent.
	x := bytes.Repeat([]byte{7}, 8192)
	if err := cv1.Write(ctx, x, 0); err != nil {
		t.Fatal(err)
	}
	y := bytes.Repeat([]byte{9}, 8192)
	if err := v.Write(ctx, y, 8); err != nil {
		t.Fatal(err)
	}
	e1 := bytes.Clone(orig)
	copy(e1, x)
	e2 := bytes.Clone(cur)
	copy(cur[8*SectorSize:], y)
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	(&model{v: cv1, data: e1}).check(t, "copy of snapshot")
	(&model{v: cv2, data: e2}).check(t, "copy of volume")
	(&model{v: v, data: cur}).check(t, "source")
	(&model{v: sv, data: orig}).check(t, "snapshot after copies")
	// Destroy and eradicate the snapshot: the copy made from it survives.
	if err := s.DestroyVolume(snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := sv.Read(ctx, make([]byte, 512), 0); !errors.Is(err, ErrDestroyed) {
		t.Fatalf("read of destroyed snapshot: %v", err)
	}
	if err := s.RecoverVolume(snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DestroyVolume(snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.EradicateVolume(snap.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	(&model{v: cv1, data: e1}).check(t, "copy after snapshot eradicated")
	(&model{v: v, data: cur}).check(t, "source after snapshot eradicated")
	s = reopen(t, s, fs)
	v, _ = s.Volume(info.ID)
	cv1, _ = s.Volume(c1.ID)
	(&model{v: cv1, data: e1}).check(t, "copy after reopen")
	(&model{v: v, data: cur}).check(t, "source after reopen")
	checkSpace(t, s)
}

func TestResizeTruncate(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	defer s.Close()
	ctx := context.Background()
	info, _ := s.CreateVolume("v", 1<<20)
	v, _ := s.Volume(info.ID)
	data := make([]byte, info.Size)
	fill(data, 5)
	if err := v.Write(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.ResizeVolume(info.ID, 2<<20, false); err != nil {
		t.Fatal(err)
	}
	grown := append(bytes.Clone(data), make([]byte, 1<<20)...)
	(&model{v: v, data: grown}).check(t, "grown")
	// Shrink to an odd sector count, then grow back: the cut part reads zero.
	if err := s.ResizeVolume(info.ID, 300*SectorSize+512*3, true); err != nil {
		t.Fatal(err)
	}
	if v.Info().Size != 303*SectorSize {
		t.Fatalf("size %d", v.Info().Size)
	}
	if err := s.ResizeVolume(info.ID, 1<<20, false); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 1<<20)
	copy(want, data[:303*SectorSize])
	(&model{v: v, data: want}).check(t, "shrunk and regrown")
}

// checkSpace asserts the space report adds up.
func checkSpace(t testing.TB, s *Store) Space {
	t.Helper()
	sp, _, err := s.Space()
	if err != nil {
		t.Fatal(err)
	}
	if sp.Volumes+sp.Snapshots+sp.Shared+sp.System != sp.Used {
		t.Fatalf("space does not add up: %+v", sp)
	}
	if sp.Used > sp.Capacity || sp.System < 0 || sp.Snapshots < 0 {
		t.Fatalf("space out of range: %+v", sp)
	}
	return sp
}

// xorCipher is a stand-in host cipher for the stage's plumbing: each sector
// is XORed with its number. (The real dm-crypt ciphers come with end-to-end
// encryption; this checks the data path runs the stage both ways, on the
// right sectors, and stores only what the stage produced.)
type xorCipher struct{}

func (xorCipher) Decrypt(sector uint64, p []byte) error { return xorSectors(sector, p) }
func (xorCipher) Encrypt(sector uint64, p []byte) error { return xorSectors(sector, p) }
func xorSectors(sector uint64, p []byte) error {
	for i := range p {
		p[i] ^= byte(sector+uint64(i/SectorSize)) | 1
	}
	return nil
}

func TestHostKeyStage(t *testing.T) {
	s := newTestStore(t, vfs.NewMem())
	defer s.Close()
	ctx := context.Background()
	info, _ := s.CreateVolume("e2e", 1<<20)
	v, _ := s.Volume(info.ID)
	plain := make([]byte, 8192)
	fill(plain, 11)
	host := bytes.Clone(plain)
	xorSectors(40, host) // what the host sends: its own encryption of plain
	v.SetHostCipher(xorCipher{})
	if err := v.Write(ctx, host, 40); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Without the stage the array shows what it stored: the host's plaintext.
	v.SetHostCipher(nil)
	got := make([]byte, len(plain))
	if err := v.Read(ctx, got, 40); err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("stored data is not the decrypted host data (%v)", err)
	}
	// With the stage, reads come back encrypted for the host, byte-exact.
	v.SetHostCipher(xorCipher{})
	if err := v.Read(ctx, got, 40); err != nil || !bytes.Equal(got, host) {
		t.Fatalf("read is not re-encrypted for the host (%v)", err)
	}
}

func TestCleanShutdownReplaysNothing(t *testing.T) {
	fs := vfs.NewMem()
	s := newTestStore(t, fs)
	info, _ := s.CreateVolume("v", 4<<20)
	v, _ := s.Volume(info.ID)
	data := make([]byte, 2<<20)
	fill(data, 3)
	if err := v.Write(context.Background(), data, 0); err != nil {
		t.Fatal(err)
	}
	// No explicit flush: Close must drain NVRAM into segments.
	s = reopen(t, s, fs)
	defer s.Close()
	if n := s.Replayed(); n != 0 {
		t.Fatalf("a clean shutdown left %d NVRAM records to replay", n)
	}
	v, _ = s.Volume(info.ID)
	(&model{v: v, data: append(data, make([]byte, 2<<20)...)}).check(t, "after clean shutdown")
}

// GC moves live blocks; map entries keep their (now stale) location hints,
// and reads must find the blocks at their new places through the dedup
// index, in single-block and multi-block reads.
func TestReadsAfterGCMovesBlocks(t *testing.T) {
	s := newTestStore(t, vfs.NewMem())
	defer s.Close()
	ctx := context.Background()
	info, _ := s.CreateVolume("v", 2<<20)
	v, _ := s.Volume(info.ID)
	data := make([]byte, info.Size)
	fill(data, 77)
	if err := v.Write(ctx, data, 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	// Overwrite every other block: every segment becomes half dead.
	for b := 0; b < int(info.Size/BlockSize); b += 2 {
		blk := data[b*BlockSize : (b+1)*BlockSize]
		fill(blk, uint64(1000+b))
		if err := v.Write(ctx, blk, uint64(b*sectorsPerBlock)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Flush(); err != nil {
		t.Fatal(err)
	}
	before := s.gcStats.segments.Load()
	if err := s.gcFromTest(); err != nil {
		t.Fatal(err)
	}
	if s.gcStats.segments.Load() == before || s.gcStats.bytes.Load() == 0 {
		t.Fatal("GC moved nothing")
	}
	(&model{v: v, data: data}).check(t, "after GC")
	checkSpace(t, s)
}
