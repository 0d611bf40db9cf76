package mgmt

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"strings"

	"vfa/array"
)

// purekmip: the KMIP servers the array fetches its security token's key
// from: addresses (failover in order), the array certificate it presents,
// and the CA that signed the server's certificate (PEM on stdin).

func kmipGroup() *group {
	g := &group{name: "purekmip", summary: "manage KMIP servers (where the security token's key is kept)"}
	caFlag := flagSpec{name: "ca-certificate", help: "read the CA certificate(s) that signed the server's certificate (PEM) from stdin"}
	g.subs = []*command{
		{name: "create", summary: "define a KMIP server", args: "NAME", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "uri", kind: flagValue, metavar: "HOST:PORT[,...]", required: true, help: "the server's addresses, tried in order"},
				{name: "certificate", kind: flagValue, metavar: "CERT", required: true, help: "the array certificate presented to the server"},
				{name: "ca-certificate", required: true, help: caFlag.help},
			},
			input: func(e *env, p *parsed) error { return e.readPEMInput(p, "ca-certificate", "CA certificate") },
			run:   kmipCreate},
		{name: "delete", summary: "delete KMIP servers (not while the security token uses them)", args: "NAME...", minArgs: 1, maxArgs: -1, mutates: true, run: kmipDelete},
		{name: "list", summary: "list KMIP servers; with --ca-certificate, print their CA certificates (PEM)", args: "[NAME...]", maxArgs: -1, list: true,
			flags: []flagSpec{{name: "ca-certificate", help: "print the servers' CA certificates (PEM) instead of the table"}}, run: kmipList},
		{name: "setattr", summary: "change a KMIP server's addresses, certificate or CA certificate", args: "NAME", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "uri", kind: flagValue, metavar: "HOST:PORT[,...]", help: "replace the addresses"},
				{name: "certificate", kind: flagValue, metavar: "CERT", help: "present another array certificate"},
				caFlag,
			},
			input: func(e *env, p *parsed) error { return e.readPEMInput(p, "ca-certificate", "CA certificate") },
			run:   kmipSetattr},
		{name: "test", summary: "connect to a KMIP server with the array's certificate (TLS, KMIP DiscoverVersions) and run a Locate", args: "NAME", minArgs: 1, maxArgs: 1, list: true, run: kmipTest},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func kmipTable() *table {
	return newTable("Name", "URI", "Certificate", "CA Certificate")
}

func kmipRow(t *table, s array.KMIPServer) {
	var cas []string
	rest := []byte(s.CA)
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil {
			cas = append(cas, c.Subject.String())
		}
	}
	t.add(txt(s.Name), multi(s.URIs), txt(s.Certificate), multi(cas))
}

func kmipReason(err error) string {
	switch {
	case errors.Is(err, array.ErrNotFound) && strings.HasPrefix(err.Error(), "certificate"):
		return "certificate does not exist"
	case errors.Is(err, array.ErrNotFound):
		return "KMIP server does not exist"
	case errors.Is(err, array.ErrExists):
		return "KMIP server already exists"
	case errors.Is(err, array.ErrBadCA):
		r := "the CA certificate is not a PEM certificate"
		if d := strings.TrimPrefix(err.Error(), array.ErrBadCA.Error()); d != "" {
			r += " (" + strings.TrimPrefix(d, ": ") + ")"
		}
		return r
	}
	return reason(err)
}

func parseURIs(v string) ([]string, error) {
	uris, err := splitList("uri", v)
	if err != nil {
		return nil, err
	}
	if err := array.CheckKMIPURIs(uris); err != nil {
		return nil, usagef("--uri: %s", reason(err))
	}
	return uris, nil
}

