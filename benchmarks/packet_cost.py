"""Per-packet cost of the pyvs XDP program, by BPF_PROG_TEST_RUN, beside bare reference programs run alongside.

    python -m benchmarks packet [--repeat N] [--new-repeat N] [--runs N] [--reals 2,100,1000] [--conns 100000]

Cases: established TCP, established UDP, non-service pass-through (--repeat repetitions of one frame), and new
TCP flows under a flood (--new-repeat): a SYN from a new source each repetition (it makes a half-open entry),
and a whole handshake, a SYN from a new source then its ACK (the ACK moves the entry to the connection table).
The references are an empty program, a bare MAC swap, a bare LRU-hash hit / miss+insert of the 5-tuple, the
same miss+insert in an LRU hash with per-CPU lists (BPF_F_NO_COMMON_LRU) and a handshake (insert, then hit) in
it. The same cases run with IPv6 (IPv6 services beside the IPv4 ones, as many connections, references keyed by
the IPv6 5-tuple); their figures come after the IPv4 ones, so the IPv4 figures keep their places in the results.
NAT (ipvsadm -m): a TCP service by direct routing and one by NAT to port 8080 over the same reals, in one data plane:
an established client packet of each, the NAT connection's reply (the real's packet, rewritten back to VIP:vport)
and a new NAT flow's SYN beside a new DR flow's, each frame restored before every repetition by bench_restore
(bpf/bare.c: NAT rewrites the frame; the driver's own cost, measured around the empty program, is taken out);
`--only-nat` runs these alone (results/packet_cost_nat.json).
The kernel reports the average time of one repetition; each figure is the median of --runs runs (the spread is
printed too). Handshakes are driven by bench_handshake(6) (bpf/bare.c), which rewrites the frame and tail-calls
the program measured; its own cost (measured around the empty program) is taken out of the handshake figures.

Tunnel forwarding (--tunnels-only runs these alone, into results/packet_cost_tun.json): an established TCP segment
(64 B and 1400 B frames) to a DR real and to tunnel reals of each type (ipip, gue, gue with its UDP checksum, gre,
gre with its checksum), in one data plane, as a ratio to the DR path of the same run. BPF_PROG_TEST_RUN does not
reset the frame between repetitions and an encapsulated frame is no longer for a VIP, so these figures are the
median of --tun-samples single-repetition runs (the kernel's timer around one run of the program, the DR case
measured the same way), less the median of as many single runs of the empty program (the timer's own cost).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import time
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyvs import netns
from pyvs.dataplane import Dataplane, libbpf, scratch_dataplane
from pyvs.dataplane.base import install_calls
from pyvs.dataplane.build import build_object, object_path
from pyvs.dataplane.neighbours import NextHop
from pyvs.model import Forwarding, IPAddress, Protocol, Real, Rules, Service, ServiceKey, Tunnel

HERE = Path(__file__).parent
VIP = IPv4Address("198.18.0.100")
VIP6 = IPv6Address("2001:db8::100")
V6 = " (IPv6)"  # the suffix of the IPv6 cases' names
NEW_FLOWS = ("PYVS_BENCH_NEW_FLOWS",)


@dataclass
class Figure:
    name: str
    reals: int | None
    median_ns: float
    spread_ns: float  # max - min over the runs


def frame(l4: TCP | UDP, src: str = "198.18.1.2", dst: str = str(VIP)) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:0a") / IP(src=src, dst=dst) / l4)


def frame6(l4: TCP | UDP, src: str = "2001:db8:1::2", dst: str = str(VIP6)) -> bytes:
    return bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:0a") / IPv6(src=src, dst=dst) / l4)


def measure(prog_fd: int, packet: bytes, repeat: int, runs: int) -> tuple[float, float]:
    samples = [libbpf.prog_test_run(prog_fd, packet, repeat).duration_ns for _ in range(runs)]
    return statistics.median(samples), max(samples) - min(samples)


def static_neighbour(rip: IPAddress) -> NextHop:
    return NextHop(0, "02:00:00:00:00:0a", f"02:00:00:00:{rip.packed[-2]:02x}:{rip.packed[-1]:02x}")


def rules_with(reals: int, ipv6: bool = False) -> Rules:
    """rr services on TCP and UDP port 80 of the VIP over `reals` reals (and the same for IPv6 with `ipv6`)."""
    rules = Rules()
    families: list[tuple[IPAddress, IPAddress]] = [(VIP, IPv4Address("198.18.4.0"))]
    if ipv6:
        families.append((VIP6, IPv6Address("2001:db8:4::")))
    for vip, first in families:
        for proto in (Protocol.TCP, Protocol.UDP):
            key = ServiceKey(proto, vip, 80)
            svc = Service(key, "rr")
            for n in range(reals):
                rip = type(first)(int(first) + 1 + n)
                svc.reals[(rip, 80)] = Real(rip, 80, 1)
            rules.services[key] = svc
    return rules


def client(n: int) -> tuple[str, int]:
    """The n-th synthetic client: an address in 198.19.0.0/16 and a source port."""
    return str(IPv4Address(int(IPv4Address("198.19.0.0")) + n % 65536)), 1024 + n // 65536


def client6(n: int) -> tuple[str, int]:
    """The n-th synthetic IPv6 client: an address in 2001:db8:1::/64 and a source port."""
    return str(IPv6Address(int(IPv6Address("2001:db8:1::")) + 1 + n % 65536)), 1024 + n // 65536


def populate(dp: Dataplane, conns: int, ipv6: bool = False, port: int = 80) -> None:
    """`conns` established TCP connections to `port`, as the program itself records them."""
    fd = dp.program_fd()
    make, who = (frame6, client6) if ipv6 else (frame, client)
    for n in range(conns):
        src, sport = who(n)
        libbpf.prog_test_run(fd, make(TCP(sport=sport, dport=port, flags="S"), src=src))
        libbpf.prog_test_run(fd, make(TCP(sport=sport, dport=port, flags="A"), src=src))


def measure_handshake(wrapper: libbpf.BpfObject, target_fd: int, packet: bytes, repeat: int, runs: int,
                      overhead: float, driver: str = "bench_handshake") -> tuple[float, float]:
    """ns of one handshake (SYN + ACK) of `target_fd`, less the wrapper's own cost of two packets."""
    libbpf.map_update(wrapper.map_fd("handshake_target"), ctypes.c_uint32(0), ctypes.c_uint32(target_fd))
    median, spread = measure(wrapper.prog_fd(driver), packet, repeat, runs)
    return 2 * (median - overhead), 2 * spread


