package mgmt

import (
	"strconv"
	"strings"
	"time"

	"vfa/array"
)

// purevol: volumes and snapshots.

func volGroup() *group {
	g := &group{name: "purevol", summary: "manage volumes and snapshots"}
	g.subs = []*command{
		{name: "connect", summary: "connect volumes to a host or a host group", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{
				{name: "host", kind: flagValue, metavar: "HOST", help: "the host to connect to"},
				{name: "hgroup", kind: flagValue, metavar: "HGROUP", help: "the host group to connect to"},
				{name: "lun", kind: flagValue, metavar: "LUN", help: "the LUN (1-255; default: the lowest free one; one volume only)"},
			}, run: volConnect},
		{name: "copy", summary: "copy a volume or snapshot into a new or existing volume", args: "SOURCE TARGET", minArgs: 2, maxArgs: 2, mutates: true,
			flags: []flagSpec{{name: "overwrite", help: "replace the contents of an existing target volume"}}, run: volCopy},
		{name: "create", summary: "create volumes", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{{name: "size", kind: flagValue, metavar: "SIZE", required: true, help: "virtual size: an integer with S (sectors, the default), K, M, G, T or P, 1M to 4P"}},
			run:   volCreate},
		{name: "destroy", summary: "destroy volumes or snapshots (recoverable until eradicated)", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true, run: volDestroy},
		{name: "disconnect", summary: "disconnect volumes from a host or a host group", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{
				{name: "host", kind: flagValue, metavar: "HOST", help: "the host to disconnect from"},
				{name: "hgroup", kind: flagValue, metavar: "HGROUP", help: "the host group to disconnect from"},
			}, run: volDisconnect},
		{name: "eradicate", summary: "delete destroyed volumes or snapshots for good", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true, run: volEradicate},
		{name: "list", summary: "list volumes, snapshots, their space or their connections", args: "[VOL...]", maxArgs: -1, list: true,
			flags: []flagSpec{
				{name: "connect", help: "list the hosts and host groups volumes are connected to"},
				{name: "pending", help: "include destroyed volumes (pending eradication)"},
				{name: "pending-only", help: "list only destroyed volumes"},
				{name: "snap", help: "list snapshots instead of volumes"},
				{name: "space", help: "list space use and data reduction"},
			}, run: volList},
		{name: "recover", summary: "recover destroyed volumes or snapshots", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true, run: volRecover},
		{name: "rename", summary: "rename a volume", args: "VOL NEW-NAME", minArgs: 2, maxArgs: 2, mutates: true, run: volRename},
		{name: "setattr", summary: "change a volume's size", args: "VOL", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "size", kind: flagValue, metavar: "SIZE", required: true, help: "new virtual size (as for create)"},
				{name: "truncate", help: "allow shrinking: data beyond the new size is discarded"},
			}, run: volSetattr},
		{name: "snap", summary: "take snapshots of volumes", args: "VOL...", minArgs: 1, maxArgs: -1, mutates: true,
			flags: []flagSpec{{name: "suffix", kind: flagValue, metavar: "SUFFIX", help: "snapshot name suffix (default: the next number)"}},
			run:   volSnap},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func volTable(pending bool) *table {
	if pending {
		return newTable("Name", "Size", "Source", "Created", "Serial", "Time Remaining")
	}
	return newTable("Name", "Size", "Source", "Created", "Serial")
}

func (e *env) volRow(t *table, x *volIndex, v array.Volume, pending bool) {
	src := ""
	if v.Snapshot {
		if s, ok := x.byID[v.Source]; ok {
			src = s.Name
		}
	}
	cells := []cell{txt(v.Name), size(v.Size), txt(src), when(v.Created), txt(v.Serial)}
	if pending {
		cells = append(cells, e.remaining(v))
	}
	t.add(cells...)
}

