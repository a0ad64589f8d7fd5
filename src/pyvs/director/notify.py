"""Notifications: a command run on each state change (keepalived's notify_up/notify_down), argv only.

The argv may carry {event}, {service}, {real} and {state}; the same values are in the environment
as PYVS_EVENT, PYVS_SERVICE, PYVS_REAL and PYVS_STATE. A command that runs too long is killed. A command
that someone other than root could change is not run (checked before each run); with `user`, it runs as
that user.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Sequence

from pyvs.director.config import ScriptError, check_script_security, user_ids

log = logging.getLogger(__name__)


def event_argv(template: Sequence[str], fields: dict[str, str]) -> list[str]:
    argv = []
    for arg in template:
        for name, value in fields.items():
            arg = arg.replace("{" + name + "}", value)
        argv.append(arg)
    return argv


class Notifier:
    """Runs the notify command for each event, in the background, each bounded by `timeout`."""

    def __init__(self, argv: Sequence[str], timeout: float, user: str | None = None):
        self.argv = tuple(argv)
        self.timeout = timeout
        self.user = user
        self._running: set[asyncio.Task[None]] = set()

    def notify(self, event: str, service: str = "", real: str = "", state: str = "") -> None:
        if not self.argv:
            return
        fields = {"event": event, "service": service, "real": real, "state": state}
        task = asyncio.get_running_loop().create_task(self._run(event_argv(self.argv, fields), fields))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, argv: list[str], fields: dict[str, str]) -> None:
        env = dict(os.environ, **{f"PYVS_{name.upper()}": value for name, value in fields.items()})
        identity: dict[str, object] = {}
        try:
            check_script_security(argv[0])
            if self.user is not None:
                uid, gid = user_ids(self.user)
                identity = {"user": uid, "group": gid, "extra_groups": []}
        except (ScriptError, ValueError) as exc:
            log.error("event=notify_refused command=%s error=%r", argv[0], str(exc))
            return
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL, env=env, start_new_session=True, **identity,  # type: ignore[arg-type]
            )  # fmt: skip
        except OSError as exc:
            log.error("event=notify_failed command=%s error=%r", argv[0], exc.strerror)
            return
        try:
            async with asyncio.timeout(self.timeout):
                code = await proc.wait()
        except TimeoutError:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            await proc.wait()
            log.error("event=notify_failed command=%s error=%r", argv[0], f"killed after {self.timeout}s")
            return
        if code != 0:
            log.warning("event=notify_failed command=%s exit=%d", argv[0], code)

    async def drain(self, timeout: float = 2.0) -> None:
        """Wait a little for running notifications (at shutdown)."""
        if self._running:
            await asyncio.wait(list(self._running), timeout=timeout)
