#!/bin/bash
# openiscsi-vm.sh: test an iSCSI target with a real Linux open-iscsi
# initiator. The host kernel has no iscsi_tcp, so the initiator runs in a
# QEMU guest (TCG; --accel kvm where nested KVM works): Debian's kernel and an
# initramfs holding open-iscsi, busybox, mke2fs/e2fsck and fstrim, with
# scripts/openiscsi-vm/init.sh as /init. QEMU user networking maps the
# guest's 10.0.2.2:PORT to the host's 127.0.0.1:PORT.
#
#   run     SendTargets discovery (the TargetAddress must be the reachable
#           10.0.2.2:PORT unless --advertised says otherwise), CHAP login,
#           find the disk and check its identity, mkfs.ext4, mount, write
#           random files plus a copy and zeros, record their sha256, delete
#           scratch data and fstrim -v, umount, e2fsck -fn, remount
#           read-only and verify, logout. --sums FILE receives the sums.
#   verify  discovery, login, identity, e2fsck -fn, mount read-only, check
#           the sums from a previous run (--sums FILE), logout: the same LUN
#           after the target restarted.
#
# Prints one line "RESULT PASS ..." or "RESULT FAIL step=... msg=..." on
# stdout and exits 0 or 1 (2 for usage errors). Never hangs: the guest has a
# watchdog and QEMU is killed at --timeout. The kernel + initramfs are built
# once and cached in $VFA_CACHE/openiscsi-vm (needs scripts/deps.sh).
set -euo pipefail
VFA_PROG=openiscsi-vm
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/openiscsi-vm.sh [options] run|verify
  -p, --port PORT          target listens on 127.0.0.1:PORT (required)
  -t, --target IQN         target name (required)
  -i, --initiator IQN      initiator name       [iqn.2004-10.org.vfa:openiscsi-vm]
  -u, --chap-user USER     CHAP user (no CHAP without it)
  -s, --chap-secret SECRET CHAP secret (or env VFA_CHAP_SECRET)
  --mutual-user USER       mutual CHAP: the target's user
  --mutual-secret SECRET   mutual CHAP: the target's secret (or env VFA_MUTUAL_SECRET)
  --discovery-chap         authenticate the discovery session with CHAP too
  --bad-chap               first try a wrong secret and require the login to be refused
  --advertised ADDR:PORT   TargetAddress SendTargets must return [10.0.2.2:PORT];
                           if it differs from 10.0.2.2:PORT the login uses a static record
  --vendor V, --model M    required INQUIRY vendor / product (e.g. PURE / FlashArray)
  --wwid-prefix P          required prefix of the device's wwid (e.g. naa.624a937)
  --lun N                  use LUN N                                   [the first disk]
  --sums FILE              run: write the sha256 lines here; verify: read them (required)
  --data "N MB n KB"       run: N random files of MB MiB, n of KB KiB  ["4 8 64 64"]
  --no-trim                run: skip fstrim (for targets without UNMAP)
  --timeout SECS           kill the VM after this long               [600]
  --log FILE               keep the guest console here (kept anyway on failure)
  --accel tcg|kvm|auto     QEMU accelerator (auto: KVM, else TCG)     [tcg]
                           (nested KVM on the reference machine hangs the guest)
  -v, --verbose            copy the guest console to stderr as it runs
EOF
}