// remaining is the time until a destroyed volume is eradicated.
func (e *env) remaining(v array.Volume) cell {
	if v.Destroyed.IsZero() {
		return txt("")
	}
	left := e.s.c.DestroyedRetention - e.s.c.Now().Sub(v.Destroyed)
	if left < 0 {
		left = 0
	}
	secs := int64(left / time.Second)
	return cell{lines: []string{formatHMS(secs)}, raw: strconv.FormatInt(secs, 10)}
}

func formatHMS(secs int64) string {
	h, m, s := secs/3600, secs/60%60, secs%60
	b := strconv.AppendInt(nil, h, 10)
	b = append(b, ':', byte('0'+m/10), byte('0'+m%10), ':', byte('0'+s/10), byte('0'+s%10))
	return string(b)
}

func volList(e *env, p *parsed) error {
	if p.count("space", "snap", "connect") > 1 {
		return usagef("--space, --snap and --connect cannot be combined")
	}
	if p.has("pending") && p.has("pending-only") {
		return usagef("--pending and --pending-only cannot be combined")
	}
	x := e.volumes()
	snaps := p.has("snap")
	var sel []array.Volume
	if len(p.args) > 0 {
		if err := uniqueArgs(p.args); err != nil {
			return err
		}
		for _, n := range p.args {
			v, err := x.get(n)
			if err != nil {
				return err
			}
			if snaps && !v.Snapshot {
				// The snapshots of a volume.
				for _, s := range x.all {
					if s.Snapshot && s.Source == v.ID && e.pendingOK(p, s) {
						sel = append(sel, s)
					}
				}
				continue
			}
			sel = append(sel, v)
		}
	} else {
		for _, v := range x.all {
			if v.Snapshot == snaps && e.pendingOK(p, v) {
				sel = append(sel, v)
			}
		}
	}
	pending := p.has("pending") || p.has("pending-only")
	switch {
	case p.has("space"):
		return e.volSpace(sel)
	case p.has("connect"):
		return e.volConnections(sel)
	}
	t := volTable(pending)
	for _, v := range sel {
		e.volRow(t, x, v, pending)
	}
	e.print(t)
	return nil
}

// pendingOK applies --pending / --pending-only to an unnamed listing.
func (e *env) pendingOK(p *parsed, v array.Volume) bool {
	destroyed := !v.Destroyed.IsZero()
	switch {
	case p.has("pending-only"):
		return destroyed
	case p.has("pending"):
		return true
	}
	return !destroyed
}

func (e *env) volSpace(sel []array.Volume) error {
	_, vs, err := e.a().Space()
	if err != nil {
		return errOn(e.a().Name(), "%v", err)
	}
	byID := map[uint64]int{}
	for i, v := range vs {
		byID[v.ID] = i
	}
	t := newTable("Name", "Size", "Thin Provisioning", "Data Reduction", "Total Reduction", "Volume", "Snapshots", "Shared Space", "System", "Total")
	for _, v := range sel {
		if v.Snapshot {
			continue
		}
		var s array.VolumeSpace
		if i, ok := byID[v.ID]; ok {
			s = vs[i]
		}
		thin := 1.0
		if v.Size > 0 {
			thin = 1 - float64(s.Written)/float64(v.Size)
		}
		var total float64
		if s.Unique > 0 {
			total = float64(v.Size) / float64(s.Unique)
		}
		t.add(txt(v.Name), size(v.Size), percent(thin), ratio(s.DataReduction), ratio(total),
			space(s.Unique), space(s.Snapshots), txt(""), txt(""), space(s.Unique+s.Snapshots))
	}
	e.print(t)
	return nil
}

