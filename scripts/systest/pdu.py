#!/usr/bin/env python3
"""pdu.py: hand-made iSCSI PDUs against a target, for the negative cases a
well-behaved initiator never sends (RFC 7143 framing, no library).

    pdu.py HOST PORT TARGET_IQN LUN [CASE...]

Each case opens its own connection and prints one line, "ok CASE: what came
back" or "FAIL CASE: why"; the exit status is 1 if any case failed. Cases
(all by default):

  garbage          48 bytes of 0xff as the first PDU: the target closes the
                   connection (or sends a Reject) without waiting for more.
  login-oversized  a Login Request announcing a 16 MiB data segment: refused
                   (connection closed, or a Login Response with a non-zero
                   status class) without the target waiting for the data.
  unknown-target   a login to a target name that does not exist: Login
                   Response status 0x0203 (Target Not Found).
  truncated        half a BHS in full feature phase, then the connection is
                   closed: the target must simply survive (later cases prove it).
  data-oversized   a SCSI WRITE whose immediate data segment announces 16 MiB,
                   more than the target's MaxRecvDataSegmentLength: Reject or
                   connection closed, without waiting for the data.
  bad-opcode       a PDU with a reserved initiator opcode (0x1d): Reject
                   (reason 0x04 protocol error or 0x05 command not supported)
                   or connection closed.
  beyond-end       READ(16) at the first LBA past the end, READ(16) that
                   straddles the end, WRITE(16) past the end: CHECK CONDITION,
                   ILLEGAL REQUEST, LOGICAL BLOCK ADDRESS OUT OF RANGE
                   (21h/00h); then a READ(16) of the last block is GOOD on the
                   same connection.
"""
import socket
import struct
import sys

TIMEOUT = 5.0  # seconds the target has to answer or close
INITIATOR = "iqn.2024-01.org.vfa:systest-pdu"


class Closed(Exception):
    pass


def pad4(n):
    return (n + 3) & ~3


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        try:
            chunk = s.recv(n - len(buf))
        except ConnectionResetError:
            raise Closed("connection reset")
        if not chunk:
            raise Closed("connection closed")
        buf += chunk
    return buf


def recv_pdu(s):
    """Returns (bhs, data) of the next PDU; raises Closed, socket.timeout."""
    bhs = recv_exact(s, 48)
    ahs = bhs[4] * 4
    dsl = int.from_bytes(bhs[5:8], "big")
    rest = recv_exact(s, ahs + pad4(dsl))
    return bhs, rest[ahs:ahs + dsl]


def opcode(bhs):
    return bhs[0] & 0x3F


def connect(host, port):
    s = socket.create_connection((host, port), timeout=TIMEOUT)
    s.settimeout(TIMEOUT)
    return s


def text_keys(pairs):
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in pairs)


def login_pdu(keys, csg=1, nsg=3, transit=True, itt=1, cmdsn=1, dsl=None, isid=b"\x40\x00\x01\x37\x00\x01"):
    flags = (0x80 if transit else 0) | (csg << 2) | nsg
    n = len(keys) if dsl is None else dsl
    bhs = bytes([0x43, flags, 0, 0, 0]) + n.to_bytes(3, "big") + isid + b"\0\0"
    bhs += struct.pack(">IHHII", itt, 0, 0, cmdsn, 0) + b"\0" * 16
    assert len(bhs) == 48
    return bhs + keys + b"\0" * (pad4(len(keys)) - len(keys))


