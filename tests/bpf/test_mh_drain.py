"""mh keeps its table when a real is drained to weight 0, as IPVS does (the table is built from each real's
last non-zero weight): the drained real's flows are refused, or moved with mh-fallback; no other flow moves."""

from __future__ import annotations

from ipaddress import IPv4Address

from scapy.layers.inet import TCP

from pyvs.dataplane import Dataplane
from pyvs.model import Protocol, Real, Service, ServiceKey

from .test_xdp import VIP, frame, real_of

KEY = ServiceKey(Protocol.TCP, VIP, 80)
RIPS = [IPv4Address(f"198.18.2.{n}") for n in (11, 12, 13)]
CLIENTS = [f"198.19.{n // 250}.{n % 250 + 1}" for n in range(300)]


def mh(weights: tuple[int, ...], flags: tuple[str, ...] = ()) -> Service:
    return Service(KEY, "mh", sched_flags=flags,
                   reals={(rip, 80): Real(rip, 80, w) for rip, w in zip(RIPS, weights, strict=True)})


def choices(dp: Dataplane, round_: int) -> list[IPv4Address | None]:
    """The real each client's new connection goes to (None: refused); a new source port each round."""
    result: list[IPv4Address | None] = []
    for client in CLIENTS:
        out = dp.test_run(frame(TCP(sport=20000 + round_, dport=80, flags="S"), src=client))
        result.append(real_of(out.data) if out.verdict_name == "XDP_TX" else None)
    return result


def test_draining_a_real_moves_no_other_flow_and_refuses_its_own(dataplane: Dataplane) -> None:
    dataplane.apply_service(KEY, mh((1, 1, 1)))
    before = choices(dataplane, 0)
    assert set(before) == set(RIPS)
    drained = RIPS[1]

    dataplane.apply_service(KEY, mh((1, 0, 1)))
    svc = dataplane.read_service(KEY)
    assert svc is not None and svc.reals[(drained, 80)].last_weight == 1
    drop_before = dataplane.counters()["drop_no_real"]
    during = choices(dataplane, 1)
    for was, now in zip(before, during, strict=True):
        assert now == (None if was == drained else was)
    assert dataplane.counters()["drop_no_real"] - drop_before == before.count(drained)

    dataplane.apply_service(KEY, mh((1, 0, 1), ("mh-fallback",)))
    fallback = choices(dataplane, 2)
    for was, now in zip(before, fallback, strict=True):
        assert now == was if was != drained else now in (RIPS[0], RIPS[2])

    dataplane.apply_service(KEY, mh((1, 1, 1)))
    assert choices(dataplane, 3) == before


def test_a_real_added_with_weight_0_takes_no_slot(dataplane: Dataplane) -> None:
    dataplane.apply_service(KEY, mh((1, 0, 1)))
    svc = dataplane.read_service(KEY)
    assert svc is not None and svc.reals[(RIPS[1], 80)].last_weight == 0
    assert None not in choices(dataplane, 0)
