"""`pyvs doctor`: verify an LVS-DR cluster from the director, on the wire.

Run in the director. It reads the services and reals from the data plane, then asks the segment:
- ARP ownership: an RFC 5227 probe (who-has VIP tell 0.0.0.0) must be answered by nobody but the director
  (which does not hear its own probe); any other MAC that answers, or announces the VIP, is named.
- DR path: a TCP SYN (or UDP datagram) to VIP:port from the director's own address (DIP), sent to the real's
  MAC, must be answered from VIP:port. When it is not, a ping to the VIP and a probe of RIP:port tell why.
- Return path: the same SYN from a client-like address must not come back to the director.
- The director: maps pinned, XDP attached (and how), VIPs on the NIC, reals' MACs resolved and current,
  drop counters during the check.
Each finding carries the exact fix. Probe connections are reset afterwards.
"""

from __future__ import annotations

import logging
import random
import select
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

from pyroute2 import IPRoute

from pyvs.arp.packets import (
    ETH_P_ARP,
    ETH_P_IP,
    ICMP_ECHO_REPLY,
    ICMP_UNREACHABLE,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PACKET_OUTGOING,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    Arp,
    Ipv4,
    arp_probe,
    ethernet,
    icmp_echo,
    interface_addresses,
    interface_mac,
    interface_of,
    packet_socket,
    parse_arp,
    parse_ipv4,
    tcp_segment,
    udp_datagram,
)
from pyvs.arp.watch import open_pinned
from pyvs.dataplane import Dataplane
from pyvs.dataplane.neighbours import ZERO_MAC, NextHop
from pyvs.model import Protocol, Service, ServiceKey

log = logging.getLogger(__name__)

DEFAULT_CLIENT_IP = IPv4Address("198.19.255.254")  # a client-like source for the return-path probe
ARP_WAIT = 0.3
PROBE_WAIT = 1.0
UDP_PROBE = b"pyvs doctor probe\n"
ICMP_ADMIN_CODES = (9, 10, 13)  # network/host administratively prohibited, communication prohibited
ICMP_PORT_UNREACHABLE = 3