class Session:
    def __init__(self, s):
        self.s = s
        self.itt = 2
        self.cmdsn = 1
        self.expstatsn = 0
        self.params = {}

    def login(self, target):
        keys = text_keys([
            ("InitiatorName", INITIATOR), ("SessionType", "Normal"), ("TargetName", target),
            ("HeaderDigest", "None"), ("DataDigest", "None"),
            ("MaxRecvDataSegmentLength", "262144"), ("ImmediateData", "Yes"),
            ("InitialR2T", "Yes"), ("FirstBurstLength", "65536"), ("MaxBurstLength", "262144"),
            ("ErrorRecoveryLevel", "0"), ("MaxConnections", "1"),
        ])
        for _ in range(4):
            self.s.sendall(login_pdu(keys, cmdsn=self.cmdsn))
            bhs, data = recv_pdu(self.s)
            if opcode(bhs) != 0x23:
                raise RuntimeError(f"expected a Login Response, got opcode 0x{opcode(bhs):02x}")
            status = (bhs[36], bhs[37])
            if status != (0, 0):
                return status
            for kv in data.split(b"\0"):
                if b"=" in kv:
                    k, v = kv.split(b"=", 1)
                    self.params[k.decode()] = v.decode()
            self.expstatsn = int.from_bytes(bhs[24:28], "big") + 1
            if bhs[1] & 0x80 and bhs[1] & 3 == 3:
                return (0, 0)
            keys = b""
        raise RuntimeError("login did not reach full feature phase in 4 rounds")

    def command_pdu(self, cdb, lun, read_len=0, write_data=b"", dsl=None, edtl=None):
        n = len(write_data) if dsl is None else dsl
        if edtl is None:
            edtl = read_len or n
        flags = 0x80 | (0x40 if read_len else 0) | (0x20 if edtl and not read_len else 0) | 1
        lunf = struct.pack(">HHI", lun & 0x3FFF, 0, 0)
        bhs = bytes([0x01, flags, 0, 0, 0]) + n.to_bytes(3, "big") + lunf
        bhs += struct.pack(">IIII", self.itt, edtl, self.cmdsn, self.expstatsn)
        bhs += cdb + b"\0" * (16 - len(cdb))
        assert len(bhs) == 48
        self.itt += 1
        self.cmdsn += 1
        return bhs + write_data + b"\0" * (pad4(len(write_data)) - len(write_data))

    def command(self, cdb, lun, read_len=0, write_data=b""):
        """command_once, repeated (at most 3 times) while the answer is a
        UNIT ATTENTION (a new session starts with one)."""
        for _ in range(3):
            st, data, sense = self.command_once(cdb, lun, read_len, write_data)
            t = sense_triplet(sense)
            if st != 0x02 or t is None or t[0] != 0x06:
                break
        return st, data, sense

    def command_once(self, cdb, lun, read_len=0, write_data=b""):
        """Returns (status, data, sense). Write data goes as immediate data
        when the target accepted ImmediateData, else in answer to R2Ts."""
        itt = self.itt
        immediate = self.params.get("ImmediateData", "Yes") == "Yes"
        if immediate:
            self.s.sendall(self.command_pdu(cdb, lun, read_len, write_data))
        else:
            self.s.sendall(self.command_pdu(cdb, lun, read_len, dsl=0, edtl=len(write_data)))
        data = b""
        while True:
            bhs, seg = recv_pdu(self.s)
            op = opcode(bhs)
            if op == 0x20:  # NOP-In from the target: answer pings, ignore the rest
                if bhs[16:20] == b"\xff\xff\xff\xff" and bhs[20:24] != b"\xff\xff\xff\xff":
                    nop = bytes([0x40, 0x80, 0, 0]) + b"\0" * 4 + bhs[8:16]
                    nop += b"\xff\xff\xff\xff" + bhs[20:24] + struct.pack(">II", self.cmdsn, self.expstatsn)
                    self.s.sendall(nop + b"\0" * 16)
                continue
            if op == 0x3F:
                raise RuntimeError(f"Reject reason 0x{bhs[2]:02x}")
            if int.from_bytes(bhs[16:20], "big") != itt:
                continue
            if op == 0x25:  # Data-In
                data += seg
                if bhs[1] & 0x01:
                    self.expstatsn = int.from_bytes(bhs[24:28], "big") + 1
                    return bhs[3], data, b""
                continue
            if op == 0x21:  # SCSI Response
                self.expstatsn = int.from_bytes(bhs[24:28], "big") + 1
                sense = b""
                if len(seg) >= 2:
                    sl = int.from_bytes(seg[0:2], "big")
                    sense = seg[2:2 + sl]
                return bhs[3], data, sense
            if op == 0x31:  # R2T: send the requested part as one Data-Out PDU
                ttt, off, ln = bhs[20:24], int.from_bytes(bhs[40:44], "big"), int.from_bytes(bhs[44:48], "big")
                chunk = write_data[off:off + ln]
                dout = bytes([0x05, 0x80, 0, 0, 0]) + len(chunk).to_bytes(3, "big") + bhs[8:16]
                dout += struct.pack(">I", itt) + ttt + b"\0" * 4 + struct.pack(">I", self.expstatsn)
                dout += b"\0" * 4 + struct.pack(">II", 0, off) + b"\0" * 4
                self.s.sendall(dout + chunk + b"\0" * (pad4(len(chunk)) - len(chunk)))
                continue
            raise RuntimeError(f"unexpected opcode 0x{op:02x}")


