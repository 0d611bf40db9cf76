package phonehome

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"vfa/array"
)

// Config configures an Uploader. The zero value of every field is a useful
// default; the settings that an administrator changes (endpoint, CA, proxy,
// intervals, enabled) are the array's (array.PhoneHomeSettings).
type Config struct {
	// Version is the software version reported in diagnostics.
	Version string
	// Portals are the advertised iSCSI portals; Management the SSH address.
	Portals    []string
	Management string
	// SpoolBytesLimit bounds the spool (default 64 MiB).
	SpoolBytesLimit int64
	// BackoffMin and BackoffMax bound the wait between failed uploads
	// (default 1s and 5m); it doubles with every failure.
	BackoffMin, BackoffMax time.Duration
	// UploadTimeout bounds one upload (default 60s).
	UploadTimeout time.Duration
	// StatusInterval is the least time between two status writes to the
	// metadata store (default 1s).
	StatusInterval time.Duration
	// CloseGrace is how long Close lets an upload in flight finish before
	// it cancels it (default 5s).
	CloseGrace time.Duration
	// Now is the clock of document times (default time.Now); schedules use
	// real time.
	Now func() time.Time
	// Booted is when the array started (default: when Start is called).
	Booted time.Time
	Logger *slog.Logger

	// Test hooks: called after a document is spooled, and after each upload
	// attempt (err nil: sent).
	onSpooled func(Entry)
	onSent    func(Entry, error)
	onRequest func(array.PhoneHomeRequest)
}

// Internal limits.
const (
	alertQueueMax  = 4096 // alert changes waiting for an alerts document
	logsRoundsMax  = 64   // logs documents made back to back to catch up
	victimsListMax = 10   // sequence numbers named in a drop alert
)

// Event and alert codes phone home raises (component "phonehome").
const (
	CodeUpload       = "phonehome.upload"        // uploads fail (cleared when one succeeds)
	CodeSpoolDropped = "phonehome.spool.dropped" // the spool was full and dropped logs or alerts
	CodeSpoolThinned = "phonehome.spool.thinned" // the spool was full and thinned diagnostics (info)
	CodeSpool        = "phonehome.spool"         // the spool cannot be written or opened
	CodeSpoolCorrupt = "phonehome.spool.corrupt" // a spooled document failed its checksum and was dropped
	CodeRejected     = "phonehome.rejected"      // the endpoint rejected a document as too large (413); it was dropped
	CodeDocument     = "phonehome.document"      // a document could not be made
	CodeCancelled    = "phonehome.cancelled"     // an administrator cancelled requested documents (info)
)

// Uploader phones home for one array. Start it after the array opens and
// Close it before the array closes; run at most one per array.
type Uploader struct {
	a     *array.Array
	c     Config
	log   *slog.Logger
	spool *Spool
	id    string

	// Generator state (the generator goroutine, and Close after it ended).
	enc encoder
	col *collector

	settings atomic.Pointer[array.PhoneHomeSettings]

	docKick    chan struct{} // a document was spooled
	retryKick  chan struct{} // retry now: settings changed, send-now
	alertKick  chan struct{}
	statusKick chan struct{}
	stop       chan struct{}
	closed     atomic.Bool
	wg         sync.WaitGroup
	sendCtx    context.Context
	sendCancel context.CancelFunc

	alertMu      sync.Mutex
	alertQ       []array.Alert
	alertDropped int

	stMu sync.Mutex
	st   array.PhoneHomeStatus

	// Sender state.
	uploadAlert string      // reason of the open upload alert; "" none
	spoolFull   atomic.Bool // the drop alert is open

	inflightMu sync.Mutex
	inflight   inflight
}

type inflight struct {
	seq       uint64
	manual    bool
	cancel    context.CancelFunc
	cancelled bool
}

