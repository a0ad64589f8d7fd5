"""The wheel carries the compiled BPF objects: in a fresh venv, with no clang on PATH, it opens a data plane.

Offline beyond the build backend: the wheel goes in with --no-index --no-deps, and the fresh venv sees the test venv's
dependencies (pyroute2, prometheus-client) through a .pth line, which does not run the test venv's editable finder.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from pyvs.dataplane import build
from tests.packaging.conftest import lab_prefix


def test_wheel_ships_objects_for_these_sources(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    for program, source in build.PROGRAMS.items():
        digest = build._digest(build.BPF_DIR / source, ())
        assert f"pyvs/dataplane/bpf/prebuilt/{digest}/{Path(source).stem}.o" in names, program
    assert "pyvs/dataplane/bpf/pyvs_xdp.c" in names  # the developer path stays possible


def test_shipped_object_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = build.BPF_DIR / build.PROGRAMS["pass"]
    shipped = tmp_path / "prebuilt" / build._digest(source, ()) / "pyvs_pass.o"
    shipped.parent.mkdir(parents=True)
    shipped.write_bytes(b"\x7fELF")
    monkeypatch.setattr(build, "SHIPPED_DIR", tmp_path / "prebuilt")
    monkeypatch.setattr(build.shutil, "which", lambda _name: None)  # no clang: must not be needed
    assert build.object_path("pass") == shipped
    assert build.shipped_object(source, ("X=1",)) is None  # other defines: compiled (developer path)


def test_stale_shipped_object_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "prebuilt" / "0000000000000000").mkdir(parents=True)
    (tmp_path / "prebuilt" / "0000000000000000" / "pyvs_pass.o").write_bytes(b"old")
    monkeypatch.setattr(build, "SHIPPED_DIR", tmp_path / "prebuilt")
    assert build.shipped_object(build.BPF_DIR / build.PROGRAMS["pass"]) is None


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin/pip"), "install", "-q", "--no-index", "--no-deps", str(wheel)], check=True)
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    (venv / "lib" / pyver / "site-packages" / "_pyvs_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return venv


OPEN_SCRATCH = """
import os, shutil
from pyvs.dataplane import build, scratch_dataplane
assert shutil.which("clang") is None, "clang on PATH"
assert build.object_path("xdp").is_relative_to(build.SHIPPED_DIR), build.object_path("xdp")
print("object", build.object_path("xdp"))
with scratch_dataplane("pyvst-wheel") as dp:
    print("opened", type(dp).__name__)
assert not any(os.scandir(os.environ["PYVS_CACHE_DIR"])), "compiled at run time"
"""


def test_installed_wheel_opens_a_data_plane_without_clang(installed: Path, path_without_clang: str,
                                                          tmp_path: Path) -> None:
    env = {"PATH": f"{installed / 'bin'}:{path_without_clang}", "PYVS_CACHE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    result = subprocess.run([str(installed / "bin/python"), "-c", OPEN_SCRATCH], env=env, cwd=tmp_path,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "site-packages/pyvs/dataplane/bpf/prebuilt/" in result.stdout
    assert "opened Dataplane" in result.stdout


def test_installed_wheel_runs_the_lab_demo_without_clang(installed: Path, path_without_clang: str,
                                                         tmp_path: Path) -> None:
    env = {"PATH": f"{installed / 'bin'}:{path_without_clang}", "PYVS_CACHE_DIR": str(tmp_path), "HOME": str(tmp_path)}
    pyvs = str(installed / "bin/pyvs")
    prefix = lab_prefix("w")
    try:
        result = subprocess.run([pyvs, "lab", "demo", "--prefix", prefix], env=env, cwd=tmp_path,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
    finally:
        subprocess.run([pyvs, "lab", "down", "--prefix", prefix], env=env, capture_output=True, timeout=120)
    assert not any(p.suffix == ".o" for p in tmp_path.rglob("*.o")), "compiled at run time"