func (e *env) volConnections(sel []array.Volume) error {
	want := map[uint64]bool{}
	for _, v := range sel {
		want[v.ID] = true
	}
	groups := map[string]array.HostGroup{}
	for _, g := range e.a().HostGroups() {
		groups[lower(g.Name)] = g
	}
	sizes := map[uint64]int64{}
	for _, v := range sel {
		sizes[v.ID] = v.Size
	}
	t := newTable("Name", "Size", "LUN", "Host Group", "Host")
	for _, c := range e.a().Connections() {
		if !want[c.VolID] {
			continue
		}
		if c.HGroup == "" {
			t.add(txt(c.Volume), size(sizes[c.VolID]), num(int64(c.LUN)), txt(""), txt(c.Host))
			continue
		}
		members := groups[lower(c.HGroup)].Hosts
		if len(members) == 0 {
			t.add(txt(c.Volume), size(sizes[c.VolID]), num(int64(c.LUN)), txt(c.HGroup), txt(""))
		}
		for _, h := range members {
			t.add(txt(c.Volume), size(sizes[c.VolID]), num(int64(c.LUN)), txt(c.HGroup), txt(h))
		}
	}
	e.print(t)
	return nil
}

func volCreate(e *env, p *parsed) error {
	if !p.has("size") {
		return usagef("--size is required")
	}
	sz, err := parseVolumeSize(p.val("size"))
	if err != nil {
		return err
	}
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	x := e.volumes()
	for _, n := range p.args {
		if err := x.free(n); err != nil {
			return err
		}
	}
	var u undoer
	t := volTable(false)
	for _, n := range p.args {
		v, err := e.a().CreateVolume(n, sz)
		if err != nil {
			return u.run(errOn(n, "%s", reason(err)))
		}
		u.push(func() error { return e.removeVolume(v.Name) })
		e.volRow(t, x, v, false)
	}
	e.print(t)
	return nil
}

// removeVolume undoes the creation of a volume or snapshot.
func (e *env) removeVolume(name string) error {
	if err := e.a().DestroyVolume(name); err != nil {
		return err
	}
	return e.a().EradicateVolume(name)
}

func nameTable(names ...string) *table {
	t := newTable("Name")
	for _, n := range names {
		t.add(txt(n))
	}
	return t
}

func volDestroy(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	x := e.volumes()
	var vols []array.Volume
	for _, n := range p.args {
		v, err := x.live(n)
		if err != nil {
			return err
		}
		vols = append(vols, v)
	}
	var u undoer
	var done []string
	for _, v := range vols {
		conns := e.connsOf(v.ID)
		if err := e.a().DestroyVolume(v.Name); err != nil {
			return u.run(errOn(v.Name, "%s", reason(err)))
		}
		u.push(func() error {
			if err := e.a().RecoverVolume(v.Name); err != nil {
				return err
			}
			return e.reconnect(conns)
		})
		done = append(done, v.Name)
	}
	e.print(nameTable(done...))
	return nil
}

// reconnect restores connections (with their LUNs).
func (e *env) reconnect(conns []array.Connection) error {
	for _, c := range conns {
		target, group := c.Host, false
		if c.HGroup != "" {
			target, group = c.HGroup, true
		}
		if _, err := e.a().Connect(c.Volume, target, group, c.LUN); err != nil {
			return err
		}
	}
	return nil
}

func volRecover(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	x := e.volumes()
	var vols []array.Volume
	for _, n := range p.args {
		v, err := x.get(n)
		if err != nil {
			return err
		}
		if v.Destroyed.IsZero() {
			return errOn(v.Name, "%s is not destroyed", kindOf(v))
		}
		vols = append(vols, v)
	}
	var u undoer
	var done []string
	for _, v := range vols {
		if err := e.a().RecoverVolume(v.Name); err != nil {
			return u.run(errOn(v.Name, "%s", reason(err)))
		}
		u.push(func() error { return e.a().DestroyVolume(v.Name) })
		done = append(done, v.Name)
	}
	e.print(nameTable(done...))
	return nil
}

func volEradicate(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	x := e.volumes()
	var vols []array.Volume
	for _, n := range p.args {
		v, err := x.get(n)
		if err != nil {
			return err
		}
		if v.Destroyed.IsZero() {
			return errOn(v.Name, "%s is not destroyed; only destroyed volumes can be eradicated", kindOf(v))
		}
		vols = append(vols, v)
	}
	var done []string
	for _, v := range vols {
		if err := e.a().EradicateVolume(v.Name); err != nil {
			// Eradication cannot be undone: say what was eradicated.
			e.print(nameTable(done...))
			return errOn(v.Name, "%s", reason(err))
		}
		done = append(done, v.Name)
	}
	e.print(nameTable(done...))
	return nil
}

