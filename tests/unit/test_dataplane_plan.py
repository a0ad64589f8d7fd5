"""The planning step of a data plane change (pyvs.dataplane.plan.Plan): pure, what the maps hold is passed in."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.dataplane import abi
from pyvs.dataplane.base import DataplaneError
from pyvs.dataplane.codec import (
    RealSlot,
    be_to_ip,
    clear_bit,
    clear_bits,
    fold_be,
    ip_to_be,
    port_to_be,
    set_bit,
    svc_value,
    table_chunks,
)
from pyvs.dataplane.neighbours import NextHop
from pyvs.dataplane.plan import Plan
from pyvs.model import IPAddress, Protocol, Real, Rules, Service, ServiceKey

VIP = IPv4Address("198.18.0.100")
WEB, DNS = ServiceKey(Protocol.TCP, VIP, 80), ServiceKey(Protocol.UDP, VIP, 53)
RS1, RS2, RS3 = (IPv4Address(f"198.18.2.{i}") for i in (11, 12, 13))
resolved: list[IPAddress] = []


def resolver(rip: IPAddress) -> NextHop:
    resolved.append(rip)
    return NextHop(2, "02:00:00:00:00:0a", f"02:00:00:00:00:{int(rip) & 0xFF:02x}")


def service(key: ServiceKey, *reals: tuple[IPAddress, int], scheduler: str = "wrr") -> Service:
    items = [Real(rip, key.port, weight) for rip, weight in reals]
    return Service(key, scheduler, reals={r.key: r for r in items})


def held(rules: Rules) -> tuple[dict[ServiceKey, abi.Svc], list[RealSlot], abi.SlotUsage]:
    """What the maps would hold after `rules` were written by a plan from nothing."""
    plan = Plan({}, [], rules, resolver, abi.SlotUsage(), lambda slot: abi.RealEntry())
    current = {key: svc_value(rules.services[key], index) for key, index in plan.service_index.items()}
    for key, svc in current.items():
        svc.table_base, svc.table_len = plan.table_base[key], plan.table_len[key]
    return current, [RealSlot(slot, entry, plan.addresses6.get(slot) or be_to_ip(entry.rip))
                     for slot, entry in plan.entries.items()], plan.usage_after


def test_a_new_rule_set_takes_the_first_free_slots_and_resolves_each_address_once() -> None:
    resolved.clear()
    rules = Rules({WEB: service(WEB, (RS1, 1), (RS2, 3)), DNS: service(DNS, (RS1, 1))})
    plan = Plan({}, [], rules, resolver, abi.SlotUsage(), lambda slot: abi.RealEntry())
    assert plan.service_index == {WEB: 0, DNS: 1} or plan.service_index == {DNS: 0, WEB: 1}
    assert sorted(resolved) == [RS1, RS2]  # RS1 serves two services: one resolution
    assert plan.changed_services == {WEB, DNS} and plan.removed_services == [] and plan.freed_reals == []
    assert len(plan.new_slots) == 3 and all(plan.entries[s].gen == 1 for s in plan.new_slots)
    entry = plan.entries[plan.real_slot[WEB][(int(RS2), 80)]]
    assert (entry.rip, entry.port, entry.weight, entry.flags) == (ip_to_be(RS2), port_to_be(80), 3, abi.REAL_ACTIVE)
    slots, positions = plan.tables[WEB]
    assert sorted(positions) == sorted([0] + [1] * 3)  # wrr 1:3: one RS1, three RS2 in the table
    assert set(clear_bits(plan.usage_after.reals, 8)) == set(range(8)) - plan.new_slots


def test_an_unchanged_service_is_not_rewritten_and_a_weight_change_keeps_the_slot() -> None:
    rules = Rules({WEB: service(WEB, (RS1, 1), (RS2, 1)), DNS: service(DNS, (RS1, 1))})
    current, slots, usage = held(rules)
    changed = Rules({WEB: service(WEB, (RS1, 1), (RS2, 5)), DNS: service(DNS, (RS1, 1))})
    plan = Plan(current, slots, changed, resolver, usage, lambda slot: abi.RealEntry())
    assert plan.changed_services == {WEB} and plan.new_slots == set()
    [slot] = [s for s, changed_here in plan.real_changed.items() if changed_here]
    assert plan.entries[slot].weight == 5 and plan.real_slot[WEB][(int(RS2), 80)] == slot


def test_a_removed_real_frees_its_slot_after_the_write_and_a_weight_0_keeps_the_last_weight() -> None:
    rules = Rules({WEB: service(WEB, (RS1, 2), (RS2, 1))})
    current, slots, usage = held(rules)
    rs2_slot = next(s.slot for s in slots if s.entry.rip == ip_to_be(RS2))
    plan = Plan(current, slots, Rules({WEB: service(WEB, (RS1, 0))}), resolver, usage, lambda slot: abi.RealEntry())
    assert plan.freed_reals == [rs2_slot] and plan.freed_of(WEB) == [rs2_slot]
    assert rs2_slot not in set(clear_bits(plan.usage_during.reals, 8))  # still taken while written
    assert rs2_slot in set(clear_bits(plan.usage_after.reals, 8))  # free after
    rs1 = plan.entries[plan.real_slot[WEB][(int(RS1), 80)]]
    assert (rs1.weight, rs1.last_weight) == (0, 2)


def test_a_removed_service_gives_its_index_to_a_new_one_and_a_reused_slot_a_new_generation() -> None:
    current, slots, usage = held(Rules({WEB: service(WEB, (RS1, 1))}))
    [rs1] = slots
    plan = Plan(current, slots, Rules({DNS: service(DNS, (RS3, 1))}), resolver, usage,
                lambda slot: abi.RealEntry())
    assert plan.removed_services == [WEB] and plan.service_index == {DNS: current[WEB].index}
    [new] = plan.new_slots
    assert plan.freed_reals == [rs1.slot] and new != rs1.slot  # a slot freed by this change is not reused in it
    later = Plan({}, [], Rules({WEB: service(WEB, (RS2, 1))}), resolver, abi.SlotUsage(),
                 lambda slot: abi.RealEntry(gen=7))  # a free slot that served other reals before
    [slot] = later.new_slots
    assert later.entries[slot].gen == 8


def test_a_refused_rule_set_raises_before_anything_is_decided_for_the_maps() -> None:
    full = abi.SlotUsage()
    for index in range(abi.MAX_SERVICES):
        set_bit(full.services, index)
    with pytest.raises(DataplaneError, match="too many services"):
        Plan({}, [], Rules({WEB: service(WEB)}), resolver, full, lambda slot: abi.RealEntry())
    with pytest.raises(DataplaneError, match="differs from the service port"):
        bad = Service(WEB, "rr", reals={(RS1, 81): Real(RS1, 81, 1)})
        Plan({}, [], Rules({WEB: bad}), resolver, abi.SlotUsage(), lambda slot: abi.RealEntry())


def taken_chunks(usage: abi.SlotUsage) -> set[int]:
    return set(range(abi.TABLE_CHUNKS)) - set(clear_bits(usage.table_chunks, abi.TABLE_CHUNKS))


def test_each_new_table_gets_its_own_run_of_the_pool_and_the_old_run_is_freed_after_the_write() -> None:
    rules = Rules({WEB: service(WEB, (RS1, 1), scheduler="mh"), DNS: service(DNS, (RS1, 1), (RS2, 1))})
    current, slots, usage = held(rules)
    web, dns = (set(table_chunks(current[k].table_base, current[k].table_len)) for k in (WEB, DNS))
    assert current[WEB].table_len == 4093 and len(web) == 16 and current[DNS].table_len == 2 and len(dns) == 1
    assert not web & dns and taken_chunks(usage) == web | dns
    bigger = Rules({WEB: Service(WEB, "mh", reals=rules.services[WEB].reals, mh_table_size=131071),
                    DNS: rules.services[DNS]})
    plan = Plan(current, slots, bigger, resolver, usage, lambda slot: abi.RealEntry())
    assert plan.changed_services == {WEB} and plan.table_len[WEB] == 131071
    new = set(table_chunks(plan.table_base[WEB], 131071))
    assert len(new) == 512 and not new & (web | dns)  # written beside the live table, which packets still read
    assert taken_chunks(plan.usage_during) == web | dns | new
    assert taken_chunks(plan.usage_after) == dns | new
    assert max(new) == abi.TABLE_CHUNKS - 1 and min(web | dns) == 0  # large tables from the top, small from the bottom


def test_a_table_that_finds_no_room_in_the_pool_is_refused_before_anything_is_decided() -> None:
    usage = abi.SlotUsage()
    for chunk in range(abi.TABLE_CHUNKS):
        if chunk % 100:  # free runs of one chunk only: room for rr tables, none for a 4093-slot mh table
            set_bit(usage.table_chunks, chunk)
    with pytest.raises(DataplaneError, match=r"service 198.18.0.100:80: no room for its mh table in the scheduler "
                                             r"table pool \(83968 of 8388608 slots free, the largest free run 256\) "
                                             r"\(a change needs room for its new tables beside the old\)"):
        Plan({}, [], Rules({WEB: service(WEB, (RS1, 1), scheduler="mh")}), resolver, usage,
             lambda slot: abi.RealEntry())
    for chunk in range(abi.TABLE_CHUNKS - 512, abi.TABLE_CHUNKS):
        clear_bit(usage.table_chunks, chunk)  # one free run of the largest table's size
    small = Plan({}, [], Rules({DNS: service(DNS, (RS1, 1))}), resolver, usage, lambda slot: abi.RealEntry())
    assert small.table_base[DNS] == 0 and small.table_len[DNS] == 1  # a hole at the bottom
    with pytest.raises(DataplaneError, match="keeps room for one more table"):  # it would take the last large run
        Plan({}, [], Rules({WEB: service(WEB, (RS1, 1), scheduler="mh")}), resolver, usage,
             lambda slot: abi.RealEntry())


def test_the_pool_keeps_room_for_one_largest_table_so_that_any_service_can_still_change() -> None:
    usage = abi.SlotUsage()
    big = -(-abi.TABLE_MAX // abi.TABLE_CHUNK)
    for chunk in range(abi.TABLE_CHUNKS - 2 * big):
        set_bit(usage.table_chunks, chunk)
    size = {"mh_table_size": abi.TABLE_MAX}
    first = Plan({}, [], Rules({WEB: Service(WEB, "mh", reals=service(WEB, (RS1, 1)).reals, **size)}), resolver, usage,
                 lambda slot: abi.RealEntry())  # leaves one run of the largest size free
    with pytest.raises(DataplaneError, match="keeps room for one more table of 131071 slots"):
        Plan({}, [], Rules({WEB: Service(WEB, "mh", reals=service(WEB, (RS1, 1)).reals, **size)}), resolver,
             first.usage_after, lambda slot: abi.RealEntry())
    current = {WEB: svc_value(Service(WEB, "mh", **size), 0)}
    current[WEB].table_base, current[WEB].table_len = first.table_base[WEB], first.table_len[WEB]
    slots = [RealSlot(slot, entry, be_to_ip(entry.rip)) for slot, entry in first.entries.items()]
    again = Plan(current, slots, Rules({WEB: Service(WEB, "mh", reals=service(WEB, (RS1, 1), (RS2, 1)).reals, **size)}),
                 resolver, first.usage_after, lambda slot: abi.RealEntry())  # the full pool still lets it change
    assert again.table_base[WEB] != first.table_base[WEB]


def test_ipv6_reals_are_flagged_their_addresses_kept_apart_and_matched_on_the_next_change() -> None:
    resolved.clear()
    vip6 = IPv6Address("2001:db8::100")
    web6 = ServiceKey(Protocol.TCP, vip6, 80)
    rs6 = IPv6Address("2001:db8:2::11")
    compatible = IPv6Address("::198.18.2.11")  # its integer is RS1's: keyed by address, each is resolved
    rules = Rules({WEB: service(WEB, (RS1, 1)), web6: service(web6, (rs6, 1), (compatible, 2))})
    plan = Plan({}, [], rules, resolver, abi.SlotUsage(), lambda slot: abi.RealEntry())
    assert sorted(resolved, key=str) == sorted([RS1, rs6, compatible], key=str)
    six = {plan.real_slot[web6][(int(r), 80)]: r for r in (rs6, compatible)}
    assert plan.addresses6 == six
    for slot, rip in six.items():
        entry = plan.entries[slot]
        assert entry.flags == abi.REAL_ACTIVE | abi.REAL_IPV6 and entry.rip == fold_be(rip)
    four = plan.entries[plan.real_slot[WEB][(int(RS1), 80)]]
    assert four.flags == abi.REAL_ACTIVE and four.rip == ip_to_be(RS1)
    current, slots, usage = held(rules)
    again = Plan(current, slots, rules, resolver, usage, lambda slot: abi.RealEntry())
    assert again.changed_services == set() and again.new_slots == set() and again.freed_reals == []


def test_ipv6_services_take_runs_of_the_same_pool_each_of_its_own_size() -> None:
    web6 = ServiceKey(Protocol.TCP, IPv6Address("2001:db8::100"), 80)
    mh6 = Service(web6, "mh", reals=service(web6, (IPv6Address("2001:db8:2::11"), 1)).reals, mh_table_size=16381)
    rules = Rules({WEB: service(WEB, (RS1, 1), scheduler="mh"), web6: mh6})
    current, slots, usage = held(rules)
    assert current[WEB].table_len == 4093 and current[web6].table_len == 16381 and current[web6].table_size == 16381
    web, six = (set(table_chunks(current[k].table_base, current[k].table_len)) for k in (WEB, web6))
    assert len(six) == 64 and not web & six and taken_chunks(usage) == web | six
    smaller = Rules({WEB: rules.services[WEB], web6: Service(web6, "mh", reals=mh6.reals, mh_table_size=251)})
    plan = Plan(current, slots, smaller, resolver, usage, lambda slot: abi.RealEntry())
    assert plan.changed_services == {web6} and plan.table_len[web6] == 251
    assert taken_chunks(plan.usage_after) == web | set(table_chunks(plan.table_base[web6], 251))
