"""Per-packet cost of the pyvs XDP program, by BPF_PROG_TEST_RUN, beside bare reference programs run alongside.

    python -m benchmarks packet [--repeat N] [--new-repeat N] [--runs N] [--reals 2,100,1000] [--conns 100000]

Cases: established TCP, established UDP, non-service pass-through (--repeat repetitions of one frame), and new
TCP flows under a flood (--new-repeat): a SYN from a new source each repetition (it makes a half-open entry),
and a whole handshake, a SYN from a new source then its ACK (the ACK moves the entry to the connection table).
The references are an empty program, a bare MAC swap, a bare LRU-hash hit / miss+insert of the 5-tuple, the
same miss+insert in an LRU hash with per-CPU lists (BPF_F_NO_COMMON_LRU) and a handshake (insert, then hit) in
it. The kernel reports the average time of one repetition; each figure is the median of --runs runs (the spread
is printed too). Handshakes are driven by bench_handshake (bpf/bare.c), which rewrites the frame and tail-calls
the program measured; its own cost (measured around the empty program) is taken out of the handshake figures.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether

from pyvs.dataplane import Dataplane, libbpf, scratch_dataplane
from pyvs.dataplane.build import build_object, object_path
from pyvs.dataplane.neighbours import NextHop
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey

HERE = Path(__file__).parent
VIP = IPv4Address("198.18.0.100")
NEW_FLOWS = ("PYVS_BENCH_NEW_FLOWS",)


@dataclass
class Figure:
    name: str
    reals: int | None
    median_ns: float
    spread_ns: float  # max - min over the runs


def frame(l4: TCP | UDP, src: str = "198.18.1.2", dst: str = str(VIP)) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:0a") / IP(src=src, dst=dst) / l4)


def measure(prog_fd: int, packet: bytes, repeat: int, runs: int) -> tuple[float, float]:
    samples = [libbpf.prog_test_run(prog_fd, packet, repeat).duration_ns for _ in range(runs)]
    return statistics.median(samples), max(samples) - min(samples)


def static_neighbour(rip: IPv4Address) -> NextHop:
    return NextHop(0, "02:00:00:00:00:0a", f"02:00:00:00:{rip.packed[2]:02x}:{rip.packed[3]:02x}")


def rules_with(reals: int) -> Rules:
    rules = Rules()
    for proto in (Protocol.TCP, Protocol.UDP):
        key = ServiceKey(proto, VIP, 80)
        svc = Service(key, "rr")
        for n in range(reals):
            rip = IPv4Address(int(IPv4Address("198.18.4.0")) + 1 + n)
            svc.reals[(rip, 80)] = Real(rip, 80, 1)
        rules.services[key] = svc
    return rules


def client(n: int) -> tuple[str, int]:
    """The n-th synthetic client: an address in 198.19.0.0/16 and a source port."""
    return str(IPv4Address(int(IPv4Address("198.19.0.0")) + n % 65536)), 1024 + n // 65536


def populate(dp: Dataplane, conns: int) -> None:
    """`conns` established TCP connections, as the program itself records them."""
    fd = dp.program_fd()
    for n in range(conns):
        src, sport = client(n)
        libbpf.prog_test_run(fd, frame(TCP(sport=sport, dport=80, flags="S"), src=src))
        libbpf.prog_test_run(fd, frame(TCP(sport=sport, dport=80, flags="A"), src=src))


def measure_handshake(wrapper: libbpf.BpfObject, target_fd: int, packet: bytes, repeat: int, runs: int,
                      overhead: float) -> tuple[float, float]:
    """ns of one handshake (SYN + ACK) of `target_fd`, less the wrapper's own cost of two packets."""
    libbpf.map_update(wrapper.map_fd("handshake_target"), ctypes.c_uint32(0), ctypes.c_uint32(target_fd))
    median, spread = measure(wrapper.prog_fd("bench_handshake"), packet, repeat, runs)
    return 2 * (median - overhead), 2 * spread


