package mgmt

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"vfa/array"
)

// Phone home: purearray enable|disable phonehome, purearray list
// --phonehome, purearray setattr (--phonehome-endpoint,
// --phonehome-ca-certificate, --proxy, the intervals) and purearray
// phonehome --send-now|--send-today|--cancel. The settings are the array's
// (array/phonehome.go); the uploader (package phonehome) reads them,
// carries out the requests and reports its status there.

// Intervals an administrator may set.
const (
	phDiagnosticsMin = time.Second
	phDiagnosticsMax = 24 * time.Hour
	phLogsMin        = time.Second
	phLogsMax        = 7 * 24 * time.Hour
	phObject         = "phonehome"
)

func phonehomeFeatures() []arrayFeature {
	return []arrayFeature{{
		name:     phObject,
		enable:   phEnable,
		disable:  phDisable,
		listFlag: flagSpec{name: "phonehome", help: "list phone home: whether it is enabled, the endpoint and proxy, the last success and error, and the documents waiting in the spool"},
		list:     phList,
		commands: []*command{
			{group: "purearray", name: "setattr", summary: "set phone home's endpoint, its CA certificate, the proxy and the upload intervals", maxArgs: 0, mutates: true,
				flags: []flagSpec{
					{name: "phonehome-endpoint", kind: flagValue, metavar: "URL", help: `the https:// URL phone home POSTs its documents to ("" to clear it while phone home is disabled)`},
					{name: "phonehome-ca-certificate", help: "replace the CA certificates the endpoint's certificate must chain to with PEM read from stdin"},
					{name: "proxy", kind: flagValue, metavar: "URL", help: `the HTTP proxy phone home goes through, http://HOST:PORT ("" for none)`},
					{name: "phonehome-diagnostics-interval", kind: flagValue, metavar: "DURATION", help: "how often diagnostics are sent, 1s to 24h (default 30s; 0 for the default)"},
					{name: "phonehome-logs-interval", kind: flagValue, metavar: "DURATION", help: "how often the audit log and events are sent, 1s to 168h (default 1h; 0 for the default)"},
				}, input: phSetattrInput, run: phSetattr},
			{group: "purearray", name: "phonehome", summary: "send phone-home documents now, or cancel the ones asked for that are not sent yet", maxArgs: 0, mutates: true,
				flags: []flagSpec{
					{name: "send-now", help: "send diagnostics and the logs since the last upload now, and retry the spool at once"},
					{name: "send-today", help: "send the audit log, events and alerts of today (since 00:00 UTC)"},
					{name: "cancel", help: "drop the documents asked for with --send-now or --send-today that are not sent yet"},
				}, run: phRequest},
		},
	}}
}

func phTable() *table {
	return newTable("Name", "Phonehome", "Endpoint", "Proxy", "Last Success", "Last Failure", "Last Error", "Spooled", "Spooled Size")
}

func phPrint(e *env, s array.PhoneHomeSettings) error {
	st, err := e.a().PhoneHomeStatus()
	if err != nil {
		return errOn(phObject, "%v", err)
	}
	enabled := "disabled"
	if s.Enabled {
		enabled = "enabled"
	}
	t := phTable()
	t.add(txt(e.a().Name()), txt(enabled), txt(s.Endpoint), txt(s.Proxy), when(st.LastSuccess), when(st.LastErrorTime),
		txt(st.LastError), num(int64(st.SpooledDocuments)), space(st.SpooledBytes))
	e.print(t)
	return nil
}

func phList(e *env, p *parsed) error {
	s, err := e.a().PhoneHomeSettings()
	if err != nil {
		return errOn(phObject, "%v", err)
	}
	return phPrint(e, s)
}

// phUpdate applies a change to the settings and prints them.
func phUpdate(e *env, fn func(s *array.PhoneHomeSettings) error) error {
	s, err := e.a().UpdatePhoneHomeSettings(fn)
	if err != nil {
		var ce *cliError
		if errors.As(err, &ce) {
			return err
		}
		return errOn(phObject, "%s", phReason(err))
	}
	return phPrint(e, s)
}

