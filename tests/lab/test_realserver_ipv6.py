"""The real server's IPv6 VIP (`pyvs realserver up/check/down`), on real kernels: a real namespace and a neighbour
namespace on one link, neighbour solicitations built by scapy and sent from the neighbour."""

from __future__ import annotations

import atexit
import socket
import sys
import time
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet6 import ICMPv6ND_NA, ICMPv6ND_NS, ICMPv6NDOptSrcLLAddr, IPv6, in6_getnsma, in6_getnsmac
from scapy.layers.l2 import Ether

from pyvs import netns, realserver

from .conftest import LAB_PREFIX

VIP6, VIP4 = "2001:db8::100", "198.18.0.100"
RIP6, NEIGHBOUR6 = "2001:db8:3::2", "2001:db8:3::1"
ETH_P_ALL, PACKET_OUTGOING = 3, 4


def _remove(*names: str) -> None:
    for name in names:
        if netns.exists(name):
            netns.remove(name)


@pytest.fixture
def pair() -> Iterator[tuple[str, str]]:
    """(real, neighbour): two namespaces on one veth link, IPv4 and IPv6 on both, the real routed via the
    neighbour."""
    real, neighbour = f"{LAB_PREFIX}-r6", f"{LAB_PREFIX}-n6"
    _remove(real, neighbour)
    atexit.register(_remove, real, neighbour)
    netns.create(real)
    netns.create(neighbour)
    try:
        netns.run_in_netns(real, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns",
                                  neighbour])
        for ns, v4, v6 in ((real, "198.18.3.2/24", f"{RIP6}/64"), (neighbour, "198.18.3.1/24", f"{NEIGHBOUR6}/64")):
            for argv in (["ip", "addr", "add", v4, "dev", "eth0"], ["ip", "addr", "add", v6, "dev", "eth0", "nodad"],
                         ["ip", "link", "set", "eth0", "up"]):
                netns.run_in_netns(ns, argv)
        netns.run_in_netns(real, ["ip", "route", "add", "default", "via", "198.18.3.1"])
        netns.run_in_netns(real, ["ip", "-6", "route", "add", "default", "via", NEIGHBOUR6])
        yield real, neighbour
    finally:
        _remove(real, neighbour)


def solicit(neighbour: str, target: str, unicast_to: str | None = None, wait: float = 0.5) -> list[str]:
    """Send a neighbour solicitation for target from the neighbour (to its solicited-node group, or unicast to
    the target at unicast_to); the MACs of the advertisements for target that come back."""
    with netns.in_netns(neighbour), IPRoute() as ipr:
        mac = str(ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0].get_attr("IFLA_ADDRESS"))
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    with sock:
        sock.bind(("eth0", ETH_P_ALL))
        group = socket.inet_ntop(socket.AF_INET6, in6_getnsma(socket.inet_pton(socket.AF_INET6, target)))
        dst, dst_mac = (target, unicast_to) if unicast_to else (group, in6_getnsmac(in6_getnsma(
            socket.inet_pton(socket.AF_INET6, target))))
        sock.send(bytes(Ether(src=mac, dst=dst_mac) / IPv6(src=NEIGHBOUR6, dst=dst, hlim=255)
                        / ICMPv6ND_NS(tgt=target) / ICMPv6NDOptSrcLLAddr(lladdr=mac)))
        answers = []
        deadline = time.monotonic() + wait
        sock.settimeout(0.05)
        while time.monotonic() < deadline:
            try:
                frame, address = sock.recvfrom(65535)
            except TimeoutError:
                continue
            parsed = Ether(frame)
            if address[2] != PACKET_OUTGOING and ICMPv6ND_NA in parsed and parsed[ICMPv6ND_NA].tgt == target:
                answers.append(parsed.src)
        return answers


def real_mac(real: str) -> str:
    with netns.in_netns(real), IPRoute() as ipr:
        return str(ipr.get_links(ipr.link_lookup(ifname="eth0")[0])[0].get_attr("IFLA_ADDRESS"))


def lo_addresses(ns: str) -> str:
    return netns.run_in_netns(ns, ["ip", "-6", "addr", "show", "dev", "lo"]).stdout


def nft_ruleset(ns: str) -> str:
    with netns.in_netns(ns):
        return netns.run_in_netns(None, ["nft", "list", "ruleset"]).stdout


