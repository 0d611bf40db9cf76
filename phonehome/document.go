package phonehome

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"
)

// The documents, as JSON (docs/phonehome.md shows an example of each). Every
// document has the same envelope: the schema, its kind, the array's
// sequence number (1, 2, 3... over all kinds, never reused), the time it was
// made and the array's identity; then exactly one of "diagnostics", "logs"
// and "alerts". Within schema vfa.phonehome/v1 members are only ever added;
// a reader ignores members it does not know. Documents never carry secrets
// (no keys, CHAP secrets, password hashes or certificates' private keys)
// and never user data.

// Schema is the schema name and version of every document.
const Schema = "vfa.phonehome/v1"

// Errors of document decoding.
var (
	// ErrBadDocument: a body is not a valid document.
	ErrBadDocument = errors.New("phonehome: malformed document")
)

// Document is one upload.
type Document struct {
	Schema string    `json:"schema"`
	Kind   string    `json:"kind"`
	Seq    uint64    `json:"seq"`
	Time   time.Time `json:"time"`
	Array  ArrayRef  `json:"array"`
	// Manual is the request that made the document ("send-now",
	// "send-today"); empty for scheduled documents.
	Manual      string       `json:"manual,omitempty"`
	Diagnostics *Diagnostics `json:"diagnostics,omitempty"`
	Logs        *Logs        `json:"logs,omitempty"`
	Alerts      *AlertsBody  `json:"alerts,omitempty"`
}

// ArrayRef identifies the array.
type ArrayRef struct {
	ID   string `json:"id"` // 32 hex digits
	Name string `json:"name"`
}

// Diagnostics is the frequent state report.
type Diagnostics struct {
	Version        string       `json:"version"`
	Booted         time.Time    `json:"booted"`
	UptimeSeconds  int64        `json:"uptime_seconds"`
	Network        Network      `json:"network"`
	Lock           LockStatus   `json:"lock"`
	SecurityToken  TokenStatus  `json:"security_token"`
	Drives         []Drive      `json:"drives"`
	Volumes        []Volume     `json:"volumes"`
	VolumesOmitted int          `json:"volumes_omitted,omitempty"`
	Hosts          []Host       `json:"hosts"`
	HostGroups     []HostGroup  `json:"host_groups"`
	Connections    []Connection `json:"connections"`
	Space          *Space       `json:"space,omitempty"`
	SpaceError     string       `json:"space_error,omitempty"`
	Performance    Performance  `json:"performance"`
	Alerts         []Alert      `json:"alerts"`
	PhoneHome      SpoolStatus  `json:"phonehome"`
}

// Network describes how the array is reached.
type Network struct {
	Addresses    []string `json:"addresses"`     // the machine's interface addresses (CIDR)
	Management   string   `json:"management"`    // SSH address
	ISCSIPortals []string `json:"iscsi_portals"` // advertised portals
	ISCSITarget  string   `json:"iscsi_target"`
}

// LockStatus says whether the array serves data.
type LockStatus struct {
	Locked bool   `json:"locked"`
	Reason string `json:"reason,omitempty"`
}

// TokenStatus is the security token (Rapid Data Locking), as purearray
// list --security-token shows it (without the key's signature).
type TokenStatus struct {
	Enabled bool   `json:"enabled"`
	Status  string `json:"status"`           // "disabled", "enabled", "locked: <reason>", "degraded: <reason>"
	Type    string `json:"type,omitempty"`   // "kmip" or "file"
	Server  string `json:"server,omitempty"` // the KMIP server's name, or the token file's path
	Error   string `json:"error,omitempty"`  // the status could not be read
}

// Drive is one device and its health.
type Drive struct {
	Name     string `json:"name"`
	Type     string `json:"type"`
	Slot     int    `json:"slot"`
	Status   string `json:"status"`
	Capacity int64  `json:"capacity"`
	Details  string `json:"details,omitempty"`
}

// Volume is one volume or snapshot.
type Volume struct {
	Name          string    `json:"name"`
	Serial        string    `json:"serial"`
	Size          int64     `json:"size"`
	Created       time.Time `json:"created"`
	Destroyed     bool      `json:"destroyed,omitempty"`
	Snapshot      bool      `json:"snapshot,omitempty"`
	Written       int64     `json:"written"`
	Unique        int64     `json:"unique"`
	DataReduction float64   `json:"data_reduction"`
}

