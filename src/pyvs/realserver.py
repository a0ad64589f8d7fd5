"""Real-server side of LVS-DR: the VIPs on lo (IPv4 /32, IPv6 /128), ARP and ND suppression, verification.

Acts on the network namespace of the calling thread. `up` records exactly what it
changed in a state file keyed by that namespace, so that `down` undoes just that.

IPv4: the VIP on lo as /32; arp_ignore/arp_announce (or arptables) keep the host from answering ARP for it.
IPv6: the VIP on lo as /128, without DAD and deprecated (preferred_lft 0): it receives and answers as any address,
but the kernel never picks it as the source of the host's own connections (RFC 6724 rule 3; toward an interface
without a global address of its own, the longest-match rule would pick the VIP). Linux answers a neighbour
solicitation only for an address of the interface it arrived on (measured: none for an address on lo) unless an
ND proxy entry says otherwise; a rule of nftables (table ip6 pyvs_realserver) drops every solicitation for the
VIP that arrives elsewhere than on lo, so that no setting can make the host answer. `check` also sends a real
solicitation into the NIC's receive path (pyvs.inject) and watches whether an advertisement leaves.
"""

from __future__ import annotations

import json
import logging
import select
import shutil
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any, NamedTuple

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_DEPRECATED, IFA_F_NODAD

from pyvs import netns
from pyvs.decap import DECAP_PROGRAM, KERNEL_DEVICES, KERNEL_MODULES, DecapError, choose_mode, kernel_can_decapsulate
from pyvs.decap import attach as attach_decap
from pyvs.decap import detach as detach_decap
from pyvs.decap import status as decap_status
from pyvs.links import link_index
from pyvs.model import IPAddress, ModelError, parse_address

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/pyvs/realserver")
METHODS = ("sysctl", "arptables")

# (setting, value up() writes, values that count as right). The kernel uses max(all, iface).
ARP_IGNORE = ("arp_ignore", 1, (1, 2))
ARP_ANNOUNCE = ("arp_announce", 2, (2,))
RP_FILTER = ("rp_filter", 0, (0, 2))
HOST_PREFIX = {4: 32, 6: 128}
ND_TABLE, ND_CHAIN = "pyvs_realserver", "input"
ND_PRIORITY = -10  # before the usual filter chains (priority 0): an accept there cannot let a solicitation through
NS_PROBE_SOURCE = IPv6Address("2001:db8:ffff::fe")  # a documentation address: no host on a real network has it
NS_PROBE_MAC = "02:70:79:76:73:fe"  # locally administered ("pyvs")
NS_PROBE_WAIT = 0.2  # seconds; the stack answers (or not) within the injection call


class RealServerError(Exception):
    """The real-server configuration cannot be applied, undone or read."""


@dataclass(frozen=True)
class Finding:
    name: str
    ok: bool
    actual: str
    expected: str
    fix_command: str | None = None


@dataclass
class _State:
    sysctls: dict[str, str] = field(default_factory=dict)  # key -> value before up()
    vips: list[str] = field(default_factory=list)  # VIPs up() added to lo
    arptables: list[list[str]] = field(default_factory=list)  # rules up() added: [chain, args...]
    nd_rules: list[str] = field(default_factory=list)  # IPv6 VIPs whose NS rule up() added
    nft_table: bool = False  # up() created the nftables table (down() removes it when no rule is left)
    lo_set_up: bool = False
    decap: dict[str, Any] = field(default_factory=dict)  # tunnel decapsulation up() set: nic, mode, device, port

    def empty(self) -> bool:
        """Nothing up() added is left: the rest (sysctls, lo) goes back too."""
        return not (self.vips or self.arptables or self.nd_rules)


def state_path(state_dir: Path = STATE_DIR) -> Path:
    """State file of the calling thread's netns, named by its cookie (an inode is reused by later namespaces)."""
    return state_dir / f"{netns.netns_cookie()}.json"


def _load_state(path: Path) -> _State:
    if not path.exists():
        return _State()
    try:
        data: dict[str, Any] = json.loads(path.read_text())
        return _State(**data)
    except (ValueError, TypeError) as exc:
        raise RealServerError(f"corrupt state file {path}: {exc}; remove it and check by hand") from exc


def _save_state(path: Path, state: _State) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state.__dict__, indent=2))
    tmp.replace(path)


