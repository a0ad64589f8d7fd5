"""The Dataplane API: the only code that reads and writes the BPF maps.

Rules, counters and connections live in maps pinned under a per-director bpffs
directory, so pyvsadm works without a daemon and forwarding goes on with no Python
running. A change is atomic per service: a service's new scheduler table is written
into the half not in use, then one update of the service entry switches to it.
The planning of a change is in plan.py, the struct codec in codec.py, the pins and
programs' lifecycle (open_dataplane, ...) in lifecycle.py.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import logging
import mmap
import os
import socket
import time
from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from pyvs.dataplane import abi, fwmark, libbpf
from pyvs.dataplane.base import (
    FWMARK_PROGRAM,
    PROGRAM_NAME,
    PYVS_PROGRAMS,
    DataplaneError,
    Resolver,
    install_calls,
    start_sweeper,
)
from pyvs.dataplane.build import object_path
from pyvs.dataplane.codec import (
    RealSlot,
    addr6,
    addr6_ip,
    be_to_ip,
    clear_bits,
    conn_addresses,
    decode_rates,
    family_map,
    fold_be,
    real_from,
    service_from,
    service_key,
    set_bit,
    set_hop,
    set_table_chunks,
    svc_key,
    svc_value,
    table_chunks,
    vip_filter_slot,
    vip_key,
)
from pyvs.dataplane.neighbours import NeighbourError, NextHop, interface_index, resolve, resolve_tunnel
from pyvs.dataplane.pinmeta import MIGRATE_HINT
from pyvs.dataplane.plan import Plan
from pyvs.mac import ZERO_MAC, mac_bytes, mac_text
from pyvs.model import (
    Connection,
    Counters,
    Forwarding,
    IPAddress,
    Protocol,
    Rates,
    RealKey,
    Rules,
    Service,
    ServiceKey,
    Timeouts,
    address_order,
)

log = logging.getLogger(__name__)

CLOCK_MONOTONIC_COARSE = 6  # <linux/time.h>; the time module does not name it
CONN_TABLE_WARN_SHARE = 0.8  # a connection table this full of live entries is reported as nearly full


class Dataplane:
    """One director's data plane, reached through its pinned maps."""

    def __init__(self, pin_dir: Path, fds: dict[str, int], resolver: Resolver = resolve,
                 tunnel_resolver: Resolver | None = None):
        """`resolver` finds a real's next hop on the segment; `tunnel_resolver` a tunnel real's, which may be a
        gateway (default: the kernel's routes for `resolve`, else `resolver` itself, as tests give)."""
        self.pin_dir = pin_dir
        self._fds = fds
        self._resolver = resolver
        self._tunnel_resolver = tunnel_resolver or (resolve_tunnel if resolver is resolve else resolver)
        self._ncpus = libbpf.num_possible_cpus()
        self._shard_fds: dict[tuple[str, int], int] = {}
        self.conn_shards = self._config().conn_shards
        self.conn_table_size = self.conn_shards * self._shard_size("conns")
        self.half_open_size = self.conn_shards * self._shard_size("half_open")
        self._program: libbpf.BpfObject | None = None
        self._lock_depth = 0

    # ---- lifetime -------------------------------------------------------------------------------

    def close(self) -> None:
        if self._program:
            self._program.close()
            self._program = None
        for fd in (*self._fds.values(), *self._shard_fds.values()):
            os.close(fd)
        self._fds = {}
        self._shard_fds = {}

    def __enter__(self) -> Dataplane:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def program(self) -> libbpf.BpfObject:
        """The XDP program loaded against this data plane's maps."""
        if self._program is None:
            self._program = libbpf.BpfObject(str(object_path("xdp")), str(self.pin_dir))
            install_calls(self._program)
        return self._program

    def program_fd(self) -> int:
        return self.program().prog_fd(PROGRAM_NAME)

    def _shard_fd(self, table: str, index: int) -> int | None:
        """The fd of shard `index` of "conns" or "half_open" (None when the shard does not exist)."""
        fd = self._shard_fds.get((table, index))
        if fd is None:
            map_id = ctypes.c_uint32()
            if not libbpf.map_lookup(self._fds[table], ctypes.c_uint32(index), map_id):
                return None
            fd = self._shard_fds[(table, index)] = libbpf.map_fd_by_id(map_id.value)
        return fd

    def _shard_size(self, table: str) -> int:
        fd = self._shard_fd(table, 0) if self.conn_shards else None
        return libbpf.map_info(fd).max_entries if fd is not None else 0

    def table_entries(self, table: str) -> Iterator[tuple[int, abi.ConnKey | abi.ConnKey6, abi.Conn]]:
        """Every entry of a sharded table (conns, half_open, conns6, half_open6; expired ones not swept yet
        included), with its shard's fd."""
        if table not in self._fds:
            return  # a data plane made before IPv6 (migrate reads it)
        size = self._shard_size(table)
        for index in range(self.conn_shards):
            fd = self._shard_fd(table, index)
            if fd is None:
                continue
            keys, values, count = libbpf.map_lookup_batch(fd, abi.CONN_TABLES[table], abi.Conn, size)
            for i in range(count):
                yield fd, keys[i], values[i]

    def attach(self, ifname: str, mode: str = "native", force: bool = False) -> None:
        """Attach the XDP program to `ifname` ("native" driver mode or "generic" skb mode). An XDP program that is
        not pyvs's is never replaced unless `force`: chain programs with a dispatcher instead (README)."""
        flags = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}.get(mode)
        if flags is None:
            raise DataplaneError(f"unknown XDP mode '{mode}' (native or generic)")
        try:
            found = self.xdp_program(ifname)
        except NeighbourError as exc:
            raise DataplaneError(str(exc)) from None
        if found is not None and found[2] not in PYVS_PROGRAMS and not force:
            raise DataplaneError(
                f"{ifname} already runs the XDP program {found[2] or '(unnamed)'} (id {found[1]}, {found[0]}), which "
                "is not pyvs's: pyvs does not replace it (chain both with libxdp's dispatcher, see README, or "
                "use --force to replace it)")
        try:
            start_sweeper(self.program())
            libbpf.xdp_attach(interface_index(ifname), self.program_fd(), flags)
        except (libbpf.BpfError, NeighbourError) as exc:
            raise DataplaneError(f"cannot attach XDP to {ifname} in {mode} mode: {exc}") from None
        try:  # firewall-mark services: pyvs_fwm at the interface's tcx egress, and nft's rule for it
            fwmark.attach(interface_index(ifname), self.program().prog_fd(FWMARK_PROGRAM))
        except libbpf.BpfError as exc:  # tcx is Linux 6.6: XDP forwards all the rest without it
            log.warning("%s: pyvs_fwm not attached at tcx egress (%s): firewall-mark services are not forwarded "
                        "there (tcx needs Linux 6.6)", ifname, exc)
            return
        marks = self.fwmarks()
        if marks:
            fwmark.sync(marks)

    @staticmethod
    def xdp_mode(ifname: str) -> tuple[str, int] | None:
        """("native" or "generic", program id) of the XDP program on `ifname`, None when there is none."""
        ifindex = interface_index(ifname)
        for mode, flags in (("native", libbpf.XDP_FLAGS_DRV_MODE), ("generic", libbpf.XDP_FLAGS_SKB_MODE)):
            prog_id = libbpf.xdp_query_id(ifindex, flags)
            if prog_id:
                return mode, prog_id
        return None

    def serves(self, prog_id: int) -> bool:
        """Whether the loaded program `prog_id` works on this data plane's maps (a pyvs program left attached
        after its pins were lost or recreated does not: rules written here never reach it)."""
        return libbpf.map_info(self._fds["services"]).id in libbpf.prog_map_ids(prog_id)

    @staticmethod
    def xdp_program(ifname: str) -> tuple[str, int, str] | None:
        """(mode, program id, program name) of the XDP program on `ifname`, None when there is none."""
        found = Dataplane.xdp_mode(ifname)
        return None if found is None else (*found, libbpf.prog_name(found[1]))

    @staticmethod
    def detach(ifname: str, force: bool = False) -> str | None:
        """Remove pyvs's XDP program from `ifname` (any program with `force`); another program stays, and its
        name is returned."""
        ifindex = interface_index(ifname)
        for flags in (libbpf.XDP_FLAGS_DRV_MODE, libbpf.XDP_FLAGS_SKB_MODE):
            prog_id = libbpf.xdp_query_id(ifindex, flags)
            if not prog_id:
                continue
            name = libbpf.prog_name(prog_id)
            if name not in PYVS_PROGRAMS and not force:
                log.warning("%s runs the XDP program %s (id %d), not pyvs's: left attached", ifname, name, prog_id)
                return name or "(unnamed)"
            libbpf.xdp_detach(ifindex, flags)
        if fwmark.attached_ids(ifindex):
            fwmark.detach(ifindex)
            fwmark.sync()
        return None

    def test_run(self, frame: bytes, repeat: int = 1) -> libbpf.TestRunResult:
        """Run the XDP program on one frame (BPF_PROG_TEST_RUN) against the live maps."""
        return libbpf.prog_test_run(self.program_fd(), frame, repeat)

    def test_run_fwm(self, frame: bytes, mark: int) -> libbpf.TestRunResult:
        """Run the fwmark program (pyvs_fwm, tc egress) on one frame carrying netfilter mark `mark`."""
        return libbpf.prog_test_run_skb(self.program().prog_fd(FWMARK_PROGRAM), frame, mark)

    def _check_shards(self) -> None:
        """The connection tables' shards hold this version's keys and values (they are made by Python, not the
        object, so the pin check cannot see them)."""
        for table, key in abi.CONN_TABLES.items():
            want = (ctypes.sizeof(key), ctypes.sizeof(abi.Conn))
            fd = self._shard_fd(table, 0) if self.conn_shards else None
            if fd is None:
                raise DataplaneError(f"the data plane at {self.pin_dir} has no {table} table: {MIGRATE_HINT}")
            info = libbpf.map_info(fd)
            if (info.key_size, info.value_size) != want:
                raise DataplaneError(f"the data plane pinned at {self.pin_dir} was made by another version of pyvs "
                                     f"({table}: key/value {info.key_size}/{info.value_size}, expected "
                                     f"{want[0]}/{want[1]}): {MIGRATE_HINT}")

    def _default_config(self) -> None:
        """Write the default timeouts and pass length where the config holds none (a data plane whose creation
        was cut short, or made by a version that lacked a state): an entry with a zero timeout expires at once."""
        if not abi.fill_config_defaults(self._config()):
            return
        with self._writing():
            cfg = self._config()
            abi.fill_config_defaults(cfg)
            libbpf.map_update(self._fds["config"], ctypes.c_uint32(0), cfg)
            log.warning("data plane at %s: default timeouts written where none were set", self.pin_dir)

    # ---- reading --------------------------------------------------------------------------------

    def _services(self) -> dict[ServiceKey, abi.Svc]:
        """Every service, IPv4 (services) and IPv6 (services6)."""
        result = {}
        for name, key_type in (("services", abi.SvcKey), ("services6", abi.SvcKey6)):
            fd = self._fds.get(name)
            if fd is None:
                continue  # a data plane made before IPv6 (migrate reads it)
            for key in libbpf.map_keys(fd, key_type):
                value = abi.Svc()
                if libbpf.map_lookup(fd, key, value):
                    result[service_key(key)] = value
        return result

    def _services_fd(self, key: ServiceKey) -> int:
        return self._fds[family_map("services", key.family)]

    def has_ipv6_services(self) -> bool:
        fd = self._fds.get("services6")
        return fd is not None and bool(libbpf.map_keys(fd, abi.SvcKey6))

    def _rip(self, slot: int, entry: abi.RealEntry) -> IPAddress:
        """A real's address: the entry's own for IPv4, real_addrs6's for IPv6 (:: when it has none)."""
        if not entry.flags & abi.REAL_IPV6:
            return be_to_ip(entry.rip)
        raw = abi.Addr6()
        fd = self._fds.get("real_addrs6")
        if fd is not None:
            libbpf.map_lookup(fd, ctypes.c_uint32(slot), raw)
        return addr6_ip(raw)

    def _real_slots(self) -> list[RealSlot]:
        """Slots ever used (active, or with a generation to keep)."""
        keys, values, count = libbpf.map_lookup_batch(self._fds["reals"], ctypes.c_uint32, abi.RealEntry,
                                                      abi.MAX_REALS)
        words = memoryview(values).cast("B").cast("I")
        stride = ctypes.sizeof(abi.RealEntry) // 4
        flags_at, gen_at = abi.RealEntry.flags.offset // 4, abi.RealEntry.gen.offset // 4
        used = [i for i, (f, g) in enumerate(zip(words[flags_at::stride], words[gen_at::stride], strict=True))
                if (f or g) and i < count]
        limits = self._all_limits()
        return [self._slot(keys[i], values[i], limits.get(keys[i], (0, 0))) for i in used]

    def _slot(self, slot: int, entry: abi.RealEntry, limits: tuple[int, int] | None = None) -> RealSlot:
        """A slot with its address, its thresholds and, for a tunnel real, its tunnels entry."""
        tunnel = None
        if entry.flags & abi.REAL_FWD_TUNNEL:
            tunnel = abi.Tunnel()
            libbpf.map_lookup(self._fds["tunnels"], ctypes.c_uint32(slot), tunnel)
        return RealSlot(slot, entry, self._rip(slot, entry), tunnel, self._limits(slot) if limits is None else limits)

    def _all_limits(self) -> dict[int, tuple[int, int]]:
        """Every real slot's thresholds that are not 0 (real_limits, in one batch)."""
        fd = self._fds.get("real_limits")
        if fd is None:
            return {}  # a data plane made before thresholds (migrate reads it)
        keys, values, count = libbpf.map_lookup_batch(fd, ctypes.c_uint32, abi.RealLimits, abi.MAX_REALS)
        words = memoryview(values).cast("B").cast("I")[:2 * count]
        return {keys[i]: (words[2 * i], words[2 * i + 1]) for i in range(count) if words[2 * i] or words[2 * i + 1]}

    def _limits(self, slot: int) -> tuple[int, int]:
        fd = self._fds.get("real_limits")
        value = abi.RealLimits()
        if fd is not None:
            libbpf.map_lookup(fd, ctypes.c_uint32(slot), value)
        return value.u_threshold, value.l_threshold

    def read_rules(self) -> Rules:
        services = self._services()
        by_index = {svc.index: key for key, svc in services.items()}
        rules = Rules({key: service_from(key, svc) for key, svc in services.items()})
        for real in self._real_slots():
            entry = real.entry
            key = by_index.get(entry.svc_index)
            if entry.flags & abi.REAL_ACTIVE and key is not None:
                item = real_from(real)
                rules.services[key].reals[item.key] = item
        return rules

    def read_service(self, key: ServiceKey) -> Service | None:
        """One service with its reals, read through the service's slot index (not every real)."""
        raw = abi.Svc()
        if not libbpf.map_lookup(self._services_fd(key), svc_key(key), raw):
            return None
        svc = service_from(key, raw)
        for real in self._service_slots(raw.index):
            entry = real.entry
            if entry.flags & abi.REAL_ACTIVE:
                item = real_from(real)
                svc.reals[item.key] = item
        return svc

    @contextmanager
    def _table_slots(self, base: int, length: int) -> Iterator[memoryview]:
        """Slots base .. base + length of sched_table as u32 memory shared with the program (the map is
        BPF_F_MMAPABLE; an array map keeps each value in 8 bytes). Only their pages are mapped, and only meanwhile:
        the kernel maps every page of a mapping at once, and the whole pool would add 64 MiB to the RSS."""
        start = base * 8 // mmap.PAGESIZE * mmap.PAGESIZE
        with mmap.mmap(self._fds["sched_table"], (base + length) * 8 - start, mmap.MAP_SHARED,
                       mmap.PROT_READ | mmap.PROT_WRITE, offset=start) as pages, \
                memoryview(pages) as raw, raw.cast("I") as words:
            first = (base * 8 - start) // 4
            with words[first:first + 2 * length:2] as slots:
                yield slots

    def read_table(self, key: ServiceKey) -> list[RealKey | None]:
        """A service's live scheduler table, slot by slot, as its reals' (address, port); None for a slot that
        names no real of the service. Real slots differ from one director to another, this does not: directors
        holding the same rules hold the same tables."""
        raw = abi.Svc()
        if not libbpf.map_lookup(self._services_fd(key), svc_key(key), raw):
            raise DataplaneError("No such service")
        if not raw.table_len:
            return []
        with self._table_slots(raw.table_base, raw.table_len) as slots:
            values = slots.tolist()
        reals = {r.slot: (r.rip, socket.ntohs(r.entry.port))
                 for r in self._service_slots(raw.index) if r.entry.flags & abi.REAL_ACTIVE}
        return [reals.get(slot) for slot in values]

    def fingerprint(self) -> str:
        """One hash of the rules (every service's settings, its reals' weights and last weights) and of the
        scheduler tables as (address, port) per slot: directors that agree on both show the same one. Reads every
        table (at 1000 services, well under a second): for `pyvs director status` and `pyvs doctor`, not metrics."""
        digest = hashlib.sha256()
        for svc in self.read_rules().sorted_services():
            digest.update(f"{svc.key.proto.label} {svc.key} {svc.scheduler} {','.join(svc.sched_flags)} "
                          f"{svc.persistent} {svc.netmask} {svc.mh_table_size}\n".encode())
            for real in svc.sorted_reals():
                method = "" if real.forwarding is Forwarding.ROUTE else f" {real.forwarding.option}"
                digest.update(f" {real} {real.weight} {real.last_weight}{method}\n".encode())
            digest.update(" ".join(str(r and f"{r[0]}:{r[1]}") for r in self.read_table(svc.key)).encode() + b"\n")
        return digest.hexdigest()[:16]

    def _service_slots(self, index: int) -> list[RealSlot]:
        """The real slots of one service by its index; inactive ones (a change under way) included."""
        listed = abi.SvcReals()
        if not libbpf.map_lookup(self._fds["svc_reals"], ctypes.c_uint32(index), listed):
            return []
        slots = listed.slots[:listed.count]  # sorted, and mostly in runs: a run is read in one batch
        result = []
        start = 0
        while start < len(slots):
            end = start + 1
            while end < len(slots) and slots[end] == slots[end - 1] + 1:
                end += 1
            if end - start > 2:
                after = ctypes.c_uint32(slots[start] - 1) if slots[start] else None
                keys, values, count = libbpf.map_lookup_batch(self._fds["reals"], ctypes.c_uint32, abi.RealEntry,
                                                              end - start, after)
                entries = [(keys[i], values[i]) for i in range(count)]
            else:
                entries = [(slot, self._read_entry(slot)) for slot in slots[start:end]]
            result += [self._slot(slot, entry) for slot, entry in entries if entry.svc_index == index]
            start = end
        return result

    def index_problems(self) -> list[str]:
        """Where the control plane's index (svc_reals, slot_usage) disagrees with the maps the program
        reads; empty when in step. A whole apply() repairs the usage bits."""
        problems = []
        services = self._services()
        active: dict[int, set[int]] = {}
        for real in self._real_slots():
            if real.entry.flags & abi.REAL_ACTIVE:
                active.setdefault(real.entry.svc_index, set()).add(real.slot)
        usage = abi.SlotUsage()
        libbpf.map_lookup(self._fds["slot_usage"], ctypes.c_uint32(0), usage)
        indexes = {svc.index for svc in services.values()}
        marked = set(range(abi.MAX_SERVICES)) - set(clear_bits(usage.services, abi.MAX_SERVICES))
        if marked != indexes:
            problems.append(f"service slots marked taken {sorted(marked)}, in use {sorted(indexes)}")
        used = set().union(*active.values()) if active else set()
        marked = set(range(abi.MAX_REALS)) - set(clear_bits(usage.reals, abi.MAX_REALS))
        if marked != used:
            problems.append(f"real slots marked taken but free {sorted(marked - used)[:10]}, "
                            f"in use but not marked {sorted(used - marked)[:10]}")
        owner: dict[int, ServiceKey] = {}
        for key, svc in sorted(services.items()):
            for chunk in table_chunks(svc.table_base, svc.table_len):
                if chunk in owner:
                    problems.append(f"services {owner[chunk]} and {key} share chunk {chunk} of sched_table")
                owner[chunk] = key
        marked = set(range(abi.TABLE_CHUNKS)) - set(clear_bits(usage.table_chunks, abi.TABLE_CHUNKS))
        if marked != set(owner):
            problems.append(f"table chunks marked taken but free {sorted(marked - set(owner))[:10]}, "
                            f"in use but not marked {sorted(set(owner) - marked)[:10]}")
        listed_indexes = {k.value for k in libbpf.map_keys(self._fds["svc_reals"], ctypes.c_uint32)}
        for key, svc in sorted(services.items()):
            listed = {r.slot for r in self._service_slots(svc.index)}
            if listed != active.get(svc.index, set()):
                problems.append(f"service {key}: slots listed {sorted(listed)}, "
                                f"active {sorted(active.get(svc.index, set()))}")
        for index in sorted(listed_indexes - indexes):
            problems.append(f"real slots listed for service slot {index}, which holds no service")
        return problems

    def _read_entry(self, slot: int) -> abi.RealEntry:
        entry = abi.RealEntry()
        libbpf.map_lookup(self._fds["reals"], ctypes.c_uint32(slot), entry)
        return entry

    def read_timeouts(self) -> Timeouts:
        cfg = self._config()
        states = abi.STATES
        return Timeouts(cfg.timeouts[states["ESTABLISHED"]], cfg.timeouts[states["FIN_WAIT"]],
                        cfg.timeouts[states["UDP"]])

    def set_timeouts(self, timeouts: Timeouts) -> None:
        """Set the tcp, tcpfin and udp timeouts (seconds); 0 leaves one unchanged, as ipvsadm --set."""
        changes = (("ESTABLISHED", timeouts.tcp), ("FIN_WAIT", timeouts.tcpfin), ("UDP", timeouts.udp))
        for _, value in changes:
            if value < 0:
                raise DataplaneError(f"timeout {value} is negative")
        with self._writing():
            cfg = self._config()
            for state, value in changes:
                if value:
                    cfg.timeouts[abi.STATES[state]] = value
            libbpf.map_update(self._fds["config"], ctypes.c_uint32(0), cfg)

    def set_state_timeout(self, state: str, seconds: int) -> None:
        """The timeout of one connection state by IPVS's name (SYN_RECV, CLOSE, ...); --set covers three only."""
        if state not in abi.STATES:
            raise DataplaneError(f"no connection state {state!r} (one of {', '.join(abi.STATES)})")
        if not 1 <= seconds <= 2**31 - 1:
            raise DataplaneError(f"timeout {seconds} out of range (1-{2**31 - 1} s)")
        with self._writing():
            cfg = self._config()
            cfg.timeouts[abi.STATES[state]] = seconds
            libbpf.map_update(self._fds["config"], ctypes.c_uint32(0), cfg)

    def set_expire_nodest_conn(self, on: bool) -> None:
        self._set_flag(abi.CFG_EXPIRE_NODEST_CONN, on)

    def set_sloppy_tcp(self, on: bool) -> None:
        """IPVS's sloppy_tcp: with it any TCP packet but RST may start a connection, not only a SYN."""
        self._set_flag(abi.CFG_SLOPPY_TCP, on)

    def switches(self) -> dict[str, bool]:
        """The data plane's switches (as IPVS's sysctls): expire_nodest_conn, sloppy_tcp."""
        flags = self._config().flags
        return {"expire_nodest_conn": bool(flags & abi.CFG_EXPIRE_NODEST_CONN),
                "sloppy_tcp": bool(flags & abi.CFG_SLOPPY_TCP)}

    def standby_vips(self) -> set[IPAddress]:
        """The VIPs this data plane does not serve now (a VRRP backup's): their traffic goes to the kernel."""
        return {vip for vip, value in self._vip_flags().items() if value & abi.VIP_F_STANDBY}

    def set_standby(self, vips: Iterable[IPAddress], standby: bool) -> list[IPAddress]:
        """Stop (standby) or start serving these VIPs of the rules; returns those that changed. A standby VIP is left
        out of the pre-filter, so its packets are passed to the kernel as any other host's; its services,
        connections and tables stay as they are (the fingerprint does not change). Exact unless a served VIP shares
        its pre-filter slot (VIPs that fold alike: `vip ^ vip >> 16`, 65536 slots)."""
        with self._writing():
            flags = self._vip_flags()
            changed = []
            for vip in sorted(set(vips) & set(flags), key=address_order):
                value = flags[vip] | abi.VIP_F_STANDBY if standby else flags[vip] & ~abi.VIP_F_STANDBY
                if value != flags[vip]:
                    flags[vip] = value
                    libbpf.map_update(self._fds[family_map("vips", vip.version)], vip_key(vip), ctypes.c_uint32(value))
                    changed.append(vip)
            if changed:
                self._write_filter(flags, flags)
        return changed

    def set_pass_ticks(self, ticks: int) -> None:
        """Clock ticks (2.5 ms) per sweep pass: how often every entry is recounted (tests shorten it)."""
        if not 1 <= ticks <= 100_000:
            raise DataplaneError(f"pass ticks {ticks} out of range (1-100000)")
        with self._writing():
            cfg = self._config()
            cfg.pass_ticks = ticks
            libbpf.map_update(self._fds["config"], ctypes.c_uint32(0), cfg)

    def _set_flag(self, flag: int, on: bool) -> None:
        with self._writing():
            cfg = self._config()
            cfg.flags = (cfg.flags | flag) if on else (cfg.flags & ~flag)
            libbpf.map_update(self._fds["config"], ctypes.c_uint32(0), cfg)

    def _config(self) -> abi.Config:
        cfg = abi.Config()
        libbpf.map_lookup(self._fds["config"], ctypes.c_uint32(0), cfg)
        return cfg

    def _stats_at(self, index: int) -> Counters:
        values = (abi.CountersEntry * self._ncpus)()
        libbpf.map_lookup(self._fds["stats"], ctypes.c_uint32(index), values)
        out = (abi.OutCountersEntry * self._ncpus)()
        if "out_stats" in self._fds:  # (pins of a version before NAT, opened to migrate them, have none)
            libbpf.map_lookup(self._fds["out_stats"], ctypes.c_uint32(index), out)
        return Counters(
            conns=sum(v.conns for v in values), inpkts=sum(v.packets for v in values),
            inbytes=sum(v.bytes for v in values), outpkts=sum(v.packets for v in out),
            outbytes=sum(v.bytes for v in out),
        )

    def service_stats(self) -> dict[ServiceKey, Counters]:
        return {key: self._stats_at(svc.index) for key, svc in self._services().items()}

    def real_stats(self) -> dict[tuple[ServiceKey, RealKey], Counters]:
        by_index = {svc.index: key for key, svc in self._services().items()}
        result = {}
        for real in self._real_slots():
            key = by_index.get(real.entry.svc_index)
            if real.entry.flags & abi.REAL_ACTIVE and key is not None:
                rkey = (real.rip, socket.ntohs(real.entry.port))
                result[(key, rkey)] = self._stats_at(abi.MAX_SERVICES + real.slot)
        return result

    def _rates_at(self, index: int) -> Rates:
        est = abi.Est()
        fd = self._fds.get("estimators")
        if fd is not None:
            libbpf.map_lookup(fd, ctypes.c_uint32(index), est)
        return Rates(*decode_rates(est))

    def service_rates(self) -> dict[ServiceKey, Rates]:
        """The rate estimator's figures per service (ipvsadm -L --rate), as the sweeper's timer computes them."""
        return {key: self._rates_at(svc.index) for key, svc in self._services().items()}

    def real_rates(self) -> dict[tuple[ServiceKey, RealKey], Rates]:
        by_index, reals = self._owners()
        return {(by_index[r.entry.svc_index], (r.rip, socket.ntohs(r.entry.port))):
                self._rates_at(abi.MAX_SERVICES + r.slot) for r in reals.values() if r.entry.svc_index in by_index}

    def overloaded(self) -> set[tuple[ServiceKey, RealKey]]:
        """The reals whose OVERLOAD flag is set (their upper connection threshold reached)."""
        by_index, reals = self._owners()
        return {(by_index[r.entry.svc_index], (r.rip, socket.ntohs(r.entry.port))) for r in reals.values()
                if r.entry.svc_index in by_index and r.entry.flags & abi.REAL_OVERLOAD}

    def sweep_stats(self) -> abi.SweepStats:
        value = abi.Sweeper()
        libbpf.map_lookup(self._fds["sweeper"], ctypes.c_uint32(0), value)
        return value.stats

    def clock(self) -> tuple[int, int, int]:
        """The packet path's clock (coarse ns at the timer's last tick), the ticks and the sweep passes so far.
        The ticks advance every 2.5 ms while the timer runs; when they stop, nothing expires."""
        st = self.sweep_stats()
        return st.now, st.ticks, st.runs

    def wait_passes(self, passes: int = 2, timeout: float = 30.0) -> None:
        """Wait until the sweeper has completed `passes` more passes (every count is then true to the tables)."""
        target = self.sweep_stats().runs + passes
        deadline = time.monotonic() + timeout
        while self.sweep_stats().runs < target:
            if time.monotonic() > deadline:
                raise DataplaneError(f"the sweeper did not complete {passes} passes in {timeout:g} s")
            time.sleep(0.01)

    def counters(self) -> dict[str, int]:
        """The global counters by name: rx, tx, redirect, pass, conn_*, drop_* ..."""
        result = {}
        for index, name in sorted(abi.COUNTER_NAMES.items()):
            values = (ctypes.c_uint64 * self._ncpus)()
            libbpf.map_lookup(self._fds["counters"], ctypes.c_uint32(index), values)
            result[name] = sum(values)
        # Every packet to a VIP ends in exactly one of these; rx is their sum, not counted per packet.
        # Traffic that is not for a VIP is passed uncounted (the NIC's own counters have it).
        result["rx"] = sum(v for k, v in result.items() if k in ("tx", "redirect") or k.startswith(("pass", "drop_")))
        return result

    def _live_connections(self) -> list[tuple[int, abi.ConnKey | abi.ConnKey6, abi.Conn, float]]:
        """Unexpired entries of both tables (connections, half-open ones, templates) with their shard's fd and
        seconds left."""
        timeouts = self._config().timeouts
        now = time.clock_gettime_ns(CLOCK_MONOTONIC_COARSE)  # the program's bpf_ktime_get_coarse_ns()
        live = []
        for table in abi.CONN_TABLES:
            for fd, key, value in self.table_entries(table):
                state = value.state if value.state < abi.STATE_COUNT else abi.STATES["CLOSE"]
                left = (value.timeout or timeouts[state]) - (now - value.last_seen) / 1e9
                if left > 0:
                    live.append((fd, key, value, left))
        return live

    def _owners(self) -> tuple[dict[int, ServiceKey], dict[int, RealSlot]]:
        by_index = {svc.index: key for key, svc in self._services().items()}
        reals = {r.slot: r for r in self._real_slots() if r.entry.flags & abi.REAL_ACTIVE}
        return by_index, reals

    def connections(self) -> list[Connection]:
        by_index, reals = self._owners()
        result = []
        for _, key, value, left in self._live_connections():
            real = reals.get(value.real)
            if value.svc_index not in by_index or real is None or real.entry.gen != value.gen:
                continue
            client, vip = conn_addresses(key)
            result.append(Connection(
                Protocol(key.proto), client, socket.ntohs(key.sport), vip, socket.ntohs(key.dport), real.rip,
                # a real of port 0 (a fwmark service's) takes the packet's port, as IPVS's ip_vs_schedule does
                socket.ntohs(real.entry.port or key.dport), abi.STATE_LABELS.get(value.state, "ERR!"), left,
                template=bool(value.flags & abi.CONN_F_TEMPLATE), svc_index=value.svc_index,
                real_port=socket.ntohs(real.entry.port),
            ))
        return result

    def conn_counts(self) -> dict[tuple[ServiceKey, RealKey], tuple[int, int]]:
        """(ActiveConn, InActConn) per real, from the live connection entries."""
        counts: dict[tuple[ServiceKey, RealKey], tuple[int, int]] = {}
        by_index, _ = self._owners()
        for conn in self.connections():
            if conn.template:
                continue
            svc = by_index.get(conn.svc_index, ServiceKey(conn.proto, conn.vip, conn.vport))
            key = (svc, (conn.rip, conn.real_port if conn.real_port >= 0 else conn.rport))
            active, inactive = counts.get(key, (0, 0))
            if conn.proto is not Protocol.UDP and abi.STATES.get(conn.state) in abi.ACTIVE_STATES:
                active += 1
            else:
                inactive += 1
            counts[key] = (active, inactive)
        return counts

    def live_counts(self) -> dict[tuple[ServiceKey, RealKey], tuple[int, int]]:
        """(active, inactive) per real as the data plane keeps them for its schedulers: the current and the
        previous pass parity, as the program reads them. No table scan."""
        by_index, reals = self._owners()
        parity = self.sweep_stats().parity
        result = {}
        for slot, real in reals.items():
            if real.entry.svc_index in by_index:
                counts = abi.RealConns()
                libbpf.map_lookup(self._fds["real_conns"], ctypes.c_uint32(slot), counts)
                key = (by_index[real.entry.svc_index], (real.rip, socket.ntohs(real.entry.port)))
                result[key] = counts.live(parity)
        return result

    def real_next_hops(self) -> dict[tuple[ServiceKey, RealKey], NextHop]:
        by_index, reals = self._owners()
        return {
            (by_index[r.entry.svc_index], (r.rip, socket.ntohs(r.entry.port))):
                NextHop(r.entry.ifindex, mac_text(r.entry.smac), mac_text(r.entry.dmac))
            for r in reals.values() if r.entry.svc_index in by_index
        }

    # ---- writing --------------------------------------------------------------------------------

    def zero(self, key: ServiceKey | None = None) -> None:
        """Zero the counters of one service and its reals, or of everything."""
        with self._writing():
            services = self._services()
            if key is not None and key not in services:
                raise DataplaneError("No such service")
            indexes = [svc.index for k, svc in services.items() if key is None or k == key]
            for real in self._real_slots():
                if real.entry.flags & abi.REAL_ACTIVE and real.entry.svc_index in indexes:
                    self._zero_stats(abi.MAX_SERVICES + real.slot)
            for index in indexes:
                self._zero_stats(index)

    def _zero_stats(self, index: int) -> None:
        """Zero a service's or real's counters and its rates (ip_vs_zero_stats zeroes the estimator too)."""
        libbpf.map_update(self._fds["stats"], ctypes.c_uint32(index), (abi.CountersEntry * self._ncpus)())
        if "out_stats" in self._fds:
            libbpf.map_update(self._fds["out_stats"], ctypes.c_uint32(index), (abi.OutCountersEntry * self._ncpus)())
        fd = self._fds.get("estimators")
        if fd is not None:
            est = abi.Est()
            libbpf.map_lookup(fd, ctypes.c_uint32(index), est)
            libbpf.map_update(fd, ctypes.c_uint32(index), abi.Est(gen=est.gen))

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """One writer at a time (pyvsadm, the daemon): an exclusive flock on the pin directory,
        held once per process however deeply the writes nest."""
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        fd = os.open(self.pin_dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock_depth = 1
            yield
        finally:
            self._lock_depth = 0
            os.close(fd)

    def update(self, change: Callable[[Rules], Rules]) -> None:
        """Read the rules, change them and apply the result, with no other writer in between. The change is
        tried once before the lock to resolve its new reals there (`change` must have no side effects)."""
        resolvers = self._prefetch(lambda: change(self.read_rules()))
        with self._writing():
            self._apply(change(self.read_rules()), resolvers)

    def update_service(self, key: ServiceKey, change: Callable[[Service | None], Service | None]) -> None:
        """Read one service (None: absent), change it and apply the result (None: delete it), with no
        other writer in between. Costs what the service's reals cost, whatever the rule set's size. As with
        update(), `change` is tried once before the lock to resolve new reals there: it must have no side effects."""
        def attempt() -> Rules:
            svc = change(self.read_service(key))
            return Rules({key: svc} if svc is not None else {})
        resolvers = self._prefetch(attempt)
        with self._writing():
            self._apply_service(key, change(self.read_service(key)), resolvers)

    def _prefetch(self, rules: Callable[[], Rules]) -> tuple[Resolver, Resolver]:
        """The resolvers (direct, tunnel) for a change: its new reals resolved before the lock when the change can
        be computed now (it is computed again under the lock; a failure now is the one reported then)."""
        if self._lock_depth:
            return self._resolver, self._tunnel_resolver  # already under the lock: nothing gained
        try:
            return self._prefetch_hops(rules())
        except Exception:  # noqa: BLE001 - the same change under the lock raises it to the caller
            return self._resolver, self._tunnel_resolver

    def apply(self, rules: Rules) -> None:
        """Make the data plane forward exactly as `rules` say.

        Everything is checked, and new reals resolved, before the first write: a rejected
        rule set changes nothing. Established connections keep their real.
        """
        self._apply(rules, self._prefetch(lambda: rules))

    def _apply(self, rules: Rules, resolvers: tuple[Resolver, Resolver]) -> None:
        with self._writing():
            current = self._services()
            slots = self._real_slots()
            # The slot usage is rebuilt from what the maps hold, so a whole apply also repairs it.
            usage = abi.SlotUsage()
            for svc in current.values():
                set_bit(usage.services, svc.index)
                set_table_chunks(usage.table_chunks, svc.table_base, svc.table_len, True)
            for real in slots:
                if real.entry.flags & abi.REAL_ACTIVE:
                    set_bit(usage.reals, real.slot)
            plan = Plan(current, slots, rules, resolvers[0], usage, lambda slot: abi.RealEntry(), resolvers[1])
            self._carry_out(plan, rules, set(rules.services))
            # A whole apply knows every real: the flag goes when the last NAT real has gone (a change of one
            # service only ever sets it: telling would read every real).
            masq = any(real.forwarding is Forwarding.MASQ for svc in rules.services.values()
                       for real in svc.reals.values())
            if bool(self._config().flags & abi.CFG_MASQ) != masq:
                self._set_flag(abi.CFG_MASQ, masq)

    def apply_service(self, key: ServiceKey, service: Service | None) -> None:
        """Make one service as `service` says (None: delete it), touching no other service.

        The cost grows with the reals of this service, not with the whole rule set: this is
        what pyvsadm's -A -E -D -a -e -d use. Checked before the first write, as apply().
        """
        if service is not None and service.key != key:
            raise ValueError(f"service {service.key} given for {key}")
        self._apply_service(key, service, self._prefetch(lambda: Rules({key: service} if service else {})))

    def _apply_service(self, key: ServiceKey, service: Service | None, resolvers: tuple[Resolver, Resolver]) -> None:
        if service is not None and service.key != key:
            raise ValueError(f"service {service.key} given for {key}")
        with self._writing():
            raw = abi.Svc()
            current = {key: raw} if libbpf.map_lookup(self._services_fd(key), svc_key(key), raw) else {}
            slots = self._service_slots(raw.index) if current else []
            usage = abi.SlotUsage()
            libbpf.map_lookup(self._fds["slot_usage"], ctypes.c_uint32(0), usage)
            rules = Rules({key: service} if service is not None else {})
            plan = Plan(current, slots, rules, resolvers[0], usage, self._read_entry, resolvers[1])
            vip_keys = None
            if bool(current) != (service is not None):  # a service comes or goes: the VIP maps follow
                vip_keys = set(self._services())
                vip_keys.discard(key)
                if service is not None:
                    vip_keys.add(key)
            self._carry_out(plan, rules, vip_keys)

    def fwmarks(self) -> set[tuple[int, int]]:
        """(family, mark) of the firewall-mark services."""
        return {(key.family, key.fwmark) for key in self._services() if key.is_fwmark}

    def _carry_out(self, plan: Plan, rules: Rules, vip_keys: set[ServiceKey] | None) -> None:
        """Write a checked plan. The slot index first lists every slot a service may use (old and
        new), then the maps the program reads change, then the index keeps only what is left."""
        fwmark_changed = any(key.is_fwmark for key in (*plan.changed_services, *plan.removed_services))
        if fwmark_changed and any(key.is_fwmark for key in rules.services):
            fwmark.need_nft()
        self._write_plan(plan, rules, vip_keys)
        if fwmark_changed:
            fwmark.sync(self.fwmarks())

    def _write_plan(self, plan: Plan, rules: Rules, vip_keys: set[ServiceKey] | None) -> None:
        for key in plan.changed_services:
            self._write_svc_reals(plan.service_index[key], plan.slots_of(key) + plan.freed_of(key))
        libbpf.map_update(self._fds["slot_usage"], ctypes.c_uint32(0), plan.usage_during)
        for key in plan.removed_services:
            libbpf.map_delete(self._services_fd(key), svc_key(key))
            self._bump_svc_gen(plan.current[key].index)
        self._write_reals(plan)
        for key in sorted(plan.changed_services):
            self._write_service(rules.services[key], plan)
        for slot in plan.freed_reals:
            entry = plan.entries[slot]
            was_ipv6 = entry.flags & abi.REAL_IPV6
            entry.flags = 0
            libbpf.map_update(self._fds["reals"], ctypes.c_uint32(slot), entry)
            if was_ipv6:
                libbpf.map_delete(self._fds["real_addrs6"], ctypes.c_uint32(slot))
        if vip_keys is not None:
            self._write_vips(vip_keys)
        for key in plan.changed_services:
            if plan.freed_of(key):
                self._write_svc_reals(plan.service_index[key], plan.slots_of(key))
        reused = set(plan.service_index.values())
        for key in plan.removed_services:
            if plan.current[key].index not in reused:
                libbpf.map_delete(self._fds["svc_reals"], ctypes.c_uint32(plan.current[key].index))
        libbpf.map_update(self._fds["slot_usage"], ctypes.c_uint32(0), plan.usage_after)

    def _write_svc_reals(self, index: int, slots: list[int]) -> None:
        listed = abi.SvcReals()
        listed.count = len(slots)
        listed.slots[:len(slots)] = sorted(slots)
        libbpf.map_update(self._fds["svc_reals"], ctypes.c_uint32(index), listed)

    def set_real_mac(self, rip: IPAddress, mac: str, old_mac: str | None = None) -> int:
        """Point every active real with address `rip` at a new MAC (its NIC changed); with `old_mac`, only those
        still sending to `old_mac`. Only the MAC changes: each entry is re-read under the writers' lock, so a
        real deleted or a slot reused meanwhile is left as it is. Returns how many entries changed."""
        new = list(mac_bytes(mac))
        changed = 0
        with self._writing():
            for real in self._real_slots():
                entry = self._read_entry(real.slot)  # under the lock: what the maps hold now
                if (not entry.flags & abi.REAL_ACTIVE or self._rip(real.slot, entry) != rip
                        or mac_text(entry.dmac) == mac):
                    continue
                routed = self._slot(real.slot, entry).tunnel
                if routed is not None and routed.flags & abi.TUN_F_ROUTED:
                    continue  # its frames go to its gateway's MAC, not its own
                if old_mac is not None and mac_text(entry.dmac) != old_mac:
                    continue
                entry.dmac[:] = new
                libbpf.map_update(self._fds["reals"], ctypes.c_uint32(real.slot), entry)
                changed += 1
        return changed

    def flush_connections(self, key: ServiceKey, real: RealKey) -> int:
        """Delete the connection entries of one real of a service; returns how many."""
        with self._writing():
            services = self._services()
            if key not in services:
                return 0
            index = services[key].index
            slots = {r.slot for r in self._real_slots()
                     if r.entry.flags & abi.REAL_ACTIVE and r.entry.svc_index == index
                     and (r.rip, socket.ntohs(r.entry.port)) == real}
            flushed = 0
            for fd, conn_key, value, _ in self._live_connections():
                if value.svc_index == index and value.real in slots:
                    flushed += libbpf.map_delete(fd, conn_key)
            self._add_counter("conn_deleted", flushed)
        return flushed

    def _add_counter(self, name: str, amount: int) -> None:
        """Add to a global counter from the control plane (CPU 0's slot; rare, so a lost race costs little)."""
        index = next(i for i, n in abi.COUNTER_NAMES.items() if n == name)
        values = (ctypes.c_uint64 * self._ncpus)()
        libbpf.map_lookup(self._fds["counters"], ctypes.c_uint32(index), values)
        values[0] += amount
        libbpf.map_update(self._fds["counters"], ctypes.c_uint32(index), values)

    def conn_table_usage(self) -> dict[str, int | float]:
        """What the sweeper's last pass found, without a scan: live entries of the connection table and of the
        half-open table with their sizes, how many entries the LRU evicted to make room (added - removed -
        present), and new connections per second over the last pass."""
        st = self.sweep_stats()
        c = self.counters()
        evicted = c["conn_inserted"] - c["conn_swept"] - c["conn_deleted"] - st.entries - st.entries6
        half_evicted = (c["half_open_new"] - c["half_open_promoted"] - c["half_open_swept"] - st.half_open
                        - st.half_open6)
        seconds = (st.pass_ended - st.prev_pass_ended) / 1e9 if st.prev_pass_ended else 0.0
        rate = (st.new_conns - st.prev_new_conns) / seconds if seconds > 0 else 0.0
        fullest = max(st.entries, st.entries6)
        return {"entries": st.entries, "size": self.conn_table_size, "evicted": max(evicted, 0),
                "half_open": st.half_open, "half_open_size": self.half_open_size,
                "half_open_evicted": max(half_evicted, 0), "new_per_second": round(rate, 1), "passes": st.runs,
                "nearly_full": int(fullest >= CONN_TABLE_WARN_SHARE * self.conn_table_size),
                "entries6": st.entries6, "half_open6": st.half_open6}

    def refresh_macs(self, only_missing: bool = False,
                     unresolved: Callable[[IPAddress, str], None] | None = None) -> int:
        """Resolve the MAC of every real again (only the unresolved ones with only_missing); returns how many
        entries changed. Resolution (up to a second per silent real) happens before the writers' lock; a real
        that cannot be resolved is skipped and told to `unresolved` (default: logged). Under the lock only the
        next hop of an entry that still holds the same real (address, generation) changes."""
        wanted: dict[int, RealSlot] = {}
        for real in self._real_slots():
            entry = real.entry
            if entry.flags & abi.REAL_ACTIVE and not (only_missing and mac_text(entry.dmac) != ZERO_MAC):
                wanted[real.slot] = real
        hops: dict[tuple[IPAddress, bool], NextHop] = {}
        kinds = (self._resolver, self._tunnel_resolver)
        for rip, tunnel in sorted({(r.rip, bool(r.entry.flags & abi.REAL_FWD_TUNNEL)) for r in wanted.values()},
                                  key=lambda a: (a[0].version, int(a[0]), a[1])):
            try:
                hops[(rip, tunnel)] = kinds[tunnel](rip)
            except NeighbourError as exc:
                if unresolved is None:
                    log.warning("real server %s: %s", rip, exc)
                else:
                    unresolved(rip, str(exc))
        changed = 0
        with self._writing():
            for slot, seen in wanted.items():
                hop = hops.get((seen.rip, bool(seen.entry.flags & abi.REAL_FWD_TUNNEL)))
                if hop is None or hop.dmac == ZERO_MAC:
                    continue
                entry = self._read_entry(slot)
                now = (mac_text(entry.dmac), entry.ifindex, mac_text(entry.smac))
                if (not entry.flags & abi.REAL_ACTIVE or (entry.rip, entry.gen) != (seen.entry.rip, seen.entry.gen)
                        or self._rip(slot, entry) != seen.rip or now == (hop.dmac, hop.ifindex, hop.smac)):
                    continue
                set_hop(entry, hop)
                libbpf.map_update(self._fds["reals"], ctypes.c_uint32(slot), entry)
                changed += 1
        return changed

    def _prefetch_hops(self, rules: Rules) -> tuple[Resolver, Resolver]:
        """A resolver for a plan: the next hops of the rules' new real addresses resolved now, before the
        writers' lock (ARP for a silent real takes up to a second); anything else is resolved when asked.
        For one service, new means new to it (what its plan resolves), found without reading every real."""
        if len(rules.services) == 1:
            [key] = rules.services
            raw = abi.Svc()
            held = (self._service_slots(raw.index) if libbpf.map_lookup(self._services_fd(key), svc_key(key), raw)
                    else [])
        else:
            held = self._real_slots()
        known = {(r.rip, bool(r.entry.flags & abi.REAL_FWD_TUNNEL)) for r in held if r.entry.flags & abi.REAL_ACTIVE}
        hops: dict[tuple[IPAddress, bool], NextHop] = {}
        kinds = (self._resolver, self._tunnel_resolver)
        for svc in rules.services.values():
            for real in svc.reals.values():
                wanted = (real.rip, real.forwarding is Forwarding.TUNNEL)
                if wanted not in known and wanted not in hops:
                    try:
                        hops[wanted] = kinds[wanted[1]](real.rip)
                    except NeighbourError:
                        pass  # the plan asks again, and reports it, if the real is still new under the lock

        def prefetched(tunnel: bool) -> Resolver:
            def resolver(rip: IPAddress) -> NextHop:
                hop = hops.get((rip, tunnel))
                return hop if hop is not None else kinds[tunnel](rip)
            return resolver
        return prefetched(False), prefetched(True)

    def _write_reals(self, plan: Plan) -> None:
        """The real entries of the plan that are new or changed, in one batch; a slot that served
        another real before starts with zero counts and counters."""
        for slot, (upper, lower) in plan.limits.items():  # before the entries: a new real starts with its own
            libbpf.map_update(self._fds["real_limits"], ctypes.c_uint32(slot), abi.RealLimits(upper, lower))
        slots = sorted(plan.real_changed)
        if not slots:
            return
        for slot, rip in plan.addresses6.items():  # the address first: an active entry always has one
            libbpf.map_update(self._fds["real_addrs6"], ctypes.c_uint32(slot), addr6(rip))
        if any(plan.entries[slot].flags & abi.REAL_FWD_MASQ for slot in slots) and \
                not self._config().flags & abi.CFG_MASQ:
            self._set_flag(abi.CFG_MASQ, True)  # before the reals: their replies are looked for from the first packet
        for slot, tunnel in plan.tunnels.items():  # and a tunnel real's encapsulation
            libbpf.map_update(self._fds["tunnels"], ctypes.c_uint32(slot), tunnel)
        keys = (ctypes.c_uint32 * len(slots))(*slots)
        values = (abi.RealEntry * len(slots))(*(plan.entries[slot] for slot in slots))
        for slot in slots:
            if slot in plan.new_slots and plan.entries[slot].gen > 1:
                libbpf.map_update(self._fds["real_conns"], ctypes.c_uint32(slot), abi.RealConns())
                self._zero_stats(abi.MAX_SERVICES + slot)
        libbpf.map_update_batch(self._fds["reals"], keys, values)

    def _write_service(self, svc: Service, plan: Plan) -> None:
        """The service's new scheduler table in the run of the pool the plan gave it, then the service entry."""
        real_slots, positions = plan.tables[svc.key]
        table = [real_slots[i] for i in positions]
        old = plan.current.get(svc.key)
        index = plan.service_index[svc.key]
        value = svc_value(svc, index)
        if old is None:
            self._bump_svc_gen(index)  # odd: the slot is taken, by a new incarnation
            self._zero_stats(index)
            libbpf.map_update(self._fds["sched_state"], ctypes.c_uint32(index), ctypes.c_uint32(0))
        base = plan.table_base[svc.key]
        if table:  # a memory copy into the mapped slots: 65521 of them in about 1 ms (a map batch took 15)
            with self._table_slots(base, len(table)) as slots:
                slots[:] = array("I", table)
        value.table_base, value.table_len = base, len(table)
        libbpf.map_update(self._services_fd(svc.key), svc_key(svc.key), value)

    def _bump_svc_gen(self, index: int) -> None:
        gen = ctypes.c_uint32()
        libbpf.map_lookup(self._fds["svc_gens"], ctypes.c_uint32(index), gen)
        libbpf.map_update(self._fds["svc_gens"], ctypes.c_uint32(index), ctypes.c_uint32((gen.value + 1) & 0xFFFFFFFF))

    def _vips(self) -> set[IPAddress]:
        """The VIPs in vips and vips6."""
        return set(self._vip_flags())

    def _vip_flags(self) -> dict[IPAddress, int]:
        """VIP -> its PYVS_VIP_F_* flags, both families."""
        found: dict[IPAddress, int] = {}
        for name, kind, decode in (("vips", ctypes.c_uint32, lambda raw: be_to_ip(raw.value)),
                                   ("vips6", abi.Addr6, addr6_ip)):
            for raw in libbpf.map_keys(self._fds[name], kind):
                value = ctypes.c_uint32()
                if libbpf.map_lookup(self._fds[name], raw, value):
                    found[decode(raw)] = value.value
        return found

    def _write_filter(self, flags: dict[IPAddress, int], old: Iterable[IPAddress]) -> None:
        """The pre-filter: per slot, the VIPs there that are served (a standby VIP is not counted)."""
        slots: dict[int, int] = {}
        for vip, value in flags.items():
            if not value & abi.VIP_F_STANDBY:
                slot = vip_filter_slot(fold_be(vip))
                slots[slot] = slots.get(slot, 0) + 1
        for slot in {vip_filter_slot(fold_be(vip)) for vip in old} | set(slots):
            libbpf.map_update(self._fds["vip_filter"], ctypes.c_uint32(slot), ctypes.c_uint32(slots.get(slot, 0)))

    def _write_vips(self, keys: Iterable[ServiceKey]) -> None:
        """The vips maps (flags per VIP, one map per family) and the pre-filter (VIPs per slot, both families) for
        these services. A VIP kept keeps its standby flag."""
        before = self._vip_flags()
        flags: dict[IPAddress, int] = {}
        for key in keys:
            if key.is_fwmark:
                continue  # a fwmark service has no VIP: its packets come marked, to any address
            kept = before.get(key.vip, 0) & abi.VIP_F_STANDBY
            flags[key.vip] = flags.get(key.vip, kept) | (abi.VIP_F_ANY_PORT if key.port == 0 else 0)
        old = set(before)
        for vip, value in flags.items():
            libbpf.map_update(self._fds[family_map("vips", vip.version)], vip_key(vip), ctypes.c_uint32(value))
        self._write_filter(flags, old)
        for vip in old - set(flags):
            libbpf.map_delete(self._fds[family_map("vips", vip.version)], vip_key(vip))
        ipv6 = any(vip.version == 6 for vip in flags)
        if bool(self._config().flags & abi.CFG_IPV6) != ipv6:  # the sweeper visits IPv6's tables only when needed
            self._set_flag(abi.CFG_IPV6, ipv6)
