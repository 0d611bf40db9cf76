package datapath

import (
	"bytes"
	"fmt"
	"sort"

	"github.com/cockroachdb/pebble/v2"

	"vfa/ssd"
)

// Space accounting, following `purearray list --space`.
//
// Physical space is measured in segment payload bytes on the SSDs (parity
// excluded; Capacity is what data can use):
//
//	Capacity  = AUs per device x segment payload per AU
//	Used      = Volumes + Snapshots + Shared + System
//	            (= stripe rows written in live segments x row payload)
//	Volumes   = stored bytes of blocks referenced exactly once, by a volume's
//	            visible data
//	Shared    = stored bytes of deduplicated blocks (referenced more than
//	            once) that some volume shows
//	Snapshots = stored bytes of blocks that no volume shows (held only by
//	            snapshots or by overwritten data of frozen media)
//	System    = the rest of Used: dead blocks awaiting GC and row padding
//	Data reduction  = logical data written (every mapped block, zero blocks
//	                  included, of volumes and snapshots) / unique stored bytes
//	Thin provisioning = 1 - (blocks volumes show / provisioned blocks)
//	Total reduction = provisioned bytes / unique stored bytes
//	Parity    = fraction of segment rows whose two parity shards are on
//	            present devices (1 when no device is missing)
//
// The breakdown is computed by a scan of a consistent metadata snapshot; data
// still in NVRAM (not yet flushed) is not physical yet and is not counted.

// Space is the array's space report.
type Space struct {
	Capacity         int64
	Used             int64
	Volumes          int64
	Snapshots        int64
	Shared           int64
	System           int64
	Provisioned      int64
	LogicalWritten   int64
	Unique           int64 // stored bytes of all live blocks (Volumes+Shared+Snapshots)
	DataReduction    float64
	ThinProvisioning float64
	TotalReduction   float64
	Parity           float64
	MetadataBytes    int64
}

// VolumeSpace is one volume's share.
type VolumeSpace struct {
	ID      uint64
	Name    string
	Size    int64
	Written int64 // bytes of blocks the volume shows
	Unique  int64 // stored bytes only this volume references
	// Snapshots: stored bytes that only this volume's frozen media hold,
	// for blocks the volume has overwritten since (what its snapshots keep
	// alive). Blocks of snapshots whose volume is gone, or of media shared
	// with a copy, count in the array's Snapshots only.
	Snapshots     int64
	DataReduction float64
}

// Space computes the space report.
func (s *Store) Space() (Space, []VolumeSpace, error) {
	if err := s.usable(); err != nil {
		return Space{}, nil, err
	}
	snap := s.db.NewSnapshot()
	defer snap.Close()

	sa := s.seg
	var sp Space
	sa.mu.RLock()
	sp.Capacity = int64(sa.aus) * int64(sa.segPayload)
	for _, r := range sa.segs {
		sp.Used += int64(r.rows) * int64(sa.rowPayload)
	}
	sa.mu.RUnlock()
	v, c, err := snap.Get(controlKey("space"))
	if err != nil {
		return Space{}, nil, err
	}
	sv, err := decodeU64s(v, 2)
	c.Close()
	if err != nil {
		return Space{}, nil, err
	}
	sp.Unique = int64(sv[1])

	// Volumes and their chains, media mapped counts.
	s.vols.mu.RLock()
	type volChain struct {
		rec   volumeRecord
		chain []chainLink
	}
	var vols []volChain
	for _, vol := range s.vols.byID {
		st := vol.st.Load()
		if st.rec.Snapshot {
			continue
		}
		vols = append(vols, volChain{st.rec, st.chain})
		sp.Provisioned += st.rec.Size
	}
	for _, m := range s.vols.media {
		if !m.deleting {
			sp.LogicalWritten += int64(m.mapped) * BlockSize
		}
	}
	s.vols.mu.RUnlock()
	sort.Slice(vols, func(i, j int) bool { return vols[i].rec.ID < vols[j].rec.ID })

	// Dedup entries are looked up in sorted batches with one iterator
	// (bloom-filtered prefix seeks), not one Get per block.
	dit, err := snap.NewIter(&pebble.IterOptions{LowerBound: []byte{pfxDedup}, UpperBound: []byte{pfxDedup + 1}})
	if err != nil {
		return Space{}, nil, err
	}
	defer dit.Close()
	type visible struct {
		medium uint64
		fp     FP
		hidden bool // an entry of a frozen medium the volume no longer shows
	}
	lookupAll := func(batch []visible, fn func(v *visible, loc location)) error {
		sort.Slice(batch, func(i, j int) bool { return bytes.Compare(batch[i].fp[:], batch[j].fp[:]) < 0 })
		var k [33]byte
		k[0] = pfxDedup
		for i := range batch {
			copy(k[1:], batch[i].fp[:])
			if !dit.SeekPrefixGE(k[:]) || !bytes.Equal(dit.Key(), k[:]) {
				if err := dit.Error(); err != nil {
					return err
				}
				return fmt.Errorf("%w: block %x is mapped but not in the dedup index", ErrMedium, batch[i].fp[:8])
			}
			loc, err := decodeLocation(dit.Value())
			if err != nil {
				return err
			}
			fn(&batch[i], loc)
		}
		return nil
	}
	// How many volume chains include each medium: entries of a medium in one
	// chain are visible to that volume only.
	inChains := map[uint64]int{}
	for _, vc := range vols {
		for _, l := range vc.chain {
			inChains[l.medium]++
		}
	}
	type fpUse struct {
		length  int64
		refs    uint64
		visible int
		owner   int // index into out of the last volume that showed it
	}
	uses := map[FP]*fpUse{} // blocks that may be seen more than once
	var shows int64
	var out []VolumeSpace
	for vi, vc := range vols {
		vsp := VolumeSpace{ID: vc.rec.ID, Name: vc.rec.Name, Size: vc.rec.Size}
		var batch []visible
		vi := vi
		account := func(v *visible, loc location) {
			if v.hidden {
				if loc.refs == 1 && inChains[v.medium] == 1 {
					vsp.Snapshots += int64(loc.length)
				}
				return
			}
			if loc.refs == 1 && inChains[v.medium] == 1 {
				vsp.Unique += int64(loc.length)
				return
			}
			u := uses[v.fp]
			if u == nil {
				u = &fpUse{length: int64(loc.length), refs: loc.refs}
				uses[v.fp] = u
			}
			u.visible++
			u.owner = vi
		}
		add := func(v visible) error {
			batch = append(batch, v)
			if len(batch) == 1<<14 {
				err := lookupAll(batch, account)
				batch = batch[:0]
				return err
			}
			return nil
		}
		err := walkVisibleHidden(snap, vc.chain, func(m, b uint64, e mapEntry) error {
			vsp.Written += BlockSize
			if e.kind != entryData {
				return nil
			}
			return add(visible{medium: m, fp: e.fp})
		}, func(m, b uint64, e mapEntry) error {
			if e.kind != entryData {
				return nil
			}
			return add(visible{medium: m, fp: e.fp, hidden: true})
		})
		if err == nil && len(batch) > 0 {
			err = lookupAll(batch, account)
		}
		if err != nil {
			return Space{}, nil, err
		}
		shows += vsp.Written / BlockSize
		out = append(out, vsp)
	}
	shared := map[FP]int64{}
	for fp, u := range uses {
		if u.refs == 1 && u.visible == 1 {
			out[u.owner].Unique += u.length
			continue
		}
		shared[fp] = u.length
	}
	for i := range out {
		sp.Volumes += out[i].Unique
		if out[i].Unique > 0 {
			out[i].DataReduction = float64(out[i].Written) / float64(out[i].Unique)
		}
	}
	for _, n := range shared {
		sp.Shared += n
	}
	sp.Snapshots = sp.Unique - sp.Volumes - sp.Shared
	if sp.Snapshots < 0 {
		return Space{}, nil, fmt.Errorf("datapath: space accounting inconsistent: %+v", sp)
	}
	sp.System = sp.Used - sp.Unique
	if sp.Unique > 0 {
		sp.DataReduction = float64(sp.LogicalWritten) / float64(sp.Unique)
		sp.TotalReduction = float64(sp.Provisioned) / float64(sp.Unique)
	}
	if sp.Provisioned > 0 {
		sp.ThinProvisioning = 1 - float64(shows*BlockSize)/float64(sp.Provisioned)
	}
	sp.Parity = s.parityFraction()
	sp.MetadataBytes = int64(s.db.Metrics().DiskSpaceUsage())
	return sp, out, nil
}

