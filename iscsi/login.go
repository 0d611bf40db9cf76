package iscsi

// The login phase (RFC 7143 §6, §11.12, §11.13): security negotiation
// (AuthMethod, CHAP), operational negotiation (params.go), and the move to
// full feature phase, where a new session is created (reinstating an older
// one with the same initiator port) or a connection joins its session.

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"vfa/array"
)

// Login status class and detail (RFC 7143 §11.13.5).
const (
	loginInitiatorError   = 0x0200
	loginAuthFailure      = 0x0201
	loginAuthorization    = 0x0202
	loginNotFound         = 0x0203
	loginUnsupportedVer   = 0x0205
	loginTooManyConns     = 0x0206
	loginMissingParam     = 0x0207
	loginSessionType      = 0x0209
	loginNoSession        = 0x020a
	loginInvalidDuring    = 0x020b
	loginTargetError      = 0x0300
	loginServiceUnavail   = 0x0301
	loginOutOfResources   = 0x0302
	loginStageSecurity    = 0
	loginStageOperational = 1
	loginStageFFP         = 3
	loginMaxDSL           = defMaxRecvDSL // PDUs during login use the default
)

// loginFailure ends a login with a status.
type loginFailure struct {
	status uint16
	msg    string
}

func (e *loginFailure) Error() string {
	return fmt.Sprintf("iscsi: login refused (status %04x): %s", e.status, e.msg)
}

func refuse(status uint16, format string, args ...any) error {
	return &loginFailure{status, fmt.Sprintf(format, args...)}
}

type chapPhase int

const (
	chapNone chapPhase = iota
	chapWantA
	chapWantResponse
	chapDone
)

type loginState struct {
	c     *conn
	first bool
	stage int

	isid  [6]byte
	tsih  uint16
	cid   uint16
	cmdSN uint32

	initiator   string
	alias       string
	targetName  string
	sessionType string
	discovery   bool

	hostOK       bool
	chap         array.CHAP
	chapRequired bool // a normal session of a host with CHAP credentials
	authDone     bool
	chapPhase    chapPhase
	chapID       byte
	chapC        []byte

	neg       *negotiator
	joining   *session // for a connection that joins a session
	reqText   []byte
	respText  []byte // response text not yet sent (C bit)
	respStage int
	respT     bool
}

// login runs the login phase. It returns nil once the connection is in
// full feature phase with c.sess set; any error means the connection must
// close (a refusal has already been answered).
func (c *conn) login() error {
	ls := &loginState{c: c, first: true}
	c.pr.maxData = max(loginMaxDSL, c.t.cfg.MaxRecvDataSegmentLength)
	c.pr.loginOnly = true
	defer func() { c.pr.loginOnly = false }()
	for {
		if err := c.pr.readHeader(); err != nil {
			return err
		}
		h := c.pr.hdr
		if h.opcode() != opLoginReq {
			return fmt.Errorf("iscsi: login: unexpected opcode %#x", h.opcode())
		}
		data, err := c.readSmallData()
		if err != nil {
			return err
		}
		done, err := ls.step(&h, data)
		if err != nil {
			var lf *loginFailure
			if errors.As(err, &lf) {
				ls.reply(&h, nil, false, 0, 0, lf.status)
				c.bw.Flush()
			}
			return err
		}
		if err := c.bw.Flush(); err != nil {
			return err
		}
		if done {
			c.pr.hdrDigest = c.params.HeaderDigest
			c.pr.dataDigest = c.params.DataDigest
			c.pr.maxData = c.t.cfg.MaxRecvDataSegmentLength
			return nil
		}
	}
}

// reply writes a Login Response.
func (ls *loginState) reply(req *bhs, text []byte, transit bool, csg, nsg int, status uint16) {
	c := ls.c
	var h bhs
	h[0] = opLoginResp
	if transit {
		h[1] = flagTransit | byte(nsg)
	}
	h[1] |= byte(csg) << 2
	if len(ls.respText) > 0 {
		h[1] |= flagContinue
	}
	h[2] = 0 // version-max
	h[3] = 0 // version-active
	copy(h[8:14], req[8:14])
	h.put16(14, ls.tsih)
	h.setITT(req.itt())
	h.put32(offStatSN, c.statSN)
	c.statSN++
	exp, maxSN := ls.cmdSN, ls.cmdSN+uint32(c.t.cfg.CmdWindow)-1
	if ls.joining != nil {
		exp, maxSN = ls.joining.snapshotSN()
	}
	h.put32(offExpCmdSN, exp)
	h.put32(offMaxCmdSN, maxSN)
	h[36] = byte(status >> 8)
	h[37] = byte(status)
	writePDU(c.bw, &h, text, false, false)
}

