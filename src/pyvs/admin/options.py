"""ipvsadm's command line, parsed into a `Command`.

Option names, the table of legal option/command pairs and the error wording follow
ipvsadm 1.31 (ipvsadm.c). Options that the pyvs data plane does not implement are
refused with a message that names them.
"""

from __future__ import annotations

import functools
import re
import shlex
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from enum import Enum
from ipaddress import IPv4Address, IPv6Address

from pyvs.model import (
    DEFAULT_PERSISTENCE,
    MAX_FWMARK,
    MAX_THRESHOLD,
    MAX_WEIGHT,
    MH_TABLE_SIZES,
    ONEPACKET_UDP_ONLY,
    TUN_TYPES,
    Forwarding,
    IPAddress,
    ModelError,
    Netmask,
    Protocol,
    ServiceKey,
    Timeouts,
    Tunnel,
    fwmark_key,
    parse_address,
    parse_ipv4,
    parse_netmask_for,
    parse_port,
    validate_weight,
)

MAX_TIMEOUT = 86400 * 31  # ipvsadm's MAX_TIMEOUT: 31 days


class UsageError(Exception):
    """A command line ipvsadm would refuse before touching the kernel (exit status 2)."""

    def __init__(self, message: str, show_help: bool = False) -> None:
        super().__init__(message)
        self.show_help = show_help  # add the "Try `pyvsadm -h'" line, as ipvsadm's tryhelp_exit


class Action(Enum):
    """An ipvsadm command; the value is its name in ipvsadm's messages (cmdnames[])."""

    ADD_SERVICE = "add-service"
    EDIT_SERVICE = "edit-service"
    DELETE_SERVICE = "delete-service"
    FLUSH = "flush"
    LIST = "list"
    ADD_SERVER = "add-server"
    DELETE_SERVER = "delete-server"
    EDIT_SERVER = "edit-server"
    SET_TIMEOUTS = "set"
    START_DAEMON = "start-daemon"
    STOP_DAEMON = "stop-daemon"
    RESTORE = "restore"
    SAVE = "save"
    ZERO = "zero"
    HELP = "help"
    VERSION = "version"


# Actions that change the rule set; the only ones allowed in --restore input.
RULE_ACTIONS = frozenset(
    {
        Action.ADD_SERVICE,
        Action.EDIT_SERVICE,
        Action.DELETE_SERVICE,
        Action.FLUSH,
        Action.ADD_SERVER,
        Action.EDIT_SERVER,
        Action.DELETE_SERVER,
    }
)

# The options pyvs implements, in ipvsadm's optnames[] order and with its names; then pyvs's extensions.
OPTION_NAMES = (
    "numeric",
    "connection",
    "service-address",
    "scheduler",
    "persistent",
    "netmask",
    "real-server",
    "forwarding-method",
    "weight",
    "u-threshold",
    "l-threshold",
    "timeout",
    "stats",
    "rate",
    "thresholds",
    "nosort",
    "exact",
    "ops",
    "sched-flags",
    "mh-table-size",  # pyvs extension
    "mcast-interface",
    "daemon",
    "syncid",
    "mcast-group",
    "mcast-port",
    "mcast-ttl",
    "sync-maxlen",
)

