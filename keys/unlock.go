package keys

import (
	"bytes"
	"cmp"
	"fmt"
	"slices"
)

// Limits of the search for bad shares: when the shares of a generation do not
// combine into a key that unwraps the DEK, Unlock retries without up to
// maxBadShares of them, trying at most maxCombineAttempts subsets in all.
const (
	maxBadShares       = 2
	maxCombineAttempts = 512
)

// SharesError is the error (wrapped) of an Unlock that found fewer shares of
// every generation than it needs. errors.Is(err, ErrTooFewShares) holds.
type SharesError struct {
	Gen   uint64 // the generation closest to its threshold; 0 if no share was found
	Have  int    // shares of Gen found
	Total int    // share holders configured
	Need  int    // shares needed
}

func (e *SharesError) Error() string {
	s := fmt.Sprintf("array key: %d of %d shares available, %d needed", e.Have, e.Total, e.Need)
	if e.Gen != 0 {
		s += fmt.Sprintf(" (generation %d)", e.Gen)
	}
	return s
}

// Is makes errors.Is(err, ErrTooFewShares) true.
func (e *SharesError) Is(target error) bool { return target == ErrTooFewShares }

// Rejection names a present device whose media key could not be recovered
// and why (an error wrapping ErrKeyMismatch or ErrNoKeySlot). The caller
// treats it as a failed device; it is not this array's, or it is corrupt, or
// it missed too many rotations. Its slots must not be overwritten as if it
// were a member.
type Rejection struct {
	ID  [16]byte
	Err error
}

// UnlockReport says what Unlock found besides the keys.
type UnlockReport struct {
	Gen    uint64 // generation unlocked
	Shares int    // shares of Gen that combined into the array key
	Needed int    // threshold of Gen
	MaxGen uint64 // highest generation on any slot of any device
	// NextGen is the generation the next rotation must use: MaxGen+1.
	NextGen uint64
	// Interrupted: a generation above Gen exists on some device (a rotation
	// that did not reach Needed share holders, or that does not verify);
	// rotate again with NextGen.
	Interrupted bool
	// Stale lists member devices (their media key is known) whose Cur slot is
	// not a verified slot of Gen: they missed a rotation, hold a slot of an
	// interrupted one, or their share is damaged. A rotation rewrites them.
	Stale [][16]byte
	// Rejected lists devices whose media key could not be recovered.
	Rejected []Rejection
}

// RotationNeeded reports whether the caller must rotate now (with NextGen) to
// make every present device current.
func (r *UnlockReport) RotationNeeded() bool { return r.Interrupted || len(r.Stale) > 0 }

