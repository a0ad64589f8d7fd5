"""Active/active in the lab (`pyvs lab up --directors N`): N directors behind a BGP router that spreads the VIP's
flows over them (ECMP, hashed on the 5-tuple), every director on the reals' segment.

    client ── gateway ──(198.18.4.0/24)── router ──┬── director   198.18.2.10 ┐ each: XDP (mh, sloppy TCP) and
      (DNAT public → VIP; VIP/32 via the router)   ├── director2  198.18.2.20 │ `pyvs director run` announcing
                                                   ├── ...                    ┘ the VIP over BGP (its own BIRD)
                                                   ├── rs1, rs2 (replies go to the gateway directly)
                                                   └── gateway (198.18.0.1: the reals' way back)

The router runs BIRD (one session per director, `merge paths`: one kernel route with a next hop per director
that announces the VIP) with net.ipv4.fib_multipath_hash_policy=1. The directors forward with mh hashing the
client's address and port (`mh-port`) and sloppy TCP: whichever director a flow reaches, it picks the same real,
so a flow that ECMP moves to another director goes on. Each director runs `pyvs director run` with a [bgp]
section, and a [sync] section (role both) so that every director also holds the others' connections: a flow
moved after the reals changed (mh's table with them) still reaches its real. The daemons and the router's BIRD
are tracked by PID in the lab's state and stopped by `pyvs lab down`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sys
import time
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from pyvs import netns
from pyvs.dataplane import Dataplane, DataplaneError, attach_pass_program, open_dataplane
from pyvs.dataplane.base import PYVS_PROGRAMS
from pyvs.dataplane.pins import bpffs_root
from pyvs.director import bgp
from pyvs.director.runfile import run_file
from pyvs.lab.state import STATE_ROOT, child_env, load_state, save_state, state_dir
from pyvs.lab.topology import (
    MAX_DIRECTORS,
    Node,
    Topology,
    director_address,
    director_address6,
    director_names,
)
from pyvs.model import Rules, Service

SCHEDULER, SCHED_FLAGS = "mh", ("mh-port",)  # the same real from every director, per client address and port
CONVERGE_TIMEOUT = 30.0  # seconds for `lab up` until the router's route has a next hop per director
STOP_TIMEOUT = 10.0  # seconds for the daemons to withdraw and end on `lab down`


# ---- what the lab's directors forward and announce ------------------------------------------------------

def pin_dir(node: Node) -> Path:
    return bpffs_root() / "pyvs" / node.netns


def ecmp_rules(topo: Topology) -> Rules:
    """The tutorial's services (TCP and UDP port 80 over every real), with mh and mh-port on every director."""
    from pyvs.lab.director import tutorial_rules

    rules = tutorial_rules(topo, SCHEDULER)
    for svc in rules.services.values():
        svc.sched_flags = SCHED_FLAGS
    return rules


def services_config(rules: Rules) -> str:
    """The [[service]] tables of a lab director's daemon config: each service of `rules` with its reals, an HTTP
    check on TCP ones."""
    def reals(svc: Service) -> str:
        return "".join(f'\n[[service.real]]\naddress = "{real.rip}"\n' for real in svc.reals.values())

    def flags(svc: Service) -> str:
        return f"scheduler_flags = {list(svc.sched_flags)!r}\n".replace("'", '"') if svc.sched_flags else ""

    check = 'check = { type = "http", path = "/", interval = 1, timeout = 1, fall = 2 }'
    return "".join(f"""
[[service]]
proto = "{svc.key.proto.label.lower()}"
vip = "{svc.key.vip}"
port = {svc.key.port}
scheduler = "{svc.scheduler}"
{flags(svc)}{check if svc.key.proto.name == "TCP" else ""}
{reals(svc)}""" for svc in rules.sorted_services())


