"""The `pyvs` command line as an admin meets it: lazy imports, one-line errors, pipes, -v, --url, --validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from pyvs.arp import doctor
from pyvs.cli import arp as cli_arp
from pyvs.cli.status import status_url

REPO = Path(__file__).resolve().parents[2]
KEEPALIVED = textwrap.dedent("""\
    virtual_server 198.18.0.100 80 {
        lb_algo rr
        lb_kind DR
        protocol TCP
        real_server 198.18.2.11 80 {
            weight 1
            TCP_CHECK { connect_timeout 3 }
        }
    }
""")


def pyvs(*args: str, stdout: int | None = subprocess.PIPE) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pyvs.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=60, check=False)


def modules_loaded_by(args: list[str]) -> set[str]:
    """The pyvs.dataplane modules (and libbpf) that running `pyvs ARGS` imported."""
    code = ("import sys, json; from pyvs.cli import main; main(" + json.dumps(args) + "); "
            "print(json.dumps(sorted(m for m in sys.modules if 'dataplane' in m or 'libbpf' in m)), file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    loaded: list[str] = json.loads(result.stderr.strip().splitlines()[-1])
    return set(loaded)


def test_commands_that_need_no_bpf_do_not_load_the_data_plane(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text(KEEPALIVED)
    assert modules_loaded_by(["realserver", "check", "--vip", "198.18.0.100"]) == set()
    assert modules_loaded_by(["status", "--url", "127.0.0.1:9"]) == set()
    assert modules_loaded_by(["director", "import-keepalived", str(conf)]) == set()
    assert modules_loaded_by(["director", "run", "--validate", "--config", str(REPO / "contrib/lab-director.toml")]) \
        == set()


@pytest.mark.parametrize("args", [["doctor", "--dev", "pyvsnone9"], ["director", "detach", "--dev", "pyvsnone9"],
                                  ["arpwatch", "--dev", "pyvsnone9", "--vip", "198.18.0.100"],
                                  ["director", "attach", "--dev", "pyvsnone9"]])
def test_a_missing_nic_is_one_line_not_a_traceback(args: list[str]) -> None:
    result = pyvs(*args)
    assert result.returncode == 1
    assert result.stderr == "pyvs: no network interface 'pyvsnone9' in this network namespace (`ip link` lists them)\n"


def test_a_closed_pipe_is_silent(tmp_path: Path) -> None:
    conf = tmp_path / "keepalived.conf"
    conf.write_text("".join(KEEPALIVED.replace(" 80 {", f" {port} {{") for port in range(8000, 8050)))
    read_end, write_end = os.pipe()
    os.close(read_end)  # `| head` that has already exited
    try:
        result = pyvs("director", "import-keepalived", str(conf), stdout=write_end)
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


def test_verbose_logs_pyvs_not_the_netlink_library() -> None:
    code = ("import logging; from pyvs.cli import main; main(['-v', 'realserver', 'check', '--vip', '198.18.0.100']); "
            "print(logging.getLogger('pyroute2').getEffectiveLevel(), logging.getLogger('pyvs').getEffectiveLevel())")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert result.stdout.splitlines()[-1] == "30 10"
    assert len(result.stderr.splitlines()) < 10, result.stderr


def test_status_without_a_daemon_is_the_same_clear_error_in_json_mode() -> None:
    for args in (["status", "--url", "127.0.0.1:9"], ["status", "--json", "--url", "127.0.0.1:9"],
                 ["status", "--json", "--url", "http://127.0.0.1:9"]):
        result = pyvs(*args)
        assert result.returncode == 2, args
        assert result.stderr.startswith("pyvs: no director daemon answers at http://127.0.0.1:9: "), result.stderr
        assert len(result.stderr.splitlines()) == 1


def test_status_url_takes_host_port() -> None:
    assert status_url("127.0.0.1:9180") == "http://127.0.0.1:9180"
    assert status_url("https://lb.example:9180") == "https://lb.example:9180"


def test_the_parser_defaults_agree_with_the_doctor() -> None:
    assert (cli_arp.DEFAULT_CLIENT_IP, cli_arp.DEFAULT_CLIENT_IP6, cli_arp.PROBE_WAIT) == (
        doctor.DEFAULT_CLIENT_IP, doctor.DEFAULT_CLIENT_IP6, doctor.PROBE_WAIT)


def test_validate_names_the_programs_a_file_needs_and_this_host_lacks(tmp_path: Path) -> None:
    config = tmp_path / "director.toml"
    config.write_text(textwrap.dedent("""\
        [director]
        notify = ["/usr/local/bin/pyvs-no-such-notify", "{event}"]

        [[service]]
        proto = "tcp"
        vip = "198.18.0.100"
        port = 80

        [[service.real]]
        address = "198.18.2.12"
        check = { type = "command", command = ["/usr/lib/pyvs-no-such-check", "{rip}"] }
    """))
    result = pyvs("director", "run", "--config", str(config), "--validate")
    assert result.returncode == 1
    assert "/usr/local/bin/pyvs-no-such-notify is not an executable here" in result.stderr
    assert "real 198.18.2.12:80: check: /usr/lib/pyvs-no-such-check is not an executable here" in result.stderr
    assert "not runnable here: 2 problem(s)" in result.stdout
