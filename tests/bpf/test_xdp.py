"""The XDP program, packet in, verdict and packet out (BPF_PROG_TEST_RUN)."""

from __future__ import annotations

import time
from collections import Counter
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import ARP, Ether
from scapy.packet import Raw

from pyvs.dataplane import Dataplane, DataplaneError, libbpf, open_dataplane, scratch_dataplane
from pyvs.dataplane.neighbours import ZERO_MAC, NextHop
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey, Timeouts
from pyvs.schedulers.roundrobin import wrr_table

from .conftest import CLIENT_MAC, DIRECTOR_MAC, REALS, static_neighbours

VIP = IPv4Address("198.18.0.100")
CLIENT = "198.18.1.2"
RS1, RS2, RS3 = (IPv4Address(f"198.18.2.{n}") for n in (11, 12, 13))
TCP80 = ServiceKey(Protocol.TCP, VIP, 80)
UDP80 = ServiceKey(Protocol.UDP, VIP, 80)


def service(key: ServiceKey, scheduler: str, *reals: tuple[IPv4Address, int]) -> Service:
    svc = Service(key, scheduler)
    for rip, weight in reals:
        svc.reals[(rip, key.port)] = Real(rip, key.port, weight)
    return svc


def rules(*services: Service) -> Rules:
    return Rules({svc.key: svc for svc in services})


def frame(l4, dst: str = str(VIP), src: str = CLIENT, **ip) -> bytes:  # type: ignore[no-untyped-def]
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=src, dst=dst, **ip) / l4)


def syn(sport: int = 40000, dport: int = 80) -> bytes:
    return frame(TCP(sport=sport, dport=dport, flags="S", seq=1000))


def real_of(out: bytes) -> IPv4Address:
    mac = Ether(out).dst
    return next(ip for ip, (m, _) in REALS.items() if m == mac)


def assert_forwarded(packet_in: bytes, packet_out: bytes, real: IPv4Address) -> None:
    """Only the MACs change: destination = the real's, source = the director's."""
    assert packet_out[:6] == bytes.fromhex(REALS[real][0].replace(":", ""))
    assert packet_out[6:12] == bytes.fromhex(DIRECTOR_MAC.replace(":", ""))
    assert packet_out[12:] == packet_in[12:]


@pytest.fixture
def two_reals(dataplane: Dataplane) -> Dataplane:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1), (RS2, 1))))
    return dataplane


def test_tcp_syn_to_a_service_is_sent_to_a_real_with_only_the_macs_rewritten(two_reals: Dataplane) -> None:
    packet = syn()
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(packet, result.data, real_of(result.data))
    assert two_reals.counters()["conn_new"] == 1


def test_established_segment_follows_its_connection(two_reals: Dataplane) -> None:
    first = two_reals.test_run(syn(sport=40001))
    chosen = real_of(first.data)
    for flags in ("A", "PA", "A"):
        packet = frame(TCP(sport=40001, dport=80, flags=flags, seq=1001, ack=1) / Raw(b"GET / HTTP/1.0\r\n\r\n"))
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, chosen)
    [conn] = two_reals.connections()
    assert conn.state == "ESTABLISHED" and conn.rip == chosen and conn.cport == 40001


def test_udp_to_a_service_is_forwarded(two_reals: Dataplane) -> None:
    packet = frame(UDP(sport=5353, dport=80) / Raw(b"hello"))
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(packet, result.data, real_of(result.data))
    [conn] = two_reals.connections()
    assert conn.proto is Protocol.UDP and conn.state == "UDP"


