package phonehome

import (
	"net"
	"sort"
	"time"

	"vfa/array"
)

// Building documents from the array's snapshot API. Only the generator
// goroutine uses a collector.

// Limits of one document's contents.
const (
	volumesPerDocMax = 10000
	auditPerDocMax   = 1000
	eventsPerDocMax  = 1000
	alertsPerDocMax  = 1000
	// spaceMaxAge: the space report (a scan of the metadata) is recomputed
	// when data was written or volumes changed, and at least this often.
	spaceMaxAge = 10 * time.Minute
	// auditBytesPerDocMax bounds the audit text of one logs document.
	auditBytesPerDocMax = 2 << 20
)

type collector struct {
	a *array.Array
	c *Config

	perfPrev     array.IOStats
	perfPrevTime time.Time

	space        *Space
	spaceVols    map[string]array.VolumeSpace
	spaceErr     string
	spaceTime    time.Time
	spaceWrites  uint64
	spaceVolsSig string

	// The last event already in a logs document (events only ever leave
	// the array's history from the front).
	eventLast  eventKey
	eventSeen  bool
	alertsFrom time.Time // alerts opened or closed after this go in the next logs
	logsFrom   time.Time
}

func newCollector(a *array.Array, c *Config) *collector {
	now := c.Now()
	return &collector{a: a, c: c, perfPrev: a.IOStats(), perfPrevTime: now, alertsFrom: c.Booted, logsFrom: c.Booted}
}

func (k *collector) envelope(kind Kind, seq uint64, now time.Time) *Document {
	cfg := k.a.Config()
	return &Document{Schema: Schema, Kind: kind.String(), Seq: seq, Time: now.UTC(), Array: ArrayRef{ID: cfg.ID, Name: k.a.Name()}}
}

func alertOf(al array.Alert) Alert {
	out := Alert{ID: al.ID, Time: al.Time.UTC(), Severity: al.Severity.String(), Code: al.Code, Component: al.Component,
		Message: al.Message, Count: al.Count, State: "open"}
	if !al.Closed.IsZero() {
		t := al.Closed.UTC()
		out.State, out.Closed = "closed", &t
	}
	return out
}

func openAlerts(a *array.Array) []Alert {
	als := a.Alerts(false)
	out := make([]Alert, 0, min(len(als), alertsPerDocMax))
	for _, al := range als {
		if len(out) == alertsPerDocMax {
			break
		}
		out = append(out, alertOf(al))
	}
	return out
}

// diagnostics builds a diagnostics document.
func (k *collector) diagnostics(seq uint64, now time.Time, spool SpoolStatus) *Document {
	a := k.a
	d := k.envelope(KindDiagnostics, seq, now)
	g := &Diagnostics{Version: k.c.Version, Booted: k.c.Booted.UTC(), UptimeSeconds: int64(now.Sub(k.c.Booted) / time.Second),
		Drives: []Drive{}, Volumes: []Volume{}, Hosts: []Host{}, HostGroups: []HostGroup{}, Connections: []Connection{}, PhoneHome: spool}
	d.Diagnostics = g

	g.Network = Network{Addresses: interfaceAddrs(), Management: k.c.Management, ISCSIPortals: append([]string{}, k.c.Portals...),
		ISCSITarget: a.TargetName()}
	locked, why := a.Locked()
	g.Lock = LockStatus{Locked: locked, Reason: why}
	if ts, err := a.Token(); err != nil {
		g.SecurityToken = TokenStatus{Status: "unknown", Error: err.Error()}
	} else {
		g.SecurityToken = TokenStatus{Enabled: ts.Enabled, Status: ts.Status, Type: ts.Type, Server: ts.Server}
	}
	for _, dr := range a.Drives() {
		g.Drives = append(g.Drives, Drive{Name: dr.Name, Type: string(dr.Kind), Slot: dr.Slot, Status: string(dr.Status), Capacity: dr.Capacity, Details: dr.Reason})
	}

	vols := a.Volumes()
	k.refreshSpace(now, vols)
	g.Space = k.space
	g.SpaceError = k.spaceErr
	for _, v := range vols {
		if len(g.Volumes) == volumesPerDocMax {
			g.VolumesOmitted++
			continue
		}
		dv := Volume{Name: v.Name, Serial: v.Serial, Size: v.Size, Created: v.Created.UTC(), Destroyed: !v.Destroyed.IsZero(), Snapshot: v.Snapshot}
		if vs, ok := k.spaceVols[v.Name]; ok {
			dv.Written, dv.Unique, dv.DataReduction = vs.Written, vs.Unique, vs.DataReduction
		}
		g.Volumes = append(g.Volumes, dv)
	}
	for _, h := range a.Hosts() {
		g.Hosts = append(g.Hosts, Host{Name: h.Name, IQNs: append([]string{}, h.IQNs...), HGroup: h.HGroup, CHAP: h.CHAP.User != ""})
	}
	for _, hg := range a.HostGroups() {
		g.HostGroups = append(g.HostGroups, HostGroup{Name: hg.Name, Hosts: append([]string{}, hg.Hosts...)})
	}
	for _, c := range a.Connections() {
		g.Connections = append(g.Connections, Connection{Volume: c.Volume, Host: c.Host, HGroup: c.HGroup, LUN: c.LUN})
	}
	g.Performance = k.performance(now)
	g.Alerts = openAlerts(a)
	return d
}

