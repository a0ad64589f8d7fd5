"""The domain of pyvs: virtual services, real servers and their validation. No I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv4Network

# Every IPVS scheduler name, in ipvsadm's man page order.
ALL_SCHEDULERS = ("rr", "wrr", "lc", "wlc", "sed", "nq", "sh", "dh", "lblc", "lblcr", "fo", "ovf", "mh")
# Schedulers the data plane implements: all of IPVS's.
SUPPORTED_SCHEDULERS = ALL_SCHEDULERS
# ipvsadm -b flag names -> IPVS's IP_VS_SVC_F_SCHED1..3 (as bits 1, 2, 4).
SCHED_FLAG_BITS = {"flag-1": 1, "sh-fallback": 1, "mh-fallback": 1, "flag-2": 2, "sh-port": 2, "mh-port": 2,
                   "flag-3": 4}
DEFAULT_SCHEDULER = "wlc"  # ipvsadm's DEF_SCHED
DEFAULT_PERSISTENCE = 300  # seconds, ipvsadm's -p default
MAX_WEIGHT = 65535
HOST_MASK = IPv4Address("255.255.255.255")


class ModelError(ValueError):
    """Invalid service or real-server definition; the message is meant for an admin."""


class Protocol(IntEnum):
    TCP = 6
    UDP = 17

    @property
    def label(self) -> str:
        return self.name

    @property
    def option(self) -> str:
        return "-t" if self is Protocol.TCP else "-u"


class Forwarding(Enum):
    """IPVS forwarding methods; pyvs forwards by direct routing only."""

    ROUTE = "Route"
    MASQ = "Masq"
    TUNNEL = "Tunnel"

    @property
    def option(self) -> str:
        return {"Route": "-g", "Masq": "-m", "Tunnel": "-i"}[self.value]


@dataclass(frozen=True, order=True)
class ServiceKey:
    proto: Protocol
    vip: IPv4Address
    port: int
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keys are hashed often in large rule sets; IPv4Address hashes slowly, so do it once.
        object.__setattr__(self, "_hash", hash((self.proto, int(self.vip), self.port)))

    def __hash__(self) -> int:
        return self._hash

    def __str__(self) -> str:
        return f"{self.vip}:{self.port}"


RealKey = tuple[IPv4Address, int]  # a real within a service: (RIP, port)


@dataclass(order=True, slots=True)
class Real:
    rip: IPv4Address
    port: int
    weight: int = 1
    forwarding: Forwarding = field(default=Forwarding.ROUTE, compare=False)
    # The last non-zero weight, as the data plane keeps it (IPVS's dest->last_weight: mh builds its table
    # from it, so draining a real to 0 leaves the others' slots where they are). None: not known.
    last_weight: int | None = field(default=None, compare=False)

    @property
    def key(self) -> tuple[IPv4Address, int]:
        return (self.rip, self.port)

    def __str__(self) -> str:
        return f"{self.rip}:{self.port}"


@dataclass
class Service:
    key: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    persistent: int | None = None  # persistence timeout in seconds, None when off
    netmask: IPv4Address = HOST_MASK
    sched_flags: tuple[str, ...] = ()
    reals: dict[tuple[IPv4Address, int], Real] = field(default_factory=dict)

    def sorted_reals(self) -> list[Real]:
        """The reals in Real's order (address, port, weight); sorted by int key, which is faster."""
        return sorted(self.reals.values(), key=lambda r: (int(r.rip), r.port, r.weight))


@dataclass
class Timeouts:
    tcp: int = 900
    tcpfin: int = 120
    udp: int = 300


@dataclass
class Counters:
    """Traffic counters of a service or a real, as ipvsadm --stats shows them."""

    conns: int = 0
    inpkts: int = 0
    outpkts: int = 0
    inbytes: int = 0
    outbytes: int = 0


@dataclass
class Connection:
    """One entry of the connection table, as ipvsadm -L -c shows it."""

    proto: Protocol
    client: IPv4Address
    cport: int
    vip: IPv4Address
    vport: int
    rip: IPv4Address
    rport: int
    state: str  # IPVS state name: ESTABLISHED, SYN_RECV, FIN_WAIT, CLOSE, TIME_WAIT, UDP, ...
    expires: float  # seconds left
    template: bool = False  # a persistence template (client masked, port 0)


@dataclass
class Rules:
    """The whole rule set of one director, as `ipvsadm -S` would save it."""

    services: dict[ServiceKey, Service] = field(default_factory=dict)

    def sorted_services(self) -> list[Service]:
        return [self.services[k] for k in sorted(self.services)]

    def copy(self) -> Rules:
        return Rules(
            {
                key: Service(
                    svc.key,
                    svc.scheduler,
                    svc.persistent,
                    svc.netmask,
                    svc.sched_flags,
                    {rk: Real(r.rip, r.port, r.weight, r.forwarding) for rk, r in svc.reals.items()},
                )
                for key, svc in self.services.items()
            }
        )


