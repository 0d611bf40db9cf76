package array

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// The audit log: who changed what, when, from where, and with what result.
// Every management command that changes anything (and every failed attempt
// at one) is appended by the management shell; phone home uploads it.
//
// It lives in the metadata store as objects:
//
//	"audit/<id: 16 lower-case hex digits>"  one entry (layout below)
//	"auditstate"                            the log's bounds (layout below)
//
// Ids start at 1 and only grow. The log keeps the newest AuditEntriesMax
// entries: the append that goes over the limit deletes the oldest one in the
// same atomic batch, so the log never grows past the limit and no entry is
// lost silently (the state records the first id kept).
//
// Entry value, format version 1 (integers little-endian, "str" is a uvarint
// byte length followed by that many bytes of UTF-8):
//
//	offset  size  field
//	0       1     version (1)
//	1       8     time, Unix nanoseconds (int64)
//	9       str   user     (at most 64 bytes)
//	.       str   source   (remote address, at most 256 bytes)
//	.       str   command  (the command line, at most 4096 bytes)
//	.       str   result   ("ok" or the error, at most 1024 bytes)
//
// Nothing may follow the result. Longer fields are cut (at a rune boundary,
// ending in "...") by Audit before they are encoded; the decoder rejects
// them.
//
// State value, format version 1:
//
//	0  1  version (1)
//	1  8  first id kept (uint64; 1 when nothing was ever dropped)
//	9  8  next id to assign (uint64, >= first)

// AuditFormatVersion is the version of the entry and state encodings.
const AuditFormatVersion = 1

// Limits of the audit log.
const (
	AuditEntriesMax  = 10000
	auditUserMax     = 64
	auditSourceMax   = 256
	auditCommandMax  = 4096
	auditResultMax   = 1024
	auditStateKey    = "auditstate"
	auditKeyPrefix   = "audit/"
	auditStateLength = 17
)

// ErrBadAuditRecord: a stored audit entry or state does not decode.
var ErrBadAuditRecord = errors.New("malformed audit record")

// AuditEntry is one line of the audit log.
type AuditEntry struct {
	ID      uint64 // assigned by Audit
	Time    time.Time
	User    string
	Source  string // the client's address
	Command string // the command line as given
	Result  string // "ok", or why it failed
}

func auditKey(id uint64) string { return fmt.Sprintf("%s%016x", auditKeyPrefix, id) }

// EncodeAuditEntry encodes e (without its id, which is the key). Fields over
// their limits are an error: Audit cuts them first.
func EncodeAuditEntry(e AuditEntry) ([]byte, error) {
	fields := []struct {
		name string
		v    string
		max  int
	}{{"user", e.User, auditUserMax}, {"source", e.Source, auditSourceMax}, {"command", e.Command, auditCommandMax}, {"result", e.Result, auditResultMax}}
	n := 9
	for _, f := range fields {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("audit: %s is %d bytes, over the limit of %d", f.name, len(f.v), f.max)
		}
		n += binary.MaxVarintLen16 + len(f.v)
	}
	b := make([]byte, 0, n)
	b = append(b, AuditFormatVersion)
	b = binary.LittleEndian.AppendUint64(b, uint64(e.Time.UnixNano()))
	for _, f := range fields {
		b = binary.AppendUvarint(b, uint64(len(f.v)))
		b = append(b, f.v...)
	}
	return b, nil
}

// DecodeAuditEntry decodes an entry value; id is taken from its key.
func DecodeAuditEntry(id uint64, b []byte) (AuditEntry, error) {
	if len(b) < 9 {
		return AuditEntry{}, fmt.Errorf("%w: entry of %d bytes", ErrBadAuditRecord, len(b))
	}
	if b[0] != AuditFormatVersion {
		return AuditEntry{}, fmt.Errorf("%w: entry version %d, this build reads %d", ErrBadAuditRecord, b[0], AuditFormatVersion)
	}
	e := AuditEntry{ID: id, Time: time.Unix(0, int64(binary.LittleEndian.Uint64(b[1:9]))).UTC()}
	rest := b[9:]
	for _, f := range []struct {
		dst *string
		max int
	}{{&e.User, auditUserMax}, {&e.Source, auditSourceMax}, {&e.Command, auditCommandMax}, {&e.Result, auditResultMax}} {
		s, r, err := readStr(rest, f.max)
		if err != nil {
			return AuditEntry{}, fmt.Errorf("%w: %v", ErrBadAuditRecord, err)
		}
		*f.dst, rest = s, r
	}
	if len(rest) != 0 {
		return AuditEntry{}, fmt.Errorf("%w: %d bytes after the last field", ErrBadAuditRecord, len(rest))
	}
	return e, nil
}