// Host is a host object (without its CHAP secrets).
type Host struct {
	Name   string   `json:"name"`
	IQNs   []string `json:"iqns"`
	HGroup string   `json:"host_group,omitempty"`
	CHAP   bool     `json:"chap"`
}

// HostGroup is a host group.
type HostGroup struct {
	Name  string   `json:"name"`
	Hosts []string `json:"hosts"`
}

// Connection is a volume connected to a host or host group.
type Connection struct {
	Volume string `json:"volume"`
	Host   string `json:"host,omitempty"`
	HGroup string `json:"host_group,omitempty"`
	LUN    int    `json:"lun"`
}

// Space is the space report (bytes and ratios), as purearray list --space.
type Space struct {
	Capacity         int64   `json:"capacity"`
	Used             int64   `json:"used"`
	Free             int64   `json:"free"`
	Volumes          int64   `json:"volumes"`
	Snapshots        int64   `json:"snapshots"`
	Shared           int64   `json:"shared"`
	System           int64   `json:"system"`
	Provisioned      int64   `json:"provisioned"`
	LogicalWritten   int64   `json:"logical_written"`
	Unique           int64   `json:"unique"`
	DataReduction    float64 `json:"data_reduction"`
	ThinProvisioning float64 `json:"thin_provisioning"`
	TotalReduction   float64 `json:"total_reduction"`
	Parity           float64 `json:"parity"`
}

// Performance covers the time since the previous diagnostics document (or
// since phone home started).
type Performance struct {
	IntervalSeconds float64 `json:"interval_seconds"`
	ReadIOPS        float64 `json:"read_iops"`
	WriteIOPS       float64 `json:"write_iops"`
	ReadBandwidth   float64 `json:"read_bytes_per_sec"`
	WriteBandwidth  float64 `json:"write_bytes_per_sec"`
	ReadLatencyUS   float64 `json:"read_latency_us"`  // average, microseconds
	WriteLatencyUS  float64 `json:"write_latency_us"` // average, microseconds
	QueueDepth      float64 `json:"queue_depth"`      // average I/Os in flight
	Reads           uint64  `json:"reads"`
	Writes          uint64  `json:"writes"`
	ReadBytes       uint64  `json:"read_bytes"`
	WriteBytes      uint64  `json:"write_bytes"`
}

// Alert is an alert, open or closed.
type Alert struct {
	ID        uint64     `json:"id"`
	Time      time.Time  `json:"time"`
	Severity  string     `json:"severity"`
	Code      string     `json:"code"`
	Component string     `json:"component"`
	Message   string     `json:"message"`
	Count     int        `json:"count"`
	State     string     `json:"state"` // "open" or "closed"
	Closed    *time.Time `json:"closed,omitempty"`
}

// SpoolStatus is phone home's own state.
type SpoolStatus struct {
	SpooledDocuments int    `json:"spooled_documents"`
	SpooledBytes     int64  `json:"spooled_bytes"`
	DroppedDocuments uint64 `json:"dropped_documents"`
}

// Logs is the audit log and the events since the previous logs document.
type Logs struct {
	From  time.Time    `json:"from"`
	To    time.Time    `json:"to"`
	Audit []AuditEntry `json:"audit"`
	// AuditSkipped counts audit entries that were trimmed from the array's
	// log before they could be uploaded.
	AuditSkipped uint64 `json:"audit_skipped,omitempty"`
	// More says that more entries or events follow in the next document.
	More   bool    `json:"more,omitempty"`
	Events []Event `json:"events"`
	// EventsSkipped counts events that left the array's bounded event
	// history before they could be uploaded.
	EventsSkipped int     `json:"events_skipped,omitempty"`
	Alerts        []Alert `json:"alerts"` // alerts opened or closed in the period
}

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID      uint64    `json:"id"`
	Time    time.Time `json:"time"`
	User    string    `json:"user"`
	Source  string    `json:"source"`
	Command string    `json:"command"`
	Result  string    `json:"result"`
}

// Event is one array event.
type Event struct {
	Time      time.Time `json:"time"`
	Severity  string    `json:"severity"`
	Code      string    `json:"code"`
	Component string    `json:"component"`
	Message   string    `json:"message"`
	Clear     bool      `json:"clear,omitempty"`
}

