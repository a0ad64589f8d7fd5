"""The sync daemons between two namespaces joined by a veth pair: `pyvsadm --start-daemon master` in one,
`--start-daemon backup` in the other, the kernel's multicast between them. A connection the master's program makes
(BPF_PROG_TEST_RUN on its pinned maps) appears in the backup's tables with the same real, and the backup's program
forwards its packets there; without the daemons it passes them to the kernel."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path
from urllib.request import urlopen

import pytest
from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyvs import netns
from pyvs.dataplane import Dataplane, open_dataplane, remove_pins
from pyvs.dataplane.neighbours import NextHop
from pyvs.dataplane.pins import bpffs_root
from pyvs.model import IPAddress, Protocol, Real, Rules, Service, ServiceKey
from pyvs.sync import daemon

from .conftest import LAB_PREFIX

VIP = IPv4Address("198.18.0.100")
CLIENT = "198.18.1.2"
REALS = {IPv4Address("198.18.2.11"): "02:00:00:00:00:11", IPv4Address("198.18.2.12"): "02:00:00:00:00:12"}
DIRECTOR_MAC, CLIENT_MAC = "02:00:00:00:00:0a", "02:00:00:00:00:01"
TCP80 = ServiceKey(Protocol.TCP, VIP, 80)
MASTER, BACKUP = f"{LAB_PREFIX}-sym", f"{LAB_PREFIX}-syb"
LINK = f"{LAB_PREFIX}sv"
PYVSADM = [sys.executable, "-m", "pyvs.admin.cli"]


def static(rip: IPAddress) -> NextHop:
    return NextHop(0, DIRECTOR_MAC, REALS[rip])  # type: ignore[index]


def rules(order: list[IPv4Address]) -> Rules:
    svc = Service(TCP80, "rr")
    for rip in order:
        svc.reals[(rip, 80)] = Real(rip, 80, 1)
    return Rules({TCP80: svc})


def tcp(flags: str, sport: int, payload: bytes = b"") -> bytes:
    return bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=CLIENT, dst=str(VIP))
                 / TCP(sport=sport, dport=80, flags=flags) / Raw(payload))


def pyvsadm(ns: str, pin_dir: Path, *argv: str, check: bool = True) -> tuple[int, str, str]:
    proc = netns.run_in_netns(ns, [*PYVSADM, "--pin-dir", str(pin_dir), *argv], check=check)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def pair() -> Iterator[tuple[Dataplane, Dataplane]]:
    """Two namespaces joined by {LINK}0/{LINK}1, each with a data plane pinned for it (made here, with static MACs)."""
    pins = [bpffs_root() / "pyvs" / f"{ns}-sync" for ns in (MASTER, BACKUP)]
    for ns in (MASTER, BACKUP):
        if netns.exists(ns):
            netns.remove(ns)
        netns.create(ns)
    opened: list[Dataplane] = []
    try:
        netns.run_in_netns(MASTER, ["ip", "link", "add", f"{LINK}0", "type", "veth", "peer", "name", f"{LINK}1"])
        netns.run_in_netns(MASTER, ["ip", "link", "set", f"{LINK}1", "netns", BACKUP])
        for ns, dev, addr in ((MASTER, f"{LINK}0", "198.18.9.1/24"), (BACKUP, f"{LINK}1", "198.18.9.2/24")):
            netns.write_sysctl(f"net.ipv6.conf.{dev}.accept_dad", 0, ns)  # link-local addresses usable at once
            netns.run_in_netns(ns, ["ip", "addr", "add", addr, "dev", dev])
            netns.run_in_netns(ns, ["ip", "link", "set", dev, "up"])
            netns.run_in_netns(ns, ["ip", "link", "set", "lo", "up"])
        for path in pins:
            remove_pins(path)
        master = open_dataplane(pins[0], static)
        opened.append(master)
        backup = open_dataplane(pins[1], static)
        opened.append(backup)
        master.apply(rules(list(REALS)))
        backup.apply(rules(list(reversed(REALS))))  # rr on the backup would pick the other real first
        yield master, backup
    finally:
        for ns, path in zip((MASTER, BACKUP), pins, strict=True):
            for state in ("master", "backup"):
                if netns.exists(ns):
                    pyvsadm(ns, path, "--stop-daemon", state, check=False)
                record = daemon.state_file(path, state)
                try:  # a daemon the command did not stop: by its PID
                    pid = int(json.loads(record.read_text())["pid"])
                    if daemon.daemon_alive(pid):
                        os.kill(pid, signal.SIGKILL)
                except (OSError, ValueError, KeyError):
                    pass
                record.unlink(missing_ok=True)
                daemon.log_file(path, state).unlink(missing_ok=True)
        for dp in opened:
            dp.close()
        for ns in (MASTER, BACKUP):
            if netns.exists(ns):
                netns.remove(ns)
        for path in pins:
            remove_pins(path)


def wait_for(condition, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def stats(pin_dir: Path, state: str) -> dict[str, int]:
    return dict(json.loads(daemon.state_file(pin_dir, state).read_text())["stats"])


def test_a_connection_made_on_the_master_is_forwarded_by_the_backup_to_the_same_real(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", "--mcast-interface", f"{LINK}0", "--syncid", "5")
    pyvsadm(BACKUP, backup.pin_dir, "--start-daemon", "backup", "--mcast-interface", f"{LINK}1", "--syncid", "5")
    assert pyvsadm(MASTER, master.pin_dir, "-L", "--daemon")[1] == (
        f"master sync daemon (mcast={LINK}0, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n")
    assert pyvsadm(BACKUP, backup.pin_dir, "-L", "--daemon")[1] == (
        f"backup sync daemon (mcast={LINK}1, syncid=5, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)\n")
    # ipvsadm's errors: a second master, a missing backup.
    code, _, err = pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", "--mcast-interface", f"{LINK}0",
                           check=False)
    assert (code, err) == (1, "pyvsadm: Daemon has already run\n")
    code, _, err = pyvsadm(MASTER, master.pin_dir, "--stop-daemon", "backup", check=False)
    assert (code, err) == (1, "pyvsadm: No daemon is running\n")

    packet = tcp("PA", 40000, b"data")
    assert backup.test_run(packet).verdict_name == "XDP_PASS"  # no connection there yet
    assert master.test_run(tcp("S", 40000)).verdict_name == "XDP_TX"
    real = master.test_run(tcp("A", 40000)).data[:6]
    wait_for(lambda: any(c.cport == 40000 for c in backup.connections()))
    (conn,) = backup.connections()
    assert (conn.rip, conn.state) == (next(ip for ip, mac in REALS.items() if bytes.fromhex(mac.replace(":", ""))
                                           == real), "ESTABLISHED")
    result = backup.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    assert result.data[:6] == real and result.data[12:] == packet[12:]
    wait_for(lambda: stats(master.pin_dir, "master")["messages_sent"] >= 1
             and stats(backup.pin_dir, "backup")["conns_applied"] >= 1)
    assert master.counters()["sync_events"] == 1

    pyvsadm(MASTER, master.pin_dir, "--stop-daemon", "master")
    assert pyvsadm(MASTER, master.pin_dir, "-L", "--daemon")[1] == ""
    assert master.counters()["sync_events"] == 1
    master.test_run(tcp("S", 40001))
    master.test_run(tcp("A", 40001))
    assert master.counters()["sync_events"] == 1  # the master is gone: the program writes no event


def test_a_backup_with_another_syncid_counts_the_messages_and_takes_nothing(
        pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", "--mcast-interface", f"{LINK}0", "--syncid", "5")
    pyvsadm(BACKUP, backup.pin_dir, "--start-daemon", "backup", "--mcast-interface", f"{LINK}1", "--syncid", "6")
    master.test_run(tcp("S", 40000))
    master.test_run(tcp("A", 40000))
    wait_for(lambda: stats(backup.pin_dir, "backup")["wrong_syncid"] >= 1)
    assert backup.connections() == []


def test_an_unknown_interface_is_refused(pair: tuple[Dataplane, Dataplane]) -> None:
    master, _ = pair
    code, _, err = pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", check=False)  # eth0, by default
    assert (code, err) == (1, "pyvsadm: No such device: eth0 (the mcast interface)\n")
    assert pyvsadm(MASTER, master.pin_dir, "-L", "--daemon")[1] == ""


DIRECTOR_CONFIG = """\
[director]
status_listen = "127.0.0.1:9180"

