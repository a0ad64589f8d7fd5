"""python -m benchmarks NAME [options]: run one benchmark."""

from __future__ import annotations

import importlib
import sys

# Imported only when chosen: the memory the control benchmark reports is then pyvs's, not scapy's or matplotlib's.
BENCHMARKS = {"packet": "packet_cost", "ablation": "packet_ablation", "control": "control_plane",
              "schedulers": "scheduler_cost", "sweep": "sweep", "forwarding": "forwarding", "proxies": "proxies",
              "plot": "plot", "keepalived": "keepalived_import", "failover": "failover", "vrrp": "vrrp_failover",
              "sync": "sync_cost"}


def main() -> int:
    if len(sys.argv) < 2 or sys.argv[1] not in BENCHMARKS:
        print(f"usage: python -m benchmarks {{{','.join(BENCHMARKS)}}} [options]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{BENCHMARKS[sys.argv[1]]}")
    return int(module.main(sys.argv[2:]))


if __name__ == "__main__":
    sys.exit(main())