def pyvs_cli(ns: str, *args: str) -> tuple[int, str, str]:
    proc = netns.run_in_netns(ns, [sys.executable, "-m", "pyvs.cli", *args], check=False)
    return proc.returncode, proc.stdout, proc.stderr


def with_nd_proxy(real: str) -> None:
    """An ND proxy entry for the VIP on the NIC: the one setting that makes Linux answer for an address it does
    not hold on that interface (at once: a proxy answers a multicast solicitation after a random delay of up to
    proxy_delay, 0.8 s by default)."""
    netns.write_sysctl("net.ipv6.conf.all.forwarding", 1, netns=real)
    netns.write_sysctl("net.ipv6.conf.eth0.proxy_ndp", 1, netns=real)
    netns.write_sysctl("net.ipv6.neigh.eth0.proxy_delay", 0, netns=real)
    netns.run_in_netns(real, ["ip", "-6", "neigh", "add", "proxy", VIP6, "dev", "eth0"])


def test_this_kernel_answers_no_solicitation_for_an_address_on_lo(pair: tuple[str, str]) -> None:
    """The measurement behind the design: Linux answers an NS only for an address of the interface it arrived on."""
    real, neighbour = pair
    netns.run_in_netns(real, ["ip", "link", "set", "lo", "up"])
    netns.run_in_netns(real, ["ip", "addr", "add", f"{VIP6}/128", "dev", "lo", "nodad"])
    assert solicit(neighbour, RIP6) == [real_mac(real)]  # the control: the RIP is answered
    assert solicit(neighbour, VIP6) == []
    assert solicit(neighbour, VIP6, unicast_to=real_mac(real)) == []
    with_nd_proxy(real)
    assert solicit(neighbour, VIP6) == [real_mac(real)]  # with a proxy entry, it does


def test_up_puts_the_vip_on_lo_deprecated_with_the_ns_rule_and_down_restores(pair: tuple[str, str]) -> None:
    real, neighbour = pair
    before = nft_ruleset(real)
    with netns.in_netns(real):
        changes = realserver.up(VIP6)
        assert f"added {VIP6}/128 to lo (nodad, preferred_lft 0)" in changes
        assert any("nft" in change and VIP6 in change for change in changes), changes
        findings = realserver.check(VIP6)
        assert all(f.ok for f in findings), findings
        assert {"VIP on lo", "VIP not a source address", f"NS for {VIP6} dropped", f"NS probe of {VIP6}"} <= {
            f.name for f in findings}
        assert realserver.up(VIP6) == []
    shown = lo_addresses(real)
    assert f"{VIP6}/128" in shown and "nodad" in shown and "deprecated" in shown
    assert "pyvs_realserver" in nft_ruleset(real)
    with_nd_proxy(real)
    assert solicit(neighbour, VIP6) == []  # the rule holds where the kernel alone would answer
    with netns.in_netns(real):
        undone = realserver.down()
    assert any(VIP6 in line for line in undone)
    assert VIP6 not in lo_addresses(real)
    assert nft_ruleset(real) == before
    assert solicit(neighbour, VIP6) == [real_mac(real)]  # the proxy answers again: the rule is gone


def test_the_vip_is_never_the_source_of_the_reals_own_connections(pair: tuple[str, str]) -> None:
    """IPv6 DR's known pitfall: toward a destination whose interface has no global address of its own (a link-local
    next hop, an unnumbered link), every global address of the host competes, and RFC 6724's longest match picks
    the VIP (measured here). A deprecated address is avoided before that rule."""
    real, _ = pair
    for argv in (["ip", "link", "add", "eth1", "type", "veth", "peer", "name", "eth1p"],
                 ["ip", "link", "set", "eth1", "up"], ["ip", "link", "set", "eth1p", "up"],
                 ["ip", "link", "set", "lo", "up"],
                 ["ip", "-6", "route", "add", "2001:db8::/64", "dev", "eth1"],
                 ["ip", "addr", "add", f"{VIP6}/128", "dev", "lo", "nodad"]):
        netns.run_in_netns(real, argv)
    assert f"src {VIP6}" in netns.run_in_netns(real, ["ip", "-6", "route", "get", "2001:db8::5"]).stdout
    netns.run_in_netns(real, ["ip", "addr", "del", f"{VIP6}/128", "dev", "lo"])
    with netns.in_netns(real):
        realserver.up(VIP6)
        findings = {f.name: f for f in realserver.check(VIP6)}
    assert findings["VIP not a source address"].ok
    assert f"src {RIP6}" in netns.run_in_netns(real, ["ip", "-6", "route", "get", "2001:db8::5"]).stdout