// step handles one Login Request; done reports full feature phase.
func (ls *loginState) step(h *bhs, data []byte) (done bool, err error) {
	c := ls.c
	csg := int(h[1]>>2) & 3
	nsg := int(h[1]) & 3
	transit := h[1]&flagTransit != 0
	cont := h[1]&flagContinue != 0

	if ls.first {
		copy(ls.isid[:], h[8:14])
		ls.tsih = h.u16(14)
		ls.cid = h.u16(20)
		ls.cmdSN = h.u32(offCmdSN)
		c.statSN = h.u32(offExpStat)
		if h[3] > 0 || h[2] < h[3] {
			return false, refuse(loginUnsupportedVer, "version-min %d", h[3])
		}
		if csg != loginStageSecurity && csg != loginStageOperational {
			return false, refuse(loginInitiatorError, "first login stage %d", csg)
		}
		ls.stage = csg
	} else {
		var isid [6]byte
		copy(isid[:], h[8:14])
		if isid != ls.isid || h.u16(14) != ls.tsih || h.u16(20) != ls.cid {
			return false, refuse(loginInitiatorError, "ISID, TSIH or CID changed during login")
		}
	}
	if csg != ls.stage {
		return false, refuse(loginInitiatorError, "login stage %d, expected %d", csg, ls.stage)
	}
	if transit && (cont || nsg <= csg || nsg == 2) {
		return false, refuse(loginInitiatorError, "bad stage transition %d->%d", csg, nsg)
	}

	// More of a long response of ours.
	if len(ls.respText) > 0 {
		if len(data) != 0 || cont {
			return false, refuse(loginInitiatorError, "text while our response continues")
		}
		ls.sendChunk(h)
		return ls.afterReply()
	}

	if len(ls.reqText)+len(data) > c.t.cfg.MaxTextLength {
		return false, refuse(loginInitiatorError, "login text longer than %d bytes", c.t.cfg.MaxTextLength)
	}
	ls.reqText = append(ls.reqText, data...)
	if cont {
		ls.reply(h, nil, false, ls.stage, 0, 0)
		return false, nil
	}
	kvs, err := parseText(ls.reqText)
	ls.reqText = ls.reqText[:0]
	if err != nil {
		return false, refuse(loginInitiatorError, "%v", err)
	}

	var resp []byte
	if ls.first {
		if resp, err = ls.identify(kvs, resp); err != nil {
			return false, err
		}
		ls.first = false
	}
	if ls.stage == loginStageOperational && ls.chapRequired && !ls.authDone {
		return false, refuse(loginAuthFailure, "initiator %s must authenticate with CHAP", ls.initiator)
	}

	var chapN, chapR, chapI, chapC string
	var haveN, haveR, haveI, haveC bool
	for _, kv := range kvs {
		switch kv.key {
		case "InitiatorName", "TargetName", "SessionType", "InitiatorAlias":
			if !ls.sameIdentity(kv) {
				return false, refuse(loginInitiatorError, "%s changed during login", kv.key)
			}
		case "AuthMethod":
			if ls.stage != loginStageSecurity {
				return false, refuse(loginInitiatorError, "AuthMethod outside security stage")
			}
			if resp, err = ls.authMethod(kv.value, resp); err != nil {
				return false, err
			}
		case "CHAP_A":
			if ls.stage != loginStageSecurity || ls.chapPhase != chapWantA {
				return false, refuse(loginAuthFailure, "unexpected CHAP_A")
			}
			if resp, err = ls.chapAlgorithm(kv.value, resp); err != nil {
				return false, err
			}
		case "CHAP_N":
			chapN, haveN = kv.value, true
		case "CHAP_R":
			chapR, haveR = kv.value, true
		case "CHAP_I":
			chapI, haveI = kv.value, true
		case "CHAP_C":
			chapC, haveC = kv.value, true
		default:
			if resp, err = ls.neg.respond(resp, kv.key, kv.value); err != nil {
				return false, refuse(loginInitiatorError, "%v", err)
			}
		}
	}
	if haveN || haveR || haveI || haveC {
		if ls.stage != loginStageSecurity || ls.chapPhase != chapWantResponse {
			return false, refuse(loginAuthFailure, "unexpected CHAP response")
		}
		if resp, err = ls.chapVerify(chapN, chapR, chapI, chapC, haveN && haveR, haveI, haveC, resp); err != nil {
			return false, err
		}
	}

	// Decide whether we move on.
	next := ls.stage
	move := false
	switch ls.stage {
	case loginStageSecurity:
		if transit {
			if ls.chapPhase == chapWantA || ls.chapPhase == chapWantResponse {
				// Authentication in progress: stay.
				if ls.chapPhase == chapWantA && len(resp) == 0 {
					return false, refuse(loginAuthFailure, "CHAP not completed")
				}
			} else if ls.chapRequired && !ls.authDone {
				return false, refuse(loginAuthFailure, "initiator %s must authenticate with CHAP", ls.initiator)
			} else {
				move, next = true, nsg
			}
		}
	case loginStageOperational:
		resp = ls.neg.proposals(resp)
		if transit && !ls.neg.pending() {
			move, next = true, nsg
		}
	}
	if move && next == loginStageFFP {
		ls.neg.finish()
		if err := ls.enterFFP(); err != nil {
			return false, err
		}
	}
	ls.respText = resp
	ls.respT = move
	ls.respStage = next
	ls.sendChunk(h)
	return ls.afterReply()
}

