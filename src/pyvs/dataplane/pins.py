"""Where the data plane's maps are pinned: a bpffs directory per director.

The maps are pinned under /sys/fs/bpf/pyvs/<netns name>. `ip netns exec` runs its
command in a private mount namespace whose /sys lacks the host's bpffs, so pyvs also
bind-mounts that bpffs at /run/pyvs/bpffs, which `ip netns exec` keeps: inside it,
the same pins are found there.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from pyvs.netns import current_netns_name

BPFFS = Path("/sys/fs/bpf")
SHARED_BPFFS = Path("/run/pyvs/bpffs")
MS_BIND = 4096


def _is_bpffs(mount_point: Path) -> bool:
    with open("/proc/self/mountinfo") as mounts:
        for line in mounts:
            fields = line.split()
            if fields[4] == str(mount_point) and fields[fields.index("-") + 1] == "bpf":
                return True
    return False


def _mount(source: str, target: Path, fstype: str | None, flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    rc = libc.mount(source.encode(), str(target).encode(), fstype.encode() if fstype else None, flags, None)
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount {source} at {target}: {os.strerror(err)}")


def bpffs_root() -> Path:
    """The bpffs that holds pyvs's pins, mounting (and sharing) it when needed."""
    if not _is_bpffs(BPFFS):
        if _is_bpffs(SHARED_BPFFS):
            return SHARED_BPFFS  # inside `ip netns exec`
        if current_netns_name() and Path("/run/netns").is_dir():
            raise OSError(
                2, f"{BPFFS} is hidden here (ip netns exec?) and no pyvs bpffs is shared at {SHARED_BPFFS}: "
                "run any pyvs or pyvsadm command once outside the namespace, or enter it with `pyvs lab exec` "
                "or `nsenter --net=/run/netns/NAME`"
            )
        _mount("bpf", BPFFS, "bpf", 0)
    if not _is_bpffs(SHARED_BPFFS):
        SHARED_BPFFS.mkdir(parents=True, exist_ok=True)
        _mount(str(BPFFS), SHARED_BPFFS, None, MS_BIND)
    return BPFFS


def default_pin_dir() -> Path:
    """<bpffs>/pyvs/<network namespace name>, or .../default outside a named namespace."""
    return bpffs_root() / "pyvs" / (current_netns_name() or "default")
