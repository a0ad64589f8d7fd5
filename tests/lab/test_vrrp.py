"""Active/backup: two directors, the real keepalived (VRRP only) moving the VIP, `pyvs director run` with [vrrp] in
each serving it only where keepalived put it.

Requests and long, throttled downloads run from the client while the master's keepalived and daemon are killed with
SIGKILL: the backup takes the VIP within VRRP's master-down interval (3 x advert_int + skew, measured) and serves new
requests; without connection sync (rr, no sloppy TCP) the downloads that ran through the killed master break, with
it ([sync] in both daemons) they complete."""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv4Network
from urllib.request import urlopen

import pytest

from pyvs import netns
from pyvs.lab import ecmp, vrrp
from pyvs.lab import lab as lab_api
from pyvs.lab.flows import Attempt, Download, RequestLoop
from pyvs.lab.topology import Node, Topology, vrrp_topology

from .conftest import LAB_PREFIX, lab_up

DOWNLOAD_SIZE = 3 << 20  # bytes, read at RATE: each download lasts ~10 s
RATE = 300_000
TAKEOVER_SLACK = 0.3  # seconds beyond VRRP's master-down interval: keepalived's timer thread and our polling


@pytest.fixture(scope="module")
def vrrp_lab() -> Iterator[Topology]:
    """The active/backup pair, up for this module and always torn down."""
    topo = vrrp_topology(prefix=f"{LAB_PREFIX}r")
    yield from lab_up(topo)


@pytest.fixture
def lab(vrrp_lab: Topology) -> Topology:
    """Both directors plugged in and running (repaired after an earlier test), the first one master again (it
    preempts)."""
    for node in vrrp_lab.directors:
        ecmp.isolate(vrrp_lab, node, isolated=False)
    lab_api.up(vrrp_lab)
    wait_for(lambda: vrrp.holders(vrrp_lab) == ["director"], 10, "director alone holds the VIP")
    wait_for(lambda: vrrp.standby(vrrp_lab) == {"director": set(), "director2": {vrrp_lab.vip}}, 5,
             "director serves the VIP, director2 stands by")
    return vrrp_lab


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.01)
    return time.monotonic() - started


def status(node: Node, path: str = "/status") -> str:
    with netns.in_netns(node.netns), urlopen(f"http://127.0.0.1:9180{path}", timeout=5) as response:  # noqa: S310
        return response.read().decode()  # type: ignore[no-any-return]


def doctor(topo: Topology, node: Node, *peers: str) -> dict[str, dict[str, str]]:
    """`pyvs doctor --peer ...` run in a director: its findings by (check, subject)."""
    argv = [sys.executable, "-m", "pyvs.cli", "doctor", "--dev", "eth0", "--wait", "0.3", "--json",
            *(arg for peer in peers for arg in ("--peer", peer))]
    result = netns.run_in_netns(node.netns, argv, check=False)
    assert result.stdout, result.stderr
    return {f"{f['check']} {f['subject']}": f for f in json.loads(result.stdout)}


def pyvsadm(node: Node, *args: str) -> None:
    netns.run_in_netns(node.netns, [sys.executable, "-m", "pyvs.admin.cli", *args])


def failures(attempts: list[Attempt], since: float = 0.0) -> list[Attempt]:
    return [a for a in attempts if not a.ok and a.started >= since]


def test_the_topology_fits_names_addresses_and_the_bridge() -> None:
    topo = vrrp_topology(prefix="pyvs123456")
    assert [n.name for n in topo.directors] == ["director", "director2"]
    for port in topo.ports():
        assert len(port.ifname) <= 15, port
        assert all(IPv4Interface(cidr).ip in IPv4Network("198.18.0.0/15") for cidr in port.addresses)
    macs = [port.mac for port in topo.ports()]
    assert len(set(macs)) == len(macs)
    assert {link.b.ifname for link in topo.links if link.b.node == "switch"} == set(topo.bridge.ports)
    assert all(topo.vip not in " ".join(topo.ports(n.name)[0].addresses) for n in topo.directors)  # keepalived's
    assert topo.vrrp is not None and topo.vrrp.master_down < 3.1 * topo.vrrp.advert_int
    text = vrrp.keepalived_config(topo, topo.directors[1])
    assert "virtual_server" not in text and f"{topo.vip}/32 dev eth0" in text and "state BACKUP" in text


