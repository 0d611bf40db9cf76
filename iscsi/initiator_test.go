package iscsi

// A small iSCSI initiator for protocol tests: login with negotiation and
// CHAP, SCSI commands with immediate, unsolicited and R2T-solicited data,
// Data-In reassembly, many commands in flight, NOP, TMF, text and logout,
// plus raw PDU access for malformed-stream tests. Test code only.

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type iniConfig struct {
	Initiator    string
	Target       string // "" for a discovery session
	ISID         [6]byte
	TSIH         uint16
	CID          uint16
	CHAPUser     string
	CHAPSecret   string
	MutualUser   string // expected target CHAP_N for mutual CHAP
	MutualSecret string
	AuthMethods  string // default "CHAP,None" with credentials, else "None"
	HeaderDigest string // "None" (default) or "CRC32C"
	DataDigest   string
	ImmediateData,
	InitialR2T string // "Yes"/"No"; defaults Yes / No
	MaxRecvDSL   int // what we declare (default 262144)
	FirstBurst   int
	MaxBurst     int
	ExtraKeys    []textKV // sent in the operational stage
	ReflectCHAP  bool     // send the target's own challenge back (attack)
	NoPingAnswer bool     // ignore the target's NOP-In pings
}

// loginError is a refused login.
type loginError struct{ status uint16 }

func (e *loginError) Error() string { return fmt.Sprintf("login refused: status %04x", e.status) }

type iniResp struct {
	hdr  bhs
	data []byte
}

// scsiResult is the outcome of one command.
type scsiResult struct {
	status   byte
	sense    []byte
	data     []byte
	resFlags byte
	residual uint32
	response byte
	statSN   uint32
}

func (r *scsiResult) senseKey() (key, asc, ascq byte) {
	s := r.sense
	if len(s) < 14 {
		if len(s) >= 4 && s[0]&0x7f >= 0x72 {
			return s[1] & 0xf, s[2], s[3]
		}
		return 0, 0, 0
	}
	if s[0]&0x7f >= 0x72 {
		return s[1] & 0xf, s[2], s[3]
	}
	return s[2] & 0xf, s[12], s[13]
}

func (r *scsiResult) code() senseCode {
	k, a, q := r.senseKey()
	return senseCode{k, a, q}
}

type initiator struct {
	tb  testing.TB
	nc  net.Conn
	br  *bufio.Reader
	cfg iniConfig

	wmu      sync.Mutex // serialises writes
	mu       sync.Mutex
	cond     *sync.Cond
	cmdSN    uint32
	expCmdSN uint32
	maxCmdSN uint32
	statSN   uint32
	itt      uint32
	waiting  map[uint32]chan iniResp
	other    chan iniResp
	closed   bool
	readErr  error

	tsih         uint16
	hdrDigest    bool
	dataDigest   bool
	targetDSL    int // target's MaxRecvDataSegmentLength
	immediate    bool
	initialR2T   bool
	firstBurst   int
	maxBurst     int
	answerPings  bool
	loginKeys    map[string]string // every key the target sent during login
	readerActive bool
}

func dialInitiator(tb testing.TB, addr string, cfg iniConfig) (*initiator, error) {
	tb.Helper()
	nc, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	if cfg.ISID == ([6]byte{}) {
		cfg.ISID = [6]byte{0x80, 0, 0, 0, 0, 1}
	}
	if cfg.MaxRecvDSL == 0 {
		cfg.MaxRecvDSL = 262144
	}
	in := &initiator{
		tb:          tb,
		nc:          nc,
		br:          bufio.NewReaderSize(nc, 64<<10),
		cfg:         cfg,
		waiting:     make(map[uint32]chan iniResp),
		other:       make(chan iniResp, 64),
		targetDSL:   defMaxRecvDSL,
		immediate:   true,
		initialR2T:  true,
		firstBurst:  defFirstBurst,
		maxBurst:    defMaxBurst,
		answerPings: !cfg.NoPingAnswer,
		loginKeys:   make(map[string]string),
		itt:         0x1000,
	}
	in.cond = sync.NewCond(&in.mu)
	if err := in.login(); err != nil {
		nc.Close()
		return nil, err
	}
	in.readerActive = true
	go in.readLoop()
	return in, nil
}