def parse_port(text: str) -> int:
    """A port number or a service name from /etc/services, as ipvsadm accepts."""
    if text.isdigit():
        port = int(text)
        if port > 65535:
            raise ModelError(f"port {text} is out of range (0-65535)")
        return port
    try:
        return socket.getservbyname(text)
    except OSError:
        raise ModelError(f"invalid port '{text}': not a number or a known service name") from None


def parse_ipv4(text: str) -> IPv4Address:
    if ":" in text or text.startswith("["):
        raise ModelError(f"'{text}': IPv6 is not supported yet; use an IPv4 address")
    try:
        return IPv4Address(text)
    except ValueError:
        raise ModelError(f"invalid IPv4 address '{text}'") from None


def parse_listen(text: str) -> tuple[str, int]:
    """A listen address `HOST:PORT`, or `:PORT` for 127.0.0.1."""
    host, _, port = text.rpartition(":")
    address, number = parse_endpoint(f"{host or '127.0.0.1'}:{port}")
    return str(address), number


def parse_endpoint(text: str, default_port: int | None = None) -> tuple[IPv4Address, int]:
    """Parse `host[:port]`; without a port, `default_port` is used (an error when None)."""
    if text.startswith("["):
        raise ModelError(f"'{text}': IPv6 is not supported yet; use an IPv4 address")
    host, sep, port_text = text.partition(":")
    if ":" in port_text:
        raise ModelError(f"'{text}': IPv6 is not supported yet; use an IPv4 address")
    address = parse_ipv4(host)
    if sep:
        return address, parse_port(port_text)
    if default_port is None:
        raise ModelError(f"'{text}' needs a port (address:port)")
    return address, default_port


def parse_netmask(text: str) -> IPv4Address:
    try:
        return IPv4Network(f"0.0.0.0/{text}").netmask
    except ValueError:
        raise ModelError(f"invalid netmask '{text}'") from None


def validate_scheduler(name: str) -> str:
    if name not in ALL_SCHEDULERS:
        raise ModelError(f"unknown scheduler '{name}' (valid: {', '.join(ALL_SCHEDULERS)})")
    if name not in SUPPORTED_SCHEDULERS:
        raise ModelError(
            f"scheduler '{name}' is not implemented by the pyvs data plane yet "
            f"(available now: {', '.join(SUPPORTED_SCHEDULERS)})"
        )
    return name


def sched_flag_bits(names: tuple[str, ...]) -> int:
    bits = 0
    for name in names:
        bits |= SCHED_FLAG_BITS[name]
    return bits


def sched_flag_names(scheduler: str, bits: int) -> tuple[str, ...]:
    """The names ipvsadm prints for a service's scheduler flags."""
    named = scheduler in ("sh", "mh")
    names = []
    for bit, generic, suffix in ((1, "flag-1", "fallback"), (2, "flag-2", "port"), (4, "flag-3", None)):
        if bits & bit:
            names.append(f"{scheduler}-{suffix}" if named and suffix else generic)
    return tuple(names)


def validate_sched_flags(scheduler: str, names: tuple[str, ...]) -> None:
    for name in names:
        if name not in SCHED_FLAG_BITS:
            raise ModelError(f"invalid scheduler flag '{name}' (valid: {', '.join(SCHED_FLAG_BITS)})")
        owner = name.split("-")[0]
        if owner in ("sh", "mh") and owner != scheduler:
            raise ModelError(f"scheduler flag '{name}' needs scheduler {owner}, not {scheduler}")


def validate_weight(weight: int) -> int:
    if not 0 <= weight <= MAX_WEIGHT:
        raise ModelError(f"weight {weight} is out of range (0-{MAX_WEIGHT})")
    return weight


def validate_service(svc: Service) -> None:
    validate_scheduler(svc.scheduler)
    if svc.key.port == 0 and svc.persistent is None:
        raise ModelError("port 0 is only valid for a persistent service (-p)")
    if svc.persistent is not None and not 1 <= svc.persistent <= 2**31 - 1:
        raise ModelError(f"persistence timeout {svc.persistent} is out of range (1-{2**31 - 1} seconds)")
    validate_sched_flags(svc.scheduler, svc.sched_flags)
    for real in svc.reals.values():
        validate_real(svc, real)


def validate_real(svc: Service, real: Real) -> None:
    validate_weight(real.weight)
    if real.forwarding is not Forwarding.ROUTE:
        raise ModelError(
            f"forwarding method {real.forwarding.value} ({real.forwarding.option}) is not supported; "
            "pyvs forwards by direct routing only (-g)"
        )
    if real.port != svc.key.port:
        raise ModelError(
            f"real server port {real.port} differs from the service port {svc.key.port}: "
            "direct routing cannot change the port"
        )
