"""[vrrp]: the config section, the role from the VIPs held, the status line and metrics, doctor's comparison of
directors."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pyvs.arp.doctor import Status, agreement_finding
from pyvs.director import vrrp
from pyvs.director.config import ConfigError, VrrpSpec, parse_config
from pyvs.director.metrics import render
from pyvs.director.status_client import vrrp_summary
from pyvs.director.statusdoc import StatusDocument

SERVICE = '[[service]]\nproto = "tcp"\nvip = "198.18.0.100"\nport = 80\n[[service.real]]\naddress = "198.18.2.11"\n'
VIP, OTHER = IPv4Address("198.18.0.100"), IPv4Address("198.18.0.101")


def test_the_section_is_read_and_refused_where_it_cannot_work() -> None:
    config = parse_config(f'[director]\ninterface = "eth0"\n[vrrp]\ninstance = "VI_1"\n{SERVICE}')
    assert config.vrrp == VrrpSpec(instance="VI_1", announce_count=3)
    assert parse_config('[director]\ninterface = "eth0"\n[vrrp]\n').vrrp == VrrpSpec()
    assert parse_config('[director]\ninterface = "eth0"\n').vrrp is None
    for text, message in (
        ("[vrrp]\n", r"d.toml:1: \[vrrp\]: \[vrrp\] needs \[director\] interface"),
        ('[director]\ninterface = "eth0"\n[vrrp]\nowner = 1\n', "unknown setting 'owner'"),
        ('[director]\ninterface = "eth0"\n[vrrp]\nannounce_count = 101\n', "between 0 and 100"),
        ('[director]\ninterface = "eth0"\n[vrrp]\n[bgp]\nlocal_asn = 65001\npeer_asn = 65000\npeers = ["198.18.2.1"]\n',
         r"\[vrrp\] and \[bgp\] do not go together"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config(text, "d.toml")


def test_the_role_follows_the_vips_held() -> None:
    assert vrrp.role([VIP, OTHER], {VIP, OTHER}) == "master"
    assert vrrp.role([VIP, OTHER], {VIP}) == "partial"
    assert vrrp.role([VIP, OTHER], set()) == "backup"
    assert vrrp.role([], set()) == "backup"


def _status(held: bool) -> StatusDocument:
    doc = {"pid": 1, "config": "d.toml", "generation": 1, "last_reload": {"ok": True}, "services": [],
           "other_services": [], "counters": {}, "tables": {}, "time": 0.0, "node_exporter_metrics": False,
           "vrrp": {"instance": "VI_1", "interface": "eth0", "role": "master" if held else "backup", "since": 0.0,
                    "transitions": 2, "vips": [{"vip": "198.18.0.100", "held": held}]}}
    return doc  # type: ignore[return-value]


def test_metrics_and_the_status_line_show_the_role() -> None:
    text = render(_status(held=False)).decode()
    assert 'pyvs_vrrp_master{instance="VI_1"} 0.0' in text
    assert 'pyvs_vrrp_vip_held{instance="VI_1",vip="198.18.0.100"} 0.0' in text
    assert 'pyvs_vrrp_transitions_total{instance="VI_1"} 2.0' in text
    assert 'pyvs_vrrp_master{instance="VI_1"} 1.0' in render(_status(held=True)).decode()
    assert vrrp_summary(_status(held=False)) == [
        "vrrp: BACKUP (VI_1 on eth0, 2 transitions); VIPs: 198.18.0.100 standby"]
    none = _status(True)
    none["vrrp"] = None
    assert vrrp_summary(none) == [] and "pyvs_vrrp" not in render(none).decode()


def test_doctor_names_the_directors_that_differ() -> None:
    same = agreement_finding("abc", {"198.18.2.20:9180": "abc", "198.18.2.30:9180": "abc"})
    assert same.status is Status.OK and same.detail == "all 3 directors show fingerprint abc"
    differ = agreement_finding("abc", {"198.18.2.20:9180": "abc", "198.18.2.30:9180": "def"})
    assert differ.status is Status.FAIL
    assert differ.detail == "this director shows abc, 1 of 2 others differ: 198.18.2.30:9180 def"
    lost = agreement_finding("abc", {"198.18.2.20:9180": ConnectionRefusedError("refused")})
    assert lost.status is Status.FAIL and "cannot compare: 198.18.2.20:9180: refused" in lost.detail
