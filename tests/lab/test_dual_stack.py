"""The dual-stack lab (`pyvs lab up --ipv6`): the seed's tests over IPv6, with real kernels.

The hosts part (addresses, routes, the gateway's DNAT, the reals' IPv6 VIP, neighbour discovery, the takeover)
runs on the lab without the director's data plane (`lab6_hosts`); what goes through the VIP needs the IPv6 data
plane (`lab6`)."""

from __future__ import annotations

import ipaddress
import json
import sys
from collections import Counter
from collections.abc import Iterator
from ipaddress import IPv6Address
from pathlib import Path
from urllib.request import urlopen

import pytest

from pyvs import netns, realserver
from pyvs.arp import doctor, takeover
from pyvs.arp.doctor import Status
from pyvs.arp.packets import interface_addresses
from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director, pin_dir, tutorial_rules
from pyvs.lab.topology import Topology, default_topology
from pyvs.lab.traffic import director_port_bytes, http_get, link_bytes, udp_ask
from pyvs.model import Rules, ServiceKey, parse_address

from .test_director_daemon import Daemon, wait_for

DOCUMENTATION_NET6 = ipaddress.IPv6Network("2001:db8::/32")
STATUS6 = "http://[::1]:9180"


def _v6(topo: Topology, name: str) -> str:
    return topo.address_of(name, 6)


def _mac(topo: Topology, name: str) -> str:
    mac = topo.ports(name)[0].mac
    assert mac is not None
    return mac


def _counters(topo: Topology) -> dict[str, int]:
    with netns.in_netns(topo.director.netns), open_director(topo) as dp:
        return dp.counters()


def _ipv6_rules(topo: Topology) -> Rules:
    rules = tutorial_rules(topo)
    return Rules({key: svc for key, svc in rules.services.items() if key.family == 6})


# -- the topology and the hosts -------------------------------------------------------------------------------


def test_the_dual_stack_topology_uses_documentation_addresses_only() -> None:
    topo = default_topology(prefix="pyvs123456", ipv6=True)
    v6 = [cidr for port in topo.ports() for cidr in port.addresses if ":" in cidr]
    assert len(v6) == 7 and all(ipaddress.IPv6Interface(cidr).ip in DOCUMENTATION_NET6 for cidr in v6)
    assert topo.vips == ("198.18.0.100", "2001:db8::100") and topo.public_ip6 == "2001:db8:1::1"
    assert {(d.family, d.protocol) for d in topo.dnat} == {(4, "tcp"), (4, "udp"), (6, "tcp"), (6, "udp")}
    assert not default_topology(prefix="pyvs123456").ipv6  # IPv4 only unless asked


def test_the_lab_is_healthy_with_ipv6_addresses_and_routes_everywhere(lab6_hosts: Topology) -> None:
    topo = lab6_hosts
    report = lab_api.status(topo, director=False)
    assert report["healthy"], report["problems"]
    assert "2001:db8::100/64" in report["nodes"]["director"]["interfaces"]["eth0"]["addresses"]
    assert lab_api.recorded_ipv6(topo)
    for name in ("director", "rs1", "rs2"):
        routes = netns.run_in_netns(topo.node(name).netns, ["ip", "-6", "route", "show", "default"]).stdout
        assert "default via 2001:db8::1 dev eth0" in routes and "onlink" in routes, (name, routes)
    client = netns.run_in_netns(topo.client.netns, ["ip", "-6", "route", "get", _v6(topo, "rs1")]).stdout
    assert "via 2001:db8:1::1" in client


def test_the_gateway_forwards_and_dnats_ipv6_as_it_does_ipv4(lab6_hosts: Topology) -> None:
    topo = lab6_hosts
    assert netns.read_sysctl("net.ipv6.conf.all.forwarding", netns=topo.gateway.netns) == "1"
    rules = netns.run_in_netns(topo.gateway.netns, ["ip6tables", "-t", "nat", "-S", "PREROUTING"]).stdout
    for proto in ("tcp", "udp"):
        assert (f"-d 2001:db8:1::1/128 -p {proto} -m {proto} --dport 80 -j DNAT --to-destination "
                f"[2001:db8::100]:80") in rules
    # the client reaches the reals' subnet through the gateway (routing, not only DNAT)
    assert http_get(topo.client.netns, _v6(topo, "rs2")).server == "rs2"


