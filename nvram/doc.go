// Package nvram is the array's write-ahead log device: every write is
// appended here, sealed and made durable before it is acknowledged; a flusher
// (in datapath) later moves the data into segments, commits a checkpoint and
// then releases the log space.
//
// The log lives in a byte range (the region) of one file, normally
// nvram/nvram0.dev after its two superblock copies. The package never writes
// outside the region and never touches the superblock. The record layout is
// documented in record.go.
//
// # Writing
//
// Append seals the payload with AES-256-GCM under the media key in the
// caller's goroutine (many callers seal in parallel) into a bounded staging
// buffer, at a log offset and seq reserved for it under a mutex. One committer
// goroutine writes every sealed record that is next in seq order with as few
// WriteAt calls as the layout allows (one per contiguous run), issues one
// SyncData for the whole batch, calls Options.OnDurable for each record in
// seq order, and only then wakes the appenders. Nothing waits on a timer: a
// batch is whatever queued up while the previous sync was running. After
// waking a batch the committer yields the processor once, so that appenders
// that append again at once join the next batch instead of the one after it
// (with 8 writers this took records per sync from about 4 to about 7).
//
// When the log (or the staging buffer) is full, Append waits, first come
// first served, until Release (or the committer) frees space; the wait is
// cancellable with its context and nothing is ever dropped. Once a record has
// a seq, it is always written: the context no longer applies.
//
// # Invariants
//
//   - Seq numbers are consecutive; a record's seq and offset are fixed when
//     it is reserved, and records reach the file in seq order.
//   - A (key, nonce) pair is never reused: the nonce is (epoch, seq, kind),
//     epochs strictly increase across boots (the caller bumps and persists
//     the epoch in the superblock before Open; Open refuses an epoch that is
//     not greater than the last replayed record's) and seqs strictly increase
//     within a boot.
//   - Append returns nil only after SyncData covered its record, and after
//     OnDurable saw it. After any WriteAt or SyncData error the log is failed
//     for good (fsyncgate): the failing batch, everything queued behind it and
//     every later Append return an error wrapping ErrFailed.
//   - Space before the released position is reused; space after it is never
//     overwritten. The caller may release a position only once its checkpoint
//     at or beyond that position is durable.
//   - No package-level mutable state: any number of logs can run in one
//     process.
//
// # Replay and stale records
//
// Replay walks the chain of records from a checkpoint Position and stops at
// the first record that is missing, torn, fails authentication, has the wrong
// seq or offset, or has an epoch lower than the record before it. A Position
// carries that epoch (the epoch of the record that ends there), so the rule
// holds even across a checkpoint.
//
// Why the epoch rule is needed, and why it is enough: boot k replays and
// stops at some position P because the bytes there are not the next record.
// Boot k then writes its records, with epoch k, from P on. If it crashes,
// some of those writes may be missing while older records (from boot j < k)
// still sit where boot k's next record would be, possibly with exactly the
// right seq and offset, and they authenticate. Applying one would resurrect a
// write that boot k's replay had already discarded, after newer
// acknowledged writes. Any such stale record has an epoch j < k and
// follows a record of epoch k, so the rule rejects it. Conversely a record of
// epoch k with the expected seq and offset can only be the one boot k wrote
// for that seq (each seq is written once per boot), so nothing legitimate is
// rejected. The chain up to P is untouched by boot k, so the next boot reads
// exactly what boot k read, then boot k's records. Wrap markers carry epoch
// and seq and are authenticated like records, so a stale marker cannot
// redirect the chain either.
//
// # What is guaranteed, and what is not
//
// The caller stores Position values (Seq, Off and Epoch) as its checkpoint;
// the epoch is part of what makes a checkpoint safe to replay from.
//
// Guaranteed: after a crash (process kill or power loss), every record whose
// Append returned nil is replayed, in seq order, with its exact payload, and
// nothing follows a gap. Records that were in flight may or may not appear;
// if one appears, every record before it appears too.
//
// Not guaranteed: damage to bytes that were already durable. A torn tail
// and a bit flipped in a durable record look the same (the record fails
// authentication), and Replay cannot step over a record it cannot read, so a
// damaged record and every record after it are lost even if they were
// acknowledged. A hardware NVRAM module has the same limit: it relies on
// ECC, and an uncorrectable error in the log loses the log from that point.
// Damage is never applied (GCM rejects it) and, when the damaged record's
// header is intact, Replay detects the case: it keeps walking the records
// behind it without applying them, and if one of them says (through its
// durable watermark) that the damaged record had been durable, Replay returns
// an error wrapping ErrCorrupt together with the end of the intact prefix, so
// the caller can raise an alert instead of silently losing data. A flip that
// destroys the header (magic, seq, offset or length) or that hits the very
// last records cannot be told apart from a torn tail.
package nvram
