"""The sync engine: a master reads the data plane's connection events and multicasts them as IPVS sync messages; a
backup joins the group and writes the connections it receives into its own tables. One process may run both (IPVS
allows a master and a backup at once: active/active peers each send and receive)."""

from __future__ import annotations

import ctypes
import logging
import select
import socket
import struct
import threading
import time
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import Any

from pyvs.dataplane import abi, libbpf
from pyvs.dataplane.dataplane import Dataplane
from pyvs.dataplane.synctable import SyncTable, event_addresses, set_sync, sync_events_fd
from pyvs.model import Protocol, ServiceKey, fwmark_key
from pyvs.sync.codec import (
    CONN_F_DROUTE,
    CONN_F_FWD_MASK,
    CONN_F_INACTIVE,
    CONN_F_MASQ,
    CONN_F_TEMPLATE,
    CONN_F_TUNNEL,
    DEFAULT_GROUP,
    DEFAULT_PORT,
    DEFAULT_TTL,
    IPPROTO_SCTP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    SyncConn,
    Verdict,
    batches,
    decode_message,
    encode_message,
)

log = logging.getLogger(__name__)

STATES = ("master", "backup")
SCTP_NONE = abi.STATES["SCTP_NONE"]
FLUSH_DELAY = 0.02  # seconds an event waits for others to share its message (IPVS: IPVS_SYNC_SEND_DELAY, 20 ms)
REFRESH_PERIOD = 120.0  # seconds between re-sends of the connections that saw packets since (below UDP's 300 s)
REFRESH_MARGIN_NS = 20_000_000  # the program stamps entries with the coarse clock of its last tick: a little behind
IP_PMTUDISC_DONT = 0
IP_MTU_DISCOVER = 10


class SyncError(Exception):
    """A sync daemon that cannot start: the message says why."""


@dataclass(frozen=True)
class SyncConfig:
    """One daemon's settings, as ipvsadm --start-daemon takes them (0 and "" mean the kernel's defaults)."""

    state: str
    mcast_interface: str = "eth0"
    syncid: int = 0
    maxlen: int = 0
    group: str = ""
    port: int = 0
    ttl: int = 0

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise SyncError(f"illegal sync daemon state '{self.state}' (master or backup)")
        if not 0 <= self.syncid <= 255:
            raise SyncError(f"illegal syncid {self.syncid} (0-255)")
        if self.group and not ip_address(self.group).is_multicast:
            raise SyncError(f"invalid mcast-group `{self.group}'")

    @property
    def group_address(self) -> IPv4Address | IPv6Address:
        return ip_address(self.group or DEFAULT_GROUP)

    @property
    def header_len(self) -> int:
        return 48 if isinstance(self.group_address, IPv6Address) else 28

    def effective(self, mtu: int) -> SyncConfig:
        """The settings the kernel's start_sync_thread makes of these on an interface of `mtu`: group, port and ttl
        filled in; maxlen clamped, or taken from the MTU (a master assumes 1500)."""
        hlen = self.header_len
        if self.maxlen:
            low = 1024 if self.state == "backup" else 1
            maxlen = min(max(self.maxlen, low), 65535 - hlen)
        else:
            maxlen = (min(max(mtu, 1500), 65535) if self.state == "backup" else 1500) - hlen
        return SyncConfig(self.state, self.mcast_interface, self.syncid, maxlen, str(self.group_address),
                          self.port or DEFAULT_PORT, self.ttl or DEFAULT_TTL)

    def describe(self) -> str:
        """The line ipvsadm -L --daemon prints (ipvsadm 1.31's list_daemon with the kernel's values)."""
        text = f"{self.state} sync daemon (mcast={self.mcast_interface}, syncid={self.syncid}"
        if self.maxlen:
            text += f", maxlen={self.maxlen}"
        if self.group:
            text += f", group={self.group}"
        if self.port:
            text += f", port={self.port}"
        if self.ttl:
            text += f", ttl={self.ttl}"
        return text + ")"


