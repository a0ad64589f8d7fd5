"""NAT (ipvsadm -m) through BPF_PROG_TEST_RUN: the client's packets get the real's address and port, the real's
replies get VIP:vport back and go to the client the way its packets came; every checksum is verified by
recomputing it; IPVS's NAT TCP state table (both directions); a service mixing -g and -m reals; ICMP errors about a
NAT connection; fragments of replies; malformed packets counted."""

from __future__ import annotations

import ctypes
import os
import time
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, in4_chksum
from scapy.layers.l2 import Ether
from scapy.packet import Raw
from scapy.utils import checksum

from pyvs.dataplane import Dataplane, abi, libbpf
from pyvs.model import Forwarding, Real, Service, ServiceKey, Timeouts

from .conftest import CLIENT_MAC, DIRECTOR_MAC, REALS
from .test_xdp import CLIENT, RS1, RS2, TCP80, UDP80, VIP, frame, real_of, rules

GATEWAY = "198.18.1.1"


def nat_service(key: ServiceKey, *reals: tuple[IPv4Address, int, Forwarding], scheduler: str = "rr") -> Service:
    svc = Service(key, scheduler)
    for rip, port, method in reals:
        svc.reals[(rip, port)] = Real(rip, port, 1, method)
    return svc


def reply(l4, real: IPv4Address = RS1, dst: str = CLIENT, **ip) -> bytes:  # type: ignore[no-untyped-def]
    """What a real sends back to a client (its default route is the director)."""
    return bytes(Ether(src=REALS[real][0], dst=DIRECTOR_MAC) / IP(src=str(real), dst=dst, **ip) / l4)


def assert_checksums(data: bytes) -> IP:
    """The IP header's and the TCP/UDP/ICMP checksums of a frame hold (each recomputed over what it covers)."""
    ip = Ether(data)[IP]
    raw = bytes(ip)
    assert checksum(raw[:ip.ihl * 4]) == 0, "IP header checksum"
    l4 = raw[ip.ihl * 4:ip.len]
    if ip.proto == 1:
        assert checksum(l4) == 0, "ICMP checksum"
        inner = IP(l4[8:])
        assert checksum(l4[8:8 + inner.ihl * 4]) == 0, "quoted IP header checksum"
    elif not (ip.proto == 17 and UDP(l4).chksum == 0) and not ip.frag and not ip.flags.MF:  # a whole datagram
        assert in4_chksum(ip.proto, ip, l4) == 0, "L4 checksum"
    return ip


@pytest.fixture
def nat(dataplane: Dataplane) -> Dataplane:
    """VIP:80 to RS1:8080 by NAT, TCP and UDP."""
    dataplane.apply(rules(nat_service(TCP80, (RS1, 8080, Forwarding.MASQ)),
                          nat_service(UDP80, (RS1, 8080, Forwarding.MASQ))))
    return dataplane


def states(dp: Dataplane) -> set[str]:
    return {c.state for c in dp.connections()}


def test_a_nat_connection_gets_the_reals_address_and_port_with_checksums_updated(nat: Dataplane) -> None:
    packet = frame(TCP(sport=40000, dport=80, flags="S", seq=1000, options=[("MSS", 1460)]))
    result = nat.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    out = Ether(result.data)
    assert out.dst == REALS[RS1][0] and out.src == DIRECTOR_MAC
    ip = assert_checksums(result.data)
    assert (ip.src, ip.dst, ip[TCP].sport, ip[TCP].dport) == (CLIENT, str(RS1), 40000, 8080)
    assert ip.ttl == IP(packet[14:]).ttl and bytes(ip[TCP].payload) == bytes(IP(packet[14:])[TCP].payload)
    assert nat.counters()["nat_forward"] == 1
    data = frame(TCP(sport=40000, dport=80, flags="PA", seq=1001, ack=1) / Raw(b"GET / HTTP/1.0\r\n\r\n"))
    ip = assert_checksums(nat.test_run(data).data)
    assert (ip.dst, ip[TCP].dport, bytes(ip[TCP].payload)) == (str(RS1), 8080, b"GET / HTTP/1.0\r\n\r\n")


