package mgmt

import (
	"errors"
	"io"
	"slices"
	"sort"

	"vfa/array"
)

// purehost and purehgroup: hosts (initiators by IQN, CHAP) and host groups.

const (
	chapUserMax   = 255
	chapSecretMin = 12 // RFC 7143 §12.1.3 asks for at least 96 bits
	chapSecretMax = 255
)

func hostGroup() *group {
	g := &group{name: "purehost", summary: "manage hosts: their initiator IQNs, CHAP and volume connections"}
	g.subs = []*command{
		{name: "connect", summary: "connect a volume to a host", args: "HOST", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "vol", kind: flagValue, metavar: "VOL", required: true, help: "the volume to connect"},
				{name: "lun", kind: flagValue, metavar: "LUN", help: "the LUN (1-255; default: the lowest free one)"},
			}, run: hostConnect},
		{name: "create", summary: "create hosts", args: "HOST...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{{name: "iqnlist", kind: flagValue, metavar: "IQNS", help: "comma-separated initiator IQNs (one host only)"}},
			run:   hostCreate},
		{name: "delete", summary: "delete hosts (without connections, not in a host group)", args: "HOST...", minArgs: 1, maxArgs: -1, mutates: true, run: hostDelete},
		{name: "disconnect", summary: "disconnect a volume from a host", args: "HOST", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{{name: "vol", kind: flagValue, metavar: "VOL", required: true, help: "the volume to disconnect"}},
			run:   hostDisconnect},
		{name: "list", summary: "list hosts, their connections or their CHAP settings", args: "[HOST...]", maxArgs: -1, list: true,
			flags: []flagSpec{
				{name: "chap", help: "list CHAP user names (secrets are never shown)"},
				{name: "connect", help: "list the volumes connected to hosts, privately or through their host group"},
			}, run: hostList},
		{name: "rename", summary: "rename a host", args: "HOST NEW-NAME", minArgs: 2, maxArgs: 2, mutates: true, run: hostRename},
		{name: "setattr", summary: "change a host's IQNs or CHAP settings", args: "HOST", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "addiqnlist", kind: flagValue, metavar: "IQNS", help: "add comma-separated IQNs"},
				{name: "host-password", help: "set the CHAP secret the host answers with (prompted for, or one line of stdin; 12-255 characters)"},
				{name: "host-user", kind: flagValue, metavar: "USER", help: `set the CHAP user name of the host ("" turns CHAP off)`},
				{name: "iqnlist", kind: flagValue, metavar: "IQNS", help: "replace the IQNs with these"},
				{name: "remiqnlist", kind: flagValue, metavar: "IQNS", help: "remove comma-separated IQNs"},
				{name: "target-password", help: "set the CHAP secret the array answers with (mutual CHAP; prompted for)"},
				{name: "target-user", kind: flagValue, metavar: "USER", help: `set the array's CHAP user name for mutual CHAP ("" turns it off)`},
			}, input: hostSecrets, run: hostSetattr},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func hgroupGroup() *group {
	g := &group{name: "purehgroup", summary: "manage host groups: their hosts and volume connections"}
	g.subs = []*command{
		{name: "connect", summary: "connect a volume to a host group (every host in it sees the LUN)", args: "HGROUP", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "vol", kind: flagValue, metavar: "VOL", required: true, help: "the volume to connect"},
				{name: "lun", kind: flagValue, metavar: "LUN", help: "the LUN (1-255; default: the lowest free one from 10)"},
			}, run: hgroupConnect},
		{name: "create", summary: "create host groups", args: "HGROUP...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{{name: "hostlist", kind: flagValue, metavar: "HOSTS", help: "comma-separated member hosts (one host group only)"}},
			run:   hgroupCreate},
		{name: "delete", summary: "delete host groups (without hosts or connections)", args: "HGROUP...", minArgs: 1, maxArgs: -1, mutates: true, run: hgroupDelete},
		{name: "disconnect", summary: "disconnect a volume from a host group", args: "HGROUP", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{{name: "vol", kind: flagValue, metavar: "VOL", required: true, help: "the volume to disconnect"}},
			run:   hgroupDisconnect},
		{name: "list", summary: "list host groups or their connections", args: "[HGROUP...]", maxArgs: -1, list: true,
			flags: []flagSpec{{name: "connect", help: "list the volumes connected to host groups"}},
			run:   hgroupList},
		{name: "setattr", summary: "change a host group's hosts", args: "HGROUP", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "addhostlist", kind: flagValue, metavar: "HOSTS", help: "add comma-separated hosts"},
				{name: "hostlist", kind: flagValue, metavar: "HOSTS", help: "replace the hosts with these"},
				{name: "remhostlist", kind: flagValue, metavar: "HOSTS", help: "remove comma-separated hosts"},
			}, run: hgroupSetattr},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func hostTable() *table { return newTable("Name", "WWN", "IQN", "NQN", "Host Group") }

