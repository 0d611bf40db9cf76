package iscsi

// Operational parameter negotiation (RFC 7143 §6.2, §13). The target is the
// responder for every key the initiator offers and the originator of the
// few keys it must declare (MaxRecvDataSegmentLength, TargetAlias) or
// propose (limits lower than the RFC defaults). Result functions:
//
//	HeaderDigest, DataDigest    list: first offered value we support
//	MaxConnections              min
//	InitialR2T                  OR
//	ImmediateData               AND
//	MaxRecvDataSegmentLength    declarative, per direction
//	MaxBurstLength              min
//	FirstBurstLength            min (and never above MaxBurstLength)
//	DefaultTime2Wait            max
//	DefaultTime2Retain          min
//	MaxOutstandingR2T           min
//	DataPDUInOrder              OR
//	DataSequenceInOrder         OR
//	ErrorRecoveryLevel          min (we support 0 only)
//	iSCSIProtocolLevel          min (we implement level 1, RFC 7143)
//
// Keys the RFC made obsolete (markers) get "No" or "Reject", unknown keys
// "NotUnderstood", keys that do not apply to the session type "Irrelevant".

import (
	"fmt"
	"strconv"
	"strings"
)

// RFC 7143 defaults.
const (
	defMaxRecvDSL       = 8192
	defMaxBurst         = 262144
	defFirstBurst       = 65536
	defTime2Wait        = 2
	defTime2Retain      = 20
	defMaxOutstandingR2 = 1
)

// sessionParams are the negotiated session-wide values.
type sessionParams struct {
	MaxConnections      int
	InitialR2T          bool
	ImmediateData       bool
	MaxBurstLength      int
	FirstBurstLength    int
	DefaultTime2Wait    int
	DefaultTime2Retain  int
	MaxOutstandingR2T   int
	DataPDUInOrder      bool
	DataSequenceInOrder bool
	ErrorRecoveryLevel  int
}

func defaultSessionParams() sessionParams {
	return sessionParams{
		MaxConnections:      1,
		InitialR2T:          true,
		ImmediateData:       true,
		MaxBurstLength:      defMaxBurst,
		FirstBurstLength:    defFirstBurst,
		DefaultTime2Wait:    defTime2Wait,
		DefaultTime2Retain:  defTime2Retain,
		MaxOutstandingR2T:   defMaxOutstandingR2,
		DataPDUInOrder:      true,
		DataSequenceInOrder: true,
	}
}

// connParams are the negotiated per-connection values.
type connParams struct {
	HeaderDigest bool
	DataDigest   bool
	// SendDSL is the initiator's MaxRecvDataSegmentLength: the longest data
	// segment we may send it.
	SendDSL int
}

// ourLimits are the values the target offers (from Config).
type ourLimits struct {
	maxConnections    int
	initialR2T        bool
	immediateData     bool
	maxRecvDSL        int
	maxBurst          int
	firstBurst        int
	maxOutstandingR2T int
	alias             string
}

// negotiator tracks one connection's operational negotiation during login.
type negotiator struct {
	lim       ourLimits
	discovery bool
	leading   bool // first connection of the session: LO keys allowed

	sess sessionParams
	conn connParams

	seen     map[string]bool   // keys the initiator has offered
	proposed map[string]string // our offers awaiting an answer
	declared bool              // our MaxRecvDataSegmentLength was sent
}

func newNegotiator(lim ourLimits, discovery, leading bool, sess sessionParams) *negotiator {
	return &negotiator{
		lim:       lim,
		discovery: discovery,
		leading:   leading,
		sess:      sess,
		conn:      connParams{SendDSL: defMaxRecvDSL},
		seen:      make(map[string]bool),
		proposed:  make(map[string]string),
	}
}

// negError is a negotiation failure that ends the login with an initiator
// error status.
type negError struct{ msg string }

func (e *negError) Error() string { return "iscsi: negotiation: " + e.msg }

func negErrorf(format string, args ...any) error {
	return &negError{fmt.Sprintf(format, args...)}
}