def test_the_reals_hold_both_vips_and_pass_realserver_check_with_its_ns_probe(lab6_hosts: Topology) -> None:
    topo = lab6_hosts
    for real in topo.reals:
        with netns.in_netns(real.netns):
            findings = realserver.check(topo.vips)
        assert all(f.ok for f in findings), findings
        names = {f.name for f in findings}
        assert {"arp_ignore on eth0", "VIP not a source address", "NS probe of 2001:db8::100"} <= names
        # the real answers from the VIP over IPv6 (DR): UDP with IPV6_PKTINFO, HTTP to the VIP on its lo
        assert udp_ask(real.netns, "2001:db8::100", b"vip6") == f"{real.name} vip6"
        assert http_get(real.netns, "2001:db8::100").server == real.name
        assert http_get(topo.director.netns, _v6(topo, real.name)).server == real.name


def test_nobody_but_the_director_answers_neighbour_solicitations_for_the_ipv6_vip(lab6_hosts: Topology) -> None:
    """The doctor's wire checks for the IPv6 services: ND ownership, the DR path over IPv6, the return path."""
    topo = lab6_hosts
    rules = _ipv6_rules(topo)
    macs = {parse_address(_v6(topo, n.name)): _mac(topo, n.name) for n in topo.reals}
    vip6 = parse_address("2001:db8::100")
    client6 = {4: doctor.DEFAULT_CLIENT_IP, 6: doctor.DEFAULT_CLIENT_IP6}

    def wire() -> list[doctor.Finding]:
        with netns.in_netns(topo.director.netns):
            return doctor._wire_checks("eth0", rules.services, dict(macs), [vip6], client6, 1.0)[0]

    findings = wire()
    assert [f.status for f in findings if f.check == "nd"] == [Status.OK], findings
    paths = [f for f in findings if f.check in ("dr-path", "return-path")]
    assert len(paths) == 6 and all(f.status is Status.OK for f in paths), paths  # tcp+udp x 2, return x 2
    assert any("SYN-ACK from [2001:db8::100]:80" in f.detail for f in paths)

    rs2 = topo.node("rs2").netns  # rs2 loses its rule and gets an ND proxy entry for the VIP: it answers
    netns.run_in_netns(rs2, ["nft", "delete", "table", "ip6", realserver.ND_TABLE])
    netns.write_sysctl("net.ipv6.conf.all.forwarding", 1, netns=rs2)
    netns.write_sysctl("net.ipv6.conf.eth0.proxy_ndp", 1, netns=rs2)
    netns.run_in_netns(rs2, ["ip", "-6", "neigh", "add", "proxy", "2001:db8::100", "dev", "eth0"])
    try:
        [bad] = [f for f in wire() if f.check == "nd"]
        assert bad.status is Status.FAIL
        assert f"real 2001:db8:2::12 at {_mac(topo, 'rs2')} answers the VIP" in bad.detail
        assert "pyvs realserver up --vip 2001:db8::100" in bad.fix
        with netns.in_netns(rs2):
            probe = {f.name: f for f in realserver.check(topo.vips)}["NS probe of 2001:db8::100"]
        assert not probe.ok and _mac(topo, "rs2") in probe.actual
    finally:
        netns.run_in_netns(rs2, ["ip", "-6", "neigh", "del", "proxy", "2001:db8::100", "dev", "eth0"])
        netns.write_sysctl("net.ipv6.conf.eth0.proxy_ndp", 0, netns=rs2)
        netns.write_sysctl("net.ipv6.conf.all.forwarding", 0, netns=rs2)
        with netns.in_netns(rs2):
            realserver.up(topo.vips, nic="eth0")
    assert [f.status for f in wire() if f.check == "nd"] == [Status.OK]


def test_the_takeover_announces_an_ipv6_vip_with_an_unsolicited_advertisement(lab6_hosts: Topology,
                                                                              tmp_path: Path) -> None:
    topo = lab6_hosts
    new_vip = IPv6Address("2001:db8::200")
    gateway = topo.gateway.netns
    # the gateway knows the address at another MAC (a director that served it before): the NA must override it
    netns.run_in_netns(gateway, ["ip", "-6", "neigh", "replace", str(new_vip), "lladdr", "02:00:00:00:00:99",
                                 "dev", "inside", "nud", "stale"])
    try:
        with netns.in_netns(topo.director.netns):
            actions = takeover.announce([new_vip], "eth0", state_dir=tmp_path)
            present = dict(interface_addresses("eth0", 6))
            flags = netns.run_in_netns(None, ["ip", "-6", "addr", "show", "dev", "eth0"]).stdout
        assert f"added {new_vip}/128 to eth0 (nodad, preferred_lft 0)" in actions
        assert any("unsolicited NA x3" in action for action in actions), actions
        assert present[new_vip] == 128 and "2001:db8::200/128 scope global nodad deprecated" in flags
        entry = netns.run_in_netns(gateway, ["ip", "-6", "neigh", "show", str(new_vip), "dev", "inside"]).stdout
        assert f"lladdr {_mac(topo, 'director')}" in entry, entry
    finally:
        with netns.in_netns(topo.director.netns):
            withdrawn = takeover.withdraw([new_vip], "eth0", state_dir=tmp_path)
            left = dict(interface_addresses("eth0", 6))
        netns.run_in_netns(gateway, ["ip", "-6", "neigh", "flush", "to", str(new_vip)], check=False)
    assert any("no longer answers neighbour solicitations" in action for action in withdrawn)
    assert new_vip not in left and IPv6Address("2001:db8::100") in left  # the lab's own VIP stays


