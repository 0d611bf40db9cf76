package datapath

import (
	"sort"
	"sync"

	"vfa/nvram"
)

// The pending index: what NVRAM holds that the flusher has not yet moved into
// segments. Writes enter it (in sequence order, from the NVRAM committer)
// before they are acknowledged, and leave it only after the metadata batch
// that contains them is committed, so a reader that does not find a block here
// finds it in the block map.
//
// Invariants:
//   - ops of one medium are kept in ascending sequence order;
//   - an op is removed only after a flush whose checkpoint is past its seq
//     has committed;
//   - bytes counts the payload memory held, bounded by Options.PendingLimit
//     (writers wait for the flusher beyond it).

const (
	BlockSize       = 4096
	SectorSize      = 512
	sectorsPerBlock = BlockSize / SectorSize
)

// pop is one pending operation. A write covers sectors [sector, sector+n) with
// data; a write same covers them with a repeated one-sector pattern; an unmap
// (pattern == nil, data == nil) makes them read as zeros.
type pop struct {
	seq     uint64
	pos     nvram.Position // NVRAM position after this record (its checkpoint)
	sector  uint64
	n       uint64
	data    []byte // opWrite: n*512 bytes
	pattern []byte // opWriteSame: 512 bytes
	op      uint8
	medium  uint64
	size    int64
	payload []byte // the pooled record buffer data/pattern alias // payload bytes held
}

func (p *pop) end() uint64 { return p.sector + p.n }

// isRange: unmaps and write-sames spanning many blocks are kept in a list
// rather than indexed per block (they can cover terabytes); writes carry
// their data, so they are at most the I/O limit and are indexed per block.
func (p *pop) isRange() bool {
	return p.op != opWrite && (p.end()-1)/sectorsPerBlock-p.sector/sectorsPerBlock >= rangeBlocks
}

// sectorData copies sector s (which p covers) into dst (512 bytes).
func (p *pop) sectorData(s uint64, dst []byte) {
	switch p.op {
	case opWrite:
		off := (s - p.sector) * SectorSize
		copy(dst, p.data[off:off+SectorSize])
	case opWriteSame:
		copy(dst, p.pattern)
	default:
		clear(dst)
	}
}

// pmedium holds one medium's pending ops: writes and small ops indexed by
// block, large unmap and write-same ranges in a list scanned per lookup.
type pmedium struct {
	blocks map[uint64][]*pop
	ranges []*pop
}

const rangeBlocks = 16

type pending struct {
	mu    sync.RWMutex
	media map[uint64]*pmedium
	bytes int64
	// queue holds every op in sequence order, for the flusher.
	queue []*pop
	cond  *sync.Cond // signalled when bytes drop (writers wait on mu's write side)
	pools payloadPools
	// adds counts the ops added per medium and region (never reset): a read
	// of several blocks that saw the count of a region it covers change may
	// have seen part of a write. Regions are addRegionBlocks blocks, folded
	// onto addBuckets counters per medium.
	adds map[uint64]*[addBuckets]uint64
}

const (
	addRegionBlocks = 16 // 64 KiB
	addBuckets      = 64
)

// addCount sums the counts of ops added for medium over the regions of
// blocks [first, last]: it changes when an op touching them was added.
func (p *pending) addCount(medium, first, last uint64) uint64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	c := p.adds[medium]
	if c == nil {
		return 0
	}
	return sumRegions(c, first, last)
}

func sumRegions(c *[addBuckets]uint64, first, last uint64) uint64 {
	r0, r1 := first/addRegionBlocks, last/addRegionBlocks
	var sum uint64
	if r1-r0+1 >= addBuckets {
		for _, v := range c {
			sum += v
		}
		return sum
	}
	for r := r0; r <= r1; r++ {
		sum += c[r%addBuckets]
	}
	return sum
}

// countAdd bumps the counters of the regions of blocks [first, last].
func (p *pending) countAdd(medium, first, last uint64) {
	c := p.adds[medium]
	if c == nil {
		c = new([addBuckets]uint64)
		p.adds[medium] = c
	}
	r0, r1 := first/addRegionBlocks, last/addRegionBlocks
	if r1-r0+1 >= addBuckets {
		for i := range c {
			c[i]++
		}
		return
	}
	for r := r0; r <= r1; r++ {
		c[r%addBuckets]++
	}
}

func newPending() *pending {
	p := &pending{media: make(map[uint64]*pmedium), adds: make(map[uint64]*[addBuckets]uint64)}
	p.cond = sync.NewCond(&p.mu)
	return p
}

func (p *pending) add(medium uint64, o *pop, size int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.media[medium]
	if m == nil {
		m = &pmedium{blocks: make(map[uint64][]*pop)}
		p.media[medium] = m
	}
	first, last := o.sector/sectorsPerBlock, (o.end()-1)/sectorsPerBlock
	p.countAdd(medium, first, last)
	if o.isRange() {
		m.ranges = append(m.ranges, o)
	} else {
		for b := first; b <= last; b++ {
			m.blocks[b] = append(m.blocks[b], o)
		}
	}
	o.size = size
	o.medium = medium
	p.queue = append(p.queue, o)
	p.bytes += size
}

func (p *pending) bytesNow() int64 {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.bytes
}

