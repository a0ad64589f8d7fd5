"""The data plane's side of connection sync: the switch that makes the program write connection events
(PYVS_CFG_SYNC), the ring buffer they are read from, and entries written into the connection tables as the program
would have made them (a backup's received connections and templates)."""

from __future__ import annotations

import ctypes
import socket
import time
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address

from pyvs.dataplane import abi, libbpf
from pyvs.dataplane.base import Resolver
from pyvs.dataplane.codec import addr6, be_to_ip, ip_to_be
from pyvs.dataplane.dataplane import CLOCK_MONOTONIC_COARSE, Dataplane
from pyvs.dataplane.neighbours import NeighbourError, NextHop
from pyvs.mac import ZERO_MAC, mac_bytes
from pyvs.model import IPAddress, ServiceKey

NSEC = 1_000_000_000
MISS_REREAD = 1.0  # an entry of an unknown service or real re-reads the rules at most this often (a read is ~50 ms)


def set_sync(dp: Dataplane, on: bool) -> None:
    """Make the program write connection events into sync_events (a sync master reads them), or stop it."""
    dp._set_flag(abi.CFG_SYNC, on)


def sync_enabled(dp: Dataplane) -> bool:
    return bool(dp._config().flags & abi.CFG_SYNC)


def sync_events_fd(dp: Dataplane) -> int:
    return dp._fds["sync_events"]


def event_addresses(ev: abi.SyncEvent) -> tuple[IPAddress, IPAddress]:
    """(client, VIP) of an event."""
    if ev.family == 6:
        return IPv6Address(bytes(ev.caddr)), IPv6Address(bytes(ev.vaddr))
    return IPv4Address(bytes(ev.caddr)[:4]), IPv4Address(bytes(ev.vaddr)[:4])


def shard_index(key: abi.ConnKey | abi.ConnKey6, shards: int) -> int:
    """The shard the program's shard_of/shard_of6 picks for `key`."""
    def fold(value: abi.Addr6 | int) -> int:
        if isinstance(value, int):
            return value
        return value.w[0] ^ value.w[1] ^ value.w[2] ^ value.w[3]

    h = fold(key.saddr) ^ fold(key.daddr) ^ ((key.sport << 16) | key.dport) ^ key.proto ^ (key.pad[0] << 8)
    h &= 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x45D9F3B) & 0xFFFFFFFF
    h ^= h >> 16
    return h & (shards - 1)


@dataclass(frozen=True)
class RealRef:
    slot: int
    gen: int
    svc_index: int


@dataclass
class Placement:
    """Where a synced entry goes: its service's slot and settings, its real's slot."""

    svc_index: int
    svc_gen: int
    persistent: bool
    persist_timeout: int
    real: RealRef


