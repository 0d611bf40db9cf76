// Package datapath stores the array's blocks: volumes and their media, the
// write pipeline (NVRAM, then reduction into segments), the read pipeline,
// the metadata, garbage collection and space accounting. Read it top to
// bottom as the write path:
//
//  1. io.go: a volume write is checked, passed through the host-key stage,
//     encoded as an NVRAM record (record.go) and appended to the NVRAM log;
//     the log's committer inserts it into the pending index (pending.go)
//     before the write is acknowledged.
//  2. flush.go: the flusher takes pending records in sequence order, resolves
//     them into whole 4 KiB blocks (read-modify-write for partial blocks),
//     removes zero blocks, fingerprints the rest with keyed BLAKE3,
//     deduplicates against the index, compresses with LZ4, seals with
//     AES-256-GCM under the DEK (nonce and AAD from the block's address) and
//     packs them into the open segment (segment.go).
//  3. The segment's new rows are written across the SSDs with parity and
//     synced; then one Pebble batch commits the map, the dedup index, the
//     reference counts, the segment table and the NVRAM checkpoint (meta.go);
//     then the NVRAM space and the pending entries are released.
//
// Invariants:
//   - an acknowledged write is in NVRAM (durable) or in a committed segment;
//   - a record is applied at most once: the checkpoint moves in the same
//     batch as the map changes it causes;
//   - a (segment id, offset) pair is written once: segment ids are reserved
//     durably before use and never reused, so a GCM nonce never repeats;
//   - reference counts equal the number of map entries naming a fingerprint;
//     a count never goes below zero (checked, an error if it would);
//   - an AU freed by GC is reused only after every read that might still be
//     addressing its old segment has finished.
package datapath
