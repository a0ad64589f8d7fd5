"""`pyvs realserver ...`: the real-server side (no BPF data plane needed)."""

from __future__ import annotations

import argparse

from pyvs import realserver
from pyvs.cli.common import EXIT_FAILURE, print_actions, print_table


def cmd_up(args: argparse.Namespace) -> int:
    changes = realserver.up(args.vip, nic=args.dev, method=args.method, tunnel=args.tunnel, tun_port=args.tun_port,
                            decap=args.decap)
    print_actions(changes, "real server already configured, nothing changed")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    print_actions(realserver.down(args.vip or None), "nothing to restore: pyvs realserver up made no changes here")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    findings = realserver.check(args.vip, nic=args.dev, tunnel=args.tunnel)
    rows = [["setting", "actual", "expected", "ok", "fix"]]
    rows += [[f.name, f.actual, f.expected, "ok" if f.ok else "WRONG", f.fix_command or ""] for f in findings]
    print_table(rows)
    return 0 if all(f.ok for f in findings) else EXIT_FAILURE
