# shellcheck shell=bash
# check masking: LUN masking and changes made over the SSH CLI, seen by
# libiscsi initiators: a host's initiator sees its volume, another initiator
# sees nothing; disconnect makes it vanish; a resize shows the new capacity;
# a host group's connection reaches every member.

check_masking() {
	need masking ssh ssh-keygen iscsi-ls iscsi-readcapacity16 || return 0
	local d=$CK/array out
	local A=iqn.2026-11.org.vfa:masking-a B=iqn.2026-11.org.vfa:masking-b C=iqn.2026-11.org.vfa:masking-c
	ssh-keygen -q -t ed25519 -N '' -C systest -f "$CK/adminkey"
	small_init "$d" --admin-key "$CK/adminkey.pub" >"$CK/why" || { fail masking "$(cat "$CK/why")"; return; }
	vfa_start "$d" >"$CK/why" || { fail masking "$(cat "$CK/why")"; return; }
	local portal=iscsi://127.0.0.1:$VFA_PORT url=iscsi://127.0.0.1:$VFA_PORT/$VFA_IQN/1
	mpure() {
		timeout 60 ssh -i "$CK/adminkey" -p "$VFA_SSH_PORT" -o BatchMode=yes -o StrictHostKeyChecking=no \
			-o UserKnownHostsFile=/dev/null -o LogLevel=ERROR pureuser@127.0.0.1 "$@" 2>&1
	}
	luns() { timeout 30 iscsi-ls -i "$1" -s "$portal" 2>&1 | grep -c '^Lun:' || true; }

	out=$(mpure purehost create --iqnlist "$A" hosta && mpure purehost create --iqnlist "$C" hostc &&
		mpure purevol create --size 1G volm && mpure purehost connect --vol volm hosta) ||
		{ fail masking.setup "$out"; return; }
	pass masking.setup "hosta ($A) with volm at LUN 1, hostc ($C) with nothing"

	if [ "$(luns "$A")" = 1 ] && [ "$(luns "$B")" = 0 ] && [ "$(luns "$C")" = 0 ]; then
		pass masking.visible "hosta's initiator sees one LUN; an initiator in no host and hostc's see none"
	else
		fail masking.visible "LUNs seen: A=$(luns "$A") B=$(luns "$B") C=$(luns "$C") (want 1 0 0)"
	fi

	out=$(timeout 30 iscsi-readcapacity16 -i "$A" -s "$url" 2>&1)
	if [ "$out" = $((1 << 30)) ]; then
		pass masking.capacity "1 GiB"
	else
		fail masking.capacity "want $((1 << 30)): $out"
	fi
	out=$(mpure purevol setattr --size 2G volm) || { fail masking.resize "$out"; return; }
	out=$(timeout 30 iscsi-readcapacity16 -i "$A" -s "$url" 2>&1)
	if [ "$out" = $((2 << 30)) ]; then
		pass masking.resize "purevol setattr --size 2G: the initiator reads 2 GiB"
	else
		fail masking.resize "want $((2 << 30)) after the resize: $out"
	fi

	out=$(mpure purehost disconnect --vol volm hosta) || { fail masking.disconnect "$out"; return; }
	if [ "$(luns "$A")" = 0 ]; then
		pass masking.disconnect "after purehost disconnect the LUN is gone"
	else
		fail masking.disconnect "hosta's initiator still sees $(luns "$A") LUN(s)"
	fi

	out=$(mpure purehgroup create --hostlist hosta,hostc hg && mpure purehgroup connect --vol volm hg) ||
		{ fail masking.hgroup "$out"; return; }
	local la lc
	la=$(timeout 30 iscsi-ls -i "$A" -s "$portal" 2>&1 | sed -n 's/^Lun:\([0-9]*\) .*/\1/p')
	lc=$(timeout 30 iscsi-ls -i "$C" -s "$portal" 2>&1 | sed -n 's/^Lun:\([0-9]*\) .*/\1/p')
	if [ -n "$la" ] && [ "$la" = "$lc" ] && [ "$(luns "$B")" = 0 ]; then
		pass masking.hgroup "both members see volm at the group's LUN $la; others see nothing"
	else
		fail masking.hgroup "LUNs: hosta=[$la] hostc=[$lc] other=$(luns "$B")"
	fi

	vfa_term >"$CK/why" || fail masking.shutdown "$(cat "$CK/why")"
}