def parse_vips(vips: str | Sequence[str]) -> list[IPAddress]:
    """VIPs of either family, in order, each once; one that no real server can serve is refused."""
    items = [vips] if isinstance(vips, str) else list(vips)
    if not items:
        raise RealServerError("no VIP given")
    parsed: list[IPAddress] = []
    for item in items:
        try:
            vip = parse_address(str(item))
        except ModelError:
            raise RealServerError(f"VIP {item!r} is not an IP address") from None
        if vip.is_multicast or vip.is_loopback or vip.is_unspecified or vip.is_link_local:
            raise RealServerError(f"VIP {vip} is not a unicast address a client can reach")
        parsed.append(vip)
    return list(dict.fromkeys(parsed))


def _ifname(ipr: IPRoute, index: int) -> str:
    links = ipr.get_links(index)
    return str(links[0].get("IFLA_IFNAME")) if links else str(index)


class _Address(NamedTuple):
    ifname: str
    prefixlen: int
    flags: int  # IFA_F_*


def _addresses(ipr: IPRoute, address: IPAddress) -> list[_Address]:
    """Interfaces carrying address."""
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    return [
        _Address(_ifname(ipr, a["index"]), int(a["prefixlen"]), int(a.get("IFA_FLAGS") or a["flags"]))
        for a in ipr.get_addr(family=family)
        if a.get("IFA_ADDRESS") == str(address)
    ]


def _lo_index(ipr: IPRoute) -> int:
    index = link_index("lo", ipr)
    if index is None:
        raise RealServerError("no lo interface in this network namespace")
    return index


def _is_up(ipr: IPRoute, index: int) -> bool:
    return bool(ipr.get_links(index)[0]["flags"] & 1)  # IFF_UP


def default_nic() -> str:
    """The interface of the default route (IPv4's, else IPv6's), else the first non-lo interface that is up."""
    with IPRoute() as ipr:
        for family in (socket.AF_INET, socket.AF_INET6):
            for route in ipr.get_default_routes(family=family):
                oif = route.get("RTA_OIF")
                if oif is None and route.get("RTA_MULTIPATH"):
                    oif = route.get("RTA_MULTIPATH")[0]["oif"]
                if oif is not None:
                    return _ifname(ipr, oif)
        for link in ipr.get_links():
            name = link.get("IFLA_IFNAME")
            if name != "lo" and link["flags"] & 1:
                return str(name)
    raise RealServerError("cannot tell the real server's NIC: no default route and no interface up; use --dev")


def _check_nic(nic: str | None, versions: set[int]) -> str:
    nic = nic or default_nic()
    if nic == "lo":
        raise RealServerError("the NIC must be the interface facing the director, not lo")
    if 4 in versions and not netns.sysctl_path(f"net.ipv4.conf.{nic}.arp_ignore").exists():
        raise RealServerError(f"no interface {nic} with IPv4 in this network namespace")
    if 6 in versions and not netns.sysctl_path(f"net.ipv6.conf.{nic}.disable_ipv6").exists():
        raise RealServerError(f"no interface {nic} with IPv6 in this network namespace")
    return nic


def _primary_address(ipr: IPRoute, nic: str) -> str:
    index = link_index(nic, ipr)
    addrs = [a.get("IFA_ADDRESS") for a in ipr.get_addr(family=2, index=index)] if index is not None else []
    if not addrs:
        raise RealServerError(f"{nic} has no IPv4 address (the RIP); add it first")
    return str(addrs[0])


# -- arptables -------------------------------------------------------------------------------


def _arptables_rules(vip: str, rip: str) -> list[list[str]]:
    """The tutorial's rules: drop ARP requests for the VIP, never announce the VIP as sender."""
    return [
        ["INPUT", "-d", vip, "-j", "DROP"],
        ["OUTPUT", "-s", vip, "-j", "mangle", "--mangle-ip-s", rip],
    ]


def _arptables(action: str, rule: list[str], check: bool = True) -> bool:
    proc = netns.run_in_netns(None, ["arptables", action, *rule], check=False)
    if check and proc.returncode != 0:
        raise RealServerError(f"arptables {action} {' '.join(rule)} failed: {proc.stderr.strip()}")
    return proc.returncode == 0


def _arptables_has(rule: list[str]) -> bool:
    return shutil.which("arptables") is not None and _arptables("-C", rule, check=False)


def _has_arptables_drop(vip: str) -> bool:
    return _arptables_has(["INPUT", "-d", vip, "-j", "DROP"])


def _has_arptables_mangle(vip: str, rip: str) -> bool:
    return _arptables_has(_arptables_rules(vip, rip)[1])