def daemon_config(topo: Topology, node: Node) -> str:
    """`pyvs director run`'s config for one of the lab's directors: the lab's rules, health checks, [bgp]."""
    assert topo.bgp is not None
    number = director_names(MAX_DIRECTORS).index(node.name) + 1
    services = services_config(ecmp_rules(topo))
    next_hop6 = f'next_hop6 = "{director_address6(number)}"\n' if topo.ipv6 else ""
    return f"""# {node.name} of lab {topo.prefix}: written by `pyvs lab up --directors N`
[director]
interface = "{topo.ports(node.name)[0].ifname}"
xdp_mode = "native"
status_listen = "127.0.0.1:9180"
sloppy_tcp = true

[bgp]
local_asn = {topo.bgp.director_asn}
peer_asn = {topo.bgp.router_asn}
peers = ["{topo.bgp.router_address}"]
local_address = "{director_address(number)}"
hold_time = {topo.bgp.hold_time}
connect_retry = 1
withdraw_wait = 1
communities = ["{topo.bgp.director_asn}:{topo.web_port}"]
{next_hop6}
[sync]
role = "both"
interface = "{topo.ports(node.name)[0].ifname}"
syncid = 1
{services}"""


def router_config(topo: Topology) -> str:
    """The router's BIRD: a session per director, the VIP's routes merged into one ECMP route in the kernel (in a
    dual-stack lab the IPv6 VIP's too, carried on the same sessions)."""
    assert topo.bgp is not None
    lab = topo.bgp
    peers = "".join(f"protocol bgp {bgp.protocol_name(IPv4Address(director_address(n)))} from pyvs_directors "
                    f"{{ neighbor {director_address(n)} as {lab.director_asn}; }}\n"
                    for n in range(1, len(topo.directors) + 1))
    kernel6 = "protocol kernel { ipv6 { import none; export all; }; merge paths yes; }\n" if topo.ipv6 else ""
    channel6 = "  ipv6 { import all; export none; };\n" if topo.ipv6 else ""
    return f"""# the router of lab {topo.prefix}: written by `pyvs lab up --directors N`
router id {lab.router_address};
timeformat protocol "%s";
protocol device {{ }}
protocol kernel {{ ipv4 {{ import none; export all; }}; merge paths yes; }}
{kernel6}template bgp pyvs_directors {{
  local {lab.router_address} as {lab.router_asn};
  hold time {lab.hold_time}; keepalive time 1; connect retry time 1; error wait time 1, 4;
  ipv4 {{ import all; export none; }};
{channel6}}}
{peers}"""


# ---- processes: the router's BIRD and a daemon per director ---------------------------------------------

def router_dir(topo: Topology) -> Path:

    return state_dir(topo) / "router"


def config_path(topo: Topology, node: Node) -> Path:

    return state_dir(topo) / f"{node.name}.toml"


def _is_daemon(pid: int, config: Path) -> bool:
    argv = bgp._cmdline(pid)
    return "director" in argv and "run" in argv and str(config) in argv


def daemon_pid(topo: Topology, node: Node) -> int | None:
    """The PID of a director's daemon: recorded, else found by its config path (a crash may have lost the record)."""

    config = config_path(topo, node)
    pid = load_state(topo).get("daemons", {}).get(node.name)
    if pid is not None and _is_daemon(int(pid), config):
        return int(pid)
    running = (int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit())
    return next((pid for pid in running if _is_daemon(pid, config)), None)


def start_daemon(topo: Topology, node: Node, text: str | None = None) -> int:
    """Start `pyvs director run` in a director (no-op when it runs) with the config `text` (default: the ECMP lab's);
    returns its PID, recorded at once."""

    pid = daemon_pid(topo, node)
    if pid is not None:
        return pid
    config = config_path(topo, node)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(daemon_config(topo, node) if text is None else text)
    argv = [sys.executable, "-m", "pyvs.cli", "director", "run", "--config", str(config),
            "--pin-dir", str(pin_dir(node))]
    pid = netns.spawn_in_netns(node.netns, argv, log_path=state_dir(topo) / f"{node.name}-daemon.log",
                               env=child_env())
    state = load_state(topo)
    state.setdefault("daemons", {})[node.name] = pid
    save_state(topo, state)
    return pid


def kill_director(topo: Topology, node: Node) -> list[int]:
    """kill -9 a director's daemon and its BIRD (as a crash would); returns the PIDs killed. The data plane
    (XDP and its pinned maps) is left as it is."""
    killed = []
    pid = daemon_pid(topo, node)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
    bird = bgp.kill_bird(bgp.run_dir(pin_dir(node)))  # at once: both die at the same moment
    if bird is not None:
        killed.append(bird)
    for pid in killed:
        reap(pid, 2.0)
    return killed


