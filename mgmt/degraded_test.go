package mgmt

import (
	"strings"
	"testing"
	"time"
)

// A degraded array (one SSD missing) and a locked one (three missing), as
// puredrive, purealert and purearray show them; management keeps working.
func TestDegradedAndLocked(t *testing.T) {
	h := newHarness(t)
	h.ok("purevol create --size 1G v1")
	h.stop()
	if err := h.fs.Remove(h.dir + "/ssd/ssd02.dev"); err != nil {
		t.Fatal(err)
	}
	h.open()
	h.start()
	drives := parseCSV(t, h.ok("puredrive list --csv"))
	for i, d := range drives {
		want := "healthy"
		if d["Name"] == "ssd02" {
			want = "missing"
		}
		if d["Status"] != want {
			t.Errorf("drive %d %s: %s, want %s", i, d["Name"], d["Status"], want)
		}
	}
	alerts := parseCSV(t, h.ok("purealert list --csv"))
	found := false
	for _, al := range alerts {
		if al["Component"] == "ssd02" && al["Severity"] == "warning" {
			found = true
		}
	}
	if !found {
		t.Errorf("no alert for ssd02: %v", alerts)
	}
	if sp := parseCSV(t, h.ok("purearray list --space --csv")); sp[0]["Parity"] != "0.500" {
		t.Errorf("parity with one SSD missing: %s", sp[0]["Parity"])
	}
	if out := h.ok("purearray list --controller --csv --notitle"); out != "CT0,primary,vfa,0.1.0,ready\n" {
		t.Errorf("controller %q", out)
	}

	// Replacing the missing drive: refusals first, each changing nothing.
	for cmd, want := range map[string]string{
		"puredrive admit ssd01":       "Error on ssd01: Ssd01 is in use and healthy; only a missing or failed drive is replaced.\n",
		"puredrive admit nvram0":      "Error on nvram0: Drive nvram0 does not exist (SSDs are ssd00 to ssd05; the NVRAM is not replaced).\n",
		"puredrive admit ssd02 ssd02": "Error on ssd02: Named more than once.\n",
	} {
		if e := h.fail(cmd); e != want {
			t.Errorf("%s: %q, want %q", cmd, e, want)
		}
	}
	if out := h.ok("puredrive list --csv --notitle"); !strings.Contains(out, "ssd02,SSD,missing,") {
		t.Errorf("a refused admission changed the drives:\n%s", out)
	}
	if out := h.ok("puredrive admit"); !strings.HasPrefix(out, "Name   Status") || !strings.HasPrefix(strings.Split(out, "\n")[1], "ssd02  ") {
		t.Errorf("admit: %q", out)
	}
	deadline := time.Now().Add(time.Minute)
	for !strings.Contains(h.ok("puredrive list --csv --notitle"), "ssd02,SSD,healthy,") {
		if time.Now().After(deadline) {
			t.Fatalf("ssd02 not healthy a minute after admission:\n%s", h.ok("puredrive list"))
		}
		time.Sleep(20 * time.Millisecond)
	}
	if out := h.ok("purealert list --csv"); strings.Contains(out, ",ssd02,") {
		t.Errorf("alert still open after the replacement:\n%s", out)
	}
	if sp := parseCSV(t, h.ok("purearray list --space --csv")); sp[0]["Parity"] != "1.000" {
		t.Errorf("parity after the replacement: %s", sp[0]["Parity"])
	}
	if e := h.fail("puredrive admit"); e != "Error on puredrive admit: Every SSD is healthy; there is no drive to admit.\n" {
		t.Errorf("admit with nothing to admit: %q", e)
	}

	h.stop()
	for _, n := range []string{"ssd02", "ssd03", "ssd04"} {
		if err := h.fs.Remove(h.dir + "/ssd/" + n + ".dev"); err != nil {
			t.Fatal(err)
		}
	}
	h.open()
	h.start()
	out := h.ok("purearray list --controller --csv --notitle")
	if !strings.HasPrefix(out, "CT0,primary,vfa,0.1.0,locked: ") || !strings.Contains(out, "3 of 6 SSDs are missing") {
		t.Errorf("locked controller %q", out)
	}
	if e := h.fail("purearray list --space"); !strings.HasPrefix(e, "Error on vfa-test: ") || !strings.Contains(e, "locked") {
		t.Errorf("space while locked: %q", e)
	}
	if out := h.ok("puredrive list --csv --notitle"); !strings.Contains(out, "ssd00,SSD,unknown,") || !strings.Contains(out, "ssd03,SSD,missing,,") {
		t.Errorf("drives while locked:\n%s", out)
	}
	// Objects can still be managed and listed.
	h.ok("purehost create locked-host")
	if out := h.ok("purevol list --csv --notitle"); !strings.HasPrefix(out, "v1,1073741824,") {
		t.Errorf("volumes while locked %q", out)
	}
}
