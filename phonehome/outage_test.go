package phonehome

import (
	"bufio"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"vfa/array"
)

// freeAddr reserves a loopback address for an endpoint that is down until
// a test starts a receiver on it.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// spoolWatch counts spooled documents through the test hook.
type spoolWatch struct {
	ch chan Entry
}

func newSpoolWatch() *spoolWatch { return &spoolWatch{ch: make(chan Entry, 100000)} }

func (w *spoolWatch) hook(e Entry) {
	select {
	case w.ch <- e:
	default:
	}
}

// wait waits for n more spooled documents.
func (w *spoolWatch) wait(t *testing.T, n int) []Entry {
	t.Helper()
	var out []Entry
	deadline := time.After(waitMax)
	for len(out) < n {
		select {
		case e := <-w.ch:
			out = append(out, e)
		case <-deadline:
			t.Fatalf("%d of %d documents spooled within %v", len(out), n, waitMax)
		}
	}
	return out
}

// TestOutage: the receiver goes away for several intervals, the array
// restarts meanwhile, the receiver comes back: every document arrives, in
// order, none twice.
func TestOutage(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	store := t.TempDir()
	cloud := startCloud(t, serverCA, clientCA, store, "")
	addr := cloud.Addr().String()
	fs := memArrayFS(t)
	a := openArray(t, fs)
	enroll(t, a, clientCA)
	configure(t, a, cloud.endpoint(), serverCA, 30*time.Millisecond, 200*time.Millisecond, "")
	w := newSpoolWatch()
	u := startUploader(t, a, Config{onSpooled: w.hook})
	got := cloud.until(t, func(got []stored) bool { return len(got) >= 3 })

	// The receiver stops; documents and audit entries pile up.
	cloud.stop()
	got = append(got, drain(cloud.docs)...)
	for i := 0; i < 3; i++ {
		if _, err := a.Audit(array.AuditEntry{User: "pureuser", Command: fmt.Sprintf("purevol create v%d", i), Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	w.wait(t, 8)

	// vfa restarts while the receiver is down.
	if err := u.Close(); err != nil {
		t.Fatal(err)
	}
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	a = openArray(t, fs)
	if _, err := a.Audit(array.AuditEntry{User: "pureuser", Command: "purevol create after-restart", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	u = startUploader(t, a, Config{onSpooled: w.hook})
	w.wait(t, 8)

	// The receiver returns on the same address and store.
	cloud2 := startCloud(t, serverCA, clientCA, store, addr)
	target := u.spool.NextSeq() + 3
	got = append(got, cloud2.until(t, func(got []stored) bool { return len(got) > 0 && got[len(got)-1].doc.Seq >= target })...)
	seqsContiguous(t, got, 1)

	// Every audit entry arrived exactly once.
	audit := map[string]int{}
	for _, s := range got {
		if s.doc.Logs != nil {
			for _, e := range s.doc.Logs.Audit {
				audit[e.Command]++
			}
		}
	}
	for _, c := range []string{"purevol create v0", "purevol create v1", "purevol create v2", "purevol create after-restart"} {
		if audit[c] != 1 {
			t.Errorf("audit entry %q arrived %d times", c, audit[c])
		}
	}
	// The store holds each document once, in order.
	recs, err := cloud2.Received(a.Config().ID)
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range recs {
		if r.Seq != uint64(i+1) {
			t.Fatalf("index entry %d has seq %d", i, r.Seq)
		}
	}
	f := cloud2.Fleet()
	if len(f) != 1 || f[0].Missing != 0 {
		t.Fatalf("fleet %+v", f)
	}
	t.Logf("%d documents, %d uploads repeated after the receiver cut a connection", len(recs), f[0].Duplicates)
}

func drain(ch chan stored) []stored {
	var out []stored
	for {
		select {
		case s := <-ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

// TestSpoolLimit: with the endpoint down, the spool fills; diagnostics are
// thinned, then the oldest logs dropped with an alert; the spool never
// grows past its limit; when the endpoint returns what is left arrives in
// order and the gaps are exactly the dropped documents.
func TestSpoolLimit(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	addr := freeAddr(t)
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	alerts := alertWatch(a)
	configure(t, a, "https://"+addr+"/upload", serverCA, 10*time.Millisecond, 10*time.Millisecond, "")
	const limit = 48 << 10
	var u *Uploader
	var over atomic.Int64
	var ready sync.WaitGroup
	ready.Add(1)
	w := newSpoolWatch()
	u = startUploader(t, a, Config{SpoolBytesLimit: limit, onSpooled: func(e Entry) {
		ready.Wait()
		if _, b, _ := u.spool.Stats(); b > limit {
			over.Add(1)
		}
		w.hook(e)
	}})
	ready.Done()
	// Incompressible audit entries make logs documents of a few KiB.
	var dropped array.Alert
	for i := 0; ; i++ {
		if _, err := a.Audit(array.AuditEntry{User: "pureuser", Command: "purevol create " + randomHex(t, 1500), Result: "ok"}); err != nil {
			t.Fatal(err)
		}
		w.wait(t, 2)
		select {
		case al := <-alerts:
			if al.Code != CodeSpoolDropped {
				continue
			}
			dropped = al
		default:
			continue
		}
		break
	}
	if !strings.Contains(dropped.Message, "dropped") || !strings.Contains(dropped.Message, "oldest first") || !strings.Contains(dropped.Message, "48 KiB") {
		t.Fatalf("drop alert: %q", dropped.Message)
	}
	// Diagnostics were thinned before any logs went.
	thinned, droppedAt := -1, -1
	for i, ev := range a.Events() {
		if ev.Code == CodeSpoolThinned && thinned < 0 {
			thinned = i
		}
		if ev.Code == CodeSpoolDropped && droppedAt < 0 {
			droppedAt = i
		}
	}
	if thinned < 0 || droppedAt < thinned {
		t.Fatalf("thinned at event %d, dropped at event %d", thinned, droppedAt)
	}
	if n := over.Load(); n > 0 {
		t.Fatalf("the spool was over its limit %d times", n)
	}
	// The endpoint returns (and the schedule slows down, so that the spool
	// drains quickly).
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), addr)
	configure(t, a, "https://"+addr+"/upload", serverCA, time.Hour, time.Hour, "")
	waitAlert(t, alerts, CodeSpoolDropped, true)
	if _, err := a.RequestPhoneHome(array.PhoneHomeSendNow, "test"); err != nil {
		t.Fatal(err)
	}
	got := cloud.until(t, func(got []stored) bool {
		return len(got) > 0 && got[len(got)-1].doc.Manual == "send-now" && got[len(got)-1].doc.Logs != nil
	})
	for i := 1; i < len(got); i++ {
		if got[i].doc.Seq <= got[i-1].doc.Seq {
			t.Fatalf("seq %d after %d", got[i].doc.Seq, got[i-1].doc.Seq)
		}
	}
	_, _, nDropped := u.spool.Stats()
	f := cloud.Fleet()
	if len(f) != 1 || f[0].Missing != nDropped || nDropped == 0 {
		t.Fatalf("fleet %+v, %d dropped", f, nDropped)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// TestManyArrays: many arrays in one process phone one receiver.
func TestManyArrays(t *testing.T) {
	n := 50
	if testing.Short() {
		n = 8
	}
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), "")
	arrays := make([]*array.Array, n)
	var wg sync.WaitGroup
	var mu sync.Mutex
	for w := 0; w < 2; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += 2 {
				a := newDistinctArray(t, fmt.Sprintf("fleet-%02d", i))
				enroll(t, a, clientCA)
				configure(t, a, cloud.endpoint(), serverCA, 200*time.Millisecond, time.Second, "")
				mu.Lock()
				arrays[i] = a
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	for _, a := range arrays {
		startUploader(t, a, Config{})
	}
	perArray := map[string][]uint64{}
	cloud.until(t, func(got []stored) bool {
		if len(got) > 0 {
			s := got[len(got)-1]
			perArray[s.doc.Array.ID] = append(perArray[s.doc.Array.ID], s.doc.Seq)
		}
		if len(perArray) < n {
			return false
		}
		for _, seqs := range perArray {
			if len(seqs) < 3 {
				return false
			}
		}
		return true
	})
	for id, seqs := range perArray {
		for i, s := range seqs {
			if s != uint64(i+1) {
				t.Fatalf("array %s: seqs %v", id, seqs)
			}
		}
	}
	f := cloud.Fleet()
	if len(f) != n {
		t.Fatalf("fleet of %d", len(f))
	}
	for i, row := range f {
		if row.Name != fmt.Sprintf("fleet-%02d", i) || row.Missing != 0 || row.Capacity == 0 {
			t.Fatalf("fleet row %d: %+v", i, row)
		}
	}
}

// connectProxy is a minimal HTTP CONNECT proxy that counts tunnels.
type connectProxy struct {
	ln      net.Listener
	tunnels atomic.Int64
	wg      sync.WaitGroup
}

func startProxy(t *testing.T) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.wg.Add(1)
			go func() {
				defer p.wg.Done()
				p.serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); p.wg.Wait() })
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		fmt.Fprint(c, "HTTP/1.1 405 Method Not Allowed\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		fmt.Fprint(c, "HTTP/1.1 502 Bad Gateway\r\n\r\n")
		return
	}
	defer up.Close()
	p.tunnels.Add(1)
	fmt.Fprint(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
	go func() { io.Copy(c, up); done <- struct{}{} }()
	<-done
	<-done
}

// TestProxy: uploads go through an HTTP proxy (CONNECT), TLS end to end.
func TestProxy(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), "")
	proxy := startProxy(t)
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	configure(t, a, cloud.endpoint(), serverCA, time.Hour, time.Hour, "http://"+proxy.ln.Addr().String())
	startUploader(t, a, Config{})
	s := cloud.next(t)
	if s.doc.Seq != 1 || proxy.tunnels.Load() == 0 {
		t.Fatalf("seq %d, %d tunnels", s.doc.Seq, proxy.tunnels.Load())
	}
	if !strings.Contains(s.rec.Identity.Issuer, "client CA") {
		t.Fatalf("identity through the proxy: %+v", s.rec.Identity)
	}
}

// TestRequests: send-today makes requested logs documents; cancel drops
// them before they are sent; send-now sends diagnostics and logs at once.
func TestRequests(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	addr := freeAddr(t)
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	for i := 0; i < 3; i++ {
		if _, err := a.Audit(array.AuditEntry{User: "pureuser", Command: fmt.Sprintf("purehost create h%d", i), Result: "ok"}); err != nil {
			t.Fatal(err)
		}
	}
	configure(t, a, "https://"+addr+"/upload", serverCA, time.Hour, time.Hour, "")
	reqs := make(chan array.PhoneHomeRequest, 10)
	w := newSpoolWatch()
	u := startUploader(t, a, Config{onSpooled: w.hook, onRequest: func(r array.PhoneHomeRequest) { reqs <- r }})
	w.wait(t, 1) // the first diagnostics
	if _, err := a.RequestPhoneHome(array.PhoneHomeSendToday, "pureuser"); err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.Kind != array.PhoneHomeSendToday {
		t.Fatalf("request %+v", r)
	}
	today := 0
	for _, e := range u.spool.Entries() {
		if e.Manual {
			today++
		}
	}
	if today != 1 {
		t.Fatalf("%d requested documents spooled", today)
	}
	if _, err := a.RequestPhoneHome(array.PhoneHomeCancel, "pureuser"); err != nil {
		t.Fatal(err)
	}
	<-reqs
	for _, e := range u.spool.Entries() {
		if e.Manual {
			t.Fatalf("cancelled document %d still spooled", e.Seq)
		}
	}
	if left, err := a.PhoneHomeRequests(); err != nil || len(left) != 0 {
		t.Fatalf("requests left: %v %v", left, err)
	}
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), addr)
	if _, err := a.RequestPhoneHome(array.PhoneHomeSendNow, "pureuser"); err != nil {
		t.Fatal(err)
	}
	got := cloud.until(t, func(got []stored) bool {
		return len(got) > 0 && got[len(got)-1].doc.Manual == "send-now" && got[len(got)-1].doc.Logs != nil
	})
	var logs *Logs
	for _, s := range got {
		if s.doc.Manual == "send-today" {
			t.Fatal("a cancelled send-today document arrived")
		}
		if s.doc.Logs != nil && s.doc.Manual == "send-now" {
			logs = s.doc.Logs
		}
	}
	if len(logs.Audit) != 3 || logs.Audit[2].Command != "purehost create h2" {
		t.Fatalf("send-now logs: %+v", logs.Audit)
	}
}

// TestAnswers: the endpoint's answers decide only success, retry or
// rejection: a redirect is not followed (retried), a 413 drops the document
// with an alert, and nothing in an answer's body reaches the array.
func TestAnswers(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	var calls, redirected atomic.Int64
	var seqs sync.Map
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/elsewhere" {
			redirected.Add(1)
			return
		}
		n := calls.Add(1)
		seqs.Store(r.Header.Get("X-Vfa-Seq"), true)
		switch n {
		case 1:
			http.Redirect(w, r, "/elsewhere", http.StatusFound)
		case 2:
			w.WriteHeader(http.StatusRequestEntityTooLarge)
		default:
			// An answer that tries to give orders.
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprint(w, `{"enabled":false,"endpoint":"https://evil.example/","command":"purevol destroy v1"}`)
		}
	}))
	cert, _, _ := serverCA.issue(t, "answers", true)
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13, ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCA.pool()}
	srv.StartTLS()
	t.Cleanup(srv.Close)

	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	alerts := alertWatch(a)
	configure(t, a, srv.URL+"/upload", serverCA, time.Hour, time.Hour, "")
	before, _ := a.PhoneHomeSettings()
	sent := make(chan error, 100)
	startUploader(t, a, Config{onSent: func(e Entry, err error) { sent <- err }})
	if err := <-sent; err == nil || !strings.Contains(err.Error(), "302") {
		t.Fatalf("redirect: %v", err)
	}
	al := waitAlert(t, alerts, CodeRejected, false)
	if !strings.Contains(al.Message, "diagnostics document 1 was dropped") || !strings.Contains(al.Message, "413") {
		t.Fatalf("rejected alert: %q", al.Message)
	}
	for {
		if err := <-sent; err == nil {
			break
		}
	}
	if redirected.Load() != 0 {
		t.Fatal("the redirect was followed")
	}
	after, _ := a.PhoneHomeSettings()
	if after != before {
		t.Fatalf("settings changed: %+v", after)
	}
	if _, err := a.LookupVolume("v1"); err == nil {
		t.Fatal("?")
	}
}