// sendChunk sends the next part of our response text.
func (ls *loginState) sendChunk(h *bhs) {
	text := ls.respText
	if len(text) > loginMaxDSL {
		ls.respText = text[loginMaxDSL:]
		text = text[:loginMaxDSL]
		ls.reply(h, text, false, ls.stage, 0, 0)
		return
	}
	ls.respText = nil
	ls.reply(h, text, ls.respT, ls.stage, ls.respStage, 0)
}

func (ls *loginState) afterReply() (bool, error) {
	if len(ls.respText) > 0 || !ls.respT {
		return false, nil
	}
	ls.stage = ls.respStage
	ls.respT = false
	return ls.stage == loginStageFFP, nil
}

// identify handles the first request's declarations.
func (ls *loginState) identify(kvs []textKV, resp []byte) ([]byte, error) {
	c := ls.c
	for _, kv := range kvs {
		switch kv.key {
		case "InitiatorName":
			ls.initiator = kv.value
		case "TargetName":
			ls.targetName = kv.value
		case "SessionType":
			ls.sessionType = kv.value
		case "InitiatorAlias":
			ls.alias = kv.value
		}
	}
	if ls.initiator == "" {
		return nil, refuse(loginMissingParam, "no InitiatorName")
	}
	switch ls.sessionType {
	case "", "Normal":
		ls.sessionType = "Normal"
	case "Discovery":
		ls.discovery = true
	default:
		return nil, refuse(loginSessionType, "session type %q", ls.sessionType)
	}
	if !ls.discovery {
		if ls.targetName == "" {
			return nil, refuse(loginMissingParam, "no TargetName")
		}
		if !strings.EqualFold(ls.targetName, c.t.fe.TargetName()) {
			return nil, refuse(loginNotFound, "no target %q", ls.targetName)
		}
	}
	_, ls.chap, ls.hostOK = c.t.fe.Host(ls.initiator)
	// Discovery needs no CHAP (open-iscsi does not authenticate
	// SendTargets by default, and discovery reveals no data); a normal
	// session of a host with credentials must authenticate.
	ls.chapRequired = ls.hostOK && ls.chap.User != "" && !ls.discovery

	params := defaultSessionParams()
	leading := ls.tsih == 0
	if !leading {
		c.t.mu.Lock()
		s := c.t.sessions[ls.tsih]
		c.t.mu.Unlock()
		if s == nil || s.initiator != ls.initiator || s.isid != ls.isid || s.discovery != ls.discovery {
			return nil, refuse(loginNoSession, "no session with TSIH %d", ls.tsih)
		}
		ls.joining = s
		params = s.params
	}
	ls.neg = newNegotiator(c.t.lim, ls.discovery, leading, params)
	if !ls.discovery {
		resp = appendText(resp, "TargetPortalGroupTag", strconv.Itoa(portalGroupTag))
	}
	return resp, nil
}

