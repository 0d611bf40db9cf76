# shellcheck shell=bash
# check conformance: libiscsi's iscsi-test-cu against the real array, every
# SCSI.* and iSCSI.* family one at a time (as iscsi/conformance_test.go runs
# it against the in-memory device), destructive tests included, two
# initiator names, and a second portal for SCSI.MultipathIO.
#
# Bar: zero failures, at least CU_MIN_PASS passes, and no skip except the
# ones iscsi/conformance_test.go documents (same suites, same reasons).

CU_MIN_PASS=${CU_MIN_PASS:-170}
CU_INI1=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test
CU_INI2=iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test-2

# cu_allowed_skip SUITE REASON: the documented skips of conformance_test.go.
cu_allowed_skip() {
	case $1 in
	SCSI.Sanitize) [[ $2 == *"--allow-sanitize flag is not set"* ]] ;;
	SCSI.PreventAllow) [[ $2 == *"Logical unit is not removable"* ]] ;;
	SCSI.StartStopUnit) [[ $2 == *"Media is not removable"* ]] ;;
	SCSI.ReadOnly) [[ $2 == *"Logical unit is not write-protected"* ]] ;;
	*) false ;;
	esac
}

# cu_parse SUITE FILE: one line per test, "pass|fail|skip<TAB>SUITE.TEST<TAB>reason",
# from iscsi-test-cu --verbose output; then "summary<TAB>RAN<TAB>FAILED" or
# "nosummary".
cu_parse() {
	awk -v suite="$1" '
	function flush() {
		if (name == "") return
		outcome = "pass"; reason = ""
		if (body ~ /(^|\n)FAILED/ || body ~ /\n[ \t]+[0-9]+\. [^ \t]+\.c:[0-9]+/) {
			outcome = "fail"; reason = body
		} else if (match(body, /\[SKIPPED\][^\n]*/)) {
			outcome = "skip"; reason = substr(body, RSTART, RLENGTH)
		}
		gsub(/[\t\n]+/, " ", reason)
		printf "%s\t%s.%s\t%s\n", outcome, suite, name, substr(reason, 1, 600)
		name = ""
	}
	/^  Test: / { flush(); name = $2; i = index($0, "..."); body = (i ? substr($0, i + 3) : ""); next }
	/^Run Summary/ { flush(); insum = 1; next }
	insum && $1 == "tests" { ran = $3; failed = $5; have = 1; next }
	name != "" { body = body "\n" $0 }
	END { flush(); if (have) printf "summary\t%s\t%s\n", ran, failed; else print "nosummary" }
	' "$2"
}

check_conformance() {
	need conformance iscsi-test-cu || return 0
	local d=$CK/array
	small_init "$d" >"$CK/why" || { fail conformance "$(cat "$CK/why")"; return; }
	# Two portals: iscsi-test-cu's multipath tests log in through both.
	local p2
	p2=$(free_port) || { fail conformance "no free port"; return; }
	vfa_start "$d" --demo --iscsi "127.0.0.1:$p2" >"$CK/why" || { fail conformance "$(cat "$CK/why")"; return; }
	local url1=$VFA_URL url2=iscsi://127.0.0.1:$p2/$VFA_IQN/1

	local suites
	suites=$(iscsi-test-cu --list | grep -E '^(SCSI|iSCSI)\.[^.]+$') || true
	if (($(wc -l <<<"$suites") < 40)); then
		fail conformance "iscsi-test-cu --list gave only $(wc -l <<<"$suites") families"
		return
	fi
	local suite out rc t0 bad=0
	: >"$CK/all"
	for suite in $suites; do
		out=$CK/cu-$suite.out
		t0=$SECONDS
		rc=0
		timeout -k 10 240 iscsi-test-cu --dataloss --verbose -i "$CU_INI1" -I "$CU_INI2" \
			--test="$suite" "$url1" "$url2" >"$out" 2>&1 || rc=$?
		cu_parse "$suite" "$out" >"$CK/parsed"
		grep -v -E '^(summary|nosummary)' "$CK/parsed" >>"$CK/all" || true
		local sum ran nfail parsed
		sum=$(tail -1 "$CK/parsed")
		parsed=$(grep -c -v -E '^(summary|nosummary)' "$CK/parsed" || true)
		if ((rc != 0)); then
			fail "conformance.$suite" "iscsi-test-cu exited with status $rc after $((SECONDS - t0))s$( ((rc == 124)) && echo ' (timeout)'): $(tail -5 "$out" | tr '\n' ' ')"
			bad=1
		elif [ "$sum" = nosummary ]; then
			fail "conformance.$suite" "no run summary (did the target drop the session or crash?): $(tail -5 "$out" | tr '\n' ' ')"
			bad=1
		else
			IFS=$'\t' read -r _ ran nfail <<<"$sum"
			if [ "$ran" != "$parsed" ] || { [ "$nfail" != 0 ] && ! grep -q '^fail' "$CK/parsed"; }; then
				fail "conformance.$suite" "parsed $parsed tests, the summary says $ran ran and $nfail failed"
				bad=1
			fi
		fi
		if ! alive "$VFA_PID"; then
			fail "conformance.$suite" "vfa died during this family: $(tail -5 "$VFA_LOG" | tr '\n' ' ')"
			return
		fi
	done

	local outcome name reason npass=0 nskip=0 nfailed=0
	while IFS=$'\t' read -r outcome name reason; do
		case $outcome in
		pass) npass=$((npass + 1)) ;;
		skip)
			nskip=$((nskip + 1))
			local s=${name%.*}
			if ! cu_allowed_skip "$s" "$reason"; then
				fail "conformance.$name" "skipped, and not a documented skip: $reason"
				bad=1
			fi
			;;
		fail)
			nfailed=$((nfailed + 1))
			fail "conformance.$name" "$reason"
			bad=1
			;;
		esac
	done <"$CK/all"
	local total=$((npass + nskip + nfailed))
	if ((npass < CU_MIN_PASS)); then
		fail conformance "$npass passes, want at least $CU_MIN_PASS"
		bad=1
	fi
	if ((bad == 0)); then
		pass conformance "iscsi-test-cu on the real array: $total tests, $npass passed, $nfailed failed, $nskip skipped (documented skips only)"
	else
		info "iscsi-test-cu on the real array: $total tests, $npass passed, $nfailed failed, $nskip skipped"
	fi
	vfa_finish conformance
}