def sense_triplet(sense):
    if len(sense) >= 14 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F, sense[12], sense[13]
    if len(sense) >= 4 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F, sense[2], sense[3]
    return None


def expect_close_or(s, what, accept):
    """Waits for the target to close the connection or send a PDU accept()
    approves of. Returns a description; raises AssertionError otherwise."""
    try:
        bhs, data = recv_pdu(s)
    except Closed as e:
        return str(e)
    except socket.timeout:
        raise AssertionError(f"no answer and no close within {TIMEOUT:.0f}s after {what}")
    ok, desc = accept(bhs, data)
    if not ok:
        raise AssertionError(f"after {what}: {desc}")
    return desc


def reject_ok(reasons):
    def accept(bhs, data):
        if opcode(bhs) == 0x3F:
            if bhs[2] in reasons:
                return True, f"Reject reason 0x{bhs[2]:02x}"
            return False, f"Reject with reason 0x{bhs[2]:02x}, want one of {sorted(reasons)}"
        return False, f"unexpected opcode 0x{opcode(bhs):02x}"
    return accept


def full_session(host, port, iqn):
    s = connect(host, port)
    sess = Session(s)
    st = sess.login(iqn)
    if st != (0, 0):
        raise AssertionError(f"login refused with status {st[0]:02x}{st[1]:02x}")
    return sess


def read_capacity(sess, lun):
    st, data, sense = sess.command(bytes([0x9E, 0x10]) + b"\0" * 8 + (32).to_bytes(4, "big") + b"\0\0", lun, read_len=32)
    if st != 0 or len(data) < 12:
        raise AssertionError(f"READ CAPACITY(16): status 0x{st:02x} sense {sense_triplet(sense)}, {len(data)} bytes")
    return int.from_bytes(data[0:8], "big") + 1, int.from_bytes(data[8:12], "big")


def case_garbage(host, port, iqn, lun):
    s = connect(host, port)
    s.sendall(b"\xff" * 48)
    return expect_close_or(s, "48 bytes of 0xff", reject_ok({0x04, 0x05}))


def case_login_oversized(host, port, iqn, lun):
    s = connect(host, port)
    s.sendall(login_pdu(b"", dsl=(1 << 24) - 1)[:48])

    def accept(bhs, data):
        if opcode(bhs) == 0x23 and bhs[36] != 0:
            return True, f"Login Response status {bhs[36]:02x}{bhs[37]:02x}"
        return False, f"opcode 0x{opcode(bhs):02x} status {bhs[36]:02x}{bhs[37]:02x}"
    return expect_close_or(s, "a login PDU announcing 16 MiB of data", accept)


