"""Convert keepalived.conf's virtual_server blocks into the pyvs director config (TOML).

The file is read as keepalived reads it (lib/parser.c): comments start at `!` or `#` outside double quotes and
may hold any bytes; a UTF-8 BOM is skipped; `{` and `}` are tokens of their own and a `{` may stand on the line
after its keyword; double quotes group words, an apostrophe is an ordinary character; `$NAME=value` defines a
parameter (a value ending in `\\` continues on the next line: a multi-line definition) used as `$NAME` or
`${NAME}`; `include PATTERN` is followed (a glob, relative to the including file; a loop is refused).
Booleans read as keepalived's check_true_false (true/on/yes, false/off/no, nothing: true); `protocol` is
compared without case, as keepalived does. Reading is linear in the input's size, and only one top-level block
is held in memory at a time.

Carried over: lb_algo/lvs_sched, the scheduler flags (flag-1..3, sh-port, sh-fallback, mh-port, mh-fallback),
lb_kind/lvs_method DR, NAT (IPv4; absent: NAT, keepalived's default) and TUN (keepalived 2.2's `type ipip|gue|gre`,
`port N`, `nocsum|csum|remcsum`; per virtual_server and per real_server), protocol, persistence_timeout,
persistence_granularity, ops, weight, uthreshold, lthreshold, inhibit_on_failure,
sorry_server, quorum, hysteresis, alpha, virtualhost, delay_loop, connect_timeout, retry/nb_get_retry,
delay_before_retry, connect_port, TCP_CHECK, HTTP_GET and SSL_GET (url path, status_code, digest, virtualhost,
regex) and MISC_CHECK (misc_path as argv, misc_timeout, default delay_loop as keepalived's). Every other option
is reported with its line, never dropped silently. Every value is checked as `pyvs director run --validate`
checks it: the TOML written always validates, or the import fails with the file, line and keyword at fault.
"""

from __future__ import annotations

import glob
import os
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from pyvs.director.config import _digest, _regex, _status_ranges
from pyvs.model import (
    MAX_FWMARK,
    MAX_THRESHOLD,
    MAX_WEIGHT,
    SCHED_FLAG_BITS,
    ModelError,
    Protocol,
    Service,
    ServiceKey,
    fwmark_key,
    parse_address,
    parse_netmask_for,
    validate_service,
)

DEFAULT_DELAY_LOOP = 60.0
DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_PERSISTENCE_TIMEOUT = 360  # keepalived's default when persistence_timeout has no value (6 min)
CHECKERS = {"TCP_CHECK": "tcp", "HTTP_GET": "http", "SSL_GET": "https", "MISC_CHECK": "command"}
UNSUPPORTED_CHECKERS = ("SMTP_CHECK", "DNS_CHECK", "UDP_CHECK", "PING_CHECK", "FILE_CHECK", "BFD_CHECK")
TIMING = ("delay_loop", "connect_timeout", "retry", "nb_get_retry", "delay_before_retry")
SHELL_SYNTAX = re.compile(r"[|;&<>`$]")
TRUE_WORDS = ("true", "on", "yes")  # keepalived's check_true_false: compared with case
FALSE_WORDS = ("false", "off", "no")
MAX_INCLUDE_DEPTH = 32
MAX_DEFINITION_DEPTH = 16
MAX_RETRY = 999  # fall = retry + 1 <= 1000, the config's limit

_DEFINITION = re.compile(r"\s*\$([A-Za-z_][A-Za-z0-9_]*)\s*=(.*)", re.DOTALL)
_USE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")
_COMMENT_SCAN = re.compile(r'"[^"]*"?|[!#]|[^"!#]+')
_TOKEN = re.compile(r'"([^"]*)"?|([{}])|([^\s{}"]+)')
_INTEGER = re.compile(r"[0-9]{1,15}")
_DECIMAL = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_TOML_ESCAPES = {i: f"\\u{i:04x}" for i in (*range(0x20), 0x7F)}
_TOML_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\", 9: "\\t", 10: "\\n", 13: "\\r"})


