package phonehome

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// The lab receiver (`vfa cloud`): an HTTPS server that accepts only TLS 1.3
// clients with a certificate from its CA, checks and stores every document
// per array with the client certificate's identity, and shows the fleet.
//
// Store layout (one directory per array, by the array id in the documents):
//
//	<store>/arrays/<array id>/<seq: 20 decimal digits>.json.gz   the body as received
//	<store>/arrays/<array id>/index.jsonl                        one line per stored
//	                                                             document (Received)
//
// A document is stored once: a second upload of the same array and sequence
// number is answered 200 with "duplicate" and changes nothing (uploads are
// at-least-once; this makes them exactly-once here). The body file is
// synced before its index line, and the index line before the answer.
//
// Routes:
//
//	POST /upload                          a document (gzip JSON); 200 stored or
//	                                      duplicate, 400 malformed, 413 too large
//	GET  /                                the fleet page (HTML)
//	GET  /api/fleet                       the fleet (JSON: []FleetArray)
//	GET  /api/arrays/{id}                 the documents received ([]Received)
//	GET  /api/arrays/{id}/documents/{seq} one document, decompressed JSON

// Defaults of the receiver.
const (
	DefaultCloudAddr          = "127.0.0.1:8443"
	defaultCloudBodyBytes     = 16 << 20
	defaultCloudDocumentBytes = 64 << 20
	defaultCloudConnections   = 1024
	indexLineMax              = 64 << 10
	receivedListMax           = 10000
)

// CloudConfig configures a receiver. Zero values are defaults, but the
// certificate, the client CAs and the store are required.
type CloudConfig struct {
	Addr             string
	Certificate      tls.Certificate
	ClientCAs        *x509.CertPool
	StoreDir         string
	MaxBodyBytes     int64 // compressed body (default 16 MiB)
	MaxDocumentBytes int64 // decompressed document (default 64 MiB)
	MaxConnections   int   // default 1024
	Logger           *slog.Logger
	Now              func() time.Time
	// OnStored, when set, is called after each document is stored (not
	// for duplicates), from the request's goroutine.
	OnStored func(Received, *Document)
}

// Identity is a client certificate as the receiver records it.
type Identity struct {
	Subject string `json:"subject"`
	Issuer  string `json:"issuer"`
	Serial  string `json:"serial"`
	SHA256  string `json:"sha256"` // of the certificate's DER
}

// Received is one stored document (a line of index.jsonl).
type Received struct {
	Seq      uint64    `json:"seq"`
	Kind     string    `json:"kind"`
	Manual   string    `json:"manual,omitempty"`
	Time     time.Time `json:"time"` // the document's own time
	Received time.Time `json:"received"`
	Bytes    int       `json:"bytes"` // compressed
	Remote   string    `json:"remote"`
	Identity Identity  `json:"identity"`
}

// FleetArray is one array as the fleet page shows it.
type FleetArray struct {
	ID             string    `json:"id"`
	Name           string    `json:"name"`
	Version        string    `json:"version,omitempty"`
	LastSeen       time.Time `json:"last_seen"`
	LastSeq        uint64    `json:"last_seq"`
	Documents      uint64    `json:"documents"`
	Missing        uint64    `json:"missing"`    // sequence numbers up to last_seq never received
	Duplicates     uint64    `json:"duplicates"` // repeated uploads since the receiver started
	Identity       string    `json:"identity"`
	Capacity       int64     `json:"capacity"`
	Used           int64     `json:"used"`
	DataReduction  float64   `json:"data_reduction"`
	TotalReduction float64   `json:"total_reduction"`
	OpenAlerts     int       `json:"open_alerts"`
	Locked         bool      `json:"locked"`
	LockReason     string    `json:"lock_reason,omitempty"`
}

// Cloud is a running receiver.
type Cloud struct {
	c   CloudConfig
	log *slog.Logger
	ln  net.Listener
	srv *http.Server

	mu     sync.Mutex
	arrays map[string]*cloudArray
}

type cloudArray struct {
	mu    sync.Mutex
	dir   string
	index *os.File
	row   FleetArray
	// statusSeq is the seq of the document the status columns come from.
	statusSeq uint64
}