func mustLogin(tb testing.TB, addr string, cfg iniConfig) *initiator {
	tb.Helper()
	in, err := dialInitiator(tb, addr, cfg)
	if err != nil {
		tb.Fatalf("login %s: %v", cfg.Initiator, err)
	}
	tb.Cleanup(in.close)
	return in
}

func (in *initiator) close() {
	in.mu.Lock()
	in.closed = true
	in.mu.Unlock()
	in.nc.Close()
}

// writePDUraw writes a PDU with the negotiated digests.
func (in *initiator) send(h *bhs, data []byte) error {
	in.wmu.Lock()
	defer in.wmu.Unlock()
	w := bufio.NewWriterSize(in.nc, 64<<10)
	h4 := h[4]
	if err := writePDU(w, h, data, in.hdrDigest, in.dataDigest); err != nil {
		return err
	}
	h[4] = h4
	return w.Flush()
}

// recv reads one PDU (before the reader goroutine runs, or in raw tests).
func (in *initiator) recv() (iniResp, error) {
	in.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer in.nc.SetReadDeadline(time.Time{})
	pr := pduReader{r: in.br, hdrDigest: in.hdrDigest, dataDigest: in.dataDigest, maxData: maxDataSegLen, maxAHS: maxAHSLen}
	if err := pr.readHeader(); err != nil {
		return iniResp{}, err
	}
	data := make([]byte, pr.hdr.dataLen())
	if err := pr.readData(data); err != nil {
		return iniResp{}, err
	}
	return iniResp{hdr: pr.hdr, data: data}, nil
}

func (in *initiator) nextITT() uint32 {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.itt++
	return in.itt
}

// Login.