// respond handles one operational key offered (or answered) by the
// initiator and appends our response to out.
func (n *negotiator) respond(out []byte, key, val string) ([]byte, error) {
	if want, ok := n.proposed[key]; ok {
		delete(n.proposed, key)
		return out, n.answer(key, val, want)
	}
	if n.seen[key] {
		return out, negErrorf("key %s offered twice", key)
	}
	n.seen[key] = true

	reply := func(v string) []byte { return appendText(out, key, v) }

	// Keys that only the leading connection negotiates, and that do not
	// apply to discovery sessions.
	sessionWide := func() bool { return n.discovery || !n.leading }

	switch key {
	case "HeaderDigest", "DataDigest":
		choice := ""
		for _, v := range strings.Split(val, ",") {
			if v == "CRC32C" || v == "None" {
				choice = v
				break
			}
		}
		if choice == "" {
			return reply("Reject"), nil
		}
		if key == "HeaderDigest" {
			n.conn.HeaderDigest = choice == "CRC32C"
		} else {
			n.conn.DataDigest = choice == "CRC32C"
		}
		return reply(choice), nil

	case "MaxRecvDataSegmentLength":
		v, ok := parseNumber(val)
		if !ok || v < 512 || v > maxDataSegLen {
			return out, negErrorf("bad MaxRecvDataSegmentLength %q", val)
		}
		n.conn.SendDSL = int(v)
		return out, nil // declarative: no answer

	case "MaxConnections":
		if sessionWide() {
			return reply("Irrelevant"), nil
		}
		v, ok := numIn(val, 1, 65535)
		if !ok {
			return reply("Reject"), nil
		}
		n.sess.MaxConnections = min(v, n.lim.maxConnections)
		return reply(strconv.Itoa(n.sess.MaxConnections)), nil

	case "InitialR2T", "ImmediateData", "DataPDUInOrder", "DataSequenceInOrder":
		if sessionWide() {
			return reply("Irrelevant"), nil
		}
		v, ok := parseBool(val)
		if !ok {
			return reply("Reject"), nil
		}
		var r bool
		switch key {
		case "InitialR2T":
			r = v || n.lim.initialR2T
			n.sess.InitialR2T = r
		case "ImmediateData":
			r = v && n.lim.immediateData
			n.sess.ImmediateData = r
		case "DataPDUInOrder":
			r = true // OR with our Yes
			n.sess.DataPDUInOrder = r
		case "DataSequenceInOrder":
			r = true
			n.sess.DataSequenceInOrder = r
		}
		return reply(boolStr(r)), nil

	case "MaxBurstLength", "FirstBurstLength":
		if sessionWide() {
			return reply("Irrelevant"), nil
		}
		v, ok := numIn(val, 512, maxDataSegLen)
		if !ok {
			return reply("Reject"), nil
		}
		if key == "MaxBurstLength" {
			n.sess.MaxBurstLength = min(v, n.lim.maxBurst)
			n.sess.FirstBurstLength = min(n.sess.FirstBurstLength, n.sess.MaxBurstLength)
			return reply(strconv.Itoa(n.sess.MaxBurstLength)), nil
		}
		n.sess.FirstBurstLength = min(v, n.lim.firstBurst, n.sess.MaxBurstLength)
		return reply(strconv.Itoa(n.sess.FirstBurstLength)), nil

	case "DefaultTime2Wait":
		if !n.leading {
			return reply("Irrelevant"), nil
		}
		v, ok := numIn(val, 0, 3600)
		if !ok {
			return reply("Reject"), nil
		}
		n.sess.DefaultTime2Wait = max(v, defTime2Wait)
		return reply(strconv.Itoa(n.sess.DefaultTime2Wait)), nil

	case "DefaultTime2Retain":
		if !n.leading {
			return reply("Irrelevant"), nil
		}
		v, ok := numIn(val, 0, 3600)
		if !ok {
			return reply("Reject"), nil
		}
		// At ErrorRecoveryLevel 0 nothing is retained after a connection
		// is lost, so we offer 0.
		n.sess.DefaultTime2Retain = min(v, 0)
		return reply(strconv.Itoa(n.sess.DefaultTime2Retain)), nil

	case "MaxOutstandingR2T":
		if sessionWide() {
			return reply("Irrelevant"), nil
		}
		v, ok := numIn(val, 1, 65535)
		if !ok {
			return reply("Reject"), nil
		}
		n.sess.MaxOutstandingR2T = min(v, n.lim.maxOutstandingR2T)
		return reply(strconv.Itoa(n.sess.MaxOutstandingR2T)), nil

	case "ErrorRecoveryLevel":
		if !n.leading {
			return reply("Irrelevant"), nil
		}
		if _, ok := numIn(val, 0, 2); !ok {
			return reply("Reject"), nil
		}
		n.sess.ErrorRecoveryLevel = 0
		return reply("0"), nil

	case "iSCSIProtocolLevel":
		v, ok := numIn(val, 0, 31)
		if !ok {
			return reply("Reject"), nil
		}
		return reply(strconv.Itoa(min(v, 1))), nil

	case "TaskReporting":
		for _, v := range strings.Split(val, ",") {
			if v == "RFC3720" {
				return reply("RFC3720"), nil
			}
		}
		return reply("Reject"), nil

	case "RDMAExtensions":
		return reply("No"), nil

	case "IFMarker", "OFMarker":
		return reply("No"), nil

	case "IFMarkInt", "OFMarkInt":
		return reply("Reject"), nil

	case "TargetAlias", "TargetAddress", "TargetPortalGroupTag", "SendTargets":
		// Declared by the target or used only in full feature phase.
		return reply("Irrelevant"), nil
	}
	return reply("NotUnderstood"), nil
}