class KeepalivedError(ValueError):
    """The file cannot be read as keepalived.conf, or a value in it would not make a valid pyvs config."""


@dataclass(slots=True)
class Block:
    """One keepalived statement: keyword, arguments and, for a block, its children."""

    keyword: str
    args: list[str]
    line: int
    children: list[Block] = field(default_factory=list)
    file: str = "keepalived.conf"
    opened: bool = False

    def all(self, keyword: str) -> list[Block]:
        return [c for c in self.children if c.keyword == keyword]


def _raw_lines(text: str | bytes, chunk: int = 1 << 20) -> Iterator[str]:
    """The lines of a file, a chunk of about 1 MB at a time (no second copy of a large file), bytes decoded as
    UTF-8 (a byte that is not UTF-8 is kept as a surrogate escape: refused later unless it is in a comment)."""
    bom: str | bytes = b"\xef\xbb\xbf" if isinstance(text, bytes) else "\ufeff"
    start, size = (len(bom) if text.startswith(bom) else 0), len(text)  # type: ignore[arg-type]
    newline: Any = b"\n" if isinstance(text, bytes) else "\n"
    while start < size:
        end = text.find(newline, min(start + chunk, size) - 1)
        end = size if end < 0 else end + 1
        piece = text[start:end]
        decoded = piece.decode("utf-8", "surrogateescape") if isinstance(piece, bytes) else piece
        lines = decoded.split("\n")
        if decoded.endswith("\n"):
            lines.pop()
        for line in lines:
            yield line[:-1] if line.endswith("\r") else line
        start = end


def _decomment(line: str) -> str:
    """The line without its comment: from the first `!` or `#` outside double quotes."""
    if "!" not in line and "#" not in line:
        return line
    for match in _COMMENT_SCAN.finditer(line):
        if match.group() in ("!", "#"):
            return line[: match.start()]
    return line


class _Reader:
    """keepalived's reader: lines of tokens from a file and the files it includes, definitions applied."""

    def __init__(self, warn: list[str]):
        self.definitions: dict[str, tuple[str, bool]] = {}  # name -> (value, multi-line)
        self.warnings = warn
        self.active: list[str] = []  # the files being read, outermost first (include loops)

    def fail(self, source: str, line: int, keyword: str, message: str) -> NoReturn:
        raise KeepalivedError(f"{source}:{line}: {keyword}: {message}")

    def lines(self, text: str | bytes, source: str) -> Iterator[tuple[str, int, list[str]]]:
        """(file, line number, tokens) for each line holding tokens."""
        where = os.path.realpath(source)
        self.active.append(where)
        raw = _raw_lines(text)
        number = 0
        for line in raw:
            number += 1
            line = _decomment(line)
            definition = _DEFINITION.match(line) if "$" in line else None
            if definition and "=" in line:
                first = number
                name, value = definition.group(1), definition.group(2).strip()
                parts = []
                while value.endswith("\\"):
                    parts.append(value[:-1].strip())
                    value = ""
                    for more in raw:
                        number += 1
                        value = _decomment(more).strip()
                        break
                    else:
                        self.fail(source, first, f"${name}", "the definition continues past the end of the file")
                parts.append(value)
                self.definitions[name] = ("\n".join(p for p in parts if p), len(parts) > 1)
                continue
            pieces = self.expand(line, source, number) if "$" in line and self.definitions else (line,)
            for piece in pieces:
                if not piece.isascii() and _NOT_UTF8.search(piece):
                    self.fail(source, number, piece.split()[0] if piece.split() else "?",
                              "the line is not UTF-8 text (only comments may hold other bytes)")
                if '"' in piece:
                    tokens = [m.group(1) if m.group(1) is not None else m.group(2) or m.group(3)
                              for m in _TOKEN.finditer(piece)]
                elif "{" in piece or "}" in piece:
                    tokens = piece.replace("{", " { ").replace("}", " } ").split()
                else:
                    tokens = piece.split()
                if not tokens:
                    continue
                if tokens[0] == "include":
                    yield from self.include(tokens, source, number)
                else:
                    yield source, number, tokens
        self.active.pop()

    def expand(self, line: str, source: str, number: int) -> list[str]:
        """A line with its `$NAME` and `${NAME}` replaced (undefined names are left as they are)."""
        limit = max(len(line) * 64, 1 << 20)
        for _ in range(MAX_DEFINITION_DEPTH):
            replaced = _USE.sub(lambda m: self.definitions.get(m.group(1) or m.group(2), (m.group(), False))[0],
                                line)
            if replaced == line:
                return line.split("\n")
            if len(replaced) > limit:
                self.fail(source, number, "$", "definitions expand to more than 64 times the line's size")
            line = replaced
        self.fail(source, number, "$", f"definitions nest more than {MAX_DEFINITION_DEPTH} deep (a loop?)")

    def include(self, tokens: list[str], source: str, number: int) -> Iterator[tuple[str, int, list[str]]]:
        if len(tokens) < 2:
            self.fail(source, number, "include", "needs a file name or pattern")
        pattern = tokens[1]
        base = os.path.dirname(source)
        full = pattern if os.path.isabs(pattern) else os.path.join(base, pattern)
        matches = sorted(glob.glob(full))
        if not matches:
            self.warnings.append(f"{source}:{number}: include: no file matches {pattern}; nothing included")
        for path in matches:
            real = os.path.realpath(path)
            if real in self.active:
                chain = " -> ".join([*self.active[self.active.index(real):], real])
                self.fail(source, number, "include", f"{path} is already being read: include loop ({chain})")
            if len(self.active) >= MAX_INCLUDE_DEPTH:
                self.fail(source, number, "include", f"includes nest more than {MAX_INCLUDE_DEPTH} deep")
            try:
                data = Path(path).read_bytes()
            except OSError as exc:
                self.fail(source, number, "include", f"cannot read {path}: {exc.strerror}")
            yield from self.lines(data, path)