func (ls *loginState) sameIdentity(kv textKV) bool {
	switch kv.key {
	case "InitiatorName":
		return kv.value == ls.initiator
	case "TargetName":
		return ls.discovery || strings.EqualFold(kv.value, ls.targetName)
	case "SessionType":
		return kv.value == ls.sessionType
	}
	return true
}

// authMethod answers AuthMethod. CHAP is chosen when it is required, and
// also on a discovery session that offers it when the host has credentials
// (the initiator means to authenticate: a wrong secret fails). Otherwise
// None, if offered.
func (ls *loginState) authMethod(val string, resp []byte) ([]byte, error) {
	offered := strings.Split(val, ",")
	hasCreds := ls.hostOK && ls.chap.User != ""
	if ls.chapRequired || (hasCreds && slices.Contains(offered, "CHAP")) {
		if !slices.Contains(offered, "CHAP") {
			return nil, refuse(loginAuthFailure, "initiator %s offers %q but must use CHAP", ls.initiator, val)
		}
		ls.chapPhase = chapWantA
		return appendText(resp, "AuthMethod", "CHAP"), nil
	}
	if slices.Contains(offered, "None") {
		ls.authDone = true
		return appendText(resp, "AuthMethod", "None"), nil
	}
	return nil, refuse(loginAuthFailure, "initiator %s offers %q; no CHAP credentials configured", ls.initiator, val)
}

func (ls *loginState) chapAlgorithm(val string, resp []byte) ([]byte, error) {
	ok := false
	for _, a := range strings.Split(val, ",") {
		if n, err := strconv.Atoi(a); err == nil && n == chapMD5 {
			ok = true
		}
	}
	if !ok {
		return nil, refuse(loginAuthFailure, "CHAP algorithms %q: only MD5 (5) supported", val)
	}
	var buf [1 + chapChallengeLen]byte
	if _, err := rand.Read(buf[:]); err != nil {
		return nil, refuse(loginTargetError, "random: %v", err)
	}
	ls.chapID = buf[0]
	ls.chapC = append([]byte(nil), buf[1:]...)
	ls.chapPhase = chapWantResponse
	resp = appendText(resp, "CHAP_A", strconv.Itoa(chapMD5))
	resp = appendText(resp, "CHAP_I", strconv.Itoa(int(ls.chapID)))
	resp = appendText(resp, "CHAP_C", encodeHex(ls.chapC))
	return resp, nil
}

func (ls *loginState) chapVerify(name, r, idStr, chal string, haveNR, haveI, haveC bool, resp []byte) ([]byte, error) {
	if !haveNR {
		return nil, refuse(loginAuthFailure, "CHAP_N and CHAP_R required")
	}
	rb, err := decodeBinary(r)
	if err != nil {
		return nil, refuse(loginAuthFailure, "CHAP_R: %v", err)
	}
	if name != ls.chap.User || !chapVerify(ls.chapID, ls.chap.Secret, ls.chapC, rb) {
		return nil, refuse(loginAuthFailure, "CHAP authentication of %s failed", ls.initiator)
	}
	ls.chapPhase = chapDone
	ls.authDone = true
	if !haveI && !haveC {
		return resp, nil
	}
	// Mutual CHAP: the initiator authenticates us.
	if haveI != haveC {
		return nil, refuse(loginAuthFailure, "mutual CHAP needs CHAP_I and CHAP_C")
	}
	if ls.chap.TargetUser == "" {
		return nil, refuse(loginAuthFailure, "mutual CHAP requested but no target secret configured for %s", ls.initiator)
	}
	id, err := strconv.Atoi(idStr)
	if err != nil || id < 0 || id > 255 {
		return nil, refuse(loginAuthFailure, "CHAP_I %q", idStr)
	}
	cb, err := decodeBinary(chal)
	if err != nil {
		return nil, refuse(loginAuthFailure, "CHAP_C: %v", err)
	}
	if slices.Equal(cb, ls.chapC) {
		return nil, refuse(loginAuthFailure, "CHAP challenge reflected")
	}
	sum := chapResponse(byte(id), ls.chap.TargetSecret, cb)
	resp = appendText(resp, "CHAP_N", ls.chap.TargetUser)
	resp = appendText(resp, "CHAP_R", encodeHex(sum[:]))
	return resp, nil
}

