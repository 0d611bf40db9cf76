package iscsi

// Real peers: libiscsi's iscsi-ls, iscsi-inq and iscsi-readcapacity16, and
// QEMU's qemu-io and qemu-img over iscsi://. Each test is skipped when its
// tool is missing, and fails then when CI=true.

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"testing"
	"time"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

const qemuIQN = "iqn.2008-11.org.linux-kvm:vfa-test"

func run(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func mustMatch(t *testing.T, what, out string, patterns ...string) {
	t.Helper()
	for _, p := range patterns {
		if !regexp.MustCompile(p).MatchString(out) {
			t.Errorf("%s: no match for %q in:\n%s", what, p, out)
		}
	}
}

func TestLibiscsiTools(t *testing.T) {
	ls := needTool(t, "iscsi-ls")
	inq := needTool(t, "iscsi-inq")
	rc16 := needTool(t, "iscsi-readcapacity16")
	h := newHarness(t, func(c *Config) { c.Portals = []string{"10.0.2.2:3260"} })
	url := fmt.Sprintf("iscsi://%s/%s/0", h.addr, testIQN)

	// Discovery answers with the configured portal, not the bind address.
	out := run(t, 20*time.Second, ls, "-i", iniA, "iscsi://"+h.addr)
	mustMatch(t, "iscsi-ls", out, `Target:`+regexp.QuoteMeta(testIQN)+` Portal:10\.0\.2\.2:3260,1`)

	out = run(t, 20*time.Second, inq, "-i", iniA, url)
	mustMatch(t, "standard INQUIRY", out,
		`Peripheral Device Type:DIRECT_ACCESS`, `Vendor:PURE\s*\n`, `Product:FlashArray\s*\n`,
		`Revision:8888`, `HiSup:1`, `TPGS:1`, `CmdQue:1`, `SPC-4`, `SBC-3`, `Version:6`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "0", url)
	mustMatch(t, "VPD 00", out, `Page:0x80`, `Page:0x83`, `Page:0xb0`, `Page:0xb1`, `Page:0xb2`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "128", url)
	mustMatch(t, "VPD 80", out, `Unit Serial Number:\[`+serial0+`\]`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "131", url)
	mustMatch(t, "VPD 83", out, `Designator Type:\(3\) NAA`, `Designator Type:\(5\) TARGET_PORT_GROUP`,
		`Designator Type:\(4\) RELATIVE_TARGET_PORT`,
		`Designator:\[`+regexp.QuoteMeta(testIQN)+`,t,0x0001\]`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "176", url)
	mustMatch(t, "VPD B0", out, `maximum transfer length:8192`, `optimal transfer length granularity:8`,
		`maximum unmap lba count:1048576`, `optimal unmap granularity:8`, `maximum compare and write length:255`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "177", url)
	mustMatch(t, "VPD B1", out, `Medium Rotation Rate:1`)
	out = run(t, 20*time.Second, inq, "-i", iniA, "-e", "1", "-c", "178", url)
	mustMatch(t, "VPD B2", out, `lbpu:1`, `lbpws:1`, `lbpws10:1`, `lbprz:1`, `provisioning type:2`)

	out = run(t, 20*time.Second, rc16, "-i", iniA, url)
	mustMatch(t, "READ CAPACITY 16", out,
		fmt.Sprintf(`RETURNED LOGICAL BLOCK ADDRESS:%d\b`, testMiB<<11-1),
		`LOGICAL BLOCK LENGTH IN BYTES:512`, `LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:3`,
		`LBPME:1 LBPRZ:1`, fmt.Sprintf(`Total size:%d\b`, testMiB<<20))

	// The NAA designator is 6 + Pure's OUI 24a937 + the serial.
	id := naaID(serial0)
	if got := fmt.Sprintf("%x", id); got != "624a9370"+strings.ToLower(serial0) {
		t.Fatalf("NAA %s", got)
	}
}

// qemuOpts is a --image-opts string for the harness LUN.
func qemuOpts(h *harness, lun int) string {
	return fmt.Sprintf("driver=iscsi,transport=tcp,portal=%s,target=%s,lun=%d,initiator-name=%s",
		h.addr, testIQN, lun, qemuIQN)
}

func qemuHarness(t *testing.T) *harness {
	h := newHarness(t, nil)
	h.fe.SetHost(iscsitest.Host{Name: "qemu", Initiators: []string{qemuIQN},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}}})
	return h
}

