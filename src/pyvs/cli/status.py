"""`pyvs status`: the daemon's live table, read from its status endpoint (no BPF needed)."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
from pathlib import Path

from pyvs.cli.common import UsageError
from pyvs.director.config import DEFAULT_LISTEN
from pyvs.director.runfile import read_run_file


def default_pin_dir_name() -> Path:
    """The default pin directory's path as far as the run file needs it (its name), mounting nothing."""
    from pyvs.netns import current_netns_name

    return Path("/sys/fs/bpf/pyvs") / (current_netns_name() or "default")


def daemon_pin_dir(args: argparse.Namespace) -> Path:
    from pyvs.cli.common import pin_dir_arg

    chosen = pin_dir_arg(args)
    return Path(chosen) if chosen else default_pin_dir_name()


def status_url(value: str) -> str:
    """HOST:PORT or a URL: the address of the daemon's status endpoint, as http://HOST:PORT."""
    return value if "://" in value else f"http://{value}"


def cmd_status(args: argparse.Namespace) -> int:
    from pyvs.director.status_client import fetch_status, watch

    url = args.url
    if url is None:
        info = read_run_file(daemon_pin_dir(args))
        url = (info or {}).get("status_url") or f"http://{DEFAULT_LISTEN}"
    url = status_url(url)
    try:
        if args.json:
            report = fetch_status(url)
            print(json.dumps(report, indent=2))
            return 0
        clear = args.watch and sys.stdout.isatty()

        def show(lines: list[str], again: bool) -> None:
            if clear:
                print("\033[H\033[2J", end="")
            elif again:
                print()
            print("\n".join(lines), flush=True)

        watch(url, args.interval, None if args.watch else 1, show)
    except urllib.error.URLError as exc:
        raise UsageError(f"no director daemon answers at {url}: {exc.reason} "
                         "(is `pyvs director run` running? --url names another address)") from None
    except (ValueError, json.JSONDecodeError) as exc:
        raise UsageError(f"{url} is not a pyvs director's status endpoint: {exc}") from None
    return 0