func phReason(err error) string {
	switch {
	case errors.Is(err, array.ErrPhoneHomeNotConfigured):
		if strings.Contains(err.Error(), "no endpoint") {
			return "no endpoint is set; set one with purearray setattr --phonehome-endpoint URL"
		}
		return "no CA certificate is set to verify the endpoint; set one with purearray setattr --phonehome-ca-certificate"
	case errors.Is(err, array.ErrNotPEM):
		if err == array.ErrNotPEM {
			return "the CA certificate is not a PEM certificate"
		}
		return "the CA certificate is not a PEM certificate: " + strings.TrimPrefix(err.Error(), array.ErrNotPEM.Error()+": ")
	}
	return reason(err)
}

func phEnable(e *env, p *parsed) error {
	return phUpdate(e, func(s *array.PhoneHomeSettings) error {
		s.Enabled = true
		return nil
	})
}

func phDisable(e *env, p *parsed) error {
	return phUpdate(e, func(s *array.PhoneHomeSettings) error {
		s.Enabled = false
		return nil
	})
}

func phSetattrInput(e *env, p *parsed) error {
	if p.count("phonehome-endpoint", "phonehome-ca-certificate", "proxy", "phonehome-diagnostics-interval", "phonehome-logs-interval") == 0 {
		return errOn("purearray setattr", "nothing to change; give --phonehome-endpoint, --phonehome-ca-certificate, --proxy or an interval")
	}
	pp := *p
	pp.args = []string{phObject}
	if err := e.readPEMInput(&pp, "phonehome-ca-certificate", "CA certificate"); err != nil {
		return err
	}
	if pem, ok := e.secrets["phonehome-ca-certificate"]; ok {
		if _, err := array.ParsePhoneHomeCA(pem); err != nil {
			return errOn(phObject, "%s", phReason(err))
		}
	}
	return nil
}

// parseInterval reads an interval option: a Go duration ("30s", "1h") or
// 0 for the default.
func parseInterval(p *parsed, opt string, lo, hi time.Duration) (time.Duration, error) {
	v := p.val(opt)
	if v == "0" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < lo || d > hi {
		return 0, usagef("--%s %q must be a duration from %v to %v (like 30s, 5m or 1h), or 0 for the default", opt, v, lo, hi)
	}
	return d, nil
}

func phSetattr(e *env, p *parsed) error {
	var diag, logs time.Duration
	var err error
	if p.has("phonehome-diagnostics-interval") {
		if diag, err = parseInterval(p, "phonehome-diagnostics-interval", phDiagnosticsMin, phDiagnosticsMax); err != nil {
			return err
		}
	}
	if p.has("phonehome-logs-interval") {
		if logs, err = parseInterval(p, "phonehome-logs-interval", phLogsMin, phLogsMax); err != nil {
			return err
		}
	}
	return phUpdate(e, func(s *array.PhoneHomeSettings) error {
		if p.has("phonehome-endpoint") {
			v := strings.TrimSpace(p.val("phonehome-endpoint"))
			if v == "" && s.Enabled {
				return errOn(phObject, "phone home is enabled; disable it before clearing the endpoint")
			}
			s.Endpoint = v
		}
		if pem, ok := e.secrets["phonehome-ca-certificate"]; ok {
			s.CACertificate = pem
		}
		if p.has("proxy") {
			s.Proxy = strings.TrimSpace(p.val("proxy"))
		}
		if p.has("phonehome-diagnostics-interval") {
			s.DiagnosticsInterval = diag
		}
		if p.has("phonehome-logs-interval") {
			s.LogsInterval = logs
		}
		return nil
	})
}

func phRequest(e *env, p *parsed) error {
	kinds := []string{array.PhoneHomeSendNow, array.PhoneHomeSendToday, array.PhoneHomeCancel}
	if p.count(kinds...) != 1 {
		return usagef("give one of --send-now, --send-today or --cancel")
	}
	var kind string
	for _, k := range kinds {
		if p.has(k) {
			kind = k
		}
	}
	a := e.a()
	s, err := a.PhoneHomeSettings()
	if err != nil {
		return errOn(phObject, "%v", err)
	}
	if !s.Enabled && kind != array.PhoneHomeCancel {
		return errOn(phObject, "phone home is disabled; enable it with purearray enable phonehome")
	}
	r, err := a.RequestPhoneHome(kind, e.user)
	if err != nil {
		return errOn(phObject, "%s", phReason(err))
	}
	t := newTable("Name", "Request", "Requested")
	t.add(txt(a.Name()), txt(fmt.Sprintf("--%s", r.Kind)), when(r.Time))
	e.print(t)
	return nil
}