# ipvsadm's commands_v_options, reduced to OPTION_NAMES (one character per option):
# '+' compulsory, 'x' illegal, '1' at most one of the '1' options, ' ' optional.
LEGALITY = {
    Action.ADD_SERVICE: "xx+   xxxxxxxxxxx   " "xxxxxxx",
    Action.EDIT_SERVICE: "xx+   xxxxxxxxxxx   " "xxxxxxx",
    Action.DELETE_SERVICE: "xx+xxxxxxxxxxxxxxxxx" "xxxxxxx",
    Action.FLUSH: "xxxxxxxxxxxxxxxxxxxx" "xxxxxxx",
    Action.LIST: " 11xxxxxxxx1     xxx" "x1 xxxx",
    Action.ADD_SERVER: "xx+xxx+    xxxxxxxxx" "xxxxxxx",
    Action.DELETE_SERVER: "xx+xxx+xxxxxxxxxxxxx" "xxxxxxx",
    Action.EDIT_SERVER: "xx+xxx+    xxxxxxxxx" "xxxxxxx",
    Action.SET_TIMEOUTS: "xxxxxxxxxxxxxxxxxxxx" "xxxxxxx",
    Action.START_DAEMON: "xxxxxxxxxxxxxxxxxxxx" " x     ",
    Action.STOP_DAEMON: "xxxxxxxxxxxxxxxxxxxx" "xx xxxx",
    Action.RESTORE: "xxxxxxxxxxxxxxxxxxxx" "xxxxxxx",
    Action.SAVE: " xxxxxxxxxxxxxxxxxxx" "xxxxxxx",
    Action.ZERO: "xx xxxxxxxxxxxxxxxxx" "xxxxxxx",
}


@dataclass(frozen=True)
class Command:
    """One parsed ipvsadm invocation."""

    action: Action
    service: ServiceKey | None = None
    scheduler: str | None = None
    real: tuple[IPAddress, int] | None = None  # port already set to the service port (DR), or as given (-m)
    weight: int | None = None
    persistent: int | None = None  # -p timeout, None without -p
    netmask: Netmask | None = None  # -M: a netmask (IPv4 service) or a prefix length (IPv6 service)
    sched_flags: tuple[str, ...] = ()
    mh_table_size: int | None = None  # --mh-table-size (pyvs extension)
    onepacket: bool = False  # -o
    u_threshold: int | None = None  # -x
    l_threshold: int | None = None  # -y
    forwarding: Forwarding | None = None  # -g, -m, -i; None: not given (the default, -g, also for -e as ipvsadm's)
    tunnel: Tunnel | None = None  # -i's --tun-type, --tun-port, --tun-*csum
    tun_info: bool = False  # -L --tun-info
    timeouts: Timeouts | None = None  # --set values; 0 leaves a timeout unchanged
    numeric: bool = False
    connection: bool = False
    list_timeouts: bool = False
    stats: bool = False
    rate: bool = False
    thresholds: bool = False
    exact: bool = False
    sort: bool = True
    daemon_state: str | None = None  # --start-daemon/--stop-daemon master|backup
    list_daemon: bool = False  # -L --daemon
    mcast_interface: str = ""  # --start-daemon's settings; "" and 0: the defaults
    syncid: int = 0
    sync_maxlen: int = 0
    mcast_group: str = ""
    mcast_port: int = 0
    mcast_ttl: int = 0


@dataclass(frozen=True)
class _Spec:
    short: str | None
    long: str
    takes_arg: bool
    action: Action | None = None  # set for command options
    unsupported: str | None = None  # why pyvs refuses it
    optional_arg: bool = False  # -p [timeout]: takes the next word when it is a number


_NO_PE = ("a persistence engine reads the packet's payload (sip: the Call-ID of SIP messages) and pyvs's data "
          "plane reads only the headers; it has no SIP parser (use -p, persistence by client address)")
