#!/bin/bash
# rdl-drill.sh BIN: the Rapid Data Locking drill, end to end, as a security
# team runs it: `vfa run` (BIN), the stock OpenSSH client, PyKMIP (Debian
# python3-pykmip, scripts/pykmip/), openssl as the KMS CA, qemu-img over
# iSCSI.
#
#   1. create a certificate, print its CSR, sign it with the KMS CA, import
#      it; define the KMIP server; purekmip test; enable the security token;
#      write data through iSCSI; restart: unlocked, data intact;
#   2. boot 10 times and take the median time from `vfa run` to unlocked;
#   3. then, each from a fresh start of an enrolled array:
#      - the KMS is down: locked; it comes back: unlocks by itself;
#      - the array presents a certificate the KMS does not trust: locked;
#        the good certificate again and `purearray unlock`: unlocked;
#      - the key is revoked while running: an alert (time to detect it is
#        measured); restart: locked, "key revoked";
#      - deactivated: locked; destroyed: locked for good, and disabling the
#        token (crypto-erase) makes an empty, usable array;
#      - replaced by another key of the same name: locked, "key mismatch";
#   and after every lock: every LUN is NOT READY, and no byte of the data
#   written is anywhere in the device files, the metadata or the logs.
#
#   --keep         keep the work directory
#   --figures FILE append the measured figures (markdown lines) to FILE
#
# Prints PASS/FAIL lines and "FIGURE" lines; exits 1 if anything failed.
# Binds only 127.0.0.1. Takes about 2 minutes.
set -euo pipefail
VFA_PROG=rdl-drill
. "$(dirname "$0")/lib.sh"

KEEP=0 FIGURES="" BIN=""
while (($#)); do
	case $1 in
	--keep) KEEP=1 ;;
	--figures) FIGURES=$2; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) BIN=$1 ;;
	esac
	shift
done
[ -n "$BIN" ] && [ -x "$BIN" ] || vfa_die "usage: rdl-drill.sh [--keep] [--figures FILE] BIN"
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")
vfa_need pykmip-server openssl ssh ssh-keygen qemu-img /usr/bin/python3
PY=/usr/bin/python3
K=$VFA_SCRIPTS/pykmip

WORK=$(mktemp -d /tmp/vfa-rdl.XXXXXX)
VFA_PID=""
NPASS=0 NFAIL=0
cleanup() {
	set +e
	[ -n "$VFA_PID" ] && kill -KILL "$VFA_PID" 2>/dev/null
	"$K/stop.sh" "$WORK/kms" 2>/dev/null
	if ((KEEP)); then echo "work directory kept: $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS rdl $*"; NPASS=$((NPASS + 1)); }
fail() { echo "FAIL rdl $*"; NFAIL=$((NFAIL + 1)); }
# check WHAT CONDITION-COMMAND...: PASS or FAIL with WHAT.
check() {
	local what=$1
	shift
	if "$@"; then pass "$what"; else fail "$what"; fi
}
has() { grep -q -- "$2" <<<"$1"; }

free_port() {
	local p
	for _ in $(seq 1 200); do
		p=$((20000 + RANDOM % 30000))
		vfa_port_free "$p" && { echo "$p"; return; }
	done
	vfa_die "no free port"
}

# --- the KMS -----------------------------------------------------------------
KPORT=$(free_port)
"$K/setup.sh" "$WORK/kms" "$KPORT"
"$K/start.sh" "$WORK/kms"
kmipctl() { "$K/kmipctl.py" "$WORK/kms" "$KPORT" "$@"; }
PKI=$WORK/kms/pki

# --- the array -----------------------------------------------------------------
ssh-keygen -q -t ed25519 -N '' -f "$WORK/id" -C rdl-drill
SSH_OPTS=(-i "$WORK/id" -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o ConnectTimeout=10)
SPORT="" IPORT="" IQN="" OUT=""
cli() { ssh "${SSH_OPTS[@]}" -p "$SPORT" pureuser@127.0.0.1 "$@"; }
clin() { cli "$@" </dev/null; }

