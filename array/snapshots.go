package array

import (
	"fmt"
	"strconv"
)

// SnapshotVolumeNumbered takes a snapshot named "<name>.<n>": the numeric
// suffix a snapshot gets when its taker names none (SnapshotVolume takes
// suffixes that are names, which must contain a letter).
func (a *Array) SnapshotVolumeNumbered(name string, n uint64) (Volume, error) {
	if n == 0 {
		return Volume{}, fmt.Errorf("%w: snapshot number 0", ErrInvalid)
	}
	v, err := a.store.Lookup(name)
	if err != nil {
		return Volume{}, err
	}
	return a.store.Snapshot(v.ID(), strconv.FormatUint(n, 10))
}
