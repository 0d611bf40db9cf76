package array

// Phone home as the array keeps it: its settings, the uploader's status and
// the requests of the management shell, as objects in the metadata store.
// The management shell and the uploader (package phonehome) meet only here;
// neither imports the other.
//
//	"phonehome/settings"         PhoneHomeSettings (layout below)
//	"phonehome/status"           PhoneHomeStatus, written by the uploader
//	"phonehome/request/<id>"     PhoneHomeRequest, one per request of the CLI;
//	                             <id> is 16 hex digits of Unix nanoseconds and
//	                             8 random hex digits, so the keys sort in the
//	                             order the requests were made
//
// Each value is JSON with a "version" member, PhoneHomeFormatVersion; a
// value of another version, or one that does not decode or breaks a limit,
// is an error (ErrBadPhoneHomeRecord), never silently replaced.
//
//	settings: {"version":1, "enabled":bool, "endpoint":"https://...",
//	           "ca_certificate":"PEM", "proxy":"http://...",
//	           "diagnostics_interval_ns":int, "logs_interval_ns":int}
//	status:   {"version":1, "running":bool, "updated":time, "last_attempt":time,
//	           "last_success":time, "last_error":"...", "last_error_time":time,
//	           "spooled_documents":int, "spooled_bytes":int, "spool_limit":int,
//	           "next_seq":int, "sent_documents":int, "dropped_documents":int}
//	request:  {"version":1, "kind":"send-now"|"send-today"|"cancel",
//	           "time":time, "user":"..."}
//
// A change of the settings or a new request notifies the subscribers of
// Changes (the uploader listens there; the iSCSI target's refresh finds
// nothing to do). Status writes notify nobody.

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/datapath"
)

// PhoneHomeFormatVersion is the version of the phone-home objects.
const PhoneHomeFormatVersion = 1

// PhoneHomeCertificate is the name of the certificate the array presents to
// the phone-home endpoint.
const PhoneHomeCertificate = "phonehome"

// Defaults and limits of phone home.
const (
	DefaultDiagnosticsInterval = 30 * time.Second
	DefaultLogsInterval        = time.Hour
	phoneHomeIntervalMin       = 10 * time.Millisecond
	diagnosticsIntervalMax     = 24 * time.Hour
	logsIntervalMax            = 7 * 24 * time.Hour
	phoneHomeURLMax            = 2048
	phoneHomeCAMax             = 64 << 10
	phoneHomeCACertsMax        = 32
	phoneHomeErrorMax          = 1024
	phoneHomeRequestsMax       = 16
	phoneHomeSettingsKey       = "phonehome/settings"
	phoneHomeStatusKey         = "phonehome/status"
	phoneHomeRequestPrefix     = "phonehome/request/"
)

// Phone-home request kinds.
const (
	PhoneHomeSendNow   = "send-now"   // diagnostics and logs now, and retry the spool at once
	PhoneHomeSendToday = "send-today" // a logs document of everything since 00:00 UTC today
	PhoneHomeCancel    = "cancel"     // drop requested documents not yet sent
)

// Phone-home errors.
var (
	// ErrBadPhoneHomeRecord: a stored phone-home object does not decode.
	ErrBadPhoneHomeRecord = errors.New("malformed phone-home record")
	// ErrPhoneHomeBusy: too many requests wait for the uploader.
	ErrPhoneHomeBusy = errors.New("too many phone-home requests are waiting; is phone home running?")
	// ErrPhoneHomeNotConfigured: phone home cannot be enabled yet.
	ErrPhoneHomeNotConfigured = errors.New("phone home is not configured")
)

// PhoneHomeSettings configure the uploader. Zero intervals mean the defaults.
type PhoneHomeSettings struct {
	Enabled             bool
	Endpoint            string // https URL
	CACertificate       string // PEM: the CA(s) the endpoint's certificate must chain to
	Proxy               string // http(s) URL of an HTTP proxy; "" for none
	DiagnosticsInterval time.Duration
	LogsInterval        time.Duration
}

