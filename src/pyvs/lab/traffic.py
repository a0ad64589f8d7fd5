"""Real clients for the lab: HTTP and UDP from inside a node, and the interface counters that prove DR."""

from __future__ import annotations

import http.client
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from pyroute2 import IPRoute

from pyvs.lab.topology import Topology
from pyvs.links import require_link
from pyvs.netns import in_netns


@dataclass(frozen=True)
class Reply:
    server: str  # the real's node name, from its answer
    body_bytes: int


def http_get(netns: str, host: str, path: str = "/", port: int = 80, timeout: float = 10.0) -> Reply:
    """One HTTP/1.1 request on a new connection, made from inside `netns`."""
    with in_netns(netns):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()  # the socket belongs to netns from here on
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        size = 0
        first = b""
        while chunk := response.read(65536):
            first = first or chunk
            size += len(chunk)
        server = response.getheader("X-Served-By") or first.decode(errors="replace").strip()
        if response.status != 200:
            raise OSError(f"HTTP {response.status} from {server}")
        return Reply(server, size)
    finally:
        conn.close()


@contextmanager
def http_connection(
    netns: str, host: str, port: int = 80, timeout: float = 10.0
) -> Iterator[http.client.HTTPConnection]:
    """A kept-alive HTTP connection opened from inside `netns`."""
    with in_netns(netns):
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
        conn.connect()
    try:
        yield conn
    finally:
        conn.close()


def keepalive_get(conn: http.client.HTTPConnection, path: str = "/") -> Reply:
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return Reply(response.getheader("X-Served-By") or body.decode().strip(), len(body))


def udp_ask(netns: str, host: str, payload: bytes, port: int = 80, timeout: float = 3.0) -> str:
    """Send one datagram from a fresh source port inside `netns`; returns the text of the answer."""
    with in_netns(netns):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (host, port))
        data, _ = sock.recvfrom(65536)
    return data.decode(errors="replace")


@dataclass(frozen=True)
class LinkBytes:
    rx: int
    tx: int


def link_bytes(netns: str, ifname: str) -> LinkBytes:
    with in_netns(netns), IPRoute() as ipr:
        link = ipr.get_links(require_link(ifname, ipr))[0]
    stats = link.get_attr("IFLA_STATS64")
    return LinkBytes(int(stats["rx_bytes"]), int(stats["tx_bytes"]))


def director_port_bytes(topo: Topology) -> LinkBytes:
    """Bytes through the director's switch port: rx = what the director sent onto the segment."""
    return link_bytes(topo.switch.netns, topo.director_switch_port.ifname)
