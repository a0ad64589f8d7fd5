"""The director against the L4 proxies a user would pick instead, on the lab, measured side by side.

    python -m benchmarks proxies [--prefix pyvsb] [--sizes 1024,16384,131072,1048576] [--seconds 4] [--runs 2]
                                 [--connections 32] [--out FILE]

Builds its own lab (prefix --prefix) and removes it at the end. Each real runs an nginx web server on port 8000
serving GET /bytes/N (N bytes, sendfile). The client runs wrk against, in turn:
  pyvs     VIP:8000, a pyvs service (rr, both reals, -g) added beside the lab's own: replies go real -> client
  haproxy  HAProxy 2.6 in TCP mode on the director, DIP:8001, roundrobin over both reals
  nginx    nginx stream on the director, DIP:8002, round robin over both reals
  direct   one real's RIP:8000, no director: the ceiling
The client reaches each through the gateway's routing (no DNAT). The proxies connect to the reals from the
DIP. Reported per case and response size: requests/s, bytes/s, p99 latency, and the director's CPU per
request: process CPU time (utime + stime) of the proxy's processes, and for pyvs the run time of its XDP program
(BPF run-time stats). Each figure is the median of --runs runs; the runs interleave the cases, so a noisy
moment hits all of them. Every process started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from ipaddress import IPv4Address
from pathlib import Path

from benchmarks.forwarding import director_program, program_run_time
from pyvs.dataplane import libbpf
from pyvs.lab import lab
from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology, default_topology
from pyvs.model import Protocol, Real, Service, ServiceKey
from pyvs.netns import NetnsError, in_netns, run_in_netns, spawn_in_netns

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
WEB_PORT, HAPROXY_PORT, NGINX_PORT = 8000, 8001, 8002
CASES = ("pyvs", "haproxy", "nginx", "direct")
NGINX_STREAM_MODULE = "/usr/lib/nginx/modules/ngx_stream_module.so"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TARGETS = (  # (size, case, reference, metric, limit, "min" or "max")
    (1 << 20, "pyvs", "direct", "requests_per_s", 0.85, "min"),
    (1 << 20, "pyvs", "haproxy", "requests_per_s", 2.5, "min"),
    (1 << 20, "pyvs", "haproxy", "cpu_us_per_request", 0.01, "max"),
    (1024, "pyvs", "direct", "requests_per_s", 0.9, "min"),
    (1024, "pyvs", "haproxy", "requests_per_s", 1.3, "min"),
)


class BenchError(RuntimeError):
    """A tool is missing or a server did not start; the message says which."""


@dataclass
class Sample:
    case: str
    size: int
    run: int
    requests_per_s: float
    bytes_per_s: float
    p99_ms: float
    cpu_us_per_request: float
    errors: int


def _seconds_of(value: str, unit: str) -> float:
    return float(value) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[unit]


def _bytes_of(value: str, unit: str) -> float:
    return float(value) * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(requests/s, bytes/s, p99 seconds, errors) from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)(B|KB|MB|GB)", output)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s|m)\s*$", output, re.MULTILINE)
    if not (rps and transfer and p99):
        raise BenchError(f"unexpected wrk output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return (float(rps[1]), _bytes_of(transfer[1], transfer[2]), _seconds_of(p99[1], p99[2]),
            errors + (int(non_2xx[1]) if non_2xx else 0))


def session_cpu_seconds(leader: int) -> float:
    """utime + stime of every process in the session `leader` started (a server and its workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # gone meanwhile
        if int(fields[3]) == leader:  # field 6 of stat: the session id
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def web_config(workdir: Path, name: str, root: Path) -> str:
    return f"""worker_processes 1;
daemon off;
pid {workdir}/{name}.pid;
error_log {workdir}/{name}.err;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    client_body_temp_path {workdir}/tmp;
    proxy_temp_path {workdir}/tmp;
    fastcgi_temp_path {workdir}/tmp;
    uwsgi_temp_path {workdir}/tmp;
    scgi_temp_path {workdir}/tmp;
    server {{
        listen {WEB_PORT};
        root {root};
        default_type application/octet-stream;
    }}
}}
"""


def nginx_stream_config(workdir: Path, dip: str, rips: list[str]) -> str:
    upstreams = "".join(f"        server {rip}:{WEB_PORT};\n" for rip in rips)
    return f"""load_module {NGINX_STREAM_MODULE};
worker_processes auto;
daemon off;
pid {workdir}/nginx-stream.pid;
error_log {workdir}/nginx-stream.err;
events {{ worker_connections 4096; }}
stream {{
    upstream reals {{
{upstreams}    }}
    server {{
        listen {dip}:{NGINX_PORT};
        proxy_bind {dip};
        proxy_pass reals;
    }}
}}
"""


def haproxy_config(dip: str, rips: list[str]) -> str:
    servers = "".join(f"    server rs{n} {rip}:{WEB_PORT}\n" for n, rip in enumerate(rips, start=1))
    return f"""global
    maxconn 4000
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend director
    bind {dip}:{HAPROXY_PORT}
    default_backend reals
backend reals
    balance roundrobin
    source {dip}
{servers}"""


def _stop(pid: int) -> None:
    """SIGTERM the session `pid` leads (the server and its workers), then SIGKILL what is left."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for _ in range(50):
        try:
            if os.waitpid(pid, os.WNOHANG)[0]:
                return
        except ChildProcessError:
            return
        time.sleep(0.1)
    os.killpg(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def _wait_listening(netns: str, port: int, pid: int, log_path: Path) -> None:
    for _ in range(50):
        if run_in_netns(netns, ["ss", "-Hltn", f"sport = :{port}"]).stdout.strip():
            return
        if os.waitpid(pid, os.WNOHANG)[0]:
            break
        time.sleep(0.1)
    detail = log_path.read_text(errors="replace").strip() if log_path.exists() else ""
    raise BenchError(f"server pid {pid} in {netns} is not listening on port {port}: {detail}")


class Servers:
    """The benchmark's processes: nginx on each real, HAProxy and nginx stream on the director."""

    def __init__(self, topo: Topology, workdir: Path, sizes: list[int]):
        self.topo, self.workdir = topo, workdir
        self.pids: dict[str, int] = {}
        workdir.chmod(0o755)  # nginx's workers run as www-data
        root = workdir / "www" / "bytes"
        root.mkdir(parents=True)
        (workdir / "tmp").mkdir()
        for size in sizes:
            (root / str(size)).write_bytes(os.urandom(size))
        self.rips = [topo.address_of(node.name) for node in topo.reals]
        self.dip = topo.port(topo.director.name, topo.director_nic.ifname).addresses[1].split("/")[0]

    def start_all(self) -> None:
        for node in self.topo.reals:
            config = self._write(f"web-{node.name}.conf", web_config(self.workdir, f"web-{node.name}",
                                                                      self.workdir / "www"))
            self._start(f"web-{node.name}", node.netns, ["nginx", "-c", str(config), "-e", "stderr"], WEB_PORT)
        director = self.topo.director.netns
        config = self._write("haproxy.cfg", haproxy_config(self.dip, self.rips))
        self._start("haproxy", director, ["haproxy", "-db", "-f", str(config)], HAPROXY_PORT)
        config = self._write("nginx-stream.conf", nginx_stream_config(self.workdir, self.dip, self.rips))
        self._start("nginx", director, ["nginx", "-c", str(config), "-e", "stderr"], NGINX_PORT)

    def _write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text)
        return path

    def _start(self, name: str, netns: str, argv: list[str], port: int) -> None:
        log_path = self.workdir / f"{name}.log"
        pid = spawn_in_netns(netns, argv, log_path=log_path)
        self.pids[name] = pid
        _wait_listening(netns, port, pid, log_path)

    def stop_all(self) -> None:
        for pid in self.pids.values():
            _stop(pid)
        self.pids.clear()


