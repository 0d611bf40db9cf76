package datapath

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"
)

// Drive replacement: a new device takes a missing or failed one's slot, the
// array rebuilds onto it, and afterwards it carries its share of everything:
// with two other devices gone the array still unlocks and reads back exactly.

func waitRebuilt(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for s.Rebuilding() {
		if time.Now().After(deadline) {
			t.Fatal("rebuild did not finish in a minute")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func driveStatus(s *Store, slot int) DriveStatus { return s.Drives()[slot].Status }

// lose2 removes two devices other than keep and checks that the array
// unlocks and reads back data: the replaced device holds its key share, its
// system key share and its part of every stripe.
func lose2(t *testing.T, o Options, data []byte, keep int) {
	t.Helper()
	n := 0
	for slot := 0; slot < o.SSDs && n < 2; slot++ {
		if slot == keep {
			continue
		}
		if err := os.Remove(ssdPath(o.Dir, slot)); err != nil {
			t.Fatal(err)
		}
		n++
	}
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatalf("with two devices gone besides the rebuilt one: %v", err)
	}
	defer s.Close()
	checkData(t, s, data, "read with two other devices gone")
	if _, err := s.SystemKey("test"); err != nil {
		t.Fatalf("system key with two other devices gone: %v", err)
	}
}

func TestAdmitMissingDrive(t *testing.T) {
	o, data := faultArray(t)
	if err := os.Remove(ssdPath(o.Dir, 3)); err != nil {
		t.Fatal(err)
	}
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { s.Close() }()
	if st := driveStatus(s, 3); st != DriveMissing {
		t.Fatalf("ssd03 %s before admission", st)
	}
	// Nothing changes on a refused admission.
	if _, err := s.AdmitDrives([]int{2}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("admitting a healthy drive: %v", err)
	}
	if _, err := s.AdmitDrives([]int{8}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("admitting slot 8 of 8: %v", err)
	}
	if _, err := os.Stat(ssdPath(o.Dir, 3)); !os.IsNotExist(err) {
		t.Fatalf("a refused admission created a device: %v", err)
	}
	gen := s.KeyGeneration()
	got, err := s.AdmitDrives(nil)
	if err != nil || len(got) != 1 || got[0] != 3 {
		t.Fatalf("admit: %v %v", got, err)
	}
	if s.KeyGeneration() != gen+1 {
		t.Fatalf("key generation %d after admission, want %d", s.KeyGeneration(), gen+1)
	}
	// I/O goes on while it rebuilds.
	v, _ := s.Lookup("data")
	more := make([]byte, 256<<10)
	fill(more, 17)
	if err := v.Write(context.Background(), more, 64); err != nil {
		t.Fatal(err)
	}
	copy(data[64*SectorSize:], more)
	waitRebuilt(t, s)
	if st := driveStatus(s, 3); st != DriveHealthy {
		t.Fatalf("ssd03 %s after the rebuild (%s)", st, s.Drives()[3].Reason)
	}
	if !log.has("device.rebuilt", "ssd03") || !log.has("device.admitted", "ssd03") {
		t.Fatal("no device.admitted / device.rebuilt events")
	}
	if _, err := s.AdmitDrives(nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("admitting with every drive healthy: %v", err)
	}
	// No read before lose2: reads repair what they rebuild, and the point is
	// that the rebuild alone filled the new device.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if slots, err := reopenRebuilding(t, o); err != nil || len(slots) != 0 {
		t.Fatalf("rebuild state after it finished: %v %v", slots, err)
	}
	lose2(t, o, data, 3)
}

// reopenRebuilding reads the persisted rebuild state of a closed array.
func reopenRebuilding(t *testing.T, o Options) ([]int, error) {
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	return s.rebuildingSlots()
}

// A device that fails while the array runs is replaced in place; its file
// is kept aside. A rebuild cut short by a shutdown resumes at the next boot.
func TestAdmitFailedDriveAndResume(t *testing.T) {
	o, data := faultArray(t)
	var log eventLog
	s, err := openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.set.Fail(5, "drill"); err != nil {
		t.Fatal(err)
	}
	if st := driveStatus(s, 5); st != DriveFailed {
		t.Fatalf("ssd05 %s after failing it", st)
	}
	if _, err := s.AdmitDrives([]int{5}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ssdPath(o.Dir, 5) + ".failed"); err != nil {
		t.Fatalf("the failed device file was not kept aside: %v", err)
	}
	// Shut down at once: the rebuild may not have finished; the state says
	// so until one has.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = openWith(t, o, &log)
	if err != nil {
		t.Fatal(err)
	}
	waitRebuilt(t, s)
	if st := driveStatus(s, 5); st != DriveHealthy {
		t.Fatalf("ssd05 %s after the resumed rebuild", st)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if slots, err := reopenRebuilding(t, o); err != nil || len(slots) != 0 {
		t.Fatalf("rebuild state after it finished: %v %v", slots, err)
	}
	lose2(t, o, data, 5)
}

func TestAdmitWhileLocked(t *testing.T) {
	o, _ := faultArray(t)
	s, err := Open(o)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.AdmitDrives(nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("admit while locked: %v", err)
	}
}