_SPECS = (
    _Spec("A", "add-service", False, Action.ADD_SERVICE),
    _Spec("E", "edit-service", False, Action.EDIT_SERVICE),
    _Spec("D", "delete-service", False, Action.DELETE_SERVICE),
    _Spec("C", "clear", False, Action.FLUSH),
    _Spec("L", "list", False, Action.LIST),
    _Spec("l", "list", False, Action.LIST),
    _Spec("Z", "zero", False, Action.ZERO),
    _Spec("a", "add-server", False, Action.ADD_SERVER),
    _Spec("e", "edit-server", False, Action.EDIT_SERVER),
    _Spec("d", "delete-server", False, Action.DELETE_SERVER),
    _Spec(None, "set", False, Action.SET_TIMEOUTS),
    _Spec("h", "help", False, Action.HELP),
    _Spec("v", "version", False, Action.VERSION),
    _Spec("R", "restore", False, Action.RESTORE),
    _Spec("S", "save", False, Action.SAVE),
    _Spec("t", "tcp-service", True),
    _Spec("u", "udp-service", True),
    _Spec("s", "scheduler", True),
    _Spec("r", "real-server", True),
    _Spec("g", "gatewaying", False),
    _Spec("w", "weight", True),
    _Spec("n", "numeric", False),
    _Spec("c", "connection", False),
    _Spec(None, "timeout", False),
    _Spec(None, "stats", False),
    _Spec(None, "nosort", False),
    _Spec(None, "sort", False),
    _Spec("X", "exact", False),
    _Spec(None, "start-daemon", True, Action.START_DAEMON),
    _Spec(None, "stop-daemon", True, Action.STOP_DAEMON),
    _Spec(None, "daemon", False),
    _Spec(None, "mcast-interface", True),
    _Spec(None, "mcast-group", True),
    _Spec(None, "mcast-port", True),
    _Spec(None, "mcast-ttl", True),
    _Spec(None, "sync-maxlen", True),
    _Spec(None, "syncid", True),
    _Spec(None, "sctp-service", True),
    _Spec("f", "fwmark-service", True),
    _Spec("6", "ipv6", False),
    _Spec("m", "masquerading", False),
    _Spec("i", "ipip", False),
    _Spec(None, "tun-type", True),
    _Spec(None, "tun-port", True),
    _Spec(None, "tun-nocsum", False),
    _Spec(None, "tun-csum", False),
    _Spec(None, "tun-remcsum", False),
    _Spec(None, "tun-info", False),
    _Spec("p", "persistent", False, optional_arg=True),
    _Spec("M", "netmask", True),
    _Spec(None, "pe", True, unsupported=_NO_PE),
    _Spec("o", "ops", False),
    _Spec("b", "sched-flags", True),
    _Spec(None, "mh-table-size", True),
    _Spec("x", "u-threshold", True),
    _Spec("y", "l-threshold", True),
    _Spec(None, "thresholds", False),
    _Spec(None, "rate", False),
    _Spec(None, "persistent-conn", False, unsupported="listing persistent connections is not implemented yet"),
)
_BY_SHORT = {spec.short: spec for spec in _SPECS if spec.short}
_BY_LONG = {spec.long: spec for spec in _SPECS}
# The option name of ipvsadm's messages, for options that are not plain long names.
_OPTION_OF = {
    "tcp-service": "service-address",
    "udp-service": "service-address",
    "sctp-service": "service-address",
    "fwmark-service": "service-address",
    "real-server": "real-server",
    "gatewaying": "forwarding-method",
    "masquerading": "forwarding-method",
    "ipip": "forwarding-method",
}
_FORWARDING_OF = {"gatewaying": Forwarding.ROUTE, "masquerading": Forwarding.MASQ, "ipip": Forwarding.TUNNEL}
# ipvsadm's tunnel options (last in its optnames[]): legal with -a and -e only, --tun-info with -L only.
TUNNEL_OPTIONS = ("tun-type", "tun-port", "tun-nocsum", "tun-csum", "tun-remcsum")
# ipvsadm's tunnel_types_v_options over tun-port, tun-nocsum, tun-csum, tun-remcsum.
TUNNEL_LEGALITY = {"ipip": "xxxx", "gue": "+111", "gre": "x11x"}


def _unsupported(spec: _Spec, written: str) -> UsageError:
    return UsageError(f"option '{written}' ({spec.long}) is not supported: {spec.unsupported}")