// Unlock rebuilds the key hierarchy from the slots read from the present
// devices. nShareHolders is the configured SSD count (for reporting); s may
// be nil when no security token is configured.
//
// It picks the highest generation for which at least its threshold of shares
// (of one split) is present, the combined array key unwraps the combined DEK,
// and at least the threshold of share holders' media keys unwrap under it;
// otherwise it falls back to lower generations. It never falls back past a
// generation whose shares are sealed and cannot be opened: that is
// ErrTokenRequired, or the Sealer's error, wrapped. Too few shares of every
// generation is a *SharesError (ErrTooFewShares); enough shares that do not
// verify is ErrKeyMismatch.
//
// Each device's media key comes from its slot of the unlocked generation, or
// else from a slot of another generation that can be unlocked; devices for
// which neither works are listed in UnlockReport.Rejected and left out of
// Keys.Media. On error the report holds only MaxGen and NextGen.
func Unlock(arrayID [16]byte, devs []Device, nShareHolders int, s Sealer) (*Keys, UnlockReport, error) {
	var rep UnlockReport
	if nShareHolders < MinShareHolders || nShareHolders > MaxShareHolders {
		return nil, rep, fmt.Errorf("keys: unlock: %d share holders configured (%d..%d)", nShareHolders, MinShareHolders, MaxShareHolders)
	}
	if len(devs) > maxDevices {
		return nil, rep, fmt.Errorf("keys: unlock: %d devices (at most %d)", len(devs), maxDevices)
	}
	seen := make(map[[16]byte]bool, len(devs))
	for i := range devs {
		if seen[devs[i].ID] {
			return nil, rep, fmt.Errorf("keys: unlock: device %x listed twice", devs[i].ID)
		}
		seen[devs[i].ID] = true
	}
	u := &unlocker{arrayID: arrayID, devs: devs, s: s, verified: map[uint64]*genResult{}, failed: map[uint64]error{}}
	u.collect()
	rep.MaxGen, rep.NextGen = u.maxSeen, u.maxSeen+1

	var chosen *genResult
	var mismatch error
	for _, g := range u.groups {
		if len(g.members) < g.needed {
			continue
		}
		r, err, fatal := u.attempt(g)
		if fatal {
			return nil, rep, fmt.Errorf("keys: unlock: %w", err)
		}
		if err != nil {
			if mismatch == nil {
				mismatch = err
			}
			continue
		}
		chosen = r
		break
	}
	if chosen == nil {
		if mismatch != nil {
			return nil, rep, fmt.Errorf("keys: unlock: %w", mismatch)
		}
		return nil, rep, fmt.Errorf("keys: unlock: %w", u.shortfall(nShareHolders))
	}
	u.verified[chosen.gen] = chosen

	k := &Keys{
		Gen: chosen.gen, AK: chosen.ak, DEK: chosen.dek, Sealed: chosen.sealed,
		Media:   make(map[[16]byte][]byte, len(devs)),
		arrayID: arrayID, threshold: chosen.needed, maxSeen: u.maxSeen,
		held: make(map[[16]byte]Slot, len(devs)),
	}
	rep.Gen, rep.Shares, rep.Needed = chosen.gen, len(chosen.used), chosen.needed
	rep.Interrupted = u.maxSeen > chosen.gen
	for i := range devs {
		d := &devs[i]
		mk, slot, err := u.mediaKey(i, chosen)
		if err != nil {
			rep.Rejected = append(rep.Rejected, Rejection{ID: d.ID, Err: err})
			continue
		}
		k.Media[d.ID] = mk
		shareOK := !d.HoldsShare || chosen.used[i] == slot
		if slot.Gen == chosen.gen {
			h := slot.clone()
			if !shareOK || !d.HoldsShare {
				h.AKShare, h.DEKPart, h.Sealed = nil, nil, false
			}
			k.held[d.ID] = h
		}
		if slot != &d.Cur || slot.Gen != chosen.gen || !shareOK {
			rep.Stale = append(rep.Stale, d.ID)
		}
	}
	for gen, r := range u.verified {
		if gen != chosen.gen {
			r.wipe() // older generations only served to recover media keys
		}
	}
	return k, rep, nil
}

// member is one share holder's slot in a group.
type member struct {
	dev  int   // index into devs
	slot *Slot // &devs[dev].Cur or .Prev
	ss   slotShare
}

// group is the shares of one split: one generation, one split id.
type group struct {
	gen     uint64
	split   splitID
	needed  int
	members []member
}

// genResult is a verified generation.
type genResult struct {
	gen     uint64
	needed  int
	sealed  bool
	ak, dek []byte
	used    map[int]*Slot  // devices whose shares combined into ak -> their slot
	media   map[int][]byte // devices whose slot of gen unwrapped -> media key
	slotOf  map[int]*Slot  // ... and that slot
}

type unlocker struct {
	arrayID  [16]byte
	devs     []Device
	s        Sealer
	maxSeen  uint64
	groups   []*group // generation descending, then most shares first
	verified map[uint64]*genResult
	failed   map[uint64]error
}

// collect groups the share holders' slots by split.
func (u *unlocker) collect() {
	type key struct {
		gen   uint64
		split splitID
	}
	byKey := map[key]*group{}
	for i := range u.devs {
		d := &u.devs[i]
		for _, sl := range []*Slot{&d.Cur, &d.Prev} {
			if sl.Gen == 0 {
				continue
			}
			u.maxSeen = max(u.maxSeen, sl.Gen)
			if !d.HoldsShare || !sl.hasShare() {
				continue
			}
			ss, err := decodeSlotShare(sl)
			if err != nil {
				continue // the device is reported through its media key or as stale
			}
			g := byKey[key{sl.Gen, ss.split}]
			if g == nil {
				g = &group{gen: sl.Gen, split: ss.split}
				byKey[key{sl.Gen, ss.split}] = g
				u.groups = append(u.groups, g)
			}
			if len(g.members) > 0 && g.members[len(g.members)-1].dev == i {
				continue // Cur and Prev hold the same split
			}
			g.members = append(g.members, member{dev: i, slot: sl, ss: ss})
		}
	}
	for _, g := range u.groups {
		g.needed = recordedThreshold(g.members)
	}
	slices.SortFunc(u.groups, func(a, b *group) int {
		return cmp.Or(cmp.Compare(b.gen, a.gen), cmp.Compare(len(b.members), len(a.members)), cmp.Compare(a.split, b.split))
	})
}

