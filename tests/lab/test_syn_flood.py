"""A SYN flood of 100x the connection table must evict nothing established (issue 9, "Must show").

On a lab of its own (default_topology with the extra host on the switch, prefix <test prefix>syn, always removed):
the director's table holds 4096 entries, wlc on TCP VIP:80 with the lab's two reals. The client holds 1000
established keep-alive HTTP connections through the gateway; each one's first answer names its real. Then, ROUNDS
times: the attacker host floods VIP:80 with 409,600 SYNs (100x the table) from spoofed sources in 198.19.0.0/16
(tests/lab/bpf/syn_flood.c, run by BPF_PROG_RUN with live frames, until the director has counted them all), every
source a new one; in odd rounds each source sends one SYN, in even rounds two in a row (the second finds the entry
the first made, as an established flow's packets do, so the kernel LRU's reference bit cannot tell them apart).
After each flood every connection makes a request again and must be answered by its real: no reset, no timeout, no
other real. Once the flood's half-open entries have expired (SYN_RECV timeout shortened to 1 s; the sweeper's last
pass found none live) and two sweep passes later, the counts the schedulers read (Dataplane.live_counts) must equal
a count of the tables (Dataplane.conn_counts).

The reals drop the flood the director forwards to them with an XDP program (their kernels' SYN cookies are not under
test, and cost CPU this 2-core machine does not have). Broken connections are replaced by new ones so that every
round holds 1000; the test fails at the end with the outcome of every round, so one run tells how many rounds broke.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import logging
import resource
import selectors
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from ipaddress import IPv4Address
from pathlib import Path

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from pyvs.dataplane import Dataplane, attach_pass_program, libbpf, open_dataplane
from pyvs.dataplane.build import build_object
from pyvs.lab import lab as lab_api
from pyvs.lab.director import pin_dir, teardown_director, tutorial_rules
from pyvs.lab.topology import Topology, default_topology
from pyvs.model import ServiceKey
from pyvs.netns import in_netns
from tests.lab.conftest import LAB_PREFIX

log = logging.getLogger(__name__)

TABLE_SIZE = 4096
FLOOD = 100 * TABLE_SIZE
CONNECTIONS = 1000
ROUNDS = 10
REPEATS = (1, 2)  # SYNs per spoofed source, in a row, by round: one each, then each twice (the LRU's reference bit)
SCHEDULER = "wlc"
HALF_OPEN_TIMEOUT = 1  # seconds, SYN_RECV (default 60)
EXPIRY_SLACK = 5.0  # seconds beyond HALF_OPEN_TIMEOUT after the flood for the half-open table to empty
FLOOD_DEADLINE = 30.0  # seconds for the director to count FLOOD packets
CHUNK = 1 << 16  # frames per BPF_PROG_RUN call
REPLY_DEADLINE = 5.0  # seconds for all the connections' answers
FRAME_LEN = 60
SPOOFED = "198.19.0.0"  # the generator varies the low 16 bits; the director has no route back, as it should not
GENERATOR = Path(__file__).parent / "bpf" / "syn_flood.c"
REALS = ("rs1", "rs2")
REQUEST = b"GET / HTTP/1.1\r\nHost: pyvs\r\n\r\n"

Counts = dict[tuple[ServiceKey, tuple[IPv4Address, int]], tuple[int, int]]


def flood_prefix(prefix: str) -> str:
    """This test's lab prefix: the session's, made distinct (the session lab has no attacker)."""
    return f"{prefix[:7]}syn"


# -- the generator ------------------------------------------------------------------------------------------


class Generator:
    """tests/lab/bpf/syn_flood.c on the attacker host, its template aimed at the director."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.obj = libbpf.BpfObject(str(build_object(GENERATOR)))
        self.flows = 0  # spoofed sources used so far
        attacker = topo.node("attacker")
        template = Ether(src=topo.port(attacker.name, "eth0").mac, dst=topo.director_nic.mac) / IP(
            src=SPOOFED, dst=topo.vip, id=1) / TCP(sport=0, dport=80, flags="S", seq=1, window=64240)
        self.frame = bytes(template / Padding(b"\0" * (FRAME_LEN - len(template))))
        assert len(self.frame) == FRAME_LEN
        buf = (ctypes.c_uint8 * FRAME_LEN).from_buffer_copy(self.frame)
        libbpf.map_update(self.obj.map_fd("template"), ctypes.c_uint32(0), buf)
        with in_netns(topo.switch.netns):  # XDP_TX out of a veth arrives only when its peer runs XDP
            attach_pass_program(f"{topo.prefix}-atk", "native")
        with in_netns(attacker.netns):
            self.ifindex = socket.if_nametoindex("eth0")
        for node in topo.reals:  # what reaches them of the flood is dropped (and counted) before their stack
            with in_netns(node.netns):
                libbpf.xdp_attach(socket.if_nametoindex("eth0"), self.obj.prog_fd("flood_drop"),
                                  libbpf.XDP_FLAGS_DRV_MODE)

    def at_reals(self) -> int:
        """Flood frames the reals have received (from the director) so far."""
        values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
        libbpf.map_lookup(self.obj.map_fd("dropped"), ctypes.c_uint32(0), values)
        return sum(values)

    def sent(self) -> int:
        value = ctypes.c_uint64()
        libbpf.map_lookup(self.obj.map_fd("next"), ctypes.c_uint32(0), value)
        return value.value

    def flood(self, dp: Dataplane, count: int, repeat: int = 1) -> tuple[int, int, int, float]:
        """Send SYNs until the director has counted `count` more packets to its VIPs, `repeat` in a row per
        spoofed source, every source a new one. Returns (sent, counted by the director, received by the reals,
        seconds)."""
        fd = self.obj.prog_fd("syn_flood")
        libbpf.map_update(self.obj.map_fd("next"), ctypes.c_uint32(0), ctypes.c_uint64(self.flows * repeat))
        libbpf.map_update(self.obj.map_fd("repeat"), ctypes.c_uint32(0), ctypes.c_uint32(repeat))
        sent_before, seen_before, reals_before = self.sent(), dp.counters()["rx"], self.at_reals()
        started = time.monotonic()
        with in_netns(self.topo.node("attacker").netns):
            while (seen := dp.counters()["rx"] - seen_before) < count:
                if time.monotonic() - started > FLOOD_DEADLINE:
                    break
                libbpf.prog_run_live_frames(fd, self.frame, min(CHUNK, count - seen), self.ifindex)
        seconds = time.monotonic() - started
        self.flows = -(-self.sent() // repeat)  # the next round starts with new sources
        return self.sent() - sent_before, dp.counters()["rx"] - seen_before, self.at_reals() - reals_before, seconds

    def close(self) -> None:
        for node in self.topo.reals:
            with in_netns(node.netns):
                Dataplane.detach("eth0")
        self.obj.close()


# -- the established connections ----------------------------------------------------------------------------


@dataclass
class Conn:
    sock: socket.socket
    real: str = ""  # who answered the first request
    buf: bytearray = field(default_factory=bytearray)


def open_connections(topo: Topology, count: int) -> list[Conn]:
    with in_netns(topo.client.netns):
        socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    conns = []
    for sock in socks:
        sock.settimeout(5)
        sock.connect((topo.public_ip, 80))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conns.append(Conn(sock))
    return conns


def _answer(buf: bytearray) -> str | None:
    """The real named by a complete answer in `buf`, None while incomplete."""
    head, sep, body = bytes(buf).partition(b"\r\n\r\n")
    if not sep:
        return None
    headers = dict(line.split(b":", 1) for line in head.split(b"\r\n")[1:] if b":" in line)
    length = int(headers.get(b"Content-Length", b"0"))
    if len(body) < length:
        return None
    return headers.get(b"X-Served-By", body).decode().strip()


def ask_all(conns: list[Conn]) -> list[str]:
    """One request on every connection, the answers read concurrently. Per connection: the real that
    answered, or "reset", "closed", "timeout", "error: ..."."""
    outcome: dict[int, str] = {}
    with selectors.DefaultSelector() as sel:
        for i, conn in enumerate(conns):
            conn.buf.clear()
            conn.sock.setblocking(False)
            try:
                conn.sock.send(REQUEST)
            except OSError as exc:
                outcome[i] = "reset" if exc.errno in (errno.ECONNRESET, errno.EPIPE) else f"error: {exc}"
                continue
            sel.register(conn.sock, selectors.EVENT_READ, i)
        deadline = time.monotonic() + REPLY_DEADLINE
        while len(outcome) < len(conns) and (left := deadline - time.monotonic()) > 0:
            for key, _ in sel.select(left):
                i = key.data
                conn = conns[i]
                try:
                    data = conn.sock.recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    data, outcome[i] = b"", ("reset" if exc.errno == errno.ECONNRESET else f"error: {exc}")
                if not data:
                    outcome.setdefault(i, "closed")
                    sel.unregister(conn.sock)
                    continue
                conn.buf += data
                if (real := _answer(conn.buf)) is not None:
                    outcome[i] = real
                    sel.unregister(conn.sock)
    return [outcome.get(i, "timeout") for i in range(len(conns))]


# -- the director's counts ----------------------------------------------------------------------------------


def counts_after_expiry(dp: Dataplane, flood_end: float) -> tuple[int, bool, Counts, Counts]:
    """Once the flood's half-open entries have expired (the sweeper's last pass found none live), and two more
    sweep passes later: (half-open entries still live, whether live_counts() equals conn_counts() (a missing
    real = (0, 0)), live counts, table counts)."""
    deadline = flood_end + HALF_OPEN_TIMEOUT + EXPIRY_SLACK
    while (half_open := int(dp.conn_table_usage()["half_open"])) and time.monotonic() < deadline:
        time.sleep(0.1)
    dp.wait_passes(2)  # every count is then true to the tables
    live_raw, table_raw = dp.live_counts(), dp.conn_counts()
    keys = {*live_raw, *table_raw}
    live = {k: live_raw.get(k, (0, 0)) for k in keys}
    table = {k: table_raw.get(k, (0, 0)) for k in keys}
    return half_open, live == table, live, table


# -- the lab ------------------------------------------------------------------------------------------------


@contextmanager
def flood_lab() -> Iterator[tuple[Topology, Dataplane]]:
    """Its own lab with the attacker host; the director's data plane re-made with a TABLE_SIZE table."""
    topo = default_topology(prefix=flood_prefix(LAB_PREFIX), attacker=True)
    atexit.register(lab_api.down, topo)  # also if the session is interrupted
    try:
        lab_api.up(topo)
        teardown_director(topo)  # the lab made it with the default table size
        with in_netns(topo.director.netns):
            dp = open_dataplane(pin_dir(topo), conn_table_size=TABLE_SIZE)
            try:
                dp.attach(topo.director_nic.ifname, "native")
                dp.apply(tutorial_rules(topo, SCHEDULER))
            except BaseException:
                dp.close()
                raise
        try:
            yield topo, dp
        finally:
            dp.close()
    finally:
        lab_api.down(topo)


@dataclass
class Round:
    repeat: int  # SYNs per spoofed source
    sent: int  # SYNs the generator sent
    seen: int  # packets the director counted
    at_reals: int  # flood frames the director forwarded to the reals
    flood_s: float
    evicted: dict[str, int]  # the director's estimates (added - removed - present) by table
    held: int  # established connections with a known real before the flood
    broken: dict[str, int]  # outcome ("reset", "timeout", "moved to rs2", ...) -> connections
    unanswered: int  # replacements that got no answer
    half_open: int  # half-open entries live when the counts were compared
    counts_equal: bool
    live: Counts
    table: Counts

    def line(self, n: int) -> str:
        broken = sum(self.broken.values())
        evicted = ", ".join(f"{v:,} from {k}" for k, v in self.evicted.items())
        detail = ", ".join(f"{k}: {v}" for k, v in sorted(self.broken.items())) or "-"
        counts = "equal" if self.counts_equal else f"DIFFER live {self._fmt(self.live)} table {self._fmt(self.table)}"
        return (f"round {n}: {self.seen:,} SYNs ({self.repeat} per source) at the director, {self.sent:,} sent, "
                f"{self.at_reals:,} forwarded, in {self.flood_s:.1f} s; evicted {evicted}; "
                f"broken {broken}/{self.held} ({detail}); unanswered replacements {self.unanswered}; "
                f"then {self.half_open} half-open, counts {counts}")

    @staticmethod
    def _fmt(counts: Counts) -> str:
        return " ".join(f"{svc.proto.name} {rip}:{port}={a}/{i}" for (svc, (rip, port)), (a, i)
                        in sorted(counts.items(), key=str))


def evictions(dp: Dataplane) -> dict[str, int]:
    """Entries the LRU evicted so far, by table (connections, half-open ones)."""
    usage = dp.conn_table_usage()
    return {table: int(usage[key]) for table, key in (("conns", "evicted"), ("half_open", "half_open_evicted"))}


def replace(topo: Topology, conns: list[Conn], indexes: list[int]) -> int:
    """New connections in place of conns[i] for i in `indexes`, each with the real of its first answer ("" when
    it did not answer: replaced again after the next flood). Returns how many did not answer."""
    fresh = open_connections(topo, len(indexes))
    failed = 0
    for i, conn, outcome in zip(indexes, fresh, ask_all(fresh), strict=True):
        conns[i].sock.close()
        conns[i] = conn
        conn.real = outcome if outcome in REALS else ""
        failed += not conn.real
    return failed


def test_syn_flood_of_100x_the_table_evicts_no_established_connection() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < 2 * CONNECTIONS + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * CONNECTIONS + 256), hard))
    rounds: list[Round] = []
    with flood_lab() as (topo, dp):
        dp.set_state_timeout("SYN_RECV", HALF_OPEN_TIMEOUT)
        generator = Generator(topo)
        conns = open_connections(topo, CONNECTIONS)
        try:
            first = ask_all(conns)
            assert all(real in REALS for real in first), f"first requests: {Counter(first)}"
            for conn, real in zip(conns, first, strict=True):
                conn.real = real
            log.info("flood test: %d connections held, %s", len(conns), Counter(first))
            dp.wait_passes(1)  # the sweeper has seen them: the first eviction estimate starts true
            for n in range(ROUNDS):
                evicted_before = evictions(dp)
                repeat = REPEATS[n % len(REPEATS)]
                sent, seen, at_reals, seconds = generator.flood(dp, FLOOD, repeat)
                flood_end = time.monotonic()
                dp.wait_passes(1)  # the eviction estimate reads what the sweeper's last pass found
                evicted = {k: v - evicted_before.get(k, 0) for k, v in evictions(dp).items()}
                outcomes = ask_all(conns)
                held = sum(bool(conn.real) for conn in conns)
                broken = Counter(f"moved to {outcome}" if outcome in REALS else outcome
                                 for conn, outcome in zip(conns, outcomes, strict=True)
                                 if conn.real and outcome != conn.real)
                # Every round holds CONNECTIONS: the broken ones are replaced.
                unanswered = replace(topo, conns, [i for i, (conn, outcome) in enumerate(zip(conns, outcomes,
                                                   strict=True)) if outcome != conn.real or not conn.real])
                half_open, equal, live, table = counts_after_expiry(dp, flood_end)
                rounds.append(Round(repeat, sent, seen, at_reals, seconds, evicted, held, dict(broken), unanswered,
                                    half_open, equal, live, table))
                log.info("flood test: %s", rounds[-1].line(n + 1))
        finally:
            for conn in conns:
                conn.sock.close()
            generator.close()
    report = "\n".join(r.line(n + 1) for n, r in enumerate(rounds))
    print(report)
    assert all(r.seen >= FLOOD for r in rounds), f"the generator fell short of {FLOOD:,} SYNs:\n{report}"
    assert not any(r.broken for r in rounds), f"established connections broke:\n{report}"
    assert not any(r.half_open for r in rounds), f"the flood's half-open entries did not expire:\n{report}"
    assert all(r.counts_equal for r in rounds), f"the schedulers' counts differ from the table:\n{report}"