@pytest.mark.parametrize(
    "packet",
    [
        pytest.param(syn(dport=8080), id="vip-port-without-service"),
        pytest.param(frame(UDP(sport=5353, dport=53)), id="vip-udp-port-without-service"),
        pytest.param(frame(TCP(sport=1, dport=80, flags="S"), dst="198.18.0.1"), id="other-address"),
        pytest.param(bytes(Ether(src=CLIENT_MAC, dst="ff:ff:ff:ff:ff:ff") / ARP(pdst=str(VIP), psrc="198.18.0.1")),
                     id="arp-who-has-vip"),
        pytest.param(frame(Raw(b"\x08\x00\x00\x00\x00\x00\x00\x00"), proto=1), id="icmp-to-vip"),
        pytest.param(bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC, type=0x86DD) / Raw(b"\x60" + bytes(60))),
                     id="ipv6"),
        pytest.param(bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC)) + b"\x45\x00", id="cut-inside-ip-header"),
        pytest.param(frame(TCP(sport=1, dport=80), dst="198.18.0.1", frag=5), id="fragment-to-other-address"),
    ],
)
def test_non_service_traffic_is_passed_untouched(two_reals: Dataplane, packet: bytes) -> None:
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_PASS"
    assert result.data == packet
    assert two_reals.connections() == []


def test_ip_options_are_kept_and_forwarded(two_reals: Dataplane) -> None:
    packet = frame(TCP(sport=40002, dport=80, flags="S"), options=[b"\x01\x01\x01\x00"])
    assert IP(packet[14:]).ihl == 6
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(packet, result.data, real_of(result.data))


def test_truncated_frame_to_a_vip_is_dropped_and_counted(two_reals: Dataplane) -> None:
    whole = frame(TCP(sport=40003, dport=80, flags="S") / Raw(bytes(100)))
    for cut in (whole[:14 + 20 + 10], whole[:-1]):  # ports present but header cut; IP length larger than frame
        result = two_reals.test_run(cut)
        assert result.verdict_name == "XDP_DROP"
    assert two_reals.counters()["drop_malformed"] == 2
    assert two_reals.connections() == []


def test_rr_alternates_exactly(two_reals: Dataplane) -> None:
    chosen = [real_of(two_reals.test_run(syn(sport=41000 + i)).data) for i in range(100)]
    assert Counter(chosen) == {RS1: 50, RS2: 50}
    assert all(a != b for a, b in zip(chosen, chosen[1:], strict=False))


def test_wrr_follows_the_ipvs_sequence(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "wrr", (RS1, 4), (RS2, 3), (RS3, 2))))
    chosen = [real_of(dataplane.test_run(syn(sport=42000 + i)).data) for i in range(18)]
    names = {RS1: "A", RS2: "B", RS3: "C"}
    assert "".join(names[r] for r in chosen) == "AABABCABC" * 2
    assert wrr_table([4, 2, 2]) == [0, 0, 1, 2]


def test_weight_zero_takes_no_new_connections_but_keeps_existing_ones(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    owners = {sport: real_of(dataplane.test_run(syn(sport=sport)).data) for sport in (43000, 43001)}
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 0))))
    new = {real_of(dataplane.test_run(syn(sport=43100 + i)).data) for i in range(10)}
    assert new == {RS1}
    for sport, real in owners.items():
        result = dataplane.test_run(frame(TCP(sport=sport, dport=80, flags="A")))
        assert result.verdict_name == "XDP_TX" and real_of(result.data) == real


def test_deleted_real_drops_its_connections_and_counts_them(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    owners = {sport: real_of(dataplane.test_run(syn(sport=sport)).data) for sport in (44000, 44001)}
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1))))
    gone = next(s for s, r in owners.items() if r == RS2)
    kept = next(s for s, r in owners.items() if r == RS1)
    assert dataplane.test_run(frame(TCP(sport=gone, dport=80, flags="A"))).verdict_name == "XDP_DROP"
    assert dataplane.counters()["drop_real_gone"] == 1
    assert real_of(dataplane.test_run(frame(TCP(sport=kept, dport=80, flags="A"))).data) == RS1
    # With expire_nodest_conn the entry goes at its next packet, and a new SYN is scheduled again.
    dataplane.set_expire_nodest_conn(True)
    assert dataplane.test_run(frame(TCP(sport=gone, dport=80, flags="A"))).verdict_name == "XDP_DROP"
    assert real_of(dataplane.test_run(syn(sport=gone)).data) == RS1


