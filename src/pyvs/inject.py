"""Hand a frame to this host's stack as if it had arrived on an interface: a probe from inside the host itself.

A two-instruction XDP program (`return XDP_PASS`) is run once with BPF_PROG_TEST_RUN in live-frames mode
(BPF_F_TEST_XDP_LIVE_FRAMES, Linux 5.18): a frame the program passes goes up the stack of the interface named
in the context, as a frame received there does (netif_receive_skb). What the stack answers leaves by that
interface and is seen by a packet socket as outgoing. Nothing is attached; the program lives for one call.

Raw bpf(2) through ctypes, no libbpf: `pyvs realserver check` uses it on hosts that load no BPF otherwise.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

# bpf(2)'s number where it is not the generic one (280: arm64, riscv64, loongarch64).
_BPF_SYSCALL = {"x86_64": 321, "i686": 357, "ppc64le": 361, "s390x": 351, "mips64": 5315}
BPF_PROG_LOAD = 5
BPF_PROG_TEST_RUN = 10
BPF_PROG_TYPE_XDP = 6
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
XDP_PASS = 2
ATTR_SIZE = 128  # of union bpf_attr that we fill; the rest must be zero, so pass zeros
# BPF_MOV64_IMM(R0, XDP_PASS); BPF_EXIT_INSN()
_PASS_PROGRAM = struct.pack("<BBhi", 0xB7, 0, 0, XDP_PASS) + struct.pack("<BBhi", 0x95, 0, 0, 0)
_XDP_MD = struct.Struct("<IIIIII")  # data, data_end, data_meta, ingress_ifindex, rx_queue_index, egress_ifindex


class InjectError(OSError):
    """The frame could not be handed to the stack (no CAP_BPF/CAP_NET_ADMIN, a kernel before 5.18, ...)."""


def _syscall_number() -> int:
    return _BPF_SYSCALL.get(platform.machine(), 280)


def _bpf(cmd: int, attr: bytes) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    buf = ctypes.create_string_buffer(attr.ljust(ATTR_SIZE, b"\0"), ATTR_SIZE)
    result = int(libc.syscall(_syscall_number(), cmd, buf, ATTR_SIZE))
    if result < 0:
        err = ctypes.get_errno()
        raise InjectError(err, os.strerror(err))
    return result


def _load_pass_program() -> int:
    insns = ctypes.create_string_buffer(_PASS_PROGRAM, len(_PASS_PROGRAM))
    license_ = ctypes.create_string_buffer(b"GPL")
    # prog_type, insn_cnt, insns, license, log_level, log_size, log_buf, kern_version, prog_flags, prog_name
    attr = struct.pack("<IIQQIIQII16s", BPF_PROG_TYPE_XDP, len(_PASS_PROGRAM) // 8, ctypes.addressof(insns),
                       ctypes.addressof(license_), 0, 0, 0, 0, 0, b"pyvs_inject")
    try:
        return _bpf(BPF_PROG_LOAD, attr)
    except InjectError as exc:
        raise InjectError(exc.errno, f"cannot load the injection program: {exc.strerror}") from None


def inject_received(ifindex: int, frames: list[bytes]) -> None:
    """Give each Ethernet frame to the stack as received on interface `ifindex` (in the calling thread's
    network namespace), in order."""
    fd = _load_pass_program()
    try:
        for frame in frames:
            data = ctypes.create_string_buffer(frame, len(frame))
            ctx = ctypes.create_string_buffer(_XDP_MD.pack(0, len(frame), 0, ifindex, 0, 0), _XDP_MD.size)
            # prog_fd, retval, data_size_in, data_size_out, data_in, data_out, repeat, duration,
            # ctx_size_in, ctx_size_out, ctx_in, ctx_out, flags, cpu, batch_size
            attr = struct.pack("<IIIIQQIIIIQQIII", fd, 0, len(frame), 0, ctypes.addressof(data), 0, 1, 0,
                               _XDP_MD.size, 0, ctypes.addressof(ctx), 0, BPF_F_TEST_XDP_LIVE_FRAMES, 0, 0)
            try:
                _bpf(BPF_PROG_TEST_RUN, attr)
            except InjectError as exc:
                raise InjectError(exc.errno, f"cannot inject a frame on interface {ifindex}: {exc.strerror} "
                                             "(needs Linux 5.18 and CAP_BPF)") from None
    finally:
        os.close(fd)
