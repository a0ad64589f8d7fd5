"""python -m benchmarks NAME [options]: run one benchmark."""

from __future__ import annotations

import sys

from benchmarks import control_plane, forwarding, packet_cost, plot, proxies, scheduler_cost

BENCHMARKS = {"packet": packet_cost.main, "control": control_plane.main, "schedulers": scheduler_cost.main,
              "forwarding": forwarding.main, "proxies": proxies.main, "plot": plot.main}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python -m benchmarks {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    return BENCHMARKS[sys.argv[1]](sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
