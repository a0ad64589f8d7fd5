"""Tunnel forwarding (ipvsadm -i) through BPF_PROG_TEST_RUN: the frame for a tunnel real leaves encapsulated as
ip_vs_tunnel_xmit builds it (IPIP, GUE, GRE, with and without checksums), to the real's next hop (its gateway's MAC
when routed); a DF packet that no longer fits gets ICMP fragmentation needed back. Every header and checksum is
checked with scapy."""

from __future__ import annotations

import ctypes
import struct
from collections.abc import Iterator
from ipaddress import IPv4Address

import pytest
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.l2 import Dot1Q, Ether
from scapy.packet import Raw
from scapy.utils import checksum

from pyvs.dataplane import Dataplane, DataplaneError, libbpf, scratch_dataplane
from pyvs.dataplane.build import object_path
from pyvs.dataplane.neighbours import NextHop
from pyvs.decap import COUNTER_NAMES, DecapConfig
from pyvs.model import Forwarding, IPAddress, Real, Rules, Service, Tunnel

from .conftest import CLIENT_MAC, DIRECTOR_MAC
from .test_xdp import CLIENT, TCP80, UDP80, VIP, frame, syn

DIRECTOR = "198.18.2.10"  # the director's address toward the reals: the outer source
ON_LINK = IPv4Address("198.18.2.21")
ROUTED = IPv4Address("198.18.9.21")  # behind the router 198.18.2.1
REAL_MAC, ROUTER_MAC = "02:00:00:00:00:21", "02:00:00:00:00:fe"
MTU = 1500
GUE_PORT = 6080


def neighbours(rip: IPAddress) -> NextHop:
    if rip == ROUTED:
        return NextHop(0, DIRECTOR_MAC, ROUTER_MAC, DIRECTOR, MTU, "198.18.2.1")
    return NextHop(0, DIRECTOR_MAC, REAL_MAC, DIRECTOR, MTU)


@pytest.fixture
def dataplane() -> Iterator[Dataplane]:
    with scratch_dataplane("pyvst-tun", neighbours) as dp:
        yield dp


def tunnel_rules(tunnel: Tunnel | None, rip: IPv4Address = ON_LINK, *keys: object) -> Rules:
    services = {}
    for key in keys or (TCP80, UDP80):
        svc = Service(key)  # type: ignore[arg-type]
        svc.reals[(rip, 80)] = Real(rip, 80, 1, Forwarding.TUNNEL, tunnel=tunnel)
        services[svc.key] = svc
    return Rules(services)


def valid_ip_checksum(header: bytes) -> bool:
    return checksum(header) == 0


def outer(data: bytes, next_hop: str = REAL_MAC, rip: IPv4Address = ON_LINK) -> IP:
    """The outer IPv4 header of an encapsulated frame, checked: Ethernet to the next hop, director -> real."""
    eth = Ether(data)
    assert (eth.dst, eth.src, eth.type) == (next_hop, DIRECTOR_MAC, 0x0800)
    ip = eth[IP]
    assert (ip.src, ip.dst, ip.version, ip.ihl) == (DIRECTOR, str(rip), 4, 5)
    assert valid_ip_checksum(data[14:34])
    assert ip.len == len(data) - 14
    return ip


CASES = [  # (tunnel, outer protocol, encapsulation bytes after the outer IP header)
    (None, 4, 0),
    (Tunnel("ipip"), 4, 0),
    (Tunnel("gue", GUE_PORT), 17, 12),
    (Tunnel("gue", GUE_PORT, "csum"), 17, 12),
    (Tunnel("gue", GUE_PORT, "remcsum"), 17, 12),
    (Tunnel("gre"), 47, 4),
    (Tunnel("gre", csum="csum"), 47, 8),
]


@pytest.mark.parametrize(("tunnel", "proto", "extra"), CASES,
                         ids=["default", "ipip", "gue", "gue-csum", "gue-remcsum", "gre", "gre-csum"])