# -- nftables: no neighbour advertisement for an IPv6 VIP ---------------------------------------------------


def nd_rule(vip: IPv6Address) -> dict[str, Any]:
    """The rule, in nft's JSON: a neighbour solicitation for the VIP (its target, 16 bytes at offset 8 of the
    ICMPv6 header) arriving elsewhere than on lo is dropped and counted."""
    return {"family": "ip6", "table": ND_TABLE, "chain": ND_CHAIN, "comment": f"pyvs realserver {vip}", "expr": [
        {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                   "right": "nd-neighbor-solicit"}},
        {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 64, "len": 128}},
                   "right": f"0x{vip.packed.hex()}"}},
        {"counter": {"packets": 0, "bytes": 0}},
        {"drop": None},
    ]}


def nd_rule_command(vip: IPv6Address) -> str:
    """The same rule as nft commands an admin can run."""
    return (f"nft add table ip6 {ND_TABLE} && nft add chain ip6 {ND_TABLE} {ND_CHAIN} '{{ type filter hook input "
            f"priority {ND_PRIORITY}; policy accept; }}' && nft add rule ip6 {ND_TABLE} {ND_CHAIN} iifname != lo "
            f"icmpv6 type nd-neighbor-solicit @th,64,128 0x{vip.packed.hex()} counter drop comment "
            f"'\"pyvs realserver {vip}\"'")


def _nd_target(rule: dict[str, Any]) -> IPv6Address | None:
    """The VIP a listed rule drops solicitations for, None when it is not such a rule."""
    exprs = rule.get("expr", [])
    matches = [e["match"] for e in exprs if "match" in e]
    seen = {"lo": False, "ns": False}
    target = None
    for match in matches:
        left, right = match.get("left", {}), match.get("right")
        if left == {"meta": {"key": "iifname"}} and match.get("op") == "!=" and right == "lo":
            seen["lo"] = True
        elif left == {"payload": {"protocol": "icmpv6", "field": "type"}} and right in ("nd-neighbor-solicit", 135):
            seen["ns"] = True
        elif left == {"payload": {"base": "th", "offset": 64, "len": 128}} and match.get("op") in ("==", None):
            try:
                target = IPv6Address(int(right, 16) if isinstance(right, str) else int(right))
            except (TypeError, ValueError):
                return None
    dropped = any("drop" in e for e in exprs)
    return target if dropped and seen["lo"] and seen["ns"] and len(matches) == 3 else None


def _nft(*argv: str, commands: list[dict[str, Any]] | None = None, check: bool = True) -> dict[str, Any] | None:
    if shutil.which("nft") is None:
        raise RealServerError("nft is not installed (apt install nftables): it keeps the host from answering "
                              "neighbour solicitations for an IPv6 VIP")
    stdin = json.dumps({"nftables": commands}) if commands is not None else None
    proc = netns.run_in_netns(None, ["nft", "-j", *argv], input=stdin, check=False)
    if proc.returncode != 0:
        if check:
            raise RealServerError(f"nft {' '.join(argv)} failed: {proc.stderr.strip()}")
        return None
    data: dict[str, Any] = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return data


def nd_rules() -> dict[IPv6Address, tuple[int, int]]:
    """pyvs's NS rules present in this netns: VIP -> (rule handle, solicitations dropped)."""
    listing = _nft("list", "chain", "ip6", ND_TABLE, ND_CHAIN, check=False)
    found: dict[IPv6Address, tuple[int, int]] = {}
    for item in (listing or {}).get("nftables", []):
        rule = item.get("rule")
        if rule is None or (target := _nd_target(rule)) is None:
            continue
        counter: dict[str, Any] = next((e["counter"] for e in rule["expr"] if "counter" in e), {})
        found.setdefault(target, (int(rule["handle"]), int(counter.get("packets", 0))))
    return found


def _nd_table_exists() -> bool:
    return _nft("list", "table", "ip6", ND_TABLE, check=False) is not None


def _add_nd_rule(vip: IPv6Address) -> None:
    table = {"family": "ip6", "name": ND_TABLE}
    chain = {"family": "ip6", "table": ND_TABLE, "name": ND_CHAIN, "type": "filter", "hook": "input",
             "prio": ND_PRIORITY, "policy": "accept"}
    _nft("-f", "-", commands=[{"add": {"table": table}}, {"add": {"chain": chain}}, {"add": {"rule": nd_rule(vip)}}])