func (in *initiator) login() error {
	cfg := in.cfg
	keys := func(kv ...string) []byte {
		var b []byte
		for i := 0; i+1 < len(kv); i += 2 {
			b = appendText(b, kv[i], kv[i+1])
		}
		return b
	}
	identity := []string{"InitiatorName", cfg.Initiator}
	if cfg.Target != "" {
		identity = append(identity, "TargetName", cfg.Target, "SessionType", "Normal")
	} else {
		identity = append(identity, "SessionType", "Discovery")
	}
	in.cmdSN = 1
	itt := in.nextITT()
	stage := 1
	var text []byte
	if cfg.CHAPUser != "" || cfg.AuthMethods != "" {
		stage = 0
		am := cfg.AuthMethods
		if am == "" {
			am = "CHAP,None"
		}
		text = keys(append(identity, "AuthMethod", am)...)
	}
	first := true
	var chapI byte
	var chapC []byte
	var myChallenge []byte
	for step := 0; step < 16; step++ {
		var h bhs
		h[0] = opLoginReq | flagImmediate
		nsg := 3
		if stage == 0 {
			nsg = 1
		}
		h[1] = flagTransit | byte(stage)<<2 | byte(nsg)
		if stage == 0 && len(chapC) == 0 && in.loginKeys["AuthMethod"] == "CHAP" {
			h[1] &^= flagTransit // choosing the algorithm
		}
		copy(h[8:14], cfg.ISID[:])
		h.put16(14, cfg.TSIH)
		h.setITT(itt)
		h.put16(20, cfg.CID)
		h.put32(offCmdSN, in.cmdSN)
		h.put32(offExpStat, in.statSN)
		if stage == 1 && len(text) == 0 {
			kv := []string{
				"HeaderDigest", or(cfg.HeaderDigest, "None"),
				"DataDigest", or(cfg.DataDigest, "None"),
				"MaxRecvDataSegmentLength", strconv.Itoa(cfg.MaxRecvDSL),
			}
			if cfg.Target != "" {
				kv = append(kv,
					"InitialR2T", or(cfg.InitialR2T, "No"),
					"ImmediateData", or(cfg.ImmediateData, "Yes"),
					"MaxBurstLength", strconv.Itoa(orInt(cfg.MaxBurst, 1<<20)),
					"FirstBurstLength", strconv.Itoa(orInt(cfg.FirstBurst, 256<<10)),
					"MaxOutstandingR2T", "4",
					"ErrorRecoveryLevel", "0",
					"DefaultTime2Wait", "2",
					"DefaultTime2Retain", "0",
				)
			}
			if first {
				kv = append(identity, kv...)
			}
			text = keys(kv...)
			for _, e := range cfg.ExtraKeys {
				text = appendText(text, e.key, e.value)
			}
		}
		first = false
		if err := in.send(&h, text); err != nil {
			return err
		}
		text = nil
		r, err := in.recv()
		if err != nil {
			return err
		}
		if r.hdr.opcode() != opLoginResp {
			return fmt.Errorf("login: got opcode %#x", r.hdr.opcode())
		}
		in.statSN = r.hdr.u32(offStatSN) + 1
		in.expCmdSN = r.hdr.u32(offExpCmdSN)
		in.maxCmdSN = r.hdr.u32(offMaxCmdSN)
		if st := uint16(r.hdr[36])<<8 | uint16(r.hdr[37]); st != 0 {
			return &loginError{st}
		}
		kvs, err := parseText(r.data)
		if err != nil {
			return err
		}
		for _, kv := range kvs {
			in.loginKeys[kv.key] = kv.value
		}
		m := in.loginKeys
		if stage == 0 {
			switch {
			case m["AuthMethod"] == "CHAP" && m["CHAP_C"] == "" && len(chapC) == 0:
				text = keys("CHAP_A", "5")
				chapC = []byte{} // algorithm chosen next
				continue
			case m["CHAP_C"] != "" && len(chapC) == 0:
				id, _ := strconv.Atoi(m["CHAP_I"])
				chapI = byte(id)
				chapC, err = decodeBinary(m["CHAP_C"])
				if err != nil {
					return err
				}
				sum := chapResponse(chapI, cfg.CHAPSecret, chapC)
				kv := []string{"CHAP_N", cfg.CHAPUser, "CHAP_R", encodeHex(sum[:])}
				if cfg.MutualUser != "" {
					myChallenge = []byte("0123456789abcdef")
					if cfg.ReflectCHAP {
						myChallenge = chapC
					}
					kv = append(kv, "CHAP_I", "7", "CHAP_C", encodeHex(myChallenge))
				}
				text = keys(kv...)
				continue
			}
			if cfg.MutualUser != "" {
				if m["CHAP_N"] != cfg.MutualUser {
					return fmt.Errorf("mutual CHAP: target name %q", m["CHAP_N"])
				}
				rb, err := decodeBinary(m["CHAP_R"])
				if err != nil {
					return err
				}
				want := chapResponse(7, cfg.MutualSecret, myChallenge)
				if !slices.Equal(rb, want[:]) {
					return errors.New("mutual CHAP: bad target response")
				}
			}
		}
		if r.hdr[1]&flagTransit != 0 {
			next := int(r.hdr[1] & 3)
			if next == 3 {
				in.tsih = r.hdr.u16(14)
				in.applyKeys()
				return nil
			}
			stage = next
		}
	}
	return errors.New("login: too many steps")
}

