"""Fixtures for lab tests: real namespaces, real kernels; everything is removed afterwards."""

from __future__ import annotations

import atexit
import os
from collections.abc import Iterator

import pytest

from pyvs import netns
from pyvs.lab import lab as lab_api
from pyvs.lab.topology import Topology, default_topology

# Parallel runs (several developers on one machine) each set their own prefix.
LAB_PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")


def lab_up(topo: Topology) -> Iterator[Topology]:
    """A module's own lab: whatever an earlier run left is taken down, then the lab is brought up, yielded and always
    taken down (also at exit, if the run is interrupted). For a fixture: `yield from lab_up(topo)`."""
    atexit.register(lab_api.down, topo)
    lab_api.down(topo)
    try:
        lab_api.up(topo)
        yield topo
    finally:
        lab_api.down(topo)


@pytest.fixture(scope="session")
def lab_topology() -> Topology:
    return default_topology(prefix=LAB_PREFIX)


@pytest.fixture(scope="session")
def lab(lab_topology: Topology) -> Iterator[Topology]:
    """The default lab cluster, up for the whole session and always torn down."""
    atexit.register(lab_api.down, lab_topology)  # also if the session is interrupted
    try:
        lab_api.up(lab_topology)
        yield lab_topology
    finally:
        lab_api.down(lab_topology)


@pytest.fixture(scope="module", autouse=True)
def shared_lab_left_as_found(request: pytest.FixtureRequest, lab_topology: Topology) -> Iterator[None]:
    """A module that used the session's lab must leave it as the tutorial made it. Checked after the module with
    `pyvs lab status`'s problems (rules, the reals' MACs in the data plane and in the director's neighbour table,
    the real servers); what differs is repaired by `lab up` and reported as the module's error, so that one
    module's leftovers do not fail the tests of the next ones."""
    yield
    if not any("lab" in item.fixturenames for item in request.session.items if item.module is request.module):
        return
    if not netns.exists(lab_topology.director.netns):
        return
    problems = lab_api.status(lab_topology)["problems"]
    if problems:
        repaired = lab_api.up(lab_topology)
        pytest.fail(f"{request.module.__name__} left the session's lab changed: {'; '.join(problems)} "
                    f"(repaired: {'; '.join(repaired)})")


@pytest.fixture(scope="session")
def lab6_hosts() -> Iterator[Topology]:
    """The dual-stack lab (`pyvs lab up --ipv6`, prefix LAB_PREFIX + "6") without the director's data plane: hosts,
    gateway, real servers. Up for the whole session and always torn down."""
    topo = default_topology(prefix=f"{LAB_PREFIX}6", ipv6=True)
    atexit.register(lab_api.down, topo)
    try:
        lab_api.up(topo, director=False)
        yield topo
    finally:
        lab_api.down(topo)


@pytest.fixture
def lab6(lab6_hosts: Topology) -> Topology:
    """The dual-stack lab with the director's data plane (XDP, the tutorial's rules for both VIPs)."""
    lab_api.up(lab6_hosts)  # adds what is missing: the director's part
    return lab6_hosts


@pytest.fixture
def throwaway_netns() -> Iterator[str]:
    """A bare netns with a veth pair (eth0 198.18.3.2/24, default route) to play real server in."""
    name = f"{LAB_PREFIX}-rsx"
    _remove_netns(name)
    netns.create(name)
    atexit.register(_remove_netns, name)
    try:
        for argv in (
            ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", f"{LAB_PREFIX}-rsxp"],
            ["ip", "addr", "add", "198.18.3.2/24", "dev", "eth0"],
            ["ip", "link", "set", "eth0", "up"],
            ["ip", "link", "set", f"{LAB_PREFIX}-rsxp", "up"],
            ["ip", "route", "add", "default", "via", "198.18.3.1", "dev", "eth0"],
        ):
            netns.run_in_netns(name, argv)
        yield name
    finally:
        _remove_netns(name)


def _remove_netns(name: str) -> None:
    if netns.exists(name):
        netns.remove(name)
