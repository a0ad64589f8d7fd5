"""Connection sync through two data planes: events of the master's program (BPF_PROG_TEST_RUN), encoded as IPVS
sync messages, decoded and written into the backup's tables, whose program then forwards the connection's packets
to the same real."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import SCTP, SCTPChunkCookieEcho, SCTPChunkData, SCTPChunkInit
from scapy.packet import Raw

from pyvs.dataplane import Dataplane, abi, libbpf, scratch_dataplane
from pyvs.dataplane.neighbours import NextHop
from pyvs.dataplane.synctable import SyncTable, set_sync, sync_events_fd
from pyvs.model import Forwarding, Protocol, Real, Rules, Service, ServiceKey, fwmark_key
from pyvs.sync.codec import (
    CONN_F_DROUTE,
    CONN_F_FWD_MASK,
    CONN_F_INACTIVE,
    CONN_F_MASQ,
    CONN_F_TEMPLATE,
    decode_message,
    encode_message,
)
from pyvs.sync.engine import SyncStats, apply_conn, conn_of_event

from .conftest import CLIENT_MAC, DIRECTOR_MAC, REALS, static_neighbours

VIP = IPv4Address("198.18.0.100")
VIP6 = IPv6Address("2001:db8::100")
CLIENT, CLIENT6 = "198.18.1.2", "2001:db8:1::2"
RS = [IPv4Address(f"198.18.2.{n}") for n in (11, 12, 13)]
RS6 = [IPv6Address(f"2001:db8:2::{n}") for n in (11, 12, 13)]
TCP80 = ServiceKey(Protocol.TCP, VIP, 80)
UDP53 = ServiceKey(Protocol.UDP, VIP, 53)
TCP6 = ServiceKey(Protocol.TCP, VIP6, 80)
TC_ACT_SHOT = 2


def service(key: ServiceKey, reals: list, scheduler: str = "rr", persistent: int | None = None) -> Service:  # type: ignore[type-arg]
    svc = Service(key, scheduler, persistent)
    for rip in reals:
        svc.reals[(rip, key.port)] = Real(rip, key.port, 1)
    return svc


def rules(reals: list, reals6: list, persistent: int | None = None) -> Rules:  # type: ignore[type-arg]
    services = [service(TCP80, reals, persistent=persistent), service(UDP53, reals), service(TCP6, reals6)]
    return Rules({svc.key: svc for svc in services})


def tcp(flags: str, sport: int = 40000, v6: bool = False, payload: bytes = b"") -> bytes:
    ip = IPv6(src=CLIENT6, dst=str(VIP6)) if v6 else IP(src=CLIENT, dst=str(VIP))
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / ip / TCP(sport=sport, dport=80, flags=flags) / Raw(payload))


def udp(sport: int = 5300) -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=str(VIP)) / UDP(sport=sport, dport=53)
                 / Raw(b"q"))


def real_of(out: bytes) -> object:
    mac = Ether(out).dst
    return next(ip for ip, (m, _) in REALS.items() if m == mac)


@pytest.fixture
def pair() -> Iterator[tuple[Dataplane, Dataplane]]:
    """A master and a backup data plane; the backup lists its reals in the other order (rr would pick otherwise)."""
    with scratch_dataplane("pyvst-syncm", static_neighbours) as master, \
            scratch_dataplane("pyvst-syncb", static_neighbours) as backup:
        master.apply(rules(RS[:2], RS6[:2]))
        backup.apply(rules(RS[:2], RS6[:2]))
        yield master, backup


def events(dp: Dataplane) -> list[abi.SyncEvent]:
    got: list[abi.SyncEvent] = []
    ring = libbpf.RingBuffer(sync_events_fd(dp), lambda data: got.append(abi.SyncEvent.from_buffer_copy(data)))
    try:
        ring.consume()
    finally:
        ring.close()
    return got


def sync_once(master: Dataplane, backup: Dataplane, syncid: int = 7) -> SyncStats:
    """The master's events as one message, received by the backup."""
    table = SyncTable(master)
    conns = [c for c in (conn_of_event(ev, table) for ev in events(master)) if c is not None]
    stats = SyncStats()
    decoded = decode_message(encode_message(conns, syncid), syncid)
    for conn in decoded.conns:
        apply_conn(conn, SyncTable(backup), stats)
    return stats