def _blocks(text: str | bytes, source: str, warnings: list[str]) -> Iterator[Block]:
    """The top-level statements, each yielded once complete (a `{` may open a block on a later line)."""
    stack: list[Block] = []  # the blocks open, outermost first
    pending: Block | None = None  # the last top-level statement, until we know whether a `{` follows
    for file, number, tokens in _Reader(warnings).lines(text, source):
        if stack and "{" not in tokens and "}" not in tokens:  # the usual line: one statement in a block
            stack[-1].children.append(Block(tokens[0], tokens[1:], number, file=file))
            continue
        index = 0
        while index < len(tokens):
            token = tokens[index]
            index += 1
            if token == "{":
                target = (stack[-1].children[-1] if stack[-1].children else None) if stack else pending
                if target is None or target.opened:
                    raise KeepalivedError(f"{file}:{number}: '{{' does not follow a keyword")
                target.opened = True
                stack.append(target)
            elif token == "}":
                if not stack:
                    raise KeepalivedError(f"{file}:{number}: '}}' without a block to close")
                stack.pop()
                if not stack and pending is not None:
                    yield pending
                    pending = None
            else:
                block = Block(token, [], number, file=file)
                while index < len(tokens) and tokens[index] not in ("{", "}"):
                    block.args.append(tokens[index])
                    index += 1
                if stack:
                    stack[-1].children.append(block)
                else:
                    if pending is not None:
                        yield pending
                    pending = block
    if stack:
        raise KeepalivedError(f"{stack[-1].file}:{stack[-1].line}: {stack[-1].keyword}: unexpected end of file: "
                              "a block is not closed with '}'")
    if pending is not None:
        yield pending


def parse_keepalived(text: str | bytes, source: str = "keepalived.conf") -> list[Block]:
    """keepalived.conf as a tree of statements."""
    return list(_blocks(text, source, []))


