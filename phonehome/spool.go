package phonehome

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// The spool: a bounded on-disk queue of documents in sequence order (format
// in spoolfmt.go). Every document goes through it: the generator appends,
// the sender reads the oldest, sends it and removes it. It survives restarts
// and crashes; a document is removed only once the endpoint acknowledged it,
// or when the spool is full (see pickVictim), or when an administrator
// cancels it.

// DefaultSpoolBytes is the default spool limit.
const DefaultSpoolBytes = 64 << 20

// Spool errors.
var (
	// ErrTooLarge: a document is larger than the spool or DocumentBytesMax.
	ErrTooLarge = errors.New("phonehome: document too large")
	// ErrSpoolClosed: the spool was closed.
	ErrSpoolClosed = errors.New("phonehome: spool closed")
)

// Spool is the on-disk queue. Its methods are safe for concurrent use.
type Spool struct {
	fs    vfs.FS
	dir   string
	limit int64
	dirf  vfs.File

	mu          sync.Mutex
	entries     []Entry // ascending seq
	bytes       int64
	saved       spoolState // the state file's contents
	nextSeq     uint64
	auditCursor uint64
	dropped     uint64
	busy        uint64 // seq being sent (never dropped); 0: none
	closed      bool
}

func docName(seq uint64) string { return fmt.Sprintf("%016x.doc", seq) }
func tmpName(seq uint64) string { return fmt.Sprintf("%016x.tmp", seq) }

// OpenSpool opens (creating) the spool in dir with a limit in bytes (0: the
// default). Files that fail their checksums are removed, counted as dropped
// and returned as problems for the caller to report; a corrupt state file is
// an error (the sequence numbers could no longer be trusted): remove the
// directory to start over.
func OpenSpool(fs vfs.FS, dir string, limit int64) (*Spool, []error, error) {
	if limit == 0 {
		limit = DefaultSpoolBytes
	}
	if limit < docHeaderSize+1 {
		return nil, nil, fmt.Errorf("phonehome: spool limit of %d bytes is too small", limit)
	}
	if err := fs.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
	}
	// The directory's own entry must be durable before its files are.
	if err := syncVFSDir(fs, fs.PathDir(dir)); err != nil {
		return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
	}
	s := &Spool{fs: fs, dir: dir, limit: limit, saved: spoolState{nextSeq: 1}}
	names, err := fs.List(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
	}
	sort.Strings(names)
	var problems []error
	for _, name := range names {
		path := fs.PathJoin(dir, name)
		switch {
		case name == "state":
			b, err := readAll(fs, path)
			if err != nil {
				return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
			}
			if s.saved, err = decodeState(b); err != nil {
				return nil, nil, fmt.Errorf("phonehome: spool %s: %w", path, err)
			}
		case name == "state.tmp" || strings.HasSuffix(name, ".tmp"):
			if err := fs.Remove(path); err != nil {
				return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
			}
		case strings.HasSuffix(name, ".doc"):
			e, err := readEntry(fs, path)
			if err == nil && name != docName(e.Seq) {
				err = fmt.Errorf("%w: %s holds seq %d", ErrSpoolCorrupt, name, e.Seq)
			}
			if err != nil {
				problems = append(problems, fmt.Errorf("spool file %s: %w", name, err))
				if rerr := fs.Remove(path); rerr != nil {
					return nil, nil, fmt.Errorf("phonehome: spool: %w", rerr)
				}
				s.saved.dropped++
				if seq, perr := strconv.ParseUint(strings.TrimSuffix(name, ".doc"), 16, 64); perr == nil && seq >= s.saved.nextSeq {
					// Never reuse the number of a document that existed.
					s.saved.nextSeq = seq + 1
				}
				continue
			}
			s.entries = append(s.entries, e)
			s.bytes += e.Size
		}
	}
	sort.Slice(s.entries, func(i, j int) bool { return s.entries[i].Seq < s.entries[j].Seq })
	s.nextSeq, s.auditCursor, s.dropped = s.saved.nextSeq, s.saved.auditCursor, s.saved.dropped
	if n := len(s.entries); n > 0 {
		last := s.entries[n-1]
		s.nextSeq = max(s.nextSeq, last.Seq+1)
		s.auditCursor = max(s.auditCursor, last.AuditCursor)
	}
	if s.dirf, err = fs.OpenDir(dir); err != nil {
		return nil, nil, fmt.Errorf("phonehome: spool: %w", err)
	}
	if len(problems) > 0 {
		if err := s.saveState(); err != nil {
			s.dirf.Close()
			return nil, nil, err
		}
	}
	return s, problems, nil
}

func syncVFSDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func readAll(fs vfs.FS, path string) ([]byte, error) {
	f, err := fs.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, docHeaderSize+DocumentBytesMax+1))
}

