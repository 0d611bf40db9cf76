# shellcheck shell=bash
# check negative: what a well-behaved initiator never sends, while a live
# qemu-io session keeps working beside it.
#   - systest/pdu.py: garbage as the first PDU, a login announcing 16 MiB of
#     data, an unknown target name, a truncated PDU, a SCSI command
#     announcing 16 MiB of immediate data, a reserved opcode, READ/WRITE past
#     the end of the LUN (ILLEGAL REQUEST, LBA OUT OF RANGE);
#   - libiscsi against an unknown target name and a LUN that does not exist;
#   - an initiator that is in no host: on an array without --demo (no hosts
#     at all) it logs in and sees no LUNs.
# Wrong CHAP secrets are tried in check vm (and with libiscsi there).

check_negative() {
	need negative python3 qemu-io iscsi-inq iscsi-ls || return 0
	local d=$CK/array out rc
	small_init "$d" >"$CK/why" || { fail negative "$(cat "$CK/why")"; return; }
	vfa_start "$d" --demo >"$CK/why" || { fail negative "$(cat "$CK/why")"; return; }
	local M=$((1 << 20))

	# A session that lives through all of it: write, wait, read, write, read.
	QEMU_IO_TIMEOUT=90 qemu_io -c "write -P 0x6b $((128 * M)) 1M" -c "sleep 8000" \
		-c "read -P 0x6b $((128 * M)) 1M" -c "write -P 0x6c $((129 * M)) 1M" -c "sleep 2000" \
		-c "read -P 0x6c $((129 * M)) 1M" "$VFA_URL" >"$CK/live.out" &
	local live=$!
	track "$live" qemu-io-live

	rc=0
	timeout 120 python3 "$VFA_SCRIPTS/systest/pdu.py" 127.0.0.1 "$VFA_PORT" "$VFA_IQN" 1 >"$CK/pdu.out" 2>&1 || rc=$?
	local line
	while read -r line; do
		case $line in
		"ok "*) line=${line#ok }; pass "negative.pdu.${line%%:*}" "${line#*: }" ;;
		"FAIL "*) line=${line#FAIL }; fail "negative.pdu.${line%%:*}" "${line#*: }" ;;
		esac
	done <"$CK/pdu.out"
	if ((rc != 0)) && ! grep -q '^FAIL ' "$CK/pdu.out"; then
		fail negative.pdu "pdu.py exited with status $rc: $(tail -5 "$CK/pdu.out" | tr '\n' ' ')"
	fi
	if ! alive "$VFA_PID"; then
		fail negative "vfa died: $(tail -5 "$VFA_LOG" | tr '\n' ' ')"
		return
	fi

	# libiscsi: an unknown target name, a LUN that does not exist.
	out=$(timeout 30 iscsi-inq "iscsi://127.0.0.1:$VFA_PORT/${VFA_IQN%.*}.00000000000000ff/1" 2>&1) && rc=0 || rc=$?
	if ((rc != 0)) && [[ $out == *"Target not found"* ]]; then
		pass negative.unknown-target "iscsi-inq: $out"
	else
		fail negative.unknown-target "status $rc: $out"
	fi
	out=$(timeout 30 iscsi-inq "iscsi://127.0.0.1:$VFA_PORT/$VFA_IQN/2" 2>&1) && rc=0 || rc=$?
	if ((rc != 0)) && [[ $out == *"LOGICAL_UNIT_NOT_SUPPORTED"* ]]; then
		pass negative.no-such-lun "iscsi-inq LUN 2: $out"
	else
		fail negative.no-such-lun "status $rc: $out"
	fi

	# The live session saw none of it.
	rc=0
	wait "$live" || rc=$?
	out=$(cat "$CK/live.out")
	if ((rc == 0)) && qio_ok "$out" && [ "$(grep -c '^\(wrote\|read\)' <<<"$out")" = 4 ]; then
		pass negative.live-session "a qemu-io session kept reading and writing throughout"
	else
		fail negative.live-session "status $rc: $(grep -E 'failed|Pattern|rror' <<<"$out" | top 3 | tr '\n' ' ') ($(grep -c '^\(wrote\|read\)' <<<"$out") of 4 I/Os)"
	fi
	vfa_finish negative

	# No hosts at all: any initiator logs in and sees no LUNs.
	local d2=$CK/nohosts
	small_init "$d2" >"$CK/why" || { fail negative.no-host "$(cat "$CK/why")"; return; }
	vfa_start "$d2" >"$CK/why" || { fail negative.no-host "$(cat "$CK/why")"; return; }
	out=$(timeout 30 iscsi-ls -s "iscsi://127.0.0.1:$VFA_PORT" 2>&1) || true
	local inq
	inq=$(timeout 30 iscsi-inq "iscsi://127.0.0.1:$VFA_PORT/$VFA_IQN/0" 2>&1) && rc=0 || rc=$?
	if grep -q "^Target:$VFA_IQN " <<<"$out" && ! grep -q '^Lun:' <<<"$out" && ((rc != 0)); then
		pass negative.no-host "an initiator in no host logs in and sees no LUN (iscsi-ls lists none; LUN 0: $inq)"
	else
		fail negative.no-host "iscsi-ls: $(tr '\n' ' ' <<<"$out"); iscsi-inq LUN 0 (status $rc): $inq"
	fi
	vfa_finish negative
}
