package keys

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// maxDevices bounds the devices handed to Create, Rotate and Unlock: every
// share holder plus as many devices without a share.
const maxDevices = 2 * MaxShareHolders

// Slot is one generation of a device's key material; it mirrors a key slot of
// the device superblock. The byte fields are opaque to the caller (their
// layout is in slotfmt.go) and each is at most MaxFieldSize bytes.
type Slot struct {
	Gen             uint64 // array key generation; 0 means the slot is empty
	Threshold       int    // shares needed to rebuild that generation's array key
	Sealed          bool   // AKShare is sealed by the security token
	AKShare         []byte // this device's share of the array key (empty for NVRAM)
	DEKPart         []byte // this device's partition of the wrapped DEK (empty for NVRAM)
	WrappedMediaKey []byte // the device's media key wrapped by its unlock key
}

// Empty reports whether the slot holds nothing.
func (s Slot) Empty() bool { return s.Gen == 0 }

func (s Slot) clone() Slot {
	s.AKShare = bytes.Clone(s.AKShare)
	s.DEKPart = bytes.Clone(s.DEKPart)
	s.WrappedMediaKey = bytes.Clone(s.WrappedMediaKey)
	return s
}

// hasShare reports whether the slot carries share material (a share holder's
// slot written by a rotation does; NVRAM slots and media-key-only slots don't).
func (s Slot) hasShare() bool { return len(s.AKShare) > 0 || len(s.DEKPart) > 0 }

// SlotWrite is what one device superblock must hold after Create or Rotate.
type SlotWrite struct {
	ID        [16]byte
	Cur, Prev Slot
}

// DeviceSpec names a present device for Create and Rotate.
type DeviceSpec struct {
	ID         [16]byte
	HoldsShare bool // SSDs hold a share of the array key; NVRAM does not
}

// Device is what the caller read from one present device for Unlock.
type Device struct {
	ID         [16]byte
	HoldsShare bool
	Cur, Prev  Slot // Gen 0 = empty
}

// Keys is an unlocked key hierarchy. Treat it as read-only; Rotate returns a
// new one and leaves its argument unchanged.
type Keys struct {
	Gen    uint64 // generation of AK
	AK     []byte
	DEK    []byte
	Sealed bool // this generation's shares are sealed by a security token
	// Media maps a device id to its media key: every present device whose key
	// could be recovered, and (after Rotate) devices known from before that
	// were absent. Delete a removed device from it before the next Rotate so
	// a device re-added under the same id would get a fresh key.
	Media map[[16]byte][]byte

	arrayID   [16]byte
	threshold int
	maxSeen   uint64            // highest generation seen on any device, or made
	held      map[[16]byte]Slot // each device's verified slot of Gen
}

// DedupKey returns the dedup fingerprint key, Derive(DEK, LabelDedupFingerprint).
func (k *Keys) DedupKey() []byte { return Derive(k.DEK, LabelDedupFingerprint) }

// Wipe overwrites the key material held by k. Keys returned by Rotate do not
// share memory with their argument, so wiping one leaves the other intact.
func (k *Keys) Wipe() {
	clear(k.AK)
	clear(k.DEK)
	for _, m := range k.Media {
		clear(m)
	}
}

// Create makes generation 1 of a new array: AK, DEK, a media key per device,
// and the slots each device must store (Prev empty), one SlotWrite per device
// in the order of devs. nShareHolders is the configured SSD count n; the
// share holders among devs must number at least Threshold(n) and at most n.
// With a non-nil Sealer every share is sealed.
func Create(arrayID [16]byte, devs []DeviceSpec, nShareHolders int, s Sealer) (*Keys, []SlotWrite, error) {
	if err := checkSpecs(devs, nShareHolders); err != nil {
		return nil, nil, fmt.Errorf("keys: create: %w", err)
	}
	k := &Keys{
		Gen: 1, AK: NewKey(), DEK: NewKey(), Sealed: s != nil,
		Media:   make(map[[16]byte][]byte, len(devs)),
		arrayID: arrayID, threshold: Threshold(nShareHolders), maxSeen: 1,
	}
	for _, d := range devs {
		k.Media[d.ID] = NewKey()
	}
	slots, err := makeGeneration(arrayID, k.Gen, k.AK, k.DEK, nShareHolders, devs, k.Media, s)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: create: %w", err)
	}
	k.held = slots
	out := make([]SlotWrite, 0, len(devs))
	for _, d := range devs {
		out = append(out, SlotWrite{ID: d.ID, Cur: slots[d.ID].clone()})
	}
	return k, out, nil
}