// answer applies the initiator's answer to one of our proposals.
func (n *negotiator) answer(key, val, want string) error {
	if val == "Reject" || val == "NotUnderstood" || val == "Irrelevant" {
		// The default stays in force; our proposals only lower limits that
		// the initiator then ignores at its own risk, which RFC 7143 lets it
		// do only by failing the login. Treat as failure.
		return negErrorf("initiator answered %s=%s to our proposal %s", key, val, want)
	}
	switch key {
	case "MaxBurstLength", "FirstBurstLength":
		v, ok := numIn(val, 512, maxDataSegLen)
		w, _ := strconv.Atoi(want)
		if !ok || v > w {
			return negErrorf("bad answer %s=%s to %s", key, val, want)
		}
		if key == "MaxBurstLength" {
			n.sess.MaxBurstLength = v
			n.sess.FirstBurstLength = min(n.sess.FirstBurstLength, v)
		} else {
			n.sess.FirstBurstLength = min(v, n.sess.MaxBurstLength)
		}
	case "ImmediateData":
		v, ok := parseBool(val)
		if !ok {
			return negErrorf("bad answer %s=%s", key, val)
		}
		n.sess.ImmediateData = v && n.lim.immediateData
	case "InitialR2T":
		v, ok := parseBool(val)
		if !ok {
			return negErrorf("bad answer %s=%s", key, val)
		}
		n.sess.InitialR2T = v || n.lim.initialR2T
	}
	return nil
}

// proposals appends the keys the target must declare or propose itself,
// once, at the start of operational negotiation.
func (n *negotiator) proposals(out []byte) []byte {
	if n.declared {
		return out
	}
	n.declared = true
	out = appendText(out, "MaxRecvDataSegmentLength", strconv.Itoa(n.lim.maxRecvDSL))
	if n.lim.alias != "" && !n.discovery {
		out = appendText(out, "TargetAlias", n.lim.alias)
	}
	if n.discovery || !n.leading {
		return out
	}
	propose := func(key, val string) {
		if n.seen[key] {
			return
		}
		n.proposed[key] = val
		out = appendText(out, key, val)
	}
	if n.lim.maxBurst < defMaxBurst {
		propose("MaxBurstLength", strconv.Itoa(n.lim.maxBurst))
	}
	if n.lim.firstBurst < defFirstBurst {
		propose("FirstBurstLength", strconv.Itoa(n.lim.firstBurst))
	}
	if !n.lim.immediateData {
		propose("ImmediateData", "No")
	}
	return out
}

// pending reports whether proposals still await an answer.
func (n *negotiator) pending() bool { return len(n.proposed) > 0 }

// finish settles values that depend on each other. Limits the target
// controls itself (R2T and Data-In sequence sizes, outstanding R2Ts) are
// applied where they are used, against the negotiated values.
func (n *negotiator) finish() {
	n.sess.FirstBurstLength = min(n.sess.FirstBurstLength, n.sess.MaxBurstLength)
}

func numIn(v string, lo, hi uint64) (int, bool) {
	x, ok := parseNumber(v)
	if !ok || x < lo || x > hi {
		return 0, false
	}
	return int(x), true
}
