package mgmt

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/term"

	"vfa/array"
)

// purecert: the array's own certificates (its TLS identities towards KMIP
// servers and phone home). Private keys never leave the array; a CA signs
// the CSR that `purecert construct` prints, and `purecert setattr
// --certificate` imports the result (PEM on stdin).

const (
	pemBytesMax = 64 << 10 // longest PEM input
	pemLinesMax = 1200
)

func certGroup() *group {
	g := &group{name: "purecert", summary: "manage the array's certificates (TLS identities for KMIP servers and phone home)"}
	subject := []flagSpec{
		{name: "common-name", kind: flagValue, metavar: "CN", help: "the subject's common name"},
		{name: "country", kind: flagValue, metavar: "CC", help: "the subject's two-letter country code"},
		{name: "email", kind: flagValue, metavar: "EMAIL", help: "an e-mail address"},
		{name: "locality", kind: flagValue, metavar: "CITY", help: "the subject's locality"},
		{name: "organization", kind: flagValue, metavar: "ORG", help: "the subject's organization"},
		{name: "organizational-unit", kind: flagValue, metavar: "UNIT", help: "the subject's organizational unit"},
		{name: "state", kind: flagValue, metavar: "STATE", help: "the subject's state or province"},
	}
	create := append([]flagSpec{
		{name: "self-signed", required: true, help: "make a new key and a self-signed certificate (a CA-signed one replaces it with setattr)"},
		{name: "days", kind: flagValue, metavar: "DAYS", help: "validity in days (default 3650)"},
		{name: "key-algorithm", kind: flagValue, metavar: "ALG", help: "rsa (default) or ec (ECDSA P-256)"},
		{name: "key-size", kind: flagValue, metavar: "BITS", help: "RSA key size: 2048 (default) or 4096"},
	}, subject...)
	g.subs = []*command{
		{name: "construct", summary: "print a certificate signing request (PEM) for a certificate's key", args: "CERT", minArgs: 1, maxArgs: 1,
			flags: append([]flagSpec{{name: "certificate-signing-request", required: true, help: "print a CSR (the subject is the certificate's unless given)"}}, subject...),
			run:   certConstruct},
		{name: "create", summary: "create a certificate with a new private key", args: "CERT", minArgs: 1, maxArgs: 1, mutates: true,
			flags: create, run: certCreate},
		{name: "delete", summary: "delete certificates (not while a KMIP server uses them)", args: "CERT...", minArgs: 1, maxArgs: -1, mutates: true, run: certDelete},
		{name: "list", summary: "list certificates; with --certificate, print them as PEM", args: "[CERT...]", maxArgs: -1, list: true,
			flags: []flagSpec{{name: "certificate", help: "print the certificates (PEM) instead of the table"}}, run: certList},
		{name: "rename", summary: "rename a certificate (not while a KMIP server or phone home uses it)", args: "CERT NEW-NAME", minArgs: 2, maxArgs: 2, mutates: true, run: certRename},
		{name: "setattr", summary: "import a CA-signed certificate (PEM on stdin, until the end of input) for a certificate's key", args: "CERT", minArgs: 1, maxArgs: 1, mutates: true,
			flags: []flagSpec{{name: "certificate", required: true, help: "read the signed certificate (PEM, the array's certificate only, no chain) from stdin"}},
			input: func(e *env, p *parsed) error { return e.readPEMInput(p, "certificate", "signed certificate") }, run: certSetattr},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func certTable() *table {
	return newTable("Name", "Status", "Key Algorithm", "Key Size", "Issued To", "Issued By", "Valid From", "Valid To", "Common Name", "Organization")
}

func certRow(t *table, c array.CertInfo) {
	org := ""
	if c.Cert != nil && len(c.Cert.Subject.Organization) > 0 {
		org = c.Cert.Subject.Organization[0]
	}
	t.add(txt(c.Name), txt(c.Status), txt(c.KeyAlgo), num(int64(c.KeySize)), txt(c.IssuedTo), txt(c.IssuedBy),
		when(c.ValidFrom), when(c.ValidTo), txt(c.CommonName), txt(org))
}

// certReason turns a certificate error into the reason users see.
func certReason(err error) string {
	switch {
	case errors.Is(err, array.ErrNotFound):
		return "certificate does not exist"
	case errors.Is(err, array.ErrExists):
		return "certificate already exists"
	case errors.Is(err, array.ErrNotPEM):
		return "not a PEM certificate (give the array's certificate as -----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)"
	case errors.Is(err, array.ErrCertIntermediate):
		return "intermediate or CA certificates are not accepted: give the array's own certificate only, without its chain"
	case errors.Is(err, array.ErrCertMismatch):
		return "the certificate does not match this certificate's private key (sign the CSR that purecert construct prints)"
	}
	return reason(err)
}

func subjectOptions(p *parsed) array.CertOptions {
	return array.CertOptions{CommonName: p.val("common-name"), Organization: p.val("organization"),
		OrganizationalUnit: p.val("organizational-unit"), Locality: p.val("locality"), State: p.val("state"),
		Country: p.val("country"), Email: p.val("email"), KeyAlgorithm: p.val("key-algorithm")}
}

func certCreate(e *env, p *parsed) error {
	name := p.args[0]
	if err := checkName(name); err != nil {
		return err
	}
	if !p.has("self-signed") {
		return usagef("--self-signed is required (a CA-signed certificate is imported with purecert setattr --certificate)")
	}
	if !p.has("common-name") || p.val("common-name") == "" {
		return usagef("--common-name is required")
	}
	o := subjectOptions(p)
	if c := o.Country; c != "" && len(c) != 2 {
		return usagef("--country %q must be a two-letter country code", c)
	}
	for _, f := range []struct {
		flag string
		dst  *int
	}{{"key-size", &o.KeySize}, {"days", &o.Days}} {
		if !p.has(f.flag) {
			continue
		}
		n, err := strconv.Atoi(p.val(f.flag))
		if err != nil || n <= 0 {
			return usagef("--%s %q must be a positive number", f.flag, p.val(f.flag))
		}
		*f.dst = n
	}
	if _, err := e.a().Certificate(name); err == nil {
		return errOn(name, "certificate already exists")
	}
	ci, err := e.a().CreateCertificate(name, o)
	if err != nil {
		return errOn(name, "%s", certReason(err))
	}
	t := certTable()
	certRow(t, ci)
	e.print(t)
	return nil
}

func certList(e *env, p *parsed) error {
	all, err := e.a().Certificates()
	if err != nil {
		return errOn("purecert list", "%v", err)
	}
	var list []array.CertInfo
	if len(p.args) == 0 {
		list = all
	}
	for _, n := range p.args {
		found := false
		for _, c := range all {
			if lower(c.Name) == lower(n) {
				list, found = append(list, c), true
			}
		}
		if !found {
			return errOn(n, "certificate does not exist")
		}
	}
	if p.has("certificate") {
		for _, c := range list {
			e.out.WriteString(c.PEM)
		}
		return nil
	}
	t := certTable()
	for _, c := range list {
		certRow(t, c)
	}
	e.print(t)
	return nil
}

func certConstruct(e *env, p *parsed) error {
	name := p.args[0]
	if !p.has("certificate-signing-request") {
		return usagef("--certificate-signing-request is required")
	}
	var o *array.CertOptions
	if p.has("common-name") {
		so := subjectOptions(p)
		o = &so
	} else if p.count("country", "email", "locality", "organization", "organizational-unit", "state") > 0 {
		return usagef("give --common-name with the other subject fields (or none of them to use the certificate's subject)")
	}
	csr, err := e.a().CertificateRequest(name, o)
	if err != nil {
		return errOn(name, "%s", certReason(err))
	}
	e.out.WriteString(csr)
	return nil
}

func certSetattr(e *env, p *parsed) error {
	name := p.args[0]
	ci, err := e.a().ImportCertificate(name, []byte(e.secrets["certificate"]))
	if err != nil {
		return errOn(name, "%s", certReason(err))
	}
	t := certTable()
	certRow(t, ci)
	e.print(t)
	return nil
}

func certDelete(e *env, p *parsed) error {
	if err := uniqueArgs(p.args); err != nil {
		return err
	}
	a := e.a()
	inUse := func(n string) string { return strings.Join(a.CertificateUsers(n), ", ") }
	// All or nothing: check every name first.
	for _, n := range p.args {
		if _, err := a.Certificate(n); err != nil {
			return errOn(n, "%s", certReason(err))
		}
		if u := inUse(n); u != "" {
			return errOn(n, "certificate is in use by %s", u)
		}
	}
	for _, n := range p.args {
		if err := a.DeleteCertificate(n, inUse); err != nil {
			return errOn(n, "%s", certReason(err))
		}
	}
	e.print(nameTable(p.args...))
	return nil
}

func certRename(e *env, p *parsed) error {
	a := e.a()
	c, err := a.Certificate(p.args[0])
	if err != nil {
		return errOn(p.args[0], "%s", certReason(err))
	}
	nn := p.args[1]
	if err := checkName(nn); err != nil {
		return err
	}
	if u := strings.Join(a.CertificateUsers(c.Name), ", "); u != "" {
		return errOn(c.Name, "certificate is in use by %s", u)
	}
	inUse := func(n string) string { return strings.Join(a.CertificateUsers(n), ", ") }
	if err := a.RenameCertificate(c.Name, nn, inUse); err != nil {
		if errors.Is(err, array.ErrExists) {
			return errOn(nn, "%s", certReason(err))
		}
		return errOn(c.Name, "%s", certReason(err))
	}
	e.print(nameTable(nn))
	return nil
}

// readPEMInput reads PEM text for the option flag (when it is given) into
// e.secrets[flag]: stdin to its end in an exec session; in the interactive
// shell, pasted lines up to an empty line after an END line (or Ctrl-D).
func (e *env) readPEMInput(p *parsed, flag, what string) error {
	if !p.has(flag) {
		return nil
	}
	if e.secrets == nil {
		e.secrets = map[string]string{}
	}
	var b strings.Builder
	lines := 0
	if e.term != nil {
		fmt.Fprintf(e.term, "Paste the %s (PEM), then an empty line:\n", what)
		e.term.SetPrompt("")
	}
	for {
		var line string
		var err error
		switch {
		case e.term != nil:
			line, err = e.term.ReadLine()
			if errors.Is(err, term.ErrPasteIndicator) {
				err = nil
			}
		case e.in != nil:
			line, err = readLine(e.in)
		default:
			err = io.EOF
		}
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return errOn(p.args[0], "reading the %s: %v", what, err)
		}
		if e.term != nil && strings.TrimSpace(line) == "" && strings.Contains(b.String(), "-----END") {
			break
		}
		if lines++; lines > pemLinesMax || b.Len()+len(line) > pemBytesMax {
			return errOn(p.args[0], "the %s is longer than %d bytes or %d lines", what, pemBytesMax, pemLinesMax)
		}
		b.WriteString(line)
		b.WriteByte('\n')
	}
	if strings.TrimSpace(b.String()) == "" {
		return errOn(p.args[0], "no %s given on stdin", what)
	}
	e.secrets[flag] = b.String()
	return nil
}