// Rotate makes generation newGen for the present devices devs: a new AK split
// across their share holders (n = nShareHolders), the same DEK re-wrapped, and
// every media key kept (a device k does not know gets a fresh one) and
// re-wrapped under its new unlock key. k is left unchanged.
//
// The caller writes each device exactly its SlotWrite, in the order returned,
// each durable before the next is written: Cur is its slot of newGen, Prev its
// slot of k.Gen (the one it held, or a new media-key-only slot of k.Gen if it
// had none: a stale or new device). k.Gen thus stays on every device that had
// it and newGen counts once it is on enough share holders. Devices without a
// slot of k.Gen come first: until written, their media key depends on an older
// generation that the later writes overwrite. If the rotation is interrupted,
// unlock again and rotate with UnlockReport.NextGen.
//
// newGen must be above every generation ever written, including those of
// rotations that failed part way. A sealed k needs a Sealer (rotating a sealed
// array without its token would unseal it); with a Sealer, Prev shares of an
// unsealed k are sealed too, so no unsealed generation remains on a device.
func Rotate(arrayID [16]byte, k *Keys, devs []DeviceSpec, nShareHolders int, newGen uint64, s Sealer) (*Keys, []SlotWrite, error) {
	if k == nil || len(k.AK) != KeySize || len(k.DEK) != KeySize {
		return nil, nil, fmt.Errorf("keys: rotate: no unlocked key hierarchy")
	}
	if arrayID != k.arrayID {
		return nil, nil, fmt.Errorf("keys: rotate: array id %x is not the unlocked array's %x", arrayID, k.arrayID)
	}
	if newGen <= max(k.Gen, k.maxSeen) {
		return nil, nil, fmt.Errorf("keys: rotate: generation %d, highest in use %d: %w", newGen, max(k.Gen, k.maxSeen), ErrGeneration)
	}
	if k.Sealed && s == nil {
		return nil, nil, fmt.Errorf("keys: rotate: generation %d is sealed: %w", k.Gen, ErrTokenRequired)
	}
	if err := checkSpecs(devs, nShareHolders); err != nil {
		return nil, nil, fmt.Errorf("keys: rotate: %w", err)
	}
	nk := &Keys{
		Gen: newGen, AK: NewKey(), DEK: bytes.Clone(k.DEK), Sealed: s != nil,
		Media:   make(map[[16]byte][]byte, len(k.Media)+len(devs)),
		arrayID: arrayID, threshold: Threshold(nShareHolders), maxSeen: newGen,
	}
	for id, m := range k.Media {
		nk.Media[id] = bytes.Clone(m)
	}
	for _, d := range devs {
		if _, ok := nk.Media[d.ID]; !ok {
			nk.Media[d.ID] = NewKey()
		}
	}
	slots, err := makeGeneration(arrayID, newGen, nk.AK, nk.DEK, nShareHolders, devs, nk.Media, s)
	if err != nil {
		return nil, nil, fmt.Errorf("keys: rotate: %w", err)
	}
	nk.held = slots
	first := make([]SlotWrite, 0, len(devs))
	rest := make([]SlotWrite, 0, len(devs))
	for _, d := range devs {
		prev, held, err := prevSlot(k, d.ID, nk.Media[d.ID], s)
		if err != nil {
			return nil, nil, fmt.Errorf("keys: rotate: device %x: %w", d.ID, err)
		}
		w := SlotWrite{ID: d.ID, Cur: slots[d.ID].clone(), Prev: prev}
		if held {
			rest = append(rest, w)
		} else {
			first = append(first, w)
		}
	}
	return nk, append(first, rest...), nil
}

