"""[vrrp]: active/backup with keepalived's VRRP. keepalived owns the VIPs (its vrrp_instance's virtual_ipaddress) and
moves them between the directors; the daemon follows the VIPs on its interface.

Why the address and not keepalived's notify hooks: the address is what keepalived changes at every transition and
what makes the kernel answer ARP for the VIP, so it is the truth the data plane must agree with. The daemon reads it
at start (a restarted daemon needs no replayed notification), wakes on every address change (a netlink socket
subscribed to the address groups, no polling delay) and looks again every WATCH_INTERVAL in case an event was lost.
A notify script would be a second channel that can be lost, run late, or run while the daemon is down. FAULT and
BACKUP look alike here (the VIP is gone either way), which is all the data plane needs to know.

A VIP on the interface is served: the data plane forwards it and the daemon sends gratuitous ARP when it arrives
(keepalived sends its own too; more rounds cost nothing and help a gateway that missed the first). A VIP not there
is standby (Dataplane.set_standby): its packets go to this host's kernel, which drops them (not a local address),
so a backup forwards nothing even when a switch floods a frame to it. Rules, connections and tables stay, so the
backup takes over with the same fingerprint and whatever connection sync gave it.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass

from pyvs.arp.packets import interface_addresses
from pyvs.model import IPAddress, address_order

WATCH_INTERVAL = 1.0  # seconds between looks at the interface's addresses when no netlink event came
RTMGRP_IPV4_IFADDR = 0x10
RTMGRP_IPV6_IFADDR = 0x100


def held(vips: Iterable[IPAddress], ifname: str) -> set[IPAddress]:
    """The VIPs that are addresses of ifname now."""
    present = {address for version in (4, 6) for address, _ in interface_addresses(ifname, version)}
    return set(vips) & present


def role(vips: Iterable[IPAddress], holding: set[IPAddress]) -> str:
    """master (every VIP held), backup (none) or partial."""
    vips = set(vips)
    if vips and vips <= holding:
        return "master"
    return "partial" if vips & holding else "backup"


@dataclass(frozen=True)
class Change:
    """What one look at the interface changed in the data plane."""

    served: list[IPAddress]  # VIPs that arrived: served again (gratuitous ARP sent)
    standby: list[IPAddress]  # VIPs that left: no longer served

    def __bool__(self) -> bool:
        return bool(self.served or self.standby)


def address_events() -> socket.socket:
    """A non-blocking netlink socket that receives every address added or removed in this namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    sock.bind((0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))
    return sock


def drain(sock: socket.socket) -> None:
    """Read every pending message (only their arrival matters: the addresses are read again)."""
    while True:
        try:
            if not sock.recv(65536):
                return
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # ENOBUFS: events were lost; the next look reads the truth anyway
            return


def sorted_vips(vips: Iterable[IPAddress]) -> list[IPAddress]:
    return sorted(set(vips), key=address_order)
