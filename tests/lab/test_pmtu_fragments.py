"""ICMP errors and fragments through the director, with real kernels: path-MTU discovery works because the
gateway's "fragmentation needed" reaches the real (through the director's XDP), and a datagram larger than the
MTU, fragmented, gets its answer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology
from pyvs.lab.traffic import http_get, udp_ask
from pyvs.netns import in_netns, run_in_netns


def _counters(topo: Topology) -> dict[str, int]:
    with in_netns(topo.director.netns), open_director(topo) as dp:
        return dp.counters()


def _flush_path_mtus(topo: Topology) -> None:
    for node in topo.reals:
        run_in_netns(node.netns, ["ip", "route", "flush", "cache"])


@pytest.fixture
def narrow_client_link(lab: Topology) -> Iterator[Topology]:
    """The gateway's link toward the client at MTU 1280; the client and the reals keep 1500 (MSS 1460)."""
    _flush_path_mtus(lab)
    run_in_netns(lab.gateway.netns, ["ip", "link", "set", "outside", "mtu", "1280"])
    try:
        yield lab
    finally:
        run_in_netns(lab.gateway.netns, ["ip", "link", "set", "outside", "mtu", "1500"])
        _flush_path_mtus(lab)


def test_1_mib_download_over_a_1280_hop_completes_by_path_mtu_discovery(narrow_client_link: Topology) -> None:
    lab = narrow_client_link
    before = _counters(lab)["icmp_to_real"]
    size = 1024 * 1024
    reply = http_get(lab.client.netns, lab.public_ip, f"/bytes/{size}", timeout=20)
    assert reply.body_bytes == size
    assert _counters(lab)["icmp_to_real"] > before  # the frag-needed went to the real, through XDP
    learned = [run_in_netns(n.netns, ["ip", "route", "get", lab.address_of("client"), "from", lab.vip]).stdout
               for n in lab.reals]
    assert any("mtu 1280" in route for route in learned), learned


def test_a_4_kib_udp_datagram_through_the_vip_gets_its_answer(lab: Topology) -> None:
    before = _counters(lab)
    payload = b"0123456789abcdef" * 256  # 4 KiB: three fragments on the client's 1500-byte link
    answer = udp_ask(lab.client.netns, lab.public_ip, payload)
    name, _, echoed = answer.partition(" ")
    assert name in {n.name for n in lab.reals}
    assert echoed.encode() == payload
    after = _counters(lab)
    assert after["frag_first"] > before["frag_first"] and after["frag_followed"] >= before["frag_followed"] + 2
