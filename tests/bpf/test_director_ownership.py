"""The director daemon on a real data plane (in this process, no lab): it owns the services of its config and
only those, undoes hand edits of its own services (drift), follows [director] changes on reload or refuses
them, and survives failures of its background work."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address
from pathlib import Path
from urllib.request import urlopen

import pytest

from pyvs.dataplane import Dataplane, open_dataplane, scratch_dataplane
from pyvs.dataplane.neighbours import ZERO_MAC, NeighbourError, NextHop
from pyvs.director.config import load_config
from pyvs.director.daemon import DataplaneSnapshot, Director, DirectorError, read_run_file
from pyvs.model import Protocol, Real, Service, ServiceKey

from .conftest import static_neighbours

VIP = IPv4Address("198.18.0.100")
OWNED = ServiceKey(Protocol.TCP, VIP, 80)
HAND = ServiceKey(Protocol.TCP, VIP, 9000)
LATER = ServiceKey(Protocol.UDP, VIP, 53)
RS1, RS2, RS3 = (IPv4Address(f"198.18.2.1{n}") for n in (1, 2, 3))


def config_text(flags: Path, extra: str = "", director: str = 'status_listen = "off"') -> str:
    check = json.dumps(["test", "-e", str(flags / "{rip}")])
    return f"""
[director]
{director}
drift_check = 0.2

[[service]]
vip = "{VIP}"
port = 80
scheduler = "sh"
scheduler_flags = ["sh-port"]
persistence_timeout = 600
persistence_granularity = "255.255.255.0"
check = {{ type = "command", command = {check}, interval = 0.1, timeout = 0.1 }}

[[service.real]]
address = "{RS1}"