# vfa_up DIR: start vfa run, wait until it serves (sets SPORT IPORT IQN OUT
# and T_UNLOCKED_MS, the time from the start to "array is unlocked" or 0).
NSTART=0
vfa_up() {
	local dir=$1 t0 i
	NSTART=$((NSTART + 1))
	OUT=$WORK/vfa-$NSTART.out
	: >"$OUT"
	t0=$(date +%s%N)
	"$BIN" run --dir "$dir" --demo --iscsi 127.0.0.1:0 --ssh 127.0.0.1:0 --unlock-retry 1s \
		--kmip-check-interval 1s --kmip-timeout 2s --log-level warn >"$OUT" 2>"$OUT.log" &
	VFA_PID=$!
	T_UNLOCKED_MS=0
	for ((i = 0; i < 6000; i++)); do
		if ((T_UNLOCKED_MS == 0)) && grep -q '^array is unlocked' "$OUT"; then
			T_UNLOCKED_MS=$((($(date +%s%N) - t0) / 1000000))
			((T_UNLOCKED_MS > 0)) || T_UNLOCKED_MS=1
		fi
		# Both lines may appear between two polls: stop only once the
		# unlocked line (if any) has been seen and timed.
		if grep -q '^management: ssh -p ' "$OUT"; then
			if ((T_UNLOCKED_MS == 0)) && grep -q '^array is unlocked' "$OUT"; then
				continue
			fi
			break
		fi
		kill -0 "$VFA_PID" 2>/dev/null || { cat "$OUT" "$OUT.log" >&2; vfa_die "vfa run exited"; }
		sleep 0.01
	done
	SPORT=$(sed -n 's/^management: ssh -p \([0-9]*\) .*/\1/p' "$OUT")
	IPORT=$(sed -n 's/^ *listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$OUT" | head -1)
	IQN=$(sed -n 's/^iSCSI target \(iqn\.[^ ]*\)$/\1/p' "$OUT")
	[ -n "$SPORT" ] && [ -n "$IPORT" ] || vfa_die "vfa run did not report its ports: $(cat "$OUT")"
	vfa_wait_port "$SPORT" 10 || vfa_die "ssh port $SPORT does not answer"
}
vfa_down() {
	kill -TERM "$VFA_PID"
	wait "$VFA_PID" || vfa_die "vfa exited with status $? after SIGTERM: $(tail -3 "$OUT.log")"
	VFA_PID=""
}
lun() { echo "iscsi://127.0.0.1:$IPORT/$IQN/1"; }

# The data: 4 MiB, each 4 KiB block a marker line and random bytes.
DATA=$WORK/data.bin
$PY - "$DATA" <<'PYEOF'
import os, sys
with open(sys.argv[1], "wb") as f:
    for i in range(1024):
        head = b"VFA-RDL-DRILL-PLAINTEXT block %06d " % i
        f.write(head + os.urandom(4096 - len(head)))
PYEOF
write_data() { qemu-img convert -n -f raw -O raw "$DATA" "$(lun)" 2>&1; }
data_intact() {
	rm -f "$WORK/back.bin"
	qemu-img dd -f raw -O raw if="$(lun)" of="$WORK/back.bin" bs=1M count=4 2>"$WORK/read.err" || return 1
	cmp -s -n "$(stat -c %s "$DATA")" "$DATA" "$WORK/back.bin"
}
# not_ready: reading the LUN fails, and says NOT READY.
not_ready() {
	rm -f "$WORK/locked.bin"
	! qemu-img dd -f raw -O raw if="$(lun)" of="$WORK/locked.bin" bs=64K count=1 >"$WORK/locked.err" 2>&1 &&
		grep -qi 'not.ready\|NOT_READY' "$WORK/locked.err"
}
# no_plaintext DIR: no marker and no sample of the random bytes in any file.
no_plaintext() {
	$PY - "$DATA" "$1" <<'PYEOF'
import os, sys
data = open(sys.argv[1], "rb").read()
needles = [b"VFA-RDL-DRILL-PLAINTEXT"] + [data[o:o + 32] for o in (1000, 2 * 4096 + 2000, 900 * 4096 + 3000)]
hits = 0
for root, _, files in os.walk(sys.argv[2]):
    for name in files:
        p = os.path.join(root, name)
        with open(p, "rb") as f:
            prev = b""
            while True:
                chunk = f.read(8 << 20)
                if not chunk:
                    break
                buf = prev + chunk
                for n in needles:
                    if n in buf:
                        print("plaintext in", p, file=sys.stderr)
                        hits += 1
                prev = buf[-64:]
sys.exit(1 if hits else 0)
PYEOF
}
# Positive control: the scanner finds the data where it is.
mkdir -p "$WORK/control" && cp "$DATA" "$WORK/control/"
if no_plaintext "$WORK/control" 2>/dev/null; then vfa_die "the plaintext scanner does not find the data"; fi

token_status() { clin purearray list --security-token --notitle; }
wait_status() { # wait_status PATTERN SECONDS
	local deadline=$((SECONDS + $2))
	until has "$(token_status)" "$1"; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

# --- 1. certificate, KMIP server, the template array (no token yet) -----------
TMPL=$WORK/tmpl
"$BIN" init --dir "$TMPL" --admin-key "$WORK/id.pub" --ssds 6 --ssd-size 128M --nvram-size 16M >"$WORK/init.out"
ARRAY_ID=$(sed -n 's/.*(id \([0-9a-f]*\)).*/\1/p' "$WORK/init.out")
KEY_NAME=vfa-rdl-$ARRAY_ID
vfa_up "$TMPL"
clin purecert create --self-signed --common-name purefa --organization vfa-drill kmip-cert >/dev/null
clin purecert construct --certificate-signing-request kmip-cert >"$WORK/array.csr"
check "the CSR is a valid request" openssl req -in "$WORK/array.csr" -noout -verify
"$K/kms-sign.sh" "$PKI" "$WORK/array.csr" >"$WORK/array.crt"
out=$(cli purecert setattr --certificate kmip-cert <"$WORK/array.crt")
check "signed certificate imported" has "$out" "imported"
out=$(cli purekmip create --uri "127.0.0.1:$KPORT" --certificate kmip-cert --ca-certificate kms1 <"$PKI/ca.crt")
check "KMIP server created" has "$out" "kms1"
out=$(clin purekmip test kms1)
check "purekmip test: OK ($(echo $out | tr -s ' '))" has "$out" "OK"
vfa_down

# enroll DIR: a fresh copy of the template, the token enabled, data written,
# restarted: unlocked and intact. Sets UID_ to the key's identifier. Leaves
# vfa stopped.
enroll() {
	local dir=$1 out
	rm -rf "$dir"
	cp -a "$TMPL" "$dir"
	vfa_up "$dir"
	out=$(clin purearray enable security-token --kmip kms1)
	check "enable security-token: $(tail -1 <<<"$out" | tr -s ' ')" has "$out" "True     kmip"
	UID_=$(kmipctl locate "$KEY_NAME" | sort -n | tail -1)
	check "key $UID_ is Active on the KMS" test "$(kmipctl state "$UID_")" = ACTIVE
	out=$(write_data) || fail "write through iSCSI: $out"
	check "data written through iSCSI reads back" data_intact
	vfa_down
	vfa_up "$dir"
	check "restart: unlocked" grep -q '^array is unlocked' "$OUT"
	check "restart: data intact" data_intact
	vfa_down
}

# locked_boot DIR WANT: boot DIR, expect it locked with WANT in the reason,
# LUNs NOT READY, an alert, no plaintext anywhere. Leaves vfa running.
locked_boot() {
	local dir=$1 want=$2 st
	vfa_up "$dir"
	st=$(token_status)
	check "locked: $want ($(tr -s ' ' <<<"$st" | cut -c1-160))" has "$st" "locked: security token: $want"
	check "locked: LUN 1 answers NOT READY" not_ready
	check "locked: alert array.locked" has "$(clin purealert list)" "array.locked"
	check "locked: no plaintext of the data in $dir" no_plaintext "$dir"
}

E1=$WORK/e1
enroll "$E1"

# --- 2. boot time -----------------------------------------------------------------
times=()
for _ in $(seq 1 10); do
	vfa_up "$E1"
	times+=("$T_UNLOCKED_MS")
	vfa_down
done
BOOT_MEDIAN=$(printf '%s\n' "${times[@]}" | sort -n | sed -n '5,6p' | awk '{s+=$1} END {printf "%d", s/NR}')
echo "FIGURE boot-to-unlocked median=${BOOT_MEDIAN}ms boots=${times[*]}"
check "10 boots unlocked" test "$(printf '%s\n' "${times[@]}" | grep -c '^0$')" = 0

# --- 3a. the KMS is down, then comes back ----------------------------------------------
"$K/stop.sh" "$WORK/kms"
locked_boot "$E1" "Cannot connect and authenticate with the server"
check "reason says unreachable" has "$(token_status)" "unreachable"
"$K/start.sh" "$WORK/kms"
check "unlocks by itself when the KMS is back" wait_status "True  *enabled" 30
check "data intact after the automatic unlock" data_intact
vfa_down

# --- 3b. a certificate the KMS does not trust ------------------------------------------
vfa_up "$E1"
"$K/kms-sign.sh" "$PKI" "$WORK/array.csr" rogue-ca >"$WORK/rogue.crt"
cli purecert setattr --certificate kmip-cert <"$WORK/rogue.crt" >/dev/null
vfa_down
locked_boot "$E1" "Cannot connect and authenticate with the server"
check "reason: unknown certificate authority" has "$(token_status)" "unknown certificate authority"
cli purecert setattr --certificate kmip-cert <"$WORK/array.crt" >/dev/null
out=$(clin purearray unlock 2>&1) || true
check "trusted certificate again, purearray unlock: unlocked" has "$out" "unlocked"
check "data intact" data_intact
vfa_down

# --- 3c. revoked while running, then restart ---------------------------------------------
vfa_up "$E1"
t0=$(date +%s%N)
kmipctl revoke "$UID_" compromise
detected=0
for _ in $(seq 1 300); do
	if has "$(clin purealert list)" "security-token.degraded"; then detected=1; break; fi
	sleep 0.05
done
DETECT_MS=$((($(date +%s%N) - t0) / 1000000))
check "revoked key raises an alert while running" test "$detected" = 1
echo "FIGURE revoke-detect=${DETECT_MS}ms (check interval 1s)"
check "running: data stays available" data_intact
check "running: list says degraded: key revoked" has "$(token_status)" "degraded: key revoked"
out=$(clin purearray test security-token)
check "purearray test security-token: Fail, key revoked" has "$out" "Fail  *key revoked"
vfa_down
locked_boot "$E1" "key revoked"
vfa_down

# --- 3d. deactivated ------------------------------------------------------------
E2=$WORK/e2
enroll "$E2"
kmipctl revoke "$UID_" cessation
locked_boot "$E2" "key deactivated"
vfa_down

# --- 3e. destroyed: locked for good; the crypto-erase ----------------------------------------
E3=$WORK/e3
enroll "$E3"
kmipctl revoke "$UID_" cessation
kmipctl destroy "$UID_"
locked_boot "$E3" "key destroyed"
check "reason says it is for good" has "$(token_status)" "cannot be unlocked any more"
out=$(clin purearray unlock 2>&1) || true
check "purearray unlock: still locked" has "$out" "still locked"
out=$(clin purearray disable security-token 2>&1) || true
check "disable without the flag refuses and says what it would do" has "$out" "crypto-erases the array"
out=$(clin purearray disable security-token --i-understand-this-erases-all-data)
check "disable with the flag: the token is off" has "$out" "False    disabled"
check "after the erase: no volumes" test -z "$(clin purevol list)"
check "after the erase: no plaintext" no_plaintext "$E3"
vfa_down
vfa_up "$E3"
check "after the erase and a restart: unlocked without a token" grep -q '^array is unlocked' "$OUT"
out=$(write_data) || fail "write after the erase: $out"
check "after the erase: the array is usable (write and read back)" data_intact
vfa_down

# --- 3f. replaced by another key of the same name ---------------------------------------
E4=$WORK/e4
enroll "$E4"
kmipctl revoke "$UID_" cessation
kmipctl destroy "$UID_"
NEW=$(kmipctl create "$KEY_NAME")
locked_boot "$E4" "key mismatch"
check "reason names the new key $NEW" has "$(token_status)" "identifier $NEW"
vfa_down

if [ -n "$FIGURES" ]; then
	{
		echo "- time from \`vfa run\` to unlocked with PyKMIP on loopback, median of 10 boots: ${BOOT_MEDIAN} ms (each: ${times[*]} ms)"
		echo "- time to detect a key revoked while running (\`--kmip-check-interval 1s\`; revoke to alert, polled over SSH): ${DETECT_MS} ms"
	} >>"$FIGURES"
fi
echo "rdl drill: $NPASS passed, $NFAIL failed"
((NFAIL == 0))