// Intervals returns the diagnostics and logs intervals, defaults applied.
func (s PhoneHomeSettings) Intervals() (diagnostics, logs time.Duration) {
	diagnostics, logs = s.DiagnosticsInterval, s.LogsInterval
	if diagnostics == 0 {
		diagnostics = DefaultDiagnosticsInterval
	}
	if logs == 0 {
		logs = DefaultLogsInterval
	}
	return diagnostics, logs
}

type phoneHomeSettingsRecord struct {
	Version             int    `json:"version"`
	Enabled             bool   `json:"enabled"`
	Endpoint            string `json:"endpoint,omitempty"`
	CACertificate       string `json:"ca_certificate,omitempty"`
	Proxy               string `json:"proxy,omitempty"`
	DiagnosticsInterval int64  `json:"diagnostics_interval_ns,omitempty"`
	LogsInterval        int64  `json:"logs_interval_ns,omitempty"`
}

// CheckPhoneHomeEndpoint validates an endpoint URL: https, with a host.
func CheckPhoneHomeEndpoint(s string) error {
	if len(s) > phoneHomeURLMax {
		return fmt.Errorf("%w: endpoint URL of %d bytes (limit %d)", ErrInvalid, len(s), phoneHomeURLMax)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: endpoint %q is not a URL", ErrInvalid, s)
	}
	if u.Scheme != "https" || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: endpoint %q must be an https://HOST[:PORT]/PATH URL", ErrInvalid, s)
	}
	if u.User != nil {
		return fmt.Errorf("%w: endpoint %q must not carry credentials", ErrInvalid, s)
	}
	if u.Fragment != "" {
		return fmt.Errorf("%w: endpoint %q must not have a fragment", ErrInvalid, s)
	}
	if p := u.Port(); p != "" {
		if n, err := strconv.Atoi(p); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%w: endpoint %q has a bad port", ErrInvalid, s)
		}
	}
	return nil
}

// CheckPhoneHomeProxy validates a proxy URL: http or https, with a host, no
// path and no credentials.
func CheckPhoneHomeProxy(s string) error {
	if len(s) > phoneHomeURLMax {
		return fmt.Errorf("%w: proxy URL of %d bytes (limit %d)", ErrInvalid, len(s), phoneHomeURLMax)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%w: proxy %q is not a URL", ErrInvalid, s)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%w: proxy %q must be an http://HOST:PORT URL", ErrInvalid, s)
	}
	if u.User != nil {
		return fmt.Errorf("%w: proxy %q: proxy credentials are not supported", ErrInvalid, s)
	}
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Errorf("%w: proxy %q must not have a path or query", ErrInvalid, s)
	}
	return nil
}

// ParsePhoneHomeCA parses a PEM bundle of CA certificates (1 to 32
// CERTIFICATE blocks; nothing else).
func ParsePhoneHomeCA(pemText string) ([]*x509.Certificate, error) {
	if len(pemText) > phoneHomeCAMax {
		return nil, fmt.Errorf("%w: CA certificate PEM of %d bytes (limit %d)", ErrInvalid, len(pemText), phoneHomeCAMax)
	}
	out, trailing, err := pemCertificates([]byte(pemText))
	switch {
	case err != nil:
		return nil, fmt.Errorf("%w: %v", ErrNotPEM, err)
	case len(out) > phoneHomeCACertsMax:
		return nil, fmt.Errorf("%w: more than %d CA certificates", ErrInvalid, phoneHomeCACertsMax)
	case len(out) == 0:
		return nil, ErrNotPEM
	case trailing != "":
		return nil, fmt.Errorf("%w: text after the last certificate", ErrNotPEM)
	}
	return out, nil
}

