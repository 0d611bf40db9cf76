package mgmt

import (
	"time"

	"vfa/array"
)

// Automatic eradication: a destroyed volume or snapshot stays recoverable for
// Config.DestroyedRetention; after that the server eradicates it (checking
// every Config.EradicateInterval) and records it in the audit log as user
// "system".

func (s *Server) eradicateLoop() {
	t := time.NewTicker(s.c.EradicateInterval)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.eradicateExpired()
		}
	}
}

// eradicateExpired eradicates every destroyed volume whose retention has run
// out and returns their names.
func (s *Server) eradicateExpired() []string {
	s.cmdMu.Lock()
	defer s.cmdMu.Unlock()
	now := s.c.Now()
	var done []string
	for _, v := range s.a.Volumes() {
		if v.Destroyed.IsZero() || now.Sub(v.Destroyed) < s.c.DestroyedRetention {
			continue
		}
		result := "ok"
		if err := s.a.EradicateVolume(v.Name); err != nil {
			result = err.Error()
			s.log.Error("mgmt: automatic eradication", "volume", v.Name, "err", err)
		} else {
			done = append(done, v.Name)
			s.log.Info("mgmt: eradicated after the retention period", "volume", v.Name, "destroyed", v.Destroyed)
		}
		if _, err := s.a.Audit(array.AuditEntry{Time: now, User: "system", Source: "-", Command: "purevol eradicate " + quoteWord(v.Name) + " (retention expired)", Result: result}); err != nil {
			s.log.Error("mgmt: audit log", "err", err)
		}
	}
	return done
}
