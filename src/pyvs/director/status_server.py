"""The daemon's status endpoint: GET /status (JSON), GET /metrics (Prometheus), from one snapshot each."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable

from pyvs.director import metrics
from pyvs.director.statusdoc import StatusDocument

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
Snapshot = Callable[[], Awaitable[StatusDocument]]


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n")
    return head.encode() + body


async def answer(snapshot: Snapshot, path: str) -> bytes:
    path = path.split("?", 1)[0]
    try:
        if path in ("/", "/status"):
            body = json.dumps(await snapshot(), indent=2).encode()
            return _response("200 OK", "application/json", body)
        if path == "/metrics":
            return _response("200 OK", metrics.CONTENT_TYPE, metrics.render(await snapshot()))
    except Exception as exc:  # noqa: BLE001 - a failed read is the client's answer, not the daemon's end
        log.exception("status request %s failed", path)
        return _response("500 Internal Server Error", "text/plain", f"{exc}\n".encode())
    return _response("404 Not Found", "text/plain", b"not found: try /status or /metrics\n")


async def serve_status(snapshot: Snapshot, host: str, port: int) -> asyncio.Server:
    """Serve the status documents that `snapshot` makes (the daemon's, on its event loop)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, *_ = request[:MAX_REQUEST].decode(errors="replace").split(" ", 2) + ["", ""]
            if method != "GET":
                writer.write(_response("405 Method Not Allowed", "text/plain", b"GET only\n"))
            else:
                writer.write(await answer(snapshot, path))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
