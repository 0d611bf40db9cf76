package mgmt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/term"

	"vfa/array"
)

// The dispatcher: one table of commands, used by exec sessions, the
// interactive shell and the line shell alike.
//
// A command runs in three steps: its options and arguments are parsed and
// checked; input it needs (passwords, keys) is read; then, for a command that
// changes anything, under the server's command lock, it checks every object
// it will touch and applies its changes. Its output is buffered and written
// when it is done. A failure prints one line "Error on <object>: <reason>."
// on stderr, and the exit status is 1.
//
// Atomicity: a command that names several objects (purevol create v1 v2 v3)
// checks all of them before it changes any; if one is wrong, none is
// changed. If applying fails part way (an I/O error), the changes already
// made are undone where that is possible (created objects removed, destroyed
// volumes recovered and reconnected); eradication cannot be undone, so
// purevol eradicate reports the volumes it did eradicate.
//
// Every command that changes anything, and every failed attempt at one, is
// appended to the array's audit log with the user, the client address, the
// time, the command line and the result.

// cliError is an error reported as "Error on <object>: <reason>."
type cliError struct {
	object string
	reason string
}

func (e *cliError) Error() string { return "Error on " + e.object + ": " + sentence(e.reason) }

func errOn(object, format string, args ...any) error {
	return &cliError{object: object, reason: fmt.Sprintf(format, args...)}
}

// sentence capitalises the first letter and ends with exactly one period.
func sentence(s string) string {
	s = strings.TrimSpace(s)
	if s == "" {
		return "Failed."
	}
	r, n := utf8.DecodeRuneInString(s)
	s = string(unicode.ToUpper(r)) + s[n:]
	if !strings.HasSuffix(s, ".") {
		s += "."
	}
	return s
}

// command is one subcommand (or a top-level command without subcommands).
type command struct {
	group   string // "purevol"
	name    string // "create"; "" for a command without subcommands
	summary string
	args    string // usage of the positional arguments, "VOL..."
	minArgs int
	maxArgs int // -1: no limit
	flags   []flagSpec
	list    bool // takes the output options
	mutates bool
	// input reads what the command needs from the user (before the lock).
	input func(e *env, p *parsed) error
	run   func(e *env, p *parsed) error
}

func (c *command) path() string {
	if c.name == "" {
		return c.group
	}
	return c.group + " " + c.name
}

func (c *command) allFlags() []flagSpec {
	if !c.list {
		return c.flags
	}
	return append(append([]flagSpec(nil), c.flags...), outFlags...)
}

// group is a top-level command.
type group struct {
	name    string
	summary string
	subs    []*command
}

type registry struct {
	groups map[string]*group
	order  []string
}

func (r *registry) add(g *group) {
	if r.groups == nil {
		r.groups = map[string]*group{}
	}
	r.groups[g.name] = g
	r.order = append(r.order, g.name)
	sort.Strings(r.order)
}

func (g *group) sub(name string) *command {
	for _, c := range g.subs {
		if c.name == name {
			return c
		}
	}
	return nil
}

// env is what a running command sees of its session.
type env struct {
	s      *Server
	user   string
	source string
	in     *bufio.Reader  // stdin (exec sessions and the line shell)
	term   *term.Terminal // the interactive shell's terminal
	out    bytes.Buffer   // the command's output
	p      *parsed
	opts   outOpts
	// secrets holds what a command's input step read (passwords, keys).
	secrets map[string]string
	line    string // the command line being run, for the audit log
	audited bool
}

func (e *env) setStdin(r io.Reader) { e.in = bufio.NewReaderSize(r, 4096) }

func (e *env) a() *array.Array { return e.s.a }

// print renders a table with the command's output options.
func (e *env) print(t *table) { t.write(&e.out, e.opts) }

// runLine runs one command line and returns its exit status.
func (s *Server) runLine(e *env, line string, stdout, stderr io.Writer) int {
	words, err := splitLine(line)
	if err != nil {
		fmt.Fprintln(stderr, errOn("command line", "%v", err).Error())
		return 1
	}
	return s.run(e, line, words, stdout, stderr)
}

// run runs one command given as words.
func (s *Server) run(e *env, line string, words []string, stdout, stderr io.Writer) int {
	if len(words) == 0 || (len(words) == 1 && isExit(words[0])) {
		return 0 // "exit" in exec mode: nothing to do
	}
	e.out.Reset()
	e.p, e.secrets = nil, nil
	cmd, rest, err := s.cmds.find(&e.out, words)
	if err == nil && cmd == nil { // help was printed
		_, _ = stdout.Write(e.out.Bytes())
		return 0
	}
	if err == nil {
		e.line, e.audited = strings.TrimSpace(line), false
		err = s.runCommand(e, cmd, rest)
		if cmd.mutates && !e.audited {
			s.audit(e, err) // it failed before it could take the lock
		}
	}
	if e.out.Len() > 0 {
		_, _ = stdout.Write(e.out.Bytes())
	}
	if err != nil {
		msg := err.Error()
		var ce *cliError
		if !errors.As(err, &ce) {
			msg = errOn(words[0], "%v", err).Error()
		}
		fmt.Fprintln(stderr, msg)
		return 1
	}
	return 0
}