PORT="" IQN="" INITIATOR=iqn.2004-10.org.vfa:openiscsi-vm
CHAP_USER="" CHAP_SECRET=${VFA_CHAP_SECRET:-} MUTUAL_USER="" MUTUAL_SECRET=${VFA_MUTUAL_SECRET:-}
DISCOVERY_CHAP=0 BAD_CHAP=0 ADVERTISED="" VENDOR="" MODEL="" WWID_PREFIX="" LUN="" SUMS=""
DATA="4 8 64 64" TRIM=require TIMEOUT=600 LOG="" ACCEL=${VFA_VM_ACCEL:-tcg} VERBOSE=0 MODE=""
need_arg() { (($# >= 2)) && [ -n "$2" ] || { echo "openiscsi-vm: $1 needs a value" >&2; exit 2; }; }
while (($#)); do
	case $1 in
	-p | --port) need_arg "$@"; PORT=$2; shift ;;
	-t | --target) need_arg "$@"; IQN=$2; shift ;;
	-i | --initiator) need_arg "$@"; INITIATOR=$2; shift ;;
	-u | --chap-user) need_arg "$@"; CHAP_USER=$2; shift ;;
	-s | --chap-secret) need_arg "$@"; CHAP_SECRET=$2; shift ;;
	--mutual-user) need_arg "$@"; MUTUAL_USER=$2; shift ;;
	--mutual-secret) need_arg "$@"; MUTUAL_SECRET=$2; shift ;;
	--discovery-chap) DISCOVERY_CHAP=1 ;;
	--bad-chap) BAD_CHAP=1 ;;
	--advertised) need_arg "$@"; ADVERTISED=$2; shift ;;
	--vendor) need_arg "$@"; VENDOR=$2; shift ;;
	--model) need_arg "$@"; MODEL=$2; shift ;;
	--wwid-prefix) need_arg "$@"; WWID_PREFIX=$2; shift ;;
	--lun) need_arg "$@"; LUN=$2; shift ;;
	--sums) need_arg "$@"; SUMS=$2; shift ;;
	--data) need_arg "$@"; DATA=$2; shift ;;
	--no-trim) TRIM=skip ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
	--log) need_arg "$@"; LOG=$2; shift ;;
	--accel) need_arg "$@"; ACCEL=$2; shift ;;
	-v | --verbose) VERBOSE=1 ;;
	-h | --help) usage; exit 0 ;;
	run | verify) [ -z "$MODE" ] || { usage >&2; exit 2; }; MODE=$1 ;;
	*) echo "openiscsi-vm: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
bad_usage() { echo "openiscsi-vm: $*" >&2; usage >&2; exit 2; }
[ -n "$MODE" ] || bad_usage "say run or verify"
[[ $PORT =~ ^[0-9]+$ ]] && ((PORT > 0 && PORT < 65536)) || bad_usage "--port PORT is required"
[ -n "$IQN" ] || bad_usage "--target IQN is required"
[[ $TIMEOUT =~ ^[0-9]+$ ]] && ((TIMEOUT >= 60)) || bad_usage "--timeout must be at least 60"
[[ $DATA =~ ^[0-9]+\ [0-9]+\ [0-9]+\ [0-9]+$ ]] || bad_usage "--data needs four numbers"
[ -z "$LUN" ] || [[ $LUN =~ ^[0-9]+$ ]] || bad_usage "--lun must be a number"
[ -z "$CHAP_USER" ] || [ -n "$CHAP_SECRET" ] || bad_usage "--chap-user needs --chap-secret"
[ -z "$MUTUAL_USER" ] || { [ -n "$MUTUAL_SECRET" ] && [ -n "$CHAP_USER" ]; } || bad_usage "mutual CHAP needs --mutual-secret and CHAP"
((BAD_CHAP == 0)) || [ -n "$CHAP_USER" ] || bad_usage "--bad-chap needs CHAP"
((DISCOVERY_CHAP == 0)) || [ -n "$CHAP_USER" ] || bad_usage "--discovery-chap needs CHAP"
[ "$MODE" = run ] || [ -s "$SUMS" ] || bad_usage "verify needs --sums FILE from a run"
case $ACCEL in kvm | tcg | auto) ;; *) bad_usage "--accel kvm|tcg|auto" ;; esac
PORTAL=10.0.2.2:$PORT
ADVERTISED=${ADVERTISED:-$PORTAL}

T0=$SECONDS
RESULT_PRINTED=0
# result_fail STEP MSG: a failure seen on the host side.
result_fail() {
	echo "RESULT FAIL step=$1 msg=\"$2\" mode=$MODE wall=$((SECONDS - T0))s"
	RESULT_PRINTED=1
	exit 1
}

CACHE=$VFA_CACHE/openiscsi-vm
GUEST_DEBS=$VFA_CACHE/debs/guest
INIT=$VFA_SCRIPTS/openiscsi-vm/init.sh
for c in qemu-system-x86_64 cpio gzip depmod dpkg-deb ldd mke2fs e2fsck fstrim timeout flock; do
	command -v "$c" >/dev/null 2>&1 || result_fail setup "'$c' not found; run scripts/deps.sh"
done
[ -r "$INIT" ] || result_fail setup "missing $INIT"

# ---------------------------------------------------------------------------- initramfs
# Modules the guest loads, by name; their dependencies come from depmod.
GUEST_MODULES="crc32c_generic virtio_pci virtio_net sd_mod ext4 iscsi_tcp"

