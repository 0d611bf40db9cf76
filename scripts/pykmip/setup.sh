#!/bin/bash
# setup.sh DIR PORT: lay out a PyKMIP server (Debian python3-pykmip, installed
# by scripts/deps.sh) in DIR: DIR/pki (pki.sh), DIR/server.conf, DIR/policies,
# DIR/run (database, logs, pid). Then start.sh DIR and stop.sh DIR.
#
# PyKMIP speaks TLS 1.2 only; with an RSA server certificate a Go client must
# offer TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256 (vfa's KMIP client does).
set -euo pipefail
D=$(mkdir -p "$1" && cd "$1" && pwd)
PORT=$2
H=$(cd "$(dirname "$0")" && pwd)
command -v pykmip-server >/dev/null || { echo "pykmip-server not found: run scripts/deps.sh (as root)" >&2; exit 1; }
"$H/pki.sh" "$D/pki"
mkdir -p "$D/policies" "$D/run"
cat >"$D/server.conf" <<CONF
[server]
hostname=127.0.0.1
port=$PORT
certificate_path=$D/pki/server.crt
key_path=$D/pki/server.key
ca_path=$D/pki/ca.crt
auth_suite=TLS1.2
policy_path=$D/policies
enable_tls_client_auth=True
tls_cipher_suites=
    TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
    TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
    TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
logging_level=INFO
database_path=$D/run/pykmip.db
CONF
echo "$PORT" >"$D/port"
