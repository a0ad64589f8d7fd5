"""Writers of one data plane in several processes: pyvsadm, a daemon-like writer and arpwatch-like MAC updates.

Every write takes the writers' lock and re-reads what it changes under it, so after racing for a while the slot
index agrees with the maps and nothing deleted came back. Slow work (resolving a silent real) happens before the
lock, and refresh_macs goes on past a real it cannot resolve.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from ipaddress import IPv4Address
from pathlib import Path

import pytest
from pyroute2 import NetNS

from pyvs.dataplane import abi, open_dataplane, remove_pins, scratch_dataplane
from pyvs.dataplane.neighbours import NeighbourError, NextHop
from pyvs.dataplane.pins import bpffs_root
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey
from pyvs.netns import create, exists, remove

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
NETNS = f"{PREFIX}-race{os.getpid() % 10000}"
RACE_SECONDS = 12.0
REALS = {f"198.18.2.{i}": f"02:00:00:00:02:{i:02x}" for i in (11, 12, 13)}

DAEMON = """
import sys, time
from ipaddress import IPv4Address
from pyvs.dataplane import open_dataplane
from pyvs.model import Protocol, Real, Service, ServiceKey, Timeouts
def key(port):
    return ServiceKey(Protocol.TCP, IPv4Address("198.18.0.10"), port)
def service(port, many):
    other = IPv4Address("198.18.2.12" if many else "198.18.2.13")
    rs = [Real(IPv4Address("198.18.2.11"), port, 1), Real(other, port, 2)]
    return Service(key(port), "wlc", reals={r.key: r for r in rs})
deadline = time.monotonic() + float(sys.argv[1])
rounds = 0
with open_dataplane(sys.argv[2]) as dp:
    while True:
        many = rounds % 2 == 0
        for port in range(1000, 1040):
            wanted = service(port, many) if many or port < 1020 else None
            dp.update_service(key(port), lambda old: wanted)
        dp.zero(key(1000))
        dp.flush_connections(key(1000), (IPv4Address("198.18.2.11"), 1000))
        dp.set_timeouts(Timeouts(900, 120, 300))
        rounds += 1
        if not many and time.monotonic() > deadline:
            break
print(rounds)
"""

ARPWATCH = """
import sys, time
from ipaddress import IPv4Address
from pyvs.dataplane import open_dataplane
deadline = time.monotonic() + float(sys.argv[1])
changed = 0
with open_dataplane(sys.argv[2]) as dp:
    while time.monotonic() < deadline:
        for mac in ("02:00:00:00:0a:01", "02:00:00:00:0a:02"):
            changed += dp.set_real_mac(IPv4Address("198.18.2.11"), mac)
print(changed)
"""

PYVSADM = """
import subprocess, sys, time
deadline = time.monotonic() + float(sys.argv[1])
svc = ["-t", "198.18.0.20:80"]
steps = [["-A", *svc, "-s", "rr"], ["-a", *svc, "-r", "198.18.2.11:80", "-g"],
         ["-a", *svc, "-r", "198.18.2.12:80"], ["-d", *svc, "-r", "198.18.2.11:80"], ["-D", *svc]]
rounds = 0
while time.monotonic() < deadline:
    for step in steps:
        done = subprocess.run([sys.executable, "-m", "pyvs.admin.cli", *step], capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"pyvsadm {' '.join(step)}: {done.stderr}")
    rounds += 1
