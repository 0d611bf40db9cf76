# shellcheck shell=bash
# check boot: vfa init / vfa run / a second run on the same directory / bad
# init flags / SIGTERM.

IQN_RE='^iqn\.2010-06\.com\.purestorage:flasharray\.[0-9a-f]{16}$'

check_boot() {
	local d=$CK/array why out rc

	if ! why=$(small_init "$d"); then
		fail boot.init "$why"
		return
	fi
	if grep -q '^created array ' "$CK/init.out" && [ -s "$d/array.json" ] &&
		[ "$(find "$d/ssd" -name 'ssd*.dev' | wc -l)" = 8 ] && [ -e "$d/nvram/nvram0.dev" ]; then
		pass boot.init "$(head -1 "$CK/init.out")"
	else
		fail boot.init "unexpected result: $(head -2 "$CK/init.out" | tr '\n' ' '); $(find "$d" -maxdepth 1 | tr '\n' ' ')"
	fi

	# init over an existing array must refuse and leave it alone.
	local sum_before sum_after
	sum_before=$(sha256sum "$d/array.json")
	rc=0
	out=$(timeout 20 "$BIN" init --dir "$d" --ssd-size 1G --nvram-size 64M 2>&1) || rc=$?
	sum_after=$(sha256sum "$d/array.json")
	if ((rc != 0)) && [ "$sum_before" = "$sum_after" ]; then
		pass boot.init-existing "refused (status $rc): $out"
	else
		fail boot.init-existing "vfa init on an existing array: status $rc, array.json changed: $([ "$sum_before" = "$sum_after" ] && echo no || echo yes): $out"
	fi

	# Bad flags: a clear error naming the flag, and nothing created.
	local flags
	for flags in "--ssds 3" "--ssd-size 12X" "--nvram-size 0" "--ssds 25" "--ssd-size 1K" "--au-size 3K"; do
		local bad=$CK/bad-${flags//[^A-Za-z0-9]/_}
		rc=0
		# shellcheck disable=SC2086
		out=$(timeout 20 "$BIN" init --dir "$bad" $flags 2>&1) || rc=$?
		# The message names the flag or the quantity ("--ssd-size" or "SSD size").
		local flag=${flags%% *} word
		word=${flag#--}
		word=${word//-/ }
		if ((rc != 0)) && [[ ${out,,} == *"$flag"* || ${out,,} == *"$word"* ]] && [ ! -e "$bad" ]; then
			pass "boot.init-bad[$flags]" "status $rc: $out"
		else
			fail "boot.init-bad[$flags]" "status $rc, left behind: [$(cd "$CK" && find "${bad##*/}" 2>/dev/null | tr '\n' ' ')], message: $out"
		fi
	done

	# run: serves, prints the target name.
	if ! vfa_start "$d" --demo >"$CK/why"; then
		fail boot.run "$(cat "$CK/why")"
		return
	fi
	if [[ $VFA_IQN =~ $IQN_RE ]] && grep -q '^demo: volume demo' "$VFA_OUT"; then
		pass boot.run "serving $VFA_IQN on 127.0.0.1:$VFA_PORT"
	else
		fail boot.run "unexpected target name '$VFA_IQN' or no demo volume: $(tr '\n' ' ' <"$VFA_OUT")"
	fi

	# A second run on the same directory fails at once, clearly, and leaves
	# the first one serving.
	local t0=$SECONDS args=(run --dir "$d" --iscsi 127.0.0.1:0)
	vfa_has_flag run ssh && args+=(--ssh 127.0.0.1:0)
	rc=0
	out=$(timeout 20 "$BIN" "${args[@]}" 2>&1) || rc=$?
	if ((rc != 0 && rc != 124)) && ((SECONDS - t0 <= 5)) && [[ ${out,,} =~ in\ use|locked|another ]] &&
		alive "$VFA_PID" && ! vfa_port_free "$VFA_PORT"; then
		pass boot.second-run "refused in $((SECONDS - t0))s (status $rc): $out"
	else
		fail boot.second-run "status $rc after $((SECONDS - t0))s (want a quick failure), first alive: $(alive "$VFA_PID" && echo yes || echo no): $out"
	fi

	# The LUN answers after all that.
	if ! need boot.serving iscsi-readcapacity16; then
		:
	elif out=$(timeout 20 iscsi-readcapacity16 -s "$VFA_URL" 2>&1) && [ "$out" = $((10 << 30)) ]; then
		pass boot.serving "LUN 1 is $out bytes"
	else
		fail boot.serving "READ CAPACITY(16) on LUN 1: $out"
	fi

	local errs
	errs=$(vfa_log_errors)
	[ -z "$errs" ] || fail boot.log "errors in the vfa log: $errs"

	# SIGTERM: exits 0, says so.
	if vfa_term >"$CK/why"; then
		if grep -q 'shutting down' "$VFA_OUT"; then
			pass boot.sigterm "exited 0"
		else
			fail boot.sigterm "exited 0 without saying 'shutting down'"
		fi
	else
		fail boot.sigterm "$(cat "$CK/why")"
	fi
}
