# shellcheck shell=bash
# lib.sh: helpers sourced by the scripts in this directory (never run directly).
#
# Everything generated lives under $VFA_CACHE (default ~/.cache/vfa), never in
# the repository tree:
#   $VFA_CACHE/bin/          built tools (iscsi-bench)
#   $VFA_CACHE/debs/guest/   .debs for the open-iscsi guest (scripts/deps.sh)
#   $VFA_CACHE/refimage/     the reference data set (scripts/make-refimage.sh)
#   $VFA_CACHE/openiscsi-vm/ the guest kernel + initramfs (scripts/openiscsi-vm.sh)

VFA_CACHE=${VFA_CACHE:-${HOME:-/root}/.cache/vfa}
VFA_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
VFA_ROOT=$(cd "$VFA_SCRIPTS/.." && pwd)
VFA_PROG=${VFA_PROG:-$(basename "$0" .sh)}

vfa_log() { printf '[%s %s] %s\n' "$VFA_PROG" "$(date +%T)" "$*" >&2; }
vfa_die() { printf '%s: error: %s\n' "$VFA_PROG" "$*" >&2; exit 1; }

# vfa_need CMD...: fail with a pointer to deps.sh when a command is missing.
vfa_need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || vfa_die "'$c' not found; run scripts/deps.sh (as root)"
	done
}

# vfa_port_free PORT: true when nothing listens on 127.0.0.1:PORT.
vfa_port_free() {
	! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# vfa_wait_port PORT SECONDS: wait until something accepts on 127.0.0.1:PORT.
vfa_wait_port() {
	local port=$1 deadline=$((SECONDS + $2))
	until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
		((SECONDS < deadline)) || return 1
		sleep 0.1
	done
}

# vfa_iscsi_bench: path of the iscsi-bench binary, built on demand (quietly).
vfa_iscsi_bench() {
	local bin=$VFA_CACHE/bin/iscsi-bench
	make -s -C "$VFA_ROOT/tools/iscsi-bench" BINDIR="$VFA_CACHE/bin" >&2 ||
		vfa_die "building iscsi-bench failed (is libiscsi-dev installed? run scripts/deps.sh)"
	printf '%s\n' "$bin"
}
