"""The schedulers that read live connection counts: lc, wlc, sed, nq, fo, ovf.

Loads are compared as the kernel does, without division: h1/w1 > h2/w2 as h1*w2 > h2*w1.
"""

from __future__ import annotations

from collections.abc import Sequence

from pyvs.schedulers.common import Flow, RealState, Scheduler


def least_connection(reals: Sequence[RealState]) -> int | None:
    """ip_vs_lc_schedule(): the least overhead; weight 0 and overloaded reals are skipped; ties to the first."""
    least: int | None = None
    for i, r in enumerate(reals):
        if r.available and (least is None or r.overhead < reals[least].overhead):
            least = i
    return least


def weighted_least_connection(reals: Sequence[RealState]) -> int | None:
    """ip_vs_wlc_schedule(): the least overhead/weight, starting from the first available real.

    lblc and lblcr schedule new entries with exactly this function (__ip_vs_lblc_schedule).
    """
    first = next((i for i, r in enumerate(reals) if r.available), None)
    if first is None:
        return None
    least = first
    for i in range(first + 1, len(reals)):
        r = reals[i]
        if not r.overloaded and reals[least].overhead * r.weight > r.overhead * reals[least].weight:
            least = i
    return least


def _expected_delay(r: RealState) -> int:
    return r.active + 1  # sed and nq count active connections only, plus the new one


def shortest_expected_delay(reals: Sequence[RealState]) -> int | None:
    """ip_vs_sed_schedule(): the least (active+1)/weight."""
    first = next((i for i, r in enumerate(reals) if r.available), None)
    if first is None:
        return None
    least = first
    for i in range(first + 1, len(reals)):
        r = reals[i]
        if not r.overloaded and _expected_delay(reals[least]) * r.weight > _expected_delay(r) * reals[least].weight:
            least = i
    return least


def never_queue(reals: Sequence[RealState]) -> int | None:
    """ip_vs_nq_schedule(): the first idle real (no active connection), else as sed."""
    least: int | None = None
    for i, r in enumerate(reals):
        if not r.available:
            continue
        if r.active == 0:
            return i
        if least is None or _expected_delay(reals[least]) * r.weight > _expected_delay(r) * reals[least].weight:
            least = i
    return least


def weighted_failover(reals: Sequence[RealState]) -> int | None:
    """ip_vs_fo_schedule(): the highest weight among reals not overloaded; ties to the first."""
    best: int | None = None
    for i, r in enumerate(reals):
        if not r.overloaded and r.weight > (reals[best].weight if best is not None else 0):
            best = i
    return best


def overflow(reals: Sequence[RealState]) -> int | None:
    """ip_vs_ovf_schedule(): the highest weight among reals whose active connections do not exceed it."""
    best: int | None = None
    for i, r in enumerate(reals):
        if r.overloaded or r.weight == 0 or r.active > r.weight:
            continue
        if best is None or r.weight > reals[best].weight:
            best = i
    return best


class _CountScheduler(Scheduler):
    """A scheduler without state of its own: the choice depends on the reals' counts only."""

    rule = staticmethod(least_connection)

    def __init__(self) -> None:
        super().__init__()

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        return self.rule(reals)


class LeastConnection(_CountScheduler):
    name = "lc"
    rule = staticmethod(least_connection)


class WeightedLeastConnection(_CountScheduler):
    name = "wlc"
    rule = staticmethod(weighted_least_connection)


class ShortestExpectedDelay(_CountScheduler):
    name = "sed"
    rule = staticmethod(shortest_expected_delay)


class NeverQueue(_CountScheduler):
    name = "nq"
    rule = staticmethod(never_queue)


class WeightedFailover(_CountScheduler):
    name = "fo"
    rule = staticmethod(weighted_failover)


class Overflow(_CountScheduler):
    name = "ovf"
    rule = staticmethod(overflow)


def candidates_table(weights: Sequence[int]) -> list[int]:
    """Every real in list order: the data plane scans them, reading weight and counts live."""
    return list(range(len(weights)))
