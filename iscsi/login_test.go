package iscsi

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net"
	"slices"
	"testing"

	"vfa/array"
	"vfa/iscsi/iscsitest"
)

func TestLoginReadWrite(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  func(*iniConfig)
	}{
		{"defaults", nil},
		{"digests", func(c *iniConfig) { c.HeaderDigest, c.DataDigest = "CRC32C", "CRC32C" }},
		{"r2t-only", func(c *iniConfig) { c.ImmediateData, c.InitialR2T = "No", "Yes" }},
		{"small-pdus", func(c *iniConfig) { c.MaxRecvDSL = 512; c.FirstBurst = 4096; c.MaxBurst = 8192 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, func(c *Config) { c.MaxRecvDataSegmentLength = 8192 })
			var mods []func(*iniConfig)
			if tc.cfg != nil {
				mods = append(mods, tc.cfg)
			}
			in := h.login(iniA, mods...)
			if tc.name == "digests" && (!in.hdrDigest || !in.dataDigest) {
				t.Fatalf("digests not negotiated: %v", in.loginKeys)
			}
			in.clearUA(0)
			// Odd lengths exercise padding (and its digest).
			if r, err := in.nop(true, []byte("odd")); err != nil || string(r.data) != "odd" {
				t.Fatalf("NOP echo: %v %q", err, r.data)
			}
			for _, n := range []int{1, 8, 100, 2048} {
				data := pattern(n*512, byte(n))
				r, err := in.write10(0, 1000, data)
				expectGood(t, "write", r, err)
				r, err = in.read10(0, 1000, uint16(n))
				expectGood(t, "read", r, err)
				if !bytes.Equal(r.data, data) {
					t.Fatalf("%d blocks: read back differs", n)
				}
			}
		})
	}
}

func TestLoginNegotiationKeys(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.Alias = "array-1" })
	in := h.login(iniA, func(c *iniConfig) {
		c.ExtraKeys = []textKV{{"X-com.example.Foo", "1"}, {"IFMarker", "No"}, {"OFMarkInt", "1"}, {"Bogus", "x"}}
	})
	m := in.loginKeys
	want := map[string]string{
		"TargetPortalGroupTag":     "1",
		"MaxRecvDataSegmentLength": "262144",
		"TargetAlias":              "array-1",
		"HeaderDigest":             "None",
		"InitialR2T":               "No",
		"ImmediateData":            "Yes",
		"MaxBurstLength":           "1048576",
		"FirstBurstLength":         "262144",
		"MaxOutstandingR2T":        "4",
		"ErrorRecoveryLevel":       "0",
		"DefaultTime2Retain":       "0",
		"X-com.example.Foo":        "NotUnderstood",
		"Bogus":                    "NotUnderstood",
		"IFMarker":                 "No",
		"OFMarkInt":                "Reject",
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s=%q, want %q", k, m[k], v)
		}
	}
}

