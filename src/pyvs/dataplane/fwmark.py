"""Firewall-mark services outside the program: pyvs_fwm at the tcx egress hook of every interface pyvs's XDP program
runs on, and the nftables rule that hands it the packets whose mark has a service.

Netfilter sets the mark after XDP and after tc ingress (measured here: a tc ingress program never saw a mark set in
its own device's netdev ingress hook), and a netfilter BPF program sees marks but can only accept or drop. So the
admin marks packets in nftables' netdev ingress hook (priority below 100), and pyvs's table `netdev pyvs_fwmark`
holds one chain at priority 100 on the same interfaces: `meta mark @marks fwd to meta iif` sends a packet whose mark
has a service (the set `marks`) to its interface's egress, where pyvs_fwm schedules it. The table exists only while
there are IPv4 fwmark services; it is rewritten in one nft transaction when they or the interfaces change.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable

from pyroute2 import IPRoute

from pyvs import netns
from pyvs.dataplane import libbpf
from pyvs.dataplane.base import FWMARK_PROGRAM, DataplaneError

TABLE = "pyvs_fwmark"
PRIORITY = 100  # after the admin's marking chains (netdev ingress, priority < 100)


def need_nft() -> None:
    """Firewall-mark services need nft: checked before anything is written."""
    if shutil.which("nft") is None:
        raise DataplaneError("firewall-mark services need nftables (the nft command) to hand marked packets to "
                             "pyvs: apt-get install nftables")


def attached_ids(ifindex: int) -> list[int]:
    """Programs named pyvs_fwm at the tcx egress hook of `ifindex`."""
    return [prog_id for prog_id in libbpf.tcx_prog_ids(ifindex) if libbpf.prog_name(prog_id) == FWMARK_PROGRAM]


def attach(ifindex: int, prog_fd: int) -> None:
    """Run `prog_fd` (a pyvs_fwm) at the tcx egress of `ifindex`, in place of any pyvs_fwm there."""
    own = libbpf.prog_id(prog_fd)
    old = attached_ids(ifindex)
    if own not in old:
        libbpf.tcx_attach(ifindex, prog_fd)
    for prog_id in old:
        if prog_id != own:
            libbpf.tcx_detach(ifindex, prog_id)


def detach(ifindex: int) -> None:
    for prog_id in attached_ids(ifindex):
        libbpf.tcx_detach(ifindex, prog_id)


def devices() -> list[str]:
    """Interfaces of this namespace whose tcx egress runs pyvs_fwm."""
    with IPRoute() as ipr:
        links = [(link["index"], link.get_attr("IFLA_IFNAME")) for link in ipr.get_links()]
    found = []
    for index, name in links:
        try:
            if attached_ids(index):
                found.append(name)
        except libbpf.BpfError:
            continue  # a link that vanished, or without tcx
    return found


def _nft(argv: list[str], text: str | None = None, check: bool = True) -> str:
    proc = netns.run_in_netns(None, ["nft", *argv], input=text, check=False)
    if check and proc.returncode != 0:
        raise DataplaneError(f"nft {' '.join(argv)} failed: {proc.stderr.strip()}")
    return proc.stdout


def marks_in_table() -> set[int]:
    """The marks of the table's set (empty when there is no table or no nft)."""
    if shutil.which("nft") is None:
        return set()
    out = _nft(["-j", "list", "set", "netdev", TABLE, "marks"], check=False)
    if not out:
        return set()
    for item in json.loads(out).get("nftables", []):
        if "set" in item:
            return {int(e) for e in item["set"].get("elem", [])}
    return set()


def ruleset(marks: Iterable[int], interfaces: Iterable[str]) -> str:
    """The table's text for these marks and interfaces."""
    names = ", ".join(json.dumps(name) for name in sorted(interfaces))
    elements = ", ".join(str(mark) for mark in sorted(marks))
    return (f"table netdev {TABLE} {{\n"
            f"\tset marks {{\n\t\ttype mark\n\t\telements = {{ {elements} }}\n\t}}\n"
            f"\tchain ingress {{\n"
            f"\t\ttype filter hook ingress devices = {{ {names} }} priority {PRIORITY}; policy accept;\n"
            f"\t\tmeta mark @marks fwd to meta iif\n\t}}\n}}\n")


def sync(marks: set[int] | None = None) -> None:
    """Make the table hand packets with `marks` (None: the table's own marks) to pyvs_fwm on every interface it runs
    on; no marks or no such interface: no table."""
    if marks is None:
        marks = marks_in_table()
    interfaces = devices() if marks else []
    if marks and interfaces:
        need_nft()
        # One transaction: the table made (if absent), emptied, and written again.
        _nft(["-f", "-"], f"table netdev {TABLE} {{}}\ndelete table netdev {TABLE}\n" + ruleset(marks, interfaces))
    elif shutil.which("nft") is not None and _nft(["list", "table", "netdev", TABLE], check=False):
        _nft(["delete", "table", "netdev", TABLE])
