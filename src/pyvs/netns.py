"""Network namespace helpers: run programs and Python code inside a named netns.

Only the network namespace is switched (setns). Unlike `ip netns exec`, /sys is not
remounted, so pinned BPF objects under /sys/fs/bpf stay visible.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from pyroute2 import netns as _netns

log = logging.getLogger(__name__)

NETNS_RUN_DIR = Path("/run/netns")
ENV_NETNS = "PYVS_NETNS"
# /proc/thread-self: setns() switches only the calling thread, /proc/self is the main thread.
THREAD_NETNS = "/proc/thread-self/ns/net"


class NetnsError(Exception):
    """A namespace is missing or a command inside it failed."""


def exists(netns: str) -> bool:
    return (NETNS_RUN_DIR / netns).exists()


def list_netns() -> list[str]:
    if not NETNS_RUN_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_RUN_DIR.iterdir())


def create(netns: str) -> None:
    _netns.create(netns)


def remove(netns: str) -> None:
    _netns.remove(netns)


SO_NETNS_COOKIE = 71  # <asm-generic/socket.h>; Python's socket module does not name it


def netns_cookie() -> int:
    """The cookie of the calling thread's network namespace: unique while the machine runs, where an inode is
    reused by the next namespace (state kept per namespace must be keyed by it)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        return int.from_bytes(sock.getsockopt(socket.SOL_SOCKET, SO_NETNS_COOKIE, 8), "little")


def current_netns_name() -> str | None:
    """Name of the calling thread's netns in /run/netns, or None (e.g. the root netns)."""
    here = os.stat(THREAD_NETNS)
    for name in list_netns():
        try:
            there = os.stat(NETNS_RUN_DIR / name)
        except OSError:
            continue
        if (there.st_dev, there.st_ino) == (here.st_dev, here.st_ino):
            return name
    return None


def _enter(netns: str) -> None:
    """Switch the calling thread into an existing netns (never creates one)."""
    if not exists(netns):
        raise NetnsError(f"network namespace {netns} does not exist")
    _netns.setns(netns, flags=0)


def _env(netns: str | None, env: Mapping[str, str] | None) -> dict[str, str]:
    result = dict(os.environ if env is None else env)
    if netns is not None:
        result[ENV_NETNS] = netns
    return result


def run_in_netns(
    netns: str | None,
    argv: Sequence[str],
    *,
    check: bool = True,
    input: str | None = None,
    timeout: float | None = 60,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv inside netns (None: the current one) and capture its output as text."""
    if netns is not None and not exists(netns):
        raise NetnsError(f"network namespace {netns} does not exist")
    preexec = None if netns is None else lambda: _enter(netns)
    try:
        proc = subprocess.run(
            list(argv),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=_env(netns, env),
            preexec_fn=preexec,
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise NetnsError(f"{' '.join(argv)} in {netns or 'current netns'}: {exc}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip()
        raise NetnsError(f"{' '.join(argv)} in {netns or 'current netns'} exited {proc.returncode}: {detail}")
    return proc


def spawn_in_netns(
    netns: str,
    argv: Sequence[str],
    *,
    log_path: Path,
    env: Mapping[str, str] | None = None,
) -> int:
    """Start a detached long-running process (own session) inside netns; returns its PID."""
    if not exists(netns):
        raise NetnsError(f"network namespace {netns} does not exist")
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=_env(netns, env),
            preexec_fn=lambda: _enter(netns),
            start_new_session=True,
            close_fds=True,
        )
    # The process belongs to the lab, not to this Popen object: forget it so that
    # no ResourceWarning fires and Python does not track it.
    proc.returncode = 0
    return proc.pid


def exec_in_netns(netns: str, argv: Sequence[str]) -> None:
    """Replace the current process by argv running inside netns. Does not return."""
    if not argv:
        raise NetnsError("no command given")
    _enter(netns)
    os.environ[ENV_NETNS] = netns
    try:
        os.execvp(argv[0], list(argv))
    except OSError as exc:
        raise NetnsError(f"cannot run {argv[0]} in {netns}: {exc.strerror}") from exc


@contextmanager
def in_netns(netns: str) -> Iterator[None]:
    """Run the body with the calling thread inside netns, then switch back.

    Sockets created and /proc/sys files opened in the body belong to netns.
    """
    saved = os.open(THREAD_NETNS, os.O_RDONLY)
    try:
        _enter(netns)
        try:
            yield
        finally:
            _netns.setns(saved, flags=0)
    finally:
        os.close(saved)


def sysctl_path(key: str) -> Path:
    """/proc/sys path of a dotted key; the interface part of conf keys may contain dots."""
    for family in ("net.ipv4.conf.", "net.ipv6.conf.", "net.ipv4.neigh.", "net.ipv6.neigh."):
        if key.startswith(family):
            iface, _, name = key[len(family) :].rpartition(".")
            return Path("/proc/sys", *family.rstrip(".").split("."), iface, name)
    return Path("/proc/sys", *key.split("."))


def read_sysctl(key: str, netns: str | None = None) -> str:
    if netns is not None:
        with in_netns(netns):
            return read_sysctl(key)
    try:
        return sysctl_path(key).read_text().strip()
    except FileNotFoundError:
        raise NetnsError(f"no sysctl {key}") from None


def write_sysctl(key: str, value: str | int, netns: str | None = None) -> None:
    if netns is not None:
        with in_netns(netns):
            write_sysctl(key, value)
        return
    log.debug("sysctl %s=%s", key, value)
    try:
        sysctl_path(key).write_text(f"{value}\n")
    except FileNotFoundError:
        raise NetnsError(f"no sysctl {key}") from None
    except OSError as exc:
        raise NetnsError(f"cannot set {key}={value}: {exc.strerror}") from exc
