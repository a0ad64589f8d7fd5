"""`pyvs director ...`: the XDP data plane of this host and the daemon that drives it."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path

from pyvs.cli.common import EXIT_FAILURE, CommandFailed, UsageError, pin_dir_arg, print_actions, print_table
from pyvs.director.config import DirectorConfig, load_config
from pyvs.director.runfile import daemon_alive, read_run_file, run_file
from pyvs.model import address_order, endpoint_text

RELOAD_WAIT = 10.0  # seconds for the daemon to confirm a reload


def require_nic(dev: str) -> str:
    """`dev` if this network namespace has it; a one-line error otherwise."""
    try:
        socket.if_nametoindex(dev)
    except OSError:
        raise CommandFailed(f"no network interface {dev!r} in this network namespace "
                            "(`ip link` lists them)") from None
    return dev


def cmd_attach(args: argparse.Namespace) -> int:
    from pyvs.arp import takeover
    from pyvs.dataplane import open_dataplane
    from pyvs.dataplane.attachment import attach_defaults, native_veth_warnings, note_explicit

    if args.dev is not None:
        require_nic(args.dev)
    with open_dataplane(pin_dir_arg(args), conn_table_size=args.conn_table_size) as dp:
        if args.expire_nodest_conn is not None:
            dp.set_expire_nodest_conn(args.expire_nodest_conn == "on")
        if args.sloppy_tcp is not None:
            dp.set_sloppy_tcp(args.sloppy_tcp == "on")
        if args.dev is None:  # the default interfaces, as pyvsadm attaches by itself, but an explicit choice
            report = attach_defaults(dp, args.mode or "generic", only_if_none=False, record_as_auto=False)
            for ifname in report.attached:
                print(f"XDP ({report.mode}) attached to {ifname}; maps pinned at {dp.pin_dir}")
            for ifname, why in sorted(report.skipped.items()):
                print(f"{ifname} left alone: {why}", file=sys.stderr)
            if not report.attached:
                print("no interface without an XDP program is UP with an IPv4 address (or a global IPv6 one, for "
                      "IPv6 services): nothing attached")
            for ifname in report.attached:
                note_explicit(dp.pin_dir, ifname)
            return 0
        mode = args.mode or "native"
        dp.attach(args.dev, mode, force=args.force)
        note_explicit(dp.pin_dir, args.dev)
        print(f"XDP ({mode}) attached to {args.dev}; maps pinned at {dp.pin_dir}")
        for warning in native_veth_warnings():
            if warning.startswith(f"{args.dev}:"):
                print(f"pyvs: note: {warning}", file=sys.stderr)
        vips = args.vip or sorted({key.vip for key in dp.read_rules().services if not key.is_fwmark}, key=address_order)
    if not args.no_announce:  # VIP takeover: the gateway and switches learn this director's MAC now
        print_actions(takeover.announce(vips, args.dev), "no VIP to announce (no --vip and no services yet)")
    return 0


def cmd_detach(args: argparse.Namespace) -> int:
    from pyvs.arp import takeover
    from pyvs.dataplane import Dataplane, open_dataplane, remove_pins

    require_nic(args.dev)
    if args.vip and not args.remove_rules:  # withdraw these VIPs only: forwarding goes on for the others
        print_actions(takeover.withdraw(args.vip, args.dev), "none of these VIPs was added by attach")
        return 0
    other = Dataplane.detach(args.dev, force=args.force)
    from pyvs.dataplane.attachment import note_explicit
    from pyvs.pindir import existing_pin_dir

    found = existing_pin_dir(pin_dir_arg(args))
    if found is not None:
        note_explicit(found, args.dev)
    if other is not None:
        raise CommandFailed(f"{args.dev} runs the XDP program {other}, not pyvs's: left attached "
                            "(--force removes it)")
    for action in takeover.withdraw(args.vip or None, args.dev):
        print(action)
    if args.remove_rules:
        with open_dataplane(pin_dir_arg(args)) as dp:
            pin_dir = dp.pin_dir
        remove_pins(pin_dir)
    print(f"XDP detached from {args.dev}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from pyvs.dataplane import open_dataplane
    from pyvs.dataplane.neighbours import ZERO_MAC
    from pyvs.pindir import existing_pin_dir

    pin_dir = existing_pin_dir(args.pin_dir)
    if pin_dir is None:
        raise CommandFailed("no data plane here yet: `pyvs director attach --dev NIC` creates one "
                            "(or --pin-dir / PYVS_PIN_DIR names another)")
    from pyvs.director.daemon import service_owners

    with open_dataplane(pin_dir) as dp:
        counters = dp.counters()
        hops = dp.real_next_hops()
        usage = dp.conn_table_usage()
        switches = dp.switches()
        owners = service_owners(dp.pin_dir, list(dp.read_rules().services))
        ipv6 = dp.has_ipv6_services()
        print(f"maps: {dp.pin_dir}")
        print(f"rules and tables: fingerprint {dp.fingerprint()} (the same on directors with the same rules)")
        for line in table_usage_lines(usage):
            print(line)
        print("switches: " + ", ".join(f"{name} {'on' if on else 'off'}" for name, on in switches.items()))
        standby = sorted(dp.standby_vips(), key=address_order)
        if standby:
            print(f"standby (not served here, a VRRP backup's): {', '.join(map(str, standby))}")
    from pyvs.dataplane.attachment import attachment_rows

    # native mode on a veth: `attach` and `pyvs doctor` warn
    print_table(attachment_rows(dp.pin_dir, ipv6))
    rows = [["service", "real", "mac", "via ifindex"]]
    rows += [[key.title, endpoint_text(rip, port), hop.dmac if hop.dmac != ZERO_MAC else "UNRESOLVED",
              str(hop.ifindex)] for (key, (rip, port)), hop in sorted(hops.items())]
    print_table(rows)
    print_table([["service", "owner"], *([key.title, owner] for key, owner in owners)])
    print_table([["counter", "value"], *([name, str(value)] for name, value in counters.items())])
    bgp_lines(dp.pin_dir)
    return 0


def bgp_lines(pin_dir: Path) -> None:
    """The BGP speaker of this data plane (the daemon's [bgp]), asked through its control socket: its sessions
    and the VIPs it announces. Nothing when none runs."""
    from pyvs.director import bgp

    speaker = bgp.Speaker(bgp.run_dir(pin_dir))
    pid = speaker.pid
    if pid is None:
        print("bgp: no speaker runs for this data plane (no [bgp] in the daemon's config, or no daemon)")
        return
    try:
        peers, announced = speaker.peers(), speaker.announced()
    except bgp.BgpError as exc:
        print(f"bgp: BIRD (pid {pid}) does not answer: {exc}")
        return
    print(f"bgp: BIRD pid {pid} ({speaker.ctl}); announced: {', '.join(announced) or 'nothing (all withdrawn)'}")
    rows = [["peer", "session", "since", "routes out", "last error"]]
    rows += [[p.address, p.state, time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p.since)) if p.since else "-",
              str(p.exported), p.last_error or "-"] for p in peers]
    print_table(rows)


def table_usage_lines(usage: dict[str, int | float]) -> list[str]:
    """The connection tables as `pyvs director status` prints them, with a warning when nearly full."""
    lines = [f"connection table: {usage['entries']} of {usage['size']} entries, "
             f"{usage['evicted']} evicted by the LRU when full",
             f"half-open table: {usage['half_open']} of {usage['half_open_size']} entries, "
             f"{usage['half_open_evicted']} evicted (SYNs whose handshake did not complete in time)",
             f"new connections: {usage['new_per_second']}/s over the last sweep pass"]
    if usage.get("entries6") or usage.get("half_open6"):  # IPv6's tables, of the same sizes
        lines.insert(2, f"IPv6 tables: {usage['entries6']} connections, {usage['half_open6']} half-open")
    if usage["nearly_full"]:
        fullest = max(usage["entries"], usage.get("entries6", 0))
        lines.append(f"WARNING: the connection table is {fullest / usage['size']:.0%} full; when full, "
                     "the LRU evicts established connections: recreate the data plane with a larger "
                     "--conn-table-size")
    return lines


def cmd_migrate(args: argparse.Namespace) -> int:
    from pyvs.admin.commands import CommandError, restore
    from pyvs.admin.options import UsageError as RulesError
    from pyvs.dataplane import migrate
    from pyvs.model import Rules

    saved = None
    if args.saved:
        try:
            saved = restore(Rules(), Path(args.saved).read_text())
        except OSError as exc:
            raise UsageError(f"cannot read {args.saved}: {exc.strerror}") from None
        except (CommandError, RulesError) as exc:
            raise UsageError(f"{args.saved}: the saved rules do not restore: {exc}") from None
    rules = migrate(pin_dir_arg(args), saved)
    reals = sum(len(svc.reals) for svc in rules.services.values())
    print(f"data plane recreated with this version's layout: {len(rules.services)} service(s), {reals} real(s) "
          f"restored{' from ' + args.saved if args.saved else ''}")
    return 0


def cmd_resolve(args: argparse.Namespace) -> int:
    from pyvs.dataplane import open_dataplane

    with open_dataplane(pin_dir_arg(args)) as dp:
        print(f"{dp.refresh_macs()} real server MAC(s) updated")
    return 0


def runnable_problems(config: DirectorConfig) -> list[str]:
    """What keeps a valid file from working on this host: programs that are not there, a missing NIC."""
    problems: list[str] = []

    def program(argv: tuple[str, ...], what: str) -> None:
        if argv and shutil.which(argv[0]) is None:
            problems.append(f"{what}: {argv[0]} is not an executable here")

    program(config.notify, "notify")
    for svc in config.services:
        for real in svc.reals:
            if real.check.type == "command":
                program(real.check.command, f"service {svc.key.proto.label.lower()}/{svc.key}: real "
                                            f"{real.rip}:{real.port}: check")
    if config.interface:
        try:
            socket.if_nametoindex(config.interface)
        except OSError:
            problems.append(f"interface {config.interface!r} is not in this network namespace")
    if config.bgp is not None:
        from pyvs.director.bgp import BIRD

        if shutil.which(BIRD) is None:
            problems.append(f"[bgp]: {BIRD} (BIRD 2, the Debian package bird2) is not installed")
    return problems


def cmd_run(args: argparse.Namespace) -> int:
    if args.validate:
        config = load_config(args.config, check_scripts=False)
        problems = runnable_problems(config)
        if not problems:
            load_config(args.config)  # the programs exist: now whether only root can change them
        counts = f"{len(config.services)} service(s), {sum(len(s.reals) for s in config.services)} real(s)"
        from pyvs.director.bgp import ecmp_notes

        for note in ecmp_notes(config):
            print(f"pyvs: {config.path}: note: {note}", file=sys.stderr)
        if problems:
            for problem in problems:
                print(f"pyvs: {config.path}: {problem}", file=sys.stderr)
            print(f"{config.path}: valid ({counts}) but not runnable here: {len(problems)} problem(s)")
            return EXIT_FAILURE
        print(f"{config.path}: valid ({counts})")
        return 0
    from pyvs.director.daemon import run_daemon

    logging.getLogger("pyvs").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    for handler in logging.getLogger().handlers:  # one structured line per event, with its time
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    run_daemon(args.config, pin_dir_arg(args))
    return 0


def cmd_reload(args: argparse.Namespace) -> int:
    from pyvs.cli.status import daemon_pin_dir

    pin_dir = daemon_pin_dir(args)
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


def cmd_import_keepalived(args: argparse.Namespace) -> int:
    from pyvs.director.keepalived import import_keepalived

    try:
        raw = Path(args.file).read_bytes()  # bytes: comments may hold any bytes, as keepalived allows
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    toml_text, warnings = import_keepalived(raw, args.file)
    for warning in warnings:
        print(f"pyvs: not carried over: {warning}", file=sys.stderr)
    print(toml_text, end="")
    return 0
