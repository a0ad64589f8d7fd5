"""Where pyvs's XDP program runs in this network namespace, and attaching it by itself (ipvsadm's model).

IPVS acts on VIP traffic arriving on any interface of the director, with no attach step. pyvs does the same
by attaching its program where it must:
- the default interfaces are every interface that is UP, not loopback, and holds an IPv4 address;
- the default mode is generic (skb) mode: it never re-configures a NIC's queues or blinks its link, and a
  redirect from it to another interface delivers on every device (native XDP into a veth whose peer runs no
  XDP program drops the frame); native mode is chosen explicitly (`pyvs director attach --mode native`);
- a program that is not pyvs's is never replaced: such an interface is skipped and reported.
Only the data plane of this namespace's default pin directory attaches itself (an explicit --pin-dir may be
another namespace's data plane). Which interfaces were attached automatically is recorded in a small state
file under /run/pyvs/attach, so `pyvs director status` and `pyvs doctor` can tell "auto" from "explicit".
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from pyvs.dataplane.base import PROGRAM_NAME, PYVS_PROGRAMS, DataplaneError
from pyvs.dataplane.dataplane import Dataplane
from pyvs.netns import netns_cookie

AUTO_MODE = "generic"
STATE_DIR = Path("/run/pyvs/attach")
IFF_UP, IFF_LOOPBACK = 0x1, 0x8


@dataclass(frozen=True)
class Interface:
    name: str
    index: int
    kind: str  # the link kind ("veth", "bridge", ...), "" for a physical NIC
    xdp: tuple[str, int, str] | None  # (mode, program id, program name) of its XDP program


@dataclass
class AttachReport:
    attached: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)  # interface -> why
    mode: str = AUTO_MODE

    def message(self) -> str:
        """One line for an admin: what was attached, what was left alone."""
        parts = []
        if self.attached:
            parts.append(f"pyvs's XDP program attached ({self.mode} mode) to {', '.join(self.attached)}: VIP "
                         "traffic arriving there is forwarded (`pyvs director status` lists the interfaces)")
        else:
            parts.append("no interface of this network namespace could take pyvs's XDP program (none is UP with "
                         "an IPv4 address), so these rules forward nothing yet; `pyvs director attach --dev NIC` "
                         "attaches it")
        if self.skipped:
            parts.append("left alone: " + ", ".join(f"{name} ({why})" for name, why in sorted(self.skipped.items())))
        return "; ".join(parts)


def _xdp(link: Any) -> tuple[str, int] | None:
    xdp = link.get_attr("IFLA_XDP")
    if xdp is None:
        return None
    for attr, mode in (("IFLA_XDP_DRV_PROG_ID", "native"), ("IFLA_XDP_SKB_PROG_ID", "generic"),
                       ("IFLA_XDP_HW_PROG_ID", "offload")):
        prog_id = xdp.get_attr(attr)
        if prog_id:
            return mode, int(prog_id)
    prog_id = xdp.get_attr("IFLA_XDP_PROG_ID")
    return ("native", int(prog_id)) if prog_id else None


def interfaces() -> list[Interface]:
    """Every interface of this network namespace with its XDP program, if any."""
    from pyvs.dataplane import libbpf

    result = []
    with IPRoute() as ipr:
        for link in ipr.get_links():
            info = link.get_attr("IFLA_LINKINFO")
            kind = (info.get_attr("IFLA_INFO_KIND") if info is not None else None) or ""
            found = _xdp(link)
            xdp = None if found is None else (found[0], found[1], libbpf.prog_name(found[1]))
            result.append(Interface(link.get_attr("IFLA_IFNAME"), link["index"], kind, xdp))
    return result


def default_interfaces() -> list[str]:
    """The interfaces pyvs attaches itself to: UP, not loopback, with an IPv4 address (sorted by index)."""
    with IPRoute() as ipr:
        with_ipv4 = {addr["index"] for addr in ipr.get_addr(family=socket.AF_INET)}
        return [link.get_attr("IFLA_IFNAME") for link in sorted(ipr.get_links(), key=lambda link: link["index"])
                if link["flags"] & IFF_UP and not link["flags"] & IFF_LOOPBACK and link["index"] in with_ipv4]


def pyvs_interfaces() -> dict[str, str]:
    """Interfaces running pyvs's forwarding program -> mode."""
    return {i.name: i.xdp[0] for i in interfaces() if i.xdp is not None and i.xdp[2] == PROGRAM_NAME}


# ---- the record of what was attached automatically ---------------------------------------------

def _netns_id() -> int:
    return netns_cookie()  # an inode would be reused by a later namespace


def state_file(pin_dir: Path) -> Path:
    return STATE_DIR / f"{pin_dir.name}.json"


