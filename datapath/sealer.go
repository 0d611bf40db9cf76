package datapath

import "vfa/keys"

// The security token seam (Rapid Data Locking): the array learns at boot
// whether a token is enrolled and fetches its key before it unlocks the
// store, so the sealer is handed over after Open rather than in Options.

// SetSealer sets the sealer used by the next Unlock and by every key
// rotation from now on (nil: none). Giving a sealer to an unlocked store
// does not seal anything by itself: rotate the keys (RotateKeys) to seal
// every stored share.
func (s *Store) SetSealer(sl keys.Sealer) {
	s.unlockMu.Lock()
	defer s.unlockMu.Unlock()
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	s.o.Sealer = sl
}

// SetLockReason replaces the reason a locked store gives in Locked (the
// array knows more than the store when the security token is what is
// missing). It reports false, and does nothing, if the store is unlocked.
func (s *Store) SetLockReason(reason string) bool {
	s.unlockMu.Lock()
	defer s.unlockMu.Unlock()
	if s.unlocked.Load() {
		return false
	}
	s.lockReason.Store(&reason)
	return true
}

// KeysSealed reports whether the current array key generation is sealed by
// a security token (false while locked).
func (s *Store) KeysSealed() bool {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.unlocked.Load() && s.k != nil && s.k.Sealed
}
