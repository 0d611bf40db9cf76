#!/bin/bash
# bench-compare.sh: the figures of docs/PERFORMANCE.md, vfa and tgtd side by
# side in one session on the same machine and data.
#
#   scripts/systest/bench-compare.sh [--out DIR] [--dir DIR] BIN [bench-target options]
#
# 1. A fresh array with the default geometry (vfa init: 8 SSDs of 4 GiB as
#    sparse files, 256 MiB NVRAM; full reduction and encryption; nothing is
#    tunable here), in DIR (default: a new directory in /tmp).
# 2. vfa run on a free 127.0.0.1 port. With the SSH CLI: host "bench" with
#    bench-target.sh's initiator name and a 4 GiB volume at LUN 1 (the size of
#    tgtd's file); without it, the 10 GiB demo volume.
# 3. scripts/bench-target.sh against it (the four workloads, three rounds,
#    medians), then vfa stops (SIGTERM).
# 4. scripts/bench-tgtd.sh: the same workloads against tgtd with a 4 GiB
#    plain file.
# 5. Both tables and the ratios vfa / tgtd, with the load average before and
#    after each half. Raw iscsi-bench lines go to DIR/*.raw (--out).
set -euo pipefail
# shellcheck disable=SC2034 # read by lib.sh
VFA_PROG=bench-compare
# shellcheck source=/dev/null
. "$(dirname "$0")/../lib.sh"

OUT="" DATA="" BIN="" PASS=()
while (($#)); do
	case $1 in
	--out) OUT=$2; shift ;;
	--dir) DATA=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) if [ -z "$BIN" ]; then BIN=$1; else PASS+=("$1"); fi ;;
	esac
	shift
done
{ [ -n "$BIN" ] && [ -x "$BIN" ]; } || vfa_die "usage: bench-compare.sh [--out DIR] [--dir DIR] BIN [bench-target options]"
vfa_need iscsi-readcapacity16 tgtd ssh ssh-keygen

WORKD=$(mktemp -d /tmp/bench-compare.XXXXXX)
OUT=${OUT:-$WORKD}
mkdir -p "$OUT"
DATA=${DATA:-$WORKD/array}
VPID=""
cleanup() {
	if [ -n "$VPID" ] && kill -0 "$VPID" 2>/dev/null; then
		kill -TERM "$VPID" 2>/dev/null || true
		wait "$VPID" 2>/dev/null || true
	fi
	rm -rf "$WORKD/array" "$WORKD/key" "$WORKD/key.pub"
	[ "$OUT" = "$WORKD" ] || rm -rf "$WORKD"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
[ ! -e "$DATA" ] || vfa_die "$DATA exists: the array must be fresh"

load() { cut -d' ' -f1-3 /proc/loadavg; }
port=""
for _ in $(seq 50); do
	p=$((20000 + RANDOM % 40000))
	vfa_port_free "$p" && { port=$p; break; }
done
[ -n "$port" ] || vfa_die "no free port"

ssh-keygen -q -t ed25519 -N '' -C bench -f "$WORKD/key"
init_args=(init --dir "$DATA")
"$BIN" init --help | grep -q -- '--admin-key ' && init_args+=(--admin-key "$WORKD/key.pub")
"$BIN" "${init_args[@]}" >"$OUT/vfa-init.out"
run_args=(run --dir "$DATA" --iscsi "127.0.0.1:$port")
has_ssh=0
if "$BIN" run --help | grep -q -- '--ssh '; then
	has_ssh=1
	run_args+=(--ssh 127.0.0.1:0)
else
	run_args+=(--demo)
fi
"$BIN" "${run_args[@]}" >"$OUT/vfa-run.out" 2>"$OUT/vfa-run.log" &
VPID=$!
for _ in $(seq 300); do
	grep -q '^ *listening on ' "$OUT/vfa-run.out" 2>/dev/null && break
	kill -0 "$VPID" 2>/dev/null || vfa_die "vfa run exited: $(tail -3 "$OUT/vfa-run.log")"
	sleep 0.1
done
IQN=$(sed -n 's/^iSCSI target \(iqn\.[^ ]*\)$/\1/p' "$OUT/vfa-run.out")
if ((has_ssh)); then
	sport=""
	for _ in $(seq 100); do
		sport=$(sed -n 's/^management: ssh -p \([0-9]*\) .*/\1/p' "$OUT/vfa-run.out")
		[ -n "$sport" ] && break
		sleep 0.1
	done
	pure() {
		ssh -i "$WORKD/key" -p "$sport" -o BatchMode=yes -o StrictHostKeyChecking=no \
			-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR pureuser@127.0.0.1 "$@" </dev/null
	}
	pure purehost create --iqnlist iqn.2024-01.org.vfa:bench bench >/dev/null
	pure purevol create --size 4G bench >/dev/null
	pure purehost connect --vol bench bench >/dev/null
	volume="4 GiB volume (purevol create --size 4G)"
else
	volume="10 GiB demo volume"
fi
vfa_log "vfa: fresh array $(head -1 "$OUT/vfa-init.out" | sed 's/^created array //'), $volume, $IQN on 127.0.0.1:$port"

{
	echo "vfa $(git -C "$VFA_ROOT" rev-parse --short HEAD 2>/dev/null || echo '?') ($volume), load before $(load)"
	"$VFA_SCRIPTS/bench-target.sh" --raw "$OUT/vfa.raw" "${PASS[@]}" "iscsi://127.0.0.1:$port/$IQN/1" || echo "(bench-target.sh reported errors)"
	echo "load after $(load)"
} >"$OUT/vfa.md" 2>"$OUT/vfa.err"
kill -TERM "$VPID"
wait "$VPID" || vfa_log "vfa exited with status $?"
VPID=""
{
	echo "tgtd, load before $(load)"
	"$VFA_SCRIPTS/bench-tgtd.sh" --raw "$OUT/tgtd.raw" "${PASS[@]}" || echo "(bench-tgtd.sh reported errors)"
	echo "load after $(load)"
} >"$OUT/tgtd.md" 2>"$OUT/tgtd.err"

cat "$OUT/vfa.md" "$OUT/tgtd.md"
# Ratios of the medians (IOPS column; MB/s has the same ratio per workload).
echo
echo "| workload | vfa | tgtd | vfa / tgtd | target |"
echo "|---|---|---|---|---|"
awk -F'|' '
	FNR == 1 { f++ }
	/^\| [0-9]/ || /^\| (4 KiB|1 MiB)/ {
		name = $2; gsub(/^ +| +$/, "", name)
		iops[f, name] = $4 + 0; mbs[f, name] = $5 + 0; names[name] = 1; order[++n] = name
	}
	END {
		target["4 KiB randwrite QD32, unique data"] = "1.0"
		target["4 KiB randread QD32, prefilled span"] = "1.0"
		target["1 MiB seq write QD8, reference image"] = "1.5"
		target["1 MiB seq read QD8, verified"] = "1.5"
		for (i = 1; i <= n; i++) {
			name = order[i]
			if (seen[name]++) continue
			unit = (name ~ /^1 MiB/) ? "MB/s" : "IOPS"
			a = (unit == "MB/s") ? mbs[1, name] : iops[1, name]
			b = (unit == "MB/s") ? mbs[2, name] : iops[2, name]
			printf "| %s | %s %s | %s %s | %s | >= %s |\n", name, a, unit, b, unit, (b > 0 ? sprintf("%.2f", a / b) : "-"), target[name]
		}
	}' "$OUT/vfa.md" "$OUT/tgtd.md"
vfa_log "raw lines and logs in $OUT"
