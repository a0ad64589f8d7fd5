"""`pyvs`: the lab, the director, real servers and ARP checks. Thin: parse, call the layer below, print.

One module per area (lab, director, status, realserver, arp), imported only when its command runs:
`pyvs realserver`, `pyvs status` and `pyvs director import-keepalived` never load the data plane
(libbpf, clang). Every failure is one line on stderr and an exit code: 2 for a command that cannot
run as given, 1 for one that failed, 130 on Ctrl-C, 141 when the reader of stdout went away (`| head`).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from typing import Any, NoReturn

from pyvs.cli.arp import DEFAULT_CLIENT_IP, DEFAULT_CLIENT_IP6, PROBE_WAIT, address_option, listen_address, pin_option
from pyvs.cli.common import EXIT_FAILURE, EXIT_USAGE, CommandFailed, UsageError
from pyvs.director.config import DEFAULT_LISTEN
from pyvs.lab.topology import MAX_DIRECTORS, METHODS, check_prefix, default_topology, ecmp_topology

EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a command killed by it
LAB_PREFIX_ENV = "PYVS_LAB_PREFIX"
NODE_NAMES = tuple(dict.fromkeys(node.name for topo in (default_topology(), ecmp_topology(directors=MAX_DIRECTORS))
                                  for node in topo.nodes))
RS_METHODS = ("sysctl", "arptables")

__all__ = ["EXIT_FAILURE", "EXIT_USAGE", "CommandFailed", "UsageError", "build_parser", "main"]


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"pyvs: {message}\n")


def _prefix(value: str) -> str:
    try:
        return check_prefix(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _directors(value: str) -> int:
    try:
        count = int(value)
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_DIRECTORS:
        raise argparse.ArgumentTypeError(f"--directors is a number from 1 to {MAX_DIRECTORS}, not {value!r}")
    return count


def _handler(spec: str) -> Callable[[argparse.Namespace], int]:
    """"module:function" under pyvs.cli, imported now (the command is about to run)."""
    module, _, name = spec.partition(":")
    function: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(f"pyvs.cli.{module}"), name)
    return function


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="pyvs",
        description="LVS Direct Routing with an XDP data plane: the lab, the director (data plane and daemon), "
        "real servers, ARP checks."
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log what pyvs is doing to stderr (and show the traceback of an unexpected error)")
    commands = parser.add_subparsers(
        dest="area", required=True, metavar="{lab,director,realserver,status,doctor,arpwatch}", help="what to act on"
    )

    prefix = Parser(add_help=False)
    prefix.add_argument(
        "--prefix", default=check_prefix(os.environ.get(LAB_PREFIX_ENV) or "pyvs"), type=_prefix,
        help=f"name prefix of the lab's namespaces and links (default: ${LAB_PREFIX_ENV}, else pyvs)",
    )  # fmt: skip

    lab_help = "the LVS-DR cluster in network namespaces"
    lab_parser = commands.add_parser("lab", help=lab_help, description=lab_help)
    lab_commands = lab_parser.add_subparsers(
        help="what to do with the lab", dest="command_name", required=True, metavar="{up,down,status,exec,demo}"
    )

    def add(group: Any, name: str, handler: str, help_text: str, *parents: Parser) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = group.add_parser(
            name, help=help_text, description=help_text, parents=list(parents)
        )
        sub.set_defaults(handler=handler)
        return sub

    up = add(lab_commands, "up", "lab:cmd_up",
             "build the lab, or repair it (namespaces, links, reals, servers, XDP, the tutorial's rules) and say "
             "what was repaired", prefix)  # fmt: skip
    up.add_argument("--keep-on-failure", action="store_true", help="leave a half-built lab for inspection")
    ipv6_help = ("dual-stack: IPv6 addresses (2001:db8::/32) and routes on every node, the gateway's DNAT and "
                 "forwarding for IPv6, the reals' IPv6 VIP, the tutorial's rules for it (kept for the lab's later "
                 "commands)")
    up.add_argument("--ipv6", action="store_true", help=ipv6_help)
    up.add_argument("--directors", type=_directors, default=None, metavar="N",
                    help=f"1 to {MAX_DIRECTORS} directors (default 1: one director reached by ARP); 2 or more stand "
                         "behind a BGP router that spreads the flows over them (ECMP), each running `pyvs director "
                         "run` with mh, sloppy TCP and a [bgp] session to the router (with --ipv6 the IPv6 VIP is "
                         "routed to them too); the lab's other commands follow the number it was brought up with")
    up.add_argument("--vrrp", action="store_true",
                    help="active/backup: two directors on the reals' segment, each running keepalived (VRRP only: "
                         "the VIP is its virtual_ipaddress) and `pyvs director run` with [vrrp], which serves the VIP "
                         "only where keepalived put it; the lab's other commands follow it")
    up.add_argument("--method", choices=METHODS, default=None,
                    help="how the director forwards: dr (direct routing, the default), nat (masquerading, -m: the "
                         "reals' default route is the director, they hold no VIP, rs2 serves on port 8080; IPv4, one "
                         "director) or tun (tunnelling, -i: every real decapsulates, and rs2 is routed on "
                         "198.18.6.0/24 behind a router); the lab's other commands follow the method it was brought "
                         "up with")
    up.add_argument("--tun-type", choices=("ipip", "gue", "gre"), default=None,
                    help="with --method tun: the tunnel (default ipip; gue on UDP port 6080)")
    add(lab_commands, "down", "lab:cmd_down", "remove the lab's namespaces, links, processes and pins", prefix)
    status = add(lab_commands, "status", "lab:cmd_status",
                 "check what the demo needs (nodes, servers, reals, XDP, the tutorial's rules); exit 1 if anything "
                 "is wrong", prefix)  # fmt: skip
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    exec_ = add(
        lab_commands, "exec", "lab:cmd_exec", "run a command inside a lab node (setns only: /sys/fs/bpf stays visible)",
        prefix,
    )  # fmt: skip
    exec_.add_argument("node", choices=NODE_NAMES, help="the node to enter")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="-- followed by the command and its arguments")
    demo = add(lab_commands, "demo", "lab:cmd_demo",
               "bring up the lab, send requests from the client and show who answered and the director's counters",
               prefix)  # fmt: skip
    demo.add_argument("--requests", type=int, default=10, help="HTTP requests to send (default: 10)")
    demo.add_argument("--ipv6", action="store_true", help=ipv6_help)

    director_help = "the XDP data plane of this host (its current netns)"
    director_parser = commands.add_parser("director", help=director_help, description=director_help)
    director_commands = director_parser.add_subparsers(
        help="what to do with the data plane", dest="command_name", required=True,
        metavar="{attach,detach,status,resolve,migrate,run,reload,import-keepalived}",
    )  # fmt: skip
    pins = Parser(add_help=False)
    pins.add_argument("--pin-dir", default=None,
                      help="bpffs directory of the maps (default: $PYVS_PIN_DIR, else "
                           "/sys/fs/bpf/pyvs/<netns name or 'default'>)")
    dev = Parser(add_help=False)
    dev.add_argument("--dev", required=True, help="the director's NIC facing the VIP's segment")
    attach = add(director_commands, "attach", "director:cmd_attach",
                 "load the XDP program on a NIC (without --dev: on every interface that is UP with an IPv4 "
                 "address, or a global IPv6 one for IPv6 services, as pyvsadm does by itself); pyvsadm rules then "
                 "apply to its traffic", pins)  # fmt: skip
    attach.add_argument("--dev", default=None,
                        help="the director's NIC facing the VIP's segment (default: every interface that is UP, not "
                             "loopback, with an IPv4 address (or a global IPv6 one, for IPv6 services), and runs no "
                             "other XDP program; no VIP takeover then)")
    attach.add_argument("--mode", choices=("native", "generic"), default=None,
                        help="XDP mode: native (driver) or generic (any device, slower); default native with "
                             "--dev, generic without")
    attach.add_argument("--conn-table-size", type=int, default=None,
                        help="entries of the connection table when the maps are created (1024 to 67108864, "
                             "default 262144); full, it evicts the least recently used entry. Half-open TCP entries "
                             "(SYN seen, handshake not complete) have a table of their own, a quarter of that size")
    attach.add_argument("--expire-nodest-conn", choices=("on", "off"), default=None,
                        help="on: a connection whose real was deleted is expired at its next packet "
                             "(IPVS's expire_nodest_conn); off (default): its packets are dropped until it expires")
    attach.add_argument("--sloppy-tcp", choices=("on", "off"), default=None,
                        help="on: any TCP packet but RST without a connection starts one (IPVS's sloppy_tcp; for "
                             "mh/sh/dh behind several directors); off (default): only a SYN does, other misses "
                             "go to this host's kernel")
    attach.add_argument("--vip", action="append", type=address_option, default=[],
                        help="a VIP to take over (repeatable; default: the VIPs of the rules): added to the NIC "
                             "when missing (IPv4 /32; IPv6 /128, no DAD, never a source address), then announced "
                             "(gratuitous ARP; IPv6: unsolicited neighbour advertisement)")
    attach.add_argument("--no-announce", action="store_true", help="attach only: no VIP takeover")
    attach.add_argument("--force", action="store_true",
                        help="replace an XDP program on the NIC that is not pyvs's (default: refuse)")
    detach = add(director_commands, "detach", "director:cmd_detach",
                 "remove the XDP program from a NIC (with --vip: only withdraw those VIPs, XDP stays)", pins, dev)
    detach.add_argument("--remove-rules", action="store_true", help="also remove the pinned maps (rules, counters)")
    detach.add_argument("--vip", action="append", type=address_option, default=[],
                        help="withdraw only these VIPs and keep XDP attached (without --vip: detach XDP and withdraw "
                             "every VIP that attach added)")
    detach.add_argument("--force", action="store_true",
                        help="remove the NIC's XDP program even when it is not pyvs's (default: leave it)")
    add(director_commands, "status", "director:cmd_status", "show reals' MACs and the data plane's counters", pins)
    add(director_commands, "resolve", "director:cmd_resolve", "resolve the real servers' MACs again", pins)
    migrate = add(director_commands, "migrate", "director:cmd_migrate",
                  "recreate pins made by another pyvs version with this version's layout, keeping the rules "
                  "(read from the old maps where they still read, else from a saved `pyvsadm -S -n`)", pins)
    migrate.add_argument("--from", dest="saved", metavar="FILE", default=None,
                         help="restore the rules from this file (the old version's `pyvsadm -S -n` output)")
    run = add(director_commands, "run", "director:cmd_run",
              "run the director daemon: apply the config, health-check every real, keep the data plane in step "
              "(SIGHUP reloads)", pins)  # fmt: skip
    run.add_argument("--config", required=True, help="the daemon's TOML config file")
    run.add_argument("--validate", action="store_true",
                     help="only check the config file (and that its programs and NIC exist here) and exit")
    reload = add(director_commands, "reload", "director:cmd_reload",
                 "check the running daemon's config file, then make the daemon apply what changed", pins)
    reload.add_argument("--config", help="the config file (must be the one the daemon runs with; default: it)")
    keepalived = add(director_commands, "import-keepalived", "director:cmd_import_keepalived",
                     "convert keepalived.conf's virtual_server blocks to a pyvs config (TOML on stdout, "
                     "what cannot be carried over on stderr)")  # fmt: skip
    keepalived.add_argument("file", help="the keepalived.conf to convert")

    status_help = "live table of the director daemon: services, reals, health, rates, drops"
    status_parser = add(commands, "status", "status:cmd_status", status_help, pins)
    status_parser.add_argument("--url", help="the daemon's status address, HOST:PORT or http://HOST:PORT (default: "
                                             f"from its run file, else {DEFAULT_LISTEN})")
    status_parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    status_parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    status_parser.add_argument("--json", action="store_true", help="print the daemon's JSON status once")

    rs_help = "configure this host (its current netns) as an LVS-DR real server"
    rs_parser = commands.add_parser("realserver", help=rs_help, description=rs_help)
    rs_commands = rs_parser.add_subparsers(
        help="what to do with this real server", dest="command_name", required=True, metavar="{up,down,check}"
    )
    vip = Parser(add_help=False)
    vip.add_argument("--vip", required=True, action="append",
                     help="a virtual IP address served by the director, IPv4 or IPv6 (repeatable: a dual-stack real "
                          "gives one of each)")
    vip.add_argument("--dev", help="the NIC facing the director (default: that of the default route)")
    rs_up = add(rs_commands, "up", "realserver:cmd_up",
                "put each VIP on lo (IPv4 /32; IPv6 /128, no DAD, never a source address) and keep this host from "
                "answering ARP (IPv4) or neighbour solicitations (IPv6, an nftables rule) for it", vip)
    rs_up.add_argument(
        "--method", choices=RS_METHODS, default="sysctl",
        help="IPv4's ARP suppression: sysctl (arp_ignore/arp_announce, default) or arptables rules",
    )  # fmt: skip
    rs_up.add_argument("--tunnel", choices=("ipip", "gue", "gre"),
                        help="the director tunnels to this real (pyvsadm -i --tun-type): decapsulate its packets")
    rs_up.add_argument("--tun-port", type=int, default=0, help="GUE: the UDP port (the director's --tun-port)")
    rs_up.add_argument("--decap", choices=("auto", "xdp", "kernel"), default="auto",
                        help="who decapsulates: the kernel's ipip/fou/gre modules, or pyvs's XDP program where the "
                             "kernel has none (auto, the default)")
    rs_down = add(rs_commands, "down", "realserver:cmd_down", "undo exactly what 'pyvs realserver up' changed")
    rs_down.add_argument("--vip", action="append", default=[],
                         help="undo only this VIP's address and rules (repeatable; the sysctls go back with the last "
                              "VIP; default: everything)")
    rs_check = add(rs_commands, "check", "realserver:cmd_check",
                   "verify the real-server settings (IPv6: with a neighbour solicitation handed to the NIC; a tunnel: "
                   "who decapsulates); exit 1 if any is wrong", vip)
    rs_check.add_argument("--tunnel", choices=("ipip", "gue", "gre"), help="the director tunnels to this real")
    doctor_help = ("verify the cluster from the director, on the wire (DR reals: the VIP path; NAT reals: their "
                   "port and the route back through the director); a table of findings with the fix")
    doctor_parser = add(commands, "doctor", "arp:cmd_doctor", doctor_help, pins)
    doctor_parser.add_argument("--dev", help="the director's NIC facing the reals (default: the one with the VIP)")
    doctor_parser.add_argument("--client-ip", type=address_option, action="append", default=[],
                               help="source of the return-path probe, an address the reals reach through their "
                                    "router, or a NAT real through the director (repeatable, one per family; "
                                    f"default {DEFAULT_CLIENT_IP} and {DEFAULT_CLIENT_IP6})")
    doctor_parser.add_argument("--wait", type=float, default=PROBE_WAIT,
                               help=f"seconds to wait for the probes' answers (default {PROBE_WAIT:g})")
    doctor_parser.add_argument("--peer", type=listen_address, action="append", default=[], metavar="HOST:PORT",
                               help="another director's status address (its daemon's status_listen; repeatable): "
                                    "its fingerprint of rules and tables must be this director's, else the "
                                    "directors that differ are named")
    doctor_parser.add_argument("--json", action="store_true", help="print the findings as JSON")

    watch_help = "ARP guard of the director's segment: VIP conflicts, MAC changes, floods; follows the reals' MACs"
    watch_parser = add(commands, "arpwatch", "arp:cmd_arpwatch", watch_help, pins)
    watch_parser.add_argument("--dev", required=True, help="the director's NIC on the segment")
    watch_parser.add_argument("--vip", action="append", type=IPv4Address, default=[],
                              help="a VIP to guard (repeatable; default: the VIPs of the rules)")
    watch_parser.add_argument("--defend", action="store_true",
                              help="re-announce the VIPs with gratuitous ARP when a VIP, the gateway or a pinned "
                                   "address is contested")
    watch_parser.add_argument("--pin", action="append", type=pin_option, default=[], metavar="IP[=MAC]",
                              help="pin an address (e.g. the gateway, a real) to a MAC (default: its current one) "
                                   "as a permanent neighbour entry while watching; claims by other MACs are reported")
    watch_parser.add_argument("--json", action="store_true", help="one JSON object per event")
    watch_parser.add_argument("--metrics", type=listen_address, metavar="HOST:PORT",
                              help="serve the guard's counters as Prometheus metrics at http://HOST:PORT/metrics "
                                   "(pyvs_arp_frames_total, pyvs_arp_events_total{event}, pyvs_arp_actions_total)")
    watch_parser.add_argument("--probe-interval", type=float, default=0.5,
                              help="seconds between ARP probes of the VIPs and reals (0: listen only; default 0.5)")
    watch_parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until "
                                                             "interrupted)")
    watch_parser.add_argument("--flip-window", type=float, default=10.0, help="flip-flop window, seconds (default 10)")
    watch_parser.add_argument("--flip-count", type=int, default=3,
                              help="MAC changes within the window that make a flip-flop (default 3)")
    watch_parser.add_argument("--follow-real-macs", action="store_true",
                              help="let the data plane follow a real's new MAC once verified (unicast ARP probes: the "
                                   "new MAC answers, the old one is silent); default: report the claim only")
    watch_parser.add_argument("--verify-time", type=float, default=0.5,
                              help="seconds the old and new MAC have to answer a verification (default 0.5)")
    watch_parser.add_argument("--garp-limit", type=int, default=10,
                              help="gratuitous ARPs per second from one address before a flood is reported "
                                   "(default 10)")
    return parser


def _quiet_stdout() -> None:
    """stdout's reader is gone: point stdout at /dev/null so the interpreter's last flush says nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="pyvs: %(message)s", stream=sys.stderr)
    logging.getLogger("pyvs").setLevel(logging.DEBUG if args.verbose else logging.WARNING)  # not pyroute2's
    try:
        result: int = _handler(args.handler)(args)
        sys.stdout.flush()
        return result
    except BrokenPipeError:
        _quiet_stdout()
        return EXIT_BROKEN_PIPE
    except UsageError as exc:
        print(f"pyvs: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - one line for every failure; -v shows where
        if args.verbose:
            logging.getLogger("pyvs").exception("pyvs %s failed", args.area)
        print(f"pyvs: {exc or type(exc).__name__}", file=sys.stderr)
        return EXIT_FAILURE