// recordedThreshold is the threshold most of a group's slots record, bounded
// to what Shamir can use.
func recordedThreshold(ms []member) int {
	count := map[int]int{}
	best := 0
	for _, m := range ms {
		t := m.slot.Threshold
		count[t]++
		if count[t] > count[best] || (count[t] == count[best] && t > best) {
			best = t
		}
	}
	return min(max(best, MinShareHolders), MaxShareHolders)
}

// shortfall describes the group closest to its threshold.
func (u *unlocker) shortfall(n int) *SharesError {
	e := &SharesError{Total: n, Need: Threshold(n)}
	var best *group
	for _, g := range u.groups {
		if best == nil || len(g.members)-g.needed > len(best.members)-best.needed {
			best = g
		}
	}
	if best != nil {
		e.Gen, e.Have, e.Need = best.gen, len(best.members), best.needed
	}
	return e
}

// attempt opens and combines the shares of g and verifies the result. fatal
// means the shares are sealed and cannot be opened: Unlock must not fall back.
func (u *unlocker) attempt(g *group) (r *genResult, err error, fatal bool) {
	type usable struct {
		m     *member
		share []byte
	}
	us := make([]usable, 0, len(g.members))
	var opened [][]byte
	defer func() {
		for _, sh := range opened {
			clear(sh)
		}
	}()
	sealedNoToken, sealed := 0, false
	var sealErr error
	for i := range g.members {
		m := &g.members[i]
		if !m.ss.sealed {
			us = append(us, usable{m, m.ss.share})
			continue
		}
		sealed = true
		if u.s == nil {
			sealedNoToken++
			continue
		}
		sh, err := u.s.Open(m.ss.share)
		if err == nil && len(sh) != akShareSize {
			err = fmt.Errorf("%w: opened share of %d bytes, want %d", ErrFormat, len(sh), akShareSize)
		}
		if err != nil {
			if sealErr == nil {
				sealErr = fmt.Errorf("device %x: %w", u.devs[m.dev].ID, err)
			}
			continue
		}
		opened = append(opened, sh)
		us = append(us, usable{m, sh})
	}
	if len(us) < g.needed {
		if sealedNoToken > 0 {
			return nil, fmt.Errorf("generation %d: %d of its %d shares are sealed, %d needed: %w", g.gen, sealedNoToken, len(g.members), g.needed, ErrTokenRequired), true
		}
		if sealErr != nil {
			return nil, fmt.Errorf("generation %d: %d of %d sealed shares open, %d needed: %w", g.gen, len(us), len(g.members), g.needed, sealErr), true
		}
		return nil, &SharesError{Gen: g.gen, Have: len(us), Total: len(g.members), Need: g.needed}, false
	}

	shares := make([][]byte, 0, len(us))
	parts := make([][]byte, 0, len(us))
	coef := make([]byte, len(us))
	var ak [KeySize]byte
	var wdek [WrappedKeySize]byte
	defer clear(ak[:])
	try := func(skip1, skip2 int) *genResult {
		shares, parts = shares[:0], parts[:0]
		for i, x := range us {
			if i != skip1 && i != skip2 {
				shares = append(shares, x.share)
				parts = append(parts, x.m.ss.part)
			}
		}
		if combineInto(ak[:], coef, shares) != nil || combineInto(wdek[:], coef, parts) != nil {
			return nil
		}
		dek, err := Unwrap(ak[:], wdek[:])
		if err != nil {
			return nil
		}
		r := &genResult{gen: g.gen, needed: g.needed, sealed: sealed, ak: bytes.Clone(ak[:]), dek: dek,
			used: make(map[int]*Slot, len(shares))}
		for i, x := range us {
			if i != skip1 && i != skip2 {
				r.used[x.m.dev] = x.m.slot
			}
		}
		return r
	}
	// All shares first; if they do not verify, without one, then without two
	// of them (a damaged or planted share), within a bounded number of tries.
	m, attempts := len(us), 1
	r = try(-1, -1)
	if r == nil && maxBadShares >= 1 && m-1 >= g.needed {
		for i := 0; r == nil && i < m && attempts < maxCombineAttempts; i++ {
			attempts++
			r = try(i, -1)
		}
	}
	if r == nil && maxBadShares >= 2 && m-2 >= g.needed {
		for i := 0; r == nil && i < m; i++ {
			for j := i + 1; r == nil && j < m && attempts < maxCombineAttempts; j++ {
				attempts++
				r = try(i, j)
			}
		}
	}
	if r == nil {
		return nil, fmt.Errorf("generation %d: %d shares do not combine into a key that unwraps the DEK: %w", g.gen, m, ErrKeyMismatch), false
	}

	r.media = make(map[int][]byte, len(g.members))
	r.slotOf = make(map[int]*Slot, len(g.members))
	for _, mb := range g.members {
		id := u.devs[mb.dev].ID
		if mk, err := Unwrap(UnlockKey(r.ak, u.arrayID, id, g.gen), mb.slot.WrappedMediaKey); err == nil {
			r.media[mb.dev], r.slotOf[mb.dev] = mk, mb.slot
		}
	}
	if len(r.media) < g.needed {
		n := len(r.media)
		r.wipe()
		return nil, fmt.Errorf("generation %d: %d of %d share holders' media keys unwrap, %d needed (a wrong array id, or devices of another array): %w", g.gen, n, len(g.members), g.needed, ErrKeyMismatch), false
	}
	return r, nil, false
}