def _delete_nd_rule(vip: IPv6Address) -> bool:
    present = nd_rules().get(vip)
    if present is None:
        return False
    rule = {"family": "ip6", "table": ND_TABLE, "chain": ND_CHAIN, "handle": present[0]}
    return _nft("-f", "-", commands=[{"delete": {"rule": rule}}], check=False) is not None


def _delete_nd_table_if_empty() -> bool:
    listing = _nft("list", "table", "ip6", ND_TABLE, check=False)
    if listing is None or any("rule" in item for item in listing.get("nftables", [])):
        return False
    return _nft("-f", "-", commands=[{"delete": {"table": {"family": "ip6", "name": ND_TABLE}}}],
                check=False) is not None


def ns_probe(vip: IPv6Address, nic: str) -> list[str]:
    """Hand the NIC's receive path two neighbour solicitations for the VIP, as if a neighbour had sent them (to the
    VIP's solicited-node group, and unicast to this host's MAC); returns the MACs of the advertisements for the
    VIP that this host sent back out ([]: it stays silent, as a real server must)."""
    from pyvs.arp.nd import neighbour_solicitation, parse_nd
    from pyvs.arp.packets import ETH_P_ALL, PACKET_OUTGOING, interface_mac, packet_socket
    from pyvs.inject import inject_received

    with IPRoute() as ipr:
        index = link_index(nic, ipr)
        if index is None:
            raise RealServerError(f"no interface {nic} in this network namespace")
        known = any(n.get_attr("NDA_DST") == str(NS_PROBE_SOURCE)
                    for n in ipr.get_neighbours(family=socket.AF_INET6, ifindex=index))
    mac = interface_mac(nic)
    frames = [neighbour_solicitation(vip, NS_PROBE_MAC, NS_PROBE_SOURCE).frame(),
              neighbour_solicitation(vip, NS_PROBE_MAC, NS_PROBE_SOURCE, unicast_mac=mac).frame()]
    answers: list[str] = []
    with packet_socket(nic, ETH_P_ALL) as sock:  # ETH_P_ALL: outgoing frames reach only such sockets
        inject_received(index, frames)
        deadline = time.monotonic() + NS_PROBE_WAIT
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                continue
            frame, address = sock.recvfrom(65535)
            nd = parse_nd(frame)
            if address[2] == PACKET_OUTGOING and nd is not None and nd.advertisement and nd.target == vip:
                answers.append(nd.mac)
    if not known:  # the solicitation's source option made a neighbour entry: take it away again
        with IPRoute() as ipr:
            try:
                ipr.neigh("del", dst=str(NS_PROBE_SOURCE), ifindex=index)
            except NetlinkError:
                pass
    return answers


# -- sysctls ---------------------------------------------------------------------------------


def _key(iface: str, setting: str) -> str:
    return f"net.ipv4.conf.{iface}.{setting}"


def _key6(iface: str, setting: str) -> str:
    return f"net.ipv6.conf.{iface}.{setting}"


def _read_int(key: str) -> int:
    return int(netns.read_sysctl(key))


def _set_sysctl(state: _State, key: str, value: int, accepted: tuple[int, ...]) -> str | None:
    current = netns.read_sysctl(key)
    if int(current) in accepted:
        return None
    state.sysctls.setdefault(key, current)
    netns.write_sysctl(key, value)
    return f"sysctl {key}={value} (was {current})"


# -- up, down --------------------------------------------------------------------------------


def _refuse_misplaced(ipr: IPRoute, vip: IPAddress) -> None:
    """A VIP already on a NIC, on lo with a wider prefix, or (IPv6) on lo as a preferred source: refused."""
    plen = HOST_PREFIX[vip.version]
    for where in _addresses(ipr, vip):
        remove = f"Remove it (ip addr del {vip}/{where.prefixlen} dev {where.ifname}) and run again"
        if where.ifname != "lo":
            answers = "ARP" if vip.version == 4 else "neighbour solicitations"
            raise RealServerError(f"VIP {vip} is on {where.ifname}: this host would answer {answers} for it. {remove}")
        if where.prefixlen != plen:
            raise RealServerError(f"VIP {vip}/{where.prefixlen} on lo must be /{plen}, or lo claims the whole "
                                  f"subnet. {remove}")
        if vip.version == 6 and not where.flags & IFA_F_DEPRECATED:
            raise RealServerError(f"VIP {vip} on lo is a preferred address: the kernel may choose it as the source "
                                  f"of this host's own connections. {remove}, or make it deprecated (ip addr change "
                                  f"{vip}/128 dev lo preferred_lft 0)")


