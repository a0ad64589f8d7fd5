"""What every part of the data plane shares: its error, the resolver's type, the maps' and programs' names, and
starting the program's timer."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from pyvs.dataplane import libbpf
from pyvs.dataplane.neighbours import NextHop
from pyvs.model import IPAddress

MAP_NAMES = (
    "services", "vips", "vip_filter", "svc_gens", "reals", "sched_table", "sched_state", "real_conns", "conns",
    "half_open", "stats", "counters", "config", "sweeper", "lblc_cache", "lblcr_cache", "lblcr_scratch", "sched_choice",
    "svc_reals", "slot_usage", "frags", "services6", "vips6", "conns6", "half_open6", "frags6", "real_addrs6",
    "scratch6", "calls", "sync_events", "tunnels", "tun_scratch", "nat_replies", "nat_half", "out_stats", "fwm_calls",
    "real_limits", "estimators", "est_clock",
)
PROGRAM_NAME = "pyvs_xdp"
FWMARK_PROGRAM = "pyvs_fwm"  # tc egress: packets of firewall-mark services (bpf/fwmark.h)
IPV6_PROGRAM = "pyvs_xdp6"  # tail-called by pyvs_xdp for IPv6 frames, through the pinned program array `calls`
PYVS_PROGRAMS = (PROGRAM_NAME, "pyvs_pass")  # the kernel keeps the first 15 characters of a program's name

Resolver = Callable[[IPAddress], NextHop]


class DataplaneError(Exception):
    """A data plane operation failed; nothing was changed unless the message says so."""


def start_sweeper(program: libbpf.BpfObject) -> None:
    """Start (or restart) the timer that removes expired connections once a second."""
    libbpf.prog_test_run(program.prog_fd("pyvs_start_sweeper"), bytes(64))


def install_calls(program: libbpf.BpfObject) -> None:
    """Put this load's IPv6 program where pyvs_xdp tail-calls it (the array is pinned: the entry outlives this
    process; every load of one version puts an equal program there)."""
    libbpf.map_update(program.map_fd("calls"), ctypes.c_uint32(0), ctypes.c_uint32(program.prog_fd(IPV6_PROGRAM)))
    libbpf.map_update(program.map_fd("fwm_calls"), ctypes.c_uint32(0),
                      ctypes.c_uint32(program.prog_fd(FWMARK_PROGRAM + "6")))
