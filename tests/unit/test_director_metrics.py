"""The /metrics families from a status document: pyvs's own and node_exporter's ipvs collector's."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyvs.director.config import ConfigError, parse_config
from pyvs.director.metrics import NODE_IPVS_BACKEND, render
from pyvs.director.statusdoc import RealStatus, StatusDocument

VIP = "198.18.0.100"


def _real(address: str, port: int, weight: int | None, active: int, inactive: int, role: str = "real") -> RealStatus:
    return {"address": address, "port": port, "role": role, "configured_weight": weight or 1, "weight": weight,
            "in_dataplane": weight is not None, "health": "up" if weight is not None else "down", "transitions": 0,
            "checks": 3, "last_check": "", "since": None, "active": active, "inactive": inactive, "conns": 7,
            "packets": 70, "bytes": 7000}


def _status(node_exporter: bool = True) -> StatusDocument:
    return {
        "pid": 1, "config": "d.toml", "pin_dir": "/sys/fs/bpf/pyvs", "generation": 1, "started": 0.0, "time": 1.0,
        "last_reload": {"ok": True, "error": "", "at": 0.0}, "apply_error": "",
        "services": [
            {"proto": "tcp", "vip": VIP, "port": 80, "name": f"tcp/{VIP}:80", "scheduler": "wrr", "owner": "daemon",
             "persistence_timeout": None, "sched_flags": [], "quorum": True, "sorry_active": False,
             "conns": 100, "packets": 1000, "bytes": 100000,
             "reals": [_real("198.18.2.11", 80, 3, 5, 2), _real("198.18.2.12", 80, None, 0, 0),
                       _real("198.18.2.20", 80, None, 0, 0, role="sorry")]},
            {"proto": "udp", "vip": VIP, "port": 53, "name": f"udp/{VIP}:53", "scheduler": "rr", "owner": "daemon",
             "persistence_timeout": None, "sched_flags": [], "quorum": True, "sorry_active": False,
             "conns": 10, "packets": 20, "bytes": 3000, "reals": [_real("198.18.2.11", 53, 0, 0, 4)]},
        ],
        "other_services": [
            {"proto": "tcp", "vip": VIP, "port": 9000, "name": f"tcp/{VIP}:9000", "scheduler": "rr", "owner": "other",
             "reals": [{"address": "198.18.2.13", "port": 9000, "weight": 2, "active": 1, "inactive": 6}],
             "conns": 1, "packets": 2, "bytes": 300},
        ],
        "counters": {"rx": 5, "drop_no_real": 4}, "tables": {}, "switches": {},
        "node_exporter_metrics": node_exporter,
    }  # fmt: skip


def _families(status: StatusDocument) -> dict[str, tuple[str, str, dict[tuple[tuple[str, str], ...], float]]]:
    """name -> (type, help, {sorted labels: value}) as a Prometheus server parses the exposition."""
    result = {}
    for family in text_string_to_metric_families(render(status).decode()):
        samples = {tuple(sorted(s.labels.items())): s.value for s in family.samples}
        result[family.name] = (family.type, family.documentation, samples)
    return result


def _backend(vip_port: int, address: str, port: int, proto: str) -> tuple[tuple[str, str], ...]:
    labels = {"local_address": VIP, "local_port": str(vip_port), "remote_address": address,
              "remote_port": str(port), "proto": proto, "local_mark": ""}
    return tuple(sorted(labels.items()))


def test_node_exporter_ipvs_totals_sum_every_service_and_outgoing_stays_zero() -> None:
    families = _families(_status())
    expected = {"node_ipvs_connections": ("The total number of connections made.", 111),
                "node_ipvs_incoming_packets": ("The total number of incoming packets.", 1022),
                "node_ipvs_incoming_bytes": ("The total amount of incoming data.", 103300),
                "node_ipvs_outgoing_packets": ("The total number of outgoing packets.", 0),
                "node_ipvs_outgoing_bytes": ("The total amount of outgoing data.", 0)}
    for name, (help_text, value) in expected.items():
        assert families[name] == ("counter", help_text, {(): value}), name
    text = render(_status()).decode()
    assert "# TYPE node_ipvs_connections_total counter" in text  # the name on the wire, as node_exporter's
    assert "node_ipvs_connections_total 111.0" in text


def test_node_exporter_ipvs_backends_have_its_labels_and_only_reals_in_the_data_plane() -> None:
    families = _families(_status())
    active = families["node_ipvs_backend_connections_active"]
    inactive = families["node_ipvs_backend_connections_inactive"]
    weight = families["node_ipvs_backend_weight"]
    assert active[:2] == ("gauge", "The current active connections by local and remote address.")
    assert inactive[:2] == ("gauge", "The current inactive connections by local and remote address.")
    assert weight[:2] == ("gauge", "The current backend weight by local and remote address.")
    rs1, udp, hand = (_backend(80, "198.18.2.11", 80, "TCP"), _backend(53, "198.18.2.11", 53, "UDP"),
                      _backend(9000, "198.18.2.13", 9000, "TCP"))
    assert active[2] == {rs1: 5, udp: 0, hand: 1}  # rs2 and the idle sorry server are not in the data plane
    assert inactive[2] == {rs1: 2, udp: 4, hand: 6}
    assert weight[2] == {rs1: 3, udp: 0, hand: 2}
    assert {name for name, _ in rs1} == set(NODE_IPVS_BACKEND)
    text = render(_status()).decode()
    labels = ('local_address="198.18.0.100",local_mark="",local_port="80",proto="TCP",remote_address="198.18.2.11",'
              'remote_port="80"')  # sorted by name, as node_exporter's client writes them
    assert f"node_ipvs_backend_weight{{{labels}}} 3.0" in text


def test_a_sorry_server_taking_the_traffic_is_a_backend() -> None:
    status = _status()
    status["services"][0]["reals"][2] = _real("198.18.2.20", 80, 1, 9, 0, role="sorry")
    active = _families(status)["node_ipvs_backend_connections_active"][2]
    assert active[_backend(80, "198.18.2.20", 80, "TCP")] == 9


def test_node_exporter_families_are_left_out_when_switched_off_and_pyvs_families_stay() -> None:
    families = _families(_status(node_exporter=False))
    assert not [name for name in families if name.startswith("node_")]
    assert "pyvs_real_active_connections" in families and "pyvs_drops" in families


def test_the_config_switch_defaults_on_and_is_checked() -> None:
    assert parse_config("").node_exporter_metrics is True
    assert parse_config("[director]\nnode_exporter_metrics = false\n").node_exporter_metrics is False
    with pytest.raises(ConfigError, match=r"<config>:2: \[director\]: 'node_exporter_metrics' must be bool"):
        parse_config('[director]\nnode_exporter_metrics = "no"\n')


def test_ipv6_labels_are_node_exporters_bare_addresses_and_pyvs_endpoints_in_brackets() -> None:
    # node_exporter labels a backend with Go's net.IP.String(): the compressed address, no brackets
    # (collector/ipvs_linux.go: backend.LocalAddress.String()); pyvs's own `real` label is ipvsadm's [ADDR]:PORT.
    status = _status()
    status["services"] = [
        {"proto": "tcp", "vip": "2001:db8::100", "port": 80, "name": "tcp/[2001:db8::100]:80", "scheduler": "rr",
         "owner": "daemon", "persistence_timeout": None, "sched_flags": [], "quorum": True, "sorry_active": False,
         "conns": 1, "packets": 1, "bytes": 1, "reals": [_real("2001:db8:2::11", 80, 1, 2, 3)]},
    ]  # fmt: skip
    status["other_services"] = []
    families = _families(status)
    labels = {"local_address": "2001:db8::100", "local_port": "80", "remote_address": "2001:db8:2::11",
              "remote_port": "80", "proto": "TCP", "local_mark": ""}
    assert families["node_ipvs_backend_connections_active"][2] == {tuple(sorted(labels.items())): 2}
    real = {"service": "tcp/[2001:db8::100]:80", "real": "[2001:db8:2::11]:80", "role": "real"}
    assert families["pyvs_real_active_connections"][2] == {tuple(sorted(real.items())): 2}
