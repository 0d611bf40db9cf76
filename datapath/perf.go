package datapath

// IOStats are the data path's cumulative I/O counters since the store was
// opened. Writes count every operation appended to NVRAM (WRITE, WRITE SAME,
// UNMAP, COMPARE AND WRITE), with the bytes they cover; a write's latency
// runs from admission to its durable NVRAM append, a read's from the call to
// its return. Only successful operations are counted. The counters only
// grow; a reader takes two snapshots and divides the differences by the
// time between them (average queue depth is, by Little's law, the summed
// latency divided by that time).
type IOStats struct {
	Reads, Writes         uint64
	ReadBytes, WriteBytes uint64
	ReadNanos, WriteNanos uint64
}

// IOStats returns a snapshot of the I/O counters. It takes no lock and
// allocates nothing; the fields are read one by one, so a snapshot taken
// while I/O runs may count an operation in one field and not yet in another.
func (s *Store) IOStats() IOStats {
	st := &s.stats
	return IOStats{
		Reads: st.reads.Load(), Writes: st.writes.Load(),
		ReadBytes: st.readBytes.Load(), WriteBytes: st.writeBytes.Load(),
		ReadNanos: st.readNanos.Load(), WriteNanos: st.writeNanos.Load(),
	}
}
