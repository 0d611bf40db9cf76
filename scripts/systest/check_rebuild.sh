# shellcheck shell=bash
# check rebuild: replacing a lost SSD, end to end with the real binary.
#   - 32 MiB of unique data written over iSCSI (systest/ackwriter.c) and a
#     qemu-io pattern, vfa stopped, one device
#     file deleted; vfa boots degraded, puredrive list says missing, the
#     data reads back (rebuilt from parity on the fly);
#   - puredrive admit over SSH: the slot gets a new device and shows
#     recovering, then healthy; 8 MiB more unique data written after the
#     admission;
#   - vfa stopped, two *other* device files deleted: the array still
#     unlocks, so the new device holds its key share, and every byte reads
#     back, so it holds its part of every stripe.

check_rebuild() {
	need rebuild ssh ssh-keygen qemu-io cc || return 0
	local d=$CK/array out M=$((1 << 20)) aw rc
	if ! aw=$(ackwriter); then
		fail rebuild "building systest/ackwriter.c failed: $(tail -3 "$WORK/ackwriter.build" | clip 600)"
		return
	fi
	ssh-keygen -q -t ed25519 -N '' -C systest -f "$CK/adminkey"
	small_init "$d" --admin-key "$CK/adminkey.pub" >"$CK/why" || { fail rebuild "$(cat "$CK/why")"; return; }
	rpure() {
		timeout 60 ssh -i "$CK/adminkey" -p "$VFA_SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
			-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR pureuser@127.0.0.1 "$@" 2>&1
	}
	# verify_all: the unique data (both generations when $1 is 2) and the
	# patterns read back.
	verify_all() {
		local o rc=0
		o=$(timeout 300 "$aw" -m verify -o 0 -n 8192 -b 4096 -g 1 -S 11 -a "$CK/g1.acks" "$VFA_URL" 2>&1) || rc=$?
		((rc == 0)) || { echo "unique data: $(clip 400 <<<"$o")"; return 1; }
		if [ "${1:-1}" = 2 ]; then
			o=$(timeout 300 "$aw" -m verify -o $((64 * M)) -n 2048 -b 4096 -g 1 -S 12 -a "$CK/g2.acks" "$VFA_URL" 2>&1) || rc=$?
			((rc == 0)) || { echo "data written during the rebuild: $(clip 400 <<<"$o")"; return 1; }
		fi
		o=$(qemu_io -c "read -P 0x71 $((100 * M + 512)) 1M" "$VFA_URL") || true
		qio_ok "$o" && [[ $o == *"read 1048576/1048576"* ]] || { echo "pattern: $(clip 300 <<<"$o")"; return 1; }
	}
	vfa_start "$d" --demo >"$CK/why" || { fail rebuild "$(cat "$CK/why")"; return; }
	rc=0
	timeout 300 "$aw" -m write -o 0 -n 8192 -b 4096 -q 32 -g 1 -S 11 "$VFA_URL" >"$CK/g1.acks" 2>"$CK/g1.err" || rc=$?
	out=$(qemu_io -c "write -P 0x71 $((100 * M + 512)) 1M" "$VFA_URL") || true
	if ((rc != 0)) || [ "$(wc -l <"$CK/g1.acks")" != 8192 ] || ! qio_ok "$out"; then
		fail rebuild.setup "writing failed (status $rc): $(clip 400 <"$CK/g1.err") $(clip 300 <<<"$out")"
		return
	fi
	vfa_term >"$CK/why" || { fail rebuild.setup "$(cat "$CK/why")"; return; }
	rm -f "$d/ssd/ssd02.dev"
	vfa_start "$d" --demo >"$CK/why" || { fail rebuild.degraded "$(cat "$CK/why")"; return; }
	out=$(rpure puredrive list --csv --notitle)
	local why=""
	why=$(verify_all 1) || true
	if [[ $out == *"ssd02,SSD,missing,"* ]] && [ -z "$why" ]; then
		pass rebuild.degraded "ssd02 deleted: the array boots, puredrive list says missing, 33 MiB read back from parity"
	else
		fail rebuild.degraded "drives: $(clip 300 <<<"$out") data: $why"
	fi
	out=$(rpure puredrive admit ssd02)
	if [[ $out == *"ssd02  "* ]] && [ -f "$d/ssd/ssd02.dev" ]; then
		pass rebuild.admit "puredrive admit ssd02: $(tail -1 <<<"$out" | clip 120)"
	else
		fail rebuild.admit "$(clip 400 <<<"$out")"
		return
	fi
	rc=0
	timeout 300 "$aw" -m write -o $((64 * M)) -n 2048 -b 4096 -q 32 -g 1 -S 12 "$VFA_URL" >"$CK/g2.acks" 2>"$CK/g2.err" || rc=$?
	((rc == 0)) || fail rebuild.io "writing after the admission (status $rc): $(clip 400 <"$CK/g2.err")"
	local i st=""
	for ((i = 0; i < 600; i++)); do
		st=$(rpure puredrive list --csv --notitle | grep '^ssd02,' || true)
		[[ $st == ssd02,SSD,healthy,* ]] && break
		sleep 0.1
	done
	if [[ $st == ssd02,SSD,healthy,* ]] && grep -q 'code=device.rebuilt' "$VFA_LOG"; then
		pass rebuild.done "ssd02 healthy: $(grep -h 'code=device.rebuilt' "$VFA_LOG" | grep -o 'rebuilt from parity:[^"]*' | top 1 | clip 160)"
	else
		fail rebuild.done "ssd02 after 60 s: $st"
		return
	fi
	vfa_term >"$CK/why" || { fail rebuild.done "$(cat "$CK/why")"; return; }
	rm -f "$d/ssd/ssd05.dev" "$d/ssd/ssd06.dev"
	vfa_start "$d" --demo >"$CK/why" || { fail rebuild.verify "with ssd05 and ssd06 gone: $(cat "$CK/why")"; return; }
	why=$(verify_all 2) || true
	if [ -z "$why" ]; then
		pass rebuild.verify "ssd05 and ssd06 deleted as well: the array unlocks with the new ssd02's key share and all 41 MiB read back"
	else
		fail rebuild.verify "$why"
	fi
	vfa_term >"$CK/why" || fail rebuild.verify "$(cat "$CK/why")"
}