def reap(pid: int, timeout: float) -> bool:
    """Wait until pid is gone (reaping it when it is our child); True when it is."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:
                return True
        except ChildProcessError:
            pass
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True  # dead; its parent (not us) reaps it
        except (OSError, IndexError):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)


def stop_daemons(topo: Topology, nodes: list[Node] | None = None) -> list[str]:
    """SIGTERM the daemons (each withdraws its VIPs and stops its BIRD), all at once; SIGKILL what is left."""
    pids = {node.name: daemon_pid(topo, node) for node in nodes or topo.directors}
    running = {name: pid for name, pid in pids.items() if pid is not None}
    for pid in running.values():
        os.kill(pid, signal.SIGTERM)
    actions = []
    for name, pid in running.items():
        if not reap(pid, STOP_TIMEOUT):
            os.kill(pid, signal.SIGKILL)
            reap(pid, 2.0)
        actions.append(f"stopped the daemon of {name} (pid {pid})")
    return actions


def start_router(topo: Topology) -> str | None:
    """Start the router's BIRD unless it runs; returns what was done."""

    directory = router_dir(topo)
    if bgp.bird_pid(directory) is not None:
        return None
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bird.conf").write_text(router_config(topo))
    (directory / "bird.ctl").unlink(missing_ok=True)
    argv = [bgp.BIRD, "-f", "-c", str(directory / "bird.conf"), "-s", str(directory / "bird.ctl"),
            "-P", str(directory / "bird.pid")]
    assert topo.bgp is not None
    pid = netns.spawn_in_netns(topo.node(topo.bgp.router).netns, argv, log_path=directory / "bird.log")
    state = load_state(topo)
    state["router_bird"] = pid
    save_state(topo, state)
    deadline = time.monotonic() + bgp.START_TIMEOUT
    while bgp.bird_pid(directory) is None or not (directory / "bird.ctl").exists():
        if time.monotonic() > deadline or not Path(f"/proc/{pid}").exists():
            raise netns.NetnsError(f"the router's BIRD (pid {pid}) did not start: "
                                   f"{(directory / 'bird.log').read_text(errors='replace').strip()}")
        time.sleep(0.05)
    return f"started BIRD in {topo.node(topo.bgp.router).netns} (pid {pid})"


def router_peers(topo: Topology) -> dict[str, bgp.PeerState]:
    """The router's sessions, by director address."""
    return {peer.address: peer for peer in bgp.Speaker(router_dir(topo)).peers()}


def router_next_hops(topo: Topology, version: int = 4) -> set[str]:
    """The next hops of the router's route to the VIP of a family (its kernel's, as ECMP uses them)."""
    assert topo.bgp is not None
    vip = topo.vip if version == 4 else topo.vip6
    family, length = (socket.AF_INET, 32) if version == 4 else (socket.AF_INET6, 128)
    with IPRoute(netns=topo.node(topo.bgp.router).netns, flags=0) as ipr:
        routes = ipr.get_routes(family=family, table=254)  # a dump: a lookup fails when there is none
        hops: set[str] = set()
        for route in routes:
            if route.get("dst_len") != length or route.get("RTA_DST") != vip:
                continue
            if route.get("RTA_GATEWAY"):
                hops.add(route.get("RTA_GATEWAY"))
            for hop in route.get("RTA_MULTIPATH") or []:
                hops.add(hop.get_attr("RTA_GATEWAY"))
    return hops


def wait_next_hops(topo: Topology, count: int, timeout: float) -> float:
    """Seconds until the router's route to each VIP has `count` next hops; NetnsError (lab up: LabError) after
    `timeout`."""
    started = time.monotonic()
    for version, vip in zip((4, 6), topo.vips, strict=False):
        while len(router_next_hops(topo, version)) != count:
            if time.monotonic() - started > timeout:
                raise netns.NetnsError(f"the router's route to {vip} has next hops "
                                       f"{sorted(router_next_hops(topo, version)) or 'none'}, not {count} within "
                                       f"{timeout:g}s")
            time.sleep(0.05)
    return time.monotonic() - started


# ---- build, check, remove -----------------------------------------------------------------------------------

