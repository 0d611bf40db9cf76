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
	g.subs = []*command{
		{name: "list", summary: "list the array's identity, its controller or its space", maxArgs: 0, list: true,
			flags: []flagSpec{
				{name: "controller", help: "list the controller"},
				{name: "space", help: "list capacity, space use and data reduction"},
			}, run: arrayList},
		{name: "rename", summary: "rename the array", args: "NEW-NAME", minArgs: 1, maxArgs: 1, mutates: true, run: arrayRename},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func arrayList(e *env, p *parsed) error {
	if p.has("controller") && p.has("space") {
		return usagef("--controller and --space cannot be combined")
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
	g := &group{name: "puredrive", summary: "show the SSDs and the NVRAM"}
	g.subs = []*command{{name: "list", summary: "list every SSD and the NVRAM with its status (healthy, degraded, failed, missing; unknown while the array is locked) and capacity", maxArgs: 0, list: true, run: driveList}}
	g.subs[0].group = g.name
	return g
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