func or(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

func orInt(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func (in *initiator) applyKeys() {
	m := in.loginKeys
	in.hdrDigest = m["HeaderDigest"] == "CRC32C"
	in.dataDigest = m["DataDigest"] == "CRC32C"
	if v, err := strconv.Atoi(m["MaxRecvDataSegmentLength"]); err == nil {
		in.targetDSL = v
	}
	if v, ok := m["ImmediateData"]; ok {
		in.immediate = v == "Yes"
	}
	if v, ok := m["InitialR2T"]; ok {
		in.initialR2T = v == "Yes"
	}
	if v, err := strconv.Atoi(m["FirstBurstLength"]); err == nil {
		in.firstBurst = v
	}
	if v, err := strconv.Atoi(m["MaxBurstLength"]); err == nil {
		in.maxBurst = v
	}
}

// Reader.

func (in *initiator) readLoop() {
	for {
		pr := pduReader{r: in.br, hdrDigest: in.hdrDigest, dataDigest: in.dataDigest, maxData: maxDataSegLen, maxAHS: maxAHSLen}
		err := pr.readHeader()
		var data []byte
		if err == nil {
			data = make([]byte, pr.hdr.dataLen())
			err = pr.readData(data)
		}
		if err != nil {
			in.mu.Lock()
			in.readErr = err
			for itt, ch := range in.waiting {
				close(ch)
				delete(in.waiting, itt)
			}
			in.cond.Broadcast()
			in.mu.Unlock()
			close(in.other)
			return
		}
		r := iniResp{hdr: pr.hdr, data: data}
		in.track(&r.hdr)
		op := r.hdr.opcode()
		if op == opNopIn && r.hdr.itt() == reservedTag && r.hdr.u32(offTTT) != reservedTag {
			if in.answerPings {
				var h bhs
				h[0] = opNopOut | flagImmediate
				h[1] = flagFinal
				h.setITT(reservedTag)
				h.put32(offTTT, r.hdr.u32(offTTT))
				in.mu.Lock()
				h.put32(offCmdSN, in.cmdSN)
				h.put32(offExpStat, in.statSN)
				in.mu.Unlock()
				in.send(&h, nil)
			}
			select {
			case in.other <- r:
			default:
			}
			continue
		}
		in.mu.Lock()
		ch := in.waiting[r.hdr.itt()]
		in.mu.Unlock()
		if ch != nil && (op == opSCSIResp || op == opDataIn || op == opR2T) {
			ch <- r
			continue
		}
		in.other <- r
	}
}

// track follows StatSN and the command window.
func (in *initiator) track(h *bhs) {
	in.mu.Lock()
	defer in.mu.Unlock()
	switch h.opcode() {
	case opSCSIResp, opNopIn, opTMFResp, opTextResp, opLogoutResp, opReject, opAsync:
		if h.opcode() != opNopIn || h.itt() != reservedTag {
			in.statSN = h.u32(offStatSN) + 1
		}
	case opDataIn:
		if h[1]&flagStatus != 0 {
			in.statSN = h.u32(offStatSN) + 1
		}
	}
	exp, max := h.u32(offExpCmdSN), h.u32(offMaxCmdSN)
	if snLess(in.maxCmdSN, max) {
		in.maxCmdSN = max
	}
	if snLess(in.expCmdSN, exp) {
		in.expCmdSN = exp
	}
	in.cond.Broadcast()
}

// takeCmdSN waits for room in the window and returns the next CmdSN.
func (in *initiator) takeCmdSN(immediate bool) (uint32, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if immediate {
		return in.cmdSN, nil
	}
	for snLess(in.maxCmdSN, in.cmdSN) {
		if in.readErr != nil || in.closed {
			return 0, errors.New("connection closed")
		}
		in.cond.Wait()
	}
	sn := in.cmdSN
	in.cmdSN++
	return sn, nil
}

// Commands.

type cmdOpts struct {
	lun        uint64
	attr       byte
	edtl       int  // expected transfer length; -1: derived from data
	read       bool // R bit (data-in expected)
	readLen    int
	immediate  bool
	noImmData  bool
	timeout    time.Duration
	itt        uint32
	onSent     func(itt, cmdSN uint32)
	dataOutMod func(h *bhs) // mutate Data-Out headers
}

// command runs one SCSI command and returns its result.
func (in *initiator) command(cdb []byte, out []byte, o cmdOpts) (*scsiResult, error) {
	itt := o.itt
	if itt == 0 {
		itt = in.nextITT()
	}
	ch := make(chan iniResp, 16)
	in.mu.Lock()
	in.waiting[itt] = ch
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		delete(in.waiting, itt)
		in.mu.Unlock()
	}()
	cmdSN, err := in.takeCmdSN(o.immediate)
	if err != nil {
		return nil, err
	}
	write := len(out) > 0
	edtl := o.edtl
	if edtl < 0 || (edtl == 0 && !o.read && write) {
		edtl = len(out)
	}
	if o.read && edtl == 0 && o.readLen > 0 {
		edtl = o.readLen
	}
	var h bhs
	h[0] = opSCSICmd
	if o.immediate {
		h[0] |= flagImmediate
	}
	h[1] = flagFinal | or8(o.attr, attrSimple)
	if o.read {
		h[1] |= flagRead
	}
	if write {
		h[1] |= flagWrite
	}
	h.setLUN(encodeLUN(o.lun))
	h.setITT(itt)
	h.put32(20, uint32(edtl))
	h.put32(offCmdSN, cmdSN)
	in.mu.Lock()
	h.put32(offExpStat, in.statSN)
	in.mu.Unlock()
	var ahs []byte
	if len(cdb) > 16 {
		ext := cdb[16:]
		n := 1 + len(ext)
		ahs = make([]byte, pad4(3+n))
		binary.BigEndian.PutUint16(ahs[0:2], uint16(n))
		ahs[2] = ahsExtendedCDB
		copy(ahs[4:], ext)
		copy(h[32:48], cdb[:16])
	} else {
		copy(h[32:48], cdb)
	}
	imm := 0
	if write && in.immediate && !o.noImmData {
		imm = min(len(out), in.firstBurst, in.targetDSL)
	}
	unsol := imm
	if write && !in.initialR2T && imm < len(out) && imm < in.firstBurst {
		h[1] &^= flagFinal
		unsol = min(len(out), in.firstBurst)
	}
	if err := in.sendWithAHS(&h, ahs, out[:imm]); err != nil {
		return nil, err
	}
	if o.onSent != nil {
		o.onSent(itt, cmdSN)
	}
	if unsol > imm {
		if err := in.sendData(itt, reservedTag, out, imm, unsol, 0, o.dataOutMod); err != nil {
			return nil, err
		}
	}
	res := &scsiResult{}
	timeout := o.timeout
	if timeout == 0 {
		timeout = 20 * time.Second
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		var r iniResp
		var ok bool
		select {
		case r, ok = <-ch:
			if !ok {
				return nil, fmt.Errorf("connection lost: %v", in.readErr)
			}
		case <-timer.C:
			return nil, errTimeout
		}
		switch r.hdr.opcode() {
		case opR2T:
			off, n := r.hdr.u32(40), r.hdr.u32(44)
			if int(off+n) > len(out) {
				return nil, fmt.Errorf("R2T beyond data: %d+%d > %d", off, n, len(out))
			}
			if err := in.sendData(itt, r.hdr.u32(offTTT), out, int(off), int(off+n), 0, o.dataOutMod); err != nil {
				return nil, err
			}
		case opDataIn:
			off := int(r.hdr.u32(40))
			if end := off + len(r.data); end > len(res.data) {
				res.data = append(res.data, make([]byte, end-len(res.data))...)
			}
			copy(res.data[off:], r.data)
			if r.hdr[1]&flagStatus != 0 {
				res.statSN = r.hdr.u32(offStatSN)
				res.status = r.hdr[3]
				res.resFlags = r.hdr[1] & (flagOverflow | flagUnderflow)
				res.residual = r.hdr.u32(44)
				return res, nil
			}
		case opSCSIResp:
			res.statSN = r.hdr.u32(offStatSN)
			res.status = r.hdr[3]
			res.response = r.hdr[2]
			res.resFlags = r.hdr[1] & (flagOverflow | flagUnderflow)
			res.residual = r.hdr.u32(44)
			if len(r.data) >= 2 {
				n := int(binary.BigEndian.Uint16(r.data[0:2]))
				res.sense = r.data[2 : 2+n]
			}
			return res, nil
		}
	}
}

var errTimeout = errors.New("timeout")

func or8(v, d byte) byte {
	if v == 0 {
		return d
	}
	return v
}

func (in *initiator) sendWithAHS(h *bhs, ahs, data []byte) error {
	if len(ahs) == 0 {
		return in.send(h, data)
	}
	in.wmu.Lock()
	defer in.wmu.Unlock()
	w := bufio.NewWriter(in.nc)
	h[4] = byte(len(ahs) / 4)
	h.setDataLen(len(data))
	w.Write(h[:])
	w.Write(ahs)
	if in.hdrDigest {
		var d [4]byte
		sum := crcOf(h[:], ahs)
		binary.LittleEndian.PutUint32(d[:], sum)
		w.Write(d[:])
	}
	if len(data) > 0 {
		w.Write(data)
		w.Write(zeroPad[:pad4(len(data))-len(data)])
		if in.dataDigest {
			var d [4]byte
			binary.LittleEndian.PutUint32(d[:], crcOf(data, zeroPad[:pad4(len(data))-len(data)]))
			w.Write(d[:])
		}
	}
	return w.Flush()
}

// sendData sends out[from:to] as Data-Out PDUs for ttt.
func (in *initiator) sendData(itt, ttt uint32, out []byte, from, to int, dataSN uint32, mod func(*bhs)) error {
	for off := from; off < to; {
		n := min(in.targetDSL, to-off)
		var h bhs
		h[0] = opDataOut
		if off+n == to {
			h[1] = flagFinal
		}
		h.setITT(itt)
		h.put32(offTTT, ttt)
		in.mu.Lock()
		h.put32(offExpStat, in.statSN)
		in.mu.Unlock()
		h.put32(36, dataSN)
		h.put32(40, uint32(off))
		if mod != nil {
			mod(&h)
		}
		if err := in.send(&h, out[off:off+n]); err != nil {
			return err
		}
		dataSN++
		off += n
	}
	return nil
}

// waitOther returns the next non-command PDU of the given opcode.
func (in *initiator) waitOther(op uint8, timeout time.Duration) (iniResp, error) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case r, ok := <-in.other:
			if !ok {
				return iniResp{}, fmt.Errorf("connection lost: %v", in.readErr)
			}
			if r.hdr.opcode() == op {
				return r, nil
			}
		case <-timer.C:
			return iniResp{}, errTimeout
		}
	}
}

