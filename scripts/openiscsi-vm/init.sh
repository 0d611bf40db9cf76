#!/bin/busybox sh
# /init of the open-iscsi test guest (scripts/openiscsi-vm.sh builds it into
# the initramfs). It runs one scenario against an iSCSI target reached
# through QEMU user networking and powers the VM off.
#
# Input: itest.mode=run|verify on the kernel command line; everything else as
# one file per setting in /etc/itest/ (appended to the initramfs per run):
#   portal advertised iqn initiator chap_user chap_secret mutual_user
#   mutual_secret discovery_chap bad_chap vendor model wwid_prefix lun data
#   trim watchdog sums (verify: the sha256sum lines to check)
# Output: machine-readable lines on /dev/ttyS1 (the console, ttyS0, carries
# the kernel log and a human trace):
#   SUM <sha256>  <path>          (run mode: what was written)
#   INFO <key>=<value>
#   RESULT PASS mode=... phases="step=ms ..."
#   RESULT FAIL step=<step> msg="<why>" phases="..."
export PATH=/sbin:/bin
/bin/busybox mkdir -p /proc /sys /dev /run /tmp /mnt/t
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /run/lock/iscsi /var/lock /var/run
ln -sf /proc/self/mounts /etc/mtab

OUT=/dev/ttyS1
out() { echo "$*" >"$OUT"; echo "itest> $*"; }
ms() { awk '{ printf "%d", $1 * 1000 }' /proc/uptime; }
T_STEP=$(ms)
STEP=boot
PHASES="kernel=$T_STEP"
echo "$STEP" >/run/step
echo "$PHASES" >/run/phases
step() {
	t=$(ms)
	PHASES="$PHASES $STEP=$((t - T_STEP))"
	T_STEP=$t
	STEP=$1
	echo "$1" >/run/step
	echo "$PHASES" >/run/phases
	echo "itest: --- $1"
}
# No sync: the results went out on the serial line already, the file system
# is unmounted on success, and a sync could hang on a failed disk.
halt_now() {
	poweroff -f
	sleep 60
}
fail() {
	t=$(ms)
	echo "itest: FAIL in $STEP: $*"
	dmesg | tail -25
	out "RESULT FAIL step=$STEP msg=\"$*\" phases=\"$PHASES $STEP=$((t - T_STEP))\""
	halt_now
}
conf() { cat "/etc/itest/$1" 2>/dev/null; }

MODE=run
for p in $(cat /proc/cmdline); do
	case $p in itest.mode=*) MODE=${p#*=} ;; esac
done
PORTAL=$(conf portal)
ADVERTISED=$(conf advertised)
IQN=$(conf iqn)
INITIATOR=$(conf initiator)
LUN=$(conf lun)
WATCHDOG=$(conf watchdog)
TRIM=$(conf trim)
read -r BIGN BIGMB SMALLN SMALLKB <<EOF
$(conf data)
EOF
[ -n "$PORTAL" ] && [ -n "$IQN" ] && [ -n "$INITIATOR" ] || fail "incomplete /etc/itest configuration"
case $MODE in run | verify) ;; *) fail "unknown itest.mode=$MODE" ;; esac
echo "itest: mode=$MODE target=$IQN portal=$PORTAL initiator=$INITIATOR kernel=$(uname -r)"

# The watchdog ends the run with a named step if anything hangs (an I/O that
# never completes cannot be killed, but poweroff -f still works).
(
	sleep "${WATCHDOG:-500}"
	out "RESULT FAIL step=$(cat /run/step) msg=\"guest watchdog expired after ${WATCHDOG:-500}s\" phases=\"$(cat /run/phases)\""
	echo "itest: watchdog expired in step $(cat /run/step)"
	dmesg | tail -25
	halt_now
) &

# ---- kernel modules -----------------------------------------------------------
step modules
KV=$(uname -r)
for m in $(cat /etc/itest-modules); do
	insmod "/lib/modules/$KV/$m" || fail "insmod $m"
done

# ---- network: QEMU user networking, the host's 127.0.0.1 is 10.0.2.2 ------------
step network
ip link set lo up
ip link set eth0 up || fail "no eth0"
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2
i=0
until [ "$(cat /sys/class/net/eth0/carrier 2>/dev/null)" = 1 ]; do
	i=$((i + 1)); [ $i -gt 100 ] && fail "eth0 has no carrier"
	sleep 0.1
done

# ---- iscsid ---------------------------------------------------------------------
step iscsid
mkdir -p /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces
echo "InitiatorName=$INITIATOR" >/etc/iscsi/initiatorname.iscsi
iscsid || fail "iscsid did not start"
i=0
until [ -S /run/iscsid.sock ] || iscsiadm -m session >/dev/null 2>&1 || [ -f /run/iscsid.pid ]; do
	i=$((i + 1)); [ $i -gt 50 ] && fail "iscsid not ready"
	sleep 0.1
done

