package datapath

import (
	"context"
	"errors"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// diskFS is the real file system with a chosen amount of available space.
type diskFS struct {
	vfs.FS
	avail atomic.Int64
}

func (f *diskFS) GetDiskUsage(string) (vfs.DiskUsage, error) {
	return vfs.DiskUsage{AvailBytes: uint64(f.avail.Load()), TotalBytes: 1 << 40}, nil
}

func TestHostSpaceAlert(t *testing.T) {
	o, _ := faultArray(t)
	fs := &diskFS{FS: vfs.Default}
	fs.avail.Store(1 << 20) // far less than 8 sparse SSD files can grow
	o.FS = fs
	var now atomic.Int64
	now.Store(time.Now().UnixNano())
	o.Now = func() time.Time { return time.Unix(0, now.Load()) }
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	growth, ok := s.ssdGrowth()
	if !ok || growth <= 0 || growth >= int64(o.SSDs)*testCreate().SSDSize {
		t.Fatalf("growth %d (ok %v): some blocks are allocated, most are not", growth, ok)
	}
	waitEvent := func(clear bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			log.mu.Lock()
			found := false
			for _, e := range log.ev {
				found = found || (e.Code == "host.space" && e.Clear == clear)
			}
			log.mu.Unlock()
			if found {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no host.space event (clear %v): %+v", clear, log.ev)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitEvent(false)
	// Room again: the next check (30 s later by the array's clock) clears it.
	fs.avail.Store(growth * 2)
	now.Add(int64(hostSpaceEvery))
	v, _ := s.Lookup("data")
	if err := v.Write(context.Background(), make([]byte, 4096), 0); err != nil { // wakes the flusher
		t.Fatal(err)
	}
	waitEvent(true)
}

// fullFS fails writes to the SSD files with ENOSPC while full is set (the
// NVRAM is preallocated and the metadata store is left alone).
type fullFS struct {
	vfs.FS
	full atomic.Bool
}

type fullFile struct {
	vfs.File
	fs *fullFS
}

func (f fullFile) WriteAt(p []byte, off int64) (int, error) {
	if f.fs.full.Load() {
		return 0, &os.PathError{Op: "write", Path: "ssd", Err: syscall.ENOSPC}
	}
	return f.File.WriteAt(p, off)
}

func (f *fullFS) wrap(name string, file vfs.File, err error) (vfs.File, error) {
	if err != nil || !strings.Contains(name, "/ssd/") {
		return file, err
	}
	return fullFile{File: file, fs: f}, nil
}

func (f *fullFS) OpenReadWrite(name string, c vfs.DiskWriteCategory, opts ...vfs.OpenOption) (vfs.File, error) {
	file, err := f.FS.OpenReadWrite(name, c, opts...)
	return f.wrap(name, file, err)
}

func (f *fullFS) Create(name string, c vfs.DiskWriteCategory) (vfs.File, error) {
	file, err := f.FS.Create(name, c)
	return f.wrap(name, file, err)
}

// The host file system filling up is not a device failure: the devices stay
// in service, acknowledged writes stay readable (and safe in NVRAM), new
// writes get a space error, and once there is room again the flush goes
// through and writes are accepted.
func TestHostFull(t *testing.T) {
	o, data := faultArray(t)
	fs := &fullFS{FS: vfs.Default}
	o.FS = fs
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	v, _ := s.Lookup("data")
	ctx := context.Background()
	fs.full.Store(true)
	acked := make([]byte, 64<<10)
	fill(acked, 41)
	if err := v.Write(ctx, acked, 16); err != nil {
		t.Fatalf("write before the flush fails: %v", err)
	}
	copy(data[16*SectorSize:], acked)
	deadline := time.Now().Add(30 * time.Second)
	for !log.has("host.full", "array") {
		if time.Now().After(deadline) {
			t.Fatal("no host.full alert")
		}
		s.kickFlush()
		time.Sleep(10 * time.Millisecond)
	}
	for _, d := range s.Drives() {
		if d.Status != DriveHealthy {
			t.Fatalf("%s %s (%s) after ENOSPC: the host's condition failed a device", d.Name, d.Status, d.Reason)
		}
	}
	if err := v.Write(ctx, make([]byte, 4096), 0); !errors.Is(err, ErrNoSpace) {
		t.Fatalf("write while the host is full: %v", err)
	}
	checkData(t, s, data, "while the host is full")
	fs.full.Store(false)
	for {
		err := v.Write(ctx, acked[:4096], 2048)
		if err == nil {
			copy(data[2048*SectorSize:], acked[:4096])
			break
		}
		if !errors.Is(err, ErrNoSpace) || time.Now().After(deadline) {
			t.Fatalf("writes after room came back: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := s.flushAll(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	if s.Replayed() != 0 {
		t.Fatalf("%d NVRAM records replayed after a clean close", s.Replayed())
	}
	checkData(t, s, data, "after the host had room again and a restart")
}
