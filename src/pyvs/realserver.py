"""Real-server side of LVS-DR: the VIP on lo as /32, ARP suppression, verification.

Acts on the network namespace of the calling thread. `up` records exactly what it
changed in a state file keyed by that namespace, so that `down` undoes just that.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from pyvs import netns
from pyvs.links import link_index

log = logging.getLogger(__name__)

STATE_DIR = Path("/run/pyvs/realserver")
METHODS = ("sysctl", "arptables")

# (setting, value up() writes, values that count as right). The kernel uses max(all, iface).
ARP_IGNORE = ("arp_ignore", 1, (1, 2))
ARP_ANNOUNCE = ("arp_announce", 2, (2,))
RP_FILTER = ("rp_filter", 0, (0, 2))


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
    lo_set_up: bool = False


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


def _parse_vip(vip: str) -> str:
    try:
        return str(ipaddress.IPv4Address(vip))
    except ValueError:
        raise RealServerError(f"VIP {vip!r} is not an IPv4 address") from None


def _ifname(ipr: IPRoute, index: int) -> str:
    links = ipr.get_links(index)
    return str(links[0].get("IFLA_IFNAME")) if links else str(index)


def _addresses(ipr: IPRoute, address: str) -> list[tuple[str, int]]:
    """Interfaces carrying address, as (ifname, prefixlen)."""
    return [
        (_ifname(ipr, a["index"]), int(a["prefixlen"]))
        for a in ipr.get_addr(family=2)
        if a.get("IFA_ADDRESS") == address
    ]


def _lo_index(ipr: IPRoute) -> int:
    index = link_index("lo", ipr)
    if index is None:
        raise RealServerError("no lo interface in this network namespace")
    return index


def _is_up(ipr: IPRoute, index: int) -> bool:
    return bool(ipr.get_links(index)[0]["flags"] & 1)  # IFF_UP


def default_nic() -> str:
    """The interface of the default route, else the first non-lo interface that is up."""
    with IPRoute() as ipr:
        for route in ipr.get_default_routes(family=2):
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


def _check_nic(nic: str | None) -> str:
    nic = nic or default_nic()
    if nic == "lo":
        raise RealServerError("the NIC must be the interface facing the director, not lo")
    if not netns.sysctl_path(f"net.ipv4.conf.{nic}.arp_ignore").exists():
        raise RealServerError(f"no interface {nic} with IPv4 in this network namespace")
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


# -- sysctls ---------------------------------------------------------------------------------


def _key(iface: str, setting: str) -> str:
    return f"net.ipv4.conf.{iface}.{setting}"


def _read_int(key: str) -> int:
    return int(netns.read_sysctl(key))


def _set_sysctl(state: _State, key: str, value: int, accepted: tuple[int, ...]) -> str | None:
    current = netns.read_sysctl(key)
    if int(current) in accepted:
        return None
    state.sysctls.setdefault(key, current)
    netns.write_sysctl(key, value)
    return f"sysctl {key}={value} (was {current})"


def up(vip: str, nic: str | None = None, method: str = "sysctl", state_dir: Path = STATE_DIR) -> list[str]:
    """Apply the real-server configuration for vip; returns what was changed."""
    vip = _parse_vip(vip)
    if method not in METHODS:
        raise RealServerError(f"unknown method {method!r}; use one of {', '.join(METHODS)}")
    nic = _check_nic(nic)
    path = state_path(state_dir=state_dir)
    state = _load_state(path)
    changes: list[str] = []

    def record(change: str | None) -> None:
        if change:
            log.debug("realserver: %s", change)
            changes.append(change)
            _save_state(path, state)

    with IPRoute() as ipr:
        for ifname, prefixlen in _addresses(ipr, vip):
            if ifname != "lo":
                raise RealServerError(
                    f"VIP {vip} is on {ifname}: this host would answer ARP for it. "
                    f"Remove it (ip addr del {vip}/{prefixlen} dev {ifname}) and run again"
                )
            if prefixlen != 32:
                raise RealServerError(
                    f"VIP {vip}/{prefixlen} on lo must be /32, or lo claims the whole subnet. "
                    f"Remove it (ip addr del {vip}/{prefixlen} dev lo) and run again"
                )
        rip = _primary_address(ipr, nic) if method == "arptables" else ""

        # ARP suppression goes first: the VIP must never be visible unprotected.
        if method == "sysctl":
            for iface in ("all", "lo", nic):
                for setting, value, accepted in (ARP_IGNORE, ARP_ANNOUNCE):
                    record(_set_sysctl(state, _key(iface, setting), value, accepted))
        else:
            if shutil.which("arptables") is None:
                raise RealServerError("arptables is not installed (apt install arptables), or use --method sysctl")
            for rule in _arptables_rules(vip, rip):
                if not _arptables_has(rule):
                    _arptables("-A", rule)
                    state.arptables.append(rule)
                    record(f"arptables -A {' '.join(rule)}")
        for iface in ("all", nic):
            setting, value, accepted = RP_FILTER
            record(_set_sysctl(state, _key(iface, setting), value, accepted))

        lo = _lo_index(ipr)
        if not _is_up(ipr, lo):
            ipr.link("set", index=lo, state="up")
            state.lo_set_up = True
            record("lo set up")
        if not _addresses(ipr, vip):
            ipr.addr("add", index=lo, address=vip, prefixlen=32)
            state.vips.append(vip)
            record(f"added {vip}/32 to lo")
    return changes


def down(state_dir: Path = STATE_DIR) -> list[str]:
    """Undo what up() changed in this netns; returns what was restored."""
    path = state_path(state_dir=state_dir)
    state = _load_state(path)
    undone: list[str] = []
    with IPRoute() as ipr:
        lo = _lo_index(ipr)
        for vip in state.vips:
            try:
                ipr.addr("del", index=lo, address=vip, prefixlen=32)
                undone.append(f"removed {vip}/32 from lo")
            except NetlinkError as exc:
                log.warning("realserver: %s/32 was already gone from lo (%s)", vip, exc)
        for rule in state.arptables:
            if _arptables("-D", rule, check=False):
                undone.append(f"arptables -D {' '.join(rule)}")
        for key, value in state.sysctls.items():
            try:
                netns.write_sysctl(key, value)
                undone.append(f"sysctl {key}={value}")
            except netns.NetnsError as exc:  # e.g. the NIC is gone meanwhile
                log.warning("realserver: cannot restore %s: %s", key, exc)
        if state.lo_set_up:
            ipr.link("set", index=lo, state="down")
            undone.append("lo set down")
    path.unlink(missing_ok=True)
    for change in undone:
        log.debug("realserver: %s", change)
    return undone


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


def check(vip: str, nic: str | None = None) -> list[Finding]:
    """Report every real-server setting for vip as right or wrong, with the command that fixes it."""
    vip = _parse_vip(vip)
    nic = _check_nic(nic)
    findings: list[Finding] = []
    with IPRoute() as ipr:
        on_ifaces = _addresses(ipr, vip)
        on_lo = [plen for name, plen in on_ifaces if name == "lo"]
        lo_fix = f"ip addr add {vip}/32 dev lo"
        if on_lo and on_lo[0] != 32:
            lo_fix = f"ip addr del {vip}/{on_lo[0]} dev lo && {lo_fix}"
        findings.append(
            Finding(
                "VIP on lo",
                on_lo == [32],
                f"{vip}/{on_lo[0]}" if on_lo else "absent",
                f"{vip}/32",
                None if on_lo == [32] else lo_fix,
            )
        )
        elsewhere = [(name, plen) for name, plen in on_ifaces if name != "lo"]
        for name, plen in elsewhere:
            findings.append(
                Finding(f"VIP not on {name}", False, f"{vip}/{plen}", "absent", f"ip addr del {vip}/{plen} dev {name}")
            )
        if not elsewhere:
            findings.append(Finding("VIP on no other interface", True, "none", "none"))
        lo_up = _is_up(ipr, _lo_index(ipr))
        findings.append(
            Finding("lo up", lo_up, "up" if lo_up else "down", "up", None if lo_up else "ip link set lo up")
        )
        rip = _primary_address(ipr, nic)

    if _has_arptables_drop(vip):
        findings.append(Finding("arptables INPUT drops ARP for VIP", True, "present", "present"))
        if _has_arptables_mangle(vip, rip):
            findings.append(Finding(f"arptables OUTPUT mangles VIP to {rip}", True, "present", "present"))
        else:
            findings.append(_read_finding(nic, *ARP_ANNOUNCE))
    else:
        findings.append(_read_finding(nic, *ARP_IGNORE))
        findings.append(_read_finding(nic, *ARP_ANNOUNCE))
    findings.append(_read_finding(nic, *RP_FILTER))
    return findings