// enterFFP creates or joins the session before the final login response.
func (ls *loginState) enterFFP() error {
	c := ls.c
	t := c.t
	c.params = ls.neg.conn
	c.cid = ls.cid
	if ls.joining != nil {
		s := ls.joining
		s.mu.Lock()
		if s.ended {
			s.mu.Unlock()
			return refuse(loginNoSession, "session %d ended", ls.tsih)
		}
		var old *conn
		for _, o := range s.conns {
			if o.cid == ls.cid {
				old = o
			}
		}
		if old == nil && len(s.conns) >= s.params.MaxConnections {
			s.mu.Unlock()
			return refuse(loginTooManyConns, "session %d has %d connections", ls.tsih, len(s.conns))
		}
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		if old != nil {
			// Connection reinstatement: the old connection's tasks end.
			old.loggedOut.Store(true)
			old.close()
		}
		c.sess = s
		return nil
	}

	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return refuse(loginServiceUnavail, "target closing")
	}
	if len(t.sessions) >= t.cfg.MaxSessions {
		t.mu.Unlock()
		return refuse(loginOutOfResources, "session limit %d reached", t.cfg.MaxSessions)
	}
	for {
		t.nextTSIH++
		if t.nextTSIH != 0 && t.sessions[t.nextTSIH] == nil {
			break
		}
	}
	s := newSession(t, ls.isid, ls.initiator, ls.alias, ls.discovery, ls.neg.sess, ls.cmdSN)
	s.tsih = t.nextTSIH
	s.conns = []*conn{c}
	var stale []*session
	for _, o := range t.sessions {
		if o.nexus == s.nexus && o.discovery == s.discovery {
			stale = append(stale, o)
		}
	}
	t.sessions[s.tsih] = s
	t.mu.Unlock()
	ls.tsih = s.tsih
	c.sess = s
	// Session reinstatement: the older session with this initiator port
	// ends (its tasks are aborted).
	for _, o := range stale {
		for _, oc := range o.connections() {
			oc.loggedOut.Store(true)
			oc.close()
		}
	}
	if !s.discovery {
		s.refreshLUNs()
	}
	t.log.Info("iscsi: login", "initiator", s.initiator, "remote", c.remote,
		"tsih", s.tsih, "discovery", s.discovery)
	return nil
}

// leaveSession removes a finished connection from its session and ends the
// session with its last connection. At ErrorRecoveryLevel 0 a failed
// connection fails the whole session.
func (t *Target) leaveSession(c *conn) {
	s := c.sess
	s.mu.Lock()
	s.conns = slices.DeleteFunc(s.conns, func(o *conn) bool { return o == c })
	last := len(s.conns) == 0
	others := append([]*conn(nil), s.conns...)
	if last {
		s.ended = true
		clear(s.pending)
	}
	s.mu.Unlock()
	if !last {
		if !c.loggedOut.Load() {
			for _, o := range others {
				o.close()
			}
		}
		return
	}
	t.mu.Lock()
	if t.sessions[s.tsih] == s {
		delete(t.sessions, s.tsih)
	}
	t.mu.Unlock()
	s.detachLUNs()
	s.stopWorkers()
}

func (t *Target) closing() bool { return t.ctx.Err() != nil }

// sendTargets answers SendTargets=<val>.
func (t *Target) sendTargets(out []byte, val string, discovery bool) []byte {
	name := t.fe.TargetName()
	if val == "All" || strings.EqualFold(val, name) || (val == "" && !discovery) {
		out = appendText(out, "TargetName", name)
		for _, p := range t.portals {
			out = appendText(out, "TargetAddress", p+","+strconv.Itoa(portalGroupTag))
		}
	}
	return out
}