// refreshSpace recomputes the space report when it may have changed.
func (k *collector) refreshSpace(now time.Time, vols []array.Volume) {
	writes := k.a.IOStats().Writes
	sig := volumesSignature(vols)
	if !k.spaceTime.IsZero() && writes == k.spaceWrites && sig == k.spaceVolsSig && now.Sub(k.spaceTime) < spaceMaxAge && k.spaceErr == "" {
		return
	}
	sp, vs, err := k.a.Space()
	k.spaceTime, k.spaceWrites, k.spaceVolsSig = now, writes, sig
	if err != nil {
		k.space, k.spaceVols, k.spaceErr = nil, nil, err.Error()
		return
	}
	k.spaceErr = ""
	k.space = &Space{Capacity: sp.Capacity, Used: sp.Used, Free: max(sp.Capacity-sp.Used, 0), Volumes: sp.Volumes, Snapshots: sp.Snapshots,
		Shared: sp.Shared, System: sp.System, Provisioned: sp.Provisioned, LogicalWritten: sp.LogicalWritten, Unique: sp.Unique,
		DataReduction: sp.DataReduction, ThinProvisioning: sp.ThinProvisioning, TotalReduction: sp.TotalReduction, Parity: sp.Parity}
	k.spaceVols = make(map[string]array.VolumeSpace, len(vs))
	for _, v := range vs {
		k.spaceVols[v.Name] = v
	}
}

// volumesSignature changes when a volume is created, destroyed, resized or
// renamed.
func volumesSignature(vols []array.Volume) string {
	b := make([]byte, 0, len(vols)*48)
	for _, v := range vols {
		b = append(b, v.Name...)
		b = append(b, 0)
		b = append(b, byte(v.Size), byte(v.Size>>8), byte(v.Size>>16), byte(v.Size>>24), byte(v.Size>>32), byte(v.Size>>40))
		if !v.Destroyed.IsZero() {
			b = append(b, 'd')
		}
		b = append(b, byte(v.Medium), byte(v.Medium>>8), byte(v.Medium>>16))
	}
	return string(b)
}

// performance reports the I/O since the previous call.
func (k *collector) performance(now time.Time) Performance {
	cur := k.a.IOStats()
	prev, dt := k.perfPrev, now.Sub(k.perfPrevTime).Seconds()
	k.perfPrev, k.perfPrevTime = cur, now
	p := Performance{IntervalSeconds: dt, Reads: cur.Reads - prev.Reads, Writes: cur.Writes - prev.Writes,
		ReadBytes: cur.ReadBytes - prev.ReadBytes, WriteBytes: cur.WriteBytes - prev.WriteBytes}
	rn, wn := cur.ReadNanos-prev.ReadNanos, cur.WriteNanos-prev.WriteNanos
	if p.Reads > 0 {
		p.ReadLatencyUS = float64(rn) / float64(p.Reads) / 1e3
	}
	if p.Writes > 0 {
		p.WriteLatencyUS = float64(wn) / float64(p.Writes) / 1e3
	}
	if dt > 0 {
		p.ReadIOPS = float64(p.Reads) / dt
		p.WriteIOPS = float64(p.Writes) / dt
		p.ReadBandwidth = float64(p.ReadBytes) / dt
		p.WriteBandwidth = float64(p.WriteBytes) / dt
		p.QueueDepth = float64(rn+wn) / 1e9 / dt
	}
	return p
}

func interfaceAddrs() []string {
	out := []string{}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return out
	}
	for _, ad := range addrs {
		out = append(out, ad.String())
	}
	sort.Strings(out)
	return out
}

// eventKey identifies an event of the array's history.
type eventKey struct {
	t               time.Time
	sev             string
	code, comp, msg string
	clear           bool
}

// events returns the array's events as documents and as keys.
func (k *collector) events() ([]Event, []eventKey) {
	evs := k.a.Events()
	out, keys := make([]Event, len(evs)), make([]eventKey, len(evs))
	for i, e := range evs {
		out[i] = Event{Time: e.Time.UTC(), Severity: e.Severity.String(), Code: e.Code, Component: e.Component, Message: e.Message, Clear: e.Clear}
		keys[i] = eventKey{t: e.Time, sev: out[i].Severity, code: e.Code, comp: e.Component, msg: e.Message, clear: e.Clear}
	}
	return out, keys
}

// logs builds the next logs document from the audit cursor on; it returns
// the document and the audit cursor it reaches. Events and alerts advance
// only when commit is called after the document is spooled.
type logsBatch struct {
	doc       *Document
	cursor    uint64
	eventLast eventKey
	eventSeen bool
	alertsTo  time.Time
	more      bool
}