// LoadCloudTLS reads the receiver's certificate and key and the CA that
// signs its clients (PEM files).
func LoadCloudTLS(certFile, keyFile, clientCAFile string) (tls.Certificate, *x509.CertPool, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("cloud: certificate: %w", err)
	}
	b, err := os.ReadFile(clientCAFile)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("cloud: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		return tls.Certificate{}, nil, fmt.Errorf("cloud: client CA %s holds no PEM certificate", clientCAFile)
	}
	return cert, pool, nil
}

// NewCloud opens the store (rebuilding the fleet from it) and binds the
// address; Serve runs it.
func NewCloud(c CloudConfig) (*Cloud, error) {
	if c.Addr == "" {
		c.Addr = DefaultCloudAddr
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = defaultCloudBodyBytes
	}
	if c.MaxDocumentBytes <= 0 {
		c.MaxDocumentBytes = defaultCloudDocumentBytes
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = defaultCloudConnections
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.StoreDir == "" || c.ClientCAs == nil || len(c.Certificate.Certificate) == 0 {
		return nil, errors.New("cloud: a store directory, a certificate and a client CA are required")
	}
	cl := &Cloud{c: c, log: c.Logger, arrays: map[string]*cloudArray{}}
	if err := cl.load(); err != nil {
		cl.closeIndexes()
		return nil, err
	}
	tc := &tls.Config{
		MinVersion:   tls.VersionTLS13,
		MaxVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{c.Certificate},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    c.ClientCAs,
		NextProtos:   []string{"http/1.1"},
	}
	ln, err := net.Listen("tcp", c.Addr)
	if err != nil {
		cl.closeIndexes()
		return nil, fmt.Errorf("cloud: %w", err)
	}
	cl.ln = tls.NewListener(&limitListener{Listener: ln, slots: make(chan struct{}, c.MaxConnections)}, tc)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", cl.upload)
	mux.HandleFunc("GET /{$}", cl.fleetPage)
	mux.HandleFunc("GET /api/fleet", cl.fleetJSON)
	mux.HandleFunc("GET /api/arrays/{id}", cl.arrayJSON)
	mux.HandleFunc("GET /api/arrays/{id}/documents/{seq}", cl.documentJSON)
	cl.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 2 * time.Minute,
		WriteTimeout: 2 * time.Minute, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(c.Logger.Handler(), slog.LevelInfo)}
	return cl, nil
}

// Addr is the address the receiver listens on.
func (cl *Cloud) Addr() net.Addr { return cl.ln.Addr() }

