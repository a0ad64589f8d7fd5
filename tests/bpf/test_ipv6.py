"""IPv6 through the XDP program (BPF_PROG_TEST_RUN): forwarded by direct routing as IPv4 is (only the MACs change),
with the same connection semantics, extension headers walked, fragments followed, ICMPv6 errors sent to their
connection's real, neighbour discovery and echo left to the kernel; malformed packets dropped and counted."""

from __future__ import annotations

import time
from ipaddress import IPv6Address

import pytest
from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import (
    ICMPv6DestUnreach,
    ICMPv6EchoRequest,
    ICMPv6ND_NA,
    ICMPv6ND_NS,
    ICMPv6ND_RA,
    ICMPv6ND_Redirect,
    ICMPv6ND_RS,
    ICMPv6PacketTooBig,
    ICMPv6ParamProblem,
    ICMPv6TimeExceeded,
    IPv6,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    IPv6ExtHdrHopByHop,
    IPv6ExtHdrRouting,
    fragment6,
)
from scapy.layers.l2 import Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from pyvs.dataplane import Dataplane, abi
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey, Timeouts

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import RS1, TCP80, assert_forwarded, real_of, rules, service, syn

VIP6 = IPv6Address("2001:db8::100")
CLIENT6 = "2001:db8:1::2"
ROUTER6 = "2001:db8:1::1"
RS6_1, RS6_2, RS6_3, RS6_NO_MAC, RS6_OTHER_NIC = (IPv6Address(f"2001:db8:2::{n}") for n in (11, 12, 13, 14, 15))
TCP6 = ServiceKey(Protocol.TCP, VIP6, 80)
UDP6 = ServiceKey(Protocol.UDP, VIP6, 80)


def frame6(*layers: Packet, dst: str = str(VIP6), src: str = CLIENT6, tags: tuple[Packet, ...] = ()) -> bytes:
    packet: Packet = Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC)
    for tag in tags:
        packet = packet / tag.copy()
    packet = packet / IPv6(src=src, dst=dst)
    for layer in layers:
        packet = packet / layer
    return bytes(packet)


def syn6(sport: int = 40000, dport: int = 80, src: str = CLIENT6, tags: tuple[Packet, ...] = ()) -> bytes:
    return frame6(TCP(sport=sport, dport=dport, flags="S", seq=1000), src=src, tags=tags)


def ack6(sport: int = 40000, dport: int = 80, tags: tuple[Packet, ...] = ()) -> bytes:
    return frame6(TCP(sport=sport, dport=dport, flags="A", seq=1001, ack=1) / Raw(b"GET /"), tags=tags)


@pytest.fixture
def two_reals6(dataplane: Dataplane) -> Dataplane:
    dataplane.apply(rules(service(TCP6, "rr", (RS6_1, 1), (RS6_2, 1)), service(UDP6, "rr", (RS6_1, 1), (RS6_2, 1))))
    return dataplane


def nonzero(dp: Dataplane) -> dict[str, int]:
    return {name: value for name, value in dp.counters().items() if value and name != "rx"}


# ---- TCP and UDP, new and established ---------------------------------------------------------------------------


def test_a_syn_and_its_connection_are_forwarded_with_only_the_macs_rewritten(two_reals6: Dataplane) -> None:
    first = syn6()
    result = two_reals6.test_run(first)
    assert result.verdict_name == "XDP_TX"
    real = real_of(result.data)
    assert real in (RS6_1, RS6_2)
    assert_forwarded(first, result.data, real)
    for packet in (ack6(), frame6(TCP(sport=40000, dport=80, flags="PA") / Raw(b"more")), ack6()):
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, real)
    [conn] = two_reals6.connections()
    assert (conn.client, conn.cport, conn.vip, conn.vport, conn.rip, conn.state) == (
        IPv6Address(CLIENT6), 40000, VIP6, 80, real, "ESTABLISHED")
    assert nonzero(two_reals6) == {"tx": 4, "conn_new": 1, "half_open_new": 1, "half_open_promoted": 1,
                                   "conn_inserted": 1}
    stats = two_reals6.service_stats()[TCP6]
    assert (stats.conns, stats.inpkts, stats.inbytes) == (1, 4, sum(len(p) - 14 for p in (
        first, ack6(), frame6(TCP(sport=40000, dport=80, flags="PA") / Raw(b"more")), ack6())))
    assert two_reals6.live_counts()[(TCP6, (real, 80))] == (1, 0)


