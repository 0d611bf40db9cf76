package datapath

import (
	"context"
	"sync/atomic"
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