// nop sends a NOP-Out (immediate or not) with ping data and waits for the
// NOP-In.
func (in *initiator) nop(immediate bool, data []byte) (iniResp, error) {
	cmdSN, err := in.takeCmdSN(immediate)
	if err != nil {
		return iniResp{}, err
	}
	var h bhs
	h[0] = opNopOut
	if immediate {
		h[0] |= flagImmediate
	}
	h[1] = flagFinal
	h.setITT(in.nextITT())
	h.put32(offTTT, reservedTag)
	h.put32(offCmdSN, cmdSN)
	if err := in.send(&h, data); err != nil {
		return iniResp{}, err
	}
	for {
		r, err := in.waitOther(opNopIn, 10*time.Second)
		if err != nil {
			return r, err
		}
		if r.hdr.itt() == h.itt() {
			return r, nil
		}
	}
}

// tmf sends a task management request and returns the response code.
func (in *initiator) tmf(fn byte, lun uint64, refITT, refCmdSN uint32) (byte, error) {
	cmdSN, _ := in.takeCmdSN(true)
	var h bhs
	h[0] = opTMFReq | flagImmediate
	h[1] = flagFinal | fn
	h.setLUN(encodeLUN(lun))
	h.setITT(in.nextITT())
	h.put32(20, refITT)
	h.put32(offCmdSN, cmdSN)
	h.put32(32, refCmdSN)
	if err := in.send(&h, nil); err != nil {
		return 0, err
	}
	for {
		r, err := in.waitOther(opTMFResp, 20*time.Second)
		if err != nil {
			return 0, err
		}
		if r.hdr.itt() == h.itt() {
			return r.hdr[2], nil
		}
	}
}

