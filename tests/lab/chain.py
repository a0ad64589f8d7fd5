"""A client -- director -- real chain of three namespaces joined by two veth pairs (the attach-free tests)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable

from pyvs import netns
from pyvs.dataplane import remove_pins
from pyvs.dataplane.attachment import STATE_DIR
from pyvs.dataplane.pins import bpffs_root


def sh(ns: str | None, *argv: str) -> str:
    return netns.run_in_netns(ns, list(argv)).stdout


def cleanup(pids: list[int], client: str, director: str, real: str) -> None:
    """Stop the processes, remove the namespaces, the director's pins and its auto-attach record."""
    for pid in pids:
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    for ns in (client, director, real):
        if netns.exists(ns):
            netns.remove(ns)
    for pins in (bpffs_root() / "pyvs").glob(f"{director}*"):  # the _new_<pid> of a creation cut short too
        remove_pins(pins)
    (STATE_DIR / f"{director}.json").unlink(missing_ok=True)


def wire_chain(client: str, director: str, real: str, link: str, client_net: tuple[str, str],
               real_net: tuple[str, str], address_argv: Callable[[str, str], list[str]]) -> None:
    """Create the namespaces and the veth pairs {link}c0/c1 (director, client) and {link}r0/r1 (director, real),
    addressed by `address_argv(address, dev)` (nets: the director's side first) and up."""
    for ns in (client, director, real):
        netns.create(ns)
        sh(ns, "ip", "link", "set", "lo", "up")
    # veth pairs made in the director, one end moved out.
    sh(director, "ip", "link", "add", f"{link}c0", "type", "veth", "peer", "name", f"{link}c1")
    sh(director, "ip", "link", "add", f"{link}r0", "type", "veth", "peer", "name", f"{link}r1")
    sh(director, "ip", "link", "set", f"{link}c1", "netns", client)
    sh(director, "ip", "link", "set", f"{link}r1", "netns", real)
    for ns, dev, addr in ((director, f"{link}c0", client_net[0]), (client, f"{link}c1", client_net[1]),
                          (director, f"{link}r0", real_net[0]), (real, f"{link}r1", real_net[1])):
        sh(ns, "ip", *address_argv(addr, dev))
        sh(ns, "ip", "link", "set", dev, "up")