class Status(StrEnum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    check: str  # director, arp, dr-path, return-path
    subject: str
    detail: str
    fix: str = ""


class DoctorError(Exception):
    """The doctor cannot run here; the message says what is missing."""


# -- what the wire said -------------------------------------------------------------------------------


@dataclass
class Answer:
    """The replies one probe got."""

    replies: list[Ipv4] = field(default_factory=list)

    def tcp(self, flags: int) -> Ipv4 | None:
        return next((r for r in self.replies if r.proto == IPPROTO_TCP and r.flags & flags == flags), None)

    def udp(self) -> Ipv4 | None:
        return next((r for r in self.replies if r.proto == IPPROTO_UDP), None)

    def icmp(self, icmp_type: int) -> Ipv4 | None:
        return next((r for r in self.replies if r.proto == IPPROTO_ICMP and r.sport == icmp_type), None)

    @property
    def any(self) -> bool:
        return bool(self.replies)


@dataclass(frozen=True)
class RealProbe:
    """What the wire said about one real for one service."""

    key: ServiceKey
    rip: IPv4Address
    rport: int
    mac: str | None  # from its ARP answer, else the data plane's
    arp_answered: bool
    vip: Answer  # the probe to VIP:port at the real's MAC
    ping: Answer  # ICMP echo to the VIP at the real's MAC
    rip_port: Answer  # the probe to RIP:rport


def _proto(key: ServiceKey) -> str:
    return key.proto.name.lower()


def dr_path_finding(probe: RealProbe) -> Finding:
    """The verdict on one real's DR path for one service, with the fix."""
    key, vip, port, proto = probe.key, probe.key.vip, probe.key.port, _proto(probe.key)
    subject = f"{probe.rip} {key.proto.label} {key}"
    listen_fix = f"on {probe.rip}: start the service listening on {proto} 0.0.0.0:{port} (or {vip}:{port})"
    firewall_fix = f"on {probe.rip}: allow it, e.g. iptables -I INPUT -d {vip} -p {proto} --dport {port} -j ACCEPT"
    vip_fix = (f"on {probe.rip}: pyvs realserver up --vip {vip} (VIP on lo as /32, rp_filter off); "
               f"pyvs realserver check --vip {vip} names the wrong setting")
    if probe.mac is None:
        return Finding(Status.FAIL, "dr-path", subject, f"{probe.rip} has no MAC: it does not answer ARP",
                       f"bring {probe.rip} up on the director's segment, then: pyvs director resolve")
    answer = probe.vip
    prohibited = answer.icmp(ICMP_UNREACHABLE)
    if key.proto is Protocol.TCP:
        if (synack := answer.tcp(TCP_SYN | TCP_ACK)) is not None:
            if synack.src != vip:
                return Finding(Status.FAIL, "dr-path", subject, f"SYN-ACK comes from {synack.src}, not the VIP",
                               vip_fix)
            return Finding(Status.OK, "dr-path", subject,
                           f"SYN-ACK from {vip}:{port}: the real accepts the VIP and the service listens")
        if answer.tcp(TCP_RST) is not None:
            return Finding(Status.FAIL, "dr-path", subject,
                           f"the real accepts the VIP but nothing listens on tcp port {port} (RST)", listen_fix)
    else:
        if (reply := answer.udp()) is not None:
            if reply.src != vip:
                return Finding(Status.FAIL, "dr-path", subject,
                               f"the answer comes from {reply.src}, not the VIP: clients drop it",
                               f"on {probe.rip}: bind the service to {vip}, or answer from the address asked "
                               "(IP_PKTINFO)")
            return Finding(Status.OK, "dr-path", subject, f"answer from {vip}:{port}: the real accepts the VIP")
        if prohibited is not None and prohibited.dport == ICMP_PORT_UNREACHABLE:
            return Finding(Status.FAIL, "dr-path", subject,
                           f"the real accepts the VIP but nothing listens on udp port {port} (port unreachable)",
                           listen_fix)
    if prohibited is not None and prohibited.dport in ICMP_ADMIN_CODES:
        return Finding(Status.FAIL, "dr-path", subject, f"a firewall on {probe.rip} rejects {proto} to {vip}:{port}",
                       firewall_fix)
    if probe.ping.icmp(ICMP_ECHO_REPLY) is not None:
        if key.proto is Protocol.UDP:
            return Finding(Status.WARN, "dr-path", subject,
                           f"the real accepts the VIP (ping) but {vip}:{port} did not answer a UDP probe "
                           "(a firewall, or a service that ignores it)", firewall_fix)
        return Finding(Status.FAIL, "dr-path", subject,
                       f"the real accepts the VIP (ping) but tcp {vip}:{port} is silent: a firewall drops it",
                       firewall_fix)
    if probe.rip_port.any:
        return Finding(Status.FAIL, "dr-path", subject,
                       f"the real drops packets for the VIP ({probe.rip}:{probe.rport} answers, {vip} does not): "
                       "VIP not on lo, or rp_filter drops them", vip_fix)
    if not probe.arp_answered:
        return Finding(Status.FAIL, "dr-path", subject, f"{probe.rip} does not answer ARP: down or unplugged",
                       f"bring {probe.rip} up on the director's segment, then: pyvs director resolve")
    return Finding(Status.FAIL, "dr-path", subject,
                   f"{probe.rip} answers ARP but not {vip}:{port}, ping or {probe.rip}:{probe.rport}: "
                   "a firewall drops everything, or the service is down", firewall_fix)


def arp_ownership_findings(vip: IPv4Address, director_mac: str, claims: Iterable[Arp],
                           names: dict[str, str]) -> list[Finding]:
    """Who else answers or announces the VIP; `names` maps a known MAC to the real it belongs to."""
    foreign: dict[str, set[str]] = {}
    for arp in claims:
        if arp.sender_ip == vip and arp.sender_mac != director_mac:
            foreign.setdefault(arp.sender_mac, set()).add("answers" if arp.target_ip != vip else "announces")
    if not foreign:
        return [Finding(Status.OK, "arp", f"VIP {vip}", f"only the director ({director_mac}) answers ARP for it")]
    findings = []
    for mac, how in sorted(foreign.items()):
        who = names.get(mac, "an unknown host")
        host = names.get(mac, "that host")
        findings.append(Finding(
            Status.FAIL, "arp", f"VIP {vip}",
            f"{who} at {mac} {' and '.join(sorted(how))} ARP for the VIP: clients can bypass the director",
            f"on {host}: remove {vip} from its NIC, pyvs realserver up --vip {vip} (VIP on lo /32, arp_ignore=1, "
            f"arp_announce=2); pyvs realserver check --vip {vip} shows what is wrong",
        ))
    return findings


# -- the wire -----------------------------------------------------------------------------------------


class _Capture:
    """ARP and IPv4 frames arriving on the NIC while the doctor runs."""

    def __init__(self, ifname: str):
        self.arp_sock = packet_socket(ifname, ETH_P_ARP)
        self.ip_sock = packet_socket(ifname, ETH_P_IP)
        self.arps: list[Arp] = []
        self.ips: list[Ipv4] = []

    def close(self) -> None:
        self.arp_sock.close()
        self.ip_sock.close()

    def send(self, frame: bytes) -> None:
        self.ip_sock.send(frame)

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select([self.arp_sock, self.ip_sock], [], [], left)
            for sock in ready:
                frame, address = sock.recvfrom(65535)
                if address[2] == PACKET_OUTGOING:
                    continue
                if sock is self.arp_sock:
                    if (arp := parse_arp(frame)) is not None:
                        self.arps.append(arp)
                elif (ip := parse_ipv4(frame)) is not None:
                    self.ips.append(ip)


@dataclass
class _Probe:
    real_mac: str
    src: IPv4Address
    dst: IPv4Address
    proto: int
    sport: int
    dport: int
    seq: int
    answer: Answer = field(default_factory=Answer)

    def matches(self, reply: Ipv4) -> bool:
        if reply.proto == IPPROTO_ICMP and reply.sport == ICMP_UNREACHABLE:  # quotes our header + 8 bytes
            quoted = reply.payload
            if len(quoted) < 28:
                return False
            ihl = (quoted[0] & 0xF) * 4
            return (quoted[9] == self.proto and quoted[16:20] == self.dst.packed
                    and int.from_bytes(quoted[ihl:ihl + 2], "big") == self.sport)
        if reply.dst != self.src:
            return False
        if self.proto == IPPROTO_ICMP:
            return reply.proto == IPPROTO_ICMP and reply.sport == ICMP_ECHO_REPLY and reply.seq == self.seq
        return reply.proto == self.proto and reply.dport == self.sport and reply.sport == self.dport

    def frame(self, director_mac: str) -> bytes:
        if self.proto == IPPROTO_TCP:
            packet = tcp_segment(self.src, self.dst, self.sport, self.dport, self.seq, 0, TCP_SYN)
        elif self.proto == IPPROTO_UDP:
            packet = udp_datagram(self.src, self.dst, self.sport, self.dport, UDP_PROBE)
        else:
            packet = icmp_echo(self.src, self.dst, self.seq >> 16, self.seq & 0xFFFF)
        return ethernet(self.real_mac, director_mac, ETH_P_IP, packet)

    def reset(self, director_mac: str) -> bytes:
        """A RST that closes what the SYN opened on the real."""
        packet = tcp_segment(self.src, self.dst, self.sport, self.dport, self.seq + 1, 0, TCP_RST)
        return ethernet(self.real_mac, director_mac, ETH_P_IP, packet)


def _new_probe(rng: random.Random, mac: str, src: IPv4Address, dst: IPv4Address, proto: int, port: int) -> _Probe:
    return _Probe(mac, src, dst, proto, rng.randrange(20000, 60000), port, rng.randrange(1, 1 << 31))


def _director_address(addresses: list[tuple[IPv4Address, int]], vips: set[IPv4Address],
                      rip: IPv4Address) -> IPv4Address | None:
    """The director's own address (DIP) to probe rip from: one in rip's subnet first, never a VIP."""
    own = [(a, p) for a, p in addresses if a not in vips]
    for address, plen in own:
        if rip in IPv4Network(f"{address}/{plen}", strict=False):
            return address
    return own[0][0] if own else None


def _default_gateway() -> str | None:
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET):
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                return str(gateway)
    return None


