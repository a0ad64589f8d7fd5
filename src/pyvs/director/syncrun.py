"""[sync] in `pyvs director run`: the sync engine (pyvs/sync) in a thread of the daemon, over a data plane handle of its
own, restarted when the section changes and retried while it cannot start (an interface not there yet)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from pyvs.director.config import SyncSpec
from pyvs.director.statusdoc import SyncStatus

log = logging.getLogger(__name__)
RETRY = 5.0  # seconds between attempts to start an engine that failed


class SyncRunner:
    def __init__(self) -> None:
        self.spec: SyncSpec | None = None
        self.error = ""
        self.lines: list[str] = []  # ipvsadm -L --daemon's lines of the running daemons
        self._engine: Any = None
        self._thread: threading.Thread | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()

    def follow(self, spec: SyncSpec | None, pin_dir: Path) -> None:
        """Run what `spec` says (None: nothing): started, restarted after a change, retried after a failure."""
        alive = self._thread is not None and self._thread.is_alive()
        if spec == self.spec and (alive or spec is None or time.monotonic() - self._failed_at < RETRY):
            return
        self.stop()
        self.spec = spec
        if spec is not None:
            self._thread = threading.Thread(target=self._serve, args=(spec, pin_dir), name="sync", daemon=True)
            self._thread.start()

    def _serve(self, spec: SyncSpec, pin_dir: Path) -> None:
        from pyvs.dataplane import open_dataplane
        from pyvs.sync.engine import SyncConfig, SyncEngine

        def cfg(state: str) -> SyncConfig | None:
            if state not in spec.states:
                return None
            return SyncConfig(state, spec.interface, spec.syncid, spec.maxlen, spec.group, spec.port, spec.ttl)

        try:
            with open_dataplane(pin_dir) as dp:
                engine = SyncEngine(dp, cfg("master"), cfg("backup"))
                with self._lock:
                    self._engine = engine
                    self.error = ""
                    self.lines = [c.describe() for c in (engine.master, engine.backup) if c is not None]
                log.info("event=sync_started daemons=%s", "; ".join(self.lines))
                try:
                    engine.run()
                finally:
                    engine.close()
        except Exception as exc:  # noqa: BLE001 - reported in the status, retried
            with self._lock:
                self.error = str(exc)
                self._failed_at = time.monotonic()
            log.error("event=sync_failed error=%s", exc)
        finally:
            with self._lock:
                self.lines = []

    def stop(self) -> None:
        with self._lock:
            engine = self._engine
            self._engine = None
        if engine is not None:
            engine.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def status(self, counters: dict[str, int]) -> SyncStatus | None:
        """The status document's "sync" part; None without [sync]."""
        if self.spec is None:
            return None
        with self._lock:
            stats = self._engine.stats.as_dict() if self._engine is not None else {}
            return {"role": self.spec.role, "interface": self.spec.interface, "syncid": self.spec.syncid,
                    "daemons": list(self.lines), "error": self.error, "stats": stats,
                    "events_lost": counters.get("sync_events_lost", 0)}
