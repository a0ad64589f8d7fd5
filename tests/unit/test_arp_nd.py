"""Neighbour discovery and IPv6 probe frames built and parsed by pyvs (pyvs.arp.nd, pyvs.arp.packets), held to
scapy's reading of them."""

from __future__ import annotations

from ipaddress import IPv6Address

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6NDOptDstLLAddr,
    ICMPv6NDOptSrcLLAddr,
    IPerror6,
    IPv6,
    in6_getnsma,
    in6_getnsmac,
)
from scapy.layers.l2 import Ether

from pyvs.arp.nd import (
    NA_OVERRIDE,
    NA_SOLICITED,
    ND_NEIGHBOUR_ADVERTISEMENT,
    multicast_mac,
    neighbour_solicitation,
    parse_nd,
    solicited_node,
    unsolicited_advertisement,
)
from pyvs.arp.packets import (
    ETH_P_IPV6,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    TCP_SYN,
    ethernet,
    icmp_echo,
    parse_ip,
    tcp_segment,
    udp_datagram,
)

DIRECTOR_MAC, REAL_MAC = "02:c6:12:00:03:01", "02:c6:12:00:04:01"
VIP, DIP, RIP = IPv6Address("2001:db8::100"), IPv6Address("2001:db8:2::10"), IPv6Address("2001:db8:2::11")


def _checksum_ok(frame: bytes, layer: type) -> bool:
    parsed = Ether(frame)
    given = parsed[layer].cksum
    del parsed[layer].cksum
    return bool(Ether(bytes(parsed))[layer].cksum == given)


def test_solicited_node_group_and_its_mac_are_scapys() -> None:
    group = solicited_node(VIP)
    assert group.packed == in6_getnsma(VIP.packed)
    assert multicast_mac(group) == in6_getnsmac(group.packed)


def test_solicitation_is_what_scapy_reads() -> None:
    frame = neighbour_solicitation(VIP, DIRECTOR_MAC, DIP).frame()
    parsed = Ether(frame)
    assert parsed.dst == multicast_mac(solicited_node(VIP)) and parsed[IPv6].dst == str(solicited_node(VIP))
    assert parsed[IPv6].hlim == 255 and parsed[ICMPv6ND_NS].tgt == str(VIP)
    assert parsed[ICMPv6NDOptSrcLLAddr].lladdr == DIRECTOR_MAC
    assert _checksum_ok(frame, ICMPv6ND_NS)
    unicast = Ether(neighbour_solicitation(VIP, DIRECTOR_MAC, DIP, unicast_mac=REAL_MAC).frame())
    assert (unicast.dst, unicast[IPv6].dst) == (REAL_MAC, str(VIP))


def test_unsolicited_advertisement_overrides_and_goes_to_all_nodes() -> None:
    frame = unsolicited_advertisement(VIP, DIRECTOR_MAC).frame()
    parsed = Ether(frame)
    assert (parsed.dst, parsed[IPv6].src, parsed[IPv6].dst) == ("33:33:00:00:00:01", str(VIP), "ff02::1")
    na = parsed[ICMPv6ND_NA]
    assert (na.tgt, na.O, na.S, na.R) == (str(VIP), 1, 0, 0)
    assert parsed[ICMPv6NDOptDstLLAddr].lladdr == DIRECTOR_MAC
    assert _checksum_ok(frame, ICMPv6ND_NA)


def test_parse_nd_reads_scapys_advertisement_and_refuses_other_frames() -> None:
    reply = bytes(Ether(src=REAL_MAC, dst=DIRECTOR_MAC) / IPv6(src=str(RIP), dst=str(DIP), hlim=255)
                  / ICMPv6ND_NA(tgt=str(VIP), R=0, S=1, O=1) / ICMPv6NDOptDstLLAddr(lladdr=REAL_MAC))
    nd = parse_nd(reply)
    assert nd is not None and nd.kind == ND_NEIGHBOUR_ADVERTISEMENT
    assert (nd.target, nd.mac, nd.src, nd.flags) == (VIP, REAL_MAC, RIP, NA_SOLICITED | NA_OVERRIDE)
    forwarded = bytes(Ether() / IPv6(src=str(RIP), dst=str(DIP), hlim=254) / ICMPv6ND_NA(tgt=str(VIP)))
    assert parse_nd(forwarded) is None  # crossed a router: not ND
    assert parse_nd(bytes(Ether() / IPv6() / TCP())) is None
    assert parse_nd(reply[:60]) is None
    without_option = parse_nd(bytes(Ether(src=REAL_MAC) / IPv6(hlim=255) / ICMPv6ND_NA(tgt=str(VIP))))
    assert without_option is not None and without_option.lladdr is None and without_option.mac == REAL_MAC


def test_ipv6_probes_have_checksums_scapy_agrees_with() -> None:
    syn = ethernet(REAL_MAC, DIRECTOR_MAC, ETH_P_IPV6, tcp_segment(DIP, VIP, 40000, 80, 12345, 0, TCP_SYN))
    assert Ether(syn)[TCP].flags == "S" and Ether(syn)[IPv6].dst == str(VIP)
    for frame, layer in ((syn, TCP),
                         (ethernet(REAL_MAC, DIRECTOR_MAC, ETH_P_IPV6, udp_datagram(DIP, VIP, 40001, 80, b"p")), UDP),
                         (ethernet(REAL_MAC, DIRECTOR_MAC, ETH_P_IPV6, icmp_echo(DIP, VIP, 7, 9)), ICMPv6EchoRequest)):
        parsed = Ether(frame)
        field = "chksum" if layer in (TCP, UDP) else "cksum"
        given = getattr(parsed[layer], field)
        delattr(parsed[layer], field)
        assert getattr(Ether(bytes(parsed))[layer], field) == given, layer


def test_parse_ip_reads_ipv6_and_an_icmpv6_error_quoting_a_probe() -> None:
    syn_ack = parse_ip(bytes(Ether(src=REAL_MAC, dst=DIRECTOR_MAC) / IPv6(src=str(VIP), dst=str(DIP))
                             / TCP(sport=80, dport=40000, flags="SA")))
    assert syn_ack is not None and (syn_ack.src, syn_ack.proto, syn_ack.sport, syn_ack.flags) == (VIP, IPPROTO_TCP,
                                                                                                  80, 0x12)
    error = parse_ip(bytes(Ether(src=REAL_MAC, dst=DIRECTOR_MAC) / IPv6(src=str(RIP), dst=str(DIP))
                           / ICMPv6DestUnreach(code=4) / IPerror6(src=str(DIP), dst=str(VIP))
                           / UDP(sport=40001, dport=80)))
    assert error is not None and error.proto == IPPROTO_ICMPV6 and error.unreachable() == "port"
    assert error.quoted() == (17, VIP, 40001)
    assert not error.echo_reply
