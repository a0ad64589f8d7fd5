"""Connection semantics in the lab: timeouts, persistence, and rule changes under load."""

from __future__ import annotations

import socket
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack

import pytest

from pyvs.lab.topology import Topology
from pyvs.lab.traffic import http_connection, http_get, keepalive_get, udp_ask
from pyvs.netns import in_netns, run_in_netns

VIP80 = "198.18.0.100:80"


def pyvsadm(topo: Topology, *args: str, stdin: str | None = None) -> str:
    return run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args], input=stdin).stdout


@pytest.fixture
def rules_restored(lab: Topology) -> Iterator[Topology]:
    """Whatever a test does to the director's rules and timeouts is undone afterwards."""
    saved = pyvsadm(lab, "-S", "-n")
    timeouts = pyvsadm(lab, "-L", "--timeout").split(":")[1].split()
    try:
        yield lab
    finally:
        pyvsadm(lab, "-C")
        pyvsadm(lab, "-R", stdin=saved)
        pyvsadm(lab, "--set", *timeouts)


def test_udp_flow_lives_for_the_udp_timeout(rules_restored: Topology) -> None:
    lab = rules_restored
    pyvsadm(lab, "--set", "0", "0", "2")
    with in_netns(lab.client.netns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.bind(("198.18.1.2", 0))

        def ask() -> str:
            sock.sendto(b"x", (lab.public_ip, 80))
            return sock.recvfrom(100)[0].decode().split()[0]

        first = [ask() for _ in range(3)]
        assert len(set(first)) == 1  # one flow, one real
        assert "UDP" in pyvsadm(lab, "-L", "-c", "-n")
        time.sleep(3.5)  # timeout 2 s, the sweeper runs every second
        assert "UDP " not in pyvsadm(lab, "-L", "-c", "-n")
        assert ask() != first[0]  # the expired flow was scheduled again: rr moved on


def test_persistence_keeps_a_client_on_one_real(rules_restored: Topology) -> None:
    lab = rules_restored
    pyvsadm(lab, "-E", "-t", VIP80, "-s", "rr", "-p", "30")
    assert f"TCP  {VIP80} rr persistent 30" in pyvsadm(lab, "-L", "-n")
    served = Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(10))
    assert len(served) == 1 and sum(served.values()) == 10
    connections = pyvsadm(lab, "-L", "-c", "-n")
    assert "NONE        198.18.1.2:0" in connections  # the template, as ipvsadm shows it


def test_weight_and_scheduler_changes_under_load_keep_established_flows(rules_restored: Topology) -> None:
    lab = rules_restored
    with http_connection(lab.client.netns, lab.public_ip) as a, http_connection(lab.client.netns, lab.public_ip) as b:
        owners = {id(conn): keepalive_get(conn).server for conn in (a, b)}
        failures = 0
        for step in range(12):
            scheduler = "wrr" if step % 2 else "rr"
            pyvsadm(lab, "-E", "-t", VIP80, "-s", scheduler)
            weight = str(1 + step % 3)
            pyvsadm(lab, "-e", "-t", VIP80, "-r", "198.18.2.11:80", "-g", "-w", weight)
            for conn in (a, b):
                assert keepalive_get(conn).server == owners[id(conn)]
            try:
                http_get(lab.client.netns, lab.public_ip, timeout=5)
            except OSError:
                failures += 1
        assert failures == 0
    assert "TCP  198.18.0.100:80 wrr" in pyvsadm(lab, "-L", "-n")


def test_connection_listing_shows_states_as_ipvsadm(lab: Topology) -> None:
    http_get(lab.client.netns, lab.public_ip)
    udp_ask(lab.client.netns, lab.public_ip, b"hi")
    listing = pyvsadm(lab, "-L", "-c", "-n").splitlines()
    header = "pro expire state       source             virtual            destination"
    assert listing[:2] == ["IPVS connection entries", header]
    states = {line.split()[2] for line in listing[2:]}
    assert "FIN_WAIT" in states or "TIME_WAIT" in states or "CLOSE" in states
    assert "UDP" in states


def test_wlc_splits_400_long_lived_connections_by_weight(rules_restored: Topology) -> None:
    lab = rules_restored
    pyvsadm(lab, "-E", "-t", VIP80, "-s", "wlc")
    pyvsadm(lab, "-e", "-t", VIP80, "-r", "198.18.2.11:80", "-g", "-w", "3")
    pyvsadm(lab, "-e", "-t", VIP80, "-r", "198.18.2.12:80", "-g", "-w", "1")
    with ExitStack() as stack:
        servers = Counter(
            keepalive_get(stack.enter_context(http_connection(lab.client.netns, lab.public_ip))).server
            for _ in range(400)
        )
        listing = pyvsadm(lab, "-L", "-n")
    assert 285 <= servers["rs1"] <= 315 and servers["rs1"] + servers["rs2"] == 400, servers
    tcp_part = listing.split("UDP  ")[0]
    active = {line.split()[1]: int(line.split()[4]) for line in tcp_part.splitlines() if "Route" in line}
    assert active["198.18.2.11:80"] >= 285  # the open connections are ActiveConn
