#!/bin/bash
# openiscsi-vm-tgtd.sh: validate scripts/openiscsi-vm.sh end to end against
# Debian's tgtd, the way the project uses it against vfa: tgtd on
# 127.0.0.1:PORT with CHAP and mutual CHAP and the LUN's INQUIRY identity set
# to PURE / FlashArray; `run` (with a refused wrong-secret login first), then
# tgtd is stopped and started again on the same backing file, then `verify`.
# tgtd advertises its bind address (127.0.0.1:PORT) in SendTargets, which the
# guest cannot reach, so --advertised says so and the login goes to the
# reachable portal; vfa is expected to advertise 10.0.2.2:PORT instead.
#
# Prints each RESULT line and a summary; exits 0 only if every step passed.
set -euo pipefail
VFA_PROG=openiscsi-vm-tgtd
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/openiscsi-vm-tgtd.sh [--port PORT] [--repeat N] [openiscsi-vm options]
  --port PORT   tgtd port on 127.0.0.1       [3292]
  --repeat N    run+restart+verify N times   [1]
Other options (e.g. --data, --timeout, -v) go to scripts/openiscsi-vm.sh.
EOF
}
PORT=3292 REPEAT=1 PASS=()
while (($#)); do
	case $1 in
	--port) PORT=$2; shift ;;
	--repeat) REPEAT=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	*) PASS+=("$1") ;;
	esac
	shift
done
[[ $REPEAT =~ ^[0-9]+$ ]] && ((REPEAT > 0)) || vfa_die "--repeat must be a positive number"
vfa_port_free "$PORT" || vfa_die "127.0.0.1:$PORT is in use"

STATE=$(mktemp -d /tmp/openiscsi-vm-tgtd.XXXXXX)
trap '"$VFA_SCRIPTS/tgtd-target.sh" stop --state "$STATE" >/dev/null 2>&1 || true; rm -rf "$STATE"' EXIT
trap 'exit 130' INT TERM
USER_IN=vfa-initiator SECRET_IN=initiator-secret-0123
USER_OUT=vfa-target SECRET_OUT=target-secret-4567
tgt() {
	"$VFA_SCRIPTS/tgtd-target.sh" start --port "$PORT" --state "$STATE" --backing "$STATE/lun1.img" --size 1G \
		--vendor PURE --model FlashArray --chap-user "$USER_IN" --chap-secret "$SECRET_IN" \
		--mutual-user "$USER_OUT" --mutual-secret "$SECRET_OUT"
}
vm() {
	"$VFA_SCRIPTS/openiscsi-vm.sh" -p "$PORT" -t "$IQN" -u "$USER_IN" -s "$SECRET_IN" \
		--mutual-user "$USER_OUT" --mutual-secret "$SECRET_OUT" --advertised "127.0.0.1:$PORT" \
		--vendor PURE --model FlashArray --wwid-prefix naa. --sums "$STATE/sums" ${PASS[@]+"${PASS[@]}"} "$@"
}

fails=0
summary=()
for i in $(seq "$REPEAT"); do
	rm -f "$STATE/lun1.img" "$STATE/sums"
	IQN=$(tgt)
	t=$SECONDS
	if out=$(vm --bad-chap run); then :; else fails=$((fails + 1)); fi
	echo "$out"
	summary+=("round $i run: $((SECONDS - t))s ${out%% phases=*}")
	"$VFA_SCRIPTS/tgtd-target.sh" stop --state "$STATE"
	IQN=$(tgt)
	t=$SECONDS
	if [ -s "$STATE/sums" ]; then
		if out=$(vm verify); then :; else fails=$((fails + 1)); fi
	else
		out="RESULT FAIL step=verify msg=\"no sums from the run\""
		fails=$((fails + 1))
	fi
	echo "$out"
	summary+=("round $i verify after tgtd restart: $((SECONDS - t))s ${out%% phases=*}")
	"$VFA_SCRIPTS/tgtd-target.sh" stop --state "$STATE"
done
printf '%s\n' "${summary[@]}" >&2
((fails == 0)) || { vfa_log "$fails of $((2 * REPEAT)) runs failed"; exit 1; }
vfa_log "all $((2 * REPEAT)) runs passed"