// Start opens the spool and starts phoning home as the array's settings
// say (doing nothing while they say disabled).
func Start(a *array.Array, c Config) (*Uploader, error) {
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Booted.IsZero() {
		c.Booted = c.Now()
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.BackoffMin <= 0 {
		c.BackoffMin = time.Second
	}
	if c.BackoffMax <= 0 {
		c.BackoffMax = 5 * time.Minute
	}
	c.BackoffMax = max(c.BackoffMax, c.BackoffMin)
	if c.UploadTimeout <= 0 {
		c.UploadTimeout = time.Minute
	}
	if c.StatusInterval <= 0 {
		c.StatusInterval = time.Second
	}
	if c.CloseGrace <= 0 {
		c.CloseGrace = 5 * time.Second
	}
	if c.SpoolBytesLimit == 0 {
		c.SpoolBytesLimit = DefaultSpoolBytes
	}
	s, err := a.PhoneHomeSettings()
	if err != nil {
		return nil, fmt.Errorf("phonehome: %w", err)
	}
	fs, dir := a.PhoneHomeSpool()
	sp, problems, err := OpenSpool(fs, dir, c.SpoolBytesLimit)
	if err != nil {
		a.PhoneHomeEvent(array.PhoneHomeCritical, CodeSpool, "cannot open the phone-home spool: "+err.Error(), false)
		return nil, err
	}
	for _, p := range problems {
		a.PhoneHomeEvent(array.PhoneHomeWarning, CodeSpoolCorrupt, p.Error()+"; it was dropped", false)
	}
	u := &Uploader{a: a, c: c, log: c.Logger, spool: sp, id: a.Config().ID,
		docKick: make(chan struct{}, 1), retryKick: make(chan struct{}, 1), alertKick: make(chan struct{}, 1),
		statusKick: make(chan struct{}, 1), stop: make(chan struct{})}
	u.sendCtx, u.sendCancel = context.WithCancel(context.Background())
	u.settings.Store(&s)
	if s.Enabled {
		if _, err := a.EnsurePhoneHomeCertificate(); err != nil {
			u.log.Warn("phonehome: certificate", "err", err)
		}
	}
	if prev, err := a.PhoneHomeStatus(); err == nil {
		u.st = prev
	}
	u.st.Running = true
	u.st.SentDocuments = 0
	u.col = newCollector(a, &u.c)
	a.OnAlert(u.onAlert)
	u.refreshStatus()
	u.wg.Add(3)
	go u.generate()
	go u.send()
	go u.writeStatus()
	return u, nil
}

// Status is the uploader's current status.
func (u *Uploader) Status() array.PhoneHomeStatus {
	u.stMu.Lock()
	defer u.stMu.Unlock()
	return u.st
}

// Spool is the uploader's spool (for inspection).
func (u *Uploader) Spool() *Spool { return u.spool }

// Close stops phoning home: an upload in flight gets CloseGrace to finish,
// a last logs document keeps the events not yet uploaded (they are in
// memory only and would be lost with the process), and the status is
// written. The spool stays for the next start.
func (u *Uploader) Close() error {
	if !u.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(u.stop)
	grace := time.AfterFunc(u.c.CloseGrace, u.sendCancel)
	u.wg.Wait()
	grace.Stop()
	u.sendCancel()
	if u.settings.Load().Enabled {
		u.spoolLogs("", true)
	}
	u.stMu.Lock()
	u.st.Running = false
	u.stMu.Unlock()
	u.refreshStatus()
	err := u.a.PutPhoneHomeStatus(u.Status())
	if cerr := u.spool.Close(); err == nil {
		err = cerr
	}
	return err
}

func kick(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// onAlert is the array's alert callback: it must not block (it may run on
// the data path's event hook).
func (u *Uploader) onAlert(al array.Alert) {
	if u.closed.Load() {
		return
	}
	u.alertMu.Lock()
	if len(u.alertQ) >= alertQueueMax {
		u.alertDropped++
	} else {
		u.alertQ = append(u.alertQ, al)
	}
	u.alertMu.Unlock()
	kick(u.alertKick)
}

// schedule is a repeating deadline in real time.
type schedule struct {
	t        *time.Timer
	next     time.Time
	interval time.Duration
	on       bool
}

func newSchedule() *schedule {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &schedule{t: t}
}

// start arms the schedule to fire after first, then every interval.
func (s *schedule) start(first, interval time.Duration) {
	s.interval, s.on = interval, true
	s.next = time.Now().Add(first)
	s.t.Reset(first)
}

func (s *schedule) off() {
	s.on = false
	s.t.Stop()
}

// advance arms the next deadline after a firing, skipping missed ones.
func (s *schedule) advance() {
	now := time.Now()
	s.next = s.next.Add(s.interval)
	if s.next.Before(now) {
		s.next = now.Add(s.interval)
	}
	s.t.Reset(s.next.Sub(now))
}

// generate makes the documents: on schedule, on alerts, on requests.
func (u *Uploader) generate() {
	defer u.wg.Done()
	changes, stopChanges := u.a.Changes()
	defer stopChanges()
	diag, logs := newSchedule(), newSchedule()
	defer diag.t.Stop()
	defer logs.t.Stop()
	s := *u.settings.Load()
	arm := func() {
		if !s.Enabled {
			diag.off()
			logs.off()
			return
		}
		di, li := s.Intervals()
		diag.start(0, di)
		logs.start(li, li)
	}
	arm()
	u.handleRequests(s)
	for {
		select {
		case <-u.stop:
			return
		case <-changes:
			old := s
			ns, err := u.a.PhoneHomeSettings()
			if err != nil {
				u.log.Error("phonehome: settings", "err", err)
				continue
			}
			s = ns
			u.settings.Store(&ns)
			oldD, oldL := old.Intervals()
			newD, newL := s.Intervals()
			if s.Enabled != old.Enabled || oldD != newD || oldL != newL {
				arm()
			}
			if !s.Enabled {
				u.dropAlertQueue()
			}
			if s.Enabled != old.Enabled || s.Endpoint != old.Endpoint || s.CACertificate != old.CACertificate || s.Proxy != old.Proxy {
				kick(u.retryKick)
			}
			u.handleRequests(s)
		case <-diag.t.C:
			if s.Enabled {
				u.spoolDiagnostics("")
				diag.advance()
			}
		case <-logs.t.C:
			if s.Enabled {
				u.spoolLogs("", false)
				logs.advance()
			}
		case <-u.alertKick:
			if s.Enabled {
				u.spoolAlerts()
			} else {
				u.dropAlertQueue()
			}
		}
	}
}

func (u *Uploader) dropAlertQueue() {
	u.alertMu.Lock()
	u.alertQ, u.alertDropped = nil, 0
	u.alertMu.Unlock()
}

// handleRequests carries out the administrator's requests, in order.
func (u *Uploader) handleRequests(s array.PhoneHomeSettings) {
	reqs, err := u.a.PhoneHomeRequests()
	if err != nil {
		u.log.Error("phonehome: requests", "err", err)
		return
	}
	if len(reqs) == 0 {
		return
	}
	ids := make([]string, 0, len(reqs))
	for _, r := range reqs {
		ids = append(ids, r.ID)
		if !s.Enabled && r.Kind != array.PhoneHomeCancel {
			u.log.Info("phonehome: request ignored: phone home is disabled", "request", r.Kind)
			continue
		}
		switch r.Kind {
		case array.PhoneHomeSendNow:
			u.spoolDiagnostics(array.PhoneHomeSendNow)
			u.spoolLogs(array.PhoneHomeSendNow, false)
			kick(u.retryKick)
		case array.PhoneHomeSendToday:
			u.spoolToday()
			kick(u.retryKick)
		case array.PhoneHomeCancel:
			u.cancelManual()
		}
	}
	if err := u.a.DonePhoneHomeRequests(ids); err != nil {
		u.log.Error("phonehome: requests", "err", err)
	}
	if u.c.onRequest != nil {
		for _, r := range reqs {
			u.c.onRequest(r)
		}
	}
}

// appendDoc encodes and spools a document and reports what made room.
func (u *Uploader) appendDoc(d *Document, kind Kind, auditCursor uint64) error {
	body, err := u.enc.encode(d)
	if err != nil {
		u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeDocument, err.Error(), false)
		return err
	}
	e := Entry{Seq: d.Seq, Kind: kind, Manual: d.Manual != "", Created: d.Time, AuditCursor: auditCursor}
	victims, err := u.spool.Append(e, body)
	u.reportVictims(victims)
	if err != nil {
		code, sev := CodeSpool, array.PhoneHomeCritical
		if errors.Is(err, ErrTooLarge) {
			code, sev = CodeDocument, array.PhoneHomeWarning
		}
		u.a.PhoneHomeEvent(sev, code, fmt.Sprintf("cannot spool %s document %d: %v", kind, d.Seq, err), false)
		u.refreshStatus()
		return err
	}
	u.refreshStatus()
	if u.c.onSpooled != nil {
		u.c.onSpooled(e)
	}
	kick(u.docKick)
	return nil
}

// reportVictims raises the events of documents dropped to make room.
func (u *Uploader) reportVictims(victims []Entry) {
	if len(victims) == 0 {
		return
	}
	var thinned, dropped []uint64
	for _, v := range victims {
		if v.Kind == KindDiagnostics {
			thinned = append(thinned, v.Seq)
		} else {
			dropped = append(dropped, v.Seq)
		}
	}
	limit := formatBytes(u.spool.Limit())
	if len(thinned) > 0 {
		u.a.PhoneHomeEvent(array.PhoneHomeInfo, CodeSpoolThinned,
			fmt.Sprintf("phone-home spool full (limit %s): thinned %d diagnostics documents (seq %s)", limit, len(thinned), seqList(thinned)), false)
	}
	if len(dropped) > 0 {
		u.spoolFull.Store(true)
		u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeSpoolDropped,
			fmt.Sprintf("phone-home spool full (limit %s): dropped %d logs or alerts documents, oldest first (seq %s)", limit, len(dropped), seqList(dropped)), false)
	}
}

