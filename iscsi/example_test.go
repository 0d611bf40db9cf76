package iscsi_test

import (
	"context"
	"log/slog"

	"vfa/array"
	"vfa/iscsi"
	"vfa/iscsi/iscsitest"
)

// A target serving one volume to one host, reachable from QEMU guests as
// 10.0.2.2:3260.
func Example() {
	fe := iscsitest.NewFrontend("iqn.2010-06.com.purestorage:flasharray.1234")
	vol := iscsitest.NewMemDevice("0123456789ABCDEF01234567", "vol1", 1<<21)
	fe.SetHost(iscsitest.Host{
		Name:       "host1",
		Initiators: []string{"iqn.1994-05.com.redhat:host1"},
		CHAP:       array.CHAP{User: "host1", Secret: "a-12-char-secret"},
		LUNs:       []array.LUN{{Number: 1, Device: vol}},
	})
	t, err := iscsi.New(iscsi.Config{
		Frontend: fe,
		Listen:   []string{"127.0.0.1:3260"},
		Portals:  []string{"10.0.2.2:3260"},
		Logger:   slog.Default(),
	})
	if err != nil {
		return
	}
	defer t.Close()
	go t.Serve(context.Background())
	// ... the array runs; Close aborts outstanding commands and waits.
}
