package datapath

import (
	"fmt"
	"syscall"
	"time"
)

// Host file system space. The SSD files are sparse: `vfa init` allocates
// nothing, and each file grows as segments are written. If the file system
// holding them fills up first, segment writes fail and the array cannot
// flush NVRAM. So the flusher compares, every hostSpaceEvery, the space the
// host file system has available with how much the SSD files can still grow
// (their capacity less the blocks already allocated), and raises the
// warning "host.space" while the first is smaller; it clears once there is
// room again (with a 5% margin, so that it does not flap).

const hostSpaceEvery = 30 * time.Second

// ssdGrowth is how many bytes the present SSD files may still allocate;
// ok is false when the file system does not report allocated blocks.
func (s *Store) ssdGrowth() (growth int64, ok bool) {
	for i := 0; i < s.o.SSDs; i++ {
		fi, err := s.o.FS.Stat(ssdPath(s.o.Dir, i))
		if err != nil {
			continue
		}
		st, isStat := fi.Sys().(*syscall.Stat_t)
		if !isStat {
			return 0, false
		}
		growth += max(0, fi.Size()-st.Blocks*512)
	}
	return growth, true
}

// checkHostSpace runs on the flusher (force: at its start).
func (s *Store) checkHostSpace(force bool) {
	now := s.o.Now()
	if !force && now.Sub(s.hostCheckAt) < hostSpaceEvery {
		return
	}
	s.hostCheckAt = now
	du, err := s.o.FS.GetDiskUsage(s.o.Dir)
	if err != nil {
		return
	}
	growth, ok := s.ssdGrowth()
	if !ok {
		return
	}
	avail := int64(du.AvailBytes)
	switch {
	case !s.hostLow && avail < growth:
		s.hostLow = true
		s.event(Warning, "host.space", "array", fmt.Sprintf(
			"the file system holding %s has %s available, but the sparse SSD files can still grow by %s: when it fills, the array cannot write its SSDs; free space there or move the array",
			s.o.Dir, gib(avail), gib(growth)))
	case s.hostLow && avail > growth+growth/20:
		s.hostLow = false
		s.o.Events(Event{Time: now, Severity: Warning, Code: "host.space", Component: "array", Clear: true,
			Message: fmt.Sprintf("the host file system has room for the SSD files again (%s available, %s of growth)", gib(avail), gib(growth))})
	}
}

func gib(n int64) string { return fmt.Sprintf("%.1f GiB", float64(n)/(1<<30)) }

// hostHasRoom reports whether the host file system has room for two more
// segments on every SSD (true when it does not say).
func (s *Store) hostHasRoom() bool {
	du, err := s.o.FS.GetDiskUsage(s.o.Dir)
	if err != nil {
		return true
	}
	return int64(du.AvailBytes) >= 2*s.set.AUSize()*int64(s.o.SSDs)
}
