package array

import "fmt"

// RenameHost renames a host. Its IQNs, CHAP settings, host group membership
// and volume connections (with their LUNs) follow it, in one atomic update.
// A change of case only is allowed.
func (a *Array) RenameHost(name, newName string) error {
	if err := ValidName(newName); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	o := a.objects
	o.mu.Lock()
	defer o.mu.Unlock()
	h, ok := o.hosts[lower(name)]
	if !ok {
		return fmt.Errorf("host %s %w", name, ErrNotFound)
	}
	if other, ok := o.hosts[lower(newName)]; ok && other != h {
		return fmt.Errorf("host %s %w", newName, ErrExists)
	}
	same := lower(name) == lower(newName)
	c := *h
	c.IQNs = append([]string(nil), h.IQNs...)
	c.Name = newName
	puts := map[string][]byte{hostKey(newName): mustJSON(&c)}
	var dels []string
	moved := map[connKey]connKey{}
	if !same {
		dels = append(dels, hostKey(name))
		for k, lun := range o.conns {
			if !k.group && k.name == lower(name) {
				nk := k
				nk.name = lower(newName)
				puts[nk.objKey()] = mustJSON(map[string]int{"lun": lun})
				dels = append(dels, k.objKey())
				moved[k] = nk
			}
		}
	}
	if err := a.store.ObjectUpdate(puts, dels); err != nil {
		return fmt.Errorf("rename host %s: %w", name, err)
	}
	delete(o.hosts, lower(name))
	h.Name = newName
	o.hosts[lower(newName)] = h
	for k, nk := range moved {
		o.conns[nk] = o.conns[k]
		delete(o.conns, k)
	}
	o.refreshMembers()
	a.changes.notify()
	return nil
}
