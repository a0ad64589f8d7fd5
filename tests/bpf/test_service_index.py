"""One service read and written alone (pyvsadm -A -E -D -a -e -d): the same rules and forwarding as a
whole apply, an index that stays in step with the maps, one writer at a time."""

from __future__ import annotations

import io
import multiprocessing
import random
from ipaddress import IPv4Address

import pytest

from pyvs.admin.cli import main as pyvsadm
from pyvs.dataplane import Dataplane, DataplaneError, open_dataplane
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey

from .conftest import REALS, static_neighbours
from .test_xdp import syn

VIP = IPv4Address("198.18.0.100")
KEYS = [ServiceKey(Protocol.TCP, VIP, 80), ServiceKey(Protocol.UDP, VIP, 80),
        ServiceKey(Protocol.TCP, IPv4Address("198.18.0.101"), 443)]
RIPS = [rip for rip, (mac, ifindex) in REALS.items() if ifindex == 0 and not mac.startswith("00") and rip.version == 4]


def random_service(rng: random.Random, key: ServiceKey) -> Service:
    svc = Service(key, rng.choice(["rr", "wrr", "wlc", "sh", "mh"]))
    for rip in rng.sample(RIPS, rng.randint(0, len(RIPS))):
        svc.reals[(rip, key.port)] = Real(rip, key.port, rng.randint(0, 5))
    return svc


def test_one_service_at_a_time_gives_the_rules_of_a_whole_apply(dataplane: Dataplane) -> None:
    rng = random.Random(7)
    expected = Rules()
    for step in range(60):
        key = rng.choice(KEYS)
        if key in expected.services and rng.random() < 0.3:
            del expected.services[key]
            dataplane.apply_service(key, None)
        else:
            expected.services[key] = random_service(rng, key)
            dataplane.apply_service(key, expected.services[key])
        if step % 10 == 9:  # a whole apply in between keeps the index as well
            dataplane.apply(expected)
        assert dataplane.read_rules() == expected, f"step {step}"
        for k in KEYS:
            assert dataplane.read_service(k) == expected.services.get(k)
        assert dataplane.index_problems() == [], f"step {step}"


def test_a_service_added_alone_forwards_and_deleted_alone_stops(dataplane: Dataplane) -> None:
    key = KEYS[0]
    assert dataplane.test_run(syn()).verdict_name == "XDP_PASS"
    svc = Service(key, "rr", reals={(RIPS[0], 80): Real(RIPS[0], 80)})
    dataplane.apply_service(key, svc)
    out = dataplane.test_run(syn())
    assert out.verdict_name == "XDP_TX"
    assert out.data[:6] == bytes.fromhex(REALS[RIPS[0]][0].replace(":", ""))
    dataplane.apply_service(key, None)
    assert dataplane.test_run(syn(40001)).verdict_name == "XDP_PASS"
    assert dataplane.read_rules() == Rules() and dataplane.index_problems() == []


def test_a_refused_change_of_one_service_changes_nothing(dataplane: Dataplane) -> None:
    key = KEYS[0]
    dataplane.apply_service(key, Service(key, "wrr", reals={(RIPS[0], 80): Real(RIPS[0], 80, 3)}))
    before = dataplane.read_rules()
    wide = Service(key, "wrr", reals={(RIPS[i], 80): Real(RIPS[i], 80, w) for i, w in enumerate((65535, 65533, 65531))})
    with pytest.raises(DataplaneError, match="table needs"):
        dataplane.apply_service(key, wide)
    unknown = Service(key, "rr", reals={(IPv4Address("198.18.2.99"), 80): Real(IPv4Address("198.18.2.99"), 80)})
    with pytest.raises(KeyError):  # the test's neighbour table knows no such real
        dataplane.apply_service(key, unknown)
    assert dataplane.read_rules() == before and dataplane.index_problems() == []


def _add_reals(pin_dir: str, first: int, count: int) -> int:
    """A second process running pyvsadm -a against the same pinned maps."""
    failures = 0
    with open_dataplane(pin_dir, static_neighbours) as dp:
        for n in range(first, first + count):
            rip = IPv4Address(int(RIPS[0]) + 256 * n)  # distinct addresses with RIPS[0]'s MAC
            REALS[rip] = REALS[RIPS[0]]
            line = f"-a -t {VIP}:80 -r {rip} -g -w 1"
            failures += pyvsadm(line.split(), stdout=io.StringIO(), stderr=io.StringIO(), dataplane=dp) != 0
    return failures


def test_two_pyvsadm_processes_adding_reals_at_once_lose_none(dataplane: Dataplane) -> None:
    dataplane.apply_service(KEYS[0], Service(KEYS[0], "rr"))
    context = multiprocessing.get_context("fork")
    with context.Pool(2) as pool:
        failures = pool.starmap(_add_reals, [(str(dataplane.pin_dir), 0, 40), (str(dataplane.pin_dir), 40, 40)])
    assert failures == [0, 0]
    svc = dataplane.read_service(KEYS[0])
    assert svc is not None and len(svc.reals) == 80
    assert dataplane.index_problems() == []
