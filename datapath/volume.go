package datapath

import (
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/bloom"
)

func bloomPolicy() pebble.FilterPolicy { return bloom.FilterPolicy(10) }

// Volumes and media.
//
// A volume (or snapshot) points at a medium; a medium is a block map with an
// optional parent that reads fall back to. Taking a snapshot freezes the
// volume's medium (the snapshot now owns it) and gives the volume a new, empty
// medium whose parent is the frozen one: O(1), and every block is shared.
// Copying a volume does the same for the copy. A medium is deleted (its
// entries dropped and their references released) when nothing owns it and no
// medium has it as parent.

// volumeRecord is the persisted form of a volume or snapshot (JSON after the
// version byte; see meta.go).
type volumeRecord struct {
	ID        uint64 `json:"id"`
	Name      string `json:"name"`
	Serial    string `json:"serial"`
	Size      int64  `json:"size"`
	Medium    uint64 `json:"medium"`
	Created   int64  `json:"created"`
	Destroyed int64  `json:"destroyed,omitempty"`
	Snapshot  bool   `json:"snapshot,omitempty"`
	Source    uint64 `json:"source,omitempty"`
	HostKey   string `json:"host_key,omitempty"` // reserved for end-to-end encryption
}

// VolumeInfo describes a volume or snapshot.
type VolumeInfo struct {
	ID        uint64
	Name      string
	Serial    string
	Size      int64 // bytes
	Created   time.Time
	Destroyed time.Time // zero unless destroyed (pending eradication)
	Snapshot  bool
	Source    uint64 // for a snapshot: the volume it was taken of
	Medium    uint64
}

func (r *volumeRecord) info() VolumeInfo {
	v := VolumeInfo{ID: r.ID, Name: r.Name, Serial: r.Serial, Size: r.Size, Created: time.Unix(0, r.Created),
		Snapshot: r.Snapshot, Source: r.Source, Medium: r.Medium}
	if r.Destroyed != 0 {
		v.Destroyed = time.Unix(0, r.Destroyed)
	}
	return v
}

// chainLink is one medium of a read chain; limit bounds the blocks that may be
// looked up further down (in the links after it).
type chainLink struct {
	medium uint64
	limit  uint64
}

// volState is an immutable snapshot of what the I/O path needs.
type volState struct {
	rec   volumeRecord
	chain []chainLink
}

// Volume is the I/O handle of one volume or snapshot.
type Volume struct {
	s  *Store
	id uint64
	// mu: writes hold it shared while they pick their medium and append to
	// NVRAM; snapshot, copy and compare-and-write hold it exclusively.
	mu sync.RWMutex
	st atomic.Pointer[volState]
	// hostKey is the end-to-end encryption stage (nil: none).
	hostKey atomic.Pointer[HostCipher]
}

// HostCipher is the end-to-end encryption stage: sectors arrive encrypted by
// the host and are decrypted before reduction; reads are re-encrypted.
type HostCipher interface {
	Decrypt(sector uint64, p []byte) error
	Encrypt(sector uint64, p []byte) error
}

// SetHostCipher installs (or, with nil, removes) the volume's end-to-end
// encryption stage. Writes are decrypted with it before anything is stored;
// reads are encrypted with it after the stored data is decrypted.
func (v *Volume) SetHostCipher(hc HostCipher) {
	if hc == nil {
		v.hostKey.Store(nil)
		return
	}
	v.hostKey.Store(&hc)
}

type mediumState struct {
	mediumRec
	deleting bool
}

// volumes is the in-memory catalogue, persisted in Pebble.
type volumes struct {
	mu      sync.RWMutex
	byID    map[uint64]*Volume
	byName  map[string]uint64
	media   map[uint64]*mediumState
	nextMed uint64
	nextVol uint64
}

