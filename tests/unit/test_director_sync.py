"""[sync] in the director's config, and its metrics."""

from __future__ import annotations

import pytest

from pyvs.director.config import ConfigError, SyncSpec, parse_config
from pyvs.director.metrics import sync_families

BASE = '[[service]]\nproto = "tcp"\nvip = "198.18.0.100"\nport = 80\n'


def test_sync_section_with_defaults_and_settings() -> None:
    assert parse_config(BASE).sync is None
    spec = parse_config(BASE + '[sync]\ninterface = "eth1"\n').sync
    assert spec == SyncSpec("both", "eth1") and spec.states == ("master", "backup")
    spec = parse_config(BASE + '[sync]\nrole = "backup"\ninterface = "eth1"\nsyncid = 9\ngroup = "239.0.0.9"\n'
                        'port = 9000\nttl = 2\nmaxlen = 1400\n').sync
    assert spec == SyncSpec("backup", "eth1", 9, "239.0.0.9", 9000, 2, 1400) and spec.states == ("backup",)


@pytest.mark.parametrize(("section", "message"), [
    ('role = "primary"\ninterface = "eth1"', "unknown role 'primary'"),
    ('role = "master"', "'interface'"),
    ('interface = "eth1"\nsyncid = 256', "'syncid' must be between 0 and 255"),
    ('interface = "eth1"\ngroup = "198.18.0.1"', "not a multicast address"),
    ('interface = "eth1"\nport = 0', "'port' must be between 1 and 65535"),
    ('interface = "eth1"\nmcast = 1', "unknown setting 'mcast'"),
])
def test_a_bad_sync_section_is_refused_with_its_line(section: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(BASE + "[sync]\n" + section + "\n", "d.toml")
    assert message in str(err.value) and "d.toml:" in str(err.value)


def test_sync_metrics() -> None:
    families = {f.name: f for f in sync_families({
        "role": "both", "interface": "eth1", "syncid": 1, "error": "",
        "daemons": ["master sync daemon (mcast=eth1, syncid=1, maxlen=1472, group=224.0.0.81, port=8848, ttl=1)"],
        "stats": {"messages_sent": 4, "conns_sent": 9, "messages_received": 3, "conns_applied": 7, "malformed": 1,
                  "unknown_real": 2},
        "events_lost": 5})}
    assert families["pyvs_sync_messages_sent"].samples[0].value == 4
    assert families["pyvs_sync_conns_applied"].samples[0].value == 7
    errors = {s.labels["kind"]: s.value for s in families["pyvs_sync_errors"].samples}
    assert errors["malformed"] == 1 and errors["unknown_real"] == 2 and errors["wrong_syncid"] == 0
    assert families["pyvs_sync_events_lost"].samples[0].value == 5
    assert families["pyvs_sync_up"].samples[0].value == 1


def test_the_status_table_has_a_sync_line() -> None:
    from pyvs.director.status_client import sync_summary

    status = {"sync": {"role": "both", "interface": "eth1", "syncid": 1, "error": "", "daemons": ["..."],
                       "stats": {"messages_sent": 4, "conns_sent": 9, "messages_received": 3, "conns_applied": 7,
                                 "unknown_real": 2}, "events_lost": 0}}
    assert sync_summary(status) == [  # type: ignore[arg-type]
        "sync: both on eth1, syncid 1; sent 9 conns in 4 messages, received 7 conns in 3 messages, refused 2, "
        "events lost 0"]
    status["sync"].update(daemons=[], error="No such device: eth1 (the mcast interface)")
    assert sync_summary(status) == [  # type: ignore[arg-type]
        "sync: both on eth1, syncid 1: NOT RUNNING (No such device: eth1 (the mcast interface))"]
    assert sync_summary({}) == []  # type: ignore[typeddict-item]
