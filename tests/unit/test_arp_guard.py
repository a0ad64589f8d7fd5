"""The ARP guard's reading of the segment (pyvs.arp.watch.Guard): pure, time passed in."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyvs.arp.packets import ARP_REPLY, Arp, arp_probe, gratuitous_arp
from pyvs.arp.watch import Event, Guard, GuardConfig

DIRECTOR, REAL1, GATEWAY_MAC = "02:c6:12:00:03:01", "02:c6:12:00:04:01", "02:c6:12:00:02:01"
ATTACKER, NEW_NIC = "02:c6:12:00:06:01", "02:c6:12:00:44:01"
VIP, RIP1, GATEWAY = IPv4Address("198.18.0.100"), IPv4Address("198.18.2.11"), IPv4Address("198.18.0.1")
OTHER = IPv4Address("198.18.2.50")


def reply(ip: IPv4Address, mac: str) -> Arp:
    return Arp(ARP_REPLY, mac, ip, DIRECTOR, IPv4Address("0.0.0.0"), mac, DIRECTOR)


@pytest.fixture
def guard() -> Guard:
    return Guard({DIRECTOR}, {VIP}, {RIP1: REAL1}, {GATEWAY}, {}, {GATEWAY: GATEWAY_MAC, OTHER: "02:00:00:00:00:50"},
                 GuardConfig(flip_window=10.0, flip_count=3, garp_limit=5))


def kinds(events: list[Event]) -> list[str]:
    return [e.event for e in events]


def test_a_foreign_mac_answering_for_the_vip_is_a_conflict_naming_the_mac(guard: Guard) -> None:
    events = guard.observe(reply(VIP, REAL1), 0.0)
    assert kinds(events) == ["vip_conflict"]
    assert (events[0].ip, events[0].mac) == (str(VIP), REAL1)
    assert guard.counters["vip_conflict"] == 1


def test_the_directors_own_announcement_is_no_conflict(guard: Guard) -> None:
    assert guard.observe(gratuitous_arp(VIP, DIRECTOR), 0.0) == []


def test_the_same_conflict_is_reported_once_a_second(guard: Guard) -> None:
    assert kinds(guard.observe(reply(VIP, REAL1), 0.0)) == ["vip_conflict"]
    assert guard.observe(reply(VIP, REAL1), 0.5) == []
    assert kinds(guard.observe(reply(VIP, ATTACKER), 0.6)) == ["vip_conflict"]  # another MAC: new news
    assert kinds(guard.observe(reply(VIP, REAL1), 1.1)) == ["vip_conflict"]


def test_the_gateway_moving_to_another_mac_is_an_impersonation(guard: Guard) -> None:
    events = guard.observe(gratuitous_arp(GATEWAY, ATTACKER), 0.0)
    assert kinds(events) == ["gateway_impersonation"]
    assert (events[0].old_mac, events[0].mac, events[0].role) == (GATEWAY_MAC, ATTACKER, "gateway")


def test_another_host_moving_is_a_mac_change_and_a_same_mac_is_nothing(guard: Guard) -> None:
    assert guard.observe(reply(OTHER, "02:00:00:00:00:50"), 0.0) == []
    assert kinds(guard.observe(reply(OTHER, ATTACKER), 1.0)) == ["mac_change"]


def test_a_claim_for_a_real_is_reported_and_not_followed_unless_allowed(guard: Guard) -> None:
    events = guard.observe(reply(RIP1, NEW_NIC), 0.0)
    assert kinds(events) == ["real_mac_change"] and "not followed" in events[0].detail
    assert (events[0].old_mac, events[0].mac) == (REAL1, NEW_NIC)
    assert guard.decide(5.0) == [] and guard.reals[RIP1] == REAL1
    assert guard.observe(reply(RIP1, NEW_NIC), 0.1) == []  # reported once a second


def following() -> Guard:
    return Guard({DIRECTOR}, {VIP}, {RIP1: REAL1}, {GATEWAY}, {}, {},
                 GuardConfig(follow_real_macs=True, verify_time=0.5))


def test_a_new_mac_that_answers_while_the_old_one_is_silent_is_followed() -> None:
    guard = following()
    claimed = guard.observe(reply(RIP1, NEW_NIC), 0.0)
    assert kinds(claimed) == ["real_mac_change"] and "verifying" in claimed[0].detail
    assert guard.decide(0.2) == []  # still verifying
    assert guard.observe(reply(RIP1, NEW_NIC), 0.1) == []  # the new MAC answers the probe
    [verified] = guard.decide(0.6)
    assert (verified.event, verified.old_mac, verified.mac) == ("real_mac_verified", REAL1, NEW_NIC)
    assert guard.reals[RIP1] == NEW_NIC and guard.claims == {}


def test_a_forged_claim_is_rejected_when_the_old_mac_still_answers() -> None:
    guard = following()
    guard.observe(reply(RIP1, ATTACKER), 0.0)
    guard.observe(reply(RIP1, ATTACKER), 0.1)  # the forger answers too
    guard.observe(reply(RIP1, REAL1), 0.1)  # and so does the real
    [rejected] = guard.decide(0.5)
    assert rejected.event == "real_mac_rejected" and "still answers" in rejected.detail
    assert guard.reals[RIP1] == REAL1


def test_a_claim_whose_new_mac_stays_silent_is_rejected() -> None:
    guard = following()
    guard.observe(gratuitous_arp(RIP1, ATTACKER), 0.0)
    [rejected] = guard.decide(0.5)
    assert rejected.event == "real_mac_rejected" and "did not answer" in rejected.detail
    assert guard.reals[RIP1] == REAL1


def test_a_pinned_address_keeps_its_pin_and_each_claim_is_reported() -> None:
    guard = Guard({DIRECTOR}, {VIP}, {}, {GATEWAY}, {GATEWAY: GATEWAY_MAC})
    events = guard.observe(gratuitous_arp(GATEWAY, ATTACKER), 0.0)
    assert kinds(events) == ["pinned_mac_violation"]
    assert events[0].old_mac == GATEWAY_MAC and events[0].role == "gateway"
    assert guard.observe(reply(GATEWAY, GATEWAY_MAC), 0.2) == []  # the pinned MAC itself is fine
    assert guard.pins[GATEWAY] == GATEWAY_MAC


def test_three_changes_within_the_window_are_a_flip_flop(guard: Guard) -> None:
    seen = []
    for n, mac in enumerate([ATTACKER, GATEWAY_MAC, ATTACKER, GATEWAY_MAC]):
        seen += kinds(guard.observe(reply(GATEWAY, mac), float(n)))
    assert seen.count("flip_flop") == 1
    assert seen.count("gateway_impersonation") == 4


def test_changes_spread_wider_than_the_window_are_no_flip_flop(guard: Guard) -> None:
    seen = []
    for n, mac in enumerate([ATTACKER, GATEWAY_MAC, ATTACKER]):
        seen += kinds(guard.observe(reply(GATEWAY, mac), n * 6.0))
    assert "flip_flop" not in seen


def test_more_gratuitous_arps_than_the_limit_in_a_second_are_a_flood(guard: Guard) -> None:
    seen = []
    for n in range(8):
        seen += kinds(guard.observe(gratuitous_arp(OTHER, "02:00:00:00:00:50"), n * 0.1))
    assert seen == ["garp_flood"]  # the 6th within a second; reported once a second
    assert guard.counters["garp_flood"] == 1


def test_probes_claim_nothing(guard: Guard) -> None:
    assert guard.observe(arp_probe(VIP, ATTACKER), 0.0) == []
    assert guard.counters["arp_frames"] == 1


def test_events_serialize_to_one_json_line_and_a_text_line() -> None:
    event = Event("vip_conflict", str(VIP), REAL1, time=0.0, role="vip", detail="x")
    assert event.json().startswith('{"event": "vip_conflict", "ip": "198.18.0.100"')
    assert "\n" not in event.json()
    assert "vip_conflict ip=198.18.0.100 mac=02:c6:12:00:04:01 role=vip  x" in event.text()