# -- through the IPv6 VIP: the IPv6 data plane ----------------------------------------------------------------


def test_curl_through_the_ipv6_vip_reaches_every_real_and_replies_bypass_the_director(lab6: Topology) -> None:
    topo = lab6
    before_port, before_client = director_port_bytes(topo), link_bytes(topo.client.netns, "eth0")
    url = f"http://[{topo.public_ip6}]/"
    answers = [netns.run_in_netns(topo.client.netns, ["curl", "-sS", "-g", "--max-time", "5", url]).stdout.strip()
               for _ in range(6)]
    assert Counter(answers) == {"rs1": 3, "rs2": 3}  # rr over both reals
    download = http_get(topo.client.netns, topo.public_ip6, f"/bytes/{1 << 20}")
    assert download.body_bytes == 1 << 20
    sent_by_director = director_port_bytes(topo).rx - before_port.rx
    received = link_bytes(topo.client.netns, "eth0").rx - before_client.rx
    assert received > 1 << 20 and sent_by_director < received / 10  # the replies never crossed the director
    with netns.in_netns(topo.director.netns), open_director(topo) as dp:
        stats = dp.service_stats()
    key = ServiceKey(next(k.proto for k in stats if k.family == 6 and k.proto.name == "TCP"),
                     IPv6Address("2001:db8::100"), 80)
    assert stats[key].conns >= 7


def test_a_udp_exchange_through_the_ipv6_vip(lab6: Topology) -> None:
    answers = Counter(udp_ask(lab6.client.netns, lab6.public_ip6 or "", f"ping {n}".encode()).split()[0]
                      for n in range(4))
    assert set(answers) == {"rs1", "rs2"}


@pytest.fixture
def narrow_client_link6(lab6: Topology) -> Iterator[Topology]:
    """The gateway's link toward the client at MTU 1280 (IPv6's minimum); the client and the reals keep 1500."""
    for node in lab6.reals:
        netns.run_in_netns(node.netns, ["ip", "-6", "route", "flush", "cache"])
    netns.run_in_netns(lab6.gateway.netns, ["ip", "link", "set", "outside", "mtu", "1280"])
    try:
        yield lab6
    finally:
        netns.run_in_netns(lab6.gateway.netns, ["ip", "link", "set", "outside", "mtu", "1500"])
        for node in lab6.reals:
            netns.run_in_netns(node.netns, ["ip", "-6", "route", "flush", "cache"])


def test_1_mib_over_a_1280_hop_completes_by_ipv6_path_mtu_discovery(narrow_client_link6: Topology) -> None:
    """IPv6 routers never fragment: only the gateway's packet-too-big, sent to the VIP and carried to the real by
    the director, lets the real lower its segments."""
    topo = narrow_client_link6
    before = _counters(topo)["icmp_to_real"]
    reply = http_get(topo.client.netns, topo.public_ip6 or "", f"/bytes/{1 << 20}", timeout=20)
    assert reply.body_bytes == 1 << 20
    assert _counters(topo)["icmp_to_real"] > before  # the packet-too-big went to the real, through XDP
    learned = [netns.run_in_netns(n.netns, ["ip", "-6", "route", "get", _v6(topo, "client"), "from",
                                            "2001:db8::100"]).stdout for n in topo.reals]
    assert any("mtu 1280" in route for route in learned), learned


def test_a_fragmented_udp_datagram_through_the_ipv6_vip_gets_its_answer(lab6: Topology) -> None:
    payload = b"0123456789abcdef" * 256  # 4 KiB: three fragments (IPv6 fragment headers) from the client
    before = _counters(lab6)
    name, _, echoed = udp_ask(lab6.client.netns, lab6.public_ip6 or "", payload).partition(" ")
    assert name in {"rs1", "rs2"} and echoed.encode() == payload
    after = _counters(lab6)
    assert after["frag_first"] > before["frag_first"] and after["frag_followed"] >= before["frag_followed"] + 2


