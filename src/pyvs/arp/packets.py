"""Ethernet frames for ARP and for the doctor's probes (TCP, UDP, ICMP echo over IPv4 or IPv6), and raw AF_PACKET
sockets. Neighbour discovery (IPv6's ARP) is in pyvs.arp.nd.

Frames are built and parsed with struct alone; nothing here knows about services or reals.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_DADFAILED, IFA_F_TENTATIVE

from pyvs.links import require_link
from pyvs.mac import ZERO_MAC, mac_bytes, mac_text
from pyvs.model import IPAddress

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_IPV6 = 0x86DD
ETH_P_ALL = 0x0003
SEND_ONLY = 0  # a packet socket bound to protocol 0 receives nothing
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = "ff:ff:ff:ff:ff:ff"
ANY_IP = IPv4Address("0.0.0.0")
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_ICMPV6 = 1, 6, 17, 58
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_ECHO_REPLY, ICMP_UNREACHABLE, ICMP_ECHO = 0, 3, 8
ICMP_PORT_UNREACHABLE = 3
ICMP_ADMIN_CODES = (9, 10, 13)  # network/host administratively prohibited, communication prohibited
ICMPV6_UNREACHABLE, ICMPV6_ECHO, ICMPV6_ECHO_REPLY = 1, 128, 129
ICMPV6_PORT_UNREACHABLE = 4
ICMPV6_ADMIN_CODES = (1, 5, 6)  # administratively prohibited, source address failed policy, reject route

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP = struct.Struct("!BBHHHBBH4s4s")
_IP6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")
_UDP = struct.Struct("!HHHH")
_ICMP = struct.Struct("!BBHHH")
MIN_FRAME = 60  # Ethernet minimum without FCS


def _pad(frame: bytes) -> bytes:
    return frame + bytes(max(0, MIN_FRAME - len(frame)))


def ethernet(dst: str, src: str, ethertype: int, payload: bytes) -> bytes:
    return _pad(_ETH.pack(mac_bytes(dst), mac_bytes(src), ethertype) + payload)


# -- ARP ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arp:
    """One ARP frame for IPv4 over Ethernet."""

    op: int
    sender_mac: str
    sender_ip: IPv4Address
    target_mac: str
    target_ip: IPv4Address
    eth_src: str
    eth_dst: str

    @property
    def gratuitous(self) -> bool:
        """An announcement of the sender's own address: sender IP = target IP (RFC 5227)."""
        return self.sender_ip == self.target_ip and self.sender_ip != ANY_IP

    @property
    def probe(self) -> bool:
        """A request from 0.0.0.0 (RFC 5227 probe): it asks without claiming anything."""
        return self.op == ARP_REQUEST and self.sender_ip == ANY_IP

    def frame(self) -> bytes:
        body = _ARP.pack(1, ETH_P_IP, 6, 4, self.op, mac_bytes(self.sender_mac), self.sender_ip.packed,
                         mac_bytes(self.target_mac), self.target_ip.packed)
        return ethernet(self.eth_dst, self.eth_src, ETH_P_ARP, body)


def parse_arp(frame: bytes) -> Arp | None:
    """The ARP of an Ethernet frame, None when it is not IPv4-over-Ethernet ARP."""
    if len(frame) < _ETH.size + _ARP.size:
        return None
    dst, src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4) or op not in (ARP_REQUEST, ARP_REPLY):
        return None
    return Arp(op, mac_text(sha), IPv4Address(spa), mac_text(tha), IPv4Address(tpa), mac_text(src), mac_text(dst))


def arp_probe(target_ip: IPv4Address, mac: str) -> Arp:
    """who-has target_ip tell 0.0.0.0: every owner answers, and nobody learns anything from it."""
    return Arp(ARP_REQUEST, mac, ANY_IP, ZERO_MAC, target_ip, mac, BROADCAST)


def gratuitous_arp(ip: IPv4Address, mac: str, op: int = ARP_REQUEST, eth_dst: str = BROADCAST) -> Arp:
    """An announcement `ip is-at mac`; a reply carries target MAC = sender MAC, as Linux requires of a GARP."""
    target_mac = mac if op == ARP_REPLY else ZERO_MAC
    return Arp(op, mac, ip, target_mac, ip, mac, eth_dst)