def up(vips: str | Sequence[str], nic: str | None = None, method: str = "sysctl",
       state_dir: Path = STATE_DIR, tunnel: str | None = None, tun_port: int = 0, decap: str = "auto") -> list[str]:
    """Apply the real-server configuration for the VIPs (either family); returns what was changed. `method` is
    IPv4's ARP suppression; IPv6's is always the nftables rule. `tunnel` (ipip, gue with `tun_port`, gre): the
    director tunnels to this real, and its packets are decapsulated by the kernel's modules or pyvs's XDP program
    (`decap`: auto, kernel, xdp; see pyvs.decap)."""
    wanted = parse_vips(vips)
    if method not in METHODS:
        raise RealServerError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    if tunnel is not None:
        if any(vip.version == 6 for vip in wanted):
            raise RealServerError("the director tunnels IPv4 only (IPIP, GUE, GRE): give IPv4 VIPs with --tunnel")
        if tunnel == "gue" and not 1 <= tun_port <= 65535:
            raise RealServerError("--tunnel gue needs --tun-port (the director's --tun-port)")
        try:
            decap = choose_mode(tunnel, decap)
        except DecapError as exc:
            raise RealServerError(str(exc)) from None
    v4 = [vip for vip in wanted if isinstance(vip, IPv4Address)]
    v6 = [vip for vip in wanted if isinstance(vip, IPv6Address)]
    nic = _check_nic(nic, {vip.version for vip in wanted})
    path = state_path(state_dir=state_dir)
    state = _load_state(path)
    changes: list[str] = []

    def record(change: str | None) -> None:
        if change:
            log.debug("realserver: %s", change)
            changes.append(change)
            _save_state(path, state)

    with IPRoute() as ipr:
        for vip in wanted:  # every refusal before the first change
            _refuse_misplaced(ipr, vip)
        rip = _primary_address(ipr, nic) if v4 and method == "arptables" else ""
        if v6 and _read_int(_key6(nic, "disable_ipv6")):
            raise RealServerError(f"IPv6 is disabled on {nic} (net.ipv6.conf.{nic}.disable_ipv6=1): it cannot "
                                  "receive the VIP's packets; enable it first")
        if v6 and shutil.which("nft") is None:
            _nft("--version")  # raises the error that says what to install

        # ARP and ND suppression go first: the VIP must never be visible unprotected.
        if v4 and method == "sysctl":
            for iface in ("all", "lo", nic):
                for setting, value, accepted in (ARP_IGNORE, ARP_ANNOUNCE):
                    record(_set_sysctl(state, _key(iface, setting), value, accepted))
        elif v4:
            if shutil.which("arptables") is None:
                raise RealServerError("arptables is not installed (apt install arptables), or use --method sysctl")
            for vip in v4:
                for rule in _arptables_rules(str(vip), rip):
                    if not _arptables_has(rule):
                        _arptables("-A", rule)
                        if rule not in state.arptables:
                            state.arptables.append(rule)
                        record(f"arptables -A {' '.join(rule)}")
        if v4:
            for iface in ("all", nic):
                setting, value, accepted = RP_FILTER
                record(_set_sysctl(state, _key(iface, setting), value, accepted))
        if tunnel is not None:
            _decap_up(ipr, state, nic, tunnel, tun_port, decap, record)
        present = nd_rules() if v6 else {}
        for vip in v6:
            if vip not in present:
                if not state.nd_rules and not state.nft_table and not _nd_table_exists():
                    state.nft_table = True
                _add_nd_rule(vip)
                if str(vip) not in state.nd_rules:
                    state.nd_rules.append(str(vip))
                record(f"nft: table ip6 {ND_TABLE} drops neighbour solicitations for {vip} not arriving on lo")
        if v6:
            record(_set_sysctl(state, _key6("lo", "disable_ipv6"), 0, (0,)))

        lo = _lo_index(ipr)
        if not _is_up(ipr, lo):
            ipr.link("set", index=lo, state="up")
            state.lo_set_up = True
            record("lo set up")
        for vip in wanted:
            if _addresses(ipr, vip):
                continue
            if vip.version == 4:
                ipr.addr("add", index=lo, address=str(vip), prefixlen=32)
                note = ""
            else:
                ipr.addr("add", index=lo, address=str(vip), prefixlen=128, flags=IFA_F_NODAD,
                         IFA_CACHEINFO={"ifa_preferred": 0, "ifa_valid": 0xFFFFFFFF})
                note = " (nodad, preferred_lft 0)"
            if str(vip) not in state.vips:  # added again after someone removed it: recorded once
                state.vips.append(str(vip))
            record(f"added {vip}/{HOST_PREFIX[vip.version]} to lo{note}")
    return changes


