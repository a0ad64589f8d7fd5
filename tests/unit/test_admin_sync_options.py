"""pyvsadm's sync daemon options, as ipvsadm 1.31 parses and checks them."""

from __future__ import annotations

import pytest

from pyvs.admin.options import Action, UsageError, parse_args
from pyvs.sync.engine import SyncConfig


def test_start_daemon_takes_the_daemon_options_and_defaults_to_eth0() -> None:
    command = parse_args(["--start-daemon", "master"])
    assert (command.action, command.daemon_state, command.mcast_interface) == (Action.START_DAEMON, "master", "eth0")
    command = parse_args(["--start-daemon", "backup", "--mcast-interface", "pyvsv0", "--syncid", "7",
                          "--sync-maxlen", "1400", "--mcast-group", "239.1.2.3", "--mcast-port", "8849",
                          "--mcast-ttl", "2"])
    assert (command.daemon_state, command.mcast_interface, command.syncid, command.sync_maxlen, command.mcast_group,
            command.mcast_port, command.mcast_ttl) == ("backup", "pyvsv0", 7, 1400, "239.1.2.3", 8849, 2)


@pytest.mark.parametrize(("argv", "message"), [
    (["--start-daemon", "primary"], "illegal start-daemon parameter specified"),
    (["--stop-daemon", "primary"], "illegal start_daemon specified"),
    (["--start-daemon", "master", "--syncid", "256"], "illegal syncid specified"),
    (["--start-daemon", "master", "--mcast-port", "0"], "illegal mcast-port specified"),
    (["--start-daemon", "master", "--mcast-ttl", "256"], "illegal mcast-ttl specified"),
    (["--start-daemon", "master", "--sync-maxlen", "65508"], "illegal sync-maxlen specified"),
    (["--start-daemon", "master", "--mcast-group", "198.18.0.1"], "invalid IPv4 mcast-group `198.18.0.1'"),
    (["--start-daemon", "master", "--mcast-group", "2001:db8::1"], "invalid IPv6 mcast-group `2001:db8::1'"),
    (["--stop-daemon", "master", "--mcast-interface", "eth1"],
     "Illegal 'mcast-interface' option with the 'stop-daemon' command"),
    (["--start-daemon", "master", "-n"], "Illegal 'numeric' option with the 'start-daemon' command"),
    (["-L", "--daemon", "--mcast-port", "1"], "Illegal 'mcast-port' option with the 'list' command"),
    (["-L", "--daemon", "--timeout"], "The option 'daemon' conflicts with the 'timeout' option in the 'list' command"),
    (["-L", "--daemon", "--stats"], "options conflicts in the list command"),
])
def test_refused_as_ipvsadm_refuses(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_args(argv)
    assert str(err.value) == message


def test_list_daemon_allows_syncid_as_ipvsadm_does() -> None:
    command = parse_args(["-L", "--daemon", "--syncid", "3"])
    assert command.action is Action.LIST and command.list_daemon


@pytest.mark.parametrize(("cfg", "mtu", "line"), [
    (SyncConfig("master", "eth0", 1), 1500,
     "master sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"),
    (SyncConfig("master", "eth0", 1), 9000,  # a master assumes 1500 whatever the MTU
     "master sync daemon (mcast=eth0, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"),
    (SyncConfig("backup", "pyvsv0", 0), 9000,
     "backup sync daemon (mcast=pyvsv0, syncid=0, maxlen=8972, group=224.0.0.81, port=8848, ttl=1)"),
    (SyncConfig("backup", "eth1", 0, 100), 1500,  # a backup reads at least 1024 bytes
     "backup sync daemon (mcast=eth1, syncid=0, maxlen=1024, group=224.0.0.81, port=8848, ttl=1)"),
    (SyncConfig("master", "eth1", 9, 0, "ff3e:30:2001:db8::81", 9000, 3), 1500,
     "master sync daemon (mcast=eth1, syncid=9, maxlen=1452, group=ff3e:30:2001:db8::81, port=9000, ttl=3)"),
])
def test_the_daemon_line_is_ipvsadm_s_with_the_kernels_values(cfg: SyncConfig, mtu: int, line: str) -> None:
    assert cfg.effective(mtu).describe() == line
