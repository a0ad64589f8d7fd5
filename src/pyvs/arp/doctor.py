"""`pyvs doctor`: verify an LVS-DR cluster from the director, on the wire.

Run in the director. It reads the services and reals from the data plane, then asks the segment:
- ARP ownership (IPv4): an RFC 5227 probe (who-has VIP tell 0.0.0.0) must be answered by nobody but the director
  (which does not hear its own probe); any other MAC that answers, or announces the VIP, is named.
- ND ownership (IPv6, its counterpart): a neighbour solicitation for the VIP from the director's own address must
  be answered by nobody else; a real that answers (or announces the VIP) is IPv6's "ARP problem": clients reach
  it without the director. The reals' MACs are asked the same way (ARP for IPv4, a solicitation for IPv6).
- DR path: a TCP SYN (or UDP datagram) to VIP:port from the director's own address (DIP), sent to the real's
  MAC, must be answered from VIP:port. When it is not, a ping to the VIP and a probe of RIP:port tell why.
  IPv6 services are probed the same way over IPv6 (ICMPv6 for the ping and the errors).
- Return path: the same SYN from a client-like address must not come back to the director.
- The director: maps pinned, XDP attached (and how), VIPs on the NIC, reals' MACs resolved and current,
  drop counters during the check.
- The other directors (`--peer HOST:PORT`, their daemons' status addresses): each one's fingerprint of rules and
  tables (GET /fingerprint) must be this one's; the directors that differ are named.
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
from ipaddress import IPv4Address, IPv6Address, ip_network
from pathlib import Path

from pyroute2 import IPRoute

from pyvs.arp.nd import NA_SOLICITED, Nd, neighbour_solicitation, parse_nd
from pyvs.arp.packets import (
    ETH_P_ARP,
    ETH_P_IP,
    ETH_P_IPV6,
    IPPROTO_ICMP,
    IPPROTO_TCP,
    IPPROTO_UDP,
    PACKET_OUTGOING,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    Arp,
    IpPacket,
    arp_probe,
    ethernet,
    icmp_echo,
    interface_addresses,
    interface_mac,
    interface_of,
    packet_socket,
    parse_arp,
    parse_ip,
    tcp_segment,
    udp_datagram,
)
from pyvs.arp.watch import open_pinned
from pyvs.dataplane import Dataplane
from pyvs.dataplane.neighbours import ZERO_MAC, NextHop
from pyvs.model import Forwarding, IPAddress, Protocol, RealKey, Service, ServiceKey, address_order

log = logging.getLogger(__name__)

DEFAULT_CLIENT_IP = IPv4Address("198.19.255.254")  # a client-like source for the return-path probe
DEFAULT_CLIENT_IP6 = IPv6Address("2001:db8:ffff:ffff::fe")  # the same for IPv6 services
ARP_WAIT = 0.3
PROBE_WAIT = 1.0
UDP_PROBE = b"pyvs doctor probe\n"


def _asking(version: int) -> str:
    """How a host asks for an address's MAC on the segment."""
    return "ARP" if version == 4 else "neighbour solicitations"


class Status(StrEnum):
    OK = "ok"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Finding:
    status: Status
    check: str  # director, arp, nd, dr-path, nat-path, return-path, tunnel
    subject: str
    detail: str
    fix: str = ""


class DoctorError(Exception):
    """The doctor cannot run here; the message says what is missing."""


# -- what the wire said -------------------------------------------------------------------------------


@dataclass
class Answer:
    """The replies one probe got."""

    replies: list[IpPacket] = field(default_factory=list)

    def tcp(self, flags: int) -> IpPacket | None:
        return next((r for r in self.replies if r.proto == IPPROTO_TCP and r.flags & flags == flags), None)

    def udp(self) -> IpPacket | None:
        return next((r for r in self.replies if r.proto == IPPROTO_UDP), None)

    def unreachable(self) -> str | None:
        """The kind of the first destination-unreachable error (ICMP or ICMPv6): "port", "admin" or "other"."""
        return next((kind for r in self.replies if (kind := r.unreachable()) is not None), None)

    def echo_reply(self) -> IpPacket | None:
        return next((r for r in self.replies if r.echo_reply), None)

    @property
    def any(self) -> bool:
        return bool(self.replies)


