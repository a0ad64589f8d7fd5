"""The data plane's lifecycle: pins (created all at once, checked, migrated, removed), the connection tables'
shards, and the programs (the sweeper's timer, the pass-through program)."""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pyvs.dataplane import abi, libbpf
from pyvs.dataplane.base import MAP_NAMES, PROGRAM_NAME, DataplaneError, Resolver, install_calls, start_sweeper
from pyvs.dataplane.build import BuildError, object_path
from pyvs.dataplane.dataplane import Dataplane
from pyvs.dataplane.neighbours import interface_index, resolve
from pyvs.dataplane.pinmeta import META_NAME, PinCheck, check_pins, write_meta
from pyvs.dataplane.pins import bpffs_root, default_pin_dir
from pyvs.model import Rules, Timeouts

log = logging.getLogger(__name__)


def table_shape(size: int) -> tuple[int, int, int]:
    """(shards, entries per shard, half-open entries per shard) of a connection table of `size` entries: shards
    a power of two, each at most CONN_SHARD_TARGET entries where MAX_CONN_SHARDS allow."""
    shards = 1
    while shards < abi.MAX_CONN_SHARDS and size > shards * abi.CONN_SHARD_TARGET:
        shards *= 2
    per_shard = -(-size // shards)
    return shards, per_shard, max(per_shard // abi.HALF_OPEN_DIVISOR, 64 * libbpf.num_possible_cpus())


def _create_shards(size: int) -> dict[str, list[int]]:
    """New shards (map fds) of conns and half_open, and of their IPv6 twins, for a connection table of `size`
    entries (each family has a table of that size)."""
    shards, per_shard, half_per_shard = table_shape(size)
    value_size = ctypes.sizeof(abi.Conn)
    created: dict[str, list[int]] = {table: [] for table in abi.CONN_TABLES}
    try:
        for table, key in abi.CONN_TABLES.items():
            half = table.startswith("half_open")
            entries, flags = (half_per_shard, libbpf.BPF_F_NO_COMMON_LRU) if half else (per_shard, 0)
            for index in range(shards):
                name = f"pyvs_{table[:4]}{'6_' if table.endswith('6') else ''}{index}"  # pyvs_conn12, pyvs_half6_12
                created[table].append(libbpf.map_create(libbpf.BPF_MAP_TYPE_LRU_HASH, name,
                                                        ctypes.sizeof(key), value_size, entries, flags))
    except OSError:
        _close_shards(created)
        raise
    return created


def _close_shards(shards: dict[str, list[int]]) -> None:
    for fd in (fd for fds in shards.values() for fd in fds):
        os.close(fd)


def _install_tables(fds: dict[str, int], shards: dict[str, list[int]]) -> None:
    """Put the shards in their maps of maps, then write the config that tells the program they are there."""
    for table, shard_fds in shards.items():  # one batch each: every update of a map of maps waits for RCU
        libbpf.map_update_batch(fds[table], (ctypes.c_uint32 * len(shard_fds))(*range(len(shard_fds))),
                                (ctypes.c_int * len(shard_fds))(*shard_fds))
    cfg = abi.Config()
    abi.fill_config_defaults(cfg)
    cfg.conn_shards = len(shards["conns"])
    libbpf.map_update(fds["config"], ctypes.c_uint32(0), cfg)


def expected_shapes() -> dict[str, tuple[int, int, int]]:
    """(type, key size, value size) of every map of this version's object."""
    return libbpf.map_shapes(str(object_path("xdp")))


def pin_state(path: Path, check_netns: bool) -> PinCheck:
    """What is pinned at `path`: absent, stale, mismatched or ok (see pinmeta)."""
    return check_pins(path, MAP_NAMES, expected_shapes(), check_netns)


def _create(path: Path, conn_table_size: int) -> None:
    """Create the data plane at `path` all at once: everything is pinned in a directory beside it, which is
    then renamed to `path`; a crash leaves no half-made data plane, and of two creators one wins."""
    path.parent.mkdir(parents=True, exist_ok=True)
    building = path.with_name(f"{path.name}_new_{os.getpid()}")  # bpffs names have no dots
    remove_pins(building)
    building.mkdir()
    try:
        shards = _create_shards(conn_table_size)
        try:
            with libbpf.BpfObject(str(object_path("xdp")), str(building),
                                  inner_map_fds={table: fds[0] for table, fds in shards.items()}) as obj:
                fds = {name: obj.map_fd(name) for name in MAP_NAMES}
                _install_tables(fds, shards)
                install_calls(obj)
                write_meta(building)
                start_sweeper(obj)
        finally:
            _close_shards(shards)
        try:
            os.rename(building, path)  # replaces an empty directory, never one with pins
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    finally:
        remove_pins(building)


def open_dataplane(pin_dir: str | Path | None = None, resolver: Resolver = resolve,
                   conn_table_size: int | None = None, check: bool = True) -> Dataplane:
    """Open the data plane pinned at `pin_dir` (default: per network namespace), creating it if absent.

    Pins made by another version of pyvs are refused (`check=False` opens them anyway, for migrate);
    at the default directory, pins of a namespace that no longer exists are removed and a new data plane
    is created. `conn_table_size` sizes the connection table when the maps are created; asking an existing
    data plane for another size is an error (the table would have to be rebuilt).
    """
    path = Path(pin_dir) if pin_dir else default_pin_dir()
    if conn_table_size is not None and not 1024 <= conn_table_size <= 1 << 26:
        raise DataplaneError(f"connection table size {conn_table_size} is out of range (1024-{1 << 26})")
    try:
        state = pin_state(path, check_netns=not pin_dir)
        if state.state == "stale":
            log.warning("the pins at %s were made in a network namespace that no longer exists: removed", path)
            remove_pins(path)
        if state.state == "mismatch" and check:
            raise DataplaneError(state.message(path))
        if state.state in ("absent", "stale"):
            _create(path, conn_table_size or abi.CONN_TABLE_SIZE)
        # Unchecked (migrate) an older version's pins may lack maps of this one (IPv6's): they read as empty.
        names = MAP_NAMES if check else [name for name in MAP_NAMES if (path / name).exists()]
        fds = {name: libbpf.obj_get(str(path / name)) for name in names}
    except (OSError, BuildError) as exc:
        raise DataplaneError(f"cannot open the data plane at {path}: {exc}") from None
    dp = Dataplane(path, fds, resolver)
    try:
        if check:
            dp._check_shards()
        dp._default_config()
    except BaseException:
        dp.close()
        raise
    if conn_table_size is not None and table_shape(conn_table_size)[:2] != table_shape(dp.conn_table_size)[:2]:
        dp.close()
        raise DataplaneError(
            f"the connection table at {path} has {dp.conn_table_size} entries; to change its size remove the "
            "data plane first (pyvs director detach --remove-rules)"
        )
    return dp


READ_MAPS = ("services", "reals", "svc_reals", "svc_gens", "config")  # what read_rules needs (slot_usage is rebuilt)


def migrate(pin_dir: str | Path | None, saved: Rules | None = None, resolver: Resolver = resolve) -> Rules:
    """Recreate the data plane at `pin_dir` with this version's layout, keeping its rules: read them from the old
    maps where their layout still reads (timeouts, switches and table size kept too), or take `saved` (what a
    `pyvsadm -S -n` saved, parsed by the caller). pyvs's XDP program is attached again where it was. Returns the
    rules restored."""
    path = Path(pin_dir) if pin_dir else default_pin_dir()
    try:
        state = pin_state(path, check_netns=False)
    except (OSError, BuildError) as exc:
        raise DataplaneError(f"cannot open the data plane at {path}: {exc}") from None
    if state.state == "absent":
        raise DataplaneError(f"no data plane is pinned at {path}: nothing to migrate")
    timeouts: Timeouts | None = None
    switches: dict[str, bool] = {}
    size: int | None = None
    if saved is not None:
        rules = saved
    else:
        unreadable = [p for p in state.problems if any(f"map {name}:" in p for name in READ_MAPS)]
        unreadable += [f"map {n} missing" for n in READ_MAPS if not (path / n).exists()]
        if unreadable:
            raise DataplaneError(
                f"this version cannot read the rules at {path} ({'; '.join(unreadable)}): with the old version save "
                "them (`pyvsadm -S -n > FILE`), then run `pyvs director migrate --from FILE`")
        with open_dataplane(path, resolver, check=False) as old:
            rules, timeouts, switches = old.read_rules(), old.read_timeouts(), old.switches()
            size = old.conn_table_size or None
    attached = [(name, found[0]) for name in _interfaces()
                if (found := Dataplane.xdp_program(name)) is not None and found[2] == PROGRAM_NAME]
    from pyvs.dataplane.attachment import auto_attached, record_auto

    auto = auto_attached(path)
    remove_pins(path)
    with open_dataplane(path, resolver, size) as dp:
        dp.apply(rules)
        if timeouts is not None:
            dp.set_timeouts(timeouts)
        if switches:
            dp.set_expire_nodest_conn(switches["expire_nodest_conn"])
            dp.set_sloppy_tcp(switches["sloppy_tcp"])
        for ifname, mode in attached:
            dp.attach(ifname, mode, force=True)
    record_auto(path, auto)  # what was attached by itself stays "auto"
    return rules


def _interfaces() -> list[str]:
    return [name for _, name in socket.if_nameindex()]


def pinned_dataplane(pin_dir: str | Path | None = None, resolver: Resolver = resolve) -> Dataplane | None:
    """The data plane pinned at `pin_dir` (default: this namespace's), None when there is none or only a stale
    one; never creates anything (read-only commands)."""
    path = Path(pin_dir) if pin_dir else default_pin_dir()
    try:
        state = pin_state(path, check_netns=not pin_dir)
    except (OSError, BuildError) as exc:
        raise DataplaneError(f"cannot open the data plane at {path}: {exc}") from None
    if state.state in ("absent", "stale"):
        return None
    return open_dataplane(path, resolver)


@contextmanager
def scratch_dataplane(name: str, resolver: Resolver = resolve,
                      conn_table_size: int | None = None) -> Iterator[Dataplane]:
    """A data plane pinned under <bpffs>/pyvs/<name>-<pid> and removed on exit (tests, benchmarks)."""
    pin_dir = bpffs_root() / "pyvs" / f"{name}-{os.getpid()}"
    dp = open_dataplane(pin_dir, resolver, conn_table_size)
    try:
        yield dp
    finally:
        dp.close()
        remove_pins(pin_dir)


def remove_pins(pin_dir: str | Path) -> None:
    """Remove a data plane's pinned maps (forwarding stops once no program uses them)."""
    from pyvs.dataplane.attachment import forget_auto

    path = Path(pin_dir)
    for name in (*MAP_NAMES, META_NAME):
        (path / name).unlink(missing_ok=True)
    forget_auto(path)
    try:
        path.rmdir()
    except OSError:
        pass


def attach_pass_program(ifname: str, mode: str = "native") -> None:
    """Attach the pass-through XDP program (for a veth peer that must run XDP for XDP_TX to arrive)."""
    flags = libbpf.XDP_FLAGS_DRV_MODE if mode == "native" else libbpf.XDP_FLAGS_SKB_MODE
    with libbpf.BpfObject(str(object_path("pass"))) as obj:
        libbpf.xdp_attach(interface_index(ifname), obj.prog_fd("pyvs_pass"), flags)
