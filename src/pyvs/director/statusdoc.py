"""The daemon's status document: what GET /status returns, the metrics read and `pyvs status` prints."""

from __future__ import annotations

from typing import NotRequired, TypedDict

from pyvs.model import endpoint_text, parse_address


def endpoint(address: str, port: int) -> str:
    """A document's address and port as ipvsadm writes them (an IPv6 address in brackets): the reals' names on
    the page, in `pyvs status` and in the metrics' `real` label."""
    return endpoint_text(parse_address(address), port)


class ReloadStatus(TypedDict):
    ok: bool
    error: str
    at: float


class RealStatus(TypedDict):
    address: str
    port: int
    role: str  # "real" or "sorry"
    configured_weight: int
    weight: int | None  # in the data plane; None: not there
    in_dataplane: bool
    health: str  # "up", "down", "-" (sorry server)
    transitions: int
    checks: int
    last_check: str
    last_check_ok: bool | None  # None: not checked yet (or a sorry server)
    last_check_at: float | None
    since: float | None
    active: int  # the schedulers' own counts (no table scan)
    inactive: int
    drained: bool  # the page's drain: weight 0 until undrained or reloaded
    overloaded: bool  # IPVS's OVERLOAD: its upper connection threshold reached, no new connections
    conns: int
    packets: int
    bytes: int


class ServiceStatus(TypedDict):
    proto: str  # tcp, udp, sctp; fwm for a firewall-mark service (vip "", port 0)
    vip: str
    port: int
    fwmark: int  # 0 but for a firewall-mark service
    name: str
    scheduler: str
    owner: str
    persistence_timeout: int | None  # seconds; None: not persistent
    sched_flags: list[str]
    quorum: bool
    sorry_active: bool
    conns: int
    packets: int
    bytes: int
    reals: list[RealStatus]


class OtherReal(TypedDict):
    address: str
    port: int
    weight: int
    overloaded: bool
    active: int  # the schedulers' own counts, as for the daemon's reals
    inactive: int


class OtherService(TypedDict):
    """A service of the data plane that is not in the daemon's config (left alone)."""

    proto: str
    vip: str
    port: int
    fwmark: int
    name: str
    scheduler: str
    owner: str
    reals: list[OtherReal]
    conns: int
    packets: int
    bytes: int


class BgpPeerStatus(TypedDict):
    address: str
    state: str  # BGP's session state: Established, Active, Connect, Idle, ...
    since: float | None
    info: str
    last_error: str
    exported: int  # routes announced on the session


class BgpVipStatus(TypedDict):
    vip: str
    announced: bool
    reason: str  # why it is withdrawn ('' when announced)


class BgpStatus(TypedDict):
    """[bgp]: the speaker (BIRD) the daemon drives, its sessions and what it announces."""

    speaker_pid: int | None
    local_asn: int
    hold_time: int
    peers: list[BgpPeerStatus]
    vips: list[BgpVipStatus]
    error: str  # the last failure to reach or configure BIRD ('' when none)


class VrrpVipStatus(TypedDict):
    vip: str
    held: bool  # keepalived has put it on the interface: served here


class VrrpStatus(TypedDict):
    """[vrrp]: the VIPs keepalived moves, as this director sees them on its interface."""

    instance: str
    interface: str
    role: str  # master (every VIP here), backup (none), partial, unknown (not looked yet)
    since: float  # when the role last changed (or the daemon started)
    transitions: int
    vips: list[VrrpVipStatus]


class SyncStatus(TypedDict):
    """[sync]: the connection sync engine the daemon runs (pyvs/sync)."""

    role: str  # master, backup or both
    interface: str
    syncid: int
    daemons: list[str]  # ipvsadm -L --daemon's lines of the running halves ([] while it does not run)
    error: str  # why it does not run ('' when it does)
    stats: dict[str, int]  # messages_sent, conns_sent, messages_received, conns_applied, malformed, ...
    events_lost: int  # events the program could not write: the ring buffer was full


class StatusDocument(TypedDict):
    pid: int
    config: str
    pin_dir: str
    generation: int
    started: float
    time: float
    last_reload: ReloadStatus
    apply_error: str
    services: list[ServiceStatus]
    other_services: list[OtherService]
    counters: dict[str, int]
    tables: dict[str, int | float]  # Dataplane.conn_table_usage(): the sweeper's last pass
    switches: dict[str, bool]
    node_exporter_metrics: bool  # [director] node_exporter_metrics: /metrics adds node_exporter's node_ipvs_* families
    page_actions: bool  # [director] page_token is set: the page offers drain/undrain
    bgp: NotRequired[BgpStatus | None]  # None: no [bgp]
    vrrp: NotRequired[VrrpStatus | None]  # None: no [vrrp]
    sync: NotRequired[SyncStatus | None]  # None: no [sync]
