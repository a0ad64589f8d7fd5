"""Import of keepalived.conf (written from keepalived.conf(5)'s grammar): what is carried over, what is reported."""

from __future__ import annotations

import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from pyvs.director import keepalived
from pyvs.director.config import CheckSpec, parse_config
from pyvs.director.keepalived import KeepalivedError, import_keepalived
from pyvs.model import Forwarding, Protocol, ServiceKey, fwmark_key

SAMPLE = """! Configuration File for keepalived
global_defs {
   router_id LVS_DEVEL
}

vrrp_instance VI_1 {
    state MASTER
    interface eth0
    virtual_router_id 51
    priority 100
    virtual_ipaddress {
        198.18.0.100
    }
}

virtual_server 198.18.0.100 80 {
    delay_loop 6
    lb_algo wrr
    lb_kind DR
    protocol TCP
    quorum 2
    hysteresis 1
    inhibit_on_failure
    sorry_server 198.18.2.20 80

    real_server 198.18.2.11 80 {
        weight 3
        HTTP_GET {
            url {
              path /health
              digest 9b3a0c85a887a256d6939da88aabd8cd
              status_code 200
            }
            connect_timeout 3
            retry 2
            delay_before_retry 2
        }
    }
    real_server 198.18.2.12 80 {
        weight 1
        TCP_CHECK {
            connect_port 8080
            connect_timeout 3
        }
    }
}

virtual_server 198.18.0.100 443 {
    delay_loop 10
    lb_algo sh
    lb_kind DR
    persistence_timeout 50
    persistence_granularity 255.255.255.0
    sh-port
    virtualhost www.example.com
    real_server 198.18.2.11 443 {
        SSL_GET {
            url {
              path /
              status_code 200-299
            }
            url {
              path /other
            }
        }
    }
}

virtual_server 198.18.0.100 53 {
    lb_algo rr
    lb_kind DR
    protocol UDP
    real_server 198.18.2.11 53 {
        MISC_CHECK {
            misc_path "/usr/lib/dns-check 198.18.2.11 | grep ok"
            misc_timeout 2
        }
    }
    real_server 198.18.2.12 53 {
        DNS_CHECK {
            type A
        }
    }
}

virtual_server 198.18.0.101 80 {
    lb_algo rr
    lb_kind NAT
    real_server 198.18.2.11 8080 {
    }
}

virtual_server fwmark 1 {
    lb_algo rr
}
"""


