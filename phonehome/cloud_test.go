package phonehome

import (
	"bytes"
	"compress/gzip"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const testArrayID = "0123456789abcdef0123456789abcdef"

func testDoc(kind string, seq uint64) *Document {
	d := &Document{Schema: Schema, Kind: kind, Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Array: ArrayRef{ID: testArrayID, Name: "lab-7"}}
	switch kind {
	case "diagnostics":
		d.Diagnostics = &Diagnostics{Version: "1", Space: &Space{Capacity: 1 << 30, Used: 1 << 20, DataReduction: 3.5},
			Lock: LockStatus{Locked: true, Reason: "no key"}, Alerts: []Alert{{ID: 1, Code: "device.missing", State: "open"}}}
	case "logs":
		d.Logs = &Logs{Audit: []AuditEntry{{ID: 1, Command: "purevol create v1"}}}
	case "alerts":
		d.Alerts = &AlertsBody{Open: []Alert{}}
	}
	return d
}

func gz(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestDocumentCheck(t *testing.T) {
	good := testDoc("logs", 3)
	body, err := EncodeDocument(good)
	if err != nil {
		t.Fatal(err)
	}
	d, err := DecodeDocument(body, 1<<20)
	if err != nil || d.Seq != 3 || d.Logs.Audit[0].Command != "purevol create v1" {
		t.Fatalf("round trip: %+v %v", d, err)
	}
	js, _ := json.Marshal(good)
	if !bytes.Contains(js, []byte(`"schema":"vfa.phonehome/v1"`)) || !bytes.Contains(js, []byte(`"kind":"logs"`)) {
		t.Fatalf("envelope: %s", js)
	}
	tests := []struct {
		name string
		edit func(d *Document)
	}{
		{"schema", func(d *Document) { d.Schema = "vfa.phonehome/v2" }},
		{"kind", func(d *Document) { d.Kind = "metrics" }},
		{"seq", func(d *Document) { d.Seq = 0 }},
		{"time", func(d *Document) { d.Time = time.Time{} }},
		{"array id", func(d *Document) { d.Array.ID = "ABC" }},
		{"upper-case id", func(d *Document) { d.Array.ID = strings.ToUpper(testArrayID) }},
		{"no body", func(d *Document) { d.Logs = nil }},
		{"two bodies", func(d *Document) { d.Alerts = &AlertsBody{} }},
		{"wrong body", func(d *Document) { d.Kind = "alerts" }},
	}
	for _, tt := range tests {
		d := testDoc("logs", 3)
		tt.edit(d)
		js, _ := json.Marshal(d)
		if _, err := ParseDocument(js); !errors.Is(err, ErrBadDocument) {
			t.Errorf("%s: %v", tt.name, err)
		}
	}
	if _, err := DecodeDocument([]byte("plain"), 100); !errors.Is(err, ErrBadDocument) {
		t.Fatalf("not gzip: %v", err)
	}
	if _, err := DecodeDocument(gz(t, bytes.Repeat([]byte(" "), 1000)), 999); !errors.Is(err, ErrDocumentTooLarge) {
		t.Fatalf("bomb: %v", err)
	}
}

// FuzzParseDocument: the receiver's parser never panics, and what it
// accepts is a well-formed document.
func FuzzParseDocument(f *testing.F) {
	for _, k := range []string{"diagnostics", "logs", "alerts"} {
		js, _ := json.Marshal(testDoc(k, 1))
		f.Add(js)
	}
	f.Add([]byte(`{"schema":"vfa.phonehome/v1"}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := ParseDocument(in)
		if err != nil {
			return
		}
		if d.check() != nil || d.Seq == 0 || len(d.Array.ID) != 32 {
			t.Fatalf("accepted %+v", d)
		}
		if _, err := EncodeDocument(d); err != nil {
			t.Fatal(err)
		}
	})
}

// cloudClient is an HTTPS client with a certificate of clientCA.
func cloudClient(t *testing.T, serverCA, clientCA *testCA) *http.Client {
	cert, _, _ := clientCA.issue(t, "tester", false)
	return &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MinVersion: tls.VersionTLS13,
		RootCAs: serverCA.pool(), Certificates: []tls.Certificate{cert}}}, Timeout: 30 * time.Second}
}

func post(t *testing.T, c *http.Client, url string, body []byte, encoding string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if encoding != "" {
		req.Header.Set("Content-Encoding", encoding)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestCloud(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	store := t.TempDir()
	cloud := startCloud(t, serverCA, clientCA, store, "")
	c := cloudClient(t, serverCA, clientCA)
	url := cloud.endpoint()
	enc := func(d *Document) []byte {
		b, err := EncodeDocument(d)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	badSchema := testDoc("logs", 9)
	badSchema.Schema = "other"
	tests := []struct {
		name     string
		body     []byte
		encoding string
		code     int
		status   string
	}{
		{"diagnostics", enc(testDoc("diagnostics", 1)), "gzip", 200, `"stored"`},
		{"logs", enc(testDoc("logs", 2)), "gzip", 200, `"stored"`},
		{"again", enc(testDoc("logs", 2)), "gzip", 200, `"duplicate"`},
		{"no encoding header", enc(testDoc("alerts", 4)), "", 200, `"stored"`},
		{"not gzip", []byte(`{"schema":"vfa.phonehome/v1"}`), "gzip", 400, "not gzip"},
		{"wrong encoding", enc(testDoc("logs", 5)), "br", 400, "gzip"},
		{"not json", gz(t, []byte("hello")), "gzip", 400, "malformed"},
		{"bad schema", enc(badSchema), "gzip", 400, "schema"},
		{"oversized body", bytes.Repeat([]byte("x"), defaultCloudBodyBytes+1), "gzip", 413, "body over"},
		{"gzip bomb", gz(t, bytes.Repeat([]byte(" "), defaultCloudDocumentBytes+1)), "gzip", 413, "too large"},
	}
	for _, tt := range tests {
		code, body := post(t, c, url, tt.body, tt.encoding)
		if code != tt.code || !strings.Contains(body, tt.status) {
			t.Errorf("%s: %d %s", tt.name, code, body)
		}
	}
	recs, err := cloud.Received(testArrayID)
	if err != nil || len(recs) != 3 || recs[0].Seq != 1 || recs[1].Seq != 2 || recs[2].Seq != 4 {
		t.Fatalf("received %+v %v", recs, err)
	}
	if r := recs[0]; r.Identity.Subject != "CN=tester" || !strings.Contains(r.Identity.Issuer, "client CA") || len(r.Identity.SHA256) != 64 || r.Remote == "" {
		t.Fatalf("identity %+v", r)
	}
	check := func(cl *Cloud) {
		t.Helper()
		f := cl.Fleet()
		if len(f) != 1 {
			t.Fatalf("fleet %+v", f)
		}
		r := f[0]
		if r.Name != "lab-7" || r.Capacity != 1<<30 || r.DataReduction != 3.5 || !r.Locked || r.LockReason != "no key" ||
			r.Documents != 3 || r.LastSeq != 4 || r.Missing != 1 || r.OpenAlerts != 0 || r.Identity != "CN=tester" {
			t.Fatalf("fleet row %+v", r)
		}
	}
	check(cloud.Cloud)
	// The fleet page, the JSON API, a document.
	get := func(path string) (int, string) {
		resp, err := c.Get("https://" + cloud.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, page := get("/"); code != 200 || !strings.Contains(page, "<td>lab-7</td>") || !strings.Contains(page, "locked: no key") || !strings.Contains(page, "3.5 to 1") {
		t.Fatalf("fleet page %d:\n%s", code, page)
	}
	code, js := get("/api/fleet")
	var fleet []FleetArray
	if code != 200 || json.Unmarshal([]byte(js), &fleet) != nil || len(fleet) != 1 || fleet[0].ID != testArrayID {
		t.Fatalf("fleet api %d %s", code, js)
	}
	if code, js := get("/api/arrays/" + testArrayID + "/documents/2"); code != 200 || !strings.Contains(js, "purevol create v1") {
		t.Fatalf("document %d %s", code, js)
	}
	if code, _ := get("/api/arrays/" + testArrayID + "/documents/3"); code != 404 {
		t.Fatalf("missing document: %d", code)
	}
	if code, js := get("/api/arrays/" + testArrayID); code != 200 || !strings.Contains(js, `"CN=tester"`) {
		t.Fatalf("array %d %s", code, js)
	}
	if code, _ := get("/api/arrays/../../etc"); code == 200 {
		t.Fatal("path escape")
	}

	// A restart rebuilds the fleet from the store; a torn index line is cut
	// and a body without its line is indexed.
	cloud.stop()
	idx := filepath.Join(store, "arrays", testArrayID, "index.jsonl")
	f, _ := os.OpenFile(idx, os.O_APPEND|os.O_WRONLY, 0)
	f.WriteString(`{"seq":7,"ki`)
	f.Close()
	os.WriteFile(filepath.Join(store, "arrays", testArrayID, docFile(6)), enc(testDoc("logs", 6)), 0o644)
	cloud2 := startCloud(t, serverCA, clientCA, store, "")
	f2 := cloud2.Fleet()
	if len(f2) != 1 || f2[0].Documents != 4 || f2[0].LastSeq != 6 || f2[0].Missing != 2 || !f2[0].Locked || f2[0].Capacity != 1<<30 {
		t.Fatalf("after restart %+v", f2)
	}
	recs, _ = cloud2.Received(testArrayID)
	if len(recs) != 4 || recs[3].Seq != 6 || !strings.Contains(recs[3].Identity.Subject, "not recorded") {
		t.Fatalf("after restart %+v", recs)
	}
	// Without a certificate from its CA, or below TLS 1.3, nothing gets in.
	other := cloudClient(t, serverCA, newTestCA(t, "stranger"))
	if _, err := other.Post(cloud2.endpoint(), "application/json", bytes.NewReader(enc(testDoc("logs", 8)))); err == nil {
		t.Fatal("a stranger's certificate was accepted")
	}
	cert, _, _ := clientCA.issue(t, "old", false)
	old := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{MaxVersion: tls.VersionTLS12,
		RootCAs: serverCA.pool(), Certificates: []tls.Certificate{cert}}}}
	if _, err := old.Post(cloud2.endpoint(), "application/json", bytes.NewReader(enc(testDoc("logs", 8)))); err == nil {
		t.Fatal("TLS 1.2 was accepted")
	}
	noCert := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: serverCA.pool()}}}
	if _, err := noCert.Post(cloud2.endpoint(), "application/json", bytes.NewReader(enc(testDoc("logs", 8)))); err == nil {
		t.Fatal("no certificate was accepted")
	}
	if recs, _ := cloud2.Received(testArrayID); len(recs) != 4 {
		t.Fatalf("refused clients stored %d", len(recs)-4)
	}
}
