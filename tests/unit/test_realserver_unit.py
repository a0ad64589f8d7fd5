"""Pure parts of the real-server checks, the sysctl paths and the pyvs command line."""

from __future__ import annotations

import argparse
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


def test_vip_must_be_an_ipv4_address() -> None:
    with pytest.raises(realserver.RealServerError, match="not an IPv4 address"):
        realserver.check("198.18.0.300")


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