func volRename(e *env, p *parsed) error {
	x := e.volumes()
	v, err := x.live(p.args[0])
	if err != nil {
		return err
	}
	if v.Snapshot {
		return errOn(v.Name, "snapshots cannot be renamed")
	}
	nn := p.args[1]
	if lower(nn) != lower(v.Name) {
		if err := x.free(nn); err != nil {
			return err
		}
	} else if err := checkName(nn); err != nil {
		return err
	}
	if err := e.a().RenameVolume(v.Name, nn); err != nil {
		return errOn(v.Name, "%s", reason(err))
	}
	e.print(nameTable(nn))
	return nil
}

func volSetattr(e *env, p *parsed) error {
	if !p.has("size") {
		return usagef("--size is required")
	}
	sz, err := parseVolumeSize(p.val("size"))
	if err != nil {
		return err
	}
	x := e.volumes()
	v, err := x.liveVolume(p.args[0])
	if err != nil {
		return err
	}
	if sz < v.Size && !p.has("truncate") {
		return errOn(v.Name, "the new size %s is smaller than %s; shrinking discards data and needs --truncate", array.FormatSize(sz), array.FormatSize(v.Size))
	}
	if sz != v.Size {
		if err := e.a().ResizeVolume(v.Name, sz, p.has("truncate")); err != nil {
			return errOn(v.Name, "%s", reason(err))
		}
	}
	nv, err := e.a().LookupVolume(v.Name)
	if err != nil {
		return errOn(v.Name, "%v", err)
	}
	t := volTable(false)
	e.volRow(t, x, nv, false)
	e.print(t)
	return nil
}

func volSnap(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	x := e.volumes()
	var vols []array.Volume
	for _, n := range p.args {
		v, err := x.liveVolume(n)
		if err != nil {
			return err
		}
		vols = append(vols, v)
	}
	suffix := p.val("suffix")
	var number uint64
	if p.has("suffix") {
		if array.ValidName(suffix) != nil {
			return errOn(suffix, "invalid suffix; a suffix is 1 to 63 letters, digits and '-', contains a letter and does not start with '-'")
		}
	} else {
		// The next number after every numeric suffix of these volumes.
		for _, s := range x.all {
			for _, v := range vols {
				if s.Snapshot && s.Source == v.ID {
					if _, sfx, ok := strings.Cut(s.Name, "."); ok {
						if n, err := strconv.ParseUint(sfx, 10, 64); err == nil && n < 1<<62 {
							number = max(number, n)
						}
					}
				}
			}
		}
		number++
		suffix = strconv.FormatUint(number, 10)
	}
	for _, v := range vols {
		name := v.Name + "." + suffix
		if _, ok := x.byName[lower(name)]; ok {
			return errOn(name, "snapshot already exists")
		}
	}
	var u undoer
	t := volTable(false)
	for _, v := range vols {
		var s array.Volume
		var err error
		if number > 0 {
			s, err = e.a().SnapshotVolumeNumbered(v.Name, number)
		} else {
			s, err = e.a().SnapshotVolume(v.Name, suffix)
		}
		if err != nil {
			return u.run(errOn(v.Name, "%s", reason(err)))
		}
		u.push(func() error { return e.removeVolume(s.Name) })
		e.volRow(t, x, s, false)
	}
	e.print(t)
	return nil
}