def test_service_without_available_real_drops_and_counts(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 0))))
    assert dataplane.test_run(syn()).verdict_name == "XDP_DROP"
    assert dataplane.counters()["drop_no_real"] == 1


def test_real_with_unresolved_mac_is_never_given_the_frame(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (IPv4Address("198.18.2.14"), 1))))
    assert dataplane.test_run(syn()).verdict_name == "XDP_DROP"
    assert dataplane.counters()["drop_no_mac"] == 1


def test_real_behind_another_interface_is_redirected(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (IPv4Address("198.18.2.15"), 1))))
    assert dataplane.test_run(syn()).verdict_name == "XDP_REDIRECT"
    assert dataplane.counters()["redirect"] == 1


def test_rst_without_connection_is_left_to_the_kernel(two_reals: Dataplane) -> None:
    packet = frame(TCP(sport=45000, dport=80, flags="R"))
    assert two_reals.test_run(packet).verdict_name == "XDP_PASS"
    assert two_reals.connections() == []


def test_tcp_states_follow_the_ipvs_input_only_table(two_reals: Dataplane) -> None:
    states = []
    for flags in ("S", "A", "FA", "A", "R"):
        two_reals.test_run(frame(TCP(sport=46000, dport=80, flags=flags)))
        states.append(two_reals.connections()[0].state)
    assert states == ["SYN_RECV", "ESTABLISHED", "FIN_WAIT", "FIN_WAIT", "CLOSE"]
    counts = two_reals.conn_counts()
    assert list(counts.values()) == [(0, 1)]


def test_counters_per_service_and_real(two_reals: Dataplane) -> None:
    packets = [syn(sport=47000), syn(sport=47001), frame(TCP(sport=47000, dport=80, flags="A"))]
    for packet in packets:
        two_reals.test_run(packet)
    stats = two_reals.service_stats()[TCP80]
    # Bytes are the IP packets', as IPVS counts them (it was the Ethernet frames' before).
    assert (stats.conns, stats.inpkts, stats.inbytes) == (2, 3, sum(len(Ether(p)[IP]) for p in packets))
    per_real = two_reals.real_stats()
    assert sum(c.conns for (key, _), c in per_real.items() if key == TCP80) == 2
    two_reals.zero(TCP80)
    assert two_reals.service_stats()[TCP80].inpkts == 0


def test_syn_on_a_closed_connection_is_scheduled_as_a_new_one(two_reals: Dataplane) -> None:
    first = real_of(two_reals.test_run(syn(sport=48000)).data)
    two_reals.test_run(frame(TCP(sport=48000, dport=80, flags="FA")))
    again = real_of(two_reals.test_run(syn(sport=48000)).data)
    assert again != first  # rr moved on: a new connection, not the old entry
    assert two_reals.counters()["conn_replaced"] == 1
    assert [c.state for c in two_reals.connections()] == ["SYN_RECV"]


def test_new_mac_of_a_real_is_followed_at_once(two_reals: Dataplane) -> None:
    first = two_reals.test_run(syn(sport=49000))
    real = real_of(first.data)
    assert two_reals.set_real_mac(real, "02:00:00:00:00:99") == 2  # the TCP and the UDP service
    result = two_reals.test_run(frame(TCP(sport=49000, dport=80, flags="A")))
    assert result.verdict_name == "XDP_TX" and Ether(result.data).dst == "02:00:00:00:00:99"


def test_flushing_a_real_removes_only_its_connections(two_reals: Dataplane) -> None:
    owners = {sport: real_of(two_reals.test_run(syn(sport=sport)).data) for sport in (49100, 49101, 49102)}
    assert two_reals.flush_connections(TCP80, (RS1, 80)) == list(owners.values()).count(RS1)
    assert {c.rip for c in two_reals.connections()} == {RS2}