// Check validates the settings; enabled settings need an endpoint and a CA.
func (s PhoneHomeSettings) Check() error {
	if s.Endpoint != "" {
		if err := CheckPhoneHomeEndpoint(s.Endpoint); err != nil {
			return err
		}
	}
	if s.CACertificate != "" {
		if _, err := ParsePhoneHomeCA(s.CACertificate); err != nil {
			return err
		}
	}
	if s.Proxy != "" {
		if err := CheckPhoneHomeProxy(s.Proxy); err != nil {
			return err
		}
	}
	if d := s.DiagnosticsInterval; d != 0 && (d < phoneHomeIntervalMin || d > diagnosticsIntervalMax) {
		return fmt.Errorf("%w: diagnostics interval %v (%v to %v)", ErrInvalid, d, phoneHomeIntervalMin, diagnosticsIntervalMax)
	}
	if d := s.LogsInterval; d != 0 && (d < phoneHomeIntervalMin || d > logsIntervalMax) {
		return fmt.Errorf("%w: logs interval %v (%v to %v)", ErrInvalid, d, phoneHomeIntervalMin, logsIntervalMax)
	}
	if s.Enabled {
		if s.Endpoint == "" {
			return fmt.Errorf("%w: no endpoint is set", ErrPhoneHomeNotConfigured)
		}
		if s.CACertificate == "" {
			return fmt.Errorf("%w: no CA certificate is set to verify the endpoint", ErrPhoneHomeNotConfigured)
		}
	}
	return nil
}

// EncodePhoneHomeSettings encodes valid settings.
func EncodePhoneHomeSettings(s PhoneHomeSettings) ([]byte, error) {
	if err := s.Check(); err != nil {
		return nil, err
	}
	return json.Marshal(phoneHomeSettingsRecord{Version: PhoneHomeFormatVersion, Enabled: s.Enabled, Endpoint: s.Endpoint,
		CACertificate: s.CACertificate, Proxy: s.Proxy,
		DiagnosticsInterval: int64(s.DiagnosticsInterval), LogsInterval: int64(s.LogsInterval)})
}

// DecodePhoneHomeSettings decodes and validates stored settings.
func DecodePhoneHomeSettings(b []byte) (PhoneHomeSettings, error) {
	var r phoneHomeSettingsRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return PhoneHomeSettings{}, fmt.Errorf("%w: settings: %v", ErrBadPhoneHomeRecord, err)
	}
	if r.Version != PhoneHomeFormatVersion {
		return PhoneHomeSettings{}, fmt.Errorf("%w: settings version %d, this build reads %d", ErrBadPhoneHomeRecord, r.Version, PhoneHomeFormatVersion)
	}
	s := PhoneHomeSettings{Enabled: r.Enabled, Endpoint: r.Endpoint, CACertificate: r.CACertificate, Proxy: r.Proxy,
		DiagnosticsInterval: time.Duration(r.DiagnosticsInterval), LogsInterval: time.Duration(r.LogsInterval)}
	if err := s.Check(); err != nil {
		return PhoneHomeSettings{}, fmt.Errorf("%w: settings: %v", ErrBadPhoneHomeRecord, err)
	}
	return s, nil
}

// PhoneHomeSettings returns the stored settings (zero when never set).
func (a *Array) PhoneHomeSettings() (PhoneHomeSettings, error) {
	v, ok, err := a.store.ObjectGet(phoneHomeSettingsKey)
	if err != nil {
		return PhoneHomeSettings{}, fmt.Errorf("phone home: settings: %w", err)
	}
	if !ok {
		return PhoneHomeSettings{}, nil
	}
	return DecodePhoneHomeSettings(v)
}

// UpdatePhoneHomeSettings changes the settings with fn and stores them if
// they are valid (nothing changes otherwise). Setting an endpoint or
// enabling phone home creates the phonehome certificate if it does not
// exist. It returns the stored settings.
func (a *Array) UpdatePhoneHomeSettings(fn func(s *PhoneHomeSettings) error) (PhoneHomeSettings, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	s, err := a.PhoneHomeSettings()
	if err != nil {
		return PhoneHomeSettings{}, err
	}
	if err := fn(&s); err != nil {
		return PhoneHomeSettings{}, err
	}
	b, err := EncodePhoneHomeSettings(s)
	if err != nil {
		return PhoneHomeSettings{}, err
	}
	if s.Enabled || s.Endpoint != "" {
		if _, err := a.ensurePhoneHomeCertificate(a.cfg.Name); err != nil {
			return PhoneHomeSettings{}, fmt.Errorf("phone home: certificate %s: %w", PhoneHomeCertificate, err)
		}
	}
	if err := a.store.ObjectUpdate(map[string][]byte{phoneHomeSettingsKey: b}, nil); err != nil {
		return PhoneHomeSettings{}, fmt.Errorf("phone home: settings: %w", err)
	}
	a.changes.notify()
	return s, nil
}

