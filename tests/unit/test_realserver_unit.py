"""Pure parts of the real-server checks, the sysctl paths and the pyvs command line."""

from __future__ import annotations

import argparse
import ipaddress
from pathlib import Path

import pytest

from pyvs import cli, netns, realserver


@pytest.mark.parametrize(
    ("all_value", "nic_value", "ok", "fix"),
    [
        (0, 0, False, "sysctl -w net.ipv4.conf.eth0.arp_ignore=1"),
        (1, 0, True, None),  # the kernel takes max(all, eth0)
        (0, 2, True, None),
        (8, 1, False, "sysctl -w net.ipv4.conf.all.arp_ignore=1"),  # 8 drops all ARP: lower "all"
    ],
)
def test_arp_ignore_finding_uses_the_effective_value(all_value: int, nic_value: int, ok: bool, fix: str | None) -> None:
    setting, value, accepted = realserver.ARP_IGNORE
    finding = realserver.sysctl_finding("eth0", setting, all_value, nic_value, value, accepted)
    assert (finding.ok, finding.fix_command) == (ok, fix)
    assert finding.actual == f"{max(all_value, nic_value)} (all={all_value}, eth0={nic_value})"


def test_rp_filter_finding_lowers_what_is_strict() -> None:
    setting, value, accepted = realserver.RP_FILTER
    finding = realserver.sysctl_finding("eth1", setting, 1, 1, value, accepted)
    assert finding.fix_command == "sysctl -w net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.eth1.rp_filter=0"
    assert realserver.sysctl_finding("eth1", setting, 2, 0, value, accepted).ok  # loose is fine


def test_sysctl_path_keeps_dots_in_interface_names() -> None:
    assert netns.sysctl_path("net.ipv4.conf.eth0.100.arp_ignore") == Path("/proc/sys/net/ipv4/conf/eth0.100/arp_ignore")
    assert netns.sysctl_path("net.ipv4.ip_forward") == Path("/proc/sys/net/ipv4/ip_forward")


def test_vips_of_both_families_are_taken_and_bad_ones_refused() -> None:
    assert [str(v) for v in realserver.parse_vips(["198.18.0.100", "[2001:db8::100]", "198.18.0.100"])] == [
        "198.18.0.100", "2001:db8::100"]
    with pytest.raises(realserver.RealServerError, match="not an IP address"):
        realserver.check("198.18.0.300")
    for bad in ("fe80::1", "ff02::1", "::", "::1"):
        with pytest.raises(realserver.RealServerError, match="not a unicast address"):
            realserver.parse_vips(bad)


# What nft 1.0.6 lists for the rule that up() adds (nft -j list chain ip6 pyvs_realserver input).
LISTED_RULE = {
    "family": "ip6", "table": "pyvs_realserver", "chain": "input", "handle": 2, "comment": "pyvs realserver x",
    "expr": [
        {"match": {"op": "!=", "left": {"meta": {"key": "iifname"}}, "right": "lo"}},
        {"match": {"op": "==", "left": {"payload": {"protocol": "icmpv6", "field": "type"}},
                   "right": "nd-neighbor-solicit"}},
        {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 64, "len": 128}},
                   "right": "0x20010db8000000000000000000000100"}},
        {"counter": {"packets": 3, "bytes": 216}}, {"drop": None},
    ],
}


def test_the_nd_rule_is_recognised_as_nft_lists_it_and_nothing_else_is() -> None:
    vip = ipaddress.IPv6Address("2001:db8::100")
    assert realserver._nd_target(LISTED_RULE) == vip
    assert realserver._nd_target(realserver.nd_rule(vip)) == vip  # what up() writes reads back the same
    accepting = {**LISTED_RULE, "expr": [*LISTED_RULE["expr"][:4], {"accept": None}]}
    wider = {**LISTED_RULE, "expr": [LISTED_RULE["expr"][1], *LISTED_RULE["expr"][2:]]}  # lo not excepted
    assert realserver._nd_target(accepting) is None and realserver._nd_target(wider) is None
    command = realserver.nd_rule_command(vip)
    assert "@th,64,128 0x20010db8000000000000000000000100 counter drop" in command
    assert "iifname != lo icmpv6 type nd-neighbor-solicit" in command


def _all_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _all_parsers(sub)
    return found


def test_every_command_and_option_has_help() -> None:
    parsers = _all_parsers(cli.build_parser())
    assert len(parsers) > 8
    for parser in parsers:
        assert parser.description, parser.prog
        for action in parser._actions:
            assert action.help, (parser.prog, action.dest)


def test_lab_demo_is_registered() -> None:
    args = cli.build_parser().parse_args(["lab", "demo", "--prefix", "pyvst"])
    assert args.handler == "lab:cmd_demo"


def test_bad_prefix_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["lab", "status", "--prefix", "10net"])
    assert exit_info.value.code == 2
    assert "pyvs: argument --prefix: lab prefix '10net'" in capsys.readouterr().err
