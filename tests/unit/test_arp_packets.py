"""ARP and probe frames built and parsed by pyvs.arp.packets, held to scapy's reading of them."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP, IPerror, TCPerror
from scapy.layers.l2 import ARP, Ether

from pyvs.arp.packets import (
    ARP_REPLY,
    ARP_REQUEST,
    BROADCAST,
    TCP_ACK,
    TCP_SYN,
    arp_probe,
    ethernet,
    gratuitous_arp,
    icmp_echo,
    parse_arp,
    parse_ip,
    tcp_segment,
    udp_datagram,
)
from pyvs.mac import normalize_mac

DIRECTOR_MAC, REAL_MAC = "02:c6:12:00:03:01", "02:c6:12:00:04:01"
VIP, DIP, RIP = IPv4Address("198.18.0.100"), IPv4Address("198.18.2.10"), IPv4Address("198.18.2.11")


def test_gratuitous_request_is_what_scapy_reads_as_an_announcement() -> None:
    frame = gratuitous_arp(VIP, DIRECTOR_MAC).frame()
    parsed = Ether(frame)
    assert len(frame) == 60
    assert parsed.dst == BROADCAST and parsed.src == DIRECTOR_MAC
    assert (parsed[ARP].op, parsed[ARP].psrc, parsed[ARP].pdst) == (ARP_REQUEST, str(VIP), str(VIP))
    assert parsed[ARP].hwsrc == DIRECTOR_MAC and parsed[ARP].hwdst == "00:00:00:00:00:00"


def test_gratuitous_reply_carries_target_mac_equal_to_sender_mac() -> None:
    arp = parse_arp(gratuitous_arp(VIP, DIRECTOR_MAC, ARP_REPLY).frame())
    assert arp is not None and arp.op == ARP_REPLY and arp.gratuitous
    assert arp.target_mac == arp.sender_mac == DIRECTOR_MAC


def test_probe_asks_from_0_0_0_0_and_is_no_announcement() -> None:
    arp = parse_arp(arp_probe(VIP, DIRECTOR_MAC).frame())
    assert arp is not None and arp.probe and not arp.gratuitous
    assert (str(arp.sender_ip), arp.target_ip, arp.eth_dst) == ("0.0.0.0", VIP, BROADCAST)


def test_parse_arp_reads_a_scapy_reply_and_refuses_other_frames() -> None:
    reply = bytes(Ether(src=REAL_MAC, dst=DIRECTOR_MAC) / ARP(op=2, hwsrc=REAL_MAC, psrc=str(RIP),
                                                             hwdst=DIRECTOR_MAC, pdst="0.0.0.0"))
    arp = parse_arp(reply)
    assert arp is not None
    assert (arp.op, arp.sender_mac, arp.sender_ip, arp.eth_src) == (ARP_REPLY, REAL_MAC, RIP, REAL_MAC)
    assert parse_arp(bytes(Ether() / IP() / TCP())) is None
    assert parse_arp(reply[:30]) is None  # truncated


def test_tcp_syn_has_checksums_scapy_agrees_with() -> None:
    frame = ethernet(REAL_MAC, DIRECTOR_MAC, 0x0800, tcp_segment(DIP, VIP, 40000, 80, 12345, 0, TCP_SYN))
    parsed = Ether(frame)
    ip_sum, tcp_sum = parsed[IP].chksum, parsed[TCP].chksum
    del parsed[IP].chksum, parsed[TCP].chksum
    rebuilt = Ether(bytes(parsed))
    assert (ip_sum, tcp_sum) == (rebuilt[IP].chksum, rebuilt[TCP].chksum)
    assert (parsed[TCP].sport, parsed[TCP].dport, parsed[TCP].seq, parsed[TCP].flags) == (40000, 80, 12345, "S")
    assert parsed.dst == REAL_MAC


def test_udp_and_icmp_checksums_scapy_agrees_with() -> None:
    for packet, layer in ((udp_datagram(DIP, VIP, 40001, 80, b"probe"), UDP), (icmp_echo(DIP, VIP, 7, 9), ICMP)):
        parsed = Ether(ethernet(REAL_MAC, DIRECTOR_MAC, 0x0800, packet))
        checksum = parsed[layer].chksum
        del parsed[layer].chksum
        assert Ether(bytes(parsed))[layer].chksum == checksum


def test_parse_ipv4_reads_syn_ack_udp_and_icmp_errors() -> None:
    synack = parse_ip(bytes(Ether(src=REAL_MAC, dst=DIRECTOR_MAC) / IP(src=str(VIP), dst=str(DIP))
                              / TCP(sport=80, dport=40000, flags="SA", seq=7, ack=12346)))
    assert synack is not None and synack.flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK
    assert (synack.src, synack.sport, synack.dport, synack.ack, synack.eth_src) == (VIP, 80, 40000, 12346, REAL_MAC)
    echo = parse_ip(bytes(Ether() / IP(src=str(VIP), dst=str(DIP)) / UDP(sport=80, dport=40001) / b"rs1 hi"))
    assert echo is not None and echo.payload == b"rs1 hi"
    error = parse_ip(bytes(Ether() / IP(src=str(VIP), dst=str(DIP)) / ICMP(type=3, code=3)
                             / IPerror(src=str(DIP), dst=str(VIP)) / TCPerror(sport=40000, dport=80)))
    assert error is not None and (error.sport, error.dport) == (3, 3)
    assert error.payload[12:16] == DIP.packed and int.from_bytes(error.payload[20:22], "big") == 40000


@pytest.mark.parametrize("bad", ["02:c6:12:00:03", "zz:c6:12:00:03:01", "", "02-c6-12-00-03-01"])
def test_a_bad_mac_is_refused_with_a_clear_message(bad: str) -> None:
    with pytest.raises(ValueError, match="is not a MAC address"):
        normalize_mac(bad)


def test_macs_are_normalized_to_lower_case_two_digits() -> None:
    assert normalize_mac("2:C6:12:0:3:1") == "02:c6:12:00:03:01"