// Serve serves until ctx ends or Close is called.
func (cl *Cloud) Serve(ctx context.Context) error {
	done := make(chan struct{})
	defer close(done)
	go func() {
		select {
		case <-ctx.Done():
			cl.Close()
		case <-done:
		}
	}()
	err := cl.srv.Serve(cl.ln)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Close stops the receiver: in-flight uploads may fail (the array retries).
func (cl *Cloud) Close() error {
	err := cl.srv.Close()
	cl.closeIndexes()
	return err
}

func (cl *Cloud) closeIndexes() {
	cl.mu.Lock()
	defer cl.mu.Unlock()
	for _, ca := range cl.arrays {
		ca.mu.Lock()
		if ca.index != nil {
			ca.index.Close()
			ca.index = nil
		}
		ca.mu.Unlock()
	}
}

// limitListener bounds concurrent connections.
type limitListener struct {
	net.Listener
	slots chan struct{}
}

func (l *limitListener) Accept() (net.Conn, error) {
	l.slots <- struct{}{}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

func (cl *Cloud) arraysDir() string { return filepath.Join(cl.c.StoreDir, "arrays") }

func docFile(seq uint64) string { return fmt.Sprintf("%020d.json.gz", seq) }

// load rebuilds the fleet from the store.
func (cl *Cloud) load() error {
	if err := os.MkdirAll(cl.arraysDir(), 0o755); err != nil {
		return fmt.Errorf("cloud: store: %w", err)
	}
	ents, err := os.ReadDir(cl.arraysDir())
	if err != nil {
		return fmt.Errorf("cloud: store: %w", err)
	}
	for _, de := range ents {
		if !de.IsDir() || !validArrayID(de.Name()) {
			continue
		}
		ca, err := cl.openArray(de.Name())
		if err != nil {
			return err
		}
		cl.arrays[de.Name()] = ca
	}
	return nil
}

func validArrayID(id string) bool {
	b, err := hex.DecodeString(id)
	return err == nil && len(b) == 16 && hex.EncodeToString(b) == id
}

// openArray opens (creating) an array's directory and replays its index.
func (cl *Cloud) openArray(id string) (*cloudArray, error) {
	dir := filepath.Join(cl.arraysDir(), id)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("cloud: store: %w", err)
	}
	ca := &cloudArray{dir: dir, row: FleetArray{ID: id}}
	path := filepath.Join(dir, "index.jsonl")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fmt.Errorf("cloud: store: %w", err)
	}
	ca.index = f
	indexed := map[uint64]bool{}
	var lastDiag, lastAlerts uint64
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), indexLineMax)
	var good int64
	for sc.Scan() {
		var r Received
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil || r.Seq == 0 {
			break // a torn last line: cut it off below
		}
		good += int64(len(sc.Bytes())) + 1
		indexed[r.Seq] = true
		ca.account(r)
		switch r.Kind {
		case KindDiagnostics.String():
			lastDiag = max(lastDiag, r.Seq)
		case KindAlerts.String():
			lastAlerts = max(lastAlerts, r.Seq)
		}
	}
	if err := f.Truncate(good); err != nil {
		f.Close()
		return nil, fmt.Errorf("cloud: store: %w", err)
	}
	if _, err := f.Seek(good, io.SeekStart); err != nil {
		f.Close()
		return nil, fmt.Errorf("cloud: store: %w", err)
	}
	// Bodies stored without an index line (the receiver stopped between the
	// two): index them now, their identity unknown.
	files, _ := os.ReadDir(dir)
	for _, de := range files {
		name := de.Name()
		if strings.HasSuffix(name, ".tmp") {
			os.Remove(filepath.Join(dir, name))
			continue
		}
		seqStr, ok := strings.CutSuffix(name, ".json.gz")
		if !ok {
			continue
		}
		seq, err := strconv.ParseUint(seqStr, 10, 64)
		if err != nil || indexed[seq] {
			continue
		}
		body, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			continue
		}
		d, err := DecodeDocument(body, cl.c.MaxDocumentBytes)
		if err != nil {
			continue
		}
		st, _ := de.Info()
		r := Received{Seq: seq, Kind: d.Kind, Manual: d.Manual, Time: d.Time, Received: st.ModTime().UTC(), Bytes: len(body),
			Identity: Identity{Subject: "(not recorded: the receiver stopped while storing)"}}
		if err := ca.appendIndex(r); err != nil {
			f.Close()
			return nil, err
		}
		ca.account(r)
		if d.Kind == KindDiagnostics.String() {
			lastDiag = max(lastDiag, seq)
		}
	}
	for _, seq := range []uint64{lastDiag, lastAlerts} {
		if seq == 0 {
			continue
		}
		if body, err := os.ReadFile(filepath.Join(dir, docFile(seq))); err == nil {
			if d, err := DecodeDocument(body, cl.c.MaxDocumentBytes); err == nil {
				ca.apply(d)
			}
		}
	}
	return ca, nil
}

// account counts a stored document in the fleet row.
func (ca *cloudArray) account(r Received) {
	row := &ca.row
	row.Documents++
	row.LastSeq = max(row.LastSeq, r.Seq)
	row.Missing = row.LastSeq - min(row.Documents, row.LastSeq)
	if r.Received.After(row.LastSeen) {
		row.LastSeen = r.Received
		row.Identity = r.Identity.Subject
	}
}

// apply takes the status columns from a document newer than the last one
// applied.
func (ca *cloudArray) apply(d *Document) {
	row := &ca.row
	if d.Array.Name != "" {
		row.Name = d.Array.Name
	}
	if d.Seq < ca.statusSeq {
		return
	}
	switch {
	case d.Diagnostics != nil:
		g := d.Diagnostics
		ca.statusSeq = d.Seq
		row.Version = g.Version
		if g.Space != nil {
			row.Capacity, row.Used, row.DataReduction, row.TotalReduction = g.Space.Capacity, g.Space.Used, g.Space.DataReduction, g.Space.TotalReduction
		}
		row.OpenAlerts = len(g.Alerts)
		row.Locked, row.LockReason = g.Lock.Locked, g.Lock.Reason
	case d.Alerts != nil:
		ca.statusSeq = d.Seq
		row.OpenAlerts = len(d.Alerts.Open)
	}
}

