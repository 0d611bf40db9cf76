package mgmt

import (
	"strings"
	"testing"
)

func TestPasswordHash(t *testing.T) {
	h, err := hashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(h, "$argon2id$v=19$m=65536,t=2,p=2$") || strings.Contains(h, "correct") {
		t.Fatalf("hash %q", h)
	}
	h2, _ := hashPassword("correct horse")
	if h == h2 {
		t.Fatal("two hashes of one password are equal: no salt")
	}
	for pw, want := range map[string]bool{"correct horse": true, "correct horsE": false, "": false, "correct horse ": false} {
		if got := checkPassword(h, pw); got != want {
			t.Errorf("checkPassword(%q) = %v", pw, got)
		}
	}
}

func TestDecodeHashLimits(t *testing.T) {
	salt := "c2FsdHNhbHRzYWx0c2FsdA" // 16 bytes
	key := "a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U"
	for _, tc := range []struct {
		s  string
		ok bool
	}{
		{"$argon2id$v=19$m=65536,t=2,p=2$" + salt + "$" + key, true},
		{"$argon2id$v=19$m=2097152,t=2,p=2$" + salt + "$" + key, false}, // 2 GiB
		{"$argon2id$v=19$m=65536,t=99,p=2$" + salt + "$" + key, false},
		{"$argon2id$v=19$m=65536,t=2,p=200$" + salt + "$" + key, false},
		{"$argon2id$v=19$m=8,t=2,p=2$" + salt + "$" + key, false}, // m < 8p
		{"$argon2i$v=19$m=65536,t=2,p=2$" + salt + "$" + key, false},
		{"$argon2id$v=18$m=65536,t=2,p=2$" + salt + "$" + key, false},
		{"$argon2id$v=19$m=65536,t=2$" + salt + "$" + key, false},
		{"$argon2id$v=19$m=65536,t=2,p=2,x=1$" + salt + "$" + key, false},
		{"$argon2id$v=19$m=65536,t=2,p=2$c2FsdA$" + key, false}, // 4-byte salt
		{"$argon2id$v=19$m=65536,t=2,p=2$" + salt + "$a2V5", false},
		{"", false},
	} {
		if _, err := decodeHash(tc.s); (err == nil) != tc.ok {
			t.Errorf("decodeHash(%q): %v, want ok=%v", tc.s, err, tc.ok)
		}
	}
}

// FuzzDecodeHash: the stored hash string never makes verification panic or
// exceed the parameter limits.
func FuzzDecodeHash(f *testing.F) {
	f.Add("$argon2id$v=19$m=65536,t=2,p=2$c2FsdHNhbHRzYWx0c2FsdA$a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2V5a2U")
	f.Add("$argon2id$v=19$m=1,t=1,p=1$$")
	f.Fuzz(func(t *testing.T, s string) {
		hp, err := decodeHash(s)
		if err != nil {
			return
		}
		if hp.m > hashMemoryKiBMax || hp.t > hashPassesMax || hp.p > hashLanesMax || hp.m < 8*uint32(hp.p) || len(hp.salt) < 8 || len(hp.key) < 16 {
			t.Fatalf("accepted out-of-limit parameters %+v", hp)
		}
	})
}

func TestGeneratePassword(t *testing.T) {
	seen := map[string]bool{}
	for i := 0; i < 50; i++ {
		p, err := generatePassword()
		if err != nil {
			t.Fatal(err)
		}
		if len(p) != 20 || strings.ContainsAny(p, "0O1lI") || checkNewPassword(p) != nil {
			t.Fatalf("password %q", p)
		}
		if seen[p] {
			t.Fatalf("password %q generated twice", p)
		}
		seen[p] = true
	}
}

func TestCheckNewPassword(t *testing.T) {
	for pw, ok := range map[string]bool{"1234567": false, "12345678": true, strings.Repeat("x", 128): true, strings.Repeat("x", 129): false, "tab\there-x": false} {
		if err := checkNewPassword(pw); (err == nil) != ok {
			t.Errorf("checkNewPassword(%q): %v", pw, err)
		}
	}
}