func hostRow(t *table, h array.Host) {
	t.add(txt(h.Name), txt(""), multi(h.IQNs), txt(""), txt(h.HGroup))
}

// checkIQNs validates IQNs for host (which may be new) against the others.
// The wildcard a demo host may hold ("*") can be kept but not added.
func (e *env) checkIQNs(host string, iqns []string) error {
	var had []string
	if h, err := e.host(host); err == nil {
		had = h.IQNs
	}
	for _, q := range iqns {
		if q == array.AnyInitiator && slices.Contains(had, q) {
			continue
		}
		if err := array.ValidIQN(q); err != nil {
			return errOn(q, "not a valid iSCSI name (iqn.YYYY-MM.reversed.domain[:id], eui. with 16 hex digits, or naa.)")
		}
		for _, h := range e.a().Hosts() {
			if lower(h.Name) == lower(host) {
				continue
			}
			for _, o := range h.IQNs {
				if lower(o) == lower(q) {
					return errOn(q, "IQN already belongs to host %s", h.Name)
				}
			}
		}
	}
	return nil
}

func hostCreate(e *env, p *parsed) error {
	var iqns []string
	if p.has("iqnlist") {
		if len(p.args) > 1 {
			return usagef("--iqnlist can be given with one host only")
		}
		var err error
		if iqns, err = splitList("iqnlist", p.val("iqnlist")); err != nil {
			return err
		}
	}
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	for _, n := range p.args {
		if err := checkName(n); err != nil {
			return err
		}
		if h, err := e.host(n); err == nil {
			return errOn(h.Name, "host already exists")
		}
	}
	if err := e.checkIQNs(p.args[0], iqns); err != nil {
		return err
	}
	var u undoer
	t := hostTable()
	for _, n := range p.args {
		if err := e.a().CreateHost(n, iqns); err != nil {
			return u.run(errOn(n, "%s", reason(err)))
		}
		u.push(func() error { return e.a().DeleteHost(n) })
		h, _ := e.host(n)
		hostRow(t, h)
	}
	e.print(t)
	return nil
}

func hostList(e *env, p *parsed) error {
	if p.has("chap") && p.has("connect") {
		return usagef("--chap and --connect cannot be combined")
	}
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	var hosts []array.Host
	if len(p.args) == 0 {
		hosts = e.a().Hosts()
	}
	for _, n := range p.args {
		h, err := e.host(n)
		if err != nil {
			return err
		}
		hosts = append(hosts, h)
	}
	switch {
	case p.has("chap"):
		t := newTable("Name", "Host User", "Host Password", "Target User", "Target Password")
		for _, h := range hosts {
			t.add(txt(h.Name), txt(h.CHAP.User), secretCell(h.CHAP.Secret), txt(h.CHAP.TargetUser), secretCell(h.CHAP.TargetSecret))
		}
		e.print(t)
	case p.has("connect"):
		t := newTable("Name", "LUN", "Vol", "Host Group")
		conns := e.a().Connections()
		for _, h := range hosts {
			var mine []array.Connection
			for _, c := range conns {
				if lower(c.Host) == lower(h.Name) || (h.HGroup != "" && lower(c.HGroup) == lower(h.HGroup)) {
					mine = append(mine, c)
				}
			}
			sort.Slice(mine, func(i, j int) bool { return mine[i].LUN < mine[j].LUN })
			for _, c := range mine {
				t.add(txt(h.Name), num(int64(c.LUN)), txt(c.Volume), txt(c.HGroup))
			}
		}
		e.print(t)
	default:
		t := hostTable()
		for _, h := range hosts {
			hostRow(t, h)
		}
		e.print(t)
	}
	return nil
}

// secretCell shows whether a secret is set, never the secret.
func secretCell(s string) cell {
	if s == "" {
		return txt("")
	}
	return txt("****")
}

