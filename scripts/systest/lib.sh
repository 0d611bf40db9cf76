# shellcheck shell=bash
# systest/lib.sh: helpers for scripts/system-test.sh and its checks (sourced,
# never run). Expects: BIN (the vfa binary), WORK (the run's temp dir),
# RESULTS (the results file) and the variables of scripts/lib.sh.
#
# Every check runs in a subshell with its own directory CK=$WORK/<check>.
# Processes it starts are recorded in $CK/pids as "PID STARTTIME NAME" so
# that the check's EXIT trap, and the main script's, stop exactly those
# processes (the start time guards against a recycled PID).

# result KIND NAME MSG: one PASS/FAIL/SKIP line, on stdout and in RESULTS.
result() {
	local kind=$1 name=$2
	shift 2
	local line
	line=$(printf '%-4s %s: %s' "$kind" "$name" "$*")
	printf '%s\n' "$line"
	printf '%s\n' "$line" >>"$RESULTS"
}
pass() { result PASS "$@"; }
fail() { result FAIL "$@"; }
skip() { result SKIP "$@"; }
info() { printf '     %s\n' "$*"; }

# top N / clip N: the first N lines / N characters (on one line) of stdin.
# Unlike head they read all of it, so the writer never dies of SIGPIPE (which
# pipefail would turn into an error).
top() { awk -v n="$1" 'NR <= n'; }
clip() { tr '\n' ' ' | cut -c "1-$1"; }

