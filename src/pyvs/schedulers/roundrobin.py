"""rr and wrr (ip_vs_rr.c, ip_vs_wrr.c): the kernel's stepping, and the tables the data plane cycles through."""

from __future__ import annotations

from collections.abc import Sequence
from math import gcd

from pyvs.schedulers.common import Flow, RealState, Scheduler

HEAD = -1  # the list head: "before the first real"


class RoundRobin(Scheduler):
    """The next available real after the last one picked, wrapping around once."""

    name = "rr"

    def __init__(self) -> None:
        super().__init__()
        self.last = HEAD

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        if self.last >= len(reals):
            self.last = HEAD

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        order = list(range(self.last + 1, len(reals)))
        if self.last != HEAD:
            order += range(0, self.last + 1)
        for i in order:
            if reals[i].available:
                self.last = i
                return i
        return None


def _weight_step(weights: Sequence[int]) -> tuple[int, int]:
    """(di, mw): the gcd of the positive weights (1 when none) and the first pass's weight."""
    step = 0
    for w in weights:
        if w > 0:
            step = gcd(step, w)
    step = step or 1
    return step, max(weights, default=0) - (step - 1)


class WeightedRoundRobin(Scheduler):
    """ip_vs_wrr_schedule(): passes with a required weight cw from mw down to 1 in steps of di."""

    name = "wrr"

    def __init__(self) -> None:
        super().__init__()
        self.current = HEAD
        self.cw = 0
        self.mw = 0
        self.di = 1
        self._started = False

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        self.current = HEAD
        self.di, self.mw = _weight_step([r.weight for r in reals])
        if not self._started or self.cw > self.mw or not self.cw:
            self.cw = self.mw  # ip_vs_wrr_init_svc, or a cw that no longer fits
        elif self.di > 1:
            self.cw = (self.cw // self.di) * self.di + 1
        self._started = True

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        if self.mw == 0:
            return None
        last = position = self.current
        stop: int | None = None
        last_pass = restarted = False
        while True:
            for i in range(position + 1, len(reals)):
                if not reals[i].overloaded and reals[i].weight >= self.cw:
                    self.current = i
                    return i
                if i == stop:
                    self.current = i
                    return None
            position = HEAD
            self.cw -= self.di
            if self.cw <= 0:
                self.cw = self.mw
                if last_pass or last == HEAD:
                    self.current = HEAD
                    return None
                restarted = True
            last_pass = self.cw <= self.di
            if last_pass and restarted and last != HEAD:
                stop = last


def rr_table(weights: Sequence[int]) -> list[int]:
    """The reals that take new connections, in list order."""
    return [i for i, w in enumerate(weights) if w > 0]


def wrr_table(weights: Sequence[int]) -> list[int]:
    """One period of wrr's choices from a fresh start: for cw = mw, mw-di, ..., the reals with weight >= cw."""
    if not any(w > 0 for w in weights):
        return []
    step, top = _weight_step(weights)
    table: list[int] = []
    for cw in range(top, 0, -step):
        table.extend(i for i, w in enumerate(weights) if w >= cw)
    return table