@pytest.mark.parametrize("packet", ["syn", "udp"])
def test_each_tunnel_type_encapsulates_as_ipvs_builds_it(dataplane: Dataplane, tunnel: Tunnel | None, proto: int,
                                                         extra: int, packet: str) -> None:
    dataplane.apply(tunnel_rules(tunnel))
    sent = (syn(sport=40000) if packet == "syn"
            else frame(UDP(sport=5353, dport=80) / Raw(b"query" * 41), tos=0x28, ttl=57, flags="DF"))
    result = dataplane.test_run(sent)
    assert result.verdict_name == "XDP_TX"
    inner_sent = sent[14:]
    ip = outer(result.data)
    assert ip.proto == proto
    assert (ip.tos, ip.ttl, ip.flags.DF) == (inner_sent[1], inner_sent[8], bool(inner_sent[6] & 0x40))
    headers = result.data[34:34 + extra]
    assert result.data[34 + extra:] == inner_sent  # the client's packet, untouched
    csum = tunnel is not None and tunnel.csum != "nocsum"
    if proto == 17:
        sport, dport, length, udp_check = struct.unpack("!HHHH", headers[:8])
        assert dport == GUE_PORT and 32768 <= sport < 61000 and length == 8 + 4 + len(inner_sent)
        assert headers[8:12] == bytes([0, 4, 0, 0])  # GUE version 0, no options, IPIP inside
        if csum:
            pseudo = IPv4Address(DIRECTOR).packed + ON_LINK.packed + struct.pack("!BBH", 0, 17, length)
            assert udp_check != 0 and checksum(pseudo + result.data[34:]) == 0
        else:
            assert udp_check == 0
    elif proto == 47:
        assert headers[:4] == (b"\x80\x00\x08\x00" if csum else b"\x00\x00\x08\x00")
        if csum:
            assert checksum(result.data[34:]) == 0 and headers[6:8] == b"\x00\x00"
    counters = dataplane.counters()
    assert (counters["tun_encap"], counters["tx"]) == (1, 1)
    assert dataplane.service_stats()[TCP80 if packet == "syn" else UDP80].inpkts == 1


def test_the_gue_source_port_follows_the_flow(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("gue", GUE_PORT)))
    ports = []
    for sport in (40000, 40000, 40001, 40002, 40003):
        data = dataplane.test_run(syn(sport=sport)).data
        ports.append(struct.unpack("!H", data[34:36])[0])
    assert ports[0] == ports[1]  # one flow, one outer source port (the real's NIC spreads flows by it)
    assert len(set(ports[1:])) > 1


def test_a_routed_real_gets_its_frames_through_its_gateway(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("ipip"), ROUTED, TCP80))
    result = dataplane.test_run(syn())
    assert result.verdict_name == "XDP_TX"
    outer(result.data, next_hop=ROUTER_MAC, rip=ROUTED)


def test_a_vlan_tagged_frame_keeps_its_tag(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("gre")))
    sent = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / Dot1Q(vlan=7) / IP(src=CLIENT, dst=str(VIP))
                 / TCP(sport=40000, dport=80, flags="S"))
    result = dataplane.test_run(sent)
    assert result.verdict_name == "XDP_TX"
    eth = Ether(result.data)
    assert eth[Dot1Q].vlan == 7 and eth.dst == REAL_MAC
    assert eth[Dot1Q][IP].proto == 47 and result.data[18 + 20 + 4:] == sent[18:]
    assert valid_ip_checksum(result.data[18:38])


@pytest.mark.parametrize(("tunnel", "overhead"), [(Tunnel("ipip"), 20), (Tunnel("gue", GUE_PORT), 32),
                                                  (Tunnel("gre", csum="csum"), 28)])
def test_a_df_packet_too_big_for_the_tunnel_gets_frag_needed_with_the_mtu_left(dataplane: Dataplane, tunnel: Tunnel,
                                                                              overhead: int) -> None:
    dataplane.apply(tunnel_rules(tunnel))
    dataplane.test_run(syn())
    fits = frame(TCP(sport=40000, dport=80, flags="A") / Raw(bytes(MTU - overhead - 40)), flags="DF")
    assert dataplane.test_run(fits).verdict_name == "XDP_TX"
    big = frame(TCP(sport=40000, dport=80, flags="PA", seq=9) / Raw(bytes(MTU - overhead - 39)), flags="DF", tos=0x10)
    result = dataplane.test_run(big)
    assert result.verdict_name == "XDP_TX"
    eth = Ether(result.data)
    assert (eth.dst, eth.src) == (CLIENT_MAC, DIRECTOR_MAC)  # back where it came from
    ip, icmp = eth[IP], eth[ICMP]
    assert (ip.src, ip.dst, ip.proto, ip.ttl, ip.tos) == (str(VIP), CLIENT, 1, 64, 0xd0)
    assert valid_ip_checksum(result.data[14:34]) and ip.len == len(result.data) - 14 == 20 + 8 + 28
    assert (icmp.type, icmp.code, icmp.nexthopmtu) == (3, 4, MTU - overhead)
    assert checksum(result.data[34:]) == 0
    assert result.data[42:] == big[14:14 + 28]  # the client's IP header and the first 8 bytes of TCP
    counters = dataplane.counters()
    assert counters["drop_frag_needed"] == 1 and counters["tun_encap"] == 2


