package mgmt

import (
	"context"
	"errors"

	"vfa/array"
)

// The security token (Rapid Data Locking): purearray enable|disable|test
// security-token, purearray list --security-token and purearray unlock.
// purecert (cmd_cert.go) and purekmip (cmd_kmip.go) manage what it needs.

const eraseFlag = "i-understand-this-erases-all-data"

func tokenFeatures() []arrayFeature {
	return []arrayFeature{{
		name: "security-token",
		enableFlags: []flagSpec{
			{name: "kmip", kind: flagValue, metavar: "KMIP-SERVER", help: "security-token: create an AES-256 key on this KMIP server and seal the array key shares with it"},
			{name: "file", kind: flagValue, metavar: "PATH", help: "security-token: use the key in this token file on the array's host (made if missing) instead of a KMIP server"},
		},
		disableFlags: []flagSpec{
			{name: eraseFlag, help: "security-token: confirm that disabling it crypto-erases the array: every key share and DEK partition is obliterated and all data is gone"},
		},
		enable:   tokenEnable,
		disable:  tokenDisable,
		test:     tokenTest,
		listFlag: flagSpec{name: "security-token", help: "list the security token (Rapid Data Locking): whether it is enabled, its status, type, signature and server"},
		list:     tokenList,
		commands: []*command{{group: "purearray", name: "unlock", summary: "try to unlock a locked array now (fetch the security token's key again)", maxArgs: 0, mutates: true, run: arrayUnlock}},
	}}
}

func tokenTable() *table { return newTable("Enabled", "Status", "Type", "Signature", "Server") }

func boolCell(b bool) cell {
	if b {
		return txt("True")
	}
	return txt("False")
}

func tokenRow(t *table, st array.TokenStatus) {
	t.add(boolCell(st.Enabled), txt(st.Status), txt(st.Type), txt(st.Signature), txt(st.Server))
}

func tokenList(e *env, p *parsed) error {
	st, err := e.a().Token()
	if err != nil {
		return errOn("security-token", "%v", err)
	}
	t := tokenTable()
	tokenRow(t, st)
	e.print(t)
	return nil
}

func tokenEnable(e *env, p *parsed) error {
	if p.count("kmip", "file") != 1 {
		return usagef("give one of --kmip KMIP-SERVER or --file PATH")
	}
	var st array.TokenStatus
	var err error
	if p.has("kmip") {
		if _, lerr := e.a().KMIPServerByName(p.val("kmip")); lerr != nil {
			return errOn(p.val("kmip"), "KMIP server does not exist")
		}
		st, err = e.a().EnableTokenKMIP(context.Background(), p.val("kmip"))
	} else {
		st, err = e.a().EnableTokenFile(p.val("file"))
	}
	if err != nil {
		return errOn("security-token", "%s", tokenReason(err))
	}
	t := newTable("Enabled", "Type", "Signature", "Server")
	t.add(boolCell(st.Enabled), txt(st.Type), txt(st.Signature), txt(st.Server))
	e.print(t)
	return nil
}

func tokenReason(err error) string {
	switch {
	case errors.Is(err, array.ErrTokenEnabled):
		return array.ErrTokenEnabled.Error()
	case errors.Is(err, array.ErrTokenDisabled):
		return array.ErrTokenDisabled.Error()
	case errors.Is(err, array.ErrLocked):
		return "the array is locked; unlock it first (" + err.Error() + ")"
	}
	return reason(err)
}

func tokenDisable(e *env, p *parsed) error {
	st, err := e.a().Token()
	if err != nil {
		return errOn("security-token", "%v", err)
	}
	if !st.Enabled {
		return errOn("security-token", "%s", array.ErrTokenDisabled.Error())
	}
	if !p.has(eraseFlag) {
		return errOn("security-token", "disabling the security token crypto-erases the array: every array key share and DEK partition on every device is obliterated, "+
			"every volume, snapshot, host and connection is deleted, and the data can never be read again; "+
			"to do it, run purearray disable security-token --%s", eraseFlag)
	}
	if err := e.a().DisableToken(); err != nil {
		return errOn("security-token", "%s", tokenReason(err))
	}
	return tokenList(e, p)
}

func tokenTest(e *env, p *parsed) error {
	st, err := e.a().Token()
	if err != nil {
		return errOn("security-token", "%v", err)
	}
	if !st.Enabled {
		return errOn("security-token", "%s", array.ErrTokenDisabled.Error())
	}
	res, err := e.a().TestToken(context.Background())
	if err != nil {
		return errOn("security-token", "%s", tokenReason(err))
	}
	t := newTable("Type", "Server", "Status", "Details")
	if res.OK {
		t.add(txt(st.Type), txt(st.Server), txt("OK"), txt(""))
	} else {
		t.add(txt(st.Type), txt(st.Server), txt("Fail"), txt(res.Reason))
	}
	e.print(t)
	return nil
}

func arrayUnlock(e *env, p *parsed) error {
	a := e.a()
	if err := a.TryUnlock(); err != nil {
		_, why := a.Locked()
		return errOn(a.Name(), "the array is still locked: %s", why)
	}
	t := newTable("Name", "Status")
	t.add(txt(a.Name()), txt("unlocked"))
	e.print(t)
	return nil
}
