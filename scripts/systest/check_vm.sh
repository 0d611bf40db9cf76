# shellcheck shell=bash
# check vm: the real Linux initiator. scripts/openiscsi-vm.sh boots a QEMU
# guest with open-iscsi that discovers the array at 10.0.2.2:PORT (vfa runs
# with --portal-address 10.0.2.2:PORT), logs in, checks the identity (PURE,
# FlashArray, wwid naa.624a9370<serial>), makes ext4, writes, fstrims,
# fscks, verifies and logs out; then vfa is stopped (SIGTERM) and started
# again and a second guest verifies the same LUN.
#
# With the SSH management CLI (vfa run --ssh, vfa init --admin-key) the
# array is configured the way an administrator would: host1 with the
# guest's IQN and a CHAP secret, volume vol1 (2G) connected to it; the guest
# first tries a wrong secret (refused) and logs in with CHAP. libiscsi
# checks the same from the host side: no CHAP, a wrong secret, another
# initiator (in no host: logs in, sees no LUN 1). Without the CLI (or with
# VFA_SYSTEST_VM=demo), the demo volume (no CHAP) is used.

VM_INITIATOR=iqn.2004-10.org.vfa:openiscsi-vm
VM_CHAP_USER=host1
VM_CHAP_SECRET=host1-secret-12

# pure CMD...: run a management command over SSH as pureuser.
pure() {
	timeout 60 ssh -i "$CK/adminkey" -p "$VFA_SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
		-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR pureuser@127.0.0.1 "$@"
}

check_vm() {
	need vm qemu-system-x86_64 iscsi-inq || return 0
	local mode=demo
	if [ "${VFA_SYSTEST_VM:-}" = demo ]; then
		info "vm: VFA_SYSTEST_VM=demo: the demo volume without CHAP"
	elif vfa_has_flag run ssh && vfa_has_flag init admin-key; then
		need vm ssh ssh-keygen || return 0
		mode=chap
	fi
	local d=$CK/array out rc port
	port=$(free_port) || { fail vm "no free port"; return; }
	local vm_args=(-p "$port" --timeout 300 --vendor PURE --model FlashArray --sums "$CK/sums")
	if [ "$mode" = chap ]; then
		ssh-keygen -q -t ed25519 -N '' -C systest -f "$CK/adminkey"
		small_init "$d" --admin-key "$CK/adminkey.pub" >"$CK/why" || { fail vm "$(cat "$CK/why")"; return; }
		VFA_PORT_WANT=$port vfa_start "$d" --portal-address "10.0.2.2:$port" >"$CK/why" ||
			{ fail vm "$(cat "$CK/why")"; return; }
		[ -n "$VFA_SSH_PORT" ] || { fail vm "vfa run printed no management port"; return; }
		local step
		for step in "purehost create --iqnlist $VM_INITIATOR host1" "purevol create --size 2G vol1" \
			"purehost connect --vol vol1 host1"; do
			# shellcheck disable=SC2086
			out=$(pure $step 2>&1 </dev/null) || { fail vm.setup "$step: $out"; return; }
		done
		out=$(printf '%s\n' "$VM_CHAP_SECRET" | pure purehost setattr --host-user "$VM_CHAP_USER" --host-password host1 2>&1) ||
			{ fail vm.setup "purehost setattr --host-user --host-password: $out"; return; }
		local serial
		serial=$(pure purevol list --csv --notitle vol1 2>&1 | awk -F, '{ print $NF }' | tr -d '"\r') || true
		[[ $serial =~ ^[0-9A-F]{24}$ ]] || serial=$(pure purevol list vol1 2>&1 | awk 'NR == 2 { print $NF }')
		[[ $serial =~ ^[0-9A-F]{24}$ ]] || { fail vm.setup "cannot read vol1's serial: $(pure purevol list vol1 2>&1 | clip 300)"; return; }
		pass vm.setup "host1 ($VM_INITIATOR, CHAP user $VM_CHAP_USER), vol1 2G serial $serial at LUN 1, over ssh -p $VFA_SSH_PORT"
		# The target asks a CHAP host to authenticate its discovery session
		# too, so the guest does (open-iscsi's default discovery has no CHAP).
		vm_args+=(-u "$VM_CHAP_USER" -s "$VM_CHAP_SECRET" --discovery-chap --wwid-prefix "naa.624a9370${serial,,}")
		vm_host_side "$serial"
	else
		small_init "$d" >"$CK/why" || { fail vm "$(cat "$CK/why")"; return; }
		VFA_PORT_WANT=$port vfa_start "$d" --demo --portal-address "10.0.2.2:$port" >"$CK/why" ||
			{ fail vm "$(cat "$CK/why")"; return; }
		[ "${VFA_SYSTEST_VM:-}" = demo ] || info "vm: no SSH management CLI in $BIN: the demo volume without CHAP"
		vm_args+=(--wwid-prefix naa.624a937)
	fi

	local run_args=()
	[ "$mode" = demo ] || run_args=(--bad-chap)
	rc=0
	out=$("$VFA_SCRIPTS/openiscsi-vm.sh" "${vm_args[@]}" "${run_args[@]}" -t "$VFA_IQN" --log "$CK/guest-run.log" \
		run 2>"$CK/vm-run.err") || rc=$?
	if ((rc == 0)) && [[ $out == "RESULT PASS"* ]]; then
		pass "vm.run[$mode]" "$([ "$mode" = demo ] || echo 'wrong secret refused, CHAP login, ')$(grep -o 'vendor=[^ ]* model=[^ ]* wwid=[^ ]*\|fstrim=[^ ]*' "$CK/vm-run.err" | tr '\n' ' ')mkfs, write, fsck, verify, logout; $(grep -o 'wall=.*' <<<"$out")"
	else
		fail "vm.run[$mode]" "$out $(grep -v '^\[openiscsi-vm ' "$CK/vm-run.err" | tail -5 | clip 800)"
		vfa_finish vm
		return
	fi

	if ! vfa_term >"$CK/why"; then
		fail vm.restart "$(cat "$CK/why")"
		return
	fi
	if [ "$mode" = chap ]; then
		VFA_PORT_WANT=$port vfa_start "$d" --portal-address "10.0.2.2:$port" >"$CK/why" ||
			{ fail vm.restart "$(cat "$CK/why")"; return; }
	else
		VFA_PORT_WANT=$port vfa_start "$d" --demo --portal-address "10.0.2.2:$port" >"$CK/why" ||
			{ fail vm.restart "$(cat "$CK/why")"; return; }
	fi
	rc=0
	out=$("$VFA_SCRIPTS/openiscsi-vm.sh" "${vm_args[@]}" -t "$VFA_IQN" --log "$CK/guest-verify.log" \
		verify 2>"$CK/vm-verify.err") || rc=$?
	if ((rc == 0)) && [[ $out == "RESULT PASS"* ]]; then
		pass "vm.verify[$mode]" "after a restart of vfa: $(cut -c1-80 <<<"$out") ... $(grep -o 'wall=.*' <<<"$out")"
	else
		fail "vm.verify[$mode]" "$out $(grep -v '^\[openiscsi-vm ' "$CK/vm-verify.err" | tail -5 | clip 800)"
	fi
	vfa_finish vm
}

