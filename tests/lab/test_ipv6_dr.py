"""IPv6 direct routing end to end, with only `pyvsadm` in the director.

Three fresh namespaces, IPv6 only: a client, a director with the VIP on `lo`, and a real behind a second interface
of the director (the VIP on its `lo` too: an address on `lo` gets no neighbour advertisement on another interface,
so IPv6 needs no arp_ignore). pyvsadm attaches pyvs's program by itself to both interfaces (they have global IPv6
addresses and no IPv4 one), resolves the real's MAC by neighbour discovery, and the director redirects the client's
SYN and datagram to the real; the real's replies go back through the director as a router. A TCP connection and a
UDP exchange succeed, and `pyvsadm -L -c -n` lists the IPv6 connection.
"""

from __future__ import annotations

import os
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs import netns
from tests.lab.chain import cleanup, sh, wire_chain

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
CLIENT, DIRECTOR, REAL = (f"{PREFIX}-6{role}" for role in ("c", "d", "r"))
VIP = "2001:db8:42::100"
CLIENT_NET = ("2001:db8:40::1", "2001:db8:40::2")  # director's side, client's side
REAL_NET = ("2001:db8:41::1", "2001:db8:41::2")  # director's side, the real (RIP)
PORT = 8080

SERVERS = textwrap.dedent(f"""
    import socket, threading
    def udp():
        s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        s.bind(("{VIP}", {PORT}))
        while True:
            data, peer = s.recvfrom(4096)
            s.sendto(b"echo " + data, peer)
    threading.Thread(target=udp, daemon=True).start()
    t = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    t.bind(("{VIP}", {PORT}))
    t.listen()
    while True:
        c, peer = t.accept()
        c.recv(4096)
        c.sendall(b"hello over IPv6 from " + peer[0].encode() + b"\\n")
        c.close()
""")
TCP_CLIENT = textwrap.dedent(f"""
    import socket
    s = socket.create_connection(("{VIP}", {PORT}), timeout=5)
    s.sendall(b"hello")
    print(s.recv(4096).decode(), end="")
""")
UDP_CLIENT = textwrap.dedent(f"""
    import socket
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
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
def ipv6_namespaces(tmp_path: Path) -> Iterator[list[int]]:
    """client -- director -- real, IPv6 only; the VIP on the director's and the real's lo."""
    pids: list[int] = []
    _cleanup(pids)
    try:
        wire_chain(CLIENT, DIRECTOR, REAL, f"{PREFIX}6", CLIENT_NET, REAL_NET,
                   lambda addr, dev: ["-6", "addr", "add", f"{addr}/64", "dev", dev, "nodad"])
        for ns in (DIRECTOR, REAL):
            sh(ns, "ip", "-6", "addr", "add", f"{VIP}/128", "dev", "lo", "nodad")
        netns.write_sysctl("net.ipv6.conf.all.forwarding", 1, DIRECTOR)  # the real's replies go back through it
        sh(CLIENT, "ip", "-6", "route", "add", f"{VIP}/128", "via", CLIENT_NET[0])
        sh(REAL, "ip", "-6", "route", "add", "default", "via", REAL_NET[0])
        pids.append(netns.spawn_in_netns(REAL, [sys.executable, "-c", SERVERS], log_path=tmp_path / "servers.log"))
        yield pids
    finally:
        _cleanup(pids)


def pyvsadm(*args: str) -> str:
    done = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.admin.cli", *args], check=False)
    assert done.returncode == 0, done.stderr
    return done.stderr


def test_only_pyvsadm_forwards_ipv6_tcp_and_udp_to_a_real(ipv6_namespaces: list[int]) -> None:
    note = pyvsadm("-A", "-t", f"[{VIP}]:{PORT}", "-s", "rr")
    assert f"attached (generic mode) to {PREFIX}6c0, {PREFIX}6r0" in note, note  # no IPv4 anywhere
    pyvsadm("-a", "-t", f"[{VIP}]:{PORT}", "-r", f"[{REAL_NET[1]}]:{PORT}", "-g")
    pyvsadm("-A", "-u", f"[{VIP}]:{PORT}", "-s", "rr")
    pyvsadm("-a", "-u", f"[{VIP}]:{PORT}", "-r", REAL_NET[1], "-g")
    deadline = time.monotonic() + 10
    while True:  # the real's servers are starting
        tcp = netns.run_in_netns(CLIENT, [sys.executable, "-c", TCP_CLIENT], check=False, timeout=20)
        if tcp.returncode == 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert (tcp.returncode, tcp.stdout) == (0, f"hello over IPv6 from {CLIENT_NET[1]}\n"), tcp.stderr
    udp = netns.run_in_netns(CLIENT, [sys.executable, "-c", UDP_CLIENT], check=False, timeout=20)
    assert udp.stdout == f"echo ping {VIP}\n", udp.stderr

    connections = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.admin.cli", "-L", "-c", "-n"]).stdout
    assert f"[{CLIENT_NET[1]}]:" in connections and f"[{VIP}]:{PORT} [{REAL_NET[1]}]:{PORT}" in connections
    stats = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.admin.cli", "-L", "-n", "--stats"]).stdout
    tcp_line = next(line for line in stats.splitlines() if line.startswith(f"TCP  [{VIP}]:{PORT}"))
    assert int(tcp_line.split()[2]) >= 1  # connections
    status = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "status"]).stdout
    counters = {parts[0]: parts[1] for parts in (line.split() for line in status.splitlines()) if len(parts) == 2}
    assert int(counters["redirect"]) >= 2 and int(counters["drop_no_mac"]) == 0, status
