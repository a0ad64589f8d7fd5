"""mh tables sized per service from one pool (sched_table): a service of 1000 reals gets a 65521-slot table and the
loaded program forwards by it; IPv6 services take their own runs of the same pool; a full pool refuses a change and
changes nothing, also in a later process; every director builds the same table for the same rules, whatever the
process and the order the reals came in."""

from __future__ import annotations

import io
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet import TCP

from pyvs.admin.cli import main as pyvsadm
from pyvs.dataplane import Dataplane, scratch_dataplane
from pyvs.dataplane.neighbours import NextHop
from pyvs.model import IPAddress, Protocol, Real, Service, ServiceKey
from pyvs.schedulers.common import RealState, addr_fold
from pyvs.schedulers.maglev import MH_TABLE_SIZE, mh_hash, mh_lookup, mh_table, mh_table_size

from .conftest import DIRECTOR_MAC
from .test_ipv6 import VIP6, frame6
from .test_xdp import VIP, frame

KEY = ServiceKey(Protocol.TCP, VIP, 80)
SMALL = ServiceKey(Protocol.TCP, VIP, 443)
FIRST_RIP = int(IPv4Address("198.19.0.0"))
RIPS = [IPv4Address(FIRST_RIP + 1 + i) for i in range(1000)]
CLIENT_BASE = int(IPv4Address("198.18.128.0"))


def mac_resolver(rip: IPAddress) -> NextHop:
    """Every real answers with a MAC that spells its address: 02:00 + its last four bytes."""
    return NextHop(0, DIRECTOR_MAC, "02:00:" + ":".join(f"{b:02x}" for b in rip.packed[-4:]))


def real_of(out: bytes) -> IPv4Address:
    assert out[:2] == b"\x02\x00"
    return IPv4Address(out[2:6])


@pytest.fixture
def dp() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvst-mhsize", mac_resolver) as plane:
        yield plane


def mh(key: ServiceKey, rips: list[IPv4Address] | list[IPv6Address], size: int | None = None) -> Service:
    return Service(key, "mh", reals={(rip, key.port): Real(rip, key.port, 1) for rip in rips}, mh_table_size=size)


