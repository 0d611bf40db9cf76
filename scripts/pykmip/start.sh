#!/bin/bash
# start.sh DIR [CA-FILE]: start the PyKMIP server of DIR (setup.sh) in its own
# process group, pid in DIR/run/server.pid; wait until it listens. CA-FILE
# replaces the CA it trusts for client certificates (to stop trusting the
# array's certificate).
set -euo pipefail
D=$(cd "$1" && pwd)
CA=${2:-$D/pki/ca.crt}
mkdir -p "$D/run"
: >"$D/run/server.log"
setsid pykmip-server -f "$D/server.conf" -l "$D/run/server.log" -a "$CA" >"$D/run/stdout.log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$D/run/server.pid"
for _ in $(seq 1 300); do
	if grep -q "Server successfully bound" "$D/run/server.log" 2>/dev/null; then
		exit 0
	fi
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
done
echo "pykmip-server did not start; see $D/run/server.log" >&2
exit 1
