"""mh (ip_vs_mh.c; Maglev, NSDI 2016, section 3.4): a lookup table of M slots, M prime, filled by the reals
taking turns along their own permutation of the slots; weights give a real more turns.

pyvs's hashes (IPVS uses hsiphash with keys we cannot mirror in BPF):
- a real's permutation: offset = fmix32((port + ntohl(rip)) ^ MH_SEED1) % M,
  skip = fmix32((port + ntohl(rip)) ^ MH_SEED2) % (M - 1) + 1, slots offset, offset+skip, ... (mod M);
- a flow's slot: fmix32((ntohl(saddr) + [ntohs(sport) with mh-port]) ^ MH_SEED1) % M;
- an IPv6 address (a real's or a flow's) is folded to 32 bits first, as ip_vs_mh_hashkey does (addr_fold);
- mh-fallback, as ip_vs_mh_get_fallback(): when that slot's real is unavailable, try the slots
  fmix32((key + r) ^ MH_SEED1) % M for r = (home + offset) % M, offset = 0, 1, ... M-1.
All sums are modulo 2^32. schedule.h computes the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import chain, repeat
from math import gcd

from pyvs.model import MH_TABLE_SIZES, IPAddress
from pyvs.schedulers.common import NO_FLAGS, U32, Flow, RealState, SchedFlag, Scheduler, addr_fold, fmix32

MH_TABLE_SIZE = 4093  # IPVS's default (CONFIG_IP_VS_MH_TAB_INDEX 12), the smallest table pyvs chooses
MH_SLOTS_PER_REAL = 50  # the chosen size is at least this many slots per real: max/mean load <= 1 + 1/50
MH_WEIGHT_BITS = 6  # IP_VS_MH_TAB_BITS: weights/gcd are shifted down to 6 bits
MH_SEED1 = 2654435761  # the fixed keys of ip_vs_mh.c's generate_hash_secret()
MH_SEED2 = 2654446892


def mh_hash(value: int, seed: int = MH_SEED1) -> int:
    return fmix32((value & U32) ^ seed)


def mh_turns(weights: Sequence[int]) -> list[int]:
    """Slots a real takes per turn: (weight / gcd) >> rshift, at least 1 for a non-zero weight."""
    positive = [w for w in weights if w > 0]
    if not positive:
        return [0] * len(weights)
    common = 0
    for w in positive:
        common = gcd(common, w)
    shift = max((max(positive) // common).bit_length() - MH_WEIGHT_BITS, 0)
    return [((w // common) >> shift) or int(w != 0) for w in weights]


def mh_table_size(reals: int, size: int | None = None) -> int:
    """The table size of a service with `reals` reals: `size` when the admin set one, else the smallest of
    IPVS's primes with at least MH_SLOTS_PER_REAL slots per real, never below IPVS's default (4093, so that
    small services keep the tables they always had) nor above its largest (131071). With equal weights a real
    gets floor(M/N) or ceil(M/N) slots, so the busiest one carries at most 1 + N/M <= 1.02 times the mean share
    up to 2621 reals."""
    if size is not None:
        return size
    wanted = max(reals * MH_SLOTS_PER_REAL, MH_TABLE_SIZE)
    return next((m for m in MH_TABLE_SIZES if m >= wanted), MH_TABLE_SIZES[-1])


def mh_table(reals: Sequence[tuple[IPAddress, int, int]], size: int = MH_TABLE_SIZE) -> list[int]:
    """ip_vs_mh_populate(): `reals` are (rip, port, weight) in list order; slot -> index of its real.
    Deterministic: the same reals in the same order give the same table in every process."""
    turns = mh_turns([w for _, _, w in reals])
    if not any(turns):
        return []
    keys = [(port + addr_fold(rip)) & U32 for rip, port, _ in reals]
    next_slot = [mh_hash(k, MH_SEED1) % size for k in keys]
    # One entry per turn (a real with n turns takes n slots in a row), whole rounds until the table is full.
    turn = [(i, mh_hash(k, MH_SEED2) % (size - 1) + 1) for i, (n, k) in enumerate(zip(turns, keys, strict=True))
            for _ in range(n)]
    rounds, left = divmod(size, len(turn))
    table: list[int | None] = [None] * size
    for i, skip in chain(chain.from_iterable(repeat(turn, rounds)), turn[:left]):
        slot = next_slot[i]  # the hot loop of a rebuild (65521 slots for 1000 reals): no modulo, locals only
        while table[slot] is not None:
            slot += skip
            if slot >= size:
                slot -= size
        table[slot] = i
        next_slot[i] = slot
    return table  # type: ignore[return-value]  # every slot is filled


def mh_key(flow: Flow, flags: SchedFlag) -> int:
    port = flow.sport if flags & SchedFlag.PORT else 0
    return (port + addr_fold(flow.saddr)) & U32


def mh_lookup(table: Sequence[int], reals: Sequence[RealState], key: int, fallback: bool) -> int | None:
    if not table:
        return None
    size = len(table)
    home = mh_hash(key) % size
    real = table[home]
    if reals[real].available or not fallback:
        return real if reals[real].available else None
    for offset in range(size):
        real = table[mh_hash(key + (offset + home) % size) % size]
        if reals[real].available:
            return real
    return None


class Maglev(Scheduler):
    name = "mh"

    def __init__(self, flags: SchedFlag = NO_FLAGS, size: int | None = None):
        super().__init__(flags)
        self.size = size  # None: chosen from the number of reals, as the data plane does

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        weights = [r.weight if r.last_weight is None else r.last_weight for r in reals]
        self.table = mh_table([(r.rip, r.port, w) for r, w in zip(reals, weights, strict=True)],
                              mh_table_size(len(reals), self.size))

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        return mh_lookup(self.table, reals, mh_key(flow, self.flags), bool(self.flags & SchedFlag.FALLBACK))