// hostSecrets reads the CHAP secrets that setattr sets, before the lock.
func hostSecrets(e *env, p *parsed) error {
	e.secrets = map[string]string{}
	for _, f := range []struct{ flag, what string }{{"host-password", "host password"}, {"target-password", "target password"}} {
		if !p.has(f.flag) {
			continue
		}
		s, err := e.readSecret(f.what)
		if err != nil {
			if errors.Is(err, errMismatch) {
				return errOn("purehost setattr", "the two %ss do not match", f.what)
			}
			if errors.Is(err, io.EOF) {
				return errOn("purehost setattr", "no %s given", f.what)
			}
			return errOn("purehost setattr", "reading the %s: %v", f.what, err)
		}
		if len(s) < chapSecretMin || len(s) > chapSecretMax {
			return errOn("purehost setattr", "a CHAP secret must be %d to %d characters", chapSecretMin, chapSecretMax)
		}
		e.secrets[f.flag] = s
	}
	return nil
}

func checkCHAPUser(flag, u string) error {
	if len(u) > chapUserMax {
		return usagef("--%s is longer than %d characters", flag, chapUserMax)
	}
	for _, c := range u {
		if c <= ' ' || c == 0x7f {
			return usagef("--%s may not contain blanks or control characters", flag)
		}
	}
	return nil
}

func hostSetattr(e *env, p *parsed) error {
	if p.count("iqnlist", "addiqnlist", "remiqnlist", "host-user", "host-password", "target-user", "target-password") == 0 {
		return usagef("nothing to change; give --iqnlist, --addiqnlist, --remiqnlist, --host-user, --host-password, --target-user or --target-password")
	}
	if p.has("iqnlist") && (p.has("addiqnlist") || p.has("remiqnlist")) {
		return usagef("--iqnlist cannot be combined with --addiqnlist or --remiqnlist")
	}
	for _, f := range []string{"host-user", "target-user"} {
		if err := checkCHAPUser(f, p.val(f)); err != nil {
			return err
		}
	}
	h, err := e.host(p.args[0])
	if err != nil {
		return err
	}
	next := h
	next.IQNs = append([]string(nil), h.IQNs...)
	if p.has("iqnlist") {
		if next.IQNs, err = splitList("iqnlist", p.val("iqnlist")); err != nil {
			return err
		}
	}
	if p.has("addiqnlist") {
		add, err := splitList("addiqnlist", p.val("addiqnlist"))
		if err != nil {
			return err
		}
		for _, q := range add {
			for _, o := range next.IQNs {
				if lower(o) == lower(q) {
					return errOn(q, "IQN already belongs to host %s", h.Name)
				}
			}
			next.IQNs = append(next.IQNs, q)
		}
	}
	if p.has("remiqnlist") {
		rem, err := splitList("remiqnlist", p.val("remiqnlist"))
		if err != nil {
			return err
		}
		for _, q := range rem {
			i := -1
			for k, o := range next.IQNs {
				if lower(o) == lower(q) {
					i = k
				}
			}
			if i < 0 {
				return errOn(q, "IQN does not belong to host %s", h.Name)
			}
			next.IQNs = append(next.IQNs[:i], next.IQNs[i+1:]...)
		}
	}
	if err := e.checkIQNs(h.Name, next.IQNs); err != nil {
		return err
	}
	ch := &next.CHAP
	if p.has("host-user") {
		ch.User = p.val("host-user")
		if ch.User == "" {
			*ch = array.CHAP{} // no host CHAP: no mutual CHAP either
		}
	}
	if s, ok := e.secrets["host-password"]; ok {
		ch.Secret = s
	}
	if p.has("target-user") {
		ch.TargetUser = p.val("target-user")
		if ch.TargetUser == "" {
			ch.TargetSecret = ""
		}
	}
	if s, ok := e.secrets["target-password"]; ok {
		ch.TargetSecret = s
	}
	switch {
	case ch.User != "" && ch.Secret == "":
		return errOn(h.Name, "a CHAP host user needs a host password; add --host-password")
	case ch.User == "" && ch.Secret != "":
		return errOn(h.Name, "a CHAP host password needs a host user; add --host-user")
	case ch.TargetUser != "" && ch.TargetSecret == "":
		return errOn(h.Name, "a CHAP target user needs a target password; add --target-password")
	case ch.TargetUser == "" && ch.TargetSecret != "":
		return errOn(h.Name, "a CHAP target password needs a target user; add --target-user")
	case ch.TargetUser != "" && ch.User == "":
		return errOn(h.Name, "mutual CHAP (target user) needs host CHAP (host user) first")
	case ch.Secret != "" && ch.Secret == ch.TargetSecret:
		return errOn(h.Name, "the host and target passwords must differ")
	}
	err = e.a().UpdateHost(h.Name, func(cur *array.Host) error {
		cur.IQNs = next.IQNs
		cur.CHAP = next.CHAP
		return nil
	})
	if err != nil {
		return errOn(h.Name, "%s", reason(err))
	}
	h, _ = e.host(h.Name)
	t := hostTable()
	hostRow(t, h)
	e.print(t)
	return nil
}