# ---- SendTargets discovery --------------------------------------------------------
# The target must answer with a TargetAddress this guest can reach: the
# configured portal, not its bind address.
step discovery
iscsiadm -m discoverydb -t sendtargets -p "$PORTAL" -o new >/dev/null || fail "discoverydb new"
if [ "$(conf discovery_chap)" = 1 ]; then
	for kv in "discovery.sendtargets.auth.authmethod=CHAP" \
		"discovery.sendtargets.auth.username=$(conf chap_user)" \
		"discovery.sendtargets.auth.password=$(conf chap_secret)"; do
		iscsiadm -m discoverydb -t sendtargets -p "$PORTAL" -o update -n "${kv%%=*}" -v "${kv#*=}" >/dev/null ||
			fail "discoverydb update ${kv%%=*}"
	done
	if [ -n "$(conf mutual_user)" ]; then
		for kv in "discovery.sendtargets.auth.username_in=$(conf mutual_user)" \
			"discovery.sendtargets.auth.password_in=$(conf mutual_secret)"; do
			iscsiadm -m discoverydb -t sendtargets -p "$PORTAL" -o update -n "${kv%%=*}" -v "${kv#*=}" >/dev/null ||
				fail "discoverydb update ${kv%%=*}"
		done
	fi
fi
iscsiadm -m discoverydb -t sendtargets -p "$PORTAL" --discover >/tmp/disc 2>&1
rc=$?
cat /tmp/disc
[ $rc -eq 0 ] || fail "SendTargets discovery failed (rc=$rc): $(grep 'iscsiadm:' /tmp/disc | tail -1)"
# Lines look like "10.0.2.2:3260,1 iqn.example:target".
FOUND=$(awk -v t="$IQN" '$2 == t { sub(/,[0-9]+$/, "", $1); print $1 }' /tmp/disc)
[ -n "$FOUND" ] || fail "target $IQN not in the SendTargets answer"
out "INFO discovered=$(echo $FOUND | tr ' ' ',')"
echo "$FOUND" | grep -qxF "$ADVERTISED" || fail "TargetAddress is $(echo $FOUND | tr ' ' ','), expected $ADVERTISED"
# Log in through the discovered record when it is the reachable portal (the
# real path); a target told to advertise something else gets a static record.
if [ "$ADVERTISED" != "$PORTAL" ]; then
	iscsiadm -m node -o delete >/dev/null 2>&1
	iscsiadm -m node -o new -T "$IQN" -p "$PORTAL" >/dev/null || fail "static node record"
fi
iscsiadm -m node -T "$IQN" -p "$PORTAL" >/dev/null 2>&1 || fail "no node record for $IQN at $PORTAL"

node_set() { iscsiadm -m node -T "$IQN" -p "$PORTAL" -o update -n "$1" -v "$2" >/dev/null || fail "node update $1"; }
set_chap() { # secret
	if [ -n "$(conf chap_user)" ]; then
		node_set node.session.auth.authmethod CHAP
		node_set node.session.auth.username "$(conf chap_user)"
		node_set node.session.auth.password "$1"
		if [ -n "$(conf mutual_user)" ]; then
			node_set node.session.auth.username_in "$(conf mutual_user)"
			node_set node.session.auth.password_in "$(conf mutual_secret)"
		fi
	fi
}
no_session() { ! iscsiadm -m session >/dev/null 2>&1; }

# ---- a wrong CHAP secret must be refused ---------------------------------------------
if [ "$(conf bad_chap)" = 1 ]; then
	step bad_chap
	set_chap "wrong-$(conf chap_secret)-wrong"
	if iscsiadm -m node -T "$IQN" -p "$PORTAL" -l >/tmp/bad 2>&1; then
		cat /tmp/bad
		fail "login with a wrong CHAP secret succeeded"
	fi
	cat /tmp/bad
	no_session || fail "a session exists after the refused login"
fi

# ---- login ------------------------------------------------------------------------------
step login
set_chap "$(conf chap_secret)"
iscsiadm -m node -T "$IQN" -p "$PORTAL" -l >/tmp/login 2>&1
rc=$?
cat /tmp/login
[ $rc -eq 0 ] || fail "login failed (rc=$rc): $(grep 'iscsiadm:' /tmp/login | tail -1)"
iscsiadm -m session -P 1 2>&1 | head -30

# ---- the disk ------------------------------------------------------------------------------
step disk
DEV=""
LUNGLOB=${LUN:-*}
i=0
while :; do
	for b in /sys/class/iscsi_session/session*/device/target*/*:*:*:$LUNGLOB/block/*; do
		[ -e "$b" ] && DEV=/dev/${b##*/} && break
	done
	[ -n "$DEV" ] && [ -b "$DEV" ] && break
	DEV=""
	i=$((i + 1)); [ $i -gt 200 ] && fail "no block device for LUN ${LUN:-any} appeared"
	sleep 0.1
