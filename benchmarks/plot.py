"""The PNG of the proxies benchmark: requests/s and director CPU per request across response sizes.

    python -m benchmarks plot [--results benchmarks/results/proxies.json] [--out benchmarks/results/proxies.png]

Medians over the runs, with the run-to-run range as error bars. Needs matplotlib (benchmarks/setup.sh).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).parent
CASES = ("pyvs", "haproxy", "nginx", "direct")


def series(samples: list[dict[str, float]], case: str, metric: str, sizes: list[int]) -> tuple[list[float], ...]:
    """(medians, distance down to the min, distance up to the max) of one metric per size."""
    medians, low, high = [], [], []
    for size in sizes:
        values = [s[metric] for s in samples if s["case"] == case and s["size"] == size]
        median = statistics.median(values)
        medians.append(median)
        low.append(median - min(values))
        high.append(max(values) - median)
    return medians, low, high


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks plot", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=HERE / "results" / "proxies.json")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "proxies.png")
    args = parser.parse_args(argv)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot: matplotlib is not installed: run benchmarks/setup.sh", file=sys.stderr)
        return 1
    try:
        results = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        print(f"plot: cannot read {args.results}: {exc} (run python -m benchmarks proxies first)", file=sys.stderr)
        return 1
    samples, sizes = results["samples"], sorted(results["sizes"])
    fig, (rps_axes, cpu_axes) = plt.subplots(1, 2, figsize=(12, 4.5))
    for case in CASES:
        medians, low, high = series(samples, case, "requests_per_s", sizes)
        rps_axes.errorbar(sizes, medians, yerr=[low, high], marker="o", capsize=3, label=case)
        if case != "direct":
            medians, low, high = series(samples, case, "cpu_us_per_request", sizes)
            cpu_axes.errorbar(sizes, [max(m, 1e-4) for m in medians], yerr=[low, high], marker="o", capsize=3,
                              label=case)
    for axes, title, unit in ((rps_axes, "requests/s (wrk, client)", "requests/s (log)"),
                              (cpu_axes, "director CPU per request", "µs of CPU per request (log)")):
        axes.set_xscale("log", base=2)
        axes.set_xticks(sizes, [f"{s // 1024} KiB" if s < 1 << 20 else f"{s >> 20} MiB" for s in sizes])
        axes.set_xlabel("response size")
        axes.set_ylabel(unit)
        axes.set_title(title)
        axes.grid(True, alpha=0.3)
        axes.legend()
    rps_axes.set_yscale("log")
    cpu_axes.set_yscale("log")
    fig.suptitle(f"pyvs vs HAProxy (TCP) vs nginx stream vs direct: lab, {results['runs']} runs, "
                 f"{results['connections']} connections")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=100)
    print(f"written: {args.out}")
    return 0
