"""`pyvs lab ...`: the cluster in network namespaces."""

from __future__ import annotations

import argparse
import json
from typing import Any

from pyvs import netns
from pyvs.cli.common import EXIT_FAILURE, CommandFailed, UsageError, print_actions, print_table
from pyvs.lab import lab
from pyvs.lab.topology import Topology, default_topology, ecmp_topology, nat_topology, tun_topology, vrrp_topology


def _topology(args: argparse.Namespace) -> Topology:
    """The lab of --prefix: dual-stack with --ipv6, with the directors of --directors N, the active/backup pair of
    --vrrp, or as it was brought up (all are recorded)."""
    from pyvs.lab import vrrp
    from pyvs.lab.ecmp import recorded_directors

    option = "" if args.prefix == "pyvs" else f" --prefix {args.prefix}"
    if getattr(args, "vrrp", False) or vrrp.recorded(args.prefix):
        method = getattr(args, "method", None) or (lab.recorded_method(default_topology(prefix=args.prefix))
                                                   or ("dr",))[0]
        others = [name for name, given in (("--ipv6", getattr(args, "ipv6", False) or lab.recorded_ipv6(
            default_topology(prefix=args.prefix))), ("--directors", getattr(args, "directors", None) is not None
                                                      or recorded_directors(args.prefix)),
            (f"--method {method}", method != "dr")) if given]
        if others:
            running = "" if getattr(args, "vrrp", False) and not vrrp.recorded(args.prefix) else \
                f" (lab {args.prefix} runs with --vrrp: `pyvs lab down{option}` first)"
            raise UsageError(f"--vrrp and {' and '.join(others)} do not go together: the active/backup lab is two "
                             f"IPv4 directors on the reals' segment{running}")
        return vrrp_topology(prefix=args.prefix)
    recorded = recorded_directors(args.prefix)
    asked = getattr(args, "directors", None)
    if asked is not None and recorded is not None and asked != recorded:
        raise UsageError(f"lab {args.prefix} runs with {recorded} directors: `pyvs lab down{option}` first")
    directors = asked or recorded or 1
    topo = default_topology(prefix=args.prefix)
    recorded_ipv6 = lab.recorded_ipv6(topo)
    ipv6 = getattr(args, "ipv6", False) or recorded_ipv6
    recorded_method = lab.recorded_method(topo)
    asked_method, asked_type = getattr(args, "method", None), getattr(args, "tun_type", None)
    method = asked_method or (recorded_method[0] if recorded_method else "dr")
    tun_type = asked_type or (recorded_method[1] if recorded_method else "ipip")
    if recorded_method and (method, tun_type) != recorded_method:
        raise UsageError(f"lab {args.prefix} runs with --method {recorded_method[0]} --tun-type {recorded_method[1]}: "
                         f"`pyvs lab down{option}` first")
    if asked_type and method != "tun":
        raise UsageError("--tun-type goes with --method tun")
    if method == "tun":
        if ipv6 or directors > 1:
            raise UsageError("--method tun is IPv4 with one director: not with --ipv6 or --directors")
        return tun_topology(prefix=args.prefix, tun_type=tun_type)
    if method == "nat":
        if ipv6 or directors > 1:
            raise UsageError("--method nat goes with one director and IPv4 only (pyvs's NAT is IPv4): not with "
                             "--ipv6 or --directors")
        return nat_topology(prefix=args.prefix)
    if directors == 1:
        return default_topology(prefix=args.prefix, ipv6=ipv6) if ipv6 else topo
    return ecmp_topology(prefix=args.prefix, directors=directors,
                         base=default_topology(prefix=args.prefix, ipv6=True) if ipv6 else None)


def _prefix_option(topo: Topology) -> str:
    return "" if topo.prefix == "pyvs" else f" --prefix {topo.prefix}"


def cmd_up(args: argparse.Namespace) -> int:
    topo = _topology(args)
    print_actions(lab.up(topo, keep_on_failure=args.keep_on_failure), f"lab {topo.prefix} is up: nothing to repair")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    topo = _topology(args)
    print_actions(lab.down(topo), f"lab {topo.prefix} is not up")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    topo = _topology(args)
    report: dict[str, Any] = lab.status(topo)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["healthy"] else EXIT_FAILURE
    print(f"lab {report['prefix']}: {'healthy' if report['healthy'] else 'NOT healthy'}")
    rows = [["node", "netns", "state", "interfaces"]]
    for name, node in report["nodes"].items():
        ifaces = "; ".join(
            f"{ifname} {' '.join(info['addresses'])}".strip() + ("" if info["up"] else " (down)")
            for ifname, info in node["interfaces"].items()
            if ifname != "lo"
        )
        rows.append([name, node["netns"], "present" if node["exists"] else "missing", ifaces])
    for name, server in report["servers"].items():
        running = "running" if server["running"] else "NOT running"
        rows.append([f"{name} web", "", running, f"pid {server['pid']}"])
    for name, pid in report.get("processes", {}).items():  # the ECMP lab's BIRDs and daemons, VRRP's keepalived
        rows.append([name, "", "running" if pid else "NOT running", f"pid {pid}" if pid else ""])
    print_table(rows)
    if "vip_holders" in report:
        print(f"VIP {topo.vip} held by: {', '.join(report['vip_holders']) or 'no director'}")
    for problem in report["problems"]:
        print(f"problem: {problem}")
    if report["problems"]:
        print(f"fix: pyvs lab up{_prefix_option(topo)} (it repairs all of the above and says what it did)")
    return 0 if report["healthy"] else EXIT_FAILURE


def cmd_exec(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("lab exec needs a command after the node name, e.g. pyvs lab exec rs1 -- ip addr")
    netns.exec_in_netns(_topology(args).node(args.node).netns, command)
    return EXIT_FAILURE  # not reached: exec replaced this process


def cmd_demo(args: argparse.Namespace) -> int:
    """Bring the lab up with the director's XDP data plane and show traffic flowing."""
    from pyvs.lab.demo import DemoError, run_demo

    topo = _topology(args)
    try:
        run_demo(topo, lambda line: print(line, flush=True), requests=args.requests)
    except DemoError as exc:
        raise CommandFailed(f"{exc}; see `pyvs lab status{_prefix_option(topo)}`, "
                            f"and `pyvs lab up{_prefix_option(topo)}` repairs the lab") from None
    return 0
