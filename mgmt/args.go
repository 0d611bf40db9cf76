package mgmt

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Command lines and options.
//
// A command line is split into words the way a POSIX shell splits a simple
// command: blanks separate words; single quotes keep everything literally;
// double quotes keep everything but `\"` and `\\`; a backslash outside quotes
// keeps the next character. There are no variables, globs or pipes.
//
// Options are long only ("--size 10G" or "--size=10G"); "-h" is "--help".
// They may come before, between or after the positional arguments; "--"
// ends the options.

const (
	lineBytesMax = 64 << 10 // longest command line
	wordsMax     = 1024     // most words in one command line
)

var errUnterminated = errors.New("unterminated quote")

// splitLine splits a command line into words.
func splitLine(line string) ([]string, error) {
	if len(line) > lineBytesMax {
		return nil, fmt.Errorf("command line is %d bytes, over the limit of %d", len(line), lineBytesMax)
	}
	var (
		words []string
		cur   strings.Builder
		in    bool // inside a word
	)
	flush := func() error {
		if in {
			if len(words) == wordsMax {
				return fmt.Errorf("command line has more than %d words", wordsMax)
			}
			words = append(words, cur.String())
			cur.Reset()
			in = false
		}
		return nil
	}
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			if err := flush(); err != nil {
				return nil, err
			}
		case c == '\'':
			in = true
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errUnterminated
			}
			cur.WriteString(line[i+1 : i+1+j])
			i += j + 1
		case c == '"':
			in = true
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				if line[i] == '\\' && i+1 < len(line) && (line[i+1] == '"' || line[i+1] == '\\') {
					i++
				}
				cur.WriteByte(line[i])
			}
			if i >= len(line) {
				return nil, errUnterminated
			}
		case c == '\\':
			in = true
			if i+1 < len(line) {
				i++
				cur.WriteByte(line[i])
			}
		default:
			in = true
			cur.WriteByte(c)
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return words, nil
}

// quoteWord quotes a word so that splitLine reads it back unchanged.
func quoteWord(w string) string {
	if w != "" && !strings.ContainsAny(w, " \t\r\n'\"\\") {
		return w
	}
	return "'" + strings.ReplaceAll(w, "'", `'\''`) + "'"
}

// flagKind says whether an option takes a value.
type flagKind int

const (
	flagBool flagKind = iota
	flagValue
)

// flagSpec describes one option of a command.
type flagSpec struct {
	name    string // without "--"
	kind    flagKind
	metavar string // for flagValue: what the value is ("SIZE")
	help    string
	// required: the command checks that it is given; usage shows it
	// without brackets.
	required bool
}

// parsed is a parsed command line: options set and positional arguments.
type parsed struct {
	set  map[string]bool
	vals map[string]string
	args []string
}

func (p *parsed) has(name string) bool   { return p.set[name] }
func (p *parsed) val(name string) string { return p.vals[name] }
func (p *parsed) count(names ...string) int {
	n := 0
	for _, name := range names {
		if p.set[name] {
			n++
		}
	}
	return n
}

// usageError is a mistake in how a command was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// parseFlags reads options and arguments against specs.
func parseFlags(specs []flagSpec, words []string) (*parsed, error) {
	p := &parsed{set: map[string]bool{}, vals: map[string]string{}}
	lookup := func(name string) *flagSpec {
		for i := range specs {
			if specs[i].name == name {
				return &specs[i]
			}
		}
		return nil
	}
	for i := 0; i < len(words); i++ {
		w := words[i]
		switch {
		case w == "--":
			p.args = append(p.args, words[i+1:]...)
			return p, nil
		case w == "-h":
			p.set["help"] = true
			continue
		case strings.HasPrefix(w, "--"):
		case len(w) > 1 && w[0] == '-':
			return nil, usagef("unknown option %s", w)
		default:
			p.args = append(p.args, w)
			continue
		}
		name, val, hasVal := strings.Cut(w[2:], "=")
		if name == "help" {
			p.set["help"] = true
			continue
		}
		spec := lookup(name)
		if spec == nil {
			return nil, usagef("unknown option --%s", name)
		}
		if p.set[name] {
			return nil, usagef("option --%s is given more than once", name)
		}
		switch spec.kind {
		case flagBool:
			if hasVal {
				return nil, usagef("option --%s takes no value", name)
			}
		case flagValue:
			if !hasVal {
				if i+1 >= len(words) {
					return nil, usagef("option --%s needs a value (%s)", name, spec.metavar)
				}
				i++
				val = words[i]
			}
			p.vals[name] = val
		}
		p.set[name] = true
	}
	return p, nil
}

// splitList splits a comma-separated option value ("a,b,c"), dropping empty
// items; duplicates (case-insensitive) are an error.
func splitList(opt, v string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, s := range strings.Split(v, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if seen[strings.ToLower(s)] {
			return nil, usagef("--%s names %s more than once", opt, s)
		}
		seen[strings.ToLower(s)] = true
		out = append(out, s)
	}
	return out, nil
}

// parseLUN reads a --lun value: 1 to 255.
func parseLUN(v string) (int, error) {
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > 255 {
		return 0, usagef("--lun %q must be a number from 1 to 255", v)
	}
	return n, nil
}
