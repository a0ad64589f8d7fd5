"""One-packet scheduling (ipvsadm -o) and the rate estimator (ipvsadm -L --rate) in the loaded program."""

from __future__ import annotations

import ctypes
import os
import time

from scapy.layers.inet import UDP
from scapy.packet import Raw

from pyvs.dataplane import Dataplane, abi, libbpf
from pyvs.dataplane.codec import decode_rates
from pyvs.model import Protocol, Rates, ServiceKey

from .test_fragments import fragments
from .test_xdp import RS1, RS2, TCP80, UDP80, VIP, frame, real_of, rules, service


def datagram(sport: int = 5353, size: int = 100) -> bytes:
    return frame(UDP(sport=sport, dport=80) / Raw(bytes(size)))


def entries(dp: Dataplane) -> int:
    return sum(1 for table in ("conns", "half_open") for _ in dp.table_entries(table))


def test_one_packet_service_schedules_every_datagram_and_keeps_no_entry(dataplane: Dataplane) -> None:
    svc = service(UDP80, "rr", (RS1, 1), (RS2, 1))
    svc.onepacket = True
    dataplane.apply(rules(svc))
    results = [dataplane.test_run(datagram()) for _ in range(4)]  # one client, one port: one flow
    assert [r.verdict_name for r in results] == ["XDP_TX"] * 4
    assert [real_of(r.data) for r in results] == [RS1, RS2, RS1, RS2]
    assert entries(dataplane) == 0
    counters = dataplane.counters()
    assert (counters["onepacket"], counters["conn_new"], counters["conn_inserted"]) == (4, 4, 0)
    stats = dataplane.service_stats()[UDP80]
    assert (stats.conns, stats.inpkts) == (4, 4)  # IPVS counts a connection per datagram
    assert set(dataplane.live_counts().values()) == {(0, 0)}
    assert dataplane.read_rules().services[UDP80].onepacket


def test_without_o_the_flow_keeps_its_real(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(UDP80, "rr", (RS1, 1), (RS2, 1))))
    results = [dataplane.test_run(datagram()) for _ in range(4)]
    assert {real_of(r.data) for r in results} == {RS1}
    assert entries(dataplane) == 1
    assert dataplane.counters()["onepacket"] == 0


def test_a_fragmented_one_packet_datagram_stays_whole(dataplane: Dataplane) -> None:
    """The fragments follow their first one (an entry that lives 1 s idle); the next datagram is scheduled anew."""
    svc = service(UDP80, "rr", (RS1, 1), (RS2, 1))
    svc.onepacket = True
    dataplane.apply(rules(svc))
    results = [dataplane.test_run(f) for f in fragments()]
    assert len({real_of(r.data) for r in results}) == 1
    (_, _, entry), = dataplane.table_entries("conns")
    assert entry.timeout == 1
    time.sleep(2.2)  # idle past its 1 s
    first = real_of(results[0].data)
    assert real_of(dataplane.test_run(datagram()).data) != first


def test_onepacket_flag_is_only_for_udp_in_the_program(dataplane: Dataplane) -> None:
    """A TCP service never carries the flag (the model refuses it), and a TCP packet never takes the path."""
    svc = service(TCP80, "rr", (RS1, 1), (RS2, 1))
    dataplane.apply(rules(svc))
    services = libbpf.obj_get(str(dataplane.pin_dir / "services"))
    try:
        for key in libbpf.map_keys(services, abi.SvcKey):
            value = abi.Svc()
            assert libbpf.map_lookup(services, key, value)
            assert not value.flags & abi.SVC_F_ONEPACKET
    finally:
        os.close(services)


# ---- the rate estimator ----

def ewma(deltas: list[int], shift: int) -> list[int]:
    """ip_vs_est.c's averages after each estimate: avg += ((delta << shift) - avg) >> 2 (arithmetic shift)."""
    avg, out = 0, []
    for delta in deltas:
        avg += ((delta << shift) - avg) >> 2
        out.append(avg)
    return out