func seqList(seqs []uint64) string {
	var b strings.Builder
	for i, s := range seqs {
		if i == victimsListMax {
			fmt.Fprintf(&b, ", ... %d", seqs[len(seqs)-1])
			break
		}
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprint(&b, s)
	}
	return b.String()
}

func formatBytes(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

func (u *Uploader) spoolStatus() SpoolStatus {
	docs, b, dropped := u.spool.Stats()
	return SpoolStatus{SpooledDocuments: docs, SpooledBytes: b, DroppedDocuments: dropped}
}

func (u *Uploader) spoolDiagnostics(manual string) {
	d := u.col.diagnostics(u.spool.NextSeq(), u.c.Now(), u.spoolStatus())
	d.Manual = manual
	_ = u.appendDoc(d, KindDiagnostics, 0)
}

// spoolLogs spools logs documents until the audit log and the events are
// caught up. onlyIfNew skips an empty document (at Close).
func (u *Uploader) spoolLogs(manual string, onlyIfNew bool) {
	for i := 0; i < logsRoundsMax; i++ {
		b, err := u.col.logs(u.spool.NextSeq(), u.c.Now(), u.spool.AuditCursor())
		if err != nil {
			u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeDocument, "cannot make a logs document: "+err.Error(), false)
			return
		}
		l := b.doc.Logs
		if onlyIfNew && len(l.Audit) == 0 && len(l.Events) == 0 && len(l.Alerts) == 0 {
			return
		}
		b.doc.Manual = manual
		if err := u.appendDoc(b.doc, KindLogs, b.cursor); err != nil {
			return
		}
		u.col.commit(b)
		if !b.more {
			return
		}
	}
}

