"""import-keepalived and --validate at scale: time and peak memory, each case in a fresh process.

    python -m benchmarks keepalived [--megabytes 50] [--services 15000]

Cases: one 1 MB token; a valid keepalived.conf of MEGABYTES MB (services of 10 reals, each with an HTTP_GET);
`--validate` (the config parser) of SERVICES services as import-keepalived writes them. Targets (issue 14): the
50 MB import in under 10 s and 300 MB. Addresses are from 198.18.0.0/15.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from ipaddress import IPv4Address
from pathlib import Path

TARGETS = {"token_1mb": (10.0, 300.0), "config_50mb": (10.0, 300.0), "validate": (10.0, 300.0)}
VS = """virtual_server {vip} {port} {{
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    protocol TCP
{reals}}}
"""
RS = """    real_server {rip} {port} {{
        weight 3
        HTTP_GET {{
            url {{
                path /health
                status_code 200
            }}
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }}
    }}
"""


def service(index: int) -> str:
    vip = IPv4Address(int(IPv4Address("198.18.0.0")) + index // 100)
    port = 1000 + index % 100
    reals = "".join(RS.format(rip=IPv4Address(int(IPv4Address("198.19.0.0")) + r), port=port) for r in range(10))
    return VS.format(vip=vip, port=port, reals=reals)


def write_config(path: Path, megabytes: float) -> int:
    size, index = 0, 0
    with path.open("w") as out:
        while size < megabytes * 1e6:
            size += out.write(service(index))
            index += 1
    return index


def child(case: str, path: str) -> None:
    """Run one case in this process; print seconds and the peak RSS as JSON."""
    start = time.perf_counter()
    if case == "validate":
        from pyvs.director.config import parse_config

        count = len(parse_config(Path(path).read_text(), path).services)
    else:
        from pyvs.director.keepalived import import_keepalived_file

        toml, _ = import_keepalived_file(path)
        count = toml.count("[[service]]")
    seconds = time.perf_counter() - start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": round(seconds, 2), "peak_rss_mib": round(rss, 1), "services": count}))


def run(case: str, path: Path) -> dict[str, float]:
    result = subprocess.run([sys.executable, "-m", "benchmarks", "keepalived", "--child", case, str(path)],
                            capture_output=True, text=True, check=True)
    return dict(json.loads(result.stdout))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks keepalived")
    parser.add_argument("--megabytes", type=float, default=50.0)
    parser.add_argument("--services", type=int, default=15000)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "FILE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        token = Path(tmp, "token.conf")
        token.write_text(service(0).replace("delay_loop 6", "note " + "x" * (1 << 20) + "\n    delay_loop 6"))
        results["token_1mb"] = run("token_1mb", token)
        big = Path(tmp, "big.conf")
        count = write_config(big, args.megabytes)
        results["config_50mb"] = run("config_50mb", big) | {"input_mb": round(big.stat().st_size / 1e6, 1)}
        from pyvs.director.keepalived import import_keepalived_file

        many = Path(tmp, "many.conf")
        many.write_text("".join(VS.format(vip=IPv4Address(int(IPv4Address("198.18.0.0")) + i // 100),
                                          port=1000 + i % 100,
                                          reals=RS.format(rip="198.19.0.1", port=1000 + i % 100)
                                          + RS.format(rip="198.19.0.2", port=1000 + i % 100))
                                for i in range(args.services)))
        toml = Path(tmp, "many.toml")
        toml.write_text(import_keepalived_file(many)[0])
        results["validate"] = run("validate", toml)
    failed = False
    for case, result in results.items():
        seconds, mib = TARGETS[case]
        ok = result["seconds"] < seconds and result["peak_rss_mib"] < mib
        failed |= not ok
        print(f"{case:12} {json.dumps(result)}  target < {seconds:g} s and < {mib:g} MiB: {'ok' if ok else 'MISSED'}")
    print(f"({count} services in the {args.megabytes:g} MB config)")
    return 1 if failed else 0