# -- the checks ---------------------------------------------------------------------------------------


def _director_findings(dp: Dataplane, dev: str, vips: list[IPv4Address]) -> list[Finding]:
    findings = []
    mode = Dataplane.xdp_mode(dev)
    if mode is None:
        findings.append(Finding(Status.FAIL, "director", f"XDP on {dev}", "no XDP program: the rules do nothing",
                                f"pyvs director attach --dev {dev}"))
    else:
        note = " (slower than native)" if mode[0] == "generic" else ""
        findings.append(Finding(Status.OK, "director", f"XDP on {dev}", f"{mode[0]} mode, program id {mode[1]}{note}"))
    present = {address for address, _ in interface_addresses(dev)}
    for vip in vips:
        if vip in present:
            findings.append(Finding(Status.OK, "director", f"VIP {vip}", f"on {dev}: the director answers ARP for it"))
        else:
            fix = f"pyvs director attach --dev {dev} --vip {vip} (or ip addr add {vip}/32 dev {dev})"
            findings.append(Finding(Status.FAIL, "director", f"VIP {vip}", f"not an address of {dev}: nobody owns it",
                                    fix))
    return findings


def _reals_interface(hops: dict[tuple[ServiceKey, tuple[IPv4Address, int]], NextHop]) -> str | None:
    """The interface toward the reals (the VIPs on lo): the egress of the first real with one."""
    for hop in hops.values():
        if hop.ifindex:
            try:
                return socket.if_indextoname(hop.ifindex)
            except OSError:
                continue
    return None


