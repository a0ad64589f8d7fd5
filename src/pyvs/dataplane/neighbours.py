"""Finding a real server on the director's segment: egress interface, its MAC, and the real's MAC (ARP for IPv4,
neighbour discovery for IPv6: the kernel's route and neighbour tables say both)."""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass
from ipaddress import ip_address

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
__all__ = ["NUD_USABLE", "ZERO_MAC", "NeighbourError", "NextHop", "interface_index", "resolve", "resolve_tunnel"]


class NeighbourError(RuntimeError):
    """The real server cannot be reached by direct routing; the message says why."""


@dataclass(frozen=True)
class NextHop:
    ifindex: int
    smac: str  # the director's interface MAC
    dmac: str  # the real's MAC (a routed tunnel real: its gateway's), ZERO_MAC when not resolved
    saddr: str | None = None  # the director's source address toward the real (a tunnel's outer source)
    mtu: int = 1500  # the path's MTU to the next hop (the route's, else the interface's)
    gateway: str | None = None  # a routed tunnel real: the gateway its frames go to


def _family(rip: IPAddress) -> int:
    return socket.AF_INET6 if rip.version == 6 else socket.AF_INET


@dataclass(frozen=True)
class _Route:
    ifindex: int
    smac: str
    saddr: str | None
    mtu: int
    gateway: str | None


def _route(ipr: IPRoute, rip: IPAddress, routed: bool) -> _Route:
    try:
        route = ipr.route("get", dst=str(rip), family=_family(rip))[0]
    except Exception as exc:  # pyroute2 raises NetlinkError for unreachable
        raise NeighbourError(f"real server {rip} is unreachable from the director ({exc})") from None
    if route.get("type") == RTN_LOCAL:
        raise NeighbourError(f"real server {rip} is an address of the director itself")
    gateway = route.get_attr("RTA_GATEWAY")
    if gateway and not routed:
        raise NeighbourError(
            f"real server {rip} is reached through the router {gateway}: direct routing needs "
            "the real server on a network the director is directly attached to (or tunnel to it: -i)"
        )
    ifindex = route.get_attr("RTA_OIF")
    link = ipr.get_links(ifindex)[0]
    metrics = route.get_attr("RTA_METRICS")
    mtu = (metrics.get_attr("RTAX_MTU") if metrics is not None else None) or link.get_attr("IFLA_MTU") or 1500
    return _Route(ifindex, link.get_attr("IFLA_ADDRESS"), route.get_attr("RTA_PREFSRC"), int(mtu), gateway)


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


def resolve(rip: IPAddress, wait: float = 1.0, routed: bool = False) -> NextHop:
    """Where frames for `rip` go; waits up to `wait` seconds for ARP (or neighbour discovery) to resolve its MAC.
    `routed` (a tunnel real): a real behind a gateway is reached through it, and the gateway's MAC is the next hop."""
    with IPRoute() as ipr:
        route = _route(ipr, rip, routed)
        hop: IPAddress = ip_address(route.gateway) if route.gateway else rip
        mac = _neighbour_mac(ipr, hop, route.ifindex)
        if mac is None:
            _provoke_arp(rip)  # a datagram to the real makes the kernel resolve its next hop (the gateway or itself)
            deadline = time.monotonic() + wait
            while mac is None and time.monotonic() < deadline:
                time.sleep(0.02)
                mac = _neighbour_mac(ipr, hop, route.ifindex)
        return NextHop(route.ifindex, route.smac, mac or ZERO_MAC, route.saddr, route.mtu, route.gateway)


def resolve_tunnel(rip: IPAddress) -> NextHop:
    """The next hop of a tunnel real: itself on the segment, else its gateway."""
    return resolve(rip, routed=True)


def interface_index(name: str) -> int:
    index = link_index(name)
    if index is None:
        raise NeighbourError(f"no network interface named {name}")
    return index