print(rounds)
"""


@pytest.fixture
def race_netns() -> Iterator[Path]:
    """A namespace whose reals answer from permanent neighbour entries on a veth; its pins are removed after."""
    pin_dir = bpffs_root() / "pyvs" / f"{NETNS}-pins"
    create(NETNS)
    try:
        with NetNS(NETNS) as ns:
            ns.link("add", ifname="pyvsr0", kind="veth", peer="pyvsr1")
            index = ns.link_lookup(ifname="pyvsr0")[0]
            ns.addr("add", index=index, address="198.18.2.1", prefixlen=24)
            for name in ("pyvsr0", "pyvsr1", "lo"):
                ns.link("set", index=ns.link_lookup(ifname=name)[0], state="up")
            for ip, mac in REALS.items():
                ns.neigh("replace", dst=ip, lladdr=mac, ifindex=index, state=0x80)
        yield pin_dir
    finally:
        remove_pins(pin_dir)
        if exists(NETNS):
            remove(NETNS)


def _start(script: str, pin_dir: Path) -> subprocess.Popen[str]:
    from pyvs.netns import _enter

    env = {**os.environ, "PYVS_PIN_DIR": str(pin_dir)}
    return subprocess.Popen([sys.executable, "-c", script, str(RACE_SECONDS), str(pin_dir)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=lambda: _enter(NETNS))


def test_pyvsadm_daemon_and_arpwatch_race_and_nothing_deleted_comes_back(race_netns: Path) -> None:
    from pyvs.netns import in_netns

    with in_netns(NETNS):
        open_dataplane(race_netns).close()
    workers = {name: _start(script, race_netns) for name, script in
               (("daemon", DAEMON), ("arpwatch", ARPWATCH), ("pyvsadm", PYVSADM))}
    try:
        results = {name: proc.communicate(timeout=RACE_SECONDS + 120) for name, proc in workers.items()}
    finally:
        for proc in workers.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for name, proc in workers.items():
        assert proc.returncode == 0, f"{name}: {results[name][1]}"
        assert int(results[name][0]) > 0, name
    with in_netns(NETNS), open_dataplane(race_netns) as dp:
        assert dp.index_problems() == []
        rules = dp.read_rules()
        wanted = {ServiceKey(Protocol.TCP, IPv4Address("198.18.0.10"), p): {(IPv4Address("198.18.2.11"), p),
                                                                            (IPv4Address("198.18.2.13"), p)}
                  for p in range(1000, 1020)}
        assert {key: set(svc.reals) for key, svc in rules.services.items()} == wanted
        active = [r for r in dp._real_slots() if r.entry.flags & abi.REAL_ACTIVE]
        assert len(active) == 2 * len(wanted)  # no entry deleted by one writer and written back by another


def _service(*reals: str) -> Rules:
    key = ServiceKey(Protocol.TCP, IPv4Address("198.18.0.30"), 80)
    items = [Real(IPv4Address(r), 80, 1) for r in reals]
    return Rules({key: Service(key, "rr", reals={r.key: r for r in items})})


def test_a_silent_real_is_resolved_before_the_lock() -> None:
    def slow(rip: IPv4Address) -> NextHop:
        if rip == IPv4Address("198.18.2.14"):
            time.sleep(2.0)  # ARP for a real that does not answer
            return NextHop(1, "02:00:00:00:00:0a", "00:00:00:00:00:00")
        return NextHop(1, "02:00:00:00:00:0a", "02:00:00:00:00:11")

    with scratch_dataplane(f"{PREFIX}-slow", slow) as dp, open_dataplane(dp.pin_dir, slow) as other:
        applying = threading.Thread(target=dp.apply, args=(_service("198.18.2.11", "198.18.2.14"),))
        applying.start()
        time.sleep(0.3)
        started = time.monotonic()
        other.set_state_timeout("ESTABLISHED", 100)  # a writer that took the lock before this change too
        waited = time.monotonic() - started
        applying.join()
        assert waited < 0.5, f"another writer waited {waited:.1f} s for a silent real's ARP"
        assert other.read_timeouts().tcp == 100 and len(dp.read_rules().services) == 1


def test_refresh_macs_goes_on_past_a_real_it_cannot_resolve() -> None:
    macs = {IPv4Address("198.18.2.11"): "02:00:00:00:00:11", IPv4Address("198.18.2.12"): "02:00:00:00:00:12"}

    def resolver(rip: IPv4Address) -> NextHop:
        if rip not in macs:
            raise NeighbourError(f"real server {rip} is unreachable from the director")
        return NextHop(1, "02:00:00:00:00:0a", macs[rip])

    with scratch_dataplane(f"{PREFIX}-refresh", resolver) as dp:
        dp.apply(_service("198.18.2.11", "198.18.2.12"))
        del macs[IPv4Address("198.18.2.11")]  # the route to it went away
        macs[IPv4Address("198.18.2.12")] = "02:00:00:00:00:99"
        assert dp.refresh_macs() == 1
        hops = {rip: hop.dmac for (_, (rip, _)), hop in dp.real_next_hops().items()}
        assert hops == {IPv4Address("198.18.2.11"): "02:00:00:00:00:11",
                        IPv4Address("198.18.2.12"): "02:00:00:00:00:99"}


def test_the_daemons_write_reports_each_service_once_though_its_change_is_tried_before_the_lock() -> None:
    from pyvs.director.daemon import write_services

    key = ServiceKey(Protocol.TCP, IPv4Address("198.18.0.30"), 80)
    static = {IPv4Address("198.18.2.11"): "02:00:00:00:00:11", IPv4Address("198.18.2.12"): "02:00:00:00:00:12"}
    with scratch_dataplane(f"{PREFIX}-daemon", lambda rip: NextHop(1, "02:00:00:00:00:0a", static[rip])) as dp:
        created = write_services(dp, {key: _service("198.18.2.11").services[key]}, {}, {}, [])
        assert (created.created, created.updated, created.errors) == ([key], {}, {})
        want = _service("198.18.2.11", "198.18.2.12").services[key]
        updated = write_services(dp, {key: want}, {key: _service("198.18.2.11").services[key]}, {}, [])
        assert (updated.created, list(updated.updated), updated.drift) == ([], [key], {})
        removed = write_services(dp, {key: None}, {key: want}, {}, [])
        assert removed.removed == [key] and dp.read_rules().services == {}
