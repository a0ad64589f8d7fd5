"""pyvsadm with IPv6: ipvsadm's syntax (`[2001:db8::100]:80`, a bare address without port, `-M` as a prefix
length) and its output (ipvsadm.c: brackets from addrport_to_anyname; an IPv6 name is not cut at the IPv4 column
widths; IPv4 services are listed before IPv6 ones, ipvs_cmp_services compares the family first)."""

from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.admin.commands import CommandError, apply_command, restore
from pyvs.admin.options import Action, UsageError, parse_args
from pyvs.admin.printers import Listing, Names, format_connections, format_list, format_save
from pyvs.model import Connection, Counters, Protocol, Real, Rules, Service, ServiceKey

from .test_admin_cli import MemoryDataplane, run

VIP6 = IPv6Address("2001:db8::100")
TCP6 = ServiceKey(Protocol.TCP, VIP6, 80)
UDP6 = ServiceKey(Protocol.UDP, VIP6, 53)
TCP4 = ServiceKey(Protocol.TCP, IPv4Address("198.18.0.100"), 80)
UDP4 = ServiceKey(Protocol.UDP, IPv4Address("198.18.0.100"), 53)
RS6 = IPv6Address("2001:db8:2::11")
RS6B = IPv6Address("2001:db8:2::12")
RS4 = IPv4Address("198.18.1.11")
LONG6 = IPv6Address("2001:db8:1234:5678:9abc:def0:1234:5678")


def text(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


# ---- parsing -------------------------------------------------------------------------------------------------


def test_ipv6_endpoints_in_brackets_and_bare() -> None:
    assert parse_args(["-A", "-t", "[2001:db8::100]:80", "-s", "rr"]).service == TCP6
    assert parse_args(["-A", "-u", "[2001:db8::100]:domain"]).service == UDP6
    bare = parse_args(["-A", "-t", "2001:db8::100", "-p"])  # no brackets: an address without port (port 0)
    assert bare.service == ServiceKey(Protocol.TCP, VIP6, 0) and bare.persistent == 300
    real = parse_args(["-a", "-t", "[2001:db8::100]:80", "-r", "[2001:db8:2::11]:80", "-g", "-w", "2"])
    assert (real.action, real.real, real.weight) == (Action.ADD_SERVER, (RS6, 80), 2)
    assert parse_args(["-a", "-t", "[2001:db8::100]:80", "-r", "2001:db8:2::11"]).real == (RS6, 80)


def test_netmask_of_an_ipv6_service_is_a_prefix_length() -> None:
    assert parse_args(["-A", "-t", "[2001:db8::100]:80", "-p", "60", "-M", "64"]).netmask == 64
    assert parse_args(["-M", "48", "-E", "-t", "[2001:db8::100]:80", "-p"]).netmask == 48  # in any order
    assert parse_args(["-A", "-t", "198.18.0.100:80", "-p", "-M", "24"]).netmask == IPv4Address("255.255.255.0")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-A", "-t", "[2001:db8::100]"], "illegal virtual server address[:port] specified: '[2001:db8::100]': "
                                          "write an IPv6 address with a port as [ADDRESS]:PORT"),
        (["-A", "-t", "[2001:db8::100]80"], "write an IPv6 address with a port"),
        (["-A", "-t", "[198.18.0.100]:80"], "brackets are for IPv6 addresses only"),
        (["-A", "-t", "[2001:db8::zz]:80"], "illegal virtual server address[:port] specified: invalid IP address"),
        (["-A", "-t", "[2001:db8::100]:99999"], "port 99999 is out of range"),
        (["-a", "-t", "[2001:db8::100]:80", "-r", "[2001:db8:2::11]"], "illegal real server address[:port]"),
        (["-A", "-t", "[2001:db8::100]:80", "-p", "-M", "255.255.255.0"],
         "illegal ipv6 netmask specified: invalid IPv6 netmask '255.255.255.0': give a prefix length (1-128)"),
        (["-A", "-t", "[2001:db8::100]:80", "-p", "-M", "129"], "illegal ipv6 netmask specified"),
        (["-A", "-t", "[::ffff:198.18.0.100]:80"], "an IPv4-mapped IPv6 address"),
        (["-L", "-6"], "-6 used before -f"),
        (["-A", "-6", "-f", "1"], "-6 used before -f"),
    ],
)
def test_refused_ipv6_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert message in str(err.value)


# ---- commands ------------------------------------------------------------------------------------------------


