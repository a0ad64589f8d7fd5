"""Active/active over IPv6: a dual-stack lab with two directors behind the BGP router. Each director announces the
IPv6 VIP on its IPv4 session (MP-BGP, its IPv6 DIP as next hop); the router's kernel spreads IPv6 flows over both
and withdraws a killed director, whose downloads go on through the other to the same real (mh)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import pytest

from pyvs.lab import ecmp
from pyvs.lab.flows import Download, RequestLoop
from pyvs.lab.topology import HOLD_TIME, Topology, default_topology, director_address6, ecmp_topology

from .conftest import LAB_PREFIX, lab_up
from .test_ecmp import DOWNLOAD_SIZE, RATE, assert_completed, failures, status, wait_for

DIRECTORS = 2


@pytest.fixture(scope="module")
def lab6() -> Iterator[Topology]:
    prefix = f"{LAB_PREFIX}e6"
    topo = ecmp_topology(prefix=prefix, directors=DIRECTORS, base=default_topology(prefix, ipv6=True))
    yield from lab_up(topo)


def test_the_ipv6_vip_is_announced_by_every_director_and_flows_spread(lab6: Topology) -> None:
    assert lab6.vip6 is not None and lab6.public_ip6 is not None
    assert ecmp.router_next_hops(lab6, 6) == {director_address6(n) for n in range(1, DIRECTORS + 1)}
    doc = json.loads(status(lab6, lab6.directors[1]))
    assert doc["bgp"]["vips"] == [{"vip": lab6.vip, "announced": True, "reason": ""},
                                  {"vip": lab6.vip6, "announced": True, "reason": ""}]
    before = ecmp.scheduled(lab6, lab6.vip6)
    with RequestLoop(lab6.client.netns, lab6.public_ip6, workers=4) as loop:
        time.sleep(3)
    attempts = loop.results()
    share = {name: count - before[name] for name, count in ecmp.scheduled(lab6, lab6.vip6).items()}
    assert len(attempts) >= 50 and not failures(attempts), failures(attempts)[:5]
    assert {a.server for a in attempts} == {"rs1", "rs2"}
    total = sum(share.values())
    assert total >= len(attempts) and all(n >= total / DIRECTORS / 3 for n in share.values()), share


def test_a_killed_director_is_withdrawn_and_its_ipv6_downloads_go_on(lab6: Topology) -> None:
    assert lab6.vip6 is not None and lab6.public_ip6 is not None
    running = [Download(lab6.client.netns, lab6.public_ip6, DOWNLOAD_SIZE, RATE).start() for _ in range(6)]
    assert not [d.error for d in running if d.error]
    where = ecmp.flow_directors(lab6, {d.source_port for d in running}, vip=lab6.vip6)
    counts = {node.name: [d for d in running if node.name in where[d.source_port]] for node in lab6.directors}
    victim = max(lab6.directors, key=lambda node: len(counts[node.name]))
    theirs = counts[victim.name]
    assert theirs, f"no download found in any director's table: {where}"
    with RequestLoop(lab6.client.netns, lab6.public_ip6, workers=3) as loop:
        time.sleep(1)
        killed_at = time.monotonic()
        ecmp.kill_director(lab6, victim)
        wait_for(lambda: len(ecmp.router_next_hops(lab6, 6)) == DIRECTORS - 1, HOLD_TIME + 1,
                 "the router withdraws the victim's IPv6 next hop")
        converged = time.monotonic()
        time.sleep(3)
    attempts = loop.results()
    assert director_address6(lab6.directors.index(victim) + 1) not in ecmp.router_next_hops(lab6, 6)
    assert not failures(attempts, since=converged), failures(attempts, since=converged)[:5]
    assert_completed(running)
    assert all(d.ended > killed_at + 1 for d in theirs)  # they ran across the kill
