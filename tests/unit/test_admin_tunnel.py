"""pyvsadm's tunnel options (-i, --tun-type, --tun-port, --tun-nocsum|--tun-csum|--tun-remcsum, --tun-info):
parsed, refused and printed as ipvsadm 1.31 does (its tunnel_types_v_options table, print_tunnel_rule,
fwd_tun_info)."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyvs.admin.commands import CommandError, apply_command, restore
from pyvs.admin.options import UsageError, parse_args
from pyvs.admin.printers import Listing, format_list, format_save
from pyvs.model import Forwarding, Protocol, Rules, Service, ServiceKey, Tunnel

SVC = ["-t", "198.18.0.100:80"]
KEY = ServiceKey(Protocol.TCP, IPv4Address("198.18.0.100"), 80)


@pytest.mark.parametrize(("extra", "tunnel"), [
    ([], Tunnel("ipip")),
    (["--tun-type", "ipip"], Tunnel("ipip")),
    (["--tun-type", "gue", "--tun-port", "6080"], Tunnel("gue", 6080)),
    (["--tun-type", "gue", "--tun-port", "6080", "--tun-csum"], Tunnel("gue", 6080, "csum")),
    (["--tun-type", "gue", "--tun-port", "6080", "--tun-remcsum"], Tunnel("gue", 6080, "remcsum")),
    (["--tun-type", "gre", "--tun-nocsum"], Tunnel("gre")),
    (["--tun-type", "gre", "--tun-csum"], Tunnel("gre", 0, "csum")),
])
def test_tunnel_options_make_a_tunnel_real(extra: list[str], tunnel: Tunnel) -> None:
    command = parse_args(["-a", *SVC, "-r", "198.18.9.21", "-i", "-w", "3", *extra])
    assert (command.forwarding, command.tunnel, command.real) == (Forwarding.TUNNEL, tunnel,
                                                                  (IPv4Address("198.18.9.21"), 80))


@pytest.mark.parametrize(("argv", "message"), [
    (["-a", *SVC, "-r", "198.18.9.21", "--tun-type", "gre"], "Tunnel options conflict with forward method"),
    (["-a", *SVC, "-r", "198.18.9.21", "-g", "--tun-csum"], "Tunnel options conflict with forward method"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "vxlan"], "illegal tunnel type specified"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "gue"],
     "You need to supply the 'tun-port' option for the 'gue' tunnel type"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "gue", "--tun-port", "0"], "illegal tunnel port specified"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "gue", "--tun-port", "6080", "--tun-csum",
      "--tun-nocsum"], "The option 'tun-csum' conflicts with the 'tun-nocsum' option in the 'gue' tunnel type"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-port", "6080"], "Illegal 'tun-port' option with the 'ipip' "
     "tunnel type"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-csum"], "Illegal 'tun-csum' option with the 'ipip' tunnel type"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "gre", "--tun-remcsum"],
     "Illegal 'tun-remcsum' option with the 'gre' tunnel type"),
    (["-a", *SVC, "-r", "198.18.9.21", "-i", "-g"], "multiple 'forwarding-method' options specified"),
    (["-A", *SVC, "--tun-type", "gre"], "Illegal 'tun-type' option with the 'add-service' command"),
    (["-d", *SVC, "-r", "198.18.9.21", "-i"], "Illegal 'forwarding-method' option with the 'delete-server' command"),
    (["-S", "--tun-info"], "Illegal 'tun-info' option with the 'save' command"),
])
def test_bad_tunnel_combinations_are_refused_as_ipvsadm_refuses_them(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_args(argv)


def tunnel_rules() -> Rules:
    rules = Rules({KEY: Service(KEY, "rr")})
    for line in (["-a", *SVC, "-r", "198.18.2.11", "-g", "-w", "2"],
                 ["-a", *SVC, "-r", "198.18.2.21", "-i"],
                 ["-a", *SVC, "-r", "198.18.9.21", "-i", "--tun-type", "gue", "--tun-port", "6080", "--tun-csum"],
                 ["-a", *SVC, "-r", "198.18.9.22", "-i", "--tun-type", "gre", "--tun-nocsum", "-w", "0"]):
        rules = apply_command(rules, parse_args(line))
    return rules


def test_list_shows_tunnel_in_the_forward_column_and_tun_info_the_tunnel() -> None:
    listing = Listing(tunnel_rules())
    assert format_list(listing, service=KEY) == (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 rr\n"
        "  -> 198.18.2.11:80               Route   2      0          0         \n"
        "  -> 198.18.2.21:80               Tunnel  1      0          0         \n"
        "  -> 198.18.9.21:80               Tunnel  1      0          0         \n"
        "  -> 198.18.9.22:80               Tunnel  0      0          0         \n")
    assert format_list(listing, service=KEY, tun_info=True) == (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 rr\n"
        "  -> 198.18.2.11:80               Route   n/a           2      0          0         \n"
        "  -> 198.18.2.21:80               Tunnel  ipip          1      0          0         \n"
        "  -> 198.18.9.21:80               Tunnel  gue:6080:+c   1      0          0         \n"
        "  -> 198.18.9.22:80               Tunnel  gre:-c        0      0          0         \n")


def test_save_writes_the_tunnel_options_and_restore_reads_them_back() -> None:
    saved = format_save(tunnel_rules())
    assert saved == (
        "-A -t 198.18.0.100:80 -s rr\n"
        "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 2\n"
        "-a -t 198.18.0.100:80 -r 198.18.2.21:80 -i -w 1 --tun-type ipip\n"
        "-a -t 198.18.0.100:80 -r 198.18.9.21:80 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum\n"
        "-a -t 198.18.0.100:80 -r 198.18.9.22:80 -i -w 0 --tun-type gre --tun-nocsum\n")
    back = restore(Rules(), saved)
    assert format_save(back) == saved
    assert back.services[KEY].reals[(IPv4Address("198.18.9.21"), 80)].tunnel == Tunnel("gue", 6080, "csum")


def test_edit_without_i_makes_a_tunnel_real_a_direct_one_again_as_ipvsadm() -> None:
    rules = apply_command(tunnel_rules(), parse_args(["-e", *SVC, "-r", "198.18.2.21", "-w", "4"]))
    real = rules.services[KEY].reals[(IPv4Address("198.18.2.21"), 80)]
    assert (real.forwarding, real.tunnel, real.weight) == (Forwarding.ROUTE, None, 4)


def test_an_ipv6_tunnel_real_is_refused() -> None:
    key6 = ["-t", "[2001:db8::100]:80"]
    rules = apply_command(Rules(), parse_args(["-A", *key6]))
    with pytest.raises(CommandError, match="tunnels to IPv4 real servers only"):
        apply_command(rules, parse_args(["-a", *key6, "-r", "[2001:db8::21]:80", "-i"]))
