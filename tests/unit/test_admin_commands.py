"""Commands applied to Rules: results, ipvsadm's refusals, and that a refusal changes nothing."""

import copy
from ipaddress import IPv4Address as IP

import pytest

from pyvs.admin.commands import CommandError, apply_command, merge_timeouts, restore
from pyvs.admin.options import UsageError, parse_args
from pyvs.admin.printers import format_save
from pyvs.model import DEFAULT_SCHEDULER, Protocol, Real, Rules, Service, ServiceKey, Timeouts

VIP80 = ServiceKey(Protocol.TCP, IP("198.18.0.100"), 80)
VIP53 = ServiceKey(Protocol.UDP, IP("198.18.0.100"), 53)
RS1 = IP("198.18.1.11")
RS2 = IP("198.18.1.12")


def run(rules: Rules, line: str) -> Rules:
    return apply_command(rules, parse_args(line.split()))


def base() -> Rules:
    svc = Service(VIP80, "rr", reals={(RS1, 80): Real(RS1, 80, 2)})
    return Rules({VIP80: svc})


def test_add_service_and_servers() -> None:
    rules = run(Rules(), "-A -t 198.18.0.100:80 -s wrr")
    rules = run(rules, "-a -t 198.18.0.100:80 -r 198.18.1.11 -g -w 3")
    rules = run(rules, "-a -t 198.18.0.100:80 -r 198.18.1.12:8080")
    svc = rules.services[VIP80]
    assert svc.scheduler == "wrr"
    assert svc.reals == {(RS1, 80): Real(RS1, 80, 3), (RS2, 80): Real(RS2, 80, 1)}


def test_edit_service_keeps_reals_and_edit_server_sets_weight() -> None:
    rules = run(base(), "-E -t 198.18.0.100:80 -s wrr")
    assert rules.services[VIP80].scheduler == "wrr"
    assert list(rules.services[VIP80].reals) == [(RS1, 80)]
    rules = run(rules, "-e -t 198.18.0.100:80 -r 198.18.1.11 -w 0")
    assert rules.services[VIP80].reals[(RS1, 80)].weight == 0
    # As ipvsadm: -e without -w sends the default weight, 1.
    rules = run(rules, "-e -t 198.18.0.100:80 -r 198.18.1.11")
    assert rules.services[VIP80].reals[(RS1, 80)].weight == 1


def test_delete_and_clear() -> None:
    assert run(base(), "-d -t 198.18.0.100:80 -r 198.18.1.11").services[VIP80].reals == {}
    assert run(base(), "-D -t 198.18.0.100:80") == Rules()
    assert run(base(), "-C") == Rules()


def test_apply_does_not_change_its_input() -> None:
    rules = base()
    before = copy.deepcopy(rules)
    run(rules, "-a -t 198.18.0.100:80 -r 198.18.1.12")
    run(rules, "-E -t 198.18.0.100:80 -s wrr")
    run(rules, "-D -t 198.18.0.100:80")
    assert rules == before


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("-A -t 198.18.0.100:80 -s rr", "Service already exists"),
        ("-E -t 198.18.0.100:81 -s rr", "No such service"),
        ("-D -t 198.18.0.100:81", "No such service"),
        ("-D -u 198.18.0.100:80", "No such service"),
        ("-a -t 198.18.0.100:81 -r 198.18.1.11", "Service not defined"),
        ("-e -t 198.18.0.100:81 -r 198.18.1.11", "Service not defined"),
        ("-d -t 198.18.0.100:81 -r 198.18.1.11", "Service not defined"),
        ("-a -t 198.18.0.100:80 -r 198.18.1.11", "Destination already exists"),
        ("-a -t 198.18.0.100:80 -r 198.18.1.11:8080", "Destination already exists"),
        ("-e -t 198.18.0.100:80 -r 198.18.1.12", "No such destination"),
        ("-d -t 198.18.0.100:80 -r 198.18.1.12", "No such destination"),
        (
            "-A -t 198.18.0.100:81 -s nosuch",
            "Scheduler or persistence engine not found: unknown scheduler 'nosuch'",
        ),
        ("-A -t 198.18.0.100:81 -s rr -b mh-port", "scheduler flag 'mh-port' needs scheduler mh"),
        ("-E -t 198.18.0.100:80 -s sh -b sh-port,bogus", "invalid scheduler flag 'bogus'"),
    ],
)
def test_refused_operations_change_nothing(line: str, message: str) -> None:
    rules = base()
    before = copy.deepcopy(rules)
    with pytest.raises(CommandError) as err:
        run(rules, line)
    assert message in str(err.value)
    assert rules == before


def test_unknown_scheduler_lists_the_valid_ones() -> None:
    with pytest.raises(CommandError) as err:
        run(Rules(), "-A -t 198.18.0.100:80 -s fastest")
    assert "valid: rr, wrr" in str(err.value)


def test_default_scheduler_is_ipvsadms() -> None:
    rules = run(Rules(), "-A -t 198.18.0.100:80")
    assert [svc.scheduler for svc in rules.services.values()] == [DEFAULT_SCHEDULER] == ["wlc"]


def saved_rules() -> Rules:
    rules = Rules()
    for line in [
        "-A -u 198.18.0.100:53 -s wrr",
        "-a -u 198.18.0.100:53 -r 198.18.1.12 -w 0",
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.1.12 -w 65535",
        "-a -t 198.18.0.100:80 -r 198.18.1.11 -w 1",
        "-A -t 198.18.0.9:443 -s wrr",
    ]:
        rules = run(rules, line)
    return rules


def test_save_then_restore_gives_equal_rules() -> None:
    rules = saved_rules()
    assert restore(Rules(), format_save(rules)) == rules


def test_restore_adds_to_the_current_rules() -> None:
    restored = restore(base(), "-A -u 198.18.0.100:53 -s rr\n-a -u 198.18.0.100:53 -r 198.18.1.11\n")
    assert set(restored.services) == {VIP80, VIP53}


@pytest.mark.parametrize(
    ("text", "error", "message"),
    [
        (
            "-A -u 198.18.0.100:53 -s rr\n-A -t 198.18.0.100:80 -s rr\n",
            CommandError,
            "line 2: Service already exists",
        ),
        (
            "-C\n-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:81 -r 198.18.1.1\n",
            CommandError,
            "line 3: Service not defined",
        ),
        (
            "-A -u 198.18.0.100:53 -s rr\n\n# x\n-a -u 198.18.0.100:53 -r 198.18.1.1 -6\n",
            UsageError,
            "line 4: -6 used before -f",
        ),
        (
            "-C\n-A -t 198.18.0.100:81 -s wlcx\n",
            CommandError,
            "line 2: Scheduler or persistence engine not found",
        ),
    ],
)
def test_restore_with_a_bad_line_changes_nothing(text: str, error: type[Exception], message: str) -> None:
    rules = base()
    before = copy.deepcopy(rules)
    with pytest.raises(error) as err:
        restore(rules, text)
    assert message in str(err.value)
    assert rules == before


def test_merge_timeouts_zero_keeps_the_current_value() -> None:
    assert merge_timeouts(Timeouts(900, 120, 300), Timeouts(0, 30, 0)) == Timeouts(900, 30, 300)
