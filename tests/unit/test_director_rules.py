"""The rules the daemon derives from config and health: remove vs inhibit, quorum and sorry server, adoption."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from typing import Any

from pyvs.director.config import parse_config
from pyvs.director.daemon import Director, real_name, service_name
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey, validate_real

KEY = ServiceKey(Protocol.TCP, IPv4Address("198.18.0.100"), 80)
RS1, RS2, SORRY = (IPv4Address("198.18.2.11"), 80), (IPv4Address("198.18.2.12"), 80), (IPv4Address("198.18.2.20"), 80)
CONFIG = """
[[service]]
vip = "198.18.0.100"
port = 80
scheduler = "wrr"
sorry_server = "198.18.2.20"
[[service.real]]
address = "198.18.2.11"
weight = 2
[[service.real]]
address = "198.18.2.12"
inhibit_on_failure = true
"""


def director(current: Rules | None = None, text: str = CONFIG) -> Director:
    config = parse_config(text)
    daemon = Director(config, dp=None)  # type: ignore[arg-type]  # desired_rules never reads the data plane
    daemon.adopt(config, current or Rules())
    return daemon


def weights(daemon: Director, **kwargs: Any) -> dict[tuple[IPv4Address, int], int]:
    return {k: r.weight for k, r in daemon.desired_rules(**kwargs).services[KEY].reals.items()}


def set_health(daemon: Director, real: tuple[IPv4Address, int], up: bool) -> None:
    daemon.reals[(KEY, real)].health.up = up
    svc = daemon.config.service(KEY)
    assert svc is not None
    daemon._update_quorum(svc)


def test_a_down_real_is_removed_or_inhibited_and_the_sorry_server_takes_over_when_all_are_down() -> None:
    daemon = director()
    assert weights(daemon) == {RS1: 2, RS2: 1}
    set_health(daemon, RS1, False)
    assert weights(daemon) == {RS2: 1}
    set_health(daemon, RS2, False)
    assert weights(daemon) == {SORRY: 1}
    assert weights(daemon, quiesce={(KEY, RS2)}) == {SORRY: 1, RS2: 0}
    set_health(daemon, RS2, True)
    assert weights(daemon) == {RS2: 1}
    assert weights(daemon, quiesce={(KEY, RS1)}) == {RS1: 0, RS2: 1}


def test_quorum_with_hysteresis() -> None:
    daemon = director(text=CONFIG.replace('scheduler = "wrr"', 'scheduler = "wrr"\nquorum = 2\nhysteresis = 1'))
    set_health(daemon, RS1, False)  # live weight 1 >= 2 - 1: kept
    assert daemon.quorum[KEY] and weights(daemon) == {RS2: 1}
    set_health(daemon, RS2, False)
    assert not daemon.quorum[KEY]
    set_health(daemon, RS2, True)  # 1 < 2 + 1: still lost
    assert not daemon.quorum[KEY] and weights(daemon) == {SORRY: 1}
    set_health(daemon, RS1, True)  # 3 >= 3: regained
    assert daemon.quorum[KEY] and weights(daemon) == {RS1: 2, RS2: 1}


def test_adoption_takes_health_from_the_data_plane() -> None:
    current = Rules({KEY: Service(KEY, "wrr", reals={RS2: Real(*RS2, 0)})})
    daemon = director(current)  # rs1 absent (removed), rs2 inhibited: both were down
    assert not daemon.reals[(KEY, RS1)].health.up and not daemon.reals[(KEY, RS2)].health.up
    sorry = Rules({KEY: Service(KEY, "wrr", reals={SORRY: Real(*SORRY, 1)})})
    assert weights(director(sorry)) == {SORRY: 1}
    fresh = director(text=CONFIG.replace('scheduler = "wrr"', 'scheduler = "wrr"\nalpha = true'))
    assert weights(fresh) == {SORRY: 1}


def test_an_ipv6_service_gets_its_prefix_length_reals_and_sorry_server_and_names_in_brackets() -> None:
    text = CONFIG.replace("198.18.0.100", "2001:db8::100").replace('"198.18.2.20"', '"[2001:db8:2::20]:80"') \
        .replace("198.18.2.11", "2001:db8:2::11").replace("198.18.2.12", "2001:db8:2::12") \
        .replace('scheduler = "wrr"', 'scheduler = "wrr"\npersistence_timeout = 60\npersistence_granularity = 64')
    daemon = director(text=text)
    key6 = ServiceKey(Protocol.TCP, IPv6Address("2001:db8::100"), 80)
    rs1, sorry = (IPv6Address("2001:db8:2::11"), 80), (IPv6Address("2001:db8:2::20"), 80)
    svc = daemon.desired_rules().services[key6]
    assert (svc.netmask, svc.persistent) == (64, 60)
    assert {k: r.weight for k, r in svc.reals.items()} == {rs1: 2, (IPv6Address("2001:db8:2::12"), 80): 1}
    for real in svc.reals.values():
        validate_real(svc, real)
    for target in list(daemon.reals):
        daemon.reals[target].health.up = False
    daemon._update_quorum(daemon.config.services[0])
    assert list(daemon.desired_rules().services[key6].reals) == [sorry]
    assert (service_name(key6), real_name(rs1)) == ("tcp/[2001:db8::100]:80", "[2001:db8:2::11]:80")
