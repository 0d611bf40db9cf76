package datapath

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
	"vfa/keys"
	"vfa/ssd"
)

// Crypto-erase: what disabling the security token does. Every device's
// superblocks (both copies: every array key share, DEK partition and
// wrapped media key of every generation) are overwritten with zeros and
// synced, then the device files are deleted, so no key that could decrypt
// a stored block exists any more. The block map, the dedup index, the
// segment table and the volume catalogue are deleted from the metadata
// store (and compacted away). Then new devices of the same geometry are
// created with a new key hierarchy (new array key, DEK and media keys, no
// security token) and the store unlocks again: an empty, usable array with
// the same array id.
//
// Kept: the array's objects (package array decides which of them to drop),
// the volume and segment id counters (so no serial number and no segment id
// is ever reused) and the system key, re-split over the new devices (it
// protects configuration secrets such as certificate keys, not data).
//
// Writes and reads in flight when the erase starts fail (the store is
// locked first); volume handles taken before it are marked destroyed and
// stay so.

// ErrEraseGeometry: no device of the array could be read to learn the size
// of the devices to recreate.
var ErrEraseGeometry = errors.New("device geometry unknown")

type eraseGeometry struct {
	ssdSize, nvramSize int64
	auSize             int
}

// CryptoErase destroys all data and key material and leaves the store
// unlocked and empty. See the comment above for what is kept.
func (s *Store) CryptoErase() error {
	s.unlockMu.Lock()
	if s.closed.Load() {
		s.unlockMu.Unlock()
		return ErrClosed
	}
	reason := "crypto-erase in progress"
	s.lockReason.Store(&reason)
	s.unlocked.Store(false)
	// The flusher may rotate keys (it takes keyMu): stop it first.
	if s.cancel != nil {
		s.cancel()
		s.wg.Wait()
		s.cancel = nil
	}
	s.keyMu.Lock()
	err := s.eraseLocked()
	s.keyMu.Unlock()
	if err != nil {
		r := "crypto-erase failed: " + err.Error()
		s.lockReason.Store(&r)
		s.unlockMu.Unlock()
		return fmt.Errorf("crypto-erase: %w", err)
	}
	s.unlockMu.Unlock()
	if err := s.Unlock(); err != nil {
		return fmt.Errorf("crypto-erase: unlock the new key hierarchy: %w", err)
	}
	s.event(Warning, "array.erased", "keys", "every key share and DEK partition was obliterated (crypto-erase); the array is empty")
	return nil
}

