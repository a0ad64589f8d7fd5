"""`pyvsadm`: ipvsadm's command line over the pyvs data plane.

Exit status as ipvsadm: 0 on success, 2 for a command line it refuses, 1 for an operation
the data plane refuses or cannot do. A refused command changes nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from typing import Protocol, TextIO

from pyvs import __version__
from pyvs.admin.commands import CommandError, apply_command, merge_timeouts, restore
from pyvs.admin.options import RULE_ACTIONS, Action, Command, UsageError, parse_args
from pyvs.admin.printers import (
    IPVS_VERSION,
    Listing,
    Names,
    format_connections,
    format_list,
    format_save,
    format_timeouts,
)
from pyvs.model import (
    DEFAULT_PERSISTENCE,
    DEFAULT_SCHEDULER,
    SUPPORTED_SCHEDULERS,
    Connection,
    Counters,
    Rates,
    RealKey,
    Rules,
    Service,
    ServiceKey,
    Timeouts,
)

PROGRAM = "pyvsadm"
PIN_DIR_ENV = "PYVS_PIN_DIR"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class Dataplane(Protocol):
    """The part of pyvs.dataplane.Dataplane that pyvsadm uses."""

    conn_table_size: int

    def read_rules(self) -> Rules: ...
    def apply(self, rules: Rules) -> None: ...
    def update(self, change: Callable[[Rules], Rules]) -> None: ...
    def update_service(self, key: ServiceKey, change: Callable[[Service | None], Service | None]) -> None: ...
    def read_timeouts(self) -> Timeouts: ...
    def set_timeouts(self, t: Timeouts) -> None: ...
    def service_stats(self) -> dict[ServiceKey, Counters]: ...
    def real_stats(self) -> dict[tuple[ServiceKey, RealKey], Counters]: ...
    def service_rates(self) -> dict[ServiceKey, Rates]: ...
    def real_rates(self) -> dict[tuple[ServiceKey, RealKey], Rates]: ...
    def conn_counts(self) -> dict[tuple[ServiceKey, RealKey], tuple[int, int]]: ...
    def connections(self) -> list[Connection]: ...
    def zero(self, key: ServiceKey | None = None) -> None: ...


USAGE = f"""\
Usage:
  {PROGRAM} -A|E virtual-service [-s scheduler]
  {PROGRAM} -D virtual-service
  {PROGRAM} -C
  {PROGRAM} -R
  {PROGRAM} -S [-n]
  {PROGRAM} -a|e virtual-service -r server-address [options]
  {PROGRAM} -d virtual-service -r server-address
  {PROGRAM} -L|l [virtual-service] [options]
  {PROGRAM} -Z [virtual-service]
  {PROGRAM} --set tcp tcpfin udp
  {PROGRAM} --start-daemon {{master|backup}} [daemon-options]
  {PROGRAM} --stop-daemon {{master|backup}}
  {PROGRAM} -h

Commands:
Either long or short options are allowed.
  --add-service     -A        add virtual service with options
  --edit-service    -E        edit virtual service with options
  --delete-service  -D        delete virtual service
  --clear           -C        clear the whole table
  --restore         -R        restore rules from stdin
  --save            -S        save rules to stdout
  --add-server      -a        add real server with options
  --edit-server     -e        edit real server with options
  --delete-server   -d        delete real server
  --list            -L|-l     list the table
  --zero            -Z        zero counters in a service or all services
  --set tcp tcpfin udp        set connection timeout values
  --start-daemon              start connection sync daemon
  --stop-daemon               stop connection sync daemon
  --help            -h        display this help message
  --version         -v        display the version

