"""Active/active: three directors behind a BGP router (ECMP), each announcing the VIP from `pyvs director run`.

Real BIRDs, real sessions, the router's kernel spreading flows by their 5-tuple; requests and long, throttled
downloads from the client while directors are killed, cut off, stopped, detached and brought back."""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path
from urllib.request import urlopen

import pytest

from pyvs import netns
from pyvs.director import bgp
from pyvs.lab import ecmp
from pyvs.lab import lab as lab_api
from pyvs.lab.flows import Attempt, Download, RequestLoop
from pyvs.lab.topology import HOLD_TIME, Node, Topology, director_address, ecmp_topology

from .conftest import LAB_PREFIX, lab_up

DIRECTORS = 3
HOLD = HOLD_TIME
DOWNLOAD_SIZE = 4 << 20  # bytes, read at RATE: each download lasts ~14 s
RATE = 300_000


@pytest.fixture(scope="module")
def ecmp_lab() -> Iterator[Topology]:
    """Three directors behind the router, up for this module and always torn down."""
    topo = ecmp_topology(prefix=f"{LAB_PREFIX}e", directors=DIRECTORS)
    yield from lab_up(topo)


@pytest.fixture
def lab(ecmp_lab: Topology) -> Topology:
    """The lab with every director plugged in, running and announcing (repaired after an earlier test)."""
    for node in ecmp_lab.directors:
        ecmp.isolate(ecmp_lab, node, isolated=False)
    lab_api.up(ecmp_lab)  # starts the daemons that are not running, waits until the router routes to all
    return ecmp_lab


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.02)
    return time.monotonic() - started


def hops(topo: Topology) -> set[str]:
    return ecmp.router_next_hops(topo)


def status(topo: Topology, node: Node, path: str = "/status") -> str:
    with netns.in_netns(node.netns), urlopen(f"http://127.0.0.1:9180{path}", timeout=5) as response:  # noqa: S310
        return response.read().decode()  # type: ignore[no-any-return]


def downloads(topo: Topology, count: int) -> list[Download]:
    started = [Download(topo.client.netns, topo.public_ip, DOWNLOAD_SIZE, RATE).start() for _ in range(count)]
    assert not [d.error for d in started if d.error]
    return started


def through(topo: Topology, running: list[Download]) -> dict[str, list[Download]]:
    """Director -> the downloads whose flow its connection table holds."""
    where = ecmp.flow_directors(topo, {d.source_port for d in running})
    result: dict[str, list[Download]] = {node.name: [] for node in topo.directors}
    for download in running:
        for name in where[download.source_port]:
            result[name].append(download)
    return result


