#!/bin/bash
# pki.sh DIR: the test PKI of the RDL drill, made with openssl in DIR:
#   ca.crt/key        the KMS CA: signs the server's certificate and the
#                     array's CSR (kms-sign.sh)
#   server.crt/key    the PyKMIP server (RSA 2048, SAN IP:127.0.0.1, localhost)
#   admin.crt/key     CN=purefa, clientAuth: the KMS administrator's tool
#                     (kmipctl.py) acting as the owner of the array's keys
#                     (PyKMIP gives objects to the creating certificate's CN)
#   rogue-ca.crt/key  a CA the KMS does not trust
# Idempotent: an existing ca.crt leaves DIR alone.
set -euo pipefail
D=$1
mkdir -p "$D"
cd "$D"
[ -f ca.crt ] && exit 0
days=3650
ca() { # ca NAME SUBJECT
	openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days $days -keyout "$1.key" -out "$1.crt" -subj "$2" \
		-addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}
leaf() { # leaf NAME SUBJECT EXTENSIONS
	openssl req -new -newkey rsa:2048 -nodes -keyout "$1.key" -out "$1.csr" -subj "$2" 2>/dev/null
	printf '%b\n' "$3" >"$1.ext"
	openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days $days -sha256 \
		-extfile "$1.ext" -out "$1.crt" 2>/dev/null
	rm -f "$1.csr" "$1.ext"
}
ca ca "/O=vfa drill KMS/CN=vfa drill KMS CA"
ca rogue-ca "/O=Elsewhere/CN=Untrusted CA"
leaf server "/O=vfa drill KMS/CN=pykmip" \
	'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost'
leaf admin "/O=vfa drill KMS/CN=purefa" \
	'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth'
chmod 600 ./*.key