@dataclass(frozen=True)
class RealProbe:
    """What the wire said about one real for one service."""

    key: ServiceKey
    rip: IPAddress
    rport: int
    mac: str | None  # from its ARP (IPv6: neighbour advertisement) answer, else the data plane's
    arp_answered: bool  # it answered ARP (IPv6: a neighbour solicitation)
    vip: Answer  # the probe to VIP:port at the real's MAC
    ping: Answer  # echo request (ICMP, ICMPv6) to the VIP at the real's MAC
    rip_port: Answer  # the probe to RIP:rport


def _proto(key: ServiceKey) -> str:
    return key.proto.name.lower()


def dr_path_finding(probe: RealProbe) -> Finding:
    """The verdict on one real's DR path for one service, with the fix."""
    key, vip, port, proto = probe.key, probe.key.vip, probe.key.port, _proto(probe.key)
    subject = f"{probe.rip} {key.title}"
    listen = f"0.0.0.0:{port}" if vip.version == 4 else f"[::]:{port}"
    listen_fix = f"on {probe.rip}: start the service listening on {proto} {listen} (or {key})"
    tables = "iptables" if vip.version == 4 else "ip6tables"
    firewall_fix = f"on {probe.rip}: allow it, e.g. {tables} -I INPUT -d {vip} -p {proto} --dport {port} -j ACCEPT"
    on_lo = "VIP on lo as /32, rp_filter off" if vip.version == 4 else "VIP on lo as /128, deprecated"
    vip_fix = (f"on {probe.rip}: pyvs realserver up --vip {vip} ({on_lo}); "
               f"pyvs realserver check --vip {vip} names the wrong setting")
    asking = _asking(vip.version)
    if probe.mac is None:
        return Finding(Status.FAIL, "dr-path", subject, f"{probe.rip} has no MAC: it does not answer {asking}",
                       f"bring {probe.rip} up on the director's segment, then: pyvs director resolve")
    answer = probe.vip
    unreachable = answer.unreachable()
    if key.proto is Protocol.TCP:
        if (synack := answer.tcp(TCP_SYN | TCP_ACK)) is not None:
            if synack.src != vip:
                return Finding(Status.FAIL, "dr-path", subject, f"SYN-ACK comes from {synack.src}, not the VIP",
                               vip_fix)
            return Finding(Status.OK, "dr-path", subject,
                           f"SYN-ACK from {key}: the real accepts the VIP and the service listens")
        if answer.tcp(TCP_RST) is not None:
            return Finding(Status.FAIL, "dr-path", subject,
                           f"the real accepts the VIP but nothing listens on tcp port {port} (RST)", listen_fix)
    else:
        if (reply := answer.udp()) is not None:
            if reply.src != vip:
                return Finding(Status.FAIL, "dr-path", subject,
                               f"the answer comes from {reply.src}, not the VIP: clients drop it",
                               f"on {probe.rip}: bind the service to {vip}, or answer from the address asked "
                               "(IP_PKTINFO, IPV6_PKTINFO)")
            return Finding(Status.OK, "dr-path", subject, f"answer from {key}: the real accepts the VIP")
        if unreachable == "port":
            return Finding(Status.FAIL, "dr-path", subject,
                           f"the real accepts the VIP but nothing listens on udp port {port} (port unreachable)",
                           listen_fix)
    if unreachable == "admin":
        return Finding(Status.FAIL, "dr-path", subject, f"a firewall on {probe.rip} rejects {proto} to {key}",
                       firewall_fix)
    if probe.ping.echo_reply() is not None:
        if key.proto is Protocol.UDP:
            return Finding(Status.WARN, "dr-path", subject,
                           f"the real accepts the VIP (ping) but {key} did not answer a UDP probe "
                           "(a firewall, or a service that ignores it)", firewall_fix)
        return Finding(Status.FAIL, "dr-path", subject,
                       f"the real accepts the VIP (ping) but tcp {key} is silent: a firewall drops it",
                       firewall_fix)
    if probe.rip_port.any:
        why = "VIP not on lo, or rp_filter drops them" if vip.version == 4 else "VIP not on lo"
        return Finding(Status.FAIL, "dr-path", subject,
                       f"the real drops packets for the VIP ({probe.rip}:{probe.rport} answers, {vip} does not): "
                       f"{why}", vip_fix)
    if not probe.arp_answered:
        return Finding(Status.FAIL, "dr-path", subject, f"{probe.rip} does not answer {asking}: down or unplugged",
                       f"bring {probe.rip} up on the director's segment, then: pyvs director resolve")
    return Finding(Status.FAIL, "dr-path", subject,
                   f"{probe.rip} answers {asking} but not {key}, ping or {probe.rip}:{probe.rport}: "
                   "a firewall drops everything, or the service is down", firewall_fix)