// parityFraction: 1 with every device present, 0.5 with one missing (one
// parity shard left), 0 with two.
func (s *Store) parityFraction() float64 {
	missing := 0
	for _, h := range s.set.Health() {
		if h.State != ssd.StateOK {
			missing++
		}
	}
	return float64(2-min(missing, 2)) / 2
}

// walkVisible calls fn for every block a chain shows (data or zero entries;
// unmapped tombstones hide the block), in block order.
func walkVisible(r pebble.Reader, chain []chainLink, fn func(medium, b uint64, e mapEntry) error) error {
	return walkVisibleHidden(r, chain, fn, nil)
}

// walkVisibleHidden is walkVisible that also calls hidden (when not nil)
// for the entries of deeper links that a shallower one hides.
func walkVisibleHidden(r pebble.Reader, chain []chainLink, fn, hidden func(medium, b uint64, e mapEntry) error) error {
	type cur struct {
		it  *pebble.Iterator
		idx int
	}
	var its []*cur
	defer func() {
		for _, c := range its {
			c.it.Close()
		}
	}()
	for i, link := range chain {
		if link.limit == 0 {
			continue
		}
		it, err := r.NewIter(&pebble.IterOptions{LowerBound: mapKey(link.medium, 0), UpperBound: mapKey(link.medium, link.limit)})
		if err != nil {
			return err
		}
		it.First()
		its = append(its, &cur{it: it, idx: i})
	}
	for {
		best := -1
		var bestBlock uint64
		for i, c := range its {
			if !c.it.Valid() {
				continue
			}
			_, b, _ := decodeMapKey(c.it.Key())
			if best < 0 || b < bestBlock || (b == bestBlock && c.idx < its[best].idx) {
				best, bestBlock = i, b
			}
		}
		if best < 0 {
			break
		}
		e, err := decodeMapEntry(its[best].it.Value())
		if err != nil {
			return err
		}
		if e.kind != entryUnmapped {
			if err := fn(chain[its[best].idx].medium, bestBlock, e); err != nil {
				return err
			}
		}
		for i, c := range its {
			if c.it.Valid() {
				if _, b, _ := decodeMapKey(c.it.Key()); b == bestBlock {
					if hidden != nil && i != best {
						he, err := decodeMapEntry(c.it.Value())
						if err != nil {
							return err
						}
						if err := hidden(chain[c.idx].medium, b, he); err != nil {
							return err
						}
					}
					c.it.Next()
				}
			}
		}
	}
	for _, c := range its {
		if err := c.it.Error(); err != nil {
			return err
		}
	}
	return nil
}
