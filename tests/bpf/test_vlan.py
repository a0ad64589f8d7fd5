"""802.1Q/802.1ad tagged frames (BPF_PROG_TEST_RUN): one or two tags are parsed and kept, only the MACs change;
more tags are passed to the kernel and counted. (This kernel has no 802.1Q module: no VLAN interfaces in the lab.)"""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, fragment
from scapy.layers.l2 import ARP, Dot1AD, Dot1Q, Ether
from scapy.packet import Packet, Raw

from pyvs.dataplane import Dataplane

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import CLIENT, RS1, RS2, TCP80, UDP80, VIP, assert_forwarded, real_of, rules, service

TAGS = {
    "802.1Q": [Dot1Q(vlan=100)],
    "802.1ad+802.1Q": [Dot1AD(vlan=200), Dot1Q(vlan=100)],
    "802.1Q+802.1Q": [Dot1Q(vlan=200), Dot1Q(vlan=100)],
}


@pytest.fixture
def two_reals(dataplane: Dataplane) -> Dataplane:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1), (RS2, 1))))
    return dataplane


def tagged(tags: list[Packet], payload: Packet) -> bytes:
    packet: Packet = Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC)
    for tag in tags:
        packet = packet / tag.copy()
    return bytes(packet / payload)


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_tagged_connection_is_forwarded_with_its_tags(two_reals: Dataplane, tags: list[Packet]) -> None:
    packets = [tagged(tags, IP(src=CLIENT, dst=str(VIP)) / TCP(sport=40000, dport=80, flags=f)) for f in ("S", "A")]
    results = [two_reals.test_run(p) for p in packets]
    real = real_of(results[0].data)
    for packet, result in zip(packets, results, strict=True):
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, real)  # everything after the MACs, the tags too, is unchanged
    assert [c.state for c in two_reals.connections()] == ["ESTABLISHED"]
    stats = two_reals.service_stats()[TCP80]
    assert stats.inbytes == 2 * 40  # the IP packets' bytes, tags excluded


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_tagged_icmp_errors_and_fragments_are_handled_like_untagged_ones(two_reals: Dataplane,
                                                                        tags: list[Packet]) -> None:
    real = real_of(two_reals.test_run(tagged(tags, IP(src=CLIENT, dst=str(VIP)) / TCP(sport=41000, dport=80,
                                                                                       flags="S"))).data)
    quoted = bytes(IP(src=str(VIP), dst=CLIENT) / TCP(sport=80, dport=41000))[:28]
    error = tagged(tags, IP(src="198.18.1.1", dst=str(VIP)) / ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted))
    result = two_reals.test_run(error)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(error, result.data, real)
    frags = fragment(IP(src=CLIENT, dst=str(VIP), id=5) / UDP(sport=5353, dport=80) / Raw(bytes(3000)), 1480)
    results = [two_reals.test_run(tagged(tags, f)) for f in frags]
    assert {r.verdict_name for r in results} == {"XDP_TX"} and len({real_of(r.data) for r in results}) == 1


@pytest.mark.parametrize("tags", TAGS.values(), ids=TAGS.keys())
def test_tagged_non_service_traffic_is_passed_untouched(two_reals: Dataplane, tags: list[Packet]) -> None:
    for payload in (ARP(pdst=str(VIP), psrc="198.18.0.1"),
                    IP(src=CLIENT, dst="198.18.0.1") / TCP(sport=1, dport=80, flags="S"),
                    IP(src=CLIENT, dst=str(VIP)) / TCP(sport=1, dport=8080, flags="S")):
        packet = tagged(tags, payload)
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals.connections() == []


def test_three_tags_are_passed_to_the_kernel_and_counted(two_reals: Dataplane) -> None:
    packet = tagged([Dot1AD(vlan=300), Dot1Q(vlan=200), Dot1Q(vlan=100)],
                    IP(src=CLIENT, dst=str(VIP)) / TCP(sport=42000, dport=80, flags="S"))
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals.counters()["pass_vlan_depth"] == 1
    assert two_reals.connections() == []


def test_a_tag_cut_off_is_passed_untouched(two_reals: Dataplane) -> None:
    packet = tagged([Dot1Q(vlan=100)], IP(src=CLIENT, dst=str(VIP)) / TCP(sport=43000, dport=80, flags="S"))
    for cut in (packet[:16], packet[:14 + 4 + 2]):
        result = two_reals.test_run(cut)
        assert result.verdict_name == "XDP_PASS" and result.data == cut
