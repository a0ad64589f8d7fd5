"""A thin ctypes binding to libbpf.so.1: objects, pins, map operations, XDP attach and test runs."""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
from dataclasses import dataclass
from typing import Any

XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0
XDP_FLAGS_SKB_MODE = 1 << 1
XDP_FLAGS_DRV_MODE = 1 << 2

XDP_ABORTED, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT = range(5)
XDP_VERDICTS = {XDP_ABORTED: "XDP_ABORTED", XDP_DROP: "XDP_DROP", XDP_PASS: "XDP_PASS", XDP_TX: "XDP_TX",
                XDP_REDIRECT: "XDP_REDIRECT"}

BPF_ANY = 0


class BpfError(OSError):
    """A libbpf call failed; errno and the call are in the message."""


def _load() -> ctypes.CDLL:
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise BpfError(errno.ENOENT, f"libbpf is not installed ({exc}); install the libbpf1 package") from None


_lib = _load()
_vp, _cp, _u32, _u64, _int = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_uint64, ctypes.c_int


def _sig(name: str, restype: Any, *argtypes: Any) -> Any:
    fn = getattr(_lib, name)
    fn.restype = restype
    fn.argtypes = list(argtypes)
    return fn


class TestRunOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("data_in", _vp), ("data_out", _vp), ("data_size_in", _u32),
                ("data_size_out", _u32), ("ctx_in", _vp), ("ctx_out", _vp), ("ctx_size_in", _u32),
                ("ctx_size_out", _u32), ("retval", _u32), ("repeat", _int), ("duration", _u32),
                ("flags", _u32), ("cpu", _u32), ("batch_size", _u32)]


class XdpMd(ctypes.Structure):
    _fields_ = [("data", _u32), ("data_end", _u32), ("data_meta", _u32), ("ingress_ifindex", _u32),
                ("rx_queue_index", _u32), ("egress_ifindex", _u32)]


class BatchOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("elem_flags", _u64), ("flags", _u64)]


class MapInfo(ctypes.Structure):
    _fields_ = [("type", _u32), ("id", _u32), ("key_size", _u32), ("value_size", _u32),
                ("max_entries", _u32), ("map_flags", _u32), ("name", ctypes.c_char * 16),
                ("rest", ctypes.c_uint8 * 128)]


_open_file = _sig("bpf_object__open_file", _vp, _cp, _vp)
_obj_load = _sig("bpf_object__load", _int, _vp)
_obj_close = _sig("bpf_object__close", None, _vp)
_find_map = _sig("bpf_object__find_map_by_name", _vp, _vp, _cp)
_next_map = _sig("bpf_object__next_map", _vp, _vp, _vp)
_map_name = _sig("bpf_map__name", _cp, _vp)
_map_fd = _sig("bpf_map__fd", _int, _vp)
_map_set_pin_path = _sig("bpf_map__set_pin_path", _int, _vp, _cp)
_map_set_max_entries = _sig("bpf_map__set_max_entries", _int, _vp, _u32)
_map_set_inner_map_fd = _sig("bpf_map__set_inner_map_fd", _int, _vp, _int)
_map_create = _sig("bpf_map_create", _int, _u32, _cp, _u32, _u32, _u32, _vp)
_map_get_fd_by_id = _sig("bpf_map_get_fd_by_id", _int, _u32)
_find_prog = _sig("bpf_object__find_program_by_name", _vp, _vp, _cp)
_prog_fd = _sig("bpf_program__fd", _int, _vp)
_obj_get = _sig("bpf_obj_get", _int, _cp)
_obj_pin = _sig("bpf_obj_pin", _int, _int, _cp)
_prog_get_fd_by_id = _sig("bpf_prog_get_fd_by_id", _int, _u32)
_map_type = _sig("bpf_map__type", _int, _vp)
_map_key_size = _sig("bpf_map__key_size", _u32, _vp)
_map_value_size = _sig("bpf_map__value_size", _u32, _vp)
_update = _sig("bpf_map_update_elem", _int, _int, _vp, _vp, _u64)
_lookup = _sig("bpf_map_lookup_elem", _int, _int, _vp, _vp)
_delete = _sig("bpf_map_delete_elem", _int, _int, _vp)
_next_key = _sig("bpf_map_get_next_key", _int, _int, _vp, _vp)
_lookup_batch = _sig("bpf_map_lookup_batch", _int, _int, _vp, _vp, _vp, _vp, ctypes.POINTER(_u32), _vp)
_update_batch = _sig("bpf_map_update_batch", _int, _int, _vp, _vp, ctypes.POINTER(_u32), _vp)
_xdp_attach = _sig("bpf_xdp_attach", _int, _int, _int, _u32, _vp)
_xdp_detach = _sig("bpf_xdp_detach", _int, _int, _u32, _vp)
_xdp_query_id = _sig("bpf_xdp_query_id", _int, _int, _int, ctypes.POINTER(_u32))
_prog_attach = _sig("bpf_prog_attach", _int, _int, _int, _int, _u32)
_prog_detach2 = _sig("bpf_prog_detach2", _int, _int, _int, _int)
_prog_query = _sig("bpf_prog_query", _int, _int, _int, _u32, ctypes.POINTER(_u32), ctypes.POINTER(_u32),
                   ctypes.POINTER(_u32))
