"""`pyvs`: the lab and real-server commands. Thin: parse, call the layer below, print."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import urllib.error
from collections.abc import Callable, Sequence
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, NoReturn

from pyroute2.netlink.exceptions import NetlinkError

from pyvs import netns, realserver
from pyvs.arp import doctor, takeover
from pyvs.arp.packets import interface_mac, normalize_mac
from pyvs.arp.watch import Event, GuardConfig, Watcher, open_pinned, pinned_neighbours, serve_metrics
from pyvs.dataplane import Dataplane, DataplaneError, open_dataplane, remove_pins
from pyvs.dataplane.neighbours import ZERO_MAC
from pyvs.dataplane.pins import default_pin_dir
from pyvs.director.config import DEFAULT_LISTEN, load_config
from pyvs.director.daemon import DirectorError, daemon_alive, read_run_file, run_daemon, run_file, service_owners
from pyvs.director.keepalived import import_keepalived
from pyvs.director.status import fetch_status, watch
from pyvs.lab import lab
from pyvs.lab.demo import run_demo
from pyvs.lab.topology import Topology, check_prefix, default_topology
from pyvs.model import ModelError, parse_listen

EXIT_FAILURE = 1
EXIT_USAGE = 2
RELOAD_WAIT = 10.0  # seconds for the daemon to confirm a reload
NODE_NAMES = tuple(node.name for node in default_topology().nodes)
EXPECTED_ERRORS = (
    lab.LabError, realserver.RealServerError, netns.NetnsError, DataplaneError, DirectorError, NetlinkError, OSError,
    ValueError,
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
    with open_dataplane(args.pin_dir, conn_table_size=args.conn_table_size) as dp:
        if args.expire_nodest_conn is not None:
            dp.set_expire_nodest_conn(args.expire_nodest_conn == "on")
        dp.attach(args.dev, args.mode)
        print(f"XDP ({args.mode}) attached to {args.dev}; maps pinned at {dp.pin_dir}")
        vips = args.vip or sorted({key.vip for key in dp.read_rules().services})
    if not args.no_announce:  # VIP takeover: the gateway and switches learn this director's MAC now
        _print_actions(takeover.announce(vips, args.dev), "no VIP to announce (no --vip and no services yet)")
    return 0


def cmd_director_detach(args: argparse.Namespace) -> int:
    Dataplane.detach(args.dev)
    for action in takeover.withdraw(args.vip or None, args.dev):
        print(action)
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
        usage = dp.conn_table_usage()
        owners = service_owners(dp.pin_dir, list(dp.read_rules().services))
        print(f"maps: {dp.pin_dir}")
        print(f"connection table: {usage['entries']} of {usage['size']} entries, "
              f"{usage['evicted']} evicted by the LRU when full")
    rows = [["service", "real", "mac", "via ifindex"]]
    rows += [[f"{key.proto.label} {key}", f"{rip}:{port}", hop.dmac if hop.dmac != ZERO_MAC else "UNRESOLVED",
              str(hop.ifindex)] for (key, (rip, port)), hop in sorted(hops.items())]
    _print_table(rows)
    _print_table([["service", "owner"], *([f"{key.proto.label} {key}", owner] for key, owner in owners)])
    _print_table([["counter", "value"], *([name, str(value)] for name, value in counters.items())])
    return 0


def cmd_director_resolve(args: argparse.Namespace) -> int:
    with open_dataplane(args.pin_dir) as dp:
        print(f"{dp.refresh_macs()} real server MAC(s) updated")
    return 0


def _daemon_pin_dir(args: argparse.Namespace) -> Path:
    if args.pin_dir:
        return Path(args.pin_dir)
    return default_pin_dir()


def cmd_director_run(args: argparse.Namespace) -> int:
    if args.validate:
        config = load_config(args.config)
        print(f"{config.path}: valid ({len(config.services)} services, "
              f"{sum(len(s.reals) for s in config.services)} reals)")
        return 0
    logging.getLogger("pyvs").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for handler in logging.getLogger().handlers:  # one structured line per event, with its time
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    run_daemon(args.config, args.pin_dir)
    return 0


def cmd_director_reload(args: argparse.Namespace) -> int:
    pin_dir = _daemon_pin_dir(args)
    info = read_run_file(pin_dir)
    if info is None or not daemon_alive(info):
        raise UsageError(f"no director daemon is running for {pin_dir} (no live pid in {run_file(pin_dir)})")
    if args.config and Path(args.config).resolve() != Path(info["config"]).resolve():
        raise UsageError(f"the daemon (pid {info['pid']}) runs with {info['config']}, not {args.config}: "
                         "edit that file, or restart the daemon with the other one")
    load_config(info["config"])  # an invalid file is refused here, with file and line, before any signal
    before = info.get("generation")
    os.kill(int(info["pid"]), signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_WAIT
    while time.monotonic() < deadline:
        now = read_run_file(pin_dir) or {}
        if now.get("generation") != before or now.get("last_reload", {}).get("at") != info["last_reload"]["at"]:
            if now["last_reload"]["ok"]:
                print(f"director (pid {info['pid']}) reloaded {info['config']}: generation {now['generation']}")
                return 0
            print(f"pyvs: reload failed: {now['last_reload']['error']}", file=sys.stderr)
            return EXIT_FAILURE
        time.sleep(0.05)
    print(f"pyvs: the daemon (pid {info['pid']}) did not confirm the reload within {RELOAD_WAIT:g}s",
          file=sys.stderr)
    return EXIT_FAILURE


def cmd_director_import_keepalived(args: argparse.Namespace) -> int:
    try:
        text = Path(args.file).read_text()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    toml_text, warnings = import_keepalived(text, args.file)
    for warning in warnings:
        print(f"pyvs: not carried over: {warning}", file=sys.stderr)
    print(toml_text, end="")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    url = args.url
    if url is None:
        info = read_run_file(_daemon_pin_dir(args))
        url = (info or {}).get("status_url") or f"http://{DEFAULT_LISTEN}"
    if args.json:
        print(json.dumps(fetch_status(url), indent=2))
        return 0
    clear = args.watch and sys.stdout.isatty()

    def show(lines: list[str], again: bool) -> None:
        if clear:
            print("\033[H\033[2J", end="")
        elif again:
            print()
        print("\n".join(lines), flush=True)

    try:
        watch(url, args.interval, None if args.watch else 1, show)
    except urllib.error.URLError as exc:
        raise UsageError(f"no director daemon answers at {url}: {exc.reason}") from None
    return 0


# -- ARP: doctor, arpwatch --------------------------------------------------------------------


def cmd_doctor(args: argparse.Namespace) -> int:
    try:
        findings = doctor.run(args.dev, args.pin_dir, args.client_ip, args.wait)
    except doctor.DoctorError as exc:
        raise UsageError(str(exc)) from None
    bad = [f for f in findings if f.status is not doctor.Status.OK]
    if args.json:
        print(json.dumps([{**f.__dict__, "status": str(f.status)} for f in findings], indent=2))
    else:
        _print_table([["status", "check", "subject", "finding", "fix"],
                      *([str(f.status), f.check, f.subject, f.detail, f.fix] for f in findings)])
        failed = sum(f.status is doctor.Status.FAIL for f in bad)
        print(f"{len(findings)} checks: {len(findings) - len(bad)} ok, {failed} failed, {len(bad) - failed} warnings")
    return EXIT_FAILURE if bad else 0


class _Stopped(Exception):
    """SIGTERM: stop watching, undo the pins, exit 0."""


def _pin(value: str) -> tuple[IPv4Address, str | None]:
    address, _, mac = value.partition("=")
    try:
        return IPv4Address(address), (normalize_mac(mac) if mac else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--pin {value!r}: {exc} (use IP or IP=MAC)") from None


def _listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT for 127.0.0.1) for a metrics listener."""
    try:
        return parse_listen(value)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc} (use HOST:PORT)") from None


