package mgmt

import (
	"errors"
	"fmt"
	"net"
	"sort"
	"strings"

	"vfa/array"
)

// Helpers the commands share: name and size rules, lookups with the
// messages users see, and turning array errors into reasons.

const (
	volumeSizeMin = 1 << 20 // 1M
	volumeSizeMax = 4 << 50 // 4P
)

func lower(s string) string { return strings.ToLower(s) }

// checkName applies the naming rule to a new object's name.
func checkName(name string) error {
	if array.ValidName(name) != nil {
		return errOn(name, "invalid name; a name is 1 to 63 letters, digits and '-', contains a letter and does not start with '-'")
	}
	return nil
}

// parseVolumeSize reads a --size value.
func parseVolumeSize(v string) (int64, error) {
	n, err := array.ParseSize(v)
	if err != nil || n < volumeSizeMin || n > volumeSizeMax {
		return 0, usagef("invalid size %q; a size is an integer with an optional suffix S (512-byte sectors, the default), K, M, G, T or P, from 1M to 4P", v)
	}
	return n, nil
}

// uniqueArgs refuses a name given twice (case-insensitive).
func uniqueArgs(names []string) error {
	seen := map[string]bool{}
	for _, n := range names {
		if seen[lower(n)] {
			return errOn(n, "named more than once")
		}
		seen[lower(n)] = true
	}
	return nil
}

// reason is an array error's text without the sentinel prefix the array puts
// in front ("conflicts with the current configuration: LUN 5 is in use").
func reason(err error) string {
	s := err.Error()
	for _, sentinel := range []error{array.ErrConflict, array.ErrInvalid, array.ErrExists, array.ErrNotFound, array.ErrNoLUN} {
		if p := sentinel.Error() + ": "; strings.HasPrefix(s, p) {
			return s[len(p):]
		}
	}
	return s
}

// volIndex is a consistent view of the volumes and snapshots.
type volIndex struct {
	all    []array.Volume
	byName map[string]array.Volume
	byID   map[uint64]array.Volume
}

func (e *env) volumes() *volIndex {
	all := e.a().Volumes()
	sort.Slice(all, func(i, j int) bool { return lower(all[i].Name) < lower(all[j].Name) })
	x := &volIndex{all: all, byName: make(map[string]array.Volume, len(all)), byID: make(map[uint64]array.Volume, len(all))}
	for _, v := range all {
		x.byName[lower(v.Name)] = v
		x.byID[v.ID] = v
	}
	return x
}

func kindOf(v array.Volume) string {
	if v.Snapshot {
		return "snapshot"
	}
	return "volume"
}

// get finds an existing volume or snapshot.
func (x *volIndex) get(name string) (array.Volume, error) {
	v, ok := x.byName[lower(name)]
	if !ok {
		return v, errOn(name, "volume does not exist")
	}
	return v, nil
}

// live finds a volume or snapshot that is not destroyed.
func (x *volIndex) live(name string) (array.Volume, error) {
	v, err := x.get(name)
	if err != nil {
		return v, err
	}
	if !v.Destroyed.IsZero() {
		return v, errOn(v.Name, "%s has been destroyed; recover it first", kindOf(v))
	}
	return v, nil
}

// liveVolume finds a volume (not a snapshot) that is not destroyed.
func (x *volIndex) liveVolume(name string) (array.Volume, error) {
	v, err := x.live(name)
	if err != nil {
		return v, err
	}
	if v.Snapshot {
		return v, errOn(v.Name, "this is a snapshot, not a volume")
	}
	return v, nil
}

// free checks that a new volume name is valid and not taken (a destroyed
// volume keeps its name until it is eradicated).
func (x *volIndex) free(name string) error {
	if err := checkName(name); err != nil {
		return err
	}
	if v, ok := x.byName[lower(name)]; ok {
		if !v.Destroyed.IsZero() {
			return errOn(name, "volume already exists (destroyed, pending eradication)")
		}
		return errOn(name, "volume already exists")
	}
	return nil
}

func (e *env) host(name string) (array.Host, error) {
	for _, h := range e.a().Hosts() {
		if lower(h.Name) == lower(name) {
			return h, nil
		}
	}
	return array.Host{}, errOn(name, "host does not exist")
}

func (e *env) hgroup(name string) (array.HostGroup, error) {
	for _, g := range e.a().HostGroups() {
		if lower(g.Name) == lower(name) {
			return g, nil
		}
	}
	return array.HostGroup{}, errOn(name, "host group does not exist")
}

// connsOf lists the connections of a volume.
func (e *env) connsOf(volID uint64) []array.Connection {
	var out []array.Connection
	for _, c := range e.a().Connections() {
		if c.VolID == volID {
			out = append(out, c)
		}
	}
	return out
}

// sourceHost is the host part of a client address.
func sourceHost(addr string) string {
	if h, _, err := net.SplitHostPort(addr); err == nil {
		return h
	}
	return addr
}

// undoer collects the steps that reverse what a command did so far.
type undoer struct{ steps []func() error }

func (u *undoer) push(f func() error) { u.steps = append(u.steps, f) }

// run undoes in reverse order and returns err with any undo failure added.
func (u *undoer) run(err error) error {
	var failed []error
	for i := len(u.steps) - 1; i >= 0; i-- {
		if uerr := u.steps[i](); uerr != nil {
			failed = append(failed, uerr)
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("%w (and undoing the earlier changes failed: %v)", err, errors.Join(failed...))
	}
	return err
}