# build_initramfs DIR KEY: kernel + initramfs into $CACHE/{vmlinuz,initrd}-KEY.
build_initramfs() {
	local w=$1 key=$2 X=$1/x R=$1/root kv M
	mkdir -p "$X" "$R"
	local d
	for d in "$GUEST_DEBS"/*.deb; do dpkg-deb -x "$d" "$X" || return 1; done
	kv=$(ls "$X/lib/modules" | head -1)
	[ -n "$kv" ] && [ -f "$X/boot/vmlinuz-$kv" ] || { vfa_log "no kernel in the guest debs"; return 1; }
	M=$X/lib/modules/$kv
	depmod -b "$X" "$kv" || return 1

	# Load order: each module after everything it depends on.
	local order=() seen=" " m
	add_mod() {
		local name=${1//-/_} path deps dep
		case $seen in *" $name "*) return 0 ;; esac
		seen="$seen$name "
		path=$(awk -F: -v n="$name" '{ b = $1; sub(/.*\//, "", b); sub(/\.ko(\.[a-z]+)?$/, "", b); gsub(/-/, "_", b); if (b == n) { print; exit } }' "$M/modules.dep")
		if [ -z "$path" ]; then
			# Built into the kernel: nothing to load.
			grep -q "/${1}\.ko\$\|/${name}\.ko\$\|/${1//_/-}\.ko\$" "$M/modules.builtin" && return 0
			vfa_log "module $1 is neither a module nor built in"
			return 1
		fi
		deps=${path#*:}
		for dep in $deps; do
			dep=${dep##*/}
			dep=${dep%%.ko*}
			add_mod "$dep" || return 1
		done
		order+=("${path%%:*}")
	}
	for m in $GUEST_MODULES; do add_mod "$m" || return 1; done
	for m in "${order[@]}"; do
		mkdir -p "$R/lib/modules/$kv/${m%/*}"
		case $m in
		*.ko) cp "$M/$m" "$R/lib/modules/$kv/$m" ;;
		*.ko.xz) xz -dc "$M/$m" >"$R/lib/modules/$kv/${m%.xz}" ;;
		*) vfa_log "unsupported module file $m"; return 1 ;;
		esac
	done
	printf '%s\n' "${order[@]%.xz}" >"$R/etc-itest-modules"

	mkdir -p "$R"/{bin,sbin,etc/iscsi,etc/itest,lib/x86_64-linux-gnu,lib64}
	mv "$R/etc-itest-modules" "$R/etc/itest-modules"
	cp "$X/bin/busybox" "$R/bin/busybox"
	local b src
	for b in iscsid iscsiadm; do
		src=$(find "$X/sbin" "$X/usr/sbin" -name "$b" -type f 2>/dev/null | head -1)
		[ -n "$src" ] || { vfa_log "$b not in the open-iscsi deb"; return 1; }
		cp "$src" "$R/sbin/$b"
	done
	for b in mke2fs e2fsck fstrim; do cp "$(command -v "$b")" "$R/sbin/$b"; done
	ln -s mke2fs "$R/sbin/mkfs.ext4"
	cp /etc/mke2fs.conf "$R/etc/" 2>/dev/null || true
	# Shared libraries: the guest debs' own first, then the host's (same release).
	local lib
	for b in iscsid iscsiadm mke2fs e2fsck fstrim; do
		LD_LIBRARY_PATH=$X/lib/x86_64-linux-gnu:$X/usr/lib/x86_64-linux-gnu ldd "$R/sbin/$b" |
			awk '/not found/ { print "MISSING " $1; next } { for (i = 1; i <= NF; i++) if ($i ~ /^\//) print $i }'
	done | sort -u >"$w/libs"
	if grep -q '^MISSING' "$w/libs"; then
		vfa_log "unresolved libraries: $(grep '^MISSING' "$w/libs" | tr '\n' ' ')"
		return 1
	fi
	while read -r lib; do
		case $lib in
		*/ld-linux-x86-64.so.2) cp -L "$lib" "$R/lib64/ld-linux-x86-64.so.2" ;;
		*) cp -L "$lib" "$R/lib/x86_64-linux-gnu/${lib##*/}" ;;
		esac
	done <"$w/libs"
	cat >"$R/etc/iscsi/iscsid.conf" <<'EOF'