Claim = tuple[IPAddress, str, str]  # (address, MAC, "answers" or "announces")


def arp_claims(arps: Iterable[Arp]) -> list[Claim]:
    """What ARP frames claim: an answer (or a request) from an address, or its announcement."""
    return [(arp.sender_ip, arp.sender_mac, "announces" if arp.gratuitous else "answers") for arp in arps]


def nd_claims(nds: Iterable[Nd]) -> list[Claim]:
    """What neighbour advertisements claim: a solicited one answers, an unsolicited one announces."""
    return [(nd.target, nd.mac, "answers" if nd.flags & NA_SOLICITED else "announces")
            for nd in nds if nd.advertisement]


def ownership_findings(vip: IPAddress, director_mac: str, claims: Iterable[Claim],
                       names: dict[str, str]) -> list[Finding]:
    """Who else answers or announces the VIP (ARP for IPv4, neighbour advertisements for IPv6); `names` maps a
    known MAC to the real it belongs to."""
    foreign: dict[str, set[str]] = {}
    for address, mac, kind in claims:
        if address == vip and mac != director_mac:
            foreign.setdefault(mac, set()).add(kind)
    check, asking = ("arp", "ARP") if vip.version == 4 else ("nd", "neighbour solicitations")
    if not foreign:
        return [Finding(Status.OK, check, f"VIP {vip}", f"only the director ({director_mac}) answers {asking} for it")]
    suppress = ("VIP on lo /32, arp_ignore=1, arp_announce=2" if vip.version == 4 else
                "VIP on lo /128, an nftables rule drops solicitations for it")
    findings = []
    for mac, how in sorted(foreign.items()):
        who = names.get(mac, "an unknown host")
        host = names.get(mac, "that host")
        what = "ARP for the VIP" if vip.version == 4 else "the VIP (neighbour advertisements)"
        findings.append(Finding(
            Status.FAIL, check, f"VIP {vip}",
            f"{who} at {mac} {' and '.join(sorted(how))} {what}: clients can bypass the director",
            f"on {host}: remove {vip} from its NIC, pyvs realserver up --vip {vip} ({suppress}); "
            f"pyvs realserver check --vip {vip} shows what is wrong",
        ))
    return findings


def arp_ownership_findings(vip: IPv4Address, director_mac: str, claims: Iterable[Arp],
                           names: dict[str, str]) -> list[Finding]:
    """Who else answers or announces an IPv4 VIP in ARP."""
    return ownership_findings(vip, director_mac, arp_claims(claims), names)


# -- the wire -----------------------------------------------------------------------------------------


class _Capture:
    """ARP, IPv4 and IPv6 frames (neighbour discovery among them) arriving on the NIC while the doctor runs."""

    def __init__(self, ifname: str):
        self.socks = {kind: packet_socket(ifname, kind) for kind in (ETH_P_ARP, ETH_P_IP, ETH_P_IPV6)}
        self.arps: list[Arp] = []
        self.nds: list[Nd] = []
        self.ips: list[IpPacket] = []

    def close(self) -> None:
        for sock in self.socks.values():
            sock.close()

    def send(self, frame: bytes) -> None:
        self.socks[ETH_P_IP].send(frame)

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        kinds = {sock: kind for kind, sock in self.socks.items()}
        while (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(kinds), [], [], left)
            for sock in ready:
                frame, address = sock.recvfrom(65535)
                if address[2] == PACKET_OUTGOING:
                    continue
                if kinds[sock] == ETH_P_ARP:
                    if (arp := parse_arp(frame)) is not None:
                        self.arps.append(arp)
                elif (nd := parse_nd(frame)) is not None:
                    self.nds.append(nd)
                elif (ip := parse_ip(frame)) is not None:
                    self.ips.append(ip)