func loadVolumes(s *Store) (*volumes, error) {
	vs := &volumes{byID: map[uint64]*Volume{}, byName: map[string]uint64{}, media: map[uint64]*mediumState{}}
	ids, err := s.getControl("ids", 2)
	if err != nil {
		return nil, err
	}
	vs.nextMed, vs.nextVol = ids[0], ids[1]
	it, err := s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxMedium}, UpperBound: []byte{pfxMedium + 1}})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		m, err := decodeMedium(it.Value())
		if err != nil {
			it.Close()
			return nil, err
		}
		vs.media[binary.BigEndian.Uint64(it.Key()[1:])] = &mediumState{mediumRec: m}
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	it, err = s.db.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxVolume}, UpperBound: []byte{pfxVolume + 1}})
	if err != nil {
		return nil, err
	}
	for it.First(); it.Valid(); it.Next() {
		var r volumeRecord
		v := it.Value()
		if len(v) < 1 || v[0] != metaVersion {
			it.Close()
			return nil, fmt.Errorf("%w: volume", errBadMeta)
		}
		if err := json.Unmarshal(v[1:], &r); err != nil {
			it.Close()
			return nil, fmt.Errorf("%w: volume: %v", errBadMeta, err)
		}
		vol := &Volume{s: s, id: r.ID}
		vs.byID[r.ID] = vol
		vs.byName[strings.ToLower(r.Name)] = r.ID
		vol.st.Store(&volState{rec: r})
	}
	if err := it.Close(); err != nil {
		return nil, err
	}
	for _, vol := range vs.byID {
		vs.refreshChain(vol)
	}
	for id, m := range vs.media {
		if m.refs == 0 {
			m.deleting = true
			_ = id
		}
	}
	return vs, nil
}

// refreshChain recomputes vol's read chain from the media table (vs.mu held
// or exclusive access).
func (vs *volumes) refreshChain(vol *Volume) {
	old := vol.st.Load()
	rec := old.rec
	var chain []chainLink
	limit := uint64(rec.Size / BlockSize)
	for m := rec.Medium; m != 0; {
		ms := vs.media[m]
		if ms == nil {
			break
		}
		chain = append(chain, chainLink{medium: m, limit: limit})
		limit = min(limit, ms.limit) // what may be looked up in the parent
		m = ms.parent
		if len(chain) > 1<<16 {
			break
		}
	}
	vol.st.Store(&volState{rec: rec, chain: chain})
}

func (r *volumeRecord) encode() []byte {
	b, _ := json.Marshal(r)
	return append([]byte{metaVersion}, b...)
}

// serial returns the 24-hex-digit serial of volume id in this array.
func (s *Store) serial(id uint64) string {
	return strings.ToUpper(hex.EncodeToString(s.o.ArrayID[:8])) + fmt.Sprintf("%08X", uint32(id))
}

func (vs *volumes) putIDs(b *pebble.Batch) {
	_ = b.Set(controlKey("ids"), encodeU64s(vs.nextMed, vs.nextVol), nil)
}

func (vs *volumes) putMedium(b *pebble.Batch, id uint64) {
	m := vs.media[id]
	if m == nil {
		_ = b.Delete(u64Key(pfxMedium, id), nil)
		return
	}
	_ = b.Set(u64Key(pfxMedium, id), m.encode(), nil)
}

func (vs *volumes) newMedium(parent, limit uint64) uint64 {
	id := vs.nextMed
	vs.nextMed++
	vs.media[id] = &mediumState{mediumRec: mediumRec{parent: parent, refs: 1, limit: limit}}
	return id
}

func checkSize(size int64) error {
	if size <= 0 || size%SectorSize != 0 || size > MaxVolumeSize {
		return fmt.Errorf("%w: volume size %d (a multiple of 512 bytes up to 4 PiB)", ErrInvalid, size)
	}
	return nil
}

// CreateVolume makes a new, empty, thin volume.
func (s *Store) CreateVolume(name string, size int64) (VolumeInfo, error) {
	if err := checkSize(size); err != nil {
		return VolumeInfo{}, err
	}
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	if _, ok := vs.byName[strings.ToLower(name)]; ok {
		return VolumeInfo{}, fmt.Errorf("%w: %s", ErrExists, name)
	}
	b := s.db.NewBatch()
	defer b.Close()
	med := vs.newMedium(0, 0)
	id := vs.nextVol
	vs.nextVol++
	rec := volumeRecord{ID: id, Name: name, Serial: s.serial(id), Size: size, Medium: med, Created: s.o.Now().UnixNano()}
	_ = b.Set(u64Key(pfxVolume, id), rec.encode(), nil)
	_ = b.Set(append([]byte{pfxName}, strings.ToLower(name)...), binary.BigEndian.AppendUint64(nil, id), nil)
	vs.putMedium(b, med)
	vs.putIDs(b)
	if err := b.Commit(pebble.Sync); err != nil {
		delete(vs.media, med)
		vs.nextMed--
		vs.nextVol--
		return VolumeInfo{}, err
	}
	vol := &Volume{s: s, id: id}
	vol.st.Store(&volState{rec: rec})
	vs.byID[id] = vol
	vs.byName[strings.ToLower(name)] = id
	vs.refreshChain(vol)
	return rec.info(), nil
}

