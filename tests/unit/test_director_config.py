"""The director's config file: what it accepts, and errors that name the file and line."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

import pytest

from pyvs.director.config import CheckSpec, ConfigError, load_config, parse_config
from pyvs.model import Forwarding, Protocol

GOOD = """
[director]
interface = "eth0"
notify = ["/usr/local/bin/lb-notify", "{event}"]

[[service]]
vip = "198.18.0.100"
port = 80
scheduler = "rr"
sorry_server = "198.18.2.20"
inhibit_on_failure = true
check = { type = "http", path = "/health", status = [200, "300-399"], interval = 1, timeout = 0.5, rise = 2 }

[[service.real]]
address = "198.18.2.11"

[[service.real]]
address = "198.18.2.12"
weight = 3
[service.real.check]
type = "command"
command = ["/usr/lib/check", "{rip}", "{port}"]

[[service]]
proto = "udp"
vip = "198.18.0.100"
port = 53

[[service.real]]
address = "198.18.2.11"
"""


def test_a_full_config_is_read_with_defaults_and_per_real_checks() -> None:
    config = parse_config(GOOD, "director.toml")
    web, dns = config.services
    assert config.interface == "eth0" and config.notify == ("/usr/local/bin/lb-notify", "{event}")
    assert config.status_listen == ("127.0.0.1", 9180)
    assert web.key.proto is Protocol.TCP and web.scheduler == "rr"
    assert web.sorry_server == (IPv4Address("198.18.2.20"), 80)
    first, second = web.reals
    assert first.inhibit_on_failure and first.weight == 1
    assert first.check == CheckSpec(type="http", interval=1.0, timeout=0.5, rise=2, path="/health",
                                    status=((200, 200), (300, 399)))
    assert second.weight == 3 and second.check.type == "command"
    assert second.check.command == ("/usr/lib/check", "{rip}", "{port}")
    assert second.check.interval == 1.0  # inherited from the service's check
    assert dns.key.proto is Protocol.UDP and dns.scheduler == "wrr"
    assert dns.reals[0].check.type == "none"  # UDP reals are not TCP-checked unless asked


@pytest.mark.parametrize(("change", "line", "message"), [
    ('weight = 3', 'weight = "3"', ":19: service tcp 198.18.0.100:80: real #2: 'weight' must be int, not str"),
    ('address = "198.18.2.12"', 'address = "198.18.2.312"', ":18: service tcp 198.18.0.100:80: real #2: 'address'"),
    ('scheduler = "rr"', 'scheduler = "lcx"', ":9: service tcp 198.18.0.100:80: 'scheduler': unknown scheduler"),
    ('rise = 2 }', 'rise = 0 }', ":12: service tcp 198.18.0.100:80: check: 'rise' must be between 1 and 1000"),
    ('type = "command"', 'type = "ping"', ":21: service tcp 198.18.0.100:80: real #2: check: unknown check type"),
    ('command = ["/usr/lib/check", "{rip}", "{port}"]', 'command = []',
     ":22: service tcp 198.18.0.100:80: real #2: check: 'command': the command is empty"),
    ('sorry_server = "198.18.2.20"', 'sorry_server = "198.18.2.20:8080"', ":10: service tcp 198.18.0.100:80: "
     "sorry server port 8080 differs from the service port 80"),
    ('interface = "eth0"', 'interfaces = "eth0"', ":3: [director]: unknown setting 'interfaces'"),
    ('port = 53', 'port = 53\nport = 54', ":28: not valid TOML"),
    ('address = "198.18.2.12"', 'address = "198.18.2.11"', ":18: service tcp 198.18.0.100:80: real #2: "
     "real 198.18.2.11:80 is listed twice"),
    ('vip = "198.18.0.100"\nport = 53', 'vip = "2001:db8::1"\nport = 53', ":30: service udp [2001:db8::1]:53: real #1: "
     "'address': real server 198.18.2.11 is IPv4 and the service IPv6"),
    ('vip = "198.18.0.100"\nport = 53', 'vip = "[2001:db8::1"\nport = 53', ":26: service #2: 'vip': invalid IP"),
])  # fmt: skip
def test_an_invalid_file_is_refused_naming_file_line_and_reason(change: str, line: str, message: str) -> None:
    assert change in GOOD
    with pytest.raises(ConfigError) as caught:
        parse_config(GOOD.replace(change, line, 1), "director.toml")
    assert str(caught.value).startswith("director.toml" + message), str(caught.value)


def test_a_timeout_longer_than_the_interval_is_refused() -> None:
    text = GOOD.replace("interval = 1, timeout = 0.5", "interval = 1, timeout = 5")
    with pytest.raises(ConfigError, match=r"director.toml:12: .*'timeout' \(5.0s\) is longer than 'interval'"):
        parse_config(text, "director.toml")


def test_a_missing_or_binary_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file"):
        load_config(tmp_path / "absent.toml")
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not a UTF-8 text file"):
        load_config(binary)


def test_a_service_defined_twice_is_refused() -> None:
    text = GOOD + '\n[[service]]\nvip = "198.18.0.100"\nport = 80\nscheduler = "rr"\n'
    with pytest.raises(ConfigError, match=r"director.toml:32: service tcp 198.18.0.100:80 is defined twice"):
        parse_config(text, "director.toml")


def test_status_listen_off_and_status_ranges() -> None:
    config = parse_config('[director]\nstatus_listen = "off"\n')
    assert config.status_listen is None and config.services == ()
    check = CheckSpec(status=((200, 299), (302, 302)))
    assert check.accepts(204) and check.accepts(302) and not check.accepts(500) and not check.accepts(301)


PERSISTENT = """
[[service]]
vip = "198.18.0.100"
port = 0
scheduler = "mh"
scheduler_flags = ["mh-port", "flag-1"]
persistence_timeout = 600
persistence_granularity = "255.255.255.0"
[[service.real]]
address = "198.18.2.11"
port = 0
"""


def test_persistence_netmask_scheduler_flags_and_port_0_are_carried_to_the_service() -> None:
    svc = parse_config(PERSISTENT).services[0]
    assert (svc.key.port, svc.persistent, str(svc.netmask)) == (0, 600, "255.255.255.0")
    assert svc.sched_flags == ("mh-fallback", "mh-port")  # the names the data plane reads back
    settings = svc.service()
    assert (settings.scheduler, settings.persistent, settings.sched_flags) == ("mh", 600, ("mh-fallback", "mh-port"))
    assert parse_config(PERSISTENT.replace("persistence_timeout = 600", "persistence_timeout = true")) \
        .services[0].persistent == 300  # ipvsadm's -p without a value


@pytest.mark.parametrize(("change", "line", "message"), [
    ("persistence_timeout = 600", "persistence_timeout = 0",
     ":7: service tcp 198.18.0.100:0: persistence timeout 0 is out of range"),
    ("persistence_timeout = 600\n", "", ":7: service tcp 198.18.0.100:0: 'persistence_granularity' needs "
     "'persistence_timeout'"),
    ('scheduler = "mh"', 'scheduler = "sh"', ":6: service tcp 198.18.0.100:0: scheduler flag 'mh-port' needs "
     "scheduler mh, not sh"),
    ('"255.255.255.0"', '"255.0.255.0"', ":8: service tcp 198.18.0.100:0: 'persistence_granularity': invalid netmask"),
])  # fmt: skip
def test_bad_persistence_or_flags_are_refused_with_the_line(change: str, line: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(PERSISTENT.replace(change, line, 1), "director.toml")
    assert str(caught.value).startswith("director.toml" + message), str(caught.value)


IPV6 = """
[director]
status_listen = "[::1]:9180"

