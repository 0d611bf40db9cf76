package datapath

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cockroachdb/pebble/v2"
	"github.com/cockroachdb/pebble/v2/vfs"

	"vfa/internal/devsb"
	"vfa/keys"
	"vfa/nvram"
	"vfa/ssd"
)

// Limits and defaults.
const (
	MinSSDs           = 6
	MaxSSDs           = 24
	DefaultSSDs       = 8
	DefaultSSDSize    = 4 << 30
	DefaultNVRAMSize  = 256 << 20
	DefaultAUSize     = 1 << 20
	MaxVolumeSize     = 4 << 50 // 4 PiB
	maxIOBytes        = 8 << 20
	maxWriteSameBytes = 1 << 30
	segIDReserve      = 4096

	// DefaultGoMemoryLimit is the soft Go heap limit vfa run sets (the
	// metadata store's caches live outside the Go heap, about 130 MiB more).
	DefaultGoMemoryLimit = 320 << 20
)

// Options configure a Store.
type Options struct {
	Dir     string      // the array's data directory
	FS      vfs.FS      // file system (vfs.Default when nil)
	ArrayID [16]byte    // from array.json
	SSDs    int         // configured SSD count (from array.json)
	Sealer  keys.Sealer // security token seal for AK shares (nil: none)

	KeyRotation  time.Duration // array key rotation interval (default 24h; <0 disables)
	FlushDelay   time.Duration // flush pending writes at most this long after they arrive (default 200ms)
	FlushBytes   int64         // flush as soon as this much is pending (default 8 MiB)
	PendingLimit int64         // writers wait while this much is pending (default 32 MiB)
	CacheBytes   int64         // Pebble block cache (default 128 MiB)
	Workers      int           // reduction workers (default GOMAXPROCS)
	Logger       *slog.Logger
	Events       func(Event) // called for device, key and space events (must not block)
	Now          func() time.Time
}

// CreateOptions size a new array's devices.
type CreateOptions struct {
	SSDSize   int64 // bytes per SSD (default 4 GiB)
	NVRAMSize int64 // bytes (default 256 MiB)
	AUSize    int   // bytes (default 1 MiB)
}

