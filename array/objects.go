package array

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	"vfa/datapath"
)

// Hosts, host groups and volume connections, persisted as objects in the
// metadata store:
//
//	"host/<lower name>"                  JSON Host
//	"hgroup/<lower name>"                JSON HostGroup (name only; members are in the hosts)
//	"conn/<volume id hex>/h/<lower host>"  JSON {"lun": N}  private connection
//	"conn/<volume id hex>/g/<lower hgroup>" JSON {"lun": N} host-group connection
//
// Every change is one atomic object update; the in-memory copy follows it.

// Object errors.
var (
	ErrNotFound = errors.New("does not exist")
	ErrExists   = errors.New("already exists")
	ErrConflict = errors.New("conflicts with the current configuration")
	ErrNoLUN    = errors.New("no LUN available")
)

const (
	// AnyInitiator in a host's IQN list matches initiators that are in no
	// other host (the demo configuration of `vfa run --demo`).
	AnyInitiator  = "*"
	privateLUNMin = 1
	groupLUNMin   = 10
	lunMax        = 255
)

// Host is a host object.
type Host struct {
	Name   string   `json:"name"`
	IQNs   []string `json:"iqns,omitempty"`
	CHAP   CHAP     `json:"chap"`
	HGroup string   `json:"hgroup,omitempty"`
}

// HostGroup is a host group.
type HostGroup struct {
	Name  string   `json:"name"`
	Hosts []string `json:"-"`
}

// Connection is one volume connected to a host or host group.
type Connection struct {
	Volume string
	VolID  uint64
	Host   string // set for a private connection
	HGroup string // set for a host-group connection
	LUN    int
}

type connKey struct {
	vol   uint64
	group bool
	name  string // lower case
}

type objects struct {
	a      *Array
	mu     sync.RWMutex
	hosts  map[string]*Host      // lower name
	groups map[string]*HostGroup // lower name
	conns  map[connKey]int       // -> LUN
}

func lower(s string) string { return strings.ToLower(s) }

func loadObjects(a *Array) (*objects, error) {
	o := &objects{a: a, hosts: map[string]*Host{}, groups: map[string]*HostGroup{}, conns: map[connKey]int{}}
	st := a.store
	kvs, err := st.ObjectList("host/")
	if err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		var h Host
		if err := json.Unmarshal(kv.Value, &h); err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		o.hosts[lower(h.Name)] = &h
	}
	if kvs, err = st.ObjectList("hgroup/"); err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		var g HostGroup
		if err := json.Unmarshal(kv.Value, &g); err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		o.groups[lower(g.Name)] = &g
	}
	for _, h := range o.hosts {
		if g := o.groups[lower(h.HGroup)]; g != nil {
			g.Hosts = append(g.Hosts, h.Name)
		}
	}
	if kvs, err = st.ObjectList("conn/"); err != nil {
		return nil, err
	}
	for _, kv := range kvs {
		parts := strings.SplitN(kv.Key, "/", 4)
		if len(parts) != 4 {
			return nil, fmt.Errorf("object %s: bad key", kv.Key)
		}
		id, err := strconv.ParseUint(parts[1], 16, 64)
		if err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		var c struct{ LUN int }
		if err := json.Unmarshal(kv.Value, &c); err != nil {
			return nil, fmt.Errorf("object %s: %w", kv.Key, err)
		}
		o.conns[connKey{vol: id, group: parts[2] == "g", name: parts[3]}] = c.LUN
	}
	return o, nil
}

func (k connKey) objKey() string {
	t := "h"
	if k.group {
		t = "g"
	}
	return fmt.Sprintf("conn/%016x/%s/%s", k.vol, t, k.name)
}

