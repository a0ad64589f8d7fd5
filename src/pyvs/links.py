"""Network interfaces by name, through pyroute2: one lookup and one error for every layer."""

from __future__ import annotations

import errno

from pyroute2 import IPRoute


class NoSuchInterface(OSError):
    def __init__(self, name: str):
        super().__init__(errno.ENODEV, f"no network interface named {name} in this network namespace")


def link_index(name: str, ipr: IPRoute | None = None) -> int | None:
    """The index of interface `name` in the calling thread's network namespace, None when there is none."""
    if ipr is None:
        with IPRoute() as own:
            return link_index(name, own)
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def require_link(name: str, ipr: IPRoute | None = None) -> int:
    """As link_index, but a missing interface is an error (NoSuchInterface, an OSError)."""
    index = link_index(name, ipr)
    if index is None:
        raise NoSuchInterface(name)
    return index
