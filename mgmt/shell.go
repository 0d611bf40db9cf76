package mgmt

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"strings"

	gssh "github.com/gliderlabs/ssh"
	"golang.org/x/term"
)

// Shells. With a pty the session gets an interactive shell: a prompt
// "pureuser@<array name>> ", line editing and history (golang.org/x/term:
// arrows, Home/End, Ctrl-A/E/K/U/W, Up/Down for the last 100 lines), Ctrl-C
// abandons the line, Ctrl-D on an empty line or "exit", "logout" or "quit"
// ends the session. Without a pty (ssh -T, or commands piped in) it reads one
// command per line from stdin, with no prompt, and exits with the status of
// the last command.

const inputLineMax = 16 << 10 // longest line of input (a command, a key, a password)

var (
	errLineTooLong = errors.New("input line too long")
	errMismatch    = errors.New("the two entries do not match")
)

func isExit(line string) bool {
	switch strings.TrimSpace(line) {
	case "exit", "logout", "quit":
		return true
	}
	return false
}

func (s *Server) prompt(user string) string { return user + "@" + s.a.Name() + "> " }

// interactive runs the shell on a pty.
func (s *Server) interactive(e *env, sess gssh.Session, pty gssh.Pty, winCh <-chan gssh.Window) int {
	t := term.NewTerminal(&ctrlC{rw: sess}, s.prompt(e.user))
	setSize(t, pty.Window)
	go func() {
		// Drain window changes (the channel closes with the session).
		for w := range winCh {
			setSize(t, w)
		}
	}()
	e.term = t
	fmt.Fprintf(t, "Welcome to %s. Type \"help\" for the list of commands.\n", s.a.Name())
	for {
		t.SetPrompt(s.prompt(e.user))
		line, err := t.ReadLine()
		if err != nil && !errors.Is(err, term.ErrPasteIndicator) {
			return 0
		}
		if isExit(line) {
			return 0
		}
		s.runLine(e, line, t, t)
	}
}

// setSize applies a window size; a client without a terminal of its own
// (ssh -tt from a script) reports 0x0, which means 80x24.
func setSize(t *term.Terminal, w gssh.Window) {
	if w.Width <= 0 {
		w.Width = 80
	}
	if w.Height <= 0 {
		w.Height = 24
	}
	_ = t.SetSize(w.Width, w.Height)
}

// lineShell runs commands read from stdin, one per line.
func (s *Server) lineShell(e *env, stdin io.Reader, stdout, stderr io.Writer) int {
	e.setStdin(stdin)
	status := 0
	for {
		line, err := readLine(e.in)
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				fmt.Fprintln(stderr, errOn("command line", "%v", err).Error())
				return 1
			}
			return status
		}
		if isExit(line) {
			return status
		}
		status = s.runLine(e, line, stdout, stderr)
	}
}

// readLine reads one line (without its end) of at most inputLineMax bytes.
// A last line without a newline is returned with a nil error; io.EOF comes
// after it.
func readLine(r *bufio.Reader) (string, error) {
	var b []byte
	for {
		frag, err := r.ReadSlice('\n')
		b = append(b, frag...)
		if len(b) > inputLineMax {
			return "", errLineTooLong
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if len(b) > 0 && errors.Is(err, io.EOF) {
			break
		}
		return "", err
	}
	return strings.TrimRight(string(b), "\r\n"), nil
}

// readSecret asks for a secret: twice without echo on a terminal, otherwise
// one line from stdin.
func (e *env) readSecret(what string) (string, error) {
	if e.term != nil {
		a, err := e.term.ReadPassword("Enter " + what + ": ")
		if err != nil {
			return "", err
		}
		b, err := e.term.ReadPassword("Retype " + what + ": ")
		if err != nil {
			return "", err
		}
		if a != b {
			return "", errMismatch
		}
		return a, nil
	}
	if e.in == nil {
		return "", io.EOF
	}
	return readLine(e.in)
}

// readLines reads lines until an empty line or the end of input, at most
// max of them (more is an error).
func (e *env) readLines(prompt string, max int) ([]string, error) {
	var out []string
	for {
		var line string
		var err error
		if e.term != nil {
			if len(out) == 0 {
				fmt.Fprintln(e.term, prompt)
			}
			e.term.SetPrompt("")
			line, err = e.term.ReadLine()
			if errors.Is(err, term.ErrPasteIndicator) {
				err = nil
			}
		} else if e.in != nil {
			line, err = readLine(e.in)
		} else {
			err = io.EOF
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		line = strings.TrimSpace(line)
		if line == "" {
			return out, nil
		}
		if len(out) == max {
			return nil, fmt.Errorf("more than %d lines", max)
		}
		out = append(out, line)
	}
}

// ctrlC turns Ctrl-C on the terminal into "erase the line (Ctrl-K, Ctrl-U),
// then Enter", so
// that it abandons the line being typed instead of ending the session
// (x/term treats Ctrl-C like Ctrl-D).
type ctrlC struct {
	rw  io.ReadWriter
	buf []byte
}

func (c *ctrlC) Write(p []byte) (int, error) { return c.rw.Write(p) }

func (c *ctrlC) Read(p []byte) (int, error) {
	if len(p) < 3 {
		return c.rw.Read(p)
	}
	if cap(c.buf) < len(p)/3 {
		c.buf = make([]byte, len(p)/3)
	}
	in := c.buf[:len(p)/3]
	n, err := c.rw.Read(in)
	out := p[:0]
	for _, b := range in[:n] {
		if b == 3 {
			out = append(out, 0x0b, 0x15, '\r')
			continue
		}
		out = append(out, b)
	}
	return len(out), err
}