func (u *Uploader) spoolToday() {
	err := u.col.today(u.c.Now(), u.spool.NextSeq, func(d *Document) error {
		return u.appendDoc(d, KindLogs, 0)
	})
	if err != nil {
		u.log.Warn("phonehome: send-today", "err", err)
	}
}

func (u *Uploader) spoolAlerts() {
	u.alertMu.Lock()
	q, dropped := u.alertQ, u.alertDropped
	u.alertQ, u.alertDropped = nil, 0
	u.alertMu.Unlock()
	if len(q) == 0 && dropped == 0 {
		return
	}
	now := u.c.Now()
	d := u.col.envelope(KindAlerts, u.spool.NextSeq(), now)
	body := &AlertsBody{Changes: make([]Alert, 0, len(q)), Open: openAlerts(u.a), Dropped: dropped}
	for _, al := range q {
		body.Changes = append(body.Changes, alertOf(al))
	}
	d.Alerts = body
	if err := u.appendDoc(d, KindAlerts, 0); err != nil {
		// Keep the changes for the next attempt (bounded).
		u.alertMu.Lock()
		if len(q)+len(u.alertQ) <= alertQueueMax {
			u.alertQ = append(q, u.alertQ...)
			u.alertDropped += dropped
		} else {
			u.alertDropped += dropped + len(q)
		}
		u.alertMu.Unlock()
	}
}

