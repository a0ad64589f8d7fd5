"""lblc and lblcr (ip_vs_lblc.c, ip_vs_lblcr.c): a per-service cache from destination address to a real
(lblc) or to a set of reals (lblcr), filled by wlc.

The cache is IPVS's; its garbage collection is simplified to "an entry unused for EXPIRATION seconds is gone"
(IPVS's lblc_expiration/lblcr_expiration, 24 h). An lblcr set holds at most LBLCR_SET_SIZE reals: when it is
full a new real is used without being added, as IPVS does when it cannot allocate a set element.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyvs.model import IPAddress
from pyvs.schedulers.common import Flow, RealState, Scheduler
from pyvs.schedulers.leastconn import weighted_least_connection

EXPIRATION = 24 * 60 * 60  # seconds
LBLCR_SET_SIZE = 16

Clock = Callable[[], float]


def lblc_overloaded(real: RealState, reals: Sequence[RealState]) -> bool:
    """is_overloaded(): more active connections than its weight while some real has under half its weight."""
    return real.active > real.weight and any(r.active * 2 < r.weight for r in reals)


@dataclass
class _CacheEntry:
    real: int
    lastuse: float


class LocalityLeastConnection(Scheduler):
    """lblc: the destination's cached real while it is usable, else wlc's choice, cached."""

    name = "lblc"

    def __init__(self, clock: Clock = time.monotonic, expiration: float = EXPIRATION):
        super().__init__()
        self.clock = clock
        self.expiration = expiration
        self.cache: dict[IPAddress, _CacheEntry] = {}

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        now = self.clock()
        entry = self.cache.get(flow.daddr)
        if entry is not None and now >= entry.lastuse + self.expiration:
            entry = None
        if entry is not None:
            entry.lastuse = now
            if entry.real < len(reals):
                cached = reals[entry.real]
                if cached.weight > 0 and not lblc_overloaded(cached, reals):
                    return entry.real
        choice = weighted_least_connection(reals)
        if choice is not None and (entry is None or entry.real != choice):
            self.cache[flow.daddr] = _CacheEntry(choice, now)
        return choice


@dataclass
class _ServerSet:
    members: list[int] = field(default_factory=list)  # newest first, as IPVS's list_add
    lastuse: float = 0.0
    lastmod: float = 0.0


def _set_min(members: Sequence[int], reals: Sequence[RealState]) -> int | None:
    """ip_vs_dest_set_min(): the member with the least overhead/weight."""
    usable = [m for m in members if m < len(reals)]
    first = next((k for k, m in enumerate(usable) if reals[m].available), None)
    if first is None:
        return None
    least = usable[first]
    for m in usable[first + 1:]:
        r = reals[m]
        if not r.overloaded and reals[least].overhead * r.weight > r.overhead * reals[least].weight:
            least = m
    return least


def _set_max(members: Sequence[int], reals: Sequence[RealState]) -> int | None:
    """ip_vs_dest_set_max(): the member with the most overhead/weight (weight > 0)."""
    usable = [m for m in members if m < len(reals)]
    first = next((k for k, m in enumerate(usable) if reals[m].weight > 0), None)
    if first is None:
        return None
    most = usable[first]
    for m in usable[first + 1:]:
        r = reals[m]
        if r.weight > 0 and reals[most].overhead * r.weight < r.overhead * reals[most].weight:
            most = m
    return most


class LocalityLeastConnectionReplication(Scheduler):
    """lblcr: the least loaded real of the destination's set; an overloaded one brings wlc's choice into the
    set; a set unchanged for `expiration` seconds loses its most loaded member."""

    name = "lblcr"

    def __init__(self, clock: Clock = time.monotonic, expiration: float = EXPIRATION):
        super().__init__()
        self.clock = clock
        self.expiration = expiration
        self.cache: dict[IPAddress, _ServerSet] = {}

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        now = self.clock()
        entry = self.cache.get(flow.daddr)
        if entry is not None and now >= entry.lastuse + self.expiration:
            entry = None
        if entry is None:
            choice = weighted_least_connection(reals)
            if choice is not None:
                self.cache[flow.daddr] = _ServerSet([choice], now, now)
            return choice
        entry.lastuse = now
        least = _set_min(entry.members, reals)
        if len(entry.members) > 1 and now > entry.lastmod + self.expiration:
            most = _set_max(entry.members, reals)
            if most is not None:
                entry.members.remove(most)
                entry.lastmod = now
        if least is not None and not lblc_overloaded(reals[least], reals):
            return least
        choice = weighted_least_connection(reals)
        if choice is not None and choice not in entry.members and len(entry.members) < LBLCR_SET_SIZE:
            entry.members.insert(0, choice)
            entry.lastmod = now
        return choice
