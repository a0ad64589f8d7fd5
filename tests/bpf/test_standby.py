"""A VRRP backup's VIPs (Dataplane.set_standby): their traffic is passed to the kernel, established flows too, and
nothing else changes (rules, connections, fingerprint); serving again picks the flows up where they were."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from scapy.layers.inet import TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyvs.dataplane import Dataplane
from pyvs.model import Protocol, ServiceKey

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import RS1, RS2, TCP80, UDP80, VIP, frame, real_of, rules, service, syn

OTHER_VIP = IPv4Address("198.18.0.101")
VIP6 = IPv6Address("2001:db8::100")
TCP6 = ServiceKey(Protocol.TCP, VIP6, 80)


def test_a_standby_vip_is_passed_and_serving_again_resumes_its_flows(dataplane: Dataplane) -> None:
    other = ServiceKey(Protocol.TCP, OTHER_VIP, 80)
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1)),
                          service(other, "rr", (RS1, 1))))
    first = dataplane.test_run(syn(sport=40100))
    assert first.verdict_name == "XDP_TX"
    real = real_of(first.data)
    fingerprint, before = dataplane.fingerprint(), dataplane.read_rules()

    assert dataplane.set_standby([VIP], True) == [VIP]
    assert dataplane.set_standby([VIP], True) == []  # already
    assert dataplane.standby_vips() == {VIP}
    counters = dataplane.counters()
    for packet in (syn(sport=40101), frame(TCP(sport=40100, dport=80, flags="A", seq=1001, ack=1)),
                   frame(UDP(sport=5353, dport=80))):
        assert dataplane.test_run(packet).verdict_name == "XDP_PASS"
    assert dataplane.counters() == counters  # passed as a non-VIP packet: nothing counted
    other_syn = frame(TCP(sport=40102, dport=80, flags="S"), dst=str(OTHER_VIP))
    assert dataplane.test_run(other_syn).verdict_name == "XDP_TX"  # another VIP is still served
    assert dataplane.fingerprint() == fingerprint and dataplane.read_rules() == before

    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 2)),
                          service(other, "rr", (RS1, 1))))  # a write of the rules keeps the standby
    assert dataplane.standby_vips() == {VIP}
    assert dataplane.test_run(syn(sport=40103)).verdict_name == "XDP_PASS"

    assert dataplane.set_standby([VIP], False) == [VIP]
    assert dataplane.standby_vips() == set()
    resumed = dataplane.test_run(frame(TCP(sport=40100, dport=80, flags="A", seq=1001, ack=1)))
    assert resumed.verdict_name == "XDP_TX" and real_of(resumed.data) == real  # its connection is still there


def test_an_ipv6_vip_goes_standby_too(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP6, "rr", (IPv6Address("2001:db8:2::11"), 1))))
    packet = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IPv6(src="2001:db8:1::2", dst=str(VIP6))
                   / TCP(sport=40200, dport=80, flags="S"))
    assert dataplane.test_run(packet).verdict_name == "XDP_TX"
    dataplane.set_standby([VIP6], True)
    assert dataplane.test_run(packet).verdict_name == "XDP_PASS"
    dataplane.set_standby([VIP6], False)
    assert dataplane.test_run(packet).verdict_name == "XDP_TX"
