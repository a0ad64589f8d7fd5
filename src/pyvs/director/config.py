"""The director daemon's config file (TOML): interfaces, services, reals, checks, sorry servers, notify.

    [director]
    interface = "eth0"              # optional: attach XDP here unless a program is already attached
    status_listen = "127.0.0.1:9180"   # GET /status, /metrics, /page (the live status page)
    node_exporter_metrics = true    # /metrics also as node_exporter's ipvs collector (node_ipvs_*)
    page_token = "..."              # optional: the page may drain/undrain reals with this token
    notify = ["/usr/local/bin/lb-notify", "{event}", "{service}", "{real}"]

    [[service]]
    proto = "tcp"
    vip = "198.18.0.100"
    port = 80
    scheduler = "sh"
    scheduler_flags = ["sh-port"]       # ipvsadm -b
    persistence_timeout = 600           # ipvsadm -p (seconds)
    persistence_granularity = "255.255.255.0"   # ipvsadm -M (an IPv6 service: a prefix length, e.g. 64)
    mh_table_size = 65521               # scheduler mh only: pyvsadm --mh-table-size (default: from the reals)
    sorry_server = "198.18.2.20"        # IPv6: "2001:db8:2::20" or "[2001:db8:2::20]:80"
    check = { type = "http", path = "/", status = [200], interval = 1.0, timeout = 1.0, rise = 2, fall = 2 }

    ops = false                         # UDP only: one-packet scheduling (ipvsadm -o, keepalived's ops)

    [[service.real]]
    address = "198.18.2.11"
    weight = 1
    uthreshold = 0                      # ipvsadm -x: no new connections at this many (0: no limit)
    lthreshold = 0                      # ipvsadm -y: new ones again below this many (0: 3/4 of uthreshold)

    [[service.real]]
    address = "198.18.6.12"             # routed: tunnelled to (ipvsadm -i); forwarding may be set per service too
    forwarding = "tun"                  # "dr" (the default) or "tun"
    tunnel = { type = "gue", port = 6080, csum = "nocsum" }   # --tun-type, --tun-port, --tun-{nocsum,csum,remcsum}

    [bgp]                               # optional: announce the VIPs over BGP (active/active behind ECMP)
    local_asn = 65001
    peer_asn = 65000
    peers = ["198.18.2.1"]              # or tables: { address = "198.18.2.2", asn = 65010 }; IPv6 peers too
    next_hop6 = "2001:db8:2::10"        # IPv6 VIPs announced over IPv4 sessions: their next hop (this director)
    hold_time = 9                       # seconds; keepalives every third of it
    communities = ["65001:80"]          # standard (ASN:VALUE) or large (ASN:A:B) communities

    [vrrp]                              # optional: active/backup; keepalived's VRRP owns the VIPs on `interface`
    instance = "VI_1"                   # keepalived's vrrp_instance (named in the status and logs)
    [sync]                              # optional: IPVS connection sync with the other directors
    role = "both"                       # master (send), backup (receive) or both (active/active peers)
    interface = "eth1"                  # ipvsadm --mcast-interface
    syncid = 1                          # 0-255; a backup with 0 takes every master's messages
    group = "224.0.0.81"                # --mcast-group; port = 8848, ttl = 1, maxlen = 0 (from the MTU) as ipvsadm

A service is IPv4 or IPv6 (`vip = "2001:db8::100"`); its reals and sorry server are of its family (direct routing
keeps the packet). Every error names the file and the line it comes from; a file with any error is refused whole.
A command (check or notify) must be a file that only root can change (keepalived's enable_script_security):
load_config checks it, and the daemon checks again before each run.
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import stat
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pyvs.model import (
    DEFAULT_PERSISTENCE,
    HOST_MASK,
    HOST_PREFIX6,
    MAX_FWMARK,
    MAX_THRESHOLD,
    MAX_WEIGHT,
    Forwarding,
    IPAddress,
    ModelError,
    Netmask,
    Protocol,
    Real,
    RealKey,
    Service,
    ServiceKey,
    Tunnel,
    endpoint_text,
    fwmark_key,
    parse_address,
    parse_endpoint,
    parse_ipv4,
    parse_listen,
    parse_netmask_for,
    sched_flag_bits,
    sched_flag_names,
    validate_real,
    validate_scheduler,
    validate_service,
    validate_tunnel,
)

CHECK_TYPES = ("tcp", "http", "https", "command", "none")
XDP_MODES = ("native", "generic")
DEFAULT_LISTEN = "127.0.0.1:9180"
STATUS_RANGE = re.compile(r"(\d{3})(?:-(\d{3}))?")



class ConfigError(ValueError):
    """The config file is invalid; the message names the file and line."""


@dataclass(frozen=True)
class CheckSpec:
    """How one real is checked. `port` None: the real's port."""

    type: str = "tcp"
    interval: float = 2.0
    timeout: float = 2.0
    retry_interval: float | None = None  # after a failure while up; None: interval
    rise: int = 1
    fall: int = 1
    port: int | None = None
    path: str = "/"
    status: tuple[tuple[int, int], ...] = ((200, 299),)  # accepted status code ranges
    digest: str | None = None  # MD5 hex of the body (keepalived's genhash)
    regex: str | None = None
    host: str | None = None  # Host header (default: the real's address)
    tls_verify: bool = False
    command: tuple[str, ...] = ()  # argv; {rip} and {port} are replaced
    user: str | None = None  # run the command as this user (None: as the daemon, root)

    def accepts(self, status: int) -> bool:
        return any(low <= status <= high for low, high in self.status)


