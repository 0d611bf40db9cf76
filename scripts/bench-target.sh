#!/bin/bash
# bench-target.sh: the standard workloads against one iSCSI LUN, with
# tools/iscsi-bench, three rounds each, medians as a markdown table.
#
#   4 KiB random write, QD32, unique incompressible data   (timed rounds)
#   4 KiB random read, QD32, over a span prefilled with the reference image
#   1 MiB sequential write, QD8, of the reference image     (one pass a round)
#   1 MiB sequential read, QD8, of what was written, checked byte for byte
#
# The LUN's contents are overwritten. The median is the round with the median
# IOPS (its whole row is shown); errors are summed over all rounds, and any
# error makes the exit status non-zero. Rounds 2 and 3 of the sequential
# write rewrite identical data: a deduplicating target sees duplicates there.
set -euo pipefail
VFA_PROG=bench-target
. "$(dirname "$0")/lib.sh"

usage() {
	cat <<EOF
usage: scripts/bench-target.sh [options] iscsi://[user%secret@]127.0.0.1:PORT/IQN/LUN
  --span SIZE        random I/O span, prefilled before the reads   [1G]
  --seconds N        length of a timed round                      [10]
  --rounds N         rounds per workload                           [3]
  --image FILE       data for the sequential workloads             [reference image]
  --initiator IQN    initiator name                                [iqn.2024-01.org.vfa:bench]
  --only LIST        comma-separated subset of randwrite,randread,seqwrite,seqread
  --raw FILE         also write every round's iscsi-bench line to FILE
SIZE takes k/m/g suffixes. The sequential workloads cover min(image, LUN).
EOF
}

SPAN=1G SECS=10 ROUNDS=3 IMAGE="" INITIATOR=iqn.2024-01.org.vfa:bench ONLY=randwrite,randread,seqwrite,seqread RAW="" URL=""
while (($#)); do
	case $1 in
	--span) SPAN=$2; shift ;;
	--seconds) SECS=$2; shift ;;
	--rounds) ROUNDS=$2; shift ;;
	--image) IMAGE=$2; shift ;;
	--initiator) INITIATOR=$2; shift ;;
	--only) ONLY=$2; shift ;;
	--raw) RAW=$2; shift ;;
	-h | --help) usage; exit 0 ;;
	iscsi://*) URL=$1 ;;
	*) echo "bench-target: unknown argument: $1" >&2; usage >&2; exit 2 ;;
	esac
	shift
done
[ -n "$URL" ] || { usage >&2; exit 2; }
[[ $SECS =~ ^[0-9]+$ ]] && ((SECS > 0)) || vfa_die "--seconds must be a positive integer"
[[ $ROUNDS =~ ^[0-9]+$ ]] && ((ROUNDS > 0 && ROUNDS <= 20)) || vfa_die "--rounds must be 1..20"
vfa_need iscsi-readcapacity16 numfmt
SHOWN_URL=$(sed -E 's#//[^@/]*@#//***@#' <<<"$URL")

BENCH=$(vfa_iscsi_bench)
if [ -z "$IMAGE" ]; then
	IMAGE=$("$VFA_SCRIPTS/make-refimage.sh") || vfa_die "no reference image (scripts/make-refimage.sh failed)"
fi
[ -s "$IMAGE" ] || vfa_die "image $IMAGE is missing or empty"

span_bytes=$(numfmt --from=iec "${SPAN^^}") || vfa_die "bad --span $SPAN"
# iscsi-readcapacity16 takes CHAP from the URL too.
lun_bytes=$(iscsi-readcapacity16 -s -i "$INITIATOR" "$URL" 2>&1) || vfa_die "READ CAPACITY failed: $lun_bytes"
[[ $lun_bytes =~ ^[0-9]+$ ]] || vfa_die "unexpected READ CAPACITY output: $lun_bytes"
MIB=1048576
image_bytes=$(stat -L -c %s "$IMAGE")
seq_bytes=$((image_bytes < lun_bytes ? image_bytes : lun_bytes))
seq_bytes=$((seq_bytes / MIB * MIB))
((span_bytes <= lun_bytes)) || span_bytes=$((lun_bytes / MIB * MIB))
((span_bytes >= MIB && seq_bytes >= MIB)) || vfa_die "the LUN ($lun_bytes bytes) is too small"
pass_limit=900 # seconds for one sequential pass before it counts as failed

