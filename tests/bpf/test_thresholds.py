"""Connection thresholds (ipvsadm -x, -y) in the loaded program: OVERLOAD set and cleared as IPVS does, from the
program's own counts, and every scheduler honouring it as its IPVS counterpart does.

A random sequence of new TCP flows (SYN) and of flows closed and opened again (ACK, RST, then a SYN on the same
tuple: the closed entry is unbound, a new connection scheduled) goes through BPF_PROG_TEST_RUN and through the
Python reference (pyvs.schedulers with pyvs.schedulers.thresholds); after every packet the choice and every real's
flag must agree.
"""

from __future__ import annotations

import ctypes
import os
import random
import time
from dataclasses import dataclass
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import TCP
from scapy.layers.l2 import Ether

from pyvs.dataplane import Dataplane, abi, libbpf
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey
from pyvs.schedulers import SCHEDULERS, Flow, RealState, SchedFlag, new_scheduler
from pyvs.schedulers.thresholds import after_bind, after_unbind

from .conftest import REALS
from .test_xdp import frame

VIP = IPv4Address("198.18.0.100")
KEY = ServiceKey(Protocol.TCP, VIP, 80)
RIPS = [IPv4Address("198.18.2.11"), IPv4Address("198.18.2.12"), IPv4Address("198.18.2.13")]
MAC_TO_INDEX = {REALS[rip][0]: i for i, rip in enumerate(RIPS)}


@dataclass
class RefReal:
    weight: int
    upper: int
    lower: int
    active: int = 0
    inactive: int = 0
    overloaded: bool = False

    @property
    def total(self) -> int:
        return self.active + self.inactive


class Reference:
    """The service as IPVS would keep it: the reals' counts and flags, the scheduler, each flow's real."""

    def __init__(self, name: str, flags: int, reals: list[RefReal]):
        self.reals = reals
        self.scheduler = new_scheduler(name, SchedFlag(flags))
        self.flows: dict[int, tuple[Flow, int, str]] = {}  # flow id -> (flow, real index, "half"|"closed")

    def states(self) -> list[RealState]:
        return [RealState(r.weight, r.active, r.inactive, overloaded=r.overloaded, rip=rip, port=80)
                for r, rip in zip(self.reals, RIPS, strict=True)]

    def open(self, fid: int, flow: Flow) -> int | None:
        choice = self.scheduler.pick(self.states(), flow)
        if choice is not None:
            real = self.reals[choice]
            real.active += 1  # a SYN: SYN_RECV, active
            real.overloaded = after_bind(real.overloaded, real.total, real.upper)
            self.flows[fid] = (flow, choice, "half")
        return choice

    def close(self, fid: int) -> None:
        """ACK (ESTABLISHED, still active), RST (CLOSE: inactive)."""
        flow, index, _ = self.flows[fid]
        self.reals[index].active -= 1
        self.reals[index].inactive += 1
        self.flows[fid] = (flow, index, "closed")

    def reopen(self, fid: int) -> int | None:
        """A SYN on the closed entry: unbound, then a new connection."""
        flow, index, _ = self.flows.pop(fid)
        real = self.reals[index]
        real.inactive -= 1
        real.overloaded = after_unbind(real.overloaded, real.total, real.upper, real.lower)
        return self.open(fid, flow)


def syn_frame(flow: Flow, flags: str) -> bytes:
    return frame(TCP(sport=flow.sport, dport=80, flags=flags, seq=1), dst=str(VIP), src=str(flow.saddr))


def send(dp: Dataplane, flow: Flow, flags: str) -> int | None:
    result = dp.test_run(syn_frame(flow, flags))
    if result.verdict_name == "XDP_DROP":
        return None
    assert result.verdict_name == "XDP_TX", result.verdict_name
    return MAC_TO_INDEX[Ether(result.data).dst]


def overload_flags(dp: Dataplane) -> list[bool]:
    flagged = dp.overloaded()
    return [(KEY, (rip, 80)) in flagged for rip in RIPS]


# (weight, u_threshold, l_threshold) of the three reals: an upper with a lower, an upper alone (3/4), no thresholds.
SETUP = [(1, 2, 1), (2, 4, 0), (1, 0, 0)]
CASES = [pytest.param(name, 0, id=name) for name in SCHEDULERS] + [
    pytest.param(name, int(SchedFlag.FALLBACK), id=f"{name}-fallback") for name in ("sh", "mh")]