def _setup_dataplane(topo: Topology, node: Node, rules: Rules | None = None, sloppy: bool = True) -> list[str]:
    """XDP (native) on the director's NIC, a pass program on its switch port, sloppy TCP (unless not `sloppy`), the
    lab's rules (default: the ECMP lab's). In the ECMP lab a VIP left on the NIC is removed (it is routed there)."""
    from pyvs.lab.director import _service_text

    actions = []
    nic = topo.ports(node.name)[0]
    peer = next(link.b for link in topo.links if link.a == nic)
    with netns.in_netns(topo.switch.netns):
        if Dataplane.xdp_mode(peer.ifname) is None:  # native XDP_TX on a veth arrives only when the peer runs XDP
            attach_pass_program(peer.ifname, "native")
            actions.append(f"attached the pass-through XDP program to {topo.switch.netns}:{peer.ifname}")
    with netns.in_netns(node.netns), IPRoute() as ipr:
        index = ipr.link_lookup(ifname=nic.ifname)[0]
        for addr in ipr.get_addr(family=socket.AF_INET, index=index) if topo.bgp is not None else ():
            if addr.get_attr("IFA_ADDRESS") == topo.vip:  # left by a one-director lab: the VIP is routed here now
                ipr.addr("del", index=index, address=topo.vip, prefixlen=addr["prefixlen"])
                actions.append(f"removed the VIP from {node.netns}:{nic.ifname}")
    with netns.in_netns(node.netns), open_dataplane(pin_dir(node)) as dp:
        found = Dataplane.xdp_program(nic.ifname)
        if found is None:
            dp.attach(nic.ifname, "native")
            actions.append(f"attached XDP (native) to {node.netns}:{nic.ifname}")
        elif found[2] in PYVS_PROGRAMS and not dp.serves(found[1]):
            dp.attach(nic.ifname, found[0])
            actions.append(f"replaced the stale pyvs program on {node.netns}:{nic.ifname} (it used maps that are no "
                           "longer pinned)")
        if dp.switches().get("sloppy_tcp") != sloppy:
            dp.set_sloppy_tcp(sloppy)
            actions.append(f"sloppy TCP {'on' if sloppy else 'off'} in {node.netns}")
        wanted = rules or ecmp_rules(topo)
        present = dp.read_rules()
        for key in sorted(set(wanted.services) | set(present.services)):
            want = wanted.services.get(key)
            if _service_text(present.services.get(key)) != _service_text(want):
                dp.apply_service(key, want)
                actions.append(f"{'wrote' if want else 'removed'} service {key.title} in {node.netns}")
    return actions


def setup(topo: Topology) -> list[str]:
    """Data planes, the router's BIRD, a daemon per director; then wait until the router routes the VIP to
    every director."""
    actions: list[str] = []
    for node in topo.directors:
        actions += _setup_dataplane(topo, node)
    started = start_router(topo)
    if started:
        actions.append(started)
    for node in topo.directors:
        if daemon_pid(topo, node) is None:
            actions.append(f"started `pyvs director run` in {node.netns} (pid {start_daemon(topo, node)})")
    wait_next_hops(topo, len(topo.directors), CONVERGE_TIMEOUT)
    return actions


def processes(topo: Topology) -> dict[str, int | None]:
    """What runs for the ECMP lab: the router's BIRD, each director's daemon and BIRD (None: not running)."""
    found: dict[str, int | None] = {"router bird": bgp.bird_pid(router_dir(topo))}
    for node in topo.directors:
        found[f"{node.name} daemon"] = daemon_pid(topo, node)
        found[f"{node.name} bird"] = bgp.bird_pid(bgp.run_dir(pin_dir(node)))
    return found


def fingerprints(topo: Topology) -> dict[str, str]:
    """Each director's fingerprint of rules and tables (the same on every director that forwards alike)."""
    found = {}
    for node in topo.directors:
        with netns.in_netns(node.netns), open_dataplane(pin_dir(node)) as dp:
            found[node.name] = dp.fingerprint()
    return found