func (k *collector) logs(seq uint64, now time.Time, auditCursor uint64) (*logsBatch, error) {
	d := k.envelope(KindLogs, seq, now)
	l := &Logs{From: k.logsFrom.UTC(), To: now.UTC(), Audit: []AuditEntry{}, Events: []Event{}, Alerts: []Alert{}}
	d.Logs = l
	b := &logsBatch{doc: d, cursor: auditCursor, eventLast: k.eventLast, eventSeen: k.eventSeen, alertsTo: now}

	entries, err := k.a.AuditLog(auditCursor, auditPerDocMax+1)
	if err != nil {
		return nil, err
	}
	if len(entries) > 0 && entries[0].ID > auditCursor+1 {
		l.AuditSkipped = entries[0].ID - auditCursor - 1
	}
	size := 0
	for i, e := range entries {
		n := len(e.User) + len(e.Source) + len(e.Command) + len(e.Result) + 64
		if i == auditPerDocMax || (len(l.Audit) > 0 && size+n > auditBytesPerDocMax) {
			l.More = true
			break
		}
		size += n
		l.Audit = append(l.Audit, AuditEntry{ID: e.ID, Time: e.Time.UTC(), User: e.User, Source: e.Source, Command: e.Command, Result: e.Result})
		b.cursor = e.ID
	}

	evs, keys := k.events()
	start := 0
	if k.eventSeen {
		start = -1
		for i := len(keys) - 1; i >= 0; i-- {
			if keys[i] == k.eventLast {
				start = i + 1
				break
			}
		}
		if start < 0 {
			// The last event uploaded left the bounded history: what is
			// left is new, and some events in between were lost.
			start = 0
			l.EventsSkipped = -1
		}
	}
	for i := start; i < len(evs); i++ {
		if len(l.Events) == eventsPerDocMax {
			l.More = true
			break
		}
		l.Events = append(l.Events, evs[i])
		b.eventLast, b.eventSeen = keys[i], true
	}
	if l.EventsSkipped < 0 {
		l.EventsSkipped = 0
		if len(evs) > 0 {
			l.EventsSkipped = 1 // at least one; the exact number is unknown
		}
	}

	for _, al := range k.a.Alerts(true) {
		changed := al.Time.After(k.alertsFrom) || (!al.Closed.IsZero() && al.Closed.After(k.alertsFrom))
		if !changed || al.Time.After(now) {
			continue
		}
		if len(l.Alerts) == alertsPerDocMax {
			break
		}
		l.Alerts = append(l.Alerts, alertOf(al))
	}
	sort.Slice(l.Alerts, func(i, j int) bool { return l.Alerts[i].ID < l.Alerts[j].ID })
	b.more = l.More
	return b, nil
}

// commit advances the event and alert cursors past a spooled logs batch.
func (k *collector) commit(b *logsBatch) {
	k.eventLast, k.eventSeen = b.eventLast, b.eventSeen
	k.alertsFrom = b.alertsTo
	k.logsFrom = b.alertsTo
}

// today builds logs documents of everything since 00:00 UTC of now's day
// (send-today); they move no cursor. Several documents may be needed; fn is
// called with each.
func (k *collector) today(now time.Time, next func() uint64, fn func(d *Document) error) error {
	day := now.UTC().Truncate(24 * time.Hour)
	entries, err := k.a.AuditLog(0, 0)
	if err != nil {
		return err
	}
	var todays []array.AuditEntry
	for _, e := range entries {
		if !e.Time.Before(day) {
			todays = append(todays, e)
		}
	}
	var evs []Event
	all, _ := k.events()
	for _, e := range all {
		if !e.Time.Before(day) {
			evs = append(evs, e)
		}
	}
	var als []Alert
	for _, al := range k.a.Alerts(true) {
		if !al.Time.Before(day) || (!al.Closed.IsZero() && !al.Closed.Before(day)) {
			als = append(als, alertOf(al))
		}
	}
	sort.Slice(als, func(i, j int) bool { return als[i].ID < als[j].ID })
	for first := true; first || len(todays) > 0 || len(evs) > 0 || len(als) > 0; first = false {
		d := k.envelope(KindLogs, next(), now)
		d.Manual = array.PhoneHomeSendToday
		l := &Logs{From: day, To: now.UTC(), Audit: []AuditEntry{}, Events: []Event{}, Alerts: []Alert{}}
		d.Logs = l
		size := 0
		for len(todays) > 0 && len(l.Audit) < auditPerDocMax {
			e := todays[0]
			n := len(e.User) + len(e.Source) + len(e.Command) + len(e.Result) + 64
			if len(l.Audit) > 0 && size+n > auditBytesPerDocMax {
				break
			}
			size += n
			l.Audit = append(l.Audit, AuditEntry{ID: e.ID, Time: e.Time.UTC(), User: e.User, Source: e.Source, Command: e.Command, Result: e.Result})
			todays = todays[1:]
		}
		n := min(len(evs), eventsPerDocMax)
		l.Events, evs = append(l.Events, evs[:n]...), evs[n:]
		n = min(len(als), alertsPerDocMax)
		l.Alerts, als = append(l.Alerts, als[:n]...), als[n:]
		l.More = len(todays) > 0 || len(evs) > 0 || len(als) > 0
		if err := fn(d); err != nil {
			return err
		}
	}
	return nil
}