class _Converter:
    def __init__(self, source: str):
        self.source = source
        self.warnings: list[str] = []
        self.services: dict[tuple[str, str, int], tuple[str, int]] = {}  # service key -> (file, line)

    def warn(self, block: Block, message: str) -> None:
        self.warnings.append(f"{block.file}:{block.line}: {block.keyword}: {message}")

    def fail(self, block: Block, message: str) -> NoReturn:
        raise KeepalivedError(f"{block.file}:{block.line}: {block.keyword}: {message}")

    def arg(self, block: Block) -> str:
        if not block.args:
            self.fail(block, "needs a value")
        return block.args[0]

    def integer(self, block: Block, low: int, high: int, text: str | None = None) -> int:
        text = self.arg(block) if text is None else text
        if not _INTEGER.fullmatch(text) or not low <= int(text) <= high:
            self.fail(block, f"'{text[:40]}' is not a whole number from {low} to {high}")
        return int(text)

    def number(self, block: Block, minimum: float = 0.001) -> float:
        """Seconds, as keepalived's timers: a decimal number (no inf, nan or exponent)."""
        text = self.arg(block)
        if not _DECIMAL.fullmatch(text) or float(text) < minimum:
            self.fail(block, f"'{text[:40]}' is not a number of seconds (at least {minimum:g})")
        return float(text)

    def boolean(self, block: Block) -> bool:
        if not block.args:
            return True
        if block.args[0] in TRUE_WORDS:
            return True
        if block.args[0] in FALSE_WORDS:
            return False
        self.fail(block, f"'{block.args[0][:40]}' is not one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")

    def convert(self, block: Block) -> dict[str, Any] | None:
        if block.keyword == "virtual_server":
            return self.service(block)
        self.warn(block, "not converted: pyvs director takes virtual_server blocks only")
        return None

    def service(self, vs: Block) -> dict[str, Any] | None:
        if not vs.args or vs.args[0] == "group":
            self.warn(vs, f"'{' '.join(vs.args)}' skipped: only 'virtual_server IP PORT' and 'virtual_server "
                          "fwmark N' are supported")
            return None
        mark = 0
        if vs.args[0] == "fwmark":
            mark = self.integer(vs, 1, MAX_FWMARK, vs.args[1] if len(vs.args) > 1 else "")
            family = self.fwmark_family(vs)
            vip, port = "", 0
            name = f"fwmark {mark}"
            service: dict[str, Any] = {"fwmark": mark, "scheduler": "wlc"}
            if family == 6:
                service["ip_family"] = "inet6"
        else:
            try:
                vip_address = parse_address(vs.args[0])
            except ModelError as exc:
                self.warn(vs, f"'{' '.join(vs.args)[:80]}' skipped: {exc}")
                return None
            vip, family = str(vip_address), vip_address.version
            port = self.integer(vs, 0, 65535, vs.args[1]) if len(vs.args) > 1 else 0
            name = f"{vip} {port}"
            service = {"proto": "tcp", "vip": vip, "port": port, "scheduler": "wlc"}
        timing: dict[str, Block] = {}
        default_host: str | None = None
        method_seen = False
        if family == 4:
            service["forwarding"] = "nat"  # keepalived's default; pyvs's NAT is IPv4 only
        where: dict[str, Block] = {}  # setting -> the statement it comes from
        sorry: Block | None = None
        for child in vs.children:
            key, args = child.keyword, child.args
            if key in ("lb_algo", "lvs_sched"):
                service["scheduler"] = self.arg(child)
                where["scheduler"] = child
            elif key in ("lb_kind", "lvs_method"):
                method_seen = True
                method = self.method(child, family)
                if method is None:
                    self.warn(child, f"{' '.join(args)}: pyvs forwards by direct routing, and by NAT and tunnelling "
                                     f"to IPv4 reals; virtual_server {name} skipped")
                    return None
                service.pop("tunnel", None)
                if method["forwarding"] == "dr":
                    service.pop("forwarding", None)
                else:
                    service.update(method)
            elif key == "protocol":
                proto = self.arg(child).upper()  # keepalived compares without case (strcasecmp)
                if proto not in ("TCP", "UDP", "SCTP"):
                    self.warn(child, f"unknown protocol {args[0][:40]}: ignored, as keepalived does")
                elif mark:
                    self.warn(child, f"{args[0]}: a fwmark service takes the packets with its mark whatever their "
                                     "protocol; not carried over")
                else:
                    service["proto"] = proto.lower()
            elif key == "ip_family" and mark:
                continue  # read by fwmark_family
            elif key in TIMING:
                timing[key] = child
            elif key == "inhibit_on_failure":
                service["inhibit_on_failure"] = self.boolean(child)
            elif key in ("quorum", "hysteresis"):
                service[key] = self.integer(child, 0, 1 << 30)
            elif key == "alpha":
                service["alpha"] = self.boolean(child)
            elif key == "virtualhost":
                default_host = self.arg(child)
            elif key == "sorry_server":
                sorry = child
            elif key == "real_server":
                continue
            elif key == "persistence_timeout":
                service["persistence_timeout"] = (self.integer(child, 1, 2**31 - 1) if args
                                                  else DEFAULT_PERSISTENCE_TIMEOUT)
                where["persistence_timeout"] = child
            elif key == "persistence_granularity":
                try:  # an IPv6 service's is a prefix length (keepalived's pgr_handler)
                    granularity = parse_netmask_for(args[0] if args else "", family)
                    service["persistence_granularity"] = granularity if isinstance(granularity, int) \
                        else str(granularity)
                except ModelError as exc:
                    self.warn(child, f"{exc}; not carried over")
            elif key in SCHED_FLAG_BITS:
                service.setdefault("scheduler_flags", []).append(key)
                where.setdefault("scheduler_flags", child)
            elif key == "ops":
                service["ops"] = True
                where["ops"] = child
            elif key == "persistence_engine":
                self.warn(child, "persistence engines (--pe) need a payload parser (sip), which pyvs does not have; "
                                 "not carried over")
            elif key in ("quorum_up", "quorum_down"):
                self.warn(child, "use [director] notify: it runs for quorum_up/quorum_down events too")
            else:
                self.warn(child, "not supported by pyvs; not carried over")
        if not method_seen and family == 6:
            self.warn(vs, f"{name} has no lb_kind (keepalived's default is NAT, IPv4 only in pyvs); "
                          "converted as DR")
        if service.get("ops") and not mark and service["proto"] != "udp":
            self.warn(where["ops"], "ops (one-packet scheduling) is for UDP services only; not carried over")
            del service["ops"]
        if "persistence_granularity" in service and "persistence_timeout" not in service:
            self.warn(vs, "persistence_granularity without persistence_timeout has no effect; not carried over")
            del service["persistence_granularity"]
        svc_key = fwmark_key(mark, family) if mark else ServiceKey(Protocol[service["proto"].upper()], vip_address,
                                                                   port)
        settings = Service(svc_key, service["scheduler"], service.get("persistence_timeout"),
                           sched_flags=tuple(service.get("scheduler_flags", ())), onepacket=service.get("ops", False))
        if "persistence_granularity" in service:
            settings.netmask = parse_netmask_for(str(service["persistence_granularity"]), family)
        try:
            validate_service(settings)
        except ModelError as exc:
            text = str(exc)
            culprit = (where.get("scheduler_flags") if "flag" in text else where.get("persistence_timeout")
                       if "persistence" in text else where.get("scheduler") if "scheduler" in text else None)
            self.fail(culprit or vs, text)
        identity = (service.get("proto", "fwm"), str(svc_key), port)
        if (first := self.services.get(identity)) is not None:
            self.fail(vs, f"{svc_key.proto.label.lower() if not mark else ''} {svc_key} is defined twice "
                          f"(first at {first[0]}:{first[1]})".lstrip())
        self.services[identity] = (vs.file, vs.line)
        reals: list[dict[str, Any]] = []
        seen: dict[str, Block] = {}
        for rs in vs.all("real_server"):
            real = self.real(rs, port, timing, default_host, family,
                             {k: service[k] for k in ("forwarding", "tunnel") if k in service}, fwmark=bool(mark))
            if real is None:
                continue
            if (other := seen.get(real["address"])) is not None:
                self.fail(rs, f"{real['address']} {port} is listed twice in virtual_server {name} "
                              f"(first at {other.file}:{other.line})")
            seen[real["address"]] = rs
            reals.append(real)
        if sorry is not None:
            self.sorry(sorry, service, seen, family)
        checks = [r.pop("check") for r in reals]
        if checks and all(c == checks[0] for c in checks):
            service["check"] = checks[0]
        else:
            for real, check in zip(reals, checks, strict=True):
                real["check"] = check
        service["real"] = reals
        return service

    def fwmark_family(self, vs: Block) -> int:
        """A fwmark virtual server's family: its `ip_family`, else its first real's (keepalived), else IPv4."""
        for child in vs.children:
            if child.keyword == "ip_family" and child.args:
                return 6 if child.args[0] == "inet6" else 4
        for rs in vs.all("real_server"):
            try:
                return parse_address(rs.args[0]).version if rs.args else 4
            except ModelError:
                continue
        return 4

    def sorry(self, block: Block, service: dict[str, Any], reals: dict[str, Block], family: int) -> None:
        address = self.arg(block)
        port = service.get("port", 0)
        try:
            sorry_address = parse_address(address)
        except ModelError:
            self.fail(block, f"'{address[:80]}': pyvs takes an IP address as sorry server (host names are not "
                             "supported)")
        if sorry_address.version != family:
            self.fail(block, f"{sorry_address} is IPv{sorry_address.version} and the virtual server "
                             f"IPv{family}: direct routing keeps the packet, so the sorry server must be IPv{family}")
        sorry_ip = str(sorry_address)
        sorry_port = self.integer(block, 0, 65535, block.args[1]) if len(block.args) > 1 else port
        if sorry_port != port and "fwmark" not in service:
            self.warn(block, f"port {sorry_port} differs from the service port {port}: "
                             "direct routing cannot change the port; not carried over")
            return
        if sorry_ip in reals:
            self.fail(block, f"{sorry_ip} is also one of the service's reals (at line {reals[sorry_ip].line})")
        if len(block.args) > 2:
            self.warn(block, f"'{' '.join(block.args[2:])[:80]}' ignored: the sorry server is reached as the "
                             "reals are (direct routing)")
        service["sorry_server"] = sorry_ip

    def method(self, block: Block, family: int) -> dict[str, Any] | None:
        """lb_kind/lvs_method: dr for DR, nat for NAT, forwarding and tunnel for TUN (keepalived's
        svr_forwarding_handler: `type`, `port`, the checksum word; its messages), None for what pyvs cannot do (NAT and
        TUN to IPv6)."""
        kind = self.arg(block)
        if kind == "DR":
            return {"forwarding": "dr"}
        if kind not in ("TUN", "NAT"):
            self.fail(block, f"unknown [{kind[:40]}] routing method")
        if family != 4:
            return None
        if kind == "NAT":
            return {"forwarding": "nat"}
        tunnel: dict[str, Any] = {"type": "ipip"}
        words = block.args[1:]
        i = 0
        while i < len(words):
            word = words[i]
            if word in ("type", "port"):
                if i + 1 == len(words):
                    self.fail(block, "Missing tunnel type" if word == "type" else "Missing port for gue tunnel")
                value = words[i + 1]
                if word == "type" and value not in ("ipip", "gue", "gre"):
                    self.fail(block, f"Unknown tunnel type {value[:40]}")
                if word == "port" and (not value.isdigit() or not 1 <= int(value) <= 65535):
                    self.fail(block, f"Invalid gue tunnel port {value[:40]}")
                tunnel[word] = value if word == "type" else int(value)
                i += 2
            elif word in ("nocsum", "csum", "remcsum"):
                tunnel["csum"] = word
                i += 1
            else:
                self.fail(block, f"Invalid tunnel option {word[:40]}")
        if (tunnel["type"] == "gue") != ("port" in tunnel):
            self.fail(block, "gue tunnels require port, otherwise cannot have port.")
        if tunnel["type"] == "ipip" and tunnel.get("csum", "nocsum") != "nocsum":
            self.fail(block, "ipip tunnels do not support checksum option.")
        if tunnel["type"] == "gre" and tunnel.get("csum") == "remcsum":
            self.fail(block, "gre tunnels do not support remote checksum option.")
        return {"forwarding": "tun", "tunnel": tunnel}

    def real(self, rs: Block, port: int, vs_timing: dict[str, Block], host: str | None,
             family: int, method: dict[str, Any] | None = None, fwmark: bool = False) -> dict[str, Any] | None:
        try:
            address = parse_address(self.arg(rs))
        except ModelError as exc:
            self.warn(rs, f"'{' '.join(rs.args)[:80]}' skipped: {exc}")
            return None
        if address.version != family:
            self.warn(rs, f"{address} is IPv{address.version} and the virtual server IPv{family}: direct routing "
                          "keeps the packet; real skipped")
            return None
        rip = str(address)
        own = next((c for c in rs.children if c.keyword in ("lb_kind", "lvs_method")), None)
        here = self.method(own, family) if own is not None else (method or {"forwarding": "dr"})
        if here is None and own is not None:
            self.warn(own, f"{' '.join(own.args)}: pyvs forwards by direct routing, and by NAT and tunnelling to "
                           "IPv4 reals; real skipped")
            return None
        nat = (here or {}).get("forwarding") == "nat"
        real_port = self.integer(rs, 0, 65535, rs.args[1]) if len(rs.args) > 1 else port
        if real_port != port and not nat and not fwmark:
            self.warn(rs, f"{rip} port {real_port} differs from the service port {port}: direct routing cannot "
                          "change the port; real skipped")
            return None
        if nat and port == 0 and real_port != 0:
            self.warn(rs, f"{rip} port {real_port}: a service of every port keeps the client's port; real skipped")
            return None
        real: dict[str, Any] = {"address": rip, "weight": 1}
        if real_port != port:
            real["port"] = real_port
        timing = dict(vs_timing)
        checkers = []
        for child in rs.children:
            if child.keyword == "weight":
                real["weight"] = self.integer(child, 0, MAX_WEIGHT)
            elif child.keyword in ("uthreshold", "lthreshold"):
                real[child.keyword] = self.integer(child, 0, MAX_THRESHOLD)
            elif child.keyword == "inhibit_on_failure":
                real["inhibit_on_failure"] = self.boolean(child)
            elif child.keyword in ("lb_kind", "lvs_method"):
                kind = self.method(child, family)
                if kind is None:
                    return None  # (warned above)
                inherited = method or {"forwarding": "dr"}
                real.pop("forwarding", None)
                real.pop("tunnel", None)
                if kind != inherited:  # only what differs from the virtual_server's method
                    real.update(kind)
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
        elif fwmark and not real_port and real["check"]["type"] != "command" and "port" not in real["check"]:
            self.warn(checkers[0], f"{rip} of a fwmark service has no port and its checker no connect_port: "
                                   "it is never checked (always up)")
            real["check"] = {"type": "none"}
        return real

    def check(self, checker: Block, timing: dict[str, Block], host: str | None) -> dict[str, Any]:
        kind = CHECKERS[checker.keyword]
        timing = dict(timing)
        check: dict[str, Any] = {"type": kind}
        urls: list[Block] = []
        misc_timeout: Block | None = None
        for child in checker.children:
            key, args = child.keyword, child.args
            if key in TIMING:
                timing[key] = child
            elif key == "connect_port":
                check["port"] = self.integer(child, 1, 65535)
            elif key == "url" and kind in ("http", "https"):
                urls.append(child)
            elif key == "virtualhost" and kind in ("http", "https"):
                host = self.arg(child)
            elif key == "misc_path" and kind == "command":
                line = " ".join(args)
                try:
                    command = shlex.split(line)
                except ValueError as exc:
                    self.fail(child, f"cannot split the command into arguments: {exc}")
                if not command:
                    self.fail(child, "the command is empty")
                if SHELL_SYNTAX.search(line):
                    self.warn(child, "pyvs runs the command without a shell: pipes, redirections and $ "
                                     "expansions are passed as plain arguments")
                check["command"] = command
            elif key == "misc_timeout" and kind == "command":
                misc_timeout = child
            else:
                self.warn(child, "not supported by pyvs; not carried over")
        if kind == "command" and "command" not in check:
            self.fail(checker, "MISC_CHECK needs misc_path (the command to run)")
        interval = self.number(timing["delay_loop"]) if "delay_loop" in timing else DEFAULT_DELAY_LOOP
        if kind == "command":  # keepalived's MISC_CHECK: misc_timeout, else delay_loop (not connect_timeout)
            timeout = self.number(misc_timeout) if misc_timeout else interval
        else:
            timeout = (self.number(timing["connect_timeout"]) if "connect_timeout" in timing
                       else DEFAULT_CONNECT_TIMEOUT)
        if timeout > interval:
            self.warn(checker, f"timeout {timeout:g}s is longer than delay_loop {interval:g}s; "
                               f"pyvs uses {interval:g}s")
            timeout = interval
        retry_block = timing.get("retry") or timing.get("nb_get_retry")
        retry = self.integer(retry_block, 0, MAX_RETRY) if retry_block else (0 if kind == "command" else 1)
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
            if key == "path":
                check["path"] = self.arg(child)
                if not check["path"].startswith("/"):
                    self.fail(child, f"'{check['path'][:80]}': a path starts with '/'")
            elif key == "digest":
                try:
                    check["digest"] = _digest(self.arg(child))
                except ValueError as exc:
                    self.fail(child, str(exc))
            elif key == "status_code":
                status = [int(a) if a.isdigit() and len(a) < 6 else a for a in args]
                try:
                    _status_ranges(status)
                except ValueError as exc:
                    self.fail(child, str(exc))
                check["status"] = status
            elif key == "virtualhost":
                check["host"] = self.arg(child)
            elif key == "regex":
                try:
                    check["regex"] = _regex(" ".join(args))
                except ValueError as exc:
                    self.fail(child, str(exc))
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
    # a TOML basic string: characters as they are (outside the BMP too), control characters escaped
    return '"' + str(value).translate(_TOML_ESCAPES) + '"'


