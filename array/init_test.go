package array

import (
	"errors"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/datapath"
)

func TestInitRefusesBadGeometryAndLeavesNothing(t *testing.T) {
	for _, o := range []InitOptions{
		{SSDs: 3},
		{SSDs: 25},
		{SSDs: 8, SSDSize: 1024},
		{SSDs: 8, AUSize: 3 << 10},
		{SSDs: 8, NVRAMSize: 1 << 20},
		{SSDs: 8, SSDSize: 1 << 50},
		{SSDs: 8, Name: "-bad"},
	} {
		fs := vfs.NewMem()
		if _, err := Init(fs, "/x", o); err == nil {
			t.Errorf("%+v: init succeeded", o)
		}
		if _, err := fs.Stat("/x"); err == nil {
			t.Errorf("%+v: a failed init left /x behind", o)
		}
	}
	// In an existing directory, a failed init removes only what it made.
	fs := vfs.NewMem()
	if err := fs.MkdirAll("/y", 0o755); err != nil {
		t.Fatal(err)
	}
	f, _ := fs.Create("/y/keep", vfs.WriteCategoryUnspecified)
	f.Close()
	if _, err := Init(fs, "/y", InitOptions{SSDs: 8, AUSize: 3 << 10}); !errors.Is(err, datapath.ErrInvalid) {
		t.Fatalf("want an invalid-request error, got %v", err)
	}
	names, _ := fs.List("/y")
	if len(names) != 1 || names[0] != "keep" {
		t.Fatalf("after a failed init /y holds %v", names)
	}
}