def auto_attached(pin_dir: Path) -> dict[str, int]:
    """Interfaces attached automatically for this data plane (name -> ifindex), as recorded in this namespace."""
    try:
        data = json.loads(state_file(pin_dir).read_text())
    except (OSError, ValueError):
        return {}
    if data.get("netns_cookie") != _netns_id():
        return {}  # recorded by a namespace of the same name that no longer exists
    return {str(k): int(v) for k, v in data.get("interfaces", {}).items()}


def forget_auto(pin_dir: Path) -> None:
    """The data plane at `pin_dir` is removed: so is its record."""
    if _netns_safe_name(pin_dir):
        state_file(pin_dir).unlink(missing_ok=True)


def _netns_safe_name(pin_dir: Path) -> bool:
    return bool(pin_dir.name) and "_new_" not in pin_dir.name


def record_auto(pin_dir: Path, interfaces: dict[str, int]) -> None:
    if interfaces:
        _record(pin_dir, interfaces)


def _record(pin_dir: Path, interfaces: dict[str, int]) -> None:
    try:
        STATE_DIR.mkdir(parents=True, exist_ok=True)
        path = state_file(pin_dir)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"netns_cookie": _netns_id(), "interfaces": interfaces}))
        os.replace(tmp, path)
    except OSError:
        pass  # only the status's "auto" label depends on it


def note_explicit(pin_dir: Path, ifname: str) -> None:
    """`pyvs director attach --dev` or `detach` took `ifname` under explicit control."""
    recorded = auto_attached(pin_dir)
    if recorded.pop(ifname, None) is not None:
        _record(pin_dir, recorded)


def attach_defaults(dp: Dataplane, mode: str = AUTO_MODE, only_if_none: bool = True,
                    record_as_auto: bool = True) -> AttachReport:
    """Attach `dp`'s program to every default interface that runs no XDP program yet.

    With `only_if_none`, nothing happens when pyvs already runs on some interface (the admin chose where:
    pyvsadm leaves that choice alone). An interface running another XDP program is skipped."""
    report = AttachReport(mode=mode)
    found = {i.name: i for i in interfaces()}
    if only_if_none and any(i.xdp is not None and i.xdp[2] == PROGRAM_NAME and dp.serves(i.xdp[1])
                            for i in found.values()):
        return report
    recorded = auto_attached(dp.pin_dir) if record_as_auto else {}
    for name in default_interfaces():
        iface = found.get(name)
        if iface is None:
            continue
        if iface.xdp is not None:
            if iface.xdp[2] != PROGRAM_NAME:
                report.skipped[name] = f"runs the XDP program {iface.xdp[2] or '(unnamed)'}, not pyvs's"
            if iface.xdp[2] != PROGRAM_NAME or dp.serves(iface.xdp[1]):
                continue
            # else: a pyvs program on maps that are no longer pinned (the rules never reach it): replaced.
        try:
            dp.attach(name, mode)
        except DataplaneError as exc:
            report.skipped[name] = str(exc)
            continue
        report.attached.append(name)
        if record_as_auto:
            recorded[name] = iface.index
    if report.attached and record_as_auto:
        _record(dp.pin_dir, recorded)
    return report


def attachment_rows(pin_dir: Path) -> list[list[str]]:
    """`pyvs director status`'s table of interfaces: name, kind, XDP program, mode, auto or explicit."""
    auto = auto_attached(pin_dir)
    defaults = set(default_interfaces())
    rows = [["interface", "kind", "xdp program", "mode", "attached"]]
    for iface in interfaces():
        if iface.xdp is None and iface.name not in defaults:
            continue  # loopback, down, or without an address: pyvs has nothing to do there
        if iface.xdp is None:
            rows.append([iface.name, iface.kind or "nic", "none", "-", "not yet"])
            continue
        mode, prog_id, name = iface.xdp
        if name in PYVS_PROGRAMS:
            how = "auto" if auto.get(iface.name) == iface.index else "explicit"
        else:
            how = "not pyvs's: left alone"
        rows.append([iface.name, iface.kind or "nic", f"{name or '(unnamed)'} (id {prog_id})", mode, how])
    return rows


def native_veth_warnings() -> list[str]:
    """Interfaces where pyvs runs natively on a veth: what XDP_TX or a redirect sends there arrives only when
    the veth's peer runs an XDP program (pyvs cannot see the peer's namespace to check it)."""
    return [f"{i.name}: pyvs runs in native mode on a veth; frames it sends there (XDP_TX, or a redirect from "
            "another interface) arrive only if the veth's peer runs an XDP program (a pass program will do); "
            "generic mode has no such need"
            for i in interfaces() if i.kind == "veth" and i.xdp is not None and i.xdp[2] == PROGRAM_NAME
            and i.xdp[0] == "native"]