// find resolves words to a command and its remaining words. It returns a nil
// command (and no error) when it printed help instead.
func (r *registry) find(out *bytes.Buffer, words []string) (*command, []string, error) {
	if words[0] == "help" || words[0] == "--help" || words[0] == "-h" {
		return nil, nil, r.help(out, words[1:])
	}
	g, ok := r.groups[words[0]]
	if !ok {
		return nil, nil, errOn(words[0], `unknown command; type "help" for the list of commands`)
	}
	if len(g.subs) == 1 && g.subs[0].name == "" {
		return g.subs[0], words[1:], nil
	}
	if len(words) == 1 {
		return nil, nil, errOn(g.name, `missing subcommand; type "%s --help" for its subcommands`, g.name)
	}
	switch words[1] {
	case "help", "--help", "-h":
		writeGroupHelp(out, g)
		return nil, nil, nil
	}
	c := g.sub(words[1])
	if c == nil {
		return nil, nil, errOn(g.name, `unknown subcommand %q; type "%s --help" for its subcommands`, words[1], g.name)
	}
	return c, words[2:], nil
}

func (s *Server) runCommand(e *env, c *command, words []string) error {
	p, err := parseFlags(c.allFlags(), words)
	if err != nil {
		return errOn(c.path(), "%v", err)
	}
	if p.has("help") {
		writeCommandHelp(&e.out, c)
		return nil
	}
	if len(p.args) < c.minArgs {
		return errOn(c.path(), "too few arguments; usage: %s", usageLine(c))
	}
	if c.maxArgs >= 0 && len(p.args) > c.maxArgs {
		return errOn(c.path(), "too many arguments; usage: %s", usageLine(c))
	}
	e.p = p
	if c.list {
		if e.opts, err = outOptions(p); err != nil {
			return errOn(c.path(), "%v", err)
		}
	} else {
		e.opts = outOpts{}
	}
	if c.input != nil {
		if err := c.input(e, p); err != nil {
			return err
		}
	}
	if !c.mutates {
		return s.apply(e, c, p)
	}
	// Changes are applied and audited under the lock, so the audit log's
	// order is the order in which they happened.
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	err = s.apply(e, c, p)
	s.audit(e, err)
	e.audited = true
	return err
}

func (s *Server) apply(e *env, c *command, p *parsed) error {
	if err := c.run(e, p); err != nil {
		var ue *usageError
		if errors.As(err, &ue) {
			return errOn(c.path(), "%v", err)
		}
		return err
	}
	return nil
}

// audit records a command that changes something (or tried to).
func (s *Server) audit(e *env, err error) {
	line := e.line
	result := "ok"
	if err != nil {
		result = err.Error()
	}
	if e.p != nil && e.p.has("help") && err == nil {
		return // only printed help
	}
	if _, aerr := s.a.Audit(array.AuditEntry{Time: s.c.Now(), User: e.user, Source: e.source, Command: line, Result: result}); aerr != nil {
		s.log.Error("mgmt: audit log", "err", aerr, "command", line, "user", e.user)
	}
}

// Help.

func usageLine(c *command) string {
	var b strings.Builder
	b.WriteString(c.path())
	for _, f := range c.flags {
		opt := "--" + f.name
		if f.kind == flagValue {
			opt += " " + f.metavar
		}
		if !f.required {
			opt = "[" + opt + "]"
		}
		b.WriteString(" " + opt)
	}
	if c.list {
		b.WriteString(" [--csv | --nvp] [--notitle] [--raw]")
	}
	if c.args != "" {
		b.WriteString(" " + c.args)
	}
	return b.String()
}

func writeCommandHelp(b *bytes.Buffer, c *command) {
	fmt.Fprintf(b, "usage: %s\n\n%s\n\noptions:\n", usageLine(c), sentence(c.summary))
	flags := append(c.allFlags(), flagSpec{name: "help", help: "show this help"})
	w := 0
	names := make([]string, len(flags))
	for i, f := range flags {
		names[i] = "--" + f.name
		if f.kind == flagValue {
			names[i] += " " + f.metavar
		}
		w = max(w, len(names[i]))
	}
	for i, f := range flags {
		fmt.Fprintf(b, "  %-*s  %s\n", w, names[i], f.help)
	}
}

func writeGroupHelp(b *bytes.Buffer, g *group) {
	fmt.Fprintf(b, "usage: %s SUBCOMMAND [OPTIONS] [ARGS]\n\n%s\n\nsubcommands:\n", g.name, sentence(g.summary))
	w := 0
	for _, c := range g.subs {
		w = max(w, len(c.name))
	}
	for _, c := range g.subs {
		fmt.Fprintf(b, "  %-*s  %s\n", w, c.name, c.summary)
	}
	fmt.Fprintf(b, "\nType \"%s SUBCOMMAND --help\" for a subcommand's options.\n", g.name)
}

func (r *registry) help(b *bytes.Buffer, words []string) error {
	if len(words) > 0 {
		g, ok := r.groups[words[0]]
		if !ok {
			return errOn(words[0], `unknown command; type "help" for the list of commands`)
		}
		if len(g.subs) == 1 && g.subs[0].name == "" {
			writeCommandHelp(b, g.subs[0])
			return nil
		}
		if len(words) > 1 {
			c := g.sub(words[1])
			if c == nil {
				return errOn(g.name, `unknown subcommand %q; type "%s --help" for its subcommands`, words[1], g.name)
			}
			writeCommandHelp(b, c)
			return nil
		}
		writeGroupHelp(b, g)
		return nil
	}
	b.WriteString("Commands:\n")
	w := 0
	for _, n := range r.order {
		w = max(w, len(n))
	}
	for _, n := range r.order {
		fmt.Fprintf(b, "  %-*s  %s\n", w, n, r.groups[n].summary)
	}
	fmt.Fprintf(b, "  %-*s  %s\n", w, "exit", "end the session (also logout, quit, Ctrl-D)")
	b.WriteString("\nType \"COMMAND --help\" (or \"help COMMAND\") for a command's subcommands and options.\n")
	return nil
}
