"""[bgp]: the config section, what is announced when, the BIRD config pyvs writes (read by the real BIRD) and
its control protocol's replies, the status line and metrics."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, ip_address
from pathlib import Path

import pytest

from pyvs.director import bgp
from pyvs.director.config import BgpPeer, BgpSpec, ConfigError, parse_config
from pyvs.director.metrics import render
from pyvs.director.status_client import bgp_summary
from pyvs.director.statusdoc import StatusDocument

SERVICES = """
[[service]]
vip = "198.18.0.100"
port = 80
scheduler = "mh"

[[service.real]]
address = "198.18.2.11"

[[service]]
proto = "udp"
vip = "198.18.0.100"
port = 53
scheduler = "mh"
sorry_server = "198.18.2.20"

[[service]]
vip = "198.18.0.101"
port = 443
scheduler = "mh"
"""

BGP = """
[bgp]
local_asn = 65001
peer_asn = 65000
peers = ["198.18.2.1", { address = "198.18.2.2", asn = 4200000000 }]
local_address = "198.18.2.10"
next_hop = "198.18.2.10"
communities = ["65001:80", "65001:1:2"]
hold_time = 3
"""


def test_the_section_is_read_with_its_defaults() -> None:
    config = parse_config(SERVICES + BGP, "d.toml")
    assert config.bgp == BgpSpec(
        local_asn=65001, peers=(BgpPeer(IPv4Address("198.18.2.1"), 65000),
                                BgpPeer(IPv4Address("198.18.2.2"), 4200000000)),
        local_address=IPv4Address("198.18.2.10"), next_hop=IPv4Address("198.18.2.10"),
        communities=((65001, 80), (65001, 1, 2)), hold_time=3)
    assert config.bgp.connect_retry == 5 and config.bgp.withdraw_wait == 2.0
    assert config.sloppy_tcp is True  # behind ECMP, unless set off
    assert parse_config(SERVICES + BGP.replace("[bgp]", "[director]\nsloppy_tcp = false\n[bgp]")).sloppy_tcp is False
    assert parse_config(SERVICES).bgp is None and parse_config(SERVICES).sloppy_tcp is None


@pytest.mark.parametrize(("change", "message"), [
    ("local_asn = 65001", ":22: [bgp]: 'local_asn' is missing"),
    ('peers = ["198.18.2.1", { address = "198.18.2.2", asn = 4200000000 }]',
     ":22: [bgp]: 'peers' is missing"),
    ("local_asn = 65001", "local_asn = 4294967296\n:23: [bgp]: 'local_asn' must be between 1 and 4294967295"),
    ('"65001:80"', '"65001:80000"\n:28: [bgp]: \'communities\': community \'65001:80000\': each part of a standard '
                   'community is at most 65535'),
    ('"65001:80"', '"no-export"\n:28: [bgp]: \'communities\': a community is "ASN:VALUE" (standard) or "ASN:A:B"'),
    ("hold_time = 3", "hold_time = 1\n:29: [bgp]: 'hold_time' must be between 3 and 65535, not 1"),
    ('local_address = "198.18.2.10"', 'local_address = "198.18.2.300"\n:26: [bgp]: \'local_address\''),
    ("peer_asn = 65000", "peer_asn_typo = 65000\n:24: [bgp]: unknown setting 'peer_asn_typo'"),
    ("peer_asn = 65000\n", "\n:24: [bgp]: peer 198.18.2.1 has no ASN: set 'peer_asn' or the peer's 'asn'"),
    ('{ address = "198.18.2.2", asn = 4200000000 }', '"198.18.2.1"\n:25: [bgp]: peer 198.18.2.1 is listed twice'),
    ('asn = 4200000000 }', 'as = 1 }\n:25: [bgp]: peer #2: unknown setting \'as\''),
])  # fmt: skip
def test_a_bad_section_is_refused_with_file_and_line(change: str, message: str) -> None:
    old = change
    new, _, expected = message.rpartition("\n") if "\n" in message else ("", "", message)
    text = (SERVICES + BGP).replace(old, new)
    assert text != SERVICES + BGP
    with pytest.raises(ConfigError) as error:
        parse_config(text, "d.toml")
    assert str(error.value).startswith(f"d.toml{expected}"), str(error.value)


def test_a_vip_is_announced_while_forwarding_and_every_service_on_it_is_served() -> None:
    config = parse_config(SERVICES + BGP)
    web, dns, tls = config.services
    vip, other = IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101")
    everything = {web.key: True, dns.key: True, tls.key: True}
    assert bgp.announcement(config.services, everything, forwarding=True) == {vip: "", other: ""}
    lost = bgp.announcement(config.services, {**everything, web.key: False}, forwarding=True)
    assert lost == {vip: "tcp/198.18.0.100:80 lost its quorum", other: ""}
    # dns lost its quorum too, but its sorry server serves it: the VIP stays announced for it
    assert bgp.announcement(config.services, {**everything, dns.key: False}, forwarding=True)[vip] == ""
    detached = bgp.announcement(config.services, everything, forwarding=False)
    assert set(detached.values()) == {"the data plane is not forwarding (pyvs's XDP program is not attached)"}


def test_bird_reads_the_config_pyvs_writes(tmp_path: Path) -> None:
    """The real BIRD parses it (`bird -p`): every option, communities of both kinds, the VIPs as routes."""
    spec = parse_config(SERVICES + BGP).bgp
    assert spec is not None
    text = bgp.render_config(spec, [IPv4Address("198.18.0.101"), IPv4Address("198.18.0.100")])
    assert "route 198.18.0.100/32 blackhole;\n  route 198.18.0.101/32 blackhole;" in text
    assert "bgp_community.add((65001,80));" in text and "bgp_large_community.add((65001,1,2));" in text
    assert "neighbor 198.18.2.2 as 4200000000;" in text and "next hop address 198.18.2.10" in text
    assert "protocol kernel" not in text  # the director's own routes are never touched
    for body in (text, bgp.render_config(BgpSpec(65001, (BgpPeer(IPv4Address("198.18.2.1"), 65001),)), [])):
        path = tmp_path / "bird.conf"
        path.write_text(body)
        result = subprocess.run([bgp.BIRD, "-p", "-c", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    path.write_text(text.replace("blackhole;", "blackhole"))
    with pytest.raises(bgp.BgpError, match="BIRD refuses the config"):
        bgp.Speaker(tmp_path / "run").check(path.read_text())


# Replies of BIRD 2.0.12 on this machine, as its control socket sends them (see bgp.BirdControl); "·" stands for a
# space that ends a line.
PROTOCOLS = """2002-Name       Proto      Table      State  Since         Info
1002-device1    Device     ---        up     1796153733
 pyvs_vips  Static     master4    up     1796153733