func TestQEMU(t *testing.T) {
	qio := needTool(t, "qemu-io")
	qimg := needTool(t, "qemu-img")
	h := qemuHarness(t)
	opts := qemuOpts(h, 0)
	size := testMiB << 20

	out := run(t, 30*time.Second, qimg, "info", "--image-opts", opts)
	mustMatch(t, "qemu-img info", out, fmt.Sprintf(`virtual size: .*\(%d bytes\)`, size))

	for _, tc := range []struct{ name, off, len string }{
		{"1M at 0", "0", "1M"},
		{"512 B", "512", "512"},
		{"4k unaligned", "3584", "4k"},
		{"1M at the end", fmt.Sprint(size - 1<<20), "1M"},
		{"last sector", fmt.Sprint(size - 512), "512"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := run(t, 30*time.Second, qio, "--image-opts",
				"-c", "write -P 0xab "+tc.off+" "+tc.len,
				"-c", "read -P 0xab "+tc.off+" "+tc.len,
				"-c", "write -z "+tc.off+" "+tc.len,
				"-c", "read -P 0 "+tc.off+" "+tc.len, opts)
			if strings.Contains(out, "failed") || strings.Contains(out, "error") {
				t.Fatalf("qemu-io:\n%s", out)
			}
			mustMatch(t, "qemu-io", out, `wrote \d+/\d+ bytes`, `read \d+/\d+ bytes`)
		})
	}
	// Beyond the end is refused.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bad, _ := exec.CommandContext(ctx, qio, "--image-opts", "-c",
		fmt.Sprintf("read %d 4k", size), opts).CombinedOutput()
	if !strings.Contains(string(bad), "rror") && !strings.Contains(string(bad), "failed") {
		t.Fatalf("read beyond the end succeeded:\n%s", bad)
	}

	// Many commands in flight (QD 32), verified afterwards.
	out = run(t, 60*time.Second, qimg, "bench", "--image-opts", "-w", "-c", "4000", "-d", "32",
		"-s", "4k", "-S", "8k", "--pattern=0x5a", opts)
	mustMatch(t, "qemu-img bench", out, `Run completed`)
	out = run(t, 30*time.Second, qio, "--image-opts", "-c", "read -P 0x5a 0 4k", "-c", "read -P 0x5a 8k 4k",
		"-c", "read -P 0 4k 4k", opts)
	if strings.Contains(out, "failed") {
		t.Fatalf("after bench:\n%s", out)
	}
	// qemu-img convert of the whole LUN to a file and back.
	img := t.TempDir() + "/lun.raw"
	run(t, 60*time.Second, qimg, "convert", "-O", "raw", "--image-opts", opts, img)
	run(t, 60*time.Second, qimg, "compare", "--image-opts", opts, "driver=raw,file.filename="+img)
}

// TestQEMUIdle keeps a qemu-io session idle for 20 s: libiscsi sends a
// non-immediate NOP-Out every 5 s (what stalled gotgt) and the target pings
// idle connections; I/O must keep working afterwards.
func TestQEMUIdle(t *testing.T) {
	qio := needTool(t, "qemu-io")
	h := qemuHarness(t)
	out := run(t, 60*time.Second, qio, "--image-opts",
		"-c", "write -P 0x11 0 64k", "-c", "sleep 20000", "-c", "read -P 0x11 0 64k",
		"-c", "write -P 0x22 64k 64k", "-c", "read -P 0x22 64k 64k", qemuOpts(h, 0))
	if strings.Contains(out, "failed") || strings.Contains(out, "rror") {
		t.Fatalf("qemu-io after 20 s idle:\n%s", out)
	}
	mustMatch(t, "qemu-io idle", out, `read 65536/65536 bytes at offset 0`, `read 65536/65536 bytes at offset 65536`)
}

func TestLibiscsiCHAP(t *testing.T) {
	inq := needTool(t, "iscsi-inq")
	h := newHarness(t, nil)
	const ini = "iqn.1994-05.com.example:chap-host"
	h.fe.SetHost(iscsitest.Host{Name: "chap", Initiators: []string{ini},
		CHAP: array.CHAP{User: "user1", Secret: "secret-0123456", TargetUser: "array1", TargetSecret: "tsecret-654321"},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}}})
	url := fmt.Sprintf("iscsi://%s/%s/0", h.addr, testIQN)
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
	}{
		{"one-way", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=secret-0123456"}, true},
		{"mutual", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=secret-0123456",
			"LIBISCSI_CHAP_TARGET_USERNAME=array1", "LIBISCSI_CHAP_TARGET_PASSWORD=tsecret-654321"}, true},
		{"wrong secret", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=wrong-secret1"}, false},
		{"wrong target secret", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=secret-0123456",
			"LIBISCSI_CHAP_TARGET_USERNAME=array1", "LIBISCSI_CHAP_TARGET_PASSWORD=not-the-one"}, false},
		{"no CHAP", nil, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, inq, "-i", ini, url)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if tc.ok && (err != nil || !strings.Contains(string(out), "Vendor:PURE")) {
				t.Fatalf("login failed: %v\n%s", err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("login succeeded:\n%s", out)
			}
		})
	}
	// SendTargets discovery (iscsi-ls) needs no CHAP, as open-iscsi's
	// default discovery does not authenticate; a wrong secret still fails.
	ls := needTool(t, "iscsi-ls")
	for _, tc := range []struct {
		name string
		env  []string
		ok   bool
	}{
		{"discovery without CHAP", nil, true},
		{"discovery with CHAP", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=secret-0123456"}, true},
		{"discovery, wrong secret", []string{"LIBISCSI_CHAP_USERNAME=user1", "LIBISCSI_CHAP_PASSWORD=wrong-secret1"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, ls, "-i", ini, "iscsi://"+h.addr)
			cmd.Env = append(os.Environ(), tc.env...)
			out, err := cmd.CombinedOutput()
			if tc.ok && (err != nil || !strings.Contains(string(out), "Target:"+testIQN)) {
				t.Fatalf("discovery failed: %v\n%s", err, out)
			}
			if !tc.ok && err == nil {
				t.Fatalf("discovery succeeded:\n%s", out)
			}
		})
	}
}