def attachment_findings(pin_dir: Path) -> list[Finding]:
    """Where pyvs's program runs (mode, auto or explicit), default interfaces without it, native veths."""
    from pyvs.dataplane.attachment import attachment_rows, native_veth_warnings

    findings = []
    native_veths = {warning.partition(": ")[0] for warning in native_veth_warnings()}
    for name, kind, program, mode, how in attachment_rows(pin_dir)[1:]:
        if program.startswith("pyvs_xdp"):
            note = " (slower than native)" if mode == "generic" else ""
            # pyvs cannot look into the peer's namespace: a note, not a warning (the lab's peers run XDP)
            veth = "; a veth: what XDP sends into it arrives only if its peer runs XDP" if name in native_veths else ""
            findings.append(Finding(Status.OK, "director", f"XDP on {name}", f"{program}, {mode} mode{note}, "
                                                                               f"attached {how}{veth}"))
        elif program == "none":
            findings.append(Finding(Status.WARN, "director", f"XDP on {name}",
                                    f"no XDP program on this {kind}: VIP traffic arriving here goes to the kernel",
                                    f"pyvs director attach --dev {name} --mode generic"))
        else:
            findings.append(Finding(Status.WARN, "director", f"XDP on {name}",
                                    f"{program} ({mode}) is not pyvs's: VIP traffic arriving here is not forwarded by "
                                    "pyvs", "chain both with libxdp's dispatcher (README)"))
    if not any(f.status is Status.OK for f in findings):
        findings.append(Finding(Status.FAIL, "director", "XDP", "pyvs's program runs on no interface: the rules do "
                                "nothing", "pyvs director attach (every interface UP with an IPv4 address)"))
    return findings


def routed_reply_findings(vips: list[IPv4Address]) -> list[Finding]:
    """A VIP on lo in a director that routes: the reals' replies (source: the VIP, local here) are dropped as
    martians unless accept_local is on (measured here); without ip_forward they are not routed at all."""
    from pyvs.netns import read_sysctl

    findings = []
    forwarding = read_sysctl("net.ipv4.ip_forward").strip() == "1"
    accept_local = read_sysctl("net.ipv4.conf.all.accept_local").strip() == "1"
    for vip in vips:
        if interface_of(vip) != "lo":
            continue
        findings.append(Finding(Status.OK, "director", f"VIP {vip} on lo", "clients reach it by a route via this "
                                "director (pyvs adds the VIP to no NIC)"))
        if forwarding and not accept_local:
            findings.append(Finding(Status.WARN, "director", f"replies from {vip}",
                                    "this director routes (ip_forward=1) but a reply a real sends through it has a "
                                    "source local here (the VIP) and is dropped as a martian",
                                    "sysctl -w net.ipv4.conf.all.accept_local=1 (and on the reals' interface)"))
    return findings


def _mac_findings(hops: dict[IPv4Address, str], arp_macs: dict[IPv4Address, str]) -> list[Finding]:
    findings = []
    for rip, mac in sorted(hops.items()):
        actual = arp_macs.get(rip)
        if mac == ZERO_MAC:
            findings.append(Finding(Status.FAIL, "director", f"MAC of {rip}", "unresolved: its packets are dropped",
                                    "pyvs director resolve"))
        elif actual is not None and actual != mac:
            findings.append(Finding(Status.FAIL, "director", f"MAC of {rip}",
                                    f"the data plane sends to {mac} but {rip} is at {actual} now",
                                    "pyvs director resolve (pyvs arpwatch follows such changes by itself)"))
        else:
            findings.append(Finding(Status.OK, "director", f"MAC of {rip}", f"{mac}"))
    return findings


