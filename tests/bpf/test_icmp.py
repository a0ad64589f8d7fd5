"""ICMP to a VIP (BPF_PROG_TEST_RUN): an error quoting a VIP connection's packet goes to that connection's real;
everything else ICMP is the kernel's, counted; a malformed one is dropped, counted, never misrouted."""

from __future__ import annotations

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Ether
from scapy.packet import Raw

from pyvs.dataplane import Dataplane

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import CLIENT, RS1, RS2, TCP80, UDP80, VIP, assert_forwarded, frame, real_of, rules, service, syn

GATEWAY = "198.18.1.1"


@pytest.fixture
def two_reals(dataplane: Dataplane) -> Dataplane:
    dataplane.apply(rules(service(TCP80, "rr", (RS1, 1), (RS2, 1)), service(UDP80, "rr", (RS1, 1), (RS2, 1))))
    return dataplane


def quoted_tcp(cport: int, vport: int = 80, client: str = CLIENT, vip: str = str(VIP)) -> bytes:
    """What a real sent: VIP:vport -> client:cport, a full-size segment (the router quotes what it likes)."""
    return bytes(IP(src=vip, dst=client) / TCP(sport=vport, dport=cport, flags="PA", seq=7) / Raw(bytes(1400)))


def icmp_error(quoted: bytes, type_: int = 3, code: int = 4, **icmp: object) -> bytes:
    # Fragmentation needed (3/4) carries the next hop's MTU.
    fields = {"nexthopmtu": 1280} if (type_, code) == (3, 4) else {}
    fields.update(icmp)
    return frame(ICMP(type=type_, code=code, **fields) / Raw(quoted), src=GATEWAY, proto=1)


def test_frag_needed_for_a_connection_goes_to_its_real_with_only_the_macs_rewritten(two_reals: Dataplane) -> None:
    owners = {cport: real_of(two_reals.test_run(syn(sport=cport)).data) for cport in (40000, 40001)}
    assert set(owners.values()) == {RS1, RS2}  # rr: one connection on each real
    for cport in (40000, 40001):
        two_reals.test_run(frame(TCP(sport=cport, dport=80, flags="A")))
        # A router quotes the IP header and 8 bytes of L4 at least: the quote is cut there.
        packet = icmp_error(quoted_tcp(cport)[:28])
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_TX"
        assert_forwarded(packet, result.data, owners[cport])
    counters = two_reals.counters()
    assert counters["icmp_to_real"] == 2 and counters["pass_icmp_no_conn"] == 0
    assert two_reals.service_stats()[TCP80].inpkts == 6  # 2 SYN + 2 ACK + 2 ICMP, as ip_vs_in_icmp counts them
    assert {c.state for c in two_reals.connections()} == {"ESTABLISHED"}  # an error changes no state


def test_an_error_for_a_half_open_connection_and_a_udp_flow_reaches_their_real(two_reals: Dataplane) -> None:
    tcp_real = real_of(two_reals.test_run(syn(sport=41000)).data)  # SYN only: in half_open
    udp_real = real_of(two_reals.test_run(frame(UDP(sport=5353, dport=80) / Raw(b"q"))).data)
    result = two_reals.test_run(icmp_error(quoted_tcp(41000), type_=11, code=0))  # time exceeded, whole quote
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == tcp_real
    quoted_udp = bytes(IP(src=str(VIP), dst=CLIENT) / UDP(sport=80, dport=5353) / Raw(b"answer"))
    result = two_reals.test_run(icmp_error(quoted_udp, type_=3, code=3))  # port unreachable at the client
    assert result.verdict_name == "XDP_TX" and real_of(result.data) == udp_real
    assert two_reals.counters()["icmp_to_real"] == 2


def test_an_error_of_no_connection_is_passed_to_the_kernel_and_counted(two_reals: Dataplane) -> None:
    two_reals.test_run(syn(sport=42000))
    for quoted in (quoted_tcp(42001),  # another client port
                   quoted_tcp(42000, vport=81),  # another service port
                   quoted_tcp(42000, client="198.18.1.3"),  # another client
                   quoted_tcp(42000, vip="198.18.0.101")):  # quoted source is not the VIP it was sent to
        packet = icmp_error(quoted)
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals.counters()["pass_icmp_no_conn"] == 4
    assert two_reals.counters()["icmp_to_real"] == 0


def test_echo_and_other_icmp_to_a_vip_are_the_kernels(two_reals: Dataplane) -> None:
    quoted_icmp = bytes(IP(src=str(VIP), dst=CLIENT) / ICMP(type=0))
    for packet in (frame(ICMP(type=8, id=1, seq=1) / Raw(b"ping"), proto=1),  # echo request: the kernel answers
                   frame(ICMP(type=13), proto=1),  # timestamp
                   icmp_error(quoted_icmp, code=1),  # an error about the director's own echo reply
                   frame(ICMP(type=8) / Raw(bytes(100)), proto=1, flags="MF")):  # fragmented ICMP: reassembled
        result = two_reals.test_run(packet)
        assert result.verdict_name == "XDP_PASS" and result.data == packet
    assert two_reals.counters()["pass_icmp"] == 4


def test_icmp_to_other_addresses_is_passed_uncounted(two_reals: Dataplane) -> None:
    two_reals.test_run(syn(sport=43000))
    packet = frame(ICMP(type=3, code=4) / Raw(quoted_tcp(43000)[:28]), dst="198.18.0.1", proto=1)
    assert two_reals.test_run(packet).verdict_name == "XDP_PASS"
    counters = two_reals.counters()
    assert counters["icmp_to_real"] == counters["pass_icmp_no_conn"] == counters["pass_icmp"] == 0


def test_malformed_icmp_to_a_vip_is_dropped_and_counted_never_forwarded(two_reals: Dataplane) -> None:
    two_reals.test_run(syn(sport=44000))
    quoted = quoted_tcp(44000)
    bad_ihl = bytearray(quoted[:28])
    bad_ihl[0] = 0x44  # IHL 4
    bad_version = bytearray(quoted[:28])
    bad_version[0] = 0x65
    whole = icmp_error(quoted[:28])
    cases = [
        icmp_error(quoted[:22]),  # the quote ends inside the ports
        icmp_error(quoted[:10]),  # the quote ends inside the quoted IP header
        icmp_error(bytes(bad_ihl)),
        icmp_error(bytes(bad_version)),
        whole[:14 + 20 + 4],  # the ICMP header itself is cut (IP length larger than the frame)
        bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / IP(src=GATEWAY, dst=str(VIP), proto=1, len=24)
              / Raw(whole[34:])),  # IP length shorter than the ICMP header: the quote is not the packet's
    ]
    for packet in cases:
        assert two_reals.test_run(packet).verdict_name == "XDP_DROP"
    assert two_reals.counters()["drop_icmp_malformed"] == len(cases)
    assert two_reals.counters()["icmp_to_real"] == 0


def test_an_ip_options_quote_and_outer_options_are_followed(two_reals: Dataplane) -> None:
    real = real_of(two_reals.test_run(syn(sport=45000)).data)
    quoted = bytes(IP(src=str(VIP), dst=CLIENT, options=[b"\x01\x01\x01\x00"]) / TCP(sport=80, dport=45000))[:32]
    packet = frame(ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted), src=GATEWAY, proto=1,
                   options=[b"\x01\x01\x01\x00"])
    result = two_reals.test_run(packet)
    assert result.verdict_name == "XDP_TX"
    assert_forwarded(packet, result.data, real)
