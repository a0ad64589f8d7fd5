"""The daemon's live status page in a real browser: headless Chromium (Debian's package) loads it from the
director's namespace, the rendered services are checked, a real whose web server stops turns down on the page
within its fall time, and the page's drain survives the daemon's drift check. Screenshots stay in tmp_path."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director, tutorial_rules
from pyvs.lab.topology import Topology
from pyvs.netns import in_netns, spawn_in_netns

from .test_director_daemon import FALL, INTERVAL, STATUS, Daemon, config_text, status, tcp_reals, wait_for

CHROMIUM = shutil.which("chromium")
TOKEN = "pyvs-lab-page-token-0123456789"
REFRESH = 0.5  # the page's period in this test (?refresh=)
BROWSER_TIMEOUT = 60.0
FALL_TIME = FALL * INTERVAL + INTERVAL  # FALL failed checks, the last one waiting out its timeout
SLACK = 1.0  # a check's scheduling, the page's one refresh period and the daemon's answer


@pytest.fixture(autouse=True)
def _chromium_installed() -> None:
    assert CHROMIUM is not None, "Debian's chromium is not installed (scripts/setup.sh installs it)"


class Browser:
    """Headless Chromium run in the director's namespace, one page load per call; ended by its PID."""

    def __init__(self, topo: Topology, workdir: Path):
        self.topo, self.workdir, self.runs = topo, workdir, 0
        workdir.mkdir(parents=True, exist_ok=True)

    def _run(self, *args: str) -> str:
        assert CHROMIUM is not None
        self.runs += 1
        output = self.workdir / f"chromium-{self.runs}.out"
        argv = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--hide-scrollbars", f"--user-data-dir={self.workdir / 'profile'}", *args]
        pid = spawn_in_netns(self.topo.director.netns, argv, log_path=output)  # its own session: group = pid
        deadline = time.monotonic() + BROWSER_TIMEOUT
        try:
            while os.waitpid(pid, os.WNOHANG)[0] != pid:
                if time.monotonic() > deadline:
                    raise AssertionError(f"chromium took longer than {BROWSER_TIMEOUT}s: {output.read_text()}")
                time.sleep(0.05)
            pid = 0
        finally:
            if pid:
                os.killpg(pid, signal.SIGKILL)  # the process group this test started, by its id
                os.waitpid(pid, 0)
        return output.read_text(errors="replace")

    def dom(self, url: str, budget_ms: int = 2000) -> str:
        """The page's DOM after `budget_ms` of the page's (virtual) time: several of its refreshes."""
        text = self._run(f"--virtual-time-budget={budget_ms}", "--dump-dom", url)
        match = re.search(r"<html.*</html>", text, re.S)
        assert match, f"no DOM from chromium: {text[-2000:]}"
        return match.group(0)

    def screenshot(self, url: str, path: Path, budget_ms: int = 2000) -> Path:
        self._run(f"--virtual-time-budget={budget_ms}", f"--screenshot={path}", "--window-size=1400,900", url)
        assert path.exists() and path.stat().st_size > 1000, f"no screenshot at {path}"
        print(f"status page screenshot: {path}")
        return path


def rendered(dom: str) -> dict[str, dict[str, str]]:
    """service name -> real -> health, as the page rendered them."""
    services: dict[str, dict[str, str]] = {}
    for table in re.finditer(r'<table class="service" data-service="([^"]+)">(.*?)</table>', dom, re.S):
        rows = re.finditer(r'<tr class="real[^"]*" data-real="([^"]+)" data-health="([^"]+)"', table.group(2))
        services[table.group(1)] = {real: health for real, health in (row.groups() for row in rows)}
    return services


def post(path: str, token: str | None, topo: Topology) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"X-Pyvs-Token": token} if token else {}
    request = urllib.request.Request(f"{STATUS}{path}", method="POST", headers=headers)
    with in_netns(topo.director.netns):
        try:
            with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
                return response.status, json.load(response)
        except urllib.error.HTTPError as exc:
            return exc.code, json.load(exc)


