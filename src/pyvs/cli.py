"""`pyvs`: the lab and real-server commands. Thin: parse, call the layer below, print."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from pyroute2.netlink.exceptions import NetlinkError

from pyvs import netns, realserver
from pyvs.dataplane import Dataplane, DataplaneError, open_dataplane, remove_pins
from pyvs.dataplane.neighbours import ZERO_MAC
from pyvs.lab import lab
from pyvs.lab.demo import run_demo
from pyvs.lab.topology import Topology, check_prefix, default_topology

EXIT_FAILURE = 1
EXIT_USAGE = 2
NODE_NAMES = tuple(node.name for node in default_topology().nodes)
EXPECTED_ERRORS = (
    lab.LabError, realserver.RealServerError, netns.NetnsError, DataplaneError, NetlinkError, OSError, ValueError,
)


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"pyvs: {message}\n")


def _print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def _prefix(value: str) -> str:
    try:
        return check_prefix(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _topology(args: argparse.Namespace) -> Topology:
    return default_topology(prefix=args.prefix)


def _print_actions(actions: list[str], nothing: str) -> None:
    for action in actions:
        print(action)
    if not actions:
        print(nothing)


# -- lab --------------------------------------------------------------------------------------


def cmd_lab_up(args: argparse.Namespace) -> int:
    topo = _topology(args)
    _print_actions(lab.up(topo, keep_on_failure=args.keep_on_failure), f"lab {topo.prefix} is already up")
    return 0


def cmd_lab_down(args: argparse.Namespace) -> int:
    topo = _topology(args)
    _print_actions(lab.down(topo), f"lab {topo.prefix} is not up")
    return 0


def cmd_lab_status(args: argparse.Namespace) -> int:
    report: dict[str, Any] = lab.status(_topology(args))
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
    _print_table(rows)
    return 0 if report["healthy"] else EXIT_FAILURE


def cmd_lab_exec(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("lab exec needs a command after the node name, e.g. pyvs lab exec rs1 -- ip addr")
    netns.exec_in_netns(_topology(args).node(args.node).netns, command)
    return EXIT_FAILURE  # not reached: exec replaced this process


def cmd_lab_demo(args: argparse.Namespace) -> int:
    """Bring the lab up with the director's XDP data plane and show traffic flowing."""
    run_demo(_topology(args), print, requests=args.requests)
    return 0


# -- director ---------------------------------------------------------------------------------


def cmd_director_attach(args: argparse.Namespace) -> int:
    with open_dataplane(args.pin_dir) as dp:
        dp.attach(args.dev, args.mode)
        print(f"XDP ({args.mode}) attached to {args.dev}; maps pinned at {dp.pin_dir}")
    return 0


def cmd_director_detach(args: argparse.Namespace) -> int:
    Dataplane.detach(args.dev)
    if args.remove_rules:
        with open_dataplane(args.pin_dir) as dp:
            pin_dir = dp.pin_dir
        remove_pins(pin_dir)
    print(f"XDP detached from {args.dev}")
    return 0


def cmd_director_status(args: argparse.Namespace) -> int:
    with open_dataplane(args.pin_dir) as dp:
        counters = dp.counters()
        hops = dp.real_next_hops()
        print(f"maps: {dp.pin_dir} (connection table size {dp.conn_table_size})")
    rows = [["service", "real", "mac", "via ifindex"]]
    rows += [[f"{key.proto.label} {key}", f"{rip}:{port}", hop.dmac if hop.dmac != ZERO_MAC else "UNRESOLVED",
              str(hop.ifindex)] for (key, (rip, port)), hop in sorted(hops.items())]
    _print_table(rows)
    _print_table([["counter", "value"], *([name, str(value)] for name, value in counters.items())])
    return 0


def cmd_director_resolve(args: argparse.Namespace) -> int:
    with open_dataplane(args.pin_dir) as dp:
        print(f"{dp.refresh_macs()} real server MAC(s) updated")
    return 0


# -- realserver -------------------------------------------------------------------------------


def cmd_realserver_up(args: argparse.Namespace) -> int:
    changes = realserver.up(args.vip, nic=args.dev, method=args.method)
    _print_actions(changes, "real server already configured, nothing changed")
    return 0


def cmd_realserver_down(args: argparse.Namespace) -> int:
    _print_actions(realserver.down(), "nothing to restore: pyvs realserver up made no changes here")
    return 0


def cmd_realserver_check(args: argparse.Namespace) -> int:
    findings = realserver.check(args.vip, nic=args.dev)
    rows = [["setting", "actual", "expected", "ok", "fix"]]
    rows += [[f.name, f.actual, f.expected, "ok" if f.ok else "WRONG", f.fix_command or ""] for f in findings]
    _print_table(rows)
    return 0 if all(f.ok for f in findings) else EXIT_FAILURE


