// Package iscsi is vfa's iSCSI target (RFC 7143) and SCSI block device
// (an SPC-4/SBC-3 subset). It serves the volumes an array.Frontend lists as
// LUNs, each through an array.BlockDevice, to the initiators the frontend
// maps them to.
//
// Structure:
//
//   - Target (target.go) owns the listeners, the sessions, the logical-unit
//     state shared by all sessions (reservations, unit attentions, mode
//     settings; logical_unit.go) and the buffer pools.
//   - Login (login.go, params.go, chap.go) runs on a new connection until
//     full feature phase: CHAP, operational negotiation, session creation,
//     reinstatement and connection addition.
//   - Each connection (conn.go) has one reader goroutine that parses PDUs,
//     enforces the CmdSN window and dispatches (command.go), and one writer
//     goroutine that sends every PDU of the connection in the order it is
//     queued and stamps StatSN, ExpCmdSN and MaxCmdSN. Commands (task.go)
//     execute concurrently on a session's reusable worker goroutines,
//     ordered by their task attributes (session.go): SIMPLE commands run in
//     parallel, an ORDERED one waits for everything before it and holds back
//     everything after it, HEAD OF QUEUE runs at once.
//   - SCSI commands (scsi.go, cdb.go, spc.go, sbc.go, pr.go, sense.go) map
//     onto BlockDevice calls; errors the device returns become sense data
//     (see senseForError), never GOOD. WRITE ATOMIC(16) is one WriteAt of
//     at most the device's AtomicMax. EXTENDED COPY and RECEIVE COPY
//     RESULTS (xcopy.go) copy between the LUNs an initiator sees, through
//     their BlockDevices.
//
// Invariants:
//
//   - No package-level mutable state: targets in one process are independent.
//   - Every queue and size is bounded (Config); exceeding a bound is a
//     protocol rejection or an error status, never a silent drop.
//   - A task's response is sent at most once; once a task is aborted nothing
//     more is sent for it. A task is removed from its session before its
//     final response is written, so its tag can be reused at once.
//   - MaxCmdSN = ExpCmdSN - 1 + CmdWindow - (non-immediate commands still in
//     progress), so at most CmdWindow commands of a session are in flight and
//     MaxCmdSN never decreases.
//   - ErrorRecoveryLevel is 0: any digest or protocol error ends the
//     connection after a Reject, and losing a connection aborts its tasks.
//   - The per-I/O path allocates at most one data buffer (from a pool; in
//     steady state nothing) and neither logs nor formats strings.
//   - Every goroutine the target starts is counted in Target.wg: Close
//     returns only when all of them have ended.
//
// Error mapping from array errors to sense data is documented at
// senseForError, and for EXTENDED COPY in xcopy.go. Conformance with libiscsi's iscsi-test-cu, and the
// tests it skips, is documented in conformance_test.go.
package iscsi