@dataclass
class SyncStats:
    """What a daemon did: the counters of `pyvs_sync_*` metrics."""

    messages_sent: int = 0
    conns_sent: int = 0
    send_errors: int = 0
    events: int = 0
    events_stale: int = 0  # events of a real whose slot changed hands before they were read
    conns_refreshed: int = 0  # live connections sent again, so that a backup's entries do not expire
    messages_received: int = 0
    conns_received: int = 0
    conns_applied: int = 0
    malformed: int = 0
    wrong_syncid: int = 0
    wrong_version: int = 0
    unknown_service: int = 0
    unknown_real: int = 0
    skipped: int = 0  # entries the protocol says to skip (unknown protocol, state, mandatory option)
    insert_failed: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("extra")
        return data


def interface_info(name: str) -> tuple[int, int, IPv4Address | None]:
    """(ifindex, mtu, first IPv4 address) of an interface of this namespace."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        links = ipr.link_lookup(ifname=name)
        if not links:
            raise SyncError(f"No such device: {name} (the mcast interface)")
        link = ipr.get_links(links[0])[0]
        addrs = ipr.get_addr(index=links[0], family=socket.AF_INET)
    first = IPv4Address(addrs[0].get_attr("IFA_ADDRESS")) if addrs else None
    return links[0], link.get_attr("IFLA_MTU") or 1500, first


def sender_socket(cfg: SyncConfig, ifindex: int, local: IPv4Address | None) -> socket.socket:
    """The master's socket, as make_send_sock: multicast out of the interface, no loop, the TTL, no DF, bound to
    the interface's address, connected to the group."""
    group = cfg.group_address
    if isinstance(group, IPv6Address):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, ifindex)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 0)
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, cfg.ttl)
        sock.connect((str(group), cfg.port, 0, ifindex))
        return sock
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, struct.pack("=4s4si", b"\0" * 4, b"\0" * 4, ifindex))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, cfg.ttl)
    sock.setsockopt(socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DONT)
    if local is not None:
        sock.bind((str(local), 0))
    sock.connect((str(group), cfg.port))
    return sock


def receiver_socket(cfg: SyncConfig, ifindex: int) -> socket.socket:
    """The backup's socket, as make_receive_sock: bound to the group and port on the interface, the group joined."""
    group = cfg.group_address
    family = socket.AF_INET6 if isinstance(group, IPv6Address) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, cfg.mcast_interface.encode())
    if family == socket.AF_INET6:
        sock.bind((str(group), cfg.port, 0, ifindex))
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP, group.packed + struct.pack("=I", ifindex))
    else:
        sock.bind((str(group), cfg.port))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP,
                        struct.pack("=4s4si", group.packed, b"\0" * 4, ifindex))
    sock.setblocking(False)
    return sock


def conn_of_event(ev: abi.SyncEvent, table: SyncTable) -> SyncConn | None:
    """The sync entry of one data plane event; None when its real's slot changed hands since."""
    real = table.real_of(ev.real, ev.gen)
    if real is None:
        return None
    caddr, vaddr = event_addresses(ev)
    template = bool(ev.flags & abi.CONN_F_TEMPLATE)
    timeouts = table.timeouts()
    state = ev.state if ev.state < len(timeouts) else abi.STATES["CLOSE"]
    real_flags = table.real_flags(ev.real)
    flags = CONN_F_MASQ if real_flags & abi.REAL_FWD_MASQ else \
        CONN_F_TUNNEL if real_flags & abi.REAL_FWD_TUNNEL else CONN_F_DROUTE
    if template:
        flags |= CONN_F_TEMPLATE
    elif state not in abi.ACTIVE_STATES:
        flags |= CONN_F_INACTIVE
    return SyncConn(ev.proto, caddr, socket.ntohs(ev.cport), vaddr, socket.ntohs(ev.vport), real[0], real[1],
                    0 if template else wire_state(ev.proto, state), flags, table.fwmark(ev.real),
                    ev.timeout or timeouts[state])


def wire_state(proto: int, state: int) -> int:
    """A connection's state as IPVS numbers it for its protocol: TCP's are pyvs's, UDP's is NORMAL (0), SCTP's
    count from IP_VS_SCTP_S_NONE (pyvs numbers them after TCP's and UDP's, in IPVS's order)."""
    if proto == IPPROTO_UDP:
        return 0
    return state - SCTP_NONE if proto == IPPROTO_SCTP else state