def test_a_packet_without_df_too_big_for_the_tunnel_is_dropped_and_counted(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("ipip")))
    big = frame(UDP(sport=5353, dport=80) / Raw(bytes(MTU - 28 - 19)))
    assert dataplane.test_run(big).verdict_name == "XDP_DROP"
    assert dataplane.counters()["drop_too_big"] == 1


def test_an_icmp_error_for_a_tunnel_real_goes_through_its_tunnel(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("ipip")))
    dataplane.test_run(syn(sport=41000))
    quoted = bytes(IP(src=str(VIP), dst=CLIENT) / TCP(sport=80, dport=41000, flags="SA"))[:28]
    error = frame(ICMP(type=3, code=4, nexthopmtu=1280) / Raw(quoted), src="198.18.1.1", proto=1)
    result = dataplane.test_run(error)
    assert result.verdict_name == "XDP_TX"
    assert outer(result.data).proto == 4 and result.data[34:] == error[14:]
    assert dataplane.counters()["icmp_to_real"] == 1


def test_rules_read_back_with_their_tunnels_and_an_edit_changes_the_encapsulation(dataplane: Dataplane) -> None:
    dataplane.apply(tunnel_rules(Tunnel("gue", GUE_PORT, "csum"), ON_LINK, TCP80))
    real = dataplane.read_rules().services[TCP80].reals[(ON_LINK, 80)]
    assert (real.forwarding, real.tunnel) == (Forwarding.TUNNEL, Tunnel("gue", GUE_PORT, "csum"))
    dataplane.test_run(syn())
    dataplane.apply(tunnel_rules(Tunnel("gre"), ON_LINK, TCP80))
    assert dataplane.read_service(TCP80).reals[(ON_LINK, 80)].tunnel == Tunnel("gre")  # type: ignore[union-attr]
    result = dataplane.test_run(frame(TCP(sport=40000, dport=80, flags="A")))
    assert outer(result.data).proto == 47  # the connection kept its real, now reached by GRE
    back = Rules({TCP80: Service(TCP80, reals={(ON_LINK, 80): Real(ON_LINK, 80)})})
    dataplane.apply(back)
    assert dataplane.read_rules().services[TCP80].reals[(ON_LINK, 80)].forwarding is Forwarding.ROUTE
    assert Ether(dataplane.test_run(frame(TCP(sport=40000, dport=80, flags="A"))).data)[IP].dst == str(VIP)


@pytest.mark.parametrize(("tunnel", "message"), [
    (Tunnel("gue"), "tun-port"),
    (Tunnel("ipip", csum="csum"), "Illegal 'tun-csum' option with the 'ipip' tunnel type"),
    (Tunnel("gre", csum="remcsum"), "Illegal 'tun-remcsum' option with the 'gre' tunnel type"),
    (Tunnel("gre", 6080), "Illegal 'tun-port' option"),
    (Tunnel("vxlan"), "illegal tunnel type"),
])
def test_bad_tunnel_settings_are_refused_and_nothing_changes(dataplane: Dataplane, tunnel: Tunnel,
                                                             message: str) -> None:
    with pytest.raises(DataplaneError, match=message):
        dataplane.apply(tunnel_rules(tunnel))
    assert dataplane.read_rules().services == {}


# ---- the real server's side: pyvs_decap ----

@pytest.fixture
def decap() -> Iterator[tuple[int, int, int]]:
    """pyvs_decap loaded (not attached) for ON_LINK, every tunnel type, GUE on GUE_PORT: (program, config, counters)
    fds."""

    with libbpf.BpfObject(str(object_path("decap"))) as obj:
        config = DecapConfig(addr=int.from_bytes(ON_LINK.packed, "little"),
                             gue_port=int.from_bytes(GUE_PORT.to_bytes(2, "big"), "little"), types=7)
        libbpf.map_update(obj.map_fd("decap_config"), ctypes.c_uint32(0), config)
        yield obj.prog_fd("pyvs_decap"), obj.map_fd("decap_config"), obj.map_fd("decap_counters")


def decap_counters(fd: int) -> dict[str, int]:

    result = {}
    for index, name in enumerate(COUNTER_NAMES):
        values = (ctypes.c_uint64 * libbpf.num_possible_cpus())()
        libbpf.map_lookup(fd, ctypes.c_uint32(index), values)
        result[name] = sum(values)
    return result


@pytest.mark.parametrize("tunnel", [t for t, _, _ in CASES if t is not None],
                         ids=["ipip", "gue", "gue-csum", "gue-remcsum", "gre", "gre-csum"])