ECHO = IPPROTO_ICMP  # a probe's kind: an echo request (ICMP or ICMPv6, by the addresses' family)


@dataclass
class _Probe:
    real_mac: str
    src: IPAddress
    dst: IPAddress
    proto: int  # IPPROTO_TCP, IPPROTO_UDP or ECHO
    sport: int
    dport: int
    seq: int
    answer: Answer = field(default_factory=Answer)

    def matches(self, reply: IpPacket) -> bool:
        if reply.unreachable() is not None:  # quotes our header and the ports
            return reply.quoted() == (self.proto, self.dst, self.sport)
        if reply.dst != self.src:
            return False
        if self.proto == ECHO:
            return reply.echo_reply and reply.seq == self.seq
        return reply.proto == self.proto and reply.dport == self.sport and reply.sport == self.dport

    def _ethernet(self, director_mac: str, packet: bytes) -> bytes:
        return ethernet(self.real_mac, director_mac, ETH_P_IP if self.src.version == 4 else ETH_P_IPV6, packet)

    def frame(self, director_mac: str) -> bytes:
        if self.proto == IPPROTO_TCP:
            packet = tcp_segment(self.src, self.dst, self.sport, self.dport, self.seq, 0, TCP_SYN)
        elif self.proto == IPPROTO_UDP:
            packet = udp_datagram(self.src, self.dst, self.sport, self.dport, UDP_PROBE)
        else:
            packet = icmp_echo(self.src, self.dst, self.seq >> 16, self.seq & 0xFFFF)
        return self._ethernet(director_mac, packet)

    def reset(self, director_mac: str) -> bytes:
        """A RST that closes what the SYN opened on the real."""
        return self._ethernet(director_mac, tcp_segment(self.src, self.dst, self.sport, self.dport, self.seq + 1, 0,
                                                        TCP_RST))


def _new_probe(rng: random.Random, mac: str, src: IPAddress, dst: IPAddress, proto: int, port: int) -> _Probe:
    return _Probe(mac, src, dst, proto, rng.randrange(20000, 60000), port, rng.randrange(1, 1 << 31))


def _director_address(addresses: list[tuple[IPAddress, int]], vips: set[IPAddress],
                      rip: IPAddress) -> IPAddress | None:
    """The director's own address (DIP) to probe rip from: one of rip's family in rip's subnet first, never a VIP."""
    own = [(a, p) for a, p in addresses if a not in vips and a.version == rip.version]
    for address, plen in own:
        if rip in ip_network(f"{address}/{plen}", strict=False):
            return address
    return own[0][0] if own else None


def _default_gateway(version: int) -> str | None:
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=socket.AF_INET if version == 4 else socket.AF_INET6):
            gateway = route.get_attr("RTA_GATEWAY")
            if gateway:
                return str(gateway)
    return None


def _all_addresses(dev: str) -> list[tuple[IPAddress, int]]:
    return [*interface_addresses(dev, 4), *interface_addresses(dev, 6)]


# -- the checks ---------------------------------------------------------------------------------------


def _director_findings(dp: Dataplane, dev: str, vips: list[IPAddress]) -> list[Finding]:
    findings = []
    mode = Dataplane.xdp_mode(dev)
    if mode is None:
        findings.append(Finding(Status.FAIL, "director", f"XDP on {dev}", "no XDP program: the rules do nothing",
                                f"pyvs director attach --dev {dev}"))
    else:
        note = " (slower than native)" if mode[0] == "generic" else ""
        findings.append(Finding(Status.OK, "director", f"XDP on {dev}", f"{mode[0]} mode, program id {mode[1]}{note}"))
    present = {address for address, _ in _all_addresses(dev)}
    for vip in vips:
        if vip in present:
            findings.append(Finding(Status.OK, "director", f"VIP {vip}",
                                    f"on {dev}: the director answers {_asking(vip.version)} for it"))
        else:
            add = f"ip addr add {vip}/32 dev {dev}" if vip.version == 4 else \
                f"ip addr add {vip}/128 dev {dev} nodad preferred_lft 0"
            fix = f"pyvs director attach --dev {dev} --vip {vip} (or {add})"
            findings.append(Finding(Status.FAIL, "director", f"VIP {vip}", f"not an address of {dev}: nobody owns it",
                                    fix))
    return findings


