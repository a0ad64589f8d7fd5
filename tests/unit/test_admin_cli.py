"""pyvsadm's plumbing: streams, exit codes, lazy data plane opening, what reaches the data plane.

These tests use a small in-memory stand-in for the Dataplane API and check only the CLI's
parsing/printing plumbing. The behaviour against the real BPF data plane is covered by the
kernel-backed tests in tests/bpf/test_pyvsadm_kernel.py (written by the lead).
"""

import io
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address as IP

import pytest

from pyvs.admin import cli
from pyvs.model import Connection, Counters, Protocol, Real, Rules, Service, ServiceKey, Timeouts

VIP80 = ServiceKey(Protocol.TCP, IP("198.18.0.100"), 80)
RS1 = IP("198.18.1.11")
RealKey = tuple[ServiceKey, tuple[IP, int]]


class MemoryDataplane:
    """In-memory stand-in with the Dataplane methods pyvsadm calls."""

    conn_table_size = 4096

    def __init__(self) -> None:
        self.rules = Rules()
        self.timeouts = Timeouts()
        self.applied = 0
        self.zeroed: list[ServiceKey | None] = []
        self.conns: list[Connection] = []
        self.counts: dict[RealKey, tuple[int, int]] = {}
        self.closed = False

    def read_rules(self) -> Rules:
        return self.rules.copy()

    def apply(self, rules: Rules) -> None:
        self.rules = rules.copy()
        self.applied += 1

    def update(self, change: Callable[[Rules], Rules]) -> None:
        self.apply(change(self.rules.copy()))

    def update_service(self, key: ServiceKey, change: Callable[[Service | None], Service | None]) -> None:
        rules = self.rules.copy()
        service = change(rules.services.get(key))
        if service is None:
            rules.services.pop(key, None)
        else:
            rules.services[key] = service
        self.apply(rules)

    def read_timeouts(self) -> Timeouts:
        return self.timeouts

    def set_timeouts(self, t: Timeouts) -> None:
        self.timeouts = t

    def service_stats(self) -> dict[ServiceKey, Counters]:
        return {key: Counters(conns=5) for key in self.rules.services}

    def real_stats(self) -> dict[RealKey, Counters]:
        return {}

    def conn_counts(self) -> dict[RealKey, tuple[int, int]]:
        return self.counts

    def connections(self) -> list[Connection]:
        return self.conns

    def zero(self, key: ServiceKey | None = None) -> None:
        self.zeroed.append(key)

    def __enter__(self) -> "MemoryDataplane":
        return self

    def __exit__(self, *exc: object) -> None:
        self.closed = True