@pytest.mark.parametrize(("name", "flags"), CASES)
def test_every_scheduler_honours_the_thresholds_as_ipvs(dataplane: Dataplane, name: str, flags: int) -> None:
    svc = Service(KEY, name, sched_flags=(f"{name}-fallback",) if flags else ())
    for rip, (weight, upper, lower) in zip(RIPS, SETUP, strict=True):
        svc.reals[(rip, 80)] = Real(rip, 80, weight, u_threshold=upper, l_threshold=lower)
    dataplane.apply(Rules({KEY: svc}))
    ref = Reference(name, flags, [RefReal(w, u, lo) for w, u, lo in SETUP])
    rng = random.Random(7)
    mismatches: list[tuple[int, str, object, object]] = []
    seen_overload = seen_cleared = False
    for step in range(90):
        closed = [fid for fid, (_, _, state) in ref.flows.items() if state == "closed"]
        half = [fid for fid, (_, _, state) in ref.flows.items() if state == "half"]
        roll = rng.random()
        if closed and roll < 0.35:
            fid = rng.choice(closed)
            flow = ref.flows[fid][0]
            want, got = ref.reopen(fid), send(dataplane, flow, "S")
            what = "reopen"
        elif half and roll < 0.65:
            fid = rng.choice(half)
            flow = ref.flows[fid][0]
            send(dataplane, flow, "A")
            send(dataplane, flow, "R")
            ref.close(fid)
            want = got = None
            what = "close"
        else:
            fid = step
            flow = Flow(IPv4Address(f"198.18.{128 + step // 200}.{step % 200 + 1}"), 20000 + step, VIP, 80)
            want, got = ref.open(fid, flow), send(dataplane, flow, "S")
            what = "open"
        if got != want:
            mismatches.append((step, what, got, want))
        flags_now = overload_flags(dataplane)
        expected = [r.overloaded for r in ref.reals]
        if flags_now != expected:
            mismatches.append((step, "flags", flags_now, expected))
        seen_overload |= any(expected)
        seen_cleared |= what == "reopen" and not any(expected)
        if mismatches:
            break
    assert not mismatches, f"{name}: first mismatch (step, event, data plane, reference): {mismatches[0]}"
    assert seen_overload, "the sequence should overload a real"
    counters = dataplane.counters()
    assert counters["overload_set"] > 0
    if name not in ("dh",):  # dh sends every flow of the one VIP to one real: it never gets below its threshold
        assert counters["overload_cleared"] > 0 and seen_cleared


def test_rr_passes_over_an_overloaded_real_and_goes_on_after_the_one_it_took(dataplane: Dataplane) -> None:
    svc = Service(KEY, "rr")
    for rip in RIPS:
        svc.reals[(rip, 80)] = Real(rip, 80, 1, u_threshold=1 if rip == RIPS[0] else 0)
    dataplane.apply(Rules({KEY: svc}))
    flows = [Flow(IPv4Address(f"198.18.128.{n}"), 30000 + n, VIP, 80) for n in range(1, 8)]
    # the first SYN overloads real 0 (u_threshold 1); then 1, 2, 1, 2 ...
    assert [send(dataplane, flow, "S") for flow in flows] == [0, 1, 2, 1, 2, 1, 2]


def test_the_sweeper_unbinds_expired_connections_and_clears_the_flag(dataplane: Dataplane) -> None:
    svc = Service(KEY, "wlc")
    svc.reals[(RIPS[0], 80)] = Real(RIPS[0], 80, 1, u_threshold=2, l_threshold=1)
    svc.reals[(RIPS[1], 80)] = Real(RIPS[1], 80, 1)
    dataplane.apply(Rules({KEY: svc}))
    dataplane.set_state_timeout("SYN_RECV", 1)
    dataplane.set_pass_ticks(40)
    for n in range(1, 5):  # wlc: 0, 1, 0 (overloaded now: two connections), 1
        send(dataplane, Flow(IPv4Address(f"198.18.128.{n}"), 31000 + n, VIP, 80), "S")
    assert overload_flags(dataplane) == [True, False, False]
    deadline = time.monotonic() + 10
    while overload_flags(dataplane)[0] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert overload_flags(dataplane) == [False, False, False]
    assert dataplane.live_counts()[(KEY, (RIPS[0], 80))] == (0, 0)


@pytest.mark.parametrize(("new_upper", "kept"), [(2, True), (1, True), (3, False), (0, False)])
def test_writing_the_thresholds_clears_the_flag_as_ip_vs_update_dest(dataplane: Dataplane, new_upper: int,
                                                                    kept: bool) -> None:
    """Cleared when the new upper threshold is 0 or above the old one; kept otherwise (until an unbind)."""
    svc = Service(KEY, "rr")
    svc.reals[(RIPS[0], 80)] = Real(RIPS[0], 80, 1, u_threshold=2)
    svc.reals[(RIPS[1], 80)] = Real(RIPS[1], 80, 1)
    dataplane.apply(Rules({KEY: svc}))
    for n in range(1, 4):  # rr: 0, 1, 0: two connections on real 0
        send(dataplane, Flow(IPv4Address(f"198.18.128.{n}"), 32000 + n, VIP, 80), "S")
    assert overload_flags(dataplane)[0]

    def edit(current: Service | None) -> Service | None:
        assert current is not None
        current.reals[(RIPS[0], 80)].u_threshold = new_upper
        return current
    dataplane.update_service(KEY, edit)
    assert overload_flags(dataplane)[0] is kept
    read = dataplane.read_service(KEY)
    assert read is not None and read.reals[(RIPS[0], 80)].u_threshold == new_upper


def test_a_reused_real_slot_starts_without_the_old_thresholds(dataplane: Dataplane) -> None:
    svc = Service(KEY, "rr")
    svc.reals[(RIPS[0], 80)] = Real(RIPS[0], 80, 1, u_threshold=5, l_threshold=2)
    dataplane.apply(Rules({KEY: svc}))
    dataplane.apply(Rules())
    svc = Service(KEY, "rr")
    svc.reals[(RIPS[1], 80)] = Real(RIPS[1], 80, 1)
    dataplane.apply(Rules({KEY: svc}))
    assert dataplane.read_rules().services[KEY].reals[(RIPS[1], 80)] == Real(RIPS[1], 80, 1)
    fd = libbpf.obj_get(str(dataplane.pin_dir / "real_limits"))
    try:
        keys, values, count = libbpf.map_lookup_batch(fd, ctypes.c_uint32, abi.RealLimits, abi.MAX_REALS)
        assert not any(values[i].u_threshold or values[i].l_threshold for i in range(count))
    finally:
        os.close(fd)