_test_run = _sig("bpf_prog_test_run_opts", _int, _int, ctypes.POINTER(TestRunOpts))
_num_cpus = _sig("libbpf_num_possible_cpus", _int)
_obj_info = _sig("bpf_obj_get_info_by_fd", _int, _int, _vp, ctypes.POINTER(_u32))


def _check(rc: int, what: str) -> int:
    if rc < 0:
        code = -rc if rc != -1 else ctypes.get_errno()
        raise BpfError(code, f"{what}: {os.strerror(code)}")
    return rc


def num_possible_cpus() -> int:
    return _check(_num_cpus(), "libbpf_num_possible_cpus")


class BpfObject:
    """An ELF object opened by libbpf; maps are pinned (and reused) under `pin_dir` when given."""

    def __init__(self, path: str, pin_dir: str | None = None, max_entries: dict[str, int] | None = None,
                 inner_map_fds: dict[str, int] | None = None):
        """`max_entries` resizes maps; `inner_map_fds` gives maps of maps an inner map of the size they hold."""
        ctypes.set_errno(0)
        self._obj = _open_file(path.encode(), None)
        if not self._obj:
            raise BpfError(ctypes.get_errno() or errno.EINVAL, f"cannot open BPF object {path}")
        try:
            for name, size in (max_entries or {}).items():
                _check(_map_set_max_entries(self._map(name), size), f"set max_entries of {name}")
            for name, fd in (inner_map_fds or {}).items():
                _check(_map_set_inner_map_fd(self._map(name), fd), f"set the inner map of {name}")
            if pin_dir:
                for name in self.map_names():
                    _check(_map_set_pin_path(self._map(name), f"{pin_dir}/{name}".encode()), f"pin {name}")
            _check(_obj_load(self._obj), f"load {path}")
        except BaseException:
            self.close()
            raise

    def _map(self, name: str) -> int:
        ptr = _find_map(self._obj, name.encode())
        if not ptr:
            raise BpfError(errno.ENOENT, f"no map {name} in the BPF object")
        return int(ptr)

    def map_names(self) -> list[str]:
        names = []
        ptr = _next_map(self._obj, None)
        while ptr:
            name = _map_name(ptr).decode()
            if "." not in name:  # skip .rodata and other internal maps
                names.append(name)
            ptr = _next_map(self._obj, ptr)
        return names

    def map_fd(self, name: str) -> int:
        return _check(_map_fd(self._map(name)), f"fd of map {name}")

    def prog_fd(self, name: str) -> int:
        ptr = _find_prog(self._obj, name.encode())
        if not ptr:
            raise BpfError(errno.ENOENT, f"no program {name} in the BPF object")
        return _check(_prog_fd(ptr), f"fd of program {name}")

    def close(self) -> None:
        if self._obj:
            _obj_close(self._obj)
            self._obj = None

    def __enter__(self) -> BpfObject:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def obj_get(path: str) -> int:
    return _check(_obj_get(path.encode()), f"open pinned {path}")


def obj_pin(fd: int, path: str) -> None:
    _check(_obj_pin(fd, path.encode()), f"pin {path}")


def map_shapes(path: str) -> dict[str, tuple[int, int, int]]:
    """(map type, key size, value size) of every map an object declares, read without loading it."""
    ctypes.set_errno(0)
    obj = _open_file(path.encode(), None)
    if not obj:
        raise BpfError(ctypes.get_errno() or errno.EINVAL, f"cannot open BPF object {path}")
    try:
        shapes = {}
        ptr = _next_map(obj, None)
        while ptr:
            name = _map_name(ptr).decode()
            if "." not in name:
                shapes[name] = (int(_map_type(ptr)), int(_map_key_size(ptr)), int(_map_value_size(ptr)))
            ptr = _next_map(obj, ptr)
        return shapes
    finally:
        _obj_close(obj)


