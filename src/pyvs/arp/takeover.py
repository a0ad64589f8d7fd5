"""VIP takeover: a director that starts serving a VIP tells the segment at once; one that stops lets go.

announce() makes sure each VIP is an address of the NIC (adding a missing one as /32, recorded) and sends
gratuitous ARP, a request and a reply, so the gateway and the switches learn the director's MAC now rather
than when their cache entries expire. withdraw() removes the VIPs that announce() added, so this director
stops answering ARP for them and the next one's announcement meets no conflict; VIPs the admin configured
are left alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2 import IPRoute

from pyvs import netns
from pyvs.arp.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    ETH_P_ARP,
    gratuitous_arp,
    interface_addresses,
    interface_mac,
    packet_socket,
)
from pyvs.links import require_link

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/pyvs/takeover")
ANNOUNCE_COUNT = 3
ANNOUNCE_INTERVAL = 0.05


def _state_path(ifname: str, state_dir: Path) -> Path:
    return state_dir / f"{netns.netns_cookie()}-{ifname}.json"


def _added(ifname: str, state_dir: Path) -> list[str]:
    try:
        data: list[str] = json.loads(_state_path(ifname, state_dir).read_text())
        return data
    except (FileNotFoundError, ValueError):
        return []


def _record(ifname: str, state_dir: Path, vips: list[str]) -> None:
    path = _state_path(ifname, state_dir)
    if not vips:
        path.unlink(missing_ok=True)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(sorted(set(vips))))


def gratuitous_frames(vips: Iterable[IPv4Address], mac: str) -> list[bytes]:
    """`vip is-at mac` for each VIP, as a request and as a reply (hosts differ in which they learn from)."""
    return [gratuitous_arp(vip, mac, op).frame() for vip in vips for op in (ARP_REQUEST, ARP_REPLY)]


def send_gratuitous(vips: Iterable[IPv4Address], ifname: str, count: int = ANNOUNCE_COUNT,
                    interval: float = ANNOUNCE_INTERVAL) -> int:
    """Send `count` rounds of gratuitous ARP (request and reply) for each VIP; returns the frames sent."""
    frames = gratuitous_frames(vips, interface_mac(ifname))
    with packet_socket(ifname, ETH_P_ARP) as sock:
        for round_ in range(count):
            if round_:
                time.sleep(interval)
            for frame in frames:
                sock.send(frame)
    return len(frames) * count


def announce(vips: Iterable[IPv4Address], ifname: str, count: int = ANNOUNCE_COUNT,
             state_dir: Path = STATE_DIR) -> list[str]:
    """Own the VIPs on ifname and announce them with gratuitous ARP; returns what was done."""
    vips = sorted(set(vips))
    present = {address for address, _ in interface_addresses(ifname)}
    actions: list[str] = []
    added = _added(ifname, state_dir)
    with IPRoute() as ipr:
        index = require_link(ifname, ipr)
        for vip in vips:
            if vip not in present:
                ipr.addr("add", index=index, address=str(vip), prefixlen=32)
                added.append(str(vip))
                _record(ifname, state_dir, added)  # at once: withdraw() must find it even after a crash
                actions.append(f"added {vip}/32 to {ifname}")
    if vips:
        send_gratuitous(vips, ifname, count)
        mac = interface_mac(ifname)
        actions.append(f"announced {', '.join(map(str, vips))} at {mac} on {ifname} (gratuitous ARP x{count})")
    for action in actions:
        log.info("takeover: %s", action)
    return actions


def withdraw(vips: Iterable[IPv4Address] | None, ifname: str, state_dir: Path = STATE_DIR) -> list[str]:
    """Remove from ifname the VIPs that announce() added (all of them when vips is None); returns what was done."""
    added = _added(ifname, state_dir)
    wanted = None if vips is None else {str(v) for v in vips}
    present = {str(address): plen for address, plen in interface_addresses(ifname)}
    actions: list[str] = []
    kept: list[str] = []
    with IPRoute() as ipr:
        index = require_link(ifname, ipr)
        for vip in added:
            if wanted is not None and vip not in wanted:
                kept.append(vip)
            elif vip in present:
                ipr.addr("del", index=index, address=vip, prefixlen=present[vip])
                actions.append(f"removed {vip}/{present[vip]} from {ifname}: this host no longer answers ARP for it")
    _record(ifname, state_dir, kept)
    for vip in sorted((wanted or set()) - set(added)):
        if vip in present:
            actions.append(f"left {vip} on {ifname}: it was configured outside pyvs "
                           f"(ip addr del {vip}/{present[vip]} dev {ifname} stops answering ARP for it)")
    for action in actions:
        log.info("takeover: %s", action)
    return actions