def estimator(dp: Dataplane, index: int) -> abi.Est:
    fd = libbpf.obj_get(str(dp.pin_dir / "estimators"))
    try:
        value = abi.Est()
        libbpf.map_lookup(fd, ctypes.c_uint32(index), value)
        return value
    finally:
        os.close(fd)


def burst_after_an_estimate(dp: Dataplane, index: int, port: int) -> int | None:
    """Wait for an estimate of stats index `index`, then send 60 datagrams of 128 bytes in 20 connections to `port`;
    the estimates made so far, or None when one came during the burst (a loaded machine)."""
    before = estimator(dp, index).rounds
    deadline = time.monotonic() + 5
    while estimator(dp, index).rounds == before:
        assert time.monotonic() < deadline, "no estimate within 5 s"
        time.sleep(0.002)
    first = estimator(dp, index).rounds
    for n in range(20):
        for _ in range(3):
            packet = frame(UDP(sport=6000 + n, dport=port) / Raw(bytes(100)))
            assert dp.test_run(packet).verdict_name == "XDP_TX"
    return first if estimator(dp, index).rounds == first else None


def test_rates_follow_ipvs_estimator(dataplane: Dataplane) -> None:
    """A burst right after an estimate: the next estimate sees all of it, the ones after it nothing; the averages are
    the kernel's for that sequence, decoded as ipvsadm gets them."""
    dataplane.program()  # loaded before: a load takes longer than the burst
    for port in (80, 81, 82):  # a fresh service (and estimator) when an estimate came during the burst
        key = ServiceKey(Protocol.UDP, VIP, port)
        dataplane.apply(rules(service(key, "rr", (RS1, 1))))
        index = dataplane._services()[key].index  # noqa: SLF001
        first = burst_after_an_estimate(dataplane, index, port)
        if first is not None:
            break
    assert first is not None, "an estimate came during every burst"
    deadline = time.monotonic() + 10
    while estimator(dataplane, index).rounds < first + 2:
        assert time.monotonic() < deadline, "the estimator stopped"
        time.sleep(0.1)
    est = estimator(dataplane, index)
    after = est.rounds - first  # estimates since the burst: the first saw it all
    assert (est.last_conns, est.last_inpkts, est.last_inbytes) == (20, 60, 60 * 128)
    assert est.cps == ewma([20] + [0] * (after - 1), 9)[-1]
    assert est.inpps == ewma([60] + [0] * (after - 1), 9)[-1]
    assert est.inbps == ewma([60 * 128] + [0] * (after - 1), 4)[-1]
    assert (est.outpps, est.outbps) == (0, 0)  # DR: nothing comes back through the director
    rates = dataplane.service_rates()[key]
    assert rates == Rates(*decode_rates(est))
    assert rates.inbps > 0 and rates.cps > 0
    # the real's estimator is in another row (its estimates may have split the burst): the same packets, a rate
    assert 0 < dataplane.real_rates()[(key, (RS1, port))].inpps <= rates.inpps + 1
    clock = abi.EstClock()
    fd = libbpf.obj_get(str(dataplane.pin_dir / "est_clock"))
    try:
        libbpf.map_lookup(fd, ctypes.c_uint32(0), clock)
    finally:
        os.close(fd)
    assert clock.rows > abi.EST_ROWS  # a row every 2.5 ms: more than one round of every slot


def test_zero_restarts_the_rates(dataplane: Dataplane) -> None:
    dataplane.apply(rules(service(UDP80, "rr", (RS1, 1))))
    for n in range(50):
        dataplane.test_run(datagram(sport=7000 + n))
    index = dataplane._services()[UDP80].index  # noqa: SLF001
    deadline = time.monotonic() + 10
    while not estimator(dataplane, index).inpps:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    dataplane.zero()
    assert dataplane.service_rates()[UDP80] == Rates()
    assert estimator(dataplane, index).last_inpkts == 0
