"""The BPF objects: the ones shipped in the package, else built with clang once per source version.

A wheel or .deb carries objects compiled at package build time (setup.py calls `compile_shipped`) under
bpf/prebuilt/<digest>/, where <digest> hashes the C sources and headers, so a shipped object is used only when it was
built from exactly the sources beside it. Without one (a source checkout, an edited source, extra -D defines, a
big-endian host), the object is compiled at run time with clang and cached under $PYVS_CACHE_DIR (/var/cache/pyvs):
the developer path.

The objects use no kernel struct (only the UAPI XDP context and pyvs's own map values), so they need no CO-RE
relocation: one object serves every kernel that has the helpers it calls, 5.19 on (bpf_map_lookup_percpu_elem;
bpf_loop is 5.17, bpf_timer 5.15). They are compiled little-endian (bpfel): x86_64, arm64, ppc64le, riscv64.

This module imports nothing of pyvs, so the package build can load it by path.
"""

from __future__ import annotations

import hashlib
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

BPF_DIR = Path(__file__).parent / "bpf"
SHIPPED_DIR = BPF_DIR / "prebuilt"
CACHE_DIR = Path(os.environ.get("PYVS_CACHE_DIR", "/var/cache/pyvs"))
PROGRAMS = {"xdp": "pyvs_xdp.c", "pass": "pyvs_pass.c", "decap": "pyvs_decap.c"}


class BuildError(RuntimeError):
    """clang is missing or failed; the message says which."""


def _include_dirs(source: Path) -> list[str]:
    multiarch = sysconfig.get_config_var("MULTIARCH") or f"{platform.machine()}-linux-gnu"
    return [f"-I/usr/include/{multiarch}", f"-I{BPF_DIR}", f"-I{source.parent}"]


def _digest(source: Path, defines: tuple[str, ...]) -> str:
    """Hash of the source's name, the defines and every .c/.h beside it and in bpf/ (not of where they lie)."""
    digest = hashlib.sha256(" ".join((source.name, *defines)).encode())
    for path in sorted({*BPF_DIR.glob("*.[ch]"), *source.parent.glob("*.[ch]")}, key=lambda p: (p.name, str(p))):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _compile(source: Path, target: Path, defines: tuple[str, ...] = (), clang: str | None = None) -> Path:
    clang = clang or shutil.which("clang")
    if not clang:
        raise BuildError("clang is not installed; it builds the XDP program (apt-get install clang libbpf-dev)")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.tmp")
    cmd = [clang, "-O2", "-g", "-target", "bpfel", "-mcpu=v3", "-Wall", *_include_dirs(source),
           *(f"-D{d}" for d in defines), "-c", str(source), "-o", str(partial)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise BuildError(f"building {source.name} failed:\n{result.stderr.strip()}")
    partial.replace(target)
    return target


def shipped_object(source: Path, defines: tuple[str, ...] = ()) -> Path | None:
    """The object shipped in the package for exactly this source version, if any."""
    if defines or sys.byteorder != "little" or source.parent != BPF_DIR:
        return None
    candidate = SHIPPED_DIR / _digest(source, defines) / source.with_suffix(".o").name
    return candidate if candidate.is_file() else None


def build_object(source: Path, defines: tuple[str, ...] = ()) -> Path:
    """The object of a BPF C file: shipped, cached, or compiled now (pyvs's headers on the include path)."""
    shipped = shipped_object(source, defines)
    if shipped is not None:
        return shipped
    target = CACHE_DIR / _digest(source, defines) / source.with_suffix(".o").name
    if target.exists():
        return target
    return _compile(source, target, defines)


def object_path(program: str = "xdp", defines: tuple[str, ...] = ()) -> Path:
    """The compiled object of `program` ("xdp" or "pass"): shipped, cached, or built now."""
    return build_object(BPF_DIR / PROGRAMS[program], defines)


def compile_shipped(package_bpf_dir: Path, clang: str | None = None) -> list[Path]:
    """Package build time: compile every program into <package_bpf_dir>/prebuilt/<digest>/ (needs clang). The
    objects of other digests (a build directory kept from before the sources changed) are removed: never shipped."""
    built = []
    for name in PROGRAMS.values():
        source = BPF_DIR / name
        built.append(_compile(source, package_bpf_dir / "prebuilt" / _digest(source, ()) / f"{Path(name).stem}.o",
                              clang=clang))
    for stale in {p for p in (package_bpf_dir / "prebuilt").iterdir() if p.is_dir()} - {p.parent for p in built}:
        shutil.rmtree(stale)
    return built