PEER_TIMEOUT = 10.0  # seconds for a peer's daemon to read its tables and answer


def peer_fingerprint(peer: tuple[str, int], timeout: float = PEER_TIMEOUT) -> str:
    """The fingerprint another director's daemon reports (GET /fingerprint on its status address)."""
    import json
    from urllib.request import urlopen

    from pyvs.director.config import listen_text

    with urlopen(f"http://{listen_text(peer)}/fingerprint", timeout=timeout) as response:  # noqa: S310 - http only
        value = json.loads(response.read())["fingerprint"]
    if not isinstance(value, str):
        raise ValueError(f"not a fingerprint: {value!r}")
    return value


def agreement_finding(own: str, peers: dict[str, str | Exception]) -> Finding:
    """One fingerprint on every director (this one and its peers, by status address), or who differs."""
    unreachable = {name: error for name, error in peers.items() if isinstance(error, Exception)}
    if unreachable:
        detail = "; ".join(f"{name}: {error}" for name, error in sorted(unreachable.items()))
        return Finding(Status.FAIL, "directors", "rules and tables", f"cannot compare: {detail}",
                       "is `pyvs director run` running there, with status_listen reachable from here?")
    differ = {name: value for name, value in peers.items() if value != own}
    if not differ:
        return Finding(Status.OK, "directors", "rules and tables",
                       f"all {len(peers) + 1} directors show fingerprint {own}")
    listed = ", ".join(f"{name} {value}" for name, value in sorted(differ.items()))
    return Finding(Status.FAIL, "directors", "rules and tables",
                   f"this director shows {own}, {len(differ)} of {len(peers)} others differ: {listed}",
                   "compare `pyvsadm -S -n` on them: the same config (and no hand-made service) on every director")


def _reals_interface(hops: dict[tuple[ServiceKey, RealKey], NextHop]) -> str | None:
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


def routed_reply_findings(vips: list[IPAddress]) -> list[Finding]:
    """A VIP on lo in a director that routes: the reals' replies (source: the VIP, local here) are dropped as
    martians unless accept_local is on (measured here, IPv4; IPv6 has no such check); without forwarding they
    are not routed at all."""
    from pyvs.netns import read_sysctl

    findings = []
    forwarding = read_sysctl("net.ipv4.ip_forward").strip() == "1"
    accept_local = read_sysctl("net.ipv4.conf.all.accept_local").strip() == "1"
    for vip in vips:
        if interface_of(vip) != "lo":
            continue
        findings.append(Finding(Status.OK, "director", f"VIP {vip} on lo", "clients reach it by a route via this "
                                "director (pyvs adds the VIP to no NIC)"))
        if vip.version == 4 and forwarding and not accept_local:
            findings.append(Finding(Status.WARN, "director", f"replies from {vip}",
                                    "this director routes (ip_forward=1) but a reply a real sends through it has a "
                                    "source local here (the VIP) and is dropped as a martian",
                                    "sysctl -w net.ipv4.conf.all.accept_local=1 (and on the reals' interface)"))
    return findings


