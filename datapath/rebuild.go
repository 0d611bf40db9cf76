package datapath

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"

	"vfa/internal/devsb"
	"vfa/keys"
	"vfa/ssd"
)

// Drive replacement: `puredrive admit` puts a new, empty device file in the
// slot of a missing or failed SSD and rebuilds onto it, as a FlashArray
// rebuilds onto a replacement drive.
//
// Admitting a slot, in this order (each step durable before the next):
//
//  1. The slot is recorded in the metadata control value "rebuild" (a list
//     of slots). From here on, every unlock resumes the rebuild of the slot
//     while its device is present.
//  2. A failed device file is renamed to "<name>.failed" (kept for
//     inspection; an admin deletes it), and a new sparse device file is
//     created with a new device id, the array's shape, no key slots, and a
//     share of the system key at an unused x coordinate (keys.ExtendShare).
//  3. The array key is rotated over the present devices, the new one
//     included: it gets a media key, a share of the new array key and its
//     part of the wrapped DEK, written first (keys.Rotate's order), so a
//     crash at any point leaves a set that unlocks. A crash before the
//     rotation reached the new device leaves a device without key slots,
//     which the next unlock rejects as missing; admitting again replaces it.
//  4. The device joins the set (ssd.Set.Attach). New stripe rows are written
//     to it from then on; rows written before are rebuilt from parity when
//     read, and by the rebuild.
//  5. The rebuild scrubs every segment (ssd.Set.Scrub checks each page and
//     rewrites the ones that fail: on the new device, all of them), then
//     scrubs again every segment that grew meanwhile (rows whose write began
//     before the attach), clears the slot from "rebuild", resets the slot's
//     error counters and raises "device.rebuilt".
//
// While a slot rebuilds, `puredrive list` shows it "recovering" with its
// progress; the array serves I/O throughout; Close stops the rebuild between
// segments and the next unlock starts it again from the beginning (a scrub
// of a rebuilt segment finds nothing to do).

// DriveRecovering: a new device that is being rebuilt from parity.
const DriveRecovering DriveStatus = "recovering"

// rebuildState is the progress of one rebuild run (all slots it covers).
type rebuildState struct {
	slots []int
	total atomic.Int64 // segments to scrub
	done  atomic.Int64
	pages atomic.Int64 // pages rewritten
}

func (r *rebuildState) covers(slot int) bool { return slices.Contains(r.slots, slot) }

// rebuildingSlots reads the control value "rebuild".
func (s *Store) rebuildingSlots() ([]int, error) {
	v, c, err := s.db.Get(controlKey("rebuild"))
	if errors.Is(err, pebble.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if len(v) < 1 || (len(v)-1)%8 != 0 {
		return nil, fmt.Errorf("%w: control value rebuild", errBadMeta)
	}
	u, err := decodeU64s(v, (len(v)-1)/8)
	if err != nil {
		return nil, err
	}
	out := make([]int, 0, len(u))
	for _, x := range u {
		if x >= uint64(s.o.SSDs) {
			return nil, fmt.Errorf("%w: control value rebuild names slot %d", errBadMeta, x)
		}
		out = append(out, int(x))
	}
	return out, nil
}

func (s *Store) setRebuildingSlots(slots []int) error {
	b := s.db.NewBatch()
	defer b.Close()
	if len(slots) == 0 {
		_ = b.Delete(controlKey("rebuild"), nil)
	} else {
		u := make([]uint64, len(slots))
		for i, x := range slots {
			u[i] = uint64(x)
		}
		_ = b.Set(controlKey("rebuild"), encodeU64s(u...), nil)
	}
	return b.Commit(pebble.Sync)
}

// AdmitDrives replaces the SSDs in slots (all missing or failed ones when
// slots is empty) with new device files and starts rebuilding onto them. It
// returns the slots admitted. A healthy slot, a locked array, or nothing to
// admit is an error that changes nothing.
func (s *Store) AdmitDrives(slots []int) ([]int, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if !s.unlocked.Load() {
		return nil, fmt.Errorf("%w: drives are admitted while the array is unlocked", ErrLocked)
	}
	s.admitMu.Lock()
	defer s.admitMu.Unlock()
	health := s.set.Health()
	usable := func(i int) bool { return health[i].State == ssd.StateOK }
	if len(slots) == 0 {
		for i := range health {
			if !usable(i) {
				slots = append(slots, i)
			}
		}
		if len(slots) == 0 {
			return nil, fmt.Errorf("%w: every SSD is healthy; there is no drive to admit", ErrInvalid)
		}
	}
	slices.Sort(slots)
	slots = slices.Compact(slots)
	for _, i := range slots {
		if i < 0 || i >= s.o.SSDs {
			return nil, fmt.Errorf("%w: no SSD slot %d (the array has %d)", ErrInvalid, i, s.o.SSDs)
		}
		if usable(i) {
			return nil, fmt.Errorf("%w: %s is in use and healthy; only a missing or failed drive is replaced", ErrInvalid, SSDName(i))
		}
	}
	tmpl, err := s.deviceTemplate()
	if err != nil {
		return nil, err
	}
	pending, err := s.rebuildingSlots()
	if err != nil {
		return nil, err
	}
	if err := s.setRebuildingSlots(union(pending, slots)); err != nil {
		return nil, err
	}
	var admitted []int
	var errs []error
	for _, i := range slots {
		if err := s.admitOne(i, tmpl); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", SSDName(i), err))
			continue
		}
		admitted = append(admitted, i)
	}
	if len(admitted) > 0 {
		s.startRebuild(admitted)
	}
	return admitted, errors.Join(errs...)
}