def test_the_reals_reply_gets_the_vip_back_and_goes_to_the_client_the_way_it_came(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=40000, dport=80, flags="S", seq=1000)))
    result = nat.test_run(reply(TCP(sport=8080, dport=40000, flags="SA", seq=5000, ack=1001), ttl=64))
    assert result.verdict_name == "XDP_TX"
    out = Ether(result.data)
    assert out.dst == CLIENT_MAC and out.src == DIRECTOR_MAC  # the MACs of the client's own packets, swapped
    ip = assert_checksums(result.data)
    assert (ip.src, ip.dst, ip[TCP].sport, ip[TCP].dport, ip.ttl) == (str(VIP), CLIENT, 80, 40000, 63)
    counters = nat.counters()
    assert counters["nat_reply"] == 1 and counters["pass_nat_no_conn"] == 0
    stats = nat.service_stats()[TCP80]
    assert (stats.inpkts, stats.outpkts, stats.outbytes) == (1, 1, 40)  # as IPVS counts a NAT reply: OutPkts
    assert nat.real_stats()[(TCP80, (RS1, 8080))].outpkts == 1
    nat.zero(TCP80)
    assert nat.service_stats()[TCP80].outpkts == 0


def reply_entries(dp: Dataplane) -> tuple[int, int]:
    """Entries of nat_replies and nat_half."""
    return tuple(len(libbpf.map_keys(dp._fds[name], abi.ConnKey)) for name in ("nat_replies", "nat_half"))  # type: ignore[return-value]


def test_a_half_open_connections_reply_entry_is_apart_and_follows_it_when_established(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=40020, dport=80, flags="S")))
    assert reply_entries(nat) == (0, 1)  # a SYN flood churns nat_half alone
    result = nat.test_run(reply(TCP(sport=8080, dport=40020, flags="SA")))
    assert result.verdict_name == "XDP_TX" and Ether(result.data)[IP].src == str(VIP)
    nat.test_run(frame(TCP(sport=40020, dport=80, flags="A")))
    assert reply_entries(nat) == (1, 0)
    result = nat.test_run(reply(TCP(sport=8080, dport=40020, flags="PA") / Raw(b"hello")))
    assert result.verdict_name == "XDP_TX" and Ether(result.data)[IP].src == str(VIP)
    nat.test_run(frame(UDP(sport=5600, dport=80) / Raw(b"q")))
    assert reply_entries(nat) == (2, 0)  # UDP has no half-open state


def test_tcp_state_follows_both_directions_as_ipvs_nat_does(nat: Dataplane) -> None:
    def client(flags: str) -> None:
        assert nat.test_run(frame(TCP(sport=40010, dport=80, flags=flags))).verdict_name == "XDP_TX"

    def real(flags: str) -> None:
        assert nat.test_run(reply(TCP(sport=8080, dport=40010, flags=flags))).verdict_name == "XDP_TX"

    client("S")
    assert states(nat) == {"SYN_RECV"}
    real("SA")  # output SYN in SYN_RECV: SYN_RECV
    assert states(nat) == {"SYN_RECV"}
    client("A")
    assert states(nat) == {"ESTABLISHED"}
    client("FA")  # input FIN in ESTABLISHED: CLOSE_WAIT (input-only, DR: FIN_WAIT)
    assert states(nat) == {"CLOSE_WAIT"}
    real("FA")  # output FIN in CLOSE_WAIT: TIME_WAIT
    assert states(nat) == {"TIME_WAIT"}
    [(_, (active, inactive))] = [(k, v) for k, v in nat.live_counts().items() if k[0] == TCP80]
    assert (active, inactive) == (0, 1)


