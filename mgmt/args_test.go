package mgmt

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func TestSplitLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []string
		err  error
	}{
		{"", nil, nil},
		{"   \t ", nil, nil},
		{"purevol list", []string{"purevol", "list"}, nil},
		{"  purevol   list\t--csv  ", []string{"purevol", "list", "--csv"}, nil},
		{`purehost setattr --host-user '' h1`, []string{"purehost", "setattr", "--host-user", "", "h1"}, nil},
		{`a "b c" 'd e' f\ g`, []string{"a", "b c", "d e", "f g"}, nil},
		{`a "x\"y\\z\n"`, []string{"a", `x"y\z\n`}, nil},
		{`a'b'"c"d`, []string{"abcd"}, nil},
		{`'it'\''s'`, []string{"it's"}, nil},
		{`trailing\`, []string{"trailing"}, nil},
		{`'open`, nil, errUnterminated},
		{`"open`, nil, errUnterminated},
		{`"esc\"`, nil, errUnterminated},
	} {
		got, err := splitLine(tc.in)
		if !errors.Is(err, tc.err) || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitLine(%q) = %q, %v; want %q, %v", tc.in, got, err, tc.want, tc.err)
		}
	}
	if _, err := splitLine(strings.Repeat("a ", wordsMax+1)); err == nil {
		t.Error("more than wordsMax words accepted")
	}
	if _, err := splitLine(strings.Repeat("a", lineBytesMax+1)); err == nil {
		t.Error("a line over lineBytesMax accepted")
	}
}

// FuzzSplitLine: splitting never panics, and quoting each word and splitting
// again gives the same words.
func FuzzSplitLine(f *testing.F) {
	for _, s := range []string{"purevol list", `a "b c" 'd'`, `x\ y`, `'it'\''s'`, `"\\\""`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, line string) {
		words, err := splitLine(line)
		if err != nil {
			return
		}
		var q []string
		for _, w := range words {
			q = append(q, quoteWord(w))
		}
		again, err := splitLine(strings.Join(q, " "))
		if err != nil || len(again) != len(words) {
			t.Fatalf("%q -> %q -> %q, %v", line, words, again, err)
		}
		for i := range words {
			if words[i] != again[i] {
				t.Fatalf("%q -> %q -> %q", line, words, again)
			}
		}
	})
}

func TestParseFlags(t *testing.T) {
	specs := []flagSpec{{name: "size", kind: flagValue, metavar: "SIZE"}, {name: "truncate"}}
	for _, tc := range []struct {
		in    string
		args  []string
		vals  map[string]string
		set   []string
		error string
	}{
		{in: "v1 v2", args: []string{"v1", "v2"}},
		{in: "--size 1G v1", args: []string{"v1"}, vals: map[string]string{"size": "1G"}, set: []string{"size"}},
		{in: "v1 --size=1G --truncate", args: []string{"v1"}, vals: map[string]string{"size": "1G"}, set: []string{"size", "truncate"}},
		{in: "--size= v1", args: []string{"v1"}, vals: map[string]string{"size": ""}, set: []string{"size"}},
		{in: "-- --size v1", args: []string{"--size", "v1"}},
		{in: "-h", set: []string{"help"}},
		{in: "v1 --help", args: []string{"v1"}, set: []string{"help"}},
		{in: "--nope", error: "unknown option --nope"},
		{in: "-x", error: "unknown option -x"},
		{in: "--truncate=yes", error: "option --truncate takes no value"},
		{in: "v1 --size", error: "option --size needs a value (SIZE)"},
		{in: "--truncate --truncate", error: "option --truncate is given more than once"},
	} {
		words, _ := splitLine(tc.in)
		p, err := parseFlags(specs, words)
		if tc.error != "" {
			if err == nil || err.Error() != tc.error {
				t.Errorf("%q: error %v, want %q", tc.in, err, tc.error)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(p.args, tc.args) {
			t.Errorf("%q: args %q, want %q", tc.in, p.args, tc.args)
		}
		for k, v := range tc.vals {
			if p.val(k) != v {
				t.Errorf("%q: --%s = %q, want %q", tc.in, k, p.val(k), v)
			}
		}
		if len(p.set) != len(tc.set) {
			t.Errorf("%q: set %v, want %v", tc.in, p.set, tc.set)
		}
		for _, k := range tc.set {
			if !p.has(k) {
				t.Errorf("%q: --%s not set", tc.in, k)
			}
		}
	}
}

func TestSplitList(t *testing.T) {
	got, err := splitList("iqnlist", " a, b,,c ")
	if err != nil || !reflect.DeepEqual(got, []string{"a", "b", "c"}) {
		t.Fatalf("%q %v", got, err)
	}
	if _, err := splitList("hostlist", "a,B,b"); err == nil || err.Error() != "--hostlist names b more than once" {
		t.Fatalf("duplicate: %v", err)
	}
}
