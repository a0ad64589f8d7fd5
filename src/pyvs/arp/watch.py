"""`pyvs arpwatch`: the ARP guard of the director's segment.

A raw AF_PACKET socket on the director's NIC receives the segment's ARP (the XDP program passes ARP to the
kernel untouched: no per-packet work on the fast path). Every probe interval the guard also asks, with RFC 5227
probes (who-has X tell 0.0.0.0, which teach nobody anything), who owns each VIP and each real's address, so
a host that answers for the VIP or a real whose MAC changed is seen within the interval even when nothing else
talks. It reports structured events:
- vip_conflict: a MAC that is not the director's answers or announces a VIP;
- mac_change: an address moves to another MAC (role gateway for the director's router: impersonation);
- real_mac_change: a real's address is claimed by another MAC. A claim alone moves nothing (one forged ARP reply
  would send the real's flows to the forger). With --follow-real-macs the claim is verified: a unicast ARP probe
  goes to the old MAC and to the new one; when within `verify_time` the new MAC answers and the old one does not,
  real_mac_verified is reported and the data plane follows (Dataplane.set_real_mac, only entries still at the old
  MAC); otherwise real_mac_rejected says why, and the director's own neighbour entry, if the claim moved it, is
  put back at the kept MAC (the kernel takes an unasked ARP reply; a later resolve would take the forger);
- pinned_mac_violation: a pinned address is claimed by another MAC (the pin holds);
- flip_flop: an address changed MAC `flip_count` times within `flip_window` seconds;
- garp_flood: more than `garp_limit` gratuitous ARPs from one address within a second;
- vip_announced: the defence re-announced the VIPs with gratuitous ARP;
and counters (a summary event when it stops; with --metrics also served to Prometheus while it runs).
ARP is IPv4's: the rules' IPv6 VIPs and reals are left out (the watching event names them); `pyvs doctor` checks
who answers neighbour solicitations for an IPv6 VIP, and the daemon's takeover announces one with an unsolicited
neighbour advertisement.
Defence, when on: a contested VIP or an impersonated gateway or pinned address gets the VIPs re-announced at
once and twice more within a second (a GARP overrides the neighbour caches' one-second lock time, and a second
round outlasts a short burst). Pins are installed as permanent neighbour entries of the director, which no ARP
can change, and removed when the guard stops.
"""

from __future__ import annotations

import json
import logging
import select
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from pyroute2 import IPRoute
from pyroute2.netlink.rtnl import ndmsg

from pyvs.arp.packets import (
    ANY_IP,
    ARP_REPLY,
    ARP_REQUEST,
    ETH_P_ARP,
    PACKET_OUTGOING,
    Arp,
    arp_probe,
    interface_mac,
    packet_socket,
    parse_arp,
)
from pyvs.arp.takeover import gratuitous_frames
from pyvs.dataplane import Dataplane, pinned_dataplane
from pyvs.dataplane.neighbours import NUD_USABLE, NeighbourError, interface_index, resolve
from pyvs.dataplane.pins import default_pin_dir
from pyvs.mac import ZERO_MAC, normalize_mac
from pyvs.model import IPAddress, address_order

log = logging.getLogger(__name__)

NUD_PERMANENT = ndmsg.NUD_PERMANENT
NUD_REACHABLE = ndmsg.NUD_REACHABLE
REANNOUNCE_AFTER = (0.0, 0.5, 1.0)  # seconds after a contest
REANNOUNCE_GAP = 0.2  # never two announcements closer than this
RULES_REFRESH = 2.0
# The kinds of event the guard counts (pyvs_arp_events_total shows each, 0 until seen).
EVENT_KINDS = ("vip_conflict", "mac_change", "gateway_impersonation", "real_mac_change", "real_mac_verified",
               "real_mac_rejected", "pinned_mac_violation", "flip_flop", "garp_flood")
REPORT_GAP = 1.0  # the same conflict is reported at most once a second
DEFENDED = ("vip_conflict", "pinned_mac_violation", "gateway_impersonation")