func hostKey(name string) string  { return "host/" + lower(name) }
func groupKey(name string) string { return "hgroup/" + lower(name) }

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// ValidIQN checks an iSCSI name (iqn., eui. or naa. form).
func ValidIQN(s string) error {
	ls := lower(s)
	switch {
	case strings.HasPrefix(ls, "iqn.") && len(s) > 4 && len(s) <= 223:
	case strings.HasPrefix(ls, "eui.") && len(s) == 20:
	case strings.HasPrefix(ls, "naa.") && (len(s) == 20 || len(s) == 36):
	default:
		return fmt.Errorf("%q is not a valid iSCSI name", s)
	}
	for _, c := range ls {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || strings.ContainsRune(".-:", c)) {
			return fmt.Errorf("%q is not a valid iSCSI name", s)
		}
	}
	return nil
}

// hostOfIQN finds the host holding an IQN (o.mu held).
func (o *objects) hostOfIQN(iqn string) *Host {
	li := lower(iqn)
	var any *Host
	for _, h := range o.hosts {
		for _, q := range h.IQNs {
			if lower(q) == li {
				return h
			}
			if q == AnyInitiator {
				any = h
			}
		}
	}
	return any
}

// CreateHost makes a host with initiator IQNs.
func (a *Array) CreateHost(name string, iqns []string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.hosts[lower(name)]; ok {
		return fmt.Errorf("host %s %w", name, ErrExists)
	}
	if err := o.checkIQNs(name, iqns); err != nil {
		return err
	}
	h := &Host{Name: name, IQNs: dedupIQNs(iqns)}
	if err := a.store.ObjectUpdate(map[string][]byte{hostKey(name): mustJSON(h)}, nil); err != nil {
		return err
	}
	o.hosts[lower(name)] = h
	a.changes.notify()
	return nil
}

func dedupIQNs(iqns []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, q := range iqns {
		if !seen[lower(q)] {
			seen[lower(q)] = true
			out = append(out, q)
		}
	}
	return out
}

// checkIQNs: valid and not in another host (o.mu held).
func (o *objects) checkIQNs(host string, iqns []string) error {
	for _, q := range iqns {
		if q == AnyInitiator {
			continue
		}
		if err := ValidIQN(q); err != nil {
			return fmt.Errorf("%w: %v", ErrInvalid, err)
		}
		if h := o.hostOfIQN(q); h != nil && lower(h.Name) != lower(host) && !contains(h.IQNs, AnyInitiator, q) {
			return fmt.Errorf("%w: IQN %s belongs to host %s", ErrConflict, q, h.Name)
		}
	}
	return nil
}

func contains(list []string, any, q string) bool {
	for _, x := range list {
		if lower(x) == lower(q) {
			return false
		}
	}
	for _, x := range list {
		if x == any {
			return true
		}
	}
	return false
}

// Hosts lists hosts by name.
func (a *Array) Hosts() []Host {
	o := a.objects
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]Host, 0, len(o.hosts))
	for _, h := range o.hosts {
		c := *h
		c.IQNs = append([]string(nil), h.IQNs...)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return lower(out[i].Name) < lower(out[j].Name) })
	return out
}

// UpdateHost changes a host's IQNs and CHAP settings through fn, atomically.
func (a *Array) UpdateHost(name string, fn func(h *Host) error) error {
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	cur, ok := o.hosts[lower(name)]
	if !ok {
		return fmt.Errorf("host %s %w", name, ErrNotFound)
	}
	h := *cur
	h.IQNs = append([]string(nil), cur.IQNs...)
	if err := fn(&h); err != nil {
		return err
	}
	h.Name, h.HGroup = cur.Name, cur.HGroup
	if err := o.checkIQNs(h.Name, h.IQNs); err != nil {
		return err
	}
	h.IQNs = dedupIQNs(h.IQNs)
	if err := a.store.ObjectUpdate(map[string][]byte{hostKey(name): mustJSON(&h)}, nil); err != nil {
		return err
	}
	*cur = h
	a.changes.notify()
	return nil
}