@dataclass(frozen=True)
class RealSpec:
    rip: IPAddress
    port: int
    weight: int
    check: CheckSpec
    inhibit_on_failure: bool
    forwarding: Forwarding = Forwarding.ROUTE
    tunnel: Tunnel | None = None  # with Forwarding.TUNNEL
    u_threshold: int = 0  # ipvsadm -x (keepalived's uthreshold)
    l_threshold: int = 0  # ipvsadm -y (keepalived's lthreshold)

    def real(self, weight: int) -> Real:
        """The model's real with this weight, reached as the spec says, with its thresholds."""
        return Real(self.rip, self.port, weight, self.forwarding, tunnel=self.tunnel, u_threshold=self.u_threshold,
                    l_threshold=self.l_threshold)

    @property
    def key(self) -> RealKey:
        return (self.rip, self.port)


@dataclass(frozen=True)
class ServiceSpec:
    key: ServiceKey
    scheduler: str
    reals: tuple[RealSpec, ...]
    sorry_server: RealKey | None = None
    quorum: int = 1
    hysteresis: int = 0
    alpha: bool = False  # start with every real down until a check succeeds
    persistent: int | None = None  # ipvsadm -p: persistence timeout in seconds
    netmask: Netmask = HOST_MASK  # ipvsadm -M: persistence granularity (IPv6: a prefix length, 128 by default)
    sched_flags: tuple[str, ...] = ()  # ipvsadm -b, in the names ipvsadm prints
    mh_table_size: int | None = None  # pyvsadm --mh-table-size; None: chosen from the reals in the data plane
    onepacket: bool = False  # ipvsadm -o (keepalived's ops)

    def real(self, key: RealKey) -> RealSpec | None:
        return next((r for r in self.reals if r.key == key), None)

    def service(self) -> Service:
        """The service's settings as the data plane holds them (no reals yet)."""
        return Service(self.key, self.scheduler, self.persistent, self.netmask, self.sched_flags,
                       mh_table_size=self.mh_table_size, onepacket=self.onepacket)


@dataclass(frozen=True)
class BgpPeer:
    address: IPAddress  # a session over IPv4 or IPv6; it carries the VIPs of both families
    asn: int


@dataclass(frozen=True)
class BgpSpec:
    """[bgp]: the sessions of the BGP speaker (BIRD) that announces the VIPs; see director/bgp.py."""

    local_asn: int
    peers: tuple[BgpPeer, ...]
    local_address: IPv4Address | None = None  # source of the sessions; None: the kernel's choice
    router_id: IPv4Address | None = None  # None: local_address, else BIRD's choice (its lowest address)
    next_hop: IPv4Address | None = None  # None: the session's own address (next hop self)
    next_hop6: IPv6Address | None = None  # IPv6 VIPs' next hop; None: next hop self (IPv6 sessions only)
    local_address6: IPv6Address | None = None  # source of the IPv6 sessions; None: the kernel's choice
    communities: tuple[tuple[int, ...], ...] = ()  # (asn, value) standard, (asn, a, b) large
    hold_time: int = 9  # seconds; BIRD sends keepalives every third of it
    connect_retry: int = 5  # seconds between attempts to open a session
    withdraw_wait: float = 2.0  # clean stop: seconds after the withdrawal is sent before the speaker stops


SYNC_ROLES = ("master", "backup", "both")


@dataclass(frozen=True)
class SyncSpec:
    """[sync]: the sync daemons the director runs (pyvs/sync): their settings as ipvsadm --start-daemon takes them."""

    role: str
    interface: str
    syncid: int = 0
    group: str = ""  # "": 224.0.0.81
    port: int = 0  # 0: 8848
    ttl: int = 0  # 0: 1
    maxlen: int = 0  # 0: from the interface's MTU, as the kernel

    @property
    def states(self) -> tuple[str, ...]:
        return ("master", "backup") if self.role == "both" else (self.role,)


@dataclass(frozen=True)
class VrrpSpec:
    """[vrrp]: keepalived's VRRP moves the VIPs (its virtual_ipaddress) onto `interface`; the daemon serves a VIP while
    it is there and leaves it to the kernel otherwise; see director/vrrp.py."""

    instance: str = ""  # keepalived's vrrp_instance name, for the status and logs
    announce_count: int = 3  # rounds of gratuitous ARP when a VIP arrives (keepalived sends its own too)