def test_live_counts_follow_the_state_of_each_connection(two_reals: Dataplane) -> None:
    real = real_of(two_reals.test_run(syn(sport=50000)).data)
    key = (TCP80, (real, 80))
    assert two_reals.live_counts()[key] == (1, 0)  # SYN_RECV is active, as IPVS counts it
    two_reals.test_run(frame(TCP(sport=50000, dport=80, flags="A")))
    assert two_reals.live_counts()[key] == (1, 0)
    two_reals.test_run(frame(TCP(sport=50000, dport=80, flags="FA")))
    assert two_reals.live_counts()[key] == (0, 1)  # FIN_WAIT is inactive
    udp_real = real_of(two_reals.test_run(frame(UDP(sport=5353, dport=80))).data)
    assert two_reals.live_counts()[(UDP80, (udp_real, 80))] == (0, 1)
    assert sum(a + i for a, i in two_reals.live_counts().values()) == 2


def test_sweeper_removes_expired_connections_and_their_counts(two_reals: Dataplane) -> None:
    two_reals.set_timeouts(Timeouts(0, 0, 1))  # udp entries live 1 s
    real = real_of(two_reals.test_run(frame(UDP(sport=5354, dport=80))).data)
    assert two_reals.live_counts()[(UDP80, (real, 80))] == (0, 1)
    deadline = time.monotonic() + 5
    while two_reals.counters()["conn_swept"] == 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert two_reals.counters()["conn_swept"] == 1
    assert two_reals.live_counts()[(UDP80, (real, 80))] == (0, 0)
    assert two_reals.connections() == []


def test_persistence_sends_a_client_to_one_real_across_source_ports(dataplane: Dataplane) -> None:
    svc = service(TCP80, "rr", (RS1, 1), (RS2, 1))
    svc.persistent, svc.netmask = 300, IPv4Address("255.255.255.0")
    dataplane.apply(rules(svc))
    first = [real_of(dataplane.test_run(syn(sport=51000 + i)).data) for i in range(6)]
    assert len(set(first)) == 1
    neighbour = frame(TCP(sport=52000, dport=80, flags="S"), src="198.18.1.77")  # same /24: same template
    assert real_of(dataplane.test_run(neighbour).data) == first[0]
    other = frame(TCP(sport=52001, dport=80, flags="S"), src="198.18.3.9")
    assert real_of(dataplane.test_run(other).data) != first[0]  # a new template, rr moved on
    templates = [c for c in dataplane.connections() if c.template]
    expected = {("198.18.1.0", 0, "NONE"), ("198.18.3.0", 0, "NONE")}
    assert {(str(t.client), t.cport, t.state) for t in templates} == expected
    assert dataplane.counters()["persist_hit"] == 6
    read = dataplane.read_rules().services[TCP80]
    assert (read.persistent, read.netmask) == (300, IPv4Address("255.255.255.0"))


def test_port_zero_persistent_service_keeps_a_client_on_one_real_across_ports(dataplane: Dataplane) -> None:
    svc = service(ServiceKey(Protocol.TCP, VIP, 0), "rr", (RS1, 1), (RS2, 1))
    svc.persistent = 60
    dataplane.apply(rules(svc))
    chosen = {real_of(dataplane.test_run(syn(sport=53000 + port, dport=port)).data) for port in (80, 443, 8080)}
    assert len(chosen) == 1


