"""The daemon's run file: its PID, config and status address, readable without the data plane."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RUN_DIR = Path("/run/pyvs/director")


def run_file(pin_dir: Path) -> Path:
    """Where a daemon driving the data plane at pin_dir records its PID, config and status address."""
    return RUN_DIR / f"{pin_dir.name}.json"


def read_run_file(pin_dir: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(run_file(pin_dir).read_text())
    except (OSError, ValueError):
        return None
    return data


def daemon_alive(info: dict[str, Any]) -> bool:
    try:
        cmdline = Path(f"/proc/{int(info['pid'])}/cmdline").read_bytes()
    except (OSError, KeyError, ValueError):
        return False
    return b"director" in cmdline and b"run" in cmdline
