"""Where a data plane's pins are, found without loading BPF, mounting or creating anything.

Read-only commands (`pyvsadm -L`, `pyvs director status`) use this to tell "no data plane here"
from "an empty one", as `ipvsadm -L` on a host without IPVS rules prints an empty table.
"""

from __future__ import annotations

import os
from pathlib import Path

from pyvs.netns import current_netns_name

PIN_DIR_ENV = "PYVS_PIN_DIR"
BPFFS_MOUNTS = (Path("/sys/fs/bpf"), Path("/run/pyvs/bpffs"))
BPF_FSTYPE = "bpf"


class PinDirError(Exception):
    """A pin directory that cannot hold a data plane."""


def filesystem_type(path: Path) -> str:
    """The type of the filesystem that holds `path` (or would hold it: its nearest existing ancestor)."""
    path = Path(os.path.abspath(path))
    while not path.exists() and path != path.parent:
        path = path.parent
    real = os.path.realpath(path)
    best, fstype = "", ""
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            mount_point = fields[4].replace("\\040", " ")
            inside = real == mount_point or real.startswith(mount_point.rstrip("/") + "/")
            if inside and len(mount_point) >= len(best):
                best, fstype = mount_point, fields[fields.index("-") + 1]
    return fstype


def check_pin_dir(path: str | Path) -> Path:
    """`path` if it is (or would be created) on a bpffs; a PinDirError naming the problem otherwise."""
    pin_dir = Path(path)
    absolute = Path(os.path.abspath(pin_dir))
    if any(absolute == root or root in absolute.parents for root in BPFFS_MOUNTS):
        return pin_dir  # pyvs mounts its bpffs there when it is not yet
    fstype = filesystem_type(pin_dir)
    if fstype != BPF_FSTYPE:
        raise PinDirError(
            f"pin directory {pin_dir} is not on a bpffs (it is on {fstype or 'an unknown filesystem'}): "
            "choose a directory under /sys/fs/bpf"
        )
    return pin_dir


def chosen_pin_dir(explicit: str | Path | None = None) -> Path | None:
    """The pin directory named by the command line or $PYVS_PIN_DIR, checked; None for the default."""
    chosen = explicit or os.environ.get(PIN_DIR_ENV) or None
    return check_pin_dir(chosen) if chosen else None


def existing_pin_dir(explicit: str | Path | None = None) -> Path | None:
    """The directory holding this namespace's data plane (or the chosen one), None when nothing is pinned."""
    chosen = chosen_pin_dir(explicit)
    if chosen is not None:
        candidates = [chosen]
    else:
        name = current_netns_name() or "default"
        candidates = [root / "pyvs" / name for root in BPFFS_MOUNTS]
    for candidate in candidates:
        try:
            if candidate.is_dir() and any(candidate.iterdir()):
                if chosen is None and _stale(candidate):
                    continue  # pins of a namespace of the same name that no longer exists: nothing here
                return candidate
        except OSError:
            continue
    return None


def _stale(pin_dir: Path) -> bool:
    """Pins made in another network namespace (only pins exist here: BPF is available to read them)."""
    from pyvs.dataplane.pinmeta import netns_identity, read_meta

    meta = read_meta(pin_dir)
    return meta is not None and meta.netns_cookie != netns_identity()[0]
