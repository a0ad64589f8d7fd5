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


def test_a_daemon_that_cannot_bind_its_status_port_changes_nothing(lab: Topology, tmp_path: Path) -> None:
    """The port is taken: the daemon exits with one line before it touches the rules or takes a VIP over."""
    import socket

    from pyvs.lab.director import open_director
    from pyvs.netns import in_netns

    config = tmp_path / "other.toml"
    config.write_text('[director]\ninterface = "eth0"\nstatus_listen = "127.0.0.1:9180"\n\n'
                      '[[service]]\nproto = "tcp"\nvip = "198.18.0.101"\nport = 8080\n\n'
                      '[[service.real]]\naddress = "198.18.2.11"\n')
    with in_netns(lab.director.netns), open_director(lab) as dp:
        before = dp.read_rules()
    with in_netns(lab.director.netns):
        taken = socket.socket()
    with taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        taken.bind(("127.0.0.1", 9180))
        taken.listen()
        code, _, err = pyvs_in_director(lab, "director", "run", "--config", str(config))
    errors = [line for line in err.splitlines() if line.startswith("pyvs:")]
    assert code == 1 and len(errors) == 1 and "9180" in errors[0] and "Traceback" not in err, err
    with in_netns(lab.director.netns), open_director(lab) as dp:
        assert dp.read_rules() == before
    addresses = run_in_netns(lab.director.netns, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout
    assert "198.18.0.101" not in addresses


def test_detach_with_vip_withdraws_that_vip_and_keeps_forwarding(lab: Topology) -> None:
    from pyvs.lab.traffic import http_get

    try:
        code, out, err = pyvs_in_director(lab, "director", "attach", "--dev", "eth0", "--vip", "198.18.0.101")
        assert code == 0, err
        assert "198.18.0.101" in run_in_netns(lab.director.netns, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
        code, out, err = pyvs_in_director(lab, "director", "detach", "--dev", "eth0", "--vip", "198.18.0.101")
        assert code == 0, err
        shown = run_in_netns(lab.director.netns, ["ip", "-o", "addr", "show", "dev", "eth0"]).stdout
        assert "198.18.0.101" not in shown and "198.18.0.100" in shown
        xdp = run_in_netns(lab.director.netns, ["ip", "-d", "link", "show", "dev", "eth0"]).stdout
        assert "xdp" in xdp, "XDP stays attached"
        assert http_get(lab.client.netns, lab.public_ip, "/").server in ("rs1", "rs2")
    finally:
        lab_api.up(lab)