def test_the_master_serves_and_the_backup_stands_by(lab: Topology) -> None:
    master, backup = lab.directors
    docs = {node.name: json.loads(status(node)) for node in lab.directors}
    assert docs["director"]["vrrp"]["role"] == "master"
    assert docs["director2"]["vrrp"]["role"] == "backup"
    assert docs["director2"]["vrrp"]["vips"] == [{"vip": lab.vip, "held": False}]
    assert re.search(r'^pyvs_vrrp_master\{instance="VI_PYVS"\} 1\.0$', status(master, "/metrics"), re.M)
    assert re.search(r'^pyvs_vrrp_vip_held\{instance="VI_PYVS",vip="198\.18\.0\.100"\} 0\.0$',
                     status(backup, "/metrics"), re.M)
    before = ecmp.scheduled(lab)
    with RequestLoop(lab.client.netns, lab.public_ip, workers=2) as loop:
        time.sleep(2)
    attempts = loop.results()
    after = ecmp.scheduled(lab)
    assert len(attempts) >= 20 and not failures(attempts), failures(attempts)[:5]
    assert {a.server for a in attempts} == {"rs1", "rs2"}
    assert after["director"] - before["director"] >= len(attempts)
    assert after["director2"] == before["director2"]  # the backup forwarded nothing


def test_the_backup_takes_over_within_three_adverts_and_unsynced_downloads_break(lab: Topology) -> None:
    """The master dies during downloads (kill -9 of its keepalived and daemon, and its switch port drops every frame:
    its XDP would otherwise go on forwarding what still reaches it): the backup holds the VIP within 3 x advert_int +
    skew, serves it (standby off, gratuitous ARP) and answers new requests; without connection sync it has no entry
    for the downloads' flows (rr, sloppy TCP off), so their next segments reach its kernel, which resets them."""
    assert lab.vrrp is not None
    master, backup = lab.directors
    running = [Download(lab.client.netns, lab.public_ip, DOWNLOAD_SIZE, RATE).start() for _ in range(3)]
    assert not [d.error for d in running if d.error]
    with RequestLoop(lab.client.netns, lab.public_ip, workers=2) as loop:
        time.sleep(1.5)
        misses_before = counters(lab, backup)["pass_miss_ack"]
        scheduled_before = ecmp.scheduled(lab)["director2"]
        killed_at = time.monotonic()
        vrrp.kill_director(lab, master)
        ecmp.isolate(lab, master, isolated=True)
        took = vrrp.wait_holder(lab, backup.name, 10)
        served = wait_for(lambda: not vrrp.standby(lab)["director2"], 5, "the backup serves the VIP")
        time.sleep(3)
    attempts = loop.results()
    failed = failures(attempts, since=killed_at - 1.0)
    last_failed = max((a.started - killed_at for a in failed), default=0.0)
    print(f"takeover: VIP on the backup {took:.3f}s after the kill (master down interval "
          f"{lab.vrrp.master_down:.3f}s), served {served:.3f}s later; {len(failed)} requests failed, the last one "
          f"sent {last_failed:.3f}s after the kill")
    assert took <= lab.vrrp.master_down + TAKEOVER_SLACK, f"took {took:.3f}s"
    assert took >= lab.vrrp.advert_int  # it waited for the advertisements to stop (a clean stop: skew time alone)
    recovered = killed_at + took + served + 1.0  # the gateway's ARP entry follows the gratuitous ARP at once
    answered = [a for a in attempts if a.ok and a.started > recovered]
    assert len(answered) >= 10, f"only {len(answered)} requests answered after the takeover"
    assert not failures(attempts, since=recovered), failures(attempts, since=recovered)[:5]
    assert ecmp.scheduled(lab)["director2"] - scheduled_before >= len(answered)
    for download in running:
        assert download.wait(30), f"download {download.source_port} hangs"
    broken = [d for d in running if not d.complete]
    assert len(broken) == len(running), [(d.source_port, d.received, d.error) for d in running]
    assert all("reset" in d.error.lower() for d in broken), [d.error for d in broken]
    assert counters(lab, backup)["pass_miss_ack"] > misses_before  # their segments went to its kernel