func volCopy(e *env, p *parsed) error {
	x := e.volumes()
	src, err := x.live(p.args[0])
	if err != nil {
		return err
	}
	dst := p.args[1]
	if d, ok := x.byName[lower(dst)]; ok {
		switch {
		case !p.has("overwrite"):
			return errOn(d.Name, "volume already exists; use --overwrite to replace its contents")
		case d.Snapshot:
			return errOn(d.Name, "a snapshot cannot be overwritten")
		case !d.Destroyed.IsZero():
			return errOn(d.Name, "volume has been destroyed; recover it first")
		case d.ID == src.ID:
			return errOn(d.Name, "a volume cannot be copied onto itself")
		}
	} else if err := checkName(dst); err != nil {
		return err
	}
	v, err := e.a().CopyVolume(src.Name, dst, p.has("overwrite"))
	if err != nil {
		return errOn(dst, "%s", reason(err))
	}
	t := volTable(false)
	e.volRow(t, x, v, false)
	e.print(t)
	return nil
}

// connTarget reads --host / --hgroup: exactly one of them.
func connTarget(e *env, p *parsed) (name string, group bool, err error) {
	switch p.count("host", "hgroup") {
	case 0:
		return "", false, usagef("--host or --hgroup is required")
	case 2:
		return "", false, usagef("--host and --hgroup cannot be combined")
	}
	if p.has("host") {
		h, err := e.host(p.val("host"))
		return h.Name, false, err
	}
	g, err := e.hgroup(p.val("hgroup"))
	return g.Name, true, err
}

func volConnect(e *env, p *parsed) error {
	lun := 0
	if p.has("lun") {
		var err error
		if lun, err = parseLUN(p.val("lun")); err != nil {
			return err
		}
		if len(p.args) > 1 {
			return usagef("--lun can be given with one volume only")
		}
	}
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	target, group, err := connTarget(e, p)
	if err != nil {
		return err
	}
	return e.connect(p.args, target, group, lun)
}

// connect connects volumes to a host or host group, all or none.
func (e *env) connect(names []string, target string, group bool, lun int) error {
	x := e.volumes()
	var vols []array.Volume
	for _, n := range names {
		v, err := x.live(n)
		if err != nil {
			return err
		}
		if v.Snapshot {
			return errOn(v.Name, "a snapshot cannot be connected; copy it to a volume first")
		}
		for _, c := range e.connsOf(v.ID) {
			if (group && lower(c.HGroup) == lower(target)) || (!group && lower(c.Host) == lower(target)) {
				return errOn(v.Name, "volume is already connected to %s", target)
			}
		}
		vols = append(vols, v)
	}
	var u undoer
	t := newTable("Name", "Host Group", "Host", "LUN")
	for _, v := range vols {
		c, err := e.a().Connect(v.Name, target, group, lun)
		if err != nil {
			return u.run(errOn(v.Name, "%s", reason(err)))
		}
		u.push(func() error { return e.a().Disconnect(v.Name, target, group) })
		t.add(txt(c.Volume), txt(c.HGroup), txt(c.Host), num(int64(c.LUN)))
	}
	e.print(t)
	return nil
}

func volDisconnect(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	target, group, err := connTarget(e, p)
	if err != nil {
		return err
	}
	return e.disconnect(p.args, target, group)
}

// disconnect removes connections, all or none.
func (e *env) disconnect(names []string, target string, group bool) error {
	x := e.volumes()
	var conns []array.Connection
	for _, n := range names {
		v, err := x.get(n)
		if err != nil {
			return err
		}
		found := false
		for _, c := range e.connsOf(v.ID) {
			if (group && lower(c.HGroup) == lower(target)) || (!group && lower(c.Host) == lower(target)) {
				conns = append(conns, c)
				found = true
			}
		}
		if !found {
			return errOn(v.Name, "volume is not connected to %s", target)
		}
	}
	var u undoer
	t := newTable("Name", "Host Group", "Host")
	for _, c := range conns {
		if err := e.a().Disconnect(c.Volume, target, group); err != nil {
			return u.run(errOn(c.Volume, "%s", reason(err)))
		}
		u.push(func() error { return e.reconnect([]array.Connection{c}) })
		t.add(txt(c.Volume), txt(c.HGroup), txt(c.Host))
	}
	e.print(t)
	return nil
}
