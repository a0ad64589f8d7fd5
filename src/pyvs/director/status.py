"""The daemon's status endpoint (GET /status: JSON, GET /metrics: Prometheus) and the `pyvs status` table."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import urllib.request
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pyvs.director import metrics

if TYPE_CHECKING:
    from pyvs.director.daemon import Director

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def answer(director: Director, path: str) -> bytes:
    path = path.split("?", 1)[0]
    try:
        if path in ("/", "/status"):
            body = json.dumps(await director.status_snapshot(), indent=2).encode()
            return _response("200 OK", "application/json", body)
        if path == "/metrics":
            snapshot = await director.status_snapshot()
            return _response("200 OK", metrics.CONTENT_TYPE, metrics.render(snapshot))
    except Exception as exc:  # noqa: BLE001 - a failed read is the client's answer, not the daemon's end
        log.exception("status request %s failed", path)
        return _response("500 Internal Server Error", "text/plain", f"{exc}\n".encode())
    return _response("404 Not Found", "text/plain", b"not found: try /status or /metrics\n")


async def serve_status(director: Director, host: str, port: int) -> asyncio.Server:

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request[:MAX_REQUEST].decode(errors="replace").split(" ", 2) + ["", ""]
            if method != "GET":
                writer.write(_response("405 Method Not Allowed", "text/plain", b"GET only\n"))
            else:
                writer.write(await answer(director, path))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)


def fetch_status(url: str, timeout: float = REQUEST_TIMEOUT) -> dict[str, Any]:
    """The daemon's JSON status (url: its base address, e.g. http://127.0.0.1:9180)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=timeout) as response:  # noqa: S310
        data: dict[str, Any] = json.load(response)
    return data


def _was(previous: dict[str, Any] | None, key: str) -> float | None:
    return None if previous is None else float(previous[key])


def _rate(now: float, before: float | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    return f"{max(0.0, now - before) / seconds:.1f}"


def _bytes_rate(now: float, before: float | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    value = max(0.0, now - before) / seconds
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}TB"


def status_table(current: dict[str, Any], previous: dict[str, Any] | None = None) -> list[str]:
    """The terminal table: per service and real, health, weight, connections and rates since `previous`."""
    seconds = current["time"] - previous["time"] if previous else 0.0
    before: dict[tuple[str, str], dict[str, Any]] = {}
    for svc in (previous or {}).get("services", []):
        before[(svc["name"], "")] = svc
        for real in svc["reals"]:
            before[(svc["name"], f"{real['address']}:{real['port']}")] = real
    rows = [["service / real", "health", "weight", "active", "inact", "conn/s", "pkt/s", "bytes/s", "conns"]]
    for svc in current["services"]:
        old = before.get((svc["name"], ""))
        quorum = "ok" if svc["quorum"] else "LOST" + (" (sorry)" if svc["sorry_active"] else "")
        rows.append([f"{svc['name']} {svc['scheduler']}", quorum, "", "", "",
                     _rate(svc["conns"], _was(old, "conns"), seconds),
                     _rate(svc["packets"], _was(old, "packets"), seconds),
                     _bytes_rate(svc["bytes"], _was(old, "bytes"), seconds), str(svc["conns"])])
        for real in svc["reals"]:
            name = f"{real['address']}:{real['port']}"
            old = before.get((svc["name"], name))
            label = f"  -> {name}" + (" (sorry server)" if real["role"] == "sorry" else "")
            health = real["health"].upper() if real["health"] == "down" else real["health"]
            rows.append([label, health, "-" if real["weight"] is None else str(real["weight"]),
                         str(real["active"]), str(real["inactive"]),
                         _rate(real["conns"], _was(old, "conns"), seconds),
                         _rate(real["packets"], _was(old, "packets"), seconds),
                         _bytes_rate(real["bytes"], _was(old, "bytes"), seconds), str(real["conns"])])
    for svc in current.get("other_services", []):  # in the data plane, not in the daemon's config
        rows.append([f"{svc['name']} {svc['scheduler']}", "not the daemon's (left alone)", "", "", "", "", "", "",
                     str(svc["conns"])])
        rows.extend([f"  -> {real['address']}:{real['port']}", "-", str(real["weight"]), "", "", "", "", "", ""]
                    for real in svc["reals"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    drops = {k[len("drop_"):]: v for k, v in current["counters"].items() if k.startswith("drop_") and v}
    header = (f"pyvs director pid {current['pid']}, config {current['config']} (generation {current['generation']})"
              + ("" if current["last_reload"]["ok"] else f"; LAST RELOAD FAILED: {current['last_reload']['error']}"))
    footer = "drops: " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
    return [header, *lines, footer]


def watch(url: str, interval: float, count: int | None, show: Callable[[list[str], bool], None]) -> None:
    """Print the table every `interval` seconds (`count` times, or until interrupted)."""
    previous = fetch_status(url)
    shown = 0
    while count is None or shown < count:
        time.sleep(interval)
        current = fetch_status(url)
        show(status_table(current, previous), shown > 0)
        previous = current
        shown += 1
