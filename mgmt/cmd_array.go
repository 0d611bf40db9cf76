package mgmt

import (
	"fmt"
	"sort"
	"strings"

	"vfa/array"
)

// purearray, pureport, puredrive, purealert, puremessage.

// Version is what purearray list reports as the software version.
const Version = "0.1.0"

func arrayGroup() *group {
	g := &group{name: "purearray", summary: "show and rename the array, its controller and its space"}
	listFlags := []flagSpec{
		{name: "controller", help: "list the controller"},
		{name: "space", help: "list capacity, space use and data reduction"},
	}
	feats := arrayFeatures()
	for _, f := range feats {
		if f.listFlag.name != "" {
			listFlags = append(listFlags, f.listFlag)
		}
	}
	g.subs = []*command{
		{name: "list", summary: "list the array's identity, its controller or its space", maxArgs: 0, list: true,
			flags: listFlags, run: arrayList},
		{name: "rename", summary: "rename the array", args: "NEW-NAME", minArgs: 1, maxArgs: 1, mutates: true, run: arrayRename},
	}
	g.subs = append(g.subs, featureCommands(feats)...)
	for _, f := range feats {
		g.subs = append(g.subs, f.commands...)
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func arrayList(e *env, p *parsed) error {
	views := []string{"controller", "space"}
	for _, f := range arrayFeatures() {
		if f.listFlag.name != "" {
			views = append(views, f.listFlag.name)
		}
	}
	if p.count(views...) > 1 {
		return usagef("only one of --%s may be given", strings.Join(views, ", --"))
	}
	for _, f := range arrayFeatures() {
		if f.listFlag.name != "" && p.has(f.listFlag.name) {
			return f.list(e, p)
		}
	}
	a := e.a()
	switch {
	case p.has("space"):
		sp, _, err := a.Space()
		if err != nil {
			return errOn(a.Name(), "%v", err)
		}
		t := newTable("Name", "Capacity", "Parity", "Thin Provisioning", "Data Reduction", "Total Reduction",
			"Volumes", "Snapshots", "Shared Space", "System", "Total")
		t.add(txt(a.Name()), space(sp.Capacity), percent(sp.Parity), percent(sp.ThinProvisioning), ratio(sp.DataReduction),
			ratio(sp.TotalReduction), space(sp.Volumes), space(sp.Snapshots), space(sp.Shared), space(sp.System), space(sp.Used))
		e.print(t)
	case p.has("controller"):
		status := "ready"
		if locked, why := a.Locked(); locked {
			status = "locked: " + why
		}
		t := newTable("Name", "Mode", "Model", "Version", "Status")
		t.add(txt("CT0"), txt("primary"), txt("vfa"), txt(Version), txt(status))
		e.print(t)
	default:
		t := newTable("Name", "ID", "OS", "Version")
		t.add(txt(a.Name()), txt(a.Config().ID), txt("vfa"), txt(Version))
		e.print(t)
	}
	return nil
}

func arrayRename(e *env, p *parsed) error {
	n := p.args[0]
	if err := checkName(n); err != nil {
		return err
	}
	if err := e.a().Rename(n); err != nil {
		return errOn(n, "%s", reason(err))
	}
	e.print(nameTable(n))
	return nil
}

func portGroup() *group {
	g := &group{name: "pureport", summary: "show the iSCSI target name and portals"}
	g.subs = []*command{{name: "list", summary: "list the array's iSCSI ports: portal address and target IQN", maxArgs: 0, list: true, run: portList}}
	g.subs[0].group = g.name
	return g
}

func portList(e *env, p *parsed) error {
	t := newTable("Name", "WWN", "Portal", "IQN", "NQN", "Failover")
	for i, portal := range e.s.c.Portals {
		t.add(txt(fmt.Sprintf("CT0.ETH%d", i)), txt(""), txt(portal), txt(e.a().TargetName()), txt(""), txt(""))
	}
	e.print(t)
	return nil
}

func driveGroup() *group {
	g := &group{name: "puredrive", summary: "show the SSDs and the NVRAM; replace missing or failed SSDs"}
	g.subs = []*command{
		{name: "admit", summary: "replace missing or failed SSDs (all of them, or those named) with new ones and rebuild onto them from parity", args: "[DRIVE...]", maxArgs: -1, mutates: true, run: driveAdmit},
		{name: "list", summary: "list every SSD and the NVRAM with its status (healthy, degraded, recovering, failed, missing; unknown while the array is locked) and capacity", maxArgs: 0, list: true, run: driveList},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

// driveAdmit: a FlashArray admits new drives with puredrive admit; here a
// new device file takes the slot of each missing or failed SSD, and the
// array rebuilds onto it while it keeps serving I/O. The drives then show
// "recovering" in puredrive list until the rebuild is done.
func driveAdmit(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	got, err := e.a().AdmitDrives(p.args)
	if err != nil && len(got) == 0 {
		on := "puredrive admit"
		if len(p.args) == 1 {
			on = p.args[0]
		}
		return errOn(on, "%s", reason(err))
	}
	drives := e.a().Drives()
	t := newTable("Name", "Status", "Details")
	for _, n := range got {
		for _, d := range drives {
			if d.Name == n {
				t.add(txt(d.Name), txt(string(d.Status)), txt(d.Reason))
			}
		}
	}
	e.print(t)
	if err != nil {
		return errOn("puredrive admit", "%s", reason(err))
	}
	return nil
}

func driveList(e *env, p *parsed) error {
	t := newTable("Name", "Type", "Status", "Capacity", "Details")
	for _, d := range e.a().Drives() {
		capCell := size(d.Capacity)
		if d.Capacity == 0 {
			capCell = txt("")
		}
		t.add(txt(d.Name), txt(string(d.Kind)), txt(string(d.Status)), capCell, txt(d.Reason))
	}
	e.print(t)
	return nil
}

func alertGroup() *group {
	g := &group{name: "purealert", summary: "show open alerts"}
	g.subs = []*command{{name: "list", summary: "list open alerts, newest first", maxArgs: 0, list: true, run: alertList}}
	g.subs[0].group = g.name
	return g
}

func alertTable(closed bool) *table {
	if closed {
		return newTable("ID", "Time", "Severity", "Component", "Code", "Count", "Closed", "Details")
	}
	return newTable("ID", "Time", "Severity", "Component", "Code", "Count", "Details")
}

func alertRow(t *table, al array.Alert, closed bool) {
	cells := []cell{num(int64(al.ID)), when(al.Time), txt(al.Severity.String()), txt(al.Component), txt(al.Code), num(int64(al.Count))}
	if closed {
		cells = append(cells, when(al.Closed))
	}
	t.add(append(cells, txt(al.Message))...)
}

func alertList(e *env, p *parsed) error {
	t := alertTable(false)
	for _, al := range e.a().Alerts(false) {
		alertRow(t, al, false)
	}
	e.print(t)
	return nil
}

func messageGroup() *group {
	g := &group{name: "puremessage", summary: "show alert history and the audit log"}
	g.subs = []*command{{name: "list", summary: "list alerts, open and closed, newest first; with --audit, the audit log, oldest first", maxArgs: 0, list: true,
		flags: []flagSpec{{name: "audit", help: "list the audit log: who changed what, when, from where, and the result"}},
		run:   messageList}}
	g.subs[0].group = g.name
	return g
}

func messageList(e *env, p *parsed) error {
	if !p.has("audit") {
		t := alertTable(true)
		als := e.a().Alerts(true)
		sort.Slice(als, func(i, j int) bool { return als[i].ID > als[j].ID })
		for _, al := range als {
			alertRow(t, al, true)
		}
		e.print(t)
		return nil
	}
	log, err := e.a().AuditLog(0, 0)
	if err != nil {
		return errOn("audit log", "%v", err)
	}
	t := newTable("ID", "Time", "User", "Source", "Command", "Result")
	for _, en := range log {
		t.add(num(int64(en.ID)), when(en.Time), txt(en.User), txt(sourceHost(en.Source)), txt(en.Command), txt(strings.TrimSuffix(en.Result, "\n")))
	}
	e.print(t)
	return nil
}

// arrayFeature is an optional capability of the array managed with
// `purearray enable|disable|test FEATURE` and listed with `purearray list
// --FEATURE`: the security token (cmd_token.go) and phone home
// (cmd_phonehome.go). A feature may also bring whole subcommands.
type arrayFeature struct {
	name         string // "security-token", "phonehome"
	enableFlags  []flagSpec
	disableFlags []flagSpec
	testFlags    []flagSpec
	enable       func(e *env, p *parsed) error // nil: not enableable
	disable      func(e *env, p *parsed) error
	test         func(e *env, p *parsed) error
	listFlag     flagSpec
	list         func(e *env, p *parsed) error
	commands     []*command
}

func arrayFeatures() []arrayFeature {
	return append(tokenFeatures(), phonehomeFeatures()...)
}

// featureCommands builds enable, disable and test: each takes the feature
// name as its argument and the union of the features' flags, and refuses a
// flag the named feature does not take.
func featureCommands(feats []arrayFeature) []*command {
	type verb struct {
		name, summary string
		flags         func(f arrayFeature) []flagSpec
		run           func(f arrayFeature) func(e *env, p *parsed) error
		mutates       bool
	}
	verbs := []verb{
		{"enable", "enable a feature", func(f arrayFeature) []flagSpec { return f.enableFlags },
			func(f arrayFeature) func(e *env, p *parsed) error { return f.enable }, true},
		{"disable", "disable a feature", func(f arrayFeature) []flagSpec { return f.disableFlags },
			func(f arrayFeature) func(e *env, p *parsed) error { return f.disable }, true},
		{"test", "test a feature", func(f arrayFeature) []flagSpec { return f.testFlags },
			func(f arrayFeature) func(e *env, p *parsed) error { return f.test }, false},
	}
	var out []*command
	for _, v := range verbs {
		var names []string
		var flags []flagSpec
		seen := map[string]bool{}
		for _, f := range feats {
			if v.run(f) == nil {
				continue
			}
			names = append(names, f.name)
			for _, fl := range v.flags(f) {
				if !seen[fl.name] {
					seen[fl.name] = true
					flags = append(flags, fl)
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		v := v
		out = append(out, &command{name: v.name, summary: v.summary + " (" + strings.Join(names, ", ") + ")",
			args: strings.Join(names, "|"), minArgs: 1, maxArgs: 1, flags: flags, mutates: v.mutates,
			run: func(e *env, p *parsed) error {
				for _, f := range arrayFeatures() {
					if f.name != p.args[0] || v.run(f) == nil {
						continue
					}
					allowed := map[string]bool{}
					for _, fl := range v.flags(f) {
						allowed[fl.name] = true
					}
					for _, fl := range flags {
						if p.has(fl.name) && !allowed[fl.name] {
							return usagef("--%s does not apply to %s", fl.name, f.name)
						}
					}
					return v.run(f)(e, p)
				}
				return usagef("unknown feature %q (one of %s)", p.args[0], strings.Join(names, ", "))
			}})
	}
	return out
}
