"""Firewall-mark services outside the program: pyvs_fwm at the tcx egress hook of every interface pyvs's XDP program
runs on, and the nftables rule that hands it the packets whose mark has a service.

Netfilter sets the mark after XDP and after tc ingress (measured here: a tc ingress program never saw a mark set in
its own device's netdev ingress hook), and a netfilter BPF program sees marks but can only accept or drop. So the
admin marks packets in nftables' netdev ingress hook (priority below 100), and pyvs's table `netdev pyvs_fwmark`
holds one chain at priority 100 on the same interfaces: `meta protocol ip meta mark @marks fwd to meta iif` sends an
IPv4 packet whose mark has an IPv4 service (the set `marks`; IPv6: `marks6`) to its interface's egress, where pyvs_fwm
schedules it. The table exists only while there are fwmark services; it is rewritten in one nft transaction when
they or the interfaces change. A mark is (family, mark): IPVS keys a fwmark service by both.
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


Mark = tuple[int, int]  # (family, mark)
SETS = {4: ("marks", "ip"), 6: ("marks6", "ip6")}  # family -> the table's set and nft's `meta protocol`


def marks_in_table() -> set[Mark]:
    """The marks of the table's sets (empty when there is no table or no nft)."""
    if shutil.which("nft") is None:
        return set()
    found: set[Mark] = set()
    for family, (name, _) in SETS.items():
        out = _nft(["-j", "list", "set", "netdev", TABLE, name], check=False)
        for item in json.loads(out).get("nftables", []) if out else []:
            if "set" in item:
                found |= {(family, int(e)) for e in item["set"].get("elem", [])}
    return found


def ruleset(marks: Iterable[Mark], interfaces: Iterable[str]) -> str:
    """The table's text for these marks and interfaces."""
    names = ", ".join(json.dumps(name) for name in sorted(interfaces))
    text = f"table netdev {TABLE} {{\n"
    for family, (name, _) in SETS.items():
        elements = ", ".join(str(mark) for fam, mark in sorted(marks) if fam == family)
        listed = f"\t\telements = {{ {elements} }}\n" if elements else ""
        text += f"\tset {name} {{\n\t\ttype mark\n{listed}\t}}\n"
    text += (f"\tchain ingress {{\n"
             f"\t\ttype filter hook ingress devices = {{ {names} }} priority {PRIORITY}; policy accept;\n")
    for name, protocol in SETS.values():
        text += f"\t\tmeta protocol {protocol} meta mark @{name} fwd to meta iif\n"
    return text + "\t}\n}\n"


def sync(marks: set[Mark] | None = None) -> None:
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