def test_a_real_that_closes_first_is_tracked_from_its_replies(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=40011, dport=80, flags="S")))
    nat.test_run(reply(TCP(sport=8080, dport=40011, flags="SA")))
    nat.test_run(frame(TCP(sport=40011, dport=80, flags="A")))
    nat.test_run(reply(TCP(sport=8080, dport=40011, flags="FA")))  # output FIN in ESTABLISHED: FIN_WAIT
    assert states(nat) == {"FIN_WAIT"}
    nat.test_run(reply(TCP(sport=8080, dport=40011, flags="R")))  # output RST: CLOSE
    assert states(nat) == {"CLOSE"}


def test_udp_both_ways_and_a_datagram_without_checksum_keeps_none(nat: Dataplane) -> None:
    result = nat.test_run(frame(UDP(sport=5353, dport=80) / Raw(b"question")))
    ip = assert_checksums(result.data)
    assert (ip.dst, ip[UDP].dport, bytes(ip[UDP].payload)) == (str(RS1), 8080, b"question")
    result = nat.test_run(reply(UDP(sport=8080, dport=5353) / Raw(b"answer")))
    ip = assert_checksums(result.data)
    assert (ip.src, ip[UDP].sport, bytes(ip[UDP].payload)) == (str(VIP), 80, b"answer")
    bare = bytearray(frame(UDP(sport=5354, dport=80) / Raw(b"q")))
    bare[14 + 20 + 6:14 + 20 + 8] = b"\0\0"  # no checksum (IPv4 allows it)
    ip = assert_checksums(nat.test_run(bytes(bare)).data)
    assert ip[UDP].chksum == 0 and ip.dst == str(RS1) and ip[UDP].dport == 8080


def test_a_service_may_mix_direct_routing_and_nat_reals(dataplane: Dataplane) -> None:
    dataplane.apply(rules(nat_service(TCP80, (RS1, 80, Forwarding.ROUTE), (RS2, 8080, Forwarding.MASQ))))
    seen = {}
    for cport in (41000, 41001):
        packet = frame(TCP(sport=cport, dport=80, flags="S"))
        result = dataplane.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        seen[real_of(result.data)] = (packet, result.data)
    assert set(seen) == {RS1, RS2}  # rr: one each
    packet, out = seen[RS1]
    assert out[12:] == packet[12:]  # direct routing: only the MACs
    ip = assert_checksums(seen[RS2][1])
    assert (ip.dst, ip[TCP].dport) == (str(RS2), 8080)
    listed = dataplane.read_rules().services[TCP80].reals
    assert {k: r.forwarding for k, r in listed.items()} == {(RS1, 80): Forwarding.ROUTE,
                                                             (RS2, 8080): Forwarding.MASQ}
    assert {(c.rip, c.rport) for c in dataplane.connections()} == {(RS1, 80), (RS2, 8080)}
    assert dataplane.counters()["nat_forward"] == 1


def test_a_changed_method_applies_to_new_connections_only(dataplane: Dataplane) -> None:
    dataplane.apply(rules(nat_service(TCP80, (RS1, 80, Forwarding.MASQ))))
    old = frame(TCP(sport=42000, dport=80, flags="S"))
    assert Ether(dataplane.test_run(old).data)[IP].dst == str(RS1)
    dataplane.apply(rules(nat_service(TCP80, (RS1, 80, Forwarding.ROUTE))))
    again = frame(TCP(sport=42000, dport=80, flags="A"))
    assert Ether(dataplane.test_run(again).data)[IP].dst == str(RS1)  # still NAT, as IPVS's connection keeps it
    new = frame(TCP(sport=42001, dport=80, flags="S"))
    assert dataplane.test_run(new).data[12:] == new[12:]
    assert dataplane.counters()["nat_forward"] == 2


