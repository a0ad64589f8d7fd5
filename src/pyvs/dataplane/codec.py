"""The data plane's codec: model values to the shared structs' fields and back (byte order, addresses of both
families, MACs), the service entry's settings, and the bit sets of the slot usage. Pure: no map is read or written
here. IPv6 services live in maps of their own (services6, vips6, conns6, ...): `family_map` names them."""

from __future__ import annotations

import ctypes
import functools
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from pyvs.dataplane import abi
from pyvs.dataplane.neighbours import NextHop
from pyvs.mac import mac_bytes
from pyvs.model import (
    HOST_MASK,
    HOST_PREFIX6,
    TUN_CSUMS,
    TUN_TYPES,
    Forwarding,
    IPAddress,
    Protocol,
    Real,
    Service,
    ServiceKey,
    Tunnel,
    fwmark_key,
    sched_flag_bits,
    sched_flag_names,
)


@functools.lru_cache(maxsize=65536)
def ip_to_be(address: IPv4Address) -> int:
    return int.from_bytes(address.packed, "little")  # network order bytes read as a native u32


@functools.lru_cache(maxsize=65536)
def be_to_ip(value: int) -> IPv4Address:
    return IPv4Address(value.to_bytes(4, "little"))


def port_to_be(port: int) -> int:
    return socket.htons(port)


def addr6(address: IPv6Address) -> abi.Addr6:
    return abi.Addr6.from_buffer_copy(address.packed)


@functools.lru_cache(maxsize=65536)
def _ip6(raw: bytes) -> IPv6Address:
    return IPv6Address(raw)


def addr6_ip(raw: abi.Addr6) -> IPv6Address:
    return _ip6(bytes(raw))


@functools.lru_cache(maxsize=65536)
def fold_be(address: IPAddress) -> int:
    """An address as one u32 of network-order bytes read natively: IPv4 itself, IPv6 its four words xor-ed (IPVS's
    addr_fold). The program computes the same: the VIP pre-filter's input, and the rip field of an IPv6 real."""
    if isinstance(address, IPv4Address):
        return ip_to_be(address)
    words = int.from_bytes(address.packed, "little")
    return (words ^ words >> 32 ^ words >> 64 ^ words >> 96) & 0xFFFFFFFF


def family_map(name: str, family: int) -> str:
    """The map of a family: "services" -> "services6" for IPv6 (vips, conns, half_open, frags alike)."""
    return f"{name}6" if family == 6 else name


def svc_key(key: ServiceKey) -> abi.SvcKey | abi.SvcKey6:
    """A service's key in services/services6; a fwmark service's is (mark, port 0, protocol 0): no TCP, UDP or SCTP
    service has protocol 0, and the program looks a marked packet's service up by that key (bpf/fwmark.h)."""
    if key.is_fwmark:
        if key.family == 6:
            return abi.SvcKey6(vip=abi.Addr6(w=(key.fwmark, 0, 0, 0)), port=0, proto=0)
        return abi.SvcKey(vip=key.fwmark, port=0, proto=0)
    if isinstance(key.vip, IPv6Address):
        return abi.SvcKey6(vip=addr6(key.vip), port=port_to_be(key.port), proto=int(key.proto))
    return abi.SvcKey(vip=ip_to_be(key.vip), port=port_to_be(key.port), proto=int(key.proto))


def service_key(raw: abi.SvcKey | abi.SvcKey6) -> ServiceKey:
    if raw.proto == 0:
        return fwmark_key(raw.vip.w[0], 6) if isinstance(raw, abi.SvcKey6) else fwmark_key(raw.vip)
    vip = addr6_ip(raw.vip) if isinstance(raw, abi.SvcKey6) else be_to_ip(raw.vip)
    return ServiceKey(Protocol(raw.proto), vip, socket.ntohs(raw.port))


def vip_key(address: IPAddress) -> ctypes.c_uint32 | abi.Addr6:
    """A VIP's key in vips (IPv4) or vips6."""
    return addr6(address) if isinstance(address, IPv6Address) else ctypes.c_uint32(ip_to_be(address))


def conn_addresses(key: abi.ConnKey | abi.ConnKey6) -> tuple[IPAddress, IPAddress]:
    """(client, VIP) of a connection table's key."""
    if isinstance(key, abi.ConnKey6):
        return addr6_ip(key.saddr), addr6_ip(key.daddr)
    return be_to_ip(key.saddr), be_to_ip(key.daddr)


@dataclass
class RealSlot:
    """A slot of the reals map, what it holds, and the real's address (an IPv6 real's is in real_addrs6); a tunnel
    real's encapsulation (tunnels)."""
    slot: int
    entry: abi.RealEntry
    rip: IPAddress
    tunnel: abi.Tunnel | None = None
    limits: tuple[int, int] = (0, 0)  # (u_threshold, l_threshold), from real_limits


def tunnel_settings(tunnel: Tunnel) -> tuple[int, int, int]:
    """What of a tunnel the admin sets, as the tunnels map holds it: (type, port, checksum flags)."""
    return abi.TUN_TYPES[tunnel.type], port_to_be(tunnel.port), TUN_CSUMS.index(tunnel.csum)


