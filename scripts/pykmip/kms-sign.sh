#!/bin/bash
# kms-sign.sh DIR CSR-FILE [CA-NAME] > CERT: sign an array's CSR as a client
# certificate (clientAuth, 1 year) with the CA DIR/CA-NAME.crt (default ca:
# the KMS CA; rogue-ca gives a certificate the KMS does not trust).
set -euo pipefail
D=$1 CSR=$2 CA=${3:-ca}
ext=$(mktemp)
trap 'rm -f "$ext"' EXIT
printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n' >"$ext"
openssl x509 -req -in "$CSR" -CA "$D/$CA.crt" -CAkey "$D/$CA.key" -CAcreateserial -days 365 -sha256 -extfile "$ext" 2>/dev/null