[[service.real]]
address = "{RS2}"
weight = 2
{extra}
"""


@pytest.fixture
def dp() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvsd-owner", static_neighbours) as plane:
        yield plane


@pytest.fixture
def admin(dp: Dataplane) -> Iterator[Dataplane]:
    """A second handle on the same maps: what pyvsadm, another process, sees and does."""
    with open_dataplane(dp.pin_dir, static_neighbours) as plane:
        yield plane


def hand_service(key: ServiceKey, *reals: IPv4Address) -> Service:
    return Service(key, "rr", reals={(r, key.port): Real(r, key.port, 1) for r in reals})


async def until(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.02)


def start(config: Path, dp: Dataplane) -> tuple[Director, asyncio.Task[None]]:
    loaded = load_config(config)
    director = Director(loaded, dp)
    director.adopt(loaded, dp.read_rules())
    return director, asyncio.get_running_loop().create_task(director.run())


def weights(admin: Dataplane, key: ServiceKey) -> dict[IPv4Address, int] | None:
    svc = admin.read_service(key)
    return None if svc is None else {r.rip: r.weight for r in svc.reals.values()}


def test_the_daemon_leaves_services_it_does_not_own_alone(dp: Dataplane, admin: Dataplane, tmp_path: Path,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyvs.director")
    (tmp_path / str(RS1)).touch()
    (tmp_path / str(RS2)).touch()
    config = tmp_path / "director.toml"
    config.write_text(config_text(tmp_path))
    admin.apply_service(HAND, hand_service(HAND, RS3))  # made with pyvsadm before the daemon starts

    async def scenario() -> None:
        director, running = start(config, dp)
        await until(lambda: weights(admin, OWNED) == {RS1: 1, RS2: 2}, "the daemon writes its service")
        owned = admin.read_service(OWNED)
        assert owned is not None
        assert (owned.scheduler, owned.persistent, str(owned.netmask), owned.sched_flags) == \
            ("sh", 600, "255.255.255.0", ("sh-port",))
        assert weights(admin, HAND) == {RS3: 1}
        admin.apply_service(LATER, hand_service(LATER, RS3))  # and one while it runs
        (tmp_path / str(RS1)).unlink()  # a health change: the daemon writes again
        await until(lambda: weights(admin, OWNED) == {RS2: 2}, "rs1 leaves the daemon's service")
        await asyncio.sleep(0.5)  # several drift comparisons
        assert weights(admin, HAND) == {RS3: 1} and weights(admin, LATER) == {RS3: 1}

        report = director.status(await director.in_dataplane_thread(lambda: DataplaneSnapshot.read(dp)))
        assert [(s["name"], s["owner"]) for s in report["services"]] == [(f"tcp/{VIP}:80", "daemon")]
        assert [(s["name"], s["owner"]) for s in report["other_services"]] == \
            [(f"tcp/{VIP}:9000", "other"), (f"udp/{VIP}:53", "other")]
        run = read_run_file(dp.pin_dir)
        assert run is not None and run["services"] == [f"tcp/{VIP}:80"]
        director.stop()
        await running

    asyncio.run(scenario())
    assert weights(admin, HAND) == {RS3: 1} and weights(admin, LATER) == {RS3: 1}
    assert f'event=service_left_alone service=tcp/{VIP}:9000' in caplog.text


def test_a_hand_edit_of_the_daemons_service_is_reported_as_drift_and_undone(
    dp: Dataplane, admin: Dataplane, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyvs.director")
    (tmp_path / str(RS1)).touch()
    (tmp_path / str(RS2)).touch()
    config = tmp_path / "director.toml"
    config.write_text(config_text(tmp_path))

    async def scenario() -> None:
        director, running = start(config, dp)
        await until(lambda: weights(admin, OWNED) == {RS1: 1, RS2: 2}, "the daemon writes its service")

        def edit(svc: Service | None) -> Service | None:
            assert svc is not None
            svc.reals[(RS3, 80)] = Real(RS3, 80, 5)
            svc.reals[(RS2, 80)].weight = 7
            return svc

        admin.update_service(OWNED, edit)
        await until(lambda: weights(admin, OWNED) == {RS1: 1, RS2: 2}, "the hand edit is undone")
        director.stop()
        await running

    asyncio.run(scenario())
    drift = [r.getMessage() for r in caplog.records if "event=drift" in r.getMessage()]
    assert len(drift) == 1, drift
    assert f"real {RS2}:80 weight 7 (expected 2)" in drift[0] and f"real {RS3}:80 added" in drift[0]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get_status(url: str) -> dict:  # type: ignore[type-arg]
    with urlopen(f"{url}/status", timeout=2) as response:  # noqa: S310 - loopback, the test's own daemon
        return json.load(response)  # type: ignore[no-any-return]


def test_reload_moves_the_status_endpoint_and_refuses_an_interface_change(
    dp: Dataplane, admin: Dataplane, tmp_path: Path
) -> None:
    (tmp_path / str(RS1)).touch()
    (tmp_path / str(RS2)).touch()
    first, second = free_port(), free_port()
    config = tmp_path / "director.toml"
    config.write_text(config_text(tmp_path, director=f'status_listen = "127.0.0.1:{first}"'))

    async def scenario() -> None:
        director, running = start(config, dp)
        await until(lambda: (read_run_file(dp.pin_dir) or {}).get("status_url") == f"http://127.0.0.1:{first}",
                    "the run file names the status address")
        config.write_text(config_text(tmp_path, director=f'status_listen = "127.0.0.1:{second}"'))
        assert await director.reload()
        run = read_run_file(dp.pin_dir)
        assert run is not None and run["status_url"] == f"http://127.0.0.1:{second}" and run["generation"] == 2
        status = await asyncio.to_thread(get_status, f"http://127.0.0.1:{second}")
        assert status["generation"] == 2
        with pytest.raises(OSError):
            await asyncio.to_thread(get_status, f"http://127.0.0.1:{first}")

        with socket.socket() as taken:  # an address the daemon cannot bind: refused, the old one stays
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            busy = taken.getsockname()[1]
            config.write_text(config_text(tmp_path, director=f'status_listen = "127.0.0.1:{busy}"'))
            assert not await director.reload()
        assert f"cannot listen on 127.0.0.1:{busy}" in director.last_reload["error"]
        run = read_run_file(dp.pin_dir)
        assert run is not None and run["status_url"] == f"http://127.0.0.1:{second}" and run["generation"] == 2

        config.write_text(config_text(tmp_path, director=f'status_listen = "127.0.0.1:{second}"\n'
                                                         'interface = "pyvsd-nic0"'))
        assert not await director.reload()
        assert "[director] interface changed (none -> pyvsd-nic0)" in director.last_reload["error"]
        assert "restart it" in director.last_reload["error"]
        assert director.config.interface is None and director.generation == 2
        director.stop()
        await running

    asyncio.run(scenario())


def test_the_mac_resolver_survives_an_unroutable_real(dp: Dataplane, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="pyvs.director")
    silent = IPv4Address("198.18.2.14")
    calls: list[int] = []

    def resolver(rip: IPv4Address) -> NextHop:
        if rip != silent:
            return static_neighbours(rip)
        calls.append(1)
        if len(calls) == 1:  # added while silent: in the data plane, MAC unknown
            return NextHop(0, "02:00:00:00:00:0a", ZERO_MAC)
        if len(calls) <= 3:  # then its route went away for a while
            raise NeighbourError(f"{rip} is not on a directly attached network")
        return NextHop(0, "02:00:00:00:00:0a", "02:00:00:00:00:14")

    dp._resolver = resolver  # the data plane's own resolution, told what the network says
    config = tmp_path / "director.toml"
    config.write_text(f'[director]\nstatus_listen = "off"\n[[service]]\nvip = "{VIP}"\nport = 80\n'
                      f'check = {{ type = "none" }}\n[[service.real]]\naddress = "{silent}"\n')

    async def scenario() -> None:
        director, running = start(config, dp)
        director.resolve_interval = 0.05
        await until(lambda: getattr(dp.real_next_hops().get((OWNED, (silent, 80))), "dmac", "") == "02:00:00:00:00:14",
                    "the real's MAC is resolved after the failures")
        director.stop()
        await running

    asyncio.run(scenario())
    assert "event=mac_resolve_failed" in caplog.text and "event=mac_resolved" in caplog.text


def test_a_daemon_that_cannot_bind_its_status_address_changes_nothing(dp: Dataplane, admin: Dataplane,
                                                                      tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        config = tmp_path / "director.toml"
        config.write_text(config_text(tmp_path, director=f'status_listen = "127.0.0.1:{busy}"'))

        async def scenario() -> None:
            _, running = start(config, dp)
            with pytest.raises(DirectorError, match=f"cannot listen on 127.0.0.1:{busy}"):
                await running

        asyncio.run(scenario())
    assert admin.read_service(OWNED) is None and read_run_file(dp.pin_dir) is None