def test_rr_alternates_and_udp_flows_stick_to_their_real(two_reals6: Dataplane) -> None:
    reals = [real_of(two_reals6.test_run(syn6(sport=41000 + i)).data) for i in range(4)]
    assert reals[0] != reals[1] and reals[0::2] == [reals[0]] * 2
    datagram = frame6(UDP(sport=5353, dport=80) / Raw(b"q"))
    udp_real = real_of(two_reals6.test_run(datagram).data)
    assert all(real_of(two_reals6.test_run(datagram).data) == udp_real for _ in range(3))
    udp = [c for c in two_reals6.connections() if c.proto is Protocol.UDP]
    assert [(c.state, c.rip) for c in udp] == [("UDP", udp_real)]


def test_ipvs_miss_rules_hold_for_ipv6(two_reals6: Dataplane) -> None:
    for packet, counter in ((ack6(sport=42000), "pass_miss_ack"),
                            (frame6(TCP(sport=42001, dport=80, flags="FA")), "pass_miss_fin"),
                            (frame6(TCP(sport=42002, dport=80, flags="R")), "pass_miss_rst"),
                            (syn6(dport=8080), "pass")):
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
        assert two_reals6.counters()[counter] == 1
    assert two_reals6.connections() == []
    two_reals6.set_sloppy_tcp(True)
    assert two_reals6.test_run(ack6(sport=42003)).verdict_name == "XDP_TX"  # sloppy_tcp: an ACK starts one


def test_ipv4_and_ipv6_services_side_by_side(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1)), service(TCP6, "rr", (RS6_3, 1))))
    assert real_of(dataplane.test_run(syn(sport=43000)).data) == RS1
    assert real_of(dataplane.test_run(syn6(sport=43000)).data) == RS6_3
    assert {(c.vip, c.rip) for c in dataplane.connections()} == {(TCP80.vip, RS1), (VIP6, RS6_3)}
    read = dataplane.read_rules()
    assert set(read.services) == {TCP80, TCP6} and list(read.services[TCP6].reals) == [(RS6_3, 80)]
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1))))  # the IPv6 service goes, its VIP with it
    assert dataplane.test_run(syn6(sport=43001)).verdict_name == "XDP_PASS"
    assert real_of(dataplane.test_run(syn(sport=43001)).data) == RS1


def test_the_sweeper_visits_the_ipv6_tables_while_there_are_ipv6_services(dataplane: Dataplane) -> None:
    def flagged() -> bool:
        return bool(dataplane._config().flags & abi.CFG_IPV6)  # noqa: SLF001

    assert not flagged()  # IPv4 alone: its sweeps do not visit IPv6's empty shards
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1)), service(UDP6, "rr", (RS6_1, 1))))
    assert flagged()
    dataplane.test_run(frame6(UDP(sport=5353, dport=80)))
    dataplane.wait_passes(2)
    assert dataplane.conn_table_usage()["entries6"] == 1
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1))))
    assert not flagged()
    dataplane.apply_service(UDP6, service(UDP6, "rr", (RS6_1, 1)))  # one service alone: the same
    assert flagged()


def test_a_real_behind_another_interface_gets_a_redirect_one_without_mac_nothing(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP6, "rr", (RS6_OTHER_NIC, 1)), service(UDP6, "rr", (RS6_NO_MAC, 1))))
    assert dataplane.test_run(syn6()).verdict_name == "XDP_REDIRECT"
    assert dataplane.test_run(frame6(UDP(sport=5353, dport=80))).verdict_name == "XDP_DROP"
    counters = dataplane.counters()
    assert counters["redirect"] == 1 and counters["drop_no_mac"] == 1