// EnsurePhoneHomeCertificate creates the phonehome certificate (EC P-256,
// self-signed, common name the array's name, organizational unit its id)
// unless it exists. A CA signs it from its CSR (CertificateRequest) and it
// is replaced with ImportCertificate; the uploader uses whatever is stored
// at the time of each upload.
func (a *Array) EnsurePhoneHomeCertificate() (created bool, err error) {
	return a.ensurePhoneHomeCertificate(a.Name())
}

func (a *Array) ensurePhoneHomeCertificate(arrayName string) (bool, error) {
	if _, err := a.certRecord(PhoneHomeCertificate); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	_, err := a.CreateCertificate(PhoneHomeCertificate, CertOptions{CommonName: arrayName, Organization: "vfa",
		OrganizationalUnit: "array " + hex.EncodeToString(a.id[:]), KeyAlgorithm: "ec"})
	if errors.Is(err, ErrExists) {
		return false, nil
	}
	return err == nil, err
}

// CertificateStamp is a digest of a stored certificate record (key and
// certificate): it changes when the certificate is replaced. Cheap: no key
// is unsealed.
func (a *Array) CertificateStamp(name string) ([sha256.Size]byte, error) {
	v, ok, err := a.store.ObjectGet(certKey(name))
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	if !ok {
		return [sha256.Size]byte{}, fmt.Errorf("certificate %s %w", name, ErrNotFound)
	}
	return sha256.Sum256(v), nil
}

// PhoneHomeUses names what uses a certificate on behalf of phone home ("" if
// nothing): for DeleteCertificate's inUse.
func (a *Array) PhoneHomeUses(cert string) string {
	if lower(cert) != PhoneHomeCertificate {
		return ""
	}
	if s, err := a.PhoneHomeSettings(); err == nil && s.Enabled {
		return "phone home"
	}
	return ""
}

// PhoneHomeSpool returns the file system and the directory of the phone-home
// spool (<data dir>/spool).
func (a *Array) PhoneHomeSpool() (vfs.FS, string) {
	return a.o.FS, filepath.Join(a.o.Dir, "spool")
}

// Severities of phone-home events (the data path's, so that phone home
// needs no import of datapath).
const (
	PhoneHomeInfo     = datapath.Info
	PhoneHomeWarning  = datapath.Warning
	PhoneHomeCritical = datapath.Critical
)

// PhoneHomeEvent records an event of phone home (component "phonehome"):
// it is logged and kept with the array's events, and, like a data-path
// event, opens an alert when sev is Warning or worse and closes it when
// clear is set. It must not be called with a lock that an OnAlert callback
// takes.
func (a *Array) PhoneHomeEvent(sev datapath.Severity, code, message string, clear bool) {
	a.onEvent(datapath.Event{Time: a.o.Now(), Severity: sev, Code: code, Component: "phonehome", Message: message, Clear: clear})
}

// PhoneHomeStatus is what the uploader last reported.
type PhoneHomeStatus struct {
	Running          bool      `json:"running"`
	Updated          time.Time `json:"updated"`
	LastAttempt      time.Time `json:"last_attempt"`
	LastSuccess      time.Time `json:"last_success"`
	LastError        string    `json:"last_error,omitempty"`
	LastErrorTime    time.Time `json:"last_error_time"`
	SpooledDocuments int       `json:"spooled_documents"`
	SpooledBytes     int64     `json:"spooled_bytes"`
	SpoolLimit       int64     `json:"spool_limit"`
	NextSeq          uint64    `json:"next_seq"`
	SentDocuments    uint64    `json:"sent_documents"`
	DroppedDocuments uint64    `json:"dropped_documents"`
}

