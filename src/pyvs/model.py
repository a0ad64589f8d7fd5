"""The domain of pyvs: virtual services, real servers and their validation. No I/O."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from enum import Enum, IntEnum
from ipaddress import IPv4Address, IPv4Network, IPv6Address, ip_address

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
MAX_THRESHOLD = 2**31 - 1  # ipvsadm -x/-y: 0 (none) to INT_MAX
MH_TABLE_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)  # IPVS's mh table primes
HOST_MASK = IPv4Address("255.255.255.255")
HOST_PREFIX6 = 128  # ipvsadm -M for an IPv6 service is a prefix length, 128 by default

# An address of either family: services and their reals are IPv4 or IPv6 (one family per service in DR).
IPAddress = IPv4Address | IPv6Address
# Persistence granularity (ipvsadm -M): a netmask for IPv4, a prefix length for IPv6 (as IPVS keeps it).
Netmask = IPv4Address | int


class ModelError(ValueError):
    """Invalid service or real-server definition; the message is meant for an admin."""


class Protocol(IntEnum):
    TCP = 6
    UDP = 17
    SCTP = 132

    @property
    def label(self) -> str:
        return self.name

    @property
    def option(self) -> str:
        return {Protocol.TCP: "-t", Protocol.UDP: "-u"}.get(self, "--sctp-service")


MAX_FWMARK = 2**32 - 1  # ipvsadm's parse_fwmark: 1 to UINT_MAX


class Forwarding(Enum):
    """IPVS forwarding methods: direct routing (-g), NAT (-m, IPv4) and tunnelling (-i)."""

    ROUTE = "Route"
    MASQ = "Masq"
    TUNNEL = "Tunnel"

    @property
    def option(self) -> str:
        return {"Route": "-g", "Masq": "-m", "Tunnel": "-i"}[self.value]


TUN_TYPES = ("ipip", "gue", "gre")  # ipvsadm --tun-type, IPVS's IP_VS_CONN_F_TUNNEL_TYPE_* order
TUN_CSUMS = ("nocsum", "csum", "remcsum")  # --tun-nocsum|--tun-csum|--tun-remcsum, IPVS's tun_flags 0, 1, 2


@dataclass(frozen=True)
class Tunnel:
    """How a tunnel real's packets are encapsulated (ipvsadm -i --tun-type ... --tun-port ... --tun-csum)."""

    type: str = "ipip"
    port: int = 0  # GUE's UDP destination port; 0 for the other types
    csum: str = "nocsum"

    def info(self) -> str:
        """ipvsadm's TunnelInfo column (--tun-info): ipip, gue:PORT:-c|+c|r+c, gre:-c|+c."""
        flags = {"nocsum": "-c", "csum": "+c", "remcsum": "r+c"}[self.csum]
        if self.type == "gue":
            return f"gue:{self.port}:{flags}"
        return f"gre:{flags}" if self.type == "gre" else self.type


def validate_tunnel(tunnel: Tunnel) -> Tunnel:
    """ipvsadm's table of legal tunnel options: ipip takes none, gue needs --tun-port (and one checksum option),
    gre takes --tun-nocsum or --tun-csum."""
    if tunnel.type not in TUN_TYPES:
        raise ModelError(f"illegal tunnel type '{tunnel.type}' (one of {', '.join(TUN_TYPES)})")
    if tunnel.csum not in TUN_CSUMS:
        raise ModelError(f"illegal tunnel checksum '{tunnel.csum}' (one of {', '.join(TUN_CSUMS)})")
    if tunnel.type == "gue" and not 1 <= tunnel.port <= 65535:
        raise ModelError("You need to supply the 'tun-port' option for the 'gue' tunnel type")
    if tunnel.type != "gue" and tunnel.port:
        raise ModelError(f"Illegal 'tun-port' option with the '{tunnel.type}' tunnel type")
    if tunnel.type == "ipip" and tunnel.csum != "nocsum":
        raise ModelError(f"Illegal 'tun-{tunnel.csum}' option with the 'ipip' tunnel type")
    if tunnel.type == "gre" and tunnel.csum == "remcsum":
        raise ModelError("Illegal 'tun-remcsum' option with the 'gre' tunnel type")
    return tunnel


def address_order(address: IPAddress) -> tuple[int, int]:
    """A sort key that orders addresses of both families: IPv4 first, then IPv6, each by value."""
    return (address.version, int(address))