@dataclass(frozen=True)
class DirectorConfig:
    path: Path
    services: tuple[ServiceSpec, ...]
    interface: str | None = None
    xdp_mode: str = "native"
    status_listen: tuple[str, int] | None = ("127.0.0.1", 9180)
    notify: tuple[str, ...] = ()
    notify_timeout: float = 10.0
    flush_on_failure: bool = True
    user: str | None = None  # check and notify commands run as this user
    drift_check: float = 10.0  # seconds between comparisons of the daemon's services with the data plane; 0: off
    sloppy_tcp: bool | None = None  # the data plane's sloppy_tcp switch; None: left as it is
    expire_nodest_conn: bool | None = None
    node_exporter_metrics: bool = True  # /metrics adds node_exporter's ipvs collector families (node_ipvs_*)
    page_token: str | None = None  # the status page's actions (drain/undrain) need it; None: read-only page
    bgp: BgpSpec | None = None  # [bgp]: the VIPs announced over BGP by a BIRD the daemon drives; None: no BGP
    vrrp: VrrpSpec | None = None  # [vrrp]: active/backup, the VIPs moved by keepalived; None: the daemon owns them
    sync: SyncSpec | None = None  # [sync]: connection sync with the other directors; None: none

    def service(self, key: ServiceKey) -> ServiceSpec | None:
        return next((s for s in self.services if s.key == key), None)


class _Lines:
    """Line numbers of tables and keys in the TOML text, for error messages (tomllib gives none)."""

    HEADER = re.compile(r"^\s*(\[\[?)\s*([A-Za-z0-9_.\s\"]+?)\s*\]\]?\s*(#.*)?$")

    def __init__(self, text: str):
        self.lines = text.splitlines()
        self.tables: dict[tuple[str, ...], int] = {}  # ("service", "2", "real", "0") -> line
        counts: dict[tuple[str, ...], int] = {}
        last_index: dict[tuple[str, ...], int] = {}
        for number, line in enumerate(self.lines, start=1):
            match = self.HEADER.match(line)
            if not match:
                continue
            names = [n.strip().strip('"') for n in match.group(2).split(".")]
            path: list[str] = []
            for depth, name in enumerate(names):
                path.append(name)
                last = depth == len(names) - 1
                if last and match.group(1) == "[[":
                    index = counts.get(tuple(path), 0)
                    counts[tuple(path)] = index + 1
                    last_index[tuple(path)] = index
                    path.append(str(index))
                elif tuple(path) in last_index:
                    path.append(str(last_index[tuple(path)]))
            self.tables[tuple(path)] = number

    def of(self, table: tuple[str, ...], key: str | None = None) -> int:
        """The line of `key` in `table` (or of the table's header); 0 when unknown."""
        while table and table not in self.tables:  # an inline table: look in the one that holds it
            table = table[:-1]
        start = self.tables.get(table, 0)
        if key is None:
            return start
        following = sorted(n for n in self.tables.values() if n > start)
        end = following[0] if following else len(self.lines) + 1
        pattern = re.compile(rf"^\s*\"?{re.escape(key)}\"?\s*=|[{{,]\s*{re.escape(key)}\s*=")
        for number in range(start + 1 if start else 1, end):
            if pattern.search(self.lines[number - 1]):
                return number
        return start


class _Reader:
    """Typed access to one TOML table, with errors that point at the file and line."""

    def __init__(self, config_path: Path, lines: _Lines, table: dict[str, Any], where: tuple[str, ...],
                 label: str, allowed: tuple[str, ...]):
        self.path, self.lines, self.table, self.where, self.label = config_path, lines, table, where, label
        for key in table:
            if key not in allowed:
                self.fail(key, f"unknown setting '{key}' (known: {', '.join(allowed)})")

    def fail(self, key: str | None, message: str) -> None:
        line = self.lines.of(self.where, key)
        raise ConfigError(f"{self.path}:{line}: {self.label}: {message}" if line else
                          f"{self.path}: {self.label}: {message}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = None, required: bool = False) -> Any:
        if key not in self.table:
            if required:
                self.fail(None, f"'{key}' is missing")
            return default
        value = self.table[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) and bool not in kinds or not isinstance(value, kinds):
            names = " or ".join(k.__name__ for k in kinds)
            self.fail(key, f"'{key}' must be {names}, not {type(value).__name__} {value!r}")
        return value

    def number(self, key: str, default: float, minimum: float = 0.001) -> float:
        value = float(self.get(key, (int, float), default))
        if value < minimum:
            self.fail(key, f"'{key}' must be at least {minimum}, not {value}")
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int) -> int:
        value: int = self.get(key, int, default)
        if not minimum <= value <= maximum:
            self.fail(key, f"'{key}' must be between {minimum} and {maximum}, not {value}")
        return value

    def convert(self, key: str, parse: Callable[[Any], Any], default: Any = None, required: bool = False) -> Any:
        if key not in self.table:
            return self.get(key, object, default, required)
        try:
            return parse(self.table[key])
        except (ModelError, ValueError, TypeError) as exc:
            self.fail(key, f"'{key}': {exc}")
        return None  # not reached


DIRECTOR_KEYS = ("interface", "xdp_mode", "status_listen", "notify", "notify_timeout", "flush_on_failure", "user",
                 "drift_check", "sloppy_tcp", "expire_nodest_conn", "node_exporter_metrics", "page_token")
SERVICE_KEYS = ("proto", "vip", "port", "fwmark", "ip_family", "scheduler", "scheduler_flags", "persistence_timeout",
                "persistence_granularity", "mh_table_size", "sorry_server", "quorum", "hysteresis", "alpha",
                "inhibit_on_failure", "check", "real", "forwarding", "tunnel", "ops")
