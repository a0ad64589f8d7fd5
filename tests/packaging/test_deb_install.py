"""The .deb installed by apt in a clean Debian 12 root (tests/packaging/debroot.py): apt resolves its Depends, then
the lab runs from what the package installed (no clang, no venv); the same root booted by systemd-nspawn runs the
daemon as a systemd service (Type=notify readiness, reload, stop) with only the Depends installed."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from pyvs import netns
from tests.packaging import debroot
from tests.packaging.conftest import lab_prefix

SESSION_TIMEOUT = 900  # a cold run debootstraps and downloads the dependencies; a warm one takes well under a minute


@pytest.fixture(autouse=True)
def _tools_installed() -> None:
    missing = [t for t in ("debootstrap", "systemd-nspawn", "unshare", "nsenter", "dpkg-deb") if not shutil.which(t)]
    assert not missing, f"{', '.join(missing)} missing: scripts/setup.sh installs them"


LAB = r"""
prefix=$1
api_fs
for p in python3 libbpf1 python3-prometheus-client ethtool iptables clang; do
  if in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then echo "preinstalled: $p"; fi
done
apt_install
in_root dpkg-query -W -f='installed: ${Package} ${Version} ${Status}\n' pyvs
in_root sh -c 'command -v clang || echo "no clang"; command -v pyvs; command -v pyvsadm'
in_root python3 -c 'import sys; sys.path.insert(0, "/usr/lib/pyvs")
import pyroute2, pyvs.dataplane.build as b
print("object:", b.object_path("xdp")); print("pyroute2:", pyroute2.__file__)'
rc=0
in_root pyvs lab demo --prefix "$prefix" || rc=$?
in_root pyvs lab exec --prefix "$prefix" director -- pyvsadm -L -n || rc=$?
in_root pyvs lab down --prefix "$prefix" || rc=$?
echo "netns left: $(ls "$root/run/netns" 2>/dev/null | tr '\n' ' ')"
echo "objects compiled: $(find "$root/var/cache/pyvs" -name '*.o' 2>/dev/null | wc -l)"
in_root apt-get purge -y -q pyvs >/dev/null || rc=$?
for path in /usr/lib/pyvs /usr/sbin/pyvs /etc/pyvs; do
  if [ -e "$root$path" ]; then echo "left behind: $path"; fi
done
exit $rc
"""


def test_apt_installs_the_deb_in_a_clean_debian_12_and_the_lab_runs_from_it(deb: Path, tmp_path: Path) -> None:
    prefix = lab_prefix("a")
    argv = debroot.session_argv(LAB, tmp_path / "state", deb, prefix)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=SESSION_TIMEOUT,
                            preexec_fn=debroot.die_with_parent)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-8000:]
    # python3, libbpf1 and prometheus-client came with the package's Depends, ethtool and iptables (the lab's) with
    # its Recommends: the root had none of them.
    assert "preinstalled" not in out, out
    assert re.search(r"^installed: pyvs \S+ install ok installed$", out, re.M), out
    assert "no clang" in out and "/usr/sbin/pyvs\n/usr/sbin/pyvsadm" in out
    assert re.search(r"^object: /usr/lib/pyvs/pyvs/dataplane/bpf/prebuilt/[0-9a-f]+/pyvs_xdp\.o$", out, re.M), out
    assert "pyroute2: /usr/lib/pyvs/pyroute2/__init__.py" in out
    assert "split: rs1 5, rs2 5" in out and "never through the director" in out, out
    assert re.search(r"^TCP\s+198\.18\.0\.100:80 \w+\s*\n\s+-> ", out, re.M), out  # pyvsadm -L -n in the director
    assert re.search(r"^netns left: *$", out, re.M), out
    assert "objects compiled: 0" in out
    assert "left behind" not in out, out  # apt-get purge removes everything (the byte-compiled files too)


# -- the daemon under systemd ---------------------------------------------------------------------------------------

# A host whose PID 1 is systemd (sd_booted) with a system bus gives the container a scope over D-Bus; without one
# (this project's development VMs run another init) the container stays in this process's cgroup (--keep-unit). Not
# registered with systemd-machined either way.
SCOPE_OVER_DBUS = Path("/run/systemd/system").is_dir() and Path("/run/dbus/system_bus_socket").exists()
NSPAWN_OPTIONS = "--register=no" if SCOPE_OVER_DBUS else "--register=no --keep-unit"

BOOT = r"""
machine=$1 netns=$2 options=$3
api_fs
apt_install --no-install-recommends
for p in ethtool iptables; do
  if in_root dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then echo "recommended: $p"; fi
