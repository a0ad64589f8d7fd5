"""The pure planning step of a change: which slots every service and real of a rule set take, what is written,
and the slot usage during and after the write, decided before anything is written (a rejected plan changes
nothing). Reads no map: what the maps hold is passed in."""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import Callable
from ipaddress import IPv6Address

from pyvs.dataplane import abi
from pyvs.dataplane.base import DataplaneError, Resolver
from pyvs.dataplane.codec import (
    RealSlot,
    chunk_map,
    clear_bit,
    clear_bits,
    find_run,
    port_to_be,
    raw_tunnel_settings,
    real_entry,
    same_settings,
    set_bit,
    set_hop,
    set_table_chunks,
    svc_value,
    table_chunks,
    tunnel_settings,
    tunnel_value,
)
from pyvs.dataplane.neighbours import NeighbourError, NextHop
from pyvs.mac import ZERO_MAC
from pyvs.model import (
    Forwarding,
    IPAddress,
    ModelError,
    Real,
    Rules,
    ServiceKey,
    Tunnel,
    sched_flag_bits,
    validate_service,
)
from pyvs.schedulers import build_table

log = logging.getLogger(__name__)


class Plan:
    """Slots for every service and real of a rule set, decided before anything is written.

    Only services that differ from what the maps hold are validated and rewritten, so one change
    in a large rule set costs little. `current` and `slots` are what the maps hold of the services
    concerned (all of them, or one); `usage` says which slots are taken in the whole data plane.
    """

    def __init__(self, current: dict[ServiceKey, abi.Svc], slots: list[RealSlot], rules: Rules,
                 resolver: Resolver, usage: abi.SlotUsage, read_entry: Callable[[int], abi.RealEntry],
                 tunnel_resolver: Resolver | None = None):
        self.current = current
        self.entries = {s.slot: s.entry for s in slots}
        self._tunnels = {s.slot: s.tunnel for s in slots if s.tunnel is not None}
        self.tunnels: dict[int, abi.Tunnel] = {}  # tunnel reals' slot -> their new tunnels entry
        self.rehop: list[tuple[ServiceKey, Real, int]] = []  # kept reals whose forwarding or tunnel changed
        self._resolvers = (resolver, tunnel_resolver or resolver)
        self.real_slot: dict[ServiceKey, dict[tuple[int, int], int]] = {}  # service -> (rip, port) -> real slot
        self.real_changed: dict[int, bool] = {}
        self.new_slots: set[int] = set()
        self.addresses6: dict[int, IPv6Address] = {}  # new IPv6 reals' slot -> address (for real_addrs6)
        self.changed_services: set[ServiceKey] = set()
        self._assign_service_indexes(rules, usage)
        existing = self._existing_reals(slots)
        new_reals, last_weights = self._match_reals(rules, existing)
        sorted_reals, positions = self._build_tables(rules, last_weights)
        self._place_new_reals(new_reals, existing, usage, read_entry)
        self._place_tables(rules, positions, usage)
        self._slot_usage(usage)
        self.tables = {
            key: ([self.real_slot[key][(int(r.rip), r.port)] for r in reals], positions[key])
            for key, reals in sorted_reals.items()
        }
        self._freed_of: dict[int, list[int]] = {}
        for slot in self.freed_reals:
            self._freed_of.setdefault(self.entries[slot].svc_index, []).append(slot)

    def _assign_service_indexes(self, rules: Rules, usage: abi.SlotUsage) -> None:
        """Step 1: the services that go, and a service slot for each service (kept, or the first free one)."""
        current = self.current
        self.removed_services = [key for key in current if key not in rules.services]
        removed_indexes = {current[key].index for key in self.removed_services}
        free_indexes = iter(sorted(set(clear_bits(usage.services, abi.MAX_SERVICES)) | removed_indexes))
        self.service_index: dict[ServiceKey, int] = {}
        for key in sorted(rules.services):
            if key in current:
                self.service_index[key] = current[key].index
            else:
                index = next(free_indexes, None)
                if index is None:
                    raise DataplaneError(f"too many services (the data plane holds {abi.MAX_SERVICES})")
                self.service_index[key] = index

    @staticmethod
    def _existing_reals(slots: list[RealSlot]) -> dict[tuple[int, int, int], int]:
        """(service slot, rip, port) as ints -> real slot, for the active reals the maps hold (ints hash fast)."""
        existing: dict[tuple[int, int, int], int] = {}
        for s in slots:
            if s.entry.flags & abi.REAL_ACTIVE:
                existing[(s.entry.svc_index, int(s.rip), socket.ntohs(s.entry.port))] = s.slot
        return existing

    def _match_reals(self, rules: Rules, existing: dict[tuple[int, int, int], int]
                     ) -> tuple[list[tuple[ServiceKey, Real]], dict[ServiceKey, dict[tuple[int, int], int]]]:
        """Step 2: each wanted real keeps its slot when the same service already has it (its weight updated),
        or is new; the slots no real wants any more are freed. Returns the new reals and every real's
        last weight (IPVS keeps it when the weight goes to 0)."""
        old_index = {svc.index: key for key, svc in self.current.items()}
        wanted: set[int] = set()
        new_reals: list[tuple[ServiceKey, Real]] = []
        last_weights: dict[ServiceKey, dict[tuple[int, int], int]] = {}
        for svc in rules.services.values():
            index = self.service_index[svc.key]
            old = self.current.get(svc.key)
            if old is None or not same_settings(old, svc_value(svc, index)):
                self.changed_services.add(svc.key)
            same_service = old_index.get(index) == svc.key
            slots_here = self.real_slot[svc.key] = {}
            last_here = last_weights[svc.key] = {}
            for real in svc.reals.values():
                rid = (int(real.rip), real.port)
                slot = existing.get((index, *rid)) if same_service else None
                if slot is not None:
                    slots_here[rid] = slot
                    wanted.add(slot)
                    entry = self.entries[slot]
                    last_here[rid] = real.weight or entry.last_weight
                    if entry.weight != real.weight or entry.last_weight != last_here[rid]:
                        entry.weight, entry.last_weight = real.weight, last_here[rid]
                        self.real_changed[slot] = True
                        self.changed_services.add(svc.key)
                    if self._forwarding_changed(slot, real):
                        self.rehop.append((svc.key, real, slot))
                        self.real_changed[slot] = True
                        self.changed_services.add(svc.key)
                else:
                    last_here[rid] = real.weight
                    new_reals.append((svc.key, real))
                    self.changed_services.add(svc.key)
        self.freed_reals = [slot for slot in existing.values() if slot not in wanted]
        for slot in self.freed_reals:
            owner = old_index.get(self.entries[slot].svc_index)
            if owner is not None and owner in rules.services:
                self.changed_services.add(owner)
        return new_reals, last_weights

    def _build_tables(self, rules: Rules, last_weights: dict[ServiceKey, dict[tuple[int, int], int]]
                      ) -> tuple[dict[ServiceKey, list[Real]], dict[ServiceKey, list[int]]]:
        """Step 3: every changed service validated, and its scheduler table built once (positions in the list of
        its sorted reals)."""
        sorted_reals: dict[ServiceKey, list[Real]] = {}
        positions: dict[ServiceKey, list[int]] = {}
        for key in self.changed_services:
            svc = rules.services[key]
            try:
                validate_service(svc)
            except ModelError as exc:
                raise DataplaneError(str(exc)) from None
            if len(svc.reals) > abi.MAX_REALS_PER_SERVICE:
                raise DataplaneError(f"service {svc.key}: {len(svc.reals)} real servers, more than "
                                     f"{abi.MAX_REALS_PER_SERVICE} in one service")
            sorted_reals[key] = svc.sorted_reals()
            table_reals = sorted_reals[key]
            if svc.scheduler == "mh":
                table_reals = [Real(r.rip, r.port, r.weight, last_weight=last_weights[key][(int(r.rip), r.port)])
                               for r in table_reals]
            positions[key] = build_table(svc.scheduler, table_reals, sched_flag_bits(svc.sched_flags),
                                         svc.mh_table_size)
            length = len(positions[key])
            if length > abi.TABLE_MAX:
                raise DataplaneError(
                    f"service {svc.key}: the {svc.scheduler} table needs {length} slots, more than "
                    f"{abi.TABLE_MAX}; use fewer reals or weights with a larger common divisor"
                )
        return sorted_reals, positions

    def _forwarding_changed(self, slot: int, real: Real) -> bool:
        """Whether a kept real's forwarding method or tunnel settings differ from what its slot holds."""
        tunnel = real.forwarding is Forwarding.TUNNEL
        if bool(self.entries[slot].flags & abi.REAL_FWD_TUNNEL) != tunnel:
            return True
        if bool(self.entries[slot].flags & abi.REAL_FWD_MASQ) != (real.forwarding is Forwarding.MASQ):
            return True  # NAT: new connections only, each keeps its own
        raw = self._tunnels.get(slot)
        try:
            return tunnel and (raw is None or raw_tunnel_settings(raw) != tunnel_settings(real.tunnel or Tunnel()))
        except (KeyError, ValueError):
            return True  # invalid settings: the service's validation says so

    def _hop(self, hops: dict[tuple[IPAddress, bool], NextHop], real: Real) -> NextHop:
        """The next hop of a real, resolved once per address and kind (a tunnel real may be behind a gateway)."""
        tunnel = real.forwarding is Forwarding.TUNNEL
        hop = hops.get((real.rip, tunnel))
        if hop is None:
            try:
                hop = hops[(real.rip, tunnel)] = self._resolvers[tunnel](real.rip)
            except NeighbourError as exc:
                raise DataplaneError(str(exc)) from None
            if hop.dmac == ZERO_MAC:
                log.warning("real server %s: MAC address %snot resolved; its packets are dropped until it is",
                            real.rip, f"of its gateway {hop.gateway} " if hop.gateway else "")
        return hop

    def _set_forwarding(self, slot: int, entry: abi.RealEntry, real: Real, hop: NextHop) -> None:
        """The entry's next hop and forwarding flag; a tunnel real's tunnels entry."""
        set_hop(entry, hop)
        entry.flags &= ~(abi.REAL_FWD_TUNNEL | abi.REAL_FWD_MASQ)
        if real.forwarding is Forwarding.MASQ:
            entry.flags |= abi.REAL_FWD_MASQ
        if real.forwarding is Forwarding.TUNNEL:
            try:
                self.tunnels[slot] = tunnel_value(real, hop)
            except ValueError as exc:
                raise DataplaneError(str(exc)) from None
            entry.flags |= abi.REAL_FWD_TUNNEL

    def _place_new_reals(self, new_reals: list[tuple[ServiceKey, Real]], existing: dict[tuple[int, int, int], int],
                         usage: abi.SlotUsage, read_entry: Callable[[int], abi.RealEntry]) -> None:
        """Step 4: each new real gets a free slot and an entry with its next hop (resolved once per address) and
        the slot's next generation; a kept real whose forwarding changed gets its new next hop."""
        taken = set(existing.values())
        free_slots = (i for i in clear_bits(usage.reals, abi.MAX_REALS) if i not in taken)
        hops: dict[tuple[IPAddress, bool], NextHop] = {}
        for _, real, kept in self.rehop:
            self._set_forwarding(kept, self.entries[kept], real, self._hop(hops, real))
        for key, real in new_reals:
            slot = next(free_slots, None)
            if slot is None:
                raise DataplaneError(f"too many real servers (the data plane holds {abi.MAX_REALS})")
            old_entry = self.entries.get(slot) or read_entry(slot)
            entry = real_entry(real.rip)
            self._set_forwarding(slot, entry, real, self._hop(hops, real))
            entry.port, entry.weight, entry.last_weight = port_to_be(real.port), real.weight, real.weight
            entry.svc_index = self.service_index[key]
            entry.gen = (old_entry.gen + 1) & 0xFFFFFFFF
            self.entries[slot] = entry
            self.real_slot[key][(int(real.rip), real.port)] = slot
            self.real_changed[slot] = True
            self.new_slots.add(slot)
            if isinstance(real.rip, IPv6Address):
                self.addresses6[slot] = real.rip

    def _place_tables(self, rules: Rules, positions: dict[ServiceKey, list[int]], usage: abi.SlotUsage) -> None:
        """Step 5: each rebuilt table gets a free run of chunks in the pool (sched_table); the runs of the tables
        it replaces, and of the services that go, are freed once the change is written, so a packet that read
        the old service entry never finds another service's table there within this change."""
        chunks = chunk_map(usage.table_chunks)
        before = bytes(chunks)  # what the messages report: the pool as it is
        used_before = chunks.count(b"1")
        self.table_base: dict[ServiceKey, int] = {}
        self.table_len = {key: len(positions[key]) for key in self.changed_services}
        for key in sorted(self.changed_services):
            length = self.table_len[key]
            if not length:
                self.table_base[key] = 0
                continue
            count = -(-length // abi.TABLE_CHUNK)
            first = find_run(chunks, count)
            if first is None:
                raise self._pool_full(key, rules, before, "(a change needs room for its new tables beside the old)")
            chunks[first:first + count] = b"1" * count
            self.table_base[key] = first * abi.TABLE_CHUNK
        self.old_tables = [(self.current[key].table_base, self.current[key].table_len)
                           for key in (*self.changed_services, *self.removed_services) if key in self.current]
        for base, length in self.old_tables:
            for chunk in table_chunks(base, length):
                chunks[chunk] = ord("0")
        if chunks.count(b"1") > used_before and find_run(chunks, -(-abi.TABLE_MAX // abi.TABLE_CHUNK)) is None:
            key = max(self.table_len, key=lambda k: self.table_len[k])
            raise self._pool_full(key, rules, before, f"(the pool keeps room for one more table of {abi.TABLE_MAX} "
                                                      "slots, so that any service can still be changed)")

    @staticmethod
    def _pool_full(key: ServiceKey, rules: Rules, chunks: bytes, why: str) -> DataplaneError:
        free = chunks.count(b"0") * abi.TABLE_CHUNK
        largest = max((len(run) for run in re.findall(b"0+", chunks)), default=0) * abi.TABLE_CHUNK
        svc = rules.services[key]
        return DataplaneError(
            f"service {key}: no room for its {svc.scheduler} table in the scheduler table pool ({free} of "
            f"{abi.TABLE_POOL} slots free, the largest free run {largest}) {why}; remove services, or give mh "
            "services smaller tables (--mh-table-size)")

    def _slot_usage(self, usage: abi.SlotUsage) -> None:
        """Step 6: the slot usage while the change is written (old and new taken) and after it."""
        self.usage_during = abi.SlotUsage.from_buffer_copy(usage)
        for key, base in self.table_base.items():
            set_table_chunks(self.usage_during.table_chunks, base, self.table_len[key], True)
        for index in self.service_index.values():
            set_bit(self.usage_during.services, index)
        for slot in self.new_slots:
            set_bit(self.usage_during.reals, slot)
        self.usage_after = abi.SlotUsage.from_buffer_copy(self.usage_during)
        for key in self.removed_services:
            if self.current[key].index not in self.service_index.values():
                clear_bit(self.usage_after.services, self.current[key].index)
        for slot in self.freed_reals:
            clear_bit(self.usage_after.reals, slot)
        for base, length in self.old_tables:
            set_table_chunks(self.usage_after.table_chunks, base, length, False)

    def slots_of(self, key: ServiceKey) -> list[int]:
        """The real slots of a service after the change."""
        return list(self.real_slot.get(key, {}).values())

    def freed_of(self, key: ServiceKey) -> list[int]:
        """The slots this change takes from a service."""
        return self._freed_of.get(self.current[key].index, []) if key in self.current else []