// text sends a Text request and gathers the (possibly continued) answer.
func (in *initiator) text(kvs ...textKV) ([]textKV, error) {
	var data []byte
	for _, kv := range kvs {
		data = appendText(data, kv.key, kv.value)
	}
	itt := in.nextITT()
	ttt := uint32(reservedTag)
	var all []byte
	for {
		cmdSN, _ := in.takeCmdSN(true)
		var h bhs
		h[0] = opTextReq | flagImmediate
		h[1] = flagFinal
		h.setITT(itt)
		h.put32(offTTT, ttt)
		h.put32(offCmdSN, cmdSN)
		if err := in.send(&h, data); err != nil {
			return nil, err
		}
		data = nil
		r, err := in.waitOther(opTextResp, 10*time.Second)
		if err != nil {
			return nil, err
		}
		all = append(all, r.data...)
		if r.hdr[1]&flagFinal != 0 {
			return parseText(all)
		}
		ttt = r.hdr.u32(offTTT)
	}
}

// logout closes the session (reason 0) or connection (reason 1).
func (in *initiator) logout(reason byte) (byte, error) {
	cmdSN, _ := in.takeCmdSN(true)
	var h bhs
	h[0] = opLogoutReq | flagImmediate
	h[1] = flagFinal | reason
	h.setITT(in.nextITT())
	h.put16(20, in.cfg.CID)
	h.put32(offCmdSN, cmdSN)
	if err := in.send(&h, nil); err != nil {
		return 0, err
	}
	r, err := in.waitOther(opLogoutResp, 10*time.Second)
	if err != nil {
		return 0, err
	}
	return r.hdr[2], nil
}

