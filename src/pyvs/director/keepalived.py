"""Convert keepalived.conf's virtual_server blocks into the pyvs director config (TOML).

Carried over: lb_algo/lvs_sched, the scheduler flags (flag-1..3, sh-port, sh-fallback, mh-port, mh-fallback),
lb_kind/lvs_method DR, protocol, persistence_timeout, persistence_granularity, weight, inhibit_on_failure,
sorry_server, quorum, hysteresis, alpha, virtualhost, delay_loop, connect_timeout, retry/nb_get_retry,
delay_before_retry, connect_port, TCP_CHECK, HTTP_GET and SSL_GET (url path, status_code, digest, virtualhost,
regex) and MISC_CHECK (misc_path as argv, misc_timeout). Every other option is reported with its line, never
dropped silently.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from pyvs.model import SCHED_FLAG_BITS, SUPPORTED_SCHEDULERS, ModelError, parse_ipv4, parse_netmask

DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PERSISTENCE_TIMEOUT = 360  # keepalived's default when persistence_timeout has no value (6 min)
CHECKERS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "command"}
UNSUPPORTED_CHECKERS = ("SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "BFD_CHECK")
TIMING = ("delay_loop", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry")
SHELL_SYNTAX = re.compile(r"[|;&<>`$]")


class KeepalivedError(ValueError):
    """The file cannot be read as keepalived.conf."""


@dataclass
class Block:
    """One keepalived statement: keyword, arguments and, for a block, its children."""

    keyword: str
    args: list[str]
    line: int
    children: list[Block] = field(default_factory=list)

    def all(self, keyword: str) -> list[Block]:
        return [c for c in self.children if c.keyword == keyword]


def _tokens(text: str) -> list[tuple[str, int]]:
    tokens: list[tuple[str, int]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        lexer = shlex.shlex(line.replace("{", " { ").replace("}", " } "), posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#!"
        try:
            tokens.extend((token, number) for token in lexer)
        except ValueError as exc:
            raise KeepalivedError(f"line {number}: {exc}") from None
        tokens.append(("\n", number))
    return tokens


def parse_keepalived(text: str) -> list[Block]:
    """keepalived.conf as a tree of statements."""
    tokens = _tokens(text)
    position = 0

    def statements(depth: int) -> list[Block]:
        nonlocal position
        result: list[Block] = []
        while position < len(tokens):
            token, line = tokens[position]
            position += 1
            if token == "\n":
                continue
            if token == "}":
                if depth == 0:
                    raise KeepalivedError(f"line {line}: '}}' without a block to close")
                return result
            block = Block(token, [], line)
            result.append(block)
            while position < len(tokens) and tokens[position][0] not in ("\n", "{", "}"):
                block.args.append(tokens[position][0])
                position += 1
            if position < len(tokens) and tokens[position][0] == "{":
                position += 1
                block.children = statements(depth + 1)
        if depth:
            raise KeepalivedError("unexpected end of file: a block is not closed with '}'")
        return result

    return statements(0)


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.warnings: list[str] = []

    def warn(self, block: Block, message: str) -> None:
        self.warnings.append(f"{self.source}:{block.line}: {block.keyword}: {message}")

    def number(self, block: Block) -> float:
        try:
            return float(block.args[0])
        except (IndexError, ValueError):
            raise KeepalivedError(f"{self.source}:{block.line}: {block.keyword} needs a number") from None

    def convert(self, blocks: list[Block]) -> list[dict[str, Any]]:
        services = []
        for block in blocks:
            if block.keyword == "virtual_server":
                service = self.service(block)
                if service is not None:
                    services.append(service)
            elif block.keyword == "include":
                self.warn(block, "not followed: convert the included file on its own")
            else:
                self.warn(block, "not converted: pyvs director takes virtual_server blocks only")
        return services

    def service(self, vs: Block) -> dict[str, Any] | None:
        if len(vs.args) < 2 or vs.args[0] in ("fwmark", "group"):
            self.warn(vs, f"'{' '.join(vs.args)}' skipped: only 'virtual_server IP PORT' is supported")
            return None
        try:
            vip = str(parse_ipv4(vs.args[0]))
            port = int(vs.args[1])
        except (ModelError, ValueError) as exc:
            self.warn(vs, f"'{' '.join(vs.args)}' skipped: {exc}")
            return None
        service: dict[str, Any] = {"proto": "tcp", "vip": vip, "port": port, "scheduler": "wlc"}
        timing: dict[str, Block] = {}
        default_host: str | None = None
        method_seen = False
        for child in vs.children:
            key, args = child.keyword, child.args
            if key in ("lb_algo", "lvs_sched"):
                service["scheduler"] = args[0] if args else "wlc"
            elif key in ("lb_kind", "lvs_method"):
                method_seen = True
                if args[:1] != ["DR"]:
                    self.warn(child, f"{' '.join(args)}: pyvs forwards by direct routing only; "
                                     f"virtual_server {vip} {port} skipped")
                    return None
            elif key == "protocol":
                if args[:1] not in (["TCP"], ["UDP"]):
                    self.warn(child, f"{' '.join(args)}: only TCP and UDP; virtual_server {vip} {port} skipped")
                    return None
                service["proto"] = args[0].lower()
            elif key in TIMING:
                timing[key] = child
            elif key == "inhibit_on_failure":
                service["inhibit_on_failure"] = True
            elif key in ("quorum", "hysteresis"):
                service[key] = int(self.number(child))
            elif key == "alpha":
                service["alpha"] = True
            elif key == "virtualhost":
                default_host = args[0] if args else None
            elif key == "sorry_server":
                sorry_port = int(args[1]) if len(args) > 1 else port
                if sorry_port != port:
                    self.warn(child, f"port {sorry_port} differs from the service port {port}: "
                                     "direct routing cannot change the port; not carried over")
                else:
                    service["sorry_server"] = args[0]
            elif key == "real_server":
                continue
            elif key == "persistence_timeout":
                service["persistence_timeout"] = int(self.number(child)) if args else DEFAULT_PERSISTENCE_TIMEOUT
            elif key == "persistence_granularity":
                try:
                    service["persistence_granularity"] = str(parse_netmask(args[0] if args else ""))
                except ModelError as exc:
                    self.warn(child, f"{exc}; not carried over")
            elif key in SCHED_FLAG_BITS:
                service.setdefault("scheduler_flags", []).append(key)
            elif key == "persistence_engine":
                self.warn(child, "persistence engines (--pe) are not implemented by pyvs; not carried over")
            elif key in ("quorum_up", "quorum_down"):
                self.warn(child, "use [director] notify: it runs for quorum_up/quorum_down events too")
            else:
                self.warn(child, "not supported by pyvs; not carried over")
        if not method_seen:
            self.warn(vs, f"{vip} {port} has no lb_kind (keepalived's default is NAT); converted as DR")
        if service["scheduler"] not in SUPPORTED_SCHEDULERS:
            self.warn(vs, f"lb_algo {service['scheduler']} is not implemented by the pyvs data plane yet: "
                          f"pyvs refuses this config until it is (available: {', '.join(SUPPORTED_SCHEDULERS)})")
        if "persistence_granularity" in service and "persistence_timeout" not in service:
            self.warn(vs, "persistence_granularity without persistence_timeout has no effect; not carried over")
            del service["persistence_granularity"]
        reals = [r for rs in vs.all("real_server") if (r := self.real(rs, port, timing, default_host)) is not None]
        checks = [r.pop("check") for r in reals]
        if checks and all(c == checks[0] for c in checks):
            service["check"] = checks[0]
        else:
            for real, check in zip(reals, checks, strict=True):
                real["check"] = check
        service["real"] = reals
        return service

    def real(self, rs: Block, port: int, vs_timing: dict[str, Block], host: str | None) -> dict[str, Any] | None:
        try:
            rip = str(parse_ipv4(rs.args[0] if rs.args else ""))
            real_port = int(rs.args[1]) if len(rs.args) > 1 else port
        except (ModelError, ValueError) as exc:
            self.warn(rs, f"'{' '.join(rs.args)}' skipped: {exc}")
            return None
        if real_port != port:
            self.warn(rs, f"{rip} port {real_port} differs from the service port {port}: direct routing cannot "
                          "change the port; real skipped")
            return None
        real: dict[str, Any] = {"address": rip, "weight": 1}
        timing = dict(vs_timing)
        checkers = []
        for child in rs.children:
            if child.keyword == "weight":
                real["weight"] = int(self.number(child))
            elif child.keyword == "inhibit_on_failure":
                real["inhibit_on_failure"] = True
            elif child.keyword in TIMING:
                timing[child.keyword] = child
            elif child.keyword in CHECKERS:
                checkers.append(child)
            elif child.keyword in UNSUPPORTED_CHECKERS:
                self.warn(child, "this checker is not implemented by pyvs; not carried over")
            elif child.keyword in ("notify_up", "notify_down"):
                self.warn(child, "use [director] notify: it runs for real_up/real_down events")
            else:
                self.warn(child, "not supported by pyvs; not carried over")
        for extra in checkers[1:]:
            self.warn(extra, "pyvs runs one check per real: only the first checker is carried over")
        real["check"] = self.check(checkers[0], timing, host) if checkers else {"type": "none"}
        if not checkers:
            self.warn(rs, f"{rip} has no supported checker: it is never checked (always up)")
        return real

    def check(self, checker: Block, timing: dict[str, Block], host: str | None) -> dict[str, Any]:
        kind = CHECKERS[checker.keyword]
        timing = dict(timing)
        check: dict[str, Any] = {"type": kind}
        urls: list[Block] = []
        for child in checker.children:
            key, args = child.keyword, child.args
            if key in TIMING:
                timing[key] = child
            elif key == "connect_port":
                check["port"] = int(self.number(child))
            elif key == "url" and kind in ("http", "https"):
                urls.append(child)
            elif key == "virtualhost" and kind in ("http", "https"):
                host = args[0] if args else host
            elif key == "misc_path" and kind == "command":
                command = shlex.split(" ".join(args))
                if SHELL_SYNTAX.search(" ".join(args)):
                    self.warn(child, "pyvs runs the command without a shell: pipes, redirections and $ "
                                     "expansions are passed as plain arguments")
                check["command"] = command
            elif key == "misc_timeout" and kind == "command":
                timing["connect_timeout"] = child
            else:
                self.warn(child, "not supported by pyvs; not carried over")
        interval = self.number(timing["delay_loop"]) if "delay_loop" in timing else DEFAULT_DELAY_LOOP
        timeout = self.number(timing["connect_timeout"]) if "connect_timeout" in timing else DEFAULT_CONNECT_TIMEOUT
        if timeout > interval:
            self.warn(checker, f"timeout {timeout:g}s is longer than delay_loop {interval:g}s; "
                               f"pyvs uses {interval:g}s")
            timeout = interval
        retry_block = timing.get("retry") or timing.get("nb_get_retry")
        retry = int(self.number(retry_block)) if retry_block else (0 if kind == "command" else 1)
        retry_delay = self.number(timing["delay_before_retry"]) if "delay_before_retry" in timing else (
            3.0 if kind in ("http", "https") else 1.0)
        check.update(interval=interval, timeout=timeout, rise=1, fall=retry + 1)
        if retry:
            check["retry_interval"] = retry_delay
        if kind in ("http", "https"):
            for extra in urls[1:]:
                self.warn(extra, "pyvs checks one url per real: only the first is carried over")
            if urls:
                self.url(urls[0], check)
            if host and "host" not in check:
                check["host"] = host
        return check

    def url(self, url: Block, check: dict[str, Any]) -> None:
        for child in url.children:
            key, args = child.keyword, child.args
            if key == "path" and args:
                check["path"] = args[0]
            elif key == "digest" and args:
                check["digest"] = args[0].lower()
            elif key == "status_code" and args:
                check["status"] = [int(a) if a.isdigit() else a for a in args]
            elif key == "virtualhost" and args:
                check["host"] = args[0]
            elif key == "regex" and args:
                check["regex"] = " ".join(args)
            else:
                self.warn(child, "not supported by pyvs; not carried over")


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))


def to_toml(services: list[dict[str, Any]], source: str) -> str:
    lines = [f"# pyvs director config, converted from {source} by `pyvs director import-keepalived`", "",
             "[director]", '# interface = "eth0"   # attach XDP here (left as is when a program is attached)', ""]
    for service in services:
        lines.append("[[service]]")
        lines.extend(f"{k} = {_value(v)}" for k, v in service.items() if k != "real")
        for real in service["real"]:
            lines += ["", "[[service.real]]", *(f"{k} = {_value(v)}" for k, v in real.items())]
        lines.append("")
    return "\n".join(lines)


def import_keepalived(text: str, source: str = "keepalived.conf") -> tuple[str, list[str]]:
    """(the pyvs config as TOML, one warning per option not carried over)."""
    converter = _Converter(source)
    services = converter.convert(parse_keepalived(text))
    return to_toml(services, source), converter.warnings
