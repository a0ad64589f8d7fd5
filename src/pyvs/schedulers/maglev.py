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
from math import gcd

from pyvs.model import IPAddress
from pyvs.schedulers.common import NO_FLAGS, U32, Flow, RealState, SchedFlag, Scheduler, addr_fold, fmix32

MH_TABLE_SIZE = 4093  # IPVS's default (CONFIG_IP_VS_MH_TAB_INDEX 12); fits the data plane's 4096 slots
MH_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)  # IPVS's primes
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


def mh_table(reals: Sequence[tuple[IPAddress, int, int]], size: int = MH_TABLE_SIZE) -> list[int]:
    """ip_vs_mh_populate(): `reals` are (rip, port, weight) in list order; slot -> index of its real."""
    turns = mh_turns([w for _, _, w in reals])
    if not any(turns):
        return []
    keys = [(port + addr_fold(rip)) & U32 for rip, port, _ in reals]
    next_slot = [mh_hash(k, MH_SEED1) % size for k in keys]
    skips = [mh_hash(k, MH_SEED2) % (size - 1) + 1 for k in keys]
    table = [-1] * size
    filled = 0
    while True:
        for i, n in enumerate(turns):
            for _ in range(n):
                slot = next_slot[i]
                while table[slot] >= 0:
                    slot = (slot + skips[i]) % size
                next_slot[i] = slot
                table[slot] = i
                filled += 1
                if filled == size:
                    return table


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

    def __init__(self, flags: SchedFlag = NO_FLAGS, size: int = MH_TABLE_SIZE):
        super().__init__(flags)
        self.size = size

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        weights = [r.weight if r.last_weight is None else r.last_weight for r in reals]
        self.table = mh_table([(r.rip, r.port, w) for r, w in zip(reals, weights, strict=True)], self.size)

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        return mh_lookup(self.table, reals, mh_key(flow, self.flags), bool(self.flags & SchedFlag.FALLBACK))