def run(dp: MemoryDataplane | None, *argv: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(list(argv), io.StringIO(stdin), out, err, dp)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def dp() -> MemoryDataplane:
    plane = MemoryDataplane()
    plane.rules = Rules({VIP80: Service(VIP80, "rr", reals={(RS1, 80): Real(RS1, 80, 1)})})
    return plane


@pytest.fixture
def no_dataplane(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> None:
        raise AssertionError("the data plane must not be opened")

    monkeypatch.setattr(cli, "_open_dataplane", refuse)


@pytest.mark.usefixtures("no_dataplane")
def test_help_and_version_need_no_dataplane() -> None:
    code, out, err = run(None, "-h")
    assert (code, err) == (0, "")
    assert out.startswith("pyvsadm v")
    assert "--add-service     -A" in out
    code, out, _ = run(None, "--version")
    assert code == 0
    assert "ipvsadm v1.31" in out


@pytest.mark.usefixtures("no_dataplane")
def test_usage_errors_exit_2_before_opening_the_dataplane() -> None:
    code, out, err = run(None, "-A", "-t", "198.18.0.100:80", "-6")
    assert (code, out) == (2, "")
    assert err == "pyvsadm: -6 used before -f\n"  # ipvsadm's words: -6 goes with a fwmark service
    code, _, err = run(None, "--bogus")
    assert code == 2
    assert err.endswith("Try `pyvsadm -h' or 'pyvsadm --help' for more information.\n")


def test_rule_commands_reach_the_dataplane(dp: MemoryDataplane) -> None:
    assert run(dp, "-a", "-t", "198.18.0.100:80", "-r", "198.18.1.12", "-w", "4") == (0, "", "")
    assert dp.rules.services[VIP80].reals[(IP("198.18.1.12"), 80)].weight == 4
    assert run(dp, "-C") == (0, "", "")
    assert dp.rules == Rules()


def test_failed_operation_exits_1_and_applies_nothing(dp: MemoryDataplane) -> None:
    before = dp.rules.copy()
    code, out, err = run(dp, "-A", "-t", "198.18.0.100:80", "-s", "rr")
    assert (code, out, err) == (1, "", "pyvsadm: Service already exists\n")
    assert (dp.rules, dp.applied) == (before, 0)


def test_restore_is_atomic(dp: MemoryDataplane) -> None:
    before = dp.rules.copy()
    bad = "-A -u 198.18.0.100:53 -s rr\n-a -u 198.18.0.100:53 -r 198.18.1.1 -w 99999\n"
    code, _, err = run(dp, "-R", stdin=bad)
    assert code == 2
    assert err.startswith("pyvsadm: line 2: illegal weight specified")
    assert (dp.rules, dp.applied) == (before, 0)
    code, _, err = run(dp, "-R", stdin="-A -u 198.18.0.100:53 -s rr\n-A -u 198.18.0.100:53 -s rr\n")
    assert (code, err) == (1, "pyvsadm: line 2: Service already exists\n")
    assert dp.applied == 0


def test_save_restore_round_trip_through_the_cli(dp: MemoryDataplane) -> None:
    code, saved, _ = run(dp, "-S", "-n")
    assert code == 0
    fresh = MemoryDataplane()
    assert run(fresh, "-R", stdin=saved) == (0, "", "")
    assert fresh.rules == dp.rules
    assert fresh.applied == 1


def test_list_prints_conn_counts(dp: MemoryDataplane) -> None:
    dp.counts = {(VIP80, (RS1, 80)): (3, 9)}
    code, out, _ = run(dp, "-L", "-n")
    assert code == 0
    assert out.splitlines()[-1] == "  -> 198.18.1.11:80               Route   1      3          9         "
    assert run(dp) == run(dp, "-L")  # no arguments lists the table, as ipvsadm


def test_list_one_missing_service_fails(dp: MemoryDataplane) -> None:
    assert run(dp, "-L", "-n", "-t", "198.18.0.100:81") == (1, "", "pyvsadm: No such service\n")
    code, out, _ = run(dp, "-L", "-n", "-t", "198.18.0.100:80", "--stats")
    assert code == 0
    assert out.splitlines()[2].startswith("TCP  198.18.0.100:80                     5")


def test_list_connections_and_timeouts(dp: MemoryDataplane) -> None:
    dp.conns = [Connection(Protocol.TCP, IP("198.19.0.7"), 5000, VIP80.vip, 80, RS1, 80, "ESTABLISHED", 61)]
    code, out, _ = run(dp, "-lcn")
    assert code == 0
    assert (
        out.splitlines()[2] == "TCP 01:01  ESTABLISHED 198.19.0.7:5000    198.18.0.100:80    198.18.1.11:80"
    )
    assert run(dp, "--set", "0", "30", "0") == (0, "", "")
    assert run(dp, "-L", "--timeout") == (0, "Timeout (tcp tcpfin udp): 900 30 300\n", "")


def test_zero(dp: MemoryDataplane) -> None:
    assert run(dp, "-Z") == (0, "", "")
    assert run(dp, "-Z", "-t", "198.18.0.100:80") == (0, "", "")
    assert run(dp, "-Z", "-t", "198.18.0.100:81") == (1, "", "pyvsadm: No such service\n")
    assert dp.zeroed == [None, VIP80]


class FakeDataplaneError(Exception):
    pass


@dataclass
class Opened:
    pin_dirs: list[str | None] = field(default_factory=list)
    planes: list[MemoryDataplane] = field(default_factory=list)


@pytest.fixture
def fake_dataplane_module(monkeypatch: pytest.MonkeyPatch) -> Opened:
    """Stand in for pyvs.dataplane, recording what it opens."""
    opened = Opened()

    def open_dataplane(pin_dir: str | None = None) -> MemoryDataplane:
        opened.pin_dirs.append(pin_dir)
        if str(pin_dir) == "/sys/fs/bpf/broken":
            raise FakeDataplaneError("cannot open pinned maps under /sys/fs/bpf/broken")
        plane = MemoryDataplane()
        opened.planes.append(plane)
        return plane

    module = types.SimpleNamespace(open_dataplane=open_dataplane, DataplaneError=FakeDataplaneError)
    monkeypatch.setitem(sys.modules, "pyvs.dataplane", module)
    return opened


def test_pin_dir_comes_from_the_environment(
    fake_dataplane_module: Opened, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cli.PIN_DIR_ENV, raising=False)
    assert run(None, "-C")[0] == 0  # a write opens (or creates) the data plane; a read of nothing opens nothing
    monkeypatch.setenv(cli.PIN_DIR_ENV, "/sys/fs/bpf/pyvs-test")
    assert run(None, "-C")[0] == 0
    assert [p and str(p) for p in fake_dataplane_module.pin_dirs] == [None, "/sys/fs/bpf/pyvs-test"]
    assert all(plane.closed for plane in fake_dataplane_module.planes)  # what pyvsadm opens, it closes


def test_an_injected_dataplane_is_left_open(dp: MemoryDataplane) -> None:
    assert run(dp, "-S")[0] == 0
    assert not dp.closed


def test_dataplane_errors_exit_1(
    fake_dataplane_module: list[str | None], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(cli.PIN_DIR_ENV, "/sys/fs/bpf/broken")
    assert run(None, "-C") == (1, "", "pyvsadm: cannot open pinned maps under /sys/fs/bpf/broken\n")