def test_pyvs_decap_gives_the_kernel_the_clients_packet(dataplane: Dataplane, decap: tuple[int, int, int],
                                                        tunnel: Tunnel) -> None:

    prog, _, counters = decap
    dataplane.apply(tunnel_rules(tunnel, ON_LINK, TCP80))
    sent = syn(sport=40000)
    tagged = bytes(Ether(src=CLIENT_MAC, dst=DIRECTOR_MAC) / Dot1Q(vlan=7) / IP(src=CLIENT, dst=str(VIP))
                   / TCP(sport=40001, dport=80, flags="S"))
    for frame_in, l2 in ((sent, 14), (tagged, 18)):
        encapsulated = dataplane.test_run(frame_in).data
        result = libbpf.prog_test_run(prog, encapsulated)
        assert result.verdict == 2  # XDP_PASS
        assert result.data[:l2] == encapsulated[:l2]  # the real's own Ethernet header (and tag)
        assert result.data[l2:] == frame_in[l2:]  # the client's packet, as the client sent it
    assert decap_counters(counters)[tunnel.type] == 2


@pytest.mark.parametrize(("packet", "why"), [
    (IP(src=DIRECTOR, dst="198.18.2.99", proto=4) / IP(src=CLIENT, dst=str(VIP)) / TCP(), "another address"),
    (IP(src=DIRECTOR, dst=str(ON_LINK)) / UDP(sport=40000, dport=6081) / Raw(bytes([0, 4, 0, 0])), "another port"),
    (IP(src=DIRECTOR, dst=str(ON_LINK)) / UDP(sport=40000, dport=GUE_PORT) / Raw(bytes([0x80, 4, 0, 0])),
     "a GUE control message"),
    (IP(src=DIRECTOR, dst=str(ON_LINK), proto=47) / Raw(b"\x20\x00\x08\x00" + bytes(4)), "GRE with a key"),
    (IP(src=DIRECTOR, dst=str(ON_LINK)) / TCP(dport=80), "plain TCP"),
])
def test_pyvs_decap_passes_what_is_not_its_tunnel_untouched(decap: tuple[int, int, int], packet: IP,
                                                            why: str) -> None:

    frame_in = bytes(Ether(src=DIRECTOR_MAC, dst=REAL_MAC) / packet)
    result = libbpf.prog_test_run(decap[0], frame_in)
    assert (result.verdict, result.data) == (2, frame_in), why


def test_pyvs_decap_drops_a_tunnel_packet_cut_short_and_passes_a_fragment(decap: tuple[int, int, int]) -> None:

    cut = bytes(Ether(src=DIRECTOR_MAC, dst=REAL_MAC) / IP(src=DIRECTOR, dst=str(ON_LINK), proto=4) / Raw(bytes(8)))
    assert libbpf.prog_test_run(decap[0], cut).verdict == 1  # XDP_DROP
    fragment = bytes(Ether(src=DIRECTOR_MAC, dst=REAL_MAC) / IP(src=DIRECTOR, dst=str(ON_LINK), proto=4, flags="MF")
                     / IP(src=CLIENT, dst=str(VIP)) / TCP())
    assert libbpf.prog_test_run(decap[0], fragment).verdict == 2
    counters = decap_counters(decap[2])
    assert (counters["drop_malformed"], counters["pass_fragment"]) == (1, 1)


def test_a_tunnel_real_s_connection_syncs_as_a_tunnel_one_and_the_backup_encapsulates_it() -> None:
    from pyvs.dataplane.synctable import SyncTable, set_sync
    from pyvs.sync.codec import CONN_F_FWD_MASK, CONN_F_TUNNEL, decode_message, encode_message
    from pyvs.sync.engine import SyncStats, apply_conn, conn_of_event

    from .test_sync import events

    with scratch_dataplane("pyvst-tunm", neighbours) as master, scratch_dataplane("pyvst-tunb", neighbours) as backup:
        for dp in (master, backup):
            dp.apply(tunnel_rules(Tunnel("gre"), ON_LINK, TCP80))
        set_sync(master, True)
        master.test_run(syn(sport=42000))
        master.test_run(frame(TCP(sport=42000, dport=80, flags="A")))
        conns = [c for c in (conn_of_event(ev, SyncTable(master)) for ev in events(master)) if c is not None]
        assert conns and all(c.flags & CONN_F_FWD_MASK == CONN_F_TUNNEL for c in conns)
        stats = SyncStats()
        for conn in decode_message(encode_message(conns, 7), 7).conns:
            apply_conn(conn, SyncTable(backup), stats)
        assert stats.unknown_service == 0
        result = backup.test_run(frame(TCP(sport=42000, dport=80, flags="A")))
        assert result.verdict_name == "XDP_TX" and outer(result.data).proto == 47