TMP=$(mktemp -d /tmp/bench-target.XXXXXX)
trap 'rm -rf "$TMP"' EXIT
FAILED=0

# bench NAME ARGS...: one iscsi-bench run, its line appended to $TMP/NAME.
bench() {
	local name=$1 line rc=0
	shift
	line=$("$BENCH" -i "$INITIATOR" "$@" "$URL" 2>"$TMP/err") || rc=$?
	if ((rc != 0)); then
		FAILED=1
		vfa_log "$name: iscsi-bench exit $rc: $(head -3 "$TMP/err" | tr '\n' ' ')"
	fi
	if [ -n "$line" ]; then
		printf '%s\n' "$line" >>"$TMP/$name"
		[ -z "$RAW" ] || printf '%s\t%s\n' "$name" "$line" >>"$RAW"
		vfa_log "$name: $line"
	elif ((rc != 0)); then
		# No result line: record a failed round with an error count of 1.
		printf 'failed\t0\t0\t0\t0\t0\t0\t0\t1\n' >>"$TMP/$name"
	fi
}

wanted() { [[ ,$ONLY, == *,$1,* ]]; }
t0=$SECONDS
vfa_log "target $SHOWN_URL: LUN $(numfmt --to=iec "$lun_bytes"), span $(numfmt --to=iec "$span_bytes"), sequential $(numfmt --to=iec "$seq_bytes") of $IMAGE"
if wanted randwrite; then
	for r in $(seq "$ROUNDS"); do bench randwrite -m randwrite -b 4k -q 32 -t "$SECS" -s "$span_bytes" -d random -S "$r"; done
fi
if wanted randread; then
	bench prefill -m write -b 1m -q 8 -1 -t "$pass_limit" -s "$span_bytes" -d "$IMAGE"
	for r in $(seq "$ROUNDS"); do bench randread -m randread -b 4k -q 32 -t "$SECS" -s "$span_bytes" -S "$r"; done
fi
if wanted seqwrite; then
	for r in $(seq "$ROUNDS"); do bench seqwrite -m write -b 1m -q 8 -1 -t "$pass_limit" -s "$seq_bytes" -d "$IMAGE"; done
fi
if wanted seqread; then
	if ! wanted seqwrite; then
		bench prefill-seq -m write -b 1m -q 8 -1 -t "$pass_limit" -s "$seq_bytes" -d "$IMAGE"
	fi
	for r in $(seq "$ROUNDS"); do bench seqread -m read -b 1m -q 8 -1 -t "$pass_limit" -s "$seq_bytes" -d "$IMAGE" -V; done
fi

# row NAME LABEL: the median-IOPS round of NAME, errors summed.
row() {
	local f=$TMP/$1
	[ -s "$f" ] || return 0
	sort -t$'\t' -k5,5n "$f" | awk -F'\t' -v label="$2" -v n="$(wc -l <"$f")" '
		{ err += $9; rows[NR] = $0 }
		END {
			split(rows[int((n + 1) / 2)], m, "\t")
			printf "| %s | %d | %.0f | %.1f | %.0f | %.0f | %d |\n", label, n, m[5], m[6], m[7], m[8], err
		}'
}
echo
echo "iscsi-bench against \`$SHOWN_URL\` ($(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)):"
echo "random span $(numfmt --to=iec "$span_bytes"), ${SECS}s rounds; sequential passes of $(numfmt --to=iec "$seq_bytes") of $(basename "$IMAGE"); medians by IOPS"
echo
echo "| workload | rounds | IOPS | MB/s | avg lat µs | p99 lat µs | errors |"
echo "|---|---|---|---|---|---|---|"
row randwrite "4 KiB randwrite QD32, unique data"
row randread "4 KiB randread QD32, prefilled span"
row seqwrite "1 MiB seq write QD8, reference image"
row seqread "1 MiB seq read QD8, verified"
echo
vfa_log "done in $((SECONDS - t0))s"
if ((FAILED)) || cat "$TMP"/* 2>/dev/null | awk -F'\t' '$9 > 0 { bad = 1 } END { exit !bad }'; then
	vfa_log "FAILED: some rounds reported errors (see above)"
	exit 1
fi
