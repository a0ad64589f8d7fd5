"""`pyvs doctor` and `pyvs arpwatch`: the ARP side of LVS-DR, on the wire."""

from __future__ import annotations

import argparse
import json
import signal
from ipaddress import IPv4Address, IPv6Address

from pyvs.cli.common import EXIT_FAILURE, UsageError, pin_dir_arg, print_table
from pyvs.model import IPAddress, ModelError, parse_address, parse_listen

DEFAULT_CLIENT_IP = IPv4Address("198.19.255.254")  # pyvs.arp.doctor's; checked equal in a test
DEFAULT_CLIENT_IP6 = IPv6Address("2001:db8:ffff:ffff::fe")  # the same
PROBE_WAIT = 1.0


def address_option(value: str) -> IPAddress:
    try:
        return parse_address(value)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def cmd_doctor(args: argparse.Namespace) -> int:
    from pyvs.arp import doctor
    from pyvs.cli.director import require_nic

    if args.dev:
        require_nic(args.dev)
    clients = {4: DEFAULT_CLIENT_IP, 6: DEFAULT_CLIENT_IP6, **{ip.version: ip for ip in args.client_ip}}
    try:
        findings = doctor.run(args.dev, pin_dir_arg(args), clients[4], args.wait, clients[6], args.peer)
    except doctor.DoctorError as exc:
        raise UsageError(str(exc)) from None
    bad = [f for f in findings if f.status is not doctor.Status.OK]
    if args.json:
        print(json.dumps([{**f.__dict__, "status": str(f.status)} for f in findings], indent=2))
    else:
        print_table([["status", "check", "subject", "finding", "fix"],
                     *([str(f.status), f.check, f.subject, f.detail, f.fix] for f in findings)])
        failed = sum(f.status is doctor.Status.FAIL for f in bad)
        print(f"{len(findings)} checks: {len(findings) - len(bad)} ok, {failed} failed, {len(bad) - failed} warnings")
    return EXIT_FAILURE if bad else 0


class _Stopped(Exception):
    """SIGTERM: stop watching, undo the pins, exit 0."""


def pin_option(value: str) -> tuple[IPv4Address, str | None]:
    from pyvs.mac import normalize_mac

    address, _, mac = value.partition("=")
    try:
        return IPv4Address(address), (normalize_mac(mac) if mac else None)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--pin {value!r}: {exc} (use IP or IP=MAC)") from None


def listen_address(value: str) -> tuple[str, int]:
    """HOST:PORT (or :PORT for 127.0.0.1) for a metrics listener."""
    try:
        return parse_listen(value)
    except ModelError as exc:
        raise argparse.ArgumentTypeError(f"{value!r}: {exc} (use HOST:PORT)") from None


def cmd_arpwatch(args: argparse.Namespace) -> int:
    from pyvs.arp.packets import interface_mac
    from pyvs.arp.watch import Event, GuardConfig, Watcher, open_pinned, pinned_neighbours, serve_metrics
    from pyvs.cli.director import require_nic

    def emit(event: Event) -> None:
        print(event.json() if args.json else event.text(), flush=True)

    def stop(signum: int, frame: object) -> None:
        raise _Stopped

    interface_mac(require_nic(args.dev))  # a missing NIC is refused before anything is set up
    path, dp = open_pinned(pin_dir_arg(args))
    if dp is None and not args.vip:
        raise UsageError(f"no complete data plane pinned at {path}: name the VIPs to guard with --vip")
    signal.signal(signal.SIGTERM, stop)
    config = GuardConfig(args.flip_window, args.flip_count, args.garp_limit, args.follow_real_macs, args.verify_time)
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
