package datapath

import (
	"fmt"

	"vfa/ssd"
)

// Drives: the state of every device file, for `puredrive list`.
//
// While the array is unlocked the SSD states come from the device set (the
// same view reads and writes have); while it is locked the devices are not
// open, so only presence and size are known and a present device is
// DriveUnknown.

// DriveStatus is a device's condition.
type DriveStatus string

const (
	DriveHealthy  DriveStatus = "healthy"  // in use, no errors seen
	DriveDegraded DriveStatus = "degraded" // in use, but reads failed or pages were rebuilt from parity
	DriveFailed   DriveStatus = "failed"   // open but unusable (truncated, I/O errors)
	DriveMissing  DriveStatus = "missing"  // absent or not one of this array's devices
	DriveUnknown  DriveStatus = "unknown"  // present, but the array is locked
)

// DriveKind says what a device is.
type DriveKind string

const (
	DriveSSD   DriveKind = "SSD"
	DriveNVRAM DriveKind = "NVRAM"
)

// Drive is one device file.
type Drive struct {
	Name     string // "ssd03", "nvram0"
	Kind     DriveKind
	Slot     int // SSD slot; 0 for the NVRAM
	Status   DriveStatus
	Capacity int64  // bytes of the device file (0 when missing)
	Reason   string // why it is failed or missing, when known
}

// Drives reports every SSD slot and the NVRAM, SSDs first by slot.
func (s *Store) Drives() []Drive {
	out := make([]Drive, 0, s.o.SSDs+1)
	var health []ssd.DeviceHealth
	if s.unlocked.Load() && !s.closed.Load() {
		health = s.set.Health()
	}
	for i := 0; i < s.o.SSDs; i++ {
		d := Drive{Name: SSDName(i), Kind: DriveSSD, Slot: i, Status: DriveUnknown}
		if st, err := s.o.FS.Stat(ssdPath(s.o.Dir, i)); err == nil {
			d.Capacity = st.Size()
		} else {
			d.Status, d.Reason = DriveMissing, "device file not found"
		}
		if i < len(health) {
			h := health[i]
			switch h.State {
			case ssd.StateOK:
				d.Status = DriveHealthy
				if f, ok := s.rebuildProgress(i); ok {
					d.Status, d.Reason = DriveRecovering, fmt.Sprintf("rebuilding from parity: %d%% done", int(f*100))
				} else if h.BadPages > 0 || h.ReadErrors > 0 || h.RepairedPages > 0 {
					d.Status = DriveDegraded
				}
			case ssd.StateFailed:
				d.Status, d.Reason = DriveFailed, h.Reason
			default:
				d.Status = DriveMissing
				if d.Reason == "" {
					d.Reason = "not one of this array's devices or unreadable"
				}
			}
		}
		out = append(out, d)
	}
	nv := Drive{Name: "nvram0", Kind: DriveNVRAM, Status: DriveUnknown}
	if st, err := s.o.FS.Stat(nvramPath(s.o.Dir)); err == nil {
		nv.Capacity = st.Size()
		if health != nil {
			nv.Status = DriveHealthy
		}
	} else {
		nv.Status, nv.Reason = DriveMissing, "device file not found"
	}
	out = append(out, nv)
	return out
}
