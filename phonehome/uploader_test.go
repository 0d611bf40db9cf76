package phonehome

import (
	"strings"
	"testing"
	"time"

	"vfa/array"
)

// seqsContiguous checks that documents arrived numbered 1, 2, 3... in order.
func seqsContiguous(t *testing.T, got []stored, first uint64) {
	t.Helper()
	for i, s := range got {
		if want := first + uint64(i); s.doc.Seq != want || s.rec.Seq != want {
			t.Fatalf("document %d arrived with seq %d (index says %d), want %d", i, s.doc.Seq, s.rec.Seq, want)
		}
	}
}

func kinds(got []stored) map[string]int {
	m := map[string]int{}
	for _, s := range got {
		m[s.doc.Kind]++
	}
	return m
}

// TestSchedule: diagnostics on schedule, logs with the audit log and
// events, alerts as they open and close, numbered without gaps, the array's
// certificate recorded as its identity.
func TestSchedule(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), "")
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	if _, err := a.Audit(array.AuditEntry{User: "pureuser", Source: "10.0.0.9:5555", Command: "purevol create --size 1G v1", Result: "ok"}); err != nil {
		t.Fatal(err)
	}
	if _, err := a.CreateVolume("v1", 1<<30); err != nil {
		t.Fatal(err)
	}
	const diag, logs = 100 * time.Millisecond, 450 * time.Millisecond
	configure(t, a, cloud.endpoint(), serverCA, diag, logs, "")
	startUploader(t, a, Config{Version: "9.9.9", Portals: []string{"127.0.0.1:3260"}, Management: "127.0.0.1:2222"})

	// The first diagnostics come at once.
	first := cloud.next(t)
	if first.doc.Kind != "diagnostics" || first.doc.Seq != 1 {
		t.Fatalf("first document: %s %d", first.doc.Kind, first.doc.Seq)
	}
	g := first.doc.Diagnostics
	if g.Version != "9.9.9" || len(g.Drives) != 7 || len(g.Volumes) != 1 || g.Volumes[0].Name != "v1" ||
		g.Network.ISCSITarget != a.TargetName() || g.Network.Management != "127.0.0.1:2222" || g.Space == nil || g.Space.Capacity == 0 ||
		g.Lock.Locked || g.SecurityToken.Enabled || g.SecurityToken.Status != "disabled" {
		t.Fatalf("diagnostics: %+v", g)
	}
	if first.doc.Array.ID != a.Config().ID || first.doc.Array.Name != "lab-1" {
		t.Fatalf("array: %+v", first.doc.Array)
	}
	if !strings.Contains(first.rec.Identity.Subject, "CN=lab-1") || !strings.Contains(first.rec.Identity.Issuer, "client CA") {
		t.Fatalf("identity: %+v", first.rec.Identity)
	}

	// An alert opens and closes.
	a.PhoneHomeEvent(array.PhoneHomeWarning, "test.alert", "something broke", false)
	a.PhoneHomeEvent(array.PhoneHomeInfo, "test.alert", "it mended", true)

	got := append([]stored{first}, cloud.until(t, func(got []stored) bool {
		k := kinds(got)
		return k["diagnostics"] >= 6 && k["logs"] >= 2 && k["alerts"] >= 1
	})...)
	seqsContiguous(t, got, 1)

	var firstDiag, lastDiag time.Time
	nDiag := 0
	var sawOpen, sawClosed, sawAudit, sawEvent bool
	for _, s := range got {
		switch s.doc.Kind {
		case "diagnostics":
			if firstDiag.IsZero() {
				firstDiag = s.doc.Time
			}
			lastDiag = s.doc.Time
			nDiag++
		case "alerts":
			for _, c := range s.doc.Alerts.Changes {
				if c.Code == "test.alert" && c.State == "open" && c.Message == "something broke" {
					sawOpen = true
				}
				if c.Code == "test.alert" && c.State == "closed" && c.Closed != nil {
					sawClosed = true
				}
			}
		case "logs":
			for _, e := range s.doc.Logs.Audit {
				if e.Command == "purevol create --size 1G v1" && e.User == "pureuser" && e.ID == 1 {
					sawAudit = true
				}
			}
			for _, e := range s.doc.Logs.Events {
				if e.Code == "test.alert" && e.Severity == "warning" {
					sawEvent = true
				}
			}
		}
	}
	// On schedule: never more often than the interval (a late one may be
	// followed by one on time, so count rather than compare neighbours).
	if max := int(lastDiag.Sub(firstDiag)/diag) + 2; nDiag > max {
		t.Errorf("%d diagnostics in %v at one per %v", nDiag, lastDiag.Sub(firstDiag), diag)
	}
	if !sawOpen || !sawClosed || !sawAudit || !sawEvent {
		t.Fatalf("alert open %v closed %v, audit entry %v, event %v in %v", sawOpen, sawClosed, sawAudit, sawEvent, kinds(got))
	}
	// The audit entry is uploaded once only.
	n := 0
	for _, s := range got {
		if s.doc.Logs != nil {
			n += len(s.doc.Logs.Audit)
		}
	}
	if n != 1 {
		t.Fatalf("the one audit entry was uploaded %d times", n)
	}
	st, err := a.PhoneHomeStatus()
	if err != nil || st.LastSuccess.IsZero() || !st.Running {
		t.Fatalf("status %+v %v", st, err)
	}
	fleet := cloud.Fleet()
	if len(fleet) != 1 || fleet[0].Name != "lab-1" || fleet[0].Missing != 0 || fleet[0].Capacity == 0 {
		t.Fatalf("fleet: %+v", fleet)
	}
}

// TestPerformance: the I/O since the previous diagnostics is reported.
func TestPerformance(t *testing.T) {
	serverCA, clientCA := newTestCA(t, "server CA"), newTestCA(t, "client CA")
	cloud := startCloud(t, serverCA, clientCA, t.TempDir(), "")
	a := openArray(t, memArrayFS(t))
	enroll(t, a, clientCA)
	if _, err := a.CreateVolume("v1", 1<<20); err != nil {
		t.Fatal(err)
	}
	dev, err := a.Device("v1")
	if err != nil {
		t.Fatal(err)
	}
	configure(t, a, cloud.endpoint(), serverCA, time.Hour, time.Hour, "")
	startUploader(t, a, Config{})
	if d := cloud.next(t); d.doc.Diagnostics == nil {
		t.Fatalf("first: %s", d.doc.Kind)
	}
	buf := make([]byte, 4096)
	for i := 0; i < 8; i++ {
		if err := dev.WriteAt(t.Context(), buf, uint64(i*8)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 0; i < 3; i++ {
		if err := dev.ReadAt(t.Context(), buf, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := a.RequestPhoneHome(array.PhoneHomeSendNow, "test"); err != nil {
		t.Fatal(err)
	}
	d := cloud.next(t)
	if d.doc.Diagnostics == nil || d.doc.Manual != "send-now" {
		t.Fatalf("send-now: %s %q", d.doc.Kind, d.doc.Manual)
	}
	p := d.doc.Diagnostics.Performance
	if p.Writes != 8 || p.WriteBytes != 8*4096 || p.Reads != 3 || p.ReadBytes != 3*4096 ||
		p.WriteLatencyUS <= 0 || p.ReadLatencyUS <= 0 || p.WriteIOPS <= 0 || p.QueueDepth <= 0 || p.IntervalSeconds <= 0 {
		t.Fatalf("performance: %+v", p)
	}
}
