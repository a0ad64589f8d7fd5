"""ipvsadm's thresholds (-x -y, --thresholds), one-packet scheduling (-o), rates (--rate) and --exact: options,
output formats (ipvsadm.c's print_title and print_service_entry) and the -S/-R round trip, without a data plane."""

from __future__ import annotations

from ipaddress import IPv4Address as IP
from ipaddress import IPv6Address

import pytest

from pyvs.admin.commands import CommandError, apply_command, restore
from pyvs.admin.options import Action, Command, UsageError, parse_args
from pyvs.admin.printers import Listing, format_list, format_save
from pyvs.model import ModelError, Protocol, Rates, Real, Rules, Service, ServiceKey, validate_service

TCP80 = ServiceKey(Protocol.TCP, IP("198.18.0.100"), 80)
UDP53 = ServiceKey(Protocol.UDP, IP("198.18.0.100"), 53)
RS11, RS12 = IP("198.18.1.11"), IP("198.18.1.12")
HEADER = "IP Virtual Server version 1.2.1 (size=4096)"


def text(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def rules() -> Rules:
    web = Service(TCP80, "wlc")
    web.reals[(RS11, 80)] = Real(RS11, 80, 1, u_threshold=100, l_threshold=80)
    web.reals[(RS12, 80)] = Real(RS12, 80, 2, u_threshold=50)
    dns = Service(UDP53, "rr", onepacket=True)
    dns.reals[(RS11, 53)] = Real(RS11, 53, 1)
    return Rules({web.key: web, dns.key: dns})


# ---- options ----------------------------------------------------------------------------------------------------

def test_thresholds_are_parsed_for_real_servers() -> None:
    command = parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.11", "-x", "100", "-y", "80"])
    assert (command.u_threshold, command.l_threshold) == (100, 80)
    command = parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.1.11", "--u-threshold=7"])
    assert (command.u_threshold, command.l_threshold) == (7, None)


@pytest.mark.parametrize("value", ["-1", "2147483648", "ten"])
def test_a_threshold_out_of_ipvsadms_range_is_refused(value: str) -> None:
    with pytest.raises(UsageError, match="illegal u_threshold specified"):
        parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.11", "-x", value])


def test_thresholds_belong_to_real_servers_only() -> None:
    with pytest.raises(UsageError, match="Illegal 'u-threshold' option with the 'add-service' command"):
        parse_args(["-A", "-t", "198.18.0.100:80", "-x", "5"])


def test_one_packet_scheduling_is_for_udp_services() -> None:
    assert parse_args(["-A", "-u", "198.18.0.100:53", "-o"]).onepacket
    assert parse_args(["-E", "-u", "198.18.0.100:53", "--ops", "-s", "rr"]).onepacket
    with pytest.raises(UsageError, match="One-Packet Scheduling is only for UDP virtual services"):
        parse_args(["-A", "-t", "198.18.0.100:80", "-o"])
    with pytest.raises(UsageError, match="Illegal 'ops' option with the 'add-server' command"):
        parse_args(["-a", "-u", "198.18.0.100:53", "-r", "198.18.1.11", "-o"])


def test_one_packet_scheduling_takes_a_fwmark_service_and_refuses_sctp() -> None:
    """ipvsadm allows -o with -f (IPVS applies it to the service's UDP datagrams); SCTP is refused as TCP is."""
    command = parse_args(["-A", "-f", "1", "-s", "rr", "-o"])
    assert command.onepacket and command.service is not None and command.service.is_fwmark
    svc = Service(command.service, "rr", onepacket=True)
    validate_service(svc)
    assert "-A -f 1 -s rr -o" in format_save(Rules({svc.key: svc}))
    with pytest.raises(UsageError, match="One-Packet Scheduling is only for UDP virtual services"):
        parse_args(["-A", "--sctp-service", "198.18.0.100:3868", "-o"])
    with pytest.raises(ModelError, match="One-Packet"):
        validate_service(Service(ServiceKey(Protocol.SCTP, IP("198.18.0.100"), 3868), "rr", onepacket=True))


def test_rate_and_thresholds_are_list_options() -> None:
    command = parse_args(["-L", "-n", "--rate", "--exact"])
    assert (command.action, command.rate, command.exact) == (Action.LIST, True, True)
    assert parse_args(["-L", "--thresholds"]).thresholds
    for extra in ("--rate", "--thresholds"):
        with pytest.raises(UsageError, match="options conflicts in the list command"):
            parse_args(["-L", "-c", extra])


def test_the_persistence_engine_is_refused_with_the_reason() -> None:
    with pytest.raises(UsageError, match="payload.*no SIP parser"):
        parse_args(["-A", "-u", "198.18.0.100:5060", "-p", "--pe", "sip"])


# ---- model and commands -----------------------------------------------------------------------------------------

def test_the_model_refuses_one_packet_tcp_and_thresholds_out_of_range() -> None:
    with pytest.raises(ModelError, match="only for UDP"):
        validate_service(Service(TCP80, onepacket=True))
    svc = Service(TCP80)
    svc.reals[(RS11, 80)] = Real(RS11, 80, u_threshold=2**31)
    with pytest.raises(ModelError, match="u_threshold 2147483648 is out of range"):
        validate_service(svc)


def test_edit_server_sends_the_thresholds_again_as_ipvsadm_does() -> None:
    start = apply_command(rules(), parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.1.11", "-w", "3"]))
    assert start.services[TCP80].reals[(RS11, 80)] == Real(RS11, 80, 3)  # thresholds back to 0
    edited = apply_command(start, parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.1.11", "-x", "9"]))
    assert edited.services[TCP80].reals[(RS11, 80)] == Real(RS11, 80, 1, u_threshold=9)


def test_edit_service_without_o_turns_one_packet_scheduling_off() -> None:
    edited = apply_command(rules(), parse_args(["-E", "-u", "198.18.0.100:53", "-s", "rr"]))
    assert not edited.services[UDP53].onepacket
    assert rules().copy().services[UDP53].onepacket  # and copy() keeps the settings
    assert rules().copy().services[TCP80].reals[(RS11, 80)].l_threshold == 80


def test_adding_one_packet_tcp_is_refused_by_the_commands_too() -> None:
    with pytest.raises(CommandError, match="only for UDP"):
        apply_command(Rules(), Command(Action.ADD_SERVICE, service=TCP80, onepacket=True))


# ---- output -----------------------------------------------------------------------------------------------------

def test_list_shows_ops_after_the_flags() -> None:
    listing = format_list(Listing(rules()))
    assert "UDP  198.18.0.100:53 rr ops\n" in listing


def test_thresholds_listing() -> None:
    listing = Listing(rules(), conn_counts={(TCP80, (RS11, 80)): (12, 40)})
    assert format_list(listing, thresholds=True) == text(
        HEADER,
        "Prot LocalAddress:Port            Uthreshold Lthreshold ActiveConn InActConn ",
        "  -> RemoteAddress:Port",
        "TCP  198.18.0.100:80 wlc",
        "  -> 198.18.1.11:80               100        80         12         40        ",
        "  -> 198.18.1.12:80               50         0          0          0         ",
        "UDP  198.18.0.100:53 rr ops",
        "  -> 198.18.1.11:53               0          0          0          0         ",
    )


def rate_listing() -> Listing:
    return Listing(
        rules(),
        service_rates={TCP80: Rates(12, 2210, 0, 193000, 0), UDP53: Rates(1234567890, 0, 0, 123456789012, 0)},
        real_rates={(TCP80, (RS11, 80)): Rates(5, 900, 0, 81000, 0),
                    (UDP53, (RS11, 53)): Rates(123456789, 0, 0, 123456789012, 0)},
    )


RATE_TITLE = (
    "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS",
    "  -> RemoteAddress:Port",
)


def test_rate_listing_rounds_as_ipvsadm() -> None:
    # A service's five rates go through print_largenum; a real's CPS and PPS are printed whole (%8llu).
    assert format_list(rate_listing(), rate=True) == text(
        HEADER,
        *RATE_TITLE,
        "TCP  198.18.0.100:80                    12     2210        0   193000        0",
        "  -> 198.18.1.11:80                      5      900        0    81000        0",
        "  -> 198.18.1.12:80                      0        0        0        0        0",
        "UDP  198.18.0.100:53                 1234M        0        0     123G        0",
        "  -> 198.18.1.11:53               123456789        0        0     123G        0",
    )


def test_rate_listing_exact() -> None:
    assert format_list(rate_listing(), rate=True, exact=True).splitlines()[-2:] == [
        "UDP  198.18.0.100:53              1234567890        0        0 123456789012        0",
        "  -> 198.18.1.11:53               123456789        0        0 123456789012        0",
    ]


def test_stats_wins_over_rate_as_in_ipvsadm() -> None:
    assert "Conns" in format_list(rate_listing(), stats=True, rate=True)


def test_save_writes_o_and_the_thresholds() -> None:
    assert format_save(rules()) == text(
        "-A -t 198.18.0.100:80 -s wlc",
        "-a -t 198.18.0.100:80 -r 198.18.1.11:80 -g -w 1 -x 100 -y 80",
        "-a -t 198.18.0.100:80 -r 198.18.1.12:80 -g -w 2 -x 50",
        "-A -u 198.18.0.100:53 -s rr -o",
        "-a -u 198.18.0.100:53 -r 198.18.1.11:53 -g -w 1",
    )


def test_save_and_restore_round_trip_every_option() -> None:
    start = rules()
    v6 = Service(ServiceKey(Protocol.UDP, IPv6Address("2001:db8::100"), 53), "mh", persistent=60, netmask=64,
                 sched_flags=("mh-fallback",), onepacket=True)
    v6.reals[(IPv6Address("2001:db8:1::11"), 53)] = Real(IPv6Address("2001:db8:1::11"), 53, 4, u_threshold=3,
                                                         l_threshold=1)
    start.services[v6.key] = v6
    saved = format_save(start)
    again = restore(Rules(), saved)
    assert again == start
    assert format_save(again) == saved
