"""The Python reference of every IPVS scheduler on small cases checked by hand against ip_vs_*.c."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.dataplane import abi
from pyvs.model import ALL_SCHEDULERS, SCHED_FLAG_BITS
from pyvs.schedulers import SCHEDULERS, Flow, RealState, SchedFlag, build_table, new_scheduler
from pyvs.schedulers.common import addr_fold, hash_32
from pyvs.schedulers.hashing import BUCKETS, dh_table, sh_table
from pyvs.schedulers.locality import LBLCR_SET_SIZE, LocalityLeastConnection, LocalityLeastConnectionReplication
from pyvs.schedulers.maglev import MH_SEED1, MH_SEED2, MH_TABLE_SIZE, MH_TABLE_SIZES, mh_turns
from pyvs.schedulers.roundrobin import wrr_table

VIP = IPv4Address("198.18.0.100")


def flow(n: int = 0, sport: int = 40000, daddr: IPv4Address = VIP) -> Flow:
    return Flow(IPv4Address(int(IPv4Address("198.18.1.0")) + n), sport, daddr, 80)


def reals(*weights: int, **counts: Sequence[int]) -> list[RealState]:
    active = counts.get("active", [0] * len(weights))
    inactive = counts.get("inactive", [0] * len(weights))
    return [RealState(w, a, i, rip=IPv4Address(f"198.18.2.{11 + n}"), port=80)
            for n, (w, a, i) in enumerate(zip(weights, active, inactive, strict=True))]


def letters(name: str, servers: list[RealState], n: int) -> str:
    scheduler = new_scheduler(name)
    picks = [scheduler.pick(servers, flow(k)) for k in range(n)]
    return "".join("-" if p is None else "ABCDEFGH"[p] for p in picks)


def test_every_ipvs_scheduler_is_known_and_unknown_names_are_refused_with_the_list() -> None:
    assert SCHEDULERS == ALL_SCHEDULERS
    for name in SCHEDULERS:
        assert new_scheduler(name).pick(reals(1, 1), flow()) in (0, 1)
    with pytest.raises(ValueError, match="unknown scheduler 'xyz' .valid: rr, wrr, lc, wlc, sed, nq, sh, dh"):
        new_scheduler("xyz")
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_table("round-robin", reals(1))


def test_flag_bits_are_the_data_plane_ones() -> None:
    assert (SchedFlag.FALLBACK, SchedFlag.PORT, SchedFlag.FLAG3) == (abi.SVC_F_SCHED1, abi.SVC_F_SCHED2,
                                                                    abi.SVC_F_SCHED3)
    assert SCHED_FLAG_BITS == {"flag-1": SchedFlag.FALLBACK, "sh-fallback": SchedFlag.FALLBACK,
                               "mh-fallback": SchedFlag.FALLBACK, "flag-2": SchedFlag.PORT, "sh-port": SchedFlag.PORT,
                               "mh-port": SchedFlag.PORT, "flag-3": SchedFlag.FLAG3}


def test_sched_maps_constants_match_the_header() -> None:
    defines = abi.read_defines(abi.BPF_DIR / "sched_maps.h")
    assert defines["PYVS_LBLCR_SET_SIZE"] == LBLCR_SET_SIZE
    assert defines["PYVS_LOCALITY_EXPIRATION"] == 24 * 3600
    assert (defines["PYVS_MH_SEED1"], defines["PYVS_MH_SEED2"]) == (MH_SEED1, MH_SEED2)
    assert MH_TABLE_SIZES[-1] <= abi.TABLE_MAX


# ---- rr, wrr

def test_rr_cycles_over_the_reals_with_weight_skipping_weight_zero_and_overloaded() -> None:
    assert letters("rr", reals(1, 0, 1), 5) == "ACACA"
    servers = reals(1, 1, 1)
    servers[1] = RealState(1, overloaded=True)
    assert letters("rr", servers, 4) == "ACAC"
    assert letters("rr", reals(0, 0), 2) == "--"
    assert build_table("rr", reals(1, 0, 3)) == [0, 2]


def test_rr_continues_after_the_last_pick_when_the_reals_change() -> None:
    scheduler = new_scheduler("rr")
    servers = reals(1, 1, 1)
    assert [scheduler.pick(servers, flow()) for _ in range(2)] == [0, 1]
    servers[2] = RealState(0)  # C drained: A is next after B
    assert scheduler.pick(servers, flow()) == 0


def test_wrr_4_3_2_gives_aababcabc_and_gcd_steps() -> None:
    assert letters("wrr", reals(4, 3, 2), 18) == "AABABCABC" * 2
    assert wrr_table([4, 3, 2]) == [0, 0, 1, 0, 1, 2, 0, 1, 2]
    assert letters("wrr", reals(4, 2, 2), 8) == "AABC" * 2  # gcd 2: passes with cw 3, then 1
    assert wrr_table([4, 2, 2]) == [0, 0, 1, 2]
    assert wrr_table([0, 0]) == [] and letters("wrr", reals(0, 0), 1) == "-"


@pytest.mark.parametrize("weights", [[1], [3, 1], [5, 3, 1], [6, 4, 2, 0, 8], [100, 1, 50], [7, 7, 7]])
def test_wrr_table_is_one_period_of_the_kernel_stepping(weights: list[int]) -> None:
    table = wrr_table(weights)
    assert Counter(table) == {i: w // max(1, _gcd(weights)) for i, w in enumerate(weights) if w}
    scheduler = new_scheduler("wrr")
    servers = reals(*weights)
    assert [scheduler.pick(servers, flow()) for _ in range(3 * len(table))] == table * 3


def _gcd(weights: list[int]) -> int:
    from math import gcd
    g = 0
    for w in weights:
        g = gcd(g, w)
    return g


def test_wrr_5_3_1_over_9000_flows_splits_exactly() -> None:
    scheduler = new_scheduler("wrr")
    servers = reals(5, 3, 1)
    split = Counter(scheduler.pick(servers, flow(k)) for k in range(9000))
    assert split == {0: 5000, 1: 3000, 2: 1000}


# ---- lc, wlc, sed, nq, fo, ovf

def test_lc_least_overhead_where_an_active_connection_weighs_256_inactive_ones() -> None:
    assert new_scheduler("lc").pick(reals(1, 1, active=[1, 0], inactive=[0, 255]), flow()) == 1
    assert new_scheduler("lc").pick(reals(1, 1, active=[1, 0], inactive=[0, 256]), flow()) == 0  # tie: first
    assert new_scheduler("lc").pick(reals(0, 5, active=[0, 3], inactive=[0, 0]), flow()) == 1  # weight 0 skipped


def test_wlc_least_overhead_per_weight_with_ties_to_the_first() -> None:
    assert new_scheduler("wlc").pick(reals(1, 2, active=[1, 2], inactive=[0, 0]), flow()) == 0  # 256/1 = 512/2
    assert new_scheduler("wlc").pick(reals(1, 3, active=[1, 2], inactive=[0, 0]), flow()) == 1  # 512/3 < 256
    assert new_scheduler("wlc").pick(reals(0, 1, active=[0, 9], inactive=[0, 0]), flow()) == 1
    assert new_scheduler("wlc").pick(reals(0, 0), flow()) is None


def test_wlc_3_1_fills_300_100_as_connections_stay_open() -> None:
    scheduler, servers = new_scheduler("wlc"), reals(3, 1)
    for k in range(400):
        choice = scheduler.pick(servers, flow(k))
        assert choice is not None
        r = servers[choice]
        servers[choice] = RealState(r.weight, r.active + 1, rip=r.rip, port=r.port)
    assert [r.active for r in servers] == [300, 100]


def test_sed_counts_active_plus_one_and_ignores_inactive() -> None:
    # A: (0+1)/1 = 1, B: (1+1)/3 = 0.67
    assert new_scheduler("sed").pick(reals(1, 3, active=[0, 1], inactive=[0, 0]), flow()) == 1
    assert new_scheduler("sed").pick(reals(1, 1, active=[1, 1], inactive=[0, 500]), flow()) == 0
    assert new_scheduler("wlc").pick(reals(1, 3, active=[0, 1], inactive=[0, 0]), flow()) == 0  # wlc differs


def test_nq_takes_the_first_idle_real_else_sed() -> None:
    assert new_scheduler("nq").pick(reals(1, 10, active=[0, 1], inactive=[0, 0]), flow()) == 0
    assert new_scheduler("nq").pick(reals(10, 1, 1, active=[5, 0, 0], inactive=[0, 0, 0]), flow()) == 1
    assert new_scheduler("nq").pick(reals(1, 3, active=[1, 2], inactive=[0, 0]), flow()) == 1  # 2/1 > 3/3


def test_fo_highest_weight_first_in_list_skipping_overloaded() -> None:
    assert new_scheduler("fo").pick(reals(2, 5, 5), flow()) == 1
    servers = reals(2, 5, 5)
    servers[1] = RealState(5, overloaded=True)
    assert new_scheduler("fo").pick(servers, flow()) == 2
    assert new_scheduler("fo").pick(reals(0, 0), flow()) is None


def test_ovf_highest_weight_until_its_active_connections_exceed_it() -> None:
    assert new_scheduler("ovf").pick(reals(3, 2, active=[3, 0], inactive=[0, 0]), flow()) == 0  # 3 <= 3
    assert new_scheduler("ovf").pick(reals(3, 2, active=[4, 0], inactive=[0, 0]), flow()) == 1  # 4 > 3
    assert new_scheduler("ovf").pick(reals(3, 2, active=[4, 3], inactive=[0, 0]), flow()) is None
    scheduler, servers = new_scheduler("ovf"), reals(3, 2)
    picks = []
    for k in range(6):
        choice = scheduler.pick(servers, flow(k))
        assert choice is not None
        picks.append(choice)
        servers[choice] = RealState(servers[choice].weight, servers[choice].active + 1)
    assert picks == [0, 0, 0, 0, 1, 1]  # weight-limited: 4 on A (active 3 <= 3 still takes one), then B


# ---- sh, dh

def test_sh_table_gives_each_real_weight_consecutive_buckets_round_and_round() -> None:
    table = sh_table([2, 1, 0])
    assert table[:8] == [0, 0, 1, 2, 0, 0, 1, 2] and len(table) == BUCKETS
    assert dh_table([5, 1])[:4] == [0, 1, 0, 1]  # dh ignores weights


def test_sh_same_source_same_real_and_sh_port_spreads_ports() -> None:
    servers = reals(1, 1, 1, 1)
    plain = new_scheduler("sh")
    assert {plain.pick(servers, flow(7, sport=p)) for p in range(1024, 1124)} == {plain.pick(servers, flow(7))}
    by_port = new_scheduler("sh", SchedFlag.PORT)
    assert len({by_port.pick(servers, flow(7, sport=p)) for p in range(1024, 1124)}) == 4
    split = Counter(plain.pick(servers, flow(k)) for k in range(256))
    assert set(split) == {0, 1, 2, 3}


def test_sh_unavailable_real_fails_without_fallback_and_is_replaced_with_it() -> None:
    servers = reals(1, 1)
    home = new_scheduler("sh").pick(servers, flow(3))
    assert home is not None
    servers[home] = RealState(0, rip=servers[home].rip, port=80)
    assert new_scheduler("sh").pick(servers, flow(3)) is None
    assert new_scheduler("sh", SchedFlag.FALLBACK).pick(servers, flow(3)) == 1 - home


def test_dh_hashes_the_destination_address() -> None:
    servers = reals(1, 1, 1)
    scheduler = new_scheduler("dh")
    assert len({scheduler.pick(servers, flow(k)) for k in range(50)}) == 1
    other = {scheduler.pick(servers, flow(0, daddr=IPv4Address(f"198.18.0.{n}"))) for n in range(1, 60)}
    assert other == {0, 1, 2}


def test_ipv6_addresses_are_folded_to_32_bits_as_ipvs_does() -> None:
    # ip_vs_sh/dh/mh/lblc's addr_fold: the four 32-bit words xor-ed, then ntohl.
    assert addr_fold(IPv6Address("2001:db8::1")) == 0x20010DB8 ^ 1
    assert addr_fold(IPv6Address("2001:db8:1:2:3:4:5:6")) == 0x20010DB8 ^ 0x00010002 ^ 0x00030004 ^ 0x00050006
    assert addr_fold(IPv4Address("198.18.1.2")) == int(IPv4Address("198.18.1.2"))
    servers = [RealState(1, rip=IPv6Address(f"2001:db8:2::{n}"), port=80) for n in range(4)]
    sh = new_scheduler("sh")
    for n in range(64):
        client = IPv6Address(f"2001:db8:1:{n:x}::{n * 7:x}")
        home = hash_32(addr_fold(client), 8)
        assert sh.pick(servers, Flow(client, 1024 + n, IPv6Address("2001:db8::100"), 80)) == sh_table([1] * 4)[home]
    # Two clients whose words xor to the same value share a bucket, as in IPVS.
    a, b = IPv6Address("2001:db8::1:2:3:4"), IPv6Address("2001:db8::3:4:1:2")  # words swapped
    assert addr_fold(a) == addr_fold(b)
    assert sh.pick(servers, Flow(a, 1, IPv6Address("2001:db8::100"), 80)) == sh.pick(
        servers, Flow(b, 2, IPv6Address("2001:db8::100"), 80))


# ---- mh

def test_mh_turns_follow_weights_over_their_gcd_shifted_to_6_bits() -> None:
    assert mh_turns([5, 3, 1]) == [5, 3, 1]
    assert mh_turns([10, 20, 0]) == [1, 2, 0]
    assert mh_turns([1000, 1]) == [1000 >> 4, 1]  # 1000 needs 10 bits: shift 4


def test_mh_5_3_1_over_9000_flows_follows_the_weights() -> None:
    scheduler, servers = new_scheduler("mh"), reals(5, 3, 1)
    split = Counter(scheduler.pick(servers, flow(k)) for k in range(9000))
    for real, expected in ((0, 5000), (1, 3000), (2, 1000)):
        assert abs(split[real] - expected) <= 0.05 * 9000, split
    table = Counter(build_table("mh", servers))
    assert sum(table.values()) == MH_TABLE_SIZE
    assert [round(table[i] / MH_TABLE_SIZE * 9, 1) for i in range(3)] == [5.0, 3.0, 1.0]


def test_mh_keeps_a_drained_reals_slots_and_falls_back_only_with_the_flag() -> None:
    servers = reals(1, 1, 1)
    drained = [servers[0], RealState(0, rip=servers[1].rip, port=80, last_weight=1), servers[2]]
    plain, fallback = new_scheduler("mh"), new_scheduler("mh", SchedFlag.FALLBACK)
    before = {k: plain.pick(servers, flow(k)) for k in range(300)}
    for k, real in before.items():
        if real == 1:
            assert plain.pick(drained, flow(k)) is None
            assert fallback.pick(drained, flow(k)) in (0, 2)
        else:
            assert plain.pick(drained, flow(k)) == real  # nobody else moves


# ---- lblc, lblcr

class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_lblc_reuses_its_cached_real_until_it_is_overloaded() -> None:
    clock = Clock()
    scheduler = LocalityLeastConnection(clock)
    assert scheduler.pick(reals(1, 1, active=[0, 0], inactive=[0, 0]), flow()) == 0
    # the cache wins over wlc's choice...
    assert scheduler.pick(reals(1, 1, active=[1, 0], inactive=[0, 0]), flow()) == 0
    # ...until active > weight while another real is under half its weight
    assert scheduler.pick(reals(1, 1, active=[2, 0], inactive=[0, 0]), flow()) == 1
    assert scheduler.pick(reals(1, 1, active=[5, 1], inactive=[0, 0]), flow()) == 1  # nobody under half: keep
    assert scheduler.pick(reals(1, 0, active=[0, 0], inactive=[0, 0]), flow()) == 0  # weight 0: rescheduled


def test_lblc_entries_expire_after_24_hours_unused() -> None:
    clock = Clock()
    scheduler = LocalityLeastConnection(clock)
    assert scheduler.pick(reals(1, 1), flow()) == 0
    busy = reals(1, 1, active=[1, 0], inactive=[0, 0])
    clock.now += 24 * 3600 - 1
    assert scheduler.pick(busy, flow()) == 0  # used: lastuse moves on
    clock.now += 24 * 3600
    assert scheduler.pick(busy, flow()) == 1  # expired: wlc chooses again


def test_lblcr_adds_a_real_when_overloaded_and_drops_the_busiest_after_expiry() -> None:
    clock = Clock()
    scheduler = LocalityLeastConnectionReplication(clock)
    assert scheduler.pick(reals(1, 1, 1), flow()) == 0
    assert scheduler.pick(reals(1, 1, 1, active=[2, 0, 0], inactive=[0, 0, 0]), flow()) == 1
    assert scheduler.cache[VIP].members == [1, 0]
    # the set's least loaded member serves while it is not overloaded
    loads = reals(1, 1, 1, active=[2, 1, 0], inactive=[0, 0, 0])
    assert scheduler.pick(loads, flow()) == 1
    clock.now += 12 * 3600  # the entry is used, the set unchanged...
    assert scheduler.pick(loads, flow()) == 1 and scheduler.cache[VIP].members == [1, 0]
    clock.now += 12 * 3600 + 1  # ...for longer than the expiration: its busiest member leaves
    assert scheduler.pick(loads, flow()) == 1
    assert scheduler.cache[VIP].members == [1]


def test_lblcr_set_is_bounded() -> None:
    scheduler = LocalityLeastConnectionReplication(Clock())
    weights = [1] * (LBLCR_SET_SIZE + 4)
    scheduler.pick(reals(*weights), flow())
    for k in range(1, LBLCR_SET_SIZE + 4):
        active = [2 if i < k else 0 for i in range(len(weights))]
        assert scheduler.pick(reals(*weights, active=active, inactive=[0] * len(weights)), flow()) == k
    assert len(scheduler.cache[VIP].members) == LBLCR_SET_SIZE