# need CHECK TOOL...: true when every tool is installed. Otherwise SKIP the
# check (FAIL it when CI=true) and return 1.
need() {
	local check=$1 t missing=()
	shift
	for t in "$@"; do command -v "$t" >/dev/null 2>&1 || missing+=("$t"); done
	((${#missing[@]} == 0)) && return 0
	if [ "${CI:-}" = true ]; then
		fail "$check" "missing tools (CI=true): ${missing[*]}; run scripts/deps.sh"
	else
		skip "$check" "missing tools: ${missing[*]} (run scripts/deps.sh; with CI=true this fails)"
	fi
	return 1
}

proc_start_time() { awk '{ print $22 }' "/proc/$1/stat" 2>/dev/null; }

# track PID NAME: record a process this check started.
track() { printf '%s %s %s\n' "$1" "$(proc_start_time "$1")" "$2" >>"$CK/pids"; }

# alive PID: the process runs and is not a zombie.
alive() {
	local st
	st=$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "$st" != Z ]
}

# stop_tracked FILE: SIGTERM, then SIGKILL after 10 s, every recorded
# process that is still the one recorded.
stop_tracked() {
	local f=$1 pid st name live=() i
	[ -s "$f" ] || return 0
	while read -r pid st name; do
		if [ -z "$pid" ] || [ "$(proc_start_time "$pid")" != "$st" ] || ! alive "$pid"; then continue; fi
		kill -TERM "$pid" 2>/dev/null && live+=("$pid")
	done <"$f"
	for ((i = 0; i < 100 && ${#live[@]} > 0; i++)); do
		local still=()
		for pid in "${live[@]}"; do alive "$pid" && still+=("$pid"); done
		live=("${still[@]}")
		((${#live[@]} == 0)) || sleep 0.1
	done
	for pid in "${live[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	: >"$f"
}

# vfa_has_flag SUBCOMMAND FLAG: the binary knows --FLAG.
vfa_has_flag() { "$BIN" "$1" --help 2>/dev/null | grep -q -- "--$2 "; }

# free_port: a port nothing listens on (the caller binds it soon after).
free_port() {
	local p i
	for ((i = 0; i < 50; i++)); do
		p=$((20000 + RANDOM % 40000))
		vfa_port_free "$p" && { echo "$p"; return 0; }
	done
	return 1
}

# small_init DIR [flags]: a small array (8 SSDs of 1 GiB, 64 MiB NVRAM).
small_init() {
	local dir=$1
	shift
	"$BIN" init --dir "$dir" --ssd-size 1G --nvram-size 64M "$@" >"$CK/init.out" 2>&1 || {
		echo "vfa init failed: $(tail -3 "$CK/init.out" | tr '\n' ' ')"
		return 1
	}
}

# vfa_start DIR [run flags]: starts `vfa run --dir DIR` in the background
# (iSCSI on 127.0.0.1:${VFA_PORT_WANT:-0}, SSH on a free port when the binary
# has --ssh), waits until it serves, and sets VFA_PID, VFA_PORT, VFA_IQN,
# VFA_SSH_PORT (empty without --ssh), VFA_OUT and VFA_LOG (its stdout and
# stderr files; a new pair per start). On failure prints why and returns 1.
VFA_STARTS=0
# shellcheck disable=SC2034 # VFA_* are read by the checks
vfa_start() {
	local dir=$1 i
	shift
	VFA_STARTS=$((VFA_STARTS + 1))
	VFA_OUT=$CK/vfa-$VFA_STARTS.out
	VFA_LOG=$CK/vfa-$VFA_STARTS.log
	local args=(run --dir "$dir" --iscsi "127.0.0.1:${VFA_PORT_WANT:-0}")
	vfa_has_flag run ssh && args+=(--ssh 127.0.0.1:0)
	"$BIN" "${args[@]}" "$@" >"$VFA_OUT" 2>"$VFA_LOG" &
	VFA_PID=$!
	track "$VFA_PID" vfa
	VFA_PORT="" VFA_IQN="" VFA_SSH_PORT=""
	for ((i = 0; i < 600; i++)); do
		if grep -q '^ *listening on ' "$VFA_OUT" 2>/dev/null && grep -q '^iSCSI target ' "$VFA_OUT"; then
			if ! vfa_has_flag run ssh || grep -q '^management: ssh -p ' "$VFA_OUT"; then
				break
			fi
		fi
		if ! alive "$VFA_PID"; then
			wait "$VFA_PID" 2>/dev/null
			echo "vfa run exited at start (status $?): $(tail -3 "$VFA_LOG" "$VFA_OUT" 2>/dev/null | tr '\n' ' ')"
			return 1
		fi
		sleep 0.1
	done
	VFA_PORT=$(sed -n 's/^ *listening on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$VFA_OUT" | top 1)
	VFA_IQN=$(sed -n 's/^iSCSI target \(iqn\.[^ ]*\)$/\1/p' "$VFA_OUT" | top 1)
	VFA_SSH_PORT=$(sed -n 's/^management: ssh -p \([0-9]*\) .*/\1/p' "$VFA_OUT" | top 1)
	if [ -z "$VFA_PORT" ] || [ -z "$VFA_IQN" ]; then
		echo "vfa run did not report its portal and target within 60 s: $(head -c 600 "$VFA_OUT" | tr '\n' ' ')"
		return 1
	fi
	if ! vfa_wait_port "$VFA_PORT" 10; then
		echo "vfa run reports 127.0.0.1:$VFA_PORT but nothing answers there"
		return 1
	fi
	VFA_URL=iscsi://127.0.0.1:$VFA_PORT/$VFA_IQN/1
}

# vfa_term: SIGTERM the running vfa and wait (at most 60 s) for it to exit;
# prints why and returns 1 if it does not exit 0 in time.
vfa_term() {
	local i rc
	wc -l <"$VFA_LOG" >"$VFA_LOG.upto" # what vfa_log_errors looks at
	kill -TERM "$VFA_PID" 2>/dev/null || { echo "vfa (pid $VFA_PID) was not running"; return 1; }
	for ((i = 0; i < 600; i++)); do alive "$VFA_PID" || break; sleep 0.1; done
	if alive "$VFA_PID"; then
		kill -KILL "$VFA_PID" 2>/dev/null
		wait "$VFA_PID" 2>/dev/null
		echo "vfa did not exit within 60 s of SIGTERM (killed)"
		return 1
	fi
	rc=0
	wait "$VFA_PID" 2>/dev/null || rc=$?
	((rc == 0)) || { echo "vfa exited with status $rc after SIGTERM: $(tail -3 "$VFA_LOG" | tr '\n' ' ')"; return 1; }
}

# vfa_kill9: SIGKILL the running vfa and reap it.
vfa_kill9() {
	kill -KILL "$VFA_PID" 2>/dev/null || true
	wait "$VFA_PID" 2>/dev/null || true
}

# vfa_log_errors: ERROR lines (and Go panics) of every vfa this check ran,
# up to the SIGTERM of those that were stopped (check restart looks at
# shutdowns).
vfa_log_errors() {
	local f
	for f in "$CK"/vfa-*.log; do
		[ -e "$f" ] || continue
		if [ -e "$f.upto" ]; then head -n "$(cat "$f.upto")" "$f"; else cat "$f"; fi
	done | grep -E 'level=ERROR|^panic:|^fatal error:|DATA RACE' | top 5 || true
}

# qemu_io ARGS...: qemu-io on raw, with a timeout; output to stdout.
qemu_io() { timeout -k 5 "${QEMU_IO_TIMEOUT:-120}" qemu-io -f raw "$@" 2>&1; }

# qio_ok OUTPUT: qemu-io output shows no failed command.
qio_ok() { ! grep -q -E 'failed|Pattern verification|error|Error' <<<"$1"; }

# iscsi_json PORT IQN [OFFSET SIZE]: a qemu json: filename for LUN 1,
# optionally a window of it.
iscsi_json() {
	local win=""
	[ -z "${3:-}" ] || win="\"offset\":$3,\"size\":$4,"
	printf 'json:{"driver":"raw",%s"file":{"driver":"iscsi","transport":"tcp","portal":"127.0.0.1:%s","target":"%s","lun":1}}' "$win" "$1" "$2"
}

# ackwriter: path of the crash-test writer, built once per run.
ackwriter() {
	local bin=$WORK/ackwriter
	if [ ! -x "$bin" ]; then
		cc -O2 -Wall -o "$bin.tmp" "$VFA_ROOT/scripts/systest/ackwriter.c" -liscsi >"$WORK/ackwriter.build" 2>&1 ||
			return 1
		mv "$bin.tmp" "$bin"
	fi
	echo "$bin"
}

# wait_lines FILE N SECS PID: wait until FILE has N lines, or PID exits, or
# SECS pass; returns 0 only in the first case.
wait_lines() {
	local f=$1 n=$2 deadline=$((SECONDS + $3)) pid=$4
	while (($(wc -l <"$f") < n)); do
		alive "$pid" || return 1
		((SECONDS < deadline)) || return 1
		sleep 0.01
	done
}

# vfa_finish CHECK: the end of a check's array: no errors in the logs of any
# vfa this check ran (looked at before the shutdown, which check restart
# covers), then SIGTERM and a clean exit.
vfa_finish() {
	local errs
	errs=$(vfa_log_errors)
	[ -z "$errs" ] || fail "$1.log" "errors in the vfa log: $errs"
	vfa_term >"$CK/why" || fail "$1.sigterm" "$(cat "$CK/why")"
}
