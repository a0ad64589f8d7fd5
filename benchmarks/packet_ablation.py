"""Where the per-packet time goes: the XDP program rebuilt with one part taken out at a time.

    python -m benchmarks ablation [--repeat N] [--rounds N] [--reals 1000] [--conns 100000]

The profile behind part 1's misses. Each variant is pyvs_xdp.c with some lines removed (by text, so a change of
the program that moves them makes this benchmark fail loudly rather than measure the wrong thing), loaded
against the same maps: 1000 reals, 1e5 established connections. The variants and the bare references are
measured in interleaved rounds (every variant once per round), so a burst of load on this shared machine hits
all of them alike; the minimum over the rounds is the figure (the least disturbed run), the median beside it.
The variants are not correct programs; they only price what they leave out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from scapy.layers.inet import TCP

from benchmarks.packet_cost import HERE, NEW_FLOWS, client, frame, populate, rules_with, static_neighbour
from pyvs.dataplane import libbpf, scratch_dataplane
from pyvs.dataplane.build import BPF_DIR, CACHE_DIR, build_object

SVC_STATS = ("\taccount(svc_index, pkt->tot_len, new_conn);\n", "")
REAL_STATS = ("\taccount(PYVS_MAX_SERVICES + real_id, pkt->tot_len, new_conn);\n", "")
TX_COUNT = ("\t\tcount(PYVS_CNT_TX);\n", "")
TIMEOUT = ("expired(conn, cfg, now) || ", "")
SVC_GEN = ("svc_gen(conn->svc_index) != conn->svc_gen || ", "")
TCP_STATE = ("\t\tif (pkt->proto == IPPROTO_TCP && conn != half) {\n\t\t\tstate", "\t\tif (0) {\n\t\t\tstate")
CLOCK = ("\tnow = clock_now(st);\n", "\tnow = 1;\n")
REAL_CHECK = ("if (!real || !(real->flags & PYVS_REAL_ACTIVE) || real->gen != conn->gen) {", "if (!real) {")
LAST_SEEN = ("\t\tif (conn->last_seen != now)\n\t\t\tconn->last_seen = now;\n\t} else {", "\t} else {")
LIVE_COUNT = ("\t\t\tadd_count(real_id, parity, fresh.counted, 1);\n", "")
NEW_COUNTS = ("\t\t\tcount(table == main_shard ? PYVS_CNT_CONN_INSERTED : PYVS_CNT_HALF_OPEN_NEW);\n"
              "\t\t\tcount(PYVS_CNT_CONN_NEW);\n", "")
# Without REAL_CHECK and LAST_SEEN: each of those two alone makes the program ~30 ns slower (seen in every round
# of two runs; the compiled code differs beyond the lines taken out), which would hide what the others save.
ESTABLISHED = (SVC_STATS, REAL_STATS, TX_COUNT, TIMEOUT, SVC_GEN, TCP_STATE, CLOCK)

# name -> (lines taken out, built for new flows)
VARIANTS: dict[str, tuple[tuple[tuple[str, str], ...], bool]] = {
    "pyvs, established TCP": ((), False),
    "- per-service counters": ((SVC_STATS,), False),
    "- per-real counters": ((REAL_STATS,), False),
    "- global tx counter": ((TX_COUNT,), False),
    "- timeouts": ((TIMEOUT,), False),
    "- service generation": ((SVC_GEN,), False),
    "- TCP state": ((TCP_STATE,), False),
    "- clock read": ((CLOCK,), False),
    "- real check": ((REAL_CHECK,), False),
    "- last_seen store": ((LAST_SEEN,), False),
    "- all of the above but the last two": (ESTABLISHED, False),
    "pyvs, new TCP flow (SYN)": ((), True),
    "- counters (new flow)": ((SVC_STATS, REAL_STATS, TX_COUNT, NEW_COUNTS), True),
    "- live count (new flow)": ((LIVE_COUNT,), True),
}


def variant_object(name: str, edits: tuple[tuple[str, str], ...], new_flows: bool, workdir: Path) -> Path:
    text = (BPF_DIR / "pyvs_xdp.c").read_text()
    for old, new in edits:
        if old not in text:
            raise SystemExit(f"variant '{name}': the program no longer has {old!r}; update {__file__}")
        text = text.replace(old, new)
    source = workdir / f"ablation_{abs(hash(name)) % 10**8}.c"
    source.write_text(text)
    return build_object(source, NEW_FLOWS if new_flows else ())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks ablation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1_000_000, help="repetitions per measurement (default 1e6)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--reals", type=int, default=1000)
    parser.add_argument("--conns", type=int, default=100_000)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "packet_ablation.json")
    args = parser.parse_args(argv)
    workdir = CACHE_DIR / "ablation"
    workdir.mkdir(parents=True, exist_ok=True)
    for header in BPF_DIR.glob("*.h"):  # the variants include the program's headers from their own directory
        (workdir / header.name).write_text(header.read_text())
    objects = {name: variant_object(name, edits, new, workdir) for name, (edits, new) in VARIANTS.items()}
    samples: dict[str, list[float]] = {name: [] for name in ["bare LRU hit", "bare LRU miss+insert", *VARIANTS]}
    with scratch_dataplane("pyvsbench-abl", static_neighbour) as dp:
        dp.apply(rules_with(args.reals))
        populate(dp, args.conns)
        src, sport = client(args.conns // 2)
        established = frame(TCP(sport=sport, dport=80, flags="A"), src=src)
        syn = frame(TCP(sport=40000, dport=80, flags="S"))
        inner = {table: dp._shard_fd(table, 0) for table in ("conns", "half_open")}  # noqa: SLF001
        loaded = {name: libbpf.BpfObject(str(path), str(dp.pin_dir),
                                         inner_map_fds={k: v for k, v in inner.items() if v is not None})
                  for name, path in objects.items()}
        bare_hit = libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c")))
        bare_new = libbpf.BpfObject(str(build_object(HERE / "bpf" / "bare.c", NEW_FLOWS)))
        try:
            programs = {"bare LRU hit": (bare_hit.prog_fd("bare_lru"), established),
                        "bare LRU miss+insert": (bare_new.prog_fd("bare_lru"), established)}
            for name, obj in loaded.items():
                programs[name] = (obj.prog_fd("pyvs_xdp"), syn if VARIANTS[name][1] else established)
            for _ in range(args.rounds):
                for name, (fd, packet) in programs.items():
                    samples[name].append(libbpf.prog_test_run(fd, packet, args.repeat).duration_ns)
        finally:
            for obj in [*loaded.values(), bare_hit, bare_new]:
                obj.close()
    lines = [f"{args.reals} reals, {args.conns} connections, {args.rounds} interleaved rounds of {args.repeat}",
             f"{'program':<36} {'min ns':>7} {'median':>7} {'saves':>6}"]
    full = {False: min(samples["pyvs, established TCP"]), True: min(samples["pyvs, new TCP flow (SYN)"])}
    for name, values in samples.items():
        saves = ""
        if name.startswith("-"):
            saves = f"{full[VARIANTS[name][1]] - min(values):6.0f}"
        lines.append(f"{name:<36} {min(values):7.0f} {statistics.median(values):7.0f} {saves:>6}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"started": time.time(), "repeat": args.repeat, "samples": samples,
                                    "summary": lines}, indent=2))
    return 0