type phoneHomeStatusRecord struct {
	Version int `json:"version"`
	PhoneHomeStatus
}

// EncodePhoneHomeStatus encodes a status; an over-long error is cut.
func EncodePhoneHomeStatus(st PhoneHomeStatus) ([]byte, error) {
	st.LastError = cut(st.LastError, phoneHomeErrorMax)
	if st.SpooledDocuments < 0 || st.SpooledBytes < 0 || st.SpoolLimit < 0 {
		return nil, fmt.Errorf("%w: negative spool figures", ErrInvalid)
	}
	return json.Marshal(phoneHomeStatusRecord{Version: PhoneHomeFormatVersion, PhoneHomeStatus: st})
}

// DecodePhoneHomeStatus decodes a stored status.
func DecodePhoneHomeStatus(b []byte) (PhoneHomeStatus, error) {
	var r phoneHomeStatusRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return PhoneHomeStatus{}, fmt.Errorf("%w: status: %v", ErrBadPhoneHomeRecord, err)
	}
	if r.Version != PhoneHomeFormatVersion {
		return PhoneHomeStatus{}, fmt.Errorf("%w: status version %d, this build reads %d", ErrBadPhoneHomeRecord, r.Version, PhoneHomeFormatVersion)
	}
	st := r.PhoneHomeStatus
	if len(st.LastError) > phoneHomeErrorMax || st.SpooledDocuments < 0 || st.SpooledBytes < 0 || st.SpoolLimit < 0 {
		return PhoneHomeStatus{}, fmt.Errorf("%w: status out of bounds", ErrBadPhoneHomeRecord)
	}
	return st, nil
}

// PhoneHomeStatus returns the uploader's last report (zero when it never
// ran).
func (a *Array) PhoneHomeStatus() (PhoneHomeStatus, error) {
	v, ok, err := a.store.ObjectGet(phoneHomeStatusKey)
	if err != nil {
		return PhoneHomeStatus{}, fmt.Errorf("phone home: status: %w", err)
	}
	if !ok {
		return PhoneHomeStatus{}, nil
	}
	return DecodePhoneHomeStatus(v)
}

// PutPhoneHomeStatus stores the uploader's status (durably; it notifies
// nobody).
func (a *Array) PutPhoneHomeStatus(st PhoneHomeStatus) error {
	b, err := EncodePhoneHomeStatus(st)
	if err != nil {
		return err
	}
	if err := a.store.ObjectUpdate(map[string][]byte{phoneHomeStatusKey: b}, nil); err != nil {
		return fmt.Errorf("phone home: status: %w", err)
	}
	return nil
}

// PhoneHomeRequest is a request of the management shell to the uploader.
type PhoneHomeRequest struct {
	ID   string    `json:"-"`
	Kind string    `json:"kind"`
	Time time.Time `json:"time"`
	User string    `json:"user,omitempty"`
}

type phoneHomeRequestRecord struct {
	Version int `json:"version"`
	PhoneHomeRequest
}

func checkRequestKind(k string) error {
	switch k {
	case PhoneHomeSendNow, PhoneHomeSendToday, PhoneHomeCancel:
		return nil
	}
	return fmt.Errorf("%w: phone-home request %q", ErrInvalid, k)
}

// EncodePhoneHomeRequest encodes a request (its id is the key).
func EncodePhoneHomeRequest(r PhoneHomeRequest) ([]byte, error) {
	if err := checkRequestKind(r.Kind); err != nil {
		return nil, err
	}
	r.User = cut(r.User, auditUserMax)
	return json.Marshal(phoneHomeRequestRecord{Version: PhoneHomeFormatVersion, PhoneHomeRequest: r})
}

