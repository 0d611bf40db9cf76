package array

import "vfa/datapath"

// Drive is one device file of the array (an SSD or the NVRAM) and its state.
type Drive = datapath.Drive

// Drives reports every SSD slot and the NVRAM, SSDs first by slot. While the
// array is locked a present device's status is datapath.DriveUnknown.
func (a *Array) Drives() []Drive { return a.store.Drives() }