def test_replies_of_no_connection_are_the_kernels(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=43000, dport=80, flags="S")))
    for packet in (reply(TCP(sport=8080, dport=43001, flags="SA")),  # another client port
                   reply(TCP(sport=8081, dport=43000, flags="SA")),  # another real port
                   reply(TCP(sport=8080, dport=43000, flags="SA"), dst="198.18.1.3")):  # another client
        result = nat.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert nat.flush_connections(TCP80, (RS1, 8080)) == 1  # the connection goes, its reply entry stays
    packet = reply(TCP(sport=8080, dport=43000, flags="SA"))
    result = nat.test_run(packet)
    assert result.verdict_name == "XDP_PASS" and result.data == packet
    counters = nat.counters()
    assert counters["pass_nat_no_conn"] == 1 and counters["nat_reply"] == 0


def test_a_reply_whose_ttl_runs_out_is_left_to_the_kernel(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=43100, dport=80, flags="S")))
    packet = reply(TCP(sport=8080, dport=43100, flags="SA"), ttl=1)
    result = nat.test_run(packet)
    assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert nat.counters()["pass_nat_ttl"] == 1


def test_an_icmp_error_about_a_nat_connection_reaches_its_real_as_the_real_sent_it(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=44000, dport=80, flags="S")))
    nat.test_run(frame(TCP(sport=44000, dport=80, flags="A")))
    quoted = bytes(IP(src=str(VIP), dst=CLIENT) / TCP(sport=80, dport=44000, flags="PA") / Raw(bytes(1400)))
    error = frame(ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted[:28]), src=GATEWAY, proto=1)
    result = nat.test_run(error)
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == RS1
    ip = assert_checksums(result.data)
    inner = IP(bytes(ip[ICMP].payload))
    assert (ip.src, ip.dst) == (GATEWAY, str(RS1))
    assert (inner.src, inner.dst) == (str(RS1), CLIENT)
    assert bytes(inner.payload)[:4] == (8080).to_bytes(2, "big") + (44000).to_bytes(2, "big")
    counters = nat.counters()
    assert counters["nat_icmp_to_real"] == 1 and counters["icmp_to_real"] == 1


def test_a_malformed_error_or_packet_is_dropped_and_counted_never_rewritten(nat: Dataplane) -> None:
    nat.test_run(frame(TCP(sport=44100, dport=80, flags="S")))
    quoted = bytes(IP(src=str(VIP), dst=CLIENT) / TCP(sport=80, dport=44100))
    error = frame(ICMP(type=3, code=4) / Raw(quoted[:22]), src=GATEWAY, proto=1)  # the quoted ports cut off
    assert nat.test_run(error).verdict_name == "XDP_DROP"
    cut = frame(TCP(sport=44100, dport=80, flags="A"))[:14 + 20 + 10]  # the TCP header cut off
    assert nat.test_run(cut).verdict_name == "XDP_DROP"
    counters = nat.counters()
    assert counters["drop_icmp_malformed"] == 1 and counters["drop_malformed"] == 1
    assert counters["nat_forward"] == 1 and counters["nat_icmp_to_real"] == 0


def test_fragments_of_a_reply_follow_their_first(nat: Dataplane) -> None:
    nat.test_run(frame(UDP(sport=5400, dport=80) / Raw(b"q")))
    whole = IP(src=str(RS1), dst=CLIENT, id=77, ttl=64) / UDP(sport=8080, dport=5400) / Raw(bytes(range(256)) * 8)
    first, second = (bytes(Ether(src=REALS[RS1][0], dst=DIRECTOR_MAC) / part)
                     for part in whole.fragment(fragsize=1024)[:2])
    outs = [nat.test_run(part) for part in (first, second)]
    assert [o.verdict_name for o in outs] == ["XDP_TX", "XDP_TX"]
    ips = [assert_checksums(o.data) for o in outs]
    assert all((ip.src, ip.dst) == (str(VIP), CLIENT) for ip in ips)
    # Reassembled, the datagram is the real's with VIP:80 as its source and a checksum that holds.
    payload = bytes(ips[0].payload) + bytes(ips[1].payload)
    rest = whole.fragment(fragsize=1024)[2:]
    payload += b"".join(bytes(p.payload) for p in rest)
    udp = UDP(payload)
    assert udp.sport == 80 and udp.dport == 5400
    pseudo = IP(src=str(VIP), dst=CLIENT, proto=17)
    assert in4_chksum(17, pseudo, payload) == 0
    assert nat.counters()["nat_reply_frag"] == 1


