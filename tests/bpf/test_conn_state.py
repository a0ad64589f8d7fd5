"""Connection state under churn and attack (BPF_PROG_TEST_RUN): one truth for the counts, IPVS's miss rules,
half-open entries in their own table, templates kept alive by their connections."""

from __future__ import annotations

import ctypes
import os
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyvs.dataplane import Dataplane, abi, libbpf, scratch_dataplane
from pyvs.model import ALL_SCHEDULERS

from .conftest import CLIENT_MAC, DIRECTOR_MAC, static_neighbours
from .test_xdp import RS1, RS2, RS3, TCP80, UDP80, real_of, rules, service

VIP = "198.18.0.100"
FAST_PASS_TICKS = 40  # a sweep pass every 100 ms, so that a test waits for passes briefly


def tcp(src: str, sport: int, flags: str, payload: bytes = b"", dport: int = 80) -> bytes:
    packet = Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=src, dst=VIP) / TCP(sport=sport, dport=dport, flags=flags)
    return bytes(packet / Raw(payload)) if payload else bytes(packet)


def client(i: int) -> str:
    return f"198.18.{100 + i // 250}.{1 + i % 250}"


@pytest.fixture
def small() -> Iterator[Dataplane]:
    """A 1024-entry table (one shard; 256 half-open entries) with fast sweep passes."""
    with scratch_dataplane("pyvst-state", static_neighbours, conn_table_size=1024) as dp:
        dp.set_pass_ticks(FAST_PASS_TICKS)
        yield dp


def table_equals_counts(dp: Dataplane) -> tuple[bool, dict[object, tuple[int, int]], dict[object, tuple[int, int]]]:
    live = dp.live_counts()
    table = dp.conn_counts()
    return all(table.get(key, (0, 0)) == value for key, value in live.items()) and set(table) <= set(live), live, table


def assert_counts_settle(dp: Dataplane) -> None:
    """Within two sweep passes the counts the schedulers use equal a count of the tables."""
    dp.wait_passes(2)
    equal, live, table = table_equals_counts(dp)
    assert equal, f"schedulers' counts {live} != table {table}"


def connect(dp: Dataplane, i: int, sport: int = 40000) -> IPv4Address:
    """SYN then ACK from client i; the real both went to."""
    first = dp.test_run(tcp(client(i), sport, "S"))
    second = dp.test_run(tcp(client(i), sport, "A"))
    assert first.verdict_name == second.verdict_name == "XDP_TX"
    assert real_of(first.data) == real_of(second.data)
    return real_of(first.data)


# ---- one truth for the counts ------------------------------------------------------------------------------


def test_counts_equal_the_table_after_the_lru_evicted_entries(small: Dataplane) -> None:
    # The case: wlc over two reals of weight 100, 5000 clients each sending SYN then ACK into 1024 entries.
    # The counts once grew to 2500 per real while the table held ~450 each; now they follow the table.
    small.apply(rules(service(TCP80, "wlc", (RS1, 100), (RS2, 100))))
    for i in range(5000):
        connect(small, i)
    assert small.conn_table_usage()["evicted"] >= 0
    assert_counts_settle(small)
    total = sum(a + n for a, n in small.live_counts().values())
    # The table is full of established connections and the counts say so (the LRU keeps a few hundred free
    # nodes on each CPU's local list when the test's thread moves between CPUs: not every slot is live).
    assert 512 <= total <= 1024
    usage = small.conn_table_usage()
    assert usage["entries"] == total and usage["evicted"] == 5000 - total


