package keys

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// array simulates the superblocks of one array's devices: n SSDs (share
// holders) and one NVRAM.
type array struct {
	t       testing.TB
	id      [16]byte
	n       int
	specs   []DeviceSpec
	disk    map[[16]byte]*Device
	dek     []byte
	media   map[[16]byte][]byte // the media keys the devices' data is encrypted with
	sealer  Sealer
	lastGen uint64 // highest generation ever written
}

func devID(array byte, i int) [16]byte { return [16]byte{array, byte(i), 0xd} }

func newArray(t testing.TB, tag byte, n int, s Sealer) (*array, *Keys) {
	t.Helper()
	a := &array{t: t, id: [16]byte{tag, 'a'}, n: n, disk: map[[16]byte]*Device{}, sealer: s}
	for i := range n {
		a.specs = append(a.specs, DeviceSpec{ID: devID(tag, i), HoldsShare: true})
	}
	a.specs = append(a.specs, DeviceSpec{ID: devID(tag, 0xff)}) // NVRAM
	k, pairs, err := Create(a.id, a.specs, n, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(pairs) != n+1 {
		t.Fatalf("Create returned %d slot writes for %d devices", len(pairs), n+1)
	}
	for _, sp := range a.specs {
		a.disk[sp.ID] = &Device{ID: sp.ID, HoldsShare: sp.HoldsShare}
	}
	a.writeAll(pairs)
	a.dek = bytes.Clone(k.DEK)
	a.media = map[[16]byte][]byte{}
	for id, m := range k.Media {
		a.media[id] = bytes.Clone(m)
	}
	a.lastGen = 1
	return a, k
}

func (a *array) write(w SlotWrite) {
	d := a.disk[w.ID]
	if d == nil {
		d = &Device{ID: w.ID, HoldsShare: true}
		a.disk[w.ID] = d
	}
	d.Cur, d.Prev = w.Cur, w.Prev
}

func (a *array) writeAll(ws []SlotWrite) {
	for _, w := range ws {
		a.write(w)
	}
}

func find(ws []SlotWrite, id [16]byte) SlotWrite {
	for _, w := range ws {
		if w.ID == id {
			return w
		}
	}
	panic(fmt.Sprintf("no slot write for %x", id))
}

func idsOf(ws []SlotWrite) [][16]byte {
	var out [][16]byte
	for _, w := range ws {
		out = append(out, w.ID)
	}
	return out
}

// specsIn returns the specs of the given devices, in that order.
func (a *array) specsIn(ids [][16]byte) []DeviceSpec {
	var out []DeviceSpec
	for _, id := range ids {
		for _, sp := range a.specs {
			if sp.ID == id {
				out = append(out, sp)
			}
		}
	}
	return out
}

// present returns copies of the devices as read from disk, without the absent ones.
func (a *array) present(absent ...[16]byte) []Device {
	var out []Device
	for _, sp := range a.specs {
		if slices.Contains(absent, sp.ID) {
			continue
		}
		d := *a.disk[sp.ID]
		d.Cur, d.Prev = d.Cur.clone(), d.Prev.clone()
		out = append(out, d)
	}
	return out
}

func (a *array) presentSpecs(absent ...[16]byte) []DeviceSpec {
	var out []DeviceSpec
	for _, sp := range a.specs {
		if !slices.Contains(absent, sp.ID) {
			out = append(out, sp)
		}
	}
	return out
}

func (a *array) unlock(absent ...[16]byte) (*Keys, UnlockReport, error) {
	return Unlock(a.id, a.present(absent...), a.n, a.sealer)
}

// check asserts that k is this array's hierarchy: the DEK and the media keys
// of the devices that hold data are the ones the array was created with.
func (a *array) check(k *Keys, want ...[16]byte) {
	a.t.Helper()
	if !bytes.Equal(k.DEK, a.dek) {
		a.t.Fatalf("gen %d: DEK differs", k.Gen)
	}
	for _, id := range want {
		if !bytes.Equal(k.Media[id], a.media[id]) {
			a.t.Fatalf("gen %d: media key of %x is %x, want %x", k.Gen, id, k.Media[id], a.media[id])
		}
	}
}

func (a *array) ids() [][16]byte {
	var out [][16]byte
	for _, sp := range a.specs {
		out = append(out, sp.ID)
	}
	return out
}

func (a *array) rotate(k *Keys, gen uint64, absent ...[16]byte) (*Keys, []SlotWrite) {
	a.t.Helper()
	return a.rotateSpecs(k, gen, a.presentSpecs(absent...))
}

func (a *array) rotateSpecs(k *Keys, gen uint64, specs []DeviceSpec) (*Keys, []SlotWrite) {
	a.t.Helper()
	nk, ws, err := Rotate(a.id, k, specs, a.n, gen, a.sealer)
	if err != nil {
		a.t.Fatal(err)
	}
	if len(ws) != len(specs) {
		a.t.Fatalf("Rotate returned %d slot writes for %d devices", len(ws), len(specs))
	}
	a.lastGen = max(a.lastGen, gen)
	return nk, ws
}

func mustUnlock(t testing.TB, a *array, absent ...[16]byte) (*Keys, UnlockReport) {
	t.Helper()
	k, rep, err := a.unlock(absent...)
	if err != nil {
		t.Fatal(err)
	}
	return k, rep
}

func TestCreateUnlock(t *testing.T) {
	for _, n := range []int{6, 8, 24} {
		a, k := newArray(t, 1, n, nil)
		if k.Gen != 1 || len(k.AK) != KeySize || len(k.DEK) != KeySize || len(k.Media) != n+1 || k.Sealed {
			t.Fatalf("Create: %+v", k)
		}
		for _, d := range a.present() {
			if d.Cur.Gen != 1 || d.Cur.Threshold != Threshold(n) || !d.Prev.Empty() || d.Cur.Sealed {
				t.Fatalf("slot %+v", d.Cur)
			}
			if d.HoldsShare != (len(d.Cur.AKShare) == fieldHeader+akShareSize && len(d.Cur.DEKPart) == fieldHeader+dekPartSize) {
				t.Fatalf("device %x: share fields of %d and %d bytes", d.ID, len(d.Cur.AKShare), len(d.Cur.DEKPart))
			}
			if len(d.Cur.WrappedMediaKey) != WrappedKeySize || len(d.Cur.AKShare) > MaxFieldSize {
				t.Fatalf("wrapped media key of %d bytes", len(d.Cur.WrappedMediaKey))
			}
		}
		u, rep := mustUnlock(t, a)
		a.check(u, a.ids()...)
		if !bytes.Equal(u.AK, k.AK) || u.Gen != 1 {
			t.Fatal("unlocked a different array key")
		}
		want := UnlockReport{Gen: 1, Shares: n, Needed: Threshold(n), MaxGen: 1, NextGen: 2}
		if fmt.Sprint(rep) != fmt.Sprint(want) || rep.RotationNeeded() {
			t.Fatalf("report %+v, want %+v", rep, want)
		}
	}
}

// Unlock with 0, 1, 2 and n-t SSDs missing works; with n-t+1 missing it says
// how many shares it found and how many it needs.
func TestUnlockMissingDevices(t *testing.T) {
	for _, n := range []int{6, 8, 9, 24} {
		a, _ := newArray(t, 2, n, nil)
		th := Threshold(n)
		r := rand.New(rand.NewPCG(uint64(n), 1))
		for _, missing := range []int{0, 1, 2, n - th, n - th + 1, n} {
			perm := r.Perm(n)
			var absent [][16]byte
			for _, i := range perm[:missing] {
				absent = append(absent, devID(2, i))
			}
			k, rep, err := a.unlock(absent...)
			if missing <= n-th {
				if err != nil {
					t.Fatalf("n=%d, %d missing: %v", n, missing, err)
				}
				var present [][16]byte
				for _, id := range a.ids() {
					if !slices.Contains(absent, id) {
						present = append(present, id)
					}
				}
				a.check(k, present...)
				if len(k.Media) != len(present) || rep.Shares != n-missing || len(rep.Stale)+len(rep.Rejected) != 0 {
					t.Fatalf("n=%d, %d missing: %d media keys, report %+v", n, missing, len(k.Media), rep)
				}
				continue
			}
			var se *SharesError
			if !errors.Is(err, ErrTooFewShares) || !errors.As(err, &se) || k != nil {
				t.Fatalf("n=%d, %d missing: %v", n, missing, err)
			}
			want := fmt.Sprintf("keys: unlock: array key: %d of %d shares available, %d needed (generation 1)", n-missing, n, th)
			if missing == n {
				want = fmt.Sprintf("keys: unlock: array key: 0 of %d shares available, %d needed", n, th)
			}
			if err.Error() != want {
				t.Fatalf("error %q, want %q", err, want)
			}
		}
	}
}

func TestUnlockWithoutNVRAM(t *testing.T) {
	a, _ := newArray(t, 3, 6, nil)
	nv := devID(3, 0xff)
	k, rep := mustUnlock(t, a, nv)
	if _, ok := k.Media[nv]; ok || len(k.Media) != 6 || rep.RotationNeeded() {
		t.Fatalf("media %d, report %+v", len(k.Media), rep)
	}
}

// A rotation interrupted after k of the n+1 devices were written, for every k
// and several write orders: Unlock finds the new generation once it is on t
// share holders, the old one before, always the same DEK and media keys, and
// says exactly which devices to rewrite. Rotating again with NextGen (itself
// interrupted at every point) converges.
func TestInterruptedRotation(t *testing.T) {
	const n = 8
	th := Threshold(n)
	orders := map[string]func([][16]byte) [][16]byte{
		"forward": func(ids [][16]byte) [][16]byte { return ids },
		"reverse": func(ids [][16]byte) [][16]byte { s := slices.Clone(ids); slices.Reverse(s); return s },
		"shuffled": func(ids [][16]byte) [][16]byte {
			s := slices.Clone(ids)
			rand.New(rand.NewPCG(7, 7)).Shuffle(len(s), func(i, j int) { s[i], s[j] = s[j], s[i] })
			return s
		},
	}
	for name, order := range orders {
		for k1 := 0; k1 <= n+1; k1++ {
			for k2 := 0; k2 <= n+1; k2++ {
				t.Run(fmt.Sprintf("%s/%d/%d", name, k1, k2), func(t *testing.T) {
					a, k := newArray(t, 4, n, nil)
					ids := order(a.ids())
					// Rotation 1 -> 2, interrupted after k1 devices.
					_, ws := a.rotateSpecs(k, 2, a.specsIn(ids))
					if !slices.Equal(idsOf(ws), ids) {
						t.Fatalf("write order %x, want %x (no stale device)", idsOf(ws), ids)
					}
					a.writeAll(ws[:k1])
					written := idsOf(ws[:k1])
					u, rep := mustUnlock(t, a)
					a.check(u, ids...)
					holders := countHolders(written)
					wantGen := uint64(1)
					if holders >= th {
						wantGen = 2
					}
					wantMax := uint64(1)
					if k1 > 0 {
						wantMax = 2
					}
					var wantStale [][16]byte
					for _, id := range a.ids() {
						if slices.Contains(written, id) != (wantGen == 2) {
							wantStale = append(wantStale, id)
						}
					}
					checkReport(t, rep, wantGen, wantMax, wantStale)

					// Redo with NextGen, interrupted after k2 devices. The stale
					// devices come first in the write order.
					_, ws = a.rotateSpecs(u, rep.NextGen, a.specsIn(ids))
					for i, w := range ws {
						if stale := slices.Contains(rep.Stale, w.ID); stale != (i < len(rep.Stale)) {
							t.Fatalf("write order %x puts stale %x at %d", idsOf(ws), w.ID, i)
						}
					}
					a.writeAll(ws[:k2])
					u2, rep2 := mustUnlock(t, a)
					a.check(u2, ids...)
					if u2.Gen < u.Gen || (countHolders(idsOf(ws[:k2])) >= th) != (u2.Gen == rep.NextGen) {
						t.Fatalf("after redo written to %d devices: gen %d (was %d)", k2, u2.Gen, u.Gen)
					}
					if k2 == n+1 && (rep2.RotationNeeded() || len(rep2.Rejected) > 0) {
						t.Fatalf("complete redo still needs work: %+v", rep2)
					}
					// Finish: one more complete rotation leaves nothing to do.
					_, ws = a.rotate(u2, rep2.NextGen)
					a.writeAll(ws)
					u3, rep3 := mustUnlock(t, a)
					a.check(u3, ids...)
					if u3.Gen != rep2.NextGen || rep3.RotationNeeded() || len(rep3.Rejected) > 0 {
						t.Fatalf("final: gen %d, report %+v", u3.Gen, rep3)
					}
				})
			}
		}
	}
}

func countHolders(ids [][16]byte) int {
	c := 0
	for _, id := range ids {
		if id[1] != 0xff {
			c++
		}
	}
	return c
}

func checkReport(t *testing.T, rep UnlockReport, gen, maxGen uint64, stale [][16]byte) {
	t.Helper()
	if rep.Gen != gen || rep.MaxGen != maxGen || rep.NextGen != maxGen+1 || rep.Interrupted != (maxGen > gen) {
		t.Fatalf("report %+v, want gen %d max %d", rep, gen, maxGen)
	}
	if len(rep.Rejected) != 0 {
		t.Fatalf("rejected: %v", rep.Rejected)
	}
	if !slices.Equal(rep.Stale, stale) {
		t.Fatalf("stale %x, want %x", rep.Stale, stale)
	}
	if rep.RotationNeeded() != (len(stale) > 0 || maxGen > gen) {
		t.Fatalf("RotationNeeded %v", rep.RotationNeeded())
	}
}

// Media keys survive any number of rotations; the AK changes every time.
func TestRotationKeepsDEKAndMediaKeys(t *testing.T) {
	a, k := newArray(t, 5, 6, nil)
	aks := [][]byte{k.AK}
	for gen := uint64(2); gen <= 6; gen++ {
		nk, ws := a.rotate(k, gen)
		a.writeAll(ws)
		for _, w := range ws {
			if w.Cur.Gen != gen || w.Prev.Gen != gen-1 {
				t.Fatalf("device %x: slots of %d and %d", w.ID, w.Cur.Gen, w.Prev.Gen)
			}
		}
		u, rep := mustUnlock(t, a)
		a.check(u, a.ids()...)
		if u.Gen != gen || rep.RotationNeeded() || !bytes.Equal(u.AK, nk.AK) {
			t.Fatalf("gen %d: %+v", u.Gen, rep)
		}
		for _, old := range aks {
			if bytes.Equal(old, u.AK) {
				t.Fatal("array key reused")
			}
		}
		aks = append(aks, u.AK)
		k = u
	}
	k.Wipe()
	if !bytes.Equal(k.AK, make([]byte, KeySize)) || bytes.Equal(a.dek, make([]byte, KeySize)) {
		t.Fatal("Wipe did not clear the keys, or cleared a copy it does not own")
	}
}

func TestRotateGuards(t *testing.T) {
	a, k := newArray(t, 6, 6, nil)
	for _, tc := range []struct {
		name string
		id   [16]byte
		k    *Keys
		devs []DeviceSpec
		gen  uint64
		want error
	}{
		{"same generation", a.id, k, a.specs, 1, ErrGeneration},
		{"older generation", a.id, k, a.specs, 0, ErrGeneration},
		{"too few share holders", a.id, k, a.presentSpecs(devID(6, 0), devID(6, 1)), 2, ErrTooFewShares},
		{"no keys", a.id, nil, a.specs, 2, nil},
		{"other array", [16]byte{9}, k, a.specs, 2, nil},
		{"duplicate device", a.id, k, append(slices.Clone(a.specs), a.specs[0]), 2, nil},
	} {
		_, _, err := Rotate(tc.id, tc.k, tc.devs, a.n, tc.gen, nil)
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	// A generation seen on a device (an interrupted rotation) cannot be reused.
	_, ws := a.rotate(k, 5)
	a.write(ws[0])
	u, rep := mustUnlock(t, a)
	if u.Gen != 1 || rep.NextGen != 6 {
		t.Fatalf("gen %d next %d", u.Gen, rep.NextGen)
	}
	if _, _, err := Rotate(a.id, u, a.specs, a.n, 5, nil); !errors.Is(err, ErrGeneration) {
		t.Errorf("reusing seen generation 5: %v", err)
	}
	if _, _, err := Create(a.id, a.specs[:4], 6, nil); !errors.Is(err, ErrTooFewShares) {
		t.Errorf("Create with 4 of 6 share holders: %v", err)
	}
	if _, _, err := Create(a.id, a.specs, 1, nil); err == nil {
		t.Error("Create with 1 share holder configured succeeded")
	}
}

// A device that missed one rotation is recovered through the previous
// generation and reported stale; after the next rotation it is current. One
// that missed two rotations cannot be recovered and is rejected.
func TestDeviceBackAfterMissingRotations(t *testing.T) {
	a, k := newArray(t, 7, 8, nil)
	gone := devID(7, 3)
	heldBefore := len(k.held)
	nk, ws := a.rotate(k, 2, gone)
	a.writeAll(ws)
	if !bytes.Equal(nk.Media[gone], a.media[gone]) || len(ws) != 8 {
		t.Fatal("the absent device's media key was not carried over")
	}
	if k.Gen != 1 || len(k.held) != heldBefore || !bytes.Equal(k.Media[gone], a.media[gone]) {
		t.Fatal("Rotate changed its argument")
	}
	u, rep := mustUnlock(t, a)
	a.check(u, a.ids()...)
	checkReport(t, rep, 2, 2, [][16]byte{gone})

	// It rejoins: the next rotation includes it with its old media key.
	_, ws = a.rotate(u, rep.NextGen)
	if ws[0].ID != gone {
		t.Fatalf("stale device not written first: %x", idsOf(ws))
	}
	a.writeAll(ws)
	u, rep = mustUnlock(t, a)
	a.check(u, a.ids()...)
	checkReport(t, rep, 3, 3, nil)

	// Absent for two rotations: its generation 3 is gone from the others.
	k2 := u
	for gen := uint64(4); gen <= 5; gen++ {
		k2, ws = a.rotate(k2, gen, gone)
		a.writeAll(ws)
	}
	u, rep = mustUnlock(t, a)
	if len(rep.Rejected) != 1 || rep.Rejected[0].ID != gone || !errors.Is(rep.Rejected[0].Err, ErrNoKeySlot) {
		t.Fatalf("rejected %v", rep.Rejected)
	}
	if _, ok := u.Media[gone]; ok || rep.Gen != 5 || len(rep.Stale) != 0 {
		t.Fatalf("report %+v", rep)
	}
}

// A device added by a rotation gets a fresh media key, and keeps it even when
// that rotation is interrupted before the new generation counts.
func TestDeviceAdded(t *testing.T) {
	a, k := newArray(t, 8, 6, nil)
	added := devID(8, 6)
	a.specs = append(a.specs, DeviceSpec{ID: added, HoldsShare: true})
	a.n = 7
	nk, ws := a.rotate(k, 2)
	if m := nk.Media[added]; len(m) != KeySize || bytes.Equal(m, k.Media[a.specs[0].ID]) {
		t.Fatal("added device has no fresh media key")
	}
	a.media[added] = bytes.Clone(nk.Media[added])
	if ws[0].ID != added || ws[0].Prev.Gen != 1 || ws[0].Prev.hasShare() {
		t.Fatalf("added device's write: %+v", ws[0])
	}
	// Only the new device and two others are written: generation 2 does not count.
	a.writeAll(ws[:3])
	u, rep := mustUnlock(t, a)
	a.check(u, a.ids()...)
	if u.Gen != 1 || !rep.Interrupted || !slices.Contains(rep.Stale, added) {
		t.Fatalf("gen %d report %+v", u.Gen, rep)
	}
	_, ws = a.rotate(u, rep.NextGen)
	a.writeAll(ws)
	u, rep = mustUnlock(t, a)
	a.check(u, a.ids()...)
	checkReport(t, rep, 3, 3, nil)
	if u.held[added].Threshold != Threshold(7) {
		t.Fatalf("threshold %d", u.held[added].Threshold)
	}
}

// A device of another array (other array id, or other keys under the same
// id), planted among ours, is rejected and never trusted; unlocking our
// devices under a wrong array id fails.
func TestForeignDevices(t *testing.T) {
	a, k := newArray(t, 9, 8, nil)
	_, ws := a.rotate(k, 2)
	a.writeAll(ws)

	sameID, _ := newArray(t, 9, 8, nil) // same array id and device ids, other keys
	other, _ := newArray(t, 10, 8, nil)
	_, p := other.rotate(mustKeys(other), 2) // same generation as ours
	other.writeAll(p)

	for name, planted := range map[string]Device{
		"same ids, other keys": *sameID.disk[devID(9, 2)],
		"other array":          withID(*other.disk[devID(10, 2)], devID(9, 2)),
		"other array nvram":    withID(*other.disk[devID(10, 0xff)], devID(9, 0xff)),
	} {
		devs := a.present()
		for i := range devs {
			if devs[i].ID == planted.ID {
				devs[i] = planted
			}
		}
		u, rep, err := Unlock(a.id, devs, a.n, nil)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		a.check(u, slices.DeleteFunc(a.ids(), func(id [16]byte) bool { return id == planted.ID })...)
		if len(rep.Rejected) != 1 || rep.Rejected[0].ID != planted.ID || !errors.Is(rep.Rejected[0].Err, ErrKeyMismatch) {
			t.Fatalf("%s: rejected %v", name, rep.Rejected)
		}
		if _, ok := u.Media[planted.ID]; ok || slices.Contains(rep.Stale, planted.ID) {
			t.Fatalf("%s: foreign device accepted", name)
		}
	}

	if _, _, err := Unlock([16]byte{0xee}, a.present(), a.n, nil); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("wrong array id: %v", err)
	}
	// Only the other array's devices: its own shares verify, but not under our id.
	if _, _, err := Unlock(a.id, other.present(), a.n, nil); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("other array's devices under our id: %v", err)
	}
	// A majority of foreign devices: ours are too few.
	devs := append(a.present()[:3], other.present()[3:]...)
	if _, _, err := Unlock(a.id, devs, a.n, nil); !errors.Is(err, ErrKeyMismatch) && !errors.Is(err, ErrTooFewShares) {
		t.Errorf("mostly foreign: %v", err)
	}
}

