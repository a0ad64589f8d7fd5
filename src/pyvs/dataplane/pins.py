"""Where the data plane's maps are pinned: a bpffs directory per director."""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

from pyvs.netns import current_netns_name

BPFFS = Path("/sys/fs/bpf")


def _has_bpffs(mountinfo: str, mount_point: str = str(BPFFS)) -> bool:
    try:
        with open(mountinfo) as mounts:
            for line in mounts:
                fields = line.split()
                if fields[4] == mount_point and fields[fields.index("-") + 1] == "bpf":
                    return True
    except OSError:
        pass
    return False


def bpffs_root() -> Path:
    """A bpffs mount that every command for this director sees.

    `ip netns exec` gives its command a private /sys without the host's bpffs; the
    host's one is still reachable through PID 1's root, so pins made outside the
    namespace and inside it are the same. With no bpffs at all, mount one at
    /sys/fs/bpf, as bpftool and Cilium do.
    """
    if _has_bpffs("/proc/self/mountinfo"):
        return BPFFS
    if _has_bpffs("/proc/1/mountinfo"):
        return Path("/proc/1/root") / BPFFS.relative_to("/")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"bpf", str(BPFFS).encode(), b"bpf", 0, None) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot mount bpffs at {BPFFS}: {os.strerror(err)}")
    return BPFFS


def default_pin_dir() -> Path:
    """/sys/fs/bpf/pyvs/<network namespace name>, or .../default outside a named namespace."""
    return bpffs_root() / "pyvs" / (current_netns_name() or "default")