// remove drops the first n queued ops (they were flushed and committed) and
// wakes writers waiting for room.
func (p *pending) remove(n int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, o := range p.queue[:n] {
		m := p.media[o.medium]
		first, last := o.sector/sectorsPerBlock, (o.end()-1)/sectorsPerBlock
		if o.isRange() {
			m.ranges = removeOp(m.ranges, o)
		} else {
			for b := first; b <= last; b++ {
				ops := removeOp(m.blocks[b], o)
				if len(ops) == 0 {
					delete(m.blocks, b)
				} else {
					m.blocks[b] = ops
				}
			}
		}
		if len(m.blocks) == 0 && len(m.ranges) == 0 {
			delete(p.media, o.medium)
		}
		p.bytes -= o.size
		if o.payload != nil {
			p.pools.put(o.payload)
			o.payload, o.data, o.pattern = nil, nil, nil
		}
	}
	clear(p.queue[:n])
	p.queue = p.queue[n:]
	if len(p.queue) == 0 {
		p.queue = nil
	}
	p.cond.Broadcast()
}

// removeOp deletes o from ops; flushed ops are the oldest, so it is usually
// the first.
func removeOp(ops []*pop, o *pop) []*pop {
	for i, x := range ops {
		if x == o {
			copy(ops[i:], ops[i+1:])
			ops[len(ops)-1] = nil
			return ops[:len(ops)-1]
		}
	}
	return ops
}

// wholeBlock returns block b's data when the newest op (seq <= maxSeq)
// touching it is a write covering all of it, aliasing that op's data.
func (m *pmedium) wholeBlock(b, maxSeq uint64) []byte {
	if m == nil {
		return nil
	}
	ops := m.blocks[b]
	oi := len(ops) - 1
	for oi >= 0 && ops[oi].seq > maxSeq {
		oi--
	}
	if oi < 0 {
		return nil
	}
	o := ops[oi]
	// A range op newer than o could also touch b.
	bs := b * sectorsPerBlock
	for i := len(m.ranges) - 1; i >= 0; i-- {
		r := m.ranges[i]
		if r.seq < o.seq {
			break
		}
		if r.seq <= maxSeq && r.sector < bs+sectorsPerBlock && r.end() > bs {
			return nil
		}
	}
	if o.op != opWrite || o.sector > bs || o.end() < bs+sectorsPerBlock {
		return nil
	}
	off := (bs - o.sector) * SectorSize
	return o.data[off : off+BlockSize]
}

// state returns the op type of the newest pending op touching block b of
// this medium (0 if none). Used for provisioning status.
func (m *pmedium) state(b uint64) uint8 {
	if m == nil {
		return 0
	}
	var best *pop
	if ops := m.blocks[b]; len(ops) > 0 {
		best = ops[len(ops)-1]
	}
	bs := b * sectorsPerBlock
	for i := len(m.ranges) - 1; i >= 0; i-- {
		r := m.ranges[i]
		if best != nil && r.seq < best.seq {
			break
		}
		if r.sector < bs+sectorsPerBlock && r.end() > bs {
			best = r
			break
		}
	}
	if best == nil {
		return 0
	}
	return best.op
}

// queueAfter returns the queued ops with seq > after, in seq order.
func (p *pending) queueAfter(after uint64) []*pop {
	p.mu.RLock()
	defer p.mu.RUnlock()
	i := sort.Search(len(p.queue), func(i int) bool { return p.queue[i].seq > after })
	return append([]*pop(nil), p.queue[i:]...)
}

// resolve fills, for block b of this medium, every sector that a pending op
// with seq <= maxSeq covers and that known does not mark yet, newest op
// first. It returns the updated known mask (bit i = sector i of the block)
// and, in unm, marks the sectors whose newest op is an unmap.
func (m *pmedium) resolve(b uint64, maxSeq uint64, out []byte, known uint8, unm *uint8) uint8 {
	if m == nil {
		return known
	}
	const all = 0xff
	ops := m.blocks[b]
	ri := len(m.ranges) - 1
	oi := len(ops) - 1
	bs := b * sectorsPerBlock
	for known != all && (oi >= 0 || ri >= 0) {
		var o *pop
		if ri < 0 || (oi >= 0 && ops[oi].seq > m.ranges[ri].seq) {
			o = ops[oi]
			oi--
		} else {
			o = m.ranges[ri]
			ri--
			if o.sector >= bs+sectorsPerBlock || o.end() <= bs {
				continue
			}
		}
		if o.seq > maxSeq {
			continue
		}
		lo, hi := max(o.sector, bs), min(o.end(), bs+sectorsPerBlock)
		for s := lo; s < hi; s++ {
			i := s - bs
			if known&(1<<i) != 0 {
				continue
			}
			o.sectorData(s, out[i*SectorSize:(i+1)*SectorSize])
			known |= 1 << i
			if o.op == opUnmap && unm != nil {
				*unm |= 1 << i
			}
		}
	}
	return known
}

// Payload buffers: one per write, from size-class pools, returned when the
// write leaves the pending index (nothing references it after that: readers
// copy out under the index's read lock, and removal takes the write lock).
var payloadClasses = func() []int {
	var c []int
	for n := 4 << 10; n <= 16<<20; n *= 2 {
		c = append(c, n+recordHeaderSize)
	}
	return c
}()

type payloadPools struct{ p [16]sync.Pool }

func classOf(n int) int {
	for i, c := range payloadClasses {
		if n <= c {
			return i
		}
	}
	return -1
}

func (pp *payloadPools) get(n int) []byte {
	c := classOf(n)
	if c < 0 {
		return make([]byte, n)
	}
	if b, ok := pp.p[c].Get().(*[]byte); ok {
		return (*b)[:n]
	}
	return make([]byte, n, payloadClasses[c])
}

func (pp *payloadPools) put(b []byte) {
	c := classOf(cap(b))
	if c < 0 || cap(b) != payloadClasses[c] {
		return
	}
	b = b[:0]
	pp.p[c].Put(&b)
}