@contextmanager
def pyvs_service(topo: Topology) -> Iterator[None]:
    """A pyvs service VIP:8000 (rr, both reals) for the run; removed afterwards."""
    key = ServiceKey(Protocol.TCP, IPv4Address(topo.vip), WEB_PORT)
    with in_netns(topo.director.netns), open_director(topo) as dp:
        rules = dp.read_rules()
        service = Service(key, "rr")
        for node in topo.reals:
            rip = IPv4Address(topo.address_of(node.name))
            service.reals[(rip, WEB_PORT)] = Real(rip, WEB_PORT, 1)
        rules.services[key] = service
        dp.apply(rules)
    try:
        yield
    finally:
        with in_netns(topo.director.netns), open_director(topo) as dp:
            rules = dp.read_rules()
            rules.services.pop(key, None)
            dp.apply(rules)


class Director:
    """The director's CPU spent on one case: the proxy's processes, or pyvs's XDP program."""

    def __init__(self, topo: Topology, servers: Servers):
        self.topo, self.servers = topo, servers

    def cpu_seconds(self, case: str) -> float:
        if case in ("haproxy", "nginx"):
            return session_cpu_seconds(self.servers.pids[case])
        if case == "pyvs":
            prog_id = director_program(self.topo)
            return program_run_time(prog_id)[0] / 1e9 if prog_id else 0.0
        return 0.0


