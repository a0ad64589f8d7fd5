"""ipvsadm's model: only `pyvsadm -A`/`-a` in the director, and VIP traffic is forwarded.

Three fresh namespaces: a client, a director whose VIP is on `lo` (left there: pyvsadm adds no address), and a
real behind a second interface of the director, on its own subnet. The client reaches the director through the
first interface; pyvsadm attaches pyvs's program by itself (generic mode) to both, and the director redirects
each SYN and datagram from the client-side interface to the real-side one. The real's replies go back through
the director as a router (ip_forward). A TCP connection and a UDP exchange succeed end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs import netns
from tests.lab.chain import cleanup, sh, wire_chain

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
CLIENT, DIRECTOR, REAL = (f"{PREFIX}-af{role}" for role in ("c", "d", "r"))
VIP = "198.18.42.100"
CLIENT_NET = ("198.18.40.1", "198.18.40.2")  # director's side, client's side
REAL_NET = ("198.18.41.1", "198.18.41.2")  # director's side, the real (RIP)
PORT = 8080

UDP_ECHO = textwrap.dedent(f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("{VIP}", {PORT}))
    while True:
        data, peer = s.recvfrom(4096)
        s.sendto(b"echo " + data, peer)
""")
TCP_CLIENT = textwrap.dedent(f"""
    import socket
    s = socket.create_connection(("{VIP}", {PORT}), timeout=5)
    s.sendall(b"GET /hello.txt HTTP/1.0\\r\\nHost: vip\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode().split("\\r\\n\\r\\n", 1)[1], end="")
""")
UDP_CLIENT = textwrap.dedent(f"""
    import socket
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(2)
    for _ in range(3):
        s.sendto(b"ping", ("{VIP}", {PORT}))
        try:
            data, peer = s.recvfrom(4096)
        except TimeoutError:
            continue
        print(data.decode(), peer[0])
        break
""")


def _cleanup(pids: list[int]) -> None:
    cleanup(pids, CLIENT, DIRECTOR, REAL)


@pytest.fixture
def three_namespaces(tmp_path: Path) -> Iterator[list[int]]:
    """client -- (eth0) director (eth1) -- real; the director's VIP on lo. Yields the list of PIDs to stop."""
    pids: list[int] = []
    _cleanup(pids)
    try:
        wire_chain(CLIENT, DIRECTOR, REAL, f"{PREFIX}af", CLIENT_NET, REAL_NET,
                   lambda addr, dev: ["addr", "add", f"{addr}/24", "dev", dev])
        sh(DIRECTOR, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        # The director routes the real's replies to the client (their source, the VIP, is local to it).
        for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.accept_local",
                    f"net.ipv4.conf.{PREFIX}afr0.accept_local"):
            netns.write_sysctl(key, 1, DIRECTOR)
        for key in ("net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{PREFIX}afr0.rp_filter"):
            netns.write_sysctl(key, 0, DIRECTOR)
        sh(CLIENT, "ip", "route", "add", f"{VIP}/32", "via", CLIENT_NET[0])
        sh(REAL, "ip", "route", "add", "default", "via", REAL_NET[0])
        sh(REAL, sys.executable, "-m", "pyvs.cli", "realserver", "up", "--vip", VIP, "--dev", f"{PREFIX}afr1")
        (tmp_path / "hello.txt").write_text("hello from the real\n")
        pids.append(netns.spawn_in_netns(REAL, [sys.executable, "-m", "http.server", str(PORT), "--bind", "0.0.0.0",
                                                "--directory", str(tmp_path)], log_path=tmp_path / "http.log"))
        pids.append(netns.spawn_in_netns(REAL, [sys.executable, "-c", UDP_ECHO], log_path=tmp_path / "udp.log"))
        yield pids
    finally:
        _cleanup(pids)


def pyvsadm(*args: str) -> subprocess.CompletedProcess[str]:
    return netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.admin.cli", *args], check=False)