func union(a, b []int) []int {
	out := slices.Concat(a, b)
	slices.Sort(out)
	return slices.Compact(out)
}

// deviceTemplate is the superblock shape every SSD of the array shares,
// from a present device.
func (s *Store) deviceTemplate() (devsb.Superblock, error) {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	for i, sb := range s.sbs {
		if sb != nil && s.devs[i] != nil && s.devs[i].Failed() == nil {
			return devsb.Superblock{Kind: devsb.KindSSD, ArrayID: s.o.ArrayID, Devices: sb.Devices, AUSize: sb.AUSize, Capacity: sb.Capacity}, nil
		}
	}
	return devsb.Superblock{}, fmt.Errorf("%w: no healthy SSD to take the array's device shape from", ErrInvalid)
}

// systemShareFor makes a share of the system key for a new device, from the
// present devices' shares that rebuild it.
func (s *Store) systemShareFor() []byte {
	if s.sysKey == nil {
		return nil
	}
	groups := map[string][][]byte{}
	for i, sb := range s.sbs {
		if sb == nil || s.devs[i] == nil {
			continue
		}
		if split, share, ok := decodeSystemShare(sb.Extra); ok {
			groups[string(split)] = append(groups[string(split)], share)
		}
	}
	t := keys.Threshold(s.o.SSDs)
	for split, shares := range groups {
		if len(shares) < t {
			continue
		}
		if key, err := keys.Combine(shares[:t]); err != nil || !bytes.Equal(key, s.sysKey) {
			continue
		}
		x := keys.FreeShareX(shares)
		if x == 0 {
			return nil
		}
		nw, err := keys.ExtendShare(shares[:t], x)
		if err != nil {
			return nil
		}
		return encodeSystemShare([]byte(split), nw)
	}
	return nil
}

// admitOne does steps 2 to 4 for one slot.
func (s *Store) admitOne(slot int, tmpl devsb.Superblock) error {
	path := ssdPath(s.o.Dir, slot)
	s.keyMu.Lock()
	if _, err := s.o.FS.Stat(path); err == nil {
		if err := s.o.FS.Rename(path, path+".failed"); err != nil {
			s.keyMu.Unlock()
			return fmt.Errorf("moving the failed device file aside: %w", err)
		}
	}
	sb := tmpl
	sb.DeviceID, sb.Slot, sb.Extra = newUUID(), uint16(slot), s.systemShareFor()
	dev, err := ssd.Create(s.o.FS, path, &sb)
	if err != nil {
		s.keyMu.Unlock()
		return err
	}
	old := s.devs[slot]
	s.devs[slot], s.sbs[slot] = dev, dev.Superblock()
	err = s.rotateAndRecordLocked("drive admitted in " + SSDName(slot))
	var media []byte
	if err == nil {
		media = s.k.Media[sb.DeviceID]
	}
	if err != nil || media == nil {
		// Not usable: keep the slot as it was (the new file has no key
		// slots of a generation that counts and unlocks as missing).
		s.devs[slot] = old
		if old != nil {
			s.sbs[slot] = old.Superblock()
		}
		s.keyMu.Unlock()
		dev.Close()
		if err == nil {
			err = errors.New("no media key after the key rotation")
		}
		return err
	}
	s.keyMu.Unlock()
	if err := s.set.Attach(slot, dev, media); err != nil {
		return err
	}
	s.event(Info, "device.admitted", SSDName(slot), "new device admitted; rebuilding from parity")
	s.o.Events(Event{Time: s.o.Now(), Code: "device.missing", Component: SSDName(slot), Clear: true})
	s.o.Events(Event{Time: s.o.Now(), Code: "device.failed", Component: SSDName(slot), Clear: true})
	return nil
}