def _mac_findings(hops: dict[IPAddress, str], wire_macs: dict[IPAddress, str]) -> list[Finding]:
    findings = []
    for rip, mac in sorted(hops.items(), key=lambda item: address_order(item[0])):
        actual = wire_macs.get(rip)
        if mac == ZERO_MAC:
            findings.append(Finding(Status.FAIL, "director", f"MAC of {rip}", "unresolved: its packets are dropped",
                                    "pyvs director resolve"))
        elif actual is not None and actual != mac:
            follows = " (pyvs arpwatch follows such changes by itself)" if rip.version == 4 else ""
            findings.append(Finding(Status.FAIL, "director", f"MAC of {rip}",
                                    f"the data plane sends to {mac} but {rip} is at {actual} now",
                                    f"pyvs director resolve{follows}"))
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
        wait: float = PROBE_WAIT, client_ip6: IPv6Address = DEFAULT_CLIENT_IP6,
        peers: Iterable[tuple[str, int]] = ()) -> list[Finding]:
    """Every check, in the calling thread's netns (the director's); `peers`: the other directors' status addresses,
    whose fingerprints must be this one's."""
    path, pinned = open_pinned(pin_dir)
    if pinned is None:
        attach = f"pyvs director attach --dev {dev or 'IF'}"
        return [Finding(Status.FAIL, "director", "maps", f"no data plane (or an incomplete one) pinned at {path}",
                        attach)]
    with pinned as dp:
        rules = dp.read_rules()
        before = dp.counters()
        hops = dp.real_next_hops()
        fingerprint = dp.fingerprint()
        findings = [Finding(Status.OK, "director", "maps", f"pinned at {path}"),
                    Finding(Status.OK, "director", "rules and tables", f"fingerprint {fingerprint}: directors "
                            "that should forward alike (ECMP, VRRP) must show the same one")]
        if peers:
            from pyvs.director.config import listen_text

            answers: dict[str, str | Exception] = {}
            for peer in peers:
                try:
                    answers[listen_text(peer)] = peer_fingerprint(peer)
                except (OSError, ValueError, KeyError) as exc:
                    answers[listen_text(peer)] = exc
            findings.append(agreement_finding(fingerprint, answers))
        if not rules.services:
            return [*findings, Finding(Status.FAIL, "director", "services", "no services: nothing to check",
                                       "pyvsadm -A -t VIP:PORT -s rr; pyvsadm -a -t VIP:PORT -r RIP:PORT -g")]
        unprobed = [key for key in rules.services if key.is_fwmark or key.proto is Protocol.SCTP]
        for key in sorted(unprobed):
            findings.append(Finding(Status.OK, "director", key.title,
                                    "not probed: the DR-path probes are TCP and UDP to a VIP"))
        probed = {key: svc for key, svc in rules.services.items() if key not in unprobed}
        vips = sorted({key.vip for key in probed}, key=address_order)
        on_nics = [vip for vip in vips if interface_of(vip) not in (None, "lo")]
        dev = dev or next(filter(None, (interface_of(vip) for vip in on_nics)), None) or _reals_interface(hops)
        if dev is None:
            raise DoctorError("no VIP is an address of this host: name the NIC facing the reals with --dev")
        findings += attachment_findings(path)
        findings += routed_reply_findings(vips)
        findings += _director_findings(dp, dev, [vip for vip in vips if interface_of(vip) != "lo"])[1:]
        clock_before = dp.clock()
        dp_macs: dict[IPAddress, str] = {rip: hop.dmac for (_, (rip, _)), hop in hops.items()}
        wire, wire_macs = _wire_checks(dev, probed, dp_macs, vips, {4: client_ip, 6: client_ip6}, wait)
        after = dp.counters()
        findings.append(_timer_finding(clock_before, dp.clock(), dev))
        findings.append(table_finding(dp.conn_table_usage()))
    return [*findings, *_mac_findings(dp_macs, wire_macs), *_drop_findings(before, after), *wire]


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
    rip: IPAddress
    rport: int
    mac: str | None
    nat: bool = False  # a NAT real: probed at RIP:port only (it holds no VIP)
    vip: _Probe | None = None
    ping: _Probe | None = None
    rip_port: _Probe | None = None
    back: _Probe | None = None  # the return-path probe, TCP only

    def sent(self) -> list[_Probe]:
        return [p for p in (self.vip, self.ping, self.rip_port, self.back) if p is not None]


def _who_has_frames(targets: list[IPAddress], director_mac: str, addresses: list[tuple[IPAddress, int]],
                    vips: set[IPAddress], real_macs: dict[IPAddress, str]) -> list[bytes]:
    """Ask the segment who has each target: an ARP probe for IPv4 (from 0.0.0.0: it teaches nobody anything), a
    neighbour solicitation from the director's own IPv6 address for IPv6 (none without one). An IPv6 VIP is also
    asked of each IPv6 real's MAC, unicast: an ND proxy answers that at once, a multicast one after up to
    proxy_delay (0.8 s)."""
    frames = []
    for target in targets:
        if isinstance(target, IPv4Address):
            frames.append(arp_probe(target, director_mac).frame())
        elif isinstance(own := _director_address(addresses, vips, target), IPv6Address):
            frames.append(neighbour_solicitation(target, director_mac, own).frame())
            if target in vips:
                frames += [neighbour_solicitation(target, director_mac, own, unicast_mac=mac).frame()
                           for rip, mac in real_macs.items() if rip.version == 6 and mac != ZERO_MAC]
    return frames


