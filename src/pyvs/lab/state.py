"""The lab's record of what it started (/run/pyvs/lab/PREFIX/state.json), and the environment of its processes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pyvs
from pyvs.lab.topology import Topology

STATE_ROOT = Path("/run/pyvs/lab")


def state_dir(topo: Topology) -> Path:
    return STATE_ROOT / topo.prefix


def state_file(topo: Topology) -> Path:
    return state_dir(topo) / "state.json"


def load_state(topo: Topology) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(state_file(topo).read_text())
        return data
    except (FileNotFoundError, ValueError):
        return {"servers": {}}


def save_state(topo: Topology, state: dict[str, Any]) -> None:
    path = state_file(topo)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2))


def child_env() -> dict[str, str]:
    """The environment for lab processes: pyvs importable even when not installed."""
    env = dict(os.environ)
    src = str(Path(pyvs.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, env.get("PYTHONPATH")) if p)
    return env
