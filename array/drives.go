package array

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"vfa/datapath"
)

// Drive is one device file of the array (an SSD or the NVRAM) and its state.
type Drive = datapath.Drive

// Drives reports every SSD slot and the NVRAM, SSDs first by slot. While the
// array is locked a present device's status is datapath.DriveUnknown.
func (a *Array) Drives() []Drive { return a.store.Drives() }

// AdmitDrives replaces missing or failed SSDs (named "ssd03"; all of them
// when names is empty) with new device files and starts rebuilding onto
// them from parity (datapath/rebuild.go). It returns the names admitted.
// An unknown or healthy drive is an error that changes nothing.
func (a *Array) AdmitDrives(names []string) ([]string, error) {
	var slots []int
	for _, n := range names {
		slot, ok := ssdSlot(n, a.cfg.SSDs)
		if !ok {
			return nil, fmt.Errorf("%w: drive %s %s", ErrNotFound, n, "does not exist (SSDs are ssd00 to "+datapath.SSDName(a.cfg.SSDs-1)+"; the NVRAM is not replaced)")
		}
		slots = append(slots, slot)
	}
	got, err := a.store.AdmitDrives(slots)
	out := make([]string, len(got))
	for i, s := range got {
		out[i] = datapath.SSDName(s)
	}
	if len(got) > 0 {
		a.changes.notify()
	}
	if errors.Is(err, datapath.ErrInvalid) {
		// One sentinel, not two: "invalid: ssd01 is in use and healthy".
		err = fmt.Errorf("%w: %s", ErrInvalid, strings.ReplaceAll(err.Error(), datapath.ErrInvalid.Error()+": ", ""))
	}
	return out, mapErr(err)
}

// ssdSlot parses "ssdNN".
func ssdSlot(name string, n int) (int, bool) {
	l := strings.ToLower(name)
	if !strings.HasPrefix(l, "ssd") || len(l) != 5 {
		return 0, false
	}
	v, err := strconv.Atoi(l[3:])
	if err != nil || v < 0 || v >= n {
		return 0, false
	}
	return v, true
}
