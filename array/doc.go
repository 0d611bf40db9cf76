// Package array is the array as a whole: its lifecycle (init, boot, unlock,
// shutdown), its objects (volumes, hosts, host groups, connections), its
// events and alerts. It is the one API that the front ends (iscsi), the
// management shell (mgmt) and phone home use; none of them reaches into
// datapath.
package array