def case_unknown_target(host, port, iqn, lun):
    s = connect(host, port)
    st = Session(s).login(iqn[:-16] + "0123456789abcdef" if len(iqn) > 16 else iqn + ".x")
    if st != (0x02, 0x03):
        raise AssertionError(f"login status {st[0]:02x}{st[1]:02x}, want 0203 (target not found)")
    return "Login Response status 0203"


def case_truncated(host, port, iqn, lun):
    sess = full_session(host, port, iqn)
    sess.s.sendall(sess.command_pdu(bytes([0x00]), lun)[:20])
    sess.s.close()
    return "sent 20 bytes of a BHS and closed"


def case_data_oversized(host, port, iqn, lun):
    sess = full_session(host, port, iqn)
    cdb = bytes([0x8A, 0]) + (0).to_bytes(8, "big") + (32768).to_bytes(4, "big") + b"\0\0"
    sess.s.sendall(sess.command_pdu(cdb, lun, dsl=(1 << 24) - 1)[:48])
    return expect_close_or(sess.s, "a WRITE announcing 16 MiB of immediate data", reject_ok({0x04, 0x09}))


def case_bad_opcode(host, port, iqn, lun):
    sess = full_session(host, port, iqn)
    pdu = bytearray(sess.command_pdu(bytes([0x00]), lun))
    pdu[0] = 0x1D
    sess.s.sendall(bytes(pdu))
    return expect_close_or(sess.s, "a PDU with opcode 0x1d", reject_ok({0x04, 0x05}))


def case_beyond_end(host, port, iqn, lun):
    sess = full_session(host, port, iqn)
    blocks, bsize = read_capacity(sess, lun)

    def read16(lba, n):
        return bytes([0x88, 0]) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + b"\0\0"

    def write16(lba, n):
        return bytes([0x8A, 0]) + lba.to_bytes(8, "big") + n.to_bytes(4, "big") + b"\0\0"

    out = []
    for name, cdb, rl, wd in [
        ("READ(16) at the first LBA past the end", read16(blocks, 1), bsize, b""),
        ("READ(16) straddling the end", read16(blocks - 1, 2), 2 * bsize, b""),
        ("READ(16) at LBA 2^64-1", read16((1 << 64) - 1, 1), bsize, b""),
        ("WRITE(16) at the first LBA past the end", write16(blocks, 1), 0, b"\x5a" * bsize),
    ]:
        st, data, sense = sess.command(cdb, lun, read_len=rl, write_data=wd)
        t = sense_triplet(sense)
        if st != 0x02 or t != (0x05, 0x21, 0x00):
            raise AssertionError(f"{name}: status 0x{st:02x} sense {t}, want CHECK CONDITION (5, 0x21, 0x00)")
        out.append(name.split(" ")[0])
    st, data, _ = sess.command(read16(blocks - 1, 1), lun, read_len=bsize)
    if st != 0 or len(data) != bsize:
        raise AssertionError(f"READ(16) of the last block: status 0x{st:02x}, {len(data)} bytes")
    return f"{len(out)} commands past the end of {blocks} blocks: ILLEGAL REQUEST 21h/00h; last block readable"


CASES = {
    "garbage": case_garbage,
    "login-oversized": case_login_oversized,
    "unknown-target": case_unknown_target,
    "truncated": case_truncated,
    "data-oversized": case_data_oversized,
    "bad-opcode": case_bad_opcode,
    "beyond-end": case_beyond_end,
}


def main(argv):
    if len(argv) < 5:
        print(__doc__, file=sys.stderr)
        return 2
    host, port, iqn, lun = argv[1], int(argv[2]), argv[3], int(argv[4])
    names = argv[5:] or list(CASES)
    failed = 0
    for n in names:
        if n not in CASES:
            print(f"pdu.py: unknown case {n}", file=sys.stderr)
            return 2
        try:
            print(f"ok {n}: {CASES[n](host, port, iqn, lun)}", flush=True)
        except (AssertionError, RuntimeError, Closed, OSError) as e:
            failed += 1
            print(f"FAIL {n}: {e}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