func hostConnect(e *env, p *parsed) error      { return connectCmd(e, p, false) }
func hostDisconnect(e *env, p *parsed) error   { return disconnectCmd(e, p, false) }
func hgroupConnect(e *env, p *parsed) error    { return connectCmd(e, p, true) }
func hgroupDisconnect(e *env, p *parsed) error { return disconnectCmd(e, p, true) }

// targetName resolves the host (or, with group, host group) a connect or
// disconnect command names.
func (e *env) targetName(name string, group bool) (string, error) {
	if group {
		g, err := e.hgroup(name)
		return g.Name, err
	}
	h, err := e.host(name)
	return h.Name, err
}

// connectCmd is purehost/purehgroup connect --vol VOL [--lun N] NAME.
func connectCmd(e *env, p *parsed, group bool) error {
	if !p.has("vol") {
		return usagef("--vol is required")
	}
	lun := 0
	if p.has("lun") {
		var err error
		if lun, err = parseLUN(p.val("lun")); err != nil {
			return err
		}
	}
	name, err := e.targetName(p.args[0], group)
	if err != nil {
		return err
	}
	return e.connect([]string{p.val("vol")}, name, group, lun)
}

// disconnectCmd is purehost/purehgroup disconnect --vol VOL NAME.
func disconnectCmd(e *env, p *parsed, group bool) error {
	if !p.has("vol") {
		return usagef("--vol is required")
	}
	name, err := e.targetName(p.args[0], group)
	if err != nil {
		return err
	}
	return e.disconnect([]string{p.val("vol")}, name, group)
}

func hostDelete(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	conns := e.a().Connections()
	var hosts []array.Host
	for _, n := range p.args {
		h, err := e.host(n)
		if err != nil {
			return err
		}
		for _, c := range conns {
			if lower(c.Host) == lower(h.Name) {
				return errOn(h.Name, "host has volume connections; disconnect them first")
			}
		}
		if h.HGroup != "" {
			return errOn(h.Name, "host is a member of host group %s; remove it from the group first", h.HGroup)
		}
		hosts = append(hosts, h)
	}
	var u undoer
	var done []string
	for _, h := range hosts {
		if err := e.a().DeleteHost(h.Name); err != nil {
			return u.run(errOn(h.Name, "%s", reason(err)))
		}
		u.push(func() error {
			if err := e.a().CreateHost(h.Name, h.IQNs); err != nil {
				return err
			}
			return e.a().UpdateHost(h.Name, func(c *array.Host) error { c.CHAP = h.CHAP; return nil })
		})
		done = append(done, h.Name)
	}
	e.print(nameTable(done...))
	return nil
}

func hostRename(e *env, p *parsed) error {
	h, err := e.host(p.args[0])
	if err != nil {
		return err
	}
	nn := p.args[1]
	if err := checkName(nn); err != nil {
		return err
	}
	if o, err := e.host(nn); err == nil && lower(o.Name) != lower(h.Name) {
		return errOn(o.Name, "host already exists")
	}
	if err := e.a().RenameHost(h.Name, nn); err != nil {
		return errOn(h.Name, "%s", reason(err))
	}
	e.print(nameTable(nn))
	return nil
}

// Host groups.

func hgroupTable() *table { return newTable("Name", "Hosts") }

func hgroupCreate(e *env, p *parsed) error {
	var hosts []string
	if p.has("hostlist") {
		if len(p.args) > 1 {
			return usagef("--hostlist can be given with one host group only")
		}
		var err error
		if hosts, err = splitList("hostlist", p.val("hostlist")); err != nil {
			return err
		}
	}
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	for _, n := range p.args {
		if err := checkName(n); err != nil {
			return err
		}
		if g, err := e.hgroup(n); err == nil {
			return errOn(g.Name, "host group already exists")
		}
	}
	for i, hn := range hosts {
		h, err := e.host(hn)
		if err != nil {
			return err
		}
		if h.HGroup != "" {
			return errOn(h.Name, "host is already in host group %s", h.HGroup)
		}
		hosts[i] = h.Name
	}
	var u undoer
	t := hgroupTable()
	for _, n := range p.args {
		if err := e.a().CreateHostGroup(n, hosts); err != nil {
			return u.run(errOn(n, "%s", reason(err)))
		}
		u.push(func() error {
			if err := e.a().SetHostGroupMembers(n, nil, hosts); err != nil {
				return err
			}
			return e.a().DeleteHostGroup(n)
		})
		g, _ := e.hgroup(n)
		t.add(txt(g.Name), multi(g.Hosts))
	}
	e.print(t)
	return nil
}

