"""The pins' life: a config without timeouts is repaired on open; pyvs replaces and removes only its own XDP."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pyroute2 import NetNS

from pyvs.dataplane import abi, libbpf, open_dataplane, scratch_dataplane
from pyvs.dataplane.build import build_object
from pyvs.dataplane.pins import bpffs_root
from pyvs.netns import create, exists, in_netns, remove, run_in_netns

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
NETNS = f"{PREFIX}-xdp{os.getpid() % 10000}"
OTHER_XDP = """
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
SEC("xdp") int other_xdp(struct xdp_md *ctx) { return XDP_PASS; }
char _license[] SEC("license") = "GPL";
"""


def test_a_config_without_timeouts_gets_the_defaults_on_open() -> None:
    with scratch_dataplane(f"{PREFIX}-cfg", lambda rip: None) as dp:  # type: ignore[arg-type,return-value]
        cfg = abi.Config()
        libbpf.map_lookup(dp._fds["config"], ctypes.c_uint32(0), cfg)
        cfg.timeouts[:] = [0] * len(cfg.timeouts)  # what a creation cut short between pinning and config left
        libbpf.map_update(dp._fds["config"], ctypes.c_uint32(0), cfg)
        assert dp.read_timeouts().tcp == 0
        with open_dataplane(dp.pin_dir) as again:
            assert (again.read_timeouts().tcp, again.read_timeouts().udp) == (900, 300)
            assert again._config().timeouts[abi.STATES["SYN_RECV"]] == abi.DEFAULT_TIMEOUTS["SYN_RECV"]


@pytest.fixture
def veth_netns(tmp_path: Path) -> Iterator[str]:
    """A namespace with a veth pair (pyvsx0, pyvsx1) up; removed after, with its pins."""
    pin_dir = bpffs_root() / "pyvs" / NETNS
    create(NETNS)
    try:
        with NetNS(NETNS) as ns:
            ns.link("add", ifname="pyvsx0", kind="veth", peer="pyvsx1")
            for name in ("pyvsx0", "pyvsx1"):
                ns.link("set", index=ns.link_lookup(ifname=name)[0], state="up")
        yield NETNS
    finally:
        from pyvs.dataplane import remove_pins

        remove_pins(pin_dir)
        if exists(NETNS):
            remove(NETNS)


def pyvs(*args: str) -> subprocess.CompletedProcess[str]:
    return run_in_netns(NETNS, [sys.executable, "-m", "pyvs.cli", *args], check=False)


def test_attach_leaves_another_xdp_program_alone_unless_forced(veth_netns: str, tmp_path: Path) -> None:
    from pyvs.dataplane import Dataplane

    source = tmp_path / "other_xdp.c"
    source.write_text(OTHER_XDP)
    with in_netns(veth_netns), libbpf.BpfObject(str(build_object(source))) as obj:
        libbpf.xdp_attach(socket_index("pyvsx0"), obj.prog_fd("other_xdp"), libbpf.XDP_FLAGS_SKB_MODE)

    def program() -> str | None:
        with in_netns(veth_netns):
            found = Dataplane.xdp_program("pyvsx0")
        return found[2] if found else None

    refused = pyvs("director", "attach", "--dev", "pyvsx0", "--mode", "generic", "--no-announce")
    assert refused.returncode == 1 and "other_xdp" in refused.stderr and "--force" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1 and program() == "other_xdp"
    kept = pyvs("director", "detach", "--dev", "pyvsx0")
    assert kept.returncode == 1 and "other_xdp" in kept.stderr and program() == "other_xdp"
    forced = pyvs("director", "attach", "--dev", "pyvsx0", "--mode", "generic", "--no-announce", "--force")
    assert forced.returncode == 0, forced.stderr
    assert program() == "pyvs_xdp"
    again = pyvs("director", "attach", "--dev", "pyvsx0", "--mode", "generic", "--no-announce")
    assert again.returncode == 0, again.stderr  # its own program is replaced without --force
    detached = pyvs("director", "detach", "--dev", "pyvsx0", "--remove-rules")
    assert detached.returncode == 0, detached.stderr
    assert program() is None


def socket_index(name: str) -> int:
    import socket

    return socket.if_nametoindex(name)