# -- IPv4 and IPv6 probes ------------------------------------------------------------------------------


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def _ipv4(src: IPv4Address, dst: IPv4Address, proto: int, payload: bytes, ident: int = 0) -> bytes:
    header = _IP.pack(0x45, 0, _IP.size + len(payload), ident, 0x4000, 64, proto, 0, src.packed, dst.packed)
    return header[:10] + struct.pack("!H", checksum(header)) + header[12:] + payload


def ipv6_packet(src: IPv6Address, dst: IPv6Address, next_header: int, payload: bytes, hop_limit: int = 64) -> bytes:
    return _IP6.pack(6 << 28, len(payload), next_header, hop_limit, src.packed, dst.packed) + payload


def _ip(src: IPAddress, dst: IPAddress, proto: int, payload: bytes) -> bytes:
    if isinstance(src, IPv6Address) and isinstance(dst, IPv6Address):
        return ipv6_packet(src, dst, proto, payload)
    if isinstance(src, IPv4Address) and isinstance(dst, IPv4Address):
        return _ipv4(src, dst, proto, payload)
    raise ValueError(f"{src} and {dst} are of two families")


def _pseudo(src: IPAddress, dst: IPAddress, proto: int, length: int) -> bytes:
    if src.version == 6:
        return src.packed + dst.packed + struct.pack("!IxxxB", length, proto)
    return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)


def with_checksum(src: IPAddress, dst: IPAddress, proto: int, segment: bytes, offset: int) -> bytes:
    """The segment with its pseudo-header checksum written at `offset` (where zeros stand)."""
    csum = checksum(_pseudo(src, dst, proto, len(segment)) + segment)
    if proto == IPPROTO_UDP:
        csum = csum or 0xFFFF
    return segment[:offset] + struct.pack("!H", csum) + segment[offset + 2 :]