func mustKeys(a *array) *Keys {
	k, _ := mustUnlock(a.t, a)
	return k
}

func withID(d Device, id [16]byte) Device {
	d.ID = id
	return d
}

// Damaged shares (well formed, wrong bytes) are found and left out; the
// device's media key still proves it is a member, so it is stale, not
// rejected. A damaged wrapped media key rejects the device.
func TestDamagedKeyMaterial(t *testing.T) {
	for _, bad := range []int{1, 2} {
		a, _ := newArray(t, 11, 8, nil)
		for i := range bad {
			d := a.disk[devID(11, i)]
			d.Cur.AKShare[fieldHeader+i] ^= 0x40
		}
		u, rep := mustUnlock(t, a)
		a.check(u, a.ids()...)
		var want [][16]byte
		for i := range bad {
			want = append(want, devID(11, i))
		}
		checkReport(t, rep, 1, 1, want)
		if rep.Shares != 8-bad {
			t.Fatalf("%d shares used", rep.Shares)
		}
		if u.held[devID(11, 0)].hasShare() {
			t.Fatal("damaged share kept for the next Prev slot")
		}
		_, ws := a.rotate(u, rep.NextGen)
		a.writeAll(ws)
		u, rep = mustUnlock(t, a)
		checkReport(t, rep, 2, 2, nil)
	}

	a, _ := newArray(t, 12, 8, nil)
	a.disk[devID(12, 5)].Cur.DEKPart[fieldHeader+3] ^= 1
	a.disk[devID(12, 6)].Cur.WrappedMediaKey[9] ^= 1
	a.disk[devID(12, 7)].Cur.AKShare = a.disk[devID(12, 7)].Cur.AKShare[:10] // malformed
	u, rep := mustUnlock(t, a)
	a.check(u, devID(12, 0), devID(12, 5), devID(12, 7))
	if len(rep.Rejected) != 1 || rep.Rejected[0].ID != devID(12, 6) || !errors.Is(rep.Rejected[0].Err, ErrKeyMismatch) {
		t.Fatalf("rejected %v", rep.Rejected)
	}
	if !slices.Equal(rep.Stale, [][16]byte{devID(12, 5), devID(12, 7)}) {
		t.Fatalf("stale %x", rep.Stale)
	}

	// Three damaged shares of 8, threshold 6: the search for two bad shares
	// does not find them, and the generation does not verify. (The damage is
	// random in every byte: errors confined to one byte of several shares can
	// cancel out in the combination, which then rightly verifies.)
	a, _ = newArray(t, 13, 8, nil)
	for i := range 3 {
		copy(a.disk[devID(13, i)].Cur.AKShare[fieldHeader:], NewKey())
	}
	if _, _, err := a.unlock(); !errors.Is(err, ErrKeyMismatch) {
		t.Fatalf("three damaged shares: %v", err)
	}
}

