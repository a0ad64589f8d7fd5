"""Traffic for failover tests and benchmarks: a loop of short requests and long, throttled downloads.

Both run in threads inside a lab node's namespace and record what happened with times, so a test can say
which requests failed, when, and whether a download was reset or completed.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field

from pyvs.netns import in_netns


@dataclass(frozen=True)
class Attempt:
    """One request of a RequestLoop."""

    started: float  # time.monotonic()
    ended: float
    server: str  # the real that answered ('' when it failed)
    error: str  # '' when answered
    source_port: int

    @property
    def ok(self) -> bool:
        return not self.error


def _get(conn: http.client.HTTPConnection, path: str) -> str:
    conn.request("GET", path, headers={"Connection": "close"})
    response = conn.getresponse()
    body = response.read()
    if response.status != 200:
        raise OSError(f"HTTP {response.status}")
    return response.getheader("X-Served-By") or body.decode(errors="replace").strip()


class RequestLoop:
    """`workers` threads, each sending one GET after another, every one on a new connection (a new source port,
    so a new ECMP hash), with `timeout` seconds for the whole exchange: a request whose SYN went to a dead
    director fails within it."""

    def __init__(self, netns: str, host: str, port: int = 80, workers: int = 4, timeout: float = 1.0,
                 path: str = "/"):
        self.netns, self.host, self.port, self.path = netns, host, port, path
        self.timeout = timeout
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, name=f"requests-{n}", daemon=True)
                         for n in range(workers)]

    def __enter__(self) -> RequestLoop:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> list[Attempt]:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=self.timeout + 5)
        return self.results()

    def results(self) -> list[Attempt]:
        with self._lock:
            return sorted(self.attempts, key=lambda a: a.started)

    def _run(self) -> None:
        with in_netns(self.netns):  # this thread's sockets belong to the node
            while not self._stop.is_set():
                started = time.monotonic()
                conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
                server, error, port = "", "", 0
                try:
                    conn.connect()
                    port = conn.sock.getsockname()[1]
                    server = _get(conn, self.path)
                except (OSError, http.client.HTTPException) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                finally:
                    conn.close()
                with self._lock:
                    self.attempts.append(Attempt(started, time.monotonic(), server, error, port))
                if error:
                    time.sleep(0.01)  # a refused connection returns at once: do not spin


@dataclass
class Download:
    """One long GET /bytes/N read slowly (a small receive buffer, `rate` bytes per second), so that the flow
    lasts `size / rate` seconds and keeps sending ACKs through whatever director ECMP gives it."""

    netns: str
    host: str
    size: int
    rate: int  # bytes per second the client reads
    port: int = 80
    timeout: float = 30.0  # seconds without a byte before the download counts as failed
    source_port: int = 0
    received: int = 0
    server: str = ""
    error: str = ""
    started: float = 0.0
    ended: float = 0.0
    _thread: threading.Thread | None = field(default=None, repr=False)

    def start(self) -> Download:
        """Connect (in the caller's thread: the source port is known on return), then read in a thread."""
        with in_netns(self.netns):
            sock = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # the window follows the slow reader
        sock.settimeout(self.timeout)
        self.started = time.monotonic()
        try:
            sock.connect((self.host, self.port))
        except OSError as exc:
            sock.close()
            self.error = f"connect: {exc}"
            self.ended = time.monotonic()
            return self
        self.source_port = sock.getsockname()[1]
        self._thread = threading.Thread(target=self._read, args=(sock,), name=f"download-{self.source_port}",
                                        daemon=True)
        self._thread.start()
        return self

    def _read(self, sock: socket.socket) -> None:
        chunk = max(1024, self.rate // 20)
        try:
            with sock:
                sock.sendall(f"GET /bytes/{self.size} HTTP/1.1\r\nHost: {self.host}\r\nConnection: close\r\n\r\n"
                             .encode())
                head = b""
                while b"\r\n\r\n" not in head:
                    data = sock.recv(4096)
                    if not data:
                        raise ConnectionError("closed before the headers")
                    head += data
                header, _, body = head.partition(b"\r\n\r\n")
                for line in header.decode(errors="replace").split("\r\n"):
                    if line.lower().startswith("x-served-by:"):
                        self.server = line.split(":", 1)[1].strip()
                self.received = len(body)
                began = time.monotonic()
                while self.received < self.size:
                    data = sock.recv(min(chunk, self.size - self.received))
                    if not data:
                        raise ConnectionError(f"closed after {self.received} of {self.size} bytes")
                    self.received += len(data)
                    ahead = self.received / self.rate - (time.monotonic() - began)
                    if ahead > 0:
                        time.sleep(ahead)
        except OSError as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ended = time.monotonic()

    def wait(self, timeout: float) -> bool:
        """True when the download ended (completed or failed) within `timeout` seconds."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    @property
    def complete(self) -> bool:
        return not self.error and self.received == self.size