# -- parser -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyvs", description="LVS Direct Routing with an XDP data plane: lab, director data plane, real servers."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done to stderr")
    commands = parser.add_subparsers(
        dest="area", required=True, metavar="{lab,director,realserver}", help="what to act on"
    )

    prefix = Parser(add_help=False)
    prefix.add_argument(
        "--prefix", default="pyvs", type=_prefix, help="name prefix of the lab's namespaces and links (default: pyvs)"
    )

    lab_help = "the LVS-DR cluster in network namespaces"
    lab_parser = commands.add_parser("lab", help=lab_help, description=lab_help)
    lab_commands = lab_parser.add_subparsers(
        help="what to do with the lab", dest="command_name", required=True, metavar="{up,down,status,exec,demo}"
    )

    def add(
        group: Any, name: str, handler: Callable[[argparse.Namespace], int], help_text: str, *parents: Parser
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=help_text, parents=list(parents)
        )
        sub.set_defaults(handler=handler)
        return sub

    up = add(lab_commands, "up", cmd_lab_up, "build the lab (finishes a partial one, no-op if complete)", prefix)
    up.add_argument("--keep-on-failure", action="store_true", help="leave a half-built lab for inspection")
    add(lab_commands, "down", cmd_lab_down, "remove the lab's namespaces, links and processes", prefix)
    status = add(
        lab_commands, "status", cmd_lab_status, "show nodes, addresses and servers; exit 1 if unhealthy", prefix
    )
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    exec_ = add(
        lab_commands, "exec", cmd_lab_exec, "run a command inside a lab node (setns only: /sys/fs/bpf stays visible)",
        prefix,
    )  # fmt: skip
    exec_.add_argument("node", choices=NODE_NAMES, help="the node to enter")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="-- followed by the command and its arguments")
    demo = add(lab_commands, "demo", cmd_lab_demo,
               "bring up the lab, send requests from the client and show who answered and the director's counters",
               prefix)  # fmt: skip
    demo.add_argument("--requests", type=int, default=10, help="HTTP requests to send (default: 10)")

    director_help = "the XDP data plane of this host (its current netns)"
    director_parser = commands.add_parser("director", help=director_help, description=director_help)
    director_commands = director_parser.add_subparsers(
        help="what to do with the data plane", dest="command_name", required=True,
        metavar="{attach,detach,status,resolve}",
    )  # fmt: skip
    pins = Parser(add_help=False)
    pins.add_argument("--pin-dir", default=None,
                      help="bpffs directory of the maps (default: /sys/fs/bpf/pyvs/<netns name or 'default'>)")
    dev = Parser(add_help=False)
    dev.add_argument("--dev", required=True, help="the director's NIC facing the VIP's segment")
    attach = add(director_commands, "attach", cmd_director_attach,
                 "load the XDP program on a NIC; pyvsadm rules then apply to its traffic", pins, dev)  # fmt: skip
    attach.add_argument("--mode", choices=("native", "generic"), default="native",
                        help="XDP mode: native (driver) or generic (any device, slower); default native")
    detach = add(director_commands, "detach", cmd_director_detach, "remove the XDP program from a NIC", pins, dev)
    detach.add_argument("--remove-rules", action="store_true", help="also remove the pinned maps (rules, counters)")
    add(director_commands, "status", cmd_director_status, "show reals' MACs and the data plane's counters", pins)
    add(director_commands, "resolve", cmd_director_resolve, "resolve the real servers' MACs again", pins)

    rs_help = "configure this host (its current netns) as an LVS-DR real server"
    rs_parser = commands.add_parser("realserver", help=rs_help, description=rs_help)
    rs_commands = rs_parser.add_subparsers(
        help="what to do with this real server", dest="command_name", required=True, metavar="{up,down,check}"
    )
    vip = Parser(add_help=False)
    vip.add_argument("--vip", required=True, help="the virtual IP address served by the director")
    vip.add_argument("--dev", help="the NIC facing the director (default: that of the default route)")
    rs_up = add(rs_commands, "up", cmd_realserver_up, "put the VIP on lo as /32 and suppress ARP for it", vip)
    rs_up.add_argument(
        "--method", choices=realserver.METHODS, default="sysctl",
        help="ARP suppression: sysctl (arp_ignore/arp_announce, default) or arptables rules",
    )  # fmt: skip
    add(rs_commands, "down", cmd_realserver_down, "undo exactly what 'pyvs realserver up' changed")
    add(rs_commands, "check", cmd_realserver_check, "verify the real-server settings; exit 1 if any is wrong", vip)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="pyvs: %(message)s", stream=sys.stderr
    )
    try:
        result: int = args.handler(args)
        return result
    except UsageError as exc:
        print(f"pyvs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except EXPECTED_ERRORS as exc:
        print(f"pyvs: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