def _decap_up(ipr: IPRoute, state: _State, nic: str, tunnel: str, port: int, mode: str,
              record: Callable[[str | None], None]) -> None:
    """Decapsulation of the director's tunnel: the kernel's fallback device up (GUE: a fou port), or pyvs_decap on
    the NIC for this real's address. rp_filter is off on the NIC already (the inner source is the client)."""
    if mode == "xdp":
        rip = IPv4Address(_primary_address(ipr, nic))
        tunnels = tuple(sorted({tunnel, *state.decap.get("tunnels", [])} if state.decap.get("nic") == nic
                               else {tunnel}))
        try:
            xdp_mode = attach_decap(nic, tunnels, rip, port or int(state.decap.get("port", 0)))
        except (DecapError, OSError) as exc:
            raise RealServerError(str(exc)) from None
        state.decap = {"nic": nic, "mode": "xdp", "tunnels": list(tunnels), "port": port}
        record(f"XDP program {DECAP_PROGRAM} attached to {nic} ({xdp_mode}): decapsulates {', '.join(tunnels)} "
               f"to {rip}")
        return
    for module in KERNEL_MODULES[tunnel]:
        netns.run_in_netns(None, ["modprobe", module], check=True)
    device = KERNEL_DEVICES[tunnel]
    index = link_index(device, ipr)
    if index is None:
        raise RealServerError(f"the {'/'.join(KERNEL_MODULES[tunnel])} module gave no {device} device")
    if not _is_up(ipr, index):
        ipr.link("set", index=index, state="up")
    state.decap = {"nic": nic, "mode": "kernel", "device": device, "port": port if tunnel == "gue" else 0}
    record(f"{device} up (the kernel's {'/'.join(KERNEL_MODULES[tunnel])} decapsulates)")
    record(_set_sysctl(state, _key(device, "rp_filter"), 0, (0, 2)))
    if tunnel == "gue":
        netns.run_in_netns(None, ["ip", "fou", "add", "port", str(port), "gue"], check=False)
        record(f"fou port {port} (GUE) added")


def _decap_down(ipr: IPRoute, decap: dict[str, Any]) -> list[str]:
    if decap.get("mode") == "xdp":
        return [f"XDP program {DECAP_PROGRAM} detached from {decap['nic']}"] if detach_decap(decap["nic"]) else []
    undone = []
    if decap.get("port"):
        netns.run_in_netns(None, ["ip", "fou", "del", "port", str(decap["port"])], check=False)
        undone.append(f"fou port {decap['port']} removed")
    index = link_index(decap.get("device", ""), ipr)
    if index is not None:
        ipr.link("set", index=index, state="down")
        undone.append(f"{decap['device']} down")
    return undone


def down(vips: str | Sequence[str] | None = None, state_dir: Path = STATE_DIR) -> list[str]:
    """Undo what up() changed in this netns (only for `vips` when given: their addresses and rules, and the rest
    with the last VIP up() added); returns what was restored."""
    path = state_path(state_dir=state_dir)
    state = _load_state(path)
    only = None if vips is None else {str(vip) for vip in parse_vips(vips)}

    def chosen(vip: str) -> bool:
        return only is None or str(parse_address(vip)) in only

    undone: list[str] = []
    with IPRoute() as ipr:
        lo = _lo_index(ipr)
        for vip in [v for v in state.vips if chosen(v)]:
            plen = HOST_PREFIX[parse_address(vip).version]
            try:
                ipr.addr("del", index=lo, address=vip, prefixlen=plen)
                undone.append(f"removed {vip}/{plen} from lo")
            except NetlinkError as exc:
                log.warning("realserver: %s/%d was already gone from lo (%s)", vip, plen, exc)
            state.vips.remove(vip)
        for rule in [r for r in state.arptables if chosen(r[2])]:  # [chain, -d|-s, VIP, ...]
            if _arptables("-D", rule, check=False):
                undone.append(f"arptables -D {' '.join(rule)}")
            state.arptables.remove(rule)
        for vip in [v for v in state.nd_rules if chosen(v)]:
            if _delete_nd_rule(IPv6Address(vip)):
                undone.append(f"nft: removed the rule of table ip6 {ND_TABLE} for {vip}")
            state.nd_rules.remove(vip)
        if state.nft_table and not state.nd_rules:
            if _delete_nd_table_if_empty():
                undone.append(f"nft: removed table ip6 {ND_TABLE}")
            state.nft_table = False
        if state.empty() and state.decap:
            undone += _decap_down(ipr, state.decap)
            state.decap = {}
        if state.empty():
            for key, value in state.sysctls.items():
                try:
                    netns.write_sysctl(key, value)
                    undone.append(f"sysctl {key}={value}")
                except netns.NetnsError as exc:  # e.g. the NIC is gone meanwhile
                    log.warning("realserver: cannot restore %s: %s", key, exc)
            if state.lo_set_up:
                ipr.link("set", index=lo, state="down")
                undone.append("lo set down")
    if state.empty():
        path.unlink(missing_ok=True)
    elif undone:
        _save_state(path, state)
    for change in undone:
        log.debug("realserver: %s", change)
    return undone


