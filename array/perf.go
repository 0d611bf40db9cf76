package array

import "vfa/datapath"

// IOStats are the array's cumulative I/O counters since it was opened.
type IOStats = datapath.IOStats

// IOStats returns a snapshot of the I/O counters (see datapath.IOStats);
// phone home divides the differences between two snapshots by the time
// between them. It never blocks I/O.
func (a *Array) IOStats() IOStats { return a.store.IOStats() }
