package mgmt

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ovh/kmip-go"

	"vfa/keys/kmiptest"
)

// The Rapid Data Locking drill over SSH against an in-process KMIP server:
// certificate, CSR signed by the KMS CA, import, KMIP server, test, enable,
// restart, then a revoked key and a KMS that is down, and the crypto-erase.
// (scripts/rdl-drill.sh runs the same against PyKMIP and `vfa run`.)

func (h *harness) okIn(cmd, stdin string) string {
	h.t.Helper()
	out, errs, code := h.run(cmd, stdin)
	if code != 0 || errs != "" {
		h.t.Fatalf("%s: exit %d: %s", cmd, code, errs)
	}
	return out
}

func wantIn(t *testing.T, what, got string, want ...string) {
	t.Helper()
	for _, w := range want {
		if !strings.Contains(got, w) {
			t.Fatalf("%s: %q lacks %q", what, got, w)
		}
	}
}

func TestTokenDrillSSH(t *testing.T) {
	srv, err := kmiptest.New(kmiptest.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	h := newHarness(t)
	h.ok("purecert create --self-signed --common-name purefa --organization Lab --key-algorithm ec kmip-cert")
	csr := h.ok("purecert construct --certificate-signing-request kmip-cert")
	signed, err := srv.SignCSR([]byte(csr), time.Now().Add(-time.Hour), time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	wantIn(t, "import", h.okIn("purecert setattr --certificate kmip-cert", string(signed)), "imported", "kmiptest CA")
	h.okIn("purekmip create --uri "+srv.Addr()+" --certificate kmip-cert --ca-certificate kms1", string(srv.CAPEM()))
	wantIn(t, "purekmip test", h.ok("purekmip test kms1"), "OK", "1.4", srv.Addr())
	h.ok("purevol create --size 10M v1")

	out := h.ok("purearray enable security-token --kmip kms1")
	wantIn(t, "enable", out, "Enabled  Type  Signature", "True     kmip", "kms1")
	ks := srv.Keys()
	if len(ks) != 1 || ks[0].State != kmip.StateActive {
		t.Fatalf("server keys %+v", ks)
	}
	uid := ks[0].UID
	wantIn(t, "list", h.ok("purearray list --security-token"), "True     enabled  kmip")
	wantIn(t, "test", h.ok("purearray test security-token"), "kmip  kms1    OK")
	wantIn(t, "enable twice", h.fail("purearray enable security-token --kmip kms1"), "already enabled")
	wantIn(t, "delete server", h.fail("purekmip delete kms1"), "used by the security token")
	wantIn(t, "delete cert", h.fail("purecert delete kmip-cert"), "in use by KMIP server kms1")
	wantIn(t, "disable without the flag", h.fail("purearray disable security-token"),
		"crypto-erases the array", "--i-understand-this-erases-all-data")

	h.restart()
	wantIn(t, "after restart", h.ok("purearray list --controller"), "ready")
	wantIn(t, "after restart", h.ok("purevol list"), "v1")

	// Revoked key: locked at boot with the reason, unlocks on request once
	// the key is active again.
	srv.Revoke(uid, kmip.RevocationReasonCodeKeyCompromise)
	h.restart()
	wantIn(t, "locked", h.ok("purearray list --security-token"), "locked: security token: key revoked")
	wantIn(t, "controller", h.ok("purearray list --controller"), "locked: security token: key revoked")
	wantIn(t, "alert", h.ok("purealert list"), "array.locked", "key revoked")
	wantIn(t, "test", h.ok("purearray test security-token"), "Fail", "key revoked")
	wantIn(t, "unlock", h.fail("purearray unlock"), "still locked", "key revoked")
	srv.Activate(uid)
	wantIn(t, "unlock", h.ok("purearray unlock"), "unlocked")
	wantIn(t, "list", h.ok("purearray list --security-token"), "True     enabled")
	if al := h.ok("purealert list"); al != "" {
		t.Fatalf("alerts left: %s", al)
	}

	// The KMS goes down while running: test says so, the periodic check
	// degrades the token, data stays available.
	srv.Stop()
	wantIn(t, "purekmip test", h.ok("purekmip test kms1"), "Fail", "unreachable", "connection refused")
	wantIn(t, "token test", h.ok("purearray test security-token"), "Fail", "Cannot connect and authenticate with the server")
	h.a.CheckToken(context.Background())
	wantIn(t, "degraded", h.ok("purearray list --security-token"), "degraded: Cannot connect")
	wantIn(t, "alert", h.ok("purealert list"), "security-token.degraded")
	h.ok("purevol list")
	srv.Start()
	h.a.CheckToken(context.Background())
	wantIn(t, "healthy", h.ok("purearray list --security-token"), "True     enabled")

	// Crypto-erase.
	out = h.ok("purearray disable security-token --i-understand-this-erases-all-data")
	wantIn(t, "disable", out, "False    disabled")
	if v := h.ok("purevol list"); v != "" {
		t.Fatalf("volumes after the erase: %s", v)
	}
	wantIn(t, "audit", h.ok("puremessage list --audit"), "purearray disable security-token --i-understand-this-erases-all-data ")
	h.ok("purevol create --size 10M v2")
	h.restart()
	wantIn(t, "after erase and restart", h.ok("purearray list --controller"), "ready")
	wantIn(t, "after erase and restart", h.ok("purevol list"), "v2")
}

func TestTokenFileSSH(t *testing.T) {
	h := newHarness(t)
	if err := h.fs.MkdirAll("/usb", 0o755); err != nil {
		t.Fatal(err)
	}
	wantIn(t, "enable", h.ok("purearray enable security-token --file /usb/rdl.token"), "True     file", "/usb/rdl.token")
	h.ok("purevol create --size 10M v1")
	token, err := h.fs.Open("/usb/rdl.token")
	if err != nil {
		t.Fatal(err)
	}
	token.Close()
	if err := h.fs.Rename("/usb/rdl.token", "/usb/elsewhere"); err != nil {
		t.Fatal(err)
	}
	h.restart()
	wantIn(t, "locked", h.ok("purearray list --security-token"), "locked: security token", "token file /usb/rdl.token is missing")
	wantIn(t, "still locked", h.fail("purearray unlock"), "missing")
	if err := h.fs.Rename("/usb/elsewhere", "/usb/rdl.token"); err != nil {
		t.Fatal(err)
	}
	wantIn(t, "unlock", h.ok("purearray unlock"), "unlocked")
	wantIn(t, "volumes", h.ok("purevol list"), "v1")
}
