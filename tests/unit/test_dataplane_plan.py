"""The planning step of a data plane change (pyvs.dataplane.plan.Plan): pure, what the maps hold is passed in."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.dataplane import abi
from pyvs.dataplane.base import DataplaneError
from pyvs.dataplane.codec import RealSlot, be_to_ip, clear_bits, fold_be, ip_to_be, port_to_be, set_bit, svc_value
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