// DeleteHost deletes a host with no connections and no host group.
func (a *Array) DeleteHost(name string) error {
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.hosts[lower(name)]
	if !ok {
		return fmt.Errorf("host %s %w", name, ErrNotFound)
	}
	for k := range o.conns {
		if !k.group && k.name == lower(name) {
			return fmt.Errorf("%w: host %s has volume connections", ErrConflict, h.Name)
		}
	}
	if h.HGroup != "" {
		return fmt.Errorf("%w: host %s is in host group %s", ErrConflict, h.Name, h.HGroup)
	}
	if err := a.store.ObjectUpdate(nil, []string{hostKey(name)}); err != nil {
		return err
	}
	delete(o.hosts, lower(name))
	a.changes.notify()
	return nil
}

// CreateHostGroup makes a host group with the given member hosts.
func (a *Array) CreateHostGroup(name string, hosts []string) error {
	if err := ValidName(name); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	if _, ok := o.groups[lower(name)]; ok {
		return fmt.Errorf("host group %s %w", name, ErrExists)
	}
	g := &HostGroup{Name: name}
	puts := map[string][]byte{groupKey(name): mustJSON(g)}
	var members []*Host
	for _, hn := range hosts {
		h, ok := o.hosts[lower(hn)]
		if !ok {
			return fmt.Errorf("host %s %w", hn, ErrNotFound)
		}
		if h.HGroup != "" {
			return fmt.Errorf("%w: host %s is already in host group %s", ErrConflict, h.Name, h.HGroup)
		}
		c := *h
		c.HGroup = name
		puts[hostKey(h.Name)] = mustJSON(&c)
		members = append(members, h)
	}
	if err := a.store.ObjectUpdate(puts, nil); err != nil {
		return err
	}
	for _, h := range members {
		h.HGroup = name
		g.Hosts = append(g.Hosts, h.Name)
	}
	o.groups[lower(name)] = g
	a.changes.notify()
	return nil
}

// SetHostGroupMembers changes a host group's hosts (add, remove).
func (a *Array) SetHostGroupMembers(name string, add, remove []string) error {
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	g, ok := o.groups[lower(name)]
	if !ok {
		return fmt.Errorf("host group %s %w", name, ErrNotFound)
	}
	puts := map[string][]byte{}
	next := map[string]string{} // lower host -> new hgroup
	for _, hn := range add {
		h, ok := o.hosts[lower(hn)]
		if !ok {
			return fmt.Errorf("host %s %w", hn, ErrNotFound)
		}
		if h.HGroup != "" && lower(h.HGroup) != lower(name) {
			return fmt.Errorf("%w: host %s is already in host group %s", ErrConflict, h.Name, h.HGroup)
		}
		next[lower(hn)] = g.Name
	}
	for _, hn := range remove {
		h, ok := o.hosts[lower(hn)]
		if !ok {
			return fmt.Errorf("host %s %w", hn, ErrNotFound)
		}
		if lower(h.HGroup) != lower(name) {
			return fmt.Errorf("%w: host %s is not in host group %s", ErrConflict, h.Name, g.Name)
		}
		next[lower(hn)] = ""
	}
	for ln, grp := range next {
		c := *o.hosts[ln]
		c.HGroup = grp
		puts[hostKey(c.Name)] = mustJSON(&c)
	}
	if err := o.checkGroupLUNs(g, next); err != nil {
		return err
	}
	if err := a.store.ObjectUpdate(puts, nil); err != nil {
		return err
	}
	for ln, grp := range next {
		o.hosts[ln].HGroup = grp
	}
	o.refreshMembers()
	a.changes.notify()
	return nil
}

// checkGroupLUNs: a host joining a group must not have a private LUN number
// that one of the group's connections uses (o.mu held).
func (o *objects) checkGroupLUNs(g *HostGroup, next map[string]string) error {
	for ln, grp := range next {
		if grp == "" {
			continue
		}
		for k, lun := range o.conns {
			if k.group && k.name == lower(g.Name) {
				for k2, lun2 := range o.conns {
					if !k2.group && k2.name == ln && lun2 == lun {
						return fmt.Errorf("%w: LUN %d of host %s is used by host group %s", ErrConflict, lun, ln, g.Name)
					}
					if !k2.group && k2.name == ln && k2.vol == k.vol {
						return fmt.Errorf("%w: host %s has a private connection to a volume of host group %s", ErrConflict, ln, g.Name)
					}
				}
			}
		}
	}
	return nil
}