def _tokens(argv: Sequence[str]) -> list[tuple[str, _Spec, str | None] | tuple[str, None, str]]:
    """Split argv into (written option, spec, argument) and (text, None, text) for positionals."""
    out: list[tuple[str, _Spec, str | None] | tuple[str, None, str]] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        i += 1
        if arg == "--":
            out.extend((rest, None, rest) for rest in argv[i:])
            break
        if arg.startswith("--"):
            name, eq, value = arg[2:].partition("=")
            spec = _BY_LONG.get(name)
            if spec is None:
                raise UsageError(f"unknown option '--{name}'", show_help=True)
            if spec.unsupported:
                raise _unsupported(spec, f"--{name}")
            if spec.optional_arg:
                if not eq and i < len(argv) and argv[i].isdigit():
                    value, i = argv[i], i + 1
                out.append((f"--{name}", spec, value if eq or value else None))
                continue
            if spec.takes_arg and not eq:
                if i >= len(argv):
                    raise UsageError(f"option '--{name}' needs an argument", show_help=True)
                value, i = argv[i], i + 1
            elif eq and not spec.takes_arg:
                raise UsageError(f"option '--{name}' takes no argument", show_help=True)
            out.append((f"--{name}", spec, value if spec.takes_arg else None))
        elif arg.startswith("-") and len(arg) > 1:
            cluster = arg[1:]
            while cluster:
                letter, cluster = cluster[0], cluster[1:]
                spec = _BY_SHORT.get(letter)
                if spec is None:
                    raise UsageError(f"unknown option '-{letter}'", show_help=True)
                if spec.unsupported:
                    raise _unsupported(spec, f"-{letter}")
                value = None
                if spec.optional_arg:
                    if cluster:
                        value, cluster = cluster, ""
                    elif i < len(argv) and argv[i].isdigit():
                        value, i = argv[i], i + 1
                elif spec.takes_arg:
                    if cluster:
                        value, cluster = cluster, ""
                    elif i < len(argv):
                        value, i = argv[i], i + 1
                    else:
                        raise UsageError(f"option '-{letter}' needs an argument", show_help=True)
                out.append((f"-{letter}", spec, value))
        else:
            out.append((arg, None, arg))
    return out


@functools.lru_cache(maxsize=65536)  # a saved rule file names each address many times
def _host(text: str) -> IPv4Address:
    """An IPv4 address, or a host name resolved to one (as ipvsadm's host_to_addr)."""
    try:
        return parse_ipv4(text)
    except ModelError:
        if not text or ":" in text or text.startswith("[") or all(c.isdigit() or c == "." for c in text):
            raise
        try:
            return IPv4Address(socket.gethostbyname(text))
        except OSError:
            raise ModelError(f"invalid IPv4 address or unknown host '{text}'") from None


def _port(text: str, proto: Protocol) -> int:
    if text.isdigit():
        return parse_port(text)
    try:
        return socket.getservbyname(text, proto.name.lower())
    except OSError:
        raise ModelError(f"invalid port '{text}': not a number or a known service name") from None


def _address(text: str, proto: Protocol, what: str) -> tuple[IPAddress, int | None]:
    """host[:port], [ipv6]:port or a bare IPv6 address, as ipvsadm's parse_service; the port is None when absent.
    As there, brackets need the port after them, and a bare IPv6 address has no port."""
    try:
        if text.isdigit():
            raise ModelError(f"'{text}' is not an address")
        if text.startswith("["):
            inside, bracket, rest = text[1:].partition("]")
            if not bracket or not rest.startswith(":"):
                raise ModelError(f"'{text}': write an IPv6 address with a port as [ADDRESS]:PORT")
            address = parse_address(inside)
            if not isinstance(address, IPv6Address):
                raise ModelError(f"'{text}': brackets are for IPv6 addresses only")
            return address, _port(rest[1:], proto)
        if text.count(":") > 1:
            address = parse_address(text)
            if not isinstance(address, IPv6Address):
                raise ModelError(f"'{text}' is not an address")
            return address, None
        host, sep, port = text.partition(":")
        return _host(host), (_port(port, proto) if sep else None)
    except ModelError as err:
        raise UsageError(f"illegal {what} address[:port] specified: {err}") from None


def _number(text: str) -> int | None:
    """A decimal integer (as ipvsadm's string_to_number), or None."""
    return int(text) if re.fullmatch(r"[+-]?[0-9]+", text) else None


