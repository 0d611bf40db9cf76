// Package ssd is the array's virtual SSDs: sparse device files
// (ssd/ssdNN.dev) that start with a superblock (internal/devsb) followed by
// allocation units (AUs), and a Set that stripes segments across them with
// two Reed-Solomon parity columns. The byte layout is in layout.go.
//
// The datapath packs compressed, DEK-encrypted blocks into a segment payload
// and calls Set.WriteSegment (or Set.WriteRows, a few stripe rows at a time)
// to write it at one AU index on every device; later it reads byte ranges of
// that payload back with Set.Read.
//
// Invariants:
//   - Read returns exactly the bytes written, or an error; never other bytes
//     that passed for them. Every page carries the segment id and a CRC32C
//     (bound to its row and device slot), so a corrupt, misplaced, unwritten
//     or stale page is detected without any key and rebuilt from the other
//     pages of its row. A row with more than two bad pages gives
//     ErrUnrecoverable.
//   - WriteRows returns nil only after every page it wrote is written and
//     SyncData has returned on every device written, and at most two devices
//     of the set are unavailable. The caller may then commit metadata that
//     points at those rows.
//   - Every page is encrypted with its own device's media key (AES-256-CTR)
//     under counter blocks unique to (segment id, slot, row). Segment ids are
//     never reused (id 0 is reserved), rows of a segment are written once
//     (ErrRewrite otherwise), and a repair rewrites a page with exactly the
//     bytes written there before, so no keystream ever covers two different
//     plaintexts.
//   - A repair never writes into an AU that a later WriteSegment (with another
//     segment id) has claimed since the set was built.
//   - A device that fails a write or a sync is marked failed and is neither
//     read nor written again by the set; a set keeps working with up to two
//     devices missing or failed and refuses to be built with more.
//   - Reads take no lock shared by the whole set; buffers come from pools that
//     belong to the set. There is no package-level mutable state.
//
// Device files go through github.com/cockroachdb/pebble/v2/vfs. The set
// issues ReadAt and WriteAt concurrently on one file, and SyncData
// concurrently with them, as os.File and vfs.MemFS allow.
package ssd