def endpoint_text(address: IPAddress, port: int) -> str:
    """`ADDR:PORT` as ipvsadm prints it: IPv6 addresses in brackets."""
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


@dataclass(frozen=True)
class ServiceKey:
    """A service's key: (protocol, VIP, port), or a firewall mark (`fwmark` > 0) and a family, as IPVS keys a
    fwmark service by (af, fwmark). A fwmark key has protocol TCP (ipvsadm's "sane value, not used"), the family's
    unspecified address as VIP (0.0.0.0 or ::: only its family counts) and port 0: use `fwmark_key`."""

    proto: Protocol
    vip: IPAddress
    port: int
    fwmark: int = 0
    _hash: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Keys are hashed often in large rule sets; addresses hash slowly, so do it once.
        object.__setattr__(self, "_hash", hash((self.proto, self.vip.version, int(self.vip), self.port, self.fwmark)))

    def __hash__(self) -> int:
        return self._hash

    def sort_key(self) -> tuple[int, int, int, int, int]:
        """IPVS's order (ipvs_cmp_services) puts fwmark services after the others (fwmark 0 first)."""
        return (self.fwmark, int(self.proto), self.vip.version, int(self.vip), self.port)

    def __lt__(self, other: ServiceKey) -> bool:
        return self.sort_key() < other.sort_key()

    @property
    def family(self) -> int:
        """4 or 6."""
        return self.vip.version

    @property
    def is_fwmark(self) -> bool:
        return self.fwmark != 0

    @property
    def title(self) -> str:
        """`TCP 198.18.0.100:80`; a firewall-mark service's `FWM 1` (`FWM 1 IPv6`), as ipvsadm -L names them."""
        if self.fwmark:
            return f"FWM {self.fwmark}" + (" IPv6" if self.family == 6 else "")
        return f"{self.proto.label} {self}"

    def __str__(self) -> str:
        if self.fwmark:
            return f"fwmark {self.fwmark}" + (" IPv6" if self.family == 6 else "")
        return endpoint_text(self.vip, self.port)


def fwmark_key(mark: int, family: int = 4) -> ServiceKey:
    """The key of the firewall-mark service `mark` of a family (ipvsadm -f MARK [-6])."""
    if not 0 < mark <= MAX_FWMARK:
        raise ModelError(f"invalid fwmark {mark}: an integer from 1 to {MAX_FWMARK}")
    return ServiceKey(Protocol.TCP, IPv6Address(0) if family == 6 else IPv4Address(0), 0, mark)


RealKey = tuple[IPAddress, int]  # a real within a service: (RIP, port)


@dataclass(slots=True)
class Real:
    rip: IPAddress
    port: int
    weight: int = 1
    forwarding: Forwarding = Forwarding.ROUTE
    # The last non-zero weight, as the data plane keeps it (IPVS's dest->last_weight: mh builds its table
    # from it, so draining a real to 0 leaves the others' slots where they are). None: not known.
    last_weight: int | None = field(default=None, compare=False)
    # Connection thresholds (ipvsadm -x, -y; 0: none): OVERLOAD when activeconns + inactconns reach u_threshold,
    # cleared below l_threshold (3/4 of u_threshold when 0), as IPVS does.
    u_threshold: int = 0
    l_threshold: int = 0
    # IPVS's OVERLOAD flag as the data plane holds it (read back, never written): a state, not a setting.
    overloaded: bool = field(default=False, compare=False)
    tunnel: Tunnel | None = field(default=None, compare=False)  # with Forwarding.TUNNEL (None there: ipip)

    @property
    def key(self) -> RealKey:
        return (self.rip, self.port)

    @property
    def method(self) -> tuple[Forwarding, Tunnel | None]:
        """How the real is reached, normalized: (TUNNEL, its tunnel, ipip when not given) or (ROUTE, None)."""
        if self.forwarding is Forwarding.TUNNEL:
            return self.forwarding, self.tunnel or Tunnel()
        return self.forwarding, None

    def sort_key(self) -> tuple[int, int, int, int]:
        return (self.rip.version, int(self.rip), self.port, self.weight)

    def __lt__(self, other: Real) -> bool:
        return self.sort_key() < other.sort_key()

    def __str__(self) -> str:
        return endpoint_text(self.rip, self.port)