def run(dp: Dataplane, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    code = pyvsadm(list(argv), stdout=io.StringIO(), stderr=err, dataplane=dp)
    return code, err.getvalue()


def test_a_service_of_1000_reals_gets_a_65521_slot_table_and_the_program_forwards_by_it(dp: Dataplane) -> None:
    dp.apply_service(SMALL, mh(SMALL, RIPS[:3]))
    dp.apply_service(KEY, mh(KEY, RIPS))
    size = mh_table_size(len(RIPS))
    assert size == 65521
    ordered = sorted(RIPS)
    table = mh_table([(rip, 80, 1) for rip in ordered], size)
    held = dp.read_table(KEY)
    assert held == [(ordered[i], 80) for i in table]  # the builder's table, slot by slot, in the pool
    assert len(dp.read_table(SMALL)) == MH_TABLE_SIZE  # a small service keeps IPVS's 4093 slots
    assert dp.index_problems() == []
    states = [RealState(1, rip=rip, port=80) for rip in ordered]
    rng = random.Random(12)
    clients = [IPv4Address(CLIENT_BASE + rng.randrange(1 << 15)) for _ in range(1500)]
    beyond_old_table = 0
    for client in clients:
        out = dp.test_run(frame(TCP(sport=40000, dport=80, flags="S"), src=str(client)))
        assert out.verdict_name == "XDP_TX"
        expected = mh_lookup(table, states, int(client), False)
        assert expected is not None and real_of(out.data) == ordered[expected]
        beyond_old_table += mh_hash(int(client)) % size >= 4096
    assert beyond_old_table > 1300  # most flows read slots the old 4096-slot tables did not have

    dp.apply_service(KEY, mh(KEY, RIPS, 131071))  # the admin's size: the largest of IPVS's primes
    largest = mh_table([(rip, 80, 1) for rip in ordered], 131071)
    assert len(dp.read_table(KEY)) == 131071
    for client in clients[:300]:
        out = dp.test_run(frame(TCP(sport=40001, dport=80, flags="S"), src=str(client)))
        expected = mh_lookup(largest, states, int(client), False)
        assert expected is not None and real_of(out.data) == ordered[expected]
    svc = dp.read_service(KEY)
    assert svc is not None and svc.mh_table_size == 131071
    assert dp.index_problems() == []


KEY6 = ServiceKey(Protocol.TCP, VIP6, 80)
RIPS6 = [IPv6Address(f"2001:db8:2::1:{i + 1:x}") for i in range(200)]


def test_ipv6_services_take_tables_of_their_own_size_from_the_same_pool(dp: Dataplane) -> None:
    dp.apply_service(SMALL, mh(SMALL, RIPS[:3]))
    dp.apply_service(KEY6, mh(KEY6, RIPS6))
    ordered = sorted(RIPS6)
    assert mh_table_size(len(RIPS6)) == 16381
    table = mh_table([(rip, 80, 1) for rip in ordered], 16381)
    assert dp.read_table(KEY6) == [(ordered[i], 80) for i in table]
    assert len(dp.read_table(SMALL)) == MH_TABLE_SIZE and dp.index_problems() == []
    states = [RealState(1, rip=rip, port=80) for rip in ordered]
    by_mac = {mac_resolver(rip).dmac: rip for rip in ordered}
    rng = random.Random(6)
    clients = [IPv6Address(f"2001:db8:1::{rng.randrange(1 << 16):x}:{rng.randrange(1 << 16):x}") for _ in range(300)]
    for client in clients:
        out = dp.test_run(frame6(TCP(sport=40000, dport=80, flags="S"), src=str(client)))
        assert out.verdict_name == "XDP_TX"
        expected = mh_lookup(table, states, addr_fold(client), False)
        assert expected is not None and by_mac[":".join(f"{b:02x}" for b in out.data[:6])] == ordered[expected]

    # pyvsadm's IPv6 syntax with the size extension: -E gives the IPv6 service a table of the size set
    assert run(dp, "-E", "-t", f"[{VIP6}]:80", "-s", "mh", "--mh-table-size", "8191") == (0, "")
    smaller = mh_table([(rip, 80, 1) for rip in ordered], 8191)
    assert dp.read_table(KEY6) == [(ordered[i], 80) for i in smaller]
    for client in clients[:100]:
        out = dp.test_run(frame6(TCP(sport=40001, dport=80, flags="S"), src=str(client)))
        expected = mh_lookup(smaller, states, addr_fold(client), False)
        assert expected is not None and by_mac[":".join(f"{b:02x}" for b in out.data[:6])] == ordered[expected]
    assert dp.index_problems() == []
    listed, saved = io.StringIO(), io.StringIO()
    assert pyvsadm(["-L", "-n", "-t", f"[{VIP6}]:80"], stdout=listed, dataplane=dp) == 0
    assert listed.getvalue().splitlines()[2] == f"TCP  [{VIP6}]:80 mh mh-table-size 8191"
    assert pyvsadm(["-S", "-n"], stdout=saved, dataplane=dp) == 0
    assert f"-A -t [{VIP6}]:80 -s mh --mh-table-size 8191" in saved.getvalue().splitlines()


LATER = """
import sys
from pyvs.admin.cli import main
from pyvs.dataplane import open_dataplane
from pyvs.dataplane.neighbours import NextHop
def resolver(rip):
    return NextHop(0, "02:00:00:00:00:0a", "02:00:" + ":".join(f"{b:02x}" for b in rip.packed))
with open_dataplane(sys.argv[1], resolver) as dp:
    sys.exit(main(sys.argv[2:], dataplane=dp))
"""


def test_a_full_pool_refuses_a_new_table_and_changes_nothing_also_for_a_later_process(dp: Dataplane) -> None:
    big = [f"198.18.0.{n}" for n in range(1, 64)]  # 63 tables of 131071 slots: the pool less one such table
    for vip in big:
        assert run(dp, "-A", "-t", f"{vip}:80", "-s", "mh", "--mh-table-size", "131071") == (0, "")
        assert run(dp, "-a", "-t", f"{vip}:80", "-r", str(RIPS[0])) == (0, "")
    assert run(dp, "-A", "-t", "198.18.0.100:80", "-s", "mh", "--mh-table-size", "131071") == (0, "")  # no real:
    before = dp.read_rules()                                                                      # no table yet
    code, err = run(dp, "-a", "-t", "198.18.0.100:80", "-r", str(RIPS[0]))
    assert code == 1
    assert err == ("pyvsadm: service 198.18.0.100:80: no room for its mh table in the scheduler table pool "
                   "(131072 of 8388608 slots free, the largest free run 131072) (the pool keeps room for one more "
                   "table of 131071 slots, so that any service can still be changed); remove services, or give mh "
                   "services smaller tables (--mh-table-size)\n")
    assert dp.read_rules() == before and dp.index_problems() == []
    # a later process reads the pool's state back from the pinned maps and refuses too
    assert run(dp, "-A", "-t", "198.18.0.101:80", "-s", "rr") == (0, "")
    before = dp.read_rules()
    later = subprocess.run([sys.executable, "-c", LATER, str(dp.pin_dir), "-a", "-t", "198.18.0.101:80", "-r",
                            str(RIPS[0])], capture_output=True, text=True)
    assert later.returncode == 1 and "no room for its rr table" in later.stderr, later.stderr
    assert dp.read_rules() == before and dp.index_problems() == []
    # the room kept lets any service change: a full service takes a second real
    assert run(dp, "-a", "-t", f"{big[0]}:80", "-r", str(RIPS[1])) == (0, "")
    assert set(dp.read_table(ServiceKey(Protocol.TCP, IPv4Address(big[0]), 80))) == {(RIPS[0], 80), (RIPS[1], 80)}
    assert dp.index_problems() == []
    assert run(dp, "-D", "-t", f"{big[1]}:80") == (0, "")
    assert run(dp, "-a", "-t", "198.18.0.100:80", "-r", str(RIPS[0])) == (0, "")  # a table gone makes room
    assert dp.index_problems() == []


BUILD = """
import io, os, random, sys
from ipaddress import IPv4Address, IPv6Address
from pyvs.admin.cli import main
from pyvs.dataplane import open_dataplane
from pyvs.dataplane.neighbours import NextHop
def resolver(rip):
    return NextHop(0, "02:00:00:00:00:0a", "02:00:" + ":".join(f"{b:02x}" for b in rip.packed))
pin_dir, seed = sys.argv[1], int(sys.argv[2])
lines = [line.split() for line in sys.stdin.read().splitlines()]
head, changes = lines[:1], lines[1:]
random.Random(seed).shuffle(changes)  # every order its own (a delete before its add fails: kept in order below)
changes.sort(key=lambda argv: argv[0] == "-d")
with open_dataplane(pin_dir, resolver) as dp:
    for argv in head + changes:
        assert main(argv, stdout=io.StringIO(), dataplane=dp) == 0, argv
"""


def test_every_director_builds_the_same_table_whatever_the_process_and_the_order_of_the_reals() -> None:
    reals = {rip: 1 + i % 4 for i, rip in enumerate(RIPS[:120])}
    head = ["-A -t 198.18.0.100:80 -s mh -b mh-port"]
    adds = [f"-a -t 198.18.0.100:80 -r {rip} -w {weight}" for rip, weight in reals.items()]
    detour = [f"-a -t 198.18.0.100:80 -r {RIPS[500]}", f"-d -t 198.18.0.100:80 -r {RIPS[500]}"]  # came and went
    tables = []
    with scratch_dataplane("pyvst-mhdir1", mac_resolver) as one, scratch_dataplane("pyvst-mhdir2", mac_resolver) as two:
        for plane, seed, commands in ((one, 1, adds), (two, 2, detour + adds)):
            env = {**os.environ, "PYTHONHASHSEED": str(seed)}
            done = subprocess.run([sys.executable, "-c", BUILD, str(plane.pin_dir), str(seed)], env=env, text=True,
                                  input="\n".join(head + commands), capture_output=True)
            assert done.returncode == 0, done.stderr
            tables.append(plane.read_table(KEY))
        prints = [one.fingerprint(), two.fingerprint()]  # what `pyvs doctor` and `director status` show
        assert prints[0] == prints[1]
        assert run(two, "-e", "-t", "198.18.0.100:80", "-r", str(RIPS[0]), "-w", "3") == (0, "")
        assert two.fingerprint() != prints[0]  # another weight: other rules, another table
    assert len(tables[0]) == mh_table_size(120) == 8191
    assert tables[0] == tables[1] and None not in tables[0]
    ordered = sorted(reals)
    expected = mh_table([(rip, 80, reals[rip]) for rip in ordered], 8191)
    assert tables[0] == [(ordered[i], 80) for i in expected]  # and the same as this process builds


def test_a_service_with_every_real_at_weight_0_drops_new_flows_without_walking_its_table(dp: Dataplane) -> None:
    service = mh(KEY, RIPS)
    service.sched_flags = ("mh-fallback",)
    dp.apply_service(KEY, service)
    for real in service.reals.values():
        real.weight = 0  # drained: the table stays (built from the last weights), no real may take a flow
    dp.apply_service(KEY, service)
    assert len(dp.read_table(KEY)) == 65521
    dropped = dp.counters()["drop_no_real"]
    out = dp.test_run(frame(TCP(sport=40000, dport=80, flags="S")), repeat=20)
    assert out.verdict_name == "XDP_DROP" and dp.counters()["drop_no_real"] == dropped + 20
    # mh-fallback's walk would visit all 65521 slots for each new flow (~0.85 ms here): a flood of SYNs would
    # cost a millisecond each; the program knows from the service entry that no real has a weight
    assert out.duration_ns < 100_000
    service.reals[(RIPS[7], 80)].weight = 1
    dp.apply_service(KEY, service)
    out = dp.test_run(frame(TCP(sport=40001, dport=80, flags="S")))
    assert out.verdict_name == "XDP_TX" and real_of(out.data) == RIPS[7]  # the walk finds the one real left