func (o *Options) setDefaults() {
	if o.FS == nil {
		o.FS = vfs.Default
	}
	if o.SSDs == 0 {
		o.SSDs = DefaultSSDs
	}
	if o.KeyRotation == 0 {
		o.KeyRotation = 24 * time.Hour
	}
	if o.FlushDelay == 0 {
		o.FlushDelay = 200 * time.Millisecond
	}
	if o.FlushBytes == 0 {
		o.FlushBytes = 8 << 20
	}
	if o.PendingLimit == 0 {
		o.PendingLimit = 32 << 20
	}
	if o.CacheBytes == 0 {
		o.CacheBytes = 128 << 20
	}
	if o.Workers == 0 {
		o.Workers = runtime.GOMAXPROCS(0)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if o.Events == nil {
		o.Events = func(Event) {}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
}

func ssdPath(dir string, slot int) string {
	return filepath.Join(dir, "ssd", fmt.Sprintf("ssd%02d.dev", slot))
}
func nvramPath(dir string) string { return filepath.Join(dir, "nvram", "nvram0.dev") }
func metaPath(dir string) string  { return filepath.Join(dir, "meta") }

// SSDName is the device name of slot i ("ssd03").
func SSDName(slot int) string { return fmt.Sprintf("ssd%02d", slot) }

// Limits of a new array's devices.
const (
	MaxSSDSize   = 64 << 40 // sparse files; more than any test machine holds
	MaxNVRAMSize = 16 << 30
)

// ValidateCreate checks (and completes with defaults) the geometry of a new
// array before anything is created.
func ValidateCreate(ssds int, c *CreateOptions) error {
	if ssds < MinSSDs || ssds > MaxSSDs {
		return fmt.Errorf("%w: %d SSDs (allowed %d to %d)", ErrInvalid, ssds, MinSSDs, MaxSSDs)
	}
	if c.SSDSize == 0 {
		c.SSDSize = DefaultSSDSize
	}
	if c.NVRAMSize == 0 {
		c.NVRAMSize = DefaultNVRAMSize
	}
	if c.AUSize == 0 {
		c.AUSize = DefaultAUSize
	}
	if c.AUSize < 64<<10 || c.AUSize%ssd.PageSize != 0 || c.AUSize > 64<<20 {
		return fmt.Errorf("%w: AU size %d (a multiple of 4 KiB from 64 KiB to 64 MiB)", ErrInvalid, c.AUSize)
	}
	if c.SSDSize < int64(c.AUSize)*8 || c.SSDSize > MaxSSDSize {
		return fmt.Errorf("%w: SSD size %d (from 8 AUs of %d bytes to 64 TiB)", ErrInvalid, c.SSDSize, c.AUSize)
	}
	c.SSDSize -= c.SSDSize % int64(c.AUSize)
	if c.NVRAMSize < 4<<20 || c.NVRAMSize > MaxNVRAMSize {
		return fmt.Errorf("%w: NVRAM size %d (from 4 MiB to 16 GiB)", ErrInvalid, c.NVRAMSize)
	}
	return nil
}

// Create makes a new array's devices, key hierarchy and metadata store in
// o.Dir. The directory must not hold devices already.
func Create(o Options, c CreateOptions) error {
	o.setDefaults()
	if err := ValidateCreate(o.SSDs, &c); err != nil {
		return err
	}
	fs := o.FS
	for _, d := range []string{filepath.Join(o.Dir, "ssd"), filepath.Join(o.Dir, "nvram")} {
		if err := fs.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	for i := 0; i < o.SSDs; i++ {
		if _, err := fs.Stat(ssdPath(o.Dir, i)); err == nil {
			return fmt.Errorf("%w: %s already exists", ErrExists, ssdPath(o.Dir, i))
		}
	}
	if _, err := fs.Stat(nvramPath(o.Dir)); err == nil {
		return fmt.Errorf("%w: %s already exists", ErrExists, nvramPath(o.Dir))
	}

	// Identities and keys.
	specs := make([]keys.DeviceSpec, 0, o.SSDs+1)
	ids := make([][16]byte, o.SSDs+1)
	for i := range ids {
		ids[i] = newUUID()
		specs = append(specs, keys.DeviceSpec{ID: ids[i], HoldsShare: i < o.SSDs})
	}
	_, writes, err := keys.Create(o.ArrayID, specs, o.SSDs, o.Sealer)
	if err != nil {
		return fmt.Errorf("create keys: %w", err)
	}
	slots := map[[16]byte]keys.Slot{}
	for _, w := range writes {
		slots[w.ID] = w.Cur
	}
	for i := 0; i < o.SSDs; i++ {
		sb := &devsb.Superblock{
			Kind: devsb.KindSSD, ArrayID: o.ArrayID, DeviceID: ids[i], Slot: uint16(i),
			Devices: uint16(o.SSDs), AUSize: uint32(c.AUSize), Capacity: c.SSDSize,
			Cur: toDevsbSlot(slots[ids[i]]),
		}
		d, err := ssd.Create(fs, ssdPath(o.Dir, i), sb)
		if err != nil {
			return fmt.Errorf("create %s: %w", SSDName(i), err)
		}
		d.Close()
	}
	if err := createSystemShares(fs, o.Dir, o.SSDs); err != nil {
		return err
	}
	nv := &devsb.Superblock{
		Kind: devsb.KindNVRAM, ArrayID: o.ArrayID, DeviceID: ids[o.SSDs], Devices: uint16(o.SSDs),
		Capacity: c.NVRAMSize, Cur: toDevsbSlot(slots[ids[o.SSDs]]),
	}
	if err := createNVRAM(fs, nvramPath(o.Dir), nv); err != nil {
		return err
	}
	db, err := openMeta(o, metaPath(o.Dir), true)
	if err != nil {
		return err
	}
	b := db.NewBatch()
	_ = b.Set(controlKey("checkpoint"), encodeU64s(1, 0, 0), nil)
	_ = b.Set(controlKey("segid"), encodeU64s(1), nil)
	_ = b.Set(controlKey("ids"), encodeU64s(1, 1), nil)
	_ = b.Set(controlKey("space"), encodeU64s(0, 0), nil)
	_ = b.Set(controlKey("keyrot"), encodeU64s(uint64(o.Now().UnixNano())), nil)
	_ = b.Set(controlKey("keyset"), []byte(deviceSetDigestOf(ids[:o.SSDs])), nil)
	if err := b.Commit(pebble.Sync); err != nil {
		db.Close()
		return err
	}
	if err := db.Close(); err != nil {
		return err
	}
	// Make the new files' directory entries durable, bottom up.
	for _, d := range []string{filepath.Join(o.Dir, "ssd"), filepath.Join(o.Dir, "nvram"), o.Dir, filepath.Dir(filepath.Clean(o.Dir))} {
		if err := syncDir(fs, d); err != nil {
			return fmt.Errorf("sync %s: %w", d, err)
		}
	}
	return nil
}

func syncDir(fs vfs.FS, dir string) error {
	d, err := fs.OpenDir(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func createNVRAM(fs vfs.FS, path string, sb *devsb.Superblock) error {
	f, err := fs.Create(path, vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("create nvram0: %w", err)
	}
	defer f.Close()
	// Write the whole device once so that log appends overwrite allocated
	// blocks and fdatasync has no allocation metadata to commit.
	zero := make([]byte, 1<<20)
	for off := int64(0); off < sb.Capacity; off += int64(len(zero)) {
		if _, err := f.WriteAt(zero[:min(int64(len(zero)), sb.Capacity-off)], off); err != nil {
			return fmt.Errorf("create nvram0: %w", err)
		}
	}
	if err := devsb.Write(f, sb); err != nil {
		return fmt.Errorf("create nvram0: %w", err)
	}
	return nil
}

func openMeta(o Options, dir string, create bool) (*pebble.DB, error) {
	if !create {
		if _, err := o.FS.Stat(dir); err != nil {
			return nil, fmt.Errorf("metadata store %s: %w", dir, err)
		}
	}
	cache := pebble.NewCache(o.CacheBytes)
	defer cache.Unref()
	opts := &pebble.Options{
		FS:           o.FS,
		Cache:        cache,
		MemTableSize: 32 << 20,
		Logger:       quietLogger{},
	}
	opts.EnsureDefaults()
	// Keys and values are mostly digests: they do not compress, and
	// decompressing blocks on every lookup costs more than it saves.
	opts.ApplyCompressionSettings(func() pebble.DBCompressionSettings { return pebble.DBCompressionNone })
	for i := range opts.Levels {
		opts.Levels[i].FilterPolicy = bloomPolicy()
	}
	db, err := pebble.Open(dir, opts)
	if err != nil {
		return nil, fmt.Errorf("metadata store: %w", err)
	}
	return db, nil
}

func toDevsbSlot(s keys.Slot) devsb.KeySlot {
	return devsb.KeySlot{Gen: s.Gen, Threshold: uint8(s.Threshold), Sealed: s.Sealed,
		AKShare: s.AKShare, DEKPart: s.DEKPart, WrappedMediaKey: s.WrappedMediaKey}
}

func fromDevsbSlot(s devsb.KeySlot) keys.Slot {
	return keys.Slot{Gen: s.Gen, Threshold: int(s.Threshold), Sealed: s.Sealed,
		AKShare: s.AKShare, DEKPart: s.DEKPart, WrappedMediaKey: s.WrappedMediaKey}
}

// Store is one array's data path.
type Store struct {
	o       Options
	db      *pebble.DB
	set     *ssd.Set
	log     *nvram.Log
	nvf     vfs.File
	nvsb    *devsb.Superblock
	devs    []*ssd.Device // by slot, nil = missing
	sbs     []*devsb.Superblock
	keyMu   sync.Mutex
	k       *keys.Keys
	genSeen uint64 // highest key generation seen or attempted
	maxIO   int    // largest write, bytes (bounded by NVRAM size)

	sysKey    []byte // see systemkey.go
	sysKeyErr error
	lastRot   time.Time

	dek    cipher.AEAD
	fpKey  []byte
	pend   *pending
	cache  *locCache
	seg    *segAlloc
	vols   *volumes
	flushC chan struct{}

	closed      atomic.Bool
	unlocked    atomic.Bool
	unlockMu    sync.Mutex
	lockReason  atomic.Pointer[string]
	ctx         context.Context
	cancel      context.CancelFunc
	stopC       chan struct{} // closed by Close: the flusher drains and exits
	replayed    int
	spaceLow    bool        // flusher only: the space.low alert is open
	hostLow     bool        // flusher only: the host.space alert is open
	gcIdleAt    time.Time   // flusher only: last paced idle GC pass
	hostFull    atomic.Bool // SSD writes failed with ENOSPC; writes are refused until a flush succeeds
	hostFullTry time.Time   // flusher only: last flush attempt while hostFull
	hostCheckAt time.Time   // flusher only: last host space check
	fpf         *fpFilter
	phase       [5]atomic.Int64
	wg          sync.WaitGroup
	stats       ioStats
	flushMu     sync.Mutex // held by the flusher while it mutates the map; Sync waits on it
	flushed     sync.Cond  // broadcast after every flush commit (L = flushedMu)
	flushedMu   sync.Mutex
	flushedSeq  uint64
	flushErr    error

	jobMu      sync.Mutex
	jobs       []job
	admitMu    sync.Mutex // serialises drive admissions and the rebuild state
	rebuildMu  sync.Mutex // guards rebuilds
	rebuilds   []*rebuildState
	chunk      chunkScratch
	blockBufs  sync.Pool // stored-block read buffers
	redOnce    sync.Once
	reds       []*reducer
	gcStats    struct{ segments, bytes atomic.Uint64 }
	flushStats struct{ batches, reduceNanos, writeNanos, commitNanos, compressed atomic.Uint64 }
}

// Open opens the array's metadata store and devices. The array starts
// locked: volumes can be listed and objects read, but no data moves until
// Unlock succeeds.
func Open(o Options) (s *Store, err error) {
	o.setDefaults()
	s = &Store{o: o, pend: newPending(), flushC: make(chan struct{}, 1)}
	s.flushed.L = &s.flushedMu
	s.lockReason.Store(new(string))
	*s.lockReason.Load() = "not unlocked yet"
	s.db, err = openMeta(o, metaPath(o.Dir), false)
	if err != nil {
		return nil, err
	}
	s.cache = newLocCache(1 << 16)
	if s.vols, err = loadVolumes(s); err != nil {
		s.db.Close()
		return nil, err
	}
	if err := s.loadSystemKey(); err != nil {
		// Not fatal: the data path does not need it; configuration secrets
		// are unavailable and say why.
		s.sysKeyErr = err
		s.o.Logger.Warn("system key unavailable", "err", err)
	}
	return s, nil
}

// Unlock rebuilds the key hierarchy from the devices, replays NVRAM and
// starts the flusher. On failure the store stays locked and the error (a
// *LockedError when the cause is missing keys or devices) says why; Unlock
// may be called again.
func (s *Store) Unlock() (err error) {
	s.unlockMu.Lock()
	defer s.unlockMu.Unlock()
	if s.unlocked.Load() {
		return nil
	}
	if s.closed.Load() {
		return ErrClosed
	}
	defer func() {
		if err != nil {
			s.closeDevices()
			r := err.Error()
			s.lockReason.Store(&r)
		}
	}()
	if err := s.openDevices(); err != nil {
		return err
	}
	if err := s.unlock(); err != nil {
		return err
	}
	o := s.o
	mediaKeys := make([][]byte, o.SSDs)
	for i, d := range s.devs {
		if d != nil {
			mediaKeys[i] = s.k.Media[s.sbs[i].DeviceID]
		}
	}
	s.set, err = ssd.NewSet(s.devs, mediaKeys)
	if err != nil {
		return &LockedError{Reason: "ssd: " + err.Error(), Err: err}
	}
	blk, err := aes.NewCipher(s.k.DEK)
	if err != nil {
		return err
	}
	if s.dek, err = cipher.NewGCM(blk); err != nil {
		return err
	}
	s.fpKey = keys.Derive(s.k.DEK, "vfa dedup fingerprint")
	if s.seg, err = loadSegments(s); err != nil {
		return err
	}
	if err := s.loadFPFilter(); err != nil {
		return err
	}
	if v, err := s.getControl("keyrot", 1); err == nil {
		s.lastRot = time.Unix(0, int64(v[0]))
	}
	if err := s.startNVRAM(); err != nil {
		return err
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.stopC = make(chan struct{})
	s.wg.Add(1)
	go s.flusher()
	for i, d := range s.devs {
		if d == nil {
			s.event(Warning, "device.missing", SSDName(i), "device is missing or failed; reads are rebuilt from parity")
		}
	}
	// A device set different from the one of the last rotation (a device
	// failed, was removed or came back) is a configuration change: rotate.
	if set := s.deviceSetDigest(); set != s.storedDeviceSet() {
		if err := s.RotateKeys("device set changed"); err != nil {
			s.event(Warning, "keys.rotation", "keys", err.Error())
		}
	}
	s.resumeRebuild()
	s.unlocked.Store(true)
	return nil
}

// Replayed is the number of NVRAM records the last unlock replayed (zero
// after a clean shutdown).
func (s *Store) Replayed() int { return s.replayed }

// MaxIO is the largest single I/O in bytes.
func (s *Store) MaxIO() int { return s.maxIO }

// Locked reports whether the data path is locked, and why.
func (s *Store) Locked() (bool, string) {
	if s.unlocked.Load() {
		return false, ""
	}
	return true, *s.lockReason.Load()
}

func (s *Store) event(sev Severity, code, component, msg string) {
	s.o.Events(Event{Time: s.o.Now(), Severity: sev, Code: code, Component: component, Message: msg})
}

// openDevices opens every SSD and the NVRAM. Missing or unreadable SSDs are
// left nil (and reported); an unreadable NVRAM is fatal.
func (s *Store) openDevices() error {
	o := s.o
	s.devs = make([]*ssd.Device, o.SSDs)
	s.sbs = make([]*devsb.Superblock, o.SSDs)
	failed := 0
	var reasons []string
	for i := 0; i < o.SSDs; i++ {
		d, sb, err := ssd.Open(o.FS, ssdPath(o.Dir, i))
		if err == nil && sb.ArrayID != o.ArrayID {
			err = fmt.Errorf("belongs to another array")
			d.Close()
		} else if err == nil && int(sb.Slot) != i {
			err = fmt.Errorf("superblock says slot %d", sb.Slot)
			d.Close()
		}
		if err != nil {
			failed++
			reason := fmt.Sprintf("%s: %v", SSDName(i), err)
			reasons = append(reasons, reason)
			s.event(Warning, "device.failed", SSDName(i), reason)
			continue
		}
		s.devs[i], s.sbs[i] = d, sb
	}
	if failed > 2 {
		return &LockedError{Reason: fmt.Sprintf("%d of %d SSDs are missing or failed (at most 2 may be): %v", failed, o.SSDs, reasons)}
	}
	f, err := o.FS.OpenReadWrite(nvramPath(o.Dir), vfs.WriteCategoryUnspecified)
	if err != nil {
		return fmt.Errorf("nvram0: %w", err)
	}
	s.nvf = f
	sb, err := devsb.Read(f)
	if err != nil {
		return fmt.Errorf("nvram0: %w", err)
	}
	if sb.ArrayID != o.ArrayID || sb.Kind != devsb.KindNVRAM {
		return fmt.Errorf("nvram0: belongs to another array")
	}
	if st, err := f.Stat(); err != nil || st.Size() < sb.Capacity {
		return fmt.Errorf("nvram0: truncated device file")
	}
	s.nvsb = sb
	return nil
}

func (s *Store) keyDevices() []keys.Device {
	var devs []keys.Device
	for i, sb := range s.sbs {
		if s.devs[i] == nil {
			continue
		}
		devs = append(devs, keys.Device{ID: sb.DeviceID, HoldsShare: true, Cur: fromDevsbSlot(sb.Cur), Prev: fromDevsbSlot(sb.Prev)})
	}
	devs = append(devs, keys.Device{ID: s.nvsb.DeviceID, Cur: fromDevsbSlot(s.nvsb.Cur), Prev: fromDevsbSlot(s.nvsb.Prev)})
	return devs
}

// unlock rebuilds the key hierarchy and brings every device's key slots up to
// date (finishing an interrupted rotation).
func (s *Store) unlock() error {
	k, rep, err := keys.Unlock(s.o.ArrayID, s.keyDevices(), s.o.SSDs, s.o.Sealer)
	if err != nil {
		return &LockedError{Reason: err.Error(), Err: err}
	}
	s.k = k
	s.genSeen = max(rep.MaxGen, k.Gen)
	for _, rj := range rep.Rejected {
		for i, sb := range s.sbs {
			if s.devs[i] != nil && sb.DeviceID == rj.ID {
				s.event(Warning, "device.failed", SSDName(i), "device rejected at unlock: "+rj.Err.Error())
				s.devs[i].Close()
				s.devs[i], s.sbs[i] = nil, nil
			}
		}
		if rj.ID == s.nvsb.DeviceID {
			return &LockedError{Reason: "nvram0: " + rj.Err.Error(), Err: rj.Err}
		}
	}
	if rep.RotationNeeded() {
		why := "bringing stale devices up to date"
		if rep.Interrupted {
			why = "finishing an interrupted key rotation"
		}
		return s.rotateLocked(rep.NextGen, why)
	}
	return nil
}

// rotateLocked makes a new array key generation and writes it to every
// present device in the order keys.Rotate gives (stale devices first). It is
// crash-safe: until the new generation is on enough devices, the old one
// still unlocks (every device keeps a slot of it).
func (s *Store) rotateLocked(gen uint64, why string) error {
	s.genSeen = max(s.genSeen, gen)
	var specs []keys.DeviceSpec
	for i, sb := range s.sbs {
		if s.devs[i] != nil && s.devs[i].Failed() == nil {
			specs = append(specs, keys.DeviceSpec{ID: sb.DeviceID, HoldsShare: true})
		}
	}
	specs = append(specs, keys.DeviceSpec{ID: s.nvsb.DeviceID})
	nk, writes, err := keys.Rotate(s.o.ArrayID, s.k, specs, s.o.SSDs, gen, s.o.Sealer)
	if err != nil {
		return fmt.Errorf("key rotation: %w", err)
	}
	for _, w := range writes {
		if w.ID == s.nvsb.DeviceID {
			nsb := *s.nvsb
			nsb.Cur, nsb.Prev = toDevsbSlot(w.Cur), toDevsbSlot(w.Prev)
			if err := devsb.Write(s.nvf, &nsb); err != nil {
				return fmt.Errorf("key rotation: nvram0: %w", err)
			}
			s.nvsb = &nsb
			continue
		}
		for i, sb := range s.sbs {
			if s.devs[i] == nil || sb.DeviceID != w.ID {
				continue
			}
			err := s.devs[i].UpdateSuperblock(func(x *devsb.Superblock) {
				x.Cur, x.Prev = toDevsbSlot(w.Cur), toDevsbSlot(w.Prev)
			})
			if err != nil {
				s.event(Warning, "device.failed", SSDName(i), "superblock write failed during key rotation: "+err.Error())
				continue
			}
			s.sbs[i] = s.devs[i].Superblock()
		}
	}
	s.k = nk
	s.event(Info, "keys.rotated", "keys", fmt.Sprintf("array key rotated to generation %d (%s)", gen, why))
	return nil
}

// RotateKeys makes a new array key generation now.
func (s *Store) RotateKeys(why string) error {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.rotateAndRecordLocked(why)
}

// rotateAndRecordLocked rotates and records when and over which devices
// (keyMu held).
func (s *Store) rotateAndRecordLocked(why string) error {
	if err := s.rotateLocked(s.genSeen+1, why); err != nil {
		return err
	}
	now := s.o.Now()
	s.lastRot = now
	b := s.db.NewBatch()
	defer b.Close()
	_ = b.Set(controlKey("keyrot"), encodeU64s(uint64(now.UnixNano())), nil)
	_ = b.Set(controlKey("keyset"), []byte(s.deviceSetDigestLocked()), nil)
	return b.Commit(pebble.Sync)
}

// deviceSetDigest names the set of usable SSDs (their ids, in slot order).
func (s *Store) deviceSetDigest() string {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.deviceSetDigestLocked()
}

func (s *Store) deviceSetDigestLocked() string {
	ids := make([][16]byte, len(s.devs))
	for i, d := range s.devs {
		if d != nil && d.Failed() == nil {
			ids[i] = s.sbs[i].DeviceID
		} // else the zero id: missing or failed
	}
	return deviceSetDigestOf(ids)
}

// deviceSetDigestOf is the control value "keyset": hex SHA-256 of the SSD
// ids in slot order (zero for a slot without a usable device).
func deviceSetDigestOf(ids [][16]byte) string {
	h := sha256.New()
	for _, id := range ids {
		h.Write(id[:])
	}
	return hex.EncodeToString(h.Sum(nil))
}

func (s *Store) storedDeviceSet() string {
	v, c, err := s.db.Get(controlKey("keyset"))
	if err != nil {
		return ""
	}
	defer c.Close()
	return string(v)
}

// checkDeviceSet rotates the array key when a device failed while running.
func (s *Store) checkDeviceSet() {
	if set := s.deviceSetDigest(); set != s.storedDeviceSet() {
		if err := s.RotateKeys("device set changed"); err != nil {
			s.event(Warning, "keys.rotation", "keys", err.Error())
		}
	}
}

// rotateIfDue rotates the array key when the rotation interval has passed.
func (s *Store) rotateIfDue() {
	if s.o.KeyRotation < 0 {
		return
	}
	s.keyMu.Lock()
	due := keys.RotationDue(s.lastRot, s.o.Now(), s.o.KeyRotation)
	s.keyMu.Unlock()
	if !due {
		return
	}
	if err := s.RotateKeys("scheduled rotation"); err != nil {
		s.event(Warning, "keys.rotation", "keys", err.Error())
	}
}

// KeyGeneration is the current array key generation.
func (s *Store) KeyGeneration() uint64 {
	s.keyMu.Lock()
	defer s.keyMu.Unlock()
	return s.k.Gen
}

func (s *Store) startNVRAM() error {
	v, err := s.getControl("checkpoint", 3)
	if err != nil {
		return err
	}
	from := nvram.Position{Seq: v[0], Off: int64(v[1]), Epoch: uint32(v[2])}
	// A new boot epoch, durable before the first append of this boot.
	nsb := *s.nvsb
	nsb.Epoch++
	if nsb.Epoch > math.MaxUint32 {
		return fmt.Errorf("nvram0: boot epoch exhausted")
	}
	if err := devsb.Write(s.nvf, &nsb); err != nil {
		return fmt.Errorf("nvram0: epoch: %w", err)
	}
	s.nvsb = &nsb
	region := s.nvsb.Capacity - devsb.DataOffset
	s.maxIO = min(maxIOBytes, int(region/2-4096)&^(BlockSize-1))
	no := nvram.Options{
		File:       s.nvf,
		Offset:     devsb.DataOffset,
		Size:       s.nvsb.Capacity - devsb.DataOffset,
		Key:        s.k.Media[s.nvsb.DeviceID],
		Epoch:      uint32(nsb.Epoch),
		MaxPayload: s.maxIO + recordHeaderSize,
		OnDurable:  s.onDurable,
	}
	replayed := 0
	end, err := nvram.Replay(no, from, func(seq uint64, payload []byte, end nvram.Position) error {
		s.onDurable(seq, payload, end)
		replayed++
		return nil
	})
	if err != nil {
		return fmt.Errorf("nvram0: replay: %w", err)
	}
	s.log, err = nvram.Open(no, from, end)
	if err != nil {
		return fmt.Errorf("nvram0: %w", err)
	}
	s.replayed = replayed
	if replayed > 0 {
		s.o.Logger.Info("nvram replayed", "records", replayed, "from", from.Seq, "to", end.Seq)
	}
	return nil
}

func (s *Store) getControl(name string, n int) ([]uint64, error) {
	v, c, err := s.db.Get(controlKey(name))
	if err != nil {
		return nil, fmt.Errorf("metadata %q: %w", name, err)
	}
	defer c.Close()
	return decodeU64s(v, n)
}

// Close stops the flusher after it has flushed what is pending, and closes
// the devices. Writes after Close fail with ErrClosed.
func (s *Store) Close() error {
	if s.closed.Swap(true) {
		return nil
	}
	var err error
	if s.cancel != nil {
		// The flusher drains what is pending with a live context (its I/O
		// must not be cancelled), then the context is cancelled.
		close(s.stopC)
		s.wg.Wait()
		s.cancel()
	}
	if s.log != nil {
		err = errors.Join(err, s.log.Close())
	}
	s.closeFiles()
	return err
}

func (s *Store) closeFiles() {
	s.closeDevices()
	if s.db != nil {
		s.db.Close()
		s.db = nil
	}
}

func (s *Store) closeDevices() {
	if s.set != nil {
		s.set.Close()
		s.set = nil
	} else {
		for _, d := range s.devs {
			if d != nil {
				d.Close()
			}
		}
	}
	if s.nvf != nil {
		s.nvf.Close()
		s.nvf = nil
	}
	s.devs, s.sbs = nil, nil
}

// newUUID returns a random version-4 UUID.
func newUUID() [16]byte {
	var u [16]byte
	copy(u[:], keys.NewKey()[:16])
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	return u
}

type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "pebble: "+format+"\n", args...)
	os.Exit(1)
}