def cmd_arpwatch(args: argparse.Namespace) -> int:
    def emit(event: Event) -> None:
        print(event.json() if args.json else event.text(), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    interface_mac(args.dev)  # a missing NIC is refused before anything is set up
    path, dp = open_pinned(args.pin_dir)
    if dp is None and not args.vip:
        raise UsageError(f"no complete data plane pinned at {path}: name the VIPs to guard with --vip")
    signal.signal(signal.SIGTERM, stop)
    config = GuardConfig(args.flip_window, args.flip_count, args.garp_limit)
    try:
        with pinned_neighbours(args.dev, dict(args.pin)) as pins:
            watcher = Watcher(args.dev, dp, emit, set(args.vip) or None, args.defend, pins, args.probe_interval,
                              config)
            server = serve_metrics(watcher.guard, *args.metrics) if args.metrics else None
            try:
                watcher.run(args.duration)
            finally:
                if server is not None:
                    server.shutdown()
    except (_Stopped, KeyboardInterrupt):
        pass
    finally:
        if dp is not None:
            dp.close()
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
        prog="pyvs",
        description="LVS Direct Routing with an XDP data plane: the lab, the director (data plane and daemon), "
        "real servers, ARP checks."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log what is being done to stderr")
    commands = parser.add_subparsers(
        dest="area", required=True, metavar="{lab,director,realserver,status,doctor,arpwatch}", help="what to act on"
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
        metavar="{attach,detach,status,resolve,run,reload,import-keepalived}",
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
    attach.add_argument("--conn-table-size", type=int, default=None,
                        help="entries of the connection table when the maps are created (default 262144); "
                             "full, it evicts the least recently used entry")
    attach.add_argument("--expire-nodest-conn", choices=("on", "off"), default=None,
                        help="on: a connection whose real was deleted is expired at its next packet "
                             "(IPVS's expire_nodest_conn); off (default): its packets are dropped until it expires")
    attach.add_argument("--vip", action="append", type=IPv4Address, default=[],
                        help="a VIP to take over (repeatable; default: the VIPs of the rules): added to the NIC "
                             "as /32 when missing, then announced with gratuitous ARP")
    attach.add_argument("--no-announce", action="store_true", help="attach only: no VIP takeover")
    detach = add(director_commands, "detach", cmd_director_detach, "remove the XDP program from a NIC", pins, dev)
    detach.add_argument("--remove-rules", action="store_true", help="also remove the pinned maps (rules, counters)")
    detach.add_argument("--vip", action="append", type=IPv4Address, default=[],
                        help="withdraw only these VIPs (default: every VIP that attach added to the NIC)")
    add(director_commands, "status", cmd_director_status, "show reals' MACs and the data plane's counters", pins)
    add(director_commands, "resolve", cmd_director_resolve, "resolve the real servers' MACs again", pins)
    run = add(director_commands, "run", cmd_director_run,
              "run the director daemon: apply the config, health-check every real, keep the data plane in step "
              "(SIGHUP reloads)", pins)  # fmt: skip
    run.add_argument("--config", required=True, help="the daemon's TOML config file")
    run.add_argument("--validate", action="store_true", help="only check the config file and exit")
    reload = add(director_commands, "reload", cmd_director_reload,
                 "check the running daemon's config file, then make the daemon apply what changed", pins)
    reload.add_argument("--config", help="the config file (must be the one the daemon runs with; default: it)")
    keepalived = add(director_commands, "import-keepalived", cmd_director_import_keepalived,
                     "convert keepalived.conf's virtual_server blocks to a pyvs config (TOML on stdout, "
                     "what cannot be carried over on stderr)")  # fmt: skip
    keepalived.add_argument("file", help="the keepalived.conf to convert")

    status_help = "live table of the director daemon: services, reals, health, rates, drops"
    status_parser = add(commands, "status", cmd_status, status_help, pins)
    status_parser.add_argument("--url", help="the daemon's status address (default: from its run file, "
                                             f"else http://{DEFAULT_LISTEN})")
    status_parser.add_argument("--interval", type=float, default=1.0, help="seconds between samples (default 1)")
    status_parser.add_argument("--watch", action="store_true", help="refresh until interrupted")
    status_parser.add_argument("--json", action="store_true", help="print the daemon's JSON status once")

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
    doctor_help = "verify the DR cluster from the director, on the wire; a table of findings with the fix"
    doctor_parser = add(commands, "doctor", cmd_doctor, doctor_help, pins)
    doctor_parser.add_argument("--dev", help="the director's NIC facing the reals (default: the one with the VIP)")
    doctor_parser.add_argument("--client-ip", type=IPv4Address, default=doctor.DEFAULT_CLIENT_IP,
                               help="source of the return-path probe, an address the reals reach through their "
                                    f"router (default {doctor.DEFAULT_CLIENT_IP})")
    doctor_parser.add_argument("--wait", type=float, default=doctor.PROBE_WAIT,
                               help=f"seconds to wait for the probes' answers (default {doctor.PROBE_WAIT:g})")
    doctor_parser.add_argument("--json", action="store_true", help="print the findings as JSON")

    watch_help = "ARP guard of the director's segment: VIP conflicts, MAC changes, floods; follows the reals' MACs"
    watch_parser = add(commands, "arpwatch", cmd_arpwatch, watch_help, pins)
    watch_parser.add_argument("--dev", required=True, help="the director's NIC on the segment")
    watch_parser.add_argument("--vip", action="append", type=IPv4Address, default=[],
                              help="a VIP to guard (repeatable; default: the VIPs of the rules)")
    watch_parser.add_argument("--defend", action="store_true",
                              help="re-announce the VIPs with gratuitous ARP when a VIP, the gateway or a pinned "
                                   "address is contested")
    watch_parser.add_argument("--pin", action="append", type=_pin, default=[], metavar="IP[=MAC]",
                              help="pin an address (e.g. the gateway, a real) to a MAC (default: its current one) "
                                   "as a permanent neighbour entry while watching; claims by other MACs are reported")
    watch_parser.add_argument("--json", action="store_true", help="one JSON object per event")
    watch_parser.add_argument("--metrics", type=_listen_address, metavar="HOST:PORT",
                              help="serve the guard's counters as Prometheus metrics at http://HOST:PORT/metrics "
                                   "(pyvs_arp_frames_total, pyvs_arp_events_total{event}, pyvs_arp_actions_total)")
    watch_parser.add_argument("--probe-interval", type=float, default=0.5,
                              help="seconds between ARP probes of the VIPs and reals (0: listen only; default 0.5)")
    watch_parser.add_argument("--duration", type=float, help="stop after this many seconds (default: run until "
                                                             "interrupted)")
    watch_parser.add_argument("--flip-window", type=float, default=10.0, help="flip-flop window, seconds (default 10)")
    watch_parser.add_argument("--flip-count", type=int, default=3,
                              help="MAC changes within the window that make a flip-flop (default 3)")
    watch_parser.add_argument("--garp-limit", type=int, default=10,
                              help="gratuitous ARPs per second from one address before a flood is reported "
                                   "(default 10)")
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
