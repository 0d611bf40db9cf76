package phonehome

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/array"
)

// Benchmarks: go test -run XXX -bench . -benchtime 2000x ./phonehome

func cpuNanos(b *testing.B) int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// sampleBody is a diagnostics document of a small array, compressed.
func sampleBody(b *testing.B, seq uint64) []byte {
	d := testDoc("diagnostics", seq)
	for i := 0; i < 20; i++ {
		d.Diagnostics.Volumes = append(d.Diagnostics.Volumes, Volume{Name: fmt.Sprintf("vol%02d", i), Serial: fmt.Sprintf("0123456789ABCDEF%08X", i), Size: 1 << 30})
	}
	body, err := EncodeDocument(d)
	if err != nil {
		b.Fatal(err)
	}
	return body
}

// BenchmarkSpoolAppend: documents written to the spool on the real file
// system (each synced, renamed, directory synced), removed as it fills.
func BenchmarkSpoolAppend(b *testing.B) {
	s, _, err := OpenSpool(vfs.Default, b.TempDir(), 16<<20)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	body := sampleBody(b, 1)
	b.SetBytes(int64(len(body)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(Entry{Seq: s.NextSeq(), Kind: KindDiagnostics, Created: time.Now()}, body); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
}

// BenchmarkSpoolDrain: an uploader sends a full spool to vfa cloud (TLS
// 1.3, keep-alive; the receiver syncs each document and its index line).
func BenchmarkSpoolDrain(b *testing.B) {
	serverCA, clientCA := newTestCA(b, "server CA"), newTestCA(b, "client CA")
	cloud := startCloud(b, serverCA, clientCA, b.TempDir(), "")
	a := openArray(b, memArrayFS(b))
	enroll(b, a, clientCA)
	configure(b, a, cloud.endpoint(), serverCA, time.Hour, time.Hour, "")
	// Fill the spool while phone home is disabled.
	if _, err := a.UpdatePhoneHomeSettings(func(s *array.PhoneHomeSettings) error { s.Enabled = false; return nil }); err != nil {
		b.Fatal(err)
	}
	fs, dir := a.PhoneHomeSpool()
	s, _, err := OpenSpool(fs, dir, 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; i < b.N; i++ {
		if _, err := s.Append(Entry{Seq: s.NextSeq(), Kind: KindDiagnostics, Created: time.Now()}, sampleBody(b, s.NextSeq())); err != nil {
			b.Fatal(err)
		}
	}
	s.Close()
	var sent atomic.Int64
	done := make(chan struct{})
	target := int64(b.N)
	u := startUploader(b, a, Config{SpoolBytesLimit: 1 << 30, onSent: func(e Entry, err error) {
		if err == nil && sent.Add(1) == target {
			close(done)
		}
	}})
	c0 := cpuNanos(b)
	b.ResetTimer()
	if _, err := a.UpdatePhoneHomeSettings(func(s *array.PhoneHomeSettings) error { s.Enabled = true; return nil }); err != nil {
		b.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Minute):
		b.Fatalf("%d of %d sent", sent.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	b.ReportMetric(float64(cpuNanos(b)-c0)/float64(b.N), "cpu-ns/doc")
	u.Close()
}

// BenchmarkDiagnostics: making one diagnostics document of an idle array
// (collect, encode, spool), the array side's work every 30 seconds.
func BenchmarkDiagnostics(b *testing.B) {
	a := openArray(b, memArrayFS(b))
	for i := 0; i < 20; i++ {
		if _, err := a.CreateVolume(fmt.Sprintf("vol%02d", i), 1<<30); err != nil {
			b.Fatal(err)
		}
	}
	c := Config{Now: time.Now, Booted: time.Now()}
	col := newCollector(a, &c)
	var enc encoder
	s, _, err := OpenSpool(vfs.Default, b.TempDir(), 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	c0 := cpuNanos(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		d := col.diagnostics(s.NextSeq(), time.Now(), SpoolStatus{})
		body, err := enc.encode(d)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := s.Append(Entry{Seq: d.Seq, Kind: KindDiagnostics, Created: d.Time}, body); err != nil {
			b.Fatal(err)
		}
		if err := s.Remove(d.Seq, false); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(cpuNanos(b)-c0)/float64(b.N), "cpu-ns/doc")
}

// BenchmarkCloudReceive: documents per second into vfa cloud from parallel
// clients over keep-alive TLS 1.3 connections (each stored document synced
// with its index line before the answer).
func BenchmarkCloudReceive(b *testing.B) {
	serverCA, clientCA := newTestCA(b, "server CA"), newTestCA(b, "client CA")
	cloud := startCloud(b, serverCA, clientCA, b.TempDir(), "")
	cert, _, _ := clientCA.issue(b, "bench", false)
	var seq atomic.Uint64
	url := cloud.endpoint()
	b.SetParallelism(4)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13,
			RootCAs: serverCA.pool(), Certificates: []tls.Certificate{cert}}}}
		for pb.Next() {
			body := sampleBody(b, seq.Add(1))
			req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
			req.Header.Set("Content-Encoding", "gzip")
			resp, err := c.Do(req)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "docs/s")
	drain(cloud.docs)
}
