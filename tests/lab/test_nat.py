"""The lab forwarding by NAT (`pyvs lab up --method nat`, ipvsadm -m) end to end with real kernels: the reals hold
no VIP and route through the director, rs2 serves on port 8080 (VIP:80 -> RIP:8080); curl and the UDP echo from
the client through the gateway; the replies pass the director (XDP rewrites them back to VIP:80)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator

import pytest

from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology, nat_topology
from pyvs.lab.traffic import director_port_bytes, http_get, udp_ask
from pyvs.netns import in_netns, run_in_netns

from .conftest import LAB_PREFIX, lab_up


@pytest.fixture(scope="module")
def nat_lab() -> Iterator[Topology]:
    topo = nat_topology(prefix=f"{LAB_PREFIX}n")
    yield from lab_up(topo)


def pyvsadm(topo: Topology, *args: str) -> str:
    return run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args]).stdout


def test_the_reals_hold_no_vip_and_route_through_the_director(nat_lab: Topology) -> None:
    for node in nat_lab.reals:
        addresses = run_in_netns(node.netns, ["ip", "-4", "-o", "addr", "show"]).stdout
        assert nat_lab.vip not in addresses
        route = run_in_netns(node.netns, ["ip", "-4", "route", "show", "default"]).stdout
        assert "via 198.18.2.10" in route


def test_100_requests_through_the_gateway_split_50_50_one_real_port_mapped(nat_lab: Topology) -> None:
    served = Counter(http_get(nat_lab.client.netns, nat_lab.public_ip).server for _ in range(100))
    assert served == {"rs1": 50, "rs2": 50}


def test_curl_from_the_client_is_answered_from_the_public_address(nat_lab: Topology) -> None:
    out = run_in_netns(nat_lab.client.netns, ["curl", "-sS", "-m", "10", "-D", "-", f"http://{nat_lab.public_ip}/"])
    assert out.stdout.startswith("HTTP/1.0 200") or out.stdout.startswith("HTTP/1.1 200")
    assert "X-Served-By: rs" in out.stdout


def test_udp_service_is_answered_by_both_reals(nat_lab: Topology) -> None:
    answers = [udp_ask(nat_lab.client.netns, nat_lab.public_ip, f"hello{n}".encode()) for n in range(6)]
    assert {a.split()[0] for a in answers} == {"rs1", "rs2"}
    assert all(a.endswith(f"hello{n}") for n, a in enumerate(answers))


def test_a_download_passes_the_director_both_ways_and_is_rewritten_by_xdp(nat_lab: Topology) -> None:
    size = 4 * 1024 * 1024
    before = director_port_bytes(nat_lab)
    counters_before = _counters(nat_lab)
    reply = http_get(nat_lab.client.netns, nat_lab.public_ip, f"/bytes/{size}", timeout=60)
    sent_by_director = director_port_bytes(nat_lab).rx - before.rx
    assert reply.body_bytes == size
    assert sent_by_director > size  # the replies (and the requests) went out of the director: NAT, not DR
    after = _counters(nat_lab)
    assert after["nat_reply"] - counters_before["nat_reply"] > size // 1500
    assert after["pass_nat_no_conn"] == counters_before["pass_nat_no_conn"]


def _counters(topo: Topology) -> dict[str, int]:
    with in_netns(topo.director.netns), open_director(topo) as dp:
        return dp.counters()


def test_pyvsadm_lists_masq_saves_m_and_shows_the_connections(nat_lab: Topology) -> None:
    listing = pyvsadm(nat_lab, "-L", "-n")
    assert "  -> 198.18.2.11:80               Masq    1" in listing
    assert "  -> 198.18.2.12:8080             Masq    1" in listing
    saved = pyvsadm(nat_lab, "-S", "-n")
    assert "-a -t 198.18.0.100:80 -r 198.18.2.12:8080 -m -w 1" in saved
    http_get(nat_lab.client.netns, nat_lab.public_ip)
    http_get(nat_lab.client.netns, nat_lab.public_ip)
    conns = pyvsadm(nat_lab, "-L", "-c", "-n")
    assert "198.18.0.100:80    198.18.2.12:8080" in conns
    pyvsadm(nat_lab, "-C")
    try:
        assert pyvsadm(nat_lab, "-S", "-n") == ""
    finally:
        run_in_netns(nat_lab.director.netns, [sys.executable, "-m", "pyvs.admin.cli", "-R"], input=saved)
    assert pyvsadm(nat_lab, "-S", "-n") == saved
    assert http_get(nat_lab.client.netns, nat_lab.public_ip).server in ("rs1", "rs2")


def doctor(topo: Topology) -> tuple[int, dict[tuple[str, str], dict[str, str]]]:
    """`pyvs doctor --json` in the director: exit code, findings by (check, subject)."""
    proc = run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.cli", "doctor", "--json"], check=False)
    return proc.returncode, {(f["check"], f["subject"]): f for f in json.loads(proc.stdout)}


def test_doctor_probes_nat_reals_at_their_own_port_and_checks_their_route_through_the_director(
        nat_lab: Topology) -> None:
    code, found = doctor(nat_lab)
    assert code == 0 and not [f for f in found.values() if f["status"] != "ok"], found
    assert "SYN-ACK from 198.18.2.12:8080" in found[("nat-path", "198.18.2.12 TCP 198.18.0.100:80")]["detail"]
    assert not [key for key in found if key[0] == "dr-path"]  # no advice to put the VIP on lo
    rs1 = nat_lab.node("rs1").netns
    try:  # rs1 answers clients by another router, and its web server stops
        run_in_netns(rs1, ["ip", "route", "replace", "default", "via", "198.18.2.1", "dev", "eth0", "onlink"])
        lab_api.stop_web_server(nat_lab, "rs1")
        code, found = doctor(nat_lab)
    finally:
        run_in_netns(rs1, ["ip", "route", "replace", "default", "via", "198.18.2.10", "dev", "eth0", "onlink"])
        lab_api.start_web_server(nat_lab, "rs1")
    assert code == 1
    tcp = found[("nat-path", "198.18.2.11 TCP 198.18.0.100:80")]
    assert tcp["status"] == "FAIL" and "nothing listens on tcp 198.18.2.11:80 (RST)" in tcp["detail"]
    udp = found[("nat-path", "198.18.2.11 UDP 198.18.0.100:80")]  # the lab's server answers both
    assert udp["status"] == "FAIL" and "nothing listens on udp 198.18.2.11:80 (port unreachable)" in udp["detail"]
    assert found[("nat-path", "198.18.2.12 TCP 198.18.0.100:80")]["status"] == "ok"
    rs2 = nat_lab.node("rs2").netns
    try:  # rs2 listens, but routes its replies elsewhere
        run_in_netns(rs2, ["ip", "route", "replace", "default", "via", "198.18.2.1", "dev", "eth0", "onlink"])
        code, found = doctor(nat_lab)
    finally:
        run_in_netns(rs2, ["ip", "route", "replace", "default", "via", "198.18.2.10", "dev", "eth0", "onlink"])
    back = found[("return-path", "198.18.2.12 TCP 198.18.0.100:80")]
    assert back["status"] == "FAIL" and back["fix"] == "on 198.18.2.12: ip route replace default via 198.18.2.10 " \
        "(the director)"