def test_a_deleted_real_drops_its_connections_and_expired_entries_are_swept(two_reals6: Dataplane) -> None:
    real = real_of(two_reals6.test_run(syn6(sport=44000)).data)
    two_reals6.test_run(ack6(sport=44000))
    two_reals6.test_run(frame6(UDP(sport=5353, dport=80)))
    two_reals6.wait_passes(2)
    usage = two_reals6.conn_table_usage()
    assert (usage["entries"], usage["entries6"], usage["evicted"]) == (0, 2, 0)
    from pyvs.cli.director import table_usage_lines

    assert "IPv6 tables: 2 connections, 0 half-open" in table_usage_lines(usage)
    other = RS6_2 if real == RS6_1 else RS6_1
    two_reals6.apply(rules(service(TCP6, "rr", (other, 1)), service(UDP6, "rr", (RS6_1, 1), (RS6_2, 1))))
    assert two_reals6.test_run(ack6(sport=44000)).verdict_name == "XDP_DROP"
    assert two_reals6.counters()["drop_real_gone"] == 1
    two_reals6.set_timeouts(Timeouts(0, 0, 1))
    time.sleep(1.2)
    two_reals6.wait_passes(2)
    assert two_reals6.conn_table_usage()["entries6"] == 1  # the UDP flow (1 s) is gone, the TCP one stays
    assert two_reals6.counters()["conn_swept"] == 1


# ---- extension headers -----------------------------------------------------------------------------------------


EXTENSIONS = {
    "hop-by-hop": [IPv6ExtHdrHopByHop()],
    "destination-options": [IPv6ExtHdrDestOpt()],
    "routing": [IPv6ExtHdrRouting(addresses=[str(VIP6)], segleft=0)],
    "atomic-fragment": [IPv6ExtHdrFragment(offset=0, m=0, id=9)],
    "all-four": [IPv6ExtHdrHopByHop(), IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=[str(VIP6)], segleft=0),
                 IPv6ExtHdrFragment(offset=0, m=0, id=9), IPv6ExtHdrDestOpt()],
}


@pytest.mark.parametrize("headers", EXTENSIONS.values(), ids=EXTENSIONS.keys())
def test_extension_headers_are_walked_to_the_ports_and_kept(two_reals6: Dataplane, headers: list[Packet]) -> None:
    first = frame6(*[h.copy() for h in headers], TCP(sport=45000, dport=80, flags="S"))
    real = real_of(two_reals6.test_run(first).data)
    second = frame6(*[h.copy() for h in headers], TCP(sport=45000, dport=80, flags="A"))
    result = two_reals6.test_run(second)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(second, result.data, real)  # the headers are passed on unchanged
    [conn] = two_reals6.connections()
    assert (conn.cport, conn.vport, conn.state) == (45000, 80, "ESTABLISHED")
    assert real_of(two_reals6.test_run(ack6(sport=45000)).data) == real  # one flow, with or without them
    assert nonzero(two_reals6) == {"tx": 3, "conn_new": 1, "half_open_new": 1, "half_open_promoted": 1,
                                   "conn_inserted": 1}
    assert two_reals6.service_stats()[TCP6].inbytes == len(first) + len(second) + len(ack6(sport=45000)) - 3 * 14


def test_more_extension_headers_than_walked_are_passed_and_counted(two_reals6: Dataplane) -> None:
    many = [IPv6ExtHdrDestOpt() for _ in range(abi.MAX_EXT_HEADERS + 1)]
    packet = frame6(*many, TCP(sport=46000, dport=80, flags="S"))
    result = two_reals6.test_run(packet)
    assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals6.counters()["pass_ext_depth"] == 1
    other = frame6(*[h.copy() for h in many], TCP(sport=46000, dport=80, flags="S"), dst="2001:db8::1")
    assert two_reals6.test_run(other).verdict_name == "XDP_PASS"  # not for a VIP: uncounted
    fewer = frame6(*[IPv6ExtHdrDestOpt() for _ in range(abi.MAX_EXT_HEADERS)], TCP(sport=46001, dport=80, flags="S"))
    assert two_reals6.test_run(fewer).verdict_name == "XDP_TX"
    assert two_reals6.counters()["pass_ext_depth"] == 1