def _drop_findings(before: dict[str, int], after: dict[str, int]) -> list[Finding]:
    rising = {name: after[name] - before.get(name, 0) for name in after
              if name.startswith("drop_") and after[name] > before.get(name, 0)}
    if not rising:
        totals = ", ".join(f"{name} {value}" for name, value in after.items() if name.startswith("drop_") and value)
        return [Finding(Status.OK, "director", "drop counters", "none rose during the check"
                        + (f" (totals: {totals})" if totals else ""))]
    return [Finding(Status.WARN, "director", f"counter {name}", f"+{delta} during the check",
                    "pyvs director status shows the reals and counters") for name, delta in sorted(rising.items())]


def run(dev: str | None = None, pin_dir: str | Path | None = None, client_ip: IPv4Address = DEFAULT_CLIENT_IP,
        wait: float = PROBE_WAIT) -> list[Finding]:
    """Every check, in the calling thread's netns (the director's)."""
    path, pinned = open_pinned(pin_dir)
    if pinned is None:
        attach = f"pyvs director attach --dev {dev or 'IF'}"
        return [Finding(Status.FAIL, "director", "maps", f"no data plane (or an incomplete one) pinned at {path}",
                        attach)]
    with pinned as dp:
        rules = dp.read_rules()
        before = dp.counters()
        hops = dp.real_next_hops()
        findings = [Finding(Status.OK, "director", "maps", f"pinned at {path}"),
                    Finding(Status.OK, "director", "rules and tables", f"fingerprint {dp.fingerprint()}: directors "
                            "that should forward alike (ECMP) must show the same one")]
        if not rules.services:
            return [*findings, Finding(Status.FAIL, "director", "services", "no services: nothing to check",
                                       "pyvsadm -A -t VIP:PORT -s rr; pyvsadm -a -t VIP:PORT -r RIP:PORT -g")]
        vips = sorted({key.vip for key in rules.services})
        on_nics = [vip for vip in vips if interface_of(vip) not in (None, "lo")]
        dev = dev or next(filter(None, (interface_of(vip) for vip in on_nics)), None) or _reals_interface(hops)
        if dev is None:
            raise DoctorError("no VIP is an address of this host: name the NIC facing the reals with --dev")
        findings += attachment_findings(path)
        findings += routed_reply_findings(vips)
        findings += _director_findings(dp, dev, [vip for vip in vips if interface_of(vip) != "lo"])[1:]
        clock_before = dp.clock()
        dp_macs = {rip: hop.dmac for (_, (rip, _)), hop in hops.items()}
        wire, arp_macs = _wire_checks(dev, rules.services, dp_macs, vips, client_ip, wait)
        after = dp.counters()
        findings.append(_timer_finding(clock_before, dp.clock(), dev))
        findings.append(table_finding(dp.conn_table_usage()))
    return [*findings, *_mac_findings(dp_macs, arp_macs), *_drop_findings(before, after), *wire]


def table_finding(usage: dict[str, int | float]) -> Finding:
    """How full the connection table is, as the sweeper's last pass counted it."""
    share = usage["entries"] / usage["size"] if usage["size"] else 0.0
    detail = (f"{usage['entries']} of {usage['size']} entries live ({share:.0%}), {usage['evicted']} evicted; "
              f"half-open {usage['half_open']} of {usage['half_open_size']}")
    if usage["nearly_full"]:
        return Finding(Status.WARN, "director", "connection table", f"{detail}: nearly full, the LRU will evict "
                       "established connections", "recreate the data plane with a larger --conn-table-size")
    return Finding(Status.OK, "director", "connection table", detail)


def _timer_finding(before: tuple[int, int, int], after: tuple[int, int, int], dev: str) -> Finding:
    """The data plane's timer keeps the packet path's clock and sweeps expired connections."""
    if after[1] > before[1]:
        return Finding(Status.OK, "director", "timer", f"ticking ({after[1] - before[1]} ticks during the check, "
                       f"{after[2]} sweep passes so far)")
    return Finding(Status.FAIL, "director", "timer", "stopped: the packet path's clock stands still and no "
                   "connection expires", f"pyvs director attach --dev {dev} (starts it again)")


@dataclass
class _RealProbes:
    """The probes sent to one real for one service (none when it has no MAC or the director no DIP)."""

    svc: Service
    rip: IPv4Address
    rport: int
    mac: str | None
    vip: _Probe | None = None
    ping: _Probe | None = None
    rip_port: _Probe | None = None
    back: _Probe | None = None  # the return-path probe, TCP only

    def sent(self) -> list[_Probe]:
        return [p for p in (self.vip, self.ping, self.rip_port, self.back) if p is not None]


