"""Builds the BPF objects with clang, once per source version (cached by content hash)."""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sysconfig
from pathlib import Path

from pyvs.dataplane.abi import BPF_DIR

CACHE_DIR = Path(os.environ.get("PYVS_CACHE_DIR", "/var/cache/pyvs"))
PROGRAMS = {"xdp": "pyvs_xdp.c", "pass": "pyvs_pass.c"}


class BuildError(RuntimeError):
    """clang is missing or failed; the message says which."""


def _include_dirs() -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [f"-I/usr/include/{multiarch}", f"-I{BPF_DIR}"]


def _digest(source: Path, defines: tuple[str, ...]) -> str:
    digest = hashlib.sha256(" ".join((str(source), *defines)).encode())
    for path in sorted({*BPF_DIR.glob("*.[ch]"), *source.parent.glob("*.[ch]")}):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def build_object(source: Path, defines: tuple[str, ...] = ()) -> Path:
    """Compile a BPF C file (with pyvs's headers on the include path) unless cached; `defines` are -D flags."""
    target = CACHE_DIR / _digest(source, defines) / source.with_suffix(".o").name
    if target.exists():
        return target
    clang = shutil.which("clang")
    if not clang:
        raise BuildError("clang is not installed; it builds the XDP program (apt-get install clang libbpf-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    cmd = [clang, "-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", *_include_dirs(),
           *(f"-D{d}" for d in defines), "-c", str(source), "-o", str(partial)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"building {source.name} failed:\n{result.stderr.strip()}")
    partial.replace(target)
    return target


def object_path(program: str = "xdp", defines: tuple[str, ...] = ()) -> Path:
    """The compiled object of `program` ("xdp" or "pass"), built now if not cached."""
    return build_object(BPF_DIR / PROGRAMS[program], defines)