# Short timeouts: a test must fail quickly, not retry for minutes.
iscsid.startup = /sbin/iscsid
node.startup = manual
node.session.initial_login_retry_max = 2
node.conn[0].timeo.login_timeout = 15
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 10
node.session.timeo.replacement_timeout = 30
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 20
node.session.err_timeo.tgt_reset_timeout = 20
node.session.cmds_max = 128
node.session.queue_depth = 32
EOF
	echo 'root:x:0:0:root:/:/bin/sh' >"$R/etc/passwd"
	echo 'root:x:0:' >"$R/etc/group"
	cp "$INIT" "$R/init"
	chmod 755 "$R/init"
	(cd "$R" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$CACHE/initrd-$key.tmp" || return 1
	cp "$X/boot/vmlinuz-$kv" "$CACHE/vmlinuz-$key.tmp"
	mv "$CACHE/vmlinuz-$key.tmp" "$CACHE/vmlinuz-$key"
	mv "$CACHE/initrd-$key.tmp" "$CACHE/initrd-$key"
	vfa_log "initramfs: kernel $kv, ${#order[@]} modules, $(du -h "$CACHE/initrd-$key" | cut -f1) compressed"
}

mkdir -p "$CACHE"
if ! compgen -G "$GUEST_DEBS/open-iscsi_*.deb" >/dev/null || [ ! -s "$GUEST_DEBS/KERNEL" ]; then
	"$VFA_SCRIPTS/deps.sh" --guest >&2 || result_fail setup "guest packages are not cached and could not be downloaded (scripts/deps.sh --guest)"
fi
KEY=$({
	cat "$INIT" "$GUEST_DEBS/SHA256SUMS"
	sed -n '/^GUEST_MODULES=/p; /^build_initramfs() {/,/^}/p' "$0"
	for b in mke2fs e2fsck fstrim; do sha256sum "$(command -v $b)"; done
} | sha256sum | cut -c1-16)
KERNEL=$CACHE/vmlinuz-$KEY
INITRD=$CACHE/initrd-$KEY
exec 8>"$CACHE/.lock"
flock -w 300 8 || result_fail setup "timed out waiting for $CACHE/.lock"
if [ ! -s "$INITRD" ] || [ ! -s "$KERNEL" ]; then
	t=$SECONDS
	vfa_log "building the guest initramfs ($KEY)"
	BUILD=$(mktemp -d "$CACHE/.build.XXXXXX")
	if ! build_initramfs "$BUILD" "$KEY" >&2; then
		rm -rf "$BUILD"
		result_fail setup "building the initramfs failed"
	fi
	rm -rf "$BUILD"
	find "$CACHE" -maxdepth 1 \( -name 'initrd-*' -o -name 'vmlinuz-*' \) ! -name "*-$KEY" -delete
	vfa_log "initramfs built in $((SECONDS - t))s"
fi
flock -u 8

# ---------------------------------------------------------------------------- the run
vfa_wait_port "$PORT" 3 || result_fail setup "nothing listens on 127.0.0.1:$PORT"

RUN=$(mktemp -d /tmp/openiscsi-vm.XXXXXX)
QPID=""
cleanup() {
	local rc=$?
	# QPID is timeout(1): it passes SIGTERM on to QEMU and SIGKILLs it 5 s later.
	if [ -n "$QPID" ] && kill -0 "$QPID" 2>/dev/null; then
		kill "$QPID" 2>/dev/null || true
		local i=0
		while kill -0 "$QPID" 2>/dev/null && ((i < 80)); do sleep 0.1; i=$((i + 1)); done
		if kill -0 "$QPID" 2>/dev/null; then
			pkill -9 -P "$QPID" 2>/dev/null || true
			kill -9 "$QPID" 2>/dev/null || true
		fi
	fi
	rm -rf "$RUN"
	if ((rc != 0 && RESULT_PRINTED == 0)); then
		echo "RESULT FAIL step=host msg=\"openiscsi-vm.sh exited with status $rc\" mode=$MODE"
	fi
}
trap cleanup EXIT
trap 'result_fail host "interrupted"' INT TERM

