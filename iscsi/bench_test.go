package iscsi

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"vfa/array"
	"vfa/iscsi/iscsitest"
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
// TestPerf measures the target alone against libiscsi).
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

// TestPerf measures the target against libiscsi load generators and logs
// IOPS, MB/s, target CPU and allocations per I/O. It only runs with
// ISCSI_PERF=1 (set ISCSI_BENCH to an iscsi-bench binary to use it;
// iscsi-perf, reads only, is used otherwise).
func TestPerf(t *testing.T) {
	if os.Getenv("ISCSI_PERF") == "" {
		t.Skip("set ISCSI_PERF=1 to measure")
	}
	const span = 512 << 20
	fe := iscsitest.NewFrontend(testIQN)
	dev := iscsitest.NewMemDevice(serial0, "perf", span/512)
	inits := []string{"iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-perf"}
	for i := range 4 {
		inits = append(inits, fmt.Sprintf("iqn.2024-01.org.example:bench-%d", i))
	}
	fe.SetHost(iscsitest.Host{Name: "perf", Initiators: inits, LUNs: []array.LUN{{Number: 0, Device: dev}}})
	tgt, err := New(Config{Frontend: fe, Listen: []string{"127.0.0.1:0"}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	go tgt.Serve(context.Background())
	defer tgt.Close()
	url := fmt.Sprintf("iscsi://%s/%s/0", tgt.Addrs()[0], testIQN)
	secs := "10"
	if s := os.Getenv("ISCSI_PERF_SECS"); s != "" {
		secs = s
	}
	measure := func(name string, ops func(out string) float64, cmd string, args ...string) {
		var ru0, ru1 syscall.Rusage
		var ms0, ms1 runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&ms0)
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		start := time.Now()
		out, err := exec.Command(cmd, args...).CombinedOutput()
		wall := time.Since(start)
		syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
		runtime.ReadMemStats(&ms1)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, out)
		}
		n := ops(string(out))
		cpu := time.Duration(syscall.TimevalToNsec(ru1.Utime)-syscall.TimevalToNsec(ru0.Utime)) +
			time.Duration(syscall.TimevalToNsec(ru1.Stime)-syscall.TimevalToNsec(ru0.Stime))
		t.Logf("%-22s %s| target CPU %.1f µs/IO (%.0f%% of a core), %.2f allocs/IO, %.0f B/IO",
			name, strings.TrimSpace(lastLine(string(out))), float64(cpu.Microseconds())/n,
			100*cpu.Seconds()/wall.Seconds(), float64(ms1.Mallocs-ms0.Mallocs)/n, float64(ms1.TotalAlloc-ms0.TotalAlloc)/n)
	}
	if bench := os.Getenv("ISCSI_BENCH"); bench != "" {
		// Prefill so reads return data.
		cmd := exec.Command(bench, url, "write", "1048576", "8", "60", "1", "random")
		cmd.Env = append(os.Environ(), "BENCH_ONCE=1")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("prefill: %v %s", err, out)
		}
		benchOps := func(out string) float64 {
			var mode string
			var bs, qd, nconn int
			var iops, mbps, lat, errs float64
			fmt.Sscan(lastLine(out), &mode, &bs, &qd, &nconn, &iops, &mbps, &lat, &errs)
			s := 0.0
			fmt.Sscan(secs, &s)
			return iops * s
		}
		for _, w := range []struct{ mode, bs, qd string }{
			{"randread", "4096", "32"}, {"randwrite", "4096", "32"},
			{"randread", "4096", "1"}, {"randwrite", "4096", "1"},
			{"read", "1048576", "8"}, {"write", "1048576", "8"},
		} {
			measure(w.mode+" "+w.bs+" qd"+w.qd, benchOps, bench, url, w.mode, w.bs, w.qd, secs, "1", "random")
		}
		return
	}
	perfOps := func(out string) float64 {
		var iops float64
		i := strings.LastIndex(out, "iops average ")
		fmt.Sscan(out[i+len("iops average "):], &iops)
		s := 0.0
		fmt.Sscan(secs, &s)
		return iops * s
	}
	ini := "-i" + inits[0]
	measure("iscsi-perf 4k rand qd32", perfOps, "iscsi-perf", ini, "-m", "32", "-b", "8", "-t", secs, "-r", url)
	measure("iscsi-perf 1M seq qd8", perfOps, "iscsi-perf", ini, "-m", "8", "-b", "2048", "-t", secs, url)
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexAny(s, "\r\n"); i >= 0 {
		return s[i+1:]
	}
	return s
}