func (o *objects) refreshMembers() {
	for _, g := range o.groups {
		g.Hosts = nil
	}
	for _, h := range o.hosts {
		if g := o.groups[lower(h.HGroup)]; g != nil {
			g.Hosts = append(g.Hosts, h.Name)
		}
	}
	for _, g := range o.groups {
		sort.Strings(g.Hosts)
	}
}

// HostGroups lists host groups with their members.
func (a *Array) HostGroups() []HostGroup {
	o := a.objects
	o.mu.RLock()
	defer o.mu.RUnlock()
	out := make([]HostGroup, 0, len(o.groups))
	for _, g := range o.groups {
		c := *g
		c.Hosts = append([]string(nil), g.Hosts...)
		sort.Strings(c.Hosts)
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return lower(out[i].Name) < lower(out[j].Name) })
	return out
}

// DeleteHostGroup deletes an empty host group without connections.
func (a *Array) DeleteHostGroup(name string) error {
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	g, ok := o.groups[lower(name)]
	if !ok {
		return fmt.Errorf("host group %s %w", name, ErrNotFound)
	}
	if len(g.Hosts) > 0 {
		return fmt.Errorf("%w: host group %s has hosts", ErrConflict, g.Name)
	}
	for k := range o.conns {
		if k.group && k.name == lower(name) {
			return fmt.Errorf("%w: host group %s has volume connections", ErrConflict, g.Name)
		}
	}
	if err := a.store.ObjectUpdate(nil, []string{groupKey(name)}); err != nil {
		return err
	}
	delete(o.groups, lower(name))
	return nil
}

// usedLUNs returns the LUN numbers a host sees (o.mu held).
func (o *objects) usedLUNs(host string) map[int]uint64 {
	used := map[int]uint64{}
	h := o.hosts[lower(host)]
	for k, lun := range o.conns {
		if (!k.group && k.name == lower(host)) || (h != nil && k.group && k.name == lower(h.HGroup)) {
			used[lun] = k.vol
		}
	}
	return used
}