@pytest.fixture(params=[TOKEN], ids=["with-token"])
def daemon(lab: Topology, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Daemon]:
    notify_log = tmp_path / "notify.log"
    config = tmp_path / "director.toml"
    token = f'page_token = "{request.param}"\n' if request.param else ""
    text = config_text(lab, notify_log).replace("[director]\n", f"[director]\n{token}drift_check = 0.5\n", 1)
    config.write_text(text)
    running = Daemon(lab, config, tmp_path / "daemon.log", notify_log)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        lab_api.start_web_server(lab, "rs1")
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))


def test_the_status_page_in_a_browser(lab: Topology, daemon: Daemon, tmp_path: Path) -> None:
    browser = Browser(lab, tmp_path / "browser")
    url = f"{STATUS}/page?refresh={REFRESH}"
    rs1, rs2 = (f"{lab.address_of(name)}:80" for name in ("rs1", "rs2"))
    tcp, udp = f"tcp/{lab.vip}:80", f"udp/{lab.vip}:80"
    wait_for(lambda: all(r["health"] == "up" for s in status(lab)["services"] for r in s["reals"]), 10, "all up")

    dom = browser.dom(url)
    assert rendered(dom) == {tcp: {rs1: "up", rs2: "up"}, udp: {rs1: "up", rs2: "up"}}, dom
    polls = int(re.search(r'data-polls="(\d+)"', dom).group(1))  # type: ignore[union-attr]
    assert polls >= 2, "the page refreshes by itself"
    assert 'data-counter="drop_' in dom and 'id="table-use"' in dom, "drop reasons and table use are shown"
    assert '<div id="actions">' in dom and ">drain</button>" in dom, "a token is configured: actions offered"
    browser.screenshot(url, tmp_path / "status-page-all-up.png")

    # The page's drain: without the token refused; with it rs2 gets weight 0 and keeps it through drift checks.
    assert post(f"/action/drain?service={tcp}&real={rs2}", None, lab)[0] == 403
    code, reply = post(f"/action/drain?service={tcp}&real={rs2}", TOKEN, lab)
    assert code == 200, reply
    assert tcp_reals(lab) == {"rs1": 1, "rs2": 0}
    time.sleep(1.5)  # three drift checks
    assert tcp_reals(lab) == {"rs1": 1, "rs2": 0}, "the drain is the daemon's own state, not drift"
    assert "event=drift" not in daemon.log.read_text()
    assert "drained" in browser.dom(url)
    assert post(f"/action/undrain?service={tcp}&real={rs2}", TOKEN, lab)[0] == 200
    assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}
    assert daemon.log.read_text().count("event=page_action ") == 2
    assert "event=page_action_refused" in daemon.log.read_text()

    # rs1 stops: within its fall time (and one refresh of the page) the page shows it down.
    lab_api.stop_web_server(lab, "rs1")
    stopped = time.monotonic()
    time.sleep(FALL_TIME + SLACK)
    loaded = time.monotonic()
    dom = browser.dom(url)
    assert rendered(dom)[tcp] == {rs1: "down", rs2: "up"}, f"rs1 not down {loaded - stopped:.1f}s after its stop"
    assert rendered(dom)[udp] == {rs1: "up", rs2: "up"}, "the UDP service has no check"
    row = re.search(rf'data-real="{rs1}".*?</tr>', dom, re.S)
    assert row and "FAILED: " in row.group(0) and " ago<" in row.group(0), "the last check's result and time"
    shot = browser.screenshot(url, tmp_path / "status-page-rs1-down.png")
    lab_api.start_web_server(lab, "rs1")
    wait_for(lambda: rendered(browser.dom(url))[tcp][rs1] == "up", 15, "rs1 up again on the page")
    assert shot.exists()


@pytest.mark.parametrize("daemon", [None], ids=["read-only"], indirect=True)
def test_without_a_token_the_page_is_read_only(lab: Topology, daemon: Daemon, tmp_path: Path) -> None:
    dom = Browser(lab, tmp_path / "browser").dom(f"{STATUS}/page")
    assert set(rendered(dom)) == {f"tcp/{lab.vip}:80", f"udp/{lab.vip}:80"}
    assert '<div id="actions" hidden="">' in dom and "<button" not in dom, "no actions shown"
    code, reply = post(f"/action/drain?service=tcp/{lab.vip}:80&real={lab.address_of('rs2')}:80", TOKEN, lab)
    assert code == 403 and "page_token" in reply["error"]
    assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}
    assert "event=page_action_refused" in daemon.log.read_text()
