"""The systemd units: they verify, are hardened as documented, bound the capabilities to what the data plane
needs (shown by opening one with exactly those), and ExecReload fails on an invalid config."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyvs.cli import main as pyvs_main
from pyvs.director import runfile

ROOT = Path(__file__).resolve().parents[2]
UNITS = ["pyvs-director.service", "pyvs-rules.service"]
BIN = Path(sys.executable).parent


def settings(unit: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in (ROOT / "contrib" / unit).read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_units_verify(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is not installed (scripts/setup.sh installs systemd)"
    sbin = tmp_path / "usr/sbin"
    sbin.mkdir(parents=True)
    for cmd in ("pyvs", "pyvsadm"):  # the package's /usr/sbin, here the test venv's commands
        (sbin / cmd).symlink_to(BIN / cmd)
    for unit in UNITS:
        (tmp_path / unit).write_text((ROOT / "contrib" / unit).read_text().replace("/usr/sbin/", f"{sbin}/"))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *(str(tmp_path / u) for u in UNITS)],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr.strip() == "", result.stderr


def test_director_unit_is_hardened() -> None:
    unit = settings("pyvs-director.service")
    assert unit["Type"] == ["notify"] and unit["NotifyAccess"] == ["main"]
    assert unit["NoNewPrivileges"] == ["yes"] and unit["ProtectSystem"] == ["strict"] and unit["ProtectHome"] == ["yes"]
    assert "pyvs" in unit["RuntimeDirectory"][0].split() and unit["RuntimeDirectoryPreserve"] == ["yes"]
    assert set(unit["CapabilityBoundingSet"][0].split()) == {
        "CAP_NET_ADMIN", "CAP_BPF", "CAP_NET_RAW", "CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_KILL",
        "CAP_NET_BIND_SERVICE"}
    assert all(cmd.startswith("/usr/sbin/pyvs ") for key in ("ExecStart", "ExecStartPre", "ExecReload")
               for cmd in unit[key])
    rules = settings("pyvs-rules.service")
    assert rules["ExecStart"] == ["/usr/sbin/pyvsadm -R"] and rules["StandardInput"] == ["file:/etc/pyvs/rules"]
    assert rules["Before"] == ["pyvs-director.service"] and rules["Type"] == ["oneshot"]


OPEN = """
from pyvs.dataplane import scratch_dataplane
with scratch_dataplane("pyvst-caps") as dp:
    sum(1 for _ in dp.table_entries("conns"))  # opens the connection table's inner maps by id
print("ok")
"""


def _open_with(caps: list[str]) -> subprocess.CompletedProcess[str]:
    spec = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
    return subprocess.run(["setpriv", f"--inh-caps={spec}", f"--ambient-caps={spec}", f"--bounding-set={spec}",
                           sys.executable, "-c", OPEN], capture_output=True, text=True, timeout=120)


def test_the_bounded_capabilities_suffice_and_cap_sys_admin_is_needed() -> None:
    caps = settings("pyvs-director.service")["CapabilityBoundingSet"][0].split()
    allowed = _open_with(caps)
    assert allowed.returncode == 0 and "ok" in allowed.stdout, allowed.stderr
    without = _open_with([c for c in caps if c != "CAP_SYS_ADMIN"])
    assert without.returncode != 0  # BPF_MAP_GET_FD_BY_ID (and CAP_PERFMON's part of loading) need it


def _bird_with(caps: list[str], directory: Path) -> str:
    """BIRD started as the daemon starts it ([bgp]), under the unit's capability set, in a namespace of its own:
    its BGP session's state and last error after a second and a half (no peer answers there)."""
    from pyvs import netns
    from pyvs.director import bgp
    from pyvs.director.config import BgpPeer, BgpSpec

    name = "pyvst-unitbgp"
    if netns.exists(name):
        netns.remove(name)
    netns.create(name)
    pid = 0
    try:
        netns.run_in_netns(name, ["ip", "link", "set", "lo", "up"])
        netns.run_in_netns(name, ["ip", "addr", "add", "198.18.9.1/24", "dev", "lo"])
        spec = BgpSpec(65001, (BgpPeer(IPv4Address("198.18.9.2"), 65000),), local_address=IPv4Address("198.18.9.1"))
        speaker = bgp.Speaker(directory)
        directory.mkdir(parents=True, exist_ok=True)
        speaker.conf.write_text(bgp.render_config(spec, []))
        set_ = ",".join(["-all", *(f"+{c.removeprefix('CAP_').lower()}" for c in caps)])
        pid = netns.spawn_in_netns(name, ["setpriv", f"--inh-caps={set_}", f"--bounding-set={set_}", bgp.BIRD, "-f",
                                          "-c", str(speaker.conf), "-s", str(speaker.ctl), "-P", str(speaker.pidfile)],
                                   log_path=directory / "bird.log")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            try:
                peers = speaker.peers()
            except bgp.BgpError:
                continue
            if peers and time.monotonic() > deadline - 8.5:
                return f"{peers[0].state}: {peers[0].last_error}"
        return "no answer"
    finally:
        if pid:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        netns.remove(name)


def test_the_bounded_capabilities_let_birds_sessions_listen(tmp_path: Path) -> None:
    """[bgp]: the BIRD the daemon starts needs to listen on port 179; CAP_NET_BIND_SERVICE is in the set for it."""
    caps = settings("pyvs-director.service")["CapabilityBoundingSet"][0].split()
    able = _bird_with(caps, tmp_path / "with")
    assert able.startswith(("Active", "Connect")) and "listening" not in able, able  # it tries the peer
    unable = _bird_with([c for c in caps if c != "CAP_NET_BIND_SERVICE"], tmp_path / "without")
    assert "No listening socket" in unable, unable


def test_exec_reload_fails_on_an_invalid_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    (reload_cmd,) = settings("pyvs-director.service")["ExecReload"]
    argv = shlex.split(reload_cmd)
    config = tmp_path / "director.toml"
    config.write_text('[[service]]\nvip = "198.18.0.100"\nport = 80\nweight = 1\n')  # weight is a real's key
    argv[argv.index("--config") + 1] = str(config)
    monkeypatch.setattr(runfile, "RUN_DIR", tmp_path)
    # A daemon seems to run (a live process whose command line says "director run") with that file.
    daemon = subprocess.Popen(["bash", "-c", "exec -a 'pyvs director run' sleep 60"])
    try:
        name = f"unitreload-{os.getpid()}"
        (tmp_path / f"{name}.json").write_text(json.dumps(
            {"pid": daemon.pid, "config": str(config), "generation": 1, "last_reload": {"ok": True, "at": 0}}))
        code = pyvs_main([*argv[1:], "--pin-dir", f"/sys/fs/bpf/pyvs/{name}"])
        assert daemon.poll() is None  # not signalled
    finally:
        daemon.kill()
        daemon.wait()
    assert code == 1
    assert f"{config}:4" in capsys.readouterr().err
