"""SCTP services in the XDP program (BPF_PROG_TEST_RUN; this kernel has no SCTP sockets, so the lab cannot carry
them): an INIT is scheduled, the association's chunks follow it, IPVS's input-only SCTP state table
(ip_vs_proto_sctp.c) moves its state and its count, ABORT and SHUTDOWN COMPLETE close it, and each state has IPVS's
timeout. DR changes only the MACs, so the packet's CRC32c stays valid."""

from __future__ import annotations

import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.layers.sctp import (
    SCTP,
    SCTPChunkAbort,
    SCTPChunkCookieEcho,
    SCTPChunkData,
    SCTPChunkInit,
    SCTPChunkSACK,
    SCTPChunkShutdown,
    SCTPChunkShutdownComplete,
)

from pyvs.admin.printers import format_connections
from pyvs.dataplane import Dataplane, scratch_dataplane
from pyvs.model import Connection, Protocol, Real, Rules, Service, ServiceKey

from .conftest import CLIENT_MAC, DIRECTOR_MAC, REALS, static_neighbours

VIP, VIP6 = IPv4Address("198.18.0.100"), IPv6Address("2001:db8::100")
CLIENT, CLIENT6 = "198.18.1.2", "2001:db8:1::2"
PORT = 3868  # Diameter
RS1, RS2 = IPv4Address("198.18.2.11"), IPv4Address("198.18.2.12")
RS6 = IPv6Address("2001:db8:2::11")
SCTP_V4 = ServiceKey(Protocol.SCTP, VIP, PORT)
SCTP_V6 = ServiceKey(Protocol.SCTP, VIP6, PORT)


def service(key: ServiceKey, *rips: IPv4Address | IPv6Address) -> Service:
    svc = Service(key, "rr")
    for rip in rips:
        svc.reals[(rip, PORT)] = Real(rip, PORT, 1)
    return svc


@pytest.fixture
def dp() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvsf-bpf-sctp", static_neighbours) as dataplane:
        dataplane.apply(Rules({SCTP_V4: service(SCTP_V4, RS1, RS2), SCTP_V6: service(SCTP_V6, RS6)}))
        yield dataplane


def packet(*chunks, sport: int = 40000, tag: int = 0, v6: bool = False) -> bytes:  # type: ignore[no-untyped-def]
    l3 = IPv6(src=CLIENT6, dst=str(VIP6)) if v6 else IP(src=CLIENT, dst=str(VIP))
    body = SCTP(sport=sport, dport=PORT, tag=tag)
    for chunk in chunks:
        body = body / chunk
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / l3 / body)


def real_of(out: bytes) -> IPv4Address | IPv6Address:
    return next(ip for ip, (mac, _) in REALS.items() if mac == Ether(out).dst)


def send(dp: Dataplane, frame: bytes) -> tuple[str, IPv4Address | IPv6Address | None]:
    result = dp.test_run(frame)
    if result.verdict_name != "XDP_TX":
        return result.verdict_name, None
    assert result.data[12:] == frame[12:]  # only the MACs change
    return result.verdict_name, real_of(result.data)


def conn(dp: Dataplane, sport: int = 40000) -> Connection:
    (found,) = [c for c in dp.connections() if c.cport == sport and not c.template]
    return found


def test_init_is_scheduled_and_the_association_follows_its_real(dp: Dataplane) -> None:
    verdict, real = send(dp, packet(SCTPChunkInit(init_tag=7)))
    assert verdict == "XDP_TX" and real == RS1
    assert (conn(dp).proto, conn(dp).state) == (Protocol.SCTP, "INIT1")
    assert dp.conn_counts()[(SCTP_V4, (RS1, PORT))] == (0, 1)  # IPVS counts it active only when established
    # The client's INIT again (its INIT ACK lost): the same real, state INIT.
    assert send(dp, packet(SCTPChunkInit(init_tag=7))) == ("XDP_TX", RS1) and conn(dp).state == "INIT"
    # The server's INIT ACK is not seen (DR); the client's COOKIE ECHO establishes it.
    assert send(dp, packet(SCTPChunkCookieEcho(cookie=b"c" * 16), tag=7)) == ("XDP_TX", RS1)
    assert conn(dp).state == "ESTABLISHED" and dp.conn_counts()[(SCTP_V4, (RS1, PORT))] == (1, 0)
    for chunk in (SCTPChunkData(data=b"hello"), SCTPChunkSACK()):
        assert send(dp, packet(chunk, tag=7)) == ("XDP_TX", RS1)
    assert conn(dp).state == "ESTABLISHED" and 895 < conn(dp).expires <= 900
    # Another association is the next real's (rr).
    assert send(dp, packet(SCTPChunkInit(init_tag=8), sport=40001))[1] == RS2
    assert dp.counters()["conn_new"] == 2