def assert_tcp_and_udp_answered() -> None:
    """From the client: a TCP exchange (retried for 10 s while the real's servers start) and a UDP one."""
    deadline = time.monotonic() + 10
    while True:
        tcp = netns.run_in_netns(CLIENT, [sys.executable, "-c", TCP_CLIENT], check=False, timeout=20)
        if tcp.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert (tcp.returncode, tcp.stdout) == (0, "hello from the real\n"), tcp.stderr
    udp = netns.run_in_netns(CLIENT, [sys.executable, "-c", UDP_CLIENT], check=False, timeout=20)
    assert udp.stdout == f"echo ping {VIP}\n", udp.stderr

def test_only_pyvsadm_in_the_director_forwards_tcp_and_udp_to_a_real_behind_another_interface(
        three_namespaces: list[int]) -> None:
    addresses_before = sh(DIRECTOR, "ip", "-4", "-o", "addr")
    first = pyvsadm("-A", "-t", f"{VIP}:{PORT}", "-s", "rr")
    assert first.returncode == 0, first.stderr
    # Said once: what was attached, where, in which mode.
    assert f"attached (generic mode) to {PREFIX}afc0, {PREFIX}afr0" in first.stderr, first.stderr
    for args in (("-a", "-t", f"{VIP}:{PORT}", "-r", f"{REAL_NET[1]}:{PORT}", "-g"),
                 ("-A", "-u", f"{VIP}:{PORT}", "-s", "rr"),
                 ("-a", "-u", f"{VIP}:{PORT}", "-r", f"{REAL_NET[1]}:{PORT}", "-g")):
        done = pyvsadm(*args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr  # already attached: nothing more to say
    assert sh(DIRECTOR, "ip", "-4", "-o", "addr") == addresses_before  # the VIP stays on lo only

    status = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "status"], check=False)
    assert status.returncode == 0, status.stderr
    rows = {line.split()[0]: line.split() for line in status.stdout.splitlines() if line.startswith(f"{PREFIX}af")}
    for dev in (f"{PREFIX}afc0", f"{PREFIX}afr0"):
        assert rows[dev][1] == "veth" and rows[dev][2] == "pyvs_xdp" and "generic" in rows[dev]
        assert rows[dev][-1] == "auto"

    assert_tcp_and_udp_answered()

    # The SYN and the datagram crossed from one interface of the director to the other: redirected.
    listing = pyvsadm("-L", "-n", "--stats")
    assert listing.returncode == 0
    again = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "status"]).stdout
    counters = {parts[0]: parts[1] for parts in (line.split() for line in again.splitlines()) if len(parts) == 2}
    assert int(counters["redirect"]) >= 2, again

    # pyvs doctor names the interfaces, their mode and how they were attached; the VIP on lo is no error.
    doctor = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "doctor", "--json"], check=False,
                                timeout=60)
    findings = json.loads(doctor.stdout)
    by_subject = {f["subject"]: f for f in findings}
    for dev in (f"{PREFIX}afc0", f"{PREFIX}afr0"):
        assert by_subject[f"XDP on {dev}"]["status"] == "ok", findings
        assert "generic mode" in by_subject[f"XDP on {dev}"]["detail"]
        assert by_subject[f"XDP on {dev}"]["detail"].endswith("attached auto")
    assert by_subject[f"VIP {VIP} on lo"]["status"] == "ok", findings
    assert f"replies from {VIP}" not in by_subject  # accept_local is on here


def _xdp_rows() -> dict[str, list[str]]:
    status = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "status"], check=False).stdout
    return {line.split()[0]: line.split() for line in status.splitlines() if line.startswith(f"{PREFIX}af")}