class ProgInfo(ctypes.Structure):
    _fields_ = [("type", _u32), ("id", _u32), ("tag", ctypes.c_uint8 * 8), ("jited_prog_len", _u32),
                ("xlated_prog_len", _u32), ("jited_prog_insns", _u64), ("xlated_prog_insns", _u64),
                ("load_time", _u64), ("created_by_uid", _u32), ("nr_map_ids", _u32), ("map_ids", _u64),
                ("name", ctypes.c_char * 16), ("rest", ctypes.c_uint8 * 256)]


def prog_name(prog_id: int) -> str:
    """The name of a loaded BPF program by its id ("" when it has none or is gone)."""
    fd = _prog_get_fd_by_id(prog_id)
    if fd < 0:
        return ""
    try:
        info = ProgInfo()
        size = _u32(ctypes.sizeof(info))
        if _obj_info(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            return ""
        return info.name.decode(errors="replace")
    finally:
        os.close(fd)

def prog_id(prog_fd: int) -> int:
    """The id of a loaded program by its fd."""
    info = ProgInfo()
    size = _u32(ctypes.sizeof(info))
    _check(_obj_info(prog_fd, ctypes.byref(info), ctypes.byref(size)), "program info")
    return int(info.id)


def prog_map_ids(prog_id: int) -> list[int]:
    """The ids of the maps a loaded BPF program uses ([] when it is gone)."""
    fd = _prog_get_fd_by_id(prog_id)
    if fd < 0:
        return []
    try:
        info = ProgInfo()
        size = _u32(ctypes.sizeof(info))
        if _obj_info(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            return []
        ids = (_u32 * info.nr_map_ids)()
        info = ProgInfo(nr_map_ids=len(ids), map_ids=ctypes.addressof(ids))
        size = _u32(ctypes.sizeof(info))
        if _obj_info(fd, ctypes.byref(info), ctypes.byref(size)) != 0:
            return []
        return list(ids[: info.nr_map_ids])
    finally:
        os.close(fd)


BPF_MAP_TYPE_LRU_HASH = 9
BPF_F_NO_COMMON_LRU = 1 << 1


class MapCreateOpts(ctypes.Structure):
    _fields_ = [("sz", ctypes.c_size_t), ("btf_fd", _u32), ("btf_key_type_id", _u32), ("btf_value_type_id", _u32),
                ("btf_vmlinux_value_type_id", _u32), ("inner_map_fd", _u32), ("map_flags", _u32),
                ("map_extra", _u64), ("numa_node", _u32), ("map_ifindex", _u32)]


def map_create(map_type: int, name: str, key_size: int, value_size: int, max_entries: int, flags: int = 0) -> int:
    """A new map's fd (the map lives while an fd or a map of maps holds it)."""
    opts = MapCreateOpts(sz=ctypes.sizeof(MapCreateOpts), map_flags=flags)
    return _check(_map_create(map_type, name.encode(), key_size, value_size, max_entries, ctypes.byref(opts)),
                  f"create map {name}")


def map_fd_by_id(map_id: int) -> int:
    return _check(_map_get_fd_by_id(map_id), f"open map id {map_id}")


def map_info(fd: int) -> MapInfo:
    info = MapInfo()
    size = _u32(ctypes.sizeof(info))
    _check(_obj_info(fd, ctypes.byref(info), ctypes.byref(size)), "map info")
    return info


def map_update(fd: int, key: ctypes._CData, value: ctypes._CData, flags: int = BPF_ANY) -> None:
    _check(_update(fd, ctypes.byref(key), ctypes.byref(value), flags), "map update")


def map_lookup(fd: int, key: ctypes._CData, value: ctypes._CData) -> bool:
    """Fill `value`; False when the key is absent."""
    rc = _lookup(fd, ctypes.byref(key), ctypes.byref(value))
    if rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
        return False
    _check(rc, "map lookup")
    return True


def map_delete(fd: int, key: ctypes._CData) -> bool:
    rc = _delete(fd, ctypes.byref(key))
    if rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT):
        return False
    _check(rc, "map delete")
    return True


def map_keys(fd: int, key_type: type[ctypes.Structure] | Any) -> list[Any]:
    keys: list[Any] = []
    key = key_type()
    next_key = key_type()
    prev = None
    while True:
        rc = _next_key(fd, prev, ctypes.byref(next_key))
        if rc < 0:
            if -rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT:
                return keys
            _check(rc, "map next key")
        keys.append(key_type.from_buffer_copy(next_key))
        ctypes.memmove(ctypes.byref(key), ctypes.byref(next_key), ctypes.sizeof(key))
        prev = ctypes.byref(key)


def map_lookup_batch(fd: int, key_type: Any, value_type: Any, max_entries: int,
                     after: Any = None) -> tuple[Any, Any, int]:
    """Every key and value of a map (those after the key `after`, when given), in two arrays filled from the
    start; returns (keys, values, count)."""
    keys = (key_type * max_entries)()
    values = (value_type * max_entries)()
    key_size, value_size = ctypes.sizeof(key_type), ctypes.sizeof(value_type)
    in_batch = ctypes.create_string_buffer(max(key_size, 8))
    out_batch = ctypes.create_string_buffer(max(key_size, 8))
    opts = BatchOpts(sz=ctypes.sizeof(BatchOpts))
    total = 0
    first = after is None
    if after is not None:
        ctypes.memmove(in_batch, ctypes.byref(after), key_size)  # the batch goes on after this key
    while total < max_entries:
        count = _u32(max_entries - total)
        rc = _lookup_batch(fd, None if first else in_batch, out_batch,
                           ctypes.byref(keys, total * key_size), ctypes.byref(values, total * value_size),
                           ctypes.byref(count), ctypes.byref(opts))
        done = rc < 0 and (-rc == errno.ENOENT or ctypes.get_errno() == errno.ENOENT)
        if rc < 0 and not done:
            _check(rc, "map lookup batch")
        total += count.value
        if done:
            break
        ctypes.memmove(in_batch, out_batch, len(out_batch))
        first = False
    return keys, values, total


def map_update_batch(fd: int, keys: ctypes.Array[Any], values: ctypes.Array[Any]) -> None:
    count = _u32(len(keys))
    if count.value == 0:
        return
    opts = BatchOpts(sz=ctypes.sizeof(BatchOpts))
    _check(_update_batch(fd, keys, values, ctypes.byref(count), ctypes.byref(opts)), "map update batch")


def xdp_attach(ifindex: int, prog_fd: int, flags: int) -> None:
    _check(_xdp_attach(ifindex, prog_fd, flags, None), f"attach XDP to ifindex {ifindex}")


def xdp_detach(ifindex: int, flags: int) -> None:
    _check(_xdp_detach(ifindex, flags, None), f"detach XDP from ifindex {ifindex}")


def xdp_query_id(ifindex: int, flags: int) -> int:
    prog_id = _u32(0)
    _check(_xdp_query_id(ifindex, flags, ctypes.byref(prog_id)), f"query XDP of ifindex {ifindex}")
    return prog_id.value


BPF_TCX_EGRESS = 47  # enum bpf_attach_type (Linux 6.6); older UAPI headers do not name it


def tcx_attach(ifindex: int, prog_fd: int) -> None:
    """Attach a tc program at `ifindex`'s tcx egress hook (BPF_PROG_ATTACH: it stays after this process)."""
    _check(_prog_attach(prog_fd, ifindex, BPF_TCX_EGRESS, 0), f"attach tcx egress to ifindex {ifindex}")


def tcx_prog_ids(ifindex: int) -> list[int]:
    """The programs at `ifindex`'s tcx egress hook."""
    ids = (_u32 * 64)()
    count, flags = _u32(64), _u32(0)
    _check(_prog_query(ifindex, BPF_TCX_EGRESS, 0, ctypes.byref(flags), ids, ctypes.byref(count)),
           f"query tcx egress of ifindex {ifindex}")
    return list(ids[: count.value])


def tcx_detach(ifindex: int, prog_id: int) -> None:
    fd = _check(_prog_get_fd_by_id(prog_id), f"fd of program id {prog_id}")
    try:
        _check(_prog_detach2(fd, ifindex, BPF_TCX_EGRESS), f"detach tcx egress from ifindex {ifindex}")
    finally:
        os.close(fd)


@dataclass
class TestRunResult:
    verdict: int
    data: bytes
    duration_ns: int

    @property
    def verdict_name(self) -> str:
        return XDP_VERDICTS.get(self.verdict, str(self.verdict))


def prog_test_run(prog_fd: int, data: bytes, repeat: int = 1, ingress_ifindex: int = 0) -> TestRunResult:
    """Run an XDP program on one frame with BPF_PROG_TEST_RUN."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 512)
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts))
    opts.data_in = ctypes.cast(data_in, _vp)
    opts.data_size_in = len(data)
    opts.data_out = ctypes.cast(data_out, _vp)
    opts.data_size_out = len(data_out)
    opts.repeat = repeat
    ctx = XdpMd(data=0, data_end=len(data), ingress_ifindex=ingress_ifindex)
    if ingress_ifindex:
        opts.ctx_in = ctypes.cast(ctypes.byref(ctx), _vp)
        opts.ctx_size_in = ctypes.sizeof(ctx)
    _check(_test_run(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN")
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)


SKB_CTX_SIZE = 192  # sizeof(struct __sk_buff)
SKB_MARK_OFFSET = 8  # __sk_buff.mark


def prog_test_run_skb(prog_fd: int, data: bytes, mark: int = 0) -> TestRunResult:
    """Run a tc program on one frame with BPF_PROG_TEST_RUN, the skb's mark set (on the loopback device)."""
    data_in = ctypes.create_string_buffer(data, len(data))
    data_out = ctypes.create_string_buffer(len(data) + 512)
    ctx = ctypes.create_string_buffer(SKB_CTX_SIZE)
    ctypes.c_uint32.from_buffer(ctx, SKB_MARK_OFFSET).value = mark
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.cast(data_in, _vp), data_size_in=len(data),
                       data_out=ctypes.cast(data_out, _vp), data_size_out=len(data_out),
                       ctx_in=ctypes.cast(ctx, _vp), ctx_size_in=SKB_CTX_SIZE, repeat=1)
    _check(_test_run(prog_fd, ctypes.byref(opts)), "BPF_PROG_TEST_RUN (tc)")
    return TestRunResult(opts.retval, data_out.raw[: opts.data_size_out], opts.duration)


BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1


def prog_run_live_frames(prog_fd: int, frame: bytes, count: int, ingress_ifindex: int, batch_size: int = 64) -> None:
    """Run an XDP program `count` times on copies of `frame` as live frames: XDP_TX sends them out of
    `ingress_ifindex` (an interface of the calling thread's netns), as a packet generator."""
    data_in = ctypes.create_string_buffer(frame, len(frame))
    ctx = XdpMd(data=0, data_end=len(frame), ingress_ifindex=ingress_ifindex)
    opts = TestRunOpts(sz=ctypes.sizeof(TestRunOpts), data_in=ctypes.cast(data_in, _vp), data_size_in=len(frame),
                       ctx_in=ctypes.cast(ctypes.byref(ctx), _vp), ctx_size_in=ctypes.sizeof(ctx), repeat=count,
                       flags=BPF_F_TEST_XDP_LIVE_FRAMES, batch_size=batch_size)
    _check(_test_run(prog_fd, ctypes.byref(opts)), "BPF_PROG_RUN (live frames)")


RingBufferCallback = ctypes.CFUNCTYPE(_int, _vp, _vp, ctypes.c_size_t)
_rb_new = _sig("ring_buffer__new", _vp, _int, RingBufferCallback, _vp, _vp)
_rb_poll = _sig("ring_buffer__poll", _int, _vp, _int)
_rb_consume = _sig("ring_buffer__consume", _int, _vp)
_rb_free = _sig("ring_buffer__free", None, _vp)
_rb_epoll_fd = _sig("ring_buffer__epoll_fd", _int, _vp)