def url(topo: Topology, servers: Servers, case: str, size: int) -> str:
    host, port = {"pyvs": (topo.vip, WEB_PORT), "haproxy": (servers.dip, HAPROXY_PORT),
                  "nginx": (servers.dip, NGINX_PORT), "direct": (servers.rips[0], WEB_PORT)}[case]
    return f"http://{host}:{port}/bytes/{size}"


def measure(topo: Topology, servers: Servers, director: Director, case: str, size: int, run: int,
            seconds: int, connections: int) -> Sample:
    argv = ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "5s",
            url(topo, servers, case, size)]
    cpu_before = director.cpu_seconds(case)
    output = run_in_netns(topo.client.netns, argv, timeout=seconds + 30).stdout
    cpu = director.cpu_seconds(case) - cpu_before
    rps, bps, p99, errors = parse_wrk(output)
    requests = max(rps * seconds, 1)
    sample = Sample(case, size, run, rps, bps, p99 * 1e3, cpu / requests * 1e6, errors)
    log.info("proxies: run %d %-7s %8d B: %9.0f req/s, p99 %.2f ms, director CPU %.2f us/request, %d errors",
             run, case, size, rps, p99 * 1e3, sample.cpu_us_per_request, errors)
    return sample


def median_of(samples: list[Sample], case: str, size: int, metric: str) -> tuple[float, float]:
    """(median, max - min) of one metric over the runs."""
    values = [getattr(s, metric) for s in samples if s.case == case and s.size == size]
    return statistics.median(values), max(values) - min(values)


def report(samples: list[Sample], sizes: list[int]) -> list[str]:
    lines = [f"{'case':<8} {'size':>8} {'req/s':>9} {'spread':>7} {'MB/s':>8} {'p99 ms':>7} "
             f"{'director us/req':>15} {'errors':>6}"]
    for size in sizes:
        for case in CASES:
            rps, spread = median_of(samples, case, size, "requests_per_s")
            cpu = median_of(samples, case, size, "cpu_us_per_request")[0]
            mbps = median_of(samples, case, size, "bytes_per_s")[0] / (1 << 20)
            p99 = median_of(samples, case, size, "p99_ms")[0]
            errors = sum(s.errors for s in samples if s.case == case and s.size == size)
            cpu_text = "-" if case == "direct" else f"{cpu:.3f}"
            lines.append(f"{case:<8} {size:>8} {rps:>9.0f} {spread:>7.0f} {mbps:>8.1f} {p99:>7.2f} "
                         f"{cpu_text:>15} {errors:>6}")
    lines.append("")
    for size, case, reference, metric, limit, kind in TARGETS:
        if size not in sizes:
            continue
        ratio = median_of(samples, case, size, metric)[0] / max(median_of(samples, reference, size, metric)[0], 1e-9)
        met = ratio >= limit if kind == "min" else ratio <= limit
        sign = ">=" if kind == "min" else "<="
        lines.append(f"{size} B {metric} {case}/{reference}: {ratio:.3f}x (target {sign} {limit}x) "
                     f"{'met' if met else 'MISSED'}")
    return lines


