"""pyvsadm's masquerading (-m): parsing as ipvsadm 1.31 does (only -m keeps a real's own port), the model's rules,
`-L -n`'s Masq, `-S`'s -m and a -S/-R round trip of a service mixing -g and -m reals."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.admin.commands import CommandError, apply_command, restore
from pyvs.admin.options import Action, UsageError, parse_args
from pyvs.admin.printers import Listing, format_list, format_save
from pyvs.model import Forwarding, ModelError, Protocol, Real, Rules, Service, ServiceKey, validate_real

VIP = IPv4Address("198.18.0.100")
RS1, RS2 = IPv4Address("198.18.2.11"), IPv4Address("198.18.2.12")
TCP80 = ServiceKey(Protocol.TCP, VIP, 80)


def test_masquerading_keeps_the_reals_port_and_direct_routing_takes_the_services() -> None:
    masq = parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11:8080", "-m", "-w", "2"])
    assert (masq.real, masq.forwarding, masq.weight) == ((RS1, 8080), Forwarding.MASQ, 2)
    long = parse_args(["--add-server", "-t", "198.18.0.100:80", "-r", "198.18.2.11:8080", "--masquerading"])
    assert (long.real, long.forwarding) == ((RS1, 8080), Forwarding.MASQ)
    assert parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11", "-m"]).real == (RS1, 80)
    routed = parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11:8080", "-g"])
    assert (routed.real, routed.forwarding) == ((RS1, 80), Forwarding.ROUTE)
    edit = parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.2.11:8080", "-w", "3"])
    assert (edit.real, edit.forwarding) == ((RS1, 80), None)  # -e without a method: -g, as ipvsadm
    delete = parse_args(["-d", "-t", "198.18.0.100:80", "-r", "198.18.2.11:8080"])
    assert delete.action is Action.DELETE_SERVER and delete.real == (RS1, 8080)


def test_one_forwarding_method_per_command() -> None:
    with pytest.raises(UsageError, match="multiple 'forwarding-method' options specified"):
        parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11", "-g", "-m"])
    with pytest.raises(UsageError, match="Illegal 'forwarding-method' option with the 'delete-server' command"):
        parse_args(["-d", "-t", "198.18.0.100:80", "-r", "198.18.2.11", "-m"])


def test_the_model_takes_nat_for_ipv4_only_and_another_port_only_with_nat() -> None:
    svc = Service(TCP80)
    validate_real(svc, Real(RS1, 8080, 1, Forwarding.MASQ))
    with pytest.raises(ModelError, match="direct routing cannot change the port"):
        validate_real(svc, Real(RS1, 8080, 1, Forwarding.ROUTE))
    svc6 = Service(ServiceKey(Protocol.TCP, IPv6Address("2001:db8::100"), 80))
    with pytest.raises(ModelError, match="IPv4 only"):
        validate_real(svc6, Real(IPv6Address("2001:db8:2::11"), 80, 1, Forwarding.MASQ))
    any_port = Service(ServiceKey(Protocol.TCP, VIP, 0), persistent=300)
    validate_real(any_port, Real(RS1, 0, 1, Forwarding.MASQ))
    with pytest.raises(ModelError, match="port 0"):
        validate_real(any_port, Real(RS1, 8080, 1, Forwarding.MASQ))


def mixed() -> Rules:
    rules = Rules()
    for argv in (["-A", "-t", "198.18.0.100:80", "-s", "rr"],
                 ["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11:80", "-g", "-w", "1"],
                 ["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.12:8080", "-m", "-w", "2"]):
        rules = apply_command(rules, parse_args(argv))
    return rules


def test_list_shows_masq_and_save_writes_m() -> None:
    listing = Listing(mixed(), conn_counts={})
    assert format_list(listing).splitlines()[3:] == [
        "TCP  198.18.0.100:80 rr",
        "  -> 198.18.2.11:80               Route   1      0          0         ",
        "  -> 198.18.2.12:8080             Masq    2      0          0         ",
    ]
    assert format_save(mixed()) == (
        "-A -t 198.18.0.100:80 -s rr\n"
        "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 1\n"
        "-a -t 198.18.0.100:80 -r 198.18.2.12:8080 -m -w 2\n"
    )


def test_save_and_restore_round_trip_keeps_each_reals_method_and_port() -> None:
    saved = format_save(mixed())
    back = restore(Rules(), saved)
    reals = back.services[TCP80].reals
    assert {k: (r.forwarding, r.weight) for k, r in reals.items()} == {
        (RS1, 80): (Forwarding.ROUTE, 1), (RS2, 8080): (Forwarding.MASQ, 2)}
    assert format_save(back) == saved


def test_editing_a_masqueraded_real_needs_m_as_ipvsadm() -> None:
    rules = mixed()
    with pytest.raises(CommandError, match="No such destination"):  # -e without -m means -g, port 80
        apply_command(rules, parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.2.12:8080", "-w", "5"]))
    rules = apply_command(rules, parse_args(["-e", "-t", "198.18.0.100:80", "-r", "198.18.2.12:8080", "-m",
                                             "-w", "5"]))
    assert rules.services[TCP80].reals[(RS2, 8080)].weight == 5
    rules = apply_command(rules, parse_args(["-d", "-t", "198.18.0.100:80", "-r", "198.18.2.12:8080"]))
    assert list(rules.services[TCP80].reals) == [(RS1, 80)]