// failingSealer fails every Open with its own error.
type failingSealer struct{ err error }

func (f failingSealer) Seal(b []byte) ([]byte, error) { return nil, f.err }
func (f failingSealer) Open(b []byte) ([]byte, error) { return nil, f.err }

func TestSealedShares(t *testing.T) {
	token, _ := NewGCMSealer(NewKey())
	a, k := newArray(t, 14, 8, token)
	if !k.Sealed {
		t.Fatal("Create with a sealer made unsealed keys")
	}
	for _, d := range a.present() {
		if d.HoldsShare != d.Cur.Sealed || (d.HoldsShare && len(d.Cur.AKShare) != fieldHeader+akShareSize+SealedOverhead) {
			t.Fatalf("device %x: sealed %v, share of %d bytes", d.ID, d.Cur.Sealed, len(d.Cur.AKShare))
		}
	}
	wrong, _ := NewGCMSealer(NewKey())
	errKMIP := errors.New("kmip: key revoked")
	for _, tc := range []struct {
		name string
		s    Sealer
		want error
	}{
		{"no sealer", nil, ErrTokenRequired},
		{"wrong token key", wrong, ErrTokenMismatch},
		{"sealer error", failingSealer{errKMIP}, errKMIP},
	} {
		u, _, err := Unlock(a.id, a.present(), a.n, tc.s)
		if !errors.Is(err, tc.want) || u != nil {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	u, rep, err := Unlock(a.id, a.present(), a.n, token)
	if err != nil || !u.Sealed {
		t.Fatal(err)
	}
	a.check(u, a.ids()...)
	checkReport(t, rep, 1, 1, nil)

	// A sealed array does not rotate without its token.
	if _, _, err := Rotate(a.id, u, a.specs, a.n, 2, nil); !errors.Is(err, ErrTokenRequired) {
		t.Errorf("rotate without token: %v", err)
	}
	// One share that no longer opens is left out like a missing one.
	a.disk[devID(14, 0)].Cur.AKShare[fieldHeader+5] ^= 1
	u, rep, err = Unlock(a.id, a.present(), a.n, token)
	if err != nil {
		t.Fatal(err)
	}
	a.check(u, a.ids()...)
	checkReport(t, rep, 1, 1, [][16]byte{devID(14, 0)})
}

// Enabling the token on an unsealed array seals the new generation and the
// previous one, so no generation can be unlocked without the token; an
// interrupted enabling never leaves a sealed generation bypassed.
func TestEnableToken(t *testing.T) {
	token, _ := NewGCMSealer(NewKey())
	a, k := newArray(t, 15, 8, nil)
	before := a.present()
	a.sealer = token
	nk, ws := a.rotate(k, 2)
	if !nk.Sealed {
		t.Fatal("rotation with a sealer is not sealed")
	}
	for _, w := range ws {
		holder := w.ID[1] != 0xff
		if w.Cur.Sealed != holder || w.Prev.Sealed != holder || w.Prev.Gen != 1 {
			t.Fatalf("device %x: cur sealed %v, prev gen %d sealed %v", w.ID, w.Cur.Sealed, w.Prev.Gen, w.Prev.Sealed)
		}
	}
	a.writeAll(ws)
	if _, _, err := Unlock(a.id, a.present(), a.n, nil); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("sealed array unlocked without its token: %v", err)
	}
	u, rep, err := Unlock(a.id, a.present(), a.n, token)
	if err != nil {
		t.Fatal(err)
	}
	a.check(u, a.ids()...)
	checkReport(t, rep, 2, 2, nil)

	// Devices that kept their unsealed slots of generation 1 beside the
	// sealed generation 2 (as a rotation that did not reseal Prev would
	// leave them): the unsealed generation is complete, but Unlock without
	// the token must not fall back to it.
	devs := a.present()
	for i := range devs {
		devs[i].Prev = before[i].Cur
	}
	if _, _, err := Unlock(a.id, devs, a.n, nil); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("fell back to an unsealed generation: %v", err)
	}
	if u, _, err := Unlock(a.id, devs, a.n, token); err != nil || u.Gen != 2 {
		t.Fatalf("with the token: %v", err)
	}

	// Even with the newest generation's shares gone bad, Unlock without the
	// token does not fall back to an older generation: all are sealed.
	for _, d := range a.disk {
		if d.HoldsShare {
			d.Cur.DEKPart[fieldHeader] ^= 1
		}
	}
	if _, _, err := Unlock(a.id, a.present(), a.n, nil); !errors.Is(err, ErrTokenRequired) {
		t.Fatalf("fell back without the token: %v", err)
	}
	u, rep, err = Unlock(a.id, a.present(), a.n, token)
	if err != nil || u.Gen != 1 || !rep.Interrupted {
		t.Fatalf("with the token: gen %v, %+v, %v", u, rep, err)
	}
	a.check(u, a.ids()...)
}

