"""import-keepalived reads keepalived.conf as keepalived does (lib/parser.c, check_parser.c) and writes only TOML
that `pyvs director run --validate` accepts: every conversion here goes through the config parser."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pyvs.director.config import DirectorConfig, parse_config
from pyvs.director.keepalived import KeepalivedError, import_keepalived, import_keepalived_file


def convert(text: str | bytes, source: str = "keepalived.conf") -> tuple[DirectorConfig, list[str], str]:
    """Import, then validate the result as `pyvs director run --validate` does."""
    toml, warnings = import_keepalived(text, source)
    return parse_config(toml, "imported.toml"), warnings, toml


def fails(text: str | bytes, *parts: str, source: str = "keepalived.conf") -> str:
    with pytest.raises(KeepalivedError) as info:
        import_keepalived(text, source)
    message = str(info.value)
    for part in parts:
        assert part in message, (part, message)
    return message


WEB = """virtual_server 198.18.0.100 80 {{
    lb_algo rr
    lb_kind DR
{service}
    real_server 198.18.2.11 80 {{
{real}
        TCP_CHECK {{
            connect_timeout 3
        }}
    }}
}}
"""


def web(service: str = "", real: str = "") -> str:
    return WEB.format(service=service, real=real)


# --- keepalived's tokenizer ---------------------------------------------------------------------------------

def test_a_brace_on_the_line_after_its_keyword_opens_the_block() -> None:
    config, warnings, _ = convert("""virtual_server 198.18.0.100 80
{
    lb_algo rr
    lb_kind DR
    real_server 198.18.2.11 80
    {
        weight 2
        HTTP_GET
        {
            url
            {
                path /health
            }
        }
    }
}
""")
    (service,) = config.services
    assert service.reals[0].weight == 2 and service.reals[0].check.path == "/health"
    assert warnings == []


def test_a_brace_that_follows_no_keyword_is_refused_with_its_line() -> None:
    fails("{\n}\n", "keepalived.conf:1:", "'{' does not follow a keyword")


def test_an_unclosed_block_names_its_keyword_and_line() -> None:
    fails("global_defs {\n}\nvirtual_server 198.18.0.100 80 {\n  lb_algo rr\n",
          "keepalived.conf:3: virtual_server:", "not closed")


def test_definitions_single_and_multi_line_are_replaced() -> None:
    config, _, _ = convert(r"""$VIP=198.18.0.100
$SCHED = r
$CHECK=TCP_CHECK { \
    connect_timeout 2 \
}
virtual_server $VIP 80 {
    lb_algo ${SCHED}r
    lb_kind DR
    real_server 198.18.2.11 80 {
        $CHECK
    }
}
""")
    (service,) = config.services
    assert str(service.key.vip) == "198.18.0.100" and service.scheduler == "rr"
    assert service.reals[0].check.type == "tcp" and service.reals[0].check.timeout == 2.0


def test_quoted_strings_and_unquoted_apostrophes() -> None:
    config, _, _ = convert(web(real="""        MISC_CHECK {
            misc_path "/usr/local/bin/check 'it is' up"
        }""").replace("TCP_CHECK", "SMTP_CHECK") + """