# vm_host_side SERIAL: CHAP and LUN masking seen by libiscsi on the host.
vm_host_side() {
	local serial=$1 out rc base="127.0.0.1:$VFA_PORT/$VFA_IQN/1"
	rc=0
	out=$(timeout 30 iscsi-inq -i "$VM_INITIATOR" "iscsi://$base" 2>&1) || rc=$?
	if ((rc != 0)) && [[ $out == *"Authentication failure"* ]]; then
		pass vm.chap-required "host1's initiator without CHAP: $out"
	else
		fail vm.chap-required "host1's initiator without CHAP: status $rc: $(clip 300 <<<"$out")"
	fi
	rc=0
	out=$(timeout 30 iscsi-inq -i "$VM_INITIATOR" "iscsi://$VM_CHAP_USER%wrong-secret-99@$base" 2>&1) || rc=$?
	if ((rc != 0)) && [[ $out == *"Authentication failure"* ]]; then
		pass vm.chap-wrong "a wrong secret: $out"
	else
		fail vm.chap-wrong "a wrong secret: status $rc: $(clip 300 <<<"$out")"
	fi
	rc=0
	out=$(timeout 30 iscsi-inq -i "$VM_INITIATOR" -e 1 -c 128 "iscsi://$VM_CHAP_USER%$VM_CHAP_SECRET@$base" 2>&1) || rc=$?
	if ((rc == 0)) && [[ $out == *"[$serial]"* ]]; then
		pass vm.chap-login "CHAP login; LUN 1 is vol1 (serial $serial)"
	else
		fail vm.chap-login "status $rc: $(clip 300 <<<"$out")"
	fi
	rc=0
	out=$(timeout 30 iscsi-inq -i iqn.2024-01.org.vfa:not-a-host "iscsi://$base" 2>&1) || rc=$?
	if ((rc != 0)) && [[ $out == *"LOGICAL_UNIT_NOT_SUPPORTED"* ]]; then
		pass vm.masking "an initiator in no host logs in and has no LUN 1: $out"
	else
		fail vm.masking "an initiator in no host, LUN 1: status $rc: $(clip 300 <<<"$out")"
	fi
}