@dataclass
class Service:
    key: ServiceKey
    scheduler: str = DEFAULT_SCHEDULER
    persistent: int | None = None  # persistence timeout in seconds, None when off
    netmask: Netmask = HOST_MASK  # an IPv4Address for IPv4 services, a prefix length (int) for IPv6 ones
    sched_flags: tuple[str, ...] = ()
    reals: dict[RealKey, Real] = field(default_factory=dict)
    mh_table_size: int | None = None  # a pyvs extension: the mh table's size; None: chosen from the reals
    onepacket: bool = False  # ipvsadm -o: one-packet scheduling (UDP, or a fwmark service's UDP): no entry kept

    def __post_init__(self) -> None:
        # The default granularity follows the service's family (HOST_MASK is only IPv4's).
        if self.key.family == 6 and self.netmask == HOST_MASK:
            self.netmask = HOST_PREFIX6

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
class Rates:
    """Rates of a service or a real as ipvsadm --rate shows them: connections, packets and bytes per second."""

    cps: int = 0
    inpps: int = 0
    outpps: int = 0
    inbps: int = 0
    outbps: int = 0


@dataclass
class Connection:
    """One entry of the connection table, as ipvsadm -L -c shows it."""

    proto: Protocol
    client: IPAddress
    cport: int
    vip: IPAddress
    vport: int
    rip: IPAddress
    rport: int
    state: str  # IPVS state name: ESTABLISHED, SYN_RECV, FIN_WAIT, CLOSE, TIME_WAIT, UDP, ...
    expires: float  # seconds left
    template: bool = False  # a persistence template (client masked, port 0)
    svc_index: int = -1  # the data plane's service slot (a fwmark connection's service is not its VIP:port)
    real_port: int = -1  # the real's port in its service (0 for a fwmark service's real without one); -1: rport


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
                    {rk: Real(r.rip, r.port, r.weight, r.forwarding, u_threshold=r.u_threshold,
                              l_threshold=r.l_threshold, tunnel=r.tunnel) for rk, r in svc.reals.items()},
                    svc.mh_table_size,
                    onepacket=svc.onepacket,
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
    """An IPv4 address only (where the other family makes no sense: netmasks, ARP)."""
    try:
        return IPv4Address(text)
    except ValueError:
        raise ModelError(f"invalid IPv4 address '{text}'") from None


def parse_address(text: str) -> IPAddress:
    """An IPv4 or IPv6 address; IPv6 may be written in brackets, as ipvsadm prints it."""
    bare = text[1:-1] if text.startswith("[") and text.endswith("]") else text
    try:
        address = ip_address(bare)
    except ValueError:
        raise ModelError(f"invalid IP address '{text}'") from None
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        raise ModelError(f"'{text}': an IPv4-mapped IPv6 address; write the IPv4 address itself")
    return address


def parse_listen(text: str) -> tuple[str, int]:
    """A listen address `HOST:PORT` (`[V6]:PORT` for IPv6), or `:PORT` for 127.0.0.1."""
    host, _, port = text.rpartition(":")
    address, number = parse_endpoint(f"{host or '127.0.0.1'}:{port}")
    return str(address), number


def parse_endpoint(text: str, default_port: int | None = None) -> tuple[IPAddress, int]:
    """Parse `host[:port]` or `[ipv6][:port]` as ipvsadm does; without a port, `default_port` is used (an error
    when None). A bare IPv6 address without brackets has no port."""
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise ModelError(f"'{text}': write an IPv6 endpoint as [ADDRESS]:PORT")
        address = parse_address(host)
        if address.version != 6:
            raise ModelError(f"'{text}': brackets are for IPv6 addresses only")
        port_text, has_port = rest[1:], bool(rest)
    elif text.count(":") > 1:
        address, port_text, has_port = parse_address(text), "", False
    else:
        host, has_colon, port_text = text.partition(":")
        address, has_port = parse_address(host), bool(has_colon)
    if has_port:
        return address, parse_port(port_text)
    if default_port is None:
        raise ModelError(f"'{text}' needs a port (address:port, or [ipv6]:port)")
    return address, default_port


def parse_netmask(text: str) -> IPv4Address:
    try:
        return IPv4Network(f"0.0.0.0/{text}").netmask
    except ValueError:
        raise ModelError(f"invalid netmask '{text}'") from None


