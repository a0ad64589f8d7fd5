"""ARP in the lab cluster: pyvs doctor, pyvs arpwatch (conflicts, spoofing, a real's new NIC) and VIP takeover.

Each test breaks the cluster in one way and puts it back, also when it fails.
"""

from __future__ import annotations

import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address
from typing import Any
from urllib.request import urlopen

import pytest

from pyvs.arp.packets import ARP_REPLY, ETH_P_ARP, Arp, gratuitous_arp, packet_socket
from pyvs.arp.takeover import send_gratuitous
from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director, setup_director
from pyvs.lab.topology import Topology, default_topology
from pyvs.lab.traffic import http_get
from pyvs.netns import in_netns, run_in_netns, write_sysctl

EVENT_LATENCY = 1.0  # the bound: an event within 1 s of the cause
METRICS = "127.0.0.1:9188"


def guard_metrics(topo: Topology) -> str:
    """What `pyvs arpwatch --metrics` serves, read from inside the director."""
    with in_netns(topo.director.netns), urlopen(f"http://{METRICS}/metrics", timeout=5) as response:  # noqa: S310
        return response.read().decode()  # type: ignore[no-any-return]


def metric_value(text: str, name: str) -> float:
    [value] = [line.rsplit(" ", 1)[1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(value)


def pyvs(topo: Topology, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the pyvs command inside the lab director."""
    return run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.cli", *args], check=check)


def doctor(topo: Topology) -> tuple[int, list[dict[str, str]]]:
    result = pyvs(topo, "doctor", "--json")
    assert result.stdout, result.stderr
    return result.returncode, json.loads(result.stdout)


def failing(findings: list[dict[str, str]]) -> list[dict[str, str]]:
    return [f for f in findings if f["status"] != "ok"]


def neighbour(ns: str, dev: str, ip: str) -> tuple[str | None, list[str]]:
    """(MAC, states) of ip in a namespace's neighbour table."""
    found = json.loads(run_in_netns(ns, ["ip", "-j", "neigh", "show", ip, "dev", dev]).stdout or "[]")
    return (found[0].get("lladdr"), found[0].get("state", [])) if found else (None, [])


def mac_of(topo: Topology, node: str) -> str:
    mac = topo.port(node, "eth0").mac
    assert mac is not None
    return mac


def wait_until(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


class ArpWatch:
    """`pyvs arpwatch --json` running in the director; its events are read as they come."""

    def __init__(self, topo: Topology, *args: str):
        argv = ["nsenter", f"--net=/run/netns/{topo.director.netns}", sys.executable, "-m", "pyvs.cli",
                "arpwatch", "--dev", topo.director_nic.ifname, "--json", *args]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.expect("watching", timeout=10)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.events.put(json.loads(line))

    def expect(self, kind: str, timeout: float = 3.0, **fields: str) -> dict[str, Any]:
        """The next event of this kind (with these fields); fails after timeout."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                event = self.events.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(event)
            if event["event"] == kind and all(event.get(k) == v for k, v in fields.items()):
                return event
        err = self.proc.stderr.read() if self.proc.poll() is not None and self.proc.stderr else ""
        raise AssertionError(f"no {kind} event {fields} within {timeout}s; seen {self.seen} {err}")

    def stop(self) -> dict[str, Any]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=10)
        return self.expect("summary", timeout=2)


@contextmanager
def arpwatch(topo: Topology, *args: str) -> Iterator[ArpWatch]:
    watch = ArpWatch(topo, *args)
    try:
        yield watch
    finally:
        if watch.proc.poll() is None:
            watch.proc.send_signal(signal.SIGTERM)
            try:
                watch.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                watch.proc.kill()
                watch.proc.wait()


@contextmanager
def vip_on_nic_with_arp_ignore_0(topo: Topology, node: str) -> Iterator[None]:
    """The classic LVS-DR mistake on one real: it answers ARP for the VIP."""
    ns = topo.node(node).netns
    keys = [f"net.ipv4.conf.{i}.arp_ignore" for i in ("all", "lo", "eth0")]
    try:
        for key in keys:
            write_sysctl(key, 0, netns=ns)
        run_in_netns(ns, ["ip", "addr", "add", f"{topo.vip}/32", "dev", "eth0"])
        yield
    finally:
        run_in_netns(ns, ["ip", "addr", "del", f"{topo.vip}/32", "dev", "eth0"], check=False)
        for key in keys:
            write_sysctl(key, 1, netns=ns)


def test_a_correct_cluster_is_all_ok_and_exits_0(lab: Topology) -> None:
    code, findings = doctor(lab)
    assert failing(findings) == [] and code == 0
    checks = Counter(f["check"] for f in findings)
    assert checks["dr-path"] == 4 and checks["return-path"] == 2 and checks["arp"] == 1  # 2 reals x tcp, udp
    table = pyvs(lab, "doctor")
    assert table.returncode == 0 and "checks: 16 ok, 0 failed, 0 warnings" in table.stdout
    [timer] = [f for f in findings if f["subject"] == "timer"]
    assert timer["detail"].startswith("ticking")


def test_rs2_without_the_vip_on_lo_fails_the_dr_path_of_rs2_only(lab: Topology) -> None:
    rs2 = lab.node("rs2").netns
    run_in_netns(rs2, ["ip", "addr", "del", f"{lab.vip}/32", "dev", "lo"])
    try:
        code, findings = doctor(lab)
    finally:
        run_in_netns(rs2, ["ip", "addr", "add", f"{lab.vip}/32", "dev", "lo"])
    assert code == 1
    bad = failing(findings)
    assert {(f["check"], f["subject"]) for f in bad} == {
        ("dr-path", "198.18.2.12 TCP 198.18.0.100:80"), ("dr-path", "198.18.2.12 UDP 198.18.0.100:80")}
    assert all("VIP not on lo" in f["detail"] and "pyvs realserver up --vip 198.18.0.100" in f["fix"] for f in bad)
    assert doctor(lab)[0] == 0  # restored


def test_a_real_answering_arp_for_the_vip_is_named_by_doctor_and_raises_a_conflict_within_1s(lab: Topology) -> None:
    rs1_mac = mac_of(lab, "rs1")
    with arpwatch(lab, "--metrics", METRICS) as watch:
        assert 'pyvs_arp_events_total{event="vip_conflict"} 0.0' in guard_metrics(lab)
        started = time.time()
        with vip_on_nic_with_arp_ignore_0(lab, "rs1"):
            event = watch.expect("vip_conflict", ip=lab.vip, mac=rs1_mac)
            code, findings = doctor(lab)
            metrics = guard_metrics(lab)
        summary = watch.stop()
    assert metric_value(metrics, 'pyvs_arp_events_total{event="vip_conflict"}') >= 1
    assert "pyvs_arp_frames_total" in metrics and 'pyvs_arp_actions_total{action="probes_sent"}' in metrics
    assert event["time"] - started < EVENT_LATENCY
    assert code == 1
    [arp] = [f for f in failing(findings) if f["check"] == "arp"]
    assert f"real 198.18.2.11 at {rs1_mac} answers ARP for the VIP" in arp["detail"]
    assert "on real 198.18.2.11: remove 198.18.0.100 from its NIC" in arp["fix"] and "arp_ignore=1" in arp["fix"]
    assert summary["counters"]["vip_conflict"] >= 1


def test_a_return_path_through_the_director_is_a_warning(lab: Topology) -> None:
    rs1 = lab.node("rs1").netns
    run_in_netns(rs1, ["ip", "route", "replace", "default", "via", "198.18.2.10", "dev", "eth0"])
    try:
        code, findings = doctor(lab)
    finally:
        run_in_netns(rs1, ["ip", "route", "replace", "default", "via", "198.18.0.1", "dev", "eth0", "onlink"])
    assert code == 1
    [warn] = failing(findings)
    assert (warn["status"], warn["check"]) == ("WARN", "return-path")
    assert warn["subject"] == "198.18.2.11 TCP 198.18.0.100:80"
    assert "through the director" in warn["detail"] and "ip route replace default via 198.18.0.1" in warn["fix"]


def test_a_real_whose_nic_is_replaced_gets_its_traffic_within_1s_once_verified(lab: Topology) -> None:
    old, new = mac_of(lab, "rs1"), "02:c6:12:00:44:01"
    with arpwatch(lab, "--follow-real-macs", "--verify-time", "0.3") as watch:
        started = time.time()
        lab_api.set_mac(lab, "rs1", "eth0", new)
        try:
            claim = watch.expect("real_mac_change", ip="198.18.2.11", mac=new)
            event = watch.expect("real_mac_verified", ip="198.18.2.11", mac=new)
            served = Counter(http_get(lab.client.netns, lab.public_ip, timeout=3).server for _ in range(10))
        finally:
            lab_api.set_mac(lab, "rs1", "eth0", old)
        watch.expect("real_mac_verified", ip="198.18.2.11", mac=old)  # and back
        summary = watch.stop()
    assert "verifying" in claim["detail"] and "now at" in event["detail"]
    assert claim["time"] - started < EVENT_LATENCY and event["old_mac"] == old
    assert event["time"] - claim["time"] < 0.3 + 0.2  # verified once the probes' time is over
    assert served == {"rs1": 5, "rs2": 5}
    assert summary["counters"]["real_mac_updates"] >= 2  # one per service of rs1, each way


# -- an attacker on the segment ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def attacked(lab: Topology) -> Iterator[Topology]:
    """The lab plus an attacker node on the switch."""
    topo = default_topology(lab.prefix, attacker=True)
    try:
        lab_api.up(topo)
        yield topo
    finally:
        lab_api.remove_node(topo, "attacker")


def spoof(topo: Topology) -> None:
    """The attacker claims the gateway's address toward the director and the VIP toward the gateway."""
    attacker, gateway_mac = mac_of(topo, "attacker"), topo.port("gateway", "inside").mac
    assert gateway_mac is not None
    with in_netns(topo.node("attacker").netns):
        sock = packet_socket("eth0", ETH_P_ARP)
    with sock:
        sock.send(gratuitous_arp(IPv4Address("198.18.0.1"), attacker, eth_dst=mac_of(topo, "director")).frame())
        sock.send(gratuitous_arp(IPv4Address(topo.vip), attacker, eth_dst=gateway_mac).frame())


def restore_after_spoof(topo: Topology) -> None:
    with in_netns(topo.director.netns):
        send_gratuitous([IPv4Address(topo.vip)], topo.director_nic.ifname, count=1)
    run_in_netns(topo.director.netns, ["ip", "neigh", "del", "198.18.0.1", "dev", "eth0"], check=False)


def gateway_sees_vip_at(topo: Topology) -> str | None:
    return neighbour(topo.gateway.netns, "inside", topo.vip)[0]


def test_without_defence_a_gateway_spoof_is_reported_within_1s_and_hijacks_the_vip(attacked: Topology) -> None:
    http_get(attacked.client.netns, attacked.public_ip)  # the gateway knows the VIP's MAC
    try:
        with arpwatch(attacked) as watch:
            started = time.time()
            spoof(attacked)
            event = watch.expect("gateway_impersonation", ip="198.18.0.1", mac=mac_of(attacked, "attacker"))
            time.sleep(0.5)
            hijacked = gateway_sees_vip_at(attacked)
            assert not any(e["event"] == "vip_announced" for e in watch.seen)
    finally:
        restore_after_spoof(attacked)
    assert event["time"] - started < EVENT_LATENCY and event["old_mac"] == attacked.port("gateway", "inside").mac
    assert hijacked == mac_of(attacked, "attacker")  # the attack works when nobody defends
    assert wait_until(lambda: gateway_sees_vip_at(attacked) == mac_of(attacked, "director"), 2)


def test_with_defence_the_vip_is_reannounced_and_client_traffic_keeps_reaching_the_director(
        attacked: Topology) -> None:
    director_mac, gateway_mac = mac_of(attacked, "director"), attacked.port("gateway", "inside").mac
    http_get(attacked.client.netns, attacked.public_ip)
    try:
        with arpwatch(attacked, "--defend", "--pin", "198.18.0.1") as watch:
            pinned = neighbour(attacked.director.netns, "eth0", "198.18.0.1")
            started = time.time()
            spoof(attacked)
            event = watch.expect("pinned_mac_violation", ip="198.18.0.1", mac=mac_of(attacked, "attacker"))
            watch.expect("vip_announced", ip=attacked.vip, mac=director_mac)
            defended = wait_until(lambda: gateway_sees_vip_at(attacked) == director_mac, 2)
            served = Counter(http_get(attacked.client.netns, attacked.public_ip, timeout=3).server for _ in range(4))
            director_kept = neighbour(attacked.director.netns, "eth0", "198.18.0.1")
        unpinned = neighbour(attacked.director.netns, "eth0", "198.18.0.1")
    finally:
        restore_after_spoof(attacked)
    assert event["time"] - started < EVENT_LATENCY
    assert defended and served == {"rs1": 2, "rs2": 2}
    assert pinned == (gateway_mac, ["PERMANENT"]) and director_kept == pinned  # the pin held
    assert "PERMANENT" not in unpinned[1]  # and is gone with the guard


def forge_real_reply(topo: Topology, rip: str) -> None:
    """The attacker answers, unasked, that the real's address is at its own MAC (to the director)."""
    attacker, director = mac_of(topo, "attacker"), mac_of(topo, "director")
    forged = Arp(ARP_REPLY, attacker, IPv4Address(rip), director, IPv4Address(topo.address_of("director")),
                 attacker, director)
    with in_netns(topo.node("attacker").netns):
        sock = packet_socket("eth0", ETH_P_ARP)
    with sock:
        for _ in range(3):
            sock.send(forged.frame())
            time.sleep(0.05)


def rs1_mac_in_the_data_plane(topo: Topology) -> set[str]:
    with in_netns(topo.director.netns), open_director(topo) as dp:
        return {hop.dmac for (_, (rip, _)), hop in dp.real_next_hops().items() if str(rip) == "198.18.2.11"}


@pytest.mark.parametrize("follow", [False, True], ids=["report-only", "follow-real-macs"])
def test_a_forged_arp_reply_for_rs1_does_not_move_its_flows(attacked: Topology, follow: bool) -> None:
    rs1, attacker = mac_of(attacked, "rs1"), mac_of(attacked, "attacker")
    director = attacked.director.netns
    assert rs1_mac_in_the_data_plane(attacked) == {rs1}
    # the director knows rs1, and for longer than the kernel's ARP lock time (1 s), so a reply may move it
    run_in_netns(director, ["ip", "neigh", "replace", "198.18.2.11", "lladdr", rs1, "dev", "eth0", "nud", "reachable"])
    time.sleep(1.2)
    try:
        with arpwatch(attacked, *(["--follow-real-macs"] if follow else [])) as watch:
            forge_real_reply(attacked, "198.18.2.11")
            claim = watch.expect("real_mac_change", ip="198.18.2.11", mac=attacker)
            if follow:
                rejected = watch.expect("real_mac_rejected", ip="198.18.2.11", mac=attacker)
                assert "still answers" in rejected["detail"]
            else:
                assert "not followed" in claim["detail"]
                time.sleep(1.0)
            after = rs1_mac_in_the_data_plane(attacked)
            kernel_entry = neighbour(director, "eth0", "198.18.2.11")[0]
            served = Counter(http_get(attacked.client.netns, attacked.public_ip, timeout=3).server for _ in range(4))
            summary = watch.stop()
    finally:  # the kernel took the forged reply: a later resolve in this lab must not find the attacker
        run_in_netns(director, ["ip", "neigh", "del", "198.18.2.11", "dev", "eth0"], check=False)
    assert after == {rs1} and served == {"rs1": 2, "rs2": 2}
    assert not any(e["event"] == "real_mac_verified" for e in watch.seen)
    assert summary["counters"].get("real_mac_updates", 0) == 0
    if follow:  # the rejected claim is undone in the director's own neighbour table too
        assert kernel_entry == rs1 and "neighbour entry is back at" in rejected["detail"]
        assert summary["counters"]["neighbour_restored"] == 1
    else:  # report only: nothing is done (the guard's next probe answered by rs1 may heal the entry)
        assert "neighbour_restored" not in summary["counters"]


# -- VIP takeover -----------------------------------------------------------------------------------------


def test_attach_announces_the_vips_and_detach_withdraws_what_it_added(lab: Topology) -> None:
    extra = "198.18.0.101"
    gateway = lab.gateway.netns
    run_in_netns(gateway, ["ip", "neigh", "replace", lab.vip, "lladdr", "02:c6:12:00:99:99", "dev", "inside",
                           "nud", "stale"])
    try:
        attached = pyvs(lab, "director", "attach", "--dev", "eth0", "--vip", lab.vip, "--vip", extra, check=True)
        assert f"added {extra}/32 to eth0" in attached.stdout
        assert f"announced {lab.vip}, {extra} at {mac_of(lab, 'director')} on eth0" in attached.stdout
        assert gateway_sees_vip_at(lab) == mac_of(lab, "director")  # learned at once, not at expiry
        assert neighbour(gateway, "inside", extra)[0] is None  # a GARP creates no entry (arp_accept=0)
        detached = pyvs(lab, "director", "detach", "--dev", "eth0", "--vip", lab.vip, "--vip", extra, check=True)
        addresses = run_in_netns(lab.director.netns, ["ip", "-br", "addr", "show", "eth0"]).stdout
    finally:
        run_in_netns(lab.director.netns, ["ip", "addr", "del", f"{extra}/32", "dev", "eth0"], check=False)
        setup_director(lab)
    assert f"removed {extra}/32 from eth0" in detached.stdout
    assert f"left {lab.vip} on eth0: it was configured outside pyvs" in detached.stdout
    assert extra not in addresses and f"{lab.vip}/24" in addresses
    with in_netns(lab.director.netns), open_director(lab) as dp:
        assert dp.read_rules().services  # the rules stayed
    assert Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(4)) == {"rs1": 2, "rs2": 2}
