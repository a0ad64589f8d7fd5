"""The VIPs announced over BGP by a BIRD 2 that the director daemon drives (active/active behind ECMP).

One BIRD per data plane, started by the daemon in its namespace, with its files in
/run/pyvs/bgp/<pin dir name>/: bird.conf (written by the daemon, whole, each time the announcements change),
bird.ctl (BIRD's control socket, what birdc talks to), bird.pid and bird.log. The VIPs to announce are the
static routes of the protocols `pyvs_vips` and `pyvs_vips6` (blackhole /32s and /128s: this BIRD has no
kernel protocol, so the director's own routing table is never touched); an export filter lets only them out, with
the communities of [bgp]. Each session has a channel per family of the config's VIPs. A change is a new file and
BIRD's `configure` (soft: the sessions stay up, the peers get an UPDATE).

BIRD runs in its own session and outlives the daemon, as the pinned maps do: a daemon that crashes leaves the
announcements (and the forwarding) as they were, and the next one adopts the running BIRD (found through its
pid file and socket) instead of starting another, so a restart does not flap the sessions. A clean stop
withdraws every VIP, waits until BIRD exports none of them, then [bgp] withdraw_wait seconds, then stops BIRD
(its sessions close with a Cease). BIRD's reply format is its control protocol: lines `NNNN-text` (more to
come), `NNNN text` (the last), ` text` (continuation); codes 8xxx and 9xxx are errors.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path

from pyvs.director.config import BgpSpec, DirectorConfig, ServiceSpec
from pyvs.model import IPAddress, ServiceKey

RUN_ROOT = Path("/run/pyvs/bgp")
BIRD = "bird"
STATIC = "pyvs_vips"
STATIC6 = "pyvs_vips6"
PEER_PREFIX = "pyvs_peer_"
START_TIMEOUT = 5.0  # seconds for a new BIRD to open its control socket
STOP_TIMEOUT = 5.0  # seconds for BIRD to end after `down`, before SIGKILL
EXPORT_TIMEOUT = 5.0  # clean stop: seconds at most until BIRD exports none of the withdrawn VIPs
REPLY_LINE = re.compile(r"^(\d{4})([ -])(.*)$")


class BgpError(Exception):
    """The BGP speaker cannot be started, reached or configured; the message says why."""


def run_dir(pin_dir: Path) -> Path:
    """Where the BIRD of the daemon driving the data plane at pin_dir keeps its files."""
    return RUN_ROOT / pin_dir.name


def protocol_name(peer: IPAddress) -> str:
    return PEER_PREFIX + str(peer).replace(".", "_").replace(":", "_")


# ---- what to announce ------------------------------------------------------------------------------

def announcement(services: Iterable[ServiceSpec], quorum: Mapping[ServiceKey, bool],
                 forwarding: bool) -> dict[IPAddress, str]:
    """Each VIP of the config -> '' when it is to be announced, else why it is withdrawn. A VIP is announced
    while the data plane forwards and every service on it has its quorum (one whose sorry server takes over
    counts as served): a director announces only what it can serve, the others take the rest."""
    result: dict[IPAddress, str] = {}
    for svc in services:
        if svc.key.is_fwmark:
            continue  # no address of its own: its packets come to addresses announced for other reasons
        vip = svc.key.vip
        result.setdefault(vip, "")
        if not forwarding:
            result[vip] = "the data plane is not forwarding (pyvs's XDP program is not attached)"
        elif not quorum.get(svc.key, True) and svc.sorry_server is None and not result[vip]:
            result[vip] = f"{svc.key.proto.label.lower()}/{svc.key} lost its quorum"
    return dict(sorted(result.items(), key=lambda item: (item[0].version, item[0])))


HASHING = ("mh", "sh", "dh")  # schedulers whose choice is a function of the flow and the reals alone


def ecmp_notes(config: DirectorConfig) -> list[str]:
    """With [bgp], what keeps a flow that ECMP moves to another director from reaching the same real."""
    if config.bgp is None:
        return []
    notes = [f"service {svc.key.proto.label.lower()}/{svc.key} uses {svc.scheduler}: behind ECMP a flow that moves "
             f"to another director may get another real there (mh picks the same one on every director)"
             for svc in config.services if svc.scheduler not in HASHING]
    if config.sloppy_tcp is False:
        notes.append("sloppy_tcp is off: a TCP flow that ECMP moves to this director mid-stream is not forwarded")
    return notes


def _community(parts: tuple[int, ...]) -> str:
    kind = "bgp_community" if len(parts) == 2 else "bgp_large_community"
    return f"    {kind}.add(({','.join(str(p) for p in parts)}));"


def _channels(spec: BgpSpec, peer: IPAddress, families: set[int]) -> str:
    """A session's channels: one per family of VIPs. A route of the other family than the session's needs a next
    hop of its own family (the config requires it); a route of the session's family goes with next hop self
    unless next_hop/next_hop6 is set."""
    hops = {4: spec.next_hop, 6: spec.next_hop6}
    channels = []
    for family in sorted(families):
        hop = hops[family]
        next_hop = f"next hop address {hop}" if hop else "next hop self"
        channels.append(f"  ipv{family} {{ import none; export filter pyvs_export; {next_hop}; }};\n")
    return "".join(channels)


def render_config(spec: BgpSpec, vips: Iterable[IPAddress], families: Iterable[int] = (4,)) -> str:
    """BIRD 2's config: the VIPs as static routes, exported with the communities to every peer. `families`: the
    address families of the config's VIPs (a channel each, whether or not a VIP of it is announced now, so that
    a withdrawal does not change the sessions)."""
    wanted = set(families) | {vip.version for vip in vips}
    router_id = spec.router_id or spec.local_address
    announced = sorted(set(vips), key=lambda vip: (vip.version, vip))
    routes = "".join(f"  route {vip}/32 blackhole;\n" for vip in announced if isinstance(vip, IPv4Address))
    routes6 = "".join(f"  route {vip}/128 blackhole;\n" for vip in announced if isinstance(vip, IPv6Address))
    communities = "\n".join(_community(c) for c in spec.communities)
    keepalive = max(1, spec.hold_time // 3)

    def local(peer: IPAddress) -> str:
        source = spec.local_address if peer.version == 4 else spec.local_address6
        return f"local {source} as {spec.local_asn}" if source else f"local as {spec.local_asn}"

    peers = "".join(f"""
