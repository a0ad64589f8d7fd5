"""Active/backup failover: the time from the master's death to the backup serving the VIP, on the VRRP lab.

    python -m benchmarks vrrp [--rounds 5] [--prefix pyvsbv]

A VRRP lab of its own (`pyvs lab up --vrrp`: two directors, keepalived VRRPv3 with advert_int 0.5 s and priorities
250/240, each running `pyvs director run` with [vrrp], rr, no sloppy TCP, no connection sync) with, in every round,
3 long downloads (3 MiB read at 300 kB/s: ~10 s each) and a loop of short requests from the client (2 workers, each
request on a new connection with 1 s for the whole exchange). One and a half seconds in, the master dies: its
keepalived (SIGSTOP, then SIGKILL of parent and VRRP child: no priority 0 advertisement) and its daemon are killed
and the switch drops every frame to and from its port (its XDP would otherwise go on forwarding).

Measured from the kill: when the backup has the VIP on its NIC (`takeover`: keepalived's master-down interval, 3 x
advert_int + skew = 1.53 s at most; polled from here every 10 ms), when its data plane serves it (`served`: the
time its daemon's status gives for its change to master, written right after the data plane's write), when the last
request that failed was sent (`last failure`), failed requests of all sent, and how many of the downloads through
the master completed (none without sync: the backup's kernel resets them). Each round starts with the backup's
connection table emptied: the request loop goes through the client's ephemeral ports in a few rounds, and a
download on a port that an earlier request used finds that request's old entry on the backup (closed, not expired)
and follows it to its real, half of the time the right one. Then the master comes back (its port
passes frames again, keepalived and its daemon start: it preempts with its higher priority) while the traffic
runs: the time until it holds the VIP again and the requests that failed meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyvs.lab import ecmp, vrrp
from pyvs.lab import lab as lab_api
from pyvs.lab.flows import Download, RequestLoop
from pyvs.lab.topology import Topology, vrrp_topology

HERE = Path(__file__).parent
DOWNLOADS, DOWNLOAD_SIZE, RATE = 3, 3 << 20, 300_000
WORKERS, TIMEOUT = 2, 1.0
AFTER = 3.0  # seconds of traffic after the takeover


@dataclass
class Round:
    round: int
    takeover_s: float  # kill -> the VIP on the backup's NIC
    served_s: float  # kill -> the backup's data plane serves it
    last_failure_s: float | None  # kill -> the start of the last request that failed (None: none failed)
    failed: int
    requests: int
    failed_after_takeover: int  # failed requests sent a second after the backup served
    downloads: int
    downloads_completed: int
    back_s: float  # the master let in and started again -> it holds the VIP again
    failed_on_return: int
    requests_on_return: int


def one_round(topo: Topology, number: int) -> Round:
    master, backup = topo.directors
    vrrp.forget_flows(topo, backup)  # the requests of earlier rounds use the client's ports again
    running = [Download(topo.client.netns, topo.public_ip, DOWNLOAD_SIZE, RATE).start() for _ in range(DOWNLOADS)]
    with RequestLoop(topo.client.netns, topo.public_ip, workers=WORKERS, timeout=TIMEOUT) as loop:
        time.sleep(1.5)
        killed, killed_at = time.monotonic(), time.time()
        vrrp.kill_director(topo, master)
        ecmp.isolate(topo, master, isolated=True)
        took = vrrp.wait_holder(topo, backup.name, 10)
        time.sleep(AFTER)
        served = vrrp.role_since(topo, backup, "master") - killed_at
    attempts = loop.results()
    for download in running:
        download.wait(60)
    failed = [a for a in attempts if not a.ok and a.started >= killed - TIMEOUT]
    with RequestLoop(topo.client.netns, topo.public_ip, workers=WORKERS, timeout=TIMEOUT) as back_loop:
        time.sleep(0.5)
        started = time.monotonic()
        ecmp.isolate(topo, master, isolated=False)
        lab_api.up(topo)
        while vrrp.holders(topo) != [master.name]:
            if time.monotonic() - started > 30:
                raise RuntimeError("the master did not take the VIP back")
            time.sleep(0.01)
        back = time.monotonic() - started
        time.sleep(AFTER)
    returned = back_loop.results()
    return Round(number, took, served, failed[-1].started - killed if failed else None, len(failed), len(attempts),
                 sum(a.started >= killed + served + 1.0 for a in failed), len(running),
                 sum(d.complete for d in running), back, sum(not a.ok for a in returned), len(returned))


def summary(rounds: list[Round]) -> list[str]:
    lines = [f"{'round':>5} {'takeover':>8} {'served':>8} {'last failure':>12} {'failed':>9} {'after':>5} "
             f"{'downloads':>13} {'back':>6} {'failed on return':>16}"]
    for r in rounds:
        last = "-" if r.last_failure_s is None else f"{r.last_failure_s:.2f} s"
        lines.append(f"{r.round:>5} {r.takeover_s:>6.2f} s {r.served_s:>6.2f} s {last:>12} "
                     f"{f'{r.failed}/{r.requests}':>9} {r.failed_after_takeover:>5} "
                     f"{f'{r.downloads_completed}/{r.downloads} done':>13} {r.back_s:>4.1f} s "
                     f"{f'{r.failed_on_return}/{r.requests_on_return}':>16}")
    takeovers = [r.takeover_s for r in rounds]
    lasts = [r.last_failure_s or 0.0 for r in rounds]
    lines.append(f"takeover median {statistics.median(takeovers):.2f} s (max {max(takeovers):.2f} s, bound 1.53 s), "
                 f"last failure median {statistics.median(lasts):.2f} s (max {max(lasts):.2f} s) after the kill")
    return lines


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks vrrp", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds (default 5)")
    parser.add_argument("--prefix", default="pyvsbv", help="the benchmark lab's name prefix (default pyvsbv)")
    args = parser.parse_args(argv)
    topo = vrrp_topology(prefix=args.prefix)
    assert topo.vrrp is not None
    lab_api.down(topo)
    rounds: list[Round] = []
    try:
        lab_api.up(topo)
        for number in range(1, args.rounds + 1):
            while vrrp.holders(topo) != [topo.directors[0].name]:
                time.sleep(0.05)
            time.sleep(1)
            rounds.append(one_round(topo, number))
            print(summary(rounds)[len(rounds)], flush=True)
    finally:
        lab_api.down(topo)
    lines = summary(rounds)
    print("\n".join(lines))
    takeovers = [r.takeover_s for r in rounds]
    lasts = [r.last_failure_s or 0.0 for r in rounds]
    result = {"advert_int_s": topo.vrrp.advert_int, "master_down_s": topo.vrrp.master_down,
              "request_timeout_s": TIMEOUT, "workers": WORKERS, "downloads": DOWNLOADS,
              "download_bytes": DOWNLOAD_SIZE, "read_rate": RATE, "rounds": [asdict(r) for r in rounds],
              "takeover_max_s": max(takeovers), "takeover_median_s": statistics.median(takeovers),
              "served_after_takeover_max_s": max(r.served_s - r.takeover_s for r in rounds),
              "last_failure_max_s": max(lasts), "last_failure_median_s": statistics.median(lasts),
              "failed_after_takeover": sum(r.failed_after_takeover for r in rounds),
              "downloads_completed": sum(r.downloads_completed for r in rounds), "summary": lines}
    (HERE / "results" / "vrrp_failover.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0
