"""The cost of connection sync per new connection (issue 12).

    python -m benchmarks sync [--handshakes 8000] [--runs 15] [--conns 50000]

Part 1, the data plane: a TCP handshake (a SYN from a new source, then its ACK, driven by bench_handshake of
bpf/bare.c as in `python -m benchmarks packet`) through pyvs's program by BPF_PROG_TEST_RUN, with PYVS_CFG_SYNC off
and on (the ACK's promotion writes one event into the ring buffer sync_events), interleaved run by run, and on with
the ring buffer full (the event is lost and counted). --handshakes per run fit in the ring buffer, which is read
empty between runs. The driver's own cost is taken out; the figures are per handshake (two packets).

Part 2, the sync daemon's CPU (process time) per 1000 new connections: the master's half (read the events of
--conns handshakes from the ring buffer, find their reals, batch them into messages of 1472 bytes and send them over
UDP), its refresh (every 120 s: the tables read, the connections that saw packets queued again; here all of them),
and the backup's half (decode the messages, place and write every entry into another data plane's tables).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import socket
import statistics
import time
from pathlib import Path

from scapy.layers.inet import TCP

from benchmarks.packet_cost import HERE, frame, measure_handshake, rules_with, static_neighbour
from pyvs.dataplane import Dataplane, abi, libbpf, scratch_dataplane
from pyvs.dataplane.build import build_object
from pyvs.dataplane.synctable import SyncTable, set_sync, sync_events_fd
from pyvs.sync.codec import batches, decode_message, encode_message
from pyvs.sync.engine import SyncConfig, SyncEngine, SyncStats, apply_conn, conn_of_event

RING_ROOM = abi.SYNC_RING_SIZE // 64 - 1  # events the ring buffer holds (64 bytes a record, one kept free)


def drain(dp: Dataplane) -> int:
    got = [0]
    ring = libbpf.RingBuffer(sync_events_fd(dp), lambda _data: got.__setitem__(0, got[0] + 1))
    try:
        ring.consume()
    finally:
        ring.close()
    return got[0]


def driver_overhead(handshakes: int, runs: int) -> float:
    """ns per packet of bench_handshake itself (around the empty program)."""
    packet = frame(TCP(sport=40000, dport=80, flags="A"))
    with libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as bare:
        empty = statistics.median(libbpf.prog_test_run(bare.prog_fd("bare_empty"), packet, 2 * handshakes)
                                  .duration_ns for _ in range(runs))
        wrapped = measure_handshake(bare, bare.prog_fd("bare_empty"), packet, 2 * handshakes, runs, 0)[0] / 2
    return wrapped - empty


def data_plane_cost(handshakes: int, runs: int) -> dict[str, float]:
    """ns per handshake: sync off, on (read between runs), on with the ring buffer full."""
    overhead = driver_overhead(handshakes, runs)
    syn = frame(TCP(sport=40000, dport=80, flags="S"))
    samples: dict[str, list[float]] = {"off": [], "on": [], "on, ring buffer full": []}
    with scratch_dataplane("pyvsbench-sync", static_neighbour) as dp, \
            libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper:
        dp.apply(rules_with(100))
        for _ in range(runs):
            for case in samples:
                set_sync(dp, case != "off")
                if case == "on":
                    drain(dp)
                elif case.startswith("on,"):
                    while dp.counters()["sync_events_lost"] == 0:  # fill it
                        measure_handshake(wrapper, dp.program_fd(), syn, 2 * RING_ROOM, 1, overhead)
                samples[case].append(measure_handshake(wrapper, dp.program_fd(), syn, 2 * handshakes, 1,
                                                       overhead)[0])
        drain(dp)
        set_sync(dp, False)
        promoted = dp.counters()["half_open_promoted"]
        if promoted < 0.9 * handshakes * runs * len(samples):
            raise RuntimeError(f"only {promoted} handshakes completed")
    return {case: statistics.median(values) for case, values in samples.items()} | {
        f"{case} spread": max(values) - min(values) for case, values in samples.items()}


def daemon_cost(conns: int) -> dict[str, float]:
    """CPU seconds per 1000 connections of the master's and the backup's halves."""
    syn = frame(TCP(sport=40000, dport=80, flags="S"))
    with scratch_dataplane("pyvsbench-syncm", static_neighbour) as master, \
            scratch_dataplane("pyvsbench-syncb", static_neighbour) as backup, \
            libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c"))) as wrapper, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        master.apply(rules_with(100))
        backup.apply(rules_with(100))
        set_sync(master, True)
        sink.bind(("127.0.0.1", 0))
        sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 24)
        sender.connect(sink.getsockname())
        table = SyncTable(master)
        messages: list[bytes] = []
        master_cpu = 0.0
        made = 0
        while made < conns:
            chunk = min(RING_ROOM, conns - made)
            libbpf.map_update(wrapper.map_fd("handshake_target"), ctypes.c_uint32(0),
                              ctypes.c_uint32(master.program_fd()))
            libbpf.prog_test_run(wrapper.prog_fd("bench_handshake"), syn, 2 * chunk)
            made += chunk
            started = time.process_time()
            pending = []

            def on_event(data: bytes, pending: list = pending) -> None:  # type: ignore[type-arg]
                conn = conn_of_event(abi.SyncEvent.from_buffer_copy(data), table)
                if conn is not None:
                    pending.append(conn)

            ring = libbpf.RingBuffer(sync_events_fd(master), on_event)
            ring.consume()
            ring.close()
            for group in batches(pending, 1472):
                message = encode_message(group, 1)
                sender.send(message)
                messages.append(message)
            master_cpu += time.process_time() - started
        set_sync(master, False)
        sent = sum(m[4] for m in messages)  # nr_conns of each message
        engine = SyncEngine(master, SyncConfig("master", "lo"), refresh_period=0)  # its socket is not used here
        try:
            engine._refreshed_ns = 0  # every live connection saw a packet since
            started = time.process_time()
            refreshed = engine.refresh()
            refresh_cpu = time.process_time() - started
        finally:
            engine._pending.clear()
            engine.close()
        stats = SyncStats()
        backup_table = SyncTable(backup)
        started = time.process_time()
        for message in messages:
            for conn in decode_message(message, 1).conns:
                apply_conn(conn, backup_table, stats)
        backup_cpu = time.process_time() - started
        if stats.conns_applied < 0.9 * conns:
            raise RuntimeError(f"only {stats.conns_applied} of {conns} connections applied")
    return {"conns": float(sent), "messages": float(len(messages)), "refreshed": float(refreshed),
            "refresh ms per 1000 conns": 1e6 * refresh_cpu / max(refreshed, 1),
            "master ms per 1000 conns": 1e6 * master_cpu / sent, "backup ms per 1000 conns": 1e6 * backup_cpu / sent}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sync", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--handshakes", type=int, default=8000, help="handshakes per run (default 8000)")
    parser.add_argument("--runs", type=int, default=15, help="runs per case, interleaved (default 15)")
    parser.add_argument("--conns", type=int, default=50_000, help="connections through the daemon (default 5e4)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "sync_cost.json")
    args = parser.parse_args(argv)
    if args.handshakes > RING_ROOM:
        parser.error(f"--handshakes: at most {RING_ROOM} (what the ring buffer holds)")
    started = time.time()
    xdp = data_plane_cost(args.handshakes, args.runs)
    cpu = daemon_cost(args.conns)
    lines = ["case                                  ns/handshake   spread"]
    for case in ("off", "on", "on, ring buffer full"):
        lines.append(f"sync {case:<32} {xdp[case]:>12.1f} {xdp[case + ' spread']:>8.1f}")
    lines.append(f"sync on - off: {xdp['on'] - xdp['off']:+.1f} ns per new connection "
                 f"({xdp['on'] / xdp['off']:.2f}x)")
    lines.append("")
    lines.append(f"sync daemon, {cpu['conns']:.0f} connections in {cpu['messages']:.0f} messages of at most 1472 "
                 "bytes:")
    lines.append(f"master (events -> messages -> UDP): {cpu['master ms per 1000 conns']:.1f} ms CPU per 1000 "
                 "connections")
    lines.append(f"backup (messages -> tables):        {cpu['backup ms per 1000 conns']:.1f} ms CPU per 1000 "
                 "connections")
    lines.append(f"master's refresh ({cpu['refreshed']:.0f} live connections read and queued again): "
                 f"{cpu['refresh ms per 1000 conns']:.1f} ms CPU per 1000 connections")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": started, "handshakes": args.handshakes, "runs": args.runs,
                                    "conns": args.conns, "xdp": xdp, "daemon": cpu, "summary": lines}, indent=2))
    print(f"\nwritten: {args.out}")
    return 0
