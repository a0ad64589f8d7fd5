"""Every scheduler of the loaded XDP program makes the choices of the Python reference (pyvs.schedulers).

The same sequence of new flows (scapy-built SYNs through BPF_PROG_TEST_RUN) goes through both; live counts
start from preloaded values and each new connection adds an active one to its real, on both sides. Every case runs
with IPv4 and with IPv6 services, reals and clients (IPVS hashes IPv6 addresses folded to 32 bits).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyvs.dataplane import Dataplane, abi, libbpf, scratch_dataplane
from pyvs.dataplane.build import object_path
from pyvs.dataplane.codec import family_map, svc_key
from pyvs.dataplane.neighbours import NextHop
from pyvs.model import IPAddress, Protocol, Real, Rules, Service, ServiceKey
from pyvs.schedulers import SCHEDULERS, Flow, RealState, SchedFlag, Scheduler, build_table, new_scheduler

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import frame

REAL_OVERLOAD = abi.read_defines()["PYVS_REAL_OVERLOAD"]
VIPS = [IPv4Address(f"198.18.0.{n}") for n in (100, 101, 102)]
RIPS = [IPv4Address(f"198.18.2.{n}") for n in range(21, 26)]
VIPS6 = [IPv6Address(f"2001:db8::{n}") for n in (100, 101, 102)]
RIPS6 = [IPv6Address(f"2001:db8:2::{n:x}") for n in range(21, 26)]
FAMILY = {4: (VIPS, RIPS), 6: (VIPS6, RIPS6)}


def mac_of(rip: IPAddress) -> str:
    return "02:00:00:00:02:" + f"{rip.packed[-1]:02x}"


def neighbours(rip: IPAddress) -> NextHop:
    return NextHop(0, DIRECTOR_MAC, mac_of(rip))


@pytest.fixture
def plane() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvst-sched", neighbours) as dp:
        yield dp


@dataclass
class Setup:
    weights: list[int]
    overloaded: frozenset[int] = frozenset()
    active: tuple[int, ...] = (0, 0, 0, 0, 0)
    inactive: tuple[int, ...] = (0, 0, 0, 0, 0)


class Harness:
    """One service per VIP with the same reals; the scheduler's tables written as the control plane would."""

    def __init__(self, dp: Dataplane, name: str, setup: Setup, flags: int = 0, vips: list[IPAddress] = VIPS[:1]):
        self.dp, self.name, self.setup, self.vips = dp, name, setup, vips
        self.rips = rips = FAMILY[vips[0].version][1][:len(setup.weights)]
        services = family_map("services", vips[0].version)
        rules = Rules()
        for vip in vips:
            svc = Service(ServiceKey(Protocol.TCP, vip, 80), "rr")
            for rip, weight in zip(rips, setup.weights, strict=True):
                svc.reals[(rip, 80)] = Real(rip, 80, weight)
            rules.services[svc.key] = svc
        dp.apply(rules)  # services and reals through the API; the scheduler and its table below
        dp.program()  # loaded now: a load slower than two sweep passes would outlast the counts written for a flow
        self.fds = {name: libbpf.obj_get(str(dp.pin_dir / name)) for name in (services, "reals", "sched_table",
                                                                              "real_conns")}
        self.fds["services"] = self.fds.pop(services)
        self.slots: dict[tuple[IPAddress, int], int] = {}
        entries = self._real_entries()
        addresses = {r.slot: r.rip for r in dp._real_slots()}  # noqa: SLF001
        self.counts: dict[tuple[IPAddress, int], list[int]] = {}
        for vip in vips:
            svc = abi.Svc()
            assert libbpf.map_lookup(self.fds["services"], _svc_key(vip), svc)
            for i, rip in enumerate(rips):
                slot = next(s for s, e in entries.items() if e.svc_index == svc.index and addresses[s] == rip)
                self.slots[(vip, i)] = slot
                self.counts[(vip, i)] = [setup.active[i], setup.inactive[i]]
                if i in setup.overloaded:
                    entries[slot].flags |= REAL_OVERLOAD
                    libbpf.map_update(self.fds["reals"], ctypes.c_uint32(slot), entries[slot])
            table = [self.slots[(vip, i)] for i in build_table(name, self.states(vip), flags)]
            base = abi.TABLE_POOL - (svc.index + 1) * abi.TABLE_MAX  # above the tables the control plane placed
            for offset, slot in enumerate(table):
                libbpf.map_update(self.fds["sched_table"], ctypes.c_uint32(base + offset), ctypes.c_uint32(slot))
            svc.sched, svc.flags, svc.table_base, svc.table_len = abi.SCHEDULER_IDS[name], flags, base, len(table)
            libbpf.map_update(self.fds["services"], _svc_key(vip), svc)
        self.reference: dict[IPAddress, Scheduler] = {vip: new_scheduler(name, SchedFlag(flags)) for vip in vips}
        self.mac_to_index = {mac_of(rip): i for i, rip in enumerate(rips)}

    def _real_entries(self) -> dict[int, abi.RealEntry]:
        entries = {}
        for slot in range(64):
            entry = abi.RealEntry()
            if libbpf.map_lookup(self.fds["reals"], ctypes.c_uint32(slot), entry) and entry.flags & abi.REAL_ACTIVE:
                entries[slot] = entry
        return entries

    def close(self) -> None:
        for fd in self.fds.values():
            os.close(fd)

    def states(self, vip: IPAddress) -> list[RealState]:
        return [RealState(w, *self.counts.get((vip, i), [0, 0]), overloaded=i in self.setup.overloaded,
                          rip=self.rips[i], port=80) for i, w in enumerate(self.setup.weights)]

    def send(self, flow: Flow, write_counts: bool = True) -> tuple[int | None, int | None]:
        """(data plane's choice, reference's choice) for the SYN of `flow`."""
        if write_counts:  # in the current pass parity, which the sweeper does not zero during this pass
            parity = self.dp.sweep_stats().parity
            for (vip, i), slot in self.slots.items():
                active, inactive = self.counts[(vip, i)]
                libbpf.map_update(self.fds["real_conns"], ctypes.c_uint32(slot),
                                  abi.RealConns.counted(active, inactive, parity))
        expected = self.reference[flow.daddr].pick(self.states(flow.daddr), flow)
        tcp = TCP(sport=flow.sport, dport=80, flags="S", seq=1)
        if flow.daddr.version == 6:
            packet = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IPv6(src=str(flow.saddr), dst=str(flow.daddr))
                           / tcp)
        else:
            packet = frame(tcp, dst=str(flow.daddr), src=str(flow.saddr))
        result = self.dp.test_run(packet)
        got = self.mac_to_index[Ether(result.data).dst] if result.verdict_name == "XDP_TX" else None
        if result.verdict_name != "XDP_TX":
            assert result.verdict_name == "XDP_DROP"
        if expected is not None:
            self.counts[(flow.daddr, expected)][0] += 1  # a SYN: one more active connection (SYN_RECV)
        return got, expected

    def live_counts(self, vip: IPAddress) -> list[tuple[int, int]]:
        result = []
        for i in range(len(self.setup.weights)):
            value = abi.RealConns()
            libbpf.map_lookup(self.fds["real_conns"], ctypes.c_uint32(self.slots[(vip, i)]), value)
            result.append(value.live(self.dp.sweep_stats().parity))
        return result