func kmipCreate(e *env, p *parsed) error {
	name := p.args[0]
	if err := checkName(name); err != nil {
		return err
	}
	if !p.has("uri") || !p.has("certificate") || !p.has("ca-certificate") {
		return usagef("--uri, --certificate and --ca-certificate (the CA's PEM on stdin) are required")
	}
	uris, err := parseURIs(p.val("uri"))
	if err != nil {
		return err
	}
	if _, err := e.a().Certificate(p.val("certificate")); err != nil {
		return errOn(p.val("certificate"), "certificate does not exist")
	}
	s, err := e.a().CreateKMIPServer(array.KMIPServer{Name: name, URIs: uris, Certificate: p.val("certificate"), CA: e.secrets["ca-certificate"]})
	if err != nil {
		return errOn(name, "%s", kmipReason(err))
	}
	t := kmipTable()
	kmipRow(t, s)
	e.print(t)
	return nil
}

func (e *env) kmipServers(names []string) ([]array.KMIPServer, error) {
	all, err := e.a().KMIPServers()
	if err != nil {
		return nil, errOn("purekmip", "%v", err)
	}
	if len(names) == 0 {
		return all, nil
	}
	var out []array.KMIPServer
	for _, n := range names {
		found := false
		for _, s := range all {
			if lower(s.Name) == lower(n) {
				out, found = append(out, s), true
			}
		}
		if !found {
			return nil, errOn(n, "KMIP server does not exist")
		}
	}
	return out, nil
}

func kmipList(e *env, p *parsed) error {
	list, err := e.kmipServers(p.args)
	if err != nil {
		return err
	}
	if p.has("ca-certificate") {
		for _, s := range list {
			e.out.WriteString(s.CA)
		}
		return nil
	}
	t := kmipTable()
	for _, s := range list {
		kmipRow(t, s)
	}
	e.print(t)
	return nil
}

func kmipSetattr(e *env, p *parsed) error {
	name := p.args[0]
	if p.count("uri", "certificate", "ca-certificate") == 0 {
		return usagef("nothing to change; give --uri, --certificate or --ca-certificate")
	}
	var uris []string
	if p.has("uri") {
		var err error
		if uris, err = parseURIs(p.val("uri")); err != nil {
			return err
		}
	}
	if p.has("certificate") {
		if _, err := e.a().Certificate(p.val("certificate")); err != nil {
			return errOn(p.val("certificate"), "certificate does not exist")
		}
	}
	s, err := e.a().UpdateKMIPServer(name, func(s *array.KMIPServer) error {
		if uris != nil {
			s.URIs = uris
		}
		if p.has("certificate") {
			s.Certificate = p.val("certificate")
		}
		if ca, ok := e.secrets["ca-certificate"]; ok {
			s.CA = ca
		}
		return nil
	})
	if err != nil {
		return errOn(name, "%s", kmipReason(err))
	}
	t := kmipTable()
	kmipRow(t, s)
	e.print(t)
	return nil
}

func kmipDelete(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	list, err := e.kmipServers(p.args)
	if err != nil {
		return err
	}
	tok, err := e.a().Token()
	if err != nil {
		return errOn("purekmip delete", "%v", err)
	}
	for _, s := range list {
		if tok.Enabled && tok.Type == array.TokenKMIP && lower(tok.Server) == lower(s.Name) {
			return errOn(s.Name, "KMIP server is used by the security token")
		}
	}
	for _, s := range list {
		if err := e.a().DeleteKMIPServer(s.Name); err != nil {
			return errOn(s.Name, "%s", kmipReason(err))
		}
	}
	e.print(nameTable(p.args...))
	return nil
}

func kmipTest(e *env, p *parsed) error {
	name := p.args[0]
	res, err := e.a().TestKMIPServer(context.Background(), name)
	if err != nil {
		return errOn(name, "%s", kmipReason(err))
	}
	s, _ := e.a().KMIPServerByName(name)
	t := newTable("Name", "URI", "Status", "KMIP Version", "Details")
	if res.OK {
		t.add(txt(s.Name), txt(res.Addr), txt("OK"), txt(res.Version), txt(""))
	} else {
		t.add(txt(s.Name), multi(s.URIs), txt("Fail"), txt(""), txt(res.Reason))
	}
	e.print(t)
	return nil
}