[[service]]
vip = "2001:db8::100"
port = 80
persistence_timeout = 600
persistence_granularity = 64
sorry_server = "[2001:db8:2::20]:80"

[[service.real]]
address = "2001:db8:2::11"

[[service.real]]
address = "[2001:db8:2::12]"
check = { type = "http", path = "/" }
"""


def test_an_ipv6_service_with_reals_sorry_server_and_a_prefix_length_as_granularity() -> None:
    config = parse_config(IPV6, "director.toml")
    [svc] = config.services
    assert config.status_listen == ("::1", 9180)
    assert str(svc.key) == "[2001:db8::100]:80" and svc.netmask == 64
    assert [str(r.rip) for r in svc.reals] == ["2001:db8:2::11", "2001:db8:2::12"]
    assert svc.sorry_server == (IPv6Address("2001:db8:2::20"), 80)
    assert svc.service().netmask == 64
    default = parse_config(IPV6.replace("persistence_granularity = 64\n", "")).services[0]
    assert default.netmask == 128 and default.service().netmask == 128  # IPVS's default for IPv6
    bare = parse_config(IPV6.replace('"[2001:db8:2::20]:80"', '"2001:db8:2::20"')).services[0]
    assert bare.sorry_server == (IPv6Address("2001:db8:2::20"), 80)  # a bare IPv6 address has no port


@pytest.mark.parametrize(("change", "line", "message"), [
    ("persistence_granularity = 64", 'persistence_granularity = "255.255.255.0"',
     ":9: service tcp [2001:db8::100]:80: 'persistence_granularity': invalid IPv6 netmask '255.255.255.0': give a "
     "prefix length"),
    ("persistence_granularity = 64", "persistence_granularity = 129", ":9: service tcp [2001:db8::100]:80: "
     "'persistence_granularity': invalid IPv6 netmask '129'"),
    ('"[2001:db8:2::20]:80"', '"198.18.2.20"', ":10: service tcp [2001:db8::100]:80: 'sorry_server': the sorry "
     "server 198.18.2.20 is IPv4 and the service IPv6"),
    ('"[2001:db8:2::20]:80"', '"[2001:db8:2::20]:8080"', ":10: service tcp [2001:db8::100]:80: sorry server port "
     "8080 differs"),
    ('address = "2001:db8:2::11"', 'address = "198.18.2.11"', ":13: service tcp [2001:db8::100]:80: real #1: "
     "'address': real server 198.18.2.11 is IPv4 and the service IPv6: direct routing keeps the packet"),
])  # fmt: skip
def test_bad_ipv6_settings_are_refused_with_the_line(change: str, line: str, message: str) -> None:
    assert change in IPV6
    with pytest.raises(ConfigError) as caught:
        parse_config(IPV6.replace(change, line, 1), "director.toml")
    assert str(caught.value).startswith("director.toml" + message), str(caught.value)


def test_port_0_needs_persistence() -> None:
    text = PERSISTENT.replace("persistence_timeout = 600\n", "").replace('persistence_granularity = "255.255.255.0"\n',
                                                                         "")
    with pytest.raises(ConfigError, match=r":4: service tcp 198.18.0.100:0: port 0 is only valid for a persistent"):
        parse_config(text, "director.toml")


def script(path: Path, mode: int) -> Path:
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(mode)
    return path


def commands_config(check: Path, notify: Path, user: str = "") -> str:
    return (f'[director]\nnotify = ["{notify}", "{{event}}"]\n{user}\n[[service]]\nvip = "198.18.0.100"\nport = 80\n'
            f'check = {{ type = "command", command = ["{check}", "{{rip}}"] }}\n'
            '[[service.real]]\naddress = "198.18.2.11"\n')


def test_a_command_anyone_but_root_can_change_is_refused(tmp_path: Path) -> None:
    safe = script(tmp_path / "check", 0o755)
    config = tmp_path / "director.toml"
    config.write_text(commands_config(safe, safe))
    assert load_config(config).services[0].reals[0].check.command[0] == str(safe)
    assert parse_config(commands_config(tmp_path / "absent", safe)).services  # parse alone looks at no file

    writable = script(tmp_path / "writable", 0o757)
    config.write_text(commands_config(writable, safe))
    with pytest.raises(ConfigError, match=rf"director.toml:7: service tcp 198.18.0.100:80: check: 'command': "
                                          rf"{writable}: {writable} is writable by a user other than root"):
        load_config(config)
    config.write_text(commands_config(safe, writable))
    with pytest.raises(ConfigError, match=r"director.toml:2: \[director\]: 'notify': .* is writable by a user other"):
        load_config(config)

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # not sticky: anyone may replace the script
    config.write_text(commands_config(script(shared / "check", 0o755), safe))
    with pytest.raises(ConfigError, match=rf"directory {shared} is writable by a user other than root"):
        load_config(config)
    shared.chmod(0o1777)  # sticky, as /tmp: others cannot replace root's file
    assert load_config(config).services

    link = tmp_path / "link"
    link.symlink_to(writable)
    config.write_text(commands_config(link, safe))
    with pytest.raises(ConfigError, match=rf"{writable} is writable by a user other than root"):
        load_config(config)
    config.write_text(commands_config(tmp_path / "absent", safe))
    with pytest.raises(ConfigError, match=r"'command': .*absent: No such file or directory"):
        load_config(config)


def test_commands_may_run_as_another_user(tmp_path: Path) -> None:
    safe = script(tmp_path / "check", 0o755)
    config = parse_config(commands_config(safe, safe, 'user = "nobody"'))
    assert config.user == "nobody" and config.services[0].reals[0].check.user == "nobody"
    with pytest.raises(ConfigError, match=r":3: \[director\]: 'user': unknown user 'pyvs-nosuchuser'"):
        parse_config(commands_config(safe, safe, 'user = "pyvs-nosuchuser"'), "director.toml")


def test_the_data_planes_switches_are_set_or_left_alone() -> None:
    config = parse_config(GOOD.replace('interface = "eth0"', 'interface = "eth0"\nsloppy_tcp = true'), "d.toml")
    assert config.sloppy_tcp is True and config.expire_nodest_conn is None
    with pytest.raises(ConfigError, match="sloppy_tcp"):
        parse_config(GOOD.replace('interface = "eth0"', 'interface = "eth0"\nsloppy_tcp = "yes"'), "d.toml")


def test_forward_nat_per_service_and_per_real() -> None:
    text = ('[[service]]\nproto = "tcp"\nvip = "198.18.0.100"\nport = 80\nforwarding = "nat"\n'
            '[[service.real]]\naddress = "198.18.2.11"\nport = 8080\n'
            '[[service.real]]\naddress = "198.18.2.12"\nforwarding = "dr"\n')
    [svc] = parse_config(text).services
    assert [(r.port, r.forwarding) for r in svc.reals] == [(8080, Forwarding.MASQ), (80, Forwarding.ROUTE)]
    for bad, message in (
        ('forwarding = "dr"\n[[service.real]]\naddress = "198.18.2.11"\nport = 8080\n',
         "real port 8080 differs from the service port 80: direct routing cannot change the port"),
        ('forwarding = "masq"\n', "unknown forwarding method 'masq' \\(dr, nat or tun\\)"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_config('[[service]]\nproto = "tcp"\nvip = "198.18.0.100"\nport = 80\n' + bad)
    with pytest.raises(ConfigError, match="IPv4 only"):
        parse_config('[[service]]\nproto = "tcp"\nvip = "2001:db8::100"\nport = 80\nforwarding = "nat"\n'
                     '[[service.real]]\naddress = "2001:db8:2::11"\n')
