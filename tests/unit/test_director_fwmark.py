"""The daemon's config and metrics for firewall-mark and SCTP services."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyvs.director.config import ConfigError, parse_config
from pyvs.director.daemon import service_name
from pyvs.director.metrics import render
from pyvs.model import Protocol, ServiceKey, fwmark_key
from tests.unit.test_director_metrics import _real, _status

FWMARK = """
[[service]]
fwmark = 1
scheduler = "rr"
[[service.real]]
address = "198.18.2.11"
port = 80
[[service.real]]
address = "198.18.2.12"
check = { type = "tcp", port = 443 }

[[service]]
fwmark = 2
ip_family = "inet6"
check = { type = "none" }

[[service]]
proto = "sctp"
vip = "198.18.0.100"
port = 3868
check = { type = "none" }
[[service.real]]
address = "198.18.2.11"
"""


def test_fwmark_and_sctp_services_are_read() -> None:
    fwm1, fwm2, sctp = parse_config(FWMARK, "d.toml").services
    assert fwm1.key == fwmark_key(1) and [(r.port, r.check.port) for r in fwm1.reals] == [(80, None), (0, 443)]
    assert fwm2.key == fwmark_key(2, 6)
    assert sctp.key == ServiceKey(Protocol.SCTP, IPv4Address("198.18.0.100"), 3868) and sctp.reals[0].port == 3868
    assert [service_name(s.key) for s in (fwm1, fwm2, sctp)] == ["fwm/1", "fwm6/2", "sctp/198.18.0.100:3868"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[service]]\nfwmark = 1\nvip = "198.18.0.100"\n', "'vip' and 'fwmark' exclude each other"),
        ("[[service]]\nfwmark = 0\n", "'fwmark' must be between 1 and 4294967295"),
        ('[[service]]\nfwmark = 1\n[[service.real]]\naddress = "198.18.2.11"\n',
         "has no port for its tcp check"),
        ('[[service]]\nfwmark = 1\nip_family = "inet6"\n[[service.real]]\naddress = "198.18.2.11"\nport = 80\n',
         "of both families"),
        ('[[service]]\nvip = "198.18.0.100"\nport = 80\nip_family = "inet6"\n', "'ip_family' is for a fwmark service"),
        ('[[service]]\nproto = "icmp"\nvip = "198.18.0.100"\nport = 80\n', "(tcp, udp or sctp)"),
    ],
)
def test_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_config(text, "d.toml")


def test_node_exporter_labels_of_a_fwmark_backend() -> None:
    status = _status()
    status["services"].append({
        "proto": "fwm", "vip": "", "port": 0, "fwmark": 1, "name": "fwm/1", "scheduler": "rr", "owner": "daemon",
        "persistence_timeout": None, "sched_flags": [], "quorum": True, "sorry_active": False, "conns": 0,
        "packets": 0, "bytes": 0, "reals": [_real("198.18.2.11", 0, 1, 2, 3)]})
    families = {f.name: f for f in text_string_to_metric_families(render(status).decode())}
    (sample,) = [s for s in families["node_ipvs_backend_connections_active"].samples if s.labels["proto"] == "FWM"]
    assert sample.labels == {"local_address": "<nil>", "local_port": "0", "remote_address": "198.18.2.11",
                             "remote_port": "0", "proto": "FWM", "local_mark": "00000001"}
    assert sample.value == 2