func (ca *cloudArray) appendIndex(r Received) error {
	line, err := json.Marshal(r)
	if err != nil {
		return err
	}
	if len(line) >= indexLineMax {
		return fmt.Errorf("cloud: index line of %d bytes", len(line))
	}
	if _, err := ca.index.Write(append(line, '\n')); err != nil {
		return fmt.Errorf("cloud: index: %w", err)
	}
	if err := ca.index.Sync(); err != nil {
		return fmt.Errorf("cloud: index: %w", err)
	}
	return nil
}

func identityOf(c *x509.Certificate) Identity {
	sum := sha256.Sum256(c.Raw)
	return Identity{Subject: c.Subject.String(), Issuer: c.Issuer.String(), Serial: c.SerialNumber.Text(16), SHA256: hex.EncodeToString(sum[:])}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func httpError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"status": "error", "error": msg})
}

// upload receives one document.
func (cl *Cloud) upload(w http.ResponseWriter, r *http.Request) {
	if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
		httpError(w, http.StatusUnauthorized, "a client certificate is required")
		return
	}
	id := identityOf(r.TLS.PeerCertificates[0])
	if ce := r.Header.Get("Content-Encoding"); ce != "" && ce != "gzip" {
		httpError(w, http.StatusBadRequest, "the body must be gzip-compressed JSON (Content-Encoding: gzip)")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, cl.c.MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			httpError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body over %d bytes", cl.c.MaxBodyBytes))
			return
		}
		httpError(w, http.StatusBadRequest, "reading the body: "+err.Error())
		return
	}
	d, err := DecodeDocument(body, cl.c.MaxDocumentBytes)
	if err != nil {
		code := http.StatusBadRequest
		if errors.Is(err, ErrDocumentTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
		httpError(w, code, err.Error())
		return
	}
	rec := Received{Seq: d.Seq, Kind: d.Kind, Manual: d.Manual, Time: d.Time, Received: cl.c.Now().UTC(), Bytes: len(body),
		Remote: r.RemoteAddr, Identity: id}
	dup, err := cl.store(d, body, rec)
	if err != nil {
		cl.log.Error("cloud: store", "array", d.Array.ID, "seq", d.Seq, "err", err)
		httpError(w, http.StatusInternalServerError, "cannot store the document")
		return
	}
	status := "stored"
	if dup {
		status = "duplicate"
	} else if cl.c.OnStored != nil {
		cl.c.OnStored(rec, d)
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": status, "seq": d.Seq})
}

// store keeps a document once; dup reports a repeat.
func (cl *Cloud) store(d *Document, body []byte, rec Received) (dup bool, err error) {
	cl.mu.Lock()
	ca := cl.arrays[d.Array.ID]
	if ca == nil {
		if ca, err = cl.openArray(d.Array.ID); err != nil {
			cl.mu.Unlock()
			return false, err
		}
		cl.arrays[d.Array.ID] = ca
	}
	cl.mu.Unlock()
	ca.mu.Lock()
	defer ca.mu.Unlock()
	if ca.index == nil {
		return false, errors.New("cloud: closed")
	}
	path := filepath.Join(ca.dir, docFile(d.Seq))
	if _, err := os.Stat(path); err == nil {
		ca.row.Duplicates++
		return true, nil
	}
	tmp := path + ".tmp"
	if err := writeSynced(tmp, body); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return false, err
	}
	if err := syncDir(ca.dir); err != nil {
		return false, err
	}
	if err := ca.appendIndex(rec); err != nil {
		return false, err
	}
	ca.account(rec)
	ca.apply(d)
	return false, nil
}

func writeSynced(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		os.Remove(path)
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Fleet lists the arrays, by name then id.
func (cl *Cloud) Fleet() []FleetArray {
	cl.mu.Lock()
	cas := make([]*cloudArray, 0, len(cl.arrays))
	for _, ca := range cl.arrays {
		cas = append(cas, ca)
	}
	cl.mu.Unlock()
	out := make([]FleetArray, 0, len(cas))
	for _, ca := range cas {
		ca.mu.Lock()
		out = append(out, ca.row)
		ca.mu.Unlock()
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].ID < out[j].ID
	})
	return out
}

