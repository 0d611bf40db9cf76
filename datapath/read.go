package datapath

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/cockroachdb/pebble/v2"
	"github.com/pierrec/lz4/v4"
)

// The bottom of the read path: map lookups, dedup index lookups (through a
// bounded cache) and loading one stored block.

func (s *Store) mapGet(medium, block uint64) (mapEntry, bool, error) {
	var k [17]byte
	k[0] = pfxMap
	putBE64(k[1:], medium)
	putBE64(k[9:], block)
	v, c, err := s.db.Get(k[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return mapEntry{}, false, nil
	}
	if err != nil {
		return mapEntry{}, false, fmt.Errorf("%w: metadata: %v", ErrMedium, err)
	}
	e, err := decodeMapEntry(v)
	c.Close()
	if err != nil {
		return mapEntry{}, false, err
	}
	return e, true, nil
}

func putBE64(b []byte, v uint64) {
	_ = b[7]
	b[0], b[1], b[2], b[3] = byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
	b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
}

// lookupLoc finds where fp is stored (committed state).
func (s *Store) lookupLoc(fp *FP) (location, bool, error) {
	if l, ok := s.cache.get(fp); ok {
		return l, true, nil
	}
	seq0 := s.cache.seq.Load()
	var k [33]byte
	k[0] = pfxDedup
	copy(k[1:], fp[:])
	v, c, err := s.db.Get(k[:])
	if errors.Is(err, pebble.ErrNotFound) {
		return location{}, false, nil
	}
	if err != nil {
		return location{}, false, fmt.Errorf("%w: metadata: %v", ErrMedium, err)
	}
	l, err := decodeLocation(v)
	c.Close()
	if err != nil {
		return location{}, false, err
	}
	s.cache.putIfCurrent(fp, l, seq0)
	return l, true, nil
}

// loadEntry loads a map entry's block: at its location hint while that
// segment exists (no dedup index lookup), else through the dedup index.
func (s *Store) loadEntry(e *mapEntry, out []byte) error {
	if e.hint.seg != 0 {
		if ok, err := s.loadAt(e.hint, out); ok {
			return err
		}
	}
	return s.loadBlock(&e.fp, out)
}

// loadAt reads the block stored at loc; ok is false when loc's segment no
// longer exists (GC moved the block) and nothing was read.
func (s *Store) loadAt(loc location, out []byte) (bool, error) {
	if loc.length > BlockSize+gcmTag || loc.length <= gcmTag {
		return false, nil
	}
	sa := s.seg
	sa.gate.RLock()
	au, ok := sa.auOf(loc.seg)
	if !ok {
		sa.gate.RUnlock()
		return false, nil
	}
	bp, _ := s.blockBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, BlockSize+gcmTag+64)
		bp = &b
	}
	defer s.blockBufs.Put(bp)
	buf := (*bp)[:loc.length]
	err := s.set.Read(s.ctx, au, loc.seg, int64(loc.off), buf)
	if err == nil {
		if err = s.openBlock(loc, buf, out); err != nil {
			if rerr := s.set.ReadRebuild(s.ctx, au, loc.seg, int64(loc.off), buf); rerr == nil {
				err = s.openBlock(loc, buf, out)
			}
		}
	}
	sa.gate.RUnlock()
	if err != nil {
		s.event(Warning, "block.unreadable", "datapath", fmt.Sprintf("segment %d offset %d: %v", loc.seg, loc.off, err))
		return true, fmt.Errorf("%w: %v", ErrMedium, err)
	}
	return true, nil
}

// loadBlock reads, authenticates, decrypts and decompresses the block with
// fingerprint fp into out. errMoved means fp is no longer stored (the caller
// re-resolves the map).
func (s *Store) loadBlock(fp *FP, out []byte) error {
	sa := s.seg
	sa.gate.RLock()
	loc, ok, err := s.lookupLoc(fp)
	if err != nil || !ok {
		sa.gate.RUnlock()
		if err != nil {
			return err
		}
		return errMoved
	}
	au, ok := sa.auOf(loc.seg)
	if !ok {
		sa.gate.RUnlock()
		s.cache.del(fp)
		return errMoved
	}
	if loc.length > BlockSize+gcmTag || loc.length <= gcmTag {
		sa.gate.RUnlock()
		return fmt.Errorf("%w: block %x has stored length %d", ErrMedium, fp[:8], loc.length)
	}
	bp, _ := s.blockBufs.Get().(*[]byte)
	if bp == nil {
		b := make([]byte, BlockSize+gcmTag+64)
		bp = &b
	}
	defer s.blockBufs.Put(bp)
	buf := (*bp)[:loc.length]
	err = s.set.Read(s.ctx, au, loc.seg, int64(loc.off), buf)
	if err == nil {
		err = s.openBlock(loc, buf, out)
		if err != nil {
			// Authentication failed although the pages checked out: rebuild
			// the range from parity and try once more.
			if rerr := s.set.ReadRebuild(s.ctx, au, loc.seg, int64(loc.off), buf); rerr == nil {
				err = s.openBlock(loc, buf, out)
			}
		}
	}
	sa.gate.RUnlock()
	if err != nil {
		s.event(Warning, "block.unreadable", "datapath", fmt.Sprintf("segment %d offset %d: %v", loc.seg, loc.off, err))
		return fmt.Errorf("%w: %v", ErrMedium, err)
	}
	return nil
}

