"""CPU of the director's health checker checking 1000 reals (TCP checks) every second.

In a throwaway namespace, one process listens on 1000 loopback ports (the reals). The director's check
engine (pyvs.director.checks.check_loop, as the daemon runs it) probes them all every second for a
while; its CPU time is compared with a baseline measured in the same run: a plain blocking loop doing
the same 1000 connects per second. Run as root: python benchmarks/bench_healthcheck.py [--reals N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import signal
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path

from pyvs import netns
from pyvs.director.checks import Health, ProbeResult, check_loop, command_limit
from pyvs.director.config import CheckSpec

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvsd")
NETNS = f"{PREFIX}-bench"
FIRST_PORT = 20000
RESULTS = Path(__file__).resolve().parent / "results" / "healthcheck.json"
LOOPBACK = "127.0.0.1"


def _raise_fd_limit() -> None:
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def listen(reals: int) -> None:
    """The reals: accept and close on `reals` ports, forever."""
    _raise_fd_limit()

    async def main() -> None:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.close()

        for port in range(FIRST_PORT, FIRST_PORT + reals):
            await asyncio.start_server(handle, LOOPBACK, port, backlog=64)
        print("listening", flush=True)
        await asyncio.Event().wait()

    asyncio.run(main())


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def checker(reals: int, seconds: float) -> None:
    """The director's check engine on every real, every second; prints CPU and probe counts as JSON."""
    _raise_fd_limit()
    spec = CheckSpec(type="tcp", interval=1.0, timeout=0.5)
    results = {"ok": 0, "failed": 0}

    def count(result: ProbeResult, health: Health, changed: bool) -> None:
        results["ok" if result.ok else "failed"] += 1

    async def main() -> None:
        commands = command_limit()
        tasks = [asyncio.create_task(check_loop(spec, IPv4Address(LOOPBACK), FIRST_PORT + i, Health(up=True),
                                                count, commands)) for i in range(reals)]
        await asyncio.sleep(seconds)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    start_cpu, start = _cpu(), time.monotonic()
    asyncio.run(main())
    print(json.dumps({"cpu": _cpu() - start_cpu, "wall": time.monotonic() - start, **results}))


def baseline(reals: int, seconds: float) -> None:
    """The floor: the same connects from a blocking loop, paced at `reals` per second."""
    import socket
    import struct

    linger = struct.pack("ii", 1, 0)
    ok = failed = 0
    start_cpu, start = _cpu(), time.monotonic()
    for second in range(int(seconds)):
        for i in range(reals):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
            sock.settimeout(0.5)
            try:
                sock.connect((LOOPBACK, FIRST_PORT + i))
                ok += 1
            except OSError:
                failed += 1
            finally:
                sock.close()
        time.sleep(max(0.0, start + second + 1 - time.monotonic()))
    print(json.dumps({"cpu": _cpu() - start_cpu, "wall": time.monotonic() - start, "ok": ok, "failed": failed}))


def _measure(mode: str, reals: int, seconds: float) -> dict[str, float]:
    argv = [sys.executable, __file__, mode, "--reals", str(reals), "--seconds", str(seconds)]
    result = netns.run_in_netns(NETNS, argv, timeout=seconds + 60)
    data: dict[str, float] = json.loads(result.stdout.splitlines()[-1])
    return data


def bench(reals: int, seconds: float) -> None:
    if netns.exists(NETNS):
        netns.remove(NETNS)
    netns.create(NETNS)
    listener = 0
    try:
        netns.run_in_netns(NETNS, ["ip", "link", "set", "lo", "up"])
        log = Path(f"/tmp/{NETNS}-listeners.log")
        log.write_text("")
        listener = netns.spawn_in_netns(NETNS, [sys.executable, __file__, "--listen", "--reals", str(reals)],
                                        log_path=log)
        deadline = time.monotonic() + 30
        while "listening" not in log.read_text():
            if time.monotonic() > deadline or not Path(f"/proc/{listener}").exists():
                raise SystemExit(f"the listeners did not start: {log.read_text()}")
            time.sleep(0.1)
        floor = _measure("--baseline", reals, seconds)
        engine = _measure("--checker", reals, seconds)
    finally:
        if listener:
            os.kill(listener, signal.SIGKILL)
            os.waitpid(listener, 0)
        netns.remove(NETNS)
    lines = []
    figures: dict[str, dict[str, float]] = {}
    for key, name, data in (("baseline", "baseline (blocking connect loop)", floor),
                            ("engine", "director check engine", engine)):
        probes = data["ok"] + data["failed"]
        figures[key] = {**data, "core_percent": 100 * data["cpu"] / data["wall"],
                        "us_per_check": 1e6 * data["cpu"] / max(probes, 1)}
        lines.append(f"{name}: {probes:.0f} TCP checks in {data['wall']:.1f}s ({probes / data['wall']:.0f}/s), "
                     f"{data['failed']:.0f} failed, CPU {data['cpu']:.2f}s = {figures[key]['core_percent']:.1f}% of "
                     f"one core, {figures[key]['us_per_check']:.0f} us per check")
    ratio = (engine["cpu"] / max(engine["ok"] + engine["failed"], 1)) / (floor["cpu"] / max(floor["ok"], 1))
    lines.append(f"ratio: the check engine costs {ratio:.2f}x the blocking baseline per check")
    print("\n".join(lines))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"reals": reals, "seconds": seconds, **figures, "ratio": ratio, "summary": lines},
                                  indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reals", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--listen", action="store_const", const="listen", dest="mode")
    parser.add_argument("--checker", action="store_const", const="checker", dest="mode")
    parser.add_argument("--baseline", action="store_const", const="baseline", dest="mode")
    args = parser.parse_args()
    if not 1 <= args.reals <= 5000 or not 1 <= args.seconds <= 60:
        parser.error("--reals 1..5000 and --seconds 1..60 keep the run bounded")
    if args.mode == "listen":
        listen(args.reals)
    elif args.mode == "checker":
        checker(args.reals, args.seconds)
    elif args.mode == "baseline":
        baseline(args.reals, args.seconds)
    else:
        bench(args.reals, args.seconds)


if __name__ == "__main__":
    main()