def _weight(text: str) -> int:
    value = _number(text)
    if value is None:
        raise UsageError(f"illegal weight specified: '{text}' is not a number (0-{MAX_WEIGHT})")
    try:
        return validate_weight(value)
    except ModelError as err:
        raise UsageError(f"illegal weight specified: {err}") from None


def _persistence(text: str) -> int:
    value = _number(text)
    if value is None or not 1 <= value <= MAX_TIMEOUT:
        raise UsageError(f"invalid timeout value `{text}' specified (1-{MAX_TIMEOUT} seconds)")
    return value


def _mh_table_size(text: str) -> int:
    value = _number(text)
    if value not in MH_TABLE_SIZES:
        raise UsageError(f"illegal mh table size specified: '{text}' (one of {', '.join(map(str, MH_TABLE_SIZES))})")
    return value


def _threshold(text: str, which: str) -> int:
    value = _number(text)
    if value is None or not 0 <= value <= MAX_THRESHOLD:
        raise UsageError(f"illegal {which} specified: '{text}' (0-{MAX_THRESHOLD})")
    return value


def _fwmark(text: str) -> int:
    """ipvsadm's parse_fwmark: a decimal integer from 1 to UINT_MAX."""
    value = _number(text)
    if value is None or not 0 < value <= MAX_FWMARK:
        raise UsageError(f"invalid fwmark value `{text}' specified")
    return value


def _timeout(text: str) -> int:
    value = _number(text)
    if value is None or not 0 <= value <= MAX_TIMEOUT:
        raise UsageError(f"invalid timeout value `{text}' specified (0-{MAX_TIMEOUT} seconds)")
    return value


DEFAULT_MCAST_INTERFACE = "eth0"  # ipvsadm's DEF_MCAST_IFN


def _bounded(values: dict[str, str], name: str, low: int, high: int, message: str) -> int:
    """An option's number in low..high (0 when absent), as ipvsadm's string_to_number; else `message`."""
    if name not in values:
        return 0
    value = _number(values[name])
    if value is None or not low <= value <= high:
        raise UsageError(message)
    return value


def _mcast_group(text: str) -> str:
    """--mcast-group: a multicast address of either family, as ipvsadm checks it."""
    if ":" in text:
        try:
            if IPv6Address(text).is_multicast:
                return text
        except ValueError:
            pass
        raise UsageError(f"invalid IPv6 mcast-group `{text}'")
    try:
        if IPv4Address(text).is_multicast:
            return text
    except ValueError:
        pass
    raise UsageError(f"invalid IPv4 mcast-group `{text}'")


def _check_legality(action: Action, given: set[str]) -> None:
    """ipvsadm's generic_opt_check, with its messages."""
    table = LEGALITY[action]
    first_exclusive: str | None = None
    for name, rule in zip(OPTION_NAMES, table, strict=True):
        if name not in given:
            if rule == "+":
                raise UsageError(f"You need to supply the '{name}' option for the '{action.value}' command")
            continue
        if rule == "x":
            raise UsageError(f"Illegal '{name}' option with the '{action.value}' command")
        if rule == "1":
            if first_exclusive is not None:
                raise UsageError(
                    f"The option '{name}' conflicts with the '{first_exclusive}' option "
                    f"in the '{action.value}' command"
                )
            first_exclusive = name