def test_connection_table_size_is_set_at_creation_and_kept() -> None:
    with scratch_dataplane("pyvst-small", static_neighbours, conn_table_size=1024) as small:
        assert small.conn_table_size == 1024
        with pytest.raises(DataplaneError, match="has 1024 entries"):
            open_dataplane(small.pin_dir, conn_table_size=8192)
        small.apply(rules(service(TCP80, "rr", (RS1, 1))))
        for i in range(1300):  # more connections than entries: the least recently used are evicted
            small.test_run(syn(sport=10000 + i))
            small.test_run(frame(TCP(sport=10000 + i, dport=80, flags="A")))
        assert len(small.connections()) <= 1024
        small.wait_passes(2)  # the usage is what the sweeper's last pass counted, not a scan
        usage = small.conn_table_usage()
        assert usage["size"] == 1024 and usage["entries"] <= 1024
        assert usage["evicted"] == 1300 - usage["entries"] >= 276  # the full table's evictions are counted
        assert small.test_run(syn(sport=20000)).verdict_name == "XDP_TX"


def test_deleting_a_service_ends_its_connections(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1))))
    assert dataplane.test_run(syn(sport=54000)).verdict_name == "XDP_TX"
    ack = frame(TCP(sport=54000, dport=80, flags="A"))
    assert real_of(dataplane.test_run(ack).data) == RS1
    dataplane.apply(Rules())
    assert dataplane.test_run(ack).data == ack and dataplane.test_run(ack).verdict_name == "XDP_PASS"
    dataplane.apply(rules(service(TCP80, "rr", (RS2, 1))))  # a new service in the same slot
    # The old entry is not used; an ACK starts no connection (IPVS's rule; it was scheduled to RS2 before).
    assert dataplane.test_run(ack).verdict_name == "XDP_PASS"
    assert dataplane.counters()["conn_replaced"] >= 1 and dataplane.counters()["pass_miss_ack"] == 1
    assert real_of(dataplane.test_run(syn(sport=54000)).data) == RS2


def test_entry_stamped_by_another_cpu_after_this_one_read_the_clock_is_not_expired(two_reals: Dataplane) -> None:
    # CPUs race: one reads the clock, another stamps the entry later; "now - last_seen" must not wrap around.
    real = real_of(two_reals.test_run(syn(sport=55000)).data)
    for fd, key, entry in list(two_reals.table_entries("half_open")):
        entry.last_seen += 5 * 10**9  # stamped "in the future" as seen from this packet's clock read
        libbpf.map_update(fd, key, entry)
    result = two_reals.test_run(frame(TCP(sport=55000, dport=80, flags="A")))
    assert real_of(result.data) == real
    assert two_reals.counters()["conn_replaced"] == 0
    time.sleep(1.5)  # the sweeper runs meanwhile and must keep the entry too
    assert two_reals.counters()["conn_swept"] == 0 and len(two_reals.connections()) == 1


def test_a_real_whose_mac_was_unknown_gets_frames_once_it_is_resolved() -> None:
    neighbours = {RS1: ZERO_MAC}

    def resolver(rip: IPv4Address) -> NextHop:
        return NextHop(0, DIRECTOR_MAC, neighbours[rip])

    with scratch_dataplane("pyvst-arp", resolver) as dp:
        dp.apply(rules(service(TCP80, "rr", (RS1, 1))))
        assert dp.test_run(syn()).verdict_name == "XDP_DROP"  # drop_no_mac
        assert dp.refresh_macs(only_missing=True) == 0  # still unanswered
        neighbours[RS1] = REALS[RS1][0]  # the real answers ARP now
        assert dp.refresh_macs(only_missing=True) == 1
        assert real_of(dp.test_run(syn(sport=40001)).data) == RS1


def test_the_timer_keeps_the_packet_paths_clock(dataplane: Dataplane) -> None:
    # Packets read the coarse clock from the timer's map value; it must tick (every 2.5 ms) and be the real time.
    now, ticks, _ = dataplane.clock()
    time.sleep(0.2)
    later, later_ticks, _ = dataplane.clock()
    assert later_ticks - ticks >= 5
    coarse = time.clock_gettime_ns(6)  # CLOCK_MONOTONIC_COARSE, the clock the timer stores
    assert 0 < later - now and abs(coarse - later) < 50_000_000
