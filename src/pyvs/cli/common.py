"""What the `pyvs` command modules share: errors, exit codes and table printing."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A command that cannot be run as given (exit 2)."""


class CommandFailed(Exception):
    """A command that ran and failed; the message says why and what to do (exit 1)."""


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def print_actions(actions: list[str], nothing: str) -> None:
    for action in actions:
        print(action)
    if not actions:
        print(nothing)


def pin_dir_arg(args: argparse.Namespace) -> str | None:
    """--pin-dir, else $PYVS_PIN_DIR, checked to be on a bpffs before anything is created there."""
    from pyvs.pindir import chosen_pin_dir

    chosen = chosen_pin_dir(args.pin_dir)
    return str(chosen) if chosen else None