# ---- fragments ---------------------------------------------------------------------------------------------------


def fragments6(payload: int = 3000, sport: int = 5353, ident: int = 7, src: str = CLIENT6, proto: str = "udp",
               dport: int = 80, after: tuple[Packet, ...] = ()) -> list[bytes]:
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else TCP(sport=sport, dport=dport, flags="PA")
    datagram = IPv6(src=src, dst=str(VIP6)) / IPv6ExtHdrFragment(id=ident)
    for header in after:
        datagram = datagram / header.copy()
    return [bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / f)
            for f in fragment6(datagram / l4 / Raw(bytes(payload)), 1280)]


def test_fragments_follow_their_first_fragment_by_the_fragment_header(two_reals6: Dataplane) -> None:
    frames = fragments6()
    assert len(frames) == 3
    results = [two_reals6.test_run(f) for f in frames]
    real = real_of(results[0].data)
    for packet, result in zip(frames, results, strict=True):
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, real)
    counters = two_reals6.counters()
    assert (counters["frag_first"], counters["frag_followed"], counters["drop_fragment"]) == (1, 2, 0)
    stats = two_reals6.service_stats()[UDP6]
    assert (stats.conns, stats.inpkts, stats.inbytes) == (1, 3, sum(len(f) - 14 for f in frames))


def test_fragments_out_of_order_and_of_two_clients(two_reals6: Dataplane) -> None:
    frames = fragments6(ident=9)
    assert two_reals6.test_run(frames[2]).verdict_name == "XDP_DROP"  # before its first fragment
    real = real_of(two_reals6.test_run(frames[0]).data)
    assert {real_of(two_reals6.test_run(f).data) for f in (frames[1], frames[2])} == {real}
    assert two_reals6.counters()["drop_fragment"] == 1
    a, b = fragments6(ident=11, sport=6000), fragments6(ident=11, sport=6000, src="2001:db8:1::3")
    reals = [real_of(two_reals6.test_run(f).data) for f in (a[0], b[0], a[1], b[1], a[2], b[2])]
    assert reals[0::2] == [reals[0]] * 3 and reals[1::2] == [reals[1]] * 3 and reals[0] != reals[1]


def test_destination_options_after_the_fragment_header_are_walked(two_reals6: Dataplane) -> None:
    frames = fragments6(ident=12, after=(IPv6ExtHdrDestOpt(),))
    reals = {real_of(two_reals6.test_run(f).data) for f in frames}
    assert len(reals) == 1 and two_reals6.counters()["frag_followed"] == 2


def test_tcp_fragments_follow_the_connection_without_changing_its_state(two_reals6: Dataplane) -> None:
    real = real_of(two_reals6.test_run(syn6(sport=7000)).data)
    two_reals6.test_run(ack6(sport=7000))
    assert {real_of(two_reals6.test_run(f).data) for f in fragments6(sport=7000, proto="tcp")} == {real}
    assert [c.state for c in two_reals6.connections()] == ["ESTABLISHED"]


def test_fragments_to_a_port_without_service_are_the_kernels(two_reals6: Dataplane) -> None:
    for packet in fragments6(dport=53, ident=13):
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals6.connections() == []


# ---- ICMPv6 ------------------------------------------------------------------------------------------------------


def quoted6(cport: int, vport: int = 80, client: str = CLIENT6, vip: str = str(VIP6), proto: str = "tcp",
            ext: tuple[Packet, ...] = ()) -> bytes:
    """What a real sent: VIP:vport -> client:cport (a router quotes as much as fits in 1280 bytes)."""
    l4 = TCP(sport=vport, dport=cport, flags="PA") if proto == "tcp" else UDP(sport=vport, dport=cport)
    packet: Packet = IPv6(src=vip, dst=client)
    for header in ext:
        packet = packet / header.copy()
    return bytes(packet / l4 / Raw(bytes(1000)))


