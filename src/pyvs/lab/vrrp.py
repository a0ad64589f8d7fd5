"""Active/backup in the lab (`pyvs lab up --vrrp`): two directors on the reals' segment, keepalived's VRRP moving the
VIP between them, `pyvs director run` in each serving the VIP only where keepalived put it.

    client ── gateway ──(198.18.0.1, ARP for the VIP)──┬── director   198.18.2.10  keepalived MASTER (priority 250)
      (DNAT public → VIP)                               ├── director2  198.18.2.20  keepalived BACKUP (priority 240)
                                                        ├── rs1, rs2   (replies go to the gateway directly)
                                                        └── VRRP advertisements (224.0.0.18) every advert_int

Each director runs the real keepalived (VRRP only: one vrrp_instance whose virtual_ipaddress is the VIP, no
virtual_server) with files of its own in the lab's state dir (config, pid files, log), and `pyvs director run` with
a [vrrp] section: the daemon serves the VIP while keepalived has put it on its NIC (and sends gratuitous ARP when
it arrives), and leaves it to the kernel otherwise (Dataplane.set_standby). keepalived and the daemons are tracked
by PID and stopped by `pyvs lab down`.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from urllib.request import urlopen

from pyroute2 import IPRoute

from pyvs import netns
from pyvs.dataplane import DataplaneError, open_dataplane
from pyvs.director.runfile import run_file
from pyvs.lab import ecmp
from pyvs.lab.state import STATE_ROOT, load_state, save_state, state_dir
from pyvs.lab.topology import Node, Topology
from pyvs.model import Rules

KEEPALIVED = "/usr/sbin/keepalived"
INSTANCE = "VI_PYVS"
SCHEDULER = "rr"  # no hashing, no sloppy TCP: a flow survives a takeover only when it was synced
CONVERGE_TIMEOUT = 20.0  # seconds for `lab up` until one director holds the VIP
STOP_TIMEOUT = 5.0


def rules(topo: Topology) -> Rules:
    from pyvs.lab.director import tutorial_rules

    return tutorial_rules(topo, SCHEDULER)


def number(topo: Topology, node: Node) -> int:
    return [n.name for n in topo.directors].index(node.name) + 1


def keepalived_dir(topo: Topology, node: Node) -> Path:
    return state_dir(topo) / f"{node.name}-keepalived"


def keepalived_config(topo: Topology, node: Node) -> str:
    """keepalived.conf of one director: VRRP only, the VIP as the instance's address on the segment's NIC."""
    assert topo.vrrp is not None
    lab = topo.vrrp
    nic = topo.ports(node.name)[0].ifname
    n = number(topo, node)
    return f"""# {node.name} of lab {topo.prefix}: written by `pyvs lab up --vrrp`
global_defs {{
    router_id {node.netns}
    vrrp_version 3
    vrrp_garp_master_repeat 3
    vrrp_garp_master_delay 1
}}

vrrp_instance {INSTANCE} {{
    state {'MASTER' if n == 1 else 'BACKUP'}
    interface {nic}
    virtual_router_id {lab.vrid}
    priority {lab.priorities[n - 1]}
    advert_int {lab.advert_int:g}
    virtual_ipaddress {{
        {topo.vip}/32 dev {nic}
    }}
}}
"""


def daemon_config(topo: Topology, node: Node, sync: str = "") -> str:
    """`pyvs director run`'s config for a director of the VRRP lab: the lab's rules (rr), health checks, [vrrp];
    `sync` is a [sync] section to add (connection sync between the two)."""
    services = ecmp.services_config(rules(topo))
    return f"""# {node.name} of lab {topo.prefix}: written by `pyvs lab up --vrrp`
[director]
interface = "{topo.ports(node.name)[0].ifname}"
xdp_mode = "native"
status_listen = "0.0.0.0:9180"
sloppy_tcp = false