@dataclass(frozen=True)
class Event:
    event: str
    ip: str
    mac: str
    time: float = field(default_factory=time.time)
    old_mac: str | None = None
    role: str | None = None  # vip, gateway, real, pinned, host
    detail: str = ""
    counters: dict[str, int] | None = None  # in the summary

    def json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v not in (None, "")})

    def text(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        parts = [stamp, self.event, f"ip={self.ip}", f"mac={self.mac}"]
        parts += [f"old_mac={self.old_mac}"] if self.old_mac else []
        parts += [f"role={self.role}"] if self.role else []
        parts += [" ".join(f"{k}={v}" for k, v in sorted(self.counters.items()))] if self.counters else []
        return " ".join(parts) + (f"  {self.detail}" if self.detail else "")


@dataclass
class GuardConfig:
    flip_window: float = 10.0
    flip_count: int = 3
    garp_limit: int = 10
    follow_real_macs: bool = False  # the admin allows the data plane to follow a real's verified new MAC
    verify_time: float = 0.5  # seconds the old and the new MAC have to answer the unicast probes


@dataclass
class MacClaim:
    """A real's address claimed by a new MAC, under verification: who answered since `started`."""
    ip: IPv4Address
    old: str
    new: str
    started: float
    old_answered: bool = False
    new_answered: bool = False


class Guard:
    """What the ARP seen on the segment means. Pure: no sockets, time is passed in."""

    def __init__(self, director_macs: set[str], vips: set[IPv4Address], reals: dict[IPv4Address, str],
                 gateways: set[IPv4Address], pins: dict[IPv4Address, str], known: dict[IPv4Address, str] | None = None,
                 config: GuardConfig | None = None):
        self.director_macs = director_macs
        self.vips = vips
        self.reals = dict(reals)  # rip -> the MAC the data plane sends to
        self.gateways = gateways
        self.pins = pins
        self.known = dict(known or {})  # ip -> last MAC seen
        self.config = config or GuardConfig()
        self.counters: Counter[str] = Counter()
        self._changes: dict[IPv4Address, deque[float]] = {}
        self._garps: dict[IPv4Address, deque[float]] = {}
        self._reported: dict[tuple[str, IPv4Address, str], float] = {}
        self.claims: dict[IPv4Address, MacClaim] = {}  # claims of reals' addresses being verified

    def _once(self, kind: str, ip: IPv4Address, mac: str, now: float, gap: float = REPORT_GAP) -> bool:
        last = self._reported.get((kind, ip, mac))
        if last is not None and now - last < gap:
            return False
        self._reported[(kind, ip, mac)] = now
        return True

    def _role(self, ip: IPv4Address) -> str:
        if ip in self.gateways:
            return "gateway"
        return "real" if ip in self.reals else "host"

    def observe(self, arp: Arp, now: float) -> list[Event]:
        self.counters["arp_frames"] += 1
        ip, mac = arp.sender_ip, arp.sender_mac
        if arp.probe or mac == ZERO_MAC:
            return []
        events: list[Event] = []
        if arp.gratuitous:
            events += self._garp_flood(ip, mac, now)
        if ip in self.vips:
            if mac not in self.director_macs and self._once("vip_conflict", ip, mac, now):
                how = "announces" if arp.gratuitous else "answers ARP for"
                events.append(Event("vip_conflict", str(ip), mac, role="vip",
                                    detail=f"{mac} {how} the VIP, which only the director may"))
            return self._counted(events)
        pinned = self.pins.get(ip)
        if pinned is not None:
            if mac != pinned and self._once("pinned_mac_violation", ip, mac, now):
                events.append(Event("pinned_mac_violation", str(ip), mac, old_mac=pinned, role=self._role(ip),
                                    detail=f"claimed by {mac}; pinned at {pinned}, the pin holds"))
            return self._counted(events)
        if ip in self.reals:
            self.known[ip] = mac
            return self._counted(events + self._real_claim(arp, mac, now))
        old = self.known.get(ip)
        self.known[ip] = mac
        if old is None or old == mac:
            return self._counted(events)
        events += self._flip_flop(ip, mac, now)
        role = self._role(ip)
        kind = "gateway_impersonation" if role == "gateway" else "mac_change"
        events.append(Event(kind, str(ip), mac, old_mac=old, role=role,
                            detail="the gateway's address moved to another MAC" if role == "gateway" else ""))
        return self._counted(events)

    def _real_claim(self, arp: Arp, mac: str, now: float) -> list[Event]:
        """An ARP from a real's address: an answer to a verification under way, or a new claim."""
        ip = arp.sender_ip
        claim = self.claims.get(ip)
        if claim is not None:
            if arp.op == ARP_REPLY and mac == claim.old:
                claim.old_answered = True
            elif arp.op == ARP_REPLY and mac == claim.new:
                claim.new_answered = True
            return []
        old = self.reals[ip]
        if mac == old:
            return []
        events = self._flip_flop(ip, mac, now)
        if not self._once("real_mac_change", ip, mac, now):
            return events
        if not self.config.follow_real_macs:
            events.append(Event("real_mac_change", str(ip), mac, old_mac=old, role="real",
                                detail=f"not followed: the data plane keeps sending to {old} "
                                       "(arpwatch --follow-real-macs verifies a claim and follows it)"))
            return events
        self.claims[ip] = MacClaim(ip, old, mac, now)
        events.append(Event("real_mac_change", str(ip), mac, old_mac=old, role="real",
                            detail=f"verifying: unicast ARP probes to {old} and {mac}, "
                                   f"{self.config.verify_time:g} s to answer"))
        return events

    def decide(self, now: float) -> list[Event]:
        """The claims whose verification time is over: verified (the new MAC answered, the old one did not;
        `reals` follows) or rejected."""
        events = []
        for ip, claim in list(self.claims.items()):
            if now - claim.started < self.config.verify_time:
                continue
            del self.claims[ip]
            if claim.new_answered and not claim.old_answered:
                self.reals[ip] = claim.new
                events.append(Event("real_mac_verified", str(ip), claim.new, old_mac=claim.old, role="real",
                                    detail="the new MAC answers and the old one is silent: followed"))
                continue
            why = (f"the old MAC {claim.old} still answers (a forged claim, or two hosts with one address)"
                   if claim.old_answered else f"the new MAC {claim.new} did not answer")
            events.append(Event("real_mac_rejected", str(ip), claim.new, old_mac=claim.old, role="real",
                                detail=f"{why}: the data plane keeps sending to {claim.old}"))
        return self._counted(events)

    def _counted(self, events: list[Event]) -> list[Event]:
        for event in events:
            self.counters[event.event] += 1
        return events

    def _garp_flood(self, ip: IPv4Address, mac: str, now: float) -> list[Event]:
        times = self._garps.setdefault(ip, deque())
        times.append(now)
        while times and now - times[0] > 1.0:
            times.popleft()
        if len(times) > self.config.garp_limit and self._once("garp_flood", ip, "", now):
            return [Event("garp_flood", str(ip), mac, role=self._role(ip),
                          detail=f"{len(times)} gratuitous ARPs within a second")]
        return []

    def _flip_flop(self, ip: IPv4Address, mac: str, now: float) -> list[Event]:
        times = self._changes.setdefault(ip, deque())
        times.append(now)
        window = self.config.flip_window
        while times and now - times[0] > window:
            times.popleft()
        if len(times) >= self.config.flip_count and self._once("flip_flop", ip, "", now, gap=window):
            return [Event("flip_flop", str(ip), mac, role=self._role(ip),
                          detail=f"{len(times)} MAC changes within {window:g} s")]
        return []


def open_pinned(pin_dir: str | Path | None) -> tuple[Path, Dataplane | None]:
    """The data plane pinned at pin_dir (default: this netns's), None when there is none (never creates one)."""
    path = Path(pin_dir) if pin_dir else default_pin_dir()
    return path, pinned_dataplane(pin_dir)


# -- the guard on a NIC -------------------------------------------------------------------------------


def _neighbours(ifindex: int) -> dict[IPv4Address, tuple[str, int]]:
    """The director's neighbour table on one NIC: ip -> (MAC, state)."""
    with IPRoute() as ipr:
        return {IPv4Address(n.get_attr("NDA_DST")): (str(n.get_attr("NDA_LLADDR")), int(n["state"]))
                for n in ipr.get_neighbours(family=socket.AF_INET, ifindex=ifindex)
                if n.get_attr("NDA_LLADDR") and n["state"] & NUD_USABLE}


def _default_gateways() -> set[IPv4Address]:
    with IPRoute() as ipr:
        return {IPv4Address(r.get_attr("RTA_GATEWAY")) for r in ipr.get_default_routes(family=socket.AF_INET)
                if r.get_attr("RTA_GATEWAY")}


@contextmanager
def pinned_neighbours(ifname: str, pins: dict[IPv4Address, str | None]) -> Iterator[dict[IPv4Address, str]]:
    """Install pins as permanent neighbour entries (a missing MAC: the current one); removed on exit."""
    ifindex = interface_index(ifname)
    before = _neighbours(ifindex)
    resolved: dict[IPv4Address, str] = {}
    for ip, mac in pins.items():
        mac = normalize_mac(mac) if mac else before.get(ip, (resolve(ip).dmac, 0))[0]
        if mac == ZERO_MAC:
            raise OSError(113, f"cannot pin {ip}: it does not answer ARP; give its MAC as {ip}=MAC")
        resolved[ip] = mac
    installed: list[IPv4Address] = []
    try:
        with IPRoute() as ipr:
            for ip, mac in resolved.items():
                if before.get(ip) != (mac, NUD_PERMANENT):
                    ipr.neigh("replace", dst=str(ip), lladdr=mac, ifindex=ifindex, state=NUD_PERMANENT)
                    installed.append(ip)
                    log.info("arpwatch: pinned %s at %s on %s", ip, mac, ifname)
        yield resolved
    finally:
        with IPRoute() as ipr:
            for ip in installed:
                try:
                    ipr.neigh("del", dst=str(ip), ifindex=ifindex)
                except Exception as exc:  # noqa: BLE001 - the NIC may be gone; nothing else to undo
                    log.warning("arpwatch: cannot remove the pin of %s: %s", ip, exc)


class Watcher:
    """Listen, probe, report, follow the reals' MACs and defend the VIPs on one NIC."""

    def __init__(self, ifname: str, dp: Dataplane | None, emit: Callable[[Event], None],
                 vips: set[IPv4Address] | None = None, defend: bool = False, pins: dict[IPv4Address, str] | None = None,
                 probe_interval: float = 0.5, config: GuardConfig | None = None):
        self.ifname = ifname
        self.dp = dp
        self.emit = emit
        self.defend = defend
        self.probe_interval = probe_interval
        self.mac = interface_mac(ifname)
        self._fixed_vips = vips
        known = {ip: mac for ip, (mac, _) in _neighbours(interface_index(ifname)).items()}
        gateways = _default_gateways()
        for gateway in gateways - set(known):  # the gateway's MAC must be known to see it change
            try:
                mac = resolve(gateway).dmac
            except NeighbourError as exc:
                log.warning("arpwatch: gateway %s: %s", gateway, exc)
                continue
            if mac != ZERO_MAC:
                known[gateway] = mac
        self.guard = Guard({self.mac}, set(vips or ()), {}, gateways, dict(pins or {}), known, config)
        self.ipv6_vips: list[IPAddress] = []  # the rules' IPv6 VIPs: no ARP, not watched
        self._announce_at: list[float] = []
        self._last_announce = -REANNOUNCE_GAP

    def _refresh_rules(self) -> None:
        if self.dp is None:
            return
        rules = self.dp.read_rules()
        if self._fixed_vips is None:
            self.guard.vips = {key.vip for key in rules.services  # (a fwmark service has no VIP)
                               if isinstance(key.vip, IPv4Address) and not key.is_fwmark}
        self.ipv6_vips = sorted({key.vip for key in rules.services
                                 if isinstance(key.vip, IPv6Address) and not key.is_fwmark}, key=address_order)
        self.guard.reals = {rip: hop.dmac for (_, (rip, _)), hop in self.dp.real_next_hops().items()
                            if isinstance(rip, IPv4Address)}

    def _probe(self, sock: socket.socket) -> None:
        for target in sorted(self.guard.vips | set(self.guard.reals)):
            sock.send(arp_probe(target, self.mac).frame())
            self.guard.counters["probes_sent"] += 1

    def _announce(self, sock: socket.socket, now: float) -> None:
        self._announce_at = [t for t in self._announce_at if t > now]
        if now - self._last_announce < REANNOUNCE_GAP or not self.guard.vips:
            return
        for frame in gratuitous_frames(sorted(self.guard.vips), self.mac):
            sock.send(frame)
        self._last_announce = now
        self.guard.counters["vip_announced"] += 1
        vips = ", ".join(str(v) for v in sorted(self.guard.vips))
        self.emit(Event("vip_announced", vips, self.mac, role="vip", detail="gratuitous ARP (defence)"))

    def _handle(self, event: Event, sock: socket.socket, now: float) -> None:
        claim = self.guard.claims.get(IPv4Address(event.ip)) if event.event == "real_mac_change" else None
        if claim is not None and claim.started == now:  # a new claim: ask both MACs, each alone
            for mac in (claim.old, claim.new):
                probe = Arp(ARP_REQUEST, self.mac, ANY_IP, mac, claim.ip, self.mac, mac)
                for _ in range(2):
                    sock.send(probe.frame())
                self.guard.counters["probes_sent"] += 2
        if event.event == "real_mac_verified" and self.dp is not None and event.old_mac:
            changed = self.dp.set_real_mac(IPv4Address(event.ip), event.mac, old_mac=event.old_mac)
            self.guard.counters["real_mac_updates"] += changed
            entries = f"{changed} data plane entr{'y' if changed == 1 else 'ies'}"
            event = Event(event.event, event.ip, event.mac, event.time, event.old_mac, event.role,
                          f"{event.detail}: {entries} now at {event.mac}")
        if event.event == "real_mac_rejected" and event.old_mac and self._restore_neighbour(event):
            event = Event(event.event, event.ip, event.mac, event.time, event.old_mac, event.role,
                          f"{event.detail}; the director's neighbour entry is back at {event.old_mac}")
        self.emit(event)
        if self.defend and event.event in DEFENDED:
            self._announce_at = sorted({*self._announce_at, *(now + d for d in REANNOUNCE_AFTER)})
            self._announce(sock, now)

    def _restore_neighbour(self, event: Event) -> bool:
        """After a rejected claim: the kernel's neighbour entry for the real, if the claim's ARP moved it to the
        rejected MAC, is put back at the MAC the data plane keeps (else a later resolve, by pyvsadm or a reload,
        would take the forged MAC). Returns whether it was changed."""
        ip, ifindex = IPv4Address(event.ip), interface_index(self.ifname)
        if _neighbours(ifindex).get(ip, ("", 0))[0] != event.mac:
            return False
        with IPRoute() as ipr:
            ipr.neigh("replace", dst=event.ip, lladdr=event.old_mac, ifindex=ifindex, state=NUD_REACHABLE)
        self.guard.counters["neighbour_restored"] += 1
        return True

    def run(self, duration: float | None = None) -> Counter[str]:
        """Watch until `duration` seconds have passed (None: until interrupted); returns the counters."""
        start = time.monotonic()
        next_probe = next_refresh = start
        with packet_socket(self.ifname, ETH_P_ARP) as sock:
            self._refresh_rules()
            vips = ", ".join(str(v) for v in sorted(self.guard.vips))
            reals = ", ".join(f"{ip} at {mac}" for ip, mac in sorted(self.guard.reals.items()))
            ipv6 = ", ".join(map(str, self.ipv6_vips))
            self.emit(Event("watching", self.ifname, self.mac, detail=f"VIPs {vips or 'none'}; reals {reals or 'none'}"
                            + ("; defence on" if self.defend else "")
                            + (f"; IPv6 VIPs not watched (no ARP; pyvs doctor checks ND): {ipv6}" if ipv6 else "")))
            next_refresh = start + RULES_REFRESH
            try:
                while duration is None or time.monotonic() - start < duration:
                    now = time.monotonic()
                    if now >= next_refresh:
                        self._refresh_rules()
                        next_refresh = now + RULES_REFRESH
                    if self.probe_interval > 0 and now >= next_probe:
                        self._probe(sock)
                        next_probe = now + self.probe_interval
                    if self._announce_at and now >= self._announce_at[0]:
                        self._announce(sock, now)
                    for event in self.guard.decide(now):
                        self._handle(event, sock, now)
                    ready, _, _ = select.select([sock], [], [], 0.05)
                    if not ready:
                        continue
                    frame, address = sock.recvfrom(65535)
                    arp = parse_arp(frame)
                    if address[2] == PACKET_OUTGOING or arp is None:
                        continue
                    now = time.monotonic()
                    for event in self.guard.observe(arp, now):
                        self._handle(event, sock, now)
            finally:
                self.emit(Event("summary", self.ifname, self.mac, counters=dict(self.guard.counters)))
        return self.guard.counters


class GuardCollector(Collector):
    """The guard's counters as Prometheus metrics (read at each scrape, nothing kept twice)."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def collect(self) -> Iterator[Metric]:
        counters = dict(self.guard.counters)
        frames = CounterMetricFamily("pyvs_arp_frames", "ARP frames seen on the segment")
        frames.add_metric([], counters.pop("arp_frames", 0))
        yield frames
        actions = CounterMetricFamily("pyvs_arp_actions", "What the guard did: probes sent, VIPs announced, "
                                      "real MACs updated in the data plane, the director's neighbour entries "
                                      "put back after a rejected claim", labels=["action"])
        for action in ("probes_sent", "vip_announced", "real_mac_updates", "neighbour_restored"):
            actions.add_metric([action], counters.pop(action, 0))
        yield actions
        events = CounterMetricFamily("pyvs_arp_events", "Events the guard reported, by kind", labels=["event"])
        for kind in EVENT_KINDS:
            events.add_metric([kind], counters.pop(kind, 0))
        for kind, value in sorted(counters.items()):
            events.add_metric([kind], value)
        yield events


def serve_metrics(guard: Guard, host: str, port: int) -> WSGIServer:
    """Serve /metrics on host:port in a thread; shut it down with .shutdown()."""
    registry = CollectorRegistry()
    registry.register(GuardCollector(guard))
    server, _ = start_http_server(port, host, registry)
    return server
