#!/bin/bash
# bench-tgtd.sh: the reference numbers. Starts Debian's tgtd on
# 127.0.0.1:PORT with one LUN on a plain file (page-cached, write-back: tgtd
# acknowledges writes before they are durable), runs scripts/bench-target.sh
# against it, and stops it again.
set -euo pipefail
VFA_PROG=bench-tgtd
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/bench-tgtd.sh [--port PORT] [--size SIZE] [--dir DIR] [bench-target options]
  --port PORT   tgtd listens on 127.0.0.1:PORT          [3290]
  --size SIZE   backing file size (truncate syntax)     [4G]
  --dir DIR     where the backing file lives            [a new directory in /tmp]
Other options go to scripts/bench-target.sh (--span, --seconds, --rounds, ...).
EOF
}

PORT=3290 SIZE=4G DIR="" PASS=()
while (($#)); do
	case $1 in
	--port) PORT=$2; shift ;;
	--size) SIZE=$2; shift ;;
	--dir) DIR=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) PASS+=("$1") ;;
	esac
	shift
done
[[ $PORT =~ ^[0-9]+$ ]] || vfa_die "bad --port"
vfa_port_free "$PORT" || vfa_die "127.0.0.1:$PORT is in use"

STATE=$(mktemp -d /tmp/bench-tgtd.XXXXXX)
cleanup() {
	"$VFA_SCRIPTS/tgtd-target.sh" stop --state "$STATE" || true
	rm -rf "$STATE"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
BACKING=${DIR:+$DIR/tgtd-bench-$PORT.img}
BACKING=${BACKING:-$STATE/lun1.img}
[ -z "$DIR" ] || { mkdir -p "$DIR"; rm -f "$BACKING"; }
IQN=$("$VFA_SCRIPTS/tgtd-target.sh" start --port "$PORT" --state "$STATE" --backing "$BACKING" --size "$SIZE")
vfa_log "tgtd $(tgtd -V 2>/dev/null | head -1) on 127.0.0.1:$PORT, $SIZE file $BACKING"
rc=0
"$VFA_SCRIPTS/bench-target.sh" "${PASS[@]}" "iscsi://127.0.0.1:$PORT/$IQN/1" || rc=$?
[ -z "$DIR" ] || rm -f "$BACKING"
exit $rc
