"""Active/active failover: the time from a director's death to the last failed request, on the ECMP lab.

    python -m benchmarks failover [--rounds 3] [--directors 3] [--prefix pyvsbf]

An ECMP lab of its own (`pyvs lab up --directors N`: a BIRD router, hold time 3 s, each director running `pyvs
director run` with [bgp]) with, in every round, 9 long downloads (3 MiB read at 300 kB/s: ~10 s each) and a loop
of short requests from the client (4 workers, each request on a new connection with 1 s for the whole exchange).
One second in, the director that carries the most downloads is taken out:

- `kill`: its daemon and its BIRD are killed (kill -9); the data plane stays. The kernel closes BIRD's socket, so
  the router hears it at once;
- `death`: its machine hangs as well (the switch drops every frame to and from its port, which stays up and
  known: no FIN, no keepalive, every frame to it lost); only the router's hold timer takes it out.

Measured from the kill: when the router's kernel route loses the director (`withdrawn`), when the last request
that failed was sent (`last failure`: a request sent then waited its 1 s and failed), how many requests failed of
how many, and whether the downloads that went through the director completed. Then the director comes back
(the switch lets its frames through again, its daemon is started, which adopts its data plane and announces
again) while the traffic runs: the time until the router routes to it again and the requests that failed
meanwhile.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from pyvs.lab import ecmp
from pyvs.lab import lab as lab_api
from pyvs.lab.flows import Download, RequestLoop
from pyvs.lab.topology import HOLD_TIME, Topology, ecmp_topology

HERE = Path(__file__).parent
DOWNLOADS, DOWNLOAD_SIZE, RATE = 9, 3 << 20, 300_000
WORKERS, TIMEOUT = 4, 1.0
AFTER = 3.0  # seconds of traffic after the router converged


@dataclass
class Round:
    scenario: str  # kill or death
    round: int
    victim: str
    withdrawn_s: float  # kill -> the router's route without the victim
    last_failure_s: float | None  # kill -> the start of the last request that failed (None: none failed)
    failed: int
    requests: int
    failed_after_convergence: int
    downloads: int
    downloads_through_victim: int
    downloads_completed: int
    back_s: float  # frames let through and daemon started -> the router routes to the victim again
    failed_on_return: int
    requests_on_return: int


def one_round(topo: Topology, scenario: str, number: int) -> Round:
    running = [Download(topo.client.netns, topo.public_ip, DOWNLOAD_SIZE, RATE).start() for _ in range(DOWNLOADS)]
    where = ecmp.flow_directors(topo, {d.source_port for d in running})
    counts = {n.name: sum(n.name in names for names in where.values()) for n in topo.directors}
    victim = topo.node(max(counts, key=lambda name: counts[name]))
    theirs = [d for d in running if victim.name in where[d.source_port]]
    count = len(topo.directors)
    with RequestLoop(topo.client.netns, topo.public_ip, workers=WORKERS, timeout=TIMEOUT) as loop:
        time.sleep(1)
        killed = time.monotonic()
        if scenario == "death":
            ecmp.isolate(topo, victim, isolated=True)
        ecmp.kill_director(topo, victim)
        while len(ecmp.router_next_hops(topo)) == count:
            if time.monotonic() - killed > HOLD_TIME + 5:
                raise RuntimeError(f"the router did not withdraw {victim.name}")
            time.sleep(0.01)
        converged = time.monotonic()
        time.sleep(AFTER)
    attempts = loop.results()
    for download in running:
        download.wait(60)
    failed = [a for a in attempts if not a.ok]
    with RequestLoop(topo.client.netns, topo.public_ip, workers=WORKERS, timeout=TIMEOUT) as back_loop:
        time.sleep(0.5)
        started = time.monotonic()
        ecmp.isolate(topo, victim, isolated=False)
        ecmp.start_daemon(topo, victim)
        ecmp.wait_next_hops(topo, count, 30)
        back = time.monotonic() - started
        time.sleep(AFTER)
    returned = back_loop.results()
    return Round(
        scenario, number, victim.name, converged - killed,
        failed[-1].started - killed if failed else None, len(failed), len(attempts),
        sum(a.started >= converged for a in failed), len(running), len(theirs), sum(d.complete for d in theirs),
        back, sum(not a.ok for a in returned), len(returned))


def summary(rounds: list[Round]) -> list[str]:
    lines = [f"{'scenario':8} {'round':>5} {'withdrawn':>9} {'last failure':>12} {'failed':>11} "
             f"{'after conv.':>11} {'downloads via it':>16} {'back':>6} {'failed on return':>16}"]
    for r in rounds:
        last = "-" if r.last_failure_s is None else f"{r.last_failure_s:.2f} s"
        lines.append(f"{r.scenario:8} {r.round:>5} {r.withdrawn_s:>7.2f} s {last:>12} "
                     f"{f'{r.failed}/{r.requests}':>11} {r.failed_after_convergence:>11} "
                     f"{f'{r.downloads_completed}/{r.downloads_through_victim} done':>16} {r.back_s:>4.1f} s "
                     f"{f'{r.failed_on_return}/{r.requests_on_return}':>16}")
    for scenario in dict.fromkeys(r.scenario for r in rounds):
        mine = [r for r in rounds if r.scenario == scenario]
        lasts = [r.last_failure_s or 0.0 for r in mine]
        lines.append(f"{scenario}: median withdrawn {statistics.median(r.withdrawn_s for r in mine):.2f} s, "
                     f"median last failure {statistics.median(lasts):.2f} s (max {max(lasts):.2f} s) after the kill")
    return lines


def scenarios(rounds: list[Round]) -> dict[str, dict[str, float]]:
    """Per scenario: the longest and median times to withdrawal and to the last failure (0: none failed)."""
    result = {}
    for scenario in dict.fromkeys(r.scenario for r in rounds):
        mine = [r for r in rounds if r.scenario == scenario]
        lasts = [r.last_failure_s or 0.0 for r in mine]
        result[scenario] = {
            "withdrawn_max_s": max(r.withdrawn_s for r in mine),
            "withdrawn_median_s": statistics.median(r.withdrawn_s for r in mine),
            "last_failure_max_s": max(lasts), "last_failure_median_s": statistics.median(lasts),
            "failed_after_convergence": sum(r.failed_after_convergence for r in mine),
            "downloads_through_victim": sum(r.downloads_through_victim for r in mine),
            "downloads_completed": sum(r.downloads_completed for r in mine),
            "back_max_s": max(r.back_s for r in mine), "failed_on_return": sum(r.failed_on_return for r in mine),
        }
    return result


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks failover", description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds per scenario (default 3)")
    parser.add_argument("--directors", type=int, default=3, help="directors behind the router (2 to 4, default 3)")
    parser.add_argument("--prefix", default="pyvsbf", help="the benchmark lab's name prefix (default pyvsbf)")
    args = parser.parse_args(argv)
    topo = ecmp_topology(prefix=args.prefix, directors=args.directors)
    lab_api.down(topo)
    rounds: list[Round] = []
    try:
        lab_api.up(topo)
        for number in range(1, args.rounds + 1):
            for scenario in ("kill", "death"):
                rounds.append(one_round(topo, scenario, number))
                print(summary(rounds)[len(rounds)], flush=True)
    finally:
        lab_api.down(topo)
    lines = summary(rounds)
    print("\n".join(lines))
    result = {"directors": args.directors, "hold_time_s": HOLD_TIME, "request_timeout_s": TIMEOUT,
              "workers": WORKERS, "downloads": DOWNLOADS, "download_bytes": DOWNLOAD_SIZE, "read_rate": RATE,
              "rounds": [asdict(r) for r in rounds], "scenarios": scenarios(rounds), "summary": lines}
    (HERE / "results" / "failover.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0
