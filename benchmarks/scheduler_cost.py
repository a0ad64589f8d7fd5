"""Per-packet cost of each IPVS scheduler in the XDP program, as a ratio to rr, by BPF_PROG_TEST_RUN.

    python -m benchmarks schedulers [--repeat N] [--runs N] [--reals 100]

New flow: every repetition is a new TCP flow (a build where the source port is randomised per packet), so
the scheduler runs each time. Established: an ACK of a connection already in the table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from scapy.layers.inet import TCP

from benchmarks.packet_cost import NEW_FLOWS, frame, measure, rules_with, static_neighbour
from pyvs.dataplane import libbpf, scratch_dataplane
from pyvs.dataplane.build import object_path
from pyvs.model import ALL_SCHEDULERS

HERE = Path(__file__).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks schedulers", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=1_000_000, help="repetitions per run (default 1e6)")
    parser.add_argument("--runs", type=int, default=5, help="runs per figure; the median is kept (default 5)")
    parser.add_argument("--reals", type=int, default=100, help="reals of the service (default 100)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "scheduler_cost.json")
    args = parser.parse_args(argv)
    syn = frame(TCP(sport=40000, dport=80, flags="S"))
    ack = frame(TCP(sport=40000, dport=80, flags="A"))
    results: dict[str, dict[str, float]] = {}
    with scratch_dataplane("pyvsbench-sched", static_neighbour) as dp:
        with libbpf.BpfObject(str(object_path("xdp", NEW_FLOWS)), str(dp.pin_dir),
                              {"conns": dp.conn_table_size}) as new_flows:
            for scheduler in ALL_SCHEDULERS:
                rules = rules_with(args.reals)
                for svc in rules.services.values():
                    svc.scheduler = scheduler
                    for n, real in enumerate(svc.sorted_reals()):
                        real.weight = 1 + n % 4
                dp.apply(rules)
                libbpf.prog_test_run(dp.program_fd(), syn)  # the flow the ACKs belong to
                established = measure(dp.program_fd(), ack, args.repeat, args.runs)[0]
                new = measure(new_flows.prog_fd("pyvs_xdp"), syn, args.repeat, args.runs)[0]
                results[scheduler] = {"established_ns": established, "new_flow_ns": new}
                libbpf.prog_test_run(dp.program_fd(), frame(TCP(sport=40000, dport=80, flags="R")))
    rr = results["rr"]
    lines = [f"{'scheduler':<9} {'established ns':>15} {'x rr':>6} {'new flow ns':>12} {'x rr':>6}"]
    for name, r in results.items():
        lines.append(f"{name:<9} {r['established_ns']:>15.1f} {r['established_ns'] / rr['established_ns']:>6.2f} "
                     f"{r['new_flow_ns']:>12.1f} {r['new_flow_ns'] / rr['new_flow_ns']:>6.2f}")
    lines.insert(0, f"{args.reals} reals, weights 1-4, median of {args.runs} runs of {args.repeat}")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"reals": args.reals, "repeat": args.repeat, "results": results,
                                    "summary": lines}, indent=2))
    return 0
