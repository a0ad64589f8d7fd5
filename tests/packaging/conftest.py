"""Fixtures for packaging tests: a wheel and a .deb built from this tree, a PATH without clang, lab prefixes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of this tree, built as a release would be (`python -m build --wheel`, objects compiled in)."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), str(ROOT)], check=True,
                   capture_output=True, text=True, env={**os.environ, "PYVS_SHIP_BPF": "1"})
    (found,) = out.glob("pyvs-*.whl")
    return found


@pytest.fixture(scope="session")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The .deb of this tree, built by scripts/build-deb.sh."""
    out = tmp_path_factory.mktemp("deb")
    result = subprocess.run(["bash", str(ROOT / "scripts/build-deb.sh"), str(out)], capture_output=True, text=True,
                            env={**os.environ, "PYTHON": sys.executable})
    assert result.returncode == 0, result.stderr
    return Path(result.stdout.strip().splitlines()[-1])


def lab_prefix(suffix: str) -> str:
    """A lab prefix of its own for a test that runs `pyvs lab`: 'pyvs' + at most 6 characters, from the run's
    $PYVS_TEST_LAB_PREFIX (parallel runs each set their own)."""
    base = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
    return (base if len(base) < 10 else base[:-1]) + suffix


@pytest.fixture(scope="session")
def path_without_clang(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A directory holding every command of /usr/{s,}bin and /{s,}bin except the compilers, as PATH."""
    bindir = tmp_path_factory.mktemp("bin-noclang")
    for d in ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if not os.path.isdir(d):
            continue
        for entry in os.scandir(d):
            if entry.name.startswith(("clang", "llc", "gcc", "cc", "c++", "g++")) or entry.name in ("pyvs", "pyvsadm"):
                continue
            if not (bindir / entry.name).exists():
                (bindir / entry.name).symlink_to(entry.path)
    return str(bindir)
