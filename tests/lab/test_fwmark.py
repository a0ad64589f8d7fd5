"""A firewall-mark service end to end: nftables marks two ports of a VIP with the same mark in the director's netdev
ingress hook, one `pyvsadm -A -f 1` service balances both, and TCP connections to each port are answered by the real.

Three fresh namespaces (client -- director -- real, tests/lab/chain.py); the VIP is on the director's `lo` and no
address service exists, so the XDP program passes these packets: nft marks them, pyvs's table `netdev pyvs_fwmark`
hands them to their interface's egress, where pyvs_fwm (tcx) schedules them and redirects them to the real's side.
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
CLIENT, DIRECTOR, REAL = (f"{PREFIX}-fm{role}" for role in ("c", "d", "r"))
VIP = "198.18.46.100"
CLIENT_NET = ("198.18.44.1", "198.18.44.2")
REAL_NET = ("198.18.45.1", "198.18.45.2")
PORTS = (8080, 8081)

TCP_CLIENT = textwrap.dedent("""
    import socket, sys
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
    s.sendall(b"GET /hello.txt HTTP/1.0\\r\\nHost: vip\\r\\n\\r\\n")
    data = b""
    while chunk := s.recv(4096):
        data += chunk
    print(data.decode().split("\\r\\n\\r\\n", 1)[1], end="")
""")
MARK_RULES = textwrap.dedent(f"""
    table netdev {PREFIX}mark {{
        chain ingress {{
            type filter hook ingress device "{PREFIX}fmc0" priority 0; policy accept;
            ip daddr {VIP} tcp dport {{ {PORTS[0]}, {PORTS[1]} }} meta mark set 1
        }}
    }}
""")


@pytest.fixture
def chain(tmp_path: Path) -> Iterator[Path]:
    pids: list[int] = []
    cleanup(pids, CLIENT, DIRECTOR, REAL)
    try:
        wire_chain(CLIENT, DIRECTOR, REAL, f"{PREFIX}fm", CLIENT_NET, REAL_NET,
                   lambda addr, dev: ["addr", "add", f"{addr}/24", "dev", dev])
        sh(DIRECTOR, "ip", "addr", "add", f"{VIP}/32", "dev", "lo")
        for key in ("net.ipv4.ip_forward", "net.ipv4.conf.all.accept_local",
                    f"net.ipv4.conf.{PREFIX}fmr0.accept_local"):
            netns.write_sysctl(key, 1, DIRECTOR)
        for key in ("net.ipv4.conf.all.rp_filter", f"net.ipv4.conf.{PREFIX}fmr0.rp_filter"):
            netns.write_sysctl(key, 0, DIRECTOR)
        sh(CLIENT, "ip", "route", "add", f"{VIP}/32", "via", CLIENT_NET[0])
        sh(REAL, "ip", "route", "add", "default", "via", REAL_NET[0])
        sh(REAL, sys.executable, "-m", "pyvs.cli", "realserver", "up", "--vip", VIP, "--dev", f"{PREFIX}fmr1")
        (tmp_path / "hello.txt").write_text("hello from the real\n")
        for port in PORTS:
            pids.append(netns.spawn_in_netns(REAL, [sys.executable, "-m", "http.server", str(port), "--bind",
                                                    "0.0.0.0", "--directory", str(tmp_path)],
                                             log_path=tmp_path / f"http{port}.log"))
        netns.run_in_netns(DIRECTOR, ["nft", "-f", "-"], input=MARK_RULES)
        yield tmp_path
    finally:
        cleanup(pids, CLIENT, DIRECTOR, REAL)


def pyvsadm(*args: str) -> str:
    done = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.admin.cli", *args], check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


def fetch(port: int) -> str:
    deadline = time.monotonic() + 10
    while True:  # retried while the real's servers start
        done = netns.run_in_netns(CLIENT, [sys.executable, "-c", TCP_CLIENT, VIP, str(port)], check=False, timeout=20)
        if done.returncode == 0 or time.monotonic() > deadline:
            return done.stdout
        time.sleep(0.3)


def counters() -> dict[str, int]:
    out = netns.run_in_netns(DIRECTOR, [sys.executable, "-m", "pyvs.cli", "director", "status"]).stdout
    return {p[0]: int(p[1]) for p in (line.split() for line in out.splitlines()) if len(p) == 2 and p[1].isdigit()}


def test_one_fwmark_service_balances_two_marked_ports(chain: Path) -> None:
    assert fetch(PORTS[0]) == ""  # before the service: the VIP's kernel refuses (nothing listens on the director)
    pyvsadm("-A", "-f", "1", "-s", "rr")
    pyvsadm("-a", "-f", "1", "-r", REAL_NET[1], "-g")
    assert pyvsadm("-L", "-n").splitlines()[3:] == [
        "FWM  1 rr", f"  -> {REAL_NET[1]}:0{' ' * (28 - len(REAL_NET[1]) - 2)} Route   1      0          0         "]
    assert pyvsadm("-S", "-n") == f"-A -f 1 -s rr\n-a -f 1 -r {REAL_NET[1]}:0 -g -w 1\n"
    # pyvs's nft table hands the marked packets to pyvs_fwm on the interfaces pyvs runs on.
    table = sh(DIRECTOR, "nft", "list", "table", "netdev", "pyvs_fwmark")
    assert "elements = { 0x00000001 }" in table and f"{PREFIX}fmc0" in table

    for port in PORTS:
        assert fetch(port) == "hello from the real\n"
    conns = pyvsadm("-L", "-c", "-n")
    for port in PORTS:
        # A real of port 0 takes the packet's port, as in IPVS's connection entries.
        assert f"{VIP}:{port}{' ' * (18 - len(VIP) - 5)} {REAL_NET[1]}:{port}" in conns
    assert counters().get("fwm_seen", 0) >= 4  # at least a SYN and an ACK per connection

    # The service gone, the table goes, and the marked ports are the kernel's again.
    pyvsadm("-D", "-f", "1")
    listing = netns.run_in_netns(DIRECTOR, ["nft", "list", "table", "netdev", "pyvs_fwmark"], check=False)
    assert listing.returncode != 0