// readEntry reads a document file's header (and checks the file's size).
func readEntry(fs vfs.FS, path string) (Entry, error) {
	f, err := fs.Open(path)
	if err != nil {
		return Entry{}, err
	}
	defer f.Close()
	var h [docHeaderSize]byte
	if _, err := io.ReadFull(f, h[:]); err != nil {
		return Entry{}, fmt.Errorf("%w: %v", ErrSpoolCorrupt, err)
	}
	e, _, _, err := DecodeDocHeader(h[:])
	if err != nil {
		return Entry{}, err
	}
	st, err := f.Stat()
	if err != nil {
		return Entry{}, err
	}
	if st.Size() != e.Size {
		return Entry{}, fmt.Errorf("%w: seq %d: file of %d bytes, header says %d", ErrSpoolCorrupt, e.Seq, st.Size(), e.Size)
	}
	return e, nil
}

// Limit is the spool's size limit in bytes.
func (s *Spool) Limit() int64 { return s.limit }

// NextSeq is the sequence number the next appended document must carry.
func (s *Spool) NextSeq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nextSeq
}

// AuditCursor is the highest audit-log id already spooled.
func (s *Spool) AuditCursor() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auditCursor
}

// Stats reports the documents and bytes spooled, and the documents dropped
// or cancelled in total.
func (s *Spool) Stats() (docs int, bytes int64, dropped uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries), s.bytes, s.dropped
}

// Entries returns the spooled documents, oldest first.
func (s *Spool) Entries() []Entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Entry(nil), s.entries...)
}

// Append stores a document durably. e.Seq must be NextSeq(); e.AuditCursor
// below the spool's cursor is raised to it (each document carries the
// cursor). To make room it removes documents as pickVictim says and
// returns them. A document that can never fit is ErrTooLarge, and its
// sequence number stays unused.
func (s *Spool) Append(e Entry, body []byte) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrSpoolClosed
	}
	if e.Seq != s.nextSeq {
		return nil, fmt.Errorf("phonehome: spool: appending seq %d, next is %d", e.Seq, s.nextSeq)
	}
	e.AuditCursor = max(e.AuditCursor, s.auditCursor)
	file, err := EncodeDocFile(e, body)
	if err != nil {
		return nil, err
	}
	e.Size = int64(len(file))
	if e.Size > s.limit {
		return nil, fmt.Errorf("%w: %s document of %d bytes, spool limit %d", ErrTooLarge, e.Kind, e.Size, s.limit)
	}
	var victims []Entry
	for s.bytes+e.Size > s.limit {
		i := pickVictim(s.entries, e, s.busy)
		if i < 0 {
			return victims, fmt.Errorf("%w: spool holds %d bytes it cannot drop", ErrTooLarge, s.bytes)
		}
		victims = append(victims, s.entries[i])
		if err := s.removeLocked([]int{i}, true); err != nil {
			return victims, err
		}
	}
	if err := s.writeFile(tmpName(e.Seq), docName(e.Seq), file); err != nil {
		return victims, fmt.Errorf("phonehome: spool: %w", err)
	}
	s.entries = append(s.entries, e)
	s.bytes += e.Size
	s.nextSeq = e.Seq + 1
	s.auditCursor = e.AuditCursor
	return victims, nil
}

// writeFile writes data under tmp, syncs it and renames it to name.
func (s *Spool) writeFile(tmp, name string, data []byte) error {
	tp, np := s.fs.PathJoin(s.dir, tmp), s.fs.PathJoin(s.dir, name)
	f, err := s.fs.Create(tp, vfs.WriteCategoryUnspecified)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		s.fs.Remove(tp)
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		s.fs.Remove(tp)
		return err
	}
	if err := f.Close(); err != nil {
		s.fs.Remove(tp)
		return err
	}
	if err := s.fs.Rename(tp, np); err != nil {
		s.fs.Remove(tp)
		return err
	}
	return s.dirf.Sync()
}

func (s *Spool) saveState() error {
	return s.saveStateWith(spoolState{nextSeq: s.nextSeq, auditCursor: s.auditCursor, dropped: s.dropped})
}

func (s *Spool) saveStateWith(st spoolState) error {
	if err := s.writeFile("state.tmp", "state", encodeState(st)); err != nil {
		return fmt.Errorf("phonehome: spool state: %w", err)
	}
	s.saved = st
	return nil
}

