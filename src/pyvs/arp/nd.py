"""IPv6 neighbour discovery (RFC 4861), IPv6's ARP: solicitations, advertisements, and their frames.

- A neighbour solicitation (NS) asks who has a target address; its source link-layer option teaches the
  receivers the asker's MAC. Sent to the target's solicited-node multicast group, or unicast to confirm.
- A neighbour advertisement (NA) answers one (Solicited flag) or announces an address unasked, to all nodes:
  with the Override flag, neighbours that have an entry for the address take the new MAC (the VIP takeover's
  counterpart of gratuitous ARP). Linux creates no entry from an unsolicited NA (accept_untracked_na=0).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from ipaddress import IPv6Address

from pyvs.arp.packets import ETH_P_IPV6, IPPROTO_ICMPV6, ethernet, ipv6_packet, with_checksum
from pyvs.mac import mac_bytes, mac_text

ND_NEIGHBOUR_SOLICITATION = 135
ND_NEIGHBOUR_ADVERTISEMENT = 136
ND_HOP_LIMIT = 255  # a receiver drops ND that crossed a router (RFC 4861 7.1)
OPT_SOURCE_LL, OPT_TARGET_LL = 1, 2
NA_ROUTER, NA_SOLICITED, NA_OVERRIDE = 0x80, 0x40, 0x20
ALL_NODES = IPv6Address("ff02::1")
UNSPECIFIED = IPv6Address("::")

_ETH = struct.Struct("!6s6sH")
_IP6 = struct.Struct("!IHBB16s16s")
_ND = struct.Struct("!BBHB3x16s")  # type, code, checksum, flags (NA; reserved in NS), target


def solicited_node(address: IPv6Address) -> IPv6Address:
    """ff02::1:ffXX:XXXX, the group an NS for `address` is sent to."""
    return IPv6Address(int(IPv6Address("ff02::1:ff00:0")) | int(address) & 0xFFFFFF)


def multicast_mac(group: IPv6Address) -> str:
    """33:33 and the group's last four bytes (RFC 2464)."""
    return mac_text(b"\x33\x33" + group.packed[-4:])


@dataclass(frozen=True)
class Nd:
    """One neighbour solicitation or advertisement over Ethernet."""

    kind: int  # ND_NEIGHBOUR_SOLICITATION or ND_NEIGHBOUR_ADVERTISEMENT
    eth_src: str
    eth_dst: str
    src: IPv6Address
    dst: IPv6Address
    target: IPv6Address
    lladdr: str | None  # the source link-layer option of an NS, the target link-layer option of an NA
    flags: int = 0  # NA: router, solicited, override

    @property
    def solicitation(self) -> bool:
        return self.kind == ND_NEIGHBOUR_SOLICITATION

    @property
    def advertisement(self) -> bool:
        return self.kind == ND_NEIGHBOUR_ADVERTISEMENT

    @property
    def mac(self) -> str:
        """The MAC this message claims for its address: the option's, else the frame's source."""
        return self.lladdr or self.eth_src

    def frame(self) -> bytes:
        option = b""
        if self.lladdr is not None:
            kind = OPT_SOURCE_LL if self.solicitation else OPT_TARGET_LL
            option = struct.pack("!BB6s", kind, 1, mac_bytes(self.lladdr))
        message = _ND.pack(self.kind, 0, 0, self.flags, self.target.packed) + option
        message = with_checksum(self.src, self.dst, IPPROTO_ICMPV6, message, 2)
        return ethernet(self.eth_dst, self.eth_src, ETH_P_IPV6,
                        ipv6_packet(self.src, self.dst, IPPROTO_ICMPV6, message, ND_HOP_LIMIT))


def neighbour_solicitation(target: IPv6Address, mac: str, src: IPv6Address, unicast_mac: str | None = None) -> Nd:
    """Who has `target`, asked from (src, mac): to its solicited-node group, or to `unicast_mac` and the target
    itself (a confirmation, as NUD sends)."""
    if unicast_mac is not None:
        return Nd(ND_NEIGHBOUR_SOLICITATION, mac, unicast_mac, src, target, target, mac)
    group = solicited_node(target)
    return Nd(ND_NEIGHBOUR_SOLICITATION, mac, multicast_mac(group), src, group, target, mac)


def unsolicited_advertisement(address: IPv6Address, mac: str) -> Nd:
    """`address is at mac`, to all nodes, overriding what they have (RFC 4861 7.2.6)."""
    return Nd(ND_NEIGHBOUR_ADVERTISEMENT, mac, multicast_mac(ALL_NODES), address, ALL_NODES, address, mac,
              NA_OVERRIDE)


def parse_nd(frame: bytes) -> Nd | None:
    """The NS or NA of an Ethernet frame (IPv6 header directly followed by ICMPv6), None for anything else."""
    if len(frame) < _ETH.size + _IP6.size + _ND.size:
        return None
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IPV6:
        return None
    first, length, next_header, hop_limit, src, dst = _IP6.unpack_from(frame, _ETH.size)
    if first >> 28 != 6 or next_header != IPPROTO_ICMPV6 or hop_limit != ND_HOP_LIMIT:
        return None
    message = frame[_ETH.size + _IP6.size : _ETH.size + _IP6.size + length]
    if len(message) < _ND.size:
        return None
    kind, code, _, flags, target = _ND.unpack_from(message)
    if kind not in (ND_NEIGHBOUR_SOLICITATION, ND_NEIGHBOUR_ADVERTISEMENT) or code != 0:
        return None
    wanted = OPT_SOURCE_LL if kind == ND_NEIGHBOUR_SOLICITATION else OPT_TARGET_LL
    lladdr = None
    options = message[_ND.size :]
    while len(options) >= 8 and options[1]:
        if options[0] == wanted and options[1] == 1:
            lladdr = mac_text(options[2:8])
        options = options[options[1] * 8 :]
    return Nd(kind, mac_text(src_mac), mac_text(dst_mac), IPv6Address(src), IPv6Address(dst),
              IPv6Address(target), lladdr, flags if kind == ND_NEIGHBOUR_ADVERTISEMENT else 0)