def error6(quoted: bytes, kind: Packet | None = None, tags: tuple[Packet, ...] = ()) -> bytes:
    return frame6((kind if kind is not None else ICMPv6PacketTooBig(mtu=1280)) / Raw(quoted), src=ROUTER6, tags=tags)


ERRORS = {
    "packet-too-big": ICMPv6PacketTooBig(mtu=1280),
    "unreachable": ICMPv6DestUnreach(code=1),
    "time-exceeded": ICMPv6TimeExceeded(),
    "parameter-problem": ICMPv6ParamProblem(ptr=6),
}


@pytest.mark.parametrize("kind", ERRORS.values(), ids=ERRORS.keys())
def test_an_error_quoting_a_connection_goes_to_its_real(two_reals6: Dataplane, kind: Packet) -> None:
    owners = {cport: real_of(two_reals6.test_run(syn6(sport=cport)).data) for cport in (47000, 47001)}
    assert set(owners.values()) == {RS6_1, RS6_2}
    two_reals6.test_run(ack6(sport=47000))  # one established, one half-open
    for cport in owners:
        packet = error6(quoted6(cport)[:48], kind.copy())  # the IPv6 header and 8 bytes of TCP
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, owners[cport])
    assert two_reals6.counters()["icmp_to_real"] == 2
    assert two_reals6.service_stats()[TCP6].inpkts == 5
    assert {c.cport: c.state for c in two_reals6.connections()} == {47000: "ESTABLISHED", 47001: "SYN_RECV"}


def test_an_error_about_a_udp_flow_and_one_quoting_extension_headers(two_reals6: Dataplane) -> None:
    udp_real = real_of(two_reals6.test_run(frame6(UDP(sport=5353, dport=80) / Raw(b"q"))).data)
    result = two_reals6.test_run(error6(quoted6(5353, proto="udp"), ICMPv6DestUnreach(code=4)))
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == udp_real
    tcp_real = real_of(two_reals6.test_run(syn6(sport=47100)).data)
    quoted = quoted6(47100, ext=(IPv6ExtHdrDestOpt(), IPv6ExtHdrRouting(addresses=[CLIENT6], segleft=0)))
    result = two_reals6.test_run(error6(quoted))
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == tcp_real
    assert two_reals6.counters()["icmp_to_real"] == 2


def test_an_error_of_no_connection_is_the_kernels(two_reals6: Dataplane) -> None:
    two_reals6.test_run(syn6(sport=48000))
    cases = (quoted6(48001), quoted6(48000, vport=81), quoted6(48000, client="2001:db8:1::3"),
             quoted6(48000, vip="2001:db8::101"),  # its source is not the VIP it was sent to
             bytes(IPv6(src=str(VIP6), dst=CLIENT6) / IPv6ExtHdrFragment(offset=100, id=1) / Raw(bytes(16))))
    for quoted in cases:
        packet = error6(quoted)
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals6.counters()["pass_icmp_no_conn"] == len(cases)
    assert two_reals6.counters()["icmp_to_real"] == 0


def test_neighbour_discovery_and_echo_are_the_kernels(two_reals6: Dataplane) -> None:
    solicited_node = "ff02::1:ff00:100"
    nd = [frame6(ICMPv6ND_NS(tgt=str(VIP6))),  # unicast (neighbour unreachability detection)
          frame6(ICMPv6ND_NA(tgt=str(VIP6))), frame6(ICMPv6ND_RS()), frame6(ICMPv6ND_RA()),
          frame6(ICMPv6ND_Redirect(tgt=str(VIP6), dst=CLIENT6))]
    others = [frame6(ICMPv6EchoRequest(id=1, seq=1) / Raw(b"ping")),
              error6(bytes(IPv6(src=str(VIP6), dst=CLIENT6) / ICMPv6EchoRequest())),  # about the director's ICMPv6
              frame6(IPv6ExtHdrFragment(nh=58, m=1, id=3) / Raw(b"\x80\x00" + bytes(62)))]  # fragmented
    uncounted = [frame6(ICMPv6ND_NS(tgt=str(VIP6)), dst=solicited_node, src="::"),  # DAD, to a multicast address
                 frame6(ICMPv6EchoRequest(), dst="2001:db8::1")]
    for packet in nd + others + uncounted:
        result = two_reals6.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert nonzero(two_reals6) == {"pass_nd": len(nd), "pass_icmp": len(others)}