virtual_server 198.18.0.101 80 {
    lb_algo rr
    lb_kind DR
    virtualhost o'brien.example
    real_server 198.18.2.11 80 {
        HTTP_GET {
            url {
                path /
            }
        }
    }
}
""")
    assert config.services[0].reals[0].check.command == ("/usr/local/bin/check", "it is", "up")
    assert config.services[1].reals[0].check.host == "o'brien.example"


def test_comments_with_bang_and_hash_may_hold_any_bytes() -> None:
    text = web(service="    quorum 1 ! the live weight needed\n    # hysteresis 5").encode()
    text = text.replace(b"the live", b"caf\xe9 live")  # a Latin-1 byte, in a comment
    config, _, _ = convert(b"\xef\xbb\xbf! Configuration File for keepalived\n" + text)
    assert config.services[0].quorum == 1 and config.services[0].hysteresis == 0


def test_a_bom_in_text_is_skipped_and_non_utf8_outside_a_comment_is_refused() -> None:
    config, _, _ = convert("\ufeff" + web())
    assert len(config.services) == 1
    fails(web(real="        weight 1").encode().replace(b"weight 1", b"weight \xe9"), "keepalived.conf:6:", "UTF-8")


def test_include_is_followed_relative_to_the_including_file(tmp_path: Path) -> None:
    (tmp_path / "conf.d").mkdir()
    (tmp_path / "conf.d" / "a.conf").write_text(web())
    (tmp_path / "conf.d" / "b.conf").write_text(web().replace("198.18.0.100", "198.18.0.101"))
    main = tmp_path / "keepalived.conf"
    main.write_text("global_defs {\n}\ninclude conf.d/*.conf\ninclude none/*.conf\n")
    toml, warnings = import_keepalived_file(main)
    config = parse_config(toml)
    assert [str(s.key.vip) for s in config.services] == ["198.18.0.100", "198.18.0.101"]
    assert any(w.startswith(f"{main}:4: include: no file matches") for w in warnings)


def test_an_include_loop_is_refused(tmp_path: Path) -> None:
    (tmp_path / "a.conf").write_text("include b.conf\n")
    (tmp_path / "b.conf").write_text("\ninclude a.conf\n")
    with pytest.raises(KeepalivedError, match=r"b.conf:2: include: .*include loop"):
        import_keepalived_file(tmp_path / "a.conf")


# --- values checked as --validate checks them ---------------------------------------------------------------

@pytest.mark.parametrize(("text", "parts"), [
    (web().replace(" 80 {\n    lb_algo", " 0 {\n    lb_algo"), ("keepalived.conf:1: virtual_server:", "port 0")),
    (web().replace("198.18.0.100 80", "198.18.0.100 70000"), ("keepalived.conf:1: virtual_server:", "70000")),
    (web().replace("198.18.2.11 80", "198.18.2.11 65536"), ("keepalived.conf:5: real_server:", "65536")),
    (web(real="        weight 70000"), ("keepalived.conf:6: weight:", "70000")),
    (web(real="        weight inf"), ("keepalived.conf:6: weight:", "'inf'")),
    (web(real="        weight -1"), ("keepalived.conf:6: weight:",)),
    (web(service="    quorum nan"), ("keepalived.conf:4: quorum:", "'nan'")),
    (web(service="    delay_loop inf"), ("keepalived.conf:4: delay_loop:",)),
    (web(service="    delay_loop 0"), ("keepalived.conf:4: delay_loop:",)),
    (web(service="    retry 5000"), ("keepalived.conf:4: retry:",)),
    (web(service="    sorry_server"), ("keepalived.conf:4: sorry_server: needs a value",)),
    (web(service="    sorry_server 2001:db8::1 80"), ("keepalived.conf:4: sorry_server:", "IPv6", "IPv4")),
    (web(service="    sorry_server sorry.example 80"), ("keepalived.conf:4: sorry_server:", "host names")),
    (web(service="    sorry_server 198.18.2.11"), ("keepalived.conf:4: sorry_server:", "also one of")),
    (web(service="    sorry_server 198.18.2.20 http"), ("keepalived.conf:4: sorry_server:", "'http'")),
    (web(service="    lb_algo nosuch"), ("keepalived.conf:4: lb_algo:", "nosuch")),
    (web(service="    sh-port"), ("keepalived.conf:4: sh-port:", "needs scheduler sh")),
    (web(service="    persistence_timeout 0"), ("keepalived.conf:4: persistence_timeout:",)),
    (web(service="    inhibit_on_failure maybe"), ("keepalived.conf:4: inhibit_on_failure:", "'maybe'")),
    (web() + web(), ("keepalived.conf:12: virtual_server:", "defined twice", "first at keepalived.conf:1")),
    (web().replace("    }\n}", "    }\n    real_server 198.18.2.11 80 {\n    }\n}"),
     ("keepalived.conf:11: real_server:", "listed twice")),
    (web().replace("connect_timeout 3", "connect_port 0"), ("keepalived.conf:8: connect_port:",)),
    (web().replace("TCP_CHECK", "MISC_CHECK").replace("connect_timeout 3", 'misc_path ""'),
     ("keepalived.conf:8: misc_path:", "empty")),
    (web().replace("TCP_CHECK", "MISC_CHECK").replace("connect_timeout 3", "misc_timeout 3"),
     ("keepalived.conf:7: MISC_CHECK:", "misc_path")),
    (web().replace("TCP_CHECK", "HTTP_GET").replace("connect_timeout 3", "url {\n status_code 999\n }"),
     ("keepalived.conf:9: status_code:", "999")),
    (web().replace("TCP_CHECK", "HTTP_GET").replace("connect_timeout 3", "url {\n status_code abc\n }"),
     ("keepalived.conf:9: status_code:",)),
    (web().replace("TCP_CHECK", "HTTP_GET").replace("connect_timeout 3", "url {\n digest xyz\n }"),
     ("keepalived.conf:9: digest:", "32 hex")),
    (web().replace("TCP_CHECK", "HTTP_GET").replace("connect_timeout 3", "url {\n path health\n }"),
     ("keepalived.conf:9: path:", "'/'")),
    (web().replace("TCP_CHECK", "HTTP_GET").replace("connect_timeout 3", "url {\n regex (\n }"),
     ("keepalived.conf:9: regex:",)),
])  # fmt: skip
def test_a_value_validate_would_refuse_fails_the_import_naming_line_and_keyword(
        text: str, parts: tuple[str, ...]) -> None:
    fails(text, *parts)


def test_text_outside_the_basic_plane_is_written_as_toml_reads_it() -> None:
    config, _, toml = convert(web().replace("TCP_CHECK", "HTTP_GET").replace(
        "connect_timeout 3", 'virtualhost "\U0001f600.example"\n url {\n path "/a\\b\U00010348"\n }'))
    check = config.services[0].reals[0].check
    assert check.host == "\U0001f600.example" and check.path == "/a\\b\U00010348"
    assert "\\ud83d" not in toml


def test_very_deep_nesting_is_no_traceback() -> None:
    depth = max(sys.getrecursionlimit() * 20, 50_000)
    config, warnings, _ = convert(web(service="    deep " + "{ x " * depth + "}" * depth))
    assert len(config.services) == 1 and any(": deep: not supported" in w for w in warnings)
    fails("a {" * depth, "not closed")


def test_a_one_megabyte_token_is_read() -> None:
    _, warnings, _ = convert(web(service="    note " + "x" * (1 << 20)))
    assert any(": note: not supported" in w for w in warnings)


# --- booleans, case and defaults as keepalived's -----------------------------------------------------------

@pytest.mark.parametrize(("word", "expected"), [
    ("", True), ("true", True), ("on", True), ("yes", True), ("false", False), ("off", False), ("no", False),
])  # fmt: skip
def test_booleans_read_as_keepalived_reads_them(word: str, expected: bool) -> None:
    config, _, _ = convert(web(service=f"    inhibit_on_failure {word}\n    alpha {word}",
                               real=f"        inhibit_on_failure {word}"))
    service = config.services[0]
    assert service.alpha is expected and service.reals[0].inhibit_on_failure is expected


@pytest.mark.parametrize("word", ["udp", "Udp", "UDP"])
def test_protocol_is_compared_without_case_as_keepalived_does(word: str) -> None:
    config, _, _ = convert(web(service=f"    protocol {word}"))
    assert config.services[0].key.proto.name == "UDP"


def test_an_unknown_protocol_is_ignored_with_a_warning_as_keepalived_does() -> None:
    config, warnings, _ = convert(web(service="    protocol ICMP"))
    assert config.services[0].key.proto.name == "TCP"
    assert any("keepalived.conf:4: protocol: unknown protocol ICMP" in w for w in warnings)


def test_misc_check_timeout_defaults_to_delay_loop() -> None:
    config, _, _ = convert(web(service="    delay_loop 7").replace("TCP_CHECK", "MISC_CHECK").replace(
        "connect_timeout 3", "misc_path /bin/true"))
    check = config.services[0].reals[0].check
    assert (check.interval, check.timeout) == (7.0, 7.0)


def test_port_zero_is_taken_with_persistence_as_ipvsadm_does() -> None:
    config, _, _ = convert(web(service="    persistence_timeout 60").replace(" 80 {", " 0 {", 1).replace(
        "198.18.2.11 80", "198.18.2.11"))
    assert config.services[0].key.port == 0 and config.services[0].persistent == 60


@pytest.mark.parametrize("text", ["a\nbb\r\n\nccc", "a\nbb\r\n\nccc\n", "\ufeffx\n", ""])
def test_lines_are_read_the_same_whatever_the_chunk_size(text: str) -> None:
    from pyvs.director.keepalived import _raw_lines

    expected = text.lstrip("\ufeff").replace("\r\n", "\n").splitlines()
    for chunk in (1, 2, 3, 1 << 20):
        assert list(_raw_lines(text, chunk)) == expected
        assert list(_raw_lines(text.encode(), chunk)) == expected


def test_the_command_reads_a_latin1_byte_in_a_comment(tmp_path: Path) -> None:
    import subprocess

    source = tmp_path / "keepalived.conf"
    source.write_bytes(b"virtual_server 198.18.0.100 80 {\n    lb_algo rr   ! caf\xe9\n    lb_kind DR\n"
                       b"    protocol TCP\n    real_server 198.18.2.11 80 {\n        weight 1\n    }\n}\n")
    result = subprocess.run([sys.executable, "-m", "pyvs.cli", "director", "import-keepalived", str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'vip = "198.18.0.100"' in result.stdout


# --- IPv6 virtual servers ------------------------------------------------------------------------------------

WEB6 = """virtual_server 2001:db8::100 80 {
    lb_algo sh
    lb_kind DR
    persistence_timeout 600
    persistence_granularity 64
    sorry_server 2001:db8:2::20 80
    real_server 2001:db8:2::11 80 {
        weight 2
        HTTP_GET {
            url {
                path /health
            }
            connect_timeout 2
        }
    }
    real_server 2001:db8:2::12 80 {
        TCP_CHECK {
            connect_timeout 2
        }
    }
}
"""


def test_an_ipv6_virtual_server_converts_with_its_reals_sorry_server_and_prefix_length() -> None:
    config, warnings, toml = convert(WEB6)
    [svc] = config.services
    assert str(svc.key) == "[2001:db8::100]:80" and (svc.persistent, svc.netmask) == (600, 64)
    assert [(str(r.rip), r.weight, r.check.type) for r in svc.reals] == [("2001:db8:2::11", 2, "http"),
                                                                           ("2001:db8:2::12", 1, "tcp")]
    assert svc.sorry_server is not None and str(svc.sorry_server[0]) == "2001:db8:2::20"
    assert 'vip = "2001:db8::100"' in toml and "persistence_granularity = 64" in toml
    assert not [w for w in warnings if "IPv6" in w]


@pytest.mark.parametrize(("text", "parts"), [
    (WEB6.replace("persistence_granularity 64", "persistence_granularity 255.255.255.0"),
     ("keepalived.conf:5: persistence_granularity:", "prefix length")),
    (WEB6.replace("sorry_server 2001:db8:2::20 80", "sorry_server 198.18.2.20 80"),
     ("keepalived.conf:6: sorry_server:", "IPv4", "IPv6")),
])  # fmt: skip
def test_ipv6_values_of_the_wrong_family_are_refused_or_reported(text: str, parts: tuple[str, ...]) -> None:
    try:
        _, warnings, _ = convert(text)
    except KeepalivedError as exc:
        message = str(exc)
    else:
        message = "\n".join(warnings)
    for part in parts:
        assert part in message, (part, message)


def test_a_real_of_the_other_family_is_skipped_with_a_warning() -> None:
    config, warnings, _ = convert(WEB6.replace("real_server 2001:db8:2::12 80", "real_server 198.18.2.12 80"))
    assert [str(r.rip) for r in config.services[0].reals] == ["2001:db8:2::11"]
    assert any(w.startswith("keepalived.conf:16: real_server:") and "IPv4" in w and "IPv6" in w for w in warnings)
