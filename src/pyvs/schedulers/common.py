"""What every scheduler sees: the reals in list order with their live counts, the flow, the flags.

The definitions follow IPVS (net/netfilter/ipvs/ip_vs_*.c, include/net/ip_vs.h); the hash
functions are the ones the XDP program computes too (schedule.h), bit for bit. IPv6 addresses are hashed as IPVS
hashes them: folded to 32 bits (`addr_fold`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntFlag
from ipaddress import IPv4Address

from pyvs.model import IPAddress

U32 = 0xFFFFFFFF
GOLDEN_RATIO_32 = 0x61C88647  # include/linux/hash.h


class SchedFlag(IntFlag):
    """ipvsadm -b flags (pyvs.model.SCHED_FLAG_BITS); the values are the data plane's PYVS_SVC_F_SCHED1..3."""

    FALLBACK = 1  # flag-1: sh-fallback, mh-fallback
    PORT = 2  # flag-2: sh-port, mh-port
    FLAG3 = 4  # flag-3: unused by every scheduler


NO_FLAGS = SchedFlag(0)


@dataclass(frozen=True)
class RealState:
    """One real as a scheduler sees it (IPVS's struct ip_vs_dest)."""

    weight: int
    active: int = 0
    inactive: int = 0
    overloaded: bool = False  # IPVS's IP_VS_DEST_F_OVERLOAD (upper connection threshold reached)
    rip: IPAddress = IPv4Address(0)
    port: int = 0
    last_weight: int | None = None  # mh: the last non-zero weight (IPVS's dest->last_weight); None = weight

    @property
    def available(self) -> bool:
        return self.weight > 0 and not self.overloaded

    @property
    def overhead(self) -> int:
        """ip_vs_dest_conn_overhead(): active connections weigh 256 inactive ones."""
        return self.active * 256 + self.inactive


@dataclass(frozen=True)
class Flow:
    """The first packet of a connection: client address and port, virtual address and port."""

    saddr: IPAddress
    sport: int
    daddr: IPAddress
    dport: int


def addr_fold(address: IPAddress) -> int:
    """ntohl(addr_fold) of IPVS's sh, dh, lblc, lblcr and mh: an IPv4 address itself, an IPv6 one's four 32-bit
    words xor-ed."""
    value = int(address)
    return (value ^ value >> 32 ^ value >> 64 ^ value >> 96) & U32


def hash_32(value: int, bits: int) -> int:
    """The kernel's hash_32(): multiply by GOLDEN_RATIO_32, keep the top `bits` bits."""
    return ((value * GOLDEN_RATIO_32) & U32) >> (32 - bits)


def fmix32(value: int) -> int:
    """murmur3's 32-bit finalizer: pyvs's flow hash for mh (IPVS uses hsiphash with a random key)."""
    h = value & U32
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & U32
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & U32
    h ^= h >> 16
    return h


class Scheduler(ABC):
    """One service's scheduler: `pick` returns the index of the chosen real, or None (no real available).

    `update` is IPVS's add_dest/del_dest/upd_dest: called when the reals or their weights change; `pick`
    calls it itself when it sees a different configuration than last time.
    """

    name = ""

    def __init__(self, flags: SchedFlag = NO_FLAGS):
        self.flags = flags
        self._config: tuple[tuple[int, IPAddress, int, int | None], ...] | None = None

    def update(self, reals: Sequence[RealState]) -> None:
        self._config = _config(reals)

    def pick(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        if self._config != _config(reals):
            self.update(reals)
        return self.choose(reals, flow)

    @abstractmethod
    def choose(self, reals: Sequence[RealState], flow: Flow) -> int | None:
        """The choice for `flow` with the configuration of the last update."""


def _config(reals: Sequence[RealState]) -> tuple[tuple[int, IPAddress, int, int | None], ...]:
    return tuple((r.weight, r.rip, r.port, r.last_weight) for r in reals)
