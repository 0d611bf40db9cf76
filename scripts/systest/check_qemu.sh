# shellcheck shell=bash
# check qemu: qemu-io and qemu-img over iscsi:// against the demo LUN.
#   - pattern writes and read-verify at the start, at the very end, with
#     512-byte, 1 MiB and 4 MiB I/O, unaligned offsets and sizes, partial
#     overwrites, UNMAP (discard) and WRITE SAME (write -z), all read back
#     again by a second session;
#   - header digests (CRC32C) negotiated and used;
#   - a 64 MiB qemu-img convert of random data into a window of the LUN, and
#     qemu-img compare of it;
#   - a session idle for 20 s between commands (NOP keepalives) that keeps
#     working; it runs while the rest of this check goes on.

check_qemu() {
	need qemu qemu-io qemu-img || return 0
	local d=$CK/array out
	small_init "$d" >"$CK/why" || { fail qemu "$(cat "$CK/why")"; return; }
	vfa_start "$d" --demo >"$CK/why" || { fail qemu "$(cat "$CK/why")"; return; }
	local url=$VFA_URL size=$((10 << 30)) M=$((1 << 20))

	# The idle session: write, 20 s of nothing, then read, write, read.
	local idle_t0=$SECONDS idle_pid
	QEMU_IO_TIMEOUT=90 qemu_io -c "write -P 0x5d $((64 * M)) 64k" -c "sleep 20000" \
		-c "read -P 0x5d $((64 * M)) 64k" -c "write -P 0x5e $((64 * M + 4096)) 4k" \
		-c "read -P 0x5d $((64 * M)) 4k" -c "read -P 0x5e $((64 * M + 4096)) 4k" "$url" >"$CK/idle.out" &
	idle_pid=$!
	track "$idle_pid" qemu-io-idle

	# Pattern I/O. Each line: a qemu-io command; reads carry -P so that
	# qemu-io checks the data.
	local cmds=(
		"write -P 0xa1 0 1M" "read -P 0xa1 0 1M"
		"write -P 0xa2 $((size - M)) 1M" "write -P 0xa3 $((size - 512)) 512"
		"read -P 0xa2 $((size - M)) $((M - 512))" "read -P 0xa3 $((size - 512)) 512"
		"write -P 0xa4 $((M + 1536)) 512" "read -P 0xa4 $((M + 1536)) 512"
		"read -P 0x00 $M 1536" "read -P 0x00 $((M + 2048)) $((M - 2048))"
		"write -P 0xa5 $((2 * M + 1000)) 3333" "read -P 0xa5 $((2 * M + 1000)) 3333"
		"read -P 0x00 $((2 * M)) 1000" "read -P 0x00 $((2 * M + 4333)) $((8192 - 4333))"
		"write -P 0xa6 $((4 * M)) 4M" "write -P 0xa7 $((4 * M + 4096 + 512)) 1000"
		"read -P 0xa6 $((4 * M)) 4608" "read -P 0xa7 $((4 * M + 4608)) 1000"
		"read -P 0xa6 $((4 * M + 5608)) $((4 * M - 5608))"
		"write -P 0xa8 $((8 * M)) 2M" "discard $((8 * M)) 1M" "write -z $((9 * M)) 512k"
		"read -P 0x00 $((8 * M)) $((M + 512 * 1024))" "read -P 0xa8 $((9 * M + 512 * 1024)) 512k"
		"write -P 0xa9 $((16 * M + 7)) 65536" "read -P 0xa9 $((16 * M + 7)) 65536"
		"read -P 0x00 $((16 * M)) 7" "read -P 0xa1 0 1M"
	)
	local args=() c
	for c in "${cmds[@]}"; do args+=(-c "$c"); done
	out=$(qemu_io "${args[@]}" "$url") || true
	if qio_ok "$out" && [ "$(grep -c '^\(wrote\|read\|discard\)' <<<"$out")" = "${#cmds[@]}" ]; then
		pass qemu.patterns "${#cmds[@]} commands: start, last 512 B and last 1 MiB, 512 B, 4 MiB, unaligned (1000+3333, +7), partial overwrite, discard, write zeroes"
	else
		fail qemu.patterns "$(grep -E 'failed|Pattern|rror' <<<"$out" | top 5 | tr '\n' ' ') ($(grep -c '^\(wrote\|read\|discard\)' <<<"$out") of ${#cmds[@]} commands completed)"
	fi
	# A second session reads everything back.
	args=()
	for c in "${cmds[@]}"; do [[ $c == read* ]] && args+=(-c "$c"); done
	out=$(qemu_io "${args[@]}" "$url") || true
	if qio_ok "$out" && [ "$(grep -c '^read' <<<"$out")" = $((${#args[@]} / 2)) ]; then
		pass qemu.reread "$((${#args[@]} / 2)) reads in a new session"
	else
		fail qemu.reread "$(grep -E 'failed|Pattern|rror' <<<"$out" | top 5 | tr '\n' ' ')"
	fi

	# Header digests.
	local opts="driver=raw,file.driver=iscsi,file.transport=tcp,file.portal=127.0.0.1:$VFA_PORT,file.target=$VFA_IQN,file.lun=1,file.header-digest=crc32c"
	out=$(LIBISCSI_DEBUG=6 timeout 60 qemu-io --image-opts "$opts" -c "write -P 0xb3 $((32 * M)) 1M" \
		-c "read -P 0xb3 $((32 * M)) 1M" -c "read -P 0xa1 0 1M" 2>&1) || true
	if grep -q 'TargetLoginReply: HeaderDigest=CRC32C' <<<"$out" && qio_ok "$(grep -v '^libiscsi:' <<<"$out")" &&
		[ "$(grep -c '^\(wrote\|read\)' <<<"$out")" = 3 ]; then
		pass qemu.header-digest "HeaderDigest=CRC32C negotiated; 1 MiB written and read back, earlier data read"
	else
		fail qemu.header-digest "$(grep -E 'HeaderDigest|failed|Pattern|rror' <<<"$out" | grep -v 'libiscsi:[0-9] [a-z]' | top 5 | tr '\n' ' ')"
	fi

	# qemu-img convert + compare, 64 MiB of random data into a window at 1 GiB.
	head -c $((64 * M)) /dev/urandom >"$CK/random.img"
	local win
	win=$(iscsi_json "$VFA_PORT" "$VFA_IQN" $((1 << 30)) $((64 * M)))
	local t0=$SECONDS
	if out=$(timeout 300 qemu-img convert -n -f raw -O raw "$CK/random.img" "$win" 2>&1); then
		local tc=$((SECONDS - t0))
		if out=$(timeout 300 qemu-img compare -f raw "$CK/random.img" "$win" 2>&1); then
			pass qemu.convert "64 MiB random: qemu-img convert (${tc}s) then compare: $out"
		else
			fail qemu.convert "qemu-img compare: $out"
		fi
	else
		fail qemu.convert "qemu-img convert: $out"
	fi
	# ... and the same bytes in a new session through the whole LUN.
	out=$(timeout 120 qemu-img compare -f raw "$CK/random.img" "$(iscsi_json "$VFA_PORT" "$VFA_IQN" $((1 << 30)) $((64 * M)))" 2>&1) || true
	[[ $out == "Images are identical." ]] || fail qemu.convert-reread "$out"
	rm -f "$CK/random.img"

	# The idle session finishes.
	local rc=0
	wait "$idle_pid" || rc=$?
	out=$(cat "$CK/idle.out")
	local took=$((SECONDS - idle_t0))
	if ((rc == 0)) && qio_ok "$out" && [ "$(grep -c '^\(wrote\|read\)' <<<"$out")" = 5 ] && ((took >= 20)); then
		pass qemu.idle "a session idle for 20 s kept working (5 I/Os around the sleep, ${took}s)"
	else
		fail qemu.idle "status $rc after ${took}s: $(grep -E 'failed|Pattern|rror' <<<"$out" | top 3 | tr '\n' ' ') ($(grep -c '^\(wrote\|read\)' <<<"$out") of 5 I/Os)"
	fi

	vfa_finish qemu
}