REAL_KEYS = ("address", "port", "weight", "inhibit_on_failure", "check", "forwarding", "tunnel", "uthreshold",
             "lthreshold")
FORWARDING = {"dr": Forwarding.ROUTE, "nat": Forwarding.MASQ, "tun": Forwarding.TUNNEL}
TUNNEL_KEYS = ("type", "port", "csum")
VRRP_KEYS = ("instance", "announce_count")
BGP_KEYS = ("local_asn", "peer_asn", "peers", "local_address", "local_address6", "router_id", "next_hop",
            "next_hop6", "communities", "hold_time", "connect_retry", "withdraw_wait")
PEER_KEYS = ("address", "asn")
SYNC_KEYS = ("role", "interface", "syncid", "group", "port", "ttl", "maxlen")
MAX_ASN = (1 << 32) - 1
CHECK_KEYS = ("type", "interval", "timeout", "retry_interval", "rise", "fall", "port", "path", "status", "digest",
              "regex", "host", "tls_verify", "command", "user")


class ScriptError(ValueError):
    """A command that must not be run: missing, or writable by someone other than root."""


def _writable_by_others(info: os.stat_result) -> bool:
    if info.st_uid != 0:
        return True
    if info.st_mode & stat.S_IWOTH:
        return True
    return bool(info.st_mode & stat.S_IWGRP and info.st_gid != 0)


def script_path(program: str) -> Path:
    """The file a command's argv[0] runs (searched in PATH when it has no '/')."""
    found = program if "/" in program else shutil.which(program)
    if found is None:
        raise ScriptError("not found in PATH")
    return Path(os.path.abspath(found))


def check_script_security(program: str) -> Path:
    """Refuse a command that anyone but root could change (keepalived's enable_script_security): the file,
    the file a symlink points at, and every directory above either must be root's and writable by root
    only (a sticky directory, like /tmp, may be world-writable: others cannot replace root's entries).
    The messages say what is wrong, without the command's name."""
    path = script_path(program)
    try:
        real = path.resolve(strict=True)
    except OSError as exc:
        raise ScriptError(exc.strerror or str(exc)) from None
    if not real.is_file():
        raise ScriptError(f"{real} is not a file")
    for file in dict.fromkeys((path, real)):
        info = file.stat()
        if not file.is_symlink() and _writable_by_others(info):
            raise ScriptError(f"{file} is writable by a user other than root (owner uid {info.st_uid}, mode "
                              f"{stat.filemode(info.st_mode)}): refused as keepalived's enable_script_security "
                              f"would; chown root:root {file}; chmod go-w {file}")
        for directory in file.parents:
            info = directory.stat()
            if _writable_by_others(info) and not (info.st_uid == 0 and info.st_mode & stat.S_ISVTX):
                raise ScriptError(f"directory {directory} is writable by a user other than root (owner uid "
                                  f"{info.st_uid}, mode {stat.filemode(info.st_mode)}): refused, anyone who can "
                                  f"write there can replace {file}")
    return path


