"""The director daemon: keeps the data plane in step with the config file and the health of the reals.

The rules it applies are derived from the config and the health checks: a real that is up carries its
weight; a real that is down is removed, or kept with weight 0 when inhibit_on_failure; when a service
loses its quorum (by default: no real up) its sorry server takes the traffic. Everything goes through
Dataplane.apply, which writes only what differs, so established flows keep their real.

The data plane's state outlives the daemon (pinned maps): on start the daemon adopts it, taking each
real's health from what the data plane shows, so a restart changes nothing that is in step.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any, TypeVar

from pyvs.arp import takeover
from pyvs.dataplane import Dataplane, DataplaneError, open_dataplane
from pyvs.director import checks
from pyvs.director.config import ConfigError, DirectorConfig, RealKey, RealSpec, ServiceSpec, load_config
from pyvs.director.notify import Notifier
from pyvs.director.runfile import RUN_DIR, daemon_alive, read_run_file, run_file  # noqa: F401 - re-exported
from pyvs.model import Real, Rules, Service, ServiceKey

log = logging.getLogger("pyvs.director")

RETRY_APPLY = 5.0  # seconds before a failed apply is tried again
RESOLVE_INTERVAL = 5.0  # seconds between attempts to resolve reals whose MAC is still unknown

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
    return f"{key.proto.label.lower()}/{key}"


def real_name(key: RealKey) -> str:
    return f"{key[0]}:{key[1]}"


@dataclass
class _Checked:
    spec: RealSpec
    health: checks.Health
    task: asyncio.Task[None] | None = None


class Director:
    """The daemon's state: the config, each real's health, each service's quorum."""

    def __init__(self, config: DirectorConfig, dp: Dataplane):
        self.config = config
        self.dp = dp
        self.notifier = Notifier(config.notify, config.notify_timeout)
        self.reals: dict[Target, _Checked] = {}
        self.quorum: dict[ServiceKey, bool] = {}
        self.generation = 1
        self.started = time.time()
        self.last_reload: dict[str, Any] = {"ok": True, "error": "", "at": self.started}
        self.apply_error = ""
        self._dirty = asyncio.Event()
        self._reload_lock = asyncio.Lock()
        self._newly_down: set[Target] = set()
        self._commands: asyncio.Semaphore | None = None
        self._dataplane_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dataplane")

    # ---- desired state ---------------------------------------------------------------------------

    def adopt(self, config: DirectorConfig, current: Rules) -> None:
        """Initial health of every real from what the data plane shows (no service yet: up, unless alpha)."""
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

    def desired_rules(self, quiesce: set[Target] | frozenset[Target] = frozenset()) -> Rules:
        """The rules the data plane should have now; reals in `quiesce` are kept with weight 0."""
        rules = Rules()
        for svc in self.config.services:
            service = Service(svc.key, svc.scheduler)
            if not self.quorum.get(svc.key, True) and svc.sorry_server is not None:
                rip, port = svc.sorry_server
                service.reals[svc.sorry_server] = Real(rip, port, 1)
            for real in svc.reals:
                target = (svc.key, real.key)
                if service.reals and svc.sorry_server in service.reals and target not in quiesce:
                    continue
                if self.reals[target].health.up:
                    service.reals[real.key] = Real(real.rip, real.port, real.weight)
                elif real.inhibit_on_failure or target in quiesce:
                    service.reals[real.key] = Real(real.rip, real.port, 0)
            rules.services[svc.key] = service
        return rules

    # ---- keeping the data plane in step ----------------------------------------------------------

    def reconcile(self) -> bool:
        """Apply the desired rules; a newly failed real is first set to weight 0 and its flows flushed.

        Runs in the data plane thread (resolving a new real's MAC may wait for ARP).
        """
        newly_down, self._newly_down = self._newly_down, set()
        quiesced = self.desired_rules(quiesce=newly_down) if newly_down and self.config.flush_on_failure else None
        desired = self.desired_rules()
        try:
            if quiesced is not None:
                self.dp.apply(quiesced)
                for key, real in sorted(newly_down):
                    flushed = self.dp.flush_connections(key, real)
                    log_event(logging.INFO, "flows_flushed", service=service_name(key), real=real_name(real),
                              flows=flushed)
            self.dp.apply(desired)
        except Exception as exc:  # noqa: BLE001 - the daemon must keep checking; the next change retries
            self.apply_error = str(exc) or type(exc).__name__
            log_event(logging.ERROR, "apply_failed", error=self.apply_error)
            return False
        if self.apply_error:
            log_event(logging.INFO, "apply_recovered")
        self.apply_error = ""
        return True

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
        spec = checked.spec

        def on_result(result: checks.ProbeResult, health: checks.Health, changed: bool) -> None:
            self._on_result(target, result, health, changed)

        checked.task = asyncio.get_running_loop().create_task(
            checks.check_loop(spec.check, spec.rip, spec.port, checked.health, on_result, self._commands),
            name=f"check {service_name(target[0])} {real_name(target[1])}",
        )

    # ---- reload ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        """SIGHUP: reload in the event loop, one at a time."""
        asyncio.get_running_loop().create_task(self._reload_once())

    async def _reload_once(self) -> None:
        async with self._reload_lock:
            await self.reload()

    async def reload(self) -> bool:
        """Load the config file again; an invalid one changes nothing. Only the difference is applied."""
        try:
            new = load_config(self.config.path)
        except ConfigError as exc:
            self.last_reload = {"ok": False, "error": str(exc), "at": time.time()}
            log_event(logging.ERROR, "reload_refused", error=exc)
            self._write_run_file()
            return False
        old_targets = set(self.reals)
        kept = started = 0
        wanted: dict[Target, RealSpec] = {(svc.key, r.key): r for svc in new.services for r in svc.reals}
        for target in old_targets - set(wanted):
            checked = self.reals.pop(target)
            if checked.task:
                checked.task.cancel()
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
        self.config = new
        self.notifier = Notifier(new.notify, new.notify_timeout)
        for svc in new.services:
            self.quorum.setdefault(svc.key, True)
            self._update_quorum(svc)
        self.generation += 1
        ok = await self.in_dataplane_thread(self.reconcile)
        self.last_reload = {"ok": ok, "error": self.apply_error, "at": time.time()}
        log_event(logging.INFO, "reloaded", config=new.path, generation=self.generation, services=len(new.services),
                  reals=len(wanted), checks_kept=kept, checks_started=started, removed=len(old_targets - set(wanted)))
        self._write_run_file()
        return ok

    # ---- status ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Everything the status endpoint, the metrics and `pyvs status` show."""
        rules = self.dp.read_rules()
        service_stats = self.dp.service_stats()
        real_stats = self.dp.real_stats()
        conns = self.dp.conn_counts()
        services = []
        for svc in self.config.services:
            applied = rules.services.get(svc.key)
            stats = service_stats.get(svc.key)
            reals = []
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
                    "active": active, "inactive": inactive,
                    "conns": counters.conns if counters else 0, "packets": counters.inpkts if counters else 0,
                    "bytes": counters.inbytes if counters else 0,
                })  # fmt: skip
            services.append({
                "proto": svc.key.proto.label.lower(), "vip": str(svc.key.vip), "port": svc.key.port,
                "name": service_name(svc.key), "scheduler": svc.scheduler, "quorum": self.quorum.get(svc.key, True),
                "sorry_active": bool(applied and svc.sorry_server in applied.reals),
                "conns": stats.conns if stats else 0, "packets": stats.inpkts if stats else 0,
                "bytes": stats.inbytes if stats else 0, "reals": reals,
            })  # fmt: skip
        return {
            "pid": os.getpid(), "config": str(self.config.path), "pin_dir": str(self.dp.pin_dir),
            "generation": self.generation, "started": self.started, "time": time.time(),
            "last_reload": self.last_reload, "apply_error": self.apply_error, "services": services,
            "counters": self.dp.counters(),
        }  # fmt: skip

    def _write_run_file(self) -> None:
        listen = self.config.status_listen
        info = {
            "pid": os.getpid(), "config": str(self.config.path), "pin_dir": str(self.dp.pin_dir),
            "status_url": f"http://{listen[0]}:{listen[1]}" if listen else None, "generation": self.generation,
            "last_reload": self.last_reload,
        }  # fmt: skip
        path = run_file(self.dp.pin_dir)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        temporary.write_text(json.dumps(info, indent=2))
        temporary.replace(path)

    # ---- main loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        from pyvs.director.status import serve_status  # the status server needs the Director type

        loop = asyncio.get_running_loop()
        self._commands = checks.command_limit()
        stop = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        # The status port first: a daemon that cannot bind it exits before it touches the rules or the VIPs.
        server = await serve_status(self) if self.config.status_listen else None
        await self.in_dataplane_thread(self._attach)
        await self.in_dataplane_thread(self.reconcile)
        for target, checked in self.reals.items():
            self._start_check(target, checked)
        self._write_run_file()
        log_event(logging.INFO, "started", config=self.config.path, pin_dir=self.dp.pin_dir,
                  services=len(self.config.services), reals=len(self.reals),
                  status=f"{self.config.status_listen[0]}:{self.config.status_listen[1]}"
                  if self.config.status_listen else "off")
        keeper = loop.create_task(self._keep_in_step())
        resolver = loop.create_task(self._resolve_missing_macs())
        await stop.wait()
        keeper.cancel()
        resolver.cancel()
        for checked in self.reals.values():
            if checked.task:
                checked.task.cancel()
        await asyncio.gather(keeper, resolver, *(c.task for c in self.reals.values() if c.task), return_exceptions=True)
        if server is not None:
            server.close()
        await self.notifier.drain()
        await self.in_dataplane_thread(self._withdraw)
        self._dataplane_thread.shutdown()
        info = read_run_file(self.dp.pin_dir)
        if info and info.get("pid") == os.getpid():
            run_file(self.dp.pin_dir).unlink(missing_ok=True)
        log_event(logging.INFO, "stopped", note="the data plane keeps forwarding from its pinned maps")

    async def _resolve_missing_macs(self) -> None:
        """A real added before it answered ARP gets its frames once its MAC is known."""
        while True:
            await asyncio.sleep(RESOLVE_INTERVAL)
            resolved = await self.in_dataplane_thread(lambda: self.dp.refresh_macs(only_missing=True))
            if resolved:
                log_event(logging.INFO, "mac_resolved", reals=resolved)

    async def _keep_in_step(self) -> None:
        while True:
            try:
                async with asyncio.timeout(RETRY_APPLY if self.apply_error else None):
                    await self._dirty.wait()
            except TimeoutError:
                pass
            self._dirty.clear()
            await self.in_dataplane_thread(self.reconcile)

    def _attach(self) -> None:
        """Attach XDP to the configured interface (unless it is there) and take the VIPs over on it."""
        ifname = self.config.interface
        if not ifname:
            return
        attached = Dataplane.xdp_mode(ifname)
        if attached:
            log_event(logging.INFO, "xdp_present", interface=ifname, mode=attached[0], program=attached[1])
        else:
            self.dp.attach(ifname, self.config.xdp_mode)
            log_event(logging.INFO, "xdp_attached", interface=ifname, mode=self.config.xdp_mode)
        # Gratuitous ARP: the gateway and the switches learn at once that the VIPs are here.
        for action in takeover.announce(self._vips(), ifname):
            log_event(logging.INFO, "vip_takeover", interface=ifname, action=action)

    def _withdraw(self) -> None:
        """On a clean stop, remove the VIPs that the takeover added (an admin-configured VIP stays)."""
        if self.config.interface:
            for action in takeover.withdraw(self._vips(), self.config.interface):
                log_event(logging.INFO, "vip_withdrawn", interface=self.config.interface, action=action)

    def _vips(self) -> list[IPv4Address]:
        return sorted({svc.key.vip for svc in self.config.services})


def run_daemon(config_path: Path | str, pin_dir: Path | str | None = None) -> None:
    """Load the config (refusing an invalid one), adopt the data plane and run until SIGTERM/SIGINT."""
    config = load_config(config_path)
    with open_dataplane(pin_dir) as dp:
        info = read_run_file(dp.pin_dir)
        if info and info.get("pid") != os.getpid() and daemon_alive(info):
            raise DataplaneError(f"a director daemon (pid {info['pid']}) already drives {dp.pin_dir}")
        director = Director(config, dp)
        director.adopt(config, dp.read_rules())
        asyncio.run(director.run())