// Connect connects a volume to a host (group == false) or host group at lun
// (0: the lowest free one).
func (a *Array) Connect(volume, target string, group bool, lun int) (Connection, error) {
	v, err := a.store.Lookup(volume)
	if err != nil {
		return Connection{}, err
	}
	info := v.Info()
	if info.Snapshot {
		return Connection{}, fmt.Errorf("%w: %s is a snapshot", ErrInvalid, info.Name)
	}
	if !info.Destroyed.IsZero() {
		return Connection{}, fmt.Errorf("%w: volume %s is destroyed", ErrConflict, info.Name)
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	// Which hosts will see it, and which LUNs do they use?
	var hosts []string
	var tname string
	if group {
		g, ok := o.groups[lower(target)]
		if !ok {
			return Connection{}, fmt.Errorf("host group %s %w", target, ErrNotFound)
		}
		hosts, tname = g.Hosts, g.Name
	} else {
		h, ok := o.hosts[lower(target)]
		if !ok {
			return Connection{}, fmt.Errorf("host %s %w", target, ErrNotFound)
		}
		hosts, tname = []string{h.Name}, h.Name
	}
	k := connKey{vol: info.ID, group: group, name: lower(tname)}
	if _, ok := o.conns[k]; ok {
		return Connection{}, fmt.Errorf("%w: volume %s is already connected to %s", ErrExists, info.Name, tname)
	}
	used := map[int]bool{}
	for _, hn := range hosts {
		for l, vol := range o.usedLUNs(hn) {
			used[l] = true
			if vol == info.ID {
				return Connection{}, fmt.Errorf("%w: volume %s is already connected to host %s", ErrExists, info.Name, hn)
			}
		}
	}
	if group {
		for kk, l := range o.conns {
			if kk.group && kk.name == lower(tname) {
				used[l] = true
			}
		}
	}
	lo := privateLUNMin
	if group {
		lo = groupLUNMin
	}
	if lun == 0 {
		for l := lo; l <= lunMax; l++ {
			if !used[l] {
				lun = l
				break
			}
		}
		if lun == 0 {
			return Connection{}, fmt.Errorf("%w for %s", ErrNoLUN, tname)
		}
	} else if lun < 1 || lun > lunMax {
		return Connection{}, fmt.Errorf("%w: LUN %d is outside 1-%d", ErrInvalid, lun, lunMax)
	} else if used[lun] {
		return Connection{}, fmt.Errorf("%w: LUN %d is already in use", ErrConflict, lun)
	}
	if err := a.store.ObjectUpdate(map[string][]byte{k.objKey(): mustJSON(map[string]int{"lun": lun})}, nil); err != nil {
		return Connection{}, err
	}
	o.conns[k] = lun
	a.changes.notify()
	c := Connection{Volume: info.Name, VolID: info.ID, LUN: lun}
	if group {
		c.HGroup = tname
	} else {
		c.Host = tname
	}
	return c, nil
}

// Disconnect removes a connection.
func (a *Array) Disconnect(volume, target string, group bool) error {
	v, err := a.store.Lookup(volume)
	if err != nil {
		return err
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	k := connKey{vol: v.ID(), group: group, name: lower(target)}
	if _, ok := o.conns[k]; !ok {
		return fmt.Errorf("%w: volume %s is not connected to %s", ErrNotFound, v.Info().Name, target)
	}
	if err := a.store.ObjectUpdate(nil, []string{k.objKey()}); err != nil {
		return err
	}
	delete(o.conns, k)
	a.changes.notify()
	return nil
}

func (o *objects) disconnectAll(vol uint64) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	var dels []string
	for k := range o.conns {
		if k.vol == vol {
			dels = append(dels, k.objKey())
		}
	}
	if len(dels) == 0 {
		return nil
	}
	if err := o.a.store.ObjectUpdate(nil, dels); err != nil {
		return err
	}
	for k := range o.conns {
		if k.vol == vol {
			delete(o.conns, k)
		}
	}
	return nil
}

// Connections lists every connection.
func (a *Array) Connections() []Connection {
	o := a.objects
	o.mu.RLock()
	defer o.mu.RUnlock()
	var out []Connection
	for k, lun := range o.conns {
		v, err := a.store.Volume(k.vol)
		if err != nil {
			continue
		}
		c := Connection{Volume: v.Info().Name, VolID: k.vol, LUN: lun}
		if k.group {
			if g := o.groups[k.name]; g != nil {
				c.HGroup = g.Name
			}
		} else if h := o.hosts[k.name]; h != nil {
			c.Host = h.Name
		}
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Volume != out[j].Volume {
			return out[i].Volume < out[j].Volume
		}
		return out[i].Host+out[i].HGroup < out[j].Host+out[j].HGroup
	})
	return out
}

// Host implements Frontend.
func (a *Array) Host(initiator string) (string, CHAP, bool) {
	o := a.objects
	o.mu.RLock()
	defer o.mu.RUnlock()
	h := o.hostOfIQN(initiator)
	if h == nil {
		return "", CHAP{}, false
	}
	return h.Name, h.CHAP, true
}

// LUNs implements Frontend.
func (a *Array) LUNs(initiator string) []LUN {
	o := a.objects
	o.mu.RLock()
	h := o.hostOfIQN(initiator)
	if h == nil {
		o.mu.RUnlock()
		return nil
	}
	used := o.usedLUNs(h.Name)
	o.mu.RUnlock()
	out := make([]LUN, 0, len(used))
	for lun, id := range used {
		v, err := a.store.Volume(id)
		if err != nil {
			continue
		}
		out = append(out, LUN{Number: uint64(lun), Device: &volDev{v: v}})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Number < out[j].Number })
	return out
}

var _ Frontend = (*Array)(nil)
var _ = datapath.ErrNotFound