def test_no_event_is_written_while_sync_is_off(pair: tuple[Dataplane, Dataplane]) -> None:
    master, _ = pair
    master.test_run(tcp("S"))
    master.test_run(tcp("A"))
    assert events(master) == []
    assert master.counters()["sync_events"] == 0


def test_a_connection_synced_to_the_backup_is_forwarded_there_to_the_same_real(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    set_sync(master, True)
    for sport in (40000, 40001):  # rr: one connection to each real
        assert master.test_run(tcp("S", sport)).verdict_name == "XDP_TX"
        assert master.test_run(tcp("A", sport)).verdict_name == "XDP_TX"
    chosen = {sport: real_of(master.test_run(tcp("PA", sport, payload=b"data")).data) for sport in (40000, 40001)}
    assert set(chosen.values()) == set(RS[:2])
    # Without sync the backup has no such connection: an ACK is the kernel's (IPVS passes it too).
    assert backup.test_run(tcp("PA", 40000, payload=b"data")).verdict_name == "XDP_PASS"
    stats = sync_once(master, backup)
    assert master.counters()["sync_events"] == 2  # the two promotions by the client's ACK (SYN_RECV is not synced)
    assert stats.conns_applied == 2
    for sport, real in chosen.items():
        packet = tcp("PA", sport, payload=b"more data")
        result = backup.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        assert result.data[:6] == bytes.fromhex(REALS[real][0].replace(":", ""))
        assert result.data[12:] == packet[12:]
    states = {(c.cport, c.rip, c.state) for c in backup.connections()}
    assert states == {(sport, real, "ESTABLISHED") for sport, real in chosen.items()}
    assert backup.conn_counts()[(TCP80, (chosen[40000], 80))] == (1, 0)


def test_a_state_change_is_synced_and_the_backup_takes_it(pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    set_sync(master, True)
    master.test_run(tcp("S"))
    master.test_run(tcp("A"))
    sync_once(master, backup)
    master.test_run(tcp("FA"))
    evs = events(master)
    assert [abi.STATE_NAMES[ev.state] for ev in evs] == ["FIN_WAIT"]
    table = SyncTable(master)
    conn = conn_of_event(evs[0], table)
    assert conn is not None and conn.flags & CONN_F_INACTIVE and conn.timeout == 120
    stats = SyncStats()
    apply_conn(conn, SyncTable(backup), stats)
    assert [c.state for c in backup.connections()] == ["FIN_WAIT"]


def test_udp_flows_and_ipv6_connections_are_synced(pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    set_sync(master, True)
    first = master.test_run(udp())
    master.test_run(tcp("S", v6=True))
    master.test_run(tcp("A", v6=True))
    real6 = real_of(master.test_run(tcp("A", v6=True)).data)
    stats = sync_once(master, backup)
    assert stats.conns_applied == 2
    out = backup.test_run(udp())
    assert out.verdict_name == "XDP_TX" and real_of(out.data) == real_of(first.data)
    out6 = backup.test_run(tcp("A", v6=True))
    assert out6.verdict_name == "XDP_TX" and real_of(out6.data) == real6


def test_a_persistence_template_is_synced_and_places_the_clients_next_connection(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    master.apply(rules(RS[:2], RS6[:2], persistent=300))
    backup.apply(rules(list(reversed(RS[:2])), RS6[:2], persistent=300))
    set_sync(master, True)
    master.test_run(tcp("S", 40000))
    real = real_of(master.test_run(tcp("A", 40000)).data)
    evs = events(master)
    table = SyncTable(master)
    conns = [conn_of_event(ev, table) for ev in evs]
    assert [bool(c.flags & CONN_F_TEMPLATE) for c in conns if c] == [True, False]
    assert conns[0] is not None and conns[0].timeout == 300 and conns[0].cport == 0
    stats = SyncStats()
    for conn in decode_message(encode_message([c for c in conns if c], 0)).conns:
        apply_conn(conn, SyncTable(backup), stats)
    # A new connection of the same client on the backup goes where the master's template says.
    for sport in (41000, 41001, 41002):
        assert real_of(backup.test_run(tcp("S", sport)).data) == real


def test_an_unknown_service_or_real_is_counted_and_skipped(pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    backup.apply(Rules({TCP80: service(TCP80, [RS[2]])}))
    set_sync(master, True)
    for sport in (40000, 40001):
        master.test_run(tcp("S", sport))
        master.test_run(tcp("A", sport))
    master.test_run(udp())
    stats = sync_once(master, backup)
    assert (stats.unknown_real, stats.unknown_service, stats.conns_applied) == (2, 1, 0)
    assert backup.connections() == []


def test_a_full_ring_buffer_is_counted_as_lost_events(pair: tuple[Dataplane, Dataplane]) -> None:
    master, _ = pair
    set_sync(master, True)
    room = abi.SYNC_RING_SIZE // 64  # a record: an 8-byte header and the 52-byte event, rounded up to 8 bytes
    for n in range(room + 10):
        master.test_run(udp(sport=1024 + n))  # a new flow each: an event each
    counters = master.counters()
    assert counters["sync_events"] + counters["sync_events_lost"] == room + 10
    assert 10 <= counters["sync_events_lost"] <= 11  # the kernel keeps one record's room free
    assert len(events(master)) == counters["sync_events"]


def test_the_master_sends_again_the_connections_that_saw_packets_since_its_last_refresh(
        pair: tuple[Dataplane, Dataplane]) -> None:
    """IPVS re-sends a connection every 50 packets; pyvs re-sends every refresh period the live connections that
    saw a packet since the last one, so that the backup's entries do not expire under a long connection."""
    import time

    from pyvs.sync.engine import SyncConfig, SyncEngine

    master, backup = pair
    engine = SyncEngine(master, SyncConfig("master", "lo"), refresh_period=0)
    try:
        for sport in (40000, 40001):
            master.test_run(tcp("S", sport))
            master.test_run(tcp("A", sport))
        engine.step(0)
        assert [c.cport for c in engine._pending] == [40000, 40001]  # the promotions' events
        engine._pending.clear()
        assert engine.refresh() == 2
        assert sorted((c.cport, c.state) for c in engine._pending) == [(40000, 1), (40001, 1)]
        engine._pending.clear()
        time.sleep(0.1)  # the program's clock ticks every 2.5 ms
        master.test_run(tcp("A", 40001, payload=b"more"))
        assert engine.refresh() == 1 and [c.cport for c in engine._pending] == [40001]
        stats = SyncStats()
        for conn in decode_message(encode_message(engine._pending, 0)).conns:
            apply_conn(conn, SyncTable(backup), stats)
        assert stats.conns_applied == 1 and [c.cport for c in backup.connections()] == [40001]
    finally:
        engine.close()
    assert not master.counters()["sync_events_lost"]


# -- what each kind of connection carries: SCTP's states, a NAT real's method, a firewall mark -------------------

SCTP3868 = ServiceKey(Protocol.SCTP, VIP, 3868)
FWM1 = fwmark_key(1)
IP_VS_SCTP_S_INIT1, IP_VS_SCTP_S_ESTABLISHED = 1, 8  # include/net/ip_vs.h, enum ip_vs_sctp_states


def sctp(*chunks, sport: int = 40000, tag: int = 0) -> bytes:  # type: ignore[no-untyped-def]
    body = SCTP(sport=sport, dport=3868, tag=tag)
    for chunk in chunks:
        body = body / chunk
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=str(VIP)) / body)


def both(pair: tuple[Dataplane, Dataplane], *services: Service) -> None:
    for dp in pair:
        dp.apply(Rules({svc.key: svc for svc in services}))


def test_sctp_associations_are_synced_in_ipvs_state_numbers(pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    both(pair, service(SCTP3868, RS[:2]))
    set_sync(master, True)
    assert real_of(master.test_run(sctp(SCTPChunkInit(init_tag=7))).data) == RS[0]
    assert real_of(master.test_run(sctp(SCTPChunkCookieEcho(cookie=b"c" * 16), tag=7)).data) == RS[0]
    table = SyncTable(master)
    conns = [c for c in (conn_of_event(ev, table) for ev in events(master)) if c is not None]
    assert [(c.state, bool(c.flags & CONN_F_INACTIVE)) for c in conns] == [
        (IP_VS_SCTP_S_INIT1, True), (IP_VS_SCTP_S_ESTABLISHED, False)]
    decoded = decode_message(encode_message(conns, 7), 7)
    assert decoded.skipped == 0  # IPVS would take both (a state below IP_VS_SCTP_S_LAST)
    stats = SyncStats()
    for conn in decoded.conns:
        apply_conn(conn, SyncTable(backup), stats)
    assert stats.conns_applied == 2
    assert [(c.proto, c.state, c.rip) for c in backup.connections()] == [(Protocol.SCTP, "ESTABLISHED", RS[0])]
    data = sctp(SCTPChunkData(data=b"hello"), tag=7)
    assert backup.test_run(data).verdict_name == "XDP_TX" and real_of(backup.test_run(data).data) == RS[0]


def test_a_nat_connection_is_sent_as_masq_and_the_backup_forwards_it_and_its_replies(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    nat = Service(TCP80, "rr")
    nat.reals[(RS[0], 8080)] = Real(RS[0], 8080, 1, Forwarding.MASQ)
    both(pair, nat)
    set_sync(master, True)
    master.test_run(tcp("S"))
    master.test_run(tcp("A"))
    table = SyncTable(master)
    [conn] = [c for c in (conn_of_event(ev, table) for ev in events(master)) if c is not None]
    assert conn.flags & CONN_F_FWD_MASK == CONN_F_MASQ and (conn.daddr, conn.dport) == (RS[0], 8080)
    reply = bytes(Ether(src=REALS[RS[0]][0], dst=DIRECTOR_MAC) / IP(src=str(RS[0]), dst=CLIENT)
                  / TCP(sport=8080, dport=40000, flags="A"))
    assert backup.test_run(reply).verdict_name == "XDP_PASS"  # no reply entry: the kernel's (untranslated)
    # The backup's way back to the client: its route's next hop (here the test's, on ifindex 1).
    stats = SyncStats()
    apply_conn(conn, SyncTable(backup, client_resolver=lambda ip: NextHop(1, DIRECTOR_MAC, CLIENT_MAC)), stats)
    assert stats.conns_applied == 1
    forwarded = backup.test_run(tcp("PA", payload=b"data"))
    assert forwarded.verdict_name == "XDP_TX"
    ip = Ether(forwarded.data)[IP]
    assert (Ether(forwarded.data).dst, ip.dst, ip[TCP].dport) == (REALS[RS[0]][0], str(RS[0]), 8080)
    back = backup.test_run(reply)
    assert back.verdict_name == "XDP_TX" and Ether(back.data).dst == CLIENT_MAC
    ip = Ether(back.data)[IP]
    assert (ip.src, ip.dst, ip[TCP].sport, ip[TCP].dport) == (str(VIP), CLIENT, 80, 40000)
    assert backup.counters()["nat_reply"] == 1


def test_a_firewall_mark_connection_carries_its_mark_and_the_backup_forwards_it(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    fwm = Service(FWM1, "rr")
    for rip in RS[:2]:
        fwm.reals[(rip, 0)] = Real(rip, 0, 1)
    both(pair, fwm)
    set_sync(master, True)
    chosen = {}
    for sport in (40000, 40001):  # rr: one connection to each real
        master.test_run_fwm(tcp("S", sport), mark=1)
        chosen[sport] = real_of(master.test_run_fwm(tcp("A", sport), mark=1).data)
    assert set(chosen.values()) == set(RS[:2])
    table = SyncTable(master)
    conns = [c for c in (conn_of_event(ev, table) for ev in events(master)) if c is not None]
    assert [(c.fwmark, c.flags & CONN_F_FWD_MASK) for c in conns] == [(1, CONN_F_DROUTE)] * 2
    marked = tcp("PA", 40001, payload=b"data")
    assert backup.test_run_fwm(marked, mark=1).verdict == TC_ACT_SHOT  # not the backup's connection yet
    stats = SyncStats()
    for conn in decode_message(encode_message(conns, 7), 7).conns:
        apply_conn(conn, SyncTable(backup), stats)
    assert stats.conns_applied == 2
    for sport, real in chosen.items():
        assert real_of(backup.test_run_fwm(tcp("PA", sport, payload=b"data"), mark=1).data) == real
