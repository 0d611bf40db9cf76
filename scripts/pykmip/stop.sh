#!/bin/bash
# stop.sh DIR: stop the PyKMIP server of DIR the way a KMS crashes: SIGKILL to
# its process group (its SIGTERM path waits 10 s per open session and keeps
# the port bound meanwhile). Waits until it is gone.
set -uo pipefail
D=$(cd "$1" && pwd)
[ -f "$D/run/server.pid" ] || exit 0
pid=$(cat "$D/run/server.pid")
kill -KILL -- "-$pid" 2>/dev/null
for _ in $(seq 1 100); do
	kill -0 "$pid" 2>/dev/null || break
	sleep 0.05
done
rm -f "$D/run/server.pid"