# -- the daemon with IPv6 checks ------------------------------------------------------------------------------


def daemon_config(topo: Topology) -> str:
    check = '{ type = "http", path = "/", interval = 0.2, timeout = 0.2, rise = 2, fall = 2 }'
    reals = "".join(f'\n[[service.real]]\naddress = "{_v6(topo, n.name)}"\n' for n in topo.reals)
    return f"""
[director]
status_listen = "[::1]:9180"

[[service]]
proto = "tcp"
vip = "2001:db8::100"
port = 80
scheduler = "rr"
check = {check}
{reals}
"""


def status6(topo: Topology) -> dict:  # type: ignore[type-arg]
    with netns.in_netns(topo.director.netns), urlopen(f"{STATUS6}/status", timeout=5) as response:  # noqa: S310
        return json.load(response)  # type: ignore[no-any-return]


class Daemon6(Daemon):
    def _answers(self) -> bool:
        if not Path(f"/proc/{self.pid}").exists():
            raise AssertionError(f"the daemon exited: {self.log.read_text()}")
        try:
            return bool(status6(self.topo)["pid"] == self.pid)
        except OSError:
            return False


def ipv6_reals(topo: Topology) -> dict[str, int]:
    names = {_v6(topo, n.name): n.name for n in topo.reals}
    with netns.in_netns(topo.director.netns), open_director(topo) as dp:
        rules = dp.read_rules()
    svc = next(s for k, s in rules.services.items() if k.family == 6 and k.proto.name == "TCP")
    return {names.get(str(r.rip), str(r.rip)): r.weight for r in svc.reals.values()}


def test_the_daemon_checks_ipv6_reals_and_a_stopped_one_leaves_the_pool(lab6: Topology, tmp_path: Path) -> None:
    topo = lab6
    config = tmp_path / "director.toml"
    config.write_text(daemon_config(topo))
    daemon = Daemon6(topo, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    try:
        daemon.start()
        wait_for(lambda: all(r["last_check_ok"] for r in status6(topo)["services"][0]["reals"]), 5, "both checked")
        lab_api.stop_web_server(topo, "rs1")
        wait_for(lambda: "rs1" not in ipv6_reals(topo), 3, "rs1 leaves the IPv6 service")
        report = status6(topo)["services"][0]
        assert report["name"] == "tcp/[2001:db8::100]:80"
        rs1 = next(r for r in report["reals"] if r["address"] == _v6(topo, "rs1"))
        assert rs1["health"] == "down" and rs1["last_check"] == "http [2001:db8:2::11]:80: Connection refused"
        assert Counter(http_get(topo.client.netns, topo.public_ip6 or "").server for _ in range(4)) == {"rs2": 4}
        with netns.in_netns(topo.director.netns), urlopen(f"{STATUS6}/metrics", timeout=5) as response:  # noqa: S310
            metrics = response.read().decode()
        assert 'pyvs_real_up{real="[2001:db8:2::11]:80",role="real",service="tcp/[2001:db8::100]:80"} 0.0' in metrics
        assert 'local_address="2001:db8::100"' in metrics  # node_exporter's label: no brackets
        lab_api.start_web_server(topo, "rs1")
        wait_for(lambda: "rs1" in ipv6_reals(topo), 3, "rs1 returns")
        log = daemon.log.read_text()
        assert "event=real_down service=tcp/[2001:db8::100]:80 real=[2001:db8:2::11]:80" in log
    finally:
        daemon.stop()
        lab_api.start_web_server(topo, "rs1")
        with netns.in_netns(topo.director.netns), open_director(topo) as dp:
            dp.apply(tutorial_rules(topo))


def test_the_doctor_finds_the_ipv6_services_healthy(lab6: Topology) -> None:
    proc = netns.run_in_netns(lab6.director.netns, [sys.executable, "-m", "pyvs.cli", "doctor", "--json",
                                                     "--pin-dir", str(pin_dir(lab6))], check=False)
    findings = json.loads(proc.stdout)
    ipv6 = [f for f in findings if "2001:db8" in f["subject"]]
    assert {f["check"] for f in ipv6} >= {"nd", "dr-path", "return-path", "director"}, ipv6
    assert all(f["status"] == "ok" for f in ipv6), [f for f in ipv6 if f["status"] != "ok"]