// readStr reads one length-prefixed UTF-8 string of at most max bytes.
func readStr(b []byte, max int) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 {
		return "", nil, errors.New("bad length")
	}
	if n > uint64(max) || n > uint64(len(b)-k) {
		return "", nil, fmt.Errorf("string of %d bytes (limit %d, %d left)", n, max, len(b)-k)
	}
	s := b[k : k+int(n)]
	if !utf8.Valid(s) {
		return "", nil, errors.New("string is not UTF-8")
	}
	return string(s), b[k+int(n):], nil
}

type auditState struct{ first, next uint64 }

func encodeAuditState(s auditState) []byte {
	b := make([]byte, 0, auditStateLength)
	b = append(b, AuditFormatVersion)
	b = binary.LittleEndian.AppendUint64(b, s.first)
	return binary.LittleEndian.AppendUint64(b, s.next)
}

func decodeAuditState(b []byte) (auditState, error) {
	if len(b) != auditStateLength || b[0] != AuditFormatVersion {
		return auditState{}, fmt.Errorf("%w: state of %d bytes", ErrBadAuditRecord, len(b))
	}
	s := auditState{first: binary.LittleEndian.Uint64(b[1:9]), next: binary.LittleEndian.Uint64(b[9:17])}
	if s.first == 0 || s.next < s.first {
		return auditState{}, fmt.Errorf("%w: state first %d next %d", ErrBadAuditRecord, s.first, s.next)
	}
	return s, nil
}

// cut shortens s to at most max bytes at a rune boundary, marking the cut.
func cut(s string, max int) string {
	s = strings.ToValidUTF8(s, "?")
	if len(s) <= max {
		return s
	}
	const mark = "..."
	n := max - len(mark)
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + mark
}

// Audit appends an entry to the audit log durably and returns its id. A zero
// Time is set to now. Over-long fields are cut.
func (a *Array) Audit(e AuditEntry) (uint64, error) {
	if e.Time.IsZero() {
		e.Time = a.o.Now()
	}
	e.User = cut(e.User, auditUserMax)
	e.Source = cut(e.Source, auditSourceMax)
	e.Command = cut(e.Command, auditCommandMax)
	e.Result = cut(e.Result, auditResultMax)
	val, err := EncodeAuditEntry(e)
	if err != nil {
		return 0, err
	}
	// a.mu serialises appends (id assignment and trimming).
	a.mu.Lock()
	defer a.mu.Unlock()
	st, err := a.auditState()
	if err != nil {
		return 0, err
	}
	id := st.next
	st.next++
	puts := map[string][]byte{auditKey(id): val}
	var dels []string
	for st.next-st.first > AuditEntriesMax {
		dels = append(dels, auditKey(st.first))
		st.first++
	}
	puts[auditStateKey] = encodeAuditState(st)
	if err := a.store.ObjectUpdate(puts, dels); err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	return id, nil
}

func (a *Array) auditState() (auditState, error) {
	v, ok, err := a.store.ObjectGet(auditStateKey)
	if err != nil {
		return auditState{}, fmt.Errorf("audit: %w", err)
	}
	if !ok {
		return auditState{first: 1, next: 1}, nil
	}
	st, err := decodeAuditState(v)
	if err != nil {
		return auditState{}, fmt.Errorf("audit: %w", err)
	}
	return st, nil
}

// AuditLog returns the entries with an id above after, oldest first, at most
// limit of them (0: all that are kept).
func (a *Array) AuditLog(after uint64, limit int) ([]AuditEntry, error) {
	kvs, err := a.store.ObjectList(auditKeyPrefix)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var out []AuditEntry
	for _, kv := range kvs {
		id, err := strconv.ParseUint(strings.TrimPrefix(kv.Key, auditKeyPrefix), 16, 64)
		if err != nil {
			return nil, fmt.Errorf("audit: key %q: %w", kv.Key, ErrBadAuditRecord)
		}
		if id <= after {
			continue
		}
		e, err := DecodeAuditEntry(id, kv.Value)
		if err != nil {
			return nil, fmt.Errorf("audit: entry %d: %w", id, err)
		}
		out = append(out, e)
		if limit > 0 && len(out) == limit {
			break
		}
	}
	return out, nil
}