# Per-run settings: one file each in /etc/itest, appended to the cached
# initramfs as a second cpio archive (the kernel unpacks both).
C=$RUN/cfg/etc/itest
mkdir -p "$C"
put() { printf '%s\n' "$2" >"$C/$1"; }
put portal "$PORTAL"
put advertised "$ADVERTISED"
put iqn "$IQN"
put initiator "$INITIATOR"
put chap_user "$CHAP_USER"
put chap_secret "$CHAP_SECRET"
put mutual_user "$MUTUAL_USER"
put mutual_secret "$MUTUAL_SECRET"
put discovery_chap "$DISCOVERY_CHAP"
put bad_chap "$BAD_CHAP"
put vendor "$VENDOR"
put model "$MODEL"
put wwid_prefix "$WWID_PREFIX"
put lun "$LUN"
put data "$DATA"
put trim "$TRIM"
put watchdog "$((TIMEOUT - 20))"
[ "$MODE" = verify ] && grep -E '^[0-9a-f]{64}  ' "$SUMS" >"$C/sums"
(cd "$RUN/cfg" && find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -1) >"$RUN/cfg.cpio.gz"
cat "$INITRD" "$RUN/cfg.cpio.gz" >"$RUN/initrd"

# auto: QEMU falls back to the next -accel when KVM cannot start.
case $ACCEL in
auto) accel_args=(-accel kvm -accel tcg) ;;
*) accel_args=(-accel "$ACCEL") ;;
esac
CONSOLE=$RUN/console.log
RESULTS=$RUN/results.log
: >"$CONSOLE"
: >"$RESULTS"
vfa_log "$MODE: guest -> $PORTAL $IQN"
timeout -k 5 "$TIMEOUT" qemu-system-x86_64 "${accel_args[@]}" -M q35 -cpu max -m 768 -smp 1 \
	-nodefaults -no-user-config -display none -monitor none -no-reboot \
	-chardev "file,id=con,path=$CONSOLE" -serial chardev:con \
	-chardev "file,id=res,path=$RESULTS" -serial chardev:res \
	-kernel "$KERNEL" -initrd "$RUN/initrd" \
	-append "console=ttyS0 loglevel=4 panic=-1 itest.mode=$MODE" \
	-netdev user,id=n0 -device virtio-net-pci,netdev=n0 \
	</dev/null >"$RUN/qemu.out" 2>&1 &
QPID=$!
if ((VERBOSE)); then
	tail -n +1 -f "$CONSOLE" --pid="$QPID" >&2 &
fi
QRC=0
wait "$QPID" || QRC=$?
QPID=""
WALL=$((SECONDS - T0))
accel=$ACCEL
if [ "$accel" = auto ]; then
	accel=kvm
	grep -q 'failed to initialize kvm' "$RUN/qemu.out" && accel=tcg
fi

save_log() {
	local dst=${LOG:-$VFA_CACHE/openiscsi-vm/last-failure-console.log}
	cp "$CONSOLE" "$dst" 2>/dev/null && vfa_log "guest console: $dst"
}
# The first RESULT counts (a watchdog may add one while a failure powers off).
RESULT=$(grep -a '^RESULT ' "$RESULTS" | head -1 | tr -d '\r' || true)
if [ -z "$RESULT" ]; then
	save_log
	tail -30 "$CONSOLE" >&2 || true
	tail -5 "$RUN/qemu.out" >&2 || true
	if ((QRC == 124 || QRC == 137)); then
		result_fail vm "QEMU killed after ${TIMEOUT}s without a result"
	fi
	result_fail vm "the guest gave no result (QEMU exit $QRC; kernel panic?)"
fi
grep -a '^INFO ' "$RESULTS" | tr -d '\r' | sed 's/^/[openiscsi-vm] /' >&2 || true
case $RESULT in
"RESULT PASS"*)
	if [ "$MODE" = run ] && [ -n "$SUMS" ]; then
		grep -a '^SUM ' "$RESULTS" | tr -d '\r' | cut -c5- >"$SUMS.tmp" && mv "$SUMS.tmp" "$SUMS"
	fi
	[ -n "$LOG" ] && cp "$CONSOLE" "$LOG"
	echo "$RESULT wall=${WALL}s accel=$accel"
	RESULT_PRINTED=1
	exit 0
	;;
*)
	save_log
	grep -a -A30 'itest: FAIL' "$CONSOLE" | tail -30 >&2 || true
	echo "$RESULT wall=${WALL}s accel=$accel"
	RESULT_PRINTED=1
	exit 1
	;;
esac