// startRebuild runs the rebuild of slots in the background (one at a time;
// a second admission while one runs starts another pass over all segments,
// which is what its slots need).
func (s *Store) startRebuild(slots []int) {
	r := &rebuildState{slots: slots}
	s.rebuildMu.Lock()
	s.rebuilds = append(s.rebuilds, r)
	s.rebuildMu.Unlock()
	s.wg.Add(1)
	go s.rebuild(r)
}

// resumeRebuild restarts, at unlock, the rebuilds a crash or shutdown cut
// short, for the slots whose device is present.
func (s *Store) resumeRebuild() {
	slots, err := s.rebuildingSlots()
	if err != nil {
		s.event(Warning, "device.rebuild", "ssd", "cannot read the rebuild state: "+err.Error())
		return
	}
	var present []int
	for _, i := range slots {
		if s.devs[i] != nil && s.devs[i].Failed() == nil {
			present = append(present, i)
		}
	}
	if len(present) > 0 {
		s.startRebuild(present)
	}
}

func (s *Store) rebuild(r *rebuildState) {
	defer s.wg.Done()
	defer func() {
		s.rebuildMu.Lock()
		s.rebuilds = slices.DeleteFunc(s.rebuilds, func(x *rebuildState) bool { return x == r })
		s.rebuildMu.Unlock()
	}()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-s.stopC:
			cancel()
		case <-ctx.Done():
		}
	}()
	start := time.Now()
	rows := s.segmentRows()
	r.total.Store(int64(len(rows)))
	var failures []string
	scrub := func(id uint64, from uint32) {
		s.seg.gate.RLock()
		defer s.seg.gate.RUnlock()
		s.seg.mu.RLock()
		rec, ok := s.seg.segs[id]
		var au, n uint32
		if ok {
			au, n = rec.au, rec.rows
		}
		s.seg.mu.RUnlock()
		if !ok || n == 0 || n <= from {
			return // collected meanwhile, or nothing new
		}
		k, err := s.set.Scrub(ctx, int(au), id, int(n)*s.seg.rowPayload)
		r.pages.Add(int64(k))
		if err != nil && ctx.Err() == nil {
			failures = append(failures, err.Error())
		}
	}
	ids := make([]uint64, 0, len(rows))
	for id := range rows {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		scrub(id, 0)
		r.done.Add(1)
	}
	// Segments that grew while the first pass ran may hold rows whose write
	// began before the device joined.
	for id, n := range s.segmentRows() {
		if ctx.Err() != nil {
			return
		}
		if was, ok := rows[id]; !ok || n > was {
			scrub(id, 0)
		}
	}
	if ctx.Err() != nil {
		return
	}
	names := make([]string, len(r.slots))
	for i, x := range r.slots {
		names[i] = SSDName(x)
	}
	if len(failures) > 0 {
		s.event(Critical, "device.rebuild", strings.Join(names, ","), fmt.Sprintf("rebuild finished with %d unrecoverable segments, first: %s", len(failures), failures[0]))
		return
	}
	s.admitMu.Lock()
	pending, err := s.rebuildingSlots()
	if err == nil {
		err = s.setRebuildingSlots(slices.DeleteFunc(pending, r.covers))
	}
	s.admitMu.Unlock()
	if err != nil {
		s.event(Warning, "device.rebuild", strings.Join(names, ","), "cannot record the end of the rebuild: "+err.Error())
		return
	}
	for _, x := range r.slots {
		s.set.ResetHealth(x)
	}
	s.event(Info, "device.rebuilt", strings.Join(names, ","), fmt.Sprintf("rebuilt from parity: %d segments, %d pages written, in %s",
		len(ids), r.pages.Load(), time.Since(start).Round(time.Millisecond)))
}

// segmentRows is every segment's id and rows written.
func (s *Store) segmentRows() map[uint64]uint32 {
	s.seg.mu.RLock()
	defer s.seg.mu.RUnlock()
	out := make(map[uint64]uint32, len(s.seg.segs))
	for id, rec := range s.seg.segs {
		out[id] = rec.rows
	}
	return out
}

// rebuildProgress reports, for a slot being rebuilt, the fraction done.
func (s *Store) rebuildProgress(slot int) (float64, bool) {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	for _, r := range s.rebuilds {
		if r.covers(slot) {
			t := r.total.Load()
			if t == 0 {
				return 0, true
			}
			return float64(r.done.Load()) / float64(t), true
		}
	}
	return 0, false
}

// Rebuilding reports whether any rebuild is running.
func (s *Store) Rebuilding() bool {
	s.rebuildMu.Lock()
	defer s.rebuildMu.Unlock()
	return len(s.rebuilds) > 0
}
