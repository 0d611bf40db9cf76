# shellcheck shell=bash
# check restart: SIGTERM is a clean shutdown. vfa exits 0, logs no error,
# and the next boot has no NVRAM records to replay (vfa logs "nvram
# replayed" when it replays), and the data is intact. Two shutdowns:
#   - idle: a little data, then a pause before SIGTERM;
#   - busy: 32 MiB of unique data and SIGTERM straight after the last
#     acknowledgement (NVRAM holds a backlog the shutdown must drain).

check_restart() {
	need restart cc qemu-io || return 0
	local aw
	if ! aw=$(ackwriter); then
		fail restart "building systest/ackwriter.c failed: $(tail -3 "$WORK/ackwriter.build" | clip 600)"
		return
	fi
	local d=$CK/array out rc M=$((1 << 20))
	small_init "$d" >"$CK/why" || { fail restart "$(cat "$CK/why")"; return; }

	local phase
	for phase in idle busy; do
		vfa_start "$d" --demo >"$CK/why" || { fail "restart.$phase" "$(cat "$CK/why")"; return; }
		local off n
		if [ "$phase" = idle ]; then off=0 n=256; else off=$((64 * M)) n=8192; fi
		rc=0
		timeout 300 "$aw" -m write -o "$off" -n "$n" -b 4096 -q 32 -g 1 -S 7 "$VFA_URL" >"$CK/$phase.acks" 2>"$CK/$phase.err" || rc=$?
		out=$(qemu_io -c "write -P 0x3c $((off + 40 * M)) 1M" "$VFA_URL") || true
		if ((rc != 0)) || [ "$(wc -l <"$CK/$phase.acks")" != "$n" ] || ! qio_ok "$out"; then
			fail "restart.$phase" "writing failed (status $rc): $(clip 600 <"$CK/$phase.err") $(clip 300 <<<"$out")"
			return
		fi
		[ "$phase" = busy ] || sleep 3 # let the flusher catch up
		local errs_before
		errs_before=$(grep -c -E 'level=ERROR' "$VFA_LOG" || true)
		if ! vfa_term >"$CK/why"; then
			fail "restart.$phase" "SIGTERM: $(cat "$CK/why")"
			return
		fi
		local shutdown_log=$VFA_LOG
		vfa_start "$d" --demo >"$CK/why" || { fail "restart.$phase" "restart: $(cat "$CK/why")"; return; }
		local problems=()
		local errs_after
		errs_after=$(grep -c -E 'level=ERROR' "$shutdown_log" || true)
		if ((errs_after > errs_before)); then
			problems+=("the shutdown logged errors: $(grep -E 'level=ERROR' "$shutdown_log" | tail -n +$((errs_before + 1)) | top 3 | clip 600)")
		fi
		if grep -q 'nvram replayed' "$VFA_LOG"; then
			problems+=("the boot after a clean shutdown replayed NVRAM: $(grep -o 'nvram replayed.*' "$VFA_LOG" | top 1 | clip 200)")
		fi
		rc=0
		out=$(timeout 300 "$aw" -m verify -o "$off" -n "$n" -b 4096 -g 1 -S 7 -a "$CK/$phase.acks" "$VFA_URL" 2>&1) || rc=$?
		((rc == 0)) || problems+=("data: $(clip 800 <<<"$out")")
		local q
		q=$(qemu_io -c "read -P 0x3c $((off + 40 * M)) 1M" "$VFA_URL") || true
		qio_ok "$q" && [[ $q == *"read 1048576/1048576"* ]] || problems+=("qemu-io pattern: $(clip 300 <<<"$q")")
		if ((${#problems[@]} == 0)); then
			pass "restart.$phase" "$((n * 4)) KiB unique + 1 MiB pattern, SIGTERM$([ "$phase" = busy ] && echo ' right after the last write'), exit 0, no replay at the next boot, data intact ($(tail -1 <<<"$out"))"
		else
			local p
			for p in "${problems[@]}"; do fail "restart.$phase" "$p"; done
		fi
		# The idle phase's data must survive the busy phase's restart too.
		if [ "$phase" = busy ]; then
			rc=0
			out=$(timeout 300 "$aw" -m verify -o 0 -n 256 -b 4096 -g 1 -S 7 -a "$CK/idle.acks" "$VFA_URL" 2>&1) || rc=$?
			((rc == 0)) || fail restart.idle-after-busy "$(clip 800 <<<"$out")"
		fi
		vfa_term >"$CK/why" || { fail "restart.$phase" "SIGTERM after the check: $(cat "$CK/why")"; return; }
	done
}