[[service]]
proto = "tcp"
vip = "198.18.0.100"
port = 80
scheduler = "rr"
check = {{ type = "none" }}

[[service.real]]
address = "{first}"

[[service.real]]
address = "{second}"

[sync]
role = "both"
interface = "{interface}"
syncid = 3
"""


def metrics(ns: str) -> str:
    with netns.in_netns(ns), urlopen("http://127.0.0.1:9180/metrics", timeout=5) as response:  # noqa: S310
        return str(response.read().decode())


def test_directors_with_sync_both_ways_take_each_others_connections(
        pair: tuple[Dataplane, Dataplane], tmp_path: Path) -> None:
    """[sync] role = "both" in `pyvs director run` on two active/active peers: each sends and receives."""
    master, backup = pair
    pids = []
    try:
        for ns, dp, dev, order in ((MASTER, master, f"{LINK}0", list(REALS)),
                                   (BACKUP, backup, f"{LINK}1", list(reversed(REALS)))):
            config = tmp_path / f"{ns}.toml"
            config.write_text(DIRECTOR_CONFIG.format(first=order[0], second=order[1], interface=dev))
            pids.append(netns.spawn_in_netns(ns, [sys.executable, "-m", "pyvs.cli", "director", "run", "--config",
                                                  str(config), "--pin-dir", str(dp.pin_dir)],
                                             log_path=tmp_path / f"{ns}.log"))
        for ns in (MASTER, BACKUP):
            wait_for(lambda ns=ns: _up(ns), 20)
        # A connection on each director appears on the other one, with its real.
        for here, there, sport in ((master, backup, 41000), (backup, master, 42000)):
            here.test_run(tcp("S", sport))
            here.test_run(tcp("A", sport))
            made = {c.cport: c.rip for c in here.connections()}[sport]
            wait_for(lambda there=there, sport=sport: sport in {c.cport for c in there.connections()})
            assert {c.cport: c.rip for c in there.connections()}[sport] == made
        text = metrics(MASTER)
        assert "pyvs_sync_up 1.0" in text
        assert "pyvs_sync_messages_sent_total 1.0" in text and "pyvs_sync_conns_applied_total 1.0" in text
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for pid in pids:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
                time.sleep(0.05)


def _up(ns: str) -> bool:
    try:
        return "pyvs_sync_up 1.0" in metrics(ns)
    except OSError:
        return False


def test_an_ipv6_group_carries_the_messages_too(pair: tuple[Dataplane, Dataplane]) -> None:
    master, backup = pair
    group = "ff3e:30:2001:db8::81"  # a global-scope group derived from the documentation prefix
    pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", "--mcast-interface", f"{LINK}0",
            "--mcast-group", group, "--mcast-port", "8849")
    pyvsadm(BACKUP, backup.pin_dir, "--start-daemon", "backup", "--mcast-interface", f"{LINK}1",
            "--mcast-group", group, "--mcast-port", "8849")
    assert pyvsadm(BACKUP, backup.pin_dir, "-L", "--daemon")[1] == (
        f"backup sync daemon (mcast={LINK}1, syncid=0, maxlen=1452, group={group}, port=8849, ttl=1)\n")
    master.test_run(tcp("S", 40000))
    master.test_run(tcp("A", 40000))
    wait_for(lambda: any(c.cport == 40000 for c in backup.connections()))


def test_a_daemon_ends_when_its_data_plane_is_removed(pair: tuple[Dataplane, Dataplane]) -> None:
    """As IPVS's sync threads end with their namespace: `pyvs lab down` and `detach --remove-rules` leave none."""
    master, _ = pair
    pyvsadm(MASTER, master.pin_dir, "--start-daemon", "master", "--mcast-interface", f"{LINK}0")
    pid = int(json.loads(daemon.state_file(master.pin_dir, "master").read_text())["pid"])
    remove_pins(master.pin_dir)
    wait_for(lambda: not daemon.daemon_alive(pid), 10)
    assert not daemon.state_file(master.pin_dir, "master").exists()