func TestLoginRefusals(t *testing.T) {
	h := newHarness(t, nil)
	h.fe.SetHost(iscsitest.Host{Name: "chap", Initiators: []string{"iqn.x:chap"},
		CHAP: array.CHAP{User: "user1", Secret: "secret-0123456", TargetUser: "array", TargetSecret: "tsecret-654321"}})
	for _, tc := range []struct {
		name   string
		cfg    iniConfig
		status uint16
	}{
		{"unknown target", iniConfig{Initiator: iniA, Target: "iqn.2010-06.com.purestorage:other"}, loginNotFound},
		{"chap wrong secret", iniConfig{Initiator: "iqn.x:chap", Target: testIQN, CHAPUser: "user1", CHAPSecret: "nope"}, loginAuthFailure},
		{"chap wrong user", iniConfig{Initiator: "iqn.x:chap", Target: testIQN, CHAPUser: "user2", CHAPSecret: "secret-0123456"}, loginAuthFailure},
		{"chap required, none offered", iniConfig{Initiator: "iqn.x:chap", Target: testIQN, AuthMethods: "None"}, loginAuthFailure},
		{"chap required, skip security", iniConfig{Initiator: "iqn.x:chap", Target: testIQN}, loginAuthFailure},
		{"mutual, reflected challenge", iniConfig{Initiator: "iqn.x:chap", Target: testIQN, CHAPUser: "user1",
			CHAPSecret: "secret-0123456", MutualUser: "array", MutualSecret: "tsecret-654321", ReflectCHAP: true}, loginAuthFailure},
		{"chap offered, no credentials", iniConfig{Initiator: iniA, Target: testIQN, AuthMethods: "CHAP"}, loginAuthFailure},
		{"session does not exist", iniConfig{Initiator: iniA, Target: testIQN, TSIH: 999}, loginNoSession},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := dialInitiator(t, h.addr, tc.cfg)
			var le *loginError
			if !errors.As(err, &le) || le.status != tc.status {
				t.Fatalf("login: %v, want status %04x", err, tc.status)
			}
		})
	}
	// The target keeps serving.
	in := h.login(iniA)
	in.clearUA(0)
	r, err := in.tur(0)
	expectGood(t, "TUR after refusals", r, err)
}

func TestCHAP(t *testing.T) {
	h := newHarness(t, nil)
	h.fe.SetHost(iscsitest.Host{Name: "chap", Initiators: []string{"iqn.x:chap"},
		CHAP: array.CHAP{User: "user1", Secret: "secret-0123456", TargetUser: "array", TargetSecret: "tsecret-654321"},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}}})
	for _, tc := range []struct {
		name string
		cfg  iniConfig
	}{
		{"one-way", iniConfig{CHAPUser: "user1", CHAPSecret: "secret-0123456"}},
		{"mutual", iniConfig{CHAPUser: "user1", CHAPSecret: "secret-0123456", MutualUser: "array", MutualSecret: "tsecret-654321"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Initiator, cfg.Target = "iqn.x:chap", testIQN
			in := mustLogin(t, h.addr, cfg)
			in.clearUA(0)
			r, err := in.tur(0)
			expectGood(t, "TUR", r, err)
		})
	}
	// Mutual CHAP with the wrong target secret on our side fails on the
	// initiator's check.
	_, err := dialInitiator(t, h.addr, iniConfig{Initiator: "iqn.x:chap", Target: testIQN,
		CHAPUser: "user1", CHAPSecret: "secret-0123456", MutualUser: "array", MutualSecret: "wrong"})
	if err == nil {
		t.Fatal("mutual CHAP accepted a target that does not know our secret")
	}
}

func TestDiscovery(t *testing.T) {
	h := newHarness(t, func(c *Config) {
		c.Listen = []string{"127.0.0.1:0", "127.0.0.1:0"}
		c.Portals = []string{"10.0.2.2:3260", "[fd00::1]:3260"}
	})
	in := mustLogin(t, h.addr, iniConfig{Initiator: iniNobody})
	for _, val := range []string{"All", testIQN} {
		kvs, err := in.text(textKV{"SendTargets", val})
		if err != nil {
			t.Fatal(err)
		}
		m := kvMap(kvs)
		if !slices.Equal(m["TargetName"], []string{testIQN}) ||
			!slices.Equal(m["TargetAddress"], []string{"10.0.2.2:3260,1", "[fd00::1]:3260,1"}) {
			t.Fatalf("SendTargets=%s: %s", val, kvString(kvs))
		}
	}
	kvs, err := in.text(textKV{"SendTargets", "iqn.other"})
	if err != nil || len(kvs) != 0 {
		t.Fatalf("SendTargets for another target: %v %s", err, kvString(kvs))
	}
	// SCSI commands are not for discovery sessions: the connection ends.
	if _, err := in.tur(0); err == nil {
		t.Fatal("SCSI command in a discovery session was accepted")
	}
}

