"""The lab's real-server application: HTTP on TCP port 80 and a UDP echo on port 80.

GET /         -> "<name>\\n"
GET /bytes/N  -> N bytes, streamed
GET /status/N -> an answer with HTTP status N (e.g. 500, for health checks)
every answer carries "X-Served-By: <name>"; UDP datagrams are answered "<name> <payload>", from the address they
were sent to (the VIP). With --ipv6 the same is served on [::] as well.

Run: python -m pyvs.lab.webserver --name rs1 [--ipv6]
"""

from __future__ import annotations

import argparse
import logging
import re
import socket
import struct
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

CHUNK = b"x" * 65536
BYTES_PATH = re.compile(r"/bytes/(\d+)")
STATUS_PATH = re.compile(r"/status/([1-5]\d\d)")
MAX_BYTES = 1 << 40
IP_PKTINFO = getattr(socket, "IP_PKTINFO", 8)  # not exported by Python 3.11
PKTINFO = struct.Struct("=i4s4s")  # struct in_pktinfo: ifindex, spec_dst, addr
PKTINFO6 = struct.Struct("=16sI")  # struct in6_pktinfo: addr, ifindex


def make_handler(name: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "pyvs-lab"
        disable_nagle_algorithm = True  # headers and body go out in separate writes

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            path = self.path.split("?", 1)[0]
            if path == "/":
                self._send(200, f"{name}\n".encode())
            elif match := BYTES_PATH.fullmatch(path):
                size = int(match.group(1))
                if size > MAX_BYTES:
                    self._send(400, b"too many bytes\n")
                else:
                    self._stream(size)
            elif match := STATUS_PATH.fullmatch(path):
                self._send(int(match.group(1)), f"{name} status {match.group(1)}\n".encode())
            else:
                self._send(404, b"not found\n")

        def _headers(self, status: int, length: int, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(length))
            self.send_header("X-Served-By", name)
            self.end_headers()

        def _send(self, status: int, body: bytes) -> None:
            self._headers(status, len(body), "text/plain")
            self.wfile.write(body)

        def _stream(self, size: int) -> None:
            self._headers(200, size, "application/octet-stream")
            view = memoryview(CHUNK)
            while size > 0:
                n = min(size, len(CHUNK))
                self.wfile.write(view[:n])
                size -= n

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002
            log.debug("%s %s", self.address_string(), format % args)

    return Handler


def serve_udp_echo(sock: socket.socket, name: str) -> None:
    """Answer each datagram from the address it was sent to (the VIP, not the RIP)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_PKTINFO, 1)
    prefix = f"{name} ".encode()
    while True:
        data, ancdata, _flags, peer = sock.recvmsg(65535, socket.CMSG_SPACE(max(PKTINFO.size, PKTINFO6.size)))
        cmsgs = []
        for level, kind, value in ancdata:
            if level == socket.IPPROTO_IP and kind == IP_PKTINFO:
                _ifindex, _spec_dst, dst = PKTINFO.unpack(value[: PKTINFO.size])
                cmsgs.append((socket.IPPROTO_IP, IP_PKTINFO, PKTINFO.pack(0, dst, bytes(4))))
            elif level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                dst6, _ifindex = PKTINFO6.unpack(value[: PKTINFO6.size])
                cmsgs.append((socket.IPPROTO_IPV6, socket.IPV6_PKTINFO, PKTINFO6.pack(dst6, 0)))
        try:
            sock.sendmsg([prefix + data], cmsgs, 0, peer)
        except OSError as exc:
            log.warning("udp reply to %s failed: %s", peer, exc)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 1024  # benchmarks open many connections at once


class Server6(Server):
    """The same on IPv6 only (the IPv4 server keeps IPv4's)."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        super().server_bind()


def _udp(family: socket.AddressFamily, address: str, port: int, name: str) -> None:
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        udp.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    udp.bind((address, port))
    threading.Thread(target=serve_udp_echo, args=(udp, name), daemon=True).start()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="pyvs lab real-server: HTTP and UDP echo")
    parser.add_argument("--name", required=True, help="name to answer with, e.g. rs1")
    parser.add_argument("--bind", default="0.0.0.0", help="address to listen on (default: all)")
    parser.add_argument("--port", type=int, default=80, help="HTTP (TCP) port")
    parser.add_argument("--udp-port", type=int, default=80, help="UDP echo port")
    parser.add_argument("--lab", default="", help="lab prefix, to tell this lab's servers apart")
    parser.add_argument("--ipv6", action="store_true", help="serve on [::] too (HTTP and the UDP echo)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args.name} %(levelname)s %(message)s")

    _udp(socket.AF_INET, args.bind, args.udp_port, args.name)
    if args.ipv6:
        _udp(socket.AF_INET6, "::", args.udp_port, args.name)
        httpd6 = Server6(("::", args.port), make_handler(args.name))
        threading.Thread(target=httpd6.serve_forever, daemon=True).start()
        log.info("serving HTTP on [::]:%d, UDP echo on [::]:%d", args.port, args.udp_port)

    httpd = Server((args.bind, args.port), make_handler(args.name))
    log.info("serving HTTP on %s:%d, UDP echo on %s:%d", args.bind, args.port, args.bind, args.udp_port)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