def test_counts_equal_the_table_after_a_flush(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    for i in range(40):
        connect(small, i)
    assert small.live_counts()[(TCP80, (RS1, 80))] == (20, 0)
    assert small.flush_connections(TCP80, (RS1, 80)) == 20
    assert_counts_settle(small)
    assert small.live_counts()[(TCP80, (RS1, 80))] == (0, 0)
    assert small.live_counts()[(TCP80, (RS2, 80))] == (20, 0)


def test_a_reused_real_slot_starts_from_the_table_not_from_its_last_owner(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    for i in range(30):
        connect(small, i)
    small.apply(rules(service(TCP80, "rr", (RS2, 1))))  # RS1 deleted: its slot is free
    small.apply(rules(service(TCP80, "rr", (RS2, 1), (RS3, 1))))  # RS3 takes the slot over
    assert_counts_settle(small)
    counts = small.live_counts()
    assert counts[(TCP80, (RS3, 80))] == (0, 0)  # none of RS1's 15 connections is RS3's
    assert counts[(TCP80, (RS2, 80))] == (15, 0)
    assert {connect(small, 900), connect(small, 901)} == {RS2, RS3}
    assert small.live_counts()[(TCP80, (RS3, 80))] == (1, 0)


def test_counts_left_wrong_by_a_crashed_writer_or_a_race_are_recounted(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "wlc", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1))))
    for i in range(20):
        connect(small, i)
        small.test_run(bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=client(i), dst=VIP)
                             / UDP(sport=5000, dport=80)))
    truth = small.conn_counts()
    fd = libbpf.obj_get(str(small.pin_dir / "real_conns"))
    try:
        for slot in range(8):  # every parity of the first slots holds garbage
            garbage = abi.RealConns()
            for p in range(abi.PARITY_SLOTS):
                garbage.active[p], garbage.inactive[p] = 1000 + p, -7
            libbpf.map_update(fd, ctypes.c_uint32(slot), garbage)
    finally:
        os.close(fd)
    assert small.live_counts() != {k: truth.get(k, (0, 0)) for k in small.live_counts()}
    # Garbage in the parity being zeroed, behind the zeroing's cursor, is read for one more pass than the ghosts
    # that evictions leave (those are only ever in the current or the previous parity): three passes.
    small.wait_passes(1)
    assert_counts_settle(small)
    assert small.conn_counts() == truth


@pytest.fixture
def roomy() -> Iterator[Dataplane]:
    """Tables that no test fills (nothing evicted), with fast sweep passes."""
    with scratch_dataplane("pyvst-roomy", static_neighbours, conn_table_size=65536) as dp:
        dp.set_pass_ticks(FAST_PASS_TICKS)
        yield dp


def test_two_cpus_sending_the_same_flows_count_each_connection_once(roomy: Dataplane) -> None:
    small = roomy
    small.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    if len(os.sched_getaffinity(0)) < 2:
        pytest.fail("this test needs two CPUs")
    cpus = sorted(os.sched_getaffinity(0))[:2]
    syns = [tcp(client(i), 42000, "S") for i in range(200)]
    acks = [tcp(client(i), 42000, "A") for i in range(200)]
    start = threading.Barrier(2)

    def sender(cpu: int) -> None:
        os.sched_setaffinity(0, {cpu})  # this thread only
        start.wait()
        for packets in (syns, acks):
            for packet in packets:
                small.test_run(packet)

    threads = [threading.Thread(target=sender, args=(cpu,)) for cpu in cpus]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # No pass needed: an insert that lost the race counts nothing, so the counts equal the tables at once. (A SYN
    # that one CPU handles after the other CPU moved the flow to the connection table makes a half-open entry of
    # its own, counted as such: the tables really hold it.)
    equal, live, table = table_equals_counts(small)
    assert equal, f"schedulers' counts {live} != table {table}"
    conns = [(k.saddr, k.sport) for _, k, _ in small.table_entries("conns")]
    assert len(conns) == len(set(conns)) == 200
    assert_counts_settle(small)