def test_the_crc32c_is_left_valid(dp: Dataplane) -> None:
    frame = packet(SCTPChunkInit(init_tag=7))
    out = dp.test_run(frame).data
    sctp_in, sctp_out = Ether(frame)[SCTP], Ether(out)[SCTP]
    assert sctp_out.chksum == sctp_in.chksum
    rebuilt = Ether(out)
    del rebuilt[SCTP].chksum
    assert Ether(bytes(rebuilt))[SCTP].chksum == sctp_out.chksum  # scapy's CRC32c of the bytes sent


def test_only_init_starts_an_association(dp: Dataplane) -> None:
    assert send(dp, packet(SCTPChunkData(data=b"x"), tag=7))[0] == "XDP_PASS"
    assert send(dp, packet(SCTPChunkCookieEcho(cookie=b"c"), tag=7))[0] == "XDP_PASS"
    assert send(dp, packet(SCTPChunkAbort(), tag=7))[0] == "XDP_PASS"
    counters = dp.counters()
    assert (counters["pass_miss_sctp"], counters["pass_miss_rst"], counters["conn_new"]) == (2, 1, 0)


def test_abort_ends_it_and_an_init_starts_anew(dp: Dataplane) -> None:
    send(dp, packet(SCTPChunkInit(init_tag=7)))
    send(dp, packet(SCTPChunkCookieEcho(cookie=b"c" * 16), tag=7))
    assert send(dp, packet(SCTPChunkAbort(), tag=7)) == ("XDP_TX", RS1)
    assert conn(dp).state == "CLOSED" and 55 < conn(dp).expires <= 61
    assert dp.conn_counts()[(SCTP_V4, (RS1, PORT))] == (0, 1)
    # A new INIT on the closed association is scheduled again (rr: the next real).
    assert send(dp, packet(SCTPChunkInit(init_tag=9))) == ("XDP_TX", RS2)
    assert conn(dp).state == "INIT1" and dp.counters()["conn_replaced"] == 1


def test_abort_bundled_after_a_cookie_echo_counts(dp: Dataplane) -> None:
    send(dp, packet(SCTPChunkInit(init_tag=7)))
    send(dp, packet(SCTPChunkCookieEcho(cookie=b"c" * 13), SCTPChunkAbort(), tag=7))  # 17 bytes: padded to 20
    assert conn(dp).state == "CLOSED"


def test_shutdown_then_shutdown_complete_closes_it(dp: Dataplane) -> None:
    send(dp, packet(SCTPChunkInit(init_tag=7)))
    send(dp, packet(SCTPChunkCookieEcho(cookie=b"c" * 16), tag=7))
    assert send(dp, packet(SCTPChunkShutdown(), tag=7))[0] == "XDP_TX" and conn(dp).state == "S-RECEIVED"
    assert send(dp, packet(SCTPChunkShutdownComplete(), tag=7))[0] == "XDP_TX" and conn(dp).state == "CLOSED"


def test_a_state_times_out_by_its_own_timeout(dp: Dataplane) -> None:
    dp.set_state_timeout("SCTP_INIT1", 1)
    send(dp, packet(SCTPChunkInit(init_tag=7)))
    assert conn(dp).expires <= 1
    time.sleep(1.5)
    # Expired: the association's next chunk has no connection any more.
    assert send(dp, packet(SCTPChunkCookieEcho(cookie=b"c"), tag=7))[0] == "XDP_PASS"
    assert dp.counters()["pass_miss_sctp"] == 1


def test_ipv6_association(dp: Dataplane) -> None:
    assert send(dp, packet(SCTPChunkInit(init_tag=7), v6=True)) == ("XDP_TX", RS6)
    assert send(dp, packet(SCTPChunkCookieEcho(cookie=b"c" * 16), tag=7, v6=True)) == ("XDP_TX", RS6)
    assert conn(dp).state == "ESTABLISHED"


def test_list_connections_prints_sctp_rows(dp: Dataplane) -> None:
    send(dp, packet(SCTPChunkInit(init_tag=7)))
    row = format_connections([conn(dp)]).splitlines()[2]
    assert row.startswith("SCTP 00:0") and f" INIT1       {CLIENT}:40000" in row and row.endswith(f"{RS1}:{PORT}")