# -- check -----------------------------------------------------------------------------------


def sysctl_finding(
    nic: str, setting: str, all_value: int, nic_value: int, value: int, accepted: tuple[int, ...]
) -> Finding:
    """Finding for a setting whose effective value is max(all, nic), as the kernel reads it."""
    values = {"all": all_value, nic: nic_value}
    ok = max(values.values()) in accepted
    fix = None
    if not ok:  # the fewest keys to set to value that make the effective value right
        for keys in ([nic], ["all"], ["all", nic]):
            if max({**values, **dict.fromkeys(keys, value)}.values()) in accepted:
                fix = "sysctl -w " + " ".join(f"{_key(iface, setting)}={value}" for iface in keys)
                break
    expected = " or ".join(str(a) for a in accepted)
    actual = f"{max(values.values())} (all={all_value}, {nic}={nic_value})"
    return Finding(f"{setting} on {nic}", ok, actual, expected, fix)


def _read_finding(nic: str, setting: str, value: int, accepted: tuple[int, ...]) -> Finding:
    all_value, nic_value = (_read_int(_key(iface, setting)) for iface in ("all", nic))
    return sysctl_finding(nic, setting, all_value, nic_value, value, accepted)


def _address_findings(ipr: IPRoute, vip: IPAddress) -> list[Finding]:
    """Where the VIP is: on lo as a host address (IPv6: deprecated), on no other interface."""
    plen = HOST_PREFIX[vip.version]
    on_ifaces = _addresses(ipr, vip)
    on_lo = [a for a in on_ifaces if a.ifname == "lo"]
    right = bool(on_lo) and on_lo[0].prefixlen == plen
    lo_fix = f"ip addr add {vip}/{plen} dev lo" + (" nodad preferred_lft 0" if vip.version == 6 else "")
    if on_lo and not right:
        lo_fix = f"ip addr del {vip}/{on_lo[0].prefixlen} dev lo && {lo_fix}"
    findings = [Finding("VIP on lo", right, f"{vip}/{on_lo[0].prefixlen}" if on_lo else "absent", f"{vip}/{plen}",
                        None if right else lo_fix)]
    if vip.version == 6 and right:
        deprecated = bool(on_lo[0].flags & IFA_F_DEPRECATED)
        findings.append(Finding(
            "VIP not a source address", deprecated,
            "deprecated (preferred_lft 0)" if deprecated else "preferred: the kernel may choose it as a source",
            "deprecated", None if deprecated else f"ip addr change {vip}/128 dev lo preferred_lft 0"))
    elsewhere = [a for a in on_ifaces if a.ifname != "lo"]
    for where in elsewhere:
        findings.append(Finding(f"VIP not on {where.ifname}", False, f"{vip}/{where.prefixlen}", "absent",
                                f"ip addr del {vip}/{where.prefixlen} dev {where.ifname}"))
    if not elsewhere:
        findings.append(Finding("VIP on no other interface", True, "none", "none"))
    return findings