done
SYS=/sys/class/block/${DEV#/dev/}
VENDOR=$(sed 's/ *$//' "$SYS/device/vendor")
MODEL=$(sed 's/ *$//' "$SYS/device/model")
WWID=$(cat "$SYS/device/wwid" 2>/dev/null)
SECTORS=$(cat "$SYS/size")
out "INFO disk=$DEV sectors=$SECTORS vendor=$VENDOR model=$MODEL wwid=$WWID discard_max=$(cat /sys/block/${DEV#/dev/}/queue/discard_max_bytes)"
step identity
[ -z "$(conf vendor)" ] || [ "$VENDOR" = "$(conf vendor)" ] || fail "vendor is '$VENDOR', expected '$(conf vendor)'"
[ -z "$(conf model)" ] || [ "$MODEL" = "$(conf model)" ] || fail "model is '$MODEL', expected '$(conf model)'"
case $WWID in "$(conf wwid_prefix)"*) ;; *) fail "wwid is '$WWID', expected prefix '$(conf wwid_prefix)'" ;; esac

logout() {
	step logout
	iscsiadm -m node -T "$IQN" -p "$PORTAL" -u >/tmp/logout 2>&1 || { cat /tmp/logout; fail "logout failed"; }
	i=0
	until no_session && [ ! -b "$DEV" ]; do
		i=$((i + 1)); [ $i -gt 100 ] && fail "session or $DEV still present after logout"
		sleep 0.1
	done
}

verify_sums() { # what
	echo 3 >/proc/sys/vm/drop_caches
	mount -t ext4 -o ro "$DEV" /mnt/t || fail "read-only mount failed"
	(cd /mnt/t && sha256sum -c -s /tmp/sums) || {
		(cd /mnt/t && sha256sum -c /tmp/sums 2>&1 | grep -v ': OK$' | head -5)
		umount /mnt/t
		fail "sha256 mismatch $1"
	}
	umount /mnt/t || fail "umount failed"
}

if [ "$MODE" = verify ]; then
	cp /etc/itest/sums /tmp/sums 2>/dev/null
	[ -s /tmp/sums ] || fail "verify mode needs the sums of a run"
	step fsck
	e2fsck -fn "$DEV" >/tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck -fn found problems"; }
	step verify
	verify_sums "(verify)"
	NFILES=$(wc -l </tmp/sums)
	logout
	step done
	out "RESULT PASS mode=verify dev=$DEV sectors=$SECTORS files=$NFILES phases=\"$PHASES\""
	halt_now
fi

# ---- run: make a file system, fill it, trim, check, verify ----------------------------------
step mkfs
mkfs.ext4 -F -q -L itest "$DEV" || fail "mkfs.ext4 failed"
step mount
mount -t ext4 "$DEV" /mnt/t || fail "mount failed"
step write
D=/mnt/t/data
mkdir -p $D/big $D/small $D/dup $D/zero /mnt/t/scratch || fail "mkdir"
i=0
while [ $i -lt "$BIGN" ]; do
	head -c $((BIGMB * 1048576)) /dev/urandom >$D/big/f$i || fail "writing big file $i"
	i=$((i + 1))
done
i=0
while [ $i -lt "$SMALLN" ]; do
	d=$D/small/d$((i % 8))
	mkdir -p $d
	head -c $((SMALLKB * 1024)) /dev/urandom >$d/s$i || fail "writing small file $i"
	i=$((i + 1))
done
# A copy (dedups on the array) and zeros (pattern removal).
[ "$BIGN" -gt 0 ] && { cp $D/big/f0 $D/dup/f0 || fail "copying a file"; }
head -c 4194304 /dev/zero >$D/zero/z || fail "writing zeros"
# Scratch data deleted before fstrim, so the trim frees blocks that held data.
head -c 8388608 /dev/urandom >/mnt/t/scratch/s || fail "writing scratch"
sync || fail "sync"
DATA_KB=$(du -sk $D | cut -f1)
step checksum
(cd /mnt/t && find data -type f | sort | xargs sha256sum) >/tmp/sums || fail "sha256sum"
while read -r line; do echo "SUM $line" >"$OUT"; done </tmp/sums
NFILES=$(wc -l </tmp/sums)
step trim
rm -rf /mnt/t/scratch
sync
if [ "$TRIM" != skip ]; then
	fstrim -v /mnt/t >/tmp/trim 2>&1
	rc=$?
	cat /tmp/trim
	[ $rc -eq 0 ] || fail "fstrim failed (rc=$rc): $(tail -1 /tmp/trim)"
	out "INFO fstrim=$(tr ' ' '_' </tmp/trim)"
fi
step umount
umount /mnt/t || fail "umount failed"
step fsck
e2fsck -fn "$DEV" >/tmp/fsck 2>&1 || { cat /tmp/fsck; fail "e2fsck -fn found problems"; }
step verify
verify_sums "after remount"
logout
step done
out "RESULT PASS mode=run dev=$DEV sectors=$SECTORS files=$NFILES data_kb=$DATA_KB phases=\"$PHASES\""
halt_now
