# shellcheck shell=bash
# check tools: libiscsi's iscsi-ls, iscsi-inq and iscsi-readcapacity16
# against the demo LUN: discovery, identity, capacity and provisioning.

check_tools() {
	need tools iscsi-ls iscsi-inq iscsi-readcapacity16 od || return 0
	local d=$CK/array out
	small_init "$d" >"$CK/why" || { fail tools "$(cat "$CK/why")"; return; }
	vfa_start "$d" --demo >"$CK/why" || { fail tools "$(cat "$CK/why")"; return; }
	local url=$VFA_URL

	# iscsi-ls -s: the target at our portal, LUN 1 a disk.
	out=$(timeout 30 iscsi-ls -s "iscsi://127.0.0.1:$VFA_PORT" 2>&1) || true
	if grep -q "^Target:$VFA_IQN Portal:127.0.0.1:$VFA_PORT,1" <<<"$out" &&
		grep -q '^Lun:1 .*Type:DIRECT_ACCESS' <<<"$out" && [ "$(grep -c '^Lun:' <<<"$out")" = 1 ]; then
		pass tools.iscsi-ls "$(tr '\n' ' ' <<<"$out" | tr -s ' ')"
	else
		fail tools.iscsi-ls "want the target at 127.0.0.1:$VFA_PORT with one LUN 1 DIRECT_ACCESS: $out"
	fi

	# Standard INQUIRY: PURE FlashArray.
	out=$(timeout 30 iscsi-inq "$url" 2>&1) || true
	if grep -q '^Vendor:PURE *$' <<<"$out" && grep -q '^Product:FlashArray *$' <<<"$out" &&
		grep -q '^Peripheral Device Type:DIRECT_ACCESS' <<<"$out"; then
		pass tools.inquiry "$(grep -E '^(Vendor|Product|Revision):' <<<"$out" | tr -s ' ' | tr '\n' ' ')"
	else
		fail tools.inquiry "want Vendor:PURE Product:FlashArray DIRECT_ACCESS: $(head -c 800 <<<"$out")"
	fi

	# VPD 00: the pages the architecture lists.
	out=$(timeout 30 iscsi-inq -e 1 -c 0 "$url" 2>&1) || true
	local p missing=""
	for p in 0x80 0x83 0xb0 0xb1 0xb2; do
		grep -q "^Page:$p " <<<"$out" || missing+=" $p"
	done
	if [ -z "$missing" ]; then
		pass tools.vpd-pages "$(grep -o '^Page:0x[0-9a-f]*' <<<"$out" | cut -d: -f2 | tr '\n' ' ')"
	else
		fail tools.vpd-pages "missing VPD pages:$missing: $out"
	fi

	# VPD 80: a 24-hex-digit serial.
	local serial
	out=$(timeout 30 iscsi-inq -e 1 -c 128 "$url" 2>&1) || true
	serial=$(sed -n 's/^Unit Serial Number:\[\(.*\)\]$/\1/p' <<<"$out")
	if [[ $serial =~ ^[0-9A-F]{24}$ ]]; then
		pass tools.serial "$serial"
	else
		fail tools.serial "want 24 upper-case hex digits: $out"
	fi

	# VPD 83: NAA 6 + 24a937 + 0 + serial, and the target name. iscsi-inq
	# prints the NAA designator's raw bytes with %s (up to the first zero
	# byte), so look for exactly those bytes between "Designator:[" and "]\n".
	timeout 30 iscsi-inq -e 1 -c 131 "$url" >"$CK/vpd83" 2>&1 || true
	local want prefix hexout i
	want=624a9370${serial,,}
	prefix=$want
	for ((i = 0; i < ${#want}; i += 2)); do
		[ "${want:i:2}" != 00 ] || { prefix=${want:0:i}; break; }
	done
	hexout=$(od -An -v -tx1 "$CK/vpd83" | tr -d ' \n')
	local marker
	marker=$(printf 'Designator Type:(3) NAA\nDesignator:[' | od -An -v -tx1 | tr -d ' \n')
	if ((${#want} == 32)) && ((${#prefix} >= 8)) && [[ $hexout == *"$marker${prefix}5d0a"* ]] &&
		grep -q "Designator:\[$VFA_IQN\]" "$CK/vpd83"; then
		pass tools.naa "NAA designator naa.$want (bytes up to the first zero byte compared), SCSI name string $VFA_IQN"
	else
		fail tools.naa "no NAA designator with bytes $prefix (naa.$want) or no SCSI name string $VFA_IQN: $(LC_ALL=C tr -c '[:print:]\n' '.' <"$CK/vpd83" | tail -12 | tr '\n' ' ')"
	fi

	# VPD B2: thin provisioning, unmapped blocks read as zeros.
	out=$(timeout 30 iscsi-inq -e 1 -c 178 "$url" 2>&1) || true
	if grep -q '^lbpu:1' <<<"$out" && grep -q '^lbpws:1' <<<"$out" && grep -q '^lbprz:1' <<<"$out" &&
		grep -q '^provisioning type:2' <<<"$out"; then
		pass tools.vpd-b2 "UNMAP, WRITE SAME with UNMAP, LBPRZ, thin"
	else
		fail tools.vpd-b2 "want lbpu:1 lbpws:1 lbprz:1 provisioning type:2: $(tr '\n' ' ' <<<"$out")"
	fi

	# READ CAPACITY(16): 10 GiB of 512-byte blocks, 4 KiB physical, LBPME.
	out=$(timeout 30 iscsi-readcapacity16 "$url" 2>&1) || true
	if grep -q '^Total size:10737418240$' <<<"$out" && grep -q '^LOGICAL BLOCK LENGTH IN BYTES:512$' <<<"$out" &&
		grep -q 'LOGICAL BLOCKS PER PHYSICAL BLOCK EXPONENT:3$' <<<"$out" && grep -q '^LBPME:1 LBPRZ:1$' <<<"$out"; then
		pass tools.readcapacity16 "10 GiB, 512-byte blocks, 8 per physical block, LBPME=1 LBPRZ=1"
	else
		fail tools.readcapacity16 "want 10737418240 bytes, 512/4096, LBPME:1 LBPRZ:1: $(tr '\n' ' ' <<<"$out")"
	fi

	vfa_finish tools
}