class SyncTable:
    """Reads the rules once in a while to place received entries: (service, real address and port) -> slots.
    `client_resolver` finds the way back to a NAT connection's client (default: the data plane's resolver of routed
    next hops, the kernel's route and neighbour entry)."""

    def __init__(self, dp: Dataplane, refresh: float = 1.0, client_resolver: Resolver | None = None) -> None:
        self.dp = dp
        self.refresh = refresh
        self._client_resolver = client_resolver or dp._tunnel_resolver
        self._clients: dict[IPAddress, NextHop | None] = {}  # next hops toward clients, forgotten at each read
        self._read_at = -1e9
        self._services: dict[ServiceKey, abi.Svc] = {}
        self._reals: dict[tuple[int, IPAddress, int], RealRef] = {}
        self._slots: dict[int, tuple[int, IPAddress, int]] = {}
        self._real_flags: dict[int, int] = {}  # slot -> the real's flags (its forwarding method)
        self._fwmarks: dict[int, int] = {}  # slot -> the firewall mark of its service (0: an address service)
        self._timeouts: list[int] = []

    def _read(self) -> None:
        self._services = self.dp._services()
        marks = {svc.index: key.fwmark for key, svc in self._services.items() if key.fwmark}
        self._reals = {}
        self._slots = {}
        self._real_flags = {}
        self._fwmarks = {}
        for real in self.dp._real_slots():
            e = real.entry
            if e.flags & abi.REAL_ACTIVE:
                port = socket.ntohs(e.port)
                self._reals[(e.svc_index, real.rip, port)] = RealRef(real.slot, e.gen, e.svc_index)
                self._slots[real.slot] = (e.gen, real.rip, port)
                self._real_flags[real.slot] = e.flags
                self._fwmarks[real.slot] = marks.get(e.svc_index, 0)
        self._timeouts = list(self.dp._config().timeouts)
        self._clients = {}
        self._read_at = time.monotonic()

    def _fresh(self, force: bool = False) -> None:
        if force or time.monotonic() - self._read_at >= self.refresh:
            self._read()

    def timeouts(self) -> list[int]:
        self._fresh()
        return self._timeouts

    def real_of(self, slot: int, gen: int) -> tuple[IPAddress, int] | None:
        """The address and port of the real in `slot` while it still has `gen` (a master's event)."""
        self._fresh()
        found = self._slots.get(slot)
        if found is None or found[0] != gen:
            self._read()
            found = self._slots.get(slot)
        return None if found is None or found[0] != gen else (found[1], found[2])

    def real_flags(self, slot: int) -> int:
        """The flags of the real in `slot` (its forwarding method among them), as real_of last read it."""
        return self._real_flags.get(slot, 0)

    def fwmark(self, slot: int) -> int:
        """The firewall mark of the service of the real in `slot` (0: an address service), as real_of read it."""
        return self._fwmarks.get(slot, 0)

    def service(self, key: ServiceKey) -> abi.Svc | None:
        self._fresh()
        svc = self._services.get(key)
        if svc is None and self._read_at < time.monotonic() - MISS_REREAD:
            self._read()
            svc = self._services.get(key)
        return svc

    def place(self, key: ServiceKey, template: bool, rip: IPAddress, rport: int) -> Placement | str:
        """Where an entry of service `key` (an exact port; else the VIP's service on every port) to real rip:rport
        goes; "unknown_service" or "unknown_real" when this director has no such one."""
        svc = self.service(key)
        if svc is None and not template and key.port:
            svc = self.service(ServiceKey(key.proto, key.vip, 0))
        if svc is None:
            return "unknown_service"
        real = self._reals.get((svc.index, rip, rport))
        if real is None:
            self._fresh(force=time.monotonic() - self._read_at > MISS_REREAD)
            real = self._reals.get((svc.index, rip, rport))
        if real is None:
            return "unknown_real"
        gen = ctypes.c_uint32()
        libbpf.map_lookup(self.dp._fds["svc_gens"], ctypes.c_uint32(svc.index), gen)
        return Placement(svc.index, gen.value, bool(svc.flags & abi.SVC_F_PERSISTENT), svc.persist_timeout, real)

    def _write_nat_reply(self, key: abi.ConnKey, slot: int) -> bool:
        """The reply entry of a NAT connection `key` given to the real in `slot`, as the program's nat_remember
        makes it, with the way back to the client from this director's routes (the program learns it from the
        client's first packet, which a backup never saw). False when the client cannot be reached."""
        client = be_to_ip(key.saddr)
        if client not in self._clients:  # (a failure is kept too: resolving waits up to a second)
            try:
                found: NextHop | None = self._client_resolver(client)
            except NeighbourError:
                found = None
            self._clients[client] = found if found is not None and found.dmac != ZERO_MAC else None
        hop = self._clients[client]
        if hop is None:
            return False
        entry = abi.RealEntry()
        if not libbpf.map_lookup(self.dp._fds["reals"], ctypes.c_uint32(slot), entry):
            return False
        rkey = abi.ConnKey(saddr=entry.rip, daddr=key.saddr, sport=entry.port or key.dport, dport=key.sport,
                           proto=key.proto)
        reply = abi.NatReply(conn=key, ifindex=hop.ifindex)
        reply.dmac[:] = list(mac_bytes(hop.dmac))
        reply.smac[:] = list(mac_bytes(hop.smac))
        try:
            libbpf.map_update(self.dp._fds["nat_replies"], rkey, reply)
        except OSError:
            return False
        return True

    def write(self, caddr: IPAddress, cport: int, vaddr: IPAddress, vport: int, proto: int, state: int,
              template: bool, timeout: int, where: Placement) -> bool:
        """Write one entry as the program makes it (a template, or a connection in `state` of the connection
        table); an entry of another real is replaced, one of the same real takes the state. `timeout` (seconds,
        0: its state's) is what is left of it. Returns False when the table refused it."""
        v6 = isinstance(caddr, IPv6Address)
        key: abi.ConnKey | abi.ConnKey6
        if v6:
            key = abi.ConnKey6(saddr=addr6(caddr), daddr=addr6(vaddr))  # type: ignore[arg-type]
        else:
            key = abi.ConnKey(saddr=ip_to_be(caddr), daddr=ip_to_be(vaddr))
        key.sport, key.dport, key.proto = socket.htons(cport), socket.htons(vport), proto
        if template:
            key.pad[0] = abi.CONN_F_TEMPLATE
        dp = self.dp
        shard = shard_index(key, dp.conn_shards)
        fd = dp._shard_fd("conns6" if v6 else "conns", shard)
        if fd is None:
            return False
        now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)
        parity = dp.sweep_stats().parity
        value = abi.Conn(last_seen=now, real=where.real.slot, gen=where.real.gen, svc_index=where.svc_index,
                         svc_gen=where.svc_gen, state=state, parity=parity)
        masq = not template and bool(self.real_flags(where.real.slot) & abi.REAL_FWD_MASQ)  # (IPv4 only)
        if masq and (not isinstance(key, abi.ConnKey) or not self._write_nat_reply(key, where.real.slot)):
            return False
        timeouts = self.timeouts()
        if template:
            value.flags = abi.CONN_F_TEMPLATE
            value.timeout = timeout or where.persist_timeout
        else:
            value.counted = 1 if state in abi.ACTIVE_STATES else 2  # PYVS_COUNTED_ACTIVE / INACTIVE
            value.flags = (abi.CONN_F_PERSISTED if where.persistent else 0) | (abi.CONN_F_MASQ if masq else 0)
            own = timeouts[state] if state < len(timeouts) else 0
            if timeout and timeout < own:
                value.last_seen = now - (own - timeout) * NSEC  # expires when the master's entry would
            elif timeout > own:
                value.timeout = timeout
        old = abi.Conn()
        if libbpf.map_lookup(fd, key, old) and old.counted and old.real == value.real and old.gen == value.gen:
            _add_count(dp, old.real, old.parity, old.counted, -1)
        try:
            libbpf.map_update(fd, key, value)
        except OSError:
            return False
        if value.counted:
            _add_count(dp, value.real, parity, value.counted, 1)
        if not template:  # the handshake's half-open entry, if this director saw the SYN
            half = dp._shard_fd("half_open6" if v6 else "half_open", shard)
            if half is not None:
                libbpf.map_delete(half, key)
        return True


def _add_count(dp: Dataplane, slot: int, parity: int, counted: int, delta: int) -> None:
    """real_conns[slot] += delta in `parity` (not atomic with the program's updates: what a race loses, the sweeper's
    recount restores within passes)."""
    counts = abi.RealConns()
    fd = dp._fds["real_conns"]
    libbpf.map_lookup(fd, ctypes.c_uint32(slot), counts)
    if counted == 1:
        counts.active[parity & 3] += delta
    else:
        counts.inactive[parity & 3] += delta
    libbpf.map_update(fd, ctypes.c_uint32(slot), counts)
