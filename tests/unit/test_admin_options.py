"""ipvsadm command lines parsed into Commands, and the ones ipvsadm (or pyvs) refuses."""

from ipaddress import IPv4Address as IP

import pytest

from pyvs.admin.options import Action, Command, UsageError, parse_args, parse_restore
from pyvs.model import Protocol, ServiceKey, Timeouts

VIP80 = ServiceKey(Protocol.TCP, IP("198.18.0.100"), 80)


def test_add_service_short_and_long_forms_agree() -> None:
    expected = Command(Action.ADD_SERVICE, service=VIP80, scheduler="rr")
    assert parse_args(["-A", "-t", "198.18.0.100:80", "-s", "rr"]) == expected
    assert parse_args(["--add-service", "--tcp-service", "198.18.0.100:80", "--scheduler", "rr"]) == expected
    assert parse_args(["--add-service", "--tcp-service=198.18.0.100:80", "--scheduler=rr"]) == expected
    assert parse_args(["-At", "198.18.0.100:80", "-srr"]) == expected


def test_service_port_by_name_and_udp() -> None:
    assert parse_args(["-A", "-t", "198.18.0.100:http", "-s", "rr"]).service == VIP80
    cmd = parse_args(["-D", "-u", "198.18.0.100:domain"])
    assert cmd.service == ServiceKey(Protocol.UDP, IP("198.18.0.100"), 53)


def test_real_server_port_is_the_service_port_for_direct_routing() -> None:
    plain = parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.11"])
    assert plain.real == (IP("198.18.1.11"), 80)
    assert plain.weight is None
    other_port = parse_args(["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.11:8080", "-g", "-w", "3"])
    assert other_port.real == (IP("198.18.1.11"), 80)
    assert other_port.weight == 3
    long = parse_args(["--add-server", "--tcp-service", "198.18.0.100:80", "--real-server", "198.18.1.11"])
    assert long.real == plain.real


def test_list_flags() -> None:
    cmd = parse_args(["-Ln", "--stats", "--exact"])
    assert (cmd.action, cmd.numeric, cmd.stats, cmd.exact, cmd.sort) == (Action.LIST, True, True, True, True)
    assert parse_args(["-l", "-c", "-n"]).connection
    assert parse_args(["-L", "--timeout"]).list_timeouts
    assert not parse_args(["-L", "--nosort"]).sort
    assert parse_args(["-L", "--sort"]) == Command(Action.LIST)
    assert parse_args(["-S", "-n"]) == Command(Action.SAVE, numeric=True)
    assert parse_args(["-Z"]) == Command(Action.ZERO)


def test_set_timeouts() -> None:
    assert parse_args(["--set", "900", "0", "60"]).timeouts == Timeouts(900, 0, 60)


