// Package mgmt is the array's management interface: an SSH server
// (github.com/gliderlabs/ssh) with a Purity//FA-style command line —
// purearray, purevol, purehost, purehgroup, pureport, puredrive, purealert,
// puremessage, pureadmin — run as `ssh pureuser@array purevol list` (exec)
// or in an interactive shell with a prompt and line editing.
//
// Invariants:
//   - Only pureuser logs in, with a public key or a password; passwords are
//     stored only as argon2id hashes; a refused password is answered after a
//     delay; connections are bounded.
//   - Every command runs through one dispatcher (dispatch.go) whatever the
//     session kind, and prints either its output or one line
//     "Error on <object>: <reason>." on stderr with exit status 1.
//   - A command changes all the objects it names or none of them (see
//     dispatch.go for the one exception, eradication), and commands that
//     change things run one at a time.
//   - Every command that changes something, and every failed attempt at one,
//     is in the array's audit log.
//   - Output formats are stable for scripts (output.go): tables, --csv with
//     raw numbers, --nvp, --notitle.
//   - The server keeps no package-level state: many servers, for many arrays,
//     can run in one process.
package mgmt