def test_malformed_icmpv6_to_a_vip_is_dropped_and_counted(two_reals6: Dataplane) -> None:
    two_reals6.test_run(syn6(sport=49000))
    quoted = quoted6(49000)
    bad_version = bytearray(quoted[:48])
    bad_version[0] = 0x40
    whole = error6(quoted[:48])
    cases = [error6(quoted[:42]),  # the quote ends inside the ports
             error6(quoted[:30]),  # inside the quoted IPv6 header
             error6(bytes(bad_version)),
             _with(whole, 14 + 4, (4).to_bytes(2, "big"))[:14 + 40 + 4]]  # the ICMPv6 header itself cut
    for packet in cases:
        assert two_reals6.test_run(packet).verdict_name == "XDP_DROP"
    assert two_reals6.test_run(whole[:14 + 40 + 4]).verdict_name == "XDP_DROP"  # frame shorter than its length
    counters = two_reals6.counters()
    assert (counters["drop_icmp_malformed"], counters["drop_malformed"]) == (len(cases), 1)
    assert counters["icmp_to_real"] == 0


# ---- VLAN tags, malformed packets ---------------------------------------------------------------------------------


TAGS = {"802.1Q": (Dot1Q(vlan=100),), "802.1ad+802.1Q": (Dot1AD(vlan=200), Dot1Q(vlan=100))}


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_tagged_ipv6_is_forwarded_with_its_tags(two_reals6: Dataplane, tags: tuple[Packet, ...]) -> None:
    packets = [syn6(sport=50000, tags=tags), ack6(sport=50000, tags=tags)]
    results = [two_reals6.test_run(p) for p in packets]
    real = real_of(results[0].data)
    for packet, result in zip(packets, results, strict=True):
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, real)
    error = error6(quoted6(50000)[:48], tags=tags)
    assert real_of(two_reals6.test_run(error).data) == real
    nd = frame6(ICMPv6ND_NS(tgt=str(VIP6)), tags=tags)
    assert two_reals6.test_run(nd).verdict_name == "XDP_PASS"


def test_three_tags_are_passed_and_counted(two_reals6: Dataplane) -> None:
    packet = syn6(tags=(Dot1AD(vlan=300), Dot1Q(vlan=200), Dot1Q(vlan=100)))
    result = two_reals6.test_run(packet)
    assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals6.counters()["pass_vlan_depth"] == 1


def _with(packet: bytes, offset: int, value: bytes) -> bytes:
    return packet[:offset] + value + packet[offset + len(value):]


