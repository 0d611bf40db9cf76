package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"
)

func BenchmarkWritePDU(b *testing.B) {
	var h bhs
	h[0] = opDataIn
	data := make([]byte, 4096)
	for _, digests := range []bool{false, true} {
		b.Run(fmt.Sprintf("4k/digests=%v", digests), func(b *testing.B) {
			w := bufio.NewWriterSize(io.Discard, 64<<10)
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				writePDU(w, &h, data, digests, digests)
			}
		})
	}
}

func BenchmarkReadPDU(b *testing.B) {
	var h bhs
	h[0] = opDataOut
	raw := encodePDU(b, h, make([]byte, 4096), true, true)
	stream := bytes.Repeat(raw, 256)
	dst := make([]byte, 4096)
	b.SetBytes(4096)
	b.ReportAllocs()
	r := bytes.NewReader(stream)
	pr := pduReader{r: bufio.NewReaderSize(r, 64<<10), hdrDigest: true, dataDigest: true, maxData: 1 << 20, maxAHS: maxAHSLen}
	for b.Loop() {
		if err := pr.readHeader(); err != nil {
			r.Reset(stream)
			pr.r.Reset(r)
			continue
		}
		pr.readData(dst)
	}
}

// BenchmarkExecute measures planning and executing one command against the
// memory device, without the network.
func BenchmarkExecute(b *testing.B) {
	e := newExecEnv(b, 1<<16)
	for _, tc := range []struct {
		name string
		cdb  []byte
		out  []byte
		edtl int
	}{
		{"read4k", cdb16(opRead16, 8, 8), nil, 4096},
		{"write4k", cdb16(opWrite16, 8, 8), make([]byte, 4096), 0},
		{"inquiry", []byte{opInquiry, 0, 0, 0, 96, 0}, nil, 96},
		{"writeatomic4k", writeAtomicCDB(8, 0, 8), make([]byte, 4096), 0},
		{"write1m", cdb16(opWrite16, 0, 2048), make([]byte, 1<<20), 0},
		{"writeatomic1m", writeAtomicCDB(0, 0, 2048), make([]byte, 1<<20), 0},
	} {
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(max(len(tc.out), tc.edtl)))
			b.ReportAllocs()
			for b.Loop() {
				e.run(tc.cdb, tc.out, tc.edtl)
			}
		})
	}
}

// BenchmarkExtendedCopy copies a 4 MiB segment (the size VMware's XCOPY
// sends by default) between two LUNs of memory devices, from written data
// (read and write in 1020 KiB chunks) and from unmapped data (unmapped on
// the destination).
func BenchmarkExtendedCopy(b *testing.B) {
	e := newCopyEnv(b, 1<<16)
	if err := e.dev.WriteAt(context.Background(), make([]byte, 4<<20), 0); err != nil {
		b.Fatal(err)
	}
	tl := [][]byte{identTarget(serial0), identTarget(serial1)}
	for _, tc := range []struct {
		name string
		src  uint64
	}{{"mapped-4m", 0}, {"unmapped-4m", 1 << 15}} {
		p := xcopyParams(0, listIDNoList, tl, segs(xcSeg{0, 1, 8192, tc.src, 8192}))
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(4 << 20)
			b.ReportAllocs()
			for b.Loop() {
				if tk := e.run(xcopyCDB(len(p)), p, 0); tk.status != statusGood {
					b.Fatalf("status %#x", tk.status)
				}
			}
		})
	}
}

// BenchmarkEndToEnd runs 4 KiB reads and writes through a TCP connection
// with 32 commands in flight, driven by the test initiator (which allocates
// per command itself, so allocs/op here is the pair's, not the target's;
// scripts/bench-target.sh measures the target against libiscsi).
func BenchmarkEndToEnd(b *testing.B) {
	h := newHarness(b, nil)
	in := h.login(iniA)
	in.clearUA(0)
	for _, write := range []bool{false, true} {
		name := "read4k-qd32"
		if write {
			name = "write4k-qd32"
		}
		b.Run(name, func(b *testing.B) {
			b.SetBytes(4096)
			var wg sync.WaitGroup
			ops := make(chan int, 1024)
			for range 32 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					data := make([]byte, 4096)
					for i := range ops {
						lba := uint32(i%8192) * 8
						var err error
						var r *scsiResult
						if write {
							r, err = in.write10(0, lba, data)
						} else {
							r, err = in.read10(0, lba, 8)
						}
						if err != nil || r.status != statusGood {
							b.Error("I/O failed")
							return
						}
					}
				}()
			}
			for i := 0; b.Loop(); i++ {
				ops <- i
			}
			close(ops)
			wg.Wait()
		})
	}
}
