"""Prometheus metrics of the director, from one status snapshot (the same numbers as the JSON status).

Besides pyvs's own families (pyvs_*), the families of node_exporter's ipvs collector (collector/ipvs_linux.go),
with its names, help texts, types and labels, so that dashboards and alerts written for IPVS read pyvs unchanged:
node_ipvs_{connections,incoming_packets,incoming_bytes,outgoing_packets,outgoing_bytes}_total (the totals of
/proc/net/ip_vs_stats) and node_ipvs_backend_{connections_active,connections_inactive,weight} per real (the rows of
/proc/net/ip_vs). They cover every service of the data plane: the daemon's and those made by hand.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyvs.director.statusdoc import OtherService, ServiceStatus, StatusDocument, SyncStatus, endpoint

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVICE = ["service"]
REAL = ["service", "real", "role"]
# node_exporter's fullIpvsBackendLabels, in its order.
NODE_IPVS_BACKEND = ["local_address", "local_port", "remote_address", "remote_port", "proto", "local_mark"]


def node_ipvs_families(status: StatusDocument) -> list[Metric]:
    """node_exporter's ipvs collector families from a status document.

    The global totals are the sums over the services of the data plane (IPVS counts its totals as it counts its
    services; with direct routing nothing comes back through the director: outgoing stays 0). A backend is a real
    in the data plane (a sorry server too while it takes the traffic, as keepalived adds it to IPVS); a real that
    health checks took out is not listed, as in /proc/net/ip_vs. Label values as node_exporter writes them: the
    protocol in capitals ("TCP", "UDP", "SCTP"; "FWM" for a firewall-mark service, with local_address "<nil>",
    local_port 0 and local_mark the mark in 8 hex digits, as procfs reads /proc/net/ip_vs), ports in decimal, local_mark
    "" for the others, addresses bare (an
    IPv6 one compressed, without brackets: Go's net.IP.String()).
    """
    services, others = status["services"], status.get("other_services", [])
    totals = {name: sum(s[name] for s in services) + sum(o[name] for o in others)
              for name in ("conns", "packets", "bytes")}
    backends: dict[tuple[str, ...], list[int]] = {}  # node_exporter sums rows with the same labels; so do we

    def backend(svc: ServiceStatus | OtherService, address: str, rport: int, active: int, inactive: int,
                weight: int) -> None:
        if svc.get("fwmark"):  # procfs reads /proc/net/ip_vs's "FWM  %08X" line: no address (Go prints "<nil>")
            labels = ("<nil>", "0", address, str(rport), "FWM", f"{svc['fwmark']:08X}")
        else:
            labels = (svc["vip"], str(svc["port"]), address, str(rport), svc["proto"].upper(), "")
        counts = backends.setdefault(labels, [0, 0, 0])
        counts[0] += active
        counts[1] += inactive
        counts[2] += weight

    for svc in services:
        for real in svc["reals"]:
            if real["weight"] is not None:
                backend(svc, real["address"], real["port"], real["active"], real["inactive"], real["weight"])
    for other in others:
        for oreal in other["reals"]:
            backend(other, oreal["address"], oreal["port"], oreal.get("active", 0), oreal.get("inactive", 0),
                    oreal["weight"])
    families: list[Metric] = []
    for name, help_text, value in (
        ("node_ipvs_connections_total", "The total number of connections made.", totals["conns"]),
        ("node_ipvs_incoming_packets_total", "The total number of incoming packets.", totals["packets"]),
        ("node_ipvs_outgoing_packets_total", "The total number of outgoing packets.", 0),
        ("node_ipvs_incoming_bytes_total", "The total amount of incoming data.", totals["bytes"]),
        ("node_ipvs_outgoing_bytes_total", "The total amount of outgoing data.", 0),
    ):
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], value)
        families.append(family)
    active = GaugeMetricFamily("node_ipvs_backend_connections_active",
                               "The current active connections by local and remote address.", labels=NODE_IPVS_BACKEND)
    inactive = GaugeMetricFamily("node_ipvs_backend_connections_inactive",
                                 "The current inactive connections by local and remote address.",
                                 labels=NODE_IPVS_BACKEND)
    weight = GaugeMetricFamily("node_ipvs_backend_weight", "The current backend weight by local and remote address.",
                               labels=NODE_IPVS_BACKEND)
    for labels, (n_active, n_inactive, n_weight) in sorted(backends.items()):
        active.add_metric(list(labels), n_active)
        inactive.add_metric(list(labels), n_inactive)
        weight.add_metric(list(labels), n_weight)
    families += [active, inactive, weight]
    return families


class SnapshotCollector(Collector):
    def __init__(self, status: StatusDocument):
        self.status = status

    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily | GaugeMetricFamily] = {
            "service_connections": CounterMetricFamily(
                "pyvs_service_connections", "Connections scheduled for the service", labels=SERVICE),
            "service_packets": CounterMetricFamily(
                "pyvs_service_packets", "Packets to the service (client to director)", labels=SERVICE),
            "service_bytes": CounterMetricFamily(
                "pyvs_service_bytes", "Bytes to the service (client to director)", labels=SERVICE),
            "service_quorum": GaugeMetricFamily(
                "pyvs_service_quorum_up", "1 when the service has its quorum of live reals", labels=SERVICE),
            "service_sorry": GaugeMetricFamily(
                "pyvs_service_sorry_active", "1 when the sorry server takes the traffic", labels=SERVICE),
            "real_connections": CounterMetricFamily(
                "pyvs_real_connections", "Connections scheduled to the real", labels=REAL),
            "real_packets": CounterMetricFamily("pyvs_real_packets", "Packets forwarded to the real", labels=REAL),
            "real_bytes": CounterMetricFamily("pyvs_real_bytes", "Bytes forwarded to the real", labels=REAL),
            "real_active": GaugeMetricFamily(
                "pyvs_real_active_connections", "Established connections (ActiveConn)", labels=REAL),
            "real_inactive": GaugeMetricFamily(
                "pyvs_real_inactive_connections", "Other live connections (InActConn)", labels=REAL),
            "real_weight": GaugeMetricFamily(
                "pyvs_real_weight", "Weight in the data plane (-1: not in the data plane)", labels=REAL),
            "real_up": GaugeMetricFamily("pyvs_real_up", "Health: 1 up, 0 down", labels=REAL),
            "real_overloaded": GaugeMetricFamily(
                "pyvs_real_overloaded", "1 when the real reached its upper connection threshold (OVERLOAD)",
                labels=REAL),
            "real_transitions": CounterMetricFamily(
                "pyvs_real_health_transitions", "Health state changes", labels=REAL),
        }  # fmt: skip
        for svc in self.status["services"]:
            labels = [svc["name"]]
            families["service_connections"].add_metric(labels, svc["conns"])
            families["service_packets"].add_metric(labels, svc["packets"])
            families["service_bytes"].add_metric(labels, svc["bytes"])
            families["service_quorum"].add_metric(labels, int(svc["quorum"]))
            families["service_sorry"].add_metric(labels, int(svc["sorry_active"]))
            for real in svc["reals"]:
                real_labels = [svc["name"], endpoint(real["address"], real["port"]), real["role"]]
                families["real_connections"].add_metric(real_labels, real["conns"])
                families["real_packets"].add_metric(real_labels, real["packets"])
                families["real_bytes"].add_metric(real_labels, real["bytes"])
                families["real_active"].add_metric(real_labels, real["active"])
                families["real_inactive"].add_metric(real_labels, real["inactive"])
                families["real_weight"].add_metric(real_labels, -1 if real["weight"] is None else real["weight"])
                families["real_overloaded"].add_metric(real_labels, int(real.get("overloaded", False)))
                if real["role"] == "real":
                    families["real_up"].add_metric(real_labels, int(real["health"] == "up"))
                    families["real_transitions"].add_metric(real_labels, real["transitions"])
        yield from families.values()
        drops = CounterMetricFamily("pyvs_drops", "Packets dropped by the data plane, by reason", labels=["reason"])
        events = CounterMetricFamily("pyvs_dataplane_events", "Data plane counters other than drops",
                                     labels=["counter"])
        for name, value in self.status["counters"].items():
            if name.startswith("drop_"):
                drops.add_metric([name[len("drop_"):]], value)
            else:
                events.add_metric([name], value)
        yield drops
        yield events
        tables = self.status.get("tables")
        if tables:
            entries = GaugeMetricFamily("pyvs_conn_table_entries", "Live entries the sweeper's last pass counted",
                                        labels=["table"])
            size = GaugeMetricFamily("pyvs_conn_table_size", "Entries a table holds", labels=["table"])
            evicted = CounterMetricFamily("pyvs_conn_table_evicted", "Entries the LRU evicted to make room",
                                          labels=["table"])
            for table, (n, total, out) in {"connections": ("entries", "size", "evicted"),
                                           "half_open": ("half_open", "half_open_size", "half_open_evicted")}.items():
                entries.add_metric([table], tables[n])
                size.add_metric([table], tables[total])
                evicted.add_metric([table], tables[out])
            rate = GaugeMetricFamily("pyvs_new_connections_per_second", "New connections per second, last sweep pass")
            rate.add_metric([], tables["new_per_second"])
            yield from (entries, size, evicted, rate)
        reload_ok = GaugeMetricFamily("pyvs_director_last_reload_ok", "1 when the last reload was applied")
        reload_ok.add_metric([], int(self.status["last_reload"]["ok"]))
        generation = GaugeMetricFamily("pyvs_director_config_generation", "Config generation (1 + reloads)")
        generation.add_metric([], self.status["generation"])
        yield reload_ok
        yield generation
        bgp = self.status.get("bgp")
        if bgp:
            session = GaugeMetricFamily("pyvs_bgp_session_up", "1 when the BGP session with the peer is established",
                                        labels=["peer"])
            routes = GaugeMetricFamily("pyvs_bgp_routes_exported", "Routes announced to the peer", labels=["peer"])
            for peer in bgp["peers"]:
                session.add_metric([peer["address"]], int(peer["state"] == "Established"))
                routes.add_metric([peer["address"]], peer["exported"])
            announced = GaugeMetricFamily("pyvs_bgp_vip_announced", "1 when the VIP is announced, 0 when withdrawn",
                                          labels=["vip"])
            for vip in bgp["vips"]:
                announced.add_metric([vip["vip"]], int(vip["announced"]))
            speaker = GaugeMetricFamily("pyvs_bgp_speaker_up", "1 when the BGP speaker (BIRD) runs")
            speaker.add_metric([], int(bgp["speaker_pid"] is not None))
            yield from (session, routes, announced, speaker)
        vrrp = self.status.get("vrrp")
        if vrrp:
            master = GaugeMetricFamily("pyvs_vrrp_master", "1 when this director is VRRP master (every VIP of the "
                                       "instance on its interface), 0 otherwise", labels=["instance"])
            master.add_metric([vrrp["instance"]], int(vrrp["role"] == "master"))
            held = GaugeMetricFamily("pyvs_vrrp_vip_held", "1 when keepalived has put the VIP on this director's "
                                     "interface (served here), 0 when not (standby)", labels=["instance", "vip"])
            for entry in vrrp["vips"]:
                held.add_metric([vrrp["instance"], entry["vip"]], int(entry["held"]))
            transitions = CounterMetricFamily("pyvs_vrrp_transitions", "VRRP role changes seen since the daemon "
                                              "started", labels=["instance"])
            transitions.add_metric([vrrp["instance"]], vrrp["transitions"])
            yield from (master, held, transitions)
        sync = self.status.get("sync")
        if sync:
            yield from sync_families(sync)
        if self.status.get("node_exporter_metrics", True):
            yield from node_ipvs_families(self.status)


SYNC_COUNTERS = {  # stats key -> metric name (without _total) and help
    "messages_sent": ("pyvs_sync_messages_sent", "Sync messages sent by the master"),
    "conns_sent": ("pyvs_sync_conns_sent", "Connection entries sent by the master"),
    "messages_received": ("pyvs_sync_messages_received", "Sync messages received by the backup"),
    "conns_applied": ("pyvs_sync_conns_applied", "Received entries written into the connection tables"),
}
SYNC_ERRORS = ("malformed", "wrong_syncid", "wrong_version", "unknown_service", "unknown_real", "skipped",
               "insert_failed", "send_errors", "events_stale")


def sync_families(sync: SyncStatus) -> Iterator[Metric]:
    """[sync]'s counters: messages and entries sent and received, what was refused, events lost."""
    stats = sync["stats"]
    for key, (name, text) in SYNC_COUNTERS.items():
        family = CounterMetricFamily(name, text)
        family.add_metric([], stats.get(key, 0))
        yield family
    errors = CounterMetricFamily("pyvs_sync_errors", "Sync messages or entries refused or lost, by kind",
                                 labels=["kind"])
    for kind in SYNC_ERRORS:
        errors.add_metric([kind], stats.get(kind, 0))
    yield errors
    lost = CounterMetricFamily("pyvs_sync_events_lost", "Connection events lost: the ring buffer was full")
    lost.add_metric([], sync["events_lost"])
    yield lost
    up = GaugeMetricFamily("pyvs_sync_up", "1 when the sync engine runs")
    up.add_metric([], int(bool(sync["daemons"])))
    yield up


def render(status: StatusDocument) -> bytes:
    """The Prometheus text exposition of one status snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(status))
    return generate_latest(registry)
