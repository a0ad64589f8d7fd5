"""MAC addresses as text ("02:00:00:00:00:0a") and bytes: the one place that converts them."""

from __future__ import annotations

import functools
from collections.abc import Iterable

ZERO_MAC = "00:00:00:00:00:00"  # a real whose MAC is not resolved; an ARP probe's unknown target


@functools.lru_cache(maxsize=4096)
def mac_bytes(mac: str) -> bytes:
    """The six bytes of a MAC written as six hex bytes separated by ':'; ValueError otherwise."""
    parts = mac.split(":")
    if len(parts) != 6:
        raise ValueError(f"{mac!r} is not a MAC address (six hex bytes separated by ':')")
    try:
        return bytes(int(part, 16) for part in parts)
    except ValueError:
        raise ValueError(f"{mac!r} is not a MAC address (six hex bytes separated by ':')") from None


def mac_text(raw: Iterable[int]) -> str:
    return ":".join(f"{b:02x}" for b in raw)


def normalize_mac(mac: str) -> str:
    return mac_text(mac_bytes(mac))