def bench_pyvs(reals: int, conns: int, repeat: int, new_repeat: int, runs: int, overhead: float
               ) -> tuple[list[Figure], list[Figure]]:
    """The IPv4 figures and the IPv6 ones, of one data plane holding both families' services and connections."""
    with scratch_dataplane(f"pyvsbench-{reals}", static_neighbour) as dp:
        dp.apply(rules_with(reals, ipv6=True))
        populate(dp, conns)
        populate(dp, conns, ipv6=True)
        libbpf.prog_test_run(dp.program_fd(), frame(UDP(sport=5353, dport=80)))
        libbpf.prog_test_run(dp.program_fd(), frame6(UDP(sport=5353, dport=80)))
        src, sport = client(conns // 2)
        src6, sport6 = client6(conns // 2)
        cases = {
            "established TCP": frame(TCP(sport=sport, dport=80, flags="A"), src=src),
            "established UDP": frame(UDP(sport=5353, dport=80)),
            "pass-through": frame(TCP(sport=1, dport=22, flags="A"), dst="198.18.0.1"),
        }
        cases6 = {
            "established TCP" + V6: frame6(TCP(sport=sport6, dport=80, flags="A"), src=src6),
            "established UDP" + V6: frame6(UDP(sport=5353, dport=80)),
            "pass-through" + V6: frame6(TCP(sport=1, dport=22, flags="A"), dst="2001:db8::1"),
        }
        figures = [Figure(name, reals, *measure(dp.program_fd(), packet, repeat, runs))
                   for name, packet in cases.items()]
        figures6 = [Figure(name, reals, *measure(dp.program_fd(), packet, repeat, runs))
                    for name, packet in cases6.items()]
        syn = frame(TCP(sport=40000, dport=80, flags="S"))
        syn6 = frame6(TCP(sport=40000, dport=80, flags="S"))
        inner = {table: dp._shard_fd(table, 0) for table in ("conns", "half_open", "conns6", "half_open6")}  # noqa: SLF001
        with libbpf.BpfObject(str(object_path("xdp", NEW_FLOWS)), str(dp.pin_dir),
                              inner_map_fds={k: v for k, v in inner.items() if v is not None}) as new_flows:
            figures.append(Figure("new TCP flow: SYN", reals,
                                  *measure(new_flows.prog_fd("pyvs_xdp"), syn, new_repeat, runs)))
            install_calls(new_flows)  # its pyvs_xdp tail-calls its own pyvs_xdp6 (new flows too)
            try:
                figures6.append(Figure("new TCP flow: SYN" + V6, reals,
                                       *measure(new_flows.prog_fd("pyvs_xdp"), syn6, new_repeat, runs)))
            finally:
                install_calls(dp.program())
        for driver, packet, target in (("bench_handshake", syn, figures), ("bench_handshake6", syn6, figures6)):
            promoted = dp.counters()["half_open_promoted"]
            with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper:
                target.append(Figure("new TCP flow: SYN+ACK" + (V6 if target is figures6 else ""), reals,
                                     *measure_handshake(wrapper, dp.program_fd(), packet, new_repeat, runs, overhead,
                                                        driver)))
            promoted = dp.counters()["half_open_promoted"] - promoted
            if promoted < 0.9 * new_repeat * runs / 2:  # the driver's ACKs must find their SYN's half-open entry
                raise RuntimeError(f"{driver}: only {promoted} of {new_repeat * runs // 2} handshakes completed")
        return figures, figures6


def bench_bare(repeat: int, new_repeat: int, runs: int) -> tuple[list[Figure], float]:
    """The IPv4 reference figures, and the handshake driver's own cost per packet (around the empty program)."""
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


def bench_bare6(repeat: int, new_repeat: int, runs: int, overhead: float) -> list[Figure]:
    """The IPv6 references: an LRU hit, a per-CPU LRU insert and handshake, keyed by the IPv6 5-tuple."""
    packet = frame6(TCP(sport=40000, dport=80, flags="A"))
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as bare:
        figures = [Figure("bare LRU hit" + V6, None, *measure(bare.prog_fd("bare_lru6"), packet, repeat, runs))]
        with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper:
            figures.append(Figure("bare per-CPU LRU SYN+ACK" + V6, None,
                                  *measure_handshake(wrapper, bare.prog_fd("bare_lru6_percpu"), packet, new_repeat,
                                                     runs, overhead, "bench_handshake6")))
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c", NEW_FLOWS))) as bare:
        figures.append(Figure("bare per-CPU LRU insert" + V6, None,
                              *measure(bare.prog_fd("bare_lru6_percpu"), packet, new_repeat, runs)))
    return figures


RESTORE_BYTES = 64  # bench_restore writes back this much of the frame (Ethernet, IPv4 and TCP headers, 10 bytes more)
NAT_PORT, NAT_REAL_PORT = 81, 8080  # the NAT service VIP:81 -> RIP:8080, beside the DR one on port 80
RESTORED = " (restored)"  # DR cases measured through bench_restore, as the NAT ones are


def nat_rules(reals: int) -> Rules:
    """rr TCP services on the VIP over the same `reals` reals: port 80 by direct routing, port 81 by NAT to 8080."""
    rules = Rules()
    first = IPv4Address("198.18.4.0")
    for port, rport, method in ((80, 80, Forwarding.ROUTE), (NAT_PORT, NAT_REAL_PORT, Forwarding.MASQ)):
        key = ServiceKey(Protocol.TCP, VIP, port)
        svc = Service(key, "rr")
        for n in range(reals):
            rip = IPv4Address(int(first) + 1 + n)
            svc.reals[(rip, rport)] = Real(rip, rport, 1, method)
        rules.services[key] = svc
    return rules


def measure_restored(wrapper: libbpf.BpfObject, target_fd: int, packet: bytes, repeat: int, runs: int,
                     overhead: float) -> tuple[float, float]:
    """ns of `target_fd` on `packet`, restored before every repetition, less the restoring driver's own cost."""
    if len(packet) < RESTORE_BYTES:
        raise ValueError(f"a restored frame has {RESTORE_BYTES} bytes at least, not {len(packet)}")
    copy = (ctypes.c_uint8 * RESTORE_BYTES)(*packet[:RESTORE_BYTES])
    libbpf.map_update(wrapper.map_fd("restore_frame"), ctypes.c_uint32(0), copy)
    libbpf.map_update(wrapper.map_fd("handshake_target"), ctypes.c_uint32(0), ctypes.c_uint32(target_fd))
    median, spread = measure(wrapper.prog_fd("bench_restore"), packet, repeat, runs)
    return median - overhead, spread


FIB_NETNS = "pyvsbench-fib"
SWAP_HERE = "bare MAC swap (NAT run)"


def measure_fib(wrapper: libbpf.BpfObject, packet: bytes, repeat: int, runs: int) -> tuple[float, float]:
    """bare_fib in a namespace of its own whose FIB routes the clients (198.19.0.0/16) to a known neighbour: what a
    NAT reply would cost routed by bpf_fib_lookup."""
    if netns.exists(FIB_NETNS):
        netns.remove(FIB_NETNS)
    netns.create(FIB_NETNS)
    try:
        for argv in (["ip", "link", "add", "pyvsfib0", "type", "veth", "peer", "name", "pyvsfib1"],
                     ["ip", "link", "set", "pyvsfib1", "up"], ["ip", "link", "set", "pyvsfib0", "up"],
                     ["ip", "link", "set", "lo", "up"], ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                     ["ip", "addr", "add", "198.18.5.1/24", "dev", "pyvsfib0"],
                     ["ip", "neigh", "add", "198.18.5.2", "lladdr", "02:00:00:00:05:02", "dev", "pyvsfib0",
                      "nud", "permanent"],
                     ["ip", "route", "add", "198.19.0.0/16", "via", "198.18.5.2"]):
            netns.run_in_netns(FIB_NETNS, argv)
        with netns.in_netns(FIB_NETNS):
            if libbpf.prog_test_run(wrapper.prog_fd("bare_fib"), packet).verdict_name != "XDP_TX":
                raise RuntimeError(f"bare_fib found no route in {FIB_NETNS}")
            return measure(wrapper.prog_fd("bare_fib"), packet, repeat, runs)
    finally:
        netns.remove(FIB_NETNS)


def bench_nat(reals: int, conns: int, repeat: int, new_repeat: int, runs: int) -> list[Figure]:
    """NAT beside direct routing in one data plane (nat_rules), every frame restored before each repetition."""
    pad = Raw(bytes(10))  # 54 bytes of headers + 10: what bench_restore writes back
    src, sport = client(conns // 2)
    dr = frame(TCP(sport=sport, dport=80, flags="A") / pad, src=src)
    nat = frame(TCP(sport=sport, dport=NAT_PORT, flags="A") / pad, src=src)
    to_client = frame(TCP(sport=80, dport=sport, flags="A") / pad, src=str(VIP), dst=src)  # a reply's route
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper, \
            scratch_dataplane(f"pyvsbnat-{reals}", static_neighbour) as dp:
        empty = measure(wrapper.prog_fd("bare_empty"), dr, repeat, runs)[0]
        overhead = measure_restored(wrapper, wrapper.prog_fd("bare_empty"), dr, repeat, runs, 0)[0] - empty
        figures = [Figure("restore driver", None, overhead, 0),
                   Figure(SWAP_HERE, None, *measure(wrapper.prog_fd("bare_macswap"), dr, repeat, runs)),
                   Figure("bare FIB lookup + MAC swap", None, *measure_fib(wrapper, to_client, repeat, runs))]
        dp.apply(nat_rules(reals))
        populate(dp, conns)
        populate(dp, conns, port=NAT_PORT)
        forwarded = Ether(libbpf.prog_test_run(dp.program_fd(), nat).data)[IP]
        if (forwarded.dport, forwarded.src) != (NAT_REAL_PORT, src):
            raise RuntimeError(f"the NAT service did not rewrite the client's packet: {forwarded.summary()}")
        reply = bytes(Ether(src="02:00:00:00:00:02", dst="02:00:00:00:00:0a") /
                      IP(src=forwarded.dst, dst=src) / TCP(sport=NAT_REAL_PORT, dport=sport, flags="A") / pad)
        replies = dp.counters()["nat_reply"]
        for name, packet in (("established TCP" + RESTORED, dr), ("NAT established TCP", nat),
                             ("NAT reply TCP", reply)):
            figures.append(Figure(name, reals, *measure_restored(wrapper, dp.program_fd(), packet, repeat, runs,
                                                                 overhead)))
        if dp.counters()["nat_reply"] - replies < repeat * runs:
            raise RuntimeError("the NAT reply case did not take the reply path every repetition")
        inner = {table: dp._shard_fd(table, 0) for table in ("conns", "half_open", "conns6", "half_open6")}  # noqa: SLF001
        with libbpf.BpfObject(str(object_path("xdp", NEW_FLOWS)), str(dp.pin_dir),
                              inner_map_fds={k: v for k, v in inner.items() if v is not None}) as new_flows:
            for name, port in (("new TCP flow: SYN" + RESTORED, 80), ("NAT new TCP flow: SYN", NAT_PORT)):
                syn = frame(TCP(sport=40000, dport=port, flags="S") / pad)
                figures.append(Figure(name, reals, *measure_restored(wrapper, new_flows.prog_fd("pyvs_xdp"), syn,
                                                                     new_repeat, runs, overhead)))
    return figures


NAT_TARGETS = (  # NAT against direct routing, both measured through bench_restore in the same run
    ("bare FIB lookup + MAC swap", SWAP_HERE, None),
    ("NAT established TCP", "established TCP" + RESTORED, None),
    ("NAT reply TCP", "established TCP" + RESTORED, None),
    ("NAT new TCP flow: SYN", "new TCP flow: SYN" + RESTORED, None),
)

TARGETS = (  # (pyvs case, reference, allowed ratio or None: printed only), at the largest real count; a reference
    # that is a pyvs case too (the IPv4 one of an IPv6 case) is taken at that count
    ("established TCP", "bare LRU hit", 1.2),
    ("pass-through", "bare MAC swap", 1.2),
    ("new TCP flow: SYN", "bare per-CPU LRU insert", None),
    ("new TCP flow: SYN+ACK", "bare per-CPU LRU SYN+ACK", None),
    ("new TCP flow: SYN+ACK", "bare per-CPU LRU insert", None),
    ("established TCP" + V6, "bare LRU hit" + V6, 1.2),
    ("established TCP" + V6, "established TCP", None),
    ("pass-through" + V6, "bare MAC swap", 1.2),
    ("new TCP flow: SYN" + V6, "bare per-CPU LRU insert" + V6, None),
    ("new TCP flow: SYN+ACK" + V6, "bare per-CPU LRU SYN+ACK" + V6, None),
)


TUNNELS = (("DR", None), ("tun ipip", Tunnel("ipip")), ("tun gue", Tunnel("gue", 6080)),
           ("tun gue csum", Tunnel("gue", 6080, "csum")), ("tun gre", Tunnel("gre")),
           ("tun gre csum", Tunnel("gre", 0, "csum")))
TUN_SIZES = (64, 1400)  # frame sizes of the established segment


def tunnel_neighbour(rip: IPAddress) -> NextHop:
    return NextHop(0, "02:00:00:00:00:0a", f"02:00:00:00:{rip.packed[-2]:02x}:{rip.packed[-1]:02x}", "198.18.2.10",
                   9000)


def tun_case(label: str, size: int) -> str:
    return f"established TCP {size} B, {label}"


def bench_tunnels(conns: int, samples: int) -> tuple[list[Figure], list[str]]:
    """An established TCP segment to a DR real and to tunnel reals of each type (one VIP each, 2 reals), with
    `conns` other connections in the table; each figure the median of `samples` single runs. Returns the figures
    and the ratio lines (each tunnel to DR, at each size)."""
    rules = Rules()
    for n, (_, tunnel) in enumerate(TUNNELS):
        key = ServiceKey(Protocol.TCP, IPv4Address(int(VIP) + n), 80)
        svc = Service(key, "rr")
        for r in range(2):
            rip = IPv4Address(int(IPv4Address("198.18.4.0")) + 16 * n + 1 + r)
            svc.reals[(rip, 80)] = Real(rip, 80, 1, Forwarding.TUNNEL if tunnel else Forwarding.ROUTE, tunnel=tunnel)
        rules.services[key] = svc
    figures = []
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as bare:  # the timer's own cost, taken out
        empty = bare.prog_fd("bare_empty")
        overhead = statistics.median(libbpf.prog_test_run(empty, frame(TCP())).duration_ns for _ in range(samples))
    with scratch_dataplane("pyvsbench-tun", tunnel_neighbour) as dp:
        dp.apply(rules)
        populate(dp, conns)
        fd = dp.program_fd()
        for n, (label, _) in enumerate(TUNNELS):
            vip = str(IPv4Address(int(VIP) + n))
            libbpf.prog_test_run(fd, frame(TCP(sport=41000, dport=80, flags="S"), dst=vip))
            libbpf.prog_test_run(fd, frame(TCP(sport=41000, dport=80, flags="A"), dst=vip))
            for size in TUN_SIZES:
                packet = frame(TCP(sport=41000, dport=80, flags="A") / Raw(bytes(size - 54)), dst=vip)
                first = libbpf.prog_test_run(fd, packet)
                if first.verdict_name != "XDP_TX":
                    raise RuntimeError(f"{label}: {first.verdict_name} instead of XDP_TX")
                times = [libbpf.prog_test_run(fd, packet).duration_ns for _ in range(samples)]
                figures.append(Figure(tun_case(label, size), 2, statistics.median(times) - overhead,
                                      sorted(times)[int(0.9 * len(times))] - min(times)))
    by_name = {f.name: f for f in figures}
    lines = [f"{tun_case(label, size)} / {tun_case('DR', size)}: "
             f"{by_name[tun_case(label, size)].median_ns / max(by_name[tun_case('DR', size)].median_ns, 1):.2f}x"
             for label, _ in TUNNELS[1:] for size in TUN_SIZES]
    return figures, lines


def report(figures: list[Figure], largest: int) -> list[str]:
    width = max(len(f.name) for f in figures)
    lines = [f"{'case':<{width}} {'reals':>6} {'ns/packet':>10} {'spread':>8}"]
    lines += [f"{f.name:<{width}} {f.reals or '':>6} {f.median_ns:>10.1f} {f.spread_ns:>8.1f}" for f in figures]
    lines.append("")
    by_name = {(f.name, f.reals): f for f in figures}
    for case, reference, limit in (*TARGETS, *NAT_TARGETS):
        found = by_name.get((case, largest)) or by_name.get((case, None))
        if found is None:
            continue  # not measured in this run (--only-nat)
        base = by_name.get((reference, largest)) or by_name[(reference, None)]
        ratio = found.median_ns / max(base.median_ns, 1)
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
    parser.add_argument("--tun-samples", type=int, default=20_000,
                        help="single runs per tunnel figure; the median is kept (default 2e4)")
    parser.add_argument("--tunnels-only", action="store_true",
                        help="only the tunnel cases (and the DR case beside them), into results/packet_cost_tun.json")
    parser.add_argument("--only-nat", action="store_true",
                        help="the NAT cases alone, at the largest real count (results/packet_cost_nat.json)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.tunnels_only:
        return tunnels_main(args)
    args.out = args.out or HERE / "results" / ("packet_cost_nat.json" if args.only_nat else "packet_cost.json")
    counts = [int(n) for n in args.reals.split(",")]
    started = time.time()
    figures: list[Figure] = []
    tun_lines: list[str] = []
    if not args.only_nat:
        figures, overhead = bench_bare(args.repeat, args.new_repeat, args.runs)
        figures6 = bench_bare6(args.repeat, args.new_repeat, args.runs, overhead)
        for reals in counts:
            four, six = bench_pyvs(reals, args.conns, args.repeat, args.new_repeat, args.runs, overhead)
            figures += four
            figures6 += six
        figures += figures6  # after the IPv4 figures: theirs keep their places in the results file
        tunnels, tun_lines = bench_tunnels(args.conns, args.tun_samples)
        figures += tunnels  # after the IPv6 figures, for the same reason
    # Last: the figures before them keep their places in the results file.
    figures += bench_nat(max(counts), args.conns, args.repeat, args.new_repeat, args.runs)
    lines = report(figures, max(counts)) + tun_lines
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": started, "repeat": args.repeat, "new_repeat": args.new_repeat,
                                    "runs": args.runs,
                                    "conns": args.conns, "figures": [asdict(f) for f in figures],
                                    "summary": lines}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0


def tunnels_main(args: argparse.Namespace) -> int:
    started = time.time()
    figures, ratios = bench_tunnels(args.conns, args.tun_samples)
    width = max(len(f.name) for f in figures)
    lines = [f"{'case':<{width}} {'ns/packet':>10} {'p90-min':>8}"]
    lines += [f"{f.name:<{width}} {f.median_ns:>10.1f} {f.spread_ns:>8.1f}" for f in figures]
    lines += ["", *ratios]
    print("\n".join(lines))
    out = args.out or HERE / "results" / "packet_cost_tun.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started": started, "samples": args.tun_samples, "conns": args.conns,
                               "figures": [asdict(f) for f in figures], "summary": lines}, indent=2))
    print(f"\nwritten: {out}")
    return 0