def _svc_key(vip: IPAddress) -> abi.SvcKey | abi.SvcKey6:
    return svc_key(ServiceKey(Protocol.TCP, vip, 80))


def random_flows(count: int, vips: list[IPAddress], seed: int = 1) -> list[Flow]:
    """Clients spread over a /17 (IPv4), or over the whole host part of 2001:db8:1::/48 (IPv6: every word of the
    address varies, so the fold mixes them all)."""
    rng = random.Random(seed)
    if vips[0].version == 6:
        base6 = int(IPv6Address("2001:db8:1::"))
        return [Flow(IPv6Address(base6 + rng.randrange(1 << 80)), rng.randrange(1024, 65536), rng.choice(vips), 80)
                for _ in range(count)]
    base = int(IPv4Address("198.18.128.0"))
    return [Flow(IPv4Address(base + rng.randrange(1 << 15)), rng.randrange(1024, 65536), rng.choice(vips), 80)
            for _ in range(count)]


BUSY = Setup([5, 3, 1, 0, 2], overloaded=frozenset({4}), active=(3, 0, 2, 1, 0), inactive=(40, 700, 0, 5, 0))
PLAIN = Setup([5, 3, 1, 0, 2])

CASES = [
    pytest.param("rr", PLAIN, 0, id="rr"),
    pytest.param("rr", BUSY, 0, id="rr-overloaded"),
    pytest.param("wrr", PLAIN, 0, id="wrr"),
    pytest.param("wrr", Setup([4, 3, 2]), 0, id="wrr-4-3-2"),
    pytest.param("wrr", Setup([4, 3, 2, 5], overloaded=frozenset({0, 3})), 0, id="wrr-overloaded"),
    *[pytest.param(name, BUSY, 0, id=name) for name in ("lc", "wlc", "sed", "nq", "fo", "ovf", "lblc", "lblcr")],
    pytest.param("nq", PLAIN, 0, id="nq-idle-first"),
    pytest.param("ovf", Setup([4, 3, 2], active=(4, 0, 0, 0, 0)), 0, id="ovf-weight-limited"),
    pytest.param("fo", Setup([2, 7, 7, 1]), 0, id="fo-ties-to-first"),
    *[pytest.param(name, BUSY, flags, id=f"{name}-flags{flags}") for name in ("sh", "mh") for flags in (0, 1, 2, 3)],
    pytest.param("dh", BUSY, 0, id="dh"),
    pytest.param("dh", PLAIN, 0, id="dh-three-vips"),
]


