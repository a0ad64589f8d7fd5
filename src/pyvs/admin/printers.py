"""ipvsadm 1.31's text output (list_all, print_title, print_service_entry, list_conn, -S).

Column widths, trailing spaces and number rounding are ipvsadm's; each function returns
the whole text and the caller writes it. IPv6 endpoints are written [address]:port; ipvsadm cuts an IPv4 service's
name at 33 characters and a real's at 28, an IPv6 one's not at all (the columns after it move right).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import lru_cache

from pyvs.model import (
    HOST_MASK,
    HOST_PREFIX6,
    Connection,
    Counters,
    Forwarding,
    IPAddress,
    Protocol,
    Rates,
    Real,
    RealKey,
    Rules,
    Service,
    ServiceKey,
    Timeouts,
    Tunnel,
    endpoint_text,
)

IPVS_VERSION = "1.2.1"  # the kernel IPVS version ipvsadm shows in its header
DEFAULT_CONN_TABLE_SIZE = 4096

ServiceRealKey = tuple[ServiceKey, RealKey]


def _reverse_dns(address: IPAddress) -> str | None:
    try:
        return socket.gethostbyaddr(str(address))[0]
    except OSError:
        return None


def _service_name(port: int, proto: Protocol) -> str | None:
    try:
        return socket.getservbyport(port, proto.name.lower())
    except OSError:
        return None


class Names:
    """How addresses and ports are written: numbers with -n, else host and service names
    when known (ipvsadm's addrport_to_anyname). The lookups can be replaced for tests."""

    def __init__(
        self,
        numeric: bool,
        host_name: Callable[[IPAddress], str | None] = _reverse_dns,
        port_name: Callable[[int, Protocol], str | None] = _service_name,
    ) -> None:
        self.numeric = numeric
        self._host_name = lru_cache(maxsize=None)(host_name)
        self._port_name = lru_cache(maxsize=None)(port_name)

    def endpoint(self, address: IPAddress, port: int, proto: Protocol) -> str:
        if self.numeric:
            return endpoint_text(address, port)
        host = self._host_name(address) or str(address)
        if address.version == 6:
            host = f"[{host}]"
        return f"{host}:{self._port_name(port, proto) or port}"[:59]  # ipvsadm writes it into 60 bytes


NUMERIC = Names(numeric=True)


@dataclass
class Listing:
    """What `-L` shows, as read from the data plane."""

    rules: Rules
    conn_table_size: int = DEFAULT_CONN_TABLE_SIZE
    conn_counts: dict[ServiceRealKey, tuple[int, int]] = field(default_factory=dict)  # (active, inactive)
    service_stats: dict[ServiceKey, Counters] = field(default_factory=dict)
    real_stats: dict[ServiceRealKey, Counters] = field(default_factory=dict)
    service_rates: dict[ServiceKey, Rates] = field(default_factory=dict)
    real_rates: dict[ServiceRealKey, Rates] = field(default_factory=dict)


def format_largenum(value: int, exact: bool = False) -> str:
    """ipvsadm's print_largenum: 9 columns, K/M/G/T rounding down unless --exact."""
    if exact:
        digits = str(value)
        return digits.rjust(9 if len(digits) <= 8 else len(digits) + 1)
    if value < 10**8:
        return f"{value:9d}"
    for limit, divisor, unit in ((10**9, 10**3, "K"), (10**11, 10**6, "M"), (10**14, 10**9, "G")):
        if value < limit:
            return f"{value // divisor:8d}{unit}"
    return f"{value // 10**12:8d}T"


def format_header(conn_table_size: int) -> str:
    return f"IP Virtual Server version {IPVS_VERSION} (size={conn_table_size})\n"


# The listings of -L (print_title's order: --stats first, then --rate, then --thresholds).
PLAIN, STATS, RATE, THRESHOLDS = "plain", "stats", "rate", "thresholds"


def list_mode(stats: bool = False, rate: bool = False, thresholds: bool = False) -> str:
    return STATS if stats else RATE if rate else THRESHOLDS if thresholds else PLAIN


def _title(mode: str, tun_info: bool = False) -> str:
    if mode in (STATS, RATE):
        names = (("Conns", "InPkts", "OutPkts", "InBytes", "OutBytes") if mode == STATS
                 else ("CPS", "InPPS", "OutPPS", "InBPS", "OutBPS"))
        columns = " ".join(f"{name:>8}" for name in names)
        return f"{'Prot LocalAddress:Port':<33} {columns}\n  -> RemoteAddress:Port\n"
    if mode == THRESHOLDS:
        columns = " ".join(f"{name:<10}" for name in ("Uthreshold", "Lthreshold", "ActiveConn", "InActConn"))
        return f"{'Prot LocalAddress:Port':<33} {columns}\n  -> RemoteAddress:Port\n"
    if tun_info:
        return ("Prot LocalAddress:Port Scheduler Flags\n"
                "  -> RemoteAddress:Port           Forward TunnelInfo    Weight ActiveConn InActConn\n")
    return (
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
    )


def _services(rules: Rules, sort: bool) -> list[Service]:
    """ipvsadm's order (ipvs_cmp_services): fwmark (services by address first), IPv4 services before IPv6 ones, then
    protocol, address, port."""
    if not sort:
        return list(rules.services.values())
    return sorted(rules.services.values(), key=lambda svc: (svc.key.fwmark, svc.key.family, svc.key.sort_key()))


def _fwmark_name(key: ServiceKey, rule: bool) -> str:
    """print_service_entry's name of a fwmark service: `FWM  1` (`FWM  1 IPv6`), `-f 1` (`-f 1 -6`) in -S."""
    if rule:
        return f"-f {key.fwmark}" + (" -6" if key.family == 6 else "")
    return f"FWM  {key.fwmark}" + (" IPv6" if key.family == 6 else "")


def _mask(svc: Service) -> str | None:
    """The persistence granularity ipvsadm shows: a netmask (IPv4) or prefix length (IPv6) other than the host's."""
    return None if svc.netmask in (HOST_MASK, HOST_PREFIX6) else str(svc.netmask)


def _reals(svc: Service, sort: bool) -> list[Real]:
    return svc.sorted_reals() if sort else list(svc.reals.values())


def _counters(counters: Counters, exact: bool) -> str:
    return "".join(
        format_largenum(value, exact)
        for value in (counters.conns, counters.inpkts, counters.outpkts, counters.inbytes, counters.outbytes)
    )


def _rates(rates: Rates, exact: bool) -> str:
    return "".join(format_largenum(value, exact)
                   for value in (rates.cps, rates.inpps, rates.outpps, rates.inbps, rates.outbps))


def tunnel_info(real: Real) -> str:
    """ipvsadm's TunnelInfo column: the tunnel of a tunnel real, n/a for the others."""
    if real.forwarding is not Forwarding.TUNNEL:
        return "n/a"
    return (real.tunnel or Tunnel()).info()


def tunnel_options(real: Real) -> str:
    """What -S writes after -w for a tunnel real, as ipvsadm's print_tunnel_rule."""
    tunnel = real.tunnel or Tunnel()
    port = f" --tun-port {tunnel.port}" if tunnel.type == "gue" else ""
    csum = f" --tun-{tunnel.csum}" if tunnel.type != "ipip" else ""
    return f" --tun-type {tunnel.type}{port}{csum}"


def _service_entry(svc: Service, listing: Listing, names: Names, mode: str, exact: bool, sort: bool,
                   tun_info: bool = False) -> str:
    key = svc.key
    if key.is_fwmark:
        name = _fwmark_name(key, rule=False)
    else:
        name = f"{key.proto.label:<4} {names.endpoint(key.vip, key.port, key.proto)}"
        if key.family == 4:
            name = name[:33]
    if mode == STATS:
        lines = [f"{name:<33}{_counters(listing.service_stats.get(key, Counters()), exact)}"]
    elif mode == RATE:
        lines = [f"{name:<33}{_rates(listing.service_rates.get(key, Rates()), exact)}"]
    else:
        line = f"{name} {svc.scheduler}"
        if svc.sched_flags:
            line += f" ({','.join(svc.sched_flags)})"
        if svc.persistent is not None:
            line += f" persistent {svc.persistent}"
            if _mask(svc):
                line += f" mask {_mask(svc)}"
        if svc.onepacket:
            line += " ops"
        if svc.mh_table_size is not None:  # pyvs extension: only services that set it show it
            line += f" mh-table-size {svc.mh_table_size}"
        lines = [line]
    for real in _reals(svc, sort):
        dest = names.endpoint(real.rip, real.port, key.proto)
        if key.family == 4:
            dest = dest[:28]
        if mode == STATS:
            counters = listing.real_stats.get((key, real.key), Counters())
            lines.append(f"  -> {dest:<28}{_counters(counters, exact)}")
        elif mode == RATE:  # ipvsadm prints a real's CPS and PPS whole (%8llu), only its BPS through largenum
            rates = listing.real_rates.get((key, real.key), Rates())
            lines.append(f"  -> {dest:<28} {rates.cps:8d} {rates.inpps:8d} {rates.outpps:8d}"
                         f"{format_largenum(rates.inbps, exact)}{format_largenum(rates.outbps, exact)}")
        elif mode == THRESHOLDS:
            active, inactive = listing.conn_counts.get((key, real.key), (0, 0))
            lines.append(f"  -> {dest:<28} {real.u_threshold:<10} {real.l_threshold:<10} {active:<10} "
                         f"{inactive:<10}")
        else:
            active, inactive = listing.conn_counts.get((key, real.key), (0, 0))
            info = f" {tunnel_info(real):<13}" if tun_info else ""
            lines.append(
                f"  -> {dest:<28} {real.forwarding.value:<7}{info} {real.weight:<6} {active:<10} {inactive:<10}"
            )
    return "".join(line + "\n" for line in lines)


def format_list(
    listing: Listing,
    names: Names = NUMERIC,
    *,
    stats: bool = False,
    rate: bool = False,
    thresholds: bool = False,
    exact: bool = False,
    sort: bool = True,
    service: ServiceKey | None = None,
    tun_info: bool = False,
) -> str:
    """`-L` (all services, with the version header) or `-L -t VIP:port` (one, without it).

    `service` must be in the rules.
    """
    if service is not None:
        chosen = [listing.rules.services[service]]
        head = ""
    else:
        chosen = _services(listing.rules, sort)
        head = format_header(listing.conn_table_size)
    mode = list_mode(stats, rate, thresholds)
    body = "".join(_service_entry(svc, listing, names, mode, exact, sort, tun_info) for svc in chosen)
    return head + _title(mode, tun_info) + body


def format_save(rules: Rules, names: Names = NUMERIC, *, sort: bool = True) -> str:
    """`-S`: the rules as ipvsadm invocations that `-R` reads back."""
    lines = []
    for svc in _services(rules, sort):
        key = svc.key
        if key.is_fwmark:
            selector = _fwmark_name(key, rule=True)
        else:
            selector = f"{key.proto.option} {names.endpoint(key.vip, key.port, key.proto)}"
        line = f"-A {selector} -s {svc.scheduler}"
        if svc.persistent is not None:
            line += f" -p {svc.persistent}"
            if _mask(svc):
                line += f" -M {_mask(svc)}"
        if svc.onepacket:
            line += " -o"
        if svc.sched_flags:
            line += f" -b {','.join(svc.sched_flags)}"
        if svc.mh_table_size is not None:
            line += f" --mh-table-size {svc.mh_table_size}"
        lines.append(line)
        for real in _reals(svc, sort):
            dest = names.endpoint(real.rip, real.port, key.proto)
            tunnel = tunnel_options(real) if real.forwarding is Forwarding.TUNNEL else ""
            line = f"-a {selector} -r {dest} {real.forwarding.option} -w {real.weight}{tunnel}"
            # ipvsadm 1.31's -S leaves thresholds out (its -R loses them); pyvs writes them, which -R reads back
            if real.u_threshold:
                line += f" -x {real.u_threshold}"
            if real.l_threshold:
                line += f" -y {real.l_threshold}"
            lines.append(line)
    return "".join(line + "\n" for line in lines)


def format_connections(connections: Iterable[Connection], names: Names = NUMERIC) -> str:
    """`-L -c`: the connection table, in the order given."""
    lines = [
        "IPVS connection entries",
        f"pro expire {'state':<11} {'source':<18} {'virtual':<18} destination",
    ]
    for conn in connections:
        seconds = max(0, int(conn.expires))
        expire = f"{seconds // 60:02d}:{seconds % 60:02d}"
        source = names.endpoint(conn.client, conn.cport, conn.proto)
        virtual = names.endpoint(conn.vip, conn.vport, conn.proto)
        dest = names.endpoint(conn.rip, conn.rport, conn.proto)
        lines.append(f"{conn.proto.label:<3} {expire:<6} {conn.state:<11} {source:<18} {virtual:<18} {dest}")
    return "".join(line + "\n" for line in lines)


def format_timeouts(timeouts: Timeouts) -> str:
    """`-L --timeout`."""
    return f"Timeout (tcp tcpfin udp): {timeouts.tcp} {timeouts.tcpfin} {timeouts.udp}\n"