func (r *genResult) wipe() {
	clear(r.ak)
	clear(r.dek)
	for _, m := range r.media {
		clear(m)
	}
}

// generation returns the verified result for generation gen, trying its
// groups once; token problems are plain failures here.
func (u *unlocker) generation(gen uint64) (*genResult, error) {
	if r := u.verified[gen]; r != nil {
		return r, nil
	}
	if err := u.failed[gen]; err != nil {
		return nil, err
	}
	var firstErr error
	for _, g := range u.groups {
		if g.gen != gen {
			continue
		}
		if len(g.members) < g.needed {
			if firstErr == nil {
				firstErr = &SharesError{Gen: gen, Have: len(g.members), Total: len(g.members), Need: g.needed}
			}
			continue
		}
		r, err, _ := u.attempt(g)
		if err == nil {
			u.verified[gen] = r
			return r, nil
		}
		if firstErr == nil {
			firstErr = err
		}
	}
	if firstErr == nil {
		firstErr = fmt.Errorf("generation %d: no shares", gen)
	}
	u.failed[gen] = firstErr
	return nil, firstErr
}

// mediaKey recovers device i's media key: from its slot of the chosen
// generation, else from a slot of another generation that can be unlocked.
// It returns the slot that yielded the key.
func (u *unlocker) mediaKey(i int, chosen *genResult) ([]byte, *Slot, error) {
	d := &u.devs[i]
	if mk, ok := chosen.media[i]; ok {
		return mk, chosen.slotOf[i], nil
	}
	cands := make([]*Slot, 0, 2)
	for _, sl := range []*Slot{&d.Cur, &d.Prev} {
		if sl.Gen != 0 {
			cands = append(cands, sl)
		}
	}
	if len(cands) == 0 {
		return nil, nil, fmt.Errorf("device %x: no key slots: %w", d.ID, ErrNoKeySlot)
	}
	// The chosen generation first, then the others newest first.
	slices.SortStableFunc(cands, func(a, b *Slot) int {
		return cmp.Or(cmp.Compare(b2i(b.Gen == chosen.gen), b2i(a.Gen == chosen.gen)), cmp.Compare(b.Gen, a.Gen))
	})
	var mismatch, noGen error
	for _, sl := range cands {
		r := chosen
		if sl.Gen != chosen.gen {
			var err error
			if r, err = u.generation(sl.Gen); err != nil {
				if noGen == nil {
					noGen = fmt.Errorf("device %x: generation %d cannot be unlocked (%v): %w", d.ID, sl.Gen, err, ErrNoKeySlot)
				}
				continue
			}
		}
		mk, err := Unwrap(UnlockKey(r.ak, u.arrayID, d.ID, sl.Gen), sl.WrappedMediaKey)
		if err == nil {
			return mk, sl, nil
		}
		if mismatch == nil {
			mismatch = fmt.Errorf("device %x: generation %d: media key does not unwrap: %w", d.ID, sl.Gen, ErrKeyMismatch)
		}
	}
	if mismatch != nil {
		return nil, nil, mismatch
	}
	return nil, nil, noGen
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}