# ---- IPVS's miss rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "payload", "counter"), [
    ("A", b"", "pass_miss_ack"), ("PA", b"GET / HTTP/1.1\r\n\r\n", "pass_miss_ack"), ("FA", b"", "pass_miss_fin"),
    ("R", b"", "pass_miss_rst"),
], ids=["ack", "data", "fin", "rst"])
def test_a_tcp_packet_without_an_entry_that_is_not_a_syn_goes_to_the_kernel(
        small: Dataplane, flags: str, payload: bytes, counter: str) -> None:
    small.apply(rules(service(TCP80, "wlc", (RS1, 1), (RS2, 1))))
    packet = tcp(client(1), 43000, flags, payload)
    result = small.test_run(packet)
    assert (result.verdict_name, result.data) == ("XDP_PASS", packet)
    assert small.counters()[counter] == 1 and small.counters()["conn_new"] == 0
    assert small.connections() == []


def test_sloppy_tcp_schedules_any_packet_but_rst(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    small.set_sloppy_tcp(True)
    assert small.switches()["sloppy_tcp"]
    assert small.test_run(tcp(client(1), 43100, "A")).verdict_name == "XDP_TX"
    assert small.test_run(tcp(client(2), 43101, "FA")).verdict_name == "XDP_TX"
    assert small.test_run(tcp(client(3), 43102, "R")).verdict_name == "XDP_PASS"
    states = sorted(c.state for c in small.connections())
    assert states == ["CLOSE", "ESTABLISHED"]  # IPVS's table from NONE: ACK -> ESTABLISHED, FIN -> CLOSE
    small.set_sloppy_tcp(False)
    assert small.test_run(tcp(client(4), 43103, "A")).verdict_name == "XDP_PASS"


def test_sloppy_mh_sends_a_mid_flow_packet_where_the_syn_would_have_gone() -> None:
    # Two directors share no state: one sees the SYN, the other (after an ECMP change) the flow's next ACK.
    svc = service(TCP80, "mh", (RS1, 1), (RS2, 1), (RS3, 1))
    svc.sched_flags = ("mh-port",)
    with scratch_dataplane("pyvst-mh1", static_neighbours) as first, \
            scratch_dataplane("pyvst-mh2", static_neighbours) as second:
        first.apply(rules(svc))
        second.apply(rules(svc))
        second.set_sloppy_tcp(True)
        pairs = [(real_of(first.test_run(tcp(client(i), 44000 + i, "S")).data),
                  real_of(second.test_run(tcp(client(i), 44000 + i, "PA", b"x")).data)) for i in range(60)]
    assert all(syn_real == ack_real for syn_real, ack_real in pairs)
    assert len({syn_real for syn_real, _ in pairs}) == 3


def test_udp_needs_no_syn(small: Dataplane) -> None:
    small.apply(rules(service(UDP80, "rr", (RS1, 1))))
    packet = Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=client(1), dst=VIP) / UDP(sport=5300, dport=80)
    assert small.test_run(bytes(packet)).verdict_name == "XDP_TX"


# ---- half-open entries and floods ----------------------------------------------------------------------


