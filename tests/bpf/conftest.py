"""Fixtures for BPF_PROG_TEST_RUN tests: a data plane pinned under a test-only path."""

from __future__ import annotations

from collections.abc import Iterator
from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.dataplane import Dataplane, scratch_dataplane
from pyvs.dataplane.neighbours import ZERO_MAC, NextHop
from pyvs.model import IPAddress

DIRECTOR_MAC = "02:00:00:00:00:0a"
CLIENT_MAC = "02:00:00:00:00:01"
# The segment's neighbour table: real server -> (MAC, egress ifindex; 0 = back out the ingress port).
REALS: dict[IPAddress, tuple[str, int]] = {
    IPv4Address("198.18.2.11"): ("02:00:00:00:00:11", 0),
    IPv4Address("198.18.2.12"): ("02:00:00:00:00:12", 0),
    IPv4Address("198.18.2.13"): ("02:00:00:00:00:13", 0),
    IPv4Address("198.18.2.14"): (ZERO_MAC, 0),  # never answers ARP
    IPv4Address("198.18.2.15"): ("02:00:00:00:00:15", 7),  # behind another interface
    IPv6Address("2001:db8:2::11"): ("02:00:00:00:06:11", 0),
    IPv6Address("2001:db8:2::12"): ("02:00:00:00:06:12", 0),
    IPv6Address("2001:db8:2::13"): ("02:00:00:00:06:13", 0),
    IPv6Address("2001:db8:2::14"): (ZERO_MAC, 0),  # never answers neighbour solicitations
    IPv6Address("2001:db8:2::15"): ("02:00:00:00:06:15", 7),  # behind another interface
}


def static_neighbours(rip: IPAddress) -> NextHop:
    mac, ifindex = REALS[rip]
    return NextHop(ifindex, DIRECTOR_MAC, mac)


@pytest.fixture
def dataplane() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvst-bpf", static_neighbours) as dp:
        yield dp