func hgroupSetattr(e *env, p *parsed) error {
	if p.count("hostlist", "addhostlist", "remhostlist") == 0 {
		return usagef("nothing to change; give --hostlist, --addhostlist or --remhostlist")
	}
	if p.has("hostlist") && (p.has("addhostlist") || p.has("remhostlist")) {
		return usagef("--hostlist cannot be combined with --addhostlist or --remhostlist")
	}
	g, err := e.hgroup(p.args[0])
	if err != nil {
		return err
	}
	members := map[string]bool{}
	for _, h := range g.Hosts {
		members[lower(h)] = true
	}
	var add, rem []string
	resolve := func(flag string) ([]array.Host, error) {
		names, err := splitList(flag, p.val(flag))
		if err != nil {
			return nil, err
		}
		var out []array.Host
		for _, n := range names {
			h, err := e.host(n)
			if err != nil {
				return nil, err
			}
			out = append(out, h)
		}
		return out, nil
	}
	addHost := func(h array.Host) error {
		if members[lower(h.Name)] {
			return errOn(h.Name, "host is already in host group %s", g.Name)
		}
		if h.HGroup != "" {
			return errOn(h.Name, "host is already in host group %s", h.HGroup)
		}
		add = append(add, h.Name)
		return nil
	}
	if p.has("hostlist") {
		want, err := resolve("hostlist")
		if err != nil {
			return err
		}
		keep := map[string]bool{}
		for _, h := range want {
			keep[lower(h.Name)] = true
			if !members[lower(h.Name)] {
				if err := addHost(h); err != nil {
					return err
				}
			}
		}
		for _, m := range g.Hosts {
			if !keep[lower(m)] {
				rem = append(rem, m)
			}
		}
	}
	if p.has("addhostlist") {
		hs, err := resolve("addhostlist")
		if err != nil {
			return err
		}
		for _, h := range hs {
			if err := addHost(h); err != nil {
				return err
			}
		}
	}
	if p.has("remhostlist") {
		hs, err := resolve("remhostlist")
		if err != nil {
			return err
		}
		for _, h := range hs {
			if !members[lower(h.Name)] {
				return errOn(h.Name, "host is not in host group %s", g.Name)
			}
			rem = append(rem, h.Name)
		}
	}
	if len(add) > 0 || len(rem) > 0 {
		if err := e.a().SetHostGroupMembers(g.Name, add, rem); err != nil {
			return errOn(g.Name, "%s", reason(err))
		}
	}
	g, _ = e.hgroup(g.Name)
	t := hgroupTable()
	t.add(txt(g.Name), multi(g.Hosts))
	e.print(t)
	return nil
}

func hgroupList(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	var groups []array.HostGroup
	if len(p.args) == 0 {
		groups = e.a().HostGroups()
	}
	for _, n := range p.args {
		g, err := e.hgroup(n)
		if err != nil {
			return err
		}
		groups = append(groups, g)
	}
	if p.has("connect") {
		t := newTable("Name", "Vol", "LUN")
		conns := e.a().Connections()
		for _, g := range groups {
			var mine []array.Connection
			for _, c := range conns {
				if lower(c.HGroup) == lower(g.Name) {
					mine = append(mine, c)
				}
			}
			sort.Slice(mine, func(i, j int) bool { return mine[i].LUN < mine[j].LUN })
			for _, c := range mine {
				t.add(txt(g.Name), txt(c.Volume), num(int64(c.LUN)))
			}
		}
		e.print(t)
		return nil
	}
	t := hgroupTable()
	for _, g := range groups {
		t.add(txt(g.Name), multi(g.Hosts))
	}
	e.print(t)
	return nil
}

func hgroupDelete(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	conns := e.a().Connections()
	var groups []array.HostGroup
	for _, n := range p.args {
		g, err := e.hgroup(n)
		if err != nil {
			return err
		}
		if len(g.Hosts) > 0 {
			return errOn(g.Name, "host group has hosts; remove them first")
		}
		for _, c := range conns {
			if lower(c.HGroup) == lower(g.Name) {
				return errOn(g.Name, "host group has volume connections; disconnect them first")
			}
		}
		groups = append(groups, g)
	}
	var u undoer
	var done []string
	for _, g := range groups {
		if err := e.a().DeleteHostGroup(g.Name); err != nil {
			return u.run(errOn(g.Name, "%s", reason(err)))
		}
		u.push(func() error { return e.a().CreateHostGroup(g.Name, nil) })
		done = append(done, g.Name)
	}
	e.print(nameTable(done...))
	return nil
}
