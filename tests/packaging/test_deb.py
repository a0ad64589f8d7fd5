"""scripts/build-deb.sh builds a .deb whose contents are the commands, units, config, man pages, completions and
the package with its compiled BPF objects and pyroute2 (private modules in /usr/lib/pyvs); extracted, its pyvsadm
runs and its data plane opens without clang. test_deb_install.py installs it with apt in a clean Debian 12."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]



@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    assert shutil.which("dpkg-deb") and shutil.which("clang"), "building the .deb needs dpkg-deb and clang"


def test_contents(deb: Path) -> None:
    listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
    entries = {line.split()[-1].removeprefix("."): line.split()[0] for line in listing.splitlines()}
    for path in ("/usr/sbin/pyvs", "/usr/sbin/pyvsadm"):
        assert entries[path] == "-rwxr-xr-x", path
    for path in ("/lib/systemd/system/pyvs-director.service", "/lib/systemd/system/pyvs-rules.service",
                 "/etc/pyvs/director.toml", "/usr/share/man/man8/pyvsadm.8.gz", "/usr/share/man/man8/pyvs.8.gz",
                 "/usr/share/man/man5/pyvs-director.toml.5.gz", "/usr/share/bash-completion/completions/pyvs",
                 "/usr/share/bash-completion/completions/pyvsadm",
                 "/usr/lib/pyvs/pyvs/cli/__init__.py", "/usr/lib/pyvs/pyroute2/__init__.py",
                 "/usr/share/doc/pyvs/copyright"):
        assert path in entries, path
    objects = [p for p in entries if re.fullmatch(r"/usr/lib/pyvs/pyvs/dataplane/bpf/prebuilt/"
                                                  r"[0-9a-f]{16}/pyvs_(xdp|pass)\.o", p)]
    assert len(objects) == 2
    assert all("root/root" in line for line in listing.splitlines())
    assert not any("__pycache__" in p or "dist-packages" in p for p in entries)


def test_control(deb: Path) -> None:
    def field(name: str) -> str:
        return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True,
                              check=True).stdout.strip()
    assert field("Package") == "pyvs" and field("Architecture") == "all"
    depends = field("Depends")
    for dep in ("python3 ", "python3-prometheus-client", "libbpf1"):
        assert dep in depends
    # Debian 12's python3-pyroute2 (0.7.2) cannot serve pyvs: the package carries its own
    assert "clang" not in depends and "pyroute2" not in depends
    assert {"ethtool", "iptables"} <= {d.strip() for d in field("Recommends").split(",")}  # `pyvs lab`
    conffiles = subprocess.run(["dpkg-deb", "--ctrl-tarfile", str(deb)], capture_output=True, check=True).stdout
    assert b"/etc/pyvs/director.toml" in conffiles


@pytest.fixture(scope="module")
def extracted(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("root")
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    return root


def _run(extracted: Path, path_without_clang: str, tmp_path: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    # The extracted /usr/lib/pyvs first (the commands put it first); this venv's python for prometheus-client.
    env = {"PATH": path_without_clang, "PYTHONPATH": str(extracted / "usr/lib/pyvs"),
           "PYVS_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)}
    return subprocess.run([sys.executable, *argv], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_extracted_commands_run(extracted: Path, path_without_clang: str, tmp_path: Path) -> None:
    result = _run(extracted, path_without_clang, tmp_path, str(extracted / "usr/sbin/pyvsadm"), "-h")
    assert result.returncode == 0 and "pyvsadm v" in result.stdout, result.stderr
    where = _run(extracted, path_without_clang, tmp_path, "-c",
                 "import pyroute2, pyvs.dataplane.build as b\n"
                 "print(b.__file__, b.object_path('xdp'), pyroute2.__file__)")
    assert where.returncode == 0, where.stderr
    module, obj, pyroute2 = where.stdout.split()
    assert module.startswith(str(extracted)) and obj.startswith(str(extracted)) and obj.endswith("pyvs_xdp.o")
    assert pyroute2 == str(extracted / "usr/lib/pyvs/pyroute2/__init__.py")
    config = _run(extracted, path_without_clang, tmp_path, str(extracted / "usr/sbin/pyvs"), "director", "run",
                  "--config", str(extracted / "etc/pyvs/director.toml"), "--validate")
    assert config.returncode == 0, config.stderr  # the default config is valid


def test_extracted_package_opens_a_data_plane_without_clang(extracted: Path, path_without_clang: str,
                                                            tmp_path: Path) -> None:
    result = _run(extracted, path_without_clang, tmp_path, "-c",
                  "from pyvs.dataplane import scratch_dataplane\n"
                  "with scratch_dataplane('pyvst-deb') as dp: print('opened')")
    assert result.returncode == 0 and "opened" in result.stdout, result.stderr
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
