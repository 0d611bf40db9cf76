#!/bin/bash
# tgtd-target.sh: run Debian's tgtd as a reference iSCSI target for tests
# and benchmarks: one target, one LUN on a plain file, bound to 127.0.0.1 on a
# given port, optionally with CHAP (and mutual CHAP) and a chosen INQUIRY
# identity. Several can run side by side (each on its own port, with its own
# management socket and state directory).
#
#   scripts/tgtd-target.sh start --port P --state DIR [options]
#   scripts/tgtd-target.sh stop --state DIR
#
# start leaves tgtd running in the background and prints the target IQN;
# stop ends exactly that tgtd (its pid is in DIR/pid).
set -euo pipefail
VFA_PROG=tgtd-target
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/tgtd-target.sh start --port PORT --state DIR [options]
       scripts/tgtd-target.sh stop --state DIR
start options:
  --backing FILE          backing file              [DIR/lun1.img]
  --size SIZE             create/resize it to SIZE (truncate syntax: 4G) [4G]
  --iqn IQN               target name               [iqn.2024-01.org.vfa:tgtd-PORT]
  --chap-user U --chap-secret S       require CHAP from initiators
  --mutual-user U --mutual-secret S   and authenticate the target to them
  --vendor V --model M    INQUIRY vendor_id / product_id of the LUN
  --no-thin               no UNMAP support (default: thin_provisioning=1)
EOF
}

cmd=${1:-}
[ -n "$cmd" ] || { usage >&2; exit 2; }
shift
PORT="" STATE="" BACKING="" SIZE=4G IQN="" CHAP_USER="" CHAP_SECRET="" MUTUAL_USER="" MUTUAL_SECRET=""
VENDOR="" MODEL="" THIN=1
while (($#)); do
	case $1 in
	--port) PORT=$2; shift ;;
	--state) STATE=$2; shift ;;
	--backing) BACKING=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--iqn) IQN=$2; shift ;;
	--chap-user) CHAP_USER=$2; shift ;;
	--chap-secret) CHAP_SECRET=$2; shift ;;
	--mutual-user) MUTUAL_USER=$2; shift ;;
	--mutual-secret) MUTUAL_SECRET=$2; shift ;;
	--vendor) VENDOR=$2; shift ;;
	--model) MODEL=$2; shift ;;
	--no-thin) THIN=0 ;;
	-h | --help) usage; exit 0 ;;
	*) echo "tgtd-target: unknown argument $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[ -n "$STATE" ] || { echo "tgtd-target: --state DIR is required" >&2; exit 2; }

stop() {
	local pid
	pid=$(cat "$STATE/pid" 2>/dev/null || true)
	[ -n "$pid" ] || return 0
	local ctl
	ctl=$(cat "$STATE/ctl" 2>/dev/null || true)
	if kill -0 "$pid" 2>/dev/null && grep -q tgtd "/proc/$pid/comm" 2>/dev/null; then
		# tgtd ignores SIGTERM; it exits when told to delete the system.
		if [ -n "$ctl" ]; then
			tgtadm -C "$ctl" --lld iscsi --op delete --mode target --tid 1 --force >/dev/null 2>&1 || true
			tgtadm -C "$ctl" --op delete --mode system >/dev/null 2>&1 || true
		fi
		local i=0
		while kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null && ((i < 50)); do
			sleep 0.1
			i=$((i + 1))
		done
		if kill -0 "$pid" 2>/dev/null && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; then
			vfa_log "tgtd $pid did not exit when told to; killing it"
			kill -9 "$pid" 2>/dev/null || true
		fi
	fi
	[ -n "$ctl" ] && rm -f "/var/run/tgtd/socket.$ctl" "/var/run/tgtd/socket.$ctl.lock"
	rm -f "$STATE/pid" "$STATE/ctl"
}

case $cmd in
stop) stop; exit 0 ;;
start) ;;
*) usage >&2; exit 2 ;;
esac

[[ $PORT =~ ^[0-9]+$ ]] || { echo "tgtd-target: --port PORT is required" >&2; exit 2; }
[ -z "$CHAP_USER" ] || [ -n "$CHAP_SECRET" ] || vfa_die "--chap-user needs --chap-secret"
[ -z "$MUTUAL_USER" ] || [ -n "$MUTUAL_SECRET" ] || vfa_die "--mutual-user needs --mutual-secret"
vfa_need tgtd tgtadm truncate
[ "$(id -u)" = 0 ] || vfa_die "tgtd needs root"
mkdir -p "$STATE"
[ -s "$STATE/pid" ] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null && vfa_die "a tgtd from $STATE is already running (pid $(cat "$STATE/pid"))"
vfa_port_free "$PORT" || vfa_die "127.0.0.1:$PORT is already in use"
IQN=${IQN:-iqn.2024-01.org.vfa:tgtd-$PORT}
BACKING=${BACKING:-$STATE/lun1.img}
[ -e "$BACKING" ] || truncate -s "$SIZE" "$BACKING"
[ "$(stat -c %s "$BACKING")" -gt 0 ] || vfa_die "backing file $BACKING is empty"

# The management socket is /var/run/tgtd/socket.<control port>: use the iSCSI
# port so that side-by-side instances do not meet.
CTL=$PORT
tgtd -f -C "$CTL" --iscsi "portal=127.0.0.1:$PORT" >"$STATE/tgtd.log" 2>&1 &
echo $! >"$STATE/pid"
echo "$CTL" >"$STATE/ctl"
adm() { tgtadm -C "$CTL" --lld iscsi "$@" >>"$STATE/tgtadm.log" 2>&1 || { stop; tail -3 "$STATE/tgtadm.log" >&2; vfa_die "tgtadm $* failed"; }; }
i=0
until tgtadm -C "$CTL" --lld iscsi --op show --mode target >/dev/null 2>&1 && ! vfa_port_free "$PORT"; do
	i=$((i + 1))
	if ((i > 100)) || ! kill -0 "$(cat "$STATE/pid")" 2>/dev/null; then
		tail -5 "$STATE/tgtd.log" >&2
		stop
		vfa_die "tgtd did not come up on 127.0.0.1:$PORT"
	fi
	sleep 0.1
done
adm --op new --mode target --tid 1 -T "$IQN"
adm --op new --mode logicalunit --tid 1 --lun 1 -b "$BACKING"
params=thin_provisioning=$THIN
[ -n "$VENDOR" ] && params=$params,vendor_id=$VENDOR
[ -n "$MODEL" ] && params=$params,product_id=$MODEL
adm --op update --mode logicalunit --tid 1 --lun 1 --params "$params"
adm --op bind --mode target --tid 1 -I ALL
if [ -n "$CHAP_USER" ]; then
	adm --op new --mode account --user "$CHAP_USER" --password "$CHAP_SECRET"
	adm --op bind --mode account --tid 1 --user "$CHAP_USER"
fi
if [ -n "$MUTUAL_USER" ]; then
	adm --op new --mode account --user "$MUTUAL_USER" --password "$MUTUAL_SECRET"
	adm --op bind --mode account --tid 1 --user "$MUTUAL_USER" --outgoing
fi
printf '%s\n' "$IQN"
