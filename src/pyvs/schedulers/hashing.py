"""sh and dh (ip_vs_sh.c, ip_vs_dh.c): 256 buckets of reals, indexed by a hash of an address.

Bucket of an address: hash_32(ntohl(addr) [+ ntohs(sport) with sh-port], 8), as the current kernel computes it;
an IPv6 address is folded to 32 bits first (addr_fold).
"""

from __future__ import annotations

from collections.abc import Sequence

from pyvs.schedulers.common import Flow, RealState, SchedFlag, Scheduler, addr_fold, hash_32

BUCKET_BITS = 8
BUCKETS = 1 << BUCKET_BITS


def sh_table(weights: Sequence[int]) -> list[int]:
    """ip_vs_sh_reassign(): the reals in list order, each filling `weight` consecutive buckets (at least one),
    round and round until the 256 buckets are full. A weight 0 real keeps a bucket: lookups there fail."""
    if not weights:
        return []
    table: list[int] = []
    real = filled = 0
    while len(table) < BUCKETS:
        table.append(real)
        filled += 1
        if filled >= weights[real]:
            real, filled = (real + 1) % len(weights), 0
    return table


def dh_table(weights: Sequence[int]) -> list[int]:
    """ip_vs_dh_reassign(): one bucket per real in turn, whatever the weights."""
    if not weights:
        return []
    return [i % len(weights) for i in range(BUCKETS)]


def sh_key(flow: Flow, flags: SchedFlag) -> int:
    port = flow.sport if flags & SchedFlag.PORT else 0
    return (port + addr_fold(flow.saddr)) & 0xFFFFFFFF


def bucket_lookup(table: Sequence[int], reals: Sequence[RealState], key: int, fallback: bool) -> int | None:
    """ip_vs_sh_get() / ip_vs_sh_get_fallback(): the bucket's real if available; with fallback, the buckets
    (offset + hash) for offset = hash, hash+1, ... (mod 256) are tried in turn."""
    if not table:
        return None
    home = hash_32(key, BUCKET_BITS)
    real = table[home]
    if reals[real].available or not fallback:
        return real if reals[real].available else None
    for offset in range(BUCKETS):
        real = table[((offset + home) % BUCKETS + home) & (BUCKETS - 1)]
        if reals[real].available:
            return real
    return None


class SourceHashing(Scheduler):
    name = "sh"

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        self.table = sh_table([r.weight for r in reals])

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        return bucket_lookup(self.table, reals, sh_key(flow, self.flags), bool(self.flags & SchedFlag.FALLBACK))


class DestinationHashing(Scheduler):
    name = "dh"

    def update(self, reals: Sequence[RealState]) -> None:
        super().update(reals)
        self.table = dh_table([r.weight for r in reals])

    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        return bucket_lookup(self.table, reals, addr_fold(flow.daddr), fallback=False)