// Received lists the documents stored for an array, in the order they
// arrived (the newest receivedListMax).
func (cl *Cloud) Received(id string) ([]Received, error) {
	if !validArrayID(id) {
		return nil, fmt.Errorf("cloud: array id %q", id)
	}
	cl.mu.Lock()
	ca := cl.arrays[id]
	cl.mu.Unlock()
	if ca == nil {
		return nil, os.ErrNotExist
	}
	ca.mu.Lock()
	defer ca.mu.Unlock()
	f, err := os.Open(filepath.Join(ca.dir, "index.jsonl"))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []Received
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 4096), indexLineMax)
	for sc.Scan() {
		var r Received
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("cloud: index: %w", err)
		}
		out = append(out, r)
		if len(out) > receivedListMax {
			out = out[1:]
		}
	}
	return out, sc.Err()
}

// Document returns a stored document.
func (cl *Cloud) Document(id string, seq uint64) (*Document, error) {
	if !validArrayID(id) {
		return nil, fmt.Errorf("cloud: array id %q", id)
	}
	body, err := os.ReadFile(filepath.Join(cl.arraysDir(), id, docFile(seq)))
	if err != nil {
		return nil, err
	}
	return DecodeDocument(body, cl.c.MaxDocumentBytes)
}

func (cl *Cloud) fleetJSON(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, cl.Fleet())
}

func (cl *Cloud) arrayJSON(w http.ResponseWriter, r *http.Request) {
	recs, err := cl.Received(r.PathValue("id"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		httpError(w, http.StatusNotFound, "no such array")
	case err != nil:
		httpError(w, http.StatusBadRequest, err.Error())
	default:
		if recs == nil {
			recs = []Received{}
		}
		writeJSON(w, http.StatusOK, recs)
	}
}

func (cl *Cloud) documentJSON(w http.ResponseWriter, r *http.Request) {
	seq, err := strconv.ParseUint(r.PathValue("seq"), 10, 64)
	if err != nil {
		httpError(w, http.StatusBadRequest, "bad sequence number")
		return
	}
	d, err := cl.Document(r.PathValue("id"), seq)
	switch {
	case errors.Is(err, os.ErrNotExist):
		httpError(w, http.StatusNotFound, "no such document")
	case err != nil:
		httpError(w, http.StatusBadRequest, err.Error())
	default:
		writeJSON(w, http.StatusOK, d)
	}
}

var fleetTemplate = template.Must(template.New("fleet").Funcs(template.FuncMap{
	"bytes": func(n int64) string {
		units := []string{"B", "KiB", "MiB", "GiB", "TiB", "PiB"}
		v, i := float64(n), 0
		for v >= 1024 && i < len(units)-1 {
			v /= 1024
			i++
		}
		return strconv.FormatFloat(v, 'f', 2, 64) + " " + units[i]
	},
	"ratio": func(r float64) string {
		if r <= 0 {
			r = 1
		}
		return strconv.FormatFloat(r, 'f', 1, 64) + " to 1"
	},
	"when": func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
}).Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><meta http-equiv="refresh" content="30">
<title>vfa fleet</title>
<style>body{font-family:sans-serif}table{border-collapse:collapse}td,th{border:1px solid #999;padding:2px 8px;text-align:left}.locked{color:#b00}</style>
</head><body>
<h1>vfa fleet: {{len .}} arrays</h1>
<table>
<tr><th>Name</th><th>Array ID</th><th>Last seen</th><th>Capacity</th><th>Used</th><th>Reduction</th><th>Open alerts</th><th>Lock status</th><th>Documents</th><th>Missing</th><th>Certificate</th></tr>
{{range .}}<tr><td>{{.Name}}</td><td><a href="/api/arrays/{{.ID}}">{{.ID}}</a></td><td>{{when .LastSeen}}</td><td>{{bytes .Capacity}}</td><td>{{bytes .Used}}</td><td>{{ratio .DataReduction}}</td><td>{{.OpenAlerts}}</td><td>{{if .Locked}}<span class="locked">locked: {{.LockReason}}</span>{{else}}unlocked{{end}}</td><td>{{.Documents}}</td><td>{{.Missing}}</td><td>{{.Identity}}</td></tr>
{{end}}</table>
<p><a href="/api/fleet">JSON</a></p>
</body></html>
`))

func (cl *Cloud) fleetPage(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := fleetTemplate.Execute(w, cl.Fleet()); err != nil {
		cl.log.Warn("cloud: fleet page", "err", err)
	}
}