def test_check_names_what_is_wrong_and_its_probe_sees_an_answer(pair: tuple[str, str]) -> None:
    real, _ = pair
    netns.run_in_netns(real, ["ip", "link", "set", "lo", "up"])
    netns.run_in_netns(real, ["ip", "addr", "add", f"{VIP6}/128", "dev", "lo", "nodad"])
    with_nd_proxy(real)
    with netns.in_netns(real):
        findings = {f.name: f for f in realserver.check(VIP6)}
    assert findings["VIP on lo"].ok
    source = findings["VIP not a source address"]
    assert not source.ok and source.fix_command == f"ip addr change {VIP6}/128 dev lo preferred_lft 0"
    assert not findings[f"NS for {VIP6} dropped"].ok
    probe = findings[f"NS probe of {VIP6}"]
    assert not probe.ok and real_mac(real) in probe.actual
    for finding in findings.values():  # the fixes really fix
        if finding.fix_command and finding.name != f"NS probe of {VIP6}":
            netns.run_in_netns(real, ["sh", "-c", finding.fix_command])
    code, out, err = pyvs_cli(real, "realserver", "check", "--vip", VIP6)
    assert code == 0 and "WRONG" not in out, (out, err)


def test_dual_stack_real_up_check_and_down_one_vip_then_all(pair: tuple[str, str]) -> None:
    real, neighbour = pair
    code, out, err = pyvs_cli(real, "realserver", "up", "--vip", VIP4, "--vip", VIP6)
    assert code == 0 and f"added {VIP4}/32 to lo" in out and f"added {VIP6}/128 to lo" in out, (out, err)
    code, out, err = pyvs_cli(real, "realserver", "check", "--vip", VIP4, "--vip", VIP6)
    assert code == 0 and "arp_ignore" in out and f"NS probe of {VIP6}" in out, (out, err)
    code, out, err = pyvs_cli(real, "realserver", "down", "--vip", VIP6)
    assert code == 0 and VIP6 in out and VIP4 not in out, (out, err)
    assert VIP6 not in lo_addresses(real) and "pyvs_realserver" not in nft_ruleset(real)
    assert netns.read_sysctl("net.ipv4.conf.eth0.arp_ignore", netns=real) == "1"  # kept for the IPv4 VIP
    code, out, err = pyvs_cli(real, "realserver", "down")
    assert code == 0 and f"removed {VIP4}/32 from lo" in out and "arp_ignore" in out, (out, err)
    code, out, _ = pyvs_cli(real, "realserver", "down")
    assert "nothing to restore" in out


def test_bad_ipv6_vips_are_refused_before_anything_changes(pair: tuple[str, str]) -> None:
    real, _ = pair
    netns.run_in_netns(real, ["ip", "addr", "add", f"{VIP6}/64", "dev", "lo"])
    code, _, err = pyvs_cli(real, "realserver", "up", "--vip", VIP6)
    assert code == 1 and "must be /128" in err and "Traceback" not in err
    netns.run_in_netns(real, ["ip", "addr", "del", f"{VIP6}/64", "dev", "lo"])
    netns.run_in_netns(real, ["ip", "addr", "add", f"{VIP6}/128", "dev", "eth0", "nodad"])
    code, _, err = pyvs_cli(real, "realserver", "up", "--vip", VIP6)
    assert code == 1 and f"VIP {VIP6} is on eth0" in err and "neighbour solicitations" in err
    for bad in ("fe80::1", "ff02::1", "2001:db8::zz"):
        code, _, err = pyvs_cli(real, "realserver", "up", "--vip", bad)
        assert code == 1 and err.startswith("pyvs: VIP"), err
    assert "pyvs_realserver" not in nft_ruleset(real)
    with netns.in_netns(real):
        assert not realserver.state_path().exists()  # nothing was changed, nothing recorded