def ipv6_rules() -> Rules:
    rules = Rules()
    for line in ("-A -t [2001:db8::100]:80 -s rr", "-a -t [2001:db8::100]:80 -r [2001:db8:2::11]:80 -g -w 1",
                 "-a -t [2001:db8::100]:80 -r [2001:db8:2::12]:80 -g -w 3"):
        rules = apply_command(rules, parse_args(line.split()))
    return rules


def test_a_real_of_the_other_family_is_refused_and_nothing_changes() -> None:
    rules = ipv6_rules()
    with pytest.raises(CommandError) as err:
        apply_command(rules, parse_args("-a -t [2001:db8::100]:80 -r 198.18.1.11".split()))
    assert "real server 198.18.1.11:80 is IPv4 and the service [2001:db8::100]:80 IPv6" in str(err.value)
    assert rules == ipv6_rules()
    four = apply_command(Rules(), parse_args("-A -t 198.18.0.100:80 -s rr".split()))
    with pytest.raises(CommandError, match="is IPv6 and the service 198.18.0.100:80 IPv4"):
        apply_command(four, parse_args("-a -t 198.18.0.100:80 -r [2001:db8:2::11]:80".split()))


def test_edit_delete_and_a_mask_of_an_ipv6_service() -> None:
    rules = apply_command(ipv6_rules(), parse_args("-E -t [2001:db8::100]:80 -s wrr -p 60 -M 64".split()))
    svc = rules.services[TCP6]
    assert (svc.scheduler, svc.persistent, svc.netmask, len(svc.reals)) == ("wrr", 60, 64, 2)
    rules = apply_command(rules, parse_args("-E -t [2001:db8::100]:80 -s wrr".split()))
    assert rules.services[TCP6].netmask == 128  # -E sends every setting: back to the default
    rules = apply_command(rules, parse_args("-e -t [2001:db8::100]:80 -r 2001:db8:2::12 -w 0".split()))
    assert rules.services[TCP6].reals[(RS6B, 80)].weight == 0
    rules = apply_command(rules, parse_args("-d -t [2001:db8::100]:80 -r [2001:db8:2::12]:80".split()))
    assert list(rules.services[TCP6].reals) == [(RS6, 80)]
    assert apply_command(rules, parse_args("-D -t [2001:db8::100]:80".split())).services == {}


# ---- output ----------------------------------------------------------------------------------------------------


def mixed_listing() -> Listing:
    six = Service(TCP6, "rr", persistent=300, netmask=64)
    six.reals = {(RS6, 80): Real(RS6, 80, 1), (LONG6, 80): Real(LONG6, 80, 2)}
    four = Service(UDP4, "wlc", reals={(RS4, 53): Real(RS4, 53, 1)})
    long = Service(ServiceKey(Protocol.UDP, LONG6, 443), "sh", sched_flags=("sh-port",))
    long.reals = {(RS6B, 443): Real(RS6B, 443, 1)}
    rules = Rules({svc.key: svc for svc in (six, long, four)})
    return Listing(rules, conn_counts={(TCP6, (RS6, 80)): (12, 40), (TCP6, (LONG6, 80)): (0, 3)},
                   service_stats={TCP6: Counters(conns=7, inpkts=123456789, inbytes=2 * 10**9)},
                   real_stats={(TCP6, (RS6, 80)): Counters(conns=7, inpkts=99)})


def test_list_numeric_with_ipv6_as_ipvsadm() -> None:
    assert format_list(mixed_listing()) == text(
        "IP Virtual Server version 1.2.1 (size=4096)",
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "UDP  198.18.0.100:53 wlc",  # IPv4 first, even UDP before IPv6's TCP
        "  -> 198.18.1.11:53               Route   1      0          0         ",
        "TCP  [2001:db8::100]:80 rr persistent 300 mask 64",
        "  -> [2001:db8:2::11]:80          Route   1      12         40        ",
        "  -> [2001:db8:1234:5678:9abc:def0:1234:5678]:80 Route   2      0          3         ",
        "UDP  [2001:db8:1234:5678:9abc:def0:1234:5678]:443 sh (sh-port)",
        "  -> [2001:db8:2::12]:443         Route   1      0          0         ",
    )


