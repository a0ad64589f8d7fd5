"""Fragments to a VIP (BPF_PROG_TEST_RUN): the first fragment is scheduled by its ports, the rest follow it
(a fragment table keyed by source, destination, protocol and IP ID); a non-first fragment seen before its
first one is dropped and counted."""

from __future__ import annotations

import pytest
from scapy.layers.inet import IP, TCP, UDP, fragment
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyvs.dataplane import Dataplane

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import CLIENT, RS1, RS2, TCP80, UDP80, VIP, assert_forwarded, real_of, rules, service


@pytest.fixture
def two_reals(dataplane: Dataplane) -> Dataplane:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1), (RS2, 1))))
    return dataplane


def fragments(payload: int = 4096, sport: int = 5353, dport: int = 80, ip_id: int = 7, src: str = CLIENT,
              proto: str = "udp") -> list[bytes]:
    l4 = UDP(sport=sport, dport=dport) if proto == "udp" else TCP(sport=sport, dport=dport, flags="PA")
    datagram = IP(src=src, dst=str(VIP), id=ip_id) / l4 / Raw(bytes(payload))
    return [bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / f) for f in fragment(datagram, fragsize=1480)]


def test_a_fragmented_datagram_follows_its_first_fragment(two_reals: Dataplane) -> None:
    frames = fragments()
    assert len(frames) == 3
    results = [two_reals.test_run(f) for f in frames]
    assert [r.verdict_name for r in results] == ["XDP_TX"] * 3
    real = real_of(results[0].data)
    for packet, result in zip(frames, results, strict=True):
        assert_forwarded(packet, result.data, real)
    counters = two_reals.counters()
    assert (counters["frag_first"], counters["frag_followed"], counters["drop_fragment"]) == (1, 2, 0)
    assert len(two_reals.connections()) == 1
    stats = two_reals.service_stats()[UDP80]
    assert (stats.conns, stats.inpkts, stats.inbytes) == (1, 3, sum(len(f) - 14 for f in frames))


def test_datagrams_of_two_clients_with_the_same_ip_id_go_each_to_its_own_connection(two_reals: Dataplane) -> None:
    a = fragments(src=CLIENT, sport=6000)
    b = fragments(src="198.18.1.3", sport=6000)
    interleaved = [a[0], b[0], a[1], b[1], a[2], b[2]]
    reals = [real_of(two_reals.test_run(f).data) for f in interleaved]
    assert reals[0::2] == [reals[0]] * 3 and reals[1::2] == [reals[1]] * 3
    assert reals[0] != reals[1]  # rr gave the two clients different reals


def test_a_later_datagram_of_an_existing_flow_follows_the_connection(two_reals: Dataplane) -> None:
    first = real_of(two_reals.test_run(fragments(ip_id=1)[0]).data)
    assert {real_of(two_reals.test_run(f).data) for f in fragments(ip_id=2)} == {first}


def test_out_of_order_fragments_before_their_first_are_dropped_and_counted(two_reals: Dataplane) -> None:
    frames = fragments(ip_id=9)
    assert two_reals.test_run(frames[2]).verdict_name == "XDP_DROP"  # ahead of its first fragment
    assert two_reals.test_run(frames[0]).verdict_name == "XDP_TX"
    real = real_of(two_reals.test_run(frames[1]).data)  # after it: follows
    assert two_reals.test_run(frames[2]).verdict_name == "XDP_TX"  # a retransmitted copy follows too
    assert real == real_of(two_reals.test_run(frames[0]).data)
    counters = two_reals.counters()
    assert counters["drop_fragment"] == 1 and counters["frag_followed"] == 2


def test_fragments_to_a_port_without_service_are_all_the_kernels(two_reals: Dataplane) -> None:
    for packet in fragments(dport=53):
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals.connections() == []


def test_tcp_fragments_follow_the_connection_without_changing_its_state(two_reals: Dataplane) -> None:
    syn = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=str(VIP)) / TCP(sport=7000, dport=80,
                                                                                          flags="S"))
    real = real_of(two_reals.test_run(syn).data)
    two_reals.test_run(bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=str(VIP))
                             / TCP(sport=7000, dport=80, flags="A")))
    assert {real_of(two_reals.test_run(f).data) for f in fragments(sport=7000, proto="tcp")} == {real}
    assert [c.state for c in two_reals.connections()] == ["ESTABLISHED"]


def test_malformed_fragments_to_a_vip_are_dropped_and_counted(two_reals: Dataplane) -> None:
    first, second, _ = fragments(ip_id=11)
    cases = [
        first[:14 + 20 + 4],  # first fragment cut inside the UDP header
        second[:-1],  # IP length larger than the frame
    ]
    for packet in cases:
        assert two_reals.test_run(packet).verdict_name == "XDP_DROP"
    assert two_reals.counters()["drop_malformed"] == 2
    assert two_reals.connections() == []
