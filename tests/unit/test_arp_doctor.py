"""The doctor's verdicts from what the wire said (pyvs.arp.doctor), and its command line."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.arp.doctor import (
    Answer,
    RealProbe,
    Status,
    arp_ownership_findings,
    dr_path_finding,
    nd_claims,
    ownership_findings,
)
from pyvs.arp.nd import NA_OVERRIDE, NA_SOLICITED, ND_NEIGHBOUR_ADVERTISEMENT, Nd, unsolicited_advertisement
from pyvs.arp.packets import (
    ARP_REPLY,
    ICMP_ECHO_REPLY,
    ICMP_UNREACHABLE,
    ICMPV6_ECHO_REPLY,
    ICMPV6_UNREACHABLE,
    IPPROTO_ICMP,
    IPPROTO_ICMPV6,
    IPPROTO_TCP,
    IPPROTO_UDP,
    TCP_ACK,
    TCP_RST,
    TCP_SYN,
    Arp,
    IpPacket,
    gratuitous_arp,
)
from pyvs.cli import build_parser, main
from pyvs.model import Protocol, ServiceKey

VIP, RIP, DIP = IPv4Address("198.18.0.100"), IPv4Address("198.18.2.12"), IPv4Address("198.18.2.10")
TCP80, UDP80 = ServiceKey(Protocol.TCP, VIP, 80), ServiceKey(Protocol.UDP, VIP, 80)
MAC, DIRECTOR = "02:c6:12:00:05:01", "02:c6:12:00:03:01"


def answer(*replies: IpPacket) -> Answer:
    return Answer(list(replies))


def tcp(src: IPv4Address, flags: int) -> IpPacket:
    return IpPacket(MAC, DIRECTOR, src, DIP, IPPROTO_TCP, 80, 40000, flags=flags)


def icmp(icmp_type: int, code: int = 0) -> IpPacket:
    return IpPacket(MAC, DIRECTOR, VIP, DIP, IPPROTO_ICMP, icmp_type, code)


def probe(key: ServiceKey = TCP80, vip: Answer | None = None, ping: Answer | None = None,
          rip_port: Answer | None = None, arp: bool = True, mac: str | None = MAC) -> RealProbe:
    return RealProbe(key, RIP, 80, mac, arp, vip or Answer(), ping or Answer(), rip_port or Answer())


@pytest.mark.parametrize(("observed", "status", "words"), [
    (probe(vip=answer(tcp(VIP, TCP_SYN | TCP_ACK))), Status.OK, "SYN-ACK from 198.18.0.100:80"),
    (probe(vip=answer(tcp(VIP, TCP_RST | TCP_ACK))), Status.FAIL, "nothing listens on tcp port 80"),
    (probe(vip=answer(icmp(ICMP_UNREACHABLE, 13))), Status.FAIL, "a firewall on 198.18.2.12 rejects"),
    (probe(ping=answer(icmp(ICMP_ECHO_REPLY))), Status.FAIL, "a firewall drops it"),
    (probe(rip_port=answer(tcp(RIP, TCP_SYN | TCP_ACK))), Status.FAIL, "VIP not on lo, or rp_filter drops them"),
    (probe(arp=False), Status.FAIL, "does not answer ARP"),
    (probe(), Status.FAIL, "a firewall drops everything"),
    (probe(mac=None), Status.FAIL, "has no MAC"),
    (probe(UDP80, vip=answer(IpPacket(MAC, DIRECTOR, VIP, DIP, IPPROTO_UDP, 80, 40000))), Status.OK, "answer from"),
    (probe(UDP80, vip=answer(IpPacket(MAC, DIRECTOR, RIP, DIP, IPPROTO_UDP, 80, 40000))), Status.FAIL,
     "comes from 198.18.2.12, not the VIP"),
    (probe(UDP80, vip=answer(icmp(ICMP_UNREACHABLE, 3))), Status.FAIL, "nothing listens on udp port 80"),
    (probe(UDP80, ping=answer(icmp(ICMP_ECHO_REPLY))), Status.WARN, "did not answer a UDP probe"),
])  # fmt: skip
def test_dr_path_verdicts_name_the_cause(observed: RealProbe, status: Status, words: str) -> None:
    finding = dr_path_finding(observed)
    assert finding.status is status
    assert words in finding.detail
    assert finding.subject == f"198.18.2.12 {observed.key.proto.label} 198.18.0.100:80"
    assert (finding.fix == "") == (status is Status.OK)


def test_the_vip_fix_names_the_realserver_command() -> None:
    finding = dr_path_finding(probe(rip_port=answer(tcp(RIP, TCP_RST))))
    assert "on 198.18.2.12: pyvs realserver up --vip 198.18.0.100" in finding.fix


def test_arp_ownership_names_each_foreign_mac_and_how_it_claims_the_vip() -> None:
    answers = Arp(ARP_REPLY, MAC, VIP, DIRECTOR, IPv4Address("0.0.0.0"), MAC, DIRECTOR)
    stranger = gratuitous_arp(VIP, "02:00:00:00:00:99")
    mine = gratuitous_arp(VIP, DIRECTOR)
    findings = arp_ownership_findings(VIP, DIRECTOR, [answers, stranger, mine], {MAC: "real 198.18.2.12"})
    assert [f.status for f in findings] == [Status.FAIL, Status.FAIL]
    assert "an unknown host at 02:00:00:00:00:99 announces ARP" in findings[0].detail
    assert "real 198.18.2.12 at 02:c6:12:00:05:01 answers ARP for the VIP" in findings[1].detail
    assert "on real 198.18.2.12: remove 198.18.0.100 from its NIC" in findings[1].fix


def test_arp_ownership_is_ok_when_only_the_director_claims_the_vip() -> None:
    [finding] = arp_ownership_findings(VIP, DIRECTOR, [gratuitous_arp(VIP, DIRECTOR)], {})
    assert finding.status is Status.OK and DIRECTOR in finding.detail


@pytest.mark.parametrize("argv", [
    ["arpwatch", "--dev", "eth0", "--pin", "198.18.0.1=zz"],
    ["arpwatch", "--dev", "eth0", "--pin", "not-an-ip"],
    ["arpwatch"],
    ["doctor", "--client-ip", "nope"],
    ["director", "attach", "--dev", "eth0", "--vip", "300.1.1.1"],
])  # fmt: skip
def test_bad_command_lines_exit_2_with_a_message(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "pyvs: " in capsys.readouterr().err


# -- IPv6: neighbour discovery and probes over IPv6 ------------------------------------------------------

VIP6, RIP6, DIP6 = IPv6Address("2001:db8::100"), IPv6Address("2001:db8:2::12"), IPv6Address("2001:db8:2::10")
TCP6, UDP6 = ServiceKey(Protocol.TCP, VIP6, 80), ServiceKey(Protocol.UDP, VIP6, 80)


def icmp6(icmp_type: int, code: int = 0) -> IpPacket:
    return IpPacket(MAC, DIRECTOR, RIP6, DIP6, IPPROTO_ICMPV6, icmp_type, code)


def probe6(key: ServiceKey = TCP6, **answers: Answer) -> RealProbe:
    return RealProbe(key, RIP6, 80, MAC, True, answers.get("vip", Answer()), answers.get("ping", Answer()),
                     answers.get("rip_port", Answer()))


@pytest.mark.parametrize(("observed", "status", "words"), [
    (probe6(vip=answer(IpPacket(MAC, DIRECTOR, VIP6, DIP6, IPPROTO_TCP, 80, 40000, flags=TCP_SYN | TCP_ACK))),
     Status.OK, "SYN-ACK from [2001:db8::100]:80"),
    (probe6(UDP6, vip=answer(icmp6(ICMPV6_UNREACHABLE, 4))), Status.FAIL, "nothing listens on udp port 80"),
    (probe6(vip=answer(icmp6(ICMPV6_UNREACHABLE, 1))), Status.FAIL, "a firewall on 2001:db8:2::12 rejects"),
    (probe6(ping=answer(icmp6(ICMPV6_ECHO_REPLY))), Status.FAIL, "a firewall drops it"),
    (probe6(ping=answer(icmp6(ICMP_ECHO_REPLY))), Status.FAIL,  # type 0 is no ICMPv6 echo reply
     "answers neighbour solicitations but not"),
    (probe6(rip_port=answer(IpPacket(MAC, DIRECTOR, RIP6, DIP6, IPPROTO_TCP, 80, 40000, flags=TCP_RST))),
     Status.FAIL, "VIP not on lo"),
])  # fmt: skip
def test_ipv6_dr_path_verdicts_read_icmpv6(observed: RealProbe, status: Status, words: str) -> None:
    finding = dr_path_finding(observed)
    assert finding.status is status
    assert finding.subject == f"2001:db8:2::12 {observed.key.proto.label} [2001:db8::100]:80"
    assert words in finding.detail


def test_ipv6_fixes_name_ipv6_commands() -> None:
    vip_fix = dr_path_finding(probe6(rip_port=answer(icmp6(ICMPV6_ECHO_REPLY)))).fix
    assert "pyvs realserver up --vip 2001:db8::100 (VIP on lo as /128, deprecated)" in vip_fix
    firewall = dr_path_finding(probe6(vip=answer(icmp6(ICMPV6_UNREACHABLE, 1)))).fix
    assert "ip6tables -I INPUT -d 2001:db8::100 -p tcp --dport 80 -j ACCEPT" in firewall
    unanswered = dr_path_finding(RealProbe(TCP6, RIP6, 80, None, False, Answer(), Answer(), Answer()))
    assert "does not answer neighbour solicitations" in unanswered.detail


def test_nd_ownership_names_a_real_that_answers_solicitations_for_the_vip() -> None:
    answers = Nd(ND_NEIGHBOUR_ADVERTISEMENT, MAC, DIRECTOR, RIP6, DIP6, VIP6, MAC, NA_SOLICITED | NA_OVERRIDE)
    stranger = unsolicited_advertisement(VIP6, "02:00:00:00:00:99")
    mine = unsolicited_advertisement(VIP6, DIRECTOR)
    other_target = Nd(ND_NEIGHBOUR_ADVERTISEMENT, MAC, DIRECTOR, RIP6, DIP6, RIP6, MAC, NA_SOLICITED)
    findings = ownership_findings(VIP6, DIRECTOR, nd_claims([answers, stranger, mine, other_target]),
                                  {MAC: "real 2001:db8:2::12"})
    assert [(f.status, f.check) for f in findings] == [(Status.FAIL, "nd"), (Status.FAIL, "nd")]
    assert "an unknown host at 02:00:00:00:00:99 announces the VIP (neighbour advertisements)" in findings[0].detail
    assert "real 2001:db8:2::12 at 02:c6:12:00:05:01 answers the VIP" in findings[1].detail
    assert "pyvs realserver up --vip 2001:db8::100 (VIP on lo /128, an nftables rule" in findings[1].fix
    [ok] = ownership_findings(VIP6, DIRECTOR, nd_claims([mine]), {})
    assert ok.status is Status.OK and "answers neighbour solicitations" in ok.detail


def test_doctor_takes_a_client_address_of_each_family() -> None:
    args = build_parser().parse_args(["doctor", "--client-ip", "198.19.0.1", "--client-ip", "2001:db8:ffff::9"])
    assert [str(a) for a in args.client_ip] == ["198.19.0.1", "2001:db8:ffff::9"]
