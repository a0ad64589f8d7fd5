"""The README's daemon recipe: contrib/lab-director.toml runs in the lab as written."""

from __future__ import annotations

import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.lab import lab as lab_api
from pyvs.lab.topology import Topology
from pyvs.netns import run_in_netns

from .test_director_daemon import Daemon, status, wait_for

RECIPE = Path(__file__).resolve().parents[2] / "contrib" / "lab-director.toml"


def pyvs_in_director(lab: Topology, *args: str) -> tuple[int, str, str]:
    result = run_in_netns(lab.director.netns, [sys.executable, "-m", "pyvs.cli", *args], check=False)
    return result.returncode, result.stdout, result.stderr


def health(lab: Topology) -> dict[str, bool]:
    """'tcp rs1' -> up, for every real of the daemon's status."""
    names = {lab.address_of(n.name): n.name for n in lab.reals}
    return {f"{svc['proto']} {names[real['address']]}": real["health"] == "up"
            for svc in status(lab)["services"] for real in svc["reals"]}


@pytest.fixture
def daemon(lab: Topology, tmp_path: Path) -> Iterator[Daemon]:
    started = Daemon(lab, RECIPE, tmp_path / "daemon.log", tmp_path / "notify.log")
    try:
        started.start()
        yield started
    finally:
        started.stop(signal.SIGTERM)
        lab_api.start_web_server(lab, "rs1")
        lab_api.up(lab)


def test_the_recipe_validates_in_the_director(lab: Topology) -> None:
    code, out, err = pyvs_in_director(lab, "director", "run", "--config", str(RECIPE), "--validate")
    assert (code, err) == (0, "")
    assert out == f"{RECIPE}: valid (2 service(s), 4 real(s))\n"


def test_the_recipe_runs_in_the_lab_as_written(lab: Topology, daemon: Daemon) -> None:
    wait_for(lambda: all(health(lab).values()) and len(health(lab)) == 4, 10, "every real up")
    code, out, err = pyvs_in_director(lab, "status")
    assert code == 0, err
    assert out.splitlines()[0] == f"pyvs director pid {daemon.pid}, config {RECIPE} (generation 1)"
    lab_status = run_in_netns(None, [sys.executable, "-m", "pyvs.cli", "lab", "status", "--prefix", lab.prefix],
                              check=False)
    assert lab_status.returncode == 0, lab_status.stdout  # the daemon keeps the lab's own rules

    lab_api.stop_web_server(lab, "rs1")  # the http check takes it out
    wait_for(lambda: not health(lab)["tcp rs1"], 10, "rs1 down")
    lab_api.start_web_server(lab, "rs1")
    wait_for(lambda: health(lab)["tcp rs1"], 10, "rs1 up again")
    assert "notify_failed" not in daemon.log.read_text()
    assert "real_down" in daemon.log.read_text() and "real_up" in daemon.log.read_text()
