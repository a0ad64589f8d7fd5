"""Finding a real server on the director's segment: egress interface, its MAC, and the real's MAC (ARP for IPv4,
neighbour discovery for IPv6: the kernel's route and neighbour tables say both)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import ndmsg
from pyroute2.netlink.rtnl import rtypes as _rtypes

from pyvs.links import link_index
from pyvs.mac import ZERO_MAC
from pyvs.model import IPAddress

# Neighbour states whose link-layer address can be used.
NUD_USABLE = (ndmsg.NUD_REACHABLE | ndmsg.NUD_STALE | ndmsg.NUD_DELAY | ndmsg.NUD_PROBE | ndmsg.NUD_NOARP
              | ndmsg.NUD_PERMANENT)
RTN_LOCAL = _rtypes["RTN_LOCAL"]
__all__ = ["NUD_USABLE", "ZERO_MAC", "NeighbourError", "NextHop", "interface_index", "resolve"]


class NeighbourError(RuntimeError):
    """The real server cannot be reached by direct routing; the message says why."""


@dataclass(frozen=True)
class NextHop:
    ifindex: int
    smac: str  # the director's interface MAC
    dmac: str  # the real's MAC, ZERO_MAC when not resolved


def _family(rip: IPAddress) -> int:
    return socket.AF_INET6 if rip.version == 6 else socket.AF_INET


def _route(ipr: IPRoute, rip: IPAddress) -> tuple[int, str]:
    try:
        route = ipr.route("get", dst=str(rip), family=_family(rip))[0]
    except Exception as exc:  # pyroute2 raises NetlinkError for unreachable
        raise NeighbourError(f"real server {rip} is unreachable from the director ({exc})") from None
    if route.get("type") == RTN_LOCAL:
        raise NeighbourError(f"real server {rip} is an address of the director itself")
    gateway = route.get_attr("RTA_GATEWAY")
    if gateway:
        raise NeighbourError(
            f"real server {rip} is reached through the router {gateway}: direct routing needs "
            "the real server on a network the director is directly attached to"
        )
    ifindex = route.get_attr("RTA_OIF")
    link = ipr.get_links(ifindex)[0]
    return ifindex, link.get_attr("IFLA_ADDRESS")


def _neighbour_mac(ipr: IPRoute, rip: IPAddress, ifindex: int) -> str | None:
    for neigh in ipr.get_neighbours(family=_family(rip), dst=str(rip), ifindex=ifindex):
        mac = neigh.get_attr("NDA_LLADDR")
        if mac and neigh["state"] & NUD_USABLE:
            return str(mac)
    return None


def _provoke_arp(rip: IPAddress) -> None:
    """Send one UDP datagram to the discard port: the kernel resolves the real's MAC to send it (ARP, or a
    neighbour solicitation for IPv6)."""
    with socket.socket(_family(rip), socket.SOCK_DGRAM) as sock:
        try:
            sock.sendto(b"", (str(rip), 9))
        except OSError:
            pass


def resolve(rip: IPAddress, wait: float = 1.0) -> NextHop:
    """Where frames for `rip` go; waits up to `wait` seconds for ARP (or neighbour discovery) to resolve its MAC."""
    with IPRoute() as ipr:
        ifindex, smac = _route(ipr, rip)
        mac = _neighbour_mac(ipr, rip, ifindex)
        if mac is None:
            _provoke_arp(rip)
            deadline = time.monotonic() + wait
            while mac is None and time.monotonic() < deadline:
                time.sleep(0.02)
                mac = _neighbour_mac(ipr, rip, ifindex)
        return NextHop(ifindex, smac, mac or ZERO_MAC)


def interface_index(name: str) -> int:
    index = link_index(name)
    if index is None:
        raise NeighbourError(f"no network interface named {name}")
    return index