func (s *Store) eraseLocked() error {
	o := s.o
	if s.log != nil {
		_ = s.log.Close()
	}
	geo, err := s.geometry()
	if err != nil {
		return err
	}
	s.closeDevices()
	if s.k != nil {
		s.k.Wipe()
	}
	// 1. Obliterate every key slot on every device, then the files.
	paths := []string{nvramPath(o.Dir)}
	for i := 0; i < o.SSDs; i++ {
		paths = append(paths, ssdPath(o.Dir, i))
	}
	for _, p := range paths {
		if err := obliterate(o.FS, p); err != nil {
			return err
		}
	}
	// 2. Drop the data's metadata.
	cp, err := s.getControl("checkpoint", 3)
	if err != nil {
		return err
	}
	b := s.db.NewBatch()
	// Everything but the control values and the objects: the volumes, the
	// media, the block maps, the dedup index, the segments (and whatever
	// data metadata a later format adds under another prefix).
	for _, r := range [][2]byte{{0, pfxControl}, {pfxControl + 1, pfxObject}, {pfxObject + 1, 0xff}} {
		_ = b.DeleteRange([]byte{r[0]}, []byte{r[1]}, nil)
	}
	// 3. New devices and key hierarchy (no security token).
	s.o.Sealer = nil
	specs := make([]keys.DeviceSpec, 0, o.SSDs+1)
	ids := make([][16]byte, o.SSDs+1)
	for i := range ids {
		ids[i] = newUUID()
		specs = append(specs, keys.DeviceSpec{ID: ids[i], HoldsShare: i < o.SSDs})
	}
	_, writes, err := keys.Create(o.ArrayID, specs, o.SSDs, nil)
	if err != nil {
		b.Close()
		return err
	}
	slots := map[[16]byte]keys.Slot{}
	for _, w := range writes {
		slots[w.ID] = w.Cur
	}
	var sysShares [][]byte
	var split []byte
	if s.sysKey != nil {
		split = keys.NewKey()[:8]
		if sysShares, err = keys.Split(s.sysKey, o.SSDs, keys.Threshold(o.SSDs)); err != nil {
			b.Close()
			return err
		}
	}
	for i := 0; i < o.SSDs; i++ {
		sb := &devsb.Superblock{
			Kind: devsb.KindSSD, ArrayID: o.ArrayID, DeviceID: ids[i], Slot: uint16(i),
			Devices: uint16(o.SSDs), AUSize: uint32(geo.auSize), Capacity: geo.ssdSize,
			Cur: toDevsbSlot(slots[ids[i]]),
		}
		if sysShares != nil {
			sb.Extra = encodeSystemShare(split, sysShares[i])
		}
		d, err := ssd.Create(o.FS, ssdPath(o.Dir, i), sb)
		if err != nil {
			b.Close()
			return fmt.Errorf("create %s: %w", SSDName(i), err)
		}
		d.Close()
	}
	if sysShares == nil {
		if err := createSystemShares(o.FS, o.Dir, o.SSDs); err != nil {
			b.Close()
			return err
		}
	}
	nv := &devsb.Superblock{Kind: devsb.KindNVRAM, ArrayID: o.ArrayID, DeviceID: ids[o.SSDs], Devices: uint16(o.SSDs),
		Capacity: geo.nvramSize, Cur: toDevsbSlot(slots[ids[o.SSDs]])}
	if err := createNVRAM(o.FS, nvramPath(o.Dir), nv); err != nil {
		b.Close()
		return err
	}
	for _, d := range []string{filepath.Join(o.Dir, "ssd"), filepath.Join(o.Dir, "nvram")} {
		if err := syncDir(o.FS, d); err != nil {
			b.Close()
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	// 4. Control values of an empty array. The NVRAM sequence goes on from
	// where it was (the new log starts at offset 0 of a zeroed device).
	_ = b.Set(controlKey("checkpoint"), encodeU64s(cp[0], 0, 0), nil)
	_ = b.Set(controlKey("space"), encodeU64s(0, 0), nil)
	_ = b.Set(controlKey("keyrot"), encodeU64s(uint64(o.Now().UnixNano())), nil)
	_ = b.Set(controlKey("keyset"), []byte(deviceSetDigestOf(ids[:o.SSDs])), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		b.Close()
		return fmt.Errorf("metadata: %w", err)
	}
	b.Close()
	if err := s.db.Compact(context.Background(), []byte{0}, []byte{0xff}, false); err != nil {
		return fmt.Errorf("metadata compaction: %w", err)
	}
	// 5. In-memory state of an empty array.
	s.vols.mu.Lock()
	for _, v := range s.vols.byID {
		st := *v.st.Load()
		st.rec.Destroyed = o.Now().UnixNano()
		v.st.Store(&st)
	}
	s.vols.byID, s.vols.byName, s.vols.media = map[uint64]*Volume{}, map[string]uint64{}, map[uint64]*mediumState{}
	s.vols.mu.Unlock()
	s.cache = newLocCache(1 << 16)
	s.pend.mu.RLock()
	n := len(s.pend.queue)
	s.pend.mu.RUnlock()
	if n > 0 {
		s.pend.remove(n)
	}
	s.flushedMu.Lock()
	s.flushErr = nil
	s.flushedMu.Unlock()
	s.jobMu.Lock()
	s.jobs = nil
	s.jobMu.Unlock()
	// The reducers' fingerprint key derives from the old DEK.
	s.redOnce = sync.Once{}
	s.reds = nil
	s.k = nil
	return nil
}

// geometry reads the device sizes from the superblocks (open devices, or
// the files of a locked array).
func (s *Store) geometry() (eraseGeometry, error) {
	var g eraseGeometry
	for i, sb := range s.sbs {
		if sb != nil && s.devs[i] != nil {
			g.ssdSize, g.auSize = sb.Capacity, int(sb.AUSize)
			break
		}
	}
	if s.nvsb != nil {
		g.nvramSize = s.nvsb.Capacity
	}
	for i := 0; i < s.o.SSDs && g.ssdSize == 0; i++ {
		d, sb, err := ssd.Open(s.o.FS, ssdPath(s.o.Dir, i))
		if err != nil {
			continue
		}
		if sb.ArrayID == s.o.ArrayID {
			g.ssdSize, g.auSize = sb.Capacity, int(sb.AUSize)
		}
		d.Close()
	}
	if g.nvramSize == 0 {
		if f, err := s.o.FS.Open(nvramPath(s.o.Dir)); err == nil {
			if sb, err := devsb.Read(f); err == nil && sb.ArrayID == s.o.ArrayID {
				g.nvramSize = sb.Capacity
			}
			f.Close()
		}
	}
	if g.ssdSize == 0 || g.auSize == 0 {
		return g, fmt.Errorf("%w: no readable SSD superblock", ErrEraseGeometry)
	}
	if g.nvramSize == 0 {
		g.nvramSize = DefaultNVRAMSize
	}
	return g, nil
}

// obliterate overwrites both superblock copies of a device file with zeros,
// syncs, and deletes the file. A missing file is fine.
func obliterate(fs vfs.FS, path string) error {
	f, err := fs.OpenReadWrite(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil
		}
		return fmt.Errorf("obliterate %s: %w", path, err)
	}
	zero := make([]byte, devsb.DataOffset)
	if _, err := f.WriteAt(zero, 0); err != nil {
		f.Close()
		return fmt.Errorf("obliterate %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("obliterate %s: %w", path, err)
	}
	f.Close()
	if err := fs.Remove(path); err != nil {
		return fmt.Errorf("obliterate %s: %w", path, err)
	}
	return nil
}