// TestDiscoveryCHAP: discovery needs no CHAP even for a host with
// credentials (open-iscsi's default); an initiator that offers CHAP is
// authenticated, and a wrong secret still fails; the normal session of
// that host still requires CHAP.
func TestDiscoveryCHAP(t *testing.T) {
	h := newHarness(t, nil)
	const ini = "iqn.x:chap"
	h.fe.SetHost(iscsitest.Host{Name: "chap", Initiators: []string{ini},
		CHAP: array.CHAP{User: "user1", Secret: "secret-0123456", TargetUser: "array", TargetSecret: "tsecret-654321"},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}}})
	for _, tc := range []struct {
		name     string
		cfg      iniConfig
		status   uint16 // 0: logged in
		wantAuth string // AuthMethod the target chose
	}{
		{"discovery, no security stage", iniConfig{}, 0, ""},
		{"discovery, AuthMethod None", iniConfig{AuthMethods: "None"}, 0, "None"},
		{"discovery, CHAP", iniConfig{CHAPUser: "user1", CHAPSecret: "secret-0123456"}, 0, "CHAP"},
		{"discovery, CHAP only", iniConfig{AuthMethods: "CHAP", CHAPUser: "user1", CHAPSecret: "secret-0123456"}, 0, "CHAP"},
		{"discovery, mutual CHAP", iniConfig{CHAPUser: "user1", CHAPSecret: "secret-0123456",
			MutualUser: "array", MutualSecret: "tsecret-654321"}, 0, "CHAP"},
		{"discovery, wrong secret", iniConfig{CHAPUser: "user1", CHAPSecret: "nope"}, loginAuthFailure, ""},
		{"discovery, wrong user", iniConfig{CHAPUser: "user2", CHAPSecret: "secret-0123456"}, loginAuthFailure, ""},
		{"normal, no security stage", iniConfig{Target: testIQN}, loginAuthFailure, ""},
		{"normal, AuthMethod None", iniConfig{Target: testIQN, AuthMethods: "None"}, loginAuthFailure, ""},
		{"normal, CHAP", iniConfig{Target: testIQN, CHAPUser: "user1", CHAPSecret: "secret-0123456"}, 0, "CHAP"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tc.cfg
			cfg.Initiator = ini
			in, err := dialInitiator(t, h.addr, cfg)
			if tc.status != 0 {
				var le *loginError
				if !errors.As(err, &le) || le.status != tc.status {
					t.Fatalf("login: %v, want status %04x", err, tc.status)
				}
				return
			}
			if err != nil {
				t.Fatalf("login: %v", err)
			}
			defer in.close()
			if got := in.loginKeys["AuthMethod"]; got != tc.wantAuth {
				t.Fatalf("AuthMethod %q, want %q", got, tc.wantAuth)
			}
			if cfg.Target != "" {
				return
			}
			kvs, err := in.text(textKV{"SendTargets", "All"})
			if err != nil || !slices.Equal(kvMap(kvs)["TargetName"], []string{testIQN}) {
				t.Fatalf("SendTargets: %v %s", err, kvString(kvs))
			}
		})
	}
}

func TestDiscoveryDefaultPortals(t *testing.T) {
	h := newHarness(t, nil)
	in := mustLogin(t, h.addr, iniConfig{Initiator: iniA})
	kvs, err := in.text(textKV{"SendTargets", "All"})
	if err != nil {
		t.Fatal(err)
	}
	if m := kvMap(kvs); !slices.Equal(m["TargetAddress"], []string{h.addr + ",1"}) {
		t.Fatalf("default portal: %s", kvString(kvs))
	}
}

