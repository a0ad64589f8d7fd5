"""Faults under load: the director daemon, its config, a real and the segment misbehave in turn while wrk runs.

A lab of its own (with an attacker host on the switch) is built for this module and always removed. The daemon
(`pyvs director run`) manages the lab's TCP :80 service with HTTP checks; a service made by hand with pyvsadm
sits beside it. Each step runs under a bounded wrk load from the client through the gateway (kept-alive
connections) and a loop of requests on new connections (new flows scheduled by the data plane), and ends with:
0 wrk socket errors, 0 non-2xx responses, no failed request, the hand-made service as it should be.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyvs.arp.packets import ARP_REPLY, ETH_P_ARP, Arp, packet_socket
from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology, default_topology
from pyvs.lab.traffic import http_get
from pyvs.netns import in_netns, run_in_netns

from .conftest import LAB_PREFIX
from .test_arp_cluster import ArpWatch, mac_of
from .test_director_daemon import Daemon, RequestLoop, pyvs_cli, pyvsadm, status, tcp_reals, wait_for

INTERVAL = 0.2  # the daemon's check interval, seconds
NEW_VIP = "198.18.0.101"
NEW_VIP_PORT = 8081  # the gateway's public port DNATed to NEW_VIP:80 for this test
WRK_PACE_MS = 10  # each wrk connection waits this long between requests: <= 100 requests/s per connection
WRK_CONNECTIONS = 2


def fault_prefix() -> str:
    """A lab prefix of this module's own, beside the session's lab (which other modules may be using)."""
    prefix = f"{LAB_PREFIX[:9]}f"
    return prefix if prefix != LAB_PREFIX else f"{LAB_PREFIX[:9]}g"


@pytest.fixture(scope="module")
def fault_lab() -> Iterator[Topology]:
    assert shutil.which("wrk"), "wrk is missing: scripts/setup.sh installs it"
    topo = default_topology(prefix=fault_prefix(), attacker=True)
    atexit.register(lab_api.down, topo)  # also if the session is interrupted
    lab_api.down(topo)  # leftovers of an earlier, killed run
    try:
        lab_api.up(topo)
        yield topo
    finally:
        lab_api.down(topo)


# -- wrk ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkResult:
    requests: int
    socket_errors: int
    non_2xx: int
    output: str


def parse_wrk(output: str) -> WrkResult:
    """Requests, socket errors (connect + read + write + timeout) and non-2xx/3xx responses of wrk's output."""
    done = re.search(r"^\s*(\d+) requests in ", output, re.MULTILINE)
    if done is None:
        raise AssertionError(f"unexpected wrk output:\n{output}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return WrkResult(int(done[1]), sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
                     int(non_2xx[1]) if non_2xx else 0, output)


def test_parse_wrk_reads_errors_and_non_2xx() -> None:
    clean = "  1234 requests in 3.00s, 150.00KB read\nRequests/sec:    411.00\n"
    assert parse_wrk(clean) == WrkResult(1234, 0, 0, clean)
    bad = clean + "  Socket errors: connect 1, read 2, write 0, timeout 3\n  Non-2xx or 3xx responses: 7\n"
    assert (parse_wrk(bad).socket_errors, parse_wrk(bad).non_2xx) == (6, 7)


class Wrk:
    """wrk in the client's namespace, paced (a Lua delay()), until finish() interrupts it and reads its report."""

    def __init__(self, topo: Topology, url: str, script: Path, connections: int = WRK_CONNECTIONS):
        argv = ["nsenter", f"--net=/run/netns/{topo.client.netns}", "wrk", "-t1", f"-c{connections}", "-d60s",
                "--timeout", "2s", "-s", str(script), url]  # nsenter execs wrk: the PID is wrk's
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    def finish(self) -> WrkResult:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # wrk stops and prints its report
        try:
            output, _ = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        return parse_wrk(output)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- the daemon's config and the rules -----------------------------------------------------------------------


def config_text(topo: Topology, rs1_weight: int = 1, new_vip: bool = False) -> str:
    check = f'{{ type = "http", path = "/", interval = {INTERVAL}, timeout = {INTERVAL}, rise = 2, fall = 2 }}'
    text = f"""
[director]
interface = "{topo.director_nic.ifname}"
status_listen = "127.0.0.1:9180"

[[service]]
proto = "tcp"
vip = "{topo.vip}"
port = 80
scheduler = "wrr"
check = {check}

[[service.real]]
address = "{topo.address_of('rs1')}"
weight = {rs1_weight}

[[service.real]]
address = "{topo.address_of('rs2')}"
"""
    if new_vip:
        text += f"""
[[service]]
proto = "tcp"
vip = "{NEW_VIP}"
port = 80
scheduler = "rr"
check = {check}

[[service.real]]
address = "{topo.address_of('rs1')}"

[[service.real]]
address = "{topo.address_of('rs2')}"
"""
    return text


