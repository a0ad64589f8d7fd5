"""systemd's readiness protocol (sd_notify(3)) without libsystemd: one datagram to $NOTIFY_SOCKET.

The socket is a path, or an abstract name written with a leading '@'. Without NOTIFY_SOCKET (not run by systemd
with Type=notify) nothing is sent. Errors are returned, never raised: readiness must not stop a director.
"""

from __future__ import annotations

import os
import socket


def notify(*fields: str, environ: dict[str, str] | None = None) -> bool:
    """Send "KEY=value" lines (READY=1, STATUS=..., STOPPING=1, MAINPID=...); True when sent."""
    address = (os.environ if environ is None else environ).get("NOTIFY_SOCKET", "")
    if not address or not fields:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # vsock and other address families: not used by a system manager for this unit
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto("\n".join(fields).encode(), address)
    except OSError:
        return False
    return True


def ready(status: str = "") -> bool:
    return notify("READY=1", *((f"STATUS={status}",) if status else ()))


def stopping() -> bool:
    return notify("STOPPING=1")