// cancelManual drops requested documents not yet sent, and the one in
// flight if it is one.
func (u *Uploader) cancelManual() {
	gone, err := u.spool.RemoveWhere(func(e Entry) bool { return e.Manual })
	u.inflightMu.Lock()
	if u.inflight.manual && u.inflight.cancel != nil {
		u.inflight.cancelled = true
		u.inflight.cancel()
	}
	u.inflightMu.Unlock()
	if err != nil {
		u.log.Error("phonehome: cancel", "err", err)
	}
	if len(gone) > 0 {
		seqs := make([]uint64, len(gone))
		for i, e := range gone {
			seqs[i] = e.Seq
		}
		u.a.PhoneHomeEvent(array.PhoneHomeInfo, CodeCancelled, fmt.Sprintf("cancelled %d requested documents (seq %s)", len(gone), seqList(seqs)), false)
	}
	u.refreshStatus()
}

// send uploads the spool in order, backing off after failures.
func (u *Uploader) send() {
	defer u.wg.Done()
	var cl *client
	defer func() { cl.close() }()
	var backoff time.Duration
	for {
		s := *u.settings.Load()
		var e Entry
		ok := false
		if s.Enabled {
			e, ok = u.spool.Oldest()
		}
		if !ok {
			select {
			case <-u.stop:
				return
			case <-u.docKick:
			case <-u.retryKick:
			}
			continue
		}
		err := u.sendOne(&cl, s, e)
		if err == nil {
			backoff = 0
			continue
		}
		u.spool.Release()
		select {
		case <-u.stop:
			return
		default:
		}
		backoff = min(max(2*backoff, u.c.BackoffMin), u.c.BackoffMax)
		t := time.NewTimer(backoff)
		select {
		case <-u.stop:
			t.Stop()
			return
		case <-t.C:
		case <-u.retryKick:
			t.Stop()
			backoff = 0
		}
	}
}

// sendOne uploads one document. nil: go on with the next one.
func (u *Uploader) sendOne(cl **client, s array.PhoneHomeSettings, e Entry) error {
	body, err := u.spool.Read(e.Seq)
	if errors.Is(err, ErrSpoolCorrupt) {
		if rerr := u.spool.Remove(e.Seq, true); rerr != nil {
			return u.failed(e, rerr)
		}
		u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeSpoolCorrupt, fmt.Sprintf("spooled %s document %d: %v; it was dropped", e.Kind, e.Seq, err), false)
		u.refreshStatus()
		return nil
	}
	if err != nil {
		return u.failed(e, err)
	}
	if err := u.prepareClient(cl, s); err != nil {
		return u.failed(e, err)
	}
	ctx, cancel := context.WithTimeout(u.sendCtx, u.c.UploadTimeout)
	u.inflightMu.Lock()
	u.inflight = inflight{seq: e.Seq, manual: e.Manual, cancel: cancel}
	u.inflightMu.Unlock()
	err = (*cl).post(ctx, body, e.Kind, e.Seq, u.id)
	cancel()
	if u.c.onSent != nil {
		u.c.onSent(e, err)
	}
	u.inflightMu.Lock()
	cancelled := u.inflight.cancelled
	u.inflight = inflight{}
	u.inflightMu.Unlock()
	now := u.c.Now()
	switch {
	case err == nil:
		if rerr := u.spool.Remove(e.Seq, false); rerr != nil {
			return u.failed(e, rerr)
		}
		u.stMu.Lock()
		u.st.LastAttempt, u.st.LastSuccess = now, now
		u.st.SentDocuments++
		u.stMu.Unlock()
		if u.uploadAlert != "" {
			u.uploadAlert = ""
			u.a.PhoneHomeEvent(array.PhoneHomeInfo, CodeUpload, "uploads to "+s.Endpoint+" succeed again", true)
		}
		if u.spoolFull.Load() {
			if _, b, _ := u.spool.Stats(); b <= u.spool.Limit()/2 {
				u.spoolFull.Store(false)
				u.a.PhoneHomeEvent(array.PhoneHomeInfo, CodeSpoolDropped, "the phone-home spool drained below half its limit", true)
			}
		}
		u.refreshStatus()
		return nil
	case cancelled:
		if rerr := u.spool.Remove(e.Seq, true); rerr != nil {
			return u.failed(e, rerr)
		}
		u.a.PhoneHomeEvent(array.PhoneHomeInfo, CodeCancelled, fmt.Sprintf("cancelled the upload of requested %s document %d", e.Kind, e.Seq), false)
		u.refreshStatus()
		return nil
	case errors.Is(err, ErrRejectedStatus):
		if rerr := u.spool.Remove(e.Seq, true); rerr != nil {
			return u.failed(e, rerr)
		}
		u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeRejected, fmt.Sprintf("%s document %d was dropped: %v", e.Kind, e.Seq, err), false)
		u.recordError(now, fmt.Sprintf("%s document %d: %v", e.Kind, e.Seq, err))
		return nil
	}
	return u.failed(e, err)
}

