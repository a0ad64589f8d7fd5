"""The corpus: keepalived configs written from keepalived's documentation and public examples
(tests/data/keepalived), each converted and validated as `pyvs director run --validate` validates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pyvs.director.config import parse_config
from pyvs.director.keepalived import import_keepalived_file

CORPUS = Path(__file__).parent.parent / "data" / "keepalived"
FILES = sorted(CORPUS.glob("*.conf"))
WARNING = re.compile(r"^[^:]+:\d+: [^\s:]+: .+")


def test_the_corpus_is_there() -> None:
    assert len(FILES) >= 7


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_each_config_converts_to_a_config_that_validates(path: Path) -> None:
    expected = int(re.match(r"! expect: (\d+) services", path.read_text()).group(1))  # type: ignore[union-attr]
    toml, warnings = import_keepalived_file(path)
    config = parse_config(toml, f"{path.stem}.toml")
    assert len(config.services) == expected, (toml, warnings)
    for warning in warnings:
        assert WARNING.match(warning), warning


def test_corpus_details_as_keepalived_reads_them() -> None:
    manpage = parse_config(import_keepalived_file(CORPUS / "manpage.conf")[0])
    tls, web, ipv6 = manpage.services
    assert str(ipv6.key) == "[2001:db8::30]:80" and [str(r.rip) for r in ipv6.reals] == ["2001:db8::31"]
    assert tls.alpha and not tls.reals[0].inhibit_on_failure and tls.sched_flags == ("mh-port",)
    assert tls.reals[0].check.status == ((200, 299), (304, 304)) and tls.reals[0].check.port == 8443
    assert web.persistent == 360 and str(web.netmask) == "255.255.255.0"
    inhibit = parse_config(import_keepalived_file(CORPUS / "inhibit.conf")[0]).services[0]
    assert [r.inhibit_on_failure for r in inhibit.reals] == [True, True, False]
    misc = parse_config(import_keepalived_file(CORPUS / "misc_check.conf")[0]).services[0]
    assert [r.check.timeout for r in misc.reals] == [5.0, 3.0] and misc.key.proto.name == "UDP"
    included = parse_config(import_keepalived_file(CORPUS / "included.conf")[0])
    assert [s.key.port for s in included.services] == [8443, 80, 443]  # conf.d/api.conf, then web.conf
    definitions = parse_config(import_keepalived_file(CORPUS / "definitions.conf")[0])
    assert all(r.check.path == "/status" for s in definitions.services for r in s.reals)
