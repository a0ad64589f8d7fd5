"""The director daemon: keeps the data plane in step with the config file and the health of the reals.

The rules it applies are derived from the config and the health checks: a real that is up carries its
weight; a real that is down is removed, or kept with weight 0 when inhibit_on_failure; when a service
loses its quorum (by default: no real up) its sorry server takes the traffic.

The daemon owns the services of its config and only those: it writes them one at a time with
Dataplane.update_service (a service added by hand with pyvsadm is never touched, also not at start). A
hand edit of one of its own services is drift: found at the next write of that service or by the periodic
comparison (`drift_check` seconds), logged with what differs, and the config's state is written again.

Threads: everything the daemon decides (desired rules, health, quorum, status documents) is computed on
the event loop; the one data plane thread only reads and writes the maps (and the NIC's addresses). Every
background task is supervised: a failure is logged and the task restarted; a task that keeps failing
makes the daemon exit non-zero (systemd restarts it), never a silent half-daemon.

The data plane's state outlives the daemon (pinned maps): on start the daemon adopts it, taking each
real's health from what the data plane shows, so a restart changes nothing that is in step.

BGP ([bgp], director/bgp.py): the daemon drives a BIRD that announces the VIPs to the routers in front (ECMP
over several directors). A VIP is announced while pyvs's program is attached and every service on it has its
quorum, withdrawn otherwise, and withdrawn first on a clean stop; the VIPs are then not taken over with ARP.

VRRP ([vrrp], director/vrrp.py): keepalived owns the VIPs and moves them between two directors; the daemon serves a
VIP while it is on its interface (gratuitous ARP when it arrives) and leaves it to the kernel otherwise (standby in
the data plane). It never adds or removes the VIPs itself then.

Drains (the status page's action, with [director] page_token): a drained real is kept with weight 0 in what the
daemon writes (its flows go on, new ones go elsewhere) until it is undrained or the config is reloaded. It is
the daemon's own state, not a hand edit, so the drift check keeps it instead of undoing it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pyvs.arp import takeover
from pyvs.dataplane import Dataplane, DataplaneError, open_dataplane
from pyvs.dataplane.base import PYVS_PROGRAMS
from pyvs.director import bgp, checks, sdnotify, vrrp
from pyvs.director.config import (
    ConfigError,
    DirectorConfig,
    RealKey,
    RealSpec,
    ServiceSpec,
    listen_text,
    load_config,
)
from pyvs.director.notify import Notifier
from pyvs.director.runfile import RUN_DIR, daemon_alive, read_run_file, run_file  # noqa: F401 - re-exported
from pyvs.director.status_server import PageActions, serve_status
from pyvs.director.statusdoc import (
    BgpStatus,
    OtherService,
    RealStatus,
    ReloadStatus,
    ServiceStatus,
    StatusDocument,
    VrrpStatus,
)
from pyvs.director.syncrun import SyncRunner
from pyvs.model import Counters, IPAddress, Real, Rules, Service, ServiceKey, address_order, endpoint_text

log = logging.getLogger("pyvs.director")

RETRY_APPLY = 5.0  # seconds before a failed apply is tried again
RESOLVE_INTERVAL = 5.0  # seconds between attempts to resolve reals whose MAC is still unknown
ATTACH_INTERVAL = 5.0  # seconds between looks for interfaces that appeared without pyvs's program (auto attach)
RESTART_DELAY = 1.0  # seconds before a failed background task is started again (times its recent failures)
FAILURE_WINDOW = 60.0  # a task failing more than MAX_RESTARTS times within this many seconds ends the daemon
MAX_RESTARTS = 5
BGP_INTERVAL = 1.0  # seconds between looks at the data plane's program and the BGP sessions

Target = tuple[ServiceKey, RealKey]
T = TypeVar("T")


def log_event(level: int, event: str, **fields: object) -> None:
    """One structured log line: event=NAME key=value ... (values with spaces quoted)."""
    parts = [f"event={event}"]
    for name, value in fields.items():
        text = str(value)
        parts.append(f"{name}={json.dumps(text) if not text or ' ' in text or '=' in text else text}")
    log.log(level, " ".join(parts))


def service_name(key: ServiceKey) -> str:
    """`tcp/198.18.0.100:80`; a firewall-mark service's `fwm/1` (`fwm6/1` for IPv6)."""
    if key.is_fwmark:
        return f"fwm{'6' if key.family == 6 else ''}/{key.fwmark}"
    return f"{key.proto.label.lower()}/{key}"


def _identity(key: ServiceKey) -> tuple[str, str]:
    """A service's proto and vip in the status document: a fwmark service's are "fwm" and ""."""
    return ("fwm", "") if key.is_fwmark else (key.proto.label.lower(), str(key.vip))


def real_name(key: RealKey) -> str:
    return endpoint_text(*key)


class DirectorError(RuntimeError):
    """The daemon cannot start or cannot go on; the message says why."""


def _method_text(real: Real) -> str:
    forwarding, tunnel = real.method
    return f"{forwarding.value} {tunnel.info()}" if tunnel else forwarding.value


def service_diff(current: Service | None, expected: Service | None) -> list[str]:
    """What differs between a service in the data plane and what it should be, in words."""
    if current is None:
        return ["service deleted"]
    if expected is None:
        return ["service present"]
    changes = []
    for name, now, then in (("scheduler", current.scheduler, expected.scheduler),
                            ("persistence", current.persistent, expected.persistent),
                            ("netmask", current.netmask, expected.netmask),
                            ("flags", ",".join(current.sched_flags), ",".join(expected.sched_flags)),
                            ("mh table size", current.mh_table_size, expected.mh_table_size),
                            ("one-packet scheduling", current.onepacket, expected.onepacket)):
        if now != then:
            changes.append(f"{name} {now or '-'} (expected {then or '-'})")
    for key in sorted(set(current.reals) | set(expected.reals)):
        now_real, then_real = current.reals.get(key), expected.reals.get(key)
        if then_real is None:
            changes.append(f"real {real_name(key)} added")
        elif now_real is None:
            changes.append(f"real {real_name(key)} removed")
        elif now_real.weight != then_real.weight:
            changes.append(f"real {real_name(key)} weight {now_real.weight} (expected {then_real.weight})")
        elif now_real.method != then_real.method:
            changes.append(f"real {real_name(key)} forwarding {_method_text(now_real)} (expected "
                           f"{_method_text(then_real)})")
        elif (now_real.u_threshold, now_real.l_threshold) != (then_real.u_threshold, then_real.l_threshold):
            changes.append(f"real {real_name(key)} thresholds {now_real.u_threshold}/{now_real.l_threshold} "
                           f"(expected {then_real.u_threshold}/{then_real.l_threshold})")
    return changes


