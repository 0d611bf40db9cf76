package array

import "vfa/datapath"

// SpaceReport is the array's space report (see Space); its fields and their
// definitions are in datapath/space.go.
type SpaceReport = datapath.Space

// VolumeSpace is one volume's share of the space report.
type VolumeSpace = datapath.VolumeSpace
