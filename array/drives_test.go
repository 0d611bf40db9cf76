package array

import (
	"testing"

	"vfa/datapath"
)

func TestDrives(t *testing.T) {
	fs := newMemFS(t)
	a := openMemArray(t, fs)
	ds := a.Drives()
	if len(ds) != 7 {
		t.Fatalf("%d drives", len(ds))
	}
	for _, d := range ds {
		if d.Status != datapath.DriveHealthy || d.Capacity == 0 {
			t.Errorf("%+v", d)
		}
	}
	if ds[6].Name != "nvram0" || ds[6].Kind != datapath.DriveNVRAM || ds[6].Capacity != 8<<20 {
		t.Errorf("nvram %+v", ds[6])
	}
	a.Close()

	// One SSD gone: degraded array, that drive missing.
	if err := fs.Remove("/a/ssd/ssd02.dev"); err != nil {
		t.Fatal(err)
	}
	a = openMemArray(t, fs)
	if d := a.Drives()[2]; d.Status != datapath.DriveMissing || d.Capacity != 0 {
		t.Fatalf("removed drive: %+v", d)
	}
	if d := a.Drives()[3]; d.Status != datapath.DriveHealthy {
		t.Fatalf("present drive: %+v", d)
	}
	a.Close()

	// Three gone: locked; present drives are unknown.
	for _, n := range []string{"/a/ssd/ssd03.dev", "/a/ssd/ssd04.dev"} {
		if err := fs.Remove(n); err != nil {
			t.Fatal(err)
		}
	}
	a = openMemArray(t, fs)
	if locked, _ := a.Locked(); !locked {
		t.Fatal("not locked with three SSDs missing")
	}
	ds = a.Drives()
	for i, want := range []datapath.DriveStatus{datapath.DriveUnknown, datapath.DriveUnknown, datapath.DriveMissing, datapath.DriveMissing, datapath.DriveMissing, datapath.DriveUnknown, datapath.DriveUnknown} {
		if ds[i].Status != want {
			t.Errorf("locked: %s is %s, want %s", ds[i].Name, ds[i].Status, want)
		}
	}
}