// prevSlot is the slot of k.Gen that device id keeps as Prev: the one it held
// (its share sealed if a Sealer is given), or else (held false) a new
// media-key-only slot.
func prevSlot(k *Keys, id [16]byte, media []byte, s Sealer) (slot Slot, held bool, err error) {
	if h, ok := k.held[id]; ok {
		h = h.clone()
		if s != nil && !h.Sealed && len(h.AKShare) > 0 {
			split, share, err := decodeShareField(h.AKShare, akShareSize)
			if err != nil {
				return Slot{}, false, err
			}
			sealed, err := sealShare(s, share)
			if err != nil {
				return Slot{}, false, err
			}
			clear(h.AKShare)
			h.AKShare = encodeShareField(split, sealed)
			h.Sealed = true
		}
		return h, true, nil
	}
	w, err := Wrap(UnlockKey(k.AK, k.arrayID, id, k.Gen), media)
	if err != nil {
		return Slot{}, false, err
	}
	return Slot{Gen: k.Gen, Threshold: k.threshold, WrappedMediaKey: w}, false, nil
}

func sealShare(s Sealer, share []byte) ([]byte, error) {
	sealed, err := s.Seal(share)
	if err != nil {
		return nil, fmt.Errorf("seal share: %w", err)
	}
	if len(sealed) == 0 || len(sealed) > MaxSealedShareSize {
		return nil, fmt.Errorf("seal share: sealer returned %d bytes (1..%d)", len(sealed), MaxSealedShareSize)
	}
	return sealed, nil
}

// checkSpecs validates the device list of Create and Rotate.
func checkSpecs(devs []DeviceSpec, n int) error {
	if n < MinShareHolders || n > MaxShareHolders || Threshold(n) < MinShareHolders {
		return fmt.Errorf("%d share holders configured (%d..%d)", n, MinShareHolders, MaxShareHolders)
	}
	if len(devs) > maxDevices {
		return fmt.Errorf("%d devices (at most %d)", len(devs), maxDevices)
	}
	seen := make(map[[16]byte]bool, len(devs))
	holders := 0
	for _, d := range devs {
		if seen[d.ID] {
			return fmt.Errorf("device %x listed twice", d.ID)
		}
		seen[d.ID] = true
		if d.HoldsShare {
			holders++
		}
	}
	if t := Threshold(n); holders < t || holders > n {
		return fmt.Errorf("%w: %d share holders present of %d configured, %d needed", ErrTooFewShares, holders, n, t)
	}
	return nil
}

// makeGeneration splits ak and the DEK wrapped by it across the share holders
// of devs and returns each device's slot of generation gen.
func makeGeneration(arrayID [16]byte, gen uint64, ak, dek []byte, n int, devs []DeviceSpec, media map[[16]byte][]byte, s Sealer) (map[[16]byte]Slot, error) {
	t := Threshold(n)
	wdek, err := Wrap(ak, dek)
	if err != nil {
		return nil, err
	}
	akShares, err := Split(ak, n, t)
	if err != nil {
		return nil, err
	}
	dekParts, err := Split(wdek, n, t)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, sh := range akShares {
			clear(sh)
		}
	}()
	var idb [8]byte
	rand.Read(idb[:])
	split := splitID(binary.BigEndian.Uint64(idb[:]))
	slots := make(map[[16]byte]Slot, len(devs))
	h := 0
	for _, d := range devs {
		wm, err := Wrap(UnlockKey(ak, arrayID, d.ID, gen), media[d.ID])
		if err != nil {
			return nil, err
		}
		sl := Slot{Gen: gen, Threshold: t, WrappedMediaKey: wm}
		if d.HoldsShare {
			body := akShares[h]
			if s != nil {
				if body, err = sealShare(s, body); err != nil {
					return nil, err
				}
				sl.Sealed = true
			}
			sl.AKShare = encodeShareField(split, body)
			sl.DEKPart = encodeShareField(split, dekParts[h])
			h++
		}
		slots[d.ID] = sl
	}
	return slots, nil
}
