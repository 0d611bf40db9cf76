package datapath

import "fmt"

// gcFromTest runs one urgent GC pass on the flusher goroutine.
func (s *Store) gcFromTest() error {
	return s.runJob(func(fb *flushBatch) error { return s.gcOnce(true) })
}

// nvramStats exposes the log's counters to benchmarks.
func (s *Store) nvramStats() string { return fmt.Sprintf("%+v", s.log.Stats()) }
