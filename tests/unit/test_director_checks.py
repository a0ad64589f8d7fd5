"""Health checks against real servers on loopback: TCP, HTTP (status, digest, regex, Host), commands, timeouts."""

from __future__ import annotations

import asyncio
import hashlib
import pwd
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from pyvs.director.checks import Health, ProbeResult, probe
from pyvs.director.config import CheckSpec
from pyvs.director.metrics import render
from pyvs.director.notify import Notifier, event_argv
from pyvs.director.status_client import status_table

LOOPBACK = IPv4Address("127.0.0.1")
LOOPBACK6 = IPv6Address("::1")
BODY = b"healthy rs1\n"


async def _web(status: int, seen: list[bytes]) -> asyncio.Server:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append(await reader.readuntil(b"\r\n\r\n"))
        writer.write(f"HTTP/1.0 {status} X\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
        await writer.drain()
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def run(check: CheckSpec, port: int = 0,
        server: Callable[[], Awaitable[asyncio.Server]] | None = None) -> tuple[ProbeResult, float]:
    async def main() -> tuple[ProbeResult, float]:
        listener = await server() if server else None
        target = listener.sockets[0].getsockname()[1] if listener else port
        started = time.monotonic()
        result = await probe(check, LOOPBACK, target, asyncio.Semaphore(4))
        if listener:
            listener.close()
        return result, time.monotonic() - started

    return asyncio.run(main())


def test_tcp_check_succeeds_on_a_listener_and_fails_on_a_closed_port() -> None:
    ok, _ = run(CheckSpec(type="tcp"), server=lambda: _web(200, []))
    assert ok == ProbeResult(True, ok.detail) and "connected" in ok.detail
    closed, _ = run(CheckSpec(type="tcp"), port=1)
    assert closed == ProbeResult(False, "tcp 127.0.0.1:1: Connection refused")


def test_http_check_looks_at_status_digest_regex_and_sends_the_host_header() -> None:
    seen: list[bytes] = []
    good = CheckSpec(type="http", path="/health", host="www.example.com", regex=r"healthy rs\d",
                     digest=hashlib.md5(BODY).hexdigest())  # noqa: S324
    result, _ = run(good, server=lambda: _web(200, seen))
    assert result.ok, result.detail
    assert seen[0].startswith(b"GET /health HTTP/1.0\r\nHost: www.example.com\r\n")
    result, _ = run(CheckSpec(type="http"), server=lambda: _web(500, []))
    assert not result.ok and result.detail.endswith("status 500")
    result, _ = run(CheckSpec(type="http", digest="0" * 32), server=lambda: _web(200, []))
    assert not result.ok and "body digest" in result.detail
    result, _ = run(CheckSpec(type="http", regex="sick"), server=lambda: _web(200, []))
    assert result == ProbeResult(False, result.detail) and "does not match /sick/" in result.detail


def test_a_server_that_accepts_but_never_answers_times_out() -> None:
    async def silent() -> asyncio.Server:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await asyncio.sleep(5)

        return await asyncio.start_server(handle, "127.0.0.1", 0)

    result, took = run(CheckSpec(type="http", interval=1, timeout=0.3), server=silent)
    assert not result.ok and result.detail.endswith("no answer within 0.3s")
    assert took < 1.0


def test_command_check_exit_code_output_and_a_hung_command_is_killed() -> None:
    ok, _ = run(CheckSpec(type="command", command=(sys.executable, "-c", "import sys; sys.exit(sys.argv[1] != "
                                                   "'127.0.0.1:8080')", "{rip}:{port}")), port=8080)
    assert ok.ok, ok.detail
    failed, _ = run(CheckSpec(type="command", command=(sys.executable, "-c", "print('disk full'); exit(3)")))
    assert failed == ProbeResult(False, f"check command {sys.executable} exited 3: disk full")
    hung, took = run(CheckSpec(type="command", interval=1, timeout=0.3, command=("sleep", "30")))
    assert hung == ProbeResult(False, "check command sleep did not finish within 0.3s: killed")
    assert took < 1.0
    missing, _ = run(CheckSpec(type="command", command=("/nonexistent/check",)))
    assert missing == ProbeResult(False, "check command /nonexistent/check: cannot run: No such file or directory")


def test_rise_and_fall_count_results_in_a_row() -> None:
    spec = CheckSpec(rise=2, fall=3)
    health = Health(up=True)
    ok, bad = ProbeResult(True, "ok"), ProbeResult(False, "bad")
    assert [health.record(r, spec) for r in (bad, bad, ok, bad, bad, bad)] == [False] * 5 + [True]
    assert not health.up and health.transitions == 1
    assert [health.record(r, spec) for r in (ok, bad, ok, ok)] == [False, False, False, True]
    assert health.up and health.transitions == 2 and health.checks == 10


def _snapshot(conns: int, at: float) -> dict:  # type: ignore[type-arg]
    real = {"address": "198.18.2.11", "port": 80, "role": "real", "weight": 1, "in_dataplane": True,
            "health": "down", "transitions": 1,
            "active": 2, "inactive": 3, "conns": conns, "packets": conns * 10, "bytes": conns * 1000}
    return {"pid": 1, "config": "d.toml", "generation": 2, "time": at, "last_reload": {"ok": True},
            "counters": {"rx": 5, "drop_no_real": 4, "drop_fragment": 0},
            "services": [{"name": "tcp/198.18.0.100:80", "proto": "tcp", "vip": "198.18.0.100", "port": 80,
                          "scheduler": "rr", "quorum": False, "sorry_active": True,
                          "conns": conns, "packets": conns * 10, "bytes": conns * 1000, "reals": [real]}]}


def test_status_table_shows_health_and_rates_between_two_samples() -> None:
    lines = status_table(_snapshot(30, 12.0), _snapshot(10, 10.0))
    assert lines[0] == "pyvs director pid 1, config d.toml (generation 2)"
    assert lines[1].split() == ["service", "/", "real", "health", "weight", "active", "inact", "conn/s", "pkt/s",
                                "bytes/s", "conns"]
    assert lines[2].split() == ["tcp/198.18.0.100:80", "rr", "LOST", "(sorry)", "10.0", "100.0", "10.0KB", "30"]
    assert lines[3].split() == ["->", "198.18.2.11:80", "DOWN", "1", "2", "3", "10.0", "100.0", "10.0KB", "30"]
    assert lines[4] == "drops: no_real 4"
    other = {"name": "tcp/198.18.0.100:9000", "scheduler": "wlc", "conns": 7,
             "reals": [{"address": "198.18.2.13", "port": 9000, "weight": 3}]}
    lines = status_table({**_snapshot(30, 12.0), "other_services": [other]})
    assert lines[4].split() == ["tcp/198.18.0.100:9000", "wlc", "not", "the", "daemon's", "(left", "alone)", "7"]
    assert lines[5].split() == ["->", "198.18.2.13:9000", "-", "3"]


def test_metrics_carry_health_transitions_and_drop_reasons() -> None:
    text = render(_snapshot(30, 1.0)).decode()
    labels = 'real="198.18.2.11:80",role="real",service="tcp/198.18.0.100:80"'
    assert f"pyvs_real_up{{{labels}}} 0.0" in text
    assert f"pyvs_real_health_transitions_total{{{labels}}} 1.0" in text
    assert f"pyvs_real_active_connections{{{labels}}} 2.0" in text
    assert 'pyvs_drops_total{reason="no_real"} 4.0' in text
    assert 'pyvs_service_sorry_active{service="tcp/198.18.0.100:80"} 1.0' in text


def test_notify_argv_placeholders() -> None:
    fields = {"event": "real_down", "service": "tcp/198.18.0.100:80", "real": "198.18.2.11:80", "state": "down"}
    assert event_argv(["/bin/n", "{event}", "--real={real}"], fields) == ["/bin/n", "real_down",
                                                                           "--real=198.18.2.11:80"]


def test_a_command_check_runs_as_the_configured_user_and_refuses_an_unsafe_script(tmp_path: Path) -> None:
    as_nobody = ("/bin/sh", "-c", 'test "$(id -u)" = "$(id -u nobody)"')
    assert run(CheckSpec(type="command", command=as_nobody, user="nobody"))[0].ok
    assert not run(CheckSpec(type="command", command=as_nobody))[0].ok  # as root
    unsafe = tmp_path / "check"
    unsafe.write_text("#!/bin/sh\nexit 0\n")
    unsafe.chmod(0o777)  # changed after the config was loaded: refused at the run
    result, _ = run(CheckSpec(type="command", command=(str(unsafe),)))
    assert not result.ok and "is writable by a user other than root" in result.detail


def test_notify_runs_as_the_configured_user_and_refuses_an_unsafe_script(tmp_path: Path,
                                                                         caplog: pytest.LogCaptureFixture) -> None:
    shared = Path(tempfile.mkdtemp(prefix="pyvsd-notify-", dir="/tmp"))
    try:
        shared.chmod(0o1777)  # the user may write its answer here
        unsafe = tmp_path / "notify"
        unsafe.write_text("#!/bin/sh\ntouch \"$0.ran\"\n")
        unsafe.chmod(0o777)

        async def notify_all() -> None:
            as_nobody = Notifier(["/bin/sh", "-c", 'id -u > "$0/uid"', str(shared)], timeout=5, user="nobody")
            as_nobody.notify("real_down")
            refused = Notifier([str(unsafe)], timeout=5)
            refused.notify("real_down")
            await as_nobody.drain(5)
            await refused.drain(5)

        asyncio.run(notify_all())
        assert (shared / "uid").read_text().strip() == str(pwd.getpwnam("nobody").pw_uid)
        assert not Path(f"{unsafe}.ran").exists()
        assert "event=notify_refused" in caplog.text and "is writable by a user other than root" in caplog.text
    finally:
        shutil.rmtree(shared)


def test_metrics_carry_the_connection_tables_as_the_sweeper_counted_them() -> None:
    tables = {"entries": 900, "size": 1024, "evicted": 12, "half_open": 40, "half_open_size": 256,
              "half_open_evicted": 409000, "new_per_second": 35.5, "passes": 9, "nearly_full": 1}
    text = render({**_snapshot(30, 1.0), "tables": tables}).decode()
    assert 'pyvs_conn_table_entries{table="connections"} 900.0' in text
    assert 'pyvs_conn_table_size{table="half_open"} 256.0' in text
    assert 'pyvs_conn_table_evicted_total{table="half_open"} 409000.0' in text
    assert "pyvs_new_connections_per_second 35.5" in text


def test_checks_reach_an_ipv6_real_with_a_bracketed_host() -> None:
    seen: list[bytes] = []

    async def main() -> tuple[ProbeResult, ProbeResult, ProbeResult]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(f"HTTP/1.0 200 X\r\nContent-Length: {len(BODY)}\r\n\r\n".encode() + BODY)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "::1", 0)
        port = server.sockets[0].getsockname()[1]
        tcp = await probe(CheckSpec(type="tcp"), LOOPBACK6, port, asyncio.Semaphore(4))
        http = await probe(CheckSpec(type="http", path="/h"), LOOPBACK6, port, asyncio.Semaphore(4))
        server.close()
        closed = await probe(CheckSpec(type="tcp"), LOOPBACK6, 1, asyncio.Semaphore(4))
        return tcp, http, closed

    tcp, http, closed = asyncio.run(main())
    assert tcp.ok and tcp.detail.startswith("tcp [::1]:") and tcp.detail.endswith(" connected")
    assert http.ok and http.detail.startswith("http://[::1]:") and http.detail.endswith("/h: status 200")
    assert seen[0].startswith(b"GET /h HTTP/1.0\r\nHost: [::1]\r\n")
    assert closed == ProbeResult(False, "tcp [::1]:1: Connection refused")


def test_an_overloaded_real_is_shown_in_the_table_and_the_metrics() -> None:
    snapshot = _snapshot(30, 12.0)
    snapshot["services"][0]["reals"][0].update(health="up", overloaded=True)
    assert status_table(snapshot)[3].split()[2] == "up,OVERLOAD"
    labels = 'real="198.18.2.11:80",role="real",service="tcp/198.18.0.100:80"'
    assert f"pyvs_real_overloaded{{{labels}}} 1.0" in render(snapshot).decode()
    assert f"pyvs_real_overloaded{{{labels}}} 0.0" in render(_snapshot(30, 12.0)).decode()
