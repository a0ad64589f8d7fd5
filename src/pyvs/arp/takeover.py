"""VIP takeover: a director that starts serving a VIP tells the segment at once; one that stops lets go.

announce() makes sure each VIP is an address of the NIC (adding a missing one, recorded: an IPv4 VIP as /32, an
IPv6 VIP as /128 without DAD and deprecated, so that it answers at once and is never the source of the director's
own connections, its health checks among them) and tells the segment: gratuitous ARP (a request and a reply) for
IPv4, an unsolicited neighbour advertisement with the Override flag to all nodes for IPv6 (ARP does not exist
there). The gateway and the switches learn the director's MAC now rather than when their entries expire.
withdraw() removes the VIPs that announce() added, so this director stops answering ARP and neighbour
solicitations for them and the next one's announcement meets no conflict; VIPs the admin configured are left
alone.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from pyvs import netns
from pyvs.arp.nd import unsolicited_advertisement
from pyvs.arp.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    SEND_ONLY,
    gratuitous_arp,
    interface_addresses,
    interface_mac,
    packet_socket,
)
from pyvs.links import require_link
from pyvs.model import IPAddress, address_order

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


def gratuitous_frames(vips: Iterable[IPAddress], mac: str) -> list[bytes]:
    """`vip is-at mac` for each VIP: for IPv4 as an ARP request and as a reply (hosts differ in which they learn
    from), for IPv6 as an unsolicited neighbour advertisement."""
    frames = []
    for vip in vips:
        if isinstance(vip, IPv6Address):
            frames.append(unsolicited_advertisement(vip, mac).frame())
        else:
            frames += [gratuitous_arp(vip, mac, op).frame() for op in (ARP_REQUEST, ARP_REPLY)]
    return frames


def send_gratuitous(vips: Iterable[IPAddress], ifname: str, count: int = ANNOUNCE_COUNT,
                    interval: float = ANNOUNCE_INTERVAL) -> int:
    """Send `count` rounds of announcements for each VIP (gratuitous ARP or unsolicited NA); returns the frames
    sent."""
    frames = gratuitous_frames(vips, interface_mac(ifname))
    with packet_socket(ifname, SEND_ONLY) as sock:
        for round_ in range(count):
            if round_:
                time.sleep(interval)
            for frame in frames:
                sock.send(frame)
    return len(frames) * count


def _present(ifname: str) -> dict[IPAddress, int]:
    """Addresses of both families on ifname -> prefix length."""
    return {address: plen for version in (4, 6) for address, plen in interface_addresses(ifname, version)}


def announce(vips: Iterable[IPAddress], ifname: str, count: int = ANNOUNCE_COUNT,
             state_dir: Path = STATE_DIR) -> list[str]:
    """Own the VIPs on ifname and announce them (gratuitous ARP, unsolicited NA); returns what was done."""
    vips = sorted(set(vips), key=address_order)
    present = _present(ifname)
    actions: list[str] = []
    added = _added(ifname, state_dir)
    with IPRoute() as ipr:
        index = require_link(ifname, ipr)
        for vip in vips:
            if vip in present:
                continue
            if isinstance(vip, IPv4Address):
                ipr.addr("add", index=index, address=str(vip), prefixlen=32)
                actions.append(f"added {vip}/32 to {ifname}")
            else:
                ipr.addr("add", index=index, address=str(vip), prefixlen=128, flags=IFA_F_NODAD,
                         IFA_CACHEINFO={"ifa_preferred": 0, "ifa_valid": 0xFFFFFFFF})
                actions.append(f"added {vip}/128 to {ifname} (nodad, preferred_lft 0)")
            added.append(str(vip))
            _record(ifname, state_dir, added)  # at once: withdraw() must find it even after a crash
    if vips:
        send_gratuitous(vips, ifname, count)
        mac = interface_mac(ifname)
        how = " and ".join(kind for kind, family in (("gratuitous ARP", 4), ("unsolicited NA", 6))
                           if any(vip.version == family for vip in vips))
        actions.append(f"announced {', '.join(map(str, vips))} at {mac} on {ifname} ({how} x{count})")
    for action in actions:
        log.info("takeover: %s", action)
    return actions


def withdraw(vips: Iterable[IPAddress] | None, ifname: str, state_dir: Path = STATE_DIR) -> list[str]:
    """Remove from ifname the VIPs that announce() added (all of them when vips is None); returns what was done."""
    added = _added(ifname, state_dir)
    wanted = None if vips is None else {str(v) for v in vips}
    present = {str(address): plen for address, plen in _present(ifname).items()}
    actions: list[str] = []
    kept: list[str] = []
    with IPRoute() as ipr:
        index = require_link(ifname, ipr)
        for vip in added:
            if wanted is not None and vip not in wanted:
                kept.append(vip)
            elif vip in present:
                ipr.addr("del", index=index, address=vip, prefixlen=present[vip])
                answers = "neighbour solicitations" if ":" in vip else "ARP"
                actions.append(f"removed {vip}/{present[vip]} from {ifname}: this host no longer answers {answers} "
                               "for it")
    _record(ifname, state_dir, kept)
    for vip in sorted((wanted or set()) - set(added)):
        if vip in present:
            actions.append(f"left {vip} on {ifname}: it was configured outside pyvs "
                           f"(ip addr del {vip}/{present[vip]} dev {ifname} stops answering for it)")
    for action in actions:
        log.info("takeover: %s", action)
    return actions