def assert_completed(running: list[Download], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    for download in running:
        assert download.wait(max(0.1, deadline - time.monotonic())), f"download {download.source_port} hangs"
    failed = [(d.source_port, d.received, d.error) for d in running if not d.complete]
    assert not failed, f"downloads reset or cut short: {failed}"


def failures(attempts: list[Attempt], since: float = 0.0) -> list[Attempt]:
    return [a for a in attempts if not a.ok and a.started >= since]


def victim_of(topo: Topology, running: list[Download]) -> tuple[Node, list[Download]]:
    """The director that carries the most downloads (at least one), and those downloads."""
    by_director = through(topo, running)
    name = max(by_director, key=lambda n: len(by_director[n]))
    assert by_director[name], f"no download found in any director's table: {by_director}"
    return topo.node(name), by_director[name]


def test_the_topology_fits_names_addresses_and_the_bridge() -> None:
    topo = ecmp_topology(prefix="pyvs123456", directors=4)
    assert [n.name for n in topo.directors] == ["director", "director2", "director3", "director4"]
    assert topo.bgp is not None and topo.node(topo.bgp.router).netns == "pyvs123456-router"
    for port in topo.ports():
        assert len(port.ifname) <= 15, port
        assert all(IPv4Interface(cidr).ip in IPv4Network("198.18.0.0/15") for cidr in port.addresses)
    macs = [port.mac for port in topo.ports()]
    assert len(set(macs)) == len(macs)
    assert {link.b.ifname for link in topo.links if link.b.node == "switch"} == set(topo.bridge.ports)
    assert all(topo.vip not in " ".join(topo.ports(n.name)[0].addresses) for n in topo.directors)  # routed to them
    assert any(r.dst == f"{topo.vip}/32" for r in topo.gateway.routes)
    for wrong in (1, 5):
        with pytest.raises(ValueError, match="2 to 4 directors"):
            ecmp_topology(directors=wrong)


def test_the_router_spreads_new_connections_over_every_director(lab: Topology) -> None:
    assert hops(lab) == {director_address(n) for n in range(1, DIRECTORS + 1)}
    assert all(p.established for p in ecmp.router_peers(lab).values())
    prints = ecmp.fingerprints(lab)
    assert len(set(prints.values())) == 1, f"the directors' tables differ: {prints}"
    before = ecmp.scheduled(lab)
    with RequestLoop(lab.client.netns, lab.public_ip, workers=4) as loop:
        time.sleep(4)
    attempts = loop.results()
    after = ecmp.scheduled(lab)
    share = {name: after[name] - before[name] for name in after}
    assert len(attempts) >= 100, f"only {len(attempts)} requests in 4 s"
    assert not failures(attempts), failures(attempts)[:5]
    assert {a.server for a in attempts} == {"rs1", "rs2"}
    total = sum(share.values())
    assert total >= len(attempts)  # every request was a connection scheduled by one director
    assert all(count >= total / DIRECTORS / 3 for count in share.values()), f"uneven split: {share}"


def test_the_daemons_report_their_sessions_and_announcements(lab: Topology) -> None:
    node = lab.directors[1]
    doc = json.loads(status(lab, node))
    assert doc["bgp"]["local_asn"] == 65001 and doc["bgp"]["hold_time"] == HOLD
    assert [(p["address"], p["state"], p["exported"]) for p in doc["bgp"]["peers"]] == [("198.18.2.1",
                                                                                         "Established", 1)]
    assert doc["bgp"]["vips"] == [{"vip": lab.vip, "announced": True, "reason": ""}]
    assert doc["bgp"]["speaker_pid"] == bgp.bird_pid(bgp.run_dir(ecmp.pin_dir(node)))
    metrics = status(lab, node, "/metrics")
    assert 'pyvs_bgp_session_up{peer="198.18.2.1"} 1.0' in metrics
    assert f'pyvs_bgp_vip_announced{{vip="{lab.vip}"}} 1.0' in metrics
    shown = netns.run_in_netns(node.netns, [sys.executable, "-m", "pyvs.cli", "director", "status"]).stdout
    assert f"announced: {lab.vip}/32" in shown and re.search(r"\n198\.18\.2\.1 +Established +\S+ \S+ +1 ", shown)
    assert f"fingerprint {ecmp.fingerprints(lab)[node.name]}" in shown
    # the router got the community of [bgp]
    with bgp.BirdControl(ecmp.router_dir(lab) / "bird.ctl") as ctl:
        route = "\n".join(text for _, text in ctl.command(f"show route {lab.vip}/32 all"))
    assert "BGP.community: (65001,80)" in route


def test_the_status_page_shows_the_sessions_and_the_vips(lab: Topology, tmp_path: Path) -> None:
    from .test_status_page import Browser  # headless Chromium in the first director's namespace

    dom = Browser(lab, tmp_path).dom("http://127.0.0.1:9180/page")
    assert re.search(r'<div id="bgp-section">', dom), "the BGP section is hidden"
    assert '<tr class="" data-peer="198.18.2.1" data-state="Established">' in dom
    assert f'<tr class="" data-vip="{lab.vip}" data-announced="true">' in dom


def test_a_killed_director_is_withdrawn_and_its_flows_go_on(lab: Topology) -> None:
    """kill -9 of a director's daemon and BIRD: its session drops (the kernel closes BIRD's socket), the router
    withdraws it, and the downloads that went through it go on through the others to the same real."""
    running = downloads(lab, 9)
    victim, theirs = victim_of(lab, running)
    with RequestLoop(lab.client.netns, lab.public_ip, workers=3) as loop:
        time.sleep(1)
        killed_at = time.monotonic()
        ecmp.kill_director(lab, victim)
        withdrawn = wait_for(lambda: len(hops(lab)) == DIRECTORS - 1, HOLD + 1, "the router withdraws the victim")
        converged = time.monotonic()
        time.sleep(3)
        still = {d.source_port for d in theirs if not d.ended}
        moved = ecmp.flow_directors(lab, still)  # who forwards them now
    attempts = loop.results()
    assert withdrawn < 1.0  # not the hold time: the router heard the session close
    assert director_address(lab.directors.index(victim) + 1) not in hops(lab)
    assert not failures(attempts, since=converged), failures(attempts, since=converged)[:5]
    assert_completed(running)
    assert all(d.ended > killed_at + 1 for d in theirs)  # they were running across the kill
    assert still and all(names and victim.name not in names for names in moved.values()), (victim.name, moved)


def test_a_dead_director_is_withdrawn_within_the_hold_time(lab: Topology) -> None:
    """The director's machine hangs (the switch drops every frame to and from it, its daemon and BIRD killed: no
    FIN, no keepalive): the router's hold timer takes it out; requests through it fail until then, none after."""
    running = downloads(lab, 9)
    victim, theirs = victim_of(lab, running)
    with RequestLoop(lab.client.netns, lab.public_ip, workers=3) as loop:
        time.sleep(1)
        killed_at = time.monotonic()
        ecmp.isolate(lab, victim, isolated=True)
        ecmp.kill_director(lab, victim)
        withdrawn = wait_for(lambda: len(hops(lab)) == DIRECTORS - 1, HOLD + 2, "the hold timer expires")
        converged = time.monotonic()
        time.sleep(3)
    attempts = loop.results()
    # BIRD jitters its timers by up to a quarter (RFC 4271 section 10): the hold timer runs out 2.25 to 3 s after
    # the last keepalive, which came up to 1 s before the machine hung: 1.25 to 3 s after it.
    assert 0.75 <= withdrawn <= HOLD + 0.5, withdrawn
    assert not failures(attempts, since=converged), failures(attempts, since=converged)[:5]
    failed = failures(attempts)
    if failed:  # requests ECMP sent to the dead director before the router knew
        assert failed[-1].started - killed_at <= HOLD + 1
    assert_completed(running)
    assert all(d.ended > converged for d in theirs)


def test_a_director_brought_back_takes_flows_and_breaks_none(lab: Topology) -> None:
    victim = lab.directors[2]
    ecmp.kill_director(lab, victim)
    wait_for(lambda: len(hops(lab)) == DIRECTORS - 1, HOLD + 1, "the router withdraws the killed director")
    running = downloads(lab, 9)
    before = ecmp.scheduled(lab)[victim.name]
    with RequestLoop(lab.client.netns, lab.public_ip, workers=3) as loop:
        time.sleep(1)
        ecmp.start_daemon(lab, victim)
        back = wait_for(lambda: len(hops(lab)) == DIRECTORS, 20, "the director is announced again")
        time.sleep(3)
    attempts = loop.results()
    assert back < 20
    assert not failures(attempts), failures(attempts)[:5]
    assert ecmp.scheduled(lab)[victim.name] > before  # it takes new flows again
    assert_completed(running)  # a third of them moved to it mid-stream: same real, no reset


NEW_REAL = "198.18.2.13"  # a second address of rs2: a real the directors' mh tables did not have


def with_real(text: str, address: str, vip: str) -> str:
    """A lab daemon's config with one more real in the TCP service of `vip`."""
    blocks = text.split("\n[[service]]\n")
    for n, block in enumerate(blocks[1:], start=1):
        if 'proto = "tcp"' in block and f'vip = "{vip}"' in block:
            blocks[n] = block.rstrip("\n") + f'\n\n[[service.real]]\naddress = "{address}"\n'
    return "\n[[service]]\n".join(blocks)


def holders(topo: Topology, ports: set[int]) -> dict[int, set[str]]:
    """Client source port -> the directors whose connection table has an entry for it (made or synced)."""
    found: dict[int, set[str]] = {port: set() for port in ports}
    for node in topo.directors:
        with netns.in_netns(node.netns), ecmp.open_dataplane(ecmp.pin_dir(node)) as dp:
            for conn in dp.connections():
                if conn.cport in ports and str(conn.vip) == topo.vip and not conn.template:
                    found[conn.cport].add(node.name)
    return found


def test_flows_older_than_a_change_of_reals_survive_a_director_loss(lab: Topology) -> None:
    """[sync] (role both) gives every director the connections the others made. A real is added (mh's table
    changes on every director: a share of the flows hashes to another real now), then a director is killed: its
    downloads move to directors that hold their entries, so they go on to the real they started on."""
    rs2 = lab.node("rs2")
    configs = {node.name: ecmp.config_path(lab, node) for node in lab.directors}
    originals = {name: path.read_text() for name, path in configs.items()}

    def reload_all() -> None:  # the daemons that run (the next test's fixture starts a killed one again)
        for node in lab.directors:
            if ecmp.daemon_pid(lab, node) is not None:
                netns.run_in_netns(node.netns, [sys.executable, "-m", "pyvs.cli", "director", "reload",
                                                "--pin-dir", str(ecmp.pin_dir(node))])

    netns.run_in_netns(rs2.netns, ["ip", "addr", "add", f"{NEW_REAL}/24", "dev", "eth0"])
    try:
        running = downloads(lab, 9)
        ports = {d.source_port for d in running}
        wait_for(lambda: all(len(names) == DIRECTORS for names in holders(lab, ports).values()), 5,
                 "every director holds every download's connection (sync)")
        before = ecmp.fingerprints(lab)
        for name, path in configs.items():
            path.write_text(with_real(originals[name], NEW_REAL, lab.vip))
        reload_all()
        wait_for(lambda: len(set(ecmp.fingerprints(lab).values())) == 1
                 and set(ecmp.fingerprints(lab).values()) != set(before.values()), 15,
                 "every director has the new real in its table")
        victim, theirs = victim_of(lab, running)
        with RequestLoop(lab.client.netns, lab.public_ip, workers=3) as loop:
            time.sleep(1)
            killed_at = time.monotonic()
            ecmp.kill_director(lab, victim)
            wait_for(lambda: len(hops(lab)) == DIRECTORS - 1, HOLD + 1, "the router withdraws the victim")
            converged = time.monotonic()
            time.sleep(3)
        attempts = loop.results()
        assert not failures(attempts, since=converged), failures(attempts, since=converged)[:5]
        assert_completed(running)
        assert all(d.ended > killed_at + 1 for d in theirs)  # they ran across the change and the kill
        assert {a.server for a in attempts if a.ok} == {"rs1", "rs2"}
    finally:
        for name, path in configs.items():
            path.write_text(originals[name])
        reload_all()
        netns.run_in_netns(rs2.netns, ["ip", "addr", "del", f"{NEW_REAL}/24", "dev", "eth0"])


def test_a_director_that_loses_its_reals_withdraws_and_announces_again(lab: Topology) -> None:
    """Its health checks fail (this director alone cannot reach the reals' port 80): the TCP service loses its
    quorum, so the VIP is withdrawn; the checks pass again and it is announced again."""
    node = lab.directors[2]
    address = director_address(3)
    rule = ["OUTPUT", "-p", "tcp", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset"]
    netns.run_in_netns(node.netns, ["iptables", "-A", *rule])
    try:
        wait_for(lambda: address not in hops(lab), 10, "the VIP withdrawn by the director without quorum")
        doc = json.loads(status(lab, node))
        assert doc["bgp"]["vips"][0]["announced"] is False
        assert "lost its quorum" in doc["bgp"]["vips"][0]["reason"]
        assert ecmp.router_peers(lab)[address].established  # withdrawn, not disconnected
    finally:
        netns.run_in_netns(node.netns, ["iptables", "-D", *rule])
    wait_for(lambda: address in hops(lab), 10, "the VIP announced again once the checks pass")


def test_a_detached_data_plane_withdraws(lab: Topology) -> None:
    node = lab.directors[1]
    address = director_address(2)
    pin = str(ecmp.pin_dir(node))
    cli = [sys.executable, "-m", "pyvs.cli", "director"]
    netns.run_in_netns(node.netns, [*cli, "detach", "--dev", "eth0", "--pin-dir", pin])
    try:
        wait_for(lambda: address not in hops(lab), 5, "the VIP withdrawn when XDP is detached")
        reason = json.loads(status(lab, node))["bgp"]["vips"][0]["reason"]
        assert "not forwarding" in reason
    finally:
        netns.run_in_netns(node.netns, [*cli, "attach", "--dev", "eth0", "--mode", "native", "--no-announce",
                                        "--pin-dir", pin])
    wait_for(lambda: address in hops(lab), 5, "the VIP announced again once XDP is back")


def test_a_clean_stop_withdraws_before_the_session_closes(lab: Topology) -> None:
    node = lab.directors[0]
    address = director_address(1)
    pid = ecmp.daemon_pid(lab, node)
    assert pid is not None
    seen: list[tuple[float, bool, str]] = []  # (time, routed to it, the session's state)
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        peer = ecmp.router_peers(lab).get(address)
        seen.append((time.monotonic(), address in hops(lab), peer.state if peer else "none"))
        if seen[-1][2] != "Established":
            break
        time.sleep(0.02)
    withdrawn_first = [t for t, routed, state in seen if not routed and state == "Established"]
    assert withdrawn_first, f"the route was still there when the session closed: {seen[-3:]}"
    assert seen[-1][2] != "Established", "the session never closed"
    assert seen[-1][0] - withdrawn_first[0] >= 0.9  # withdraw_wait = 1 s in the lab's config
    assert ecmp.reap(pid, 10)
    assert bgp.bird_pid(bgp.run_dir(ecmp.pin_dir(node))) is None  # its BIRD stopped with it


def router_view(topo: Topology, peer: str) -> str:
    """The router's route to the VIP as learned from one director (its BGP attributes)."""
    with bgp.BirdControl(ecmp.router_dir(topo) / "bird.ctl") as ctl:
        text = "\n".join(line for _, line in ctl.command(f"show route {topo.vip}/32 all"))
    parts = text.split(f"[{bgp.protocol_name(IPv4Address(peer))} ")
    return parts[1].split("unicast [")[0] if len(parts) > 1 else ""


def test_a_reload_changes_what_is_announced(lab: Topology) -> None:
    node = lab.directors[1]
    address = director_address(2)
    config = ecmp.config_path(lab, node)
    original = config.read_text()
    reload = [sys.executable, "-m", "pyvs.cli", "director", "reload", "--pin-dir", str(ecmp.pin_dir(node))]
    assert "(65001,443)" not in router_view(lab, address)
    since = ecmp.router_peers(lab)[address].since
    config.write_text(original.replace('communities = ["65001:80"]', 'communities = ["65001:80", "65001:443"]'))
    try:
        netns.run_in_netns(node.netns, reload)
        wait_for(lambda: "(65001,443)" in router_view(lab, address), 5, "the new community at the router")
        peer = ecmp.router_peers(lab)[address]
        assert peer.established and peer.since == since  # changed in place: the session stayed up
        assert len(hops(lab)) == DIRECTORS
    finally:
        config.write_text(original)
        netns.run_in_netns(node.netns, reload)
    wait_for(lambda: "(65001,443)" not in router_view(lab, address), 5, "the community gone again")


def test_down_after_a_crash_leaves_nothing(lab: Topology) -> None:
    """The lab's record lost (a crash) and `lab down` called for the one-director lab of that prefix: the router,
    every director, their daemons and BIRDs, pins and files go all the same. (Last: it removes the lab.)"""
    from pyvs.lab.topology import default_topology

    pids = [ecmp.daemon_pid(lab, node) for node in lab.directors]
    pids += [bgp.bird_pid(bgp.run_dir(ecmp.pin_dir(node))) for node in lab.directors]
    pids.append(bgp.bird_pid(ecmp.router_dir(lab)))
    assert None not in pids
    (lab_api.state_dir(lab) / "state.json").unlink()
    lab_api.down(default_topology(prefix=lab.prefix))
    assert not [name for name in netns.list_netns() if name.startswith(f"{lab.prefix}-")]
    assert not [pid for pid in pids if pid is not None and os.path.exists(f"/proc/{pid}/cmdline")
                and open(f"/proc/{pid}/cmdline").read()]  # gone (a zombie has an empty cmdline)
    assert not list(bgp.RUN_ROOT.glob(f"{lab.prefix}-*")) and not lab_api.state_dir(lab).exists()
    assert not [p for p in ecmp.pin_dir(lab.director).parent.glob(f"{lab.prefix}-*")]
