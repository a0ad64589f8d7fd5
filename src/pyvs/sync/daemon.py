"""The sync daemon as `pyvsadm --start-daemon master|backup` runs it: a background process per state and data plane,
recorded in a state file (PID, namespace, settings, counters) under /run/pyvs/sync, which `--stop-daemon` and
`-L --daemon` read. `python -m pyvs.sync.daemon` is the process itself."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from pyvs.dataplane import libbpf
from pyvs.dataplane.synctable import sync_events_fd
from pyvs.netns import current_netns_name, netns_cookie
from pyvs.sync.engine import STATES, SyncConfig, SyncEngine, SyncError

log = logging.getLogger(__name__)

RUN_DIR = Path(os.environ.get("PYVS_SYNC_RUN_DIR", "/run/pyvs/sync"))
START_TIMEOUT = 15.0
ALREADY_RUNNING = "Daemon has already run"  # libipvs's ipvs_strerror for EEXIST of ipvs_start_daemon
NOT_RUNNING = "No daemon is running"  # ... for ESRCH of ipvs_stop_daemon


def _key(pin_dir: Path | None) -> str:
    return pin_dir.name if pin_dir is not None else (current_netns_name() or "default")


def state_file(pin_dir: Path | None, state: str) -> Path:
    """Where the `state` daemon of the data plane at `pin_dir` (None: this namespace's) records itself."""
    return RUN_DIR / f"{_key(pin_dir)}-{state}.json"


def log_file(pin_dir: Path | None, state: str) -> Path:
    return RUN_DIR / f"{_key(pin_dir)}-{state}.log"


def daemon_alive(pid: int) -> bool:
    """Whether `pid` is a sync daemon."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"pyvs.sync.daemon" in cmdline


def read_state(pin_dir: Path | None, state: str) -> dict[str, Any] | None:
    """The record of a running `state` daemon (None: none runs; a record of a dead one or of another namespace
    whose name this one reuses is ignored)."""
    try:
        data: dict[str, Any] = json.loads(state_file(pin_dir, state).read_text())
    except (OSError, ValueError):
        return None
    if data.get("netns_cookie") != netns_cookie() or not daemon_alive(int(data.get("pid", 0))):
        return None
    return data


def running(pin_dir: Path | None) -> list[SyncConfig]:
    """The daemons that run for this data plane, master first (the order of ipvsadm -L --daemon)."""
    found = []
    for state in STATES:
        data = read_state(pin_dir, state)
        if data is not None:
            found.append(SyncConfig(**data["config"]))
    return found


def _write(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def start(pin_dir: Path | None, cfg: SyncConfig) -> int:
    """Start the `cfg.state` daemon in the background; its PID once it serves. SyncError when one runs already or
    it cannot start (the message is its own)."""
    if read_state(pin_dir, cfg.state) is not None:
        raise SyncError(ALREADY_RUNNING)
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    path = state_file(pin_dir, cfg.state)
    path.unlink(missing_ok=True)
    argv = [sys.executable, "-m", "pyvs.sync.daemon", "--state", cfg.state, "--mcast-interface", cfg.mcast_interface,
            "--syncid", str(cfg.syncid), "--sync-maxlen", str(cfg.maxlen), "--mcast-port", str(cfg.port),
            "--mcast-ttl", str(cfg.ttl)]
    if cfg.group:
        argv += ["--mcast-group", cfg.group]
    if pin_dir is not None:
        argv += ["--pin-dir", str(pin_dir)]
    logs = log_file(pin_dir, cfg.state)
    with open(logs, "wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            lines = [line for line in logs.read_text(errors="replace").splitlines() if line.strip()]
            raise SyncError(lines[-1] if lines else f"the sync daemon exited with status {proc.returncode}")
        data = read_state(pin_dir, cfg.state)
        if data is not None and data.get("pid") == proc.pid:
            proc.returncode = 0  # it runs on by itself: no zombie warning from this Popen
            return proc.pid
        time.sleep(0.05)
    proc.terminate()
    raise SyncError(f"the {cfg.state} sync daemon did not start within {START_TIMEOUT:g} s (see {logs})")


def stop(pin_dir: Path | None, state: str, timeout: float = 10.0) -> None:
    """Stop the `state` daemon (SIGTERM, then wait for it); SyncError when none runs."""
    data = read_state(pin_dir, state)
    if data is None:
        raise SyncError(NOT_RUNNING)
    pid = int(data["pid"])
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while daemon_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    if daemon_alive(pid):
        os.kill(pid, signal.SIGKILL)
    state_file(pin_dir, state).unlink(missing_ok=True)
    log_file(pin_dir, state).unlink(missing_ok=True)  # kept only while it runs, or when it failed to start


def _same_map(path: Path, map_id: int) -> bool:
    """Whether the map pinned at `path` is still the one of id `map_id`."""
    try:
        fd = libbpf.obj_get(str(path))
    except OSError:
        return False
    try:
        return bool(libbpf.map_info(fd).id == map_id)
    finally:
        os.close(fd)


def serve(pin_dir: Path | None, cfg: SyncConfig) -> int:
    """The daemon process: open the data plane, run the engine, keep the state file, until SIGTERM."""
    from pyvs.dataplane import open_dataplane

    path = state_file(pin_dir, cfg.state)
    with open_dataplane(pin_dir) as dp:
        master = cfg if cfg.state == "master" else None
        backup = cfg if cfg.state == "backup" else None
        engine = SyncEngine(dp, master, backup)
        try:
            effective = engine.master or engine.backup
            assert effective is not None
            ring = dp.pin_dir / "sync_events"
            ring_id = libbpf.map_info(sync_events_fd(dp)).id

            def record() -> None:
                if not _same_map(ring, ring_id):  # the data plane was removed (pyvs lab down, detach --remove-rules)
                    log.info("the data plane at %s is gone: the %s sync daemon stops", dp.pin_dir, cfg.state)
                    engine.stop()
                    return
                stats = engine.stats.as_dict()
                counters = dp.counters()
                stats["events_lost"] = counters.get("sync_events_lost", 0)
                _write(path, {"pid": os.getpid(), "netns_cookie": netns_cookie(), "pin_dir": str(dp.pin_dir),
                              "config": asdict(effective), "stats": stats, "updated": time.time()})

            signal.signal(signal.SIGTERM, lambda *_: engine.stop())
            signal.signal(signal.SIGINT, lambda *_: engine.stop())
            record()
            log.info("%s", effective.describe())
            engine.run(on_tick=record)
        finally:
            engine.close()
            try:  # its own record goes with it
                if json.loads(path.read_text()).get("pid") == os.getpid():
                    path.unlink()
                    log_file(pin_dir, cfg.state).unlink(missing_ok=True)
            except (OSError, ValueError):
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pyvs.sync.daemon", description=__doc__)
    parser.add_argument("--state", choices=STATES, required=True)
    parser.add_argument("--mcast-interface", default="eth0")
    parser.add_argument("--syncid", type=int, default=0)
    parser.add_argument("--sync-maxlen", type=int, default=0)
    parser.add_argument("--mcast-group", default="")
    parser.add_argument("--mcast-port", type=int, default=0)
    parser.add_argument("--mcast-ttl", type=int, default=0)
    parser.add_argument("--pin-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        cfg = SyncConfig(args.state, args.mcast_interface, args.syncid, args.sync_maxlen, args.mcast_group,
                         args.mcast_port, args.mcast_ttl)
        return serve(Path(args.pin_dir) if args.pin_dir else None, cfg)
    except Exception as exc:  # noqa: BLE001 - the last line of the log is what pyvsadm reports
        print(f"{exc}", file=sys.stderr, flush=True)
        return 1


if __name__ == "__main__":
    sys.exit(main())
