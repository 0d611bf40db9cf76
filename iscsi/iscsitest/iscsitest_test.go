package iscsitest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"

	"vfa/array"
)

var ctx = context.Background()

func TestMemDeviceThin(t *testing.T) {
	d := NewMemDevice("S", "v", 1024)
	buf := make([]byte, 4096)
	for i := range buf {
		buf[i] = 0xee
	}
	if err := d.ReadAt(ctx, buf, 100); err != nil || !bytes.Equal(buf, make([]byte, 4096)) {
		t.Fatalf("unwritten read: %v", err)
	}
	if d.MappedChunks() != 0 {
		t.Fatal("a read allocated")
	}
	data := bytes.Repeat([]byte{7}, 1024)
	if err := d.WriteAt(ctx, data, 3); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 2048)
	d.ReadAt(ctx, got, 2)
	if !bytes.Equal(got[512:1536], data) || !bytes.Equal(got[:512], make([]byte, 512)) {
		t.Fatal("read back differs")
	}
	m, n, err := d.Mapped(ctx, 0, 1024)
	if err != nil || !m || n != 8 {
		t.Fatalf("Mapped(0) = %v %d %v, want mapped 8 (one 4 KiB chunk)", m, n, err)
	}
	m, n, _ = d.Mapped(ctx, 8, 1024)
	if m || n != 1016 {
		t.Fatalf("Mapped(8) = %v %d", m, n)
	}
	// A partial unmap zeroes; a whole-chunk unmap deallocates.
	d.Unmap(ctx, 3, 1)
	d.ReadAt(ctx, got[:512], 3)
	if !bytes.Equal(got[:512], make([]byte, 512)) {
		t.Fatal("unmapped sector not zero")
	}
	d.Unmap(ctx, 0, 8)
	if d.MappedChunks() != 0 {
		t.Fatal("chunk still mapped")
	}
	// WriteSame with a pattern, and with zeros (deallocates).
	p := bytes.Repeat([]byte{0xa5}, 512)
	d.WriteSame(ctx, p, 16, 4, false)
	d.ReadAt(ctx, got, 16)
	if !bytes.Equal(got[:2048], bytes.Repeat([]byte{0xa5}, 2048)) {
		t.Fatal("write same")
	}
	d.WriteSame(ctx, make([]byte, 512), 16, 8, true)
	if d.MappedChunks() != 0 {
		t.Fatal("zero write same kept the chunk")
	}
}

func TestMemDeviceErrors(t *testing.T) {
	d := NewMemDevice("S", "v", 64)
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"beyond", d.ReadAt(ctx, make([]byte, 1024), 63), array.ErrOutOfRange},
		{"partial sector", d.WriteAt(ctx, make([]byte, 100), 0), array.ErrInvalid},
		{"empty", d.ReadAt(ctx, nil, 0), array.ErrInvalid},
		{"unmap beyond", d.Unmap(ctx, 60, 8), array.ErrOutOfRange},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	d.InjectFault(Fault{LBA: 10, Sectors: 2, Op: OpRead, Err: array.ErrMedium})
	if err := d.ReadAt(ctx, make([]byte, 4096), 4); !errors.Is(err, array.ErrMedium) {
		t.Fatalf("fault not hit: %v", err)
	}
	if err := d.ReadAt(ctx, make([]byte, 512), 12); err != nil {
		t.Fatalf("fault outside its range: %v", err)
	}
	if err := d.WriteAt(ctx, make([]byte, 512), 10); err != nil {
		t.Fatalf("read fault hit a write: %v", err)
	}
	d.ClearFaults()
	if err := d.ReadAt(ctx, make([]byte, 512), 10); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := d.ReadAt(cctx, make([]byte, 512), 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled context: %v", err)
	}
}

func TestMemDeviceCompareAndWriteAtomic(t *testing.T) {
	d := NewMemDevice("S", "v", 8)
	zero := make([]byte, 512)
	// Many writers race to claim the block; exactly one wins.
	var wg sync.WaitGroup
	wins := make(chan int, 32)
	for i := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := d.CompareAndWrite(ctx, 0, zero, bytes.Repeat([]byte{byte(i + 1)}, 512))
			if err != nil {
				t.Error(err)
			}
			if at < 0 {
				wins <- i
			}
		}()
	}
	wg.Wait()
	close(wins)
	if n := len(wins); n != 1 {
		t.Fatalf("%d compare-and-writes won", n)
	}
	w := <-wins
	got := make([]byte, 512)
	d.ReadAt(ctx, got, 0)
	if got[0] != byte(w+1) {
		t.Fatalf("block holds %d, winner %d", got[0], w+1)
	}
	at, _ := d.CompareAndWrite(ctx, 0, zero, zero)
	if at != 0 {
		t.Fatalf("miscompare offset %d", at)
	}
}

func TestFrontend(t *testing.T) {
	f := NewFrontend("iqn.t")
	ch, stop := f.Changes()
	defer stop()
	d := NewMemDevice("S", "v", 8)
	f.SetHost(Host{Name: "h", Initiators: []string{"iqn.a"}, CHAP: array.CHAP{User: "u"},
		LUNs: []array.LUN{{Number: 2, Device: d}}})
	<-ch
	if h, c, ok := f.Host("iqn.a"); !ok || h != "h" || c.User != "u" {
		t.Fatalf("Host: %s %v %v", h, c, ok)
	}
	if _, _, ok := f.Host("iqn.b"); ok {
		t.Fatal("unknown initiator found")
	}
	if l := f.LUNs("iqn.a"); len(l) != 1 || l[0].Number != 2 {
		t.Fatalf("LUNs %v", l)
	}
	if l := f.LUNs("iqn.b"); len(l) != 0 {
		t.Fatalf("LUNs of nobody %v", l)
	}
	f.SetReady(array.ErrLocked)
	if !errors.Is(f.Ready(), array.ErrLocked) {
		t.Fatal("Ready")
	}
	f.RemoveHost("h")
	<-ch
	if l := f.LUNs("iqn.a"); len(l) != 0 {
		t.Fatal("removed host still maps")
	}
}

// TestMemDeviceAtomicWrites: a WriteAt of up to AtomicMax bytes is never
// seen half done by a concurrent ReadAt.
func TestMemDeviceAtomicWrites(t *testing.T) {
	var d array.BlockDevice = NewMemDevice("S", "v", 4096)
	n := d.AtomicMax()
	if n != DefaultAtomicMax {
		t.Fatalf("AtomicMax %d, want %d", n, DefaultAtomicMax)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := range 50 {
			if err := d.WriteAt(ctx, bytes.Repeat([]byte{byte(1 + i%2)}, n), 8); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	got := make([]byte, n)
	for range 50 {
		if err := d.ReadAt(ctx, got, 8); err != nil {
			t.Fatal(err)
		}
		if bytes.Count(got, got[:1]) != n {
			t.Fatal("a read saw part of a write")
		}
	}
	wg.Wait()
	d.(*MemDevice).SetAtomicMax(-5)
	if d.AtomicMax() != 0 {
		t.Fatalf("SetAtomicMax(-5): AtomicMax %d", d.AtomicMax())
	}
}