def counters(topo: Topology, node: Node) -> dict[str, int]:
    from pyvs.dataplane import open_dataplane

    with netns.in_netns(node.netns), open_dataplane(ecmp.pin_dir(node)) as dp:
        return dp.counters()


def test_doctor_finds_one_fingerprint_then_the_director_that_differs(lab: Topology) -> None:
    master, backup = lab.directors
    peer = "198.18.2.20:9180"
    found = doctor(lab, master, peer)["directors rules and tables"]
    assert found["status"] == "ok" and "all 2 directors show fingerprint" in found["detail"], found
    pyvsadm(backup, "-A", "-t", "198.18.0.200:80", "-s", "rr")  # made by hand: the daemon leaves it alone
    try:
        found = doctor(lab, master, peer)["directors rules and tables"]
        assert found["status"] == "FAIL" and f"1 of 1 others differ: {peer}" in found["detail"], found
        assert vrrp.problems(lab) and "differ" in " ".join(vrrp.problems(lab))
    finally:
        pyvsadm(backup, "-D", "-t", "198.18.0.200:80")
    unreachable = doctor(lab, master, "198.18.2.99:9180")["directors rules and tables"]
    assert unreachable["status"] == "FAIL" and "cannot compare" in unreachable["detail"]


def test_a_stopped_daemon_leaves_every_vip_served(lab: Topology) -> None:
    """A clean stop of the backup's daemon clears its standby: without a daemon nothing would serve a VIP that
    keepalived moves there later. Its next start stands by again."""
    backup = lab.directors[1]
    ecmp.stop_daemons(lab, [backup])
    assert vrrp.standby(lab)["director2"] == set()
    lab_api.up(lab)
    wait_for(lambda: vrrp.standby(lab)["director2"] == {lab.vip}, 10, "the restarted daemon stands by")


def synced(node: Node) -> bool:
    try:
        doc = json.loads(status(node))
    except OSError:
        return False
    return bool(doc.get("sync") and doc["sync"]["daemons"])


def backup_ports(topo: Topology, node: Node) -> set[int]:
    from pyvs.dataplane import open_dataplane

    with netns.in_netns(node.netns), open_dataplane(ecmp.pin_dir(node)) as dp:
        return {conn.cport for conn in dp.connections() if str(conn.vip) == topo.vip}


def test_with_connection_sync_the_downloads_survive_the_masters_death(lab: Topology) -> None:
    """The same death of the master with `[sync]` in both daemons (role both: the master sends its connections, the
    backup writes them into its tables): the downloads that ran through the master complete on the backup, which
    sends their segments to the same reals. With the test above (no sync: all reset) it proves the sync matters."""
    master, backup = lab.directors
    vrrp.restart_daemons(lab, vrrp.sync_section(lab))
    try:
        wait_for(lambda: all(synced(node) for node in lab.directors), 10, "both daemons run their sync engine")
        running = [Download(lab.client.netns, lab.public_ip, DOWNLOAD_SIZE, RATE).start() for _ in range(3)]
        assert not [d.error for d in running if d.error]
        ports = {d.source_port for d in running}
        wait_for(lambda: ports <= backup_ports(lab, backup), 5, "the backup has the downloads' connections")
        vrrp.kill_director(lab, master)
        ecmp.isolate(lab, master, isolated=True)
        vrrp.wait_holder(lab, backup.name, 10)
        for download in running:
            assert download.wait(30), f"download {download.source_port} hangs"
        failed = [(d.source_port, d.received, d.error) for d in running if not d.complete]
        assert not failed, f"downloads reset or cut short: {failed}"
    finally:
        ecmp.isolate(lab, master, isolated=False)
        lab_api.up(lab)
        vrrp.restart_daemons(lab)
