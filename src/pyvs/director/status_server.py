"""The daemon's status endpoint: GET /status (JSON), GET /metrics (Prometheus), from one snapshot each; GET /page
(and GET / from a browser) the live status page; GET /fingerprint the data plane's fingerprint of rules and tables
(read on demand: `pyvs doctor --peer` compares directors with it); POST /action/{drain,undrain} the page's optional
actions.

The page is one static file (page/status.html: plain HTML and JavaScript, no build step, nothing fetched from
elsewhere) that reads /status every few seconds. The actions exist only when the config sets `[director]
page_token`: a request must carry it in the X-Pyvs-Token header (a custom header: a form or link of another site
cannot send it, so no cross-site request can drain a real); without the setting, or with another token, the answer
is 403. Every action, and every refused one, is logged (event=page_action / page_action_refused).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from urllib.parse import parse_qs

from pyvs.director import metrics
from pyvs.director.statusdoc import StatusDocument

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
MAX_REQUEST = 8192
TOKEN_HEADER = "x-pyvs-token"
ACTIONS = ("drain", "undrain")
Snapshot = Callable[[], Awaitable[StatusDocument]]
Fingerprint = Callable[[], Awaitable[str]]
# (action, service name, real "address:port", client) -> (HTTP status code, message)
Act = Callable[[str, str, str, str], Awaitable[tuple[int, str]]]
REASONS = {200: "OK", 400: "Bad Request", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 500: "Internal Server Error"}


@dataclass(frozen=True)
class PageActions:
    """The daemon's side of the page's actions: its current token (None: actions off) and what runs them."""

    token: Callable[[], str | None]
    run: Act


def page_html() -> bytes:
    return resources.files("pyvs.director").joinpath("page/status.html").read_bytes()


def _response(status: str, content_type: str, body: bytes) -> bytes:
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nConnection: close\r\n\r\n")
    return head.encode() + body


def _json(code: int, document: object) -> bytes:
    return _response(f"{code} {REASONS.get(code, '')}", "application/json", json.dumps(document).encode() + b"\n")


def _log_refused(client: str, path: str, reason: str) -> None:
    log.warning("event=page_action_refused client=%s path=%s reason=%s", client, json.dumps(path), json.dumps(reason))


async def act(actions: PageActions | None, path: str, headers: dict[str, str], client: str = "") -> bytes:
    """POST /action/drain?service=tcp/198.18.0.100:80&real=198.18.2.11:80 (or undrain), token in X-Pyvs-Token."""
    route, _, query = path.partition("?")
    token = actions.token() if actions is not None else None
    if actions is None or not token:
        _log_refused(client, path, "actions are off (no [director] page_token)")
        return _json(403, {"ok": False, "error": "actions are off: the config sets no [director] page_token"})
    given = headers.get(TOKEN_HEADER, "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        _log_refused(client, path, "missing token" if not given else "wrong token")
        return _json(403, {"ok": False, "error": f"missing or wrong token (header {TOKEN_HEADER})"})
    action = route.removeprefix("/action/")
    params = parse_qs(query)
    service, real = params.get("service", [""])[0], params.get("real", [""])[0]
    if action not in ACTIONS:
        return _json(404, {"ok": False, "error": f"unknown action '{action}' (known: {', '.join(ACTIONS)})"})
    if not service or not real:
        return _json(400, {"ok": False, "error": "service=... and real=... are needed"})
    code, message = await actions.run(action, service, real, client)
    return _json(code, {"ok": code == 200, "message" if code == 200 else "error": message})


async def answer(snapshot: Snapshot, path: str, headers: dict[str, str] | None = None,
                 fingerprint: Fingerprint | None = None) -> bytes:
    """A GET request's answer."""
    path = path.split("?", 1)[0]
    headers = headers or {}
    try:
        if path == "/fingerprint" and fingerprint is not None:
            return _json(200, {"fingerprint": await fingerprint()})
        if path == "/page" or path == "/" and "text/html" in headers.get("accept", ""):
            return _response("200 OK", "text/html; charset=utf-8", page_html())
        if path in ("/", "/status"):
            body = json.dumps(await snapshot(), indent=2).encode()
            return _response("200 OK", "application/json", body)
        if path == "/metrics":
            return _response("200 OK", metrics.CONTENT_TYPE, metrics.render(await snapshot()))
    except Exception as exc:  # noqa: BLE001 - a failed read is the client's answer, not the daemon's end
        log.exception("status request %s failed", path)
        return _response("500 Internal Server Error", "text/plain", f"{exc}\n".encode())
    return _response("404 Not Found", "text/plain", b"not found: try /status, /metrics, /page or /fingerprint\n")


def parse_head(request: bytes) -> tuple[str, str, dict[str, str]]:
    """(method, path, headers with lower-case names) of a request's head."""
    lines = request[:MAX_REQUEST].decode(errors="replace").split("\r\n")
    method, path, *_ = lines[0].split(" ", 2) + ["", ""]
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return method, path, headers


async def serve_status(snapshot: Snapshot, host: str, port: int, actions: PageActions | None = None,
                       fingerprint: Fingerprint | None = None) -> asyncio.Server:
    """Serve the status documents that `snapshot` makes (the daemon's, on its event loop), the page, the page's
    actions when `actions` is given (and a token configured), and the data plane's fingerprint when given."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                request = await reader.readuntil(b"\r\n\r\n")
            method, path, headers = parse_head(request)
            peer = writer.get_extra_info("peername")
            client = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer or "")
            if method == "GET":
                writer.write(await answer(snapshot, path, headers, fingerprint))
            elif method == "POST" and path.startswith("/action/"):
                writer.write(await act(actions, path, headers, client))
            else:
                writer.write(_response("405 Method Not Allowed", "text/plain",
                                       b"GET only (POST for /action/... with a token)\n"))
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(handle, host, port, reuse_address=True)