def test_stats_with_ipv6_names_longer_than_the_column() -> None:
    listing = mixed_listing()
    out = format_list(listing, stats=True).splitlines()
    assert out[5] == "TCP  [2001:db8::100]:80                  7  123456K        0    2000M        0"
    assert out[6] == "  -> [2001:db8:2::11]:80                 7       99        0        0        0"
    assert out[7] == "  -> [2001:db8:1234:5678:9abc:def0:1234:5678]:80        0        0        0        0        0"
    assert out[8] == "UDP  [2001:db8:1234:5678:9abc:def0:1234:5678]:443        0        0        0        0        0"


def test_save_and_restore_ipv6_round_trip() -> None:
    rules = mixed_listing().rules
    saved = format_save(rules)
    assert saved == text(
        "-A -u 198.18.0.100:53 -s wlc",
        "-a -u 198.18.0.100:53 -r 198.18.1.11:53 -g -w 1",
        "-A -t [2001:db8::100]:80 -s rr -p 300 -M 64",
        "-a -t [2001:db8::100]:80 -r [2001:db8:2::11]:80 -g -w 1",
        "-a -t [2001:db8::100]:80 -r [2001:db8:1234:5678:9abc:def0:1234:5678]:80 -g -w 2",
        "-A -u [2001:db8:1234:5678:9abc:def0:1234:5678]:443 -s sh -b sh-port",
        "-a -u [2001:db8:1234:5678:9abc:def0:1234:5678]:443 -r [2001:db8:2::12]:443 -g -w 1",
    )
    again = restore(Rules(), saved)
    assert again == rules and format_save(again) == saved


def test_connections_with_ipv6() -> None:
    conns = [Connection(Protocol.TCP, IPv6Address("2001:db8:1::2"), 51234, VIP6, 80, RS6, 80, "ESTABLISHED", 898.2),
             Connection(Protocol.UDP, IPv4Address("198.18.1.2"), 5353, UDP4.vip, 53, RS4, 53, "UDP", 299)]
    assert format_connections(conns) == text(
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
        "TCP 14:58  ESTABLISHED [2001:db8:1::2]:51234 [2001:db8::100]:80 [2001:db8:2::11]:80",
        "UDP 04:59  UDP         198.18.1.2:5353    198.18.0.100:53    198.18.1.11:53",
    )


def test_names_of_ipv6_endpoints_are_in_brackets() -> None:
    hosts = {VIP6: "www.example", RS6: "rs1.example"}
    names = Names(numeric=False, host_name=hosts.get, port_name=lambda port, proto: {80: "http"}.get(port))
    listing = Listing(Rules({TCP6: Service(TCP6, "rr", reals={(RS6, 80): Real(RS6, 80, 1)})}))
    out = format_list(listing, names).splitlines()
    assert out[3:] == ["TCP  [www.example]:http rr",
                       "  -> [rs1.example]:http           Route   1      0          0         "]
    assert names.endpoint(RS6B, 8080, Protocol.TCP) == "[2001:db8:2::12]:8080"  # no name: the address
    assert format_save(listing.rules, names).splitlines()[0] == "-A -t [www.example]:http -s rr"


# ---- the command line, end to end (an in-memory data plane) --------------------------------------------------


def test_pyvsadm_ipv6_commands_and_listing() -> None:
    dp = MemoryDataplane()
    for line in ("-A -t [2001:db8::100]:80 -s rr", "-a -t [2001:db8::100]:80 -r [2001:db8:2::11]:80 -g",
                 "-A -t 198.18.0.100:80 -s wlc"):
        assert run(dp, *line.split())[0] == 0
    code, out, err = run(dp, "-a", "-t", "[2001:db8::100]:80", "-r", "198.18.1.11")
    assert (code, out) == (1, "") and "is IPv4 and the service [2001:db8::100]:80 IPv6" in err
    assert run(dp, "-L", "-n", "-t", "[2001:db8::100]:80")[1] == text(
        "Prot LocalAddress:Port Scheduler Flags",
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
        "TCP  [2001:db8::100]:80 rr",
        "  -> [2001:db8:2::11]:80          Route   1      0          0         ",
    )
    saved = run(dp, "-S", "-n")[1]
    assert "-a -t [2001:db8::100]:80 -r [2001:db8:2::11]:80 -g -w 1\n" in saved
    assert run(dp, "-Z", "-t", "[2001:db8::100]:80")[0] == 0 and dp.zeroed == [TCP6]
    assert run(dp, "-C")[0] == 0 and run(dp, "-R", stdin=saved)[0] == 0
    assert run(dp, "-S", "-n")[1] == saved
    assert run(dp, "-D", "-t", "[2001:db8::100]:80")[0] == 0
    assert set(dp.rules.services) == {TCP4}