def hand_made(topo: Topology) -> list[str]:
    """The `pyvsadm -S -n` lines of the service made by hand (VIP:9000)."""
    return [line for line in pyvsadm(topo, "-S", "-n").splitlines() if f"{topo.vip}:9000 " in line + " "]


def reload(daemon: Daemon, text: str) -> None:
    """SIGHUP with a new config; returns once the daemon has applied it (its generation moved on)."""
    before = status(daemon.topo)["generation"]
    daemon.write(text)
    os.kill(daemon.pid, signal.SIGHUP)
    wait_for(lambda: status(daemon.topo)["generation"] > before, 3, "the daemon reloads")
    assert status(daemon.topo)["last_reload"]["ok"], status(daemon.topo)["last_reload"]


def nic_addresses(topo: Topology) -> str:
    return run_in_netns(topo.director.netns, ["ip", "-o", "-4", "addr", "show", "dev", topo.director_nic.ifname]).stdout


def answers(topo: Topology, port: int, timeout: float = 0.5) -> bool:
    try:
        return http_get(topo.client.netns, topo.public_ip, port=port, timeout=timeout).server in ("rs1", "rs2")
    except OSError:
        return False


def rs1_next_hops(topo: Topology) -> set[str]:
    """The MACs the director's data plane sends rs1's frames to (every service of rs1)."""
    rip = IPv4Address(topo.address_of("rs1"))
    with in_netns(topo.director.netns), open_director(topo) as dp:
        return {hop.dmac for (_, (address, _)), hop in dp.real_next_hops().items() if address == rip}


def forge_rs1_reply(topo: Topology) -> None:
    """The attacker answers, unasked, that rs1's address is at its own MAC (to the director)."""
    attacker, director = mac_of(topo, "attacker"), mac_of(topo, "director")
    forged = Arp(ARP_REPLY, attacker, IPv4Address(topo.address_of("rs1")), director,
                 IPv4Address(topo.address_of("director")), attacker, director)
    with in_netns(topo.node("attacker").netns):
        sock = packet_socket("eth0", ETH_P_ARP)
    with sock:
        for _ in range(3):
            sock.send(forged.frame())
            time.sleep(0.05)


def neighbour_mac(topo: Topology, ip: str) -> str | None:
    """The director's own neighbour entry for ip (what its kernel, and so the daemon's checks, send to)."""
    out = run_in_netns(topo.director.netns, ["ip", "neigh", "show", ip, "dev", topo.director_nic.ifname]).stdout
    return out.split("lladdr")[1].split()[0] if "lladdr" in out else None


def arpwatch_verify_option(topo: Topology) -> str | None:
    """The option of `pyvs arpwatch` that follows a real's MAC only once verified, if this version has one."""
    _, out, _ = pyvs_cli(topo, "arpwatch", "--help")
    return "--follow-real-macs" if "--follow-real-macs" in out else None


# -- the test --------------------------------------------------------------------------------------------------


@dataclass
class Load:
    topo: Topology
    script: Path
    loop: RequestLoop
    hand: list[str]

    def step(self, name: str, kept_alive: bool = True) -> _Step:
        return _Step(self, name, kept_alive)


class _Step:
    """One fault under load: wrk (kept-alive connections) and the request loop (new connections) are judged over
    the step alone. Without kept_alive, wrk runs but only its non-2xx count is judged."""

    def __init__(self, load: Load, name: str, kept_alive: bool):
        self.load, self.name, self.kept_alive = load, name, kept_alive

    def __enter__(self) -> _Step:
        self.started = time.monotonic()
        self.wrk = Wrk(self.load.topo, f"http://{self.load.topo.public_ip}/", self.load.script)
        time.sleep(0.5)  # wrk's connections are up
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:
            self.wrk.kill()
            return
        time.sleep(0.5)
        result = self.wrk.finish()
        lab = self.load.topo
        assert result.requests > 0, f"{self.name}: wrk made no request\n{result.output}"
        assert result.non_2xx == 0, f"{self.name}:\n{result.output}"
        if self.kept_alive:
            assert result.socket_errors == 0, f"{self.name}:\n{result.output}"
        assert self.load.loop.failures(since=self.started) == [], self.name
        assert set(self.load.loop.served(since=self.started)) <= {"rs1", "rs2"}, self.name
        assert hand_made(lab) == self.load.hand, f"{self.name}: the hand-made service changed"
        timing = f"{time.monotonic() - self.started:.1f}s"
        print(f"{self.name}: {result.requests} wrk requests, {result.socket_errors} socket errors, "
              f"{sum(self.load.loop.served(since=self.started).values())} served on new connections, {timing}")