def test_malformed_ipv6_to_a_vip_is_dropped_and_counted_never_forwarded(two_reals6: Dataplane) -> None:
    packet = syn6(sport=51000)
    hbh_second = frame6(IPv6ExtHdrDestOpt(), IPv6ExtHdrHopByHop(), TCP(sport=51000, dport=80, flags="S"))
    long_header = frame6(IPv6ExtHdrDestOpt(), TCP(sport=51000, dport=80, flags="S"))
    cases = {
        "payload length beyond the frame": _with(packet, 14 + 4, (100).to_bytes(2, "big")),
        "tcp header cut off": _with(packet, 14 + 4, (8).to_bytes(2, "big"))[:14 + 40 + 8],
        "version 4 in an IPv6 frame": _with(packet, 14, b"\x40"),
        "hop-by-hop not first": hbh_second,
        "extension header beyond the payload": _with(long_header, 14 + 40 + 1, b"\x10"),
        "frame cut inside an extension header (shorter than its payload length)":
            frame6(IPv6ExtHdrDestOpt(), TCP(sport=1, dport=80))[:14 + 40 + 4],
    }
    for name, bad in cases.items():
        result = two_reals6.test_run(bad)
        assert result.verdict_name == "XDP_DROP", name
    assert two_reals6.counters()["drop_malformed"] == len(cases)
    assert two_reals6.connections() == []
    for name, bad in cases.items():  # the same to another address: the kernel's, untouched, uncounted
        other = bad[:14 + 24] + IPv6Address("2001:db8::1").packed + bad[14 + 40:]
        result = two_reals6.test_run(other)
        assert result.verdict_name == "XDP_PASS" and result.data == other, name
    cut = packet[:14 + 30]  # the fixed header itself is cut: nothing says where it goes
    assert two_reals6.test_run(cut).verdict_name == "XDP_PASS"
    assert two_reals6.counters()["drop_malformed"] == len(cases)


# ---- persistence -------------------------------------------------------------------------------------------------


def test_persistence_with_a_prefix_length_keeps_a_network_on_one_real(dataplane: Dataplane) -> None:
    svc = Service(TCP6, "rr", persistent=300, netmask=64)
    for rip in (RS6_1, RS6_2):
        svc.reals[(rip, 80)] = Real(rip, 80, 1)
    dataplane.apply(Rules({TCP6: svc}))
    same_64 = {real_of(dataplane.test_run(syn6(sport=52000 + i, src=f"2001:db8:1::{i + 2:x}")).data)
               for i in range(6)}
    assert len(same_64) == 1
    other_64 = real_of(dataplane.test_run(syn6(sport=52100, src="2001:db8:1:1::2")).data)
    assert other_64 != next(iter(same_64))  # rr gave the next network the other real
    counters = dataplane.counters()
    assert counters["persist_hit"] == 5
    templates = [c for c in dataplane.connections() if c.template]
    assert sorted(str(c.client) for c in templates) == ["2001:db8:1:1::", "2001:db8:1::"]
    assert {(c.cport, c.vport) for c in templates} == {(0, 80)}
    assert dataplane.read_rules().services[TCP6].netmask == 64


def test_a_template_lives_while_a_connection_it_placed_lives(dataplane: Dataplane) -> None:
    svc = Service(TCP6, "rr", persistent=1, netmask=64)  # the template alone would expire after one idle second
    for rip in (RS6_1, RS6_2):
        svc.reals[(rip, 80)] = Real(rip, 80, 1)
    dataplane.apply(Rules({TCP6: svc}))
    dataplane.set_pass_ticks(40)  # a sweep pass every 0.1 s
    first = real_of(dataplane.test_run(syn6(sport=54000)).data)
    dataplane.test_run(ack6(sport=54000))
    time.sleep(2.5)  # idle but ESTABLISHED (900 s): the sweeper keeps its template (IPVS's n_control)
    assert [c.rip for c in dataplane.connections() if c.template] == [first]
    assert real_of(dataplane.test_run(syn6(sport=54001, src="2001:db8:1::99")).data) == first  # same /64
    assert dataplane.counters()["persist_hit"] == 1


def test_persistence_without_a_prefix_is_per_client(dataplane: Dataplane) -> None:
    svc = Service(TCP6, "rr", persistent=300)
    for rip in (RS6_1, RS6_2):
        svc.reals[(rip, 80)] = Real(rip, 80, 1)
    dataplane.apply(Rules({TCP6: svc}))
    first = [real_of(dataplane.test_run(syn6(sport=53000 + i, src=f"2001:db8:1::{i + 2:x}")).data) for i in range(2)]
    again = [real_of(dataplane.test_run(syn6(sport=53100 + i, src=f"2001:db8:1::{i + 2:x}")).data) for i in range(2)]
    assert first[0] != first[1] and again == first
    assert dataplane.read_rules().services[TCP6].netmask == 128
