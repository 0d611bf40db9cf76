package mgmt

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Data-driven tests: each testdata/*.txt file is run against a fresh array
// over a real SSH connection (exec sessions of golang.org/x/crypto/ssh).
//
// File format:
//
//	# a comment (anywhere; output never starts with '#')
//	$ purevol create --size 10G vol1     a command; the lines after it, up
//	Name  Size  ...                      to the next command, directive or
//	vol1  10G   ...                      comment, are its expected output:
//	! Error on x: reason.                stdout first, then stderr lines
//	                                     prefixed with "! "
//	@ stdin line one\nline two           the next command's stdin
//	@ clock +25h                         move the clock
//	@ eradicate                          run the automatic eradication now;
//	                                     prints the eradicated names
//
// A command must exit 1 when it prints on stderr and 0 otherwise. Trailing
// blank lines of a block are ignored. In the actual output the array's id
// (32 hex digits) and the serial and IQN prefix made from it (16 hex digits)
// are replaced with '#' characters, so columns keep their width.
//
// go test ./mgmt -run TestScripts -rewrite rewrites the expected output.

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

type scriptStep struct {
	line   string   // "$ ..." or "@ ..."
	expect []string // expected output lines
}

func parseScript(text string) ([]scriptStep, []string, error) {
	var steps []scriptStep
	var lead []string // comments before the first step... kept for rewriting
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		switch {
		case strings.HasPrefix(l, "$ ") || strings.HasPrefix(l, "@ "):
			steps = append(steps, scriptStep{line: l})
		case strings.HasPrefix(l, "#"):
			// A comment ends a block; keep it attached for rewriting.
			if len(steps) == 0 {
				lead = append(lead, l)
			} else {
				s := &steps[len(steps)-1]
				s.expect = append(s.expect, "\x00"+l)
			}
		default:
			if len(steps) == 0 {
				if strings.TrimSpace(l) != "" {
					return nil, nil, fmt.Errorf("line %d: output before the first command", i+1)
				}
				lead = append(lead, l)
				continue
			}
			s := &steps[len(steps)-1]
			s.expect = append(s.expect, l)
		}
	}
	return steps, lead, nil
}

// split separates a step's expected output from its trailing comments and
// blank lines (kept for rewriting).
func (s scriptStep) split() (out, tail []string) {
	n := len(s.expect)
	for i, l := range s.expect {
		if strings.HasPrefix(l, "\x00") {
			n = i
			break
		}
	}
	out = s.expect[:n]
	tail = s.expect[n:]
	for len(out) > 0 && strings.TrimSpace(out[len(out)-1]) == "" {
		tail = append([]string{out[len(out)-1]}, tail...)
		out = out[:len(out)-1]
	}
	return out, tail
}

func TestScripts(t *testing.T) {
	files, err := filepath.Glob("testdata/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no testdata/*.txt: %v", err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".txt"), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	text, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	steps, lead, err := parseScript(string(text))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	h := newHarness(t, withConfig(func(c *Config) { c.DestroyedRetention = 24 * time.Hour }))
	key2 := newTestKey(t)
	id := h.a.Config().ID
	mask := func(s string) string {
		s = strings.ReplaceAll(s, id, strings.Repeat("#", 32))
		s = strings.ReplaceAll(s, strings.ToUpper(id[:16]), strings.Repeat("#", 16))
		return strings.ReplaceAll(s, id[:16], strings.Repeat("#", 16))
	}
	var stdin string
	var outFile []string
	outFile = append(outFile, lead...)
	for _, st := range steps {
		var got []string
		switch {
		case st.line == "@ stdin" || strings.HasPrefix(st.line, "@ stdin "):
			stdin = strings.ReplaceAll(strings.TrimPrefix(strings.TrimPrefix(st.line, "@ stdin"), " "), `\n`, "\n")
			stdin = strings.ReplaceAll(stdin, "{{KEY2}}", key2)
		case strings.HasPrefix(st.line, "@ clock +"):
			d, err := time.ParseDuration(strings.TrimPrefix(st.line, "@ clock +"))
			if err != nil {
				t.Fatalf("%s: %v", st.line, err)
			}
			h.clock.Advance(d)
		case st.line == "@ eradicate":
			got = h.srv.eradicateExpired()
		case strings.HasPrefix(st.line, "$ "):
			cmd := strings.TrimPrefix(st.line, "$ ")
			out, errs, code := h.run(cmd, stdin)
			stdin = ""
			if (errs != "") != (code != 0) || (code != 0 && code != 1) {
				t.Errorf("%s: exit status %d with stderr %q", cmd, code, errs)
			}
			if out != "" {
				got = append(got, strings.Split(strings.TrimRight(mask(out), "\n"), "\n")...)
			}
			if errs != "" {
				for _, l := range strings.Split(strings.TrimRight(mask(errs), "\n"), "\n") {
					got = append(got, "! "+l)
				}
			}
		default:
			t.Fatalf("unknown step %q", st.line)
		}
		want, tail := st.split()
		if !*rewrite && strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Errorf("%s\n--- want\n%s\n--- got\n%s", st.line, strings.Join(want, "\n"), strings.Join(got, "\n"))
		}
		outFile = append(outFile, st.line)
		outFile = append(outFile, got...)
		for _, l := range tail {
			outFile = append(outFile, strings.TrimPrefix(l, "\x00"))
		}
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.Join(outFile, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