def test_faults_under_load(fault_lab: Topology, tmp_path: Path) -> None:
    lab = fault_lab
    rs1, rs2 = lab.address_of("rs1"), lab.address_of("rs2")
    script = tmp_path / "pace.lua"
    script.write_text(f"function delay()\n  return {WRK_PACE_MS}\nend\n")
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab))
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    loop = RequestLoop(lab, limit=100_000)
    thread = threading.Thread(target=loop.run, daemon=True)
    dnat = ["PREROUTING", "-t", "nat", "-d", f"{lab.public_ip}/32", "-p", "tcp", "--dport", str(NEW_VIP_PORT),
            "-j", "DNAT", "--to-destination", f"{NEW_VIP}:80"]
    try:
        # Step 5's service, made by hand before the daemon starts: the daemon must leave it alone throughout.
        pyvsadm(lab, "-A", "-t", f"{lab.vip}:9000", "-s", "rr")
        pyvsadm(lab, "-a", "-t", f"{lab.vip}:9000", "-r", f"{rs1}:9000", "-g", "-w", "1")
        load = Load(lab, script, loop, hand_made(lab))
        assert len(load.hand) == 2, load.hand
        # The new VIP of step 2: the reals accept it, the gateway forwards a port of its own to it.
        for node in ("rs1", "rs2"):
            run_in_netns(lab.node(node).netns, ["ip", "addr", "replace", f"{NEW_VIP}/32", "dev", "lo"])
        run_in_netns(lab.gateway.netns, ["iptables", "-A", *dnat])
        daemon.start()
        wait_for(lambda: tcp_reals(lab) == {"rs1": 1, "rs2": 1}, 5, "both reals in the daemon's service")
        assert hand_made(lab) == load.hand, "the daemon's start changed the hand-made service"
        thread.start()
        wait_for(lambda: set(loop.served()) == {"rs1", "rs2"}, 5, "both reals serve")

        with load.step("1 kill -9 and restart"):
            daemon.stop(signal.SIGKILL)
            time.sleep(1.0)  # no daemon: the pinned data plane forwards alone
            daemon.start()
            assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}

        with load.step("2 SIGHUP with a new VIP"):
            assert not answers(lab, NEW_VIP_PORT, timeout=1.0), "the new VIP answers before the reload"
            sent = time.monotonic()
            daemon.write(config_text(lab, new_vip=True))
            os.kill(daemon.pid, signal.SIGHUP)
            wait_for(lambda: answers(lab, NEW_VIP_PORT), 2.0, "the new VIP answers within 2 s")
            print(f"2: the new VIP answered {time.monotonic() - sent:.2f}s after SIGHUP")
            extra = Wrk(lab, f"http://{lab.public_ip}:{NEW_VIP_PORT}/", script, connections=1)
            time.sleep(1.5)
            result = extra.finish()
            assert result.requests > 0 and (result.socket_errors, result.non_2xx) == (0, 0), result.output
            assert time.monotonic() - sent < 10

        with load.step("3 SIGHUP removing it"):
            reload(daemon, config_text(lab))
            wait_for(lambda: not answers(lab, NEW_VIP_PORT), 2.0, "the removed VIP no longer answers")
            wait_for(lambda: NEW_VIP not in nic_addresses(lab), 1, "the director lets the removed VIP go")
            time.sleep(1.0)
            assert not answers(lab, NEW_VIP_PORT, timeout=1.0)

        # Step 4. A hard stop breaks the connections open on rs1 (wrk's are kept alive) and refuses new ones until
        # the check notices (fall x interval): not 0 errors. So rs1 is drained first (weight 0 from the config),
        # the admin's maintenance: it gets no new connection, then its server stops, the check takes it out,
        # it starts, the check brings it back, and the weight is restored.
        reload(daemon, config_text(lab, rs1_weight=0))
        assert tcp_reals(lab) == {"rs1": 0, "rs2": 1}
        with load.step("4 rs1's server stopped and started"):
            lab_api.stop_web_server(lab, "rs1")
            wait_for(lambda: status(lab)["services"][0]["reals"][0]["health"] == "down", 2, "the check sees rs1 down")
            wait_for(lambda: "rs1" not in tcp_reals(lab), 1, "the daemon takes rs1 out of the data plane")
            lab_api.start_web_server(lab, "rs1")
            wait_for(lambda: status(lab)["services"][0]["reals"][0]["health"] == "up", 2, "the check sees rs1 up")
            wait_for(lambda: tcp_reals(lab) == {"rs1": 0, "rs2": 1}, 1, "the daemon puts rs1 back (drained)")
            reload(daemon, config_text(lab))
            assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}
            back = time.monotonic()
            wait_for(lambda: "rs1" in loop.served(since=back), 3, "rs1 serves again")

        with load.step("5 pyvsadm edits on the hand-made service"):
            pyvsadm(lab, "-E", "-t", f"{lab.vip}:9000", "-s", "wlc")
            pyvsadm(lab, "-e", "-t", f"{lab.vip}:9000", "-r", f"{rs1}:9000", "-g", "-w", "3")
            pyvsadm(lab, "-a", "-t", f"{lab.vip}:9000", "-r", f"{rs2}:9000", "-g", "-w", "2")
            load.hand = hand_made(lab)
            assert f"-A -t {lab.vip}:9000 -s wlc" in load.hand and len(load.hand) == 3, load.hand
            reload(daemon, config_text(lab, rs1_weight=2))  # the daemon applies its own service: only that one
            assert tcp_reals(lab) == {"rs1": 2, "rs2": 1}
            reload(daemon, config_text(lab))
            assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}

        # Step 6. The data plane keeps rs1's MAC whatever ARP says (only arpwatch writes MACs, and a verifying one
        # follows no forger). The director's own stack is another matter: its neighbour entry for rs1 follows an
        # unsolicited reply, so the daemon's checks of rs1 go to the forger and fail. 6a: the director defended as
        # the README says, the reals' addresses pinned by arpwatch: nothing at all happens. 6b: undefended (or with
        # arpwatch's verifying option when this version has one): rs1's flows still do not move to the forger.
        rs1_mac, attacker = mac_of(lab, "rs1"), mac_of(lab, "attacker")
        with load.step("6a a forged ARP reply for rs1, reals pinned"):
            assert rs1_next_hops(lab) == {rs1_mac}
            watch = ArpWatch(lab, "--pin", rs1, "--pin", rs2)
            try:
                forge_rs1_reply(lab)
                watch.expect("pinned_mac_violation", ip=rs1, mac=attacker)
                time.sleep(1.0)
                assert rs1_next_hops(lab) == {rs1_mac}, f"rs1's flows moved to the forger {attacker}"
                reload(daemon, config_text(lab))  # the daemon's next apply keeps rs1's MAC too
                assert rs1_next_hops(lab) == {rs1_mac}
                assert tcp_reals(lab) == {"rs1": 1, "rs2": 1}
            finally:
                watch.stop()
            since = time.monotonic() - 1.0
            wait_for(lambda: set(loop.served(since=since)) == {"rs1", "rs2"}, 2, "both reals serve")

        option = arpwatch_verify_option(lab)
        with load.step(f"6b a forged ARP reply for rs1, {option or 'no arpwatch'}", kept_alive=False):
            verifier = ArpWatch(lab, option) if option else None
            try:
                forge_rs1_reply(lab)
                time.sleep(1.5)
                assert rs1_next_hops(lab) == {rs1_mac}, f"rs1's flows moved to the forger {attacker}"
            finally:
                if verifier is not None:
                    verifier.stop()
            poisoned = neighbour_mac(lab, rs1) == attacker
            print(f"6b: the director's neighbour entry for rs1 {'followed' if poisoned else 'ignored'} the forger; "
                  f"rs1 {status(lab)['services'][0]['reals'][0]['health']} in the daemon's checks")
            run_in_netns(lab.director.netns, ["ip", "neigh", "del", rs1, "dev", lab.director_nic.ifname],
                         check=False)  # the admin's repair of the director's own ARP cache
            wait_for(lambda: tcp_reals(lab) == {"rs1": 1, "rs2": 1}, 8, "rs1 back in the daemon's service")
            assert rs1_next_hops(lab) == {rs1_mac}
            back = time.monotonic()
            wait_for(lambda: set(loop.served(since=back)) == {"rs1", "rs2"}, 3, "both reals serve")
    finally:
        loop.stop.set()
        if thread.is_alive():
            thread.join(10)
        daemon.stop()
        run_in_netns(lab.gateway.netns, ["iptables", "-D", *dnat], check=False)
    assert "Traceback" not in daemon.log.read_text()
