package datapath

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// Writes of at most MaxAtomic bytes are atomic to concurrent readers: a read
// of the same range sees one write entirely, never parts of two, while
// writes keep coming and flushes move them from NVRAM to the segments.
func TestReadsNeverTorn(t *testing.T) {
	s := newTestStore(t, vfs.NewMem())
	info, err := s.CreateVolume("atomic", 4<<20)
	if err != nil {
		t.Fatal(err)
	}
	v, _ := s.Volume(info.ID)
	ctx := context.Background()
	regions := []struct{ sector, sectors uint64 }{
		{3, 128},     // unaligned: partial first and last blocks
		{1024, 128},  // 16 whole blocks: the range read path
		{4096, 16},   // two blocks
		{6000, 1500}, // unaligned, 188 blocks
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes, reads atomic.Int64
	fail := make(chan string, 1)
	for ri, r := range regions {
		buf := make([]byte, r.sectors*SectorSize)
		if err := v.Write(ctx, buf, r.sector); err != nil { // all zeros to start
			t.Fatal(err)
		}
		wg.Go(func() {
			for k := byte(1); ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				for i := range buf {
					buf[i] = k
				}
				if err := v.Write(ctx, buf, r.sector); err != nil {
					fail <- fmt.Sprintf("write: %v", err)
					return
				}
				writes.Add(1)
			}
		})
		for range 2 {
			wg.Go(func() {
				got := make([]byte, r.sectors*SectorSize)
				for {
					select {
					case <-stop:
						return
					default:
					}
					if err := v.Read(ctx, got, r.sector); err != nil {
						fail <- fmt.Sprintf("read: %v", err)
						return
					}
					reads.Add(1)
					for i, c := range got {
						if c != got[0] {
							select {
							case fail <- fmt.Sprintf("region %d: torn read: byte 0 is from write %d, byte %d from write %d", ri, got[0], i, c):
							default:
							}
							return
						}
					}
				}
			})
		}
	}
	// At least 2 s, and until enough writes collided with reads (the race
	// detector slows everything down), at most 30 s.
	start := time.Now()
	for time.Since(start) < 2*time.Second || (writes.Load() < 100 && time.Since(start) < 30*time.Second) {
		select {
		case msg := <-fail:
			close(stop)
			wg.Wait()
			t.Fatal(msg)
		case <-time.After(50 * time.Millisecond):
		}
	}
	close(stop)
	wg.Wait()
	select {
	case msg := <-fail:
		t.Fatal(msg)
	default:
	}
	if writes.Load() < 100 || reads.Load() < 100 {
		t.Fatalf("too little concurrency to mean anything: %d writes, %d reads", writes.Load(), reads.Load())
	}
	t.Logf("%d writes, %d reads, %d reads redone", writes.Load(), reads.Load(), s.stats.rereads.Load())
}

// Writes elsewhere in the volume do not make multi-block reads redo their
// work: only writes to the regions a read covers count.
func TestRereadsOnlyOnOverlap(t *testing.T) {
	s := newTestStore(t, vfs.NewMem())
	info, _ := s.CreateVolume("far", 4<<20)
	v, _ := s.Volume(info.ID)
	ctx := context.Background()
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writes atomic.Int64
	wg.Go(func() {
		buf := make([]byte, 64<<10)
		for k := byte(0); ; k++ {
			select {
			case <-stop:
				return
			default:
			}
			buf[0] = k
			if err := v.Write(ctx, buf, 0); err != nil { // blocks 0-15: region 0
				t.Error(err)
				return
			}
			writes.Add(1)
		}
	})
	got := make([]byte, 64<<10)
	for i := 0; i < 2000 || writes.Load() < 20; i++ {
		// blocks 32-47: region 2, another bucket
		if err := v.Read(ctx, got, 32*sectorsPerBlock); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if n := s.stats.rereads.Load(); n != 0 {
		t.Fatalf("%d reads redone for writes to another region", n)
	}
}
