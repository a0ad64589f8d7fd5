"""The daemon's background tasks are supervised: a failure is logged and the task restarted; a task that keeps
failing ends the daemon with an error (exit status 1), never a daemon that silently stopped doing its job."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest

from pyvs.director import daemon, runfile
from pyvs.director.config import parse_config
from pyvs.director.daemon import Director, DirectorError


def test_a_failing_task_is_restarted_and_one_that_keeps_failing_ends_the_daemon(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="pyvs.director")
    monkeypatch.setattr(daemon, "RESTART_DELAY", 0.01)
    monkeypatch.setattr(runfile, "RUN_DIR", tmp_path)
    # No service, no interface: the daemon never touches a data plane here; only its name is used.
    director = Director(parse_config('[director]\nstatus_listen = "off"\n'),
                        SimpleNamespace(pin_dir=tmp_path / "pyvsd-unit"))  # type: ignore[arg-type]
    attempts: list[int] = []

    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise KeyError("a real removed by a reload")
        await asyncio.sleep(3600)

    async def broken() -> None:
        raise RuntimeError("always")

    async def scenario() -> None:
        running = asyncio.get_running_loop().create_task(director.run())
        await asyncio.sleep(0.1)
        assert (tmp_path / "pyvsd-unit.json").exists()
        director.spawn("flaky", flaky)
        for _ in range(100):
            if len(attempts) == 3:
                break
            await asyncio.sleep(0.02)
        assert len(attempts) == 3 and not running.done()
        director.spawn("broken", broken)
        with pytest.raises(DirectorError, match=r"task 'broken' failed 6 times within 60s, last: RuntimeError"):
            await asyncio.wait_for(running, 5)

    asyncio.run(scenario())
    assert caplog.text.count('event=task_failed task="flaky" error="KeyError') == 2
    assert "event=task_restarted task=flaky failures=2" in caplog.text
    assert "event=daemon_failing" in caplog.text and not (tmp_path / "pyvsd-unit.json").exists()