def test_the_daemon_attaches_pyvs_to_an_interface_that_appears_while_it_runs(
        three_namespaces: list[int], tmp_path: Path) -> None:
    config = tmp_path / "director.toml"
    config.write_text(textwrap.dedent(f"""
        [[service]]
        proto = "tcp"
        vip = "{VIP}"
        port = {PORT}
        scheduler = "rr"

        [[service.real]]
        address = "{REAL_NET[1]}"
        port = {PORT}
    """))
    three_namespaces.append(netns.spawn_in_netns(
        DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "run", "--config", str(config)],
        log_path=tmp_path / "daemon.log"))
    deadline = time.monotonic() + 20
    while not (rows := _xdp_rows()) or any(rows.get(dev, ["", "", "none"])[2] != "pyvs_xdp"
                                            for dev in (f"{PREFIX}afc0", f"{PREFIX}afr0")):
        assert time.monotonic() < deadline, (tmp_path / "daemon.log").read_text()
        time.sleep(0.3)
    assert all(row[-1] == "auto" for row in _xdp_rows().values())
    # A new interface, up with an address, while the daemon runs: it gets pyvs's program within seconds.
    new = f"{PREFIX}afn0"
    sh(DIRECTOR, "ip", "link", "add", new, "type", "veth", "peer", "name", f"{PREFIX}afn1")
    sh(DIRECTOR, "ip", "link", "set", f"{PREFIX}afn1", "netns", CLIENT)
    sh(DIRECTOR, "ip", "addr", "add", "198.18.43.1/24", "dev", new)
    sh(DIRECTOR, "ip", "link", "set", new, "up")
    deadline = time.monotonic() + 15
    while (row := _xdp_rows().get(new)) is None or row[2] != "pyvs_xdp":
        assert time.monotonic() < deadline, ((tmp_path / "daemon.log").read_text(), row)
        time.sleep(0.5)
    assert "generic" in row and row[-1] == "auto"
    assert "xdp_attached" in (tmp_path / "daemon.log").read_text()


def test_native_mode_chosen_explicitly_redirects_into_a_veth_whose_peer_runs_xdp(three_namespaces: list[int]) -> None:
    """`pyvs director attach --mode native` (no --dev: the default interfaces); a native redirect into a veth
    arrives only when the peer runs an XDP program, so the peers get pass programs here, as the lab's do, and
    tx checksum offload is off on the veths (native XDP forwards partial checksums as they are)."""
    from pyvs.dataplane import attach_pass_program

    for ns, dev in ((DIRECTOR, f"{PREFIX}afc0"), (DIRECTOR, f"{PREFIX}afr0"), (CLIENT, f"{PREFIX}afc1"),
                    (REAL, f"{PREFIX}afr1")):
        sh(ns, "ethtool", "-K", dev, "tx", "off")
    for ns, dev in ((CLIENT, f"{PREFIX}afc1"), (REAL, f"{PREFIX}afr1")):
        with netns.in_netns(ns):
            attach_pass_program(dev)
    attached = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "attach", "--mode",
                                             "native"], check=False)
    assert attached.returncode == 0, attached.stderr
    assert f"XDP (native) attached to {PREFIX}afc0" in attached.stdout
    for args in (("-A", "-t", f"{VIP}:{PORT}", "-s", "rr"),
                 ("-a", "-t", f"{VIP}:{PORT}", "-r", f"{REAL_NET[1]}:{PORT}", "-g"),
                 ("-A", "-u", f"{VIP}:{PORT}", "-s", "rr"),
                 ("-a", "-u", f"{VIP}:{PORT}", "-r", f"{REAL_NET[1]}:{PORT}", "-g")):
        done = pyvsadm(*args)
        assert (done.returncode, done.stderr) == (0, ""), done.stderr  # pyvs runs already: pyvsadm leaves it
    rows = _xdp_rows()
    for dev in (f"{PREFIX}afc0", f"{PREFIX}afr0"):
        assert "native" in rows[dev] and rows[dev][-1] == "explicit", rows
    assert_tcp_and_udp_answered()
