package datapath

import (
	"errors"
	"sort"

	"github.com/cockroachdb/pebble/v2"
)

// Objects: a small transactional key-value space in the metadata store
// ('o' + key) for the array's own objects (hosts, host groups, connections,
// settings, audit log). It works while the data path is locked. Values must
// not contain user data in the clear.

// KV is one object.
type KV struct {
	Key   string
	Value []byte
}

func objKey(k string) []byte { return append([]byte{pfxObject}, k...) }

// ObjectGet returns the value stored under key.
func (s *Store) ObjectGet(key string) ([]byte, bool, error) {
	v, c, err := s.db.Get(objKey(key))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	defer c.Close()
	return append([]byte(nil), v...), true, nil
}

// ObjectList returns every object whose key starts with prefix, in key order.
func (s *Store) ObjectList(prefix string) ([]KV, error) {
	lo := objKey(prefix)
	hi := append(append([]byte(nil), lo...), 0xff)
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: lo, UpperBound: hi})
	if err != nil {
		return nil, err
	}
	defer it.Close()
	var out []KV
	for it.First(); it.Valid(); it.Next() {
		out = append(out, KV{Key: string(it.Key()[1:]), Value: append([]byte(nil), it.Value()...)})
	}
	return out, it.Error()
}

// ObjectUpdate applies puts and deletes in one synced batch: all or nothing.
func (s *Store) ObjectUpdate(puts map[string][]byte, dels []string) error {
	b := s.db.NewBatch()
	defer b.Close()
	keys := make([]string, 0, len(puts))
	for k := range puts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		_ = b.Set(objKey(k), puts[k], nil)
	}
	for _, k := range dels {
		_ = b.Delete(objKey(k), nil)
	}
	return b.Commit(pebble.Sync)
}
