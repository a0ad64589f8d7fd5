"""Forwarding rate on the lab: 64-byte frames to the VIP, packets per second counted at the reals.

    python -m benchmarks forwarding [--prefix pyvsb] [--seconds 2] [--runs 3] [--out FILE]

Builds its own lab (default_topology with the extra host on the switch, prefix --prefix) and removes it at the
end. The extra host runs the traffic generator: an XDP program run by BPF_PROG_RUN with
BPF_F_TEST_XDP_LIVE_FRAMES that sends 64-byte TCP (ACK) or UDP frames to VIP:80 from 256 source ports, as fast
as one CPU can. Each real counts and drops them with an XDP program on its NIC. On the director, in turn:
pyvs's XDP program (native, generic; with sloppy_tcp on, so that the generator's ACKs start connections as
IPVS's sloppy_tcp=1 would: without it pyvs passes a bare ACK without a connection to the kernel), the bare
forwarder of benchmarks/bpf/forward.c (MAC rewrite to one of the reals, XDP_TX; native, generic), the bare LRU
forwarder (the same with a flow lookup, and insert on a miss, in an LRU hash), and no XDP at all with the kernel
routing the frames to rs1 (ip_forward=1). Each figure is the median of --runs windows of --seconds; the spread
(max - min) is printed beside it, and the director's XDP run time per packet (BPF run-time stats, live).
The rates are the generator's (every case forwards what it sends); the director is judged by its XDP time.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import socket
import statistics
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scapy.layers.inet import IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Padding

from pyvs.dataplane import Dataplane, attach_pass_program, libbpf
from pyvs.dataplane.build import build_object
from pyvs.lab import lab
from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology, default_topology
from pyvs.netns import in_netns, run_in_netns, write_sysctl

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
GENERATOR = "attacker"  # the topology's extra host on the switch
ROUTED_NET = "198.18.3.0/24"  # kernel forwarding case: the director routes it to rs1
ROUTED_DST = "198.18.3.1"
FRAME_LEN = 60  # + 4 bytes of FCS on a wire: the 64-byte minimum (FRAME_LEN in bpf/forward.c)
CHUNK = 1 << 19  # frames per BPF_PROG_RUN call
MODES = {"native": libbpf.XDP_FLAGS_DRV_MODE, "generic": libbpf.XDP_FLAGS_SKB_MODE}
TARGETS = (  # (case, reference, at least this ratio) of the rate at the reals (issue 6)
    ("pyvs native", "bare forwarder native", 0.95),
    ("pyvs generic", "bare forwarder generic", 0.95),
    ("pyvs native", "kernel IP forwarding", 1.1),
)
NS_TARGETS = (  # (case, reference, at most this ratio) of the director's XDP time per packet, live (issue 9)
    ("pyvs native", "bare LRU forwarder native", 1.3),
    ("pyvs generic", "bare LRU forwarder generic", 1.3),
    ("pyvs native", "bare forwarder native", None),
)


@dataclass
class Rate:
    case: str
    proto: str
    pps: float  # median, counted at the reals
    spread: float  # max - min over the runs
    sent_pps: float  # median, what the generator sent
    director_bpf_ns: float  # the director's XDP program: average run time per packet (0: no program)
    samples: list[float] = field(default_factory=list)


class ForwardConfig(ctypes.Structure):
    """struct forward_config of bpf/forward.c."""

    _fields_ = [("vip", ctypes.c_uint32), ("generator", ctypes.c_uint32), ("director_mac", ctypes.c_uint8 * 6),
                ("real_macs", ctypes.c_uint8 * 12), ("pad", ctypes.c_uint8 * 2)]


def _mac_bytes(mac: str | None) -> bytes:
    if mac is None:
        raise ValueError("the lab topology gives every port a fixed MAC")
    return bytes.fromhex(mac.replace(":", ""))


def _load(topo: Topology) -> libbpf.BpfObject:
    """One instance of bpf/forward.c, configured for the lab."""
    obj = libbpf.BpfObject(str(build_object(HERE / "bpf" / "forward.c")))
    cfg = ForwardConfig(vip=int.from_bytes(socket.inet_aton(topo.vip), "little"),
                        generator=int.from_bytes(socket.inet_aton(topo.address_of(GENERATOR)), "little"))
    ctypes.memmove(cfg.director_mac, _mac_bytes(topo.director_nic.mac), 6)
    reals = b"".join(_mac_bytes(topo.port(node.name, "eth0").mac) for node in topo.reals[:2])
    ctypes.memmove(cfg.real_macs, reals, 12)
    libbpf.map_update(obj.map_fd("forward_config"), ctypes.c_uint32(0), cfg)
    return obj


def _packets(obj: libbpf.BpfObject) -> int:
    values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
    libbpf.map_lookup(obj.map_fd("packets"), ctypes.c_uint32(0), values)
    return sum(values)


def program_run_time(prog_id: int) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded BPF program; counted only while run-time stats are enabled."""
    info = json.loads(run_in_netns(None, ["bpftool", "-j", "prog", "show", "id", str(prog_id)]).stdout)
    return int(info.get("run_time_ns", 0)), int(info.get("run_cnt", 0))