// prepareClient (re)builds the client when the settings or the phonehome
// certificate changed.
func (u *Uploader) prepareClient(cl **client, s array.PhoneHomeSettings) error {
	stamp, err := u.a.CertificateStamp(array.PhoneHomeCertificate)
	if errors.Is(err, array.ErrNotFound) {
		if _, err = u.a.EnsurePhoneHomeCertificate(); err == nil {
			stamp, err = u.a.CertificateStamp(array.PhoneHomeCertificate)
		}
	}
	if err != nil {
		return fmt.Errorf("certificate %s: %w", array.PhoneHomeCertificate, err)
	}
	key := clientKey(s, stamp)
	if *cl != nil && (*cl).key == key {
		return nil
	}
	cert, err := u.a.TLSCertificate(array.PhoneHomeCertificate)
	if err != nil {
		return fmt.Errorf("certificate %s: %w", array.PhoneHomeCertificate, err)
	}
	nc, err := newClient(s, cert, key, u.c.UploadTimeout)
	if err != nil {
		return err
	}
	(*cl).close()
	*cl = nc
	return nil
}

func (u *Uploader) recordError(now time.Time, msg string) {
	u.stMu.Lock()
	u.st.LastAttempt, u.st.LastError, u.st.LastErrorTime = now, msg, now
	u.stMu.Unlock()
	u.refreshStatus()
}

// failed records a failed upload and opens (or updates) the upload alert.
func (u *Uploader) failed(e Entry, err error) error {
	if u.sendCtx.Err() != nil {
		return err // closing: not the endpoint's fault
	}
	reason := err.Error()
	u.recordError(u.c.Now(), reason)
	if reason != u.uploadAlert {
		u.uploadAlert = reason
		u.a.PhoneHomeEvent(array.PhoneHomeWarning, CodeUpload, fmt.Sprintf("upload of %s document %d failed: %s", e.Kind, e.Seq, reason), false)
	}
	return err
}

// refreshStatus takes the spool's figures into the status and asks for a
// write.
func (u *Uploader) refreshStatus() {
	docs, b, dropped := u.spool.Stats()
	u.stMu.Lock()
	u.st.SpooledDocuments, u.st.SpooledBytes, u.st.DroppedDocuments = docs, b, dropped
	u.st.SpoolLimit = u.spool.Limit()
	u.st.NextSeq = u.spool.NextSeq()
	u.st.Updated = u.c.Now()
	u.stMu.Unlock()
	kick(u.statusKick)
}

// writeStatus stores the status, at most once per StatusInterval.
func (u *Uploader) writeStatus() {
	defer u.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		select {
		case <-u.stop:
			return
		case <-u.statusKick:
		}
		if err := u.a.PutPhoneHomeStatus(u.Status()); err != nil {
			u.log.Warn("phonehome: status", "err", err)
		}
		t.Reset(u.c.StatusInterval)
		select {
		case <-u.stop:
			return
		case <-t.C:
		}
	}
}
