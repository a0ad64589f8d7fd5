"""What every part of the data plane shares: its error, the resolver's type, the maps' and programs' names, and
starting the program's timer."""

from __future__ import annotations

from collections.abc import Callable
from ipaddress import IPv4Address

from pyvs.dataplane import libbpf
from pyvs.dataplane.neighbours import NextHop

MAP_NAMES = (
    "services", "vips", "vip_filter", "svc_gens", "reals", "sched_table", "sched_state", "real_conns", "conns",
    "half_open", "stats", "counters", "config", "sweeper", "lblc_cache", "lblcr_cache", "lblcr_scratch", "sched_choice",
    "svc_reals", "slot_usage", "frags",
)
PROGRAM_NAME = "pyvs_xdp"
PYVS_PROGRAMS = (PROGRAM_NAME, "pyvs_pass")  # the kernel keeps the first 15 characters of a program's name

Resolver = Callable[[IPv4Address], NextHop]


class DataplaneError(Exception):
    """A data plane operation failed; nothing was changed unless the message says so."""


def start_sweeper(program: libbpf.BpfObject) -> None:
    """Start (or restart) the timer that removes expired connections once a second."""
    libbpf.prog_test_run(program.prog_fd("pyvs_start_sweeper"), bytes(64))