def _ipv6_findings(nic: str, vips: list[IPv6Address], probe: bool) -> list[Finding]:
    findings = []
    for iface in ("lo", nic):
        disabled = _read_int(_key6(iface, "disable_ipv6"))
        findings.append(Finding(f"IPv6 on {iface}", not disabled, "disabled" if disabled else "enabled", "enabled",
                                f"sysctl -w {_key6(iface, 'disable_ipv6')}=0" if disabled else None))
    present = nd_rules()
    for vip in vips:
        rule = present.get(vip)
        findings.append(Finding(
            f"NS for {vip} dropped", rule is not None,
            f"nft rule present ({rule[1]} dropped)" if rule else "no rule: only the kernel's defaults keep this host "
            "silent", f"table ip6 {ND_TABLE} drops them", None if rule else nd_rule_command(vip)))
        if not probe:
            continue
        try:
            answers = ns_probe(vip, nic)
        except (OSError, RealServerError) as exc:
            findings.append(Finding(f"NS probe of {vip}", False, f"cannot probe: {exc}", "no answer"))
            continue
        findings.append(Finding(
            f"NS probe of {vip}", not answers,
            f"answered from {', '.join(sorted(set(answers)))}: clients can bypass the director" if answers
            else f"no answer to 2 solicitations on {nic}", "no answer", nd_rule_command(vip) if answers else None))
    return findings


def _decap_findings(nic: str, tunnel: str) -> list[Finding]:
    """Who decapsulates the director's tunnel (`tunnel`): pyvs_decap on the NIC (what it takes, what it did), or the
    kernel's modules with their fallback device up."""
    try:
        found = decap_status(nic)
    except (DecapError, OSError):
        found = None
    fix = f"pyvs realserver up --vip VIP --tunnel {tunnel}" + (" --tun-port PORT" if tunnel == "gue" else "")
    if found is not None:
        takes = ", ".join(f"gue:{found.gue_port}" if t == "gue" else t for t in found.tunnels)
        done = ", ".join(f"{found.counters[t]} {t}" for t in found.tunnels)
        ok = tunnel in found.tunnels
        return [Finding("tunnel decapsulation", ok, f"XDP {DECAP_PROGRAM} ({found.mode}) for {takes} to "
                        f"{found.addr or 'any address'}; decapsulated {done}", tunnel, None if ok else fix)]
    if kernel_can_decapsulate(tunnel):
        device = KERNEL_DEVICES[tunnel]
        with IPRoute() as ipr:
            index = link_index(device, ipr)
            up_ = index is not None and _is_up(ipr, index)
        return [Finding("tunnel decapsulation", up_, f"kernel {'/'.join(KERNEL_MODULES[tunnel])}: {device} "
                        f"{'up' if up_ else 'absent or down'}", f"{device} up", None if up_ else fix)]
    return [Finding("tunnel decapsulation", False, f"none: this kernel has no {'/'.join(KERNEL_MODULES[tunnel])} "
                    f"module and {DECAP_PROGRAM} is not attached to {nic}", f"XDP {DECAP_PROGRAM}", fix)]


def check(vips: str | Sequence[str], nic: str | None = None, probe: bool = True,
          tunnel: str | None = None) -> list[Finding]:
    """Report every real-server setting for the VIPs as right or wrong, with the command that fixes it. For an
    IPv6 VIP, `probe` sends solicitations into the NIC's receive path and reports whether the host answers. For a
    tunnel real (`tunnel`), who decapsulates."""
    wanted = parse_vips(vips)
    v4 = [vip for vip in wanted if isinstance(vip, IPv4Address)]
    v6 = [vip for vip in wanted if isinstance(vip, IPv6Address)]
    nic = _check_nic(nic, {vip.version for vip in wanted})
    findings: list[Finding] = []
    with IPRoute() as ipr:
        for vip in wanted:
            findings += _address_findings(ipr, vip)
        lo_up = _is_up(ipr, _lo_index(ipr))
        findings.append(
            Finding("lo up", lo_up, "up" if lo_up else "down", "up", None if lo_up else "ip link set lo up")
        )
        rip = _primary_address(ipr, nic) if v4 else ""

    unprotected = [vip for vip in v4 if not _has_arptables_drop(str(vip))]
    unmangled = [vip for vip in v4 if vip in unprotected or not _has_arptables_mangle(str(vip), rip)]
    for vip in v4:
        if vip not in unprotected:
            findings.append(Finding("arptables INPUT drops ARP for VIP", True, "present", "present"))
        if vip not in unmangled:
            findings.append(Finding(f"arptables OUTPUT mangles VIP to {rip}", True, "present", "present"))
    if unprotected:
        findings.append(_read_finding(nic, *ARP_IGNORE))
    if unmangled:
        findings.append(_read_finding(nic, *ARP_ANNOUNCE))
    if v4:
        findings.append(_read_finding(nic, *RP_FILTER))
    if v6:
        findings += _ipv6_findings(nic, v6, probe)
    return findings + (_decap_findings(nic, tunnel) if tunnel else [])