def parse_netmask_for(text: str, family: int) -> Netmask:
    """ipvsadm -M: a netmask (or prefix length) for IPv4, a prefix length 1-128 for IPv6."""
    if family == 4:
        return parse_netmask(text)
    if not text.isdigit() or not 1 <= int(text) <= 128:
        raise ModelError(f"invalid IPv6 netmask '{text}': give a prefix length (1-128)")
    return int(text)


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


def validate_mh_table_size(scheduler: str, size: int | None) -> None:
    if size is None:
        return
    if scheduler != "mh":
        raise ModelError(f"an mh table size needs scheduler mh, not {scheduler}")
    if size not in MH_TABLE_SIZES:
        raise ModelError(f"invalid mh table size {size} (one of IPVS's primes: "
                         f"{', '.join(map(str, MH_TABLE_SIZES))})")


def validate_weight(weight: int) -> int:
    if not 0 <= weight <= MAX_WEIGHT:
        raise ModelError(f"weight {weight} is out of range (0-{MAX_WEIGHT})")
    return weight


def validate_service(svc: Service) -> None:
    validate_scheduler(svc.scheduler)
    if svc.key.port == 0 and svc.persistent is None and not svc.key.is_fwmark:
        raise ModelError("port 0 is only valid for a persistent service (-p)")
    if svc.persistent is not None and not 1 <= svc.persistent <= 2**31 - 1:
        raise ModelError(f"persistence timeout {svc.persistent} is out of range (1-{2**31 - 1} seconds)")
    if isinstance(svc.netmask, int) != (svc.key.family == 6):
        raise ModelError(f"persistence netmask {svc.netmask} does not fit the IPv{svc.key.family} service {svc.key}")
    validate_sched_flags(svc.scheduler, svc.sched_flags)
    validate_mh_table_size(svc.scheduler, svc.mh_table_size)
    if svc.onepacket and svc.key.proto is not Protocol.UDP and not svc.key.is_fwmark:
        raise ModelError(ONEPACKET_UDP_ONLY)  # a fwmark service's UDP datagrams are scheduled one by one (as IPVS)
    for real in svc.reals.values():
        validate_real(svc, real)


ONEPACKET_UDP_ONLY = "One-Packet Scheduling is only for UDP virtual services"  # ipvsadm's words


def validate_threshold(value: int, which: str = "u_threshold") -> int:
    if not 0 <= value <= MAX_THRESHOLD:
        raise ModelError(f"{which} {value} is out of range (0-{MAX_THRESHOLD})")
    return value


def validate_real(svc: Service, real: Real) -> None:
    validate_weight(real.weight)
    validate_threshold(real.u_threshold, "u_threshold")
    validate_threshold(real.l_threshold, "l_threshold")
    if real.rip.version != svc.key.family:
        raise ModelError(
            f"real server {real} is IPv{real.rip.version} and the service {svc.key} IPv{svc.key.family}: "
            "direct routing keeps the packet, so both must be of one family"
        )
    if real.forwarding is Forwarding.MASQ:
        if real.tunnel is not None:
            raise ModelError("Tunnel options conflict with forward method")
        if real.rip.version != 4:
            raise ModelError(f"real server {real}: masquerading (-m) is IPv4 only in pyvs so far")
        if svc.key.port == 0 and real.port != 0:
            raise ModelError(f"real server {real}: a service of every port (port 0) keeps the client's port; "
                             "its masqueraded reals take port 0")
        return  # NAT rewrites the port: VIP:80 -> RIP:8080
    if real.forwarding is Forwarding.TUNNEL:
        validate_tunnel(real.tunnel or Tunnel())
        if real.rip.version != 4:
            raise ModelError(f"real server {real}: pyvs tunnels to IPv4 real servers only (IPIP, GUE, GRE over IPv4)")
    elif real.tunnel is not None:
        raise ModelError("Tunnel options conflict with forward method")
    if real.port != svc.key.port and not svc.key.is_fwmark:  # a fwmark service has no port (IPVS keeps the real's)
        raise ModelError(
            f"real server port {real.port} differs from the service port {svc.key.port}: "
            f"{'tunnelling' if real.forwarding is Forwarding.TUNNEL else 'direct routing'} cannot change the port"
        )