def _check_tunnel(action: Action, given: set[str], values: dict[str, str]) -> Tunnel | None:
    """ipvsadm's checks of the tunnel options (its messages): where they are legal, that they go with -i, and its
    table of tunnel types and options. Returns the tunnel of an -a or -e with -i."""
    for name in (*TUNNEL_OPTIONS, "tun-info"):
        legal = action in (Action.ADD_SERVER, Action.EDIT_SERVER) if name != "tun-info" else action is Action.LIST
        if name in given and not legal:
            raise UsageError(f"Illegal '{name}' option with the '{action.value}' command")
    if action not in (Action.ADD_SERVER, Action.EDIT_SERVER):
        return None
    tunnel_given = any(name in given for name in TUNNEL_OPTIONS)
    if values.get("forwarding-method") != "ipip":
        if tunnel_given:
            raise UsageError("Tunnel options conflict with forward method")
        return None
    kind = values.get("tun-type", "ipip")
    if kind not in TUN_TYPES:
        raise UsageError("illegal tunnel type specified")
    port = 0
    if "tun-port" in values:
        number = _number(values["tun-port"])
        if number is None or not 1 <= number <= 65535:
            raise UsageError("illegal tunnel port specified")
        port = number
    first_exclusive: str | None = None
    for name, rule in zip(TUNNEL_OPTIONS[1:], TUNNEL_LEGALITY[kind], strict=True):
        if name not in given:
            if rule == "+":
                raise UsageError(f"You need to supply the '{name}' option for the '{kind}' tunnel type")
        elif rule == "x":
            raise UsageError(f"Illegal '{name}' option with the '{kind}' tunnel type")
        elif rule == "1":
            if first_exclusive is not None:
                raise UsageError(f"The option '{name}' conflicts with the '{first_exclusive}' option in the "
                                 f"'{kind}' tunnel type")
            first_exclusive = name
    csum = first_exclusive[len("tun-"):] if first_exclusive else "nocsum"
    return Tunnel(kind, port, csum)


