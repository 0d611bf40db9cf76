package mgmt

import (
	"errors"
	"fmt"
	"io"
	"strings"

	gossh "golang.org/x/crypto/ssh"

	"vfa/array"
)

// The administrator account pureuser: set up at init, changed with pureadmin.

// SetupAdmin gives pureuser its first credentials and creates the SSH host
// key. With authorizedKeys (one or more authorized_keys lines, e.g. the
// contents of FILE.pub) pureuser logs in with those keys and has no password,
// and generatedPassword is empty. Without, a random password is generated,
// only its hash is stored, and it is returned to be shown once. Calling it
// again replaces pureuser's credentials.
func SetupAdmin(a *array.Array, authorizedKeys string) (generatedPassword string, err error) {
	if _, err := hostSigner(a); err != nil {
		return "", err
	}
	now := a.Config().Created
	if cur, err := a.Admin(AdminUser); err == nil {
		now = cur.Created
	}
	ad := array.Admin{Name: AdminUser, Created: now, Changed: now}
	if strings.TrimSpace(authorizedKeys) != "" {
		if ad.PublicKeys, err = parseKeys(strings.Split(authorizedKeys, "\n")); err != nil {
			return "", fmt.Errorf("mgmt: admin key: %w", err)
		}
	} else {
		if generatedPassword, err = generatePassword(); err != nil {
			return "", err
		}
		if ad.PasswordHash, err = hashPassword(generatedPassword); err != nil {
			return "", err
		}
	}
	if err := a.PutAdmin(ad); err != nil {
		return "", fmt.Errorf("mgmt: admin: %w", err)
	}
	return generatedPassword, nil
}

// HasAdmin reports whether pureuser has a password or a public key.
func HasAdmin(a *array.Array) (bool, error) {
	ad, err := a.Admin(AdminUser)
	if errors.Is(err, array.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return ad.PasswordHash != "" || len(ad.PublicKeys) > 0, nil
}

// parseKeys parses authorized_keys lines (blank lines and # comments are
// skipped) and returns them in canonical form ("type base64 comment").
func parseKeys(lines []string) ([]string, error) {
	var out []string
	for i, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		k, comment, options, _, err := gossh.ParseAuthorizedKey([]byte(l))
		if err != nil {
			return nil, fmt.Errorf("line %d is not a public key (expected e.g. \"ssh-ed25519 AAAA... comment\")", i+1)
		}
		if len(options) > 0 {
			return nil, fmt.Errorf("line %d: key options are not supported", i+1)
		}
		s := strings.TrimSpace(string(gossh.MarshalAuthorizedKey(k)))
		if comment != "" {
			s += " " + comment
		}
		if len(out) == array.AdminKeysMax {
			return nil, fmt.Errorf("more than %d keys", array.AdminKeysMax)
		}
		out = append(out, s)
	}
	if len(out) == 0 {
		return nil, errors.New("no public key given")
	}
	return out, nil
}

func adminGroup() *group {
	g := &group{name: "pureadmin", summary: "show and change administrator credentials"}
	g.subs = []*command{
		{name: "list", summary: "list administrators", maxArgs: 0, list: true, run: adminList},
		{name: "setattr", summary: "set an administrator's password or public keys", args: "[NAME]", maxArgs: 1, mutates: true,
			flags: []flagSpec{
				{name: "password", help: "set a new password (prompted for twice; without a terminal, one line of stdin)"},
				{name: "publickey", help: "replace the public keys with authorized_keys lines read from stdin (up to an empty line or the end)"},
			}, input: adminInput, run: adminSetattr},
	}
	for _, c := range g.subs {
		c.group = g.name
	}
	return g
}

func adminList(e *env, p *parsed) error {
	ads, err := e.a().Admins()
	if err != nil {
		return errOn("pureadmin", "%v", err)
	}
	t := newTable("Name", "Type", "Role", "Password", "Public Keys")
	for _, ad := range ads {
		pw := "no"
		if ad.PasswordHash != "" {
			pw = "yes"
		}
		t.add(txt(ad.Name), txt("local"), txt("array_admin"), txt(pw), num(int64(len(ad.PublicKeys))))
	}
	e.print(t)
	return nil
}

func adminTarget(e *env, p *parsed) string {
	if len(p.args) > 0 {
		return p.args[0]
	}
	return e.user
}

// adminInput reads the new password and keys before the lock.
func adminInput(e *env, p *parsed) error {
	if !p.has("password") && !p.has("publickey") {
		return errOn("pureadmin setattr", "nothing to change; give --password or --publickey")
	}
	name := adminTarget(e, p)
	if name != AdminUser {
		return errOn(name, "administrator does not exist")
	}
	e.secrets = map[string]string{}
	if p.has("password") {
		pw, err := e.readSecret("new password")
		if err != nil {
			if errors.Is(err, errMismatch) {
				return errOn(name, "the two passwords do not match")
			}
			if errors.Is(err, io.EOF) {
				return errOn(name, "no password given")
			}
			return errOn(name, "reading the password: %v", err)
		}
		if err := checkNewPassword(pw); err != nil {
			return errOn(name, "%v", err)
		}
		if e.secrets["password"], err = hashPassword(pw); err != nil {
			return errOn(name, "%v", err)
		}
	}
	if p.has("publickey") {
		lines, err := e.readLines("Enter public keys, one per line, then an empty line:", array.AdminKeysMax)
		if err != nil {
			return errOn(name, "reading public keys: %v", err)
		}
		keys, err := parseKeys(lines)
		if err != nil {
			return errOn(name, "%v", err)
		}
		e.secrets["publickey"] = strings.Join(keys, "\n")
	}
	return nil
}

func adminSetattr(e *env, p *parsed) error {
	name := adminTarget(e, p)
	ad, err := e.a().Admin(name)
	if errors.Is(err, array.ErrNotFound) {
		ad = array.Admin{Name: AdminUser, Created: e.s.c.Now()}
	} else if err != nil {
		return errOn(name, "%v", err)
	}
	if h, ok := e.secrets["password"]; ok {
		ad.PasswordHash = h
	}
	if k, ok := e.secrets["publickey"]; ok {
		ad.PublicKeys = strings.Split(k, "\n")
	}
	ad.Changed = e.s.c.Now()
	if err := e.a().PutAdmin(ad); err != nil {
		return errOn(name, "%v", err)
	}
	e.print(nameTable(ad.Name))
	return nil
}
