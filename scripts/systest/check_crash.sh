# shellcheck shell=bash
# check crash: SIGKILL vfa while a writer writes; restart; every write the
# writer saw acknowledged reads back.
#
#   - systest/ackwriter.c, VFA_CRASH_ROUNDS rounds (default 6) with 4 KiB,
#     64 KiB and 3584-byte writes (the last ones share 4 KiB blocks with
#     their neighbours: read-modify-write in the flusher), 32 in flight,
#     unique, partly compressible and partly duplicate data, over a region
#     first filled (and acknowledged) with an older generation. The writer
#     prints each acknowledgement the moment it arrives (one write(2) per
#     line), so the acknowledged set is exact. After the restart: every
#     sector of an acknowledged write holds the new data, every other sector
#     the new or the old data, and the regions of earlier rounds still read
#     back as they were verified.
#   - qemu-io writing 4 KiB patterns one after the other; its "wrote ..."
#     lines (line-buffered) are the acknowledgements; after the restart each
#     is read back with its pattern.
# The kill lands after a random number of acknowledgements (1/8 to 1/2 of
# the writes).

check_crash() {
	need crash cc qemu-io stdbuf || return 0
	local aw
	if ! aw=$(ackwriter); then
		fail crash "building systest/ackwriter.c failed (libiscsi-dev?): $(tail -3 "$WORK/ackwriter.build" | tr '\n' ' ')"
		return
	fi
	local d=$CK/array
	small_init "$d" >"$CK/why" || { fail crash "$(cat "$CK/why")"; return; }
	vfa_start "$d" --demo >"$CK/why" || { fail crash "$(cat "$CK/why")"; return; }

	local rounds=${VFA_CRASH_ROUNDS:-6} r bs n off kill_at rc
	local sizes=(4096 65536 3584) counts=(16384 2048 16384)
	local verified=()
	for ((r = 0; r < rounds; r++)); do
		bs=${sizes[r % 3]}
		n=${counts[r % 3]}
		off=$(((r + 1) << 28)) # 256 MiB apart
		local name="crash.ackwriter[$((r + 1)):${bs}B]"
		local common=(-o "$off" -n "$n" -b "$bs" -S "$((r + 1))")
		# Generation 1, fully acknowledged.
		rc=0
		timeout 300 "$aw" -m write "${common[@]}" -q 32 -g 1 "$VFA_URL" >"$CK/fill-$r.acks" 2>"$CK/fill-$r.err" || rc=$?
		if ((rc != 0)) || [ "$(wc -l <"$CK/fill-$r.acks")" != "$n" ]; then
			fail "$name" "filling generation 1 failed (status $rc, $(wc -l <"$CK/fill-$r.acks") of $n acknowledged): $(head -3 "$CK/fill-$r.err" | tr '\n' ' ')"
			return
		fi
		# Generation 2, killed part way.
		kill_at=$((n / 8 + RANDOM % (3 * n / 8)))
		local acks=$CK/crash-$r.acks
		: >"$acks"
		"$aw" -m write "${common[@]}" -q 32 -g 2 -x "$VFA_URL" >"$acks" 2>"$CK/crash-$r.err" &
		local wpid=$!
		track "$wpid" ackwriter
		if ! wait_lines "$acks" "$kill_at" 120 "$wpid"; then
			fail "$name" "the writer stopped or stalled at $(wc -l <"$acks") acknowledgements before the kill point $kill_at: $(head -3 "$CK/crash-$r.err" | tr '\n' ' ')"
			return
		fi
		vfa_kill9
		local at_kill
		at_kill=$(wc -l <"$acks")
		local i=0
		while alive "$wpid" && ((i++ < 300)); do sleep 0.1; done
		if alive "$wpid"; then
			fail "$name" "the writer did not notice the lost connection within 30 s"
			return
		fi
		rc=0
		wait "$wpid" || rc=$?
		if ((rc != 0)); then
			fail "$name" "the writer failed before the kill (status $rc): $(head -3 "$CK/crash-$r.err" | tr '\n' ' ')"
			return
		fi
		vfa_start "$d" --demo >"$CK/why" || { fail "$name" "restart after SIGKILL: $(cat "$CK/why")"; return; }
		local replay
		replay=$(grep -o 'nvram replayed" records=[0-9]*' "$VFA_LOG" | tr -d '"' | top 1) || true
		[ -n "$replay" ] || replay="no NVRAM replay"
		rc=0
		out=$(timeout 300 "$aw" -m verify "${common[@]}" -g 2 -p 1 -a "$acks" "$VFA_URL" 2>&1) || rc=$?
		if ((rc == 0)); then
			pass "$name" "killed after $at_kill acknowledged writes ($(wc -l <"$acks") in all), $replay at restart; $(tail -1 <<<"$out")"
		else
			fail "$name" "killed after $at_kill acknowledged writes, $replay at restart: $(tr '\n' ' ' <<<"$out" | clip 1500)"
		fi
		verified+=("$r")
		# Earlier rounds' regions are still as they were verified.
		local e
		for e in "${verified[@]}"; do
			((e == r)) && continue
			rc=0
			out=$(timeout 300 "$aw" -m verify -o $(((e + 1) << 28)) -n "${counts[e % 3]}" -b "${sizes[e % 3]}" \
				-S "$((e + 1))" -g 2 -p 1 -a "$CK/crash-$e.acks" "$VFA_URL" 2>&1) || rc=$?
			((rc == 0)) || fail "crash.ackwriter[$((e + 1))].after-round-$((r + 1))" "$(tr '\n' ' ' <<<"$out" | clip 1000)"
		done
	done

	crash_qemu_io "$d"

	# Everything once more after a clean restart (replayed data has been
	# flushed into segments by now, so these reads come from the SSDs).
	local errs
	errs=$(vfa_log_errors)
	[ -z "$errs" ] || fail crash.log "errors in the vfa log: $errs"
	vfa_term >"$CK/why" || fail crash.sigterm "$(cat "$CK/why")"
	vfa_start "$d" --demo >"$CK/why" || { fail crash.final "restart: $(cat "$CK/why")"; return; }
	local bad=0 e
	for e in "${verified[@]}"; do
		rc=0
		out=$(timeout 300 "$aw" -m verify -o $(((e + 1) << 28)) -n "${counts[e % 3]}" -b "${sizes[e % 3]}" \
			-S "$((e + 1))" -g 2 -p 1 -a "$CK/crash-$e.acks" "$VFA_URL" 2>&1) || rc=$?
		((rc == 0)) || { bad=1; fail "crash.ackwriter[$((e + 1))].final" "$(clip 1000 <<<"$out")"; }
	done
	if [ -s "$CK/qemu-reads" ]; then
		out=$(timeout 300 qemu-io -f raw "$VFA_URL" <"$CK/qemu-reads" 2>&1) || true
		if ! qio_ok "$out" || [ "$(grep -c 'read 4096/4096' <<<"$out")" != "$(wc -l <"$CK/qemu-reads")" ]; then
			bad=1
			fail crash.qemu-io.final "$(grep -E 'failed|Pattern' <<<"$out" | top 3 | clip 600)"
		fi
	fi
	((bad)) || pass crash.final "after a clean restart every round still reads back as verified"
	vfa_finish crash
}