def parse_args(argv: Sequence[str]) -> Command:
    """Parse one ipvsadm invocation (without the program name). Raises UsageError."""
    action: Action | None = None
    daemon_state: str | None = None
    given: set[str] = set()
    positionals: list[str] = []
    values: dict[str, str] = {}
    proto = Protocol.TCP
    fwmark: int | None = None
    family = 4
    for written, spec, value in _tokens(argv):
        if spec is None:
            positionals.append(written)
            continue
        if spec.action is not None:
            if action is not None:
                raise UsageError("multiple commands specified")
            action = spec.action
            if action in (Action.START_DAEMON, Action.STOP_DAEMON):
                if value not in ("master", "backup"):
                    raise UsageError("illegal start-daemon parameter specified" if action is Action.START_DAEMON
                                     else "illegal start_daemon specified")  # sic, ipvsadm's words
                daemon_state = value
            continue
        if spec.long == "sort":
            continue  # the default; a no-op kept for compatibility, as in ipvsadm
        if spec.long == "ipv6":
            if fwmark is None:
                raise UsageError("-6 used before -f")
            family = 6
            continue
        name = _OPTION_OF.get(spec.long, spec.long)
        if name in given:
            raise UsageError(f"multiple '{name}' options specified")
        given.add(name)
        if value is not None:
            values[name] = value
        if name == "forwarding-method":
            values[name] = spec.long
        if spec.long == "udp-service":
            proto = Protocol.UDP
        elif spec.long == "sctp-service":
            proto = Protocol.SCTP
        elif spec.long == "fwmark-service" and value is not None:
            fwmark = _fwmark(value)
    if action is None:
        raise UsageError("no command specified", show_help=True)
    if action in (Action.HELP, Action.VERSION):
        return Command(action)

    timeouts = None
    if action is Action.SET_TIMEOUTS:
        if len(positionals) < 3:
            raise UsageError("--set option requires 3 timeout values")
        timeouts = Timeouts(*(_timeout(text) for text in positionals[:3]))
        positionals = positionals[3:]
    if positionals:
        raise UsageError(f"unexpected argument {positionals[0]}")

    service = None
    if fwmark is not None:
        service = fwmark_key(fwmark, family)
    elif "service-address" in values:
        vip, vport = _address(values["service-address"], proto, "virtual server")
        service = ServiceKey(proto, vip, vport or 0)
    real = None
    if "real-server" in values:
        rip, rport = _address(values["real-server"], proto, "real server")
        # Without a port, the service's. -a/-e by direct routing take the service's whatever was written (ipvsadm:
        # "The destination port must be equal to the service port"); masquerading and -d take the one given.
        vport = service.port if service else 0
        routed = action in (Action.ADD_SERVER, Action.EDIT_SERVER) and values.get("forwarding-method") != "masquerading"
        real = (rip, vport if rport is None or routed else rport)
        if service and service.is_fwmark:  # no port of its own: the real keeps the one given, 0 without one (IPVS)
            real = (rip, rport or 0)
    weight = _weight(values["weight"]) if "weight" in values else None
    persistent = None
    if "persistent" in given:
        persistent = _persistence(values["persistent"]) if "persistent" in values else DEFAULT_PERSISTENCE
    netmask = None
    if "netmask" in values:
        family = service.family if service else 4
        try:
            netmask = parse_netmask_for(values["netmask"], family)
        except ModelError as err:
            what = "ipv6 netmask" if family == 6 else "virtual server netmask"
            raise UsageError(f"illegal {what} specified: {err}") from None
    sched_flags = tuple(values["sched-flags"].split(",")) if "sched-flags" in values else ()
    mh_table_size = _mh_table_size(values["mh-table-size"]) if "mh-table-size" in values else None
    u_threshold = _threshold(values["u-threshold"], "u_threshold") if "u-threshold" in values else None
    l_threshold = _threshold(values["l-threshold"], "l_threshold") if "l-threshold" in values else None
    syncid = _bounded(values, "syncid", 0, 255, "illegal syncid specified")
    mcast_port = _bounded(values, "mcast-port", 1, 65535, "illegal mcast-port specified")
    mcast_ttl = _bounded(values, "mcast-ttl", 1, 255, "illegal mcast-ttl specified")
    sync_maxlen = _bounded(values, "sync-maxlen", 1, 65535 - 20 - 8, "illegal sync-maxlen specified")
    mcast_group = _mcast_group(values["mcast-group"]) if "mcast-group" in values else ""
    mcast_interface = values.get("mcast-interface", "")[:15]  # IP_VS_IFNAME_MAXLEN - 1
    if action is Action.START_DAEMON and not mcast_interface:
        mcast_interface = DEFAULT_MCAST_INTERFACE

    _check_legality(action, given - {*TUNNEL_OPTIONS, "tun-info"})
    tunnel = _check_tunnel(action, given, values)
    forwarding = None
    if "forwarding-method" in values:
        forwarding = _FORWARDING_OF[values["forwarding-method"]]
    if (action in (Action.ADD_SERVICE, Action.EDIT_SERVICE) and service and service.port == 0
            and not service.is_fwmark and persistent is None):
        raise UsageError("Zero port specified for non-persistent service")
    if (action in (Action.ADD_SERVICE, Action.EDIT_SERVICE) and "ops" in given and service
            and not service.is_fwmark and service.proto is not Protocol.UDP):
        raise UsageError(ONEPACKET_UDP_ONLY)
    if (action is Action.LIST and given & {"connection", "timeout", "daemon"}
            and given & {"stats", "rate", "thresholds"}):
        raise UsageError("options conflicts in the list command")
    return Command(
        action,
        service=service,
        scheduler=values.get("scheduler"),
        real=real,
        weight=weight,
        persistent=persistent,
        netmask=netmask,
        sched_flags=sched_flags,
        mh_table_size=mh_table_size,
        onepacket="ops" in given,
        u_threshold=u_threshold,
        l_threshold=l_threshold,
        forwarding=forwarding,
        tunnel=tunnel,
        tun_info="tun-info" in given,
        timeouts=timeouts,
        numeric="numeric" in given,
        connection="connection" in given,
        list_timeouts="timeout" in given,
        stats="stats" in given,
        rate="rate" in given,
        thresholds="thresholds" in given,
        exact="exact" in given,
        sort="nosort" not in given,
        daemon_state=daemon_state,
        list_daemon="daemon" in given,
        mcast_interface=mcast_interface,
        syncid=syncid,
        sync_maxlen=sync_maxlen,
        mcast_group=mcast_group,
        mcast_port=mcast_port,
        mcast_ttl=mcast_ttl,
    )