def director_program(topo: Topology) -> int | None:
    """The id of the XDP program on the director's NIC, None when there is none."""
    with in_netns(topo.director.netns):
        attached = Dataplane.xdp_mode(topo.director_nic.ifname)
    return attached[1] if attached else None


def frame(topo: Topology, proto: str, dst: str) -> bytes:
    l4 = TCP(sport=1024, dport=80, flags="A") if proto == "tcp" else UDP(sport=1024, dport=80)
    packet = Ether(src=topo.port(GENERATOR, "eth0").mac, dst=topo.director_nic.mac) / IP(
        src=topo.address_of(GENERATOR), dst=dst) / l4
    return bytes(packet / Padding(b"\0" * max(0, FRAME_LEN - len(packet))))


class Bench:
    """The lab instrumented: counters on the reals, the generator ready, the director switchable."""

    def __init__(self, topo: Topology):
        self.topo = topo
        self.counters: list[libbpf.BpfObject] = []
        self.generator = _load(topo)
        self.forwarder = _load(topo)
        with in_netns(topo.switch.netns):  # XDP_TX out of a veth arrives only when its peer runs XDP
            attach_pass_program(f"{topo.prefix}-atk", "native")
        with in_netns(topo.node(GENERATOR).netns):
            self.generator_ifindex = socket.if_nametoindex("eth0")
        for node in topo.reals:
            counter = _load(topo)
            self.counters.append(counter)
            with in_netns(node.netns):
                libbpf.xdp_attach(socket.if_nametoindex("eth0"), counter.prog_fd("bench_count"), MODES["native"])

    def close(self) -> None:
        for node in self.topo.reals:
            with in_netns(node.netns):
                Dataplane.detach("eth0")
        for obj in (self.generator, self.forwarder, *self.counters):
            obj.close()

    def counted(self) -> int:
        return sum(_packets(counter) for counter in self.counters)

    def send(self, packet: bytes, seconds: float) -> tuple[float, float]:
        """Generate for `seconds`; returns (pps counted at the reals, pps sent)."""
        fd = self.generator.prog_fd("bench_generate")
        template = (ctypes.c_uint8 * FRAME_LEN).from_buffer_copy(packet)
        libbpf.map_update(self.generator.map_fd("template"), ctypes.c_uint32(0), template)
        before, sent = self.counted(), 0
        with in_netns(self.topo.node(GENERATOR).netns):
            started = time.monotonic()
            while time.monotonic() - started < seconds:
                libbpf.prog_run_live_frames(fd, packet, CHUNK, self.generator_ifindex)
                sent += CHUNK
            elapsed = time.monotonic() - started
        return (self.counted() - before) / elapsed, sent / elapsed

    @contextmanager
    def director(self, case: str) -> Iterator[str]:
        """Set the director up for `case`; yields the destination address the frames carry."""
        topo, nic = self.topo, self.topo.director_nic.ifname
        ns = topo.director.netns
        with in_netns(ns):
            Dataplane.detach(nic)
        kind, _, mode = case.rpartition(" ")
        try:
            if kind == "pyvs":
                with in_netns(ns), open_director(topo) as dp:
                    dp.set_sloppy_tcp(True)  # the generator sends ACKs only: let them start connections
                    dp.attach(nic, mode)
                yield topo.vip
            elif kind in ("bare forwarder", "bare LRU forwarder"):
                prog = "bench_forward" if kind == "bare forwarder" else "bench_forward_lru"
                with in_netns(ns):
                    libbpf.xdp_attach(socket.if_nametoindex(nic), self.forwarder.prog_fd(prog), MODES[mode])
                yield topo.vip
            else:
                yield from self._kernel_forwarding()
        finally:
            with in_netns(ns):
                Dataplane.detach(nic)

    def _kernel_forwarding(self) -> Iterator[str]:
        topo, ns = self.topo, self.topo.director.netns
        nic = topo.director_nic.ifname
        route = ["ip", "route", "add", ROUTED_NET, "via", topo.address_of(topo.reals[0].name), "dev", nic]
        run_in_netns(ns, route)
        for key, value in (("net.ipv4.ip_forward", 1), ("net.ipv4.conf.all.send_redirects", 0),
                           (f"net.ipv4.conf.{nic}.send_redirects", 0)):
            write_sysctl(key, value, ns)
        try:
            yield ROUTED_DST
        finally:
            write_sysctl("net.ipv4.ip_forward", 0, ns)
            run_in_netns(ns, ["ip", "route", "del", ROUTED_NET], check=False)


