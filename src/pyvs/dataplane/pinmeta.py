"""What a pin directory says about itself: the ABI of the maps and the network namespace that made them.

Beside the program's maps pyvs pins one small array map, `pyvs_meta`, written when the data plane is created:
the ABI version (a hash of the headers that define the maps' keys and values) and the identity of the network
namespace it was made in (its cookie, never reused while the machine runs, and its inode). On open the pins are
checked against this version's object: every map's type, key and value size, and the ABI version. Pins made by
another version are refused with the command that migrates them; pins of a namespace that no longer exists
(`ip netns del X; ip netns add X` reuses the name, and so the default pin directory) are stale.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from pyvs.dataplane import abi, libbpf
from pyvs.netns import netns_cookie

META_NAME = "pyvs_meta"
ABI_HEADERS = ("pyvs_abi.h", "maps.h", "sched_maps.h", "sync.h", "tunnel.h", "fwmark.h", "adm_maps.h")  # with maps
BPF_MAP_TYPE_ARRAY = 2
MIGRATE_HINT = "run `pyvs director migrate` (keeps the rules; or `pyvs director detach --remove-rules` to start empty)"


class Meta(ctypes.Structure):
    _fields_ = [("abi", ctypes.c_uint8 * 16), ("netns_cookie", ctypes.c_uint64), ("netns_ino", ctypes.c_uint64)]


@functools.cache
def abi_version() -> bytes:
    """16 bytes naming the layout of the maps: a hash of the headers that define their keys and values."""
    digest = hashlib.sha256()
    for name in ABI_HEADERS:
        digest.update(name.encode())
        digest.update((abi.BPF_DIR / name).read_bytes())
    return digest.digest()[:16]


def netns_identity() -> tuple[int, int]:
    """(cookie, inode) of the calling thread's network namespace."""
    return netns_cookie(), os.stat(f"/proc/self/task/{threading.get_native_id()}/ns/net").st_ino


def write_meta(pin_dir: Path) -> None:
    """Create and pin the meta map of a new data plane (this version's ABI, this namespace)."""
    fd = libbpf.map_create(BPF_MAP_TYPE_ARRAY, "pyvs_meta", 4, ctypes.sizeof(Meta), 1)
    try:
        cookie, ino = netns_identity()
        meta = Meta(netns_cookie=cookie, netns_ino=ino)
        meta.abi[:] = list(abi_version())
        libbpf.map_update(fd, ctypes.c_uint32(0), meta)
        libbpf.obj_pin(fd, str(pin_dir / META_NAME))
    finally:
        os.close(fd)


def read_meta(pin_dir: Path) -> Meta | None:
    path = pin_dir / META_NAME
    if not path.exists():
        return None
    fd = libbpf.obj_get(str(path))
    try:
        if libbpf.map_info(fd).value_size != ctypes.sizeof(Meta):
            return None
        meta = Meta()
        libbpf.map_lookup(fd, ctypes.c_uint32(0), meta)
        return meta
    finally:
        os.close(fd)


@dataclass(frozen=True)
class PinCheck:
    """What the pins at a directory are: absent, stale (another namespace's), mismatched (another layout) or ok."""
    state: str
    problems: tuple[str, ...] = ()

    def message(self, pin_dir: Path) -> str:
        return (f"the data plane pinned at {pin_dir} was made by another version of pyvs "
                f"({'; '.join(self.problems)}): {MIGRATE_HINT}")


def check_pins(pin_dir: Path, map_names: tuple[str, ...], shapes: dict[str, tuple[int, int, int]],
               check_netns: bool) -> PinCheck:
    """Check the pins at `pin_dir` against this version's maps (`shapes`: type, key and value size by name)."""
    present = [name for name in (*map_names, META_NAME) if (pin_dir / name).exists()]
    if not present:
        return PinCheck("absent")
    meta = read_meta(pin_dir)
    if check_netns and meta is not None and meta.netns_cookie != netns_identity()[0]:
        return PinCheck("stale", ("made in a network namespace that no longer exists",))
    problems = []
    missing = [name for name in map_names if name not in present]
    if missing:
        problems.append(f"maps missing: {', '.join(missing)}")
    if meta is None:
        problems.append("no ABI version")
    elif bytes(meta.abi) != abi_version():
        problems.append(f"ABI {bytes(meta.abi).hex()[:8]}, this version {abi_version().hex()[:8]}")
    for name in map_names:
        if name in missing or name not in shapes:
            continue
        fd = libbpf.obj_get(str(pin_dir / name))
        try:
            info = libbpf.map_info(fd)
        finally:
            os.close(fd)
        found = (info.type, info.key_size, info.value_size)
        if found != shapes[name]:
            problems.append(f"map {name}: type/key/value {found}, expected {shapes[name]}")
    return PinCheck("mismatch", tuple(problems)) if problems else PinCheck("ok")
