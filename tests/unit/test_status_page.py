"""The status page and its actions: what the endpoints answer, the token check, the daemon-side drain."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.error
import urllib.request
from typing import Any, cast

import pytest

from pyvs.director.config import ConfigError, parse_config
from pyvs.director.status_server import PageActions, act, answer, page_html, parse_head, serve_status
from pyvs.director.statusdoc import StatusDocument

from .test_director_rules import KEY, RS1, RS2, director, weights

TOKEN = "0123456789abcdef0123"
DOC = cast(StatusDocument, {"pid": 1, "services": []})


async def snapshot() -> StatusDocument:
    return DOC


def body(response: bytes) -> tuple[str, str, bytes]:
    head, _, rest = response.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    content_type = next(line.split(": ", 1)[1] for line in lines if line.startswith("Content-Type"))
    return lines[0], content_type, rest


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, str, str]] = []

    async def __call__(self, action: str, service: str, real: str, client: str) -> tuple[int, str]:
        self.calls.append((action, service, real, client))
        return 200, f"{action} done"


def test_the_page_is_one_self_contained_file() -> None:
    html = page_html().decode()
    assert "<script>" in html and 'fetch("/status"' in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no external resources"
    assert "http://" not in html and "https://" not in html


def test_get_page_and_root() -> None:
    status, kind, page = body(asyncio.run(answer(snapshot, "/page?refresh=1")))
    assert status == "HTTP/1.0 200 OK" and kind.startswith("text/html") and page == page_html()
    status, kind, _ = body(asyncio.run(answer(snapshot, "/", {"accept": "text/html,application/xhtml+xml"})))
    assert kind.startswith("text/html"), "a browser asking for / gets the page"
    status, kind, doc = body(asyncio.run(answer(snapshot, "/")))
    assert kind == "application/json" and json.loads(doc) == DOC, "scripts asking for / keep the JSON"
    assert body(asyncio.run(answer(snapshot, "/nothing")))[0] == "HTTP/1.0 404 Not Found"


def test_parse_head() -> None:
    method, path, headers = parse_head(b"POST /action/drain?x=1 HTTP/1.1\r\nX-Pyvs-Token: abc \r\nHost: h\r\n\r\n")
    assert (method, path, headers) == ("POST", "/action/drain?x=1", {"x-pyvs-token": "abc", "host": "h"})


@pytest.mark.parametrize(("token", "sent", "code"), [
    (None, TOKEN, 403),  # no page_token: actions off, whatever is sent
    ("", "", 403),
    (TOKEN, "", 403),  # no header
    (TOKEN, TOKEN[:-1] + "x", 403),  # wrong token
    (TOKEN, TOKEN, 200),
])  # fmt: skip
def test_the_token_check(token: str | None, sent: str, code: int, caplog: pytest.LogCaptureFixture) -> None:
    run = Recorder()
    headers = {"x-pyvs-token": sent} if sent else {}
    path = "/action/drain?service=tcp/198.18.0.100:80&real=198.18.2.11:80"
    with caplog.at_level(logging.WARNING):
        status, _, reply = body(asyncio.run(act(PageActions(lambda: token, run), path, headers, "198.18.0.1:5")))
    assert status.split()[1] == str(code)
    if code == 200:
        assert run.calls == [("drain", "tcp/198.18.0.100:80", "198.18.2.11:80", "198.18.0.1:5")]
        assert json.loads(reply) == {"ok": True, "message": "drain done"}
    else:
        assert run.calls == [] and json.loads(reply)["ok"] is False
        assert "event=page_action_refused client=198.18.0.1:5" in caplog.text


def test_action_requests_that_pass_the_token_but_are_wrong() -> None:
    actions = PageActions(lambda: TOKEN, Recorder())
    headers = {"x-pyvs-token": TOKEN}
    assert body(asyncio.run(act(actions, "/action/delete?service=a&real=b", headers)))[0].split()[1] == "404"
    assert body(asyncio.run(act(actions, "/action/drain?service=a", headers)))[0].split()[1] == "400"
    assert body(asyncio.run(act(None, "/action/drain?service=a&real=b", headers)))[0].split()[1] == "403"


def test_the_server_over_a_socket() -> None:
    run = Recorder()

    async def scenario() -> list[Any]:
        server = await serve_status(snapshot, "127.0.0.1", 0, PageActions(lambda: TOKEN, run))
        port = server.sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"

        def request(path: str, method: str = "GET", token: str | None = None) -> tuple[int, bytes]:
            req = urllib.request.Request(base + path, method=method, headers={"X-Pyvs-Token": token} if token else {})
            try:
                with urllib.request.urlopen(req, timeout=5) as response:  # noqa: S310
                    return response.status, response.read()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read()

        loop = asyncio.get_running_loop()
        results = [await loop.run_in_executor(None, request, *args) for args in (
            ("/page",), ("/action/drain?service=s&real=r", "GET", TOKEN), ("/action/drain?service=s&real=r", "POST"),
            ("/action/undrain?service=s&real=r", "POST", TOKEN), ("/status", "PUT"))]
        server.close()
        await server.wait_closed()
        return results

    page, get_action, no_token, undrain, put = asyncio.run(scenario())
    assert page == (200, page_html())
    assert get_action[0] == 404, "GET never runs an action"
    assert no_token[0] == 403 and undrain[0] == 200 and put[0] == 405
    assert [call[:3] for call in run.calls] == [("undrain", "s", "r")]


def test_a_drain_is_the_daemons_own_state(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    daemon = director()
    written: list[dict[Any, int]] = []

    async def reconcile(full: bool = False) -> bool:
        written.append(weights(daemon))
        return True

    monkeypatch.setattr(daemon, "reconcile", reconcile)
    name, rs1 = "tcp/198.18.0.100:80", "198.18.2.11:80"
    with caplog.at_level(logging.INFO):
        assert asyncio.run(daemon.page_action("drain", name, rs1, "c"))[0] == 200
        assert weights(daemon) == {RS1: 0, RS2: 1} and written == [{RS1: 0, RS2: 1}]
        assert asyncio.run(daemon.page_action("drain", name, rs1, "c")) == (200, f"drain {name} {rs1}: already drained")
        assert len(written) == 1
        assert asyncio.run(daemon.page_action("drain", name, "198.18.2.99:80", "c"))[0] == 404
        assert asyncio.run(daemon.page_action("undrain", name, rs1, "c"))[0] == 200
    assert weights(daemon) == {RS1: 2, RS2: 1}
    logged = [line for line in caplog.text.splitlines() if "event=page_action " in line]
    assert len(logged) == 4 and "action=drain" in logged[0] and "real=198.18.2.11:80" in logged[0]
    daemon.drained.add((KEY, RS2))  # a drained real that goes down: as any down real
    daemon.reals[(KEY, RS2)].health.up = False
    assert weights(daemon) == {RS1: 2, RS2: 0}  # rs2 has inhibit_on_failure


def test_page_token_setting() -> None:
    assert parse_config("").page_token is None
    assert parse_config(f'[director]\npage_token = "{TOKEN}"\n').page_token == TOKEN
    for bad in ('"short"', "12345678901234567890", f'" {TOKEN}"'):
        with pytest.raises(ConfigError, match="page_token"):
            parse_config(f"[director]\npage_token = {bad}\n")