done
umount -R "$root/proc" "$root/sys" "$root/dev" "$root/run" "$root/var/cache/apt/archives"
# A bpffs at /sys/fs/bpf, as systemd mounts one when it boots a machine (it does not in a container).
mkdir -p "$state/bpffs"
mount -t bpf bpf "$state/bpffs"
echo "booting"
# systemd-nspawn's seccomp filter refuses bpf() (EPERM) unless --system-call-filter allows it; the units bound the
# capabilities further. $options unquoted: several words.
exec systemd-nspawn -D "$root" -M "$machine" $options --network-namespace-path="/run/netns/$netns" \
  --capability=CAP_NET_ADMIN,CAP_BPF,CAP_PERFMON --system-call-filter=bpf --bind="$state/bpffs:/sys/fs/bpf" \
  --console=read-only -b
"""

SUBNET = "198.18.40"
CONFIG = """[director]
interface = "{dev}"
status_listen = "127.0.0.1:9180"

[[service]]
proto = "tcp"
vip = "{subnet}.100"
port = 80
check = {{ type = "tcp", interval = 1.0, timeout = 1.0, rise = 1, fall = 1 }}

[[service.real]]
address = "{subnet}.2"
weight = {weight}
"""


class Machine:
    """The booted container, reached by entering its leader's namespaces."""

    def __init__(self, leader: int):
        self.leader = leader

    def run(self, *argv: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["nsenter", "-t", str(self.leader), "-m", "-u", "-i", "-n", "-p", *argv], input=input,
                              capture_output=True, text=True, timeout=120,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"})

    def wait_booted(self, timeout: float) -> None:
        """Until systemd finished booting (its socket appears a moment after it starts)."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.run("systemctl", "is-system-running", "--wait")
            if state.stdout.strip() in ("running", "degraded"):
                return
            assert time.monotonic() < deadline, f"not booted: {state.stdout}{state.stderr}"
            time.sleep(0.2)

    def write(self, path: str, text: str) -> None:
        assert self.run("sh", "-c", f"cat > {path}", input=text).returncode == 0

    def unit(self, unit: str) -> dict[str, str]:
        shown = self.run("systemctl", "show", unit, "-p", "ActiveState,SubState,Result,MainPID,StatusText").stdout
        return dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)

    def table(self) -> str:
        listing = self.run("pyvsadm", "-L", "-n")
        assert listing.returncode == 0, listing.stderr
        return listing.stdout


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except FileNotFoundError:
        return ""


def _nspawn_and_leader(session: subprocess.Popen[bytes], log: Path, timeout: float) -> tuple[int, int]:
    """systemd-nspawn (the session's PID namespace's init, once the install is done) and the machine's PID 1."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert session.poll() is None, f"the session ended:\n{log.read_text()[-8000:]}"
        for nspawn in _children(session.pid):
            if _comm(nspawn) == "systemd-nspawn":
                for child in _children(nspawn):
                    if _comm(child) == "systemd":
                        return nspawn, child
        time.sleep(0.2)
    raise AssertionError(f"the machine did not boot within {timeout:.0f} s:\n{log.read_text()[-8000:]}")


def _stop(session: subprocess.Popen[bytes], nspawn: int | None) -> None:
    """SIGTERM makes systemd-nspawn halt the machine; if it does not in time, killing unshare kills its PID
    namespace's init (--kill-child), and with it every process of the session and the machine."""
    if session.poll() is None and nspawn is not None:
        os.kill(nspawn, signal.SIGTERM)
        try:
            session.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
    if session.poll() is None:
        session.kill()
        session.wait(timeout=30)


@contextmanager
def _network(director: str, real: str, dev: str) -> Iterator[None]:
    """The director's namespace (the container's) and a real's, joined by a veth pair; the real accepts TCP on :80."""
    setup = [["ip", "-n", director, "link", "add", dev, "type", "veth", "peer", "name", f"{dev}p", "netns", real],
             ["ip", "-n", director, "addr", "add", f"{SUBNET}.1/24", "dev", dev],
             ["ip", "-n", real, "addr", "add", f"{SUBNET}.2/24", "dev", f"{dev}p"]]
    setup += [["ip", "-n", ns, "link", "set", ifname, "up"]
              for ns, ifname in ((director, "lo"), (director, dev), (real, "lo"), (real, f"{dev}p"))]
    stop = threading.Event()
    try:
        for name in (director, real):
            if netns.exists(name):
                netns.remove(name)
            netns.create(name)
        for argv in setup:
            subprocess.run(argv, check=True, capture_output=True)
        with netns.in_netns(real):
            server = socket.create_server((f"{SUBNET}.2", 80))
        server.settimeout(0.2)

        def accept() -> None:
            while not stop.is_set():
                try:
                    server.accept()[0].close()
                except TimeoutError:
                    pass

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join()
            server.close()
    finally:
        for name in (director, real):
            if netns.exists(name):
                netns.remove(name)


def test_the_daemon_runs_under_systemd_from_the_deb(deb: Path, tmp_path: Path) -> None:
    prefix = lab_prefix("s")
    director, real, dev = f"{prefix}-dir", f"{prefix}-rs", f"{prefix}d0"
    log = tmp_path / "machine.log"
    with _network(director, real, dev):
        argv = debroot.session_argv(BOOT, tmp_path / "state", deb, director, director, NSPAWN_OPTIONS)
        nspawn = None
        with open(log, "wb") as out:
            session = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                       preexec_fn=debroot.die_with_parent)
        try:
            nspawn, leader = _nspawn_and_leader(session, log, SESSION_TIMEOUT)
            machine = Machine(leader)
            machine.wait_booted(timeout=120)
            # Only the Depends were installed: the daemon needs no Recommends.
            assert "recommended: " not in log.read_text()
            _daemon_lifecycle(machine, director, dev)
        finally:
            _stop(session, nspawn)
            propagate = Path(f"/run/systemd/nspawn/propagate/{director}")  # systemd-nspawn's, left behind
            if propagate.is_dir():
                propagate.rmdir()


