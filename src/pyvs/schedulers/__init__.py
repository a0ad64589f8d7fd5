"""The IPVS schedulers in plain Python: the reference of every choice the data plane makes, and the
builders of the tables it uses.

- `new_scheduler(name, flags)` gives a `Scheduler` whose `pick(reals, flow)` returns the index of the real
  IPVS would choose (reals in list order, with their live counts), or None.
- `build_table(name, reals, flags)` gives the list of real indexes the data plane stores in sched_table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Protocol

from pyvs.model import ALL_SCHEDULERS, IPAddress
from pyvs.schedulers.common import NO_FLAGS, Flow, RealState, SchedFlag, Scheduler, fmix32, hash_32
from pyvs.schedulers.hashing import DestinationHashing, SourceHashing, dh_table, sh_table
from pyvs.schedulers.leastconn import (
    LeastConnection,
    NeverQueue,
    Overflow,
    ShortestExpectedDelay,
    WeightedFailover,
    WeightedLeastConnection,
    candidates_table,
)
from pyvs.schedulers.locality import Clock, LocalityLeastConnection, LocalityLeastConnectionReplication
from pyvs.schedulers.maglev import MH_TABLE_SIZE, Maglev, mh_table, mh_table_size
from pyvs.schedulers.roundrobin import RoundRobin, WeightedRoundRobin, rr_table, wrr_table

# ipvsadm's man page order.
SCHEDULERS = ALL_SCHEDULERS  # one list, in the model


class RealLike(Protocol):
    """What a table needs of a real (pyvs.model.Real and RealState both fit)."""

    @property
    def rip(self) -> IPAddress: ...

    @property
    def port(self) -> int: ...

    @property
    def weight(self) -> int: ...


def _check_name(name: str) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler '{name}' (valid: {', '.join(SCHEDULERS)})")


def new_scheduler(name: str, flags: SchedFlag = NO_FLAGS, clock: Clock = time.monotonic) -> Scheduler:
    """A fresh scheduler of one service; `clock` (seconds) drives lblc and lblcr's cache expiry."""
    _check_name(name)
    if name in ("lblc", "lblcr"):
        return (LocalityLeastConnection if name == "lblc" else LocalityLeastConnectionReplication)(clock)
    if name in ("sh", "dh", "mh"):
        return {"sh": SourceHashing, "dh": DestinationHashing, "mh": Maglev}[name](flags)
    plain: dict[str, type[Scheduler]] = {
        "rr": RoundRobin, "wrr": WeightedRoundRobin, "lc": LeastConnection, "wlc": WeightedLeastConnection,
        "sed": ShortestExpectedDelay, "nq": NeverQueue, "fo": WeightedFailover, "ovf": Overflow,
    }
    return plain[name]()


def build_table(name: str, reals: Sequence[RealLike], flags: int = 0, size: int | None = None) -> list[int]:
    """Indexes into `reals` (list order) as the data plane's sched_table holds them for scheduler `name`:
    rr the reals with weight > 0; wrr one period of its sequence; sh and dh their 256 buckets; mh the
    Maglev table of `size` slots (None: mh_table_size() of the number of reals); the others every real, scanned
    live. `flags` (sh-port, ...) change lookups, not tables. An mh real may carry `last_weight` (IPVS builds mh
    from the last non-zero weight)."""
    _check_name(name)
    weights = [r.weight for r in reals]
    if name == "rr":
        return rr_table(weights)
    if name == "wrr":
        return wrr_table(weights)
    if name == "sh":
        return sh_table(weights)
    if name == "dh":
        return dh_table(weights)
    if name == "mh":
        built = [getattr(r, "last_weight", None) for r in reals]
        return mh_table([(r.rip, r.port, r.weight if w is None else w) for r, w in zip(reals, built, strict=True)],
                        mh_table_size(len(reals), size))
    return candidates_table(weights)


__all__ = [
    "SCHEDULERS", "MH_TABLE_SIZE", "mh_table_size", "Flow", "RealState", "Scheduler", "SchedFlag", "RealLike",
    "build_table", "new_scheduler", "hash_32", "fmix32",
]