func TestLUNMasking(t *testing.T) {
	h := newHarness(t, nil)
	// An initiator in no host logs in, sees no LUNs, and LUN 0 answers
	// INQUIRY with peripheral qualifier 011b.
	nobody := h.login(iniNobody)
	luns, err := nobody.reportLUNs()
	if err != nil || len(luns) != 0 {
		t.Fatalf("no-host REPORT LUNS: %v %v", luns, err)
	}
	inq := []byte{opInquiry, 0, 0, 0, 96, 0}
	r, err := nobody.simple(0, inq, 96)
	expectGood(t, "INQUIRY", r, err)
	if r.data[0] != 0x7f {
		t.Fatalf("no-host INQUIRY byte 0 = %#x, want 0x7f", r.data[0])
	}
	r, err = nobody.read10(0, 0, 1)
	expectSense(t, "no-host READ", r, err, scLUNotSupported)

	// Two hosts see their own LUNs only.
	a := h.login(iniA)
	if luns, _ := a.reportLUNs(); !slices.Equal(luns, []uint64{0}) {
		t.Fatalf("host a LUNs %v", luns)
	}
	b := h.login(iniB)
	if luns, _ := b.reportLUNs(); !slices.Equal(luns, []uint64{3}) {
		t.Fatalf("host b LUNs %v", luns)
	}
	b.clearUA(3)
	r, err = b.read10(0, 0, 1)
	expectSense(t, "host b at LUN 0", r, err, scLUNotSupported)
	r, err = b.read10(3, 0, 1)
	expectGood(t, "host b at LUN 3", r, err)

	// A change of the LUN set raises REPORTED LUNS DATA HAS CHANGED.
	a.clearUA(0)
	h.fe.SetHost(iscsitest.Host{Name: "a", Initiators: []string{iniA, iniA2},
		LUNs: []array.LUN{{Number: 0, Device: h.dev0}, {Number: 1, Device: h.dev1}}})
	waitFor(t, "REPORTED LUNS DATA HAS CHANGED", func() bool {
		r, err := a.tur(0)
		return err == nil && r.status == statusCheckCondition && r.code() == uaReportedLUNsChanged
	})
	if luns, _ := a.reportLUNs(); !slices.Equal(luns, []uint64{0, 1}) {
		t.Fatalf("host a LUNs after change %v", luns)
	}
	// Capacity change.
	a.clearUA(0)
	h.dev0.Resize(h.dev0.Sectors() * 2)
	h.fe.Notify()
	waitFor(t, "CAPACITY DATA HAS CHANGED", func() bool {
		r, err := a.tur(0)
		return err == nil && r.status == statusCheckCondition && r.code() == uaCapacityChanged
	})
	rc := make([]byte, 16)
	rc[0], rc[1], rc[13] = opServiceIn16, saReadCapacity16, 32
	r, err = a.simple(0, rc, 32)
	expectGood(t, "READ CAPACITY 16", r, err)
	if got := binary.BigEndian.Uint64(r.data[0:8]) + 1; got != h.dev0.Sectors() {
		t.Fatalf("capacity %d, want %d", got, h.dev0.Sectors())
	}
}

func TestLimits(t *testing.T) {
	h := newHarness(t, func(c *Config) { c.MaxSessions = 1; c.MaxConnections = 2 })
	a := h.login(iniA)
	// A second session is one too many: out of resources.
	var le *loginError
	if _, err := dialInitiator(t, h.addr, iniConfig{Initiator: iniB, Target: testIQN}); !errors.As(err, &le) || le.status != loginOutOfResources {
		t.Fatalf("second session: %v", err)
	}
	// Over the connection limit (a plus one logging in): refused the same way.
	conns := func(n int) func() bool {
		return func() bool {
			h.tgt.mu.Lock()
			defer h.tgt.mu.Unlock()
			return len(h.tgt.conns) == n
		}
	}
	waitFor(t, "refused connection gone", conns(1))
	hold, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer hold.Close()
	waitFor(t, "connection accepted", conns(2))
	if _, err := dialInitiator(t, h.addr, iniConfig{Initiator: iniB, Target: testIQN}); !errors.As(err, &le) || le.status != loginOutOfResources {
		t.Fatalf("connection over the limit: %v", err)
	}
	a.clearUA(0)
	r, err := a.tur(0)
	expectGood(t, "TUR within limits", r, err)
}
