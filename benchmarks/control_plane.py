"""Control-plane costs: restoring a large rule file, changing one real in it, memory.

    python -m benchmarks control [--services 1000] [--reals 100] [--mh-reals 1000] [--runs 3]

Restores SERVICES x REALS rules with `pyvsadm -R` into a fresh data plane, times a one-real change
(`pyvsadm -e ... -w N`, the best of 3) at that size, then adds one mh service of MH_REALS reals (its table sized
from them: 65521 slots for 1000) and times one real's weight change, addition and removal there (each a
rebuild of the whole Maglev table), RUNS times (median and spread = max - min); reports the peak RSS of the
Python process and the kernel memory of the connection table at 1e6 entries. The baseline is the data plane's
own empty restore in the same run.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import time
from ipaddress import IPv4Address
from pathlib import Path

from pyvs.admin.cli import main as pyvsadm
from pyvs.dataplane import Dataplane, scratch_dataplane
from pyvs.dataplane.neighbours import NextHop
from pyvs.schedulers import mh_table_size

HERE = Path(__file__).parent
TARGETS = {"restore_s": 3.0, "one_real_change_s": 0.05, "mh_weight_change_s": 0.05, "mh_real_added_s": 0.05,
           "mh_real_removed_s": 0.05, "peak_rss_mib": 200.0}
MH_VIP = "198.18.31.1"


def static_neighbour(rip: IPv4Address) -> NextHop:
    return NextHop(0, "02:00:00:00:00:0a", f"02:00:00:00:{rip.packed[2]:02x}:{rip.packed[3]:02x}")


def rule_file(services: int, reals: int) -> str:
    lines = []
    for s in range(services):
        vip = IPv4Address(int(IPv4Address("198.18.16.0")) + s)
        lines.append(f"-A -t {vip}:80 -s wrr")
        for r in range(reals):
            rip = IPv4Address(int(IPv4Address("198.19.0.0")) + r)
            lines.append(f"-a -t {vip}:80 -r {rip}:80 -g -w {1 + r % 3}")
    return "\n".join(lines) + "\n"


def mh_rule_file(reals: int) -> str:
    lines = [f"-A -t {MH_VIP}:80 -s mh"]
    for r in range(reals):
        rip = IPv4Address(int(IPv4Address("198.19.64.0")) + r)
        lines.append(f"-a -t {MH_VIP}:80 -r {rip}:80 -g -w 1")
    return "\n".join(lines) + "\n"


def mh_changes(dp: Dataplane, reals: int) -> dict[str, float]:
    """One real's weight change, addition and removal in an mh service of `reals` reals (the best of 3 each)."""
    run(dp, "-R", mh_rule_file(reals))
    base, spare = IPv4Address("198.19.64.7"), IPv4Address(int(IPv4Address("198.19.64.0")) + reals)
    weight = min(run(dp, f"-e -t {MH_VIP}:80 -r {base}:80 -g -w {w}") for w in (5, 6, 7))
    added, removed = [], []
    for _ in range(3):
        added.append(run(dp, f"-a -t {MH_VIP}:80 -r {spare}:80 -g -w 1"))
        removed.append(run(dp, f"-d -t {MH_VIP}:80 -r {spare}:80"))
    return {"mh_weight_change_s": weight, "mh_real_added_s": min(added), "mh_real_removed_s": min(removed)}


def run(dp: Dataplane, line: str, stdin: str = "") -> float:
    err = io.StringIO()
    started = time.perf_counter()
    code = pyvsadm(line.split(), stdin=io.StringIO(stdin), stdout=io.StringIO(), stderr=err, dataplane=dp)
    elapsed = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"pyvsadm {line}: {err.getvalue()}")
    return elapsed


def conn_table_memory(entries: int) -> int:
    """Bytes the kernel charges for a connection table of `entries` (memlock of the map)."""
    with scratch_dataplane("pyvsbench-mem", static_neighbour, conn_table_size=entries) as dp:
        total = 0
        for index in range(dp.conn_shards):  # the table is in shards: the outer map holds only their ids
            fd = dp._shard_fd("conns", index)  # noqa: SLF001 (a benchmark looks inside)
            fdinfo = Path(f"/proc/self/fdinfo/{fd}").read_text()
            total += int(next(line.split()[1] for line in fdinfo.splitlines() if line.startswith("memlock:")))
        return total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks control", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--reals", type=int, default=100)
    parser.add_argument("--mh-reals", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "control_plane.json")
    args = parser.parse_args(argv)
    text = rule_file(args.services, args.reals)
    runs: list[dict[str, float]] = []
    for _ in range(args.runs):
        with scratch_dataplane("pyvsbench-ctl", static_neighbour) as dp:
            empty = run(dp, "-R", "")
            restore = run(dp, "-R", text)
            vip, rip = "198.18.16.7", "198.19.0.42"
            change = min(run(dp, f"-e -t {vip}:80 -r {rip}:80 -g -w {w}") for w in (5, 6, 7))
            listed = run(dp, "-L -n")
            mh = mh_changes(dp, args.mh_reals)
        runs.append({"empty_restore_s": empty, "restore_s": restore, "one_real_change_s": change, "list_s": listed,
                     **mh})
    figures = {name: statistics.median(r[name] for r in runs) for name in runs[0]}
    spread = {name: max(r[name] for r in runs) - min(r[name] for r in runs) for name in runs[0]}
    figures |= {
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "conn_table_1e6_mib": conn_table_memory(1 << 20) / 2**20,
    }
    lines = [f"{args.services} services x {args.reals} reals, then one mh service of {args.mh_reals} reals "
             f"({mh_table_size(args.mh_reals)}-slot table), median of {args.runs} runs (spread = max - min)"]
    for name, value in figures.items():
        target = TARGETS.get(name)
        verdict = "" if target is None else (" met" if value <= target else " MISSED") + f" (target <= {target})"
        extra = f" ±{spread[name]:.3f}" if name in spread else ""
        lines.append(f"{name:<22} {value:10.3f}{extra}{verdict}")
    ratio = figures["restore_s"] / max(figures["empty_restore_s"], 1e-9)
    lines.append(f"restore / empty restore: {ratio:.0f}x")
    print("\n".join(lines))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"services": args.services, "reals": args.reals, "mh_reals": args.mh_reals,
                                    "mh_table_size": mh_table_size(args.mh_reals), "runs": runs, "spread": spread,
                                         **figures, "summary": lines}, indent=2))
    return 0
