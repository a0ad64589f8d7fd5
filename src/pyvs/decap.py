"""The real server's side of tunnel forwarding: the packets the director encapsulated lose their outer headers here.

Where the kernel has the modules (ipip; fou and ipip for GUE; ip_gre for GRE) their fallback devices do it, as the
LVS documentation sets them up (tunl0 or gre0 up, with rp_filter off; GUE: a fou port). Where it has not (this kind
of machine: no ipip, fou or gre), pyvs's own XDP program, pyvs_decap (bpf/pyvs_decap.c), is attached to the NIC: it
strips the outer headers of tunnel packets to this real's address and passes the inner packet to the kernel, which
delivers it to the VIP on lo. The program stays attached when the command ends (no pins needed: the NIC holds it).
libbpf is imported only by the functions that load or read the program (`pyvs realserver` stays light).
"""

from __future__ import annotations

import ctypes
import os
import platform
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

from pyvs.links import link_index

DECAP_PROGRAM = "pyvs_decap"
TUNNELS = ("ipip", "gue", "gre")
TYPE_BITS = {"ipip": 1, "gue": 2, "gre": 4}  # PYVS_DECAP_* of pyvs_decap.c
COUNTER_NAMES = ("ipip", "gue", "gre", "pass_fragment", "drop_malformed")  # DECAP_CNT_* of pyvs_decap.c
KERNEL_MODULES = {"ipip": ("ipip",), "gue": ("fou", "ipip"), "gre": ("ip_gre",)}
KERNEL_DEVICES = {"ipip": "tunl0", "gue": "tunl0", "gre": "gre0"}  # the modules' fallback devices
MODES = ("auto", "xdp", "kernel")


class DecapError(Exception):
    """The decapsulation cannot be set up, removed or read; the message says why."""


class DecapConfig(ctypes.Structure):
    _fields_ = [("addr", ctypes.c_uint32), ("gue_port", ctypes.c_uint16), ("types", ctypes.c_uint8),
                ("pad", ctypes.c_uint8)]


@dataclass(frozen=True)
class DecapStatus:
    """pyvs_decap attached to a NIC: its mode, what it takes and what it did."""

    mode: str  # native or generic
    prog_id: int
    addr: IPv4Address | None
    tunnels: tuple[str, ...]
    gue_port: int
    counters: dict[str, int]


def _module_present(name: str, modules_dir: Path) -> bool:
    """Loaded, built in, or available to modprobe."""
    if Path(f"/sys/module/{name}").exists():
        return True
    dep = modules_dir / "modules.dep"
    if dep.exists():
        text = dep.read_text(errors="replace")
        return f"/{name}.ko" in text
    return False


def kernel_can_decapsulate(tunnel: str, modules_dir: Path | None = None) -> bool:
    """Whether this kernel has the modules that decapsulate `tunnel` (ipip; fou and ipip; ip_gre)."""
    where = modules_dir or Path("/lib/modules") / platform.release()
    return all(_module_present(name, where) for name in KERNEL_MODULES[tunnel])


def choose_mode(tunnel: str, mode: str = "auto") -> str:
    """"kernel" where the kernel's modules can do it, else "xdp" (pyvs_decap); an explicit mode is kept."""
    if tunnel not in TUNNELS:
        raise DecapError(f"unknown tunnel type {tunnel!r} (one of {', '.join(TUNNELS)})")
    if mode not in MODES:
        raise DecapError(f"unknown decapsulation mode {mode!r} (one of {', '.join(MODES)})")
    if mode == "auto":
        return "kernel" if kernel_can_decapsulate(tunnel) else "xdp"
    if mode == "kernel" and not kernel_can_decapsulate(tunnel):
        raise DecapError(f"this kernel has no {' and '.join(KERNEL_MODULES[tunnel])} module: use pyvs's XDP "
                         "decapsulation (--decap xdp)")
    return mode


def _ifindex(nic: str) -> int:
    index = link_index(nic)
    if index is None:
        raise DecapError(f"no interface {nic} in this network namespace")
    return index


def _attached(ifindex: int) -> tuple[str, int] | None:
    from pyvs.dataplane import libbpf

    for mode, flags in (("native", libbpf.XDP_FLAGS_DRV_MODE), ("generic", libbpf.XDP_FLAGS_SKB_MODE)):
        prog_id = libbpf.xdp_query_id(ifindex, flags)
        if prog_id:
            return mode, prog_id
    return None