def raw_tunnel_settings(raw: abi.Tunnel) -> tuple[int, int, int]:
    return raw.type, raw.port, raw.flags & (abi.TUN_F_CSUM | abi.TUN_F_REMCSUM)


def tunnel_value(real: Real, hop: NextHop) -> abi.Tunnel:
    """The tunnels entry of a tunnel real reached through `hop` (its source address, MTU, gateway)."""
    if not hop.saddr or ":" in hop.saddr:
        raise ValueError(f"real server {real.rip}: the director has no IPv4 source address toward it (its route "
                         "names none): the tunnel's outer header needs one")
    kind, port, flags = tunnel_settings(real.tunnel or Tunnel())
    return abi.Tunnel(saddr=ip_to_be(IPv4Address(hop.saddr)), daddr=ip_to_be(IPv4Address(real.rip)), port=port,
                      mtu=min(hop.mtu, 0xFFFF), type=kind, flags=flags | (abi.TUN_F_ROUTED if hop.gateway else 0))


def real_from(slot: RealSlot) -> Real:
    """The model's real of an active slot: address, port, weight, thresholds, OVERLOAD, forwarding and tunnel."""
    entry = slot.entry
    real = Real(slot.rip, socket.ntohs(entry.port), entry.weight, last_weight=entry.last_weight,
                u_threshold=slot.limits[0], l_threshold=slot.limits[1],
                overloaded=bool(entry.flags & abi.REAL_OVERLOAD))
    if entry.flags & abi.REAL_FWD_MASQ:
        real.forwarding = Forwarding.MASQ
    if entry.flags & abi.REAL_FWD_TUNNEL:
        real.forwarding = Forwarding.TUNNEL
        raw = slot.tunnel or abi.Tunnel()
        kind = TUN_TYPES[raw.type] if raw.type < len(TUN_TYPES) else "ipip"
        flags = raw.flags & (abi.TUN_F_CSUM | abi.TUN_F_REMCSUM)
        real.tunnel = Tunnel(kind, socket.ntohs(raw.port), TUN_CSUMS[flags if flags < len(TUN_CSUMS) else 0])
    return real


def real_entry(rip: IPAddress) -> abi.RealEntry:
    """A new active entry for a real at `rip`: an IPv6 one is flagged, its rip field the address folded."""
    return abi.RealEntry(rip=fold_be(rip), flags=abi.REAL_ACTIVE | (abi.REAL_IPV6 if rip.version == 6 else 0))


def svc_value(svc: Service, index: int) -> abi.Svc:
    flags = sched_flag_bits(svc.sched_flags) | (abi.SVC_F_PERSISTENT if svc.persistent is not None else 0)
    if svc.onepacket:
        flags |= abi.SVC_F_ONEPACKET
    if svc.key.is_fwmark:
        flags |= abi.SVC_F_FWMARK  # (the key says it too: for readers of a map dump)
    if svc.reals and not any(real.weight for real in svc.reals.values()):
        flags |= abi.SVC_F_NO_WEIGHT  # (mh's table is built from last weights: its fallback walk would find none)
    netmask = svc.netmask if isinstance(svc.netmask, int) else ip_to_be(svc.netmask)  # IPv6: a prefix length
    return abi.Svc(index=index, sched=abi.SCHEDULER_IDS[svc.scheduler], flags=flags,
                   persist_timeout=svc.persistent or 0, netmask=netmask, table_size=svc.mh_table_size or 0)


def same_settings(a: abi.Svc, b: abi.Svc) -> bool:
    return ((a.sched, a.flags, a.persist_timeout, a.netmask, a.table_size)
            == (b.sched, b.flags, b.persist_timeout, b.netmask, b.table_size))


def service_from(key: ServiceKey, raw: abi.Svc) -> Service:
    scheduler = abi.SCHEDULER_NAMES[raw.sched]
    persistent = raw.persist_timeout if raw.flags & abi.SVC_F_PERSISTENT else None
    netmask: IPv4Address | int
    if key.family == 6:
        netmask = raw.netmask if persistent is not None else HOST_PREFIX6
    else:
        netmask = be_to_ip(raw.netmask) if persistent is not None else HOST_MASK
    return Service(key, scheduler, persistent, netmask, sched_flag_names(scheduler, raw.flags & 7),
                   mh_table_size=raw.table_size or None, onepacket=bool(raw.flags & abi.SVC_F_ONEPACKET))


def decode_rates(est: abi.Est) -> tuple[int, int, int, int, int]:
    """(cps, inpps, outpps, inbps, outbps) from an estimator, rounded as ip_vs_read_estimator."""
    return ((est.cps + 0x1FF) >> 10, (est.inpps + 0x1FF) >> 10, (est.outpps + 0x1FF) >> 10,
            (est.inbps + 0xF) >> 5, (est.outbps + 0xF) >> 5)


def vip_filter_slot(vip: int) -> int:
    """The pre-filter slot of a VIP (fold_be of its address), as the program computes it."""
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