func (s *Store) openBlock(loc location, buf, out []byte) error {
	var nonce [12]byte
	var aad [13]byte
	blockAddr(loc.seg, loc.off, loc.flags, &nonce, &aad)
	var scratch [BlockSize]byte
	dst := out[:0]
	if loc.flags&flagLZ4 != 0 {
		dst = scratch[:0]
	}
	plain, err := s.dek.Open(dst, nonce[:], buf, aad[:])
	if err != nil {
		return fmt.Errorf("block authentication failed: %w", err)
	}
	if loc.flags&flagLZ4 == 0 {
		if len(plain) != BlockSize {
			return fmt.Errorf("raw block of %d bytes", len(plain))
		}
		return nil
	}
	n, err := lz4.UncompressBlock(plain, out[:BlockSize])
	if err != nil || n != BlockSize {
		return fmt.Errorf("block decompresses to %d bytes: %v", n, err)
	}
	return nil
}

// locCache is a bounded cache of dedup index entries (fingerprint ->
// location), sharded to keep readers from contending.
type locCache struct {
	shards [64]locShard
	per    int
	// seq orders readers' insertions against commits, like a seqlock: it
	// is odd while a metadata commit that changes dedup entries is under
	// way (from before the Pebble commit until the cache has the batch's
	// values) and grows with every commit. A reader that looked an entry up
	// in Pebble inserts it only if seq was even when it started and has not
	// changed since; otherwise its value may be older than the commit's,
	// and inserting it after the commit's own update would leave a stale
	// location or reference count in the cache (reference counts the
	// flusher then builds on).
	seq atomic.Uint64
}

// beginCommit and endCommit bracket a commit that changes dedup entries.
func (c *locCache) beginCommit() { c.seq.Add(1) }
func (c *locCache) endCommit()   { c.seq.Add(1) }

// putIfCurrent inserts a value a reader looked up after reading seq0, if no
// commit began since.
func (c *locCache) putIfCurrent(fp *FP, l location, seq0 uint64) {
	if seq0&1 != 0 {
		return
	}
	sh := c.shard(fp)
	sh.mu.Lock()
	if c.seq.Load() == seq0 {
		c.insertLocked(sh, fp, l)
	}
	sh.mu.Unlock()
}

type locShard struct {
	mu sync.Mutex
	m  map[FP]location
}

func newLocCache(entries int) *locCache {
	c := &locCache{per: max(16, entries/64)}
	for i := range c.shards {
		c.shards[i].m = make(map[FP]location)
	}
	return c
}

func (c *locCache) shard(fp *FP) *locShard { return &c.shards[fp[0]&63] }

func (c *locCache) get(fp *FP) (location, bool) {
	sh := c.shard(fp)
	sh.mu.Lock()
	l, ok := sh.m[*fp]
	sh.mu.Unlock()
	return l, ok
}

func (c *locCache) put(fp *FP, l location) {
	sh := c.shard(fp)
	sh.mu.Lock()
	c.insertLocked(sh, fp, l)
	sh.mu.Unlock()
}

func (c *locCache) insertLocked(sh *locShard, fp *FP, l location) {
	if len(sh.m) >= c.per {
		if _, ok := sh.m[*fp]; !ok {
			for k := range sh.m { // evict an arbitrary entry
				delete(sh.m, k)
				break
			}
		}
	}
	sh.m[*fp] = l
}

func (c *locCache) del(fp *FP) {
	sh := c.shard(fp)
	sh.mu.Lock()
	delete(sh.m, *fp)
	sh.mu.Unlock()
}