def attach(nic: str, tunnels: tuple[str, ...], addr: IPv4Address | None, gue_port: int = 0,
           xdp_mode: str = "native") -> str:
    """Attach pyvs_decap to `nic` for these tunnel types (replacing an earlier pyvs_decap); returns the XDP mode
    used. Native mode falls back to generic where the driver has none. Another XDP program is never replaced."""
    from pyvs.dataplane import libbpf
    from pyvs.dataplane.build import object_path

    unknown = set(tunnels) - set(TUNNELS)
    if unknown or not tunnels:
        raise DecapError(f"tunnel types {sorted(unknown) or '(none)'}: give some of {', '.join(TUNNELS)}")
    if "gue" in tunnels and not 1 <= gue_port <= 65535:
        raise DecapError("GUE needs its UDP port (the director's --tun-port)")
    ifindex = _ifindex(nic)
    found = _attached(ifindex)
    if found is not None and libbpf.prog_name(found[1]) != DECAP_PROGRAM:
        raise DecapError(f"{nic} already runs the XDP program {libbpf.prog_name(found[1]) or '(unnamed)'} (id "
                         f"{found[1]}): pyvs does not replace it")
    config = DecapConfig(addr=int.from_bytes(addr.packed, "little") if addr else 0,
                         gue_port=int.from_bytes(gue_port.to_bytes(2, "big"), "little"),
                         types=sum(TYPE_BITS[t] for t in tunnels))
    with libbpf.BpfObject(str(object_path("decap"))) as obj:
        libbpf.map_update(obj.map_fd("decap_config"), ctypes.c_uint32(0), config)
        prog = obj.prog_fd(DECAP_PROGRAM)
        modes = [xdp_mode] if xdp_mode == "generic" else ["native", "generic"]
        errors = []
        for mode in modes:
            flags = libbpf.XDP_FLAGS_DRV_MODE if mode == "native" else libbpf.XDP_FLAGS_SKB_MODE
            if found is not None and found[0] != mode:
                libbpf.xdp_detach(ifindex, libbpf.XDP_FLAGS_DRV_MODE if found[0] == "native"
                                  else libbpf.XDP_FLAGS_SKB_MODE)
                found = None
            try:
                libbpf.xdp_attach(ifindex, prog, flags)
                return mode
            except libbpf.BpfError as exc:
                errors.append(f"{mode}: {exc}")
    raise DecapError(f"cannot attach {DECAP_PROGRAM} to {nic}: {'; '.join(errors)}")


def detach(nic: str) -> bool:
    """Remove pyvs_decap from `nic`; False when it was not there (another program is left alone)."""
    from pyvs.dataplane import libbpf

    try:
        ifindex = _ifindex(nic)
    except DecapError:
        return False
    found = _attached(ifindex)
    if found is None or libbpf.prog_name(found[1]) != DECAP_PROGRAM:
        return False
    libbpf.xdp_detach(ifindex, libbpf.XDP_FLAGS_DRV_MODE if found[0] == "native" else libbpf.XDP_FLAGS_SKB_MODE)
    return True


def status(nic: str) -> DecapStatus | None:
    """What pyvs_decap on `nic` takes and has done, None when it is not attached."""
    from pyvs.dataplane import libbpf

    found = _attached(_ifindex(nic))
    if found is None or libbpf.prog_name(found[1]) != DECAP_PROGRAM:
        return None
    config, counters = DecapConfig(), {name: 0 for name in COUNTER_NAMES}
    for map_id in libbpf.prog_map_ids(found[1]):
        fd = libbpf.map_fd_by_id(map_id)
        try:
            name = libbpf.map_info(fd).name.decode()
            if name == "decap_config":
                libbpf.map_lookup(fd, ctypes.c_uint32(0), config)
            elif name == "decap_counters":
                ncpus = libbpf.num_possible_cpus()
                for index, counter in enumerate(COUNTER_NAMES):
                    values = (ctypes.c_uint64 * ncpus)()
                    libbpf.map_lookup(fd, ctypes.c_uint32(index), values)
                    counters[counter] = sum(values)
        finally:
            os.close(fd)
    addr = IPv4Address(config.addr.to_bytes(4, "little")) if config.addr else None
    port = int.from_bytes(config.gue_port.to_bytes(2, "little"), "big")
    tunnels = tuple(t for t in TUNNELS if config.types & TYPE_BITS[t])
    return DecapStatus(found[0], found[1], addr, tunnels, port, counters)
