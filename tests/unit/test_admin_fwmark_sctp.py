"""pyvsadm's firewall-mark (-f MARK [-6]) and SCTP (--sctp-service) services: parsed, listed and saved as ipvsadm
1.31 does (print_service_entry: `FWM  1`, `FWM  1 IPv6`, `-f 1`, `-f 1 -6`, `SCTP`, `--sctp-service`)."""

from ipaddress import IPv4Address as IP
from ipaddress import IPv6Address as IP6

import pytest

from pyvs.admin.commands import apply_command, restore
from pyvs.admin.options import Action, UsageError, parse_args
from pyvs.admin.printers import Listing, format_list, format_save
from pyvs.model import ModelError, Protocol, Rules, ServiceKey, fwmark_key


def run(rules: Rules, line: str) -> Rules:
    return apply_command(rules, parse_args(line.split()))


def test_fwmark_service_is_keyed_by_mark_and_family() -> None:
    cmd = parse_args(["-A", "-f", "1", "-s", "rr"])
    assert cmd.service == fwmark_key(1) and cmd.service.is_fwmark and cmd.service.family == 4
    v6 = parse_args(["-A", "-f", "1", "-6", "-s", "rr"]).service
    assert v6 == fwmark_key(1, 6) and v6 != fwmark_key(1) and v6.family == 6
    # A fwmark service has no port: not "zero port for a non-persistent service".
    assert parse_args(["-E", "--fwmark-service", "7"]).action is Action.EDIT_SERVICE


def test_fwmark_real_keeps_its_port_or_zero() -> None:
    assert parse_args(["-a", "-f", "1", "-r", "198.18.1.11", "-g"]).real == (IP("198.18.1.11"), 0)
    assert parse_args(["-a", "-f", "1", "-r", "198.18.1.11:8080"]).real == (IP("198.18.1.11"), 8080)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-A", "-f", "0"], "invalid fwmark value `0' specified"),
        (["-A", "-f", "4294967296"], "invalid fwmark value `4294967296' specified"),
        (["-A", "-f", "x1"], "invalid fwmark value `x1' specified"),
        (["-A", "-f", "1", "-t", "198.18.0.100:80"], "multiple 'service-address' options specified"),
        (["-A", "--sctp-service", "198.18.0.100:0"], "Zero port specified for non-persistent service"),
    ],
)
def test_refused(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert message in str(err.value)


def test_fwmark_key_bounds() -> None:
    with pytest.raises(ModelError):
        fwmark_key(0)


def fwmark_rules() -> Rules:
    rules = Rules()
    for line in (
        "-A -t 198.18.0.100:80 -s wlc",
        "-a -t 198.18.0.100:80 -r 198.18.1.11 -g -w 1",
        "-A -f 2 -s rr",
        "-a -f 2 -r 198.18.1.12 -g -w 2",
        "-a -f 2 -r 198.18.1.11 -g -w 1",
        "-A -f 1 -6 -s sh -p 60 -M 64",
        "-a -f 1 -6 -r 2001:db8:1::11 -g -w 1",
        "-A -f 1 -s rr",
        "-A --sctp-service 198.18.0.100:3868 -s rr",
        "-a --sctp-service 198.18.0.100:3868 -r 198.18.1.11 -w 3",
    ):
        rules = run(rules, line)
    return rules


def test_list_prints_fwm_and_sctp_as_ipvsadm() -> None:
    assert format_list(Listing(fwmark_rules())) == (
        "IP Virtual Server version 1.2.1 (size=4096)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 wlc\n"
        "  -> 198.18.1.11:80               Route   1      0          0         \n"
        "SCTP 198.18.0.100:3868 rr\n"
        "  -> 198.18.1.11:3868             Route   3      0          0         \n"
        "FWM  1 rr\n"
        "FWM  1 IPv6 sh persistent 60 mask 64\n"
        "  -> [2001:db8:1::11]:0           Route   1      0          0         \n"
        "FWM  2 rr\n"
        "  -> 198.18.1.11:0                Route   1      0          0         \n"
        "  -> 198.18.1.12:0                Route   2      0          0         \n"
    )


def test_list_one_fwmark_service() -> None:
    out = format_list(Listing(fwmark_rules()), service=parse_args(["-L", "-f", "2"]).service)
    assert out.splitlines()[2:] == [
        "FWM  2 rr",
        "  -> 198.18.1.11:0                Route   1      0          0         ",
        "  -> 198.18.1.12:0                Route   2      0          0         ",
    ]


def test_save_writes_f_and_sctp_and_restore_reads_them_back() -> None:
    rules = fwmark_rules()
    saved = format_save(rules)
    assert saved == (
        "-A -t 198.18.0.100:80 -s wlc\n"
        "-a -t 198.18.0.100:80 -r 198.18.1.11:80 -g -w 1\n"
        "-A --sctp-service 198.18.0.100:3868 -s rr\n"
        "-a --sctp-service 198.18.0.100:3868 -r 198.18.1.11:3868 -g -w 3\n"
        "-A -f 1 -s rr\n"
        "-A -f 1 -6 -s sh -p 60 -M 64\n"
        "-a -f 1 -6 -r [2001:db8:1::11]:0 -g -w 1\n"
        "-A -f 2 -s rr\n"
        "-a -f 2 -r 198.18.1.11:0 -g -w 1\n"
        "-a -f 2 -r 198.18.1.12:0 -g -w 2\n"
    )
    restored = restore(Rules(), saved)
    assert restored.services == rules.services
    assert format_save(restored) == saved


def test_delete_edit_and_servers_by_mark() -> None:
    rules = fwmark_rules()
    rules = run(rules, "-e -f 2 -r 198.18.1.12 -w 5")
    assert rules.services[fwmark_key(2)].reals[(IP("198.18.1.12"), 0)].weight == 5
    rules = run(rules, "-d -f 2 -r 198.18.1.12")
    assert list(rules.services[fwmark_key(2)].reals) == [(IP("198.18.1.11"), 0)]
    rules = run(rules, "-E -f 2 -s wlc")
    assert rules.services[fwmark_key(2)].scheduler == "wlc"
    rules = run(rules, "-D -f 1 -6")
    assert fwmark_key(1, 6) not in rules.services and fwmark_key(1) in rules.services
    assert ServiceKey(Protocol.SCTP, IP("198.18.0.100"), 3868) in rules.services
    assert IP6("::") == fwmark_key(3, 6).vip


def test_keys_name_themselves_as_ipvsadm_does() -> None:
    assert fwmark_key(1).title == "FWM 1" and fwmark_key(1, 6).title == "FWM 1 IPv6"
    assert ServiceKey(Protocol.SCTP, IP("198.18.0.100"), 3868).title == "SCTP 198.18.0.100:3868"
