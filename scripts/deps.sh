#!/bin/bash
# deps.sh: install what the tests need, idempotently, and cache the .debs the
# open-iscsi QEMU guest is built from so later test runs need no network.
#
# Quiet when everything is already there. Runs `apt-get update` only when a
# package is missing (or the guest packages cannot be resolved). Needs root
# to install; with nothing missing it needs nothing.
set -euo pipefail
VFA_PROG=deps
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/deps.sh [--host] [--guest] [-v]

  --host   only the host packages (iSCSI tools, QEMU, tgt, PyKMIP, OpenSSH, ...)
  --guest  only the guest .debs, downloaded to \$VFA_CACHE/debs/guest
           (VFA_CACHE=$VFA_CACHE)
  -v       say what is already present
With neither --host nor --guest, does both.
EOF
}

# Host packages: the peers the tests talk to, and what the scripts here use.
HOST_PKGS=(
	libiscsi-bin libiscsi-dev     # iscsi-test-cu, iscsi-inq/ls; headers for iscsi-bench
	qemu-utils qemu-system-x86    # qemu-img/qemu-io over iscsi://; the open-iscsi guest
	tgt                           # tgtd: the reference target
	python3-pykmip                # a real KMIP server
	openssh-client sshpass        # the management CLI tests
	nginx-light                   # a real TLS server
	e2fsprogs util-linux          # mke2fs/e2fsck/debugfs, fstrim (host and guest)
	gcc libc6-dev make            # iscsi-bench
	kmod cpio xz-utils            # guest initramfs: depmod, cpio, .ko.xz
	ca-certificates
)
# Guest packages (downloaded, never installed): the kernel is whatever
# linux-image-amd64 points at; the rest by name.
GUEST_PKGS=(open-iscsi libopeniscsiusr libisns0 busybox-static)
GUEST_DIR=$VFA_CACHE/debs/guest

do_host=1 do_guest=1 verbose=0
while (($#)); do
	case $1 in
	--host) do_guest=0 ;;
	--guest) do_host=0 ;;
	-v) verbose=1 ;;
	-h | --help) usage; exit 0 ;;
	*) usage >&2; exit 2 ;;
	esac
	shift
done
say() { ((verbose)) && vfa_log "$*" || true; }

updated=0
apt_update() {
	((updated)) && return 0
	vfa_log "apt-get update"
	# An unreachable third-party source makes apt-get update fail while the
	# Debian mirror worked: warn, and let the install or download decide.
	local out
	out=$(apt-get update -qq 2>&1) || vfa_log "WARNING: apt-get update reported errors: $(printf '%s
' "$out" | grep -m2 '^[EW]:' | tr '
' ' ')"
	updated=1
}

installed() { [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]; }

install_host() {
	local missing=() p
	for p in "${HOST_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
	if ((${#missing[@]} == 0)); then
		say "host packages present (${#HOST_PKGS[@]})"
		return 0
	fi
	[ "$(id -u)" = 0 ] || vfa_die "missing packages (${missing[*]}); run as root to install them"
	apt_update
	# No daemon may start during installation (nginx would bind 0.0.0.0:80,
	# tgt and pykmip would start services): install a policy-rc.d that says no
	# unless the machine already has one.
	local policy=/usr/sbin/policy-rc.d ours=0
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && ours=1
	fi
	vfa_log "installing: ${missing[*]}"
	local rc=0 out
	out=$(DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confold "${missing[@]}" 2>&1) || rc=$?
	((ours)) && rm -f "$policy"
	if ((rc != 0)); then
		printf '%s\n' "$out" | tail -25 >&2
		vfa_die "apt-get install failed (rc=$rc) for: ${missing[*]}"
	fi
	for p in "${missing[@]}"; do installed "$p" || vfa_die "package $p still not installed after apt-get install"; done
}

# The kernel package linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64.
kernel_pkg() {
	apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'
}

have_deb() { compgen -G "$GUEST_DIR/${1}_*.deb" >/dev/null; }

fetch_guest() {
	mkdir -p "$GUEST_DIR"
	local kpkg want=() missing=() p
	kpkg=$(cat "$GUEST_DIR/KERNEL" 2>/dev/null || true)
	if [ -z "$kpkg" ] || ! have_deb "$kpkg"; then
		kpkg=$(kernel_pkg)
		[ -n "$kpkg" ] || { apt_update; kpkg=$(kernel_pkg); }
		[ -n "$kpkg" ] || vfa_die "cannot resolve the kernel package behind linux-image-amd64"
	fi
	want=("$kpkg" "${GUEST_PKGS[@]}")
	for p in "${want[@]}"; do have_deb "$p" || missing+=("$p"); done
	if ((${#missing[@]} == 0)); then
		say "guest debs cached in $GUEST_DIR ($kpkg)"
		return 0
	fi
	vfa_log "downloading guest debs: ${missing[*]}"
	local tmp out rc=0
	tmp=$(mktemp -d "$GUEST_DIR/.dl.XXXXXX")
	# apt-get download writes to the current directory; _apt cannot write to a
	# root-owned mktemp dir, so the download runs unsandboxed (harmless notice).
	out=$(cd "$tmp" && apt-get download -q "${missing[@]}" 2>&1) || rc=$?
	if ((rc != 0)); then
		apt_update
		rc=0
		out=$(cd "$tmp" && apt-get download -q "${missing[@]}" 2>&1) || rc=$?
	fi
	if ((rc != 0)); then
		rm -rf "$tmp"
		printf '%s\n' "$out" | tail -10 >&2
		vfa_die "apt-get download failed for: ${missing[*]}"
	fi
	mv "$tmp"/*.deb "$GUEST_DIR/"
	rm -rf "$tmp"
	for p in "${want[@]}"; do have_deb "$p" || vfa_die "guest deb $p missing after download"; done
	printf '%s\n' "$kpkg" >"$GUEST_DIR/KERNEL"
	(cd "$GUEST_DIR" && sha256sum -- *.deb >SHA256SUMS)
	vfa_log "guest debs cached in $GUEST_DIR ($(du -sh "$GUEST_DIR" | cut -f1))"
}

((do_host)) && install_host
((do_guest)) && fetch_guest
exit 0
