"""IPVS sync protocol version 1, byte for byte as the kernel's net/netfilter/ipvs/ip_vs_sync.c writes and reads it.

A message is an 8-byte header (reserved 0, syncid, size, connection count, version 1, spare 0; big-endian) and up to
255 connection entries, each 4-byte aligned: type (bit 0: IPv6), protocol, version (4 bits, 0) and size (12 bits),
flags (IP_VS_CONN_F_*), state, client/virtual/destination ports, fwmark, timeout (seconds), then the client, virtual
and destination addresses (4 or 16 bytes each) and optional parameters (type, length, data). Pure: no I/O.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

from pyvs.model import IPAddress

SYNC_PROTO_VER = 1
DEFAULT_GROUP = "224.0.0.81"  # IP_VS_SYNC_GROUP
DEFAULT_PORT = 8848  # IP_VS_SYNC_PORT
DEFAULT_TTL = 1
HEADER = struct.Struct(">BBHBbH")  # struct ip_vs_sync_mesg
ENTRY_HEAD = struct.Struct(">BBHIHHHHII")  # struct ip_vs_sync_v4/v6 up to the addresses
V4_SIZE = ENTRY_HEAD.size + 3 * 4  # sizeof(struct ip_vs_sync_v4): 36
V6_SIZE = ENTRY_HEAD.size + 3 * 16  # sizeof(struct ip_vs_sync_v6): 72
MAX_CONNS = 255  # nr_conns is a byte
STYPE_F_INET6 = 1
SVER_SHIFT, SVER_MASK = 12, 0x0FFF
# Optional parameters: type, length, data; a type with IPVS_OPT_F_PARAM set may be skipped by a receiver that does not
# know it, any other unknown type makes it drop the entry.
IPVS_OPT_SEQ_DATA, IPVS_OPT_PE_DATA, IPVS_OPT_PE_NAME, IPVS_OPT_F_PARAM = 1, 2, 3, 1 << 6
SEQ_OPTION_SIZE = 24  # struct ip_vs_sync_conn_options: two struct ip_vs_seq of three __u32
PE_DATA_MAXLEN, PE_NAME_MAXLEN = 255, 16

# IP_VS_CONN_F_* (include/uapi/linux/ip_vs.h); only flags 0..15 are sent.
CONN_F_FWD_MASK = 0x0007
CONN_F_MASQ, CONN_F_LOCALNODE, CONN_F_TUNNEL, CONN_F_DROUTE = 0, 1, 2, 3
CONN_F_HASHED = 0x0040
CONN_F_NOOUTPUT = 0x0080
CONN_F_INACTIVE = 0x0100
CONN_F_SEQ_MASK = 0x0600
CONN_F_NO_CPORT = 0x0800
CONN_F_TEMPLATE = 0x1000
CONN_F_ONE_PACKET = 0x2000
CONN_F_BACKUP_MASK = CONN_F_FWD_MASK | CONN_F_NOOUTPUT | CONN_F_INACTIVE | CONN_F_SEQ_MASK | CONN_F_NO_CPORT | \
    CONN_F_TEMPLATE

IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP = 6, 17, 132
# Number of states per protocol (IP_VS_TCP_S_LAST, IP_VS_UDP_S_LAST, IP_VS_SCTP_S_LAST): a state beyond is refused.
PROTO_STATES = {IPPROTO_TCP: 11, IPPROTO_UDP: 1, IPPROTO_SCTP: 14}
HEADER_V0_SIZE = 4  # struct ip_vs_sync_mesg_v0: shorter than this, no message at all


class SyncCodecError(ValueError):
    """A message or entry that cannot be encoded."""


@dataclass(frozen=True)
class SyncConn:
    """One connection (or persistence template) as the sync protocol carries it."""

    protocol: int
    caddr: IPAddress
    cport: int
    vaddr: IPAddress
    vport: int
    daddr: IPAddress
    dport: int
    state: int
    flags: int = CONN_F_DROUTE
    fwmark: int = 0
    timeout: int = 0  # seconds
    options: bytes = b""  # optional parameters as sent (kept, not interpreted)

    @property
    def ipv6(self) -> bool:
        return isinstance(self.caddr, IPv6Address)

    @property
    def template(self) -> bool:
        return bool(self.flags & CONN_F_TEMPLATE)

    def size(self) -> int:
        return (V6_SIZE if self.ipv6 else V4_SIZE) + len(self.options)


def encode_conn(conn: SyncConn) -> bytes:
    """One entry (without the padding that aligns the next)."""
    families = {type(conn.caddr), type(conn.vaddr), type(conn.daddr)}
    if len(families) != 1:
        raise SyncCodecError(f"addresses of one family needed: {conn.caddr}, {conn.vaddr}, {conn.daddr}")
    size = conn.size()
    if size > SVER_MASK:
        raise SyncCodecError(f"entry of {size} bytes: at most {SVER_MASK}")
    head = ENTRY_HEAD.pack(STYPE_F_INET6 if conn.ipv6 else 0, conn.protocol, size & SVER_MASK,
                           conn.flags & ~CONN_F_HASHED & 0xFFFF, conn.state, conn.cport, conn.vport, conn.dport,
                           conn.fwmark, conn.timeout)
    return head + conn.caddr.packed + conn.vaddr.packed + conn.daddr.packed + conn.options


def _padded(length: int) -> int:
    return (length + 3) & ~3


def encode_message(conns: list[SyncConn], syncid: int) -> bytes:
    """One message of `conns` (at most 255) for `syncid`, as ip_vs_sync_conn builds it."""
    if len(conns) > MAX_CONNS:
        raise SyncCodecError(f"{len(conns)} entries: a message holds at most {MAX_CONNS}")
    if not 0 <= syncid <= 255:
        raise SyncCodecError(f"syncid {syncid}: 0-255")
    body = bytearray()
    for conn in conns:
        body += b"\0" * (_padded(len(body)) - len(body))  # the kernel pads before an entry, not after the last
        body += encode_conn(conn)
    size = HEADER.size + len(body)
    if size > 0xFFFF:
        raise SyncCodecError(f"message of {size} bytes")
    return HEADER.pack(0, syncid, size, len(conns), SYNC_PROTO_VER, 0) + bytes(body)


def batches(conns: list[SyncConn], maxlen: int) -> list[list[SyncConn]]:
    """`conns` in messages of at most `maxlen` bytes (and 255 entries) each, in order."""
    out: list[list[SyncConn]] = []
    current: list[SyncConn] = []
    length = HEADER.size
    for conn in conns:
        start = _padded(length)
        if current and (start + conn.size() > maxlen or len(current) == MAX_CONNS):
            out.append(current)
            current, start = [], HEADER.size
        current.append(conn)
        length = start + conn.size()
    if current:
        out.append(current)
    return out


class Verdict(Enum):
    """What a receiver makes of a datagram (the kernel's ip_vs_process_message)."""

    OK = "ok"
    MALFORMED = "malformed"  # too short, size field wrong, or an entry that does not decode (the rest is dropped)
    WRONG_SYNCID = "wrong_syncid"
    WRONG_VERSION = "wrong_version"  # not a version 1 message (a version 0 one, or reserved bits set)


@dataclass
class Decoded:
    verdict: Verdict
    syncid: int = 0
    conns: list[SyncConn] = field(default_factory=list)
    skipped: int = 0  # entries the kernel would skip: unknown protocol, invalid state, unknown mandatory option
    problem: str = ""


def _address(raw: bytes, ipv6: bool) -> IPAddress:
    return IPv6Address(raw) if ipv6 else IPv4Address(raw)


def _options(data: bytes) -> str | None:
    """None when the entry's options are acceptable; "skip" for an unknown mandatory one; else the problem."""
    seen: set[int] = set()
    p = 0
    while p < len(data):
        if p + 2 > len(data):
            return "option header cut off"
        ptype, plen = data[p], data[p + 1]
        p += 2
        if not plen or p + plen > len(data):
            return "option length"
        kind = ptype & ~IPVS_OPT_F_PARAM
        if kind in seen and kind in (IPVS_OPT_SEQ_DATA, IPVS_OPT_PE_DATA, IPVS_OPT_PE_NAME):
            return f"option {kind} twice"
        seen.add(kind)
        if kind == IPVS_OPT_SEQ_DATA and plen != SEQ_OPTION_SIZE:
            return "sequence option length"
        if (kind == IPVS_OPT_PE_DATA and plen > PE_DATA_MAXLEN) or (kind == IPVS_OPT_PE_NAME and plen > PE_NAME_MAXLEN):
            return "persistence engine option length"
        if kind not in (IPVS_OPT_SEQ_DATA, IPVS_OPT_PE_DATA, IPVS_OPT_PE_NAME) and not ptype & IPVS_OPT_F_PARAM:
            return "skip"
        p += plen
    return None


def decode_message(data: bytes, syncid: int = 0) -> Decoded:
    """Read a datagram as a backup with `syncid` (0: any) reads it. A malformed entry ends the reading: the entries
    before it are kept (the kernel has applied them by then)."""
    if len(data) < HEADER_V0_SIZE:
        return Decoded(Verdict.MALFORMED, problem="message header too short")
    if len(data) < HEADER.size:
        return Decoded(Verdict.WRONG_VERSION, problem="a version 0 header")
    reserved, msg_syncid, size, nr_conns, version, spare = HEADER.unpack_from(data)
    if size != len(data):
        return Decoded(Verdict.MALFORMED, msg_syncid, problem=f"size field {size}, datagram {len(data)} bytes")
    if syncid and msg_syncid != syncid:
        return Decoded(Verdict.WRONG_SYNCID, msg_syncid)
    if version != SYNC_PROTO_VER or reserved or spare:
        return Decoded(Verdict.WRONG_VERSION, msg_syncid, problem=f"version {version}")
    out = Decoded(Verdict.OK, msg_syncid)
    p = HEADER.size
    for _ in range(nr_conns):
        if p + V4_SIZE > len(data):
            return _malformed(out, "entry cut off")
        kind, proto, ver_size, flags, state, cport, vport, dport, fwmark, timeout = ENTRY_HEAD.unpack_from(data, p)
        length = ver_size & SVER_MASK
        end = p + length
        if end > len(data):
            return _malformed(out, "entry beyond the message")
        if ver_size >> SVER_SHIFT:
            return _malformed(out, f"entry version {ver_size >> SVER_SHIFT}")
        if kind & STYPE_F_INET6:
            ipv6, fixed = True, V6_SIZE
        elif kind == 0:
            ipv6, fixed = False, V4_SIZE
        else:
            return _malformed(out, f"entry type {kind}")
        if p + fixed > end:
            return _malformed(out, "entry shorter than its addresses")
        options = data[p + fixed:end]
        problem = _options(options)
        if problem == "skip":
            out.skipped += 1
        elif problem is not None:
            return _malformed(out, problem)
        else:
            flags &= CONN_F_BACKUP_MASK
            states = PROTO_STATES.get(proto)
            if not flags & CONN_F_TEMPLATE and (states is None or state >= states):
                out.skipped += 1  # an unsupported protocol or a state it does not have
            else:
                width = 16 if ipv6 else 4
                at = p + ENTRY_HEAD.size
                out.conns.append(SyncConn(
                    proto, _address(data[at:at + width], ipv6), cport,
                    _address(data[at + width:at + 2 * width], ipv6), vport,
                    _address(data[at + 2 * width:at + 3 * width], ipv6), dport,
                    state, flags, fwmark, timeout, bytes(options)))
        p += _padded(length)
    return out


def _malformed(out: Decoded, problem: str) -> Decoded:
    out.verdict = Verdict.MALFORMED
    out.problem = problem
    return out