def local_state(proto: int, state: int) -> int:
    """The pyvs state of a received entry's state (wire_state's inverse)."""
    if proto == IPPROTO_UDP:
        return abi.STATES["UDP"]
    return state + SCTP_NONE if proto == IPPROTO_SCTP else state


def event_of_entry(key: abi.ConnKey | abi.ConnKey6, value: abi.Conn) -> abi.SyncEvent:
    """The event the program would write for a connection table's entry."""
    ev = abi.SyncEvent(cport=key.sport, vport=key.dport, proto=key.proto, state=value.state,
                       flags=value.flags & abi.CONN_F_TEMPLATE, real=value.real, gen=value.gen, timeout=value.timeout)
    if isinstance(key, abi.ConnKey6):
        ev.family = 6
        ev.caddr[:] = list(key.saddr.w)
        ev.vaddr[:] = list(key.daddr.w)
    else:
        ev.family = 4
        ev.caddr[0], ev.vaddr[0] = key.saddr, key.daddr
    return ev


def apply_conn(conn: SyncConn, table: SyncTable, stats: SyncStats) -> None:
    """Write one received entry into this director's tables (counted in `stats` when it cannot be)."""
    stats.conns_received += 1
    if conn.protocol not in (IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP) or \
            conn.flags & CONN_F_FWD_MASK not in (CONN_F_DROUTE, CONN_F_TUNNEL, CONN_F_MASQ):
        stats.unknown_service += 1  # a localnode or bypass entry: pyvs has no such services
        return
    if type(conn.caddr) is not type(conn.daddr):
        stats.unknown_real += 1
        return
    family = 6 if isinstance(conn.daddr, IPv6Address) else 4
    key = fwmark_key(conn.fwmark, family) if conn.fwmark else ServiceKey(Protocol(conn.protocol), conn.vaddr,
                                                                          conn.vport)
    where = table.place(key, conn.template, conn.daddr, conn.dport)
    if isinstance(where, str):
        setattr(stats, where, getattr(stats, where) + 1)
        return
    state = abi.STATES["NONE"] if conn.template else local_state(conn.protocol, conn.state)
    if table.write(conn.caddr, conn.cport, conn.vaddr, conn.vport, conn.protocol, state, conn.template,
                   conn.timeout, where):
        stats.conns_applied += 1
    else:
        stats.insert_failed += 1