// Convenience wrappers.

func (in *initiator) read10(lun uint64, lba uint32, blocks uint16) (*scsiResult, error) {
	cdb := make([]byte, 10)
	cdb[0] = opRead10
	binary.BigEndian.PutUint32(cdb[2:6], lba)
	binary.BigEndian.PutUint16(cdb[7:9], blocks)
	return in.command(cdb, nil, cmdOpts{lun: lun, read: true, edtl: int(blocks) * 512})
}

func (in *initiator) write10(lun uint64, lba uint32, data []byte) (*scsiResult, error) {
	cdb := make([]byte, 10)
	cdb[0] = opWrite10
	binary.BigEndian.PutUint32(cdb[2:6], lba)
	binary.BigEndian.PutUint16(cdb[7:9], uint16(len(data)/512))
	return in.command(cdb, data, cmdOpts{lun: lun, edtl: -1})
}

func (in *initiator) simple(lun uint64, cdb []byte, alloc int) (*scsiResult, error) {
	return in.command(cdb, nil, cmdOpts{lun: lun, read: alloc > 0, edtl: alloc})
}

func (in *initiator) tur(lun uint64) (*scsiResult, error) {
	return in.simple(lun, make([]byte, 6), 0)
}

func (in *initiator) reportLUNs() ([]uint64, error) {
	cdb := make([]byte, 12)
	cdb[0] = opReportLUNs
	binary.BigEndian.PutUint32(cdb[6:10], 4096)
	r, err := in.simple(0, cdb, 4096)
	if err != nil {
		return nil, err
	}
	if r.status != statusGood {
		return nil, fmt.Errorf("REPORT LUNS: status %#x sense %v", r.status, r.code())
	}
	n := int(binary.BigEndian.Uint32(r.data[0:4])) / 8
	var out []uint64
	for i := range n {
		v, _ := decodeLUN(binary.BigEndian.Uint64(r.data[8+8*i:]))
		out = append(out, v)
	}
	return out, nil
}

// clearUA sends TEST UNIT READY until no unit attention is pending.
func (in *initiator) clearUA(lun uint64) {
	for range 20 {
		r, err := in.tur(lun)
		if err != nil || r.status == statusGood || r.code().key != skUnitAttention {
			return
		}
	}
}

func kvMap(kvs []textKV) map[string][]string {
	m := make(map[string][]string)
	for _, kv := range kvs {
		m[kv.key] = append(m[kv.key], kv.value)
	}
	return m
}

func kvString(kvs []textKV) string {
	var b strings.Builder
	for _, kv := range kvs {
		fmt.Fprintf(&b, "%s=%s ", kv.key, kv.value)
	}
	return b.String()
}

// crcOf is CRC32C over the concatenation of parts.
func crcOf(parts ...[]byte) uint32 {
	var sum uint32
	for _, p := range parts {
		sum = crcUpdate(sum, p)
	}
	return sum
}
