"""The data plane's codec: model values to the shared structs' fields and back (byte order, addresses, MACs),
the service entry's settings, and the bit sets of the slot usage. Pure: no map is read or written here."""

from __future__ import annotations

import ctypes
import functools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address

from pyvs.dataplane import abi
from pyvs.dataplane.neighbours import NextHop
from pyvs.mac import mac_bytes
from pyvs.model import HOST_MASK, Protocol, Service, ServiceKey, sched_flag_bits, sched_flag_names


@functools.lru_cache(maxsize=65536)
def ip_to_be(address: IPv4Address) -> int:
    return int.from_bytes(address.packed, "little")  # network order bytes read as a native u32


@functools.lru_cache(maxsize=65536)
def be_to_ip(value: int) -> IPv4Address:
    return IPv4Address(value.to_bytes(4, "little"))


def port_to_be(port: int) -> int:
    return socket.htons(port)


def svc_key(key: ServiceKey) -> abi.SvcKey:
    return abi.SvcKey(vip=ip_to_be(key.vip), port=port_to_be(key.port), proto=int(key.proto))


def service_key(raw: abi.SvcKey) -> ServiceKey:
    return ServiceKey(Protocol(raw.proto), be_to_ip(raw.vip), socket.ntohs(raw.port))


@dataclass
class RealSlot:
    """A slot of the reals map and what it holds."""
    slot: int
    entry: abi.RealEntry


def svc_value(svc: Service, index: int) -> abi.Svc:
    flags = sched_flag_bits(svc.sched_flags) | (abi.SVC_F_PERSISTENT if svc.persistent is not None else 0)
    if svc.reals and not any(real.weight for real in svc.reals.values()):
        flags |= abi.SVC_F_NO_WEIGHT  # (mh's table is built from last weights: its fallback walk would find none)
    return abi.Svc(index=index, sched=abi.SCHEDULER_IDS[svc.scheduler], flags=flags,
                   persist_timeout=svc.persistent or 0, netmask=ip_to_be(svc.netmask),
                   table_size=svc.mh_table_size or 0)


def same_settings(a: abi.Svc, b: abi.Svc) -> bool:
    return ((a.sched, a.flags, a.persist_timeout, a.netmask, a.table_size)
            == (b.sched, b.flags, b.persist_timeout, b.netmask, b.table_size))


def service_from(key: ServiceKey, raw: abi.Svc) -> Service:
    scheduler = abi.SCHEDULER_NAMES[raw.sched]
    persistent = raw.persist_timeout if raw.flags & abi.SVC_F_PERSISTENT else None
    netmask = be_to_ip(raw.netmask) if persistent is not None else HOST_MASK
    return Service(key, scheduler, persistent, netmask, sched_flag_names(scheduler, raw.flags & 7),
                   mh_table_size=raw.table_size or None)


def vip_filter_slot(vip: int) -> int:
    """The pre-filter slot of a VIP (the u32 of its network-order bytes), as the program computes it."""
    return (vip ^ (vip >> 16)) & (abi.VIP_FILTER_SIZE - 1)


def table_chunks(base: int, length: int) -> range:
    """The chunks of sched_table that a table of `length` slots at `base` takes."""
    return range(base // abi.TABLE_CHUNK, (base + length + abi.TABLE_CHUNK - 1) // abi.TABLE_CHUNK)


def set_table_chunks(words: ctypes.Array[ctypes.c_uint64], base: int, length: int, taken: bool) -> None:
    for chunk in table_chunks(base, length):
        (set_bit if taken else clear_bit)(words, chunk)


def chunk_map(words: ctypes.Array[ctypes.c_uint64]) -> bytearray:
    """The chunks of the pool as text, "1" taken and "0" free, so that a free run is a find()."""
    return bytearray("".join(format(word, "064b")[::-1] for word in words), "ascii")


def find_run(chunks: bytearray, count: int) -> int | None:
    """The first chunk of a free run of `count` chunks: small tables from the bottom of the pool, large ones
    (a quarter of IPVS's largest table and more) from the top, so that small ones do not split the large runs."""
    run = b"0" * count
    at = chunks.rfind(run) if count * abi.TABLE_CHUNK * 4 >= abi.TABLE_MAX else chunks.find(run)
    return None if at < 0 else at


def set_hop(entry: abi.RealEntry, hop: NextHop) -> None:
    entry.ifindex = hop.ifindex
    entry.dmac[:] = list(mac_bytes(hop.dmac))
    entry.smac[:] = list(mac_bytes(hop.smac))


def set_bit(words: ctypes.Array[ctypes.c_uint64], bit: int) -> None:
    words[bit >> 6] |= 1 << (bit & 63)


def clear_bit(words: ctypes.Array[ctypes.c_uint64], bit: int) -> None:
    words[bit >> 6] &= ~(1 << (bit & 63)) & 0xFFFFFFFFFFFFFFFF


def clear_bits(words: ctypes.Array[ctypes.c_uint64], size: int) -> Iterator[int]:
    """The positions of the clear bits, in order."""
    full = 0xFFFFFFFFFFFFFFFF
    for w, word in enumerate(words):
        if word == full:
            continue
        for b in range(64):
            if not word >> b & 1 and w * 64 + b < size:
                yield w * 64 + b