// DecodePhoneHomeRequest decodes a stored request with the given id.
func DecodePhoneHomeRequest(id string, b []byte) (PhoneHomeRequest, error) {
	var r phoneHomeRequestRecord
	if err := json.Unmarshal(b, &r); err != nil {
		return PhoneHomeRequest{}, fmt.Errorf("%w: request: %v", ErrBadPhoneHomeRecord, err)
	}
	if r.Version != PhoneHomeFormatVersion {
		return PhoneHomeRequest{}, fmt.Errorf("%w: request version %d, this build reads %d", ErrBadPhoneHomeRecord, r.Version, PhoneHomeFormatVersion)
	}
	if err := checkRequestKind(r.Kind); err != nil || len(r.User) > auditUserMax {
		return PhoneHomeRequest{}, fmt.Errorf("%w: request %q", ErrBadPhoneHomeRecord, r.Kind)
	}
	r.ID = id
	return r.PhoneHomeRequest, nil
}

// RequestPhoneHome queues a request for the uploader (it is handled when
// the uploader runs, in order). At most 16 wait; more is ErrPhoneHomeBusy.
func (a *Array) RequestPhoneHome(kind, user string) (PhoneHomeRequest, error) {
	if err := checkRequestKind(kind); err != nil {
		return PhoneHomeRequest{}, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	kvs, err := a.store.ObjectList(phoneHomeRequestPrefix)
	if err != nil {
		return PhoneHomeRequest{}, fmt.Errorf("phone home: requests: %w", err)
	}
	if len(kvs) >= phoneHomeRequestsMax {
		return PhoneHomeRequest{}, ErrPhoneHomeBusy
	}
	// The id starts with the time, made to grow even when the clock does not.
	now := a.o.Now()
	stamp := uint64(now.UnixNano())
	if n := len(kvs); n > 0 {
		last := strings.TrimPrefix(kvs[n-1].Key, phoneHomeRequestPrefix)
		if len(last) >= 16 {
			if prev, err := strconv.ParseUint(last[:16], 16, 64); err == nil && prev >= stamp {
				stamp = prev + 1
			}
		}
	}
	var rnd [4]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return PhoneHomeRequest{}, err
	}
	r := PhoneHomeRequest{ID: fmt.Sprintf("%016x%s", stamp, hex.EncodeToString(rnd[:])), Kind: kind, Time: now, User: user}
	b, err := EncodePhoneHomeRequest(r)
	if err != nil {
		return PhoneHomeRequest{}, err
	}
	if err := a.store.ObjectUpdate(map[string][]byte{phoneHomeRequestPrefix + r.ID: b}, nil); err != nil {
		return PhoneHomeRequest{}, fmt.Errorf("phone home: request: %w", err)
	}
	a.changes.notify()
	return r, nil
}

// PhoneHomeRequests lists the waiting requests, oldest first. A request that
// does not decode is returned as an error.
func (a *Array) PhoneHomeRequests() ([]PhoneHomeRequest, error) {
	kvs, err := a.store.ObjectList(phoneHomeRequestPrefix)
	if err != nil {
		return nil, fmt.Errorf("phone home: requests: %w", err)
	}
	out := make([]PhoneHomeRequest, 0, len(kvs))
	for _, kv := range kvs {
		r, err := DecodePhoneHomeRequest(strings.TrimPrefix(kv.Key, phoneHomeRequestPrefix), kv.Value)
		if err != nil {
			return nil, fmt.Errorf("phone home: %s: %w", kv.Key, err)
		}
		out = append(out, r)
	}
	return out, nil
}

// DonePhoneHomeRequests deletes handled requests.
func (a *Array) DonePhoneHomeRequests(ids []string) error {
	if len(ids) == 0 {
		return nil
	}
	dels := make([]string, len(ids))
	for i, id := range ids {
		dels[i] = phoneHomeRequestPrefix + id
	}
	if err := a.store.ObjectUpdate(nil, dels); err != nil {
		return fmt.Errorf("phone home: requests: %w", err)
	}
	return nil
}
