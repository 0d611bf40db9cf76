# shellcheck shell=bash
# check rdl: the Rapid Data Locking drill against PyKMIP,
# scripts/rdl-drill.sh (written and owned with the security token); its
# PASS/FAIL lines are passed through as they are, its FIGURE lines shown.

check_rdl() {
	if [ ! -x "$VFA_SCRIPTS/rdl-drill.sh" ]; then
		skip rdl "scripts/rdl-drill.sh is not there"
		return 0
	fi
	local rc=0 line
	"$VFA_SCRIPTS/rdl-drill.sh" "$BIN" >"$CK/rdl.log" 2>&1 || rc=$?
	while IFS= read -r line; do
		case $line in
		"PASS "* | "FAIL "* | "SKIP "*) printf '%s\n' "$line" | tee -a "$RESULTS" ;;
		"FIGURE "*) info "$line" ;;
		esac
	done <"$CK/rdl.log"
	if ((rc != 0)) && ! grep -q '^FAIL ' "$CK/rdl.log"; then
		fail rdl "the drill stopped (status $rc): $(tail -1 "$CK/rdl.log" | clip 300)"
	fi
}