def test_the_sweeper_removes_a_nat_connections_reply_entry_with_it(nat: Dataplane) -> None:
    nat.set_timeouts(Timeouts(0, 0, 1))  # udp entries live 1 s
    nat.test_run(frame(UDP(sport=5500, dport=80) / Raw(b"q")))
    fd = nat._fds["nat_replies"]
    assert reply_entries(nat) == (1, 0)
    deadline = time.monotonic() + 5
    while nat.counters()["conn_swept"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert nat.counters()["conn_swept"] == 1
    assert reply_entries(nat) == (0, 0)
    value = abi.NatReply()
    assert not libbpf.map_lookup(fd, abi.ConnKey(), value) and ctypes.sizeof(value) == 32


def test_replies_are_looked_for_only_while_nat_reals_exist(dataplane: Dataplane) -> None:
    assert not dataplane._config().flags & abi.CFG_MASQ
    dataplane.apply_service(TCP80, nat_service(TCP80, (RS1, 8080, Forwarding.MASQ)))  # one service: sets it
    assert dataplane._config().flags & abi.CFG_MASQ
    dataplane.apply(rules(nat_service(TCP80, (RS1, 80, Forwarding.ROUTE))))  # a whole apply without NAT: clears it
    assert not dataplane._config().flags & abi.CFG_MASQ
    packet = reply(TCP(sport=8080, dport=40000, flags="SA"))
    assert dataplane.test_run(packet).data == packet and dataplane.counters()["pass_nat_no_conn"] == 0


def test_a_one_packet_datagram_to_a_nat_real_is_translated_both_ways(dataplane: Dataplane) -> None:
    """-o with a NAT real: the datagram's entry lives 1 s idle, so that the real's reply gets the VIP back."""
    svc = nat_service(UDP80, (RS1, 8080, Forwarding.MASQ))
    svc.onepacket = True
    dataplane.apply(rules(svc))
    ip = assert_checksums(dataplane.test_run(frame(UDP(sport=5353, dport=80) / Raw(b"question"))).data)
    assert (ip.dst, ip[UDP].dport) == (str(RS1), 8080)
    (_, _, entry), = dataplane.table_entries("conns")
    assert entry.timeout == 1
    result = dataplane.test_run(reply(UDP(sport=8080, dport=5353) / Raw(b"answer")))
    ip = assert_checksums(result.data)
    assert (ip.src, ip[UDP].sport) == (str(VIP), 80)
    assert dataplane.counters()["nat_reply"] == 1


def test_the_rate_estimator_counts_nat_replies_as_out(nat: Dataplane) -> None:
    """OutPPS/OutBPS: IPVS's averages over the replies (OutPkts, OutBytes) of the service's NAT connections."""
    nat.test_run(frame(UDP(sport=5353, dport=80) / Raw(b"question")))
    for _ in range(10):
        assert nat.test_run(reply(UDP(sport=8080, dport=5353) / Raw(bytes(100)))).verdict_name == "XDP_TX"
    index = nat._services()[UDP80].index  # noqa: SLF001
    fd = libbpf.obj_get(str(nat.pin_dir / "estimators"))
    try:
        est, deadline = abi.Est(), time.monotonic() + 10
        while True:
            libbpf.map_lookup(fd, ctypes.c_uint32(index), est)
            if est.last_outpkts or time.monotonic() > deadline:
                break
            time.sleep(0.1)
    finally:
        os.close(fd)
    assert (est.last_outpkts, est.last_outbytes) == (10, 10 * 128)
    assert est.outpps > 0 and est.outbps > 0
    assert nat.service_rates()[UDP80].outbps > 0