@pytest.fixture(autouse=True)
def _every_output_validates(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every conversion in this module must give TOML that `pyvs director run --validate` accepts."""
    def checked(text: str | bytes, source: str = "keepalived.conf") -> tuple[str, list[str]]:
        result = keepalived.import_keepalived(text, source)
        parse_config(result[0], "imported.toml")
        return result

    monkeypatch.setattr(sys.modules[__name__], "import_keepalived", checked)


@pytest.fixture(scope="module")
def converted() -> tuple[str, list[str]]:
    return import_keepalived(SAMPLE, "keepalived.conf")


def test_virtual_servers_become_services_the_config_reader_accepts(converted: tuple[str, list[str]]) -> None:
    text, _ = converted
    config = parse_config(text, "imported.toml")
    web, tls, dns, nat, fwm = config.services
    assert fwm.key == fwmark_key(1) and fwm.scheduler == "rr" and not fwm.reals
    assert [(r.rip, r.port, r.forwarding) for r in nat.reals] == [(IPv4Address("198.18.2.11"), 8080, Forwarding.MASQ)]
    assert {r.forwarding for s in (web, tls, dns) for r in s.reals} == {Forwarding.ROUTE}
    assert (web.key.port, web.scheduler, web.quorum, web.hysteresis) == (80, "wrr", 2, 1)
    assert web.sorry_server == (IPv4Address("198.18.2.20"), 80)
    rs1, rs2 = web.reals
    assert rs1.weight == 3 and rs1.inhibit_on_failure
    assert rs1.check == CheckSpec(type="http", interval=6.0, timeout=3.0, retry_interval=2.0, rise=1, fall=3,
                                  path="/health", status=((200, 200),),
                                  digest="9b3a0c85a887a256d6939da88aabd8cd")
    assert rs2.check == CheckSpec(type="tcp", interval=6.0, timeout=3.0, retry_interval=1.0, fall=2, port=8080)
    assert (tls.persistent, str(tls.netmask), tls.sched_flags) == (50, "255.255.255.0", ("sh-port",))
    assert (web.persistent, str(web.netmask), web.sched_flags) == (None, "255.255.255.255", ())
    assert tls.reals[0].check.type == "https" and tls.reals[0].check.host == "www.example.com"
    assert tls.reals[0].check.status == ((200, 299),)
    assert dns.key.proto.name == "UDP"
    assert dns.reals[0].check.command == ("/usr/lib/dns-check", "198.18.2.11", "|", "grep", "ok")
    assert dns.reals[0].check.timeout == 2.0 and dns.reals[0].check.fall == 1  # MISC_CHECK's retry is 0
    assert dns.reals[1].check.type == "none"


def test_every_option_not_carried_over_is_reported_with_its_line(converted: tuple[str, list[str]]) -> None:
    _, warnings = converted
    expected = [
        "keepalived.conf:2: global_defs: not converted",
        "keepalived.conf:6: vrrp_instance: not converted",
        "keepalived.conf:62: url: pyvs checks one url per real",
        "keepalived.conf:75: misc_path: pyvs runs the command without a shell",
        "keepalived.conf:80: DNS_CHECK: this checker is not implemented by pyvs",
        "keepalived.conf:79: real_server: 198.18.2.12 has no supported checker",
        "keepalived.conf:89: real_server: 198.18.2.11 has no supported checker",
    ]
    for start in expected:
        assert any(w.startswith(start) for w in warnings), (start, warnings)
    assert len(warnings) == len(expected)


def test_defaults_unsupported_scheduler_and_missing_lb_kind_are_reported() -> None:
    text, warnings = import_keepalived(
        "virtual_server 198.18.0.100 80 {\n  real_server 198.18.2.11 80 {\n    TCP_CHECK {\n    }\n  }\n}\n")
    assert 'scheduler = "wlc"' in text
    assert "check = { type = \"tcp\", interval = 60.0, timeout = 5.0, rise = 1, fall = 2, retry_interval = 1.0 }" \
        in text
    assert 'forwarding = "nat"' in text  # keepalived's default: NAT
    assert not any("lb_kind" in w for w in warnings)
    assert not any("lb_algo" in w for w in warnings)  # every IPVS scheduler is carried over


@pytest.mark.parametrize(("text", "message"), [
    ("virtual_server 198.18.0.100 80 {\n  lb_algo rr\n", "a block is not closed"),
    ("}\n", "keepalived.conf:1: '}' without a block"),
    ('virtual_server 198.18.0.100 80 {\n  quorum many\n}\n', "keepalived.conf:2: quorum: 'many' is not a whole number"),
])  # fmt: skip
def test_a_broken_file_is_an_error(text: str, message: str) -> None:
    with pytest.raises(KeepalivedError, match=message):
        import_keepalived(text)


def test_the_command_prints_toml_on_stdout_and_warnings_on_stderr(tmp_path: Path) -> None:
    source = tmp_path / "keepalived.conf"
    source.write_text(SAMPLE)
    result = subprocess.run([sys.executable, "-m", "pyvs.cli", "director", "import-keepalived", str(source)],
                            capture_output=True, text=True, check=True)
    assert parse_config(result.stdout).services[0].key.port == 80
    assert result.stderr.count("pyvs: not carried over: ") == 7  # (the fwmark virtual server is converted)


def test_fwmark_virtual_servers_and_sctp_are_converted() -> None:
    text, warnings = import_keepalived(
        "virtual_server fwmark 7 {\n  lb_algo sh\n  lb_kind DR\n  protocol TCP\n"
        "  real_server 2001:db8:2::11 443 {\n    TCP_CHECK {\n    }\n  }\n"
        "  real_server 2001:db8:2::12 {\n    weight 2\n  }\n}\n"
        "virtual_server fwmark 8 {\n  lb_kind DR\n  ip_family inet6\n}\n"
        "virtual_server 198.18.0.100 3868 {\n  lb_kind DR\n  protocol SCTP\n"
        "  real_server 198.18.2.11 3868 {\n  }\n}\n")
    config = parse_config(text, "imported.toml")
    fwm7, fwm8, diameter = config.services
    assert fwm7.key == fwmark_key(7, 6) and fwm7.scheduler == "sh"  # the family of its reals
    assert [(str(r.rip), r.port, r.weight) for r in fwm7.reals] == [("2001:db8:2::11", 443, 1),
                                                                    ("2001:db8:2::12", 0, 2)]
    assert fwm7.reals[0].check.type == "tcp" and fwm7.reals[0].check.port is None  # it connects to the real's 443
    assert fwm8.key == fwmark_key(8, 6)  # ip_family
    assert diameter.key == ServiceKey(Protocol.SCTP, IPv4Address("198.18.0.100"), 3868)
    assert any("protocol: TCP: a fwmark service takes the packets with its mark" in w for w in warnings)


def test_a_fwmark_real_without_a_port_cannot_be_checked_by_tcp() -> None:
    text, warnings = import_keepalived(
        "virtual_server fwmark 7 {\n  lb_kind DR\n"
        "  real_server 198.18.2.11 {\n    TCP_CHECK {\n    }\n  }\n}\n")
    assert parse_config(text, "imported.toml").services[0].reals[0].check.type == "none"
    assert any("has no port and its checker no connect_port" in w for w in warnings)


def test_ops_and_thresholds_are_carried_over() -> None:
    conf = """
virtual_server 198.18.0.100 53 {
    lb_algo rr
    lb_kind DR
    ops
    protocol UDP
    real_server 198.18.2.11 53 {
        weight 2
        uthreshold 100
        lthreshold 80
    }
}
virtual_server 198.18.0.100 80 {
    lb_kind DR
    ops
    real_server 198.18.2.12 80 {
        uthreshold 5
    }
}
"""
    text, warnings = import_keepalived(conf)
    config = parse_config(text)
    udp, tcp = sorted(config.services, key=lambda s: s.key.port)
    assert udp.onepacket and not tcp.onepacket
    assert (udp.reals[0].u_threshold, udp.reals[0].l_threshold) == (100, 80)
    assert tcp.reals[0].u_threshold == 5
    assert any("ops (one-packet scheduling) is for UDP services only" in w for w in warnings)


def test_lb_kind_nat_per_virtual_server_and_per_real_server_and_what_stays_refused() -> None:
    text, warnings = import_keepalived(
        "virtual_server 198.18.0.100 80 {\n  lb_kind NAT\n"
        "  real_server 198.18.2.11 8080 {\n  }\n"
        "  real_server 198.18.2.12 80 {\n    lb_kind DR\n  }\n"
        "  real_server 198.18.2.13 81 {\n    lvs_method DR\n  }\n}\n"
        "virtual_server 2001:db8::100 80 {\n  lb_kind NAT\n}\n")
    [svc] = parse_config(text).services
    assert [(str(r.rip), r.port, r.forwarding) for r in svc.reals] == [
        ("198.18.2.11", 8080, Forwarding.MASQ), ("198.18.2.12", 80, Forwarding.ROUTE)]
    assert [w.split(": ", 2)[1:] for w in warnings if "lb_kind" in w or "port 81" in w] == [
        ["real_server", "198.18.2.13 port 81 differs from the service port 80: direct routing cannot change the "
                        "port; real skipped"],
        ["lb_kind", "NAT: pyvs forwards by direct routing, and by NAT and tunnelling to IPv4 reals; virtual_server "
                    "2001:db8::100 80 skipped"],
    ]