1002-pyvs_peer_198_18_2_1 BGP        ---        up     1796153737    Established
1006-  BGP state:          Established
     Neighbor address: 198.18.2.1
     Hold timer:       1.938/3
   Channel ipv4
     State:          UP
     Routes:         0 imported, 1 exported, 0 preferred
·
1002-pyvs_peer_198_18_2_2 BGP        ---        start  1796153740    Idle          BGP Error: Hold timer expired
1006-  BGP state:          Idle
     Neighbor address: 198.18.2.2
     Last error:       BGP Error: Hold timer expired
   Channel ipv4
     State:          DOWN
·
0000·
""".replace("·", " ")
ROUTES = """1007-Table master4:
 198.18.0.100/32      blackhole [pyvs_vips 1796153733] * (200)
 198.18.0.101/32      blackhole [pyvs_vips 1796153733] * (200)
0000·
""".replace("·", " ")


class FakeSocket:
    """The reading end of BirdControl fed with canned bytes (what the socket would deliver)."""

    def __init__(self, data: str):
        self.lines = [line.encode() + b"\n" for line in data.splitlines()]

    def readline(self) -> bytes:
        return self.lines.pop(0) if self.lines else b""


def replies(data: str) -> list[tuple[int, str]]:
    control = bgp.BirdControl.__new__(bgp.BirdControl)
    control.path = Path("bird.ctl")
    control.reader = FakeSocket(data)  # type: ignore[assignment]
    return control._reply()


def test_the_control_protocol_replies_are_read() -> None:
    peers = bgp.parse_peers(replies(PROTOCOLS))
    assert peers == [
        bgp.PeerState("198.18.2.1", "Established", 1796153737.0, "Established", "", 1),
        bgp.PeerState("198.18.2.2", "Idle", 1796153740.0, "Idle          BGP Error: Hold timer expired",
                      "BGP Error: Hold timer expired", 0),
    ]
    assert bgp.parse_routes(replies(ROUTES)) == ["198.18.0.100/32", "198.18.0.101/32"]
    with pytest.raises(bgp.BgpError, match="BIRD: syntax error"):
        replies("9001 syntax error, unexpected CF_SYM_UNDEFINED\n")
    with pytest.raises(bgp.BgpError, match="closed the connection"):
        replies("1002-half a reply\n")


def test_a_missing_speaker_is_a_clear_error(tmp_path: Path) -> None:
    speaker = bgp.Speaker(tmp_path)
    assert speaker.pid is None
    with pytest.raises(bgp.BgpError, match=f"cannot reach BIRD at {tmp_path}/bird.ctl"):
        speaker.peers()
    (tmp_path / "bird.pid").write_text("1\n")  # a pid file naming another program (init): not our BIRD
    assert speaker.pid is None


def _status(announced: bool) -> StatusDocument:
    doc = {"pid": 1, "config": "d.toml", "generation": 1, "last_reload": {"ok": True}, "services": [],
           "other_services": [], "counters": {}, "tables": {}, "time": 0.0, "node_exporter_metrics": False,
           "bgp": {"speaker_pid": 42, "local_asn": 65001, "hold_time": 3, "error": "",
                   "peers": [{"address": "198.18.2.1", "state": "Established", "since": 1.0, "info": "Established",
                              "last_error": "", "exported": int(announced)},
                             {"address": "198.18.2.2", "state": "Active", "since": 1.0, "info": "Active",
                              "last_error": "", "exported": 0}],
                   "vips": [{"vip": "198.18.0.100", "announced": announced,
                             "reason": "" if announced else "tcp/198.18.0.100:80 lost its quorum"}]}}
    return doc  # type: ignore[return-value]


def test_metrics_and_the_status_line_show_sessions_and_announcements() -> None:
    text = render(_status(announced=False)).decode()
    assert 'pyvs_bgp_session_up{peer="198.18.2.1"} 1.0' in text
    assert 'pyvs_bgp_session_up{peer="198.18.2.2"} 0.0' in text
    assert 'pyvs_bgp_vip_announced{vip="198.18.0.100"} 0.0' in text
    assert 'pyvs_bgp_routes_exported{peer="198.18.2.1"} 0.0' in text and "pyvs_bgp_speaker_up 1.0" in text
    assert bgp_summary(_status(announced=False)) == [
        "bgp: AS65001, BIRD pid 42; sessions: 198.18.2.1 Established, 198.18.2.2 Active; VIPs: 198.18.0.100 "
        "WITHDRAWN (tcp/198.18.0.100:80 lost its quorum)"]
    no_bgp = _status(True)
    no_bgp["bgp"] = None
    assert bgp_summary(no_bgp) == [] and "pyvs_bgp" not in render(no_bgp).decode()


def test_notes_name_what_breaks_a_moved_flow_and_validate_needs_bird(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    from pyvs.cli.director import runnable_problems

    config = parse_config(SERVICES.replace('port = 443\nscheduler = "mh"', 'port = 443\nscheduler = "rr"') + BGP)
    assert bgp.ecmp_notes(config) == ["service tcp/198.18.0.101:443 uses rr: behind ECMP a flow that moves to "
                                      "another director may get another real there (mh picks the same one on "
                                      "every director)"]
    off = parse_config(SERVICES + BGP.replace("[bgp]", "[director]\nsloppy_tcp = false\n[bgp]"))
    assert bgp.ecmp_notes(off) == ["sloppy_tcp is off: a TCP flow that ECMP moves to this director mid-stream is "
                                   "not forwarded"]
    assert bgp.ecmp_notes(parse_config(SERVICES)) == []
    assert runnable_problems(config) == []  # bird is installed here (scripts/setup.sh)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert runnable_problems(config) == ["[bgp]: bird (BIRD 2, the Debian package bird2) is not installed"]


SERVICE6 = '\n[[service]]\nvip = "2001:db8::100"\nport = 80\nscheduler = "mh"\n'


def test_ipv6_vips_over_ipv4_sessions_need_an_ipv6_next_hop() -> None:
    text = SERVICES + SERVICE6 + BGP
    with pytest.raises(ConfigError) as error:
        parse_config(text, "d.toml")
    assert str(error.value) == ("d.toml:30: [bgp]: IPv6 VIPs go to the IPv4 peer 198.18.2.1 with no next hop of their "
                                "family: set 'next_hop6' (this director's IPv6 address)"), str(error.value)
    spec = parse_config(text.replace("hold_time = 3", 'hold_time = 3\nnext_hop6 = "2001:db8:2::10"')).bgp
    assert spec is not None and str(spec.next_hop6) == "2001:db8:2::10"
    with pytest.raises(ConfigError, match=r":\d+: \[bgp\]: 'next_hop6'"):
        parse_config(text.replace("hold_time = 3", 'hold_time = 3\nnext_hop6 = "198.18.2.10"'))


def test_bird_reads_a_dual_stack_config(tmp_path: Path) -> None:
    """IPv6 VIPs as /128 routes, a channel per family on each session (IPv4 and IPv6 peers), each family's next
    hop where the session is of the other one; the real BIRD parses it."""
    text = SERVICES + SERVICE6 + BGP.replace(
        'peers = ["198.18.2.1", { address = "198.18.2.2", asn = 4200000000 }]',
        'peers = ["198.18.2.1", { address = "2001:db8:2::1", asn = 4200000000 }]').replace(
        "hold_time = 3", 'hold_time = 3\nnext_hop6 = "2001:db8:2::10"\nlocal_address6 = "2001:db8:2::10"')
    config = parse_config(text)
    spec = config.bgp
    assert spec is not None
    decision = bgp.announcement(config.services, {}, forwarding=True)
    assert list(decision) == [IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101"), ip_address("2001:db8::100")]
    body = bgp.render_config(spec, list(decision), {4, 6})
    assert "protocol static pyvs_vips6 {\n  ipv6;\n  route 2001:db8::100/128 blackhole;\n}" in body
    assert "protocol bgp pyvs_peer_2001_db8_2__1 {" in body and "local 2001:db8:2::10 as 65001;" in body
    assert "ipv6 { import none; export filter pyvs_export; next hop address 2001:db8:2::10; };" in body
    assert "ipv4 { import none; export filter pyvs_export; next hop address 198.18.2.10; };" in body
    withdrawn = bgp.render_config(spec, [], {4, 6})  # nothing announced: the same sessions and channels
    assert "protocol static pyvs_vips6 {\n  ipv6;\n}" in withdrawn and withdrawn.count("ipv6 {") == 2
    for number, config_text in enumerate((body, withdrawn)):
        path = tmp_path / f"bird{number}.conf"
        path.write_text(config_text)
        result = subprocess.run([bgp.BIRD, "-p", "-c", str(path)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
    assert "static pyvs_vips6" not in bgp.render_config(spec, [IPv4Address("198.18.0.100")])  # IPv4 only


def test_an_ipv6_peer_is_named_by_its_description() -> None:
    reply = PROTOCOLS.replace("pyvs_peer_198_18_2_2", "pyvs_peer_2001_db8_2__1").replace(
        "     Neighbor address: 198.18.2.2", "     Description:    2001:db8:2::1\n     Neighbor address: 2001:db8:2::1")
    assert [p.address for p in bgp.parse_peers(replies(reply))] == ["198.18.2.1", "2001:db8:2::1"]


def test_the_dual_stack_ecmp_lab_routes_the_ipv6_vip_to_every_director() -> None:
    from ipaddress import ip_interface, ip_network

    from pyvs.lab import ecmp
    from pyvs.lab.topology import default_topology, director_address6, ecmp_topology

    topo = ecmp_topology("pyvsu6", 3, base=default_topology("pyvsu6", ipv6=True))
    ranges = (ip_network("198.18.0.0/15"), ip_network("2001:db8::/32"))
    for port in topo.ports():
        assert all(any(ip_interface(cidr).ip in net for net in ranges) for cidr in port.addresses), port
    for n, node in enumerate(topo.directors, start=1):
        assert f"{director_address6(n)}/64" in topo.ports(node.name)[0].addresses  # the IPv6 DIP, no VIP
        assert topo.vip6 not in " ".join(topo.ports(node.name)[0].addresses)
        assert f'next_hop6 = "{director_address6(n)}"' in ecmp.daemon_config(topo, node)
    assert any(r.dst == f"{topo.vip6}/128" for r in topo.gateway.routes)
    assert "protocol kernel { ipv6 { import none; export all; }; merge paths yes; }" in ecmp.router_config(topo)
    assert "ipv6" not in ecmp.router_config(ecmp_topology("pyvsu6", 3))  # an IPv4 lab: as before


def test_a_fwmark_service_announces_no_address() -> None:
    config = parse_config(SERVICES + '\n[[service]]\nfwmark = 1\ncheck = { type = "none" }\n' + BGP)
    assert config.services[-1].key.is_fwmark
    announced = bgp.announcement(config.services, {}, forwarding=True)
    assert set(announced) == {IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101")}