def test_help_and_version() -> None:
    assert parse_args(["-h"]).action is Action.HELP
    assert parse_args(["--version"]).action is Action.VERSION


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-A", "-s", "rr"], "You need to supply the 'service-address' option for the 'add-service' command"),
        (
            ["-a", "-t", "198.18.0.100:80"],
            "You need to supply the 'real-server' option for the 'add-server' command",
        ),
        (
            ["-d", "-t", "198.18.0.100:80", "-r", "198.18.1.1", "-w", "2"],
            "Illegal 'weight' option with the 'delete-server' command",
        ),
        (
            ["-A", "-t", "198.18.0.100:80", "-w", "2"],
            "Illegal 'weight' option with the 'add-service' command",
        ),
        (["-C", "-n"], "Illegal 'numeric' option with the 'flush' command"),
        (["-S", "--stats"], "Illegal 'stats' option with the 'save' command"),
        (
            ["-L", "-c", "-t", "198.18.0.100:80"],
            "The option 'service-address' conflicts with the 'connection' option in the 'list' command",
        ),
        (["-L", "-c", "--stats"], "options conflicts in the list command"),
        (["-A", "-L"], "multiple commands specified"),
        (
            ["-A", "-t", "198.18.0.100:80", "-u", "198.18.0.100:80"],
            "multiple 'service-address' options specified",
        ),
        (["-A", "-t", "198.18.0.100"], "Zero port specified for non-persistent service"),
        (
            ["-A", "-t", "198.18.0.100:70000"],
            "illegal virtual server address[:port] specified: port 70000 is out of range",
        ),
        (["-A", "-t", "198.18.0.300:80"], "illegal virtual server address[:port] specified"),
        (["-A", "-t", "80"], "illegal virtual server address[:port] specified"),
        (
            ["-A", "-t", "198.18.0.100:nosuchport"],
            "illegal virtual server address[:port] specified: invalid port",
        ),
        (["-A", "-t", "[2001:db8::1]"], "write an IPv6 address with a port as [ADDRESS]:PORT"),
        (
            ["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.999"],
            "illegal real server address[:port] specified",
        ),
        (
            ["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.1", "-w", "65536"],
            "illegal weight specified: weight 65536 is out of range (0-65535)",
        ),
        (["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.1", "-w", "-1"], "illegal weight specified"),
        (
            ["-a", "-t", "198.18.0.100:80", "-r", "198.18.1.1", "-w", "heavy"],
            "illegal weight specified: 'heavy' is not a number",
        ),
        (["--set", "1", "2"], "--set option requires 3 timeout values"),
        (["--set", "1", "2", "x"], "invalid timeout value `x' specified"),
        (["--set", "1", "2", "2678401"], "invalid timeout value `2678401' specified"),
        (["-L", "extra"], "unexpected argument extra"),
        (["-t", "198.18.0.100:80"], "no command specified"),
        (["-A", "--bogus"], "unknown option '--bogus'"),
        (["-Aq"], "unknown option '-q'"),
        (["-A", "-t"], "option '-t' needs an argument"),
        (["-C", "--numeric=1"], "option '--numeric' takes no argument"),
    ],
)
def test_refused_command_lines(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["-A", "-t", "198.18.0.100:80", "--pe", "sip"], "option '--pe' (pe) is not supported"),
        (["-A", "-u", "198.18.0.100:5060", "--pe", "sip"], "it has no SIP parser"),
        (["-L", "--persistent-conn"], "option '--persistent-conn' (persistent-conn) is not supported"),
    ],
)
def test_unsupported_options_are_named(argv: list[str], named: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert named in str(err.value)


def test_restore_input_format() -> None:
    text = "\n".join(
        [
            "# saved by pyvsadm -S",
            "",
            "ipvsadm -A -t 198.18.0.100:80 -s rr",
            "  pyvsadm -a -t 198.18.0.100:80 -r 198.18.1.11:80 -g -w 2   # comment",
            "/sbin/ipvsadm -a -t 198.18.0.100:80 -r 198.18.1.12",
        ]
    )
    parsed = parse_restore(text)
    assert [number for number, _ in parsed] == [3, 4, 5]
    assert [cmd.action for _, cmd in parsed] == [Action.ADD_SERVICE, Action.ADD_SERVER, Action.ADD_SERVER]
    assert parsed[1][1].weight == 2


SAVED_LINES = [
    "-A -t 198.18.0.100:80 -s wrr",
    "-A -u 198.18.0.100:53 -s rr",
    "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 1",
    "-a -u 198.18.0.100:53 -r 198.18.2.11:53 -g -w 0",
    "-a -t 198.18.0.100:80 -r 198.18.2.11 -g",
    "-a -t 198.18.0.100:80 -r 198.18.2.11:8080 -w 65535",
    "-a -t 198.18.0.100:80 -r 198.18.2.11:80",
    # values the general parser must judge (errors, names, defaults)
    "-A -t 198.18.0.100:0 -s rr",
    "-A -t 198.18.0.100:99999 -s rr",
    "-A -t 198.18.0.300:80 -s rr",
    "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 65536",
    "-a -t 198.18.0.100:80 -r 198.18.02.11:80 -g -w 1",
    "-A -t 198.18.0.100:80 -s rr -p 60",
    "-a -t 198.18.0.100:http -r 198.18.2.11 -g",
]


@pytest.mark.parametrize("line", SAVED_LINES)
def test_restore_reads_saved_lines_as_the_general_parser_does(line: str) -> None:
    try:
        expected: Command | str = parse_args(line.split())
    except UsageError as err:
        expected = f"line 1: {err}"
    try:
        got: Command | str = parse_restore(line)[0][1]
    except UsageError as err:
        got = str(err)
    assert got == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "-A -t 198.18.0.100:80 -s rr\n-a -t 198.18.0.100:80 -w 1\n",
            "line 2: You need to supply the 'real-server'",
        ),
        ("\n\n-A -t 198.18.0.100:80 -m\n", "line 3: Illegal 'forwarding-method' option with the 'add-service' command"),
        ("-L -n\n", "line 1: the 'list' command is not allowed in restore input"),
        ("-R\n", "line 1: the 'restore' command is not allowed"),
        ("-A -t '198.18.0.100:80\n", "line 1: No closing quotation"),
    ],
)
def test_restore_errors_name_the_line(text: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_restore(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("argv", "persistent", "netmask", "flags"),
    [
        (["-A", "-t", "198.18.0.100:80", "-s", "rr", "-p"], 300, None, ()),
        (["-A", "-t", "198.18.0.100:80", "-p", "600", "-s", "rr"], 600, None, ()),
        (["-A", "-t", "198.18.0.100:80", "-p600"], 600, None, ()),
        (["-A", "-t", "198.18.0.100:80", "--persistent=60", "-M", "255.255.255.0"], 60, "255.255.255.0", ()),
        (["-A", "-t", "198.18.0.100:0", "-p", "-M", "24"], 300, "255.255.255.0", ()),
        (["-E", "-t", "198.18.0.100:80", "-s", "sh", "-b", "sh-fallback,sh-port"], None, None,
         ("sh-fallback", "sh-port")),
    ],
)
def test_persistence_netmask_and_scheduler_flags(
    argv: list[str], persistent: int | None, netmask: str | None, flags: tuple[str, ...]
) -> None:
    command = parse_args(argv)
    assert command.persistent == persistent
    assert (str(command.netmask) if command.netmask else None) == netmask
    assert command.sched_flags == flags


@pytest.mark.parametrize("argv", [
    ["-a", "-t", "198.18.0.100:80", "-r", "198.18.2.11", "-p"],
    ["-A", "-t", "198.18.0.100:80", "-p", "0"],
    ["-A", "-t", "198.18.0.100:80", "-M", "x"],
])
def test_persistence_options_are_checked(argv: list[str]) -> None:
    with pytest.raises(UsageError):
        parse_args(argv)


def test_host_names_ending_in_a_digit_are_resolved_as_ipvsadm_does(monkeypatch: pytest.MonkeyPatch) -> None:
    hosts = {"web01": "198.18.2.11", "webtwo": "198.18.2.12"}

    def lookup(name: str) -> str:
        if name not in hosts:
            raise OSError(f"unknown host {name}")
        return hosts[name]

    monkeypatch.setattr("pyvs.admin.options.socket.gethostbyname", lookup)
    from pyvs.admin.options import _host

    _host.cache_clear()
    try:
        assert parse_args(["-a", "-t", "198.18.0.100:443", "-r", "web01:443", "-g"]).real == (IP("198.18.2.11"), 443)
        assert parse_args(["-a", "-t", "198.18.0.100:443", "-r", "webtwo:443", "-g"]).real == (IP("198.18.2.12"), 443)
        with pytest.raises(UsageError, match="invalid IPv4 address"):
            parse_args(["-a", "-t", "198.18.0.100:443", "-r", "198.18.2.300:443"])  # numbers are never looked up
    finally:
        _host.cache_clear()
