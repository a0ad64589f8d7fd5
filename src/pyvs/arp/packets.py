"""Ethernet frames for ARP and for the doctor's probes (IPv4 TCP, UDP, ICMP), and raw AF_PACKET sockets.

Frames are built and parsed with struct alone; nothing here knows about services or reals.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyroute2 import IPRoute

from pyvs.links import require_link
from pyvs.mac import ZERO_MAC, mac_bytes, mac_text

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
ETH_P_ALL = 0x0003
ARP_REQUEST = 1
ARP_REPLY = 2
BROADCAST = "ff:ff:ff:ff:ff:ff"
ANY_IP = IPv4Address("0.0.0.0")
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent
IPPROTO_ICMP, IPPROTO_TCP, IPPROTO_UDP = 1, 6, 17
TCP_FIN, TCP_SYN, TCP_RST, TCP_ACK = 0x01, 0x02, 0x04, 0x10
ICMP_ECHO_REPLY, ICMP_UNREACHABLE, ICMP_ECHO = 0, 3, 8

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")
_IP = struct.Struct("!BBHHHBBH4s4s")
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


# -- IPv4 probes --------------------------------------------------------------------------------------


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


def _pseudo(src: IPv4Address, dst: IPv4Address, proto: int, length: int) -> bytes:
    return src.packed + dst.packed + struct.pack("!BBH", 0, proto, length)


def tcp_segment(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, seq: int, ack: int, flags: int) -> bytes:
    """An IPv4 packet with a TCP segment (window 64240, no options, no data)."""
    header = _TCP.pack(sport, dport, seq, ack, 5 << 4, flags, 64240, 0, 0)
    csum = checksum(_pseudo(src, dst, IPPROTO_TCP, len(header)) + header)
    return _ipv4(src, dst, IPPROTO_TCP, header[:16] + struct.pack("!H", csum) + header[18:])


def udp_datagram(src: IPv4Address, dst: IPv4Address, sport: int, dport: int, payload: bytes) -> bytes:
    length = _UDP.size + len(payload)
    header = _UDP.pack(sport, dport, length, 0)
    csum = checksum(_pseudo(src, dst, IPPROTO_UDP, length) + header + payload) or 0xFFFF
    return _ipv4(src, dst, IPPROTO_UDP, header[:6] + struct.pack("!H", csum) + payload)


def icmp_echo(src: IPv4Address, dst: IPv4Address, ident: int, seq: int, payload: bytes = b"pyvs") -> bytes:
    header = _ICMP.pack(ICMP_ECHO, 0, 0, ident, seq)
    csum = checksum(header + payload)
    return _ipv4(src, dst, IPPROTO_ICMP, header[:2] + struct.pack("!H", csum) + header[4:] + payload)


@dataclass(frozen=True)
class Ipv4:
    """What the doctor needs of a received IPv4 frame."""

    eth_src: str
    eth_dst: str
    src: IPv4Address
    dst: IPv4Address
    proto: int
    sport: int = 0  # TCP/UDP ports; for ICMP: type and code
    dport: int = 0
    seq: int = 0
    ack: int = 0
    flags: int = 0  # TCP flags
    payload: bytes = b""  # UDP data; for ICMP errors: the quoted IP header and 8 bytes


def parse_ipv4(frame: bytes) -> Ipv4 | None:
    if len(frame) < _ETH.size + _IP.size:
        return None
    dst_mac, src_mac, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_IP:
        return None
    vihl, _, total, _, _, _, proto, _, src, dst = _IP.unpack_from(frame, _ETH.size)
    if vihl >> 4 != 4:
        return None
    ihl = (vihl & 0xF) * 4
    body = frame[_ETH.size + ihl : _ETH.size + total]
    base = Ipv4(mac_text(src_mac), mac_text(dst_mac), IPv4Address(src), IPv4Address(dst), proto)
    if proto == IPPROTO_TCP and len(body) >= _TCP.size:
        sport, dport, seq, ack, _, flags, _, _, _ = _TCP.unpack_from(body)
        return Ipv4(**{**base.__dict__, "sport": sport, "dport": dport, "seq": seq, "ack": ack, "flags": flags})
    if proto == IPPROTO_UDP and len(body) >= _UDP.size:
        sport, dport, length, _ = _UDP.unpack_from(body)
        return Ipv4(**{**base.__dict__, "sport": sport, "dport": dport, "payload": body[_UDP.size : length]})
    if proto == IPPROTO_ICMP and len(body) >= _ICMP.size:
        icmp_type, code, _, ident, seq = _ICMP.unpack_from(body)
        return Ipv4(**{**base.__dict__, "sport": icmp_type, "dport": code, "seq": ident << 16 | seq,
                       "payload": body[_ICMP.size :]})
    return base


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


def interface_addresses(ifname: str) -> list[tuple[IPv4Address, int]]:
    """IPv4 addresses of ifname, primary first, as (address, prefix length)."""
    with IPRoute() as ipr:
        return [(IPv4Address(a.get_attr("IFA_ADDRESS")), int(a["prefixlen"]))
                for a in ipr.get_addr(family=socket.AF_INET, index=require_link(ifname, ipr))]


def interface_of(address: IPv4Address) -> str | None:
    """The interface that carries address, if any in this netns."""
    with IPRoute() as ipr:
        for addr in ipr.get_addr(family=socket.AF_INET):
            if addr.get_attr("IFA_ADDRESS") == str(address):
                return str(ipr.get_links(addr["index"])[0].get_attr("IFLA_IFNAME"))
    return None
