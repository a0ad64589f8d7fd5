"""Man pages render without warnings and cover the CLI and the config keys; the bash completions work."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pyvs.director import config

ROOT = Path(__file__).resolve().parents[2]
MAN = ROOT / "contrib/man"
COMPLETION = ROOT / "contrib/completion"
PAGES = ["pyvsadm.8", "pyvs.8", "pyvs-director.toml.5"]


@pytest.mark.parametrize("page", PAGES)
def test_man_page_renders_without_warnings(page: str) -> None:
    assert shutil.which("groff"), "groff is not installed (scripts/setup.sh installs groff-base)"
    # groff -ww: every warning; -z: no output, only diagnostics
    result = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(MAN / page)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    if shutil.which("man"):
        shown = subprocess.run(["man", "--warnings", "-l", str(MAN / page)], capture_output=True, text=True,
                               env={"LC_ALL": "C.UTF-8", "MANWIDTH": "100", "PATH": "/usr/bin:/bin", "MANPAGER": "cat"})
        assert shown.returncode == 0 and shown.stderr == "", shown.stderr
        assert "NAME" in shown.stdout and "SEE ALSO" in shown.stdout


def test_generated_pyvs_page_and_completion_are_up_to_date() -> None:
    result = subprocess.run([sys.executable, str(ROOT / "scripts/gen-cli-docs.py"), "--check"],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def _pyvsadm_long_options() -> set[str]:
    out = subprocess.run([sys.executable, "-c", "import sys; from pyvs.admin.cli import main; sys.exit(main(['-h']))"],
                         capture_output=True, text=True).stdout
    implemented = out.split("pyvs forwards by direct routing")[0]
    return set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", implemented))


def test_pyvsadm_page_and_completion_cover_every_option() -> None:
    options = _pyvsadm_long_options()
    assert {"--add-service", "--sched-flags", "--pin-dir", "--set"} <= options
    page = (MAN / "pyvsadm.8").read_text().replace("\\-", "-")
    completion = (COMPLETION / "pyvsadm").read_text()
    assert not {o for o in options if o not in page}
    assert not options - set(re.findall(r"--[a-z][a-z-]*", completion))
    for section in ("NAME", "SYNOPSIS", "DESCRIPTION", "COMMANDS", "PARAMETERS", "NOTES", "FILES", "SEE ALSO"):
        assert f".SH {section}" in page, section  # ipvsadm(8)'s sections


def test_config_page_names_every_key() -> None:
    page = (MAN / "pyvs-director.toml.5").read_text().replace("\\-", "-")
    keys = {*config.DIRECTOR_KEYS, *config.SERVICE_KEYS, *config.REAL_KEYS, *config.CHECK_KEYS, *config.BGP_KEYS,
            *config.VRRP_KEYS}
    assert not {k for k in keys if f"\\fB{k}\\fR" not in page and k != "real"}


def _complete(script: str, words: list[str]) -> list[str]:
    arr = " ".join(f"'{w}'" for w in words)
    code = (f"set -u; source {COMPLETION / script}; COMP_WORDS=({arr}); COMP_CWORD={len(words) - 1}; "
            f"_{script}; printf '%s\\n' \"${{COMPREPLY[@]}}\"")
    result = subprocess.run(["bash", "--norc", "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_pyvsadm_completion() -> None:
    options = _complete("pyvsadm", ["pyvsadm", "-"])
    assert {"-A", "--add-service", "-L", "--numeric", "--pin-dir"} <= set(options)
    assert _complete("pyvsadm", ["pyvsadm", "--add-s"]) == ["--add-service", "--add-server"]
    assert _complete("pyvsadm", ["pyvsadm", "-A", "-t", "198.18.0.100:80", "-s", "wl"]) == ["wlc"]


def test_pyvs_completion() -> None:
    assert {"lab", "director", "status", "realserver", "doctor", "arpwatch"} <= set(_complete("pyvs", ["pyvs", ""]))
    assert set(_complete("pyvs", ["pyvs", "director", "r"])) == {"resolve", "run", "reload"}
    assert {"--config", "--validate"} <= set(_complete("pyvs", ["pyvs", "director", "run", "--"]))
    assert set(_complete("pyvs", ["pyvs", "-v", "lab", "exec", "d"])) == {"director", "director2", "director3",
                                                                           "director4"}