def test_a_syn_makes_a_half_open_entry_that_the_clients_ack_moves_to_the_connection_table(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1))))
    real = real_of(small.test_run(tcp(client(1), 45000, "S")).data)
    assert len(list(small.table_entries("half_open"))) == 1 and not list(small.table_entries("conns"))
    assert real_of(small.test_run(tcp(client(1), 45000, "S")).data) == real  # a retransmitted SYN: same entry
    assert real_of(small.test_run(tcp(client(1), 45000, "A")).data) == real
    assert not list(small.table_entries("half_open")) and len(list(small.table_entries("conns"))) == 1
    counters = small.counters()
    assert (counters["half_open_new"], counters["half_open_promoted"], counters["conn_new"]) == (1, 1, 1)
    assert small.live_counts()[(TCP80, (real, 80))] == (1, 0)


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS)
def test_a_syn_flood_evicts_no_established_connection(small: Dataplane, scheduler: str) -> None:
    small.apply(rules(service(TCP80, scheduler, (RS1, 1000), (RS2, 1000))))  # ovf: room for 1000 each
    owners = {i: connect(small, i, sport=46000) for i in range(100)}
    template = bytearray(tcp("198.19.0.1", 1024, "S"))
    for flood_round in range(3):
        for n in range(100 * 1024 // 3 + 1):  # 100x the table over the three rounds, spoofed sources
            template[26:30] = bytes((198, 19, n >> 8 & 0xFF, n & 0xFF))  # the IP source
            template[34:36] = (1024 + flood_round).to_bytes(2, "big")  # the TCP source port
            small.test_run(bytes(template))
        for i, real in owners.items():
            result = small.test_run(tcp(client(i), 46000, "PA", b"GET / HTTP/1.1\r\n\r\n"))
            assert result.verdict_name == "XDP_TX" and real_of(result.data) == real, f"round {flood_round}, {i}"
    counters = small.counters()  # ovf refuses most of the flood once its reals' active counts pass their weights
    assert counters["half_open_new"] + counters["drop_no_real"] >= 100 * 1024
    assert len(list(small.table_entries("conns"))) == 100  # the flood never reached the connection table


def test_the_status_warns_when_the_table_is_nearly_full(small: Dataplane) -> None:
    from pyvs.arp.doctor import Status, table_finding
    from pyvs.cli.director import table_usage_lines

    small.apply(rules(service(TCP80, "rr", (RS1, 1))))
    for i in range(700):
        connect(small, i)
    small.wait_passes(2)
    assert not any(line.startswith("WARNING") for line in table_usage_lines(small.conn_table_usage()))
    for i in range(700, 900):
        connect(small, i)
    small.wait_passes(2)
    lines = table_usage_lines(small.conn_table_usage())
    assert any(line.startswith("WARNING: the connection table is 88% full") for line in lines), lines
    finding = table_finding(small.conn_table_usage())  # pyvs doctor says it too
    assert finding.status is Status.WARN and "900 of 1024 entries live (88%)" in finding.detail


# ---- persistence, packets, clocks ----------------------------------------------------------------------


def test_a_template_lives_while_a_connection_it_placed_lives(small: Dataplane) -> None:
    svc = service(TCP80, "rr", (RS1, 1), (RS2, 1))
    svc.persistent = 1  # the template alone would expire after one idle second
    small.apply(rules(svc))
    first = connect(small, 1, sport=47000)
    time.sleep(2.5)  # the connection is idle but ESTABLISHED (900 s): the template must stay (IPVS's n_control)
    assert [c.rip for c in small.connections() if c.template] == [first]
    assert real_of(small.test_run(tcp(client(1), 47001, "S")).data) == first


def test_an_ipv4_total_length_shorter_than_its_headers_is_malformed(small: Dataplane) -> None:
    small.apply(rules(service(TCP80, "rr", (RS1, 1))))
    packet = Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=client(1), dst=VIP, len=30) / TCP(sport=48000, flags="S")
    result = small.test_run(bytes(packet))
    assert result.verdict_name == "XDP_DROP" and small.counters()["drop_malformed"] == 1


def test_a_locality_cache_entry_stamped_later_by_another_cpu_is_still_used() -> None:
    with scratch_dataplane("pyvst-lblc", static_neighbours) as dp:
        dp.apply(rules(service(TCP80, "lblc", (RS1, 1), (RS2, 1))))
        first = real_of(dp.test_run(tcp(client(1), 49000, "S")).data)
        fd = libbpf.obj_get(str(dp.pin_dir / "lblc_cache"))
        try:
            key = libbpf.map_keys(fd, ctypes.c_uint64)[0]
            entry = (ctypes.c_uint64 * 2)()
            libbpf.map_lookup(fd, key, entry)
            entry[0] += 5 * 10**9  # lastuse "in the future" as this packet's clock sees it
            libbpf.map_update(fd, key, entry)
        finally:
            os.close(fd)
        # wlc would pick the other real now; the cache entry is not expired, so lblc keeps the first.
        assert real_of(dp.test_run(tcp(client(2), 49001, "S")).data) == first