[vrrp]
instance = "{INSTANCE}"
{sync}{services}"""


def sync_section(topo: Topology) -> str:
    """The [sync] section of connection sync (pyvs/sync): both roles on each director (a takeover and the
    failback reverse who sends), on the segment's NIC, the VRRP instance's id as syncid."""
    assert topo.vrrp is not None
    return f'[sync]\nrole = "both"\ninterface = "{topo.director_nic.ifname}"\nsyncid = {topo.vrrp.vrid}\n'


def restart_daemons(topo: Topology, sync: str = "") -> None:
    """Stop both daemons and start them again with (or without) a [sync] section."""
    ecmp.stop_daemons(topo)
    for node in topo.directors:
        ecmp.start_daemon(topo, node, daemon_config(topo, node, sync))


# ---- keepalived, one per director ----------------------------------------------------------------------------

def _pid_file(topo: Topology, node: Node, which: str) -> Path:
    return keepalived_dir(topo, node) / f"{which}.pid"


def _is_keepalived(pid: int, config: Path) -> bool:
    argv = ecmp.bgp._cmdline(pid)
    return bool(argv) and argv[0] == KEEPALIVED and str(config) in argv


def keepalived_pids(topo: Topology, node: Node) -> list[int]:
    """The running keepalived processes of a director: the parent (recorded, or from its pid file) and its VRRP
    child (from its pid file); [] when none runs."""
    config = keepalived_dir(topo, node) / "keepalived.conf"
    candidates = [load_state(topo).get("keepalived", {}).get(node.name)]
    for which in ("keepalived", "vrrp"):
        try:
            candidates.append(int(_pid_file(topo, node, which).read_text().split()[0]))
        except (OSError, ValueError, IndexError):
            pass
    found: list[int] = []
    for pid in candidates:
        if pid is not None and int(pid) not in found and _is_keepalived(int(pid), config) and _alive(int(pid)):
            found.append(int(pid))
    return found


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start_keepalived(topo: Topology, node: Node) -> int | None:
    """Start keepalived (VRRP only, in the foreground, its own pid files, logging to its log file) in a director
    unless it runs; returns the PID started (None: one was running)."""
    if keepalived_pids(topo, node):
        return None
    directory = keepalived_dir(topo, node)
    directory.mkdir(parents=True, exist_ok=True)
    for which in ("keepalived", "vrrp", "checkers"):  # a killed child may linger as a zombie for a while, and
        _pid_file(topo, node, which).unlink(missing_ok=True)  # keepalived takes its pid for a running instance
    config = directory / "keepalived.conf"
    config.write_text(keepalived_config(topo, node))
    argv = [KEEPALIVED, "--vrrp", "--dont-fork", "--log-console", "--log-detail", "--no-syslog",
            "--use-file", str(config), "--pid", str(_pid_file(topo, node, "keepalived")),
            "--vrrp_pid", str(_pid_file(topo, node, "vrrp")), "--checkers_pid", str(_pid_file(topo, node, "checkers"))]
    pid = netns.spawn_in_netns(node.netns, argv, log_path=directory / "keepalived.log")
    state = load_state(topo)
    state.setdefault("keepalived", {})[node.name] = pid
    save_state(topo, state)
    return pid


def kill_keepalived(topo: Topology, node: Node) -> list[int]:
    """kill -9 a director's keepalived, as a crash would: no priority 0 advertisement, the VIP stays on its NIC.
    Every process is stopped first (a child would otherwise see its parent die and shut down cleanly, or the
    parent respawn its child)."""
    pids = keepalived_pids(topo, node)
    for sig in (signal.SIGSTOP, signal.SIGKILL):
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
    for pid in pids:
        ecmp.reap(pid, 2.0)
    return pids


def kill_director(topo: Topology, node: Node) -> list[int]:
    """kill -9 a director's keepalived and its `pyvs director run`, as a crash would; returns the PIDs killed. Its
    data plane (XDP, pinned maps) and the VIP on its NIC are left as they are."""
    killed = kill_keepalived(topo, node)
    pid = ecmp.daemon_pid(topo, node)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        ecmp.reap(pid, 2.0)
        killed.append(pid)
    return killed


def stop_keepalived(topo: Topology, node: Node) -> list[str]:
    """SIGTERM keepalived (it sends a priority 0 advertisement and removes the VIP); SIGKILL it if it lingers."""
    pids = keepalived_pids(topo, node)
    if not pids:
        return []
    parent = pids[0]
    os.kill(parent, signal.SIGTERM)
    if not ecmp.reap(parent, STOP_TIMEOUT):
        kill_keepalived(topo, node)
    for pid in pids[1:]:
        ecmp.reap(pid, 1.0)
    return [f"stopped keepalived of {node.name} (pid {parent})"]


# ---- what holds the VIP --------------------------------------------------------------------------------------

def holders(topo: Topology) -> list[str]:
    """The directors that have the VIP on their NIC now."""
    found = []
    for node in topo.directors:
        if not netns.exists(node.netns):
            continue
        with IPRoute(netns=node.netns, flags=0) as ipr:
            if any(a.get_attr("IFA_ADDRESS") == topo.vip for a in ipr.get_addr(family=2)):
                found.append(node.name)
    return found


def wait_holder(topo: Topology, name: str, timeout: float) -> float:
    """Seconds until `name` holds the VIP (a killed master may still hold it too); NetnsError after `timeout`."""
    started = time.monotonic()
    while name not in holders(topo):
        if time.monotonic() - started > timeout:
            raise netns.NetnsError(f"{name} does not hold {topo.vip} within {timeout:g}s (holders: "
                                   f"{holders(topo) or 'none'})")
        time.sleep(0.01)
    return time.monotonic() - started


# ---- build, check, remove -------------------------------------------------------------------------------------

def setup(topo: Topology, sync: str = "") -> list[str]:
    """Data planes (XDP, rr, sloppy TCP off, the lab's rules), keepalived and a daemon per director; then wait
    until the master holds the VIP."""
    actions: list[str] = []
    for node in topo.directors:
        actions += ecmp._setup_dataplane(topo, node, rules(topo), sloppy=False)
    for node in topo.directors:
        if ecmp.daemon_pid(topo, node) is None:
            pid = ecmp.start_daemon(topo, node, daemon_config(topo, node, sync))
            actions.append(f"started `pyvs director run` in {node.netns} (pid {pid})")
        started = start_keepalived(topo, node)
        if started:
            actions.append(f"started keepalived (VRRP) in {node.netns} (pid {started})")
    if not holders(topo):
        wait_holder(topo, topo.directors[0].name, CONVERGE_TIMEOUT)
    return actions


def processes(topo: Topology) -> dict[str, int | None]:
    found: dict[str, int | None] = {}
    for node in topo.directors:
        found[f"{node.name} daemon"] = ecmp.daemon_pid(topo, node)
        found[f"{node.name} keepalived"] = next(iter(keepalived_pids(topo, node)), None)
    return found


def problems(topo: Topology) -> list[str]:
    """What the VRRP lab lacks: keepalived and a daemon per director, exactly one holder of the VIP, the same rules
    and tables on both."""
    if not all(netns.exists(n.netns) for n in topo.directors):
        return []
    found = [f"{name} is not running" for name, pid in processes(topo).items() if pid is None]
    held = holders(topo)
    if len(held) != 1:
        found.append(f"{topo.vip} is held by {', '.join(held) if held else 'no director'} (one should hold it)")
    try:
        prints = ecmp.fingerprints(topo)
        if len(set(prints.values())) > 1:
            found.append("the directors' rules and tables differ: " +
                         ", ".join(f"{name} {value}" for name, value in prints.items()))
    except (OSError, DataplaneError) as exc:
        found.append(f"fingerprints: {exc}")
    return found


def teardown(topo: Topology) -> list[str]:
    """Stop keepalived (it lets the VIP go) and the daemons of both directors."""
    actions: list[str] = []
    for node in topo.directors:
        if netns.exists(node.netns):
            actions += stop_keepalived(topo, node)
        else:
            kill_keepalived(topo, node)
    alive = [node for node in topo.directors if netns.exists(node.netns)]
    actions += ecmp.stop_daemons(topo, alive) if alive else []
    for node in topo.directors:
        pid = ecmp.daemon_pid(topo, node)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            ecmp.reap(pid, 2.0)
        run_file(ecmp.pin_dir(node)).unlink(missing_ok=True)
    return actions


def standby(topo: Topology) -> dict[str, set[str]]:
    """Director -> the VIPs its data plane does not serve now."""
    found = {}
    for node in topo.directors:
        with netns.in_netns(node.netns), open_dataplane(ecmp.pin_dir(node)) as dp:
            found[node.name] = {str(vip) for vip in dp.standby_vips()}
    return found


def role_since(topo: Topology, node: Node, role: str) -> float:
    """When (time.time()) a director's daemon saw its VRRP role become `role`, from its status; ValueError if it is
    not in that role."""
    with netns.in_netns(node.netns), urlopen("http://127.0.0.1:9180/status", timeout=5) as response:  # noqa: S310
        status = json.loads(response.read())["vrrp"]
    if status["role"] != role:
        raise ValueError(f"{node.name} is {status['role']}, not {role}")
    return float(status["since"])


def forget_flows(topo: Topology, node: Node) -> int:
    """Delete every connection entry of a director's data plane (as a director that never carried these flows):
    a client's source port used again later would otherwise find the old entry, closed or not, and follow it to
    its real; returns how many were deleted."""
    with netns.in_netns(node.netns), open_dataplane(ecmp.pin_dir(node)) as dp:
        return sum(dp.flush_connections(svc.key, real.key) for svc in dp.read_rules().services.values()
                   for real in svc.reals.values())


def record(topo: Topology) -> None:
    state = load_state(topo)
    state["vrrp"] = True
    save_state(topo, state)


def recorded(prefix: str) -> bool:
    """Whether the lab of this prefix was brought up with --vrrp (or left a second director's namespace behind)."""
    try:
        if json.loads((STATE_ROOT / prefix / "state.json").read_text()).get("vrrp"):
            return True
    except (OSError, ValueError):
        pass
    return (STATE_ROOT / prefix / "director2-keepalived").exists()