def _wire_checks(dev: str, services: dict[ServiceKey, Service], dp_macs: dict[IPAddress, str],
                 vips: list[IPAddress], client_ips: dict[int, IPAddress],
                 wait: float) -> tuple[list[Finding], dict[IPAddress, str]]:
    director_mac = interface_mac(dev)
    addresses = _all_addresses(dev)
    rng = random.Random()
    rows: list[_RealProbes] = []
    tunnelled: list[tuple[Service, IPAddress, str]] = []  # tunnel reals: service, address, tunnel type
    capture = _Capture(dev)
    try:
        for frame in _who_has_frames([*vips, *dp_macs], director_mac, addresses, set(vips), dp_macs):
            capture.send(frame)
        capture.collect(ARP_WAIT)
        wire_macs: dict[IPAddress, str] = {}  # the reals' MACs, as they answered ARP or a solicitation
        for address, mac, _ in [*arp_claims(capture.arps), *nd_claims(capture.nds)]:
            if address in dp_macs and mac != director_mac:
                wire_macs.setdefault(address, mac)

        for _, svc in sorted(services.items()):  # a stable order: TCP before UDP, by address
            proto = IPPROTO_TCP if svc.key.proto is Protocol.TCP else IPPROTO_UDP
            for rip, rport in sorted(svc.reals, key=lambda key: (address_order(key[0]), key[1])):
                real = svc.reals[(rip, rport)]
                forwarding = real.forwarding
                if forwarding is Forwarding.TUNNEL:  # a plain frame to its MAC tells nothing about it
                    tunnelled.append((svc, rip, real.tunnel.type if real.tunnel else "ipip"))
                    continue
                known = dp_macs.get(rip, ZERO_MAC)
                row = _RealProbes(svc, rip, rport, wire_macs.get(rip) or (known if known != ZERO_MAC else None),
                                  nat=forwarding is Forwarding.MASQ)
                rows.append(row)
                dip = _director_address(addresses, set(vips), rip)
                if row.mac is None or dip is None:
                    continue
                row.rip_port = _new_probe(rng, row.mac, dip, rip, proto, rport)
                if not row.nat:
                    row.vip = _new_probe(rng, row.mac, dip, svc.key.vip, proto, svc.key.port)
                    row.ping = _new_probe(rng, row.mac, dip, svc.key.vip, ECHO, 0)
                if proto == IPPROTO_TCP:  # NAT: the client's packet as the director rewrote it, to the real
                    dst, dport = (rip, rport) if row.nat else (svc.key.vip, svc.key.port)
                    row.back = _new_probe(rng, row.mac, client_ips[rip.version], dst, proto, dport)
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

    names = {mac: f"real {rip}" for rip, mac in {**dp_macs, **wire_macs}.items() if mac != ZERO_MAC}
    findings: list[Finding] = []
    claims = [*arp_claims(capture.arps), *nd_claims(capture.nds)]
    for vip in vips:
        if isinstance(vip, IPv6Address) and _director_address(addresses, set(vips), vip) is None:
            findings.append(Finding(Status.FAIL, "nd", f"VIP {vip}", f"{dev} has no IPv6 address besides the VIPs to "
                                    "ask from", f"ip addr add DIP/PREFIX dev {dev} (an IPv6 address of the director)"))
            continue
        findings += ownership_findings(vip, director_mac, claims, names)
    for row in rows:
        if row.mac is not None and row.rip_port is None:
            findings.append(Finding(Status.FAIL, "nat-path" if row.nat else "dr-path", f"{row.rip} {row.svc.key.title}",
                                    f"{dev} has no IPv{row.rip.version} address besides the VIPs to probe from",
                                    f"ip addr add DIP/PREFIX dev {dev} (the director's own address on the reals' net)"))
            continue
        observed = RealProbe(row.svc.key, row.rip, row.rport, row.mac, row.rip in wire_macs,
                             *(p.answer if p else Answer() for p in (row.vip, row.ping, row.rip_port)))
        verdict = nat_path_finding(observed) if row.nat else dr_path_finding(observed)
        findings.append(verdict)
        if row.back is not None and verdict.status is Status.OK:
            gateway = str(_director_address(addresses, set(vips), row.rip)) if row.nat else \
                _default_gateway(row.rip.version) or "ROUTER"
            findings.append(_return_path_finding(row.svc.key, row.rip, row.back.src, director_mac, row.back.answer,
                                                 gateway, row.nat))
    for svc, rip, tun_type in tunnelled:
        findings.append(Finding(Status.OK, "tunnel", f"{rip} {svc.key.title}",
                                f"not probed: a tunnel real; on {rip}, pyvs realserver check --vip {svc.key.vip} "
                                f"--tunnel {tun_type} verifies that it takes the VIP out of the tunnel"))
    return findings, wire_macs


