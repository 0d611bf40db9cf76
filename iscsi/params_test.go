package iscsi

import (
	"errors"
	"testing"
)

var testLimits = ourLimits{maxConnections: 1, maxRecvDSL: 65536, maxBurst: 1 << 20, firstBurst: 1 << 18,
	maxOutstandingR2T: 4, immediateData: true}

func TestNegotiate(t *testing.T) {
	for _, tc := range []struct {
		key, val, want string
		discovery      bool
		check          func(*negotiator) bool
	}{
		{"HeaderDigest", "CRC32C,None", "CRC32C", false, func(n *negotiator) bool { return n.conn.HeaderDigest }},
		{"HeaderDigest", "None,CRC32C", "None", false, func(n *negotiator) bool { return !n.conn.HeaderDigest }},
		{"DataDigest", "MD5,CRC32C", "CRC32C", false, func(n *negotiator) bool { return n.conn.DataDigest }},
		{"DataDigest", "MD5", "Reject", false, nil},
		{"MaxConnections", "8", "1", false, func(n *negotiator) bool { return n.sess.MaxConnections == 1 }},
		{"MaxConnections", "0", "Reject", false, nil},
		{"InitialR2T", "No", "No", false, func(n *negotiator) bool { return !n.sess.InitialR2T }},
		{"InitialR2T", "Yes", "Yes", false, func(n *negotiator) bool { return n.sess.InitialR2T }},
		{"InitialR2T", "Maybe", "Reject", false, nil},
		{"ImmediateData", "Yes", "Yes", false, func(n *negotiator) bool { return n.sess.ImmediateData }},
		{"ImmediateData", "No", "No", false, func(n *negotiator) bool { return !n.sess.ImmediateData }},
		{"MaxBurstLength", "16777215", "1048576", false, func(n *negotiator) bool { return n.sess.MaxBurstLength == 1<<20 }},
		{"MaxBurstLength", "4096", "4096", false, func(n *negotiator) bool { return n.sess.FirstBurstLength == 4096 }},
		{"MaxBurstLength", "100", "Reject", false, nil},
		{"FirstBurstLength", "1048576", "262144", false, nil},
		{"DefaultTime2Wait", "0", "2", false, nil},
		{"DefaultTime2Wait", "5", "5", false, nil},
		{"DefaultTime2Retain", "20", "0", false, nil},
		{"MaxOutstandingR2T", "16", "4", false, nil},
		{"DataPDUInOrder", "No", "Yes", false, nil},
		{"DataSequenceInOrder", "No", "Yes", false, nil},
		{"ErrorRecoveryLevel", "2", "0", false, nil},
		{"ErrorRecoveryLevel", "3", "Reject", false, nil},
		{"iSCSIProtocolLevel", "2", "1", false, nil},
		{"TaskReporting", "ResponseFence,RFC3720", "RFC3720", false, nil},
		{"OFMarker", "Yes", "No", false, nil},
		{"IFMarkInt", "1~65535", "Reject", false, nil},
		{"X-vendor.key", "1", "NotUnderstood", false, nil},
		{"Unheard", "1", "NotUnderstood", false, nil},
		{"InitialR2T", "No", "Irrelevant", true, nil},
		{"MaxBurstLength", "4096", "Irrelevant", true, nil},
		{"SendTargets", "All", "Irrelevant", false, nil},
	} {
		n := newNegotiator(testLimits, tc.discovery, true, defaultSessionParams())
		out, err := n.respond(nil, tc.key, tc.val)
		if err != nil {
			t.Errorf("%s=%s: %v", tc.key, tc.val, err)
			continue
		}
		kvs, _ := parseText(out)
		if len(kvs) != 1 || kvs[0].key != tc.key || kvs[0].value != tc.want {
			t.Errorf("%s=%s (discovery %v): answered %v, want %s", tc.key, tc.val, tc.discovery, kvs, tc.want)
		}
		if tc.check != nil && !tc.check(n) {
			t.Errorf("%s=%s: state %+v %+v", tc.key, tc.val, n.sess, n.conn)
		}
	}
}

func TestNegotiateDeclarativeAndDuplicates(t *testing.T) {
	n := newNegotiator(testLimits, false, true, defaultSessionParams())
	out, err := n.respond(nil, "MaxRecvDataSegmentLength", "8192")
	if err != nil || len(out) != 0 || n.conn.SendDSL != 8192 {
		t.Fatalf("declarative: %q %v %d", out, err, n.conn.SendDSL)
	}
	var ne *negError
	if _, err := n.respond(nil, "MaxRecvDataSegmentLength", "100"); !errors.As(err, &ne) {
		t.Fatalf("duplicate key: %v", err)
	}
	m := newNegotiator(testLimits, false, true, defaultSessionParams())
	if _, err := m.respond(nil, "MaxRecvDataSegmentLength", "100"); !errors.As(err, &ne) {
		t.Fatalf("MaxRecvDataSegmentLength below 512: %v", err)
	}
}

func TestNegotiateProposals(t *testing.T) {
	lim := testLimits
	lim.maxBurst = 65536
	lim.firstBurst = 8192
	lim.immediateData = false
	lim.alias = "a1"
	n := newNegotiator(lim, false, true, defaultSessionParams())
	out := n.proposals(nil)
	kvs, _ := parseText(out)
	m := kvMap(kvs)
	if m["MaxRecvDataSegmentLength"][0] != "65536" || m["MaxBurstLength"][0] != "65536" ||
		m["FirstBurstLength"][0] != "8192" || m["ImmediateData"][0] != "No" || m["TargetAlias"][0] != "a1" {
		t.Fatalf("proposals %s", kvString(kvs))
	}
	if !n.pending() {
		t.Fatal("proposals not pending")
	}
	if len(n.proposals(nil)) != 0 {
		t.Fatal("proposals sent twice")
	}
	for _, kv := range []textKV{{"MaxBurstLength", "32768"}, {"FirstBurstLength", "8192"}, {"ImmediateData", "No"}} {
		if _, err := n.respond(nil, kv.key, kv.value); err != nil {
			t.Fatal(err)
		}
	}
	n.finish()
	if n.pending() || n.sess.MaxBurstLength != 32768 || n.sess.FirstBurstLength != 8192 || n.sess.ImmediateData {
		t.Fatalf("after answers: %+v", n.sess)
	}
	// An answer above our proposal is a failure.
	n = newNegotiator(lim, false, true, defaultSessionParams())
	n.proposals(nil)
	if _, err := n.respond(nil, "MaxBurstLength", "1048576"); err == nil {
		t.Fatal("answer above the proposal accepted")
	}
}

// FuzzNegotiate offers arbitrary keys and values.
func FuzzNegotiate(f *testing.F) {
	f.Add("MaxBurstLength", "262144", false)
	f.Add("HeaderDigest", "CRC32C,None", true)
	f.Fuzz(func(t *testing.T, key, val string, discovery bool) {
		n := newNegotiator(testLimits, discovery, true, defaultSessionParams())
		n.proposals(nil)
		n.respond(nil, key, val)
		n.finish()
		if n.sess.FirstBurstLength > n.sess.MaxBurstLength || n.sess.MaxBurstLength > testLimits.maxBurst ||
			n.sess.MaxOutstandingR2T > testLimits.maxOutstandingR2T || n.conn.SendDSL < 512 {
			t.Fatalf("limits broken: %+v %+v", n.sess, n.conn)
		}
	})
}