def problems(topo: Topology) -> list[str]:
    """What the ECMP lab lacks: XDP, rules, equal tables, daemons, the router's sessions and its ECMP route."""
    from pyvs.lab.director import _service_text

    found: list[str] = []
    if not all(netns.exists(n.netns) for n in (*topo.directors, topo.switch)):
        return found  # the lab's own status reports missing namespaces
    wanted = ecmp_rules(topo)
    for node in topo.directors:
        nic = topo.ports(node.name)[0].ifname
        try:
            with netns.in_netns(node.netns):
                if Dataplane.xdp_mode(nic) is None:
                    found.append(f"XDP is not attached to {node.netns}:{nic}: nothing forwards")
                if not pin_dir(node).is_dir():
                    found.append(f"no data plane pinned at {pin_dir(node)}")
                    continue
                with open_dataplane(pin_dir(node)) as dp:
                    found_program = Dataplane.xdp_program(nic)
                    if found_program and found_program[2] in PYVS_PROGRAMS and not dp.serves(found_program[1]):
                        found.append(f"the XDP program on {node.netns}:{nic} uses maps that are no longer pinned at "
                                     f"{pin_dir(node)}: the rules do not reach it")
                    present = dp.read_rules()
                    for key in sorted(set(wanted.services) | set(present.services)):
                        if _service_text(present.services.get(key)) != _service_text(wanted.services.get(key)):
                            found.append(f"{node.name}: service {key.title} is not the lab's")
        except (OSError, ValueError, DataplaneError) as exc:
            found.append(f"{node.name}: {exc}")
        if daemon_pid(topo, node) is None:
            found.append(f"{node.name}'s `pyvs director run` is not running")
    try:
        prints = fingerprints(topo)
        if len(set(prints.values())) > 1:
            found.append("the directors' rules and tables differ: " +
                         ", ".join(f"{name} {value}" for name, value in prints.items()))
    except (OSError, DataplaneError) as exc:
        found.append(f"fingerprints: {exc}")
    assert topo.bgp is not None
    if bgp.bird_pid(router_dir(topo)) is None:
        found.append(f"the router's BIRD is not running (in {topo.node(topo.bgp.router).netns})")
        return found
    try:
        peers = router_peers(topo)
    except bgp.BgpError as exc:
        return [*found, f"router: {exc}"]
    for n, node in enumerate(topo.directors, start=1):
        peer = peers.get(director_address(n))
        if peer is None or not peer.established:
            state = f"{peer.state} {peer.last_error}".strip() if peer else "no session"
            found.append(f"the router's BGP session with {node.name} ({director_address(n)}) is {state}")
    for version, vip in zip((4, 6), topo.vips, strict=False):
        hops = router_next_hops(topo, version)
        dip = director_address if version == 4 else director_address6
        missing = [n.name for i, n in enumerate(topo.directors, start=1) if dip(i) not in hops]
        if missing:
            found.append(f"the router does not route {vip} to {', '.join(missing)}")
    return found


