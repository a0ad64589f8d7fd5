"""sd_notify without libsystemd: the datagram protocol, and the daemon's READY=1 only after the first checks."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyvs.director import runfile, sdnotify
from pyvs.director.checks import Health
from pyvs.director.config import CheckSpec, parse_config
from pyvs.director.daemon import Director


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify"))
    yield sock
    sock.close()


def test_sends_one_datagram_of_fields(notify_socket: socket.socket) -> None:
    assert sdnotify.ready("2 services")
    assert notify_socket.recv(4096) == b"READY=1\nSTATUS=2 services"
    assert sdnotify.stopping()
    assert notify_socket.recv(4096) == b"STOPPING=1"


def test_abstract_socket() -> None:
    name = f"pyvs-test-notify-{id(object())}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_without_systemd_nothing_is_sent(tmp_path: Path) -> None:
    assert not sdnotify.notify("READY=1", environ={})
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "nobody-listens")})
    assert not sdnotify.notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1234"})


def test_daemon_is_ready_after_every_real_was_checked(notify_socket: socket.socket, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runfile, "RUN_DIR", tmp_path)
    director = Director(parse_config('[director]\nstatus_listen = "off"\n'),
                        SimpleNamespace(pin_dir=tmp_path / "pyvsd-unit"))  # type: ignore[arg-type]
    healths = [Health(up=True), Health(up=True)]
    spec = SimpleNamespace(check=CheckSpec(interval=30.0, timeout=5.0))
    director.reals = {("svc", i): SimpleNamespace(spec=spec, health=h)  # type: ignore[misc]
                      for i, h in enumerate(healths)}
    notify_socket.setblocking(False)

    async def scenario() -> bytes:
        task = asyncio.get_running_loop().create_task(director._notify_ready())
        await asyncio.sleep(0.2)
        with pytest.raises(BlockingIOError):
            notify_socket.recv(100)  # no real checked yet: not ready
        healths[0].checks = 1
        healths[1].checks, healths[1].up = 1, False
        await asyncio.wait_for(task, 2)
        return notify_socket.recv(100)

    assert asyncio.run(scenario()) == b"READY=1\nSTATUS=0 services, 1/2 reals up"


def test_daemon_run_sends_ready_and_stopping(notify_socket: socket.socket, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runfile, "RUN_DIR", tmp_path)
    director = Director(parse_config('[director]\nstatus_listen = "off"\n'),
                        SimpleNamespace(pin_dir=tmp_path / "pyvsd-unit"))  # type: ignore[arg-type]

    async def scenario() -> None:
        running = asyncio.get_running_loop().create_task(director.run())
        await asyncio.sleep(0.3)
        director.stop()
        await asyncio.wait_for(running, 5)

    asyncio.run(scenario())
    assert notify_socket.recv(100).startswith(b"READY=1\n")
    assert notify_socket.recv(100) == b"STOPPING=1"