def _wire_checks(dev: str, services: dict[ServiceKey, Service], dp_macs: dict[IPv4Address, str],
                 vips: list[IPv4Address], client_ip: IPv4Address,
                 wait: float) -> tuple[list[Finding], dict[IPv4Address, str]]:
    director_mac = interface_mac(dev)
    addresses = interface_addresses(dev)
    rng = random.Random()
    rows: list[_RealProbes] = []
    capture = _Capture(dev)
    try:
        for target in (*vips, *dp_macs):
            capture.send(arp_probe(target, director_mac).frame())
        capture.collect(ARP_WAIT)
        arp_macs: dict[IPv4Address, str] = {}
        for arp in capture.arps:
            if arp.sender_ip in dp_macs and arp.sender_mac != director_mac:
                arp_macs.setdefault(arp.sender_ip, arp.sender_mac)

        for _, svc in sorted(services.items()):  # a stable order: TCP before UDP, by address
            proto = IPPROTO_TCP if svc.key.proto is Protocol.TCP else IPPROTO_UDP
            for rip, rport in sorted(svc.reals):
                known = dp_macs.get(rip, ZERO_MAC)
                row = _RealProbes(svc, rip, rport, arp_macs.get(rip) or (known if known != ZERO_MAC else None))
                rows.append(row)
                dip = _director_address(addresses, set(vips), rip)
                if row.mac is None or dip is None:
                    continue
                row.vip = _new_probe(rng, row.mac, dip, svc.key.vip, proto, svc.key.port)
                row.ping = _new_probe(rng, row.mac, dip, svc.key.vip, IPPROTO_ICMP, 0)
                row.rip_port = _new_probe(rng, row.mac, dip, rip, proto, rport)
                if proto == IPPROTO_TCP:
                    row.back = _new_probe(rng, row.mac, client_ip, svc.key.vip, proto, svc.key.port)
                for probe in row.sent():
                    capture.send(probe.frame(director_mac))
        capture.collect(wait)
        sent = [probe for row in rows for probe in row.sent()]
        for reply in capture.ips:
            for probe in sent:
                if probe.matches(reply):
                    probe.answer.replies.append(reply)
        for probe in sent:
            if probe.proto == IPPROTO_TCP:
                capture.send(probe.reset(director_mac))
    finally:
        capture.close()

    names = {mac: f"real {rip}" for rip, mac in {**dp_macs, **arp_macs}.items() if mac != ZERO_MAC}
    findings: list[Finding] = []
    for vip in vips:
        findings += arp_ownership_findings(vip, director_mac, capture.arps, names)
    gateway = _default_gateway() or "ROUTER"
    for row in rows:
        if row.mac is not None and row.vip is None:
            findings.append(Finding(Status.FAIL, "dr-path", f"{row.rip} {row.svc.key.proto.label} {row.svc.key}",
                                    f"{dev} has no address besides the VIPs to probe from",
                                    f"ip addr add DIP/PREFIX dev {dev} (the director's own address on the reals' net)"))
            continue
        observed = RealProbe(row.svc.key, row.rip, row.rport, row.mac, row.rip in arp_macs,
                          *(p.answer if p else Answer() for p in (row.vip, row.ping, row.rip_port)))
        verdict = dr_path_finding(observed)
        findings.append(verdict)
        if row.back is not None and verdict.status is Status.OK:
            findings.append(_return_path_finding(row.svc.key, row.rip, client_ip, director_mac, row.back.answer,
                                                 gateway))
    return findings, arp_macs


def _return_path_finding(key: ServiceKey, rip: IPv4Address, client_ip: IPv4Address, director_mac: str,
                         answer: Answer, gateway: str) -> Finding:
    subject = f"{rip} {key.proto.label} {key}"
    came_back = answer.tcp(TCP_SYN | TCP_ACK)
    if came_back is not None and came_back.eth_dst == director_mac:
        return Finding(Status.WARN, "return-path", subject,
                       f"replies to clients ({client_ip}) come back through the director: DR works only by accident",
                       f"on {rip}: ip route replace default via {gateway} (the router, not the director)")
    return Finding(Status.OK, "return-path", subject,
                   f"replies to clients ({client_ip}) leave by the real's own route, not through the director")