CASES = ("pyvs native", "pyvs generic", "bare forwarder native", "bare forwarder generic", "bare LRU forwarder native",
         "bare LRU forwarder generic", "kernel IP forwarding")


def run(topo: Topology, seconds: float, runs: int) -> list[Rate]:
    bench = Bench(topo)
    stats_fd = libbpf.enable_run_time_stats()
    rates = []
    try:
        for case in CASES:
            with bench.director(case) as dst:
                prog_id = director_program(topo)
                for proto in ("tcp", "udp"):
                    packet = frame(topo, proto, dst)
                    bench.send(packet, 0.2)  # warm-up: the flows are in the tables, the ARP entries made
                    before = program_run_time(prog_id) if prog_id else (0, 0)
                    pairs = [bench.send(packet, seconds) for _ in range(runs)]
                    after = program_run_time(prog_id) if prog_id else (0, 1)
                    counted = [p for p, _ in pairs]
                    rates.append(Rate(case, proto, statistics.median(counted), max(counted) - min(counted),
                                      statistics.median(s for _, s in pairs),
                                      (after[0] - before[0]) / max(after[1] - before[1], 1), counted))
                    log.info("forwarding: %s %s %.0f pps", case, proto, rates[-1].pps)
    finally:
        os.close(stats_fd)
        bench.close()
    return rates


def report(rates: list[Rate]) -> list[str]:
    lines = [f"{'director':<27} {'proto':<5} {'pps at reals':>13} {'spread':>10} {'sent pps':>11} {'XDP ns/pkt':>10}"]
    lines += [f"{r.case:<27} {r.proto:<5} {r.pps:>13,.0f} {r.spread:>10,.0f} {r.sent_pps:>11,.0f} "
              f"{r.director_bpf_ns or float('nan'):>10.0f}" for r in rates]
    lines.append("")
    by_case = {(r.case, r.proto): r for r in rates}
    for case, reference, limit in TARGETS:
        for proto in ("tcp", "udp"):
            ratio = by_case[(case, proto)].pps / max(by_case[(reference, proto)].pps, 1)
            verdict = "met" if ratio >= limit else "MISSED"
            lines.append(f"{case} / {reference} ({proto}): {ratio:.2f}x (target >= {limit}x) {verdict}")
    lines.append("")
    for case, reference, most in NS_TARGETS:
        for proto in ("tcp", "udp"):
            ratio = by_case[(case, proto)].director_bpf_ns / max(by_case[(reference, proto)].director_bpf_ns, 1)
            verdict = "(no target)" if most is None else f"(target <= {most}x) {'met' if ratio <= most else 'MISSED'}"
            lines.append(f"XDP ns/packet {case} / {reference} ({proto}): {ratio:.2f}x {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks forwarding", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default="pyvsb", help="lab prefix (default pyvsb); its lab is built and removed")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of one measuring window (default 2)")
    parser.add_argument("--runs", type=int, default=3, help="windows per figure; the median is kept (default 3)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "forwarding.json")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.runs < 1:
        parser.error("--seconds must be > 0 and --runs >= 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    topo = default_topology(args.prefix, attacker=True)
    started = time.time()
    lab.up(topo)
    try:
        rates = run(topo, args.seconds, args.runs)
    finally:
        lab.down(topo)
    lines = report(rates)
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": started, "seconds": args.seconds, "runs": args.runs,
                                    "frame_bytes": FRAME_LEN + 4, "rates": [asdict(r) for r in rates],
                                    "summary": lines}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0