func TestUnlockInputErrors(t *testing.T) {
	a, _ := newArray(t, 16, 6, nil)
	devs := a.present()
	if _, _, err := Unlock(a.id, append(devs, devs[0]), a.n, nil); err == nil {
		t.Error("duplicate device accepted")
	}
	if _, _, err := Unlock(a.id, devs, 1, nil); err == nil {
		t.Error("1 share holder configured accepted")
	}
	if _, _, err := Unlock(a.id, make([]Device, maxDevices+1), a.n, nil); err == nil {
		t.Error("too many devices accepted")
	}
}

func benchmarkUnlock(b *testing.B, n int) {
	a, _ := newArray(b, 20, n, nil)
	devs := a.present()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Unlock(a.id, devs, n, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkUnlock8(b *testing.B)  { benchmarkUnlock(b, 8) }
func BenchmarkUnlock24(b *testing.B) { benchmarkUnlock(b, 24) }

func BenchmarkUnlock24Sealed(b *testing.B) {
	token, _ := NewGCMSealer(NewKey())
	a, _ := newArray(b, 21, 24, token)
	devs := a.present()
	for b.Loop() {
		if _, _, err := Unlock(a.id, devs, 24, token); err != nil {
			b.Fatal(err)
		}
	}
}

// Two damaged shares of 24: the search tries all pairs.
func BenchmarkUnlock24TwoBadShares(b *testing.B) {
	a, _ := newArray(b, 22, 24, nil)
	copy(a.disk[devID(22, 22)].Cur.AKShare[fieldHeader:], NewKey())
	copy(a.disk[devID(22, 23)].Cur.AKShare[fieldHeader:], NewKey())
	devs := a.present()
	for b.Loop() {
		if _, _, err := Unlock(a.id, devs, 24, nil); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRotate24(b *testing.B) {
	a, k := newArray(b, 23, 24, nil)
	gen := uint64(2)
	for b.Loop() {
		if _, _, err := Rotate(a.id, k, a.specs, 24, gen, nil); err != nil {
			b.Fatal(err)
		}
		gen++
	}
}