// AlertsBody reports alerts as they open and close.
type AlertsBody struct {
	Changes []Alert `json:"changes"` // in the order they happened
	Open    []Alert `json:"open"`    // every alert open when the document was made
	// Dropped counts changes that did not fit the in-memory queue (they
	// are still in the next logs document's alerts).
	Dropped int `json:"dropped,omitempty"`
}

// encoder gzips documents, reusing its buffers.
type encoder struct {
	json bytes.Buffer
	gz   bytes.Buffer
	zw   *gzip.Writer
}

// encode marshals and compresses d; the result is valid until the next call.
func (c *encoder) encode(d *Document) ([]byte, error) {
	c.json.Reset()
	if err := json.NewEncoder(&c.json).Encode(d); err != nil {
		return nil, fmt.Errorf("phonehome: encode %s %d: %w", d.Kind, d.Seq, err)
	}
	c.gz.Reset()
	if c.zw == nil {
		c.zw = gzip.NewWriter(&c.gz)
	} else {
		c.zw.Reset(&c.gz)
	}
	if _, err := c.zw.Write(c.json.Bytes()); err != nil {
		return nil, err
	}
	if err := c.zw.Close(); err != nil {
		return nil, err
	}
	return c.gz.Bytes(), nil
}

// EncodeDocument marshals and gzips a document.
func EncodeDocument(d *Document) ([]byte, error) {
	var c encoder
	b, err := c.encode(d)
	if err != nil {
		return nil, err
	}
	return append([]byte(nil), b...), nil
}

// ErrDocumentTooLarge: a document decompresses to more than the limit.
var ErrDocumentTooLarge = errors.New("phonehome: document too large")

// Gunzip decompresses a body of at most limit decompressed bytes.
func Gunzip(body []byte, limit int64) ([]byte, error) {
	zr, err := gzip.NewReader(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("%w: not gzip: %v", ErrBadDocument, err)
	}
	var out bytes.Buffer
	n, err := io.Copy(&out, io.LimitReader(zr, limit+1))
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", ErrBadDocument, err)
	}
	if n > limit {
		return nil, fmt.Errorf("%w: over %d bytes decompressed", ErrDocumentTooLarge, limit)
	}
	return out.Bytes(), nil
}

// DecodeDocument decompresses (at most limit bytes) and checks a body.
func DecodeDocument(body []byte, limit int64) (*Document, error) {
	js, err := Gunzip(body, limit)
	if err != nil {
		return nil, err
	}
	return ParseDocument(js)
}

// ParseDocument parses and checks a document's JSON.
func ParseDocument(js []byte) (*Document, error) {
	var d Document
	if err := json.Unmarshal(js, &d); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDocument, err)
	}
	if err := d.check(); err != nil {
		return nil, err
	}
	return &d, nil
}

func (d *Document) check() error {
	if d.Schema != Schema {
		return fmt.Errorf("%w: schema %q, want %q", ErrBadDocument, d.Schema, Schema)
	}
	k, ok := kindOf(d.Kind)
	if !ok {
		return fmt.Errorf("%w: kind %q", ErrBadDocument, d.Kind)
	}
	if d.Seq == 0 {
		return fmt.Errorf("%w: seq 0", ErrBadDocument)
	}
	if d.Time.IsZero() {
		return fmt.Errorf("%w: no time", ErrBadDocument)
	}
	if id, err := hex.DecodeString(d.Array.ID); err != nil || len(id) != 16 || hex.EncodeToString(id) != d.Array.ID {
		return fmt.Errorf("%w: array id %q is not 32 lower-case hex digits", ErrBadDocument, d.Array.ID)
	}
	bodies := 0
	for _, present := range []bool{d.Diagnostics != nil, d.Logs != nil, d.Alerts != nil} {
		if present {
			bodies++
		}
	}
	want := map[Kind]bool{KindDiagnostics: d.Diagnostics != nil, KindLogs: d.Logs != nil, KindAlerts: d.Alerts != nil}
	if bodies != 1 || !want[k] {
		return fmt.Errorf("%w: a %s document must carry exactly its own body", ErrBadDocument, d.Kind)
	}
	return nil
}
