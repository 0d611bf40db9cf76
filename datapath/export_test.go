package datapath

import (
	"fmt"
	"time"
)

// gcFromTest runs one urgent GC pass on the flusher goroutine.
func (s *Store) gcFromTest() error {
	return s.runJob(func(fb *flushBatch) error { return s.gcOnce(true) })
}

// nvramStats exposes the log's counters to benchmarks.
func (s *Store) nvramStats() string { return fmt.Sprintf("%+v", s.log.Stats()) }

func (s *Store) flushTimes() string {
	st := &s.flushStats
	return fmt.Sprintf("phases %v %v %v %v %v batches %d compressed %d reduce %v write %v commit %v",
		time.Duration(s.phase[0].Load()), time.Duration(s.phase[1].Load()), time.Duration(s.phase[2].Load()), time.Duration(s.phase[3].Load()), time.Duration(s.phase[4].Load()),
		st.batches.Load(), st.compressed.Load(),
		time.Duration(st.reduceNanos.Load()), time.Duration(st.writeNanos.Load()), time.Duration(st.commitNanos.Load()))
}