// Volumes lists every volume and snapshot, by name.
func (s *Store) Volumes() []VolumeInfo {
	vs := s.vols
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	out := make([]VolumeInfo, 0, len(vs.byID))
	for _, v := range vs.byID {
		out = append(out, v.st.Load().rec.info())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Lookup finds a volume or snapshot by name (case-insensitive).
func (s *Store) Lookup(name string) (*Volume, error) {
	vs := s.vols
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	id, ok := vs.byName[strings.ToLower(name)]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotFound, name)
	}
	return vs.byID[id], nil
}

// Volume returns the handle of volume id.
func (s *Store) Volume(id uint64) (*Volume, error) {
	vs := s.vols
	vs.mu.RLock()
	defer vs.mu.RUnlock()
	v, ok := vs.byID[id]
	if !ok {
		return nil, fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	return v, nil
}

// Info describes the volume.
func (v *Volume) Info() VolumeInfo { return v.st.Load().rec.info() }

// ID is the volume's id.
func (v *Volume) ID() uint64 { return v.id }

// update persists a changed record for vol (vs.mu held).
func (s *Store) putVolume(b *pebble.Batch, rec *volumeRecord) {
	_ = b.Set(u64Key(pfxVolume, rec.ID), rec.encode(), nil)
}

// RenameVolume changes a volume's or snapshot's name.
func (s *Store) RenameVolume(id uint64, name string) error {
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vol, ok := vs.byID[id]
	if !ok {
		return fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	rec := vol.st.Load().rec
	if other, ok := vs.byName[strings.ToLower(name)]; ok && other != id {
		return fmt.Errorf("%w: %s", ErrExists, name)
	}
	old := rec.Name
	rec.Name = name
	b := s.db.NewBatch()
	defer b.Close()
	s.putVolume(b, &rec)
	_ = b.Delete(append([]byte{pfxName}, strings.ToLower(old)...), nil)
	_ = b.Set(append([]byte{pfxName}, strings.ToLower(name)...), binary.BigEndian.AppendUint64(nil, id), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	delete(vs.byName, strings.ToLower(old))
	vs.byName[strings.ToLower(name)] = id
	vol.st.Store(&volState{rec: rec, chain: vol.st.Load().chain})
	return nil
}

// DestroyVolume marks a volume destroyed: its I/O fails, and it can be
// recovered until it is eradicated.
func (s *Store) DestroyVolume(id uint64) error {
	return s.setDestroyed(id, s.o.Now().UnixNano())
}

// RecoverVolume undoes DestroyVolume.
func (s *Store) RecoverVolume(id uint64) error { return s.setDestroyed(id, 0) }

func (s *Store) setDestroyed(id uint64, when int64) error {
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vol, ok := vs.byID[id]
	if !ok {
		return fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	rec := vol.st.Load().rec
	if when != 0 && rec.Destroyed != 0 {
		return fmt.Errorf("%w: %s", ErrDestroyed, rec.Name)
	}
	if when == 0 && rec.Destroyed == 0 {
		return fmt.Errorf("%w: %s", ErrNotDestroyed, rec.Name)
	}
	rec.Destroyed = when
	b := s.db.NewBatch()
	defer b.Close()
	s.putVolume(b, &rec)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	vol.st.Store(&volState{rec: rec, chain: vol.st.Load().chain})
	return nil
}

// releaseMedium drops one reference to medium id (vs.mu held); media whose
// count reaches zero are marked for deletion by the flusher, which releases
// their parents in turn.
func (vs *volumes) releaseMedium(b *pebble.Batch, id uint64) {
	m := vs.media[id]
	if m == nil {
		return
	}
	if m.refs == 0 {
		panic(fmt.Sprintf("datapath: medium %d reference count below zero", id))
	}
	m.refs--
	if m.refs == 0 {
		m.deleting = true
	}
	vs.putMedium(b, id)
}

// EradicateVolume deletes a destroyed volume or snapshot for good. Its
// blocks are released in the background.
func (s *Store) EradicateVolume(id uint64) error {
	vs := s.vols
	vs.mu.Lock()
	defer vs.mu.Unlock()
	vol, ok := vs.byID[id]
	if !ok {
		return fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	vol.mu.Lock()
	defer vol.mu.Unlock()
	rec := vol.st.Load().rec
	if rec.Destroyed == 0 {
		return fmt.Errorf("%w: %s", ErrNotDestroyed, rec.Name)
	}
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Delete(u64Key(pfxVolume, id), nil)
	_ = b.Delete(append([]byte{pfxName}, strings.ToLower(rec.Name)...), nil)
	saved := vs.media[rec.Medium].mediumRec
	vs.releaseMedium(b, rec.Medium)
	if err := b.Commit(pebble.Sync); err != nil {
		vs.media[rec.Medium].mediumRec = saved
		vs.media[rec.Medium].deleting = saved.refs == 0
		return err
	}
	delete(vs.byID, id)
	delete(vs.byName, strings.ToLower(rec.Name))
	vol.st.Store(&volState{rec: volumeRecord{ID: id, Name: rec.Name, Destroyed: rec.Destroyed}})
	s.kickFlush()
	return nil
}

// ResizeVolume changes a volume's size. Shrinking needs truncate: the blocks
// beyond the new end are discarded (a later grow reads zeros there).
func (s *Store) ResizeVolume(id uint64, size int64, truncate bool) error {
	if err := checkSize(size); err != nil {
		return err
	}
	vs := s.vols
	vs.mu.Lock()
	vol, ok := vs.byID[id]
	vs.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	vol.mu.Lock()
	defer vol.mu.Unlock()
	rec := vol.st.Load().rec
	if rec.Snapshot {
		return fmt.Errorf("%w: %s is a snapshot", ErrInvalid, rec.Name)
	}
	if size < rec.Size && !truncate {
		return fmt.Errorf("%w: shrinking %s needs truncate", ErrInvalid, rec.Name)
	}
	if size < rec.Size {
		// Everything acknowledged so far must be in the map before it is cut.
		if err := s.flushAll(); err != nil {
			return err
		}
		return s.runJob(func(fb *flushBatch) error { return s.truncateJob(fb, vol, size) })
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	rec.Size = size
	b := s.db.NewBatch()
	defer b.Close()
	s.putVolume(b, &rec)
	if err := b.Commit(pebble.Sync); err != nil {
		return err
	}
	vol.st.Store(&volState{rec: rec, chain: vol.st.Load().chain})
	vs.refreshChain(vol)
	return nil
}

// Snapshot freezes a volume's current content as a new snapshot named
// "<volume>.<suffix>". O(1): no block is copied.
func (s *Store) Snapshot(id uint64, suffix string) (VolumeInfo, error) {
	vs := s.vols
	vs.mu.Lock()
	vol, ok := vs.byID[id]
	vs.mu.Unlock()
	if !ok {
		return VolumeInfo{}, fmt.Errorf("%w: id %d", ErrNotFound, id)
	}
	vol.mu.Lock()
	defer vol.mu.Unlock()
	vs.mu.Lock()
	defer vs.mu.Unlock()
	rec := vol.st.Load().rec
	if rec.Snapshot {
		return VolumeInfo{}, fmt.Errorf("%w: %s is a snapshot", ErrInvalid, rec.Name)
	}
	name := rec.Name + "." + suffix
	if _, ok := vs.byName[strings.ToLower(name)]; ok {
		return VolumeInfo{}, fmt.Errorf("%w: %s", ErrExists, name)
	}
	b := s.db.NewBatch()
	defer b.Close()
	frozen := rec.Medium
	newMed := vs.newMedium(frozen, uint64(rec.Size/BlockSize))
	vs.media[frozen].refs++ // the new child; ownership moves to the snapshot
	sid := vs.nextVol
	vs.nextVol++
	snap := volumeRecord{ID: sid, Name: name, Serial: s.serial(sid), Size: rec.Size, Medium: frozen,
		Created: s.o.Now().UnixNano(), Snapshot: true, Source: rec.ID}
	rec.Medium = newMed
	s.putVolume(b, &rec)
	s.putVolume(b, &snap)
	_ = b.Set(append([]byte{pfxName}, strings.ToLower(name)...), binary.BigEndian.AppendUint64(nil, sid), nil)
	vs.putMedium(b, frozen)
	vs.putMedium(b, newMed)
	vs.putIDs(b)
	if err := b.Commit(pebble.Sync); err != nil {
		// Nothing was persisted; undo the in-memory changes.
		vs.media[frozen].refs--
		delete(vs.media, newMed)
		vs.nextMed--
		vs.nextVol--
		return VolumeInfo{}, err
	}
	vol.st.Store(&volState{rec: rec})
	vs.refreshChain(vol)
	sv := &Volume{s: s, id: sid}
	sv.st.Store(&volState{rec: snap})
	vs.byID[sid] = sv
	vs.byName[strings.ToLower(name)] = sid
	vs.refreshChain(sv)
	return snap.info(), nil
}

// CopyVolume makes dst a clone of src (a volume or snapshot) in O(1). With
// an existing dst, overwrite must be set and dst's old content is released.
func (s *Store) CopyVolume(src uint64, dstName string, overwrite bool) (VolumeInfo, error) {
	vs := s.vols
	vs.mu.Lock()
	sv, ok := vs.byID[src]
	vs.mu.Unlock()
	if !ok {
		return VolumeInfo{}, fmt.Errorf("%w: id %d", ErrNotFound, src)
	}
	sv.mu.Lock()
	defer sv.mu.Unlock()
	vs.mu.Lock()
	dstID, exists := vs.byName[strings.ToLower(dstName)]
	var dv *Volume
	if exists {
		dv = vs.byID[dstID]
		if !overwrite {
			vs.mu.Unlock()
			return VolumeInfo{}, fmt.Errorf("%w: %s", ErrExists, dstName)
		}
		if dv == sv {
			vs.mu.Unlock()
			return VolumeInfo{}, fmt.Errorf("%w: a volume cannot be copied onto itself", ErrInvalid)
		}
		if dv.st.Load().rec.Snapshot {
			vs.mu.Unlock()
			return VolumeInfo{}, fmt.Errorf("%w: %s is a snapshot", ErrInvalid, dstName)
		}
	}
	vs.mu.Unlock()
	if dv != nil {
		dv.mu.Lock()
		defer dv.mu.Unlock()
	}
	vs.mu.Lock()
	defer vs.mu.Unlock()
	srec := sv.st.Load().rec
	b := s.db.NewBatch()
	defer b.Close()
	frozen := srec.Medium
	undo := snapshotMedia(vs)
	if !srec.Snapshot {
		// Freeze the source's medium: the source continues on a new child.
		nm := vs.newMedium(frozen, uint64(srec.Size/BlockSize))
		srec.Medium = nm
		s.putVolume(b, &srec)
		vs.putMedium(b, nm)
		// The source's ownership of frozen becomes its child's reference.
	} else {
		vs.media[frozen].refs++
	}
	dm := vs.newMedium(frozen, uint64(srec.Size/BlockSize))
	if !srec.Snapshot {
		vs.media[frozen].refs++ // second child (the copy)
	}
	vs.putMedium(b, frozen)
	vs.putMedium(b, dm)
	var drec volumeRecord
	if dv != nil {
		drec = dv.st.Load().rec
		vs.releaseMedium(b, drec.Medium)
		drec.Medium = dm
		drec.Size = srec.Size
	} else {
		id := vs.nextVol
		vs.nextVol++
		drec = volumeRecord{ID: id, Name: dstName, Serial: s.serial(id), Size: srec.Size, Medium: dm, Created: s.o.Now().UnixNano()}
		_ = b.Set(append([]byte{pfxName}, strings.ToLower(dstName)...), binary.BigEndian.AppendUint64(nil, id), nil)
	}
	s.putVolume(b, &drec)
	vs.putIDs(b)
	if err := b.Commit(pebble.Sync); err != nil {
		undo()
		return VolumeInfo{}, err
	}
	sv.st.Store(&volState{rec: srec})
	vs.refreshChain(sv)
	if dv == nil {
		dv = &Volume{s: s, id: drec.ID}
		vs.byID[drec.ID] = dv
		vs.byName[strings.ToLower(dstName)] = drec.ID
	}
	dv.st.Store(&volState{rec: drec})
	vs.refreshChain(dv)
	s.kickFlush()
	return drec.info(), nil
}

// snapshotMedia saves the media table and id counters so that a failed
// commit can be undone (vs.mu held).
func snapshotMedia(vs *volumes) func() {
	saved := make(map[uint64]mediumState, len(vs.media))
	for id, m := range vs.media {
		saved[id] = *m
	}
	nm, nv := vs.nextMed, vs.nextVol
	return func() {
		vs.media = make(map[uint64]*mediumState, len(saved))
		for id, m := range saved {
			m := m
			vs.media[id] = &m
		}
		vs.nextMed, vs.nextVol = nm, nv
	}
}