def _service_toml(service: dict[str, Any]) -> str:
    lines = ["[[service]]", *(f"{k} = {_value(v)}" for k, v in service.items() if k != "real")]
    for real in service["real"]:
        lines += ["", "[[service.real]]", *(f"{k} = {_value(v)}" for k, v in real.items())]
    lines.append("")
    return "\n".join(lines) + "\n"


def _header(source: str) -> str:
    return "\n".join([f"# pyvs director config, converted from {source} by `pyvs director import-keepalived`"
                      .translate(_TOML_ESCAPES), "", "[director]",
                      '# interface = "eth0"   # attach XDP here (left as is when a program is attached)', "", ""])


def to_toml(services: list[dict[str, Any]], source: str) -> str:
    return _header(source) + "".join(_service_toml(s) for s in services)


def import_keepalived(text: str | bytes, source: str = "keepalived.conf") -> tuple[str, list[str]]:
    """(the pyvs config as TOML, one warning per option not carried over). `source` names the file in messages
    and is where relative `include`s are looked for. Raises KeepalivedError naming file, line and keyword."""
    converter = _Converter(source)
    chunks = [_header(source)]
    for block in _blocks(text, source, converter.warnings):
        service = converter.convert(block)
        if service is not None:
            chunks.append(_service_toml(service))
    return "".join(chunks), converter.warnings


def import_keepalived_file(path: str | Path) -> tuple[str, list[str]]:
    """import_keepalived of a file read as bytes (comments may hold any bytes, as keepalived allows)."""
    return import_keepalived(Path(path).read_bytes(), str(path))
