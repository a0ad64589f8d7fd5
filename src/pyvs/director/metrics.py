"""Prometheus metrics of the director, from one status snapshot (the same numbers as the JSON status)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pyvs.director.statusdoc import StatusDocument

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SERVICE = ["service"]
REAL = ["service", "real", "role"]


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
                real_labels = [svc["name"], f"{real['address']}:{real['port']}", real["role"]]
                families["real_connections"].add_metric(real_labels, real["conns"])
                families["real_packets"].add_metric(real_labels, real["packets"])
                families["real_bytes"].add_metric(real_labels, real["bytes"])
                families["real_active"].add_metric(real_labels, real["active"])
                families["real_inactive"].add_metric(real_labels, real["inactive"])
                families["real_weight"].add_metric(real_labels, -1 if real["weight"] is None else real["weight"])
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


def render(status: StatusDocument) -> bytes:
    """The Prometheus text exposition of one status snapshot."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(status))
    return generate_latest(registry)