def user_ids(name: str) -> tuple[int, int]:
    """(uid, gid) of a user name."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise ValueError(f"unknown user '{name}'") from None
    return entry.pw_uid, entry.pw_gid


def _argv(value: Any) -> tuple[str, ...]:
    """A command as a list of strings (run without a shell); a string is split like a shell would."""
    if isinstance(value, str):
        argv = shlex.split(value)
    elif isinstance(value, list) and all(isinstance(a, str) for a in value):
        argv = list(value)
    else:
        raise ValueError("a command is a list of strings (argv), e.g. [\"/usr/bin/check\", \"{rip}\"]")
    if not argv:
        raise ValueError("the command is empty")
    return tuple(argv)


def _status_ranges(value: Any) -> tuple[tuple[int, int], ...]:
    items = value if isinstance(value, list) else [value]
    ranges = []
    for item in items:
        match = STATUS_RANGE.fullmatch(str(item))
        if isinstance(item, bool) or not match:
            raise ValueError(f"status codes are numbers or ranges like \"200-299\", not {item!r}")
        low = int(match.group(1))
        high = int(match.group(2) or low)
        if not 100 <= low <= high <= 599:
            raise ValueError(f"status range {item!r} is not within 100-599")
        ranges.append((low, high))
    if not ranges:
        raise ValueError("at least one status code is needed")
    return tuple(ranges)


def _listen(value: Any) -> tuple[str, int] | None:
    if value in ("", "off", False):
        return None
    return parse_listen(str(value))


def listen_text(listen: tuple[str, int]) -> str:
    """A listen address as HOST:PORT, an IPv6 host in brackets (what a URL takes)."""
    return endpoint_text(parse_address(listen[0]), listen[1])


def _token(value: Any) -> str:
    if not isinstance(value, str) or len(value) < 16 or not value.isprintable() or not value.isascii() \
            or value != value.strip():
        raise ValueError("the page token is a string of at least 16 printable ASCII characters, no spaces around "
                         "it (e.g. from `openssl rand -hex 16`)")
    return value


def _user(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("a user name is a string")
    user_ids(value)
    return value


def _flags(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
        raise ValueError('scheduler flags are a list of names, e.g. ["sh-port", "sh-fallback"]')
    return tuple(i.strip() for i in items if i.strip())


def _persistence(value: Any) -> int | None:
    if value is True:
        return DEFAULT_PERSISTENCE
    if value is False:
        return None
    if not isinstance(value, int):
        raise ValueError(f"a number of seconds (or true: {DEFAULT_PERSISTENCE}), not {value!r}")
    return value


def _digest(value: Any) -> str:
    text = str(value).lower()
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise ValueError("a digest is the 32 hex digits of the body's MD5 (keepalived's genhash)")
    return text


def _regex(value: Any) -> str:
    try:
        re.compile(str(value))
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None
    return str(value)


def _check(reader: _Reader, base: CheckSpec) -> CheckSpec:
    kind = reader.get("type", str, base.type)
    if kind not in CHECK_TYPES:
        reader.fail("type", f"unknown check type '{kind}' (known: {', '.join(CHECK_TYPES)})")
    interval = reader.number("interval", base.interval)
    timeout = reader.number("timeout", base.timeout)
    if "interval" in reader.table and "timeout" not in reader.table:
        timeout = min(timeout, interval)
    retry = reader.get("retry_interval", (int, float), base.retry_interval)
    port = reader.integer("port", base.port or 0, 0, 65535) or None
    spec = CheckSpec(
        type=kind, interval=interval, timeout=timeout,
        retry_interval=None if retry is None else reader.number("retry_interval", retry),
        rise=reader.integer("rise", base.rise, 1, 1000), fall=reader.integer("fall", base.fall, 1, 1000),
        port=port, path=reader.get("path", str, base.path),
        status=reader.convert("status", _status_ranges, base.status),
        digest=reader.convert("digest", _digest, base.digest), regex=reader.convert("regex", _regex, base.regex),
        host=reader.get("host", str, base.host), tls_verify=reader.get("tls_verify", bool, base.tls_verify),
        command=reader.convert("command", _argv, base.command),
        user=reader.convert("user", _user, base.user),
    )  # fmt: skip
    if not spec.path.startswith("/"):
        reader.fail("path", f"'path' must start with '/', not {spec.path!r}")
    if spec.type == "command" and not spec.command:
        reader.fail("type", "a check of type 'command' needs 'command' (argv list)")
    if spec.timeout > spec.interval:
        reader.fail("timeout", f"'timeout' ({spec.timeout}s) is longer than 'interval' ({spec.interval}s)")
    return spec


def _secure(program: str) -> Path:
    try:
        return check_script_security(program)
    except ScriptError as exc:
        raise ScriptError(f"{program}: {exc}") from None


def _check_command(reader: _Reader, check: CheckSpec) -> None:
    where = _sub(reader, "check", CHECK_KEYS, "check") if "check" in reader.table else reader
    try:
        _secure(check.command[0])
    except ScriptError as exc:
        where.fail("command" if "command" in where.table else None, f"'command': {exc}")


def _sub(reader: _Reader, key: str, allowed: tuple[str, ...], label: str) -> _Reader:
    table = reader.get(key, dict, {})
    return _Reader(reader.path, reader.lines, table, (*reader.where, key), f"{reader.label}: {label}", allowed)


def _family_error(what: str, address: IPAddress, key: ServiceKey) -> str:
    return (f"{what} {address} is IPv{address.version} and the service IPv{key.family}: direct routing keeps the "
            "packet, so both must be of one family")


def _method(reader: _Reader, default: tuple[Forwarding, Tunnel | None]) -> tuple[Forwarding, Tunnel | None]:
    """`forwarding` ("dr", "nat" or "tun") and `tunnel` ({type, port, csum}) of a service or a real (a real's
    default: its service's)."""
    def forwarding_of(value: Any) -> Forwarding:
        if str(value) not in FORWARDING:
            raise ValueError(f"unknown forwarding method {value!r} (dr, nat or tun)")
        return FORWARDING[str(value)]

    forwarding = reader.convert("forwarding", forwarding_of, default[0])
    if "tunnel" not in reader.table:
        return forwarding, default[1] if forwarding is Forwarding.TUNNEL else None
    if forwarding is not Forwarding.TUNNEL:
        reader.fail("tunnel", "'tunnel' goes with forwarding = \"tun\" (ipvsadm: Tunnel options conflict with "
                              "forward method)")
    sub = _sub(reader, "tunnel", TUNNEL_KEYS, "tunnel")
    try:
        tunnel = validate_tunnel(Tunnel(sub.get("type", str, "ipip"), sub.get("port", int, 0),
                                        sub.get("csum", str, "nocsum")))
    except ModelError as exc:
        reader.fail("tunnel", f"'tunnel': {exc}")
    return forwarding, tunnel


def _real(reader: _Reader, svc_key: ServiceKey, check: CheckSpec, inhibit: bool,
          method: tuple[Forwarding, Tunnel | None] = (Forwarding.ROUTE, None)) -> RealSpec:
    rip = reader.convert("address", lambda v: parse_address(str(v)), required=True)
    if rip.version != svc_key.family:
        reader.fail("address", f"'address': {_family_error('real server', rip, svc_key)}")
    forwarding, tunnel = _method(reader, method)
    port = reader.integer("port", svc_key.port, 0, 65535)
    if port != svc_key.port and forwarding is not Forwarding.MASQ and not svc_key.is_fwmark:  # fwmark: the real's own
        reader.fail("port", f"real port {port} differs from the service port {svc_key.port}: "
                            "direct routing cannot change the port (forwarding = \"nat\" can)")
    weight = reader.integer("weight", 1, 0, MAX_WEIGHT)
    if forwarding is Forwarding.MASQ:
        try:
            validate_real(Service(svc_key), Real(rip, port, weight, forwarding))
        except ModelError as exc:
            reader.fail("forwarding" if "forwarding" in reader.table else "port", str(exc))
    real_check = _check(_sub(reader, "check", CHECK_KEYS, "check"), check) if "check" in reader.table else check
    if forwarding is Forwarding.TUNNEL and rip.version != 4:
        reader.fail("forwarding", f"real server {rip}: pyvs tunnels to IPv4 real servers only")
    upper = reader.integer("uthreshold", 0, 0, MAX_THRESHOLD)
    lower = reader.integer("lthreshold", 0, 0, MAX_THRESHOLD)
    if svc_key.is_fwmark and not port and real_check.type in ("tcp", "http", "https") and real_check.port is None:
        reader.fail("port", f"real {rip} of {svc_key} has no port for its {real_check.type} check: give the real a "
                            "'port' or its check a 'port'")
    return RealSpec(rip, port, weight, real_check, reader.get("inhibit_on_failure", bool, inhibit), forwarding,
                    tunnel, upper, lower)


def _fwmark_key(reader: _Reader) -> ServiceKey:
    """A firewall-mark service (`fwmark = N`, no vip, port or proto): its family is its reals' (IPv4 without any)."""
    for name in ("vip", "port", "proto"):
        if name in reader.table:
            reader.fail(name, f"'{name}' and 'fwmark' exclude each other: a firewall-mark service takes every packet "
                              "with its mark, whatever its address, port and protocol")
    mark = reader.integer("fwmark", 1, 1, MAX_FWMARK)
    family_name = reader.get("ip_family", str, None)
    if family_name not in (None, "inet", "inet6"):
        reader.fail("ip_family", f"'ip_family' is inet or inet6, not {family_name!r}")
    families = {6 if family_name == "inet6" else 4} if family_name else set()
    for item in reader.table.get("real", []):
        try:
            families.add(parse_address(str(item.get("address"))).version if isinstance(item, dict) else 4)
        except ModelError:
            continue  # reported with the real
    if len(families) > 1:
        reader.fail("real", f"the reals of fwmark {mark} are of both families (or not its 'ip_family'): a service is "
                            "of one")
    return fwmark_key(mark, families.pop() if families else 4)


def _service(path: Path, lines: _Lines, table: dict[str, Any], index: int, check_scripts: bool,
             user: str | None) -> ServiceSpec:
    where = ("service", str(index))
    reader = _Reader(path, lines, table, where, f"service #{index + 1}", SERVICE_KEYS)
    proto = reader.get("proto", str, "tcp").upper()
    if proto not in Protocol.__members__:
        reader.fail("proto", f"unknown protocol '{proto.lower()}' (tcp, udp or sctp)")
    if "ip_family" in table and "fwmark" not in table:
        reader.fail("ip_family", "'ip_family' is for a fwmark service (a service by address has its VIP's family)")
    if "fwmark" in table:
        key = _fwmark_key(reader)
        port = 0
        reader.label = f"service {key}"
    else:
        vip = reader.convert("vip", lambda v: parse_address(str(v)), required=True)
        port = reader.integer("port", 0, 0, 65535) if "port" in table else reader.get("port", int, required=True)
        key = ServiceKey(Protocol[proto], vip, port)
        reader.label = f"service {proto.lower()} {key}"
    scheduler = reader.convert("scheduler", validate_scheduler, "wrr")
    persistent = reader.convert("persistence_timeout", _persistence)
    netmask = reader.convert("persistence_granularity", lambda v: parse_netmask_for(str(v), key.family),
                             HOST_MASK if key.family == 4 else HOST_PREFIX6)
    if "persistence_granularity" in table and persistent is None:
        reader.fail("persistence_granularity", "'persistence_granularity' needs 'persistence_timeout' "
                                               "(ipvsadm's -M goes with -p)")
    flags = reader.convert("scheduler_flags", _flags, ())
    table_size = reader.get("mh_table_size", int, None)
    onepacket = reader.get("ops", bool, False)
    try:
        validate_service(Service(key, scheduler, persistent, netmask, flags, mh_table_size=table_size,
                                 onepacket=onepacket))
    except ModelError as exc:
        setting = ("scheduler_flags" if "flag" in str(exc) else "persistence_timeout" if "persistence" in str(exc)
                   else "mh_table_size" if "table size" in str(exc) else "ops" if "One-Packet" in str(exc)
                   else "port")
        reader.fail(setting, str(exc))
    flags = sched_flag_names(scheduler, sched_flag_bits(flags))  # as the data plane reads them back
    check = _check(_sub(reader, "check", CHECK_KEYS, "check"), CheckSpec(port=None, user=user))
    if key.proto is Protocol.UDP and check.type in ("tcp", "http", "https") and "check" not in table:
        check = CheckSpec(type="none")
    inhibit = reader.get("inhibit_on_failure", bool, False)
    method = _method(reader, (Forwarding.ROUTE, None))
    reals_table = reader.get("real", list, [])
    reals: list[RealSpec] = []
    real_keys: set[RealKey] = set()
    for number, item in enumerate(reals_table):
        label = f"{reader.label}: real #{number + 1}"
        if not isinstance(item, dict):
            reader.fail("real", f"real #{number + 1} must be a table")
        real_reader = _Reader(path, lines, item, (*where, "real", str(number)), label, REAL_KEYS)
        real = _real(real_reader, key, check, inhibit, method)
        if check_scripts and real.check.type == "command":
            _check_command(real_reader if "check" in item else reader, real.check)
        if real.key in real_keys:
            real_reader.fail("address", f"real {real.rip}:{real.port} is listed twice")
        real_keys.add(real.key)
        reals.append(real)
    sorry = reader.convert("sorry_server", lambda v: parse_endpoint(str(v), port))
    if sorry is not None and sorry[0].version != key.family:
        reader.fail("sorry_server", f"'sorry_server': {_family_error('the sorry server', sorry[0], key)}")
    if sorry is not None and sorry[1] != port and not key.is_fwmark:
        reader.fail("sorry_server", f"sorry server port {sorry[1]} differs from the service port {port}: "
                                    "direct routing cannot change the port")
    if sorry is not None and sorry in real_keys:
        reader.fail("sorry_server", "the sorry server is also one of the service's reals")
    return ServiceSpec(
        key, scheduler, tuple(reals), sorry, reader.integer("quorum", 1, 0, 1 << 30),
        reader.integer("hysteresis", 0, 0, 1 << 30), reader.get("alpha", bool, False),
        persistent, netmask, flags, table_size, onepacket,
    )


def _community(value: Any) -> tuple[int, ...]:
    parts = str(value).split(":") if isinstance(value, str) else []
    if len(parts) not in (2, 3) or not all(p.isdigit() for p in parts):
        raise ValueError(f"a community is \"ASN:VALUE\" (standard) or \"ASN:A:B\" (large), not {value!r}")
    numbers = tuple(int(p) for p in parts)
    limit = 0xFFFF if len(numbers) == 2 else MAX_ASN
    if any(n > limit for n in numbers):
        raise ValueError(f"community {value!r}: each part of a {'standard' if limit == 0xFFFF else 'large'} "
                         f"community is at most {limit}")
    return numbers


def parse_ipv6(text: str) -> IPv6Address:
    address = parse_address(text)
    if not isinstance(address, IPv6Address):
        raise ModelError(f"'{text}' is not an IPv6 address")
    return address


def _bgp(reader: _Reader, families: set[int]) -> BgpSpec:
    local_asn = reader.integer("local_asn", 0, 1, MAX_ASN) if "local_asn" in reader.table else \
        reader.get("local_asn", int, required=True)
    peer_asn: int | None = reader.integer("peer_asn", 1, 1, MAX_ASN) if "peer_asn" in reader.table else None
    items = reader.get("peers", list, required=True)
    if not items:
        reader.fail("peers", "'peers' is empty: at least one peer (the router) is needed")
    peers: list[BgpPeer] = []
    for number, item in enumerate(items):
        if isinstance(item, str):
            item = {"address": item}
        if not isinstance(item, dict):
            reader.fail("peers", f"peer #{number + 1} is an address or a table {{ address = ..., asn = ... }}")
        peer = _Reader(reader.path, reader.lines, item, reader.where, f"[bgp]: peer #{number + 1}", PEER_KEYS)
        address = peer.convert("address", parse_address, required=True)
        asn = peer.integer("asn", 1, 1, MAX_ASN) if "asn" in item else peer_asn or 0
        if not asn:
            reader.fail("peers", f"peer {address} has no ASN: set 'peer_asn' or the peer's 'asn'")
        if any(p.address == address for p in peers):
            reader.fail("peers", f"peer {address} is listed twice")
        peers.append(BgpPeer(address, asn))
    communities = reader.convert("communities", lambda v: tuple(_community(c) for c in (
        v if isinstance(v, list) else [v])), ())
    next_hop, next_hop6 = reader.convert("next_hop", parse_ipv4), reader.convert("next_hop6", parse_ipv6)
    # BGP gives a route the next hop of its session's family; the other family's VIPs need one set here.
    for family, hop, key in ((6, next_hop6, "next_hop6"), (4, next_hop, "next_hop")):
        crossing = [str(p.address) for p in peers if p.address.version != family]
        if family in families and crossing and hop is None:
            reader.fail("peers", f"IPv{family} VIPs go to the IPv{10 - family} peer {crossing[0]} with no next hop "
                                 f"of their family: set '{key}' (this director's IPv{family} address)")
    return BgpSpec(
        local_asn=local_asn, peers=tuple(peers), local_address=reader.convert("local_address", parse_ipv4),
        router_id=reader.convert("router_id", parse_ipv4), next_hop=next_hop, next_hop6=next_hop6,
        local_address6=reader.convert("local_address6", parse_ipv6),
        communities=communities, hold_time=reader.integer("hold_time", 9, 3, 65535),
        connect_retry=reader.integer("connect_retry", 5, 1, 65535),
        withdraw_wait=reader.number("withdraw_wait", 2.0, minimum=0.0),
    )  # fmt: skip


def _multicast(value: Any) -> str:
    if not isinstance(value, str) or not parse_address(value).is_multicast:
        raise ValueError(f"{value!r} is not a multicast address (IPVS's default: 224.0.0.81)")
    return value


def _sync(reader: _Reader) -> SyncSpec:
    role = reader.get("role", str, "both")
    if role not in SYNC_ROLES:
        reader.fail("role", f"unknown role '{role}' (master, backup or both)")
    interface = reader.get("interface", str, required=True)
    if not 0 < len(interface) < 16:
        reader.fail("interface", f"'{interface}' is not an interface name")
    def optional(key: str, high: int) -> int:  # absent: 0, the kernel's default
        return reader.integer(key, 0, 1, high) if key in reader.table else 0

    return SyncSpec(role, interface, syncid=reader.integer("syncid", 0, 0, 255),
                    group=reader.convert("group", _multicast, ""), port=optional("port", 65535),
                    ttl=optional("ttl", 255), maxlen=optional("maxlen", 65535 - 28))


def parse_config(text: str, path: Path | str = "<config>", check_scripts: bool = False) -> DirectorConfig:
    """Parse and validate a config text; raises ConfigError naming the file and line. With check_scripts,
    every command (check, notify) must be a file only root can change."""
    path = Path(path)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        match = re.search(r"\(at line (\d+), column (\d+)\)", str(exc))
        where = f"{path}:{match.group(1)}" if match else str(path)
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    lines = _Lines(text)
    top = _Reader(path, lines, data, (), "config", ("director", "service", "bgp", "vrrp", "sync"))
    director = _Reader(path, lines, top.get("director", dict, {}), ("director",), "[director]", DIRECTOR_KEYS)
    mode = director.get("xdp_mode", str, "native")
    if mode not in XDP_MODES:
        director.fail("xdp_mode", f"unknown XDP mode '{mode}' (native or generic)")
    notify = director.convert("notify", _argv, ())
    user = director.convert("user", _user)
    if check_scripts and notify:
        director.convert("notify", lambda v: _secure(_argv(v)[0]))
    services: list[ServiceSpec] = []
    keys: set[ServiceKey] = set()
    for index, table in enumerate(top.get("service", list, [])):
        if not isinstance(table, dict):
            top.fail("service", f"service #{index + 1} must be a table ([[service]])")
        svc = _service(path, lines, table, index, check_scripts, user)
        if svc.key in keys:
            raise ConfigError(f"{path}:{lines.of(('service', str(index)))}: service {svc.key.proto.label.lower()} "
                              f"{svc.key} is defined twice")
        keys.add(svc.key)
        services.append(svc)
    return DirectorConfig(
        path=path, services=tuple(services), interface=director.get("interface", str),
        xdp_mode=mode, status_listen=director.convert("status_listen", _listen, _listen(DEFAULT_LISTEN)),
        notify=notify, notify_timeout=director.number("notify_timeout", 10.0),
        flush_on_failure=director.get("flush_on_failure", bool, True), user=user,
        drift_check=director.number("drift_check", 10.0, minimum=0.0),
        # Behind ECMP a flow may reach a director in mid-stream: sloppy TCP lets it go on (unless set off).
        sloppy_tcp=director.get("sloppy_tcp", bool, True if "bgp" in data else None),
        expire_nodest_conn=director.get("expire_nodest_conn", bool, None),
        node_exporter_metrics=director.get("node_exporter_metrics", bool, True),
        page_token=director.convert("page_token", _token),
        bgp=_bgp(_Reader(path, lines, top.get("bgp", dict), ("bgp",), "[bgp]", BGP_KEYS),
                 {svc.key.vip.version for svc in services if not svc.key.is_fwmark}) if "bgp" in data else None,
        vrrp=_vrrp(top, director, path, lines) if "vrrp" in data else None,
        sync=_sync(_Reader(path, lines, top.get("sync", dict), ("sync",), "[sync]", SYNC_KEYS))
        if "sync" in data else None,
    )  # fmt: skip


def _vrrp(top: _Reader, director: _Reader, path: Path, lines: _Lines) -> VrrpSpec:
    reader = _Reader(path, lines, top.get("vrrp", dict), ("vrrp",), "[vrrp]", VRRP_KEYS)
    if "bgp" in top.table:
        reader.fail(None, "[vrrp] and [bgp] do not go together: the VIPs reach a director either by ARP on its "
                          "segment (VRRP, active/backup) or by routing (BGP, active/active)")
    if not director.table.get("interface"):
        reader.fail(None, "[vrrp] needs [director] interface: the NIC where keepalived puts the VIPs")
    return VrrpSpec(instance=reader.get("instance", str, ""),
                    announce_count=reader.integer("announce_count", 3, 0, 100))


def load_config(path: Path | str, check_scripts: bool = True) -> DirectorConfig:
    """Read a config file; with check_scripts, check and notify programs must be files only root can change."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not a UTF-8 text file: {exc}") from None
    return parse_config(text, path, check_scripts=check_scripts)