@dataclass
class WriteReport:
    """What one pass of writes did, for the event loop to log and remember."""

    created: list[ServiceKey] = field(default_factory=list)
    updated: dict[ServiceKey, list[str]] = field(default_factory=dict)
    removed: list[ServiceKey] = field(default_factory=list)
    drift: dict[ServiceKey, list[str]] = field(default_factory=dict)
    flushed: dict[Target, int] = field(default_factory=dict)
    errors: dict[ServiceKey, str] = field(default_factory=dict)


def _record_write(report: WriteReport, key: ServiceKey, current: Service | None, want: Service | None,
                  expected: dict[ServiceKey, Service]) -> None:
    """What one service's write did, for the report: drift found, and created, updated or removed."""
    if key in expected and current != expected[key]:
        report.drift[key] = service_diff(current, expected[key])
    if current == want:
        return
    if want is None:
        report.removed.append(key)
    elif current is None:
        report.created.append(key)
    else:
        report.updated[key] = service_diff(current, want)


def write_services(dp: Dataplane, todo: dict[ServiceKey, Service | None], expected: dict[ServiceKey, Service],
                   quiesced: dict[ServiceKey, Service], flush: list[Target]) -> WriteReport:
    """Data plane I/O only (the data plane thread): write each service of `todo` (None: delete it), reading
    it again under the writers' lock. `expected` is what the daemon last wrote: a service that differs from
    it was changed by someone else (drift). `quiesced` services are written first and the flows of the
    `flush` targets deleted (a newly failed real is set to weight 0 and flushed before it goes)."""
    report = WriteReport()
    expected = dict(expected)
    for key, svc in quiesced.items():
        try:
            dp.apply_service(key, svc)
            expected[key] = svc
        except Exception as exc:  # noqa: BLE001 - one service's failure must not stop the others
            report.errors[key] = str(exc) or type(exc).__name__
    for key, real in flush:
        if key not in report.errors:
            report.flushed[(key, real)] = dp.flush_connections(key, real)
    for key, want in todo.items():
        seen: list[Service | None] = []  # what the last call of change found: the one under the lock

        def change(current: Service | None, want: Service | None = want,
                   seen: list[Service | None] = seen) -> Service | None:
            seen[:] = [current]  # no other side effect: update_service may call it once more before the lock
            return current if current == want else want

        try:
            current = dp.read_service(key)
            if current != want or expected.get(key, want) != want:
                dp.update_service(key, change)  # reads it again, under the writers' lock
                if seen:
                    _record_write(report, key, seen[0], want, expected)
        except Exception as exc:  # noqa: BLE001
            report.errors[key] = str(exc) or type(exc).__name__
    return report


@dataclass
class DataplaneSnapshot:
    """The data plane reads a status document is built from (read in the data plane thread)."""

    rules: Rules
    service_stats: dict[ServiceKey, Counters]
    real_stats: dict[tuple[ServiceKey, RealKey], Counters]
    conns: dict[tuple[ServiceKey, RealKey], tuple[int, int]]  # the schedulers' counts: no table scan
    counters: dict[str, int]
    tables: dict[str, int | float]
    switches: dict[str, bool]

    @classmethod
    def read(cls, dp: Dataplane) -> DataplaneSnapshot:
        return cls(dp.read_rules(), dp.service_stats(), dp.real_stats(), dp.live_counts(), dp.counters(),
                   dp.conn_table_usage(), dp.switches())


def service_owners(pin_dir: Path, keys: list[ServiceKey]) -> list[tuple[ServiceKey, str]]:
    """Who owns each service of the data plane: the running daemon (its config has it) or not."""
    info = read_run_file(pin_dir)
    alive = info is not None and daemon_alive(info)
    owned = set(info.get("services", [])) if info is not None and alive else set()
    rows = []
    for key in sorted(keys):
        if not alive:
            rows.append((key, "pyvsadm (no daemon runs)"))
        elif service_name(key) in owned:
            rows.append((key, f"daemon (pid {info['pid'] if info else '?'})"))
        else:
            rows.append((key, "pyvsadm (not the daemon's)"))
    return rows


@dataclass
class _Checked:
    spec: RealSpec
    health: checks.Health
    task: asyncio.Task[None] | None = None