@pytest.mark.parametrize("family", [4, 6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(("name", "setup", "flags"), CASES)
def test_data_plane_makes_the_reference_choices(plane: Dataplane, name: str, setup: Setup, flags: int,
                                                family: int) -> None:
    vips = FAMILY[family][0] if name in ("dh", "lblc", "lblcr") else FAMILY[family][0][:1]
    harness = Harness(plane, name, setup, flags, vips)
    try:
        pairs = [harness.send(flow) for flow in random_flows(150, vips)]
    finally:
        harness.close()
    mismatches = [(k, got, want) for k, (got, want) in enumerate(pairs) if got != want]
    assert not mismatches, f"{name}: first mismatches (flow, data plane, reference): {mismatches[:5]}"
    chosen = {want for _, want in pairs}
    if name not in ("dh", "fo"):
        assert len(chosen - {None}) > 1, "the case should exercise more than one real"
    if setup is BUSY and name in ("sh", "mh") and not flags & SchedFlag.FALLBACK:
        assert None in chosen  # flows hashed to the weight-0 or overloaded real find none
    if setup is BUSY and name in ("sh", "mh") and flags & SchedFlag.FALLBACK:
        assert None not in chosen


def test_every_scheduler_is_covered() -> None:
    assert {case.values[0] for case in CASES} == set(SCHEDULERS)


def test_wlc_counts_come_from_the_packets_themselves(plane: Dataplane) -> None:
    """No count is written: the program's own SYN accounting drives wlc, 3:1 gives 300/100."""
    harness = Harness(plane, "wlc", Setup([3, 1]))
    try:
        pairs = [harness.send(flow, write_counts=False) for flow in random_flows(400, VIPS[:1], seed=2)]
        assert all(got == want for got, want in pairs)
        assert harness.live_counts(VIPS[0]) == [(300, 0), (100, 0)]
    finally:
        harness.close()


def test_lblc_cache_entries_expire_with_the_kernel_clock(plane: Dataplane) -> None:
    """An entry unused for 24 h is gone: wlc chooses again (the cache's lastuse is moved back in time)."""
    harness = Harness(plane, "lblc", Setup([1, 1]))
    fd = libbpf.obj_get(str(plane.pin_dir / "lblc_cache"))
    try:
        flows = random_flows(3, VIPS[:1], seed=3)
        assert harness.send(flows[0]) == (0, 0)
        assert harness.send(flows[1]) == (0, 0)  # cached, though wlc would now pick real 1
        (key, entry), = _entries(fd, LblcKey, LblcEntry)
        entry.lastuse -= 24 * 3600 * 10**9
        libbpf.map_update(fd, key, entry)
        got, _ = harness.send(flows[2])
        assert got == 1
    finally:
        os.close(fd)
        harness.close()


class LblcKey(ctypes.Structure):
    _fields_ = [("svc_index", ctypes.c_uint32), ("daddr", ctypes.c_uint32)]


class LblcEntry(ctypes.Structure):
    _fields_ = [("lastuse", ctypes.c_uint64), ("real", ctypes.c_uint32), ("gen", ctypes.c_uint32)]


def _entries(fd: int, key_type: type[ctypes.Structure], value_type: type[ctypes.Structure]) -> list[tuple[
        ctypes.Structure, ctypes.Structure]]:
    result = []
    for key in libbpf.map_keys(fd, key_type):
        value = value_type()
        if libbpf.map_lookup(fd, key, value):
            result.append((key, value))
    return result


def test_cache_mirrors_match_the_objects_btf() -> None:
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(object_path("xdp"))], check=True,
                         capture_output=True, text=True).stdout
    structs = {t["name"]: t for t in json.loads(out)["types"] if t.get("kind") == "STRUCT" and t.get("name")}
    for c_name, mirror in (("pyvs_locality_key", LblcKey), ("pyvs_lblc_entry", LblcEntry)):
        assert ctypes.sizeof(mirror) == structs[c_name]["size"]
        assert [m["name"] for m in structs[c_name]["members"]] == [name for name, _ in mirror._fields_]
