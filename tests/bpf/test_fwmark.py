"""Firewall-mark services in the data plane: pyvs_fwm (tc egress) run with BPF_PROG_TEST_RUN on frames whose skb
carries a netfilter mark. A mark with a service is scheduled by it whatever the destination, the connection entry is
the packet's 5-tuple (vport from the packet), and the XDP program forwards the flow's later packets itself."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyvs.dataplane import Dataplane, scratch_dataplane
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey, fwmark_key

from .conftest import CLIENT_MAC, DIRECTOR_MAC, REALS, static_neighbours

TC_ACT_OK, TC_ACT_SHOT = 0, 2
CLIENT = "198.18.1.2"
VIP_A, VIP_B = "198.18.0.100", "198.18.0.101"
RS1, RS2 = IPv4Address("198.18.2.11"), IPv4Address("198.18.2.12")
RS6 = IPv6Address("2001:db8:2::11")
FWM1 = fwmark_key(1)


def fwmark_service(key: ServiceKey, *rips: IPv4Address) -> Service:
    svc = Service(key, "rr")
    for rip in rips:
        svc.reals[(rip, 0)] = Real(rip, 0, 1)
    return svc


@pytest.fixture
def dp() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvsf-bpf-fwm", static_neighbours) as dataplane:
        dataplane.apply(Rules({FWM1: fwmark_service(FWM1, RS1, RS2)}))
        yield dataplane


def frame(l4, dst: str = VIP_A) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=dst) / l4)


def real_of(out: bytes) -> IPv4Address | IPv6Address:
    return next(ip for ip, (mac, _) in REALS.items() if mac == Ether(out).dst)


def test_marked_syns_to_two_ports_are_balanced_by_one_service(dp: Dataplane) -> None:
    reals = []
    for sport, dport, dst in ((40000, 80, VIP_A), (40001, 443, VIP_A), (40002, 8080, VIP_B)):
        packet = frame(TCP(sport=sport, dport=dport, flags="S"), dst)
        result = dp.test_run_fwm(packet, mark=1)
        assert result.verdict == TC_ACT_OK
        assert result.data[12:] == packet[12:]  # only the MACs change
        assert Ether(result.data).src == DIRECTOR_MAC
        reals.append(real_of(result.data))
    assert reals == [RS1, RS2, RS1]  # rr over the one service, whatever the port and address
    assert dp.counters()["fwm_seen"] == 3 and dp.counters()["conn_new"] == 3
    conns = {(c.vip, c.vport): c for c in dp.connections()}
    assert conns[(IPv4Address(VIP_A), 443)].rip == RS2 and conns[(IPv4Address(VIP_A), 443)].state == "SYN_RECV"
    assert conns[(IPv4Address(VIP_A), 443)].rport == 443  # a real of port 0 takes the packet's (IPVS)
    assert dp.conn_counts()[(FWM1, (RS2, 0))] == (1, 0)


def test_the_flow_keeps_its_real_and_xdp_forwards_it_by_its_entry(dp: Dataplane) -> None:
    first = dp.test_run_fwm(frame(TCP(sport=40000, dport=80, flags="S")), mark=1)
    ack = frame(TCP(sport=40000, dport=80, flags="A"))
    assert real_of(dp.test_run_fwm(ack, mark=1).data) == real_of(first.data)
    data = frame(TCP(sport=40000, dport=80, flags="PA") / b"x")
    assert real_of(dp.test_run_fwm(data, mark=1).data) == real_of(first.data)
    # XDP looks connections up only for VIPs: this destination is none, so the flow's packets go the marked way.
    assert dp.test_run(data).verdict_name == "XDP_PASS"
    # Once the address is a VIP (of another service), the XDP program finds the connection by its 5-tuple and
    # forwards it itself (IPVS too looks a packet's connection up before its service).
    other = ServiceKey(Protocol.TCP, IPv4Address(VIP_A), 9)
    dp.apply(Rules({FWM1: dp.read_rules().services[FWM1], other: Service(other, "rr")}))
    result = dp.test_run(data)
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == real_of(first.data)


def test_other_marks_and_unmarked_packets_leave_untouched(dp: Dataplane) -> None:
    packet = frame(UDP(sport=5000, dport=53))
    for mark in (0, 2):
        result = dp.test_run_fwm(packet, mark=mark)
        assert result.verdict == TC_ACT_OK and result.data == packet
    assert dp.counters()["fwm_seen"] == 0
    assert dp.test_run(packet).verdict_name == "XDP_PASS"  # no VIP service for XDP either


def test_marked_packet_the_service_does_not_take_is_dropped_and_counted(dp: Dataplane) -> None:
    # A TCP segment other than SYN without a connection: nft took it off the input path, so it cannot go back.
    assert dp.test_run_fwm(frame(TCP(sport=40009, dport=80, flags="A")), mark=1).verdict == TC_ACT_SHOT
    assert dp.counters()["pass_miss_ack"] == 1
    # A UDP datagram starts a connection, as for a service by address.
    assert dp.test_run_fwm(frame(UDP(sport=5000, dport=53)), mark=1).verdict == TC_ACT_OK


def test_fwmark_service_reads_back_and_has_no_vip(dp: Dataplane) -> None:
    rules = dp.read_rules()
    assert list(rules.services) == [FWM1]
    assert sorted(rules.services[FWM1].reals) == [(RS1, 0), (RS2, 0)]
    assert dp._vips() == set()


def test_an_ipv6_fwmark_service_is_its_family_only(dp: Dataplane) -> None:
    fwm6 = fwmark_key(2, 6)
    svc6 = Service(fwm6, "rr")
    svc6.reals[(RS6, 0)] = Real(RS6, 0, 1)
    dp.apply(Rules({**dp.read_rules().services, fwm6: svc6}))
    packet = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IPv6(src="2001:db8:1::2", dst="2001:db8::100")
                   / TCP(sport=40000, dport=8443, flags="S"))
    result = dp.test_run_fwm(packet, mark=2)
    assert result.verdict == TC_ACT_OK and real_of(result.data) == RS6 and result.data[12:] == packet[12:]
    (conn,) = dp.connections()
    assert (conn.vip, conn.vport, conn.rport, conn.state) == (IPv6Address("2001:db8::100"), 8443, 8443, "SYN_RECV")
    # Mark 2 has no IPv4 service, mark 1 no IPv6 one: such packets leave as they are.
    v4 = frame(TCP(sport=40000, dport=80, flags="S"))
    assert dp.test_run_fwm(v4, mark=2).data == v4
    assert dp.test_run_fwm(packet, mark=1).data == packet
    assert dp.fwmarks() == {(4, 1), (6, 2)}


def test_one_packet_scheduling_takes_a_fwmark_services_udp_datagrams(dp: Dataplane) -> None:
    """ipvsadm -f 1 -o: IPVS makes the service's UDP connections one-packet ones, its TCP ones stay connections."""
    svc = fwmark_service(FWM1, RS1, RS2)
    svc.onepacket = True
    dp.apply(Rules({FWM1: svc}))
    assert dp.read_rules().services[FWM1].onepacket
    datagram = frame(UDP(sport=5000, dport=53))
    results = [dp.test_run_fwm(datagram, mark=1) for _ in range(4)]  # one flow
    assert [r.verdict for r in results] == [TC_ACT_OK] * 4
    assert [real_of(r.data) for r in results] == [RS1, RS2, RS1, RS2]
    assert dp.connections() == [] and dp.counters()["onepacket"] == 4
    syn = frame(TCP(sport=40000, dport=80, flags="S"))
    first = real_of(dp.test_run_fwm(syn, mark=1).data)
    ack = frame(TCP(sport=40000, dport=80, flags="A"))
    assert real_of(dp.test_run_fwm(ack, mark=1).data) == first
    assert len(dp.connections()) == 1 and dp.counters()["onepacket"] == 4


def test_a_clients_connections_to_every_port_of_the_mark_share_one_persistence_template(dp: Dataplane) -> None:
    svc = fwmark_service(FWM1, RS1, RS2)
    svc.persistent = 60
    dp.apply(Rules({FWM1: svc}))
    reals = [real_of(dp.test_run_fwm(frame(TCP(sport=40000 + n, dport=dport, flags="S")), mark=1).data)
             for n, dport in enumerate((80, 443, 443, 80))]
    assert reals == [reals[0]] * 4  # http and https of one client: one real, as `-f 1 -p` is used for
    other_client = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src="198.18.1.3", dst=VIP_A)
                         / TCP(sport=40100, dport=443, flags="S"))
    assert real_of(dp.test_run_fwm(other_client, mark=1).data) != reals[0]  # rr: the next client, the next real
    [template] = [c for c in dp.connections() if c.template and str(c.client) == CLIENT]
    assert template.vport == 0 and template.rip == reals[0]