# crash_qemu_io DIR: the qemu-io round (the array in DIR is running).
crash_qemu_io() {
	local d=$1 name=crash.qemu-io n=20000 base=$((3 << 30)) i
	local cmds=$CK/qemu-writes
	for ((i = 0; i < n; i++)); do
		printf 'write -P 0x%02x %d 4096\n' $((i * 37 % 254 + 1)) $((base + i * 4096))
	done >"$cmds"
	local kill_at=$((n / 8 + RANDOM % (3 * n / 8)))
	local log=$CK/qemu-writes.out
	stdbuf -oL qemu-io -f raw "$VFA_URL" <"$cmds" >"$log" 2>&1 &
	local qpid=$!
	track "$qpid" qemu-io-writer
	local deadline=$((SECONDS + 180)) acked=0
	while :; do
		acked=$(grep -c 'wrote 4096/4096 bytes at offset' "$log" || true)
		((acked < kill_at)) || break
		if ! alive "$qpid" || ((SECONDS > deadline)); then
			fail "$name" "qemu-io stopped or stalled at $acked writes before the kill point $kill_at: $(grep -E 'failed|rror' "$log" | top 3 | tr '\n' ' ')"
			return
		fi
		sleep 0.02
	done
	vfa_kill9
	# qemu-io now waits to reconnect: stop it; what it printed is final.
	sleep 0.2
	kill -TERM "$qpid" 2>/dev/null || true
	for ((i = 0; i < 50; i++)); do alive "$qpid" || break; sleep 0.1; done
	kill -KILL "$qpid" 2>/dev/null || true
	wait "$qpid" 2>/dev/null || true
	if grep -q -E 'write failed|Pattern' "$log"; then
		info "$name: qemu-io reported $(grep -c 'write failed' "$log") failed writes after the kill (not acknowledged)"
	fi
	local reads=$CK/qemu-reads
	grep -o 'wrote 4096/4096 bytes at offset [0-9]*' "$log" | awk -v base="$base" '{
		off = $NF; i = (off - base) / 4096
		printf "read -P 0x%02x %.0f 4096\n", (i * 37) % 254 + 1, off
	}' >"$reads"
	acked=$(wc -l <"$reads")
	vfa_start "$d" --demo >"$CK/why" || { fail "$name" "restart after SIGKILL: $(cat "$CK/why")"; return; }
	local replay out
	replay=$(grep -o 'nvram replayed" records=[0-9]*' "$VFA_LOG" | tr -d '"' | top 1) || true
	[ -n "$replay" ] || replay="no NVRAM replay"
	out=$(timeout 300 qemu-io -f raw "$VFA_URL" <"$reads" 2>&1) || true
	local ok
	ok=$(grep -c '^\(qemu-io> \)*read 4096/4096' <<<"$out" || true)
	if ((acked >= kill_at)) && qio_ok "$out" && ((ok == acked)); then
		pass "$name" "killed after $acked acknowledged 4 KiB writes, $replay at restart; all $acked read back with their patterns"
	else
		fail "$name" "killed after $acked acknowledged writes, $replay at restart: $ok read back intact; $(grep -E 'failed|Pattern' <<<"$out" | top 3 | tr '\n' ' ')"
	fi
}
