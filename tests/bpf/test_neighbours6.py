"""An IPv6 real's next hop from the kernel's IPv6 route and neighbour tables (pyvs.dataplane.neighbours): two
namespaces on a veth, the real's MAC learnt by neighbour discovery that resolve() provokes."""

from __future__ import annotations

import os
from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest
from pyroute2 import NetNS

from pyvs.dataplane.neighbours import NeighbourError, resolve
from pyvs.netns import create, exists, in_netns, remove

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
DIRECTOR, REAL = f"{PREFIX}-nd{os.getpid() % 1000}", f"{PREFIX}-nr{os.getpid() % 1000}"
IFA_F_NODAD = 0x02


@pytest.fixture
def segment() -> Iterator[tuple[str, str]]:
    """(director's interface name, the real's MAC) of an IPv6-only segment between two namespaces."""
    for name in (DIRECTOR, REAL):
        create(name)
    try:
        with NetNS(DIRECTOR) as ns:
            ns.link("add", ifname="pyvsn0", kind="veth", peer={"ifname": "pyvsn1", "net_ns_fd": REAL})
            index = ns.link_lookup(ifname="pyvsn0")[0]
            ns.link("set", index=index, state="up")
            ns.addr("add", index=index, address="2001:db8:2::10", prefixlen=64, flags=IFA_F_NODAD)
            ns.route("add", dst="2001:db8:9::", dst_len=64, gateway="2001:db8:2::1", oif=index)
        with NetNS(REAL) as ns:
            index = ns.link_lookup(ifname="pyvsn1")[0]
            ns.link("set", index=index, state="up")
            ns.addr("add", index=index, address="2001:db8:2::11", prefixlen=64, flags=IFA_F_NODAD)
            mac = ns.get_links(index)[0].get_attr("IFLA_ADDRESS")
        yield "pyvsn0", mac
    finally:
        for name in (DIRECTOR, REAL):
            if exists(name):
                remove(name)


def test_an_ipv6_real_is_resolved_by_neighbour_discovery(segment: tuple[str, str]) -> None:
    ifname, mac = segment
    with in_netns(DIRECTOR):
        hop = resolve(IPv6Address("2001:db8:2::11"), wait=3.0)
        from pyvs.links import link_index

        assert (hop.ifindex, hop.dmac) == (link_index(ifname), mac)
        silent = resolve(IPv6Address("2001:db8:2::12"), wait=0.3)  # on the segment, but nobody answers
        assert silent.dmac == "00:00:00:00:00:00" and silent.ifindex == hop.ifindex


@pytest.mark.parametrize(("address", "message"), [
    ("2001:db8:9::5", "reached through the router 2001:db8:2::1"),
    ("2001:db8:2::10", "an address of the director itself"),
    ("2001:db8:7::5", "unreachable from the director"),
])
def test_an_ipv6_real_not_on_a_directly_attached_segment_is_refused(segment: tuple[str, str], address: str,
                                                                    message: str) -> None:
    with in_netns(DIRECTOR), pytest.raises(NeighbourError, match=message):
        resolve(IPv6Address(address), wait=0.1)