def nat_path_finding(probe: RealProbe) -> Finding:
    """The verdict on a NAT real (ipvsadm -m) for one service: it must answer on its own address and port (the
    director rewrites the VIP to them); it holds no VIP."""
    key, proto, where = probe.key, _proto(probe.key), f"{probe.rip}:{probe.rport}"
    subject = f"{probe.rip} {key.title}"
    listen_fix = f"on {probe.rip}: start the service listening on {proto} {where}"
    if probe.mac is None:
        return Finding(Status.FAIL, "nat-path", subject, f"{probe.rip} has no MAC: it does not answer "
                       f"{_asking(probe.rip.version)}",
                       f"bring {probe.rip} up on the director's segment, then: pyvs director resolve")
    answer = probe.rip_port
    if key.proto is Protocol.TCP:
        if answer.tcp(TCP_SYN | TCP_ACK) is not None:
            return Finding(Status.OK, "nat-path", subject, f"SYN-ACK from {where}: the service listens")
        if answer.tcp(TCP_RST) is not None:
            return Finding(Status.FAIL, "nat-path", subject, f"nothing listens on {proto} {where} (RST)", listen_fix)
    else:
        if answer.udp() is not None:
            return Finding(Status.OK, "nat-path", subject, f"answer from {where}")
        if answer.unreachable() == "port":
            return Finding(Status.FAIL, "nat-path", subject, f"nothing listens on {proto} {where} (port unreachable)",
                           listen_fix)
    if answer.unreachable() == "admin":
        return Finding(Status.FAIL, "nat-path", subject, f"a firewall on {probe.rip} rejects {proto} to {where}",
                       f"on {probe.rip}: allow {proto} to port {probe.rport}")
    status = Status.WARN if key.proto is Protocol.UDP else Status.FAIL
    return Finding(status, "nat-path", subject, f"{where} is silent (a firewall, the service down"
                   + (", or a service that ignores the probe)" if status is Status.WARN else ")"),
                   f"on {probe.rip}: start the service on {where} and allow it through its firewall")


def _return_path_finding(key: ServiceKey, rip: IPAddress, client_ip: IPAddress, director_mac: str,
                         answer: Answer, gateway: str, nat: bool = False) -> Finding:
    """Where a real's replies to clients go: DR wants the real's own router; NAT wants the director (`gateway` is
    then the director's address), which gives them the VIP as source again."""
    subject = f"{rip} {key.title}"
    came_back = answer.tcp(TCP_SYN | TCP_ACK)
    through_director = came_back is not None and came_back.eth_dst == director_mac
    route = "ip route" if rip.version == 4 else "ip -6 route"
    if nat:
        if through_director:
            return Finding(Status.OK, "return-path", subject,
                           f"replies to clients ({client_ip}) come back through the director, as NAT needs")
        return Finding(Status.FAIL, "return-path", subject,
                       f"replies to clients ({client_ip}) do not come back through the director: they leave with "
                       f"{rip} as source, which no client asked",
                       f"on {rip}: {route} replace default via {gateway} (the director)")
    if through_director:
        return Finding(Status.WARN, "return-path", subject,
                       f"replies to clients ({client_ip}) come back through the director: DR works only by accident",
                       f"on {rip}: {route} replace default via {gateway} (the router, not the director)")
    return Finding(Status.OK, "return-path", subject,
                   f"replies to clients ({client_ip}) leave by the real's own route, not through the director")
