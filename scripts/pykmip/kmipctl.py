#!/usr/bin/python3
"""kmipctl.py: the KMS administrator's side of the RDL drill, with PyKMIP's
own client (Debian python3-pykmip). It authenticates with DIR/pki/admin.crt,
whose CN (purefa) is the owner PyKMIP gives the array's keys to, so it may
revoke, destroy and replace them.

  kmipctl.py DIR PORT locate NAME          unique identifiers named NAME
  kmipctl.py DIR PORT state UID            the key's State attribute
  kmipctl.py DIR PORT revoke UID compromise|cessation
  kmipctl.py DIR PORT destroy UID
  kmipctl.py DIR PORT create NAME          a new active AES-256 key; prints its UID
"""
import sys
import warnings

warnings.filterwarnings("ignore")
import logging

logging.disable(logging.CRITICAL)

from kmip import enums
from kmip.core.factories import attributes
from kmip.pie import client as pie


def main(argv):
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    d, port, cmd, args = argv[0], int(argv[1]), argv[2], argv[3:]
    c = pie.ProxyKmipClient(hostname="127.0.0.1", port=port,
                            cert=d + "/pki/admin.crt", key=d + "/pki/admin.key", ca=d + "/pki/ca.crt",
                            ssl_version="PROTOCOL_SSLv23", config_file="/dev/null",
                            kmip_version=enums.KMIPVersion.KMIP_1_2)
    with c:
        if cmd == "locate":
            name = attributes.AttributeFactory().create_attribute(enums.AttributeType.NAME, args[0])
            for uid in c.locate(attributes=[name]):
                print(uid)
        elif cmd == "state":
            _, attrs = c.get_attributes(args[0], ["State"])
            for a in attrs:
                print(a.attribute_value.value.name)
        elif cmd == "revoke":
            reason = {"compromise": enums.RevocationReasonCode.KEY_COMPROMISE,
                      "cessation": enums.RevocationReasonCode.CESSATION_OF_OPERATION}[args[1]]
            kw = {"compromise_occurrence_date": 1} if args[1] == "compromise" else {}
            c.revoke(reason, args[0], revocation_message="RDL drill", **kw)
        elif cmd == "destroy":
            c.destroy(args[0])
        elif cmd == "create":
            uid = c.create(enums.CryptographicAlgorithm.AES, 256, name=args[0],
                           cryptographic_usage_mask=[enums.CryptographicUsageMask.ENCRYPT,
                                                     enums.CryptographicUsageMask.DECRYPT])
            c.activate(uid)
            print(uid)
        else:
            print(__doc__, file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # one line for the drill's log
        print("kmipctl: %s: %s" % (type(e).__name__, e), file=sys.stderr)
        sys.exit(1)