class RingBuffer:
    """A consumer of a BPF ring buffer map (libbpf's ring_buffer API): `on_sample(bytes)` gets every record."""

    def __init__(self, map_fd: int, on_sample: Any) -> None:
        def callback(_ctx: int | None, data: int | None, size: int) -> int:
            on_sample(ctypes.string_at(data, size) if data else b"")
            return 0

        self._callback = RingBufferCallback(callback)  # kept alive while libbpf holds it
        ctypes.set_errno(0)
        self._rb = _rb_new(map_fd, self._callback, None, None)
        if not self._rb:
            raise BpfError(ctypes.get_errno() or errno.EINVAL, "ring_buffer__new: cannot read the ring buffer")

    def poll(self, timeout_ms: int) -> int:
        """Wait up to `timeout_ms` for records and hand them to the callback; returns how many."""
        rc = _rb_poll(self._rb, timeout_ms)
        if rc < 0 and -rc == errno.EINTR:
            return 0
        return _check(rc, "ring_buffer__poll")

    def consume(self) -> int:
        return _check(_rb_consume(self._rb), "ring_buffer__consume")

    def epoll_fd(self) -> int:
        return _check(_rb_epoll_fd(self._rb), "ring_buffer__epoll_fd")

    def close(self) -> None:
        if self._rb:
            _rb_free(self._rb)
            self._rb = None


BPF_STATS_RUN_TIME = 0


def enable_run_time_stats() -> int:
    """Turn on the kernel's per-program run time and count (as kernel.bpf_stats_enabled=1) for as long as the
    returned fd is open; close it to turn them off again."""
    return _check(_sig("bpf_enable_stats", _int, _int)(BPF_STATS_RUN_TIME), "bpf_enable_stats")