protocol bgp {protocol_name(peer.address)} {{
  description "{peer.address}";
  {local(peer.address)};
  neighbor {peer.address} as {peer.asn};
  hold time {spec.hold_time}; keepalive time {keepalive}; connect retry time {spec.connect_retry};
  error wait time 1, 10;  # a session that failed is tried again within seconds (BIRD's default: 60 s)
  graceful restart off;   # a dead director's routes go at once, none kept as stale
{_channels(spec, peer.address, wanted)}}}
""" for peer in spec.peers)
    statics = f"""protocol static {STATIC} {{
  ipv4;
{routes}}}
""" if 4 in wanted else ""
    if 6 in wanted:
        statics += f"""protocol static {STATIC6} {{
  ipv6;
{routes6}}}
"""
    return f"""# Written by `pyvs director run`; every change of the announced VIPs writes it again.
{f"router id {router_id};" if router_id else ""}
timeformat protocol "%s";
protocol device {{ }}
{statics}filter pyvs_export {{
  if proto != "{STATIC}" && proto != "{STATIC6}" then reject;
{communities}
  accept;
}}
{peers}"""


# ---- BIRD's control socket ------------------------------------------------------------------------

class BirdControl:
    """A connection to BIRD's control socket (what birdc does), one command at a time."""

    def __init__(self, path: Path, timeout: float = 5.0):
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(str(path))
        except OSError as exc:
            self.sock.close()
            raise BgpError(f"cannot reach BIRD at {path}: {exc.strerror or exc}") from None
        self.reader = self.sock.makefile("rb")
        self._reply()  # 0001 BIRD x.y.z ready.

    def __enter__(self) -> BirdControl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def _reply(self) -> list[tuple[int, str]]:
        lines: list[tuple[int, str]] = []
        code = 0
        while True:
            raw = self.reader.readline()
            if not raw:
                raise BgpError(f"BIRD at {self.path} closed the connection")
            text = raw.decode(errors="replace").rstrip("\n")
            match = REPLY_LINE.match(text)
            if match is None:  # " text": continues the previous code
                lines.append((code, text[1:]))
                continue
            code = int(match.group(1))
            lines.append((code, match.group(3)))
            if match.group(2) == " ":
                if code >= 8000:
                    raise BgpError(f"BIRD: {match.group(3).strip()}")
                return lines

    def command(self, line: str) -> list[tuple[int, str]]:
        """Send one command; its reply as (code, text) lines. An error reply raises BgpError."""
        try:
            self.sock.sendall(line.encode() + b"\n")
            return self._reply()
        except OSError as exc:
            raise BgpError(f"BIRD at {self.path}: {line}: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class PeerState:
    """One BGP session as BIRD sees it."""

    address: str
    state: str  # BGP's: Established, Active, Connect, OpenSent, OpenConfirm, Idle (or Down when disabled)
    since: float | None  # when the protocol last changed state (unix time)
    info: str  # BIRD's one-line summary, e.g. "Established" or "Active  Socket: Connection refused"
    last_error: str
    exported: int  # routes this director announces on the session now

    @property
    def established(self) -> bool:
        return self.state == "Established"


def parse_peers(lines: list[tuple[int, str]]) -> list[PeerState]:
    """`show protocols all` -> the sessions of pyvs's peers."""
    found: list[PeerState] = []
    current: dict[str, str] | None = None

    def finish() -> None:
        if current is not None:
            found.append(PeerState(current["address"], current.get("state", "Down"),
                                   float(current["since"]) if current["since"].isdigit() else None,
                                   current["info"], current.get("error", ""), int(current.get("exported", 0))))

    for code, text in lines:
        if code == 1002:  # name proto table state since info
            finish()
            fields = text.split(None, 5)
            current = None
            if len(fields) >= 5 and fields[0].startswith(PEER_PREFIX):  # the address: from its description
                current = {"address": fields[0][len(PEER_PREFIX):].replace("_", "."), "since": fields[4],
                           "info": fields[5].strip() if len(fields) > 5 else ""}
            continue
        if current is None:
            continue
        key, _, value = text.strip().partition(":")
        value = value.strip()
        if key == "Description":
            current["address"] = value
        elif key == "BGP state":
            current["state"] = value
        elif key == "Last error":
            current["error"] = value
        elif key == "Routes" and (match := re.search(r"(\d+) exported", value)):
            current["exported"] = match.group(1)
    finish()
    return found


def parse_routes(lines: list[tuple[int, str]]) -> list[str]:
    """`show route ...` -> the prefixes listed."""
    return [text.split()[0] for code, text in lines if code in (1007, 0) and text[:1].isdigit() and "/" in
            text.split()[0]]


# ---- the BIRD process ---------------------------------------------------------------------------------

def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def bird_pid(directory: Path) -> int | None:
    """The PID of the BIRD running with the files of `directory`, from its pid file (None: none runs)."""
    try:
        pid = int((directory / "bird.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    argv = _cmdline(pid)
    if not argv or Path(argv[0]).name != BIRD or str(directory / "bird.ctl") not in argv:
        return None  # gone, or the PID was reused by another program
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None
    return None if state == "Z" else pid


def kill_bird(directory: Path) -> int | None:
    """SIGKILL the BIRD of `directory`, if one runs (a lab's teardown after its daemon was killed)."""
    pid = bird_pid(directory)
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
    return pid


class Speaker:
    """The BIRD process of one data plane: started or adopted, configured, asked, stopped."""

    def __init__(self, directory: Path, bird: str = BIRD):
        self.directory = directory
        self.bird = bird
        self.conf = directory / "bird.conf"
        self.ctl = directory / "bird.ctl"
        self.pidfile = directory / "bird.pid"
        self.log = directory / "bird.log"
        self._child: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()  # one change at a time (calls come from worker threads)

    @property
    def pid(self) -> int | None:
        if self._child is not None and self._child.poll() is not None:
            self._child = None  # reaped
        return bird_pid(self.directory)

    def _write(self, text: str) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        temporary = self.conf.with_suffix(".tmp")
        temporary.write_text(text)
        temporary.replace(self.conf)

    def check(self, text: str) -> None:
        """Refuse a config BIRD would not read (`bird -p`), before anything is changed."""
        self.directory.mkdir(parents=True, exist_ok=True)
        probe = self.conf.with_suffix(".check")
        probe.write_text(text)
        try:
            result = subprocess.run([self.bird, "-p", "-c", str(probe)], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as exc:
            raise BgpError(f"cannot run {self.bird}: {exc}") from None
        finally:
            probe.unlink(missing_ok=True)
        if result.returncode != 0:
            raise BgpError(f"BIRD refuses the config pyvs wrote: {(result.stderr or result.stdout).strip()}")

    def start(self, text: str) -> str:
        """Run BIRD with `text` as its config: adopt the one that runs (and configure it), else start one."""
        with self._lock:
            return self._start(text)

    def _start(self, text: str) -> str:
        pid = self.pid
        if pid is not None:
            self.configure(text)
            return f"adopted BIRD (pid {pid})"
        self.check(text)
        self._write(text)
        self.ctl.unlink(missing_ok=True)
        with open(self.log, "ab") as log:
            self._child = subprocess.Popen(
                [self.bird, "-f", "-c", str(self.conf), "-s", str(self.ctl), "-P", str(self.pidfile)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                close_fds=True)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._child.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-3:]
                raise BgpError(f"BIRD exited ({self._child.returncode}) at start: {' / '.join(tail)}")
            if self.ctl.exists() and self.pid is not None:
                try:
                    BirdControl(self.ctl).close()
                    return f"started BIRD (pid {self._child.pid})"
                except BgpError:
                    pass
            time.sleep(0.05)
        raise BgpError(f"BIRD (pid {self._child.pid}) did not open {self.ctl} within {START_TIMEOUT:g}s")

    def configure(self, text: str) -> None:
        """Give the running BIRD a new config (soft: established sessions stay up)."""
        with self._lock:
            self.check(text)
            self._write(text)
            with BirdControl(self.ctl) as ctl:
                ctl.command(f'configure "{self.conf}"')

    def peers(self) -> list[PeerState]:
        with BirdControl(self.ctl) as ctl:
            return parse_peers(ctl.command("show protocols all"))

    def announced(self) -> list[str]:
        """The prefixes the speaker holds to announce (its static routes)."""
        with BirdControl(self.ctl) as ctl:
            found = []
            for protocol in (STATIC, STATIC6):
                try:
                    found += parse_routes(ctl.command(f"show route protocol {protocol}"))
                except BgpError:  # no such protocol: no VIP of that family in the config
                    pass
            return found

    def wait_unexported(self, timeout: float = EXPORT_TIMEOUT) -> bool:
        """After a withdrawal: True once no session exports a route any more (BIRD sent the withdrawals)."""
        deadline = time.monotonic() + timeout
        while True:
            if not any(p.exported for p in self.peers()):
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def stop(self) -> None:
        """End BIRD (`down`: its sessions close with a Cease); SIGKILL when it does not go in time."""
        with self._lock:
            self._stop()

    def _stop(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            with BirdControl(self.ctl) as ctl:
                ctl.command("down")
        except BgpError:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while time.monotonic() < deadline and self.pid is not None:
            time.sleep(0.05)
        if self.pid is not None:
            os.kill(pid, signal.SIGKILL)
        if self._child is not None:
            self._child.wait(timeout=STOP_TIMEOUT)
            self._child = None
