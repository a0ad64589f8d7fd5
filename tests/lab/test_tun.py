"""Tunnel forwarding end to end (`pyvs lab up --method tun`): the director encapsulates, rs1 on its segment and rs2
routed on 198.18.6.0/24 behind a router decapsulate with pyvs_decap (this kernel has no ipip, fou or gre), and
answer the client directly. The seed's curl and UDP tests, each tunnel type, and path MTU discovery through the
tunnel (ICMP fragmentation needed from the director)."""

from __future__ import annotations

import http.client
import json
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from pyvs import realserver
from pyvs.decap import status as decap_status
from pyvs.lab import lab as lab_api
from pyvs.lab.topology import FAR_RIP, GUE_PORT, Topology, tun_topology
from pyvs.lab.traffic import director_port_bytes, http_get, udp_ask
from pyvs.netns import in_netns, run_in_netns

from .conftest import LAB_PREFIX, lab_up


@pytest.fixture(scope="module")
def tun_lab() -> Iterator[Topology]:
    topo = tun_topology(prefix=f"{LAB_PREFIX}t")
    yield from lab_up(topo)


def pyvsadm(topo: Topology, *args: str) -> str:
    return run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args]).stdout


def counters(topo: Topology) -> dict[str, int]:
    from pyvs.lab.director import open_director

    with in_netns(topo.director.netns), open_director(topo) as dp:
        return dp.counters()


def test_the_routed_real_is_on_another_subnet_and_the_lab_is_healthy(tun_lab: Topology) -> None:
    assert tun_lab.address_of("rs2") == FAR_RIP
    report = lab_api.status(tun_lab)
    assert report["healthy"], report["problems"]
    listing = pyvsadm(tun_lab, "-L", "-n", "--tun-info")
    assert f"  -> {FAR_RIP + ':80':<28} Tunnel  ipip          1" in listing
    assert f"  -> {'198.18.2.11:80':<28} Tunnel  ipip          1" in listing


def test_100_requests_through_the_gateway_split_between_the_on_link_and_the_routed_real(tun_lab: Topology) -> None:
    before = counters(tun_lab)["tun_encap"]
    served = Counter(http_get(tun_lab.client.netns, tun_lab.public_ip).server for _ in range(100))
    assert served == {"rs1": 50, "rs2": 50}
    assert counters(tun_lab)["tun_encap"] - before >= 300  # SYN, ACK, request, FIN... of 100 connections
    for name in ("rs1", "rs2"):
        with in_netns(tun_lab.node(name).netns):
            found = decap_status("eth0")
        assert found is not None and found.counters["ipip"] >= 150


def test_udp_service_is_answered_by_both_reals_through_the_tunnel(tun_lab: Topology) -> None:
    answers = [udp_ask(tun_lab.client.netns, tun_lab.public_ip, f"hello{n}".encode()) for n in range(6)]
    assert {a.split()[0] for a in answers} == {"rs1", "rs2"}
    assert all(a.endswith(f"hello{n}") for n, a in enumerate(answers))


def test_a_download_comes_straight_from_the_real_not_through_the_director(tun_lab: Topology) -> None:
    size = 4 * 1024 * 1024
    before = director_port_bytes(tun_lab)
    reply = http_get(tun_lab.client.netns, tun_lab.public_ip, f"/bytes/{size}", timeout=60)
    assert reply.body_bytes == size
    assert director_port_bytes(tun_lab).rx - before.rx < 0.05 * size


def test_a_large_request_gets_frag_needed_and_path_mtu_discovery_carries_it(tun_lab: Topology) -> None:
    before = counters(tun_lab)["drop_frag_needed"]
    with in_netns(tun_lab.client.netns):
        conn = http.client.HTTPConnection(tun_lab.public_ip, 80, timeout=20)
        conn.connect()
    try:  # a 6000-byte header: full-size segments with DF, 20 bytes too big once encapsulated
        conn.request("GET", "/", headers={"Connection": "close", "X-Pad": "p" * 6000})
        response = conn.getresponse()
        assert response.status == 200 and response.getheader("X-Served-By") in ("rs1", "rs2")
        response.read()
    finally:
        conn.close()
    assert counters(tun_lab)["drop_frag_needed"] > before
    route = run_in_netns(tun_lab.client.netns, ["ip", "route", "get", tun_lab.public_ip]).stdout
    assert "mtu 1480" in route  # the client learnt the tunnel's MTU from the director's ICMP


@pytest.mark.parametrize("tunnel", [["--tun-type", "gue", "--tun-port", str(GUE_PORT), "--tun-csum"],
                                    ["--tun-type", "gre", "--tun-nocsum"], ["--tun-type", "gre", "--tun-csum"]],
                         ids=["gue-csum", "gre", "gre-csum"])
def test_every_tunnel_type_reaches_both_reals(tun_lab: Topology, tunnel: list[str]) -> None:
    kind = tunnel[1]
    for name in ("rs1", "rs2"):
        with in_netns(tun_lab.node(name).netns):
            realserver.up(tun_lab.vips, nic="eth0", tunnel=kind, tun_port=GUE_PORT)
    try:
        for spec in ("-t", "-u"):
            for name in ("rs1", "rs2"):
                pyvsadm(tun_lab, "-e", spec, f"{tun_lab.vip}:80", "-r", tun_lab.address_of(name), "-i", *tunnel)
        assert "--tun-type " + kind in pyvsadm(tun_lab, "-S", "-n")
        served = Counter(http_get(tun_lab.client.netns, tun_lab.public_ip).server for _ in range(10))
        assert served == {"rs1": 5, "rs2": 5}
        answers = [udp_ask(tun_lab.client.netns, tun_lab.public_ip, f"q{n}".encode()) for n in range(4)]
        assert {a.split()[0] for a in answers} == {"rs1", "rs2"}
        with in_netns(tun_lab.node("rs2").netns):
            found = decap_status("eth0")
        assert found is not None and found.counters[kind] > 0
    finally:
        for spec in ("-t", "-u"):
            for name in ("rs1", "rs2"):
                pyvsadm(tun_lab, "-e", spec, f"{tun_lab.vip}:80", "-r", tun_lab.address_of(name), "-i")


def test_realserver_check_says_who_decapsulates(tun_lab: Topology) -> None:
    with in_netns(tun_lab.node("rs2").netns):
        findings = {f.name: f for f in realserver.check(tun_lab.vips, nic="eth0", tunnel="ipip")}
    decap = findings["tunnel decapsulation"]
    assert decap.ok and "XDP pyvs_decap" in decap.actual and FAR_RIP in decap.actual


def test_doctor_leaves_tunnel_reals_to_realserver_check_and_finds_nothing_wrong(tun_lab: Topology) -> None:
    proc = run_in_netns(tun_lab.director.netns, [sys.executable, "-m", "pyvs.cli", "doctor", "--json"], check=False)
    found = json.loads(proc.stdout)
    assert proc.returncode == 0 and not [f for f in found if f["status"] != "ok"], found
    tunnel = {f["subject"] for f in found if f["check"] == "tunnel"}
    assert tunnel == {f"{rip} {proto} 198.18.0.100:80" for rip in ("198.18.2.11", FAR_RIP) for proto in ("TCP", "UDP")}
    assert not [f for f in found if f["check"] == "dr-path"]  # no DR probe, which a tunnel real cannot answer