def teardown(topo: Topology) -> list[str]:
    """Stop the daemons (they withdraw and stop their BIRD), any BIRD a killed daemon left, the router's BIRD;
    remove the daemons' run files and BIRD's directories."""

    alive = [node for node in topo.directors if netns.exists(node.netns)]
    actions = stop_daemons(topo, alive) if alive else []
    for node in topo.directors:  # a director whose namespace is gone: its daemon cannot withdraw
        pid = daemon_pid(topo, node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            reap(pid, 2.0)
    for node in topo.directors:
        directory = bgp.run_dir(pin_dir(node))
        pid = bgp.kill_bird(directory)
        if pid is not None:
            reap(pid, 2.0)
            actions.append(f"killed the BIRD of {node.name} (pid {pid})")
        shutil.rmtree(directory, ignore_errors=True)
        run_file(pin_dir(node)).unlink(missing_ok=True)
    directory = router_dir(topo)
    pid = bgp.bird_pid(directory)
    if pid is not None:
        try:
            bgp.Speaker(directory).stop()
        except (bgp.BgpError, OSError):
            bgp.kill_bird(directory)
        reap(pid, 2.0)
        actions.append(f"stopped the router's BIRD (pid {pid})")
    shutil.rmtree(directory, ignore_errors=True)
    return actions


def recorded_directors(prefix: str) -> int | None:
    """How many directors the lab of this prefix was brought up with (None: no lab, or one director)."""

    try:
        data: dict[str, Any] = json.loads((STATE_ROOT / prefix / "state.json").read_text())
    except (OSError, ValueError):
        return None
    count = data.get("directors")
    return int(count) if count else None


def leftover_directors(prefix: str) -> int | None:
    """The directors of an ECMP lab of this prefix that is (partly) there: recorded, else counted from the
    namespaces and BIRD directories left (a crash may have taken the record); None when there is none."""

    recorded = recorded_directors(prefix)
    if recorded:
        return recorded
    found = [n for n in range(2, MAX_DIRECTORS + 1) if netns.exists(f"{prefix}-director{n}")
             or bgp.run_dir(Path(f"{prefix}-director{n}")).exists()]
    if found or netns.exists(f"{prefix}-router") or (STATE_ROOT / prefix / "router").exists():
        return max([2, *found])
    return None


def record_directors(topo: Topology) -> None:

    state = load_state(topo)
    state["directors"] = len(topo.directors)
    save_state(topo, state)


# ---- what the tests and benchmarks look at -------------------------------------------------------------

def flow_directors(topo: Topology, ports: set[int], window: float = 0.5, vip: str | None = None
                   ) -> dict[int, list[str]]:
    """Client source port -> the directors that forward packets of that TCP flow (to the VIP) now: their entry was
    refreshed within `window` seconds (read twice: its time left did not shrink), whatever its state (a flow moved
    onto an old entry of the same source port keeps that entry's state). Old entries of a source port used
    before, or of a flow that moved away, are left out."""
    def entries() -> dict[tuple[str, int], float]:
        found = {}
        for node in topo.directors:
            with netns.in_netns(node.netns), open_dataplane(pin_dir(node)) as dp:
                for conn in dp.connections():
                    if conn.cport in ports and str(conn.vip) == (vip or topo.vip) and not conn.template:
                        found[(node.name, conn.cport)] = conn.expires
        return found

    first = entries()
    time.sleep(window)
    second = entries()
    result: dict[int, list[str]] = {port: [] for port in ports}
    for (name, port), left in second.items():
        if (name, port) in first and left > first[(name, port)] - window * 0.8:
            result[port].append(name)
    return result


def scheduled(topo: Topology, vip: str | None = None) -> dict[str, int]:
    """Director -> connections its data plane scheduled to the services of the VIP (`vip`, else IPv4's) so far."""
    counts = {}
    for node in topo.directors:
        with netns.in_netns(node.netns), open_dataplane(pin_dir(node)) as dp:
            counts[node.name] = sum(c.conns for key, c in dp.service_stats().items()
                                    if str(key.vip) == (vip or topo.vip))
    return counts


def _switch_port(topo: Topology, node: Node) -> str:
    nic = topo.ports(node.name)[0]
    return next(link.b for link in topo.links if link.a == nic).ifname


ISOLATION_TABLE = "pyvs_isolate"


def isolate(topo: Topology, node: Node, isolated: bool) -> None:
    """A hung director: the switch drops every frame to and from its port (nftables, bridge family) while the
    link stays up and the switch keeps its MAC, so frames for it go on arriving at a box that does nothing, until
    the router's hold timer runs out. `isolated=False` takes the rules away. (Not a port taken down: the bridge
    would forget the MAC and flood its frames, and a veth has no MAC filter, so the other directors' XDP would
    forward them, which a real NIC does not.)"""
    port = _switch_port(topo, node)
    table = f"bridge {ISOLATION_TABLE}"
    netns.run_in_netns(topo.switch.netns, ["nft", f"add table {table}"])
    netns.run_in_netns(topo.switch.netns, ["nft", f"add chain {table} forward "
                                                  "{ type filter hook forward priority 0; policy accept; }"])
    listing = netns.run_in_netns(topo.switch.netns, ["nft", "-a", "list", "chain", *table.split(), "forward"]).stdout
    handles = [line.rsplit("# handle ", 1)[1] for line in listing.splitlines() if f'"{port}"' in line]
    for handle in handles:
        netns.run_in_netns(topo.switch.netns, ["nft", "delete", "rule", *table.split(), "forward", "handle", handle])
    if isolated:
        for direction in ("iifname", "oifname"):
            netns.run_in_netns(topo.switch.netns, ["nft", f'add rule {table} forward {direction} "{port}" drop'])
