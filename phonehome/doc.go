// Package phonehome uploads an array's diagnostics, logs and alerts to a
// cloud endpoint over mutually authenticated TLS 1.3, keeps them in a
// bounded on-disk spool while the endpoint is away, and carries the lab
// receiver (`vfa cloud`) that accepts them.
//
// The uploader (Start) reads the array only through its snapshot and event
// API (package array) and its settings from the array's metadata store. One
// goroutine makes documents — diagnostics every 30 seconds, logs every hour,
// alerts as they open and close, documents an administrator asks for — and
// appends them to the spool; another sends the spool in order. The wire
// format is versioned, gzip-compressed JSON (document.go, docs/phonehome.md);
// the spool's on-disk format is in spoolfmt.go.
//
// Invariants:
//   - Every document goes through the spool before it is sent, and leaves
//     it only when the endpoint answered 2xx, or when it is dropped with an
//     event that names it (spool full, rejected as too large (413), corrupt on
//     disk, cancelled by an administrator). Documents are sent in sequence
//     order; a sequence number is never reused, across restarts too.
//   - The spool never holds more than its limit: when full, diagnostics are
//     thinned first, then the oldest logs and alerts documents are dropped
//     and an alert says so (pickVictim in spool.go).
//   - Only TLS 1.3 is spoken; the endpoint must present a certificate that
//     chains to the configured CA and names its host; the array presents
//     its phonehome certificate, re-read for every upload, so a replaced
//     certificate is used from the next upload on.
//   - One way only: nothing the endpoint answers reaches the array; the
//     status code alone decides success, failure or rejection.
//   - The data path never waits on phone home: the alert callback queues
//     (boundedly) and returns; snapshots are the array's own.
//   - No package-level mutable state: many uploaders (many arrays) and many
//     receivers can run in one process.
package phonehome
