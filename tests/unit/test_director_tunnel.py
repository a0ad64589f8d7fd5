"""Tunnel forwarding in the daemon's config (`forwarding = "tun"`, `tunnel = {type, port, csum}`, per service and
per real) and in `pyvs director import-keepalived` (keepalived 2.2's `lb_kind TUN type gue port N csum`)."""

from __future__ import annotations

import pytest

from pyvs.director.config import ConfigError, parse_config
from pyvs.director.daemon import service_diff
from pyvs.director.keepalived import KeepalivedError, import_keepalived
from pyvs.model import Forwarding, Tunnel

CONFIG = """
[[service]]
vip = "198.18.0.100"
port = 80
forwarding = "tun"
tunnel = { type = "gue", port = 6080, csum = "csum" }

[[service.real]]
address = "198.18.2.11"

[[service.real]]
address = "198.18.6.12"
tunnel = { type = "gre" }

[[service.real]]
address = "198.18.2.13"
forwarding = "dr"
"""


def test_a_service_and_its_reals_say_how_each_real_is_reached() -> None:
    [svc] = parse_config(CONFIG, "director.toml").services
    assert [(r.forwarding, r.tunnel) for r in svc.reals] == [
        (Forwarding.TUNNEL, Tunnel("gue", 6080, "csum")), (Forwarding.TUNNEL, Tunnel("gre")), (Forwarding.ROUTE, None)]
    real = svc.reals[1].real(3)
    assert (real.weight, real.forwarding, real.tunnel) == (3, Forwarding.TUNNEL, Tunnel("gre"))


@pytest.mark.parametrize(("change", "line", "message"), [
    ('type = "gre"', 'type = "gue"', ":13: service tcp 198.18.0.100:80: real #2: 'tunnel': You need to supply the "
     "'tun-port' option for the 'gue' tunnel type"),
    ('forwarding = "dr"', 'forwarding = "masq"', ":17: service tcp 198.18.0.100:80: real #3: 'forwarding':"),
    ('forwarding = "dr"', 'forwarding = "dr"\ntunnel = { type = "ipip" }', ":18: service tcp 198.18.0.100:80: real "
     "#3: 'tunnel' goes with forwarding = \"tun\""),
    ('vip = "198.18.0.100"', 'vip = "2001:db8::100"', ""),
])  # fmt: skip
def test_bad_tunnel_settings_are_refused_with_the_line(change: str, line: str, message: str) -> None:
    text = CONFIG.replace(change, line, 1)
    if "2001:db8" in line:
        text = text.replace('"198.18.2.11"', '"2001:db8:2::11"').replace('"198.18.6.12"', '"2001:db8:6::12"') \
            .replace('"198.18.2.13"', '"2001:db8:2::13"')
        message = ":8: service tcp [2001:db8::100]:80: real #1: real server 2001:db8:2::11: pyvs tunnels to IPv4"
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "director.toml")
    assert str(caught.value).startswith("director.toml" + message), str(caught.value)


def test_a_changed_tunnel_is_drift_the_daemon_repairs() -> None:
    [svc] = parse_config(CONFIG).services
    expected = svc.service()
    for real in svc.reals:
        expected.reals[real.key] = real.real(1)
    current = svc.service()
    for real in svc.reals:
        current.reals[real.key] = real.real(1)
    assert service_diff(current, expected) == []
    gre = current.reals[svc.reals[1].key]
    gre.tunnel = Tunnel("gre", 0, "csum")
    assert service_diff(current, expected) == [
        "real 198.18.6.12:80 forwarding Tunnel gre:+c (expected Tunnel gre:-c)"]


KEEPALIVED = """
virtual_server 198.18.0.100 80 {
    lb_algo rr
    lb_kind TUN type gue port 6080 csum
    protocol TCP
    real_server 198.18.2.11 80 {
        TCP_CHECK { connect_timeout 3 }
    }
    real_server 198.18.6.12 80 {
        lvs_method TUN type gre
        TCP_CHECK { connect_timeout 3 }
    }
    real_server 198.18.2.13 80 {
        lvs_method DR
        TCP_CHECK { connect_timeout 3 }
    }
}
"""


def test_keepalived_tun_is_imported_per_virtual_server_and_per_real() -> None:
    text, warnings = import_keepalived(KEEPALIVED)
    assert warnings == []
    assert 'forwarding = "tun"\ntunnel = { type = "gue", port = 6080, csum = "csum" }' in text
    [svc] = parse_config(text).services
    assert [(r.forwarding, r.tunnel) for r in svc.reals] == [
        (Forwarding.TUNNEL, Tunnel("gue", 6080, "csum")), (Forwarding.TUNNEL, Tunnel("gre")), (Forwarding.ROUTE, None)]


@pytest.mark.parametrize(("kind", "message"), [
    ("TUN type gue", "gue tunnels require port, otherwise cannot have port."),
    ("TUN port 6080", "gue tunnels require port, otherwise cannot have port."),
    ("TUN type ipip csum", "ipip tunnels do not support checksum option."),
    ("TUN type gre remcsum", "gre tunnels do not support remote checksum option."),
    ("TUN type vxlan", "Unknown tunnel type vxlan"),
    ("TUN fast", "Invalid tunnel option fast"),
    ("LOCAL", "unknown [LOCAL] routing method"),
])
def test_bad_keepalived_tunnels_are_errors_with_keepalived_s_message(kind: str, message: str) -> None:
    with pytest.raises(KeepalivedError, match=message.replace("[", r"\[")):
        import_keepalived(KEEPALIVED.replace("TUN type gue port 6080 csum", kind))