PROGRAM_NAMES = ("ipvsadm", "pyvsadm")


def parse_restore(text: str) -> list[tuple[int, Command]]:
    """Parse --restore input: one invocation per line, optionally led by the program name.

    Blank lines and # comments are skipped. Only rule commands are allowed. Every error
    names its line number.
    """
    return list(iter_restore(text))


# The two line shapes `-S -n` writes, parsed without the general parser (a rule file has 1e5 of them).
_IPV4 = r"(\d{1,3}(?:\.\d{1,3}){3})"
_SAVED_ADD_SERVER = re.compile(rf"-a -([tu]) {_IPV4}:(\d{{1,5}}) -r {_IPV4}(?::\d{{1,5}})?( -g)?(?: -w (\d{{1,5}}))?")
_SAVED_ADD_SERVICE = re.compile(rf"-A -([tu]) {_IPV4}:(\d{{1,5}}) -s ([a-z]+)")
_PROTOCOLS = {"t": Protocol.TCP, "u": Protocol.UDP}


class _SavedLines:
    """Parses the common saved lines into the Command parse_args would give, or None for any other
    line (or a value parse_args must judge, such as an out-of-range number)."""

    def __init__(self) -> None:
        self.addresses: dict[str, IPv4Address] = {}
        self.services: dict[tuple[str, str, str], ServiceKey] = {}

    def _service(self, proto: str, vip: str, port: str) -> ServiceKey | None:
        key = self.services.get((proto, vip, port))
        if key is None:
            address = self._address(vip)
            if address is None or not 0 < int(port) <= 65535:
                return None
            key = self.services[(proto, vip, port)] = ServiceKey(_PROTOCOLS[proto], address, int(port))
        return key

    def _address(self, text: str) -> IPv4Address | None:
        address = self.addresses.get(text)
        if address is None:
            try:
                address = self.addresses[text] = IPv4Address(text)
            except ValueError:
                return None
        return address

    def parse(self, line: str) -> Command | None:
        if line.startswith("-a "):
            match = _SAVED_ADD_SERVER.fullmatch(line)
            if match is None:
                return None
            proto, vip, vport, rip, gatewaying, weight = match.groups()
            service, real = self._service(proto, vip, vport), self._address(rip)
            if service is None or real is None or (weight is not None and int(weight) > MAX_WEIGHT):
                return None
            return Command(Action.ADD_SERVER, service=service, real=(real, service.port),
                           weight=None if weight is None else int(weight),
                           forwarding=Forwarding.ROUTE if gatewaying else None)
        if line.startswith("-A "):
            match = _SAVED_ADD_SERVICE.fullmatch(line)
            if match is None:
                return None
            proto, vip, vport, scheduler = match.groups()
            service = self._service(proto, vip, vport)
            return None if service is None else Command(Action.ADD_SERVICE, service=service, scheduler=scheduler)
        return None


def iter_restore(text: str) -> Iterator[tuple[int, Command]]:
    """parse_restore, one line at a time."""
    saved = _SavedLines()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        for name in PROGRAM_NAMES:
            if line.startswith(name + " "):
                line = line[len(name) + 1:].lstrip()
        command = saved.parse(line)
        if command is not None:
            yield number, command
            continue
        try:
            # shlex is slow; most saved rules have nothing for it to do
            words = shlex.split(line, comments=True) if any(c in line for c in "'\"\\#") else line.split()
            if words and words[0].rsplit("/", 1)[-1] in PROGRAM_NAMES:
                words = words[1:]
            if not words:
                continue
            command = parse_args(words)
            if command.action not in RULE_ACTIONS:
                raise UsageError(
                    f"the '{command.action.value}' command is not allowed in restore input "
                    "(only -A -E -D -C -a -e -d)"
                )
        except (UsageError, ValueError) as err:
            raise UsageError(f"line {number}: {err}") from None
        yield number, command