def _addresses(ns: str, dev: str) -> str:
    return subprocess.run(["ip", "-n", ns, "-4", "addr", "show", "dev", dev], capture_output=True, text=True).stdout


def _xdp(ns: str, dev: str) -> str:
    shown = subprocess.run(["ip", "-n", ns, "link", "show", "dev", dev], capture_output=True, text=True).stdout
    found = re.search(r"prog/xdp id \d+ name (\S+)", shown)
    return found.group(1) if found else ""


def _daemon_lifecycle(machine: Machine, director: str, dev: str) -> None:
    vip = f"{SUBNET}.100/32"
    machine.write("/etc/pyvs/director.toml", CONFIG.format(dev=dev, subnet=SUBNET, weight=1))

    # Type=notify: `systemctl start` returns once the daemon said READY=1, which it does after the attach, the
    # first reconcile and every real's first check.
    started = machine.run("systemctl", "start", "pyvs-director")
    journal = machine.run("journalctl", "-u", "pyvs-director", "-o", "cat").stdout
    assert started.returncode == 0, started.stderr + journal
    unit = machine.unit("pyvs-director")
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    assert unit["StatusText"] == "1 services, 1/1 reals up", unit
    assert _xdp(director, dev) == "pyvs_xdp" and vip in _addresses(director, dev)
    assert journal.index("event=xdp_attached") < journal.index("Started pyvs-director.service"), journal
    table = machine.table()
    assert re.search(rf"TCP\s+{SUBNET}\.100:80 wrr\s*\n\s+-> {SUBNET}\.2:80\s+Route\s+1\s", table), table
    # What an admin looks at next: the maps' view (attachment, the real's MAC, the owner) and the daemon's /status.
    status = machine.run("pyvs", "director", "status")
    assert status.returncode == 0, status.stderr
    assert re.search(rf"^{dev}\s+veth\s+pyvs_xdp \(id \d+\)\s+\w+\s+explicit$", status.stdout, re.M), status.stdout
    assert re.search(rf"{SUBNET}\.2:80\s+([0-9a-f]{{2}}:){{5}}[0-9a-f]{{2}}\s", status.stdout), status.stdout
    assert f"daemon (pid {unit['MainPID']})" in status.stdout
    served = machine.run("pyvs", "status")
    assert served.returncode == 0, served.stderr
    assert f"pyvs director pid {unit['MainPID']}, config /etc/pyvs/director.toml" in served.stdout, served.stdout
    assert re.search(rf"-> {SUBNET}\.2:80\s+up\s+1\s", served.stdout), served.stdout

    # An invalid file: the reload fails, naming it; the daemon keeps running with the rules it had.
    invalid = '\n[[service]]\nvip = "198.18.40.101"\nweight = 1\n'  # weight is a real's setting
    machine.write("/etc/pyvs/director.toml", CONFIG.format(dev=dev, subnet=SUBNET, weight=1) + invalid)
    refused = machine.run("systemctl", "reload", "pyvs-director")
    assert refused.returncode != 0
    journal = machine.run("journalctl", "-u", "pyvs-director", "-o", "cat").stdout
    assert re.search(r"/etc/pyvs/director.toml:\d+: service #2: unknown setting 'weight'", journal), journal
    after = machine.unit("pyvs-director")
    assert (after["ActiveState"], after["MainPID"]) == ("active", unit["MainPID"]), after
    assert machine.table() == table

    # A valid one is applied.
    machine.write("/etc/pyvs/director.toml", CONFIG.format(dev=dev, subnet=SUBNET, weight=3))
    reloaded = machine.run("systemctl", "reload", "pyvs-director")
    assert reloaded.returncode == 0, reloaded.stderr
    assert re.search(rf"-> {SUBNET}\.2:80\s+Route\s+3\s", machine.table()), machine.table()

    # Stop: the unit ends cleanly and the VIP it took over is withdrawn; forwarding goes on from the pinned maps
    # (the program stays attached, the rules stay), as IPVS's table outlives ipvsadm.
    stopped = machine.run("systemctl", "stop", "pyvs-director")
    assert stopped.returncode == 0, stopped.stderr
    unit = machine.unit("pyvs-director")
    assert (unit["ActiveState"], unit["Result"]) == ("inactive", "success"), unit
    assert vip not in _addresses(director, dev)
    assert machine.run("test", "-e", "/run/pyvs/director/default.json").returncode == 1  # its run file
    assert _xdp(director, dev) == "pyvs_xdp"
    assert re.search(rf"-> {SUBNET}\.2:80\s+Route\s+3\s", machine.table())

    # pyvs-rules.service: /etc/pyvs/rules replaces the table (pyvsadm -C, then -R).
    machine.write("/etc/pyvs/rules", f"-A -t {SUBNET}.101:80 -s rr\n-a -t {SUBNET}.101:80 -r {SUBNET}.2:80 -g -w 2\n")
    restored = machine.run("systemctl", "start", "pyvs-rules")
    assert restored.returncode == 0, restored.stderr + machine.run("journalctl", "-u", "pyvs-rules", "-o", "cat").stdout
    table = machine.table()
    assert re.search(rf"TCP\s+{SUBNET}\.101:80 rr\s*\n\s+-> {SUBNET}\.2:80\s+Route\s+2\s", table), table
    assert f"{SUBNET}.100:80" not in table
