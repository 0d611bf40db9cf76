package mgmt

import (
	"fmt"
	"io"
	"testing"

	gossh "golang.org/x/crypto/ssh"

	"vfa/array"
)

// Benchmarks: the dispatcher alone (parse, run, format), a whole command over
// SSH, an audit append, and the cost of one password check.

func BenchmarkDispatchVolList(b *testing.B) {
	for _, n := range []int{10, 1000} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			h := newHarness(b)
			for i := 0; i < n; i++ {
				if _, err := h.a.CreateVolume(fmt.Sprintf("bench-%04d", i), 1<<30); err != nil {
					b.Fatal(err)
				}
			}
			e := &env{s: h.srv, user: AdminUser, source: "127.0.0.1:1"}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if code := h.srv.runLine(e, "purevol list", io.Discard, io.Discard); code != 0 {
					b.Fatal(code)
				}
			}
		})
	}
}

func BenchmarkExecOverSSH(b *testing.B) {
	h := newHarness(b)
	c, err := h.dial(AdminUser, gossh.PublicKeys(h.signer))
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		s, err := c.NewSession()
		if err != nil {
			b.Fatal(err)
		}
		if err := s.Run("purearray list"); err != nil {
			b.Fatal(err)
		}
		s.Close()
	}
}

func BenchmarkAuditAppend(b *testing.B) {
	h := newHarness(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := h.a.Audit(array.AuditEntry{User: AdminUser, Source: "127.0.0.1:1", Command: "purevol create --size 1G v", Result: "ok"}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPasswordCheck(b *testing.B) {
	hash, err := hashPassword("benchmark-password")
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if !checkPassword(hash, "benchmark-password") {
			b.Fatal("mismatch")
		}
	}
}