// removeLocked removes the entries at the given indexes (ascending); drop
// counts them as dropped. The state is saved first when the removal would
// otherwise lose a counter.
func (s *Spool) removeLocked(idx []int, drop bool) error {
	if len(idx) == 0 {
		return nil
	}
	gone := make(map[int]bool, len(idx))
	for _, i := range idx {
		gone[i] = true
	}
	keep := make([]Entry, 0, len(s.entries)-len(idx))
	for i, e := range s.entries {
		if !gone[i] {
			keep = append(keep, e)
		}
	}
	// What the next open would derive from the state and the files left.
	nextSeq, audit := s.saved.nextSeq, s.saved.auditCursor
	if n := len(keep); n > 0 {
		nextSeq = max(nextSeq, keep[n-1].Seq+1)
		audit = max(audit, keep[n-1].AuditCursor)
	}
	dropped := s.dropped
	if drop {
		dropped += uint64(len(idx))
	}
	if nextSeq < s.nextSeq || audit < s.auditCursor || dropped != s.saved.dropped {
		if err := s.saveStateWith(spoolState{nextSeq: s.nextSeq, auditCursor: s.auditCursor, dropped: dropped}); err != nil {
			return err
		}
	}
	s.dropped = dropped
	for _, i := range idx {
		e := s.entries[i]
		if err := s.fs.Remove(s.fs.PathJoin(s.dir, docName(e.Seq))); err != nil && !os.IsNotExist(err) {
			return fmt.Errorf("phonehome: spool: %w", err)
		}
		s.bytes -= e.Size
	}
	s.entries = keep
	return s.dirf.Sync()
}

// Oldest returns the oldest spooled document and marks it busy (being sent:
// it is not dropped to make room until Release or Remove).
func (s *Spool) Oldest() (Entry, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.entries) == 0 || s.closed {
		return Entry{}, false
	}
	s.busy = s.entries[0].Seq
	return s.entries[0], true
}

// Release ends the busy mark of Oldest without removing the document.
func (s *Spool) Release() {
	s.mu.Lock()
	s.busy = 0
	s.mu.Unlock()
}

// Read returns a spooled document's body, checked.
func (s *Spool) Read(seq uint64) ([]byte, error) {
	b, err := readAll(s.fs, s.fs.PathJoin(s.dir, docName(seq)))
	if err != nil {
		return nil, fmt.Errorf("phonehome: spool: %w", err)
	}
	e, body, err := DecodeDocFile(b)
	if err != nil {
		return nil, err
	}
	if e.Seq != seq {
		return nil, fmt.Errorf("%w: %s holds seq %d", ErrSpoolCorrupt, docName(seq), e.Seq)
	}
	return body, nil
}

// Remove removes a document that was sent (drop false) or is given up
// (drop true: counted as dropped). A document no longer spooled is not an
// error.
func (s *Spool) Remove(seq uint64, drop bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy == seq {
		s.busy = 0
	}
	i := sort.Search(len(s.entries), func(i int) bool { return s.entries[i].Seq >= seq })
	if i == len(s.entries) || s.entries[i].Seq != seq {
		return nil
	}
	return s.removeLocked([]int{i}, drop)
}

// RemoveWhere drops every document (but the busy one) for which pred is
// true and returns them.
func (s *Spool) RemoveWhere(pred func(Entry) bool) ([]Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var idx []int
	var out []Entry
	for i, e := range s.entries {
		if e.Seq != s.busy && pred(e) {
			idx = append(idx, i)
			out = append(out, e)
		}
	}
	return out, s.removeLocked(idx, true)
}

// Close closes the spool; its files stay.
func (s *Spool) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	return s.dirf.Close()
}

// pickVictim chooses the document to drop so that incoming fits, as an
// index into entries (ascending seq), or -1 when nothing may go. busy (the
// document being sent) is never chosen. The order:
//
//  1. Diagnostics are thinned: while three or more diagnostics documents
//     exist (counting incoming, which is never dropped), the one between two
//     others whose neighbours are closest in time goes (the oldest of
//     equals), so that what stays is an evenly spaced sample; then, of two,
//     the older one.
//  2. Logs and alerts documents go, oldest first.
//  3. The last diagnostics document goes.
func pickVictim(entries []Entry, incoming Entry, busy uint64) int {
	type diag struct {
		i int // index in entries; -1: incoming
		t int64
	}
	var ds []diag
	for i, e := range entries {
		if e.Kind == KindDiagnostics {
			ds = append(ds, diag{i, e.Created.UnixNano()})
		}
	}
	if incoming.Kind == KindDiagnostics {
		ds = append(ds, diag{-1, incoming.Created.UnixNano()})
	}
	movable := func(d diag) bool { return d.i >= 0 && entries[d.i].Seq != busy }
	if len(ds) >= 3 {
		best, bestGap := -1, int64(0)
		for k := 1; k < len(ds)-1; k++ {
			if !movable(ds[k]) {
				continue
			}
			gap := ds[k+1].t - ds[k-1].t
			if best < 0 || gap < bestGap {
				best, bestGap = ds[k].i, gap
			}
		}
		if best >= 0 {
			return best
		}
	}
	if len(ds) >= 2 {
		for k := 0; k < len(ds)-1; k++ {
			if movable(ds[k]) {
				return ds[k].i
			}
		}
	}
	for i, e := range entries {
		if e.Kind != KindDiagnostics && e.Seq != busy {
			return i
		}
	}
	for _, d := range ds {
		if movable(d) {
			return d.i
		}
	}
	return -1
}