class Director:
    """The daemon's state: the config, each real's health, each service's quorum."""

    def __init__(self, config: DirectorConfig, dp: Dataplane, auto_attach: bool = False):
        self.config = config
        self.dp = dp
        # ipvsadm's model: without `interface`, the daemon of this namespace's own data plane keeps pyvs's
        # program on every default interface (attachment.default_interfaces), those that appear later included.
        self.auto_attach = auto_attach and not config.interface
        self.notifier = Notifier(config.notify, config.notify_timeout, config.user)
        self.reals: dict[Target, _Checked] = {}
        self.quorum: dict[ServiceKey, bool] = {}
        self.applied: dict[ServiceKey, Service] = {}  # what the daemon last wrote (or found in step), per service
        self.drained: set[Target] = set()  # weight 0 until undrained or reloaded (the page's action)
        self.generation = 1
        self.started = time.time()
        self.last_reload: ReloadStatus = {"ok": True, "error": "", "at": self.started}
        self.apply_error = ""
        self.exit_reason = ""
        self.resolve_interval = RESOLVE_INTERVAL
        self.attach_interval = ATTACH_INTERVAL
        self._attach_skipped: dict[str, str] = {}
        self.server: asyncio.Server | None = None
        self._failed: set[ServiceKey] = set()  # services whose last write failed: written again
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._write_lock = asyncio.Lock()  # one pass of writes at a time: its bookkeeping follows its writes
        self._newly_down: set[Target] = set()
        self._commands: asyncio.Semaphore | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dataplane_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataplane")
        # [bgp]: the BIRD of this data plane (started only with [bgp]), what it was last given and told
        self._speaker: bgp.Speaker | None = None
        self.bgp_vips: dict[IPAddress, str] = {}  # VIP -> '' announced, else why it is withdrawn
        self.bgp_peers: list[bgp.PeerState] = []
        self.bgp_error = ""
        self._bgp_text: str | None = None  # the config BIRD runs with (None: not started or adopted yet)
        self._bgp_dirty = asyncio.Event()
        # [vrrp]: which VIPs keepalived has put on the interface (VIP -> held), since when, how often it changed
        self.vrrp_held: dict[IPAddress, bool] = {}
        self.vrrp_since = time.time()
        self.vrrp_transitions = 0
        self._vrrp_wake = asyncio.Event()
        self.sync = SyncRunner()  # [sync]: the connection sync engine (pyvs/sync), in a thread of its own

    # ---- desired state ---------------------------------------------------------------------------

    def adopt(self, config: DirectorConfig, current: Rules) -> None:
        """Initial health of every real from what the data plane shows (no service yet: up, unless alpha).
        Services of the data plane that are not in the config are left alone, and said so."""
        for svc in config.services:
            present = current.services.get(svc.key)
            for real in svc.reals:
                if present is None:
                    up = not svc.alpha
                else:
                    found = present.reals.get(real.key)
                    up = found is not None and (found.weight > 0 or real.weight == 0)
                self.reals[(svc.key, real.key)] = _Checked(real, checks.Health(up=up, detail="adopted"))
            sorry_on = present is not None and svc.sorry_server in present.reals
            weight, count = self._live_weight(svc)
            self.quorum[svc.key] = not sorry_on and count > 0 and weight >= svc.quorum
            if present is not None:
                log_event(logging.INFO, "service_adopted", service=service_name(svc.key), reals=len(present.reals))
        for key in sorted(set(current.services) - {svc.key for svc in config.services}):
            log_event(logging.INFO, "service_left_alone", service=service_name(key),
                      reason="not in the config: the daemon does not touch it (pyvsadm -D removes it)")

    def _live_weight(self, svc: ServiceSpec) -> tuple[int, int]:
        """(sum of the weights of the live reals, how many are live)."""
        live = [r for r in svc.reals if self.reals[(svc.key, r.key)].health.up]
        return sum(r.weight for r in live), len(live)

    def _update_quorum(self, svc: ServiceSpec) -> None:
        weight, count = self._live_weight(svc)
        had = self.quorum.get(svc.key, True)
        if had and (count == 0 or weight < svc.quorum - svc.hysteresis):
            has = False
        elif not had and count > 0 and weight >= svc.quorum + svc.hysteresis:
            has = True
        else:
            has = had
        if has != had:
            self.quorum[svc.key] = has
            event = "quorum_up" if has else "quorum_down"
            sorry = real_name(svc.sorry_server) if svc.sorry_server else "none"
            log_event(logging.WARNING, event, service=service_name(svc.key), live_weight=weight,
                      quorum=svc.quorum, sorry_server=sorry)
            self.notifier.notify(event, service_name(svc.key), sorry, "up" if has else "down")
            self._bgp_dirty.set()

    def desired_rules(self, quiesce: set[Target] | frozenset[Target] = frozenset()) -> Rules:
        """The rules the data plane should have now for the daemon's services (no other service);
        reals in `quiesce` are kept with weight 0."""
        rules = Rules()
        for svc in self.config.services:
            service = svc.service()
            if not self.quorum.get(svc.key, True) and svc.sorry_server is not None:
                rip, port = svc.sorry_server
                service.reals[svc.sorry_server] = Real(rip, port, 1)
            for real in svc.reals:
                target = (svc.key, real.key)
                if service.reals and svc.sorry_server in service.reals and target not in quiesce:
                    continue
                if self.reals[target].health.up:
                    weight = 0 if target in self.drained else real.weight
                    service.reals[real.key] = real.real(weight)
                elif real.inhibit_on_failure or target in quiesce:
                    service.reals[real.key] = real.real(0)
            rules.services[svc.key] = service
        return rules

    # ---- keeping the data plane in step ----------------------------------------------------------

    async def reconcile(self, full: bool = False) -> bool:
        """Write the daemon's services whose desired state changed (every one, compared with the data plane,
        when `full`), delete those it no longer has; a newly failed real is first set to weight 0 and its
        flows flushed. Computed here, on the event loop; written in the data plane thread."""
        async with self._write_lock:
            return await self._reconcile(full)

    async def _reconcile(self, full: bool) -> bool:
        newly_down, self._newly_down = self._newly_down, set()
        desired = self.desired_rules().services
        quiesced: dict[ServiceKey, Service] = {}
        flush: list[Target] = []
        if newly_down and self.config.flush_on_failure:
            with_zero = self.desired_rules(quiesce=newly_down).services
            flush = sorted(t for t in newly_down if t[0] in with_zero)
            quiesced = {t[0]: with_zero[t[0]] for t in flush}
        todo: dict[ServiceKey, Service | None] = {
            key: svc for key, svc in desired.items() if full or key in self._failed or self.applied.get(key) != svc
        }
        for key in self.applied.keys() - desired.keys():
            todo[key] = None
        expected = {key: self.applied[key] for key in todo if key in self.applied}
        if not todo and not quiesced:
            return not self.apply_error
        try:
            report = await self.in_dataplane_thread(lambda: write_services(self.dp, todo, expected, quiesced, flush))
        except Exception as exc:  # noqa: BLE001 - the daemon must keep checking; the keeper retries
            report = WriteReport(errors={key: str(exc) or type(exc).__name__ for key in todo})
        for key, want in todo.items():
            if key in report.errors:
                self._failed.add(key)
                continue
            self._failed.discard(key)
            if want is None:
                self.applied.pop(key, None)
            else:
                self.applied[key] = want
        self._log_report(report, first={key for key in todo if key not in expected})
        error = "; ".join(f"{service_name(k)}: {e}" for k, e in sorted(report.errors.items()))
        if error:
            log_event(logging.ERROR, "apply_failed", error=error)
        elif self.apply_error:
            log_event(logging.INFO, "apply_recovered")
        self.apply_error = error
        return not error

    def _log_report(self, report: WriteReport, first: set[ServiceKey]) -> None:
        for (key, real), flows in sorted(report.flushed.items()):
            log_event(logging.INFO, "flows_flushed", service=service_name(key), real=real_name(real), flows=flows)
        for key, changes in sorted(report.drift.items()):
            log_event(logging.WARNING, "drift", service=service_name(key), changes="; ".join(changes),
                      action="the config's state is written again")
        for key in report.created:
            log_event(logging.INFO, "service_created", service=service_name(key))
        for key, changes in sorted(report.updated.items()):
            if key not in report.drift:  # the first write since the start is news; later ones follow health
                log_event(logging.INFO if key in first else logging.DEBUG, "service_updated",
                          service=service_name(key), changes="; ".join(changes))
        for key in report.removed:
            log_event(logging.INFO, "service_removed", service=service_name(key), reason="no longer in the config")

    async def in_dataplane_thread(self, call: Callable[[], T]) -> T:
        """Run a data plane call in the one thread that touches the maps (never in the event loop)."""
        return await asyncio.get_running_loop().run_in_executor(self._dataplane_thread, call)

    def _on_result(self, target: Target, result: checks.ProbeResult, health: checks.Health, changed: bool) -> None:
        if not changed:
            return
        state = "up" if health.up else "down"
        log_event(logging.INFO if health.up else logging.WARNING, f"real_{state}", service=service_name(target[0]),
                  real=real_name(target[1]), reason=result.detail, transitions=health.transitions)
        self.notifier.notify(f"real_{state}", service_name(target[0]), real_name(target[1]), state)
        if not health.up:
            self._newly_down.add(target)
        svc = self.config.service(target[0])
        if svc is not None:
            self._update_quorum(svc)
        self._dirty.set()

    def _start_check(self, target: Target, checked: _Checked) -> None:
        assert self._commands is not None
        spec, commands = checked.spec, self._commands

        def on_result(result: checks.ProbeResult, health: checks.Health, changed: bool) -> None:
            self._on_result(target, result, health, changed)

        checked.task = self.spawn(
            f"check {service_name(target[0])} {real_name(target[1])}",
            lambda: checks.check_loop(spec.check, spec.rip, spec.port, checked.health, on_result, commands),
        )

    # ---- supervision -----------------------------------------------------------------------------

    def spawn(self, name: str, run: Callable[[], Awaitable[None]], restart: bool = True) -> asyncio.Task[None]:
        """Start a background task, supervised and referenced until it ends."""
        task = asyncio.get_running_loop().create_task(self._supervise(name, run, restart), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]], restart: bool) -> None:
        failures: list[float] = []
        while True:
            try:
                await run()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - logged, then restarted or the daemon ends
                error = f"{type(exc).__name__}: {exc}"
                log.error("event=task_failed task=%s error=%s", json.dumps(name), json.dumps(error), exc_info=exc)
                if not restart:
                    return
                now = time.monotonic()
                failures = [t for t in failures if now - t < FAILURE_WINDOW] + [now]
                if len(failures) > MAX_RESTARTS:
                    self.fail(f"task '{name}' failed {len(failures)} times within {FAILURE_WINDOW:g}s, "
                              f"last: {error}")
                    return
                await asyncio.sleep(RESTART_DELAY * len(failures))
                log_event(logging.WARNING, "task_restarted", task=name, failures=len(failures))

    def fail(self, reason: str) -> None:
        """End the daemon with an error (exit status 1): better than going on half working."""
        if not self.exit_reason:
            self.exit_reason = reason
            log_event(logging.CRITICAL, "daemon_failing", reason=reason)
        self._stop.set()

    def stop(self) -> None:
        self._stop.set()

    # ---- reload ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: reload in the event loop, one at a time."""
        self.spawn("reload", self._reload_once, restart=False)

    async def _reload_once(self) -> None:
        async with self._reload_lock:
            try:
                await self.reload()
            except Exception as exc:
                self._refuse_reload(f"reload failed: {type(exc).__name__}: {exc}")
                raise

    def _refuse_reload(self, error: str) -> bool:
        self.last_reload = {"ok": False, "error": error, "at": time.time()}
        log_event(logging.ERROR, "reload_refused", error=error)
        self._write_run_file()
        return False

    def _director_changes(self, new: DirectorConfig) -> str:
        """Why the [director] section of `new` cannot be applied while running ('' when it can)."""
        old = self.config
        for name, before, after in (("interface", old.interface, new.interface),
                                    ("xdp_mode", old.xdp_mode, new.xdp_mode)):
            if before != after:
                return (f"{new.path}: [director] {name} changed ({before or 'none'} -> {after or 'none'}): the "
                        f"daemon does not move its XDP program and VIPs while it runs; restart it to apply this "
                        f"(nothing was changed)")
        return ""

    async def reload(self) -> bool:
        """Load the config file again; an invalid one changes nothing. Only the difference is applied; the
        VIPs of new services are taken over, those no service uses any more are let go."""
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            return self._refuse_reload(str(exc))
        if problem := self._director_changes(new):
            return self._refuse_reload(problem)
        server = self.server
        if new.status_listen != self.config.status_listen:
            try:
                server = await self._serve(new) if new.status_listen else None
            except DirectorError as exc:
                return self._refuse_reload(f"{new.path}: [director] status_listen: {exc} (nothing was changed)")
        old_vips = set(self._vips())
        old_targets = set(self.reals)
        kept = started = 0
        wanted: dict[Target, RealSpec] = {(svc.key, r.key): r for svc in new.services for r in svc.reals}
        for target in old_targets - set(wanted):
            checked = self.reals.pop(target)
            if checked.task:
                checked.task.cancel()
        self._newly_down &= set(wanted)
        for svc in new.services:
            for real in svc.reals:
                target = (svc.key, real.key)
                old = self.reals.get(target)
                if old is not None and old.spec.check == real.check:
                    old.spec = real
                    kept += 1
                    continue
                if old is not None and old.task:
                    old.task.cancel()
                fresh_service = all(t[0] != svc.key for t in old_targets)
                health = checks.Health(up=old.health.up if old else not (svc.alpha and fresh_service))
                self.reals[target] = checked = _Checked(real, health)
                self._start_check(target, checked)
                started += 1
        for key in list(self.quorum):
            if new.service(key) is None:
                del self.quorum[key]
        if server is not self.server:
            if self.server is not None:
                self.server.close()
            self.server = server
        self.config = new
        self.notifier = Notifier(new.notify, new.notify_timeout, new.user)
        for svc_key, real_key in sorted(self.drained):
            log_event(logging.INFO, "drain_ended", service=service_name(svc_key), real=real_name(real_key),
                      reason="reload")
        self.drained.clear()
        for svc in new.services:
            self.quorum.setdefault(svc.key, True)
            self._update_quorum(svc)
        self.generation += 1
        self._bgp_dirty.set()
        await self.in_dataplane_thread(self._set_switches)
        ok = await self.reconcile(full=True)
        new_vips = set(self._vips())
        self._vrrp_wake.set()
        if self.config.interface and self.config.bgp is None and self.config.vrrp is None and new_vips != old_vips:
            ifname = self.config.interface
            added = sorted(new_vips - old_vips, key=address_order)
            gone = sorted(old_vips - new_vips, key=address_order)
            await self.in_dataplane_thread(lambda: self._move_vips(ifname, added, gone))
        self.last_reload = {"ok": ok, "error": self.apply_error, "at": time.time()}
        log_event(logging.INFO, "reloaded", config=new.path, generation=self.generation, services=len(new.services),
                  reals=len(wanted), checks_kept=kept, checks_started=started, removed=len(old_targets - set(wanted)))
        self._write_run_file()
        return ok

    def _move_vips(self, ifname: str, added: list[IPAddress], gone: list[IPAddress]) -> None:
        """Data plane thread: take the new VIPs over (address, gratuitous ARP); let go of the VIPs the config
        no longer has, unless a service of the data plane (one added by hand) still uses them."""
        if added:
            for action in takeover.announce(added, ifname):
                log_event(logging.INFO, "vip_takeover", interface=ifname, action=action)
        if gone:
            used = {key.vip for key in self.dp.read_rules().services if not key.is_fwmark}
            for vip in sorted(set(gone) & used, key=address_order):
                log_event(logging.INFO, "vip_kept", interface=ifname, vip=vip,
                          reason="a service not in the config still uses it")
            for action in takeover.withdraw(sorted(set(gone) - used, key=address_order), ifname):
                log_event(logging.INFO, "vip_withdrawn", interface=ifname, action=action)

    # ---- status ----------------------------------------------------------------------------------

    async def status_snapshot(self) -> StatusDocument:
        """The status document: data plane reads in its thread, the rest here on the event loop."""
        snapshot = await self.in_dataplane_thread(lambda: DataplaneSnapshot.read(self.dp))
        return self.status(snapshot)

    def status(self, snapshot: DataplaneSnapshot) -> StatusDocument:
        """Everything the status endpoint, the metrics and `pyvs status` show."""
        rules, service_stats, real_stats, conns = snapshot.rules, snapshot.service_stats, snapshot.real_stats, \
            snapshot.conns
        services: list[ServiceStatus] = []
        for svc in self.config.services:
            applied = rules.services.get(svc.key)
            stats = service_stats.get(svc.key)
            reals: list[RealStatus] = []
            entries: list[tuple[str, RealKey, int, checks.Health | None]] = [
                ("real", r.key, r.weight, self.reals[(svc.key, r.key)].health) for r in svc.reals
            ]
            if svc.sorry_server is not None:
                entries.append(("sorry", svc.sorry_server, 1, None))
            for role, key, weight, health in entries:
                live = applied.reals.get(key) if applied else None
                counters = real_stats.get((svc.key, key))
                active, inactive = conns.get((svc.key, key), (0, 0))
                reals.append({
                    "address": str(key[0]), "port": key[1], "role": role, "configured_weight": weight,
                    "weight": live.weight if live else None, "in_dataplane": live is not None,
                    "health": ("up" if health.up else "down") if health else "-",
                    "transitions": health.transitions if health else 0, "checks": health.checks if health else 0,
                    "last_check": health.detail if health else "", "since": health.since if health else None,
                    "last_check_ok": health.last_ok if health else None,
                    "last_check_at": health.checked_at if health else None,
                    "active": active, "inactive": inactive, "drained": (svc.key, key) in self.drained,
                    "overloaded": bool(live and live.overloaded),
                    "conns": counters.conns if counters else 0, "packets": counters.inpkts if counters else 0,
                    "bytes": counters.inbytes if counters else 0,
                })  # fmt: skip
            services.append({
                "proto": _identity(svc.key)[0], "vip": _identity(svc.key)[1], "port": svc.key.port,
                "fwmark": svc.key.fwmark,
                "name": service_name(svc.key), "scheduler": svc.scheduler, "owner": "daemon",
                "persistence_timeout": svc.persistent, "sched_flags": list(svc.sched_flags),
                "quorum": self.quorum.get(svc.key, True),
                "sorry_active": bool(applied and svc.sorry_server in applied.reals),
                "conns": stats.conns if stats else 0, "packets": stats.inpkts if stats else 0,
                "bytes": stats.inbytes if stats else 0, "reals": reals,
            })  # fmt: skip
        owned = {svc.key for svc in self.config.services}
        others: list[OtherService] = []
        for other in rules.sorted_services():
            if other.key in owned:
                continue
            counted = service_stats.get(other.key)
            others.append({
                "proto": _identity(other.key)[0], "vip": _identity(other.key)[1], "port": other.key.port,
                "fwmark": other.key.fwmark,
                "name": service_name(other.key), "scheduler": other.scheduler, "owner": "other",
                "reals": [{"address": str(r.rip), "port": r.port, "weight": r.weight, "overloaded": r.overloaded,
                           "active": conns.get((other.key, r.key), (0, 0))[0],
                           "inactive": conns.get((other.key, r.key), (0, 0))[1]} for r in other.sorted_reals()],
                "conns": counted.conns if counted else 0, "packets": counted.inpkts if counted else 0,
                "bytes": counted.inbytes if counted else 0,
            })  # fmt: skip
        return {
            "pid": os.getpid(), "config": str(self.config.path), "pin_dir": str(self.dp.pin_dir),
            "generation": self.generation, "started": self.started, "time": time.time(),
            "last_reload": self.last_reload, "apply_error": self.apply_error, "services": services,
            "other_services": others, "counters": snapshot.counters, "tables": snapshot.tables,
            "switches": snapshot.switches, "node_exporter_metrics": self.config.node_exporter_metrics,
            "page_actions": bool(self.config.page_token), "bgp": self.bgp_status(), "vrrp": self.vrrp_status(),
            "sync": self.sync.status(snapshot.counters),
        }  # fmt: skip

    @property
    def vip_families(self) -> set[int]:
        """The address families of the config's VIPs: a BGP channel each."""
        return {svc.key.vip.version for svc in self.config.services if not svc.key.is_fwmark} or {4}

    def bgp_status(self) -> BgpStatus | None:
        spec = self.config.bgp
        if spec is None:
            return None
        return {
            "speaker_pid": self.speaker.pid, "local_asn": spec.local_asn, "hold_time": spec.hold_time,
            "peers": [{"address": p.address, "state": p.state, "since": p.since, "info": p.info,
                       "last_error": p.last_error, "exported": p.exported} for p in self.bgp_peers],
            "vips": [{"vip": str(vip), "announced": not why, "reason": why} for vip, why in self.bgp_vips.items()],
            "error": self.bgp_error,
        }  # fmt: skip

    async def page_action(self, action: str, service: str, real: str, client: str) -> tuple[int, str]:
        """The status page's drain/undrain of one real (the token was checked): (HTTP status, message)."""
        svc = next((s for s in self.config.services if service_name(s.key) == service), None)
        spec = next((r for r in svc.reals if real_name(r.key) == real), None) if svc else None
        if svc is None or spec is None:
            log_event(logging.WARNING, "page_action", action=action, service=service, real=real, client=client,
                      result="no such real of the daemon's services")
            return 404, f"no real {real} in service {service} of the daemon's config"
        target = (svc.key, spec.key)
        if (target in self.drained) == (action == "drain"):
            result = "already drained" if action == "drain" else "not drained"
        else:
            if action == "drain":
                self.drained.add(target)
            else:
                self.drained.discard(target)
            await self.reconcile()
            result = ("weight 0 until undrained or reloaded" if action == "drain" else
                      f"weight {spec.weight} again (when up)")
        log_event(logging.WARNING, "page_action", action=action, service=service, real=real, client=client,
                  result=result, apply_error=self.apply_error or "none")
        return 200, f"{action} {service} {real}: {result}"

    def _write_run_file(self) -> None:
        listen = self.config.status_listen if self.server is not None else None
        info = {
            "pid": os.getpid(), "config": str(self.config.path), "pin_dir": str(self.dp.pin_dir),
            "status_url": f"http://{listen_text(listen)}" if listen else None, "generation": self.generation,
            "last_reload": self.last_reload, "services": [service_name(svc.key) for svc in self.config.services],
        }  # fmt: skip
        path = run_file(self.dp.pin_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(info, indent=2))
        temporary.replace(path)

    # ---- main loop -------------------------------------------------------------------------------

    async def _serve(self, config: DirectorConfig) -> asyncio.Server:
        assert config.status_listen is not None
        host, port = config.status_listen
        try:
            return await serve_status(self.status_snapshot, host, port,
                                      PageActions(lambda: self.config.page_token, self.page_action),
                                      lambda: self.in_dataplane_thread(self.dp.fingerprint))
        except OSError as exc:
            raise DirectorError(f"cannot listen on {listen_text((host, port))}: {exc.strerror or exc}") from None

    async def run(self) -> None:
        """Serve until SIGTERM/SIGINT (or until a background task keeps failing: DirectorError)."""
        loop = asyncio.get_running_loop()
        self._commands = checks.command_limit()
        # The status address first: a daemon that cannot serve it exits before it changes anything.
        self.server = await self._serve(self.config) if self.config.status_listen else None
        loop.add_signal_handler(signal.SIGTERM, self.stop)
        loop.add_signal_handler(signal.SIGINT, self.stop)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        try:
            await self.in_dataplane_thread(self._attach)
            await self.reconcile(full=True)
            for target, checked in self.reals.items():
                self._start_check(target, checked)
            self._write_run_file()
            log_event(logging.INFO, "started", config=self.config.path, pin_dir=self.dp.pin_dir,
                      services=len(self.config.services), reals=len(self.reals),
                      status=listen_text(self.config.status_listen) if self.config.status_listen else "off")
            self.spawn("ready", self._notify_ready, restart=False)
            self.spawn("bgp", self._keep_announced)
            if self.config.vrrp is not None:
                self.spawn("vrrp", self._follow_vrrp)
            self.spawn("sync", self._keep_syncing)
            self.spawn("keeper", self._keep_in_step)
            self.spawn("mac-resolver", self._resolve_missing_macs)
            if self.auto_attach:
                self.spawn("attacher", self._attach_new_interfaces)
            await self._stop.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._shutdown()
        if self.exit_reason:
            raise DirectorError(self.exit_reason)

    async def _first_checks(self) -> None:
        """Until every real has had its first check, or its first check's time ran out (interval + timeout: a
        check starts within one interval)."""
        bound = max((c.spec.check.interval + c.spec.check.timeout for c in self.reals.values()), default=0.0)
        deadline = time.monotonic() + bound + 1.0
        while time.monotonic() < deadline and any(c.health.checks == 0 for c in self.reals.values()):
            await asyncio.sleep(0.05)

    async def _notify_ready(self) -> None:
        """Tell systemd (Type=notify) the director is ready: the data plane is attached and in step (run() did
        that before starting this task) and every real has had its first check."""
        await self._first_checks()
        up = sum(c.health.up for c in self.reals.values())
        sdnotify.ready(f"{len(self.config.services)} services, {up}/{len(self.reals)} reals up")

    async def _shutdown(self) -> None:
        sdnotify.stopping()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
        await self.notifier.drain()
        await self._bgp_stop("the daemon stops")
        await asyncio.to_thread(self.sync.stop)
        try:
            await self.in_dataplane_thread(self._withdraw)
        finally:
            self._dataplane_thread.shutdown()
        info = read_run_file(self.dp.pin_dir)
        if info and info.get("pid") == os.getpid():
            run_file(self.dp.pin_dir).unlink(missing_ok=True)
        log_event(logging.INFO, "stopped", note="the data plane keeps forwarding from its pinned maps")

    def _attach_defaults(self) -> None:
        """Attach pyvs's program (generic mode) to every default interface that runs no XDP program."""
        from pyvs.dataplane.attachment import attach_defaults

        report = attach_defaults(self.dp, only_if_none=False)
        if report.attached:
            log_event(logging.INFO, "xdp_attached", interfaces=",".join(report.attached), mode=report.mode,
                      how="auto")
        for ifname, why in sorted(report.skipped.items()):
            if self._attach_skipped.get(ifname) != why:  # said once per interface and reason
                log_event(logging.WARNING, "xdp_not_attached", interface=ifname, reason=why)
        self._attach_skipped = dict(report.skipped)

    async def _attach_new_interfaces(self) -> None:
        """Interfaces that appear (or come up, or get an address) while the daemon runs get pyvs's program."""
        while True:
            await asyncio.sleep(self.attach_interval)
            await self.in_dataplane_thread(self._attach_defaults)

    async def _resolve_missing_macs(self) -> None:
        """A real added before it answered ARP gets its frames once its MAC is known."""
        while True:
            await asyncio.sleep(self.resolve_interval)
            try:
                resolved = await self.in_dataplane_thread(lambda: self.dp.refresh_macs(
                    only_missing=True, unresolved=lambda rip, error: log_event(
                        logging.WARNING, "mac_resolve_failed", real=str(rip), error=error)))
            except Exception as exc:  # noqa: BLE001 - e.g. a real no longer routable: try again later
                log_event(logging.WARNING, "mac_resolve_failed", error=f"{type(exc).__name__}: {exc}")
                continue
            if resolved:
                log_event(logging.INFO, "mac_resolved", reals=resolved)

    async def _keep_in_step(self) -> None:
        """Write health changes as they come; retry failed writes; compare with the data plane every
        drift_check seconds (a hand edit of the daemon's services is reported and undone)."""
        while True:
            wait = RETRY_APPLY if self.apply_error else (self.config.drift_check or None)
            full = False
            try:
                async with asyncio.timeout(wait):
                    await self._dirty.wait()
            except TimeoutError:
                full = True
            self._dirty.clear()
            await self.reconcile(full=full)

    async def _keep_syncing(self) -> None:
        """[sync]: the sync engine runs as the config says (a reload may add, change or remove the section)."""
        while True:
            await asyncio.to_thread(self.sync.follow, self.config.sync, self.dp.pin_dir)
            await asyncio.sleep(1.0)

    # ---- BGP ---------------------------------------------------------------------------------------

    @property
    def speaker(self) -> bgp.Speaker:
        """The BIRD of this data plane (its files are found from the pin dir, also after a restart)."""
        if self._speaker is None:
            self._speaker = bgp.Speaker(bgp.run_dir(self.dp.pin_dir))
        return self._speaker

    async def _keep_announced(self) -> None:
        """[bgp]: announce each VIP while the data plane forwards and its services have their quorum, withdraw it
        otherwise; look again every BGP_INTERVAL seconds and at once when a quorum or the config changes. Once
        the first checks are in: a restarted director announces only what its checks confirmed."""
        await self._first_checks()
        noted: set[str] = set()
        while True:
            for note in set(bgp.ecmp_notes(self.config)) - noted:  # once per note (a reload may bring new ones)
                log_event(logging.WARNING, "bgp_note", note=note)
                noted.add(note)
            self._bgp_dirty.clear()
            try:
                await self._bgp_step()
            except bgp.BgpError as exc:
                if str(exc) != self.bgp_error:
                    log_event(logging.ERROR, "bgp_error", error=exc)
                self.bgp_error = str(exc)
            try:
                async with asyncio.timeout(BGP_INTERVAL):
                    await self._bgp_dirty.wait()
            except TimeoutError:
                pass

    def _forwarding(self) -> bool:
        """Data plane thread: pyvs's program runs on this data plane's maps (on the configured interface, or on
        any); a program left over from pins that were lost does not count, the rules never reach it."""
        from pyvs.dataplane.attachment import interfaces
        from pyvs.dataplane.base import PROGRAM_NAME

        return any(i.xdp is not None and i.xdp[2] == PROGRAM_NAME and self.dp.serves(i.xdp[1])
                   for i in interfaces() if not self.config.interface or i.name == self.config.interface)

    async def _bgp_step(self) -> None:
        spec = self.config.bgp
        if spec is None:  # no [bgp] (or a reload took it out): no speaker of this data plane runs
            if self._bgp_text is not None or self.speaker.pid is not None:
                await self._bgp_stop("[bgp] is not in the config")
            return
        forwarding = await self.in_dataplane_thread(self._forwarding)
        decision = bgp.announcement(self.config.services, self.quorum, forwarding)
        text = bgp.render_config(spec, [vip for vip, why in decision.items() if not why], self.vip_families)
        if self._bgp_text is None or self.speaker.pid is None:
            action = await asyncio.to_thread(self.speaker.start, text)
            log_event(logging.INFO, "bgp_speaker", action=action, socket=self.speaker.ctl)
        elif text != self._bgp_text:
            await asyncio.to_thread(self.speaker.configure, text)
        self._bgp_text = text
        self._log_announcements(decision)
        peers = await asyncio.to_thread(self.speaker.peers)
        before = {p.address: p for p in self.bgp_peers}
        for peer in peers:
            was = before.get(peer.address)
            if was is None or was.state != peer.state:  # a session that went down is worth a warning
                log_event(logging.WARNING if was and was.established else logging.INFO, "bgp_session",
                          peer=peer.address, state=peer.state, info=peer.info, last_error=peer.last_error or "none")
        self.bgp_peers = peers
        if self.bgp_error:
            log_event(logging.INFO, "bgp_recovered")
        self.bgp_error = ""

    def _log_announcements(self, decision: dict[IPAddress, str]) -> None:
        for vip, why in decision.items():
            if self.bgp_vips.get(vip, "not yet") == why:
                continue
            if why:
                log_event(logging.WARNING, "bgp_withdraw", vip=vip, reason=why)
            else:
                log_event(logging.INFO, "bgp_announce", vip=vip)
        self.bgp_vips = decision

    async def _bgp_stop(self, reason: str) -> None:
        """Withdraw every VIP, wait until BIRD exports none and then withdraw_wait seconds (the peers take the
        route out of their forwarding), then stop BIRD. Bounded; a failure is logged, never raised."""
        if self._bgp_text is None and self.speaker.pid is None:
            return
        spec = self.config.bgp
        try:
            if spec is not None and self._bgp_text is not None:
                await asyncio.to_thread(self.speaker.configure, bgp.render_config(spec, [], self.vip_families))
                self._log_announcements({vip: reason for vip in self.bgp_vips})
                sent = await asyncio.to_thread(self.speaker.wait_unexported)
                log_event(logging.INFO, "bgp_withdrawn", sent="yes" if sent else "not confirmed",
                          wait=f"{spec.withdraw_wait:g}s")
                await asyncio.sleep(spec.withdraw_wait)
            await asyncio.to_thread(self.speaker.stop)
            log_event(logging.INFO, "bgp_speaker", action="stopped BIRD", reason=reason)
        except (bgp.BgpError, OSError) as exc:
            log_event(logging.ERROR, "bgp_error", error=exc, during="stop")
        self._bgp_text = None
        self.bgp_peers = []

    # ---- VRRP ---------------------------------------------------------------------------------------

    async def _follow_vrrp(self) -> None:
        """[vrrp]: look at the interface's VIPs whenever an address changes (netlink) and every WATCH_INTERVAL."""
        loop = asyncio.get_running_loop()
        events = vrrp.address_events()

        def readable() -> None:
            vrrp.drain(events)
            self._vrrp_wake.set()

        loop.add_reader(events.fileno(), readable)
        try:
            while True:
                self._vrrp_wake.clear()
                await self.in_dataplane_thread(self._vrrp_step)
                try:
                    async with asyncio.timeout(vrrp.WATCH_INTERVAL):
                        await self._vrrp_wake.wait()
                except TimeoutError:
                    pass
        finally:
            loop.remove_reader(events.fileno())
            events.close()

    def _vrrp_step(self) -> vrrp.Change:
        """Data plane thread: serve the VIPs keepalived put on the interface (gratuitous ARP for those that just
        arrived), standby for the others."""
        spec, ifname = self.config.vrrp, self.config.interface
        if spec is None or not ifname:
            return vrrp.Change([], [])
        vips = self._vips()
        holding = vrrp.held(vips, ifname)
        served = self.dp.set_standby(holding, False)
        standby = self.dp.set_standby(set(vips) - holding, True)
        changed_at = time.time()  # the data plane follows from now on
        if served and spec.announce_count:
            takeover.send_gratuitous(served, ifname, spec.announce_count)
        before = vrrp.role(self.vrrp_held, {v for v, h in self.vrrp_held.items() if h}) if self.vrrp_held else ""
        self.vrrp_held = {vip: vip in holding for vip in vips}
        now = vrrp.role(vips, holding)
        if before != now:
            self.vrrp_since = changed_at
            self.vrrp_transitions += bool(before)
            log_event(logging.WARNING if before else logging.INFO, "vrrp_role", role=now, was=before or "none",
                      instance=spec.instance or "-", interface=ifname,
                      held=",".join(map(str, vrrp.sorted_vips(holding))) or "none")
        for vip in served:
            log_event(logging.INFO, "vrrp_serve", vip=vip, interface=ifname,
                      action=f"gratuitous ARP x{spec.announce_count}" if spec.announce_count else "none")
        for vip in standby:
            log_event(logging.INFO, "vrrp_standby", vip=vip, interface=ifname, reason="not on the interface")
        return vrrp.Change(served, standby)

    def vrrp_status(self) -> VrrpStatus | None:
        spec = self.config.vrrp
        if spec is None:
            return None
        holding = {vip for vip, h in self.vrrp_held.items() if h}
        return {
            "instance": spec.instance, "interface": self.config.interface or "",
            "role": vrrp.role(self.vrrp_held, holding) if self.vrrp_held else "unknown", "since": self.vrrp_since,
            "transitions": self.vrrp_transitions,
            "vips": [{"vip": str(vip), "held": held} for vip, held in sorted(
                self.vrrp_held.items(), key=lambda item: address_order(item[0]))],
        }  # fmt: skip

    def _set_switches(self) -> None:
        """The data plane's switches the config sets (the others are left as they are)."""
        if self.config.sloppy_tcp is not None:
            self.dp.set_sloppy_tcp(self.config.sloppy_tcp)
        if self.config.expire_nodest_conn is not None:
            self.dp.set_expire_nodest_conn(self.config.expire_nodest_conn)

    def _attach(self) -> None:
        """Attach XDP to the configured interface (unless it is there) and take the VIPs over on it."""
        self._set_switches()
        ifname = self.config.interface
        if not ifname:
            if self.auto_attach:
                self._attach_defaults()
            return
        attached = Dataplane.xdp_program(ifname)
        if attached and attached[2] in PYVS_PROGRAMS and not self.dp.serves(attached[1]):
            # A pyvs program left over from pins that were lost or recreated: the rules never reach it.
            self.dp.attach(ifname, attached[0])
            log_event(logging.WARNING, "xdp_replaced_stale", interface=ifname, mode=attached[0],
                      stale_program=attached[1])
        elif attached:
            log_event(logging.INFO, "xdp_present", interface=ifname, mode=attached[0], program=attached[1])
        else:
            self.dp.attach(ifname, self.config.xdp_mode)
            log_event(logging.INFO, "xdp_attached", interface=ifname, mode=self.config.xdp_mode)
        if self.config.bgp is not None:
            return  # the VIPs reach this director by routing (BGP), not by ARP on its segment
        if self.config.vrrp is not None:
            self._vrrp_step()  # keepalived owns the VIPs: serve those it put here, no others
            return
        # Gratuitous ARP: the gateway and the switches learn at once that the VIPs are here.
        for action in takeover.announce(self._vips(), ifname):
            log_event(logging.INFO, "vip_takeover", interface=ifname, action=action)

    def _withdraw(self) -> None:
        """On a clean stop, remove the VIPs that the takeover added (an admin-configured VIP stays). With [vrrp] the
        VIPs are keepalived's: they stay, and every VIP is served again (without a daemon nothing would serve a VIP
        that keepalived moves here later; a backup then forwards only frames a switch floods to it)."""
        if self.config.vrrp is not None:
            served = self.dp.set_standby(self._vips(), False)
            if served:
                log_event(logging.INFO, "vrrp_standby_cleared", vips=",".join(map(str, served)),
                          reason="the daemon stops: the data plane serves every VIP")
            return
        if self.config.interface and self.config.bgp is None:
            for action in takeover.withdraw(self._vips(), self.config.interface):
                log_event(logging.INFO, "vip_withdrawn", interface=self.config.interface, action=action)

    def _vips(self) -> list[IPAddress]:
        return sorted({svc.key.vip for svc in self.config.services if not svc.key.is_fwmark}, key=address_order)


def run_daemon(config_path: Path | str, pin_dir: Path | str | None = None) -> None:
    """Load the config (refusing an invalid one), adopt the data plane and run until SIGTERM/SIGINT."""
    config = load_config(config_path)
    with open_dataplane(pin_dir) as dp:
        info = read_run_file(dp.pin_dir)
        if info and info.get("pid") != os.getpid() and daemon_alive(info):
            raise DataplaneError(f"a director daemon (pid {info['pid']}) already drives {dp.pin_dir}")
        director = Director(config, dp, auto_attach=pin_dir is None)
        director.adopt(config, dp.read_rules())
        asyncio.run(director.run())