virtual-service:
  --tcp-service|-t  service-address   service-address is host[:port]
  --udp-service|-u  service-address   service-address is host[:port]
  --sctp-service    service-address   service-address is host[:port]
                                      (IPv6: [address]:port, e.g. [2001:db8::100]:80)
  --fwmark-service|-f fwmark          fwmark is an integer greater than zero (packets with
                                      that netfilter mark, set in nftables' netdev ingress)

Options:
  --scheduler    -s scheduler         one of {"|".join(SUPPORTED_SCHEDULERS)},
                                      the default scheduler is {DEFAULT_SCHEDULER}.
  --persistent   -p [timeout]         persistent service (default timeout {DEFAULT_PERSISTENCE} seconds)
  --netmask      -M netmask           persistent granularity mask (IPv6: a prefix length, default 128)
  --sched-flags  -b flags             scheduler flags, comma-separated: sh-fallback, sh-port,
                                      mh-fallback, mh-port, flag-1, flag-2, flag-3
  --ipv6         -6                   fwmark entry uses IPv6
  --real-server  -r server-address    server-address is host (and port)
  --gatewaying   -g                   gatewaying (direct routing) (default)
  --masquerading -m                   masquerading (NAT, IPv4): the real's port may differ
  --ipip         -i                   ipip encapsulation (tunneling)
  --tun-type      type                one of ipip|gue|gre,
                                      the default tunnel type is ipip.
  --tun-port      port                tunnel destination port
  --tun-nocsum                        tunnel encapsulation without checksum
  --tun-csum                          tunnel encapsulation with checksum
  --tun-remcsum                       tunnel encapsulation with remote checksum
  --weight       -w weight            capacity of real server
  --u-threshold  -x uthreshold        upper threshold of connections
  --l-threshold  -y lthreshold        lower threshold of connections
  --ops          -o                   one-packet scheduling (UDP services)
  --connection   -c                   output of current IPVS connections
  --timeout                           output of timeout (tcp tcpfin udp)
  --daemon                            output of daemon information
  --stats                             output of statistics information
  --rate                              output of rate information
  --thresholds                        output of thresholds information
  --tun-info                          output of tunnel information
  --exact        -X                   expand numbers (display exact values)
  --nosort                            disable sorting output of service/server entries
  --sort                              does nothing, for backwards compatibility
  --numeric      -n                   numeric output of addresses and ports

Daemon Options:
  --syncid sid                        syncid for connection sync (default=0: a backup takes any)
  --sync-maxlen length                Max sync message length (default=1472)
  --mcast-interface interface         multicast interface for connection sync (default=eth0)
  --mcast-group address               IPv4/IPv6 group (default=224.0.0.81)
  --mcast-port port                   UDP port (default=8848)
  --mcast-ttl ttl                     Multicast TTL (default=1)

pyvs's own options:
  --pin-dir DIR                       the data plane pinned at DIR (default: $PYVS_PIN_DIR, else
                                      /sys/fs/bpf/pyvs/<this netns's name or 'default'>)
  --mh-table-size M                   -A|-E with -s mh: the Maglev table's size, one of IPVS's primes
                                      (251 ... 131071); default: the smallest with 50 slots per real,
                                      at least 4093. -L and -S show it only when set.

pyvs forwards by direct routing, NAT (-m, IPv4) and tunnelling (IPv4 reals) and refuses, changing
nothing, the ipvsadm options it does not implement: --pe (no SIP parser: persistence engines read the
payload), --persistent-conn. The sync daemon is a background process per data plane
(python -m pyvs.sync.daemon), speaking the kernel's sync protocol version 1.
"""


def _version() -> str:
    return f"{PROGRAM} v{__version__} (ipvsadm v1.31 interface, IPVS v{IPVS_VERSION} formats)\n"


def _failures() -> tuple[type[Exception], ...]:
    """The errors that mean an operation failed (exit status 1); imported late, like the data plane."""
    from pyvs.dataplane import DataplaneError
    from pyvs.pindir import PinDirError

    return (CommandError, OSError, DataplaneError, PinDirError)


def _open_dataplane(pin_dir: str | None) -> AbstractContextManager[Dataplane]:
    """The data plane of this network namespace, or the one pinned at --pin-dir/$PYVS_PIN_DIR; closed on exit."""
    from pyvs.dataplane import open_dataplane
    from pyvs.pindir import chosen_pin_dir

    return open_dataplane(chosen_pin_dir(pin_dir))


class _NoDataplane:
    """What a namespace without pins holds: nothing. Read-only commands list it, as ipvsadm does, creating nothing."""

    def __init__(self) -> None:
        from pyvs.dataplane.abi import CONN_TABLE_SIZE

        self.conn_table_size = CONN_TABLE_SIZE

    def read_rules(self) -> Rules:
        return Rules()

    def read_timeouts(self) -> Timeouts:
        return Timeouts()

    def service_stats(self) -> dict[ServiceKey, Counters]:
        return {}

    def real_stats(self) -> dict[tuple[ServiceKey, RealKey], Counters]:
        return {}

    def service_rates(self) -> dict[ServiceKey, Rates]:
        return {}

    def real_rates(self) -> dict[tuple[ServiceKey, RealKey], Rates]:
        return {}

    def conn_counts(self) -> dict[tuple[ServiceKey, RealKey], tuple[int, int]]:
        return {}

    def connections(self) -> list[Connection]:
        return []


READ_ONLY = (Action.LIST, Action.SAVE)
NOT_FORWARDING = (
    "no XDP program is attached in this network namespace and the data plane named by --pin-dir/$PYVS_PIN_DIR is "
    "not attached by itself, so these rules forward nothing here; attach it with `pyvs director attach --dev NIC`"
)


def _xdp_attached_here() -> bool:
    """True when some interface of this network namespace runs an XDP program."""
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        for link in ipr.get_links():
            xdp = link.get_attr("IFLA_XDP")
            if xdp is not None and (xdp.get_attr("IFLA_XDP_PROG_ID") or xdp.get_attr("IFLA_XDP_ATTACHED")):
                return True
    return False


def _attach_where_needed(dataplane: Dataplane, pin_dir: str | None) -> str | None:
    """ipvsadm's model: rules act on VIP traffic arriving on any interface, with no attach step. After a write
    that leaves services, this namespace's own data plane attaches pyvs's program (generic mode) to every
    interface that is UP with an IPv4 address (or a global IPv6 one, for IPv6 services) and runs no XDP program,
    unless pyvs already runs on one (the admin chose where). Returns the one line to tell, None when nothing was
    done. A data plane named by --pin-dir/$PYVS_PIN_DIR may be another namespace's: it is never attached here, only
    a note is given."""
    from pyvs.pindir import chosen_pin_dir

    if chosen_pin_dir(pin_dir) is not None:
        return None if _xdp_attached_here() or not dataplane.read_rules().services else NOT_FORWARDING
    if not hasattr(dataplane, "attach"):
        return None  # a data plane in memory (tests): nothing to attach
    from pyvs.dataplane.attachment import attach_defaults, pyvs_interfaces

    if pyvs_interfaces() or not dataplane.read_rules().services:
        return None  # pyvs already runs here (where the admin or an earlier write put it), or nothing to forward
    return attach_defaults(dataplane).message()  # type: ignore[arg-type]


def _pin_dir_option(args: list[str]) -> tuple[list[str], str | None]:
    """Take pyvs's own --pin-dir DIR (or --pin-dir=DIR) out of ipvsadm's arguments."""
    rest: list[str] = []
    pin_dir: str | None = None
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--pin-dir":
            if i + 1 >= len(args):
                raise UsageError("option --pin-dir needs a directory")
            pin_dir = args[i + 1]
            i += 2
            continue
        if arg.startswith("--pin-dir="):
            pin_dir = arg.partition("=")[2]
        else:
            rest.append(arg)
        i += 1
    return rest, pin_dir


def _known_service(dataplane: Dataplane, key: ServiceKey | None) -> Rules:
    """The current rules; an error when `key` is given and not among them."""
    rules = dataplane.read_rules()
    if key is not None and key not in rules.services:
        raise CommandError("No such service")
    return rules


def _list(dataplane: Dataplane, command: Command) -> str:
    names = Names(command.numeric)
    if command.connection:
        return format_connections(dataplane.connections(), names)
    if command.list_timeouts:
        return format_timeouts(dataplane.read_timeouts())
    rules = _known_service(dataplane, command.service)
    listing = Listing(rules, dataplane.conn_table_size)
    if command.stats:
        listing.service_stats = dataplane.service_stats()
        listing.real_stats = dataplane.real_stats()
    elif command.rate:
        listing.service_rates = dataplane.service_rates()
        listing.real_rates = dataplane.real_rates()
    else:
        listing.conn_counts = dataplane.conn_counts()
    return format_list(listing, names, stats=command.stats, rate=command.rate, thresholds=command.thresholds,
                       exact=command.exact, sort=command.sort, service=command.service, tun_info=command.tun_info)


def _run(dataplane: Dataplane, command: Command, stdin: TextIO) -> str:
    """Carry out one command; return what it prints."""
    action = command.action
    if action is Action.LIST:
        return _list(dataplane, command)
    if action is Action.SAVE:
        return format_save(dataplane.read_rules(), Names(command.numeric))
    if action is Action.FLUSH:
        dataplane.apply(Rules())
    elif action in RULE_ACTIONS and command.service is not None:
        # One service changes: read and write only that one, whatever the size of the rule set.
        def change(current: Service | None, key: ServiceKey = command.service) -> Service | None:
            return apply_command(Rules({key: current} if current is not None else {}), command).services.get(key)

        dataplane.update_service(command.service, change)
    elif action is Action.RESTORE:
        text = stdin.read()
        dataplane.update(lambda rules: restore(rules, text))
    elif action is Action.ZERO:
        _known_service(dataplane, command.service)
        dataplane.zero(command.service)
    elif action is Action.SET_TIMEOUTS and command.timeouts is not None:
        dataplane.set_timeouts(merge_timeouts(dataplane.read_timeouts(), command.timeouts))
    return ""


def _daemon_command(command: Command, pin_dir: str | None) -> str:
    """--start-daemon, --stop-daemon, -L --daemon: the sync daemon processes of this data plane."""
    from pyvs.pindir import chosen_pin_dir
    from pyvs.sync import daemon
    from pyvs.sync.engine import SyncConfig, SyncError

    where = chosen_pin_dir(pin_dir)
    try:
        if command.action is Action.LIST:
            return "".join(cfg.describe() + "\n" for cfg in daemon.running(where))
        assert command.daemon_state is not None
        if command.action is Action.STOP_DAEMON:
            daemon.stop(where, command.daemon_state)
            return ""
        cfg = SyncConfig(command.daemon_state, command.mcast_interface, command.syncid, command.sync_maxlen,
                         command.mcast_group, command.mcast_port, command.mcast_ttl)
        daemon.start(where, cfg)
    except SyncError as err:
        raise CommandError(str(err)) from None
    return ""


def main(
    argv: Sequence[str] | None = None,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    dataplane: Dataplane | None = None,
) -> int:
    """Run one pyvsadm invocation; `argv` excludes the program name. Returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    stdin = stdin or sys.stdin
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    try:
        args, pin_dir = _pin_dir_option(args)
        # Without arguments ipvsadm lists the table.
        command = parse_args(args) if args else Command(Action.LIST)
    except UsageError as err:
        stderr.write(f"{PROGRAM}: {err}\n")
        if err.show_help:
            stderr.write(f"Try `{PROGRAM} -h' or '{PROGRAM} --help' for more information.\n")
        return EXIT_USAGE
    if command.action is Action.HELP:
        stdout.write(_version() + USAGE)
        return EXIT_OK
    if command.action is Action.VERSION:
        stdout.write(_version())
        return EXIT_OK
    try:
        if command.action in (Action.START_DAEMON, Action.STOP_DAEMON) or command.list_daemon:
            stdout.write(_daemon_command(command, pin_dir))
            return EXIT_OK
        if dataplane is not None:
            stdout.write(_run(dataplane, command, stdin))
            return EXIT_OK
        if command.action in READ_ONLY:
            from pyvs.pindir import existing_pin_dir

            if existing_pin_dir(pin_dir) is None:  # nothing pinned here: list nothing, create nothing
                stdout.write(_run(_NoDataplane(), command, stdin))  # type: ignore[arg-type]
                return EXIT_OK
        with _open_dataplane(pin_dir) as opened:
            stdout.write(_run(opened, command, stdin))
            if command.action in RULE_ACTIONS or command.action is Action.RESTORE:
                note = _attach_where_needed(opened, pin_dir)
                if note:
                    stderr.write(f"{PROGRAM}: note: {note}\n")
    except UsageError as err:  # a bad line of --restore input
        stderr.write(f"{PROGRAM}: {err}\n")
        return EXIT_USAGE
    except PermissionError as err:
        stderr.write(f"{PROGRAM}: Permission denied (you must be root): {err}\n")
        return EXIT_FAILED
    except _failures() as err:
        stderr.write(f"{PROGRAM}: {err}\n")
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