class SyncEngine:
    """A master, a backup, or both, over one data plane. `run()` serves until `stop()`."""

    def __init__(self, dp: Dataplane, master: SyncConfig | None = None, backup: SyncConfig | None = None,
                 flush_delay: float = FLUSH_DELAY, refresh_period: float = REFRESH_PERIOD) -> None:
        if master is None and backup is None:
            raise SyncError("neither a master nor a backup to run")
        self.dp = dp
        self.table = SyncTable(dp)
        self.stats = SyncStats()
        self.flush_delay = flush_delay
        self.refresh_period = refresh_period
        self._refreshed_at = time.monotonic()
        self._refreshed_ns = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._stop = threading.Event()
        self.master = self.backup = None
        self._sender: socket.socket | None = None
        self._receiver: socket.socket | None = None
        self._ring: libbpf.RingBuffer | None = None
        self._pending: list[SyncConn] = []
        self._first_pending = 0.0
        try:
            if master is not None:
                ifindex, mtu, local = interface_info(master.mcast_interface)
                self.master = master.effective(mtu)
                self._sender = sender_socket(self.master, ifindex, local)
                self._ring = libbpf.RingBuffer(sync_events_fd(dp), self._on_event)
                self._ring.consume()  # events left by an earlier master are stale: dropped
                self._pending.clear()
                set_sync(dp, True)
            if backup is not None:
                ifindex, mtu, _ = interface_info(backup.mcast_interface)
                self.backup = backup.effective(mtu)
                self._receiver = receiver_socket(self.backup, ifindex)
        except OSError as exc:
            self.close()
            raise SyncError(str(exc)) from None
        except BaseException:
            self.close()
            raise

    # ---- master ----

    def _on_event(self, data: bytes) -> None:
        if self.master is None:
            return
        ev = abi.SyncEvent.from_buffer_copy(data.ljust(ctypes.sizeof(abi.SyncEvent), b"\0"))
        self.stats.events += 1
        conn = conn_of_event(ev, self.table)
        if conn is None:
            self.stats.events_stale += 1
            return
        if not self._pending:
            self._first_pending = time.monotonic()
        self._pending.append(conn)

    def flush(self, force: bool = False) -> None:
        """Send what is pending: messages that are full now, the rest once it has waited flush_delay (or `force`)."""
        if not self._pending or self.master is None or self._sender is None:
            return
        groups = batches(self._pending, self.master.maxlen)
        if not force and time.monotonic() - self._first_pending < self.flush_delay:
            groups, keep = groups[:-1], groups[-1]  # the last one may fill up still
        else:
            keep = []
        for group in groups:
            try:
                self._sender.send(encode_message(group, self.master.syncid))
                self.stats.messages_sent += 1
                self.stats.conns_sent += len(group)
            except OSError as exc:
                self.stats.send_errors += 1
                log.warning("sync: sending a message failed: %s", exc)
        self._pending = list(keep)

    def refresh(self) -> int:
        """Queue every connection (and template) that saw a packet since the last refresh: IPVS re-sends a
        connection every 50 packets (sync_period); pyvs, without a per-packet cost, every refresh_period. A
        backup's entry then outlives its timeout as long as the master's does. Returns how many were queued."""
        since, self._refreshed_ns = self._refreshed_ns - REFRESH_MARGIN_NS, time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        self._refreshed_at = time.monotonic()
        queued = 0
        for table in ("conns", "conns6"):
            for _, key, value in self.dp.table_entries(table):
                if value.last_seen < since:
                    continue
                conn = conn_of_event(event_of_entry(key, value), self.table)
                if conn is None:
                    continue
                if not self._pending:
                    self._first_pending = time.monotonic()
                self._pending.append(conn)
                queued += 1
        self.stats.conns_refreshed += queued
        return queued

    # ---- backup ----

    def receive(self, data: bytes) -> None:
        """Apply one received datagram."""
        if self.backup is None:
            return
        self.stats.messages_received += 1
        decoded = decode_message(data, self.backup.syncid)
        if decoded.verdict is Verdict.WRONG_SYNCID:
            self.stats.wrong_syncid += 1
            return
        if decoded.verdict is Verdict.WRONG_VERSION:
            self.stats.wrong_version += 1
            return
        if decoded.verdict is Verdict.MALFORMED:
            self.stats.malformed += 1
            log.debug("sync: malformed message: %s", decoded.problem)
        self.stats.skipped += decoded.skipped
        for conn in decoded.conns:
            apply_conn(conn, self.table, self.stats)

    def _drain(self) -> None:
        assert self._receiver is not None and self.backup is not None
        while True:
            try:
                data = self._receiver.recv(self.backup.maxlen)
            except BlockingIOError:
                return
            self.receive(data)

    # ---- the loop ----

    def step(self, timeout: float = 0.01) -> None:
        """One round: events read and sent, datagrams received and applied."""
        if self._ring is not None:
            wait = 0 if self._receiver is not None else int(timeout * 1000)
            self._ring.poll(wait)
            if self.refresh_period and time.monotonic() - self._refreshed_at >= self.refresh_period:
                self.refresh()
            self.flush()
        if self._receiver is not None:
            ready, _, _ = select.select([self._receiver], [], [], timeout)
            if ready:
                self._drain()

    def run(self, on_tick: Any = None, tick: float = 1.0) -> None:
        """Serve until stop(); `on_tick()` every `tick` seconds (the daemon writes its state there)."""
        last = time.monotonic()
        while not self._stop.is_set():
            self.step(0.01)
            if on_tick is not None and time.monotonic() - last >= tick:
                last = time.monotonic()
                on_tick()
        self.flush(force=True)

    def stop(self) -> None:
        self._stop.set()

    def close(self) -> None:
        if self._ring is not None:
            try:
                set_sync(self.dp, False)
            except OSError:
                pass
            self._ring.close()
            self._ring = None
        for sock in (self._sender, self._receiver):
            if sock is not None:
                sock.close()
        self._sender = self._receiver = None
