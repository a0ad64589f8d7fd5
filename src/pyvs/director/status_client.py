"""The client side of the daemon's status: fetch the document, print `pyvs status`'s table, watch it."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from pyvs.director.statusdoc import StatusDocument, endpoint

REQUEST_TIMEOUT = 5.0


def fetch_status(url: str, timeout: float = REQUEST_TIMEOUT) -> StatusDocument:
    """The daemon's JSON status (url: its base address, e.g. http://127.0.0.1:9180)."""
    with urllib.request.urlopen(f"{url.rstrip('/')}/status", timeout=timeout) as response:  # noqa: S310
        data: StatusDocument = json.load(response)
    return data


def _was(previous: Mapping[str, Any] | None, key: str) -> float | None:
    return None if previous is None else float(previous[key])


def _rate(now: float, before: float | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    return f"{max(0.0, now - before) / seconds:.1f}"


def _bytes_rate(now: float, before: float | None, seconds: float) -> str:
    if before is None or seconds <= 0:
        return "-"
    value = max(0.0, now - before) / seconds
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f}{unit}" if unit == "B" else f"{value:.1f}{unit}"
        value /= 1000
    return f"{value:.1f}TB"


def status_table(current: StatusDocument, previous: StatusDocument | None = None) -> list[str]:
    """The terminal table: per service and real, health, weight, connections and rates since `previous`."""
    seconds = current["time"] - previous["time"] if previous else 0.0
    before: dict[tuple[str, str], Mapping[str, Any]] = {}
    for svc in previous["services"] if previous else []:
        before[(svc["name"], "")] = svc
        for real in svc["reals"]:
            before[(svc["name"], endpoint(real["address"], real["port"]))] = real
    rows = [["service / real", "health", "weight", "active", "inact", "conn/s", "pkt/s", "bytes/s", "conns"]]
    for svc in current["services"]:
        old = before.get((svc["name"], ""))
        quorum = "ok" if svc["quorum"] else "LOST" + (" (sorry)" if svc["sorry_active"] else "")
        rows.append([f"{svc['name']} {svc['scheduler']}", quorum, "", "", "",
                     _rate(svc["conns"], _was(old, "conns"), seconds),
                     _rate(svc["packets"], _was(old, "packets"), seconds),
                     _bytes_rate(svc["bytes"], _was(old, "bytes"), seconds), str(svc["conns"])])
        for real in svc["reals"]:
            name = endpoint(real["address"], real["port"])
            old = before.get((svc["name"], name))
            label = f"  -> {name}" + (" (sorry server)" if real["role"] == "sorry" else "")
            health = real["health"].upper() if real["health"] == "down" else real["health"]
            if real.get("overloaded"):
                health += ",OVERLOAD"  # its upper connection threshold reached: no new connections
            rows.append([label, health, "-" if real["weight"] is None else str(real["weight"]),
                         str(real["active"]), str(real["inactive"]),
                         _rate(real["conns"], _was(old, "conns"), seconds),
                         _rate(real["packets"], _was(old, "packets"), seconds),
                         _bytes_rate(real["bytes"], _was(old, "bytes"), seconds), str(real["conns"])])
    for other in current.get("other_services", []):  # in the data plane, not in the daemon's config
        rows.append([f"{other['name']} {other['scheduler']}", "not the daemon's (left alone)", "", "", "", "", "", "",
                     str(other["conns"])])
        rows.extend([f"  -> {endpoint(real['address'], real['port'])}", "-", str(real["weight"]),
                     "", "", "", "", "", ""] for real in other["reals"])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    drops = {k[len("drop_"):]: v for k, v in current["counters"].items() if k.startswith("drop_") and v}
    header = (f"pyvs director pid {current['pid']}, config {current['config']} (generation {current['generation']})"
              + ("" if current["last_reload"]["ok"] else f"; LAST RELOAD FAILED: {current['last_reload']['error']}"))
    footer = "drops: " + (", ".join(f"{k} {v}" for k, v in sorted(drops.items())) or "none")
    return [header, *lines, footer, *bgp_summary(current), *vrrp_summary(current), *sync_summary(current)]


def bgp_summary(status: StatusDocument) -> list[str]:
    """One line for [bgp]: the sessions and what is announced or withdrawn (nothing without [bgp])."""
    bgp = status.get("bgp")
    if not bgp:
        return []
    sessions = ", ".join(f"{p['address']} {p['state']}" for p in bgp["peers"]) or "none yet"
    vips = ", ".join(v["vip"] + ("" if v["announced"] else f" WITHDRAWN ({v['reason']})") for v in bgp["vips"])
    speaker = f"BIRD pid {bgp['speaker_pid']}" if bgp["speaker_pid"] else "BIRD NOT RUNNING"
    return [f"bgp: AS{bgp['local_asn']}, {speaker}; sessions: {sessions}; VIPs: {vips or 'none'}"
            + (f"; error: {bgp['error']}" if bgp["error"] else "")]


def vrrp_summary(status: StatusDocument) -> list[str]:
    """One line for [vrrp]: the role and which VIPs keepalived put here (nothing without [vrrp])."""
    vrrp = status.get("vrrp")
    if not vrrp:
        return []
    vips = ", ".join(v["vip"] + (" served" if v["held"] else " standby") for v in vrrp["vips"])
    return [f"vrrp: {vrrp['role'].upper()} ({vrrp['instance'] or 'instance not named'} on {vrrp['interface']}, "
            f"{vrrp['transitions']} transitions); VIPs: {vips or 'none'}"]


def sync_summary(status: StatusDocument) -> list[str]:
    """One line for [sync]: what runs, what went and came, what was refused (nothing without [sync])."""
    sync = status.get("sync")
    if not sync:
        return []
    stats = sync["stats"]
    refused = sum(stats.get(k, 0) for k in ("malformed", "wrong_syncid", "wrong_version", "unknown_service",
                                            "unknown_real", "insert_failed"))
    running = f"{sync['role']} on {sync['interface']}, syncid {sync['syncid']}"
    if not sync["daemons"]:
        return [f"sync: {running}: NOT RUNNING" + (f" ({sync['error']})" if sync["error"] else "")]
    return [f"sync: {running}; sent {stats.get('conns_sent', 0)} conns in {stats.get('messages_sent', 0)} messages, "
            f"received {stats.get('conns_applied', 0)} conns in {stats.get('messages_received', 0)} messages, "
            f"refused {refused}, events lost {sync['events_lost']}"]


def watch(url: str, interval: float, count: int | None, show: Callable[[list[str], bool], None]) -> None:
    """Print the table every `interval` seconds (`count` times, or until interrupted)."""
    previous = fetch_status(url)
    shown = 0
    while count is None or shown < count:
        time.sleep(interval)
        current = fetch_status(url)
        show(status_table(current, previous), shown > 0)
        previous = current
        shown += 1