def tcp_segment(src: IPAddress, dst: IPAddress, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    """An IP packet with a TCP segment (window 64240, no options, no data)."""
    header = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    return _ip(src, dst, IPPROTO_TCP, with_checksum(src, dst, IPPROTO_TCP, header, 16))


def udp_datagram(src: IPAddress, dst: IPAddress, sport: int, dport: int, payload: bytes) -> bytes:
    segment = _UDP.pack(sport, dport, _UDP.size + len(payload), 0) + payload
    return _ip(src, dst, IPPROTO_UDP, with_checksum(src, dst, IPPROTO_UDP, segment, 6))


def icmp_echo(src: IPAddress, dst: IPAddress, ident: int, seq: int, payload: bytes = b"pyvs") -> bytes:
    """An echo request: ICMP for IPv4, ICMPv6 (whose checksum covers a pseudo-header) for IPv6."""
    if src.version == 6:
        message = _ICMP.pack(ICMPV6_ECHO, 0, 0, ident, seq) + payload
        return _ip(src, dst, IPPROTO_ICMPV6, with_checksum(src, dst, IPPROTO_ICMPV6, message, 2))
    header = _ICMP.pack(ICMP_ECHO, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return _ip(src, dst, IPPROTO_ICMP, header[:2] + struct.pack("!H", csum) + header[4:] + payload)


@dataclass(frozen=True)
class IpPacket:
    """What the doctor needs of a received IPv4 or IPv6 frame."""

    eth_src: str
    eth_dst: str
    src: IPAddress
    dst: IPAddress
    proto: int  # IPPROTO_ICMPV6 for ICMPv6
    sport: int = 0  # TCP/UDP ports; for ICMP: type and code
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0  # TCP flags
    payload: bytes = b""  # UDP data; for ICMP errors: the quoted IP header and what follows

    @property
    def icmp(self) -> bool:
        return self.proto in (IPPROTO_ICMP, IPPROTO_ICMPV6)

    @property
    def echo_reply(self) -> bool:
        return (self.proto, self.sport) in ((IPPROTO_ICMP, ICMP_ECHO_REPLY), (IPPROTO_ICMPV6, ICMPV6_ECHO_REPLY))

    def unreachable(self) -> str | None:
        """For a destination unreachable error: "port", "admin" (a firewall rejects) or "other"; else None."""
        if (self.proto, self.sport) == (IPPROTO_ICMP, ICMP_UNREACHABLE):
            port, admin = ICMP_PORT_UNREACHABLE, ICMP_ADMIN_CODES
        elif (self.proto, self.sport) == (IPPROTO_ICMPV6, ICMPV6_UNREACHABLE):
            port, admin = ICMPV6_PORT_UNREACHABLE, ICMPV6_ADMIN_CODES
        else:
            return None
        return "port" if self.dport == port else "admin" if self.dport in admin else "other"

    def quoted(self) -> tuple[int, IPAddress, int] | None:
        """An error's quoted packet: (protocol, destination, source port), None when cut short."""
        data = self.payload
        if self.proto == IPPROTO_ICMP and len(data) >= _IP.size + 2 and data[0] >> 4 == 4:
            ihl = (data[0] & 0xF) * 4
            if len(data) >= ihl + 2:
                return data[9], IPv4Address(data[16:20]), int.from_bytes(data[ihl : ihl + 2], "big")
        if self.proto == IPPROTO_ICMPV6 and len(data) >= _IP6.size + 2 and data[0] >> 4 == 6:
            return data[6], IPv6Address(data[24:40]), int.from_bytes(data[40:42], "big")
        return None


def _transport(base: IpPacket, proto: int, body: bytes) -> IpPacket:
    fields = base.__dict__
    if proto == IPPROTO_TCP and len(body) >= _TCP.size:
        sport, dport, seq, ack, _, flags, _, _, _ = _TCP.unpack_from(body)
        return IpPacket(**{**fields, "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags})
    if proto == IPPROTO_UDP and len(body) >= _UDP.size:
        sport, dport, length, _ = _UDP.unpack_from(body)
        return IpPacket(**{**fields, "sport": sport, "dport": dport, "payload": body[_UDP.size : length]})
    if proto in (IPPROTO_ICMP, IPPROTO_ICMPV6) and len(body) >= _ICMP.size:
        icmp_type, code, _, ident, seq = _ICMP.unpack_from(body)
        return IpPacket(**{**fields, "sport": icmp_type, "dport": code, "seq": ident << 16 | seq,
                           "payload": body[_ICMP.size :]})
    return base


def parse_ip(frame: bytes) -> IpPacket | None:
    """An IPv4 or IPv6 frame's addresses and transport header (no IPv6 extension headers: replies carry none)."""
    if len(frame) < _ETH.size:
        return None
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame)
    body = frame[_ETH.size :]
    if ethertype == ETH_P_IP and len(body) >= _IP.size:
        vihl, _, total, _, _, _, proto, _, src, dst = _IP.unpack_from(body)
        if vihl >> 4 != 4:
            return None
        base = IpPacket(mac_text(src_mac), mac_text(dst_mac), IPv4Address(src), IPv4Address(dst), proto)
        return _transport(base, proto, body[(vihl & 0xF) * 4 : total])
    if ethertype == ETH_P_IPV6 and len(body) >= _IP6.size:
        first, length, proto, _, src6, dst6 = _IP6.unpack_from(body)
        if first >> 28 != 6:
            return None
        base = IpPacket(mac_text(src_mac), mac_text(dst_mac), IPv6Address(src6), IPv6Address(dst6), proto)
        return _transport(base, proto, body[_IP6.size : _IP6.size + length])
    return None


# -- sockets and interfaces ---------------------------------------------------------------------------


def packet_socket(ifname: str, ethertype: int) -> socket.socket:
    """A raw AF_PACKET socket bound to ifname, receiving the frames of one ethertype (ETH_P_ALL: all)."""
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ethertype))
    try:
        sock.bind((ifname, ethertype))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {ifname}: {exc.strerror}") from None
    return sock


def interface_mac(ifname: str) -> str:
    with IPRoute() as ipr:
        return str(ipr.get_links(require_link(ifname, ipr))[0].get_attr("IFLA_ADDRESS"))


def interface_addresses(ifname: str, version: int = 4) -> list[tuple[IPAddress, int]]:
    """Addresses of one family on ifname, as (address, prefix length): IPv4 primary first; IPv6 usable ones only
    (not tentative, DAD not failed), global before link-local."""
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    with IPRoute() as ipr:
        listed = ipr.get_addr(family=family, index=require_link(ifname, ipr))
        found = [(ip_address(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]), int(a.get_attr("IFA_FLAGS") or 0))
                 for a in listed]
    usable = [(address, plen) for address, plen, flags in found if not flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)]
    return sorted(usable, key=lambda item: item[0].is_link_local) if version == 6 else usable


def interface_of(address: IPAddress) -> str | None:
    """The interface that carries address, if any in this netns."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=family):
            if ip_address(addr.get_attr("IFA_ADDRESS")) == address:
                return str(ipr.get_links(addr["index"])[0].get_attr("IFLA_IFNAME"))
    return None