def check_tools() -> None:
    missing = [tool for tool in ("wrk", "haproxy", "nginx") if not shutil.which(tool)]
    if not Path(NGINX_STREAM_MODULE).exists():
        missing.append("libnginx-mod-stream")
    if missing:
        raise BenchError(f"missing {', '.join(missing)}: run benchmarks/setup.sh")


def run(topo: Topology, sizes: list[int], seconds: int, runs: int, connections: int) -> list[Sample]:
    samples = []
    with tempfile.TemporaryDirectory(prefix=f"{topo.prefix}-proxies-") as tmp:
        servers = Servers(topo, Path(tmp), sizes)
        stats_fd = libbpf.enable_run_time_stats()
        try:
            servers.start_all()
            director = Director(topo, servers)
            with pyvs_service(topo):
                for run_index in range(runs):
                    for size in sizes:
                        for case in CASES:
                            samples.append(measure(topo, servers, director, case, size, run_index, seconds,
                                                   connections))
        finally:
            os.close(stats_fd)
            servers.stop_all()
    return samples


def write_results(out: Path, started: float, args: argparse.Namespace, samples: list[Sample],
                  lines: list[str]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"started": started, "seconds": args.seconds, "runs": args.runs,
                               "connections": args.connections, "sizes": args.sizes,
                               "samples": [asdict(s) for s in samples], "summary": lines}, indent=2))
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(samples[0])))
        writer.writeheader()
        writer.writerows(asdict(s) for s in samples)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks proxies", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prefix", default="pyvsb", help="lab prefix (default pyvsb); its lab is built and removed")
    parser.add_argument("--sizes", default="1024,16384,131072,1048576", help="response sizes in bytes")
    parser.add_argument("--seconds", type=int, default=4, help="length of one wrk run (default 4)")
    parser.add_argument("--runs", type=int, default=2, help="runs per figure; the median is kept (default 2)")
    parser.add_argument("--connections", type=int, default=32, help="wrk connections (default 32)")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "proxies.json",
                        help="JSON of every run (a CSV beside it)")
    args = parser.parse_args(argv)
    try:
        args.sizes = [int(n) for n in args.sizes.split(",")]
    except ValueError:
        parser.error(f"--sizes: a comma-separated list of byte counts, not {args.sizes!r}")
    if args.seconds < 1 or args.runs < 1 or args.connections < 1 or min(args.sizes) < 1:
        parser.error("--seconds must be >= 1, --runs, --connections and the sizes >= 1")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        check_tools()
    except BenchError as exc:
        print(f"proxies: {exc}", file=sys.stderr)
        return 1
    topo = default_topology(args.prefix)
    started = time.time()
    lab.up(topo)
    try:
        samples = run(topo, args.sizes, args.seconds, args.runs, args.connections)
    except (BenchError, NetnsError) as exc:
        print(f"proxies: {exc}", file=sys.stderr)
        return 1
    finally:
        lab.down(topo)
    lines = report(samples, args.sizes)
    print("\n".join(lines))
    write_results(args.out, started, args, samples, lines)
    print(f"\nwritten: {args.out} and {args.out.with_suffix('.csv')}")
    return 0