def bench_pyvs(reals: int, conns: int, repeat: int, new_repeat: int, runs: int, overhead: float) -> list[Figure]:
    with scratch_dataplane(f"pyvsbench-{reals}", static_neighbour) as dp:
        dp.apply(rules_with(reals))
        populate(dp, conns)
        libbpf.prog_test_run(dp.program_fd(), frame(UDP(sport=5353, dport=80)))
        src, sport = client(conns // 2)
        cases = {
            "established TCP": (dp.program_fd(), frame(TCP(sport=sport, dport=80, flags="A"), src=src)),
            "established UDP": (dp.program_fd(), frame(UDP(sport=5353, dport=80))),
            "pass-through": (dp.program_fd(), frame(TCP(sport=1, dport=22, flags="A"), dst="198.18.0.1")),
        }
        figures = [Figure(name, reals, *measure(fd, packet, repeat, runs)) for name, (fd, packet) in cases.items()]
        syn = frame(TCP(sport=40000, dport=80, flags="S"))
        inner = {table: dp._shard_fd(table, 0) for table in ("conns", "half_open")}  # noqa: SLF001
        with libbpf.BpfObject(str(object_path("xdp", NEW_FLOWS)), str(dp.pin_dir),
                              inner_map_fds={k: v for k, v in inner.items() if v is not None}) as new_flows:
            figures.append(Figure("new TCP flow: SYN", reals,
                                  *measure(new_flows.prog_fd("pyvs_xdp"), syn, new_repeat, runs)))
        promoted = dp.counters()["half_open_promoted"]
        with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper:
            figures.append(Figure("new TCP flow: SYN+ACK", reals,
                                  *measure_handshake(wrapper, dp.program_fd(), syn, new_repeat, runs, overhead)))
        promoted = dp.counters()["half_open_promoted"] - promoted
        if promoted < 0.9 * new_repeat * runs / 2:  # the driver's ACKs must find their SYN's half-open entry
            raise RuntimeError(f"only {promoted} of {new_repeat * runs // 2} handshakes completed")
        return figures


def bench_bare(repeat: int, new_repeat: int, runs: int) -> tuple[list[Figure], float]:
    """The reference figures, and the handshake driver's own cost per packet (around the empty program)."""
    packet = frame(TCP(sport=40000, dport=80, flags="A"))
    figures = []
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as bare:
        for name, prog in (("bare empty", "bare_empty"), ("bare MAC swap", "bare_macswap"),
                           ("bare LRU hit", "bare_lru")):
            figures.append(Figure(name, None, *measure(bare.prog_fd(prog), packet, repeat, runs)))
        wrapped_empty = measure_handshake(bare, bare.prog_fd("bare_empty"), packet, new_repeat, runs, 0)[0] / 2
        overhead = wrapped_empty - figures[0].median_ns
        figures.append(Figure("handshake driver", None, overhead, 0))
        with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper:
            figures.append(Figure("bare per-CPU LRU SYN+ACK", None,
                                  *measure_handshake(wrapper, bare.prog_fd("bare_lru_percpu"), packet, new_repeat,
                                                     runs, overhead)))
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c", NEW_FLOWS))) as bare:
        figures.append(Figure("bare LRU miss+insert", None,
                              *measure(bare.prog_fd("bare_lru"), packet, new_repeat, runs)))
        figures.append(Figure("bare per-CPU LRU insert", None,
                              *measure(bare.prog_fd("bare_lru_percpu"), packet, new_repeat, runs)))
    return figures, overhead


TARGETS = (  # (pyvs case, reference, allowed ratio or None: printed only), at the largest real count
    ("established TCP", "bare LRU hit", 1.2),
    ("pass-through", "bare MAC swap", 1.2),
    ("new TCP flow: SYN", "bare per-CPU LRU insert", None),
    ("new TCP flow: SYN+ACK", "bare per-CPU LRU SYN+ACK", None),
    ("new TCP flow: SYN+ACK", "bare per-CPU LRU insert", None),
)


def report(figures: list[Figure], largest: int) -> list[str]:
    lines = [f"{'case':<24} {'reals':>6} {'ns/packet':>10} {'spread':>8}"]
    lines += [f"{f.name:<24} {f.reals or '':>6} {f.median_ns:>10.1f} {f.spread_ns:>8.1f}" for f in figures]
    lines.append("")
    by_name = {(f.name, f.reals): f for f in figures}
    for case, reference, limit in TARGETS:
        ratio = by_name[(case, largest)].median_ns / max(by_name[(reference, None)].median_ns, 1)
        verdict = "(no target)" if limit is None else f"(target <= {limit}x) {'met' if ratio <= limit else 'MISSED'}"
        lines.append(f"{case} at {largest} reals / {reference}: {ratio:.2f}x {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks packet", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=10_000_000, help="repetitions per run (default 1e7)")
    parser.add_argument("--new-repeat", type=int, default=2_000_000,
                        help="repetitions per run of the new-flow cases (default 2e6: a flood that fills the tables)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is kept (default 5)")
    parser.add_argument("--reals", default="2,100,1000", help="real-server counts (default 2,100,1000)")
    parser.add_argument("--conns", type=int, default=100_000, help="live connections in the table (default 1e5)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "packet_cost.json")
    args = parser.parse_args(argv)
    counts = [int(n) for n in args.reals.split(",")]
    started = time.time()
    figures, overhead = bench_bare(args.repeat, args.new_repeat, args.runs)
    for reals in counts:
        figures += bench_pyvs(reals, args.conns, args.repeat, args.new_repeat, args.runs, overhead)
    lines = report(figures, max(counts))
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": started, "repeat": args.repeat, "new_repeat": args.new_repeat,
                                    "runs": args.runs,
                                    "conns": args.conns, "figures": [asdict(f) for f in figures],
                                    "summary": lines}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0
