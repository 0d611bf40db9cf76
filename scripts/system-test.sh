#!/bin/bash
# system-test.sh: the whole system against real peers. Boots the real array
# (`vfa init`/`vfa run`: NVRAM, dedup, compression, encryption, segments)
# and drives it over iSCSI with libiscsi's tools and conformance suite,
# qemu-io/qemu-img, hand-made bad PDUs, SIGKILL and SIGTERM restarts, and the
# Linux open-iscsi initiator in a QEMU guest.
#
#   scripts/system-test.sh [options] BIN
#     --only LIST   run only these checks (comma-separated)
#     --skip LIST   leave these checks out
#     --keep        keep the work directory (logs of every vfa run)
#     --list        print the checks and exit
#
# Checks (scripts/systest/check_*.sh; each prints PASS/FAIL/SKIP lines with
# a reason):
#   boot         init/run, a second run on the same directory, bad init flags
#   tools        iscsi-ls, iscsi-inq (standard and VPD), iscsi-readcapacity16
#   conformance  iscsi-test-cu, every SCSI.* and iSCSI.* family, --dataloss,
#                two initiator names, a second portal; zero failures, >= 170
#                passes, no skip outside the documented list
#   qemu         qemu-io pattern writes and reads (start, end, 512 B, 1 MiB,
#                unaligned, UNMAP, WRITE SAME, header digests), a 64 MiB
#                qemu-img convert + compare, a session idle for 20 s
#   negative     bad PDUs, unknown target, commands past the end, an
#                initiator in no host; the array keeps serving a live session
#   crash        SIGKILL vfa under a QD32 writer (unique data) and under
#                qemu-io; every acknowledged write reads back
#   restart      SIGTERM, no NVRAM replay on the next boot, data intact
#   rebuild      a deleted SSD replaced with puredrive admit and rebuilt;
#                then two other SSDs deleted and every byte still reads back
#   vm           open-iscsi in a QEMU guest: discovery, login (CHAP and a
#                refused wrong secret when the binary has the SSH CLI), ext4,
#                fstrim, fsck; restart vfa; verify
#   rdl          the Rapid Data Locking drill against PyKMIP
#                (scripts/rdl-drill.sh, ~2 minutes)
#
# Binds only 127.0.0.1 (free ports), cleans up every process and directory
# it made (unless --keep), exits 1 if any check failed. A missing tool skips
# the checks that need it, or fails them when CI=true. Takes ~4-5 minutes on
# the 2-core reference machine (plus ~2 for the RDL drill).
set -euo pipefail
VFA_PROG=system-test
. "$(dirname "$0")/lib.sh"
. "$VFA_SCRIPTS/systest/lib.sh"
# shellcheck source=/dev/null
for f in "$VFA_SCRIPTS"/systest/check_*.sh; do . "$f"; done

ALL_CHECKS=(boot tools conformance qemu negative masking crash restart rebuild vm rdl)
usage() {
	sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

ONLY="" SKIP_LIST="" KEEP=0 BIN=""
while (($#)); do
	case $1 in
	--only) ONLY=$2; shift ;;
	--skip) SKIP_LIST=$2; shift ;;
	--keep) KEEP=1 ;;
	--list) printf '%s\n' "${ALL_CHECKS[@]}"; exit 0 ;;
	-h | --help) usage; exit 0 ;;
	-*) echo "system-test: unknown option $1" >&2; usage >&2; exit 2 ;;
	*) [ -z "$BIN" ] || { usage >&2; exit 2; }; BIN=$1 ;;
	esac
	shift
done
[ -n "$BIN" ] || { usage >&2; exit 2; }
[ -x "$BIN" ] || vfa_die "$BIN is not an executable (make build)"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
for c in ${ONLY//,/ } ${SKIP_LIST//,/ }; do
	[[ " ${ALL_CHECKS[*]} " == *" $c "* ]] || vfa_die "unknown check $c (--list)"
done

WORK=$(mktemp -d /tmp/vfa-systest.XXXXXX)
RESULTS=$WORK/results
: >"$RESULTS"
export BIN WORK RESULTS

cleanup() {
	local f
	for f in "$WORK"/*/pids; do [ -e "$f" ] && stop_tracked "$f"; done
	if ((KEEP)); then
		echo "work directory kept: $WORK" >&2
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# run_check NAME: check_NAME in a subshell with its own directory; an
# unexpected error inside it is a FAIL, never an abort of the whole run.
run_check() {
	local name=$1 t0=$SECONDS rc=0
	CK=$WORK/$name
	mkdir -p "$CK"
	: >"$CK/pids"
	echo "---- $name"
	# Not `( ... ) || rc=$?`: errexit and the ERR trap are off inside a
	# command whose status is tested.
	set +e
	(
		# The ERR trap is inherited by command substitutions (-E); only a
		# failure at the check's own level is an error.
		# shellcheck disable=SC2034 # read by the ERR trap
		CK_LEVEL=$BASH_SUBSHELL
		trap 'stop_tracked "$CK/pids"' EXIT
		trap 'rc=$?; if ((BASH_SUBSHELL == CK_LEVEL)); then fail "$name" "unexpected error (status $rc) at line $LINENO: $BASH_COMMAND"; exit 1; fi' ERR
		set -eEuo pipefail
		"check_$name"
	)
	rc=$?
	set -e
	if ((rc != 0)) && ! grep -q "^FAIL $name" "$RESULTS"; then
		fail "$name" "the check exited with status $rc"
	fi
	info "($name: $((SECONDS - t0))s)"
}

T0=$SECONDS
echo "system test of $BIN ($(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)), work dir $WORK"
for c in "${ALL_CHECKS[@]}"; do
	[ -z "$ONLY" ] || [[ ,$ONLY, == *,$c,* ]] || continue
	[[ ,$SKIP_LIST, != *,$c,* ]] || continue
	run_check "$c"
done

npass=$(grep -c '^PASS' "$RESULTS" || true)
nfail=$(grep -c '^FAIL' "$RESULTS" || true)
nskip=$(grep -c '^SKIP' "$RESULTS" || true)
echo "----"
echo "system test: $npass passed, $nfail failed, $nskip skipped in $((SECONDS - T0))s"
if ((nfail > 0)); then
	grep '^FAIL' "$RESULTS"
	exit 1
fi
