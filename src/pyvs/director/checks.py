"""Health checks of real servers: TCP connect, HTTP/HTTPS GET and commands, run concurrently with asyncio.

Each probe is bounded by the check's timeout. A real goes down after `fall` failures in a row and up
again after `rise` successes in a row; after a failure while up, the next probe comes `retry_interval`
later (keepalived's delay_before_retry).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import random
import re
import signal
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyvs.director.config import CheckSpec, ScriptError, check_script_security, user_ids
from pyvs.model import IPAddress, endpoint_text

log = logging.getLogger(__name__)

MAX_HTTP_RESPONSE = 1 << 20  # bytes read from a checked web server
STATUS_LINE = re.compile(rb"HTTP/\d\.\d (\d{3})")
LINGER_RESET = struct.pack("ii", 1, 0)  # close with RST: no TIME_WAIT left behind by thousands of probes
COMMAND_OUTPUT = 200  # characters of a failed command's output kept for the message
MAX_PARALLEL_COMMANDS = 64


@dataclass(frozen=True)
class ProbeResult:
    ok: bool
    detail: str


@dataclass
class Health:
    """The health of one real: up or down, and the run of results that moves it."""

    up: bool
    successes: int = 0  # in a row
    failures: int = 0  # in a row
    transitions: int = 0
    detail: str = "not checked yet"
    since: float = field(default_factory=time.time)
    checks: int = 0
    checked_at: float | None = None  # time of the last result (None: not checked yet)
    last_ok: bool | None = None

    def record(self, result: ProbeResult, spec: CheckSpec) -> bool:
        """Count one probe result; True when the real changed state."""
        self.checks += 1
        self.detail = result.detail
        self.checked_at, self.last_ok = time.time(), result.ok
        if result.ok:
            self.successes, self.failures = self.successes + 1, 0
            flip = not self.up and self.successes >= spec.rise
        else:
            self.successes, self.failures = 0, self.failures + 1
            flip = self.up and self.failures >= spec.fall
        if flip:
            self.up = not self.up
            self.transitions += 1
            self.since = time.time()
        return flip


def _tls_context(verify: bool) -> ssl.SSLContext:
    context = ssl.create_default_context()
    if not verify:  # keepalived's SSL_GET does not verify either: the check is about the service answering
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


async def _tcp(rip: IPAddress, port: int) -> ProbeResult:
    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_INET if rip.version == 4 else socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_RESET)
        await loop.sock_connect(sock, (str(rip), port))
    finally:
        # On a timeout the loop would unregister the fd only later: by then a new probe may own that
        # number, and the loop spins on it. Unregister before closing.
        loop.remove_writer(sock.fileno())
        sock.close()
    return ProbeResult(True, f"tcp {endpoint_text(rip, port)} connected")


async def _http(spec: CheckSpec, rip: IPAddress, port: int) -> ProbeResult:
    scheme = spec.type
    context = _tls_context(spec.tls_verify) if scheme == "https" else None
    host = spec.host or (f"[{rip}]" if rip.version == 6 else str(rip))  # RFC 3986: an IPv6 literal in brackets
    reader, writer = await asyncio.open_connection(
        str(rip), port, ssl=context, server_hostname=spec.host if context and spec.host else None
    )
    try:
        writer.write(f"GET {spec.path} HTTP/1.0\r\nHost: {host}\r\nUser-Agent: pyvs-director\r\n"
                     "Connection: close\r\n\r\n".encode())
        await writer.drain()
        response = b""
        while len(response) < MAX_HTTP_RESPONSE and (chunk := await reader.read(65536)):
            response += chunk
    finally:
        writer.close()
    url = f"{scheme}://{host}:{port}{spec.path}"
    match = STATUS_LINE.match(response)
    if not match:
        return ProbeResult(False, f"{url}: not an HTTP response")
    status = int(match.group(1))
    if not spec.accepts(status):
        return ProbeResult(False, f"{url}: status {status}")
    body = response.partition(b"\r\n\r\n")[2]
    if spec.digest and (digest := hashlib.md5(body).hexdigest()) != spec.digest:  # noqa: S324 (keepalived's)
        return ProbeResult(False, f"{url}: body digest {digest}, expected {spec.digest}")
    if spec.regex and not re.search(spec.regex.encode(), body):
        return ProbeResult(False, f"{url}: body does not match /{spec.regex}/")
    return ProbeResult(True, f"{url}: status {status}")


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)  # the whole group: what the command started dies too
    except ProcessLookupError:
        pass


def command_identity(user: str | None) -> dict[str, object]:
    """The subprocess arguments that run a command as `user` (its uid, gid and no extra groups)."""
    if user is None:
        return {}
    uid, gid = user_ids(user)
    return {"user": uid, "group": gid, "extra_groups": []}


async def _command(spec: CheckSpec, rip: IPAddress, port: int, limit: asyncio.Semaphore) -> ProbeResult:
    argv = [arg.replace("{rip}", str(rip)).replace("{port}", str(port)) for arg in spec.command]
    async with limit:
        try:
            check_script_security(argv[0])  # again at each run: the file may have changed since the load
            identity = command_identity(spec.user)
        except (ScriptError, ValueError) as exc:
            return ProbeResult(False, f"check command {argv[0]}: cannot run: {exc}")
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True, **identity,  # type: ignore[arg-type]
            )  # fmt: skip
        except OSError as exc:
            return ProbeResult(False, f"check command {argv[0]}: cannot run: {exc.strerror}")
        try:
            async with asyncio.timeout(spec.timeout):
                output, _ = await proc.communicate()
        except TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            return ProbeResult(False, f"check command {argv[0]} did not finish within {spec.timeout}s: killed")
        except asyncio.CancelledError:
            _kill_group(proc.pid)
            raise
    text = output.decode(errors="replace").strip()[-COMMAND_OUTPUT:]
    if proc.returncode == 0:
        return ProbeResult(True, f"check command {argv[0]} exited 0")
    return ProbeResult(False, f"check command {argv[0]} exited {proc.returncode}" + (f": {text}" if text else ""))


async def probe(spec: CheckSpec, rip: IPAddress, port: int, commands: asyncio.Semaphore) -> ProbeResult:
    """One check of one real, never longer than spec.timeout (plus the time to kill a hung command)."""
    port = spec.port or port
    if spec.type == "none":
        return ProbeResult(True, "not checked")
    if spec.type == "command":
        return await _command(spec, rip, port, commands)
    try:
        # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancellation (the daemon's stop)
        async with asyncio.timeout(spec.timeout):
            if spec.type == "tcp":
                return await _tcp(rip, port)
            return await _http(spec, rip, port)
    except TimeoutError:
        return ProbeResult(False, f"{spec.type} {endpoint_text(rip, port)}: no answer within {spec.timeout}s")
    except ssl.SSLError as exc:
        return ProbeResult(False, f"{spec.type} {endpoint_text(rip, port)}: TLS error: {exc.reason or exc}")
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        return ProbeResult(False, f"{spec.type} {endpoint_text(rip, port)}: {reason}")


OnResult = Callable[[ProbeResult, Health, bool], None]


async def check_loop(spec: CheckSpec, rip: IPAddress, port: int, health: Health, on_result: OnResult,
                     commands: asyncio.Semaphore) -> None:
    """Probe one real forever; on_result(result, health, changed) after each probe."""
    await asyncio.sleep(random.uniform(0, spec.interval))  # spread thousands of checks over the interval
    while True:
        started = time.monotonic()
        result = await probe(spec, rip, port, commands)
        changed = health.record(result, spec)
        on_result(result, health, changed)
        retrying = health.up and health.failures > 0
        delay = (spec.retry_interval or spec.interval) if retrying else spec.interval
        await asyncio.sleep(max(0.0, delay - (time.monotonic() - started)))


def command_limit() -> asyncio.Semaphore:
    """Bounds the check commands running at once (call inside the event loop)."""
    return asyncio.Semaphore(MAX_PARALLEL_COMMANDS)
