"""The director daemon in the lab: health checks take failed reals out and back, reload and restart under
traffic lose no request, bad input is refused while the service goes on."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pyvs.dataplane import Dataplane, remove_pins
from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director, pin_dir, tutorial_rules
from pyvs.lab.topology import Topology
from pyvs.lab.traffic import http_connection, http_get, keepalive_get
from pyvs.model import Rules
from pyvs.netns import in_netns, run_in_netns, spawn_in_netns

STATUS = "http://127.0.0.1:9180"
INTERVAL = 0.2
RISE = FALL = 2
NOTIFY_SCRIPT = "import sys; open(sys.argv[1], 'a').write(' '.join(sys.argv[2:]) + '\\n')"


def config_text(topo: Topology, notify_log: Path, rs1_check: str = "", rs2_weight: int = 1,
                extra: str = "") -> str:
    check = (f'{{ type = "http", path = "/", interval = {INTERVAL}, timeout = {INTERVAL}, rise = {RISE}, '
             f'fall = {FALL} }}')
    notify = json.dumps([sys.executable, "-c", NOTIFY_SCRIPT, str(notify_log), "{event}", "{real}"])
    return f"""
[director]
status_listen = "127.0.0.1:9180"
notify = {notify}

[[service]]
proto = "tcp"
vip = "{topo.vip}"
port = 80
scheduler = "wrr"
check = {check}

[[service.real]]
address = "{topo.address_of('rs1')}"
{rs1_check}

[[service.real]]
address = "{topo.address_of('rs2')}"
weight = {rs2_weight}

[[service]]
proto = "udp"
vip = "{topo.vip}"
port = 80
scheduler = "rr"

[[service.real]]
address = "{topo.address_of('rs1')}"

[[service.real]]
address = "{topo.address_of('rs2')}"
{extra}
"""


def director_rules(topo: Topology) -> Rules:
    with in_netns(topo.director.netns), open_director(topo) as dp:
        return dp.read_rules()


def tcp_reals(topo: Topology) -> dict[str, int]:
    """Node name -> weight of the reals of the TCP service on port 80 in the data plane."""
    names = {topo.address_of(n.name): n.name for n in topo.reals}
    svc = next(s for k, s in director_rules(topo).services.items() if k.proto.name == "TCP" and k.port == 80)
    return {names.get(str(r.rip), str(r.rip)): r.weight for r in svc.reals.values()}


def status(topo: Topology) -> dict:  # type: ignore[type-arg]
    with in_netns(topo.director.netns):
        with urlopen(f"{STATUS}/status", timeout=5) as response:  # noqa: S310
            return json.load(response)  # type: ignore[no-any-return]


def pyvs_cli(topo: Topology, *args: str) -> tuple[int, str, str]:
    result = run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.cli", *args], check=False)
    return result.returncode, result.stdout, result.stderr


def wait_for(condition, timeout: float, what: str) -> float:  # type: ignore[no-untyped-def]
    """Seconds until condition() holds; fails the test after `timeout`."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)
    return time.monotonic() - started


@dataclass
class Daemon:
    topo: Topology
    config: Path
    log: Path
    notify_log: Path
    pid: int = 0

    def start(self) -> None:
        argv = [sys.executable, "-m", "pyvs.cli", "director", "run", "--config", str(self.config),
                "--pin-dir", str(pin_dir(self.topo))]
        before = self.log.read_text().count("event=started") if self.log.exists() else 0
        self.pid = spawn_in_netns(self.topo.director.netns, argv, log_path=self.log)
        # It serves its status before it attaches and writes its rules; "started" is logged once they are written.
        wait_for(lambda: self._answers() and self.log.read_text().count("event=started") > before, 10,
                 f"the daemon answers on its status endpoint and has written its rules (log: {self.log.read_text()})")

    def _answers(self) -> bool:
        if not Path(f"/proc/{self.pid}").exists():
            raise AssertionError(f"the daemon exited: {self.log.read_text()}")
        try:
            return bool(status(self.topo)["pid"] == self.pid)
        except OSError:
            return False

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if not self.pid:
            return
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            if os.waitpid(self.pid, os.WNOHANG)[0] == self.pid:
                break
            time.sleep(0.05)
        else:
            os.kill(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        self.pid = 0

    def write(self, text: str) -> None:
        self.config.write_text(text)


@pytest.fixture
def daemon(lab: Topology, tmp_path: Path) -> Iterator[Daemon]:
    notify_log = tmp_path / "notify.log"
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab, notify_log))
    running = Daemon(lab, config, tmp_path / "daemon.log", notify_log)
    try:
        running.start()
        yield running
    finally:
        running.stop()
        lab_api.start_web_server(lab, "rs1")
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))


@dataclass
class RequestLoop:
    """A bounded loop of HTTP requests from the client, in a thread: (time, server or error) per request."""

    topo: Topology
    limit: int = 2000
    results: list[tuple[float, str, bool]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.is_set() and len(self.results) < self.limit:
            try:
                reply = http_get(self.topo.client.netns, self.topo.public_ip, timeout=2)
                self.results.append((time.monotonic(), reply.server, True))
            except OSError as exc:
                self.results.append((time.monotonic(), str(exc), False))
            time.sleep(0.01)

    def failures(self, since: float = 0.0) -> list[str]:
        return [what for when, what, ok in self.results if not ok and when >= since]

    def served(self, since: float = 0.0) -> Counter[str]:
        return Counter(what for when, what, ok in self.results if ok and when >= since)


@pytest.fixture
def request_loop(lab: Topology) -> Iterator[RequestLoop]:
    loop = RequestLoop(lab)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    try:
        yield loop
    finally:
        loop.stop.set()
        thread.join(10)


def test_a_stopped_web_server_leaves_the_pool_and_returns(daemon: Daemon, request_loop: RequestLoop) -> None:
    lab = daemon.topo
    wait_for(lambda: len(request_loop.served()) == 2, 5, "both reals serve before the failure")
    lab_api.stop_web_server(lab, "rs1")
    bound = FALL * INTERVAL + INTERVAL + 1.0  # fall x interval, one probe timeout, scheduling slack
    took = wait_for(lambda: "rs1" not in tcp_reals(lab), bound, "rs1 leaves the pool")
    out_at = time.monotonic() + 0.3  # requests already sent to rs1 may still fail
    time.sleep(1.5)
    assert request_loop.failures(since=out_at) == [], f"rs1 left after {took:.2f}s"
    assert set(request_loop.served(since=out_at)) == {"rs2"}
    report = status(lab)["services"][0]["reals"][0]
    assert report["health"] == "down" and report["transitions"] == 1 and not report["in_dataplane"]

    lab_api.start_web_server(lab, "rs1")
    wait_for(lambda: "rs1" in tcp_reals(lab), RISE * INTERVAL + INTERVAL + 1.0, "rs1 returns to the pool")
    back_at = time.monotonic()
    time.sleep(1.0)
    assert request_loop.failures(since=back_at) == []
    assert set(request_loop.served(since=back_at)) == {"rs1", "rs2"}
    wait_for(lambda: daemon.notify_log.exists() and "real_up" in daemon.notify_log.read_text(), 3, "notify")
    events = daemon.notify_log.read_text().splitlines()
    rip = lab.address_of("rs1")
    assert f"real_down {rip}:80" in events and f"real_up {rip}:80" in events
    log = daemon.log.read_text()
    assert f"event=real_down service=tcp/{lab.vip}:80 real={rip}:80" in log
    with in_netns(lab.director.netns), urlopen(f"{STATUS}/metrics", timeout=5) as response:  # noqa: S310
        metrics = response.read().decode()
    assert f'pyvs_real_up{{real="{rip}:80",role="real",service="tcp/{lab.vip}:80"}} 1.0' in metrics
    assert f'pyvs_real_health_transitions_total{{real="{rip}:80",role="real",service="tcp/{lab.vip}:80"}} 2.0' \
        in metrics
    assert 'pyvs_drops_total{reason="no_mac"}' in metrics


def test_an_http_check_marks_a_real_answering_500_as_down(daemon: Daemon) -> None:
    lab = daemon.topo
    rs1_check = f'check = {{ type = "http", path = "/status/500", interval = {INTERVAL}, timeout = {INTERVAL}, ' \
                f'fall = {FALL} }}'
    daemon.write(config_text(lab, daemon.notify_log, rs1_check=rs1_check))
    code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
    assert code == 0, err
    wait_for(lambda: "rs1" not in tcp_reals(lab), 3, "rs1 answering 500 leaves the pool")
    report = status(lab)["services"][0]["reals"][0]
    assert report["health"] == "down" and report["last_check"].endswith("status 500")
    assert Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(6)) == {"rs2": 6}


def test_reload_applies_only_the_difference_under_traffic(daemon: Daemon, request_loop: RequestLoop) -> None:
    lab = daemon.topo
    with http_connection(lab.client.netns, lab.public_ip) as kept:
        first = keepalive_get(kept).server
        daemon.write(config_text(lab, daemon.notify_log, rs2_weight=3))
        code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 0, err
        assert "generation 2" in out
        assert tcp_reals(lab) == {"rs1": 1, "rs2": 3}
        assert [keepalive_get(kept).server for _ in range(5)] == [first] * 5

        good = director_rules(lab)
        daemon.write(config_text(lab, daemon.notify_log, extra='weight = "heavy"'))
        code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 1
        assert f"{daemon.config}:" in err and "'weight' must be int" in err
        os.kill(daemon.pid, signal.SIGHUP)  # the daemon itself refuses it too, and says why
        wait_for(lambda: not status(lab)["last_reload"]["ok"], 3, "the daemon refuses the bad file")
        assert "'weight' must be int" in status(lab)["last_reload"]["error"]
        assert director_rules(lab) == good
        assert keepalive_get(kept).server == first
    time.sleep(0.5)
    assert request_loop.failures() == []
    assert len(request_loop.served()) == 2


def test_restart_and_crash_under_traffic_adopt_the_data_plane(daemon: Daemon, request_loop: RequestLoop) -> None:
    lab = daemon.topo
    before = director_rules(lab)
    with in_netns(lab.director.netns):
        assert Dataplane.xdp_mode(lab.director_nic.ifname) is not None
    with http_connection(lab.client.netns, lab.public_ip) as kept:
        first = keepalive_get(kept).server
        daemon.stop(signal.SIGTERM)
        time.sleep(0.5)
        assert keepalive_get(kept).server == first  # forwarding goes on with no daemon
        daemon.start()
        daemon.stop(signal.SIGKILL)  # a crash
        time.sleep(0.5)
        daemon.start()
        assert keepalive_get(kept).server == first
        assert director_rules(lab) == before
    time.sleep(0.5)
    assert request_loop.failures() == []
    served = request_loop.served()
    assert set(served) == {"rs1", "rs2"}
    assert "event=started" in daemon.log.read_text()


def test_unreachable_target_and_hanging_command_are_reported_and_the_service_goes_on(
    daemon: Daemon, request_loop: RequestLoop
) -> None:
    lab = daemon.topo
    hanging = 'check = { type = "command", command = ["sleep", "30"], interval = 0.5, timeout = 0.3 }'
    unreachable = f"""
[[service]]
proto = "tcp"
vip = "{lab.vip}"
port = 8080
scheduler = "rr"
check = {{ type = "tcp", interval = 0.5, timeout = 0.3 }}

[[service.real]]
address = "{lab.address_of('rs1')}"
port = 8080
"""
    daemon.write(config_text(lab, daemon.notify_log, rs1_check=hanging) + unreachable)
    code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
    assert code == 0, err
    wait_for(lambda: "rs1" not in tcp_reals(lab), 3, "rs1 with a hanging check leaves the pool")
    wait_for(lambda: status(lab)["services"][2]["reals"][0]["health"] == "down", 3, "port 8080 is down")
    services = status(lab)["services"]
    assert services[0]["reals"][0]["last_check"] == "check command sleep did not finish within 0.3s: killed"
    assert "Connection refused" in services[2]["reals"][0]["last_check"]
    sleeping = run_in_netns(None, ["pgrep", "-x", "-P", str(daemon.pid), "sleep"], check=False).stdout.split()
    assert len(sleeping) <= 1  # each hung command is killed at its timeout
    out_at = time.monotonic() + 0.3
    time.sleep(1.0)
    assert request_loop.failures(since=out_at) == []
    assert set(request_loop.served(since=out_at)) == {"rs2"}


def test_daemon_replaces_a_pyvs_program_whose_pins_were_lost(lab: Topology, tmp_path: Path) -> None:
    # The program stays attached with maps no longer pinned: the daemon's rules would never reach it.
    nic = lab.director_nic.ifname
    remove_pins(pin_dir(lab))
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab, tmp_path / "notify.log").replace(
        "[director]\n", f'[director]\ninterface = "{nic}"\n'))
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    try:
        daemon.start()
        assert "xdp_replaced_stale" in daemon.log.read_text()
        with in_netns(lab.director.netns), open_director(lab) as dp:
            found = Dataplane.xdp_program(nic)
            assert found is not None and dp.serves(found[1])
        assert http_get(lab.client.netns, lab.public_ip).server in ("rs1", "rs2")
    finally:
        daemon.stop()
        lab_api.up(lab)


def test_daemon_takes_the_vip_over_with_gratuitous_arp_when_it_starts(lab: Topology, tmp_path: Path) -> None:
    # The gateway holds a stale MAC for the VIP (a previous director); the daemon's start must correct it.
    stale = "02:00:5e:00:01:99"
    run_in_netns(lab.gateway.netns, ["ip", "neigh", "replace", lab.vip, "lladdr", stale, "dev", "inside",
                                     "nud", "stale"])
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab, tmp_path / "notify.log").replace(
        "[director]\n", f'[director]\ninterface = "{lab.director_nic.ifname}"\n'))
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")

    def gateway_mac() -> str:
        out = run_in_netns(lab.gateway.netns, ["ip", "neigh", "show", lab.vip, "dev", "inside"]).stdout
        return out.split("lladdr")[1].split()[0] if "lladdr" in out else ""

    director_mac = lab.director_nic.mac
    assert gateway_mac() == stale
    try:
        daemon.start()
        wait_for(lambda: gateway_mac() == director_mac, 1.0, "the gateway learns the director's MAC for the VIP")
        assert "vip_takeover" in daemon.log.read_text()
        assert http_get(lab.client.netns, lab.public_ip).server in ("rs1", "rs2")
    finally:
        daemon.stop()
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))
    # The VIP was configured on the NIC by the admin (the lab), so a clean stop leaves it there.
    assert lab.vip in run_in_netns(lab.director.netns, ["ip", "-o", "-4", "addr", "show", "dev", "eth0"]).stdout


NEW_VIP = "198.18.0.101"


def nic_addresses(topo: Topology) -> str:
    return run_in_netns(topo.director.netns, ["ip", "-o", "-4", "addr", "show", "dev", topo.director_nic.ifname]).stdout


def new_vip_service(topo: Topology) -> str:
    return f"""
[[service]]
proto = "tcp"
vip = "{NEW_VIP}"
port = 80
scheduler = "rr"
check = {{ type = "tcp", interval = {INTERVAL}, timeout = {INTERVAL} }}

[[service.real]]
address = "{topo.address_of('rs1')}"

[[service.real]]
address = "{topo.address_of('rs2')}"
"""


def pyvsadm(topo: Topology, *args: str) -> str:
    return run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args]).stdout


def test_a_service_made_with_pyvsadm_survives_the_daemons_start_health_changes_and_reloads(
    lab: Topology, tmp_path: Path
) -> None:
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab, tmp_path / "notify.log"))
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    hand, later = f"{lab.vip}:9000", f"{lab.vip}:9001"
    try:
        pyvsadm(lab, "-A", "-t", hand, "-s", "rr")  # made by hand before the daemon starts
        pyvsadm(lab, "-a", "-t", hand, "-r", f"{lab.address_of('rs1')}:9000", "-g")
        daemon.start()
        pyvsadm(lab, "-A", "-u", later, "-s", "wlc")  # and while it runs
        assert f"event=service_left_alone service=tcp/{hand}" in daemon.log.read_text()
        assert [s["name"] for s in status(lab)["other_services"]] == [f"tcp/{hand}", f"udp/{later}"]
        code, out, _ = pyvs_cli(lab, "director", "status", "--pin-dir", str(pin_dir(lab)))
        assert code == 0 and f"TCP {hand}" in out and "pyvsadm (not the daemon's)" in out
        assert f"TCP {lab.vip}:80" in out and f"daemon (pid {daemon.pid})" in out

        lab_api.stop_web_server(lab, "rs1")  # the daemon writes its own service: only that one
        wait_for(lambda: "rs1" not in tcp_reals(lab), 3, "rs1 leaves the pool")
        config.write_text(config_text(lab, tmp_path / "notify.log", rs2_weight=2))
        code, _, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 0, err
        listing = pyvsadm(lab, "-L", "-n")
        assert f"TCP  {hand} rr" in listing and f"UDP  {later} wlc" in listing
        assert f"{lab.address_of('rs1')}:9000" in listing
    finally:
        daemon.stop()
        lab_api.start_web_server(lab, "rs1")
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))


def test_reload_takes_a_new_vip_over_and_lets_it_go(lab: Topology, tmp_path: Path) -> None:
    ifname = lab.director_nic.ifname
    base = config_text(lab, tmp_path / "notify.log").replace("[director]\n", f'[director]\ninterface = "{ifname}"\n')
    config = tmp_path / "director.toml"
    config.write_text(base)
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    stale = "02:00:5e:00:01:98"

    def gateway_mac() -> str:
        out = run_in_netns(lab.gateway.netns, ["ip", "neigh", "show", NEW_VIP, "dev", "inside"]).stdout
        return out.split("lladdr")[1].split()[0] if "lladdr" in out else ""

    def new_vip_answers() -> bool:
        try:
            return http_get(lab.client.netns, NEW_VIP, timeout=0.5).server in ("rs1", "rs2")
        except OSError:
            return False

    for node in ("rs1", "rs2"):  # the reals accept the new VIP (ARP for it is already suppressed on them)
        run_in_netns(lab.node(node).netns, ["ip", "addr", "replace", f"{NEW_VIP}/32", "dev", "lo"])
    run_in_netns(lab.gateway.netns, ["ip", "neigh", "replace", NEW_VIP, "lladdr", stale, "dev", "inside",
                                     "nud", "stale"])
    assert NEW_VIP not in nic_addresses(lab)
    try:
        daemon.start()
        config.write_text(base + new_vip_service(lab))
        reloaded = time.monotonic()
        code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 0, err
        assert f"{NEW_VIP}/32" in nic_addresses(lab)
        wait_for(lambda: gateway_mac() == lab.director_nic.mac, 1.0, "gratuitous ARP for the new VIP")
        wait_for(new_vip_answers, max(0.1, 2.0 - (time.monotonic() - reloaded)), "the new VIP answers within 2 s")
        assert "vip_takeover" in daemon.log.read_text()

        config.write_text(base)
        code, out, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 0, err
        assert NEW_VIP not in nic_addresses(lab)  # let go: this director no longer answers ARP for it
        run_in_netns(lab.gateway.netns, ["ip", "neigh", "del", NEW_VIP, "dev", "inside"], check=False)
        assert not new_vip_answers()
        assert lab.vip in nic_addresses(lab)  # configured by the admin (the lab): kept
        assert f"event=service_removed service=tcp/{NEW_VIP}:80" in daemon.log.read_text()
        assert http_get(lab.client.netns, lab.public_ip).server in ("rs1", "rs2")
    finally:
        daemon.stop()
        for node in ("rs1", "rs2"):
            run_in_netns(lab.node(node).netns, ["ip", "addr", "del", f"{NEW_VIP}/32", "dev", "lo"], check=False)
        run_in_netns(lab.gateway.netns, ["ip", "neigh", "del", NEW_VIP, "dev", "inside"], check=False)
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))
    assert NEW_VIP not in nic_addresses(lab)


NODE_IPVS_TOTALS = ("connections", "incoming_packets", "outgoing_packets", "incoming_bytes", "outgoing_bytes")


def scrape(topo: Topology) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """The node_ipvs_* samples of the daemon's /metrics: name -> {sorted labels: value}."""
    with in_netns(topo.director.netns), urlopen(f"{STATUS}/metrics", timeout=5) as response:  # noqa: S310
        text = response.read().decode()
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("node_ipvs_"):
                samples.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def ipvs_as_node_exporter(topo: Topology) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """What node_exporter's ipvs collector would report, from `pyvsadm -L -n` and `pyvsadm -L -n --stats --exact`
    (its /proc/net/ip_vs and ip_vs_stats)."""
    expected: dict[str, dict[tuple[tuple[str, str], ...], float]] = {
        f"node_ipvs_{name}_total": {(): 0} for name in NODE_IPVS_TOTALS}
    for name in ("connections_active", "connections_inactive", "weight"):
        expected[f"node_ipvs_backend_{name}"] = {}
    service: tuple[str, str, str] = ("", "", "")
    for line in pyvsadm(topo, "-L", "-n").splitlines():
        fields = line.split()
        if fields and fields[0] in ("TCP", "UDP"):
            vip, port = fields[1].rsplit(":", 1)
            service = (fields[0], vip, port)
        elif fields and fields[0] == "->" and fields[1] != "RemoteAddress:Port":
            address, rport = fields[1].rsplit(":", 1)
            labels = tuple(sorted({"proto": service[0], "local_address": service[1], "local_port": service[2],
                                   "remote_address": address, "remote_port": rport, "local_mark": ""}.items()))
            weight, active, inactive = (float(v) for v in fields[3:6])
            expected["node_ipvs_backend_weight"][labels] = weight
            expected["node_ipvs_backend_connections_active"][labels] = active
            expected["node_ipvs_backend_connections_inactive"][labels] = inactive
    for line in pyvsadm(topo, "-L", "-n", "--stats", "--exact").splitlines():
        fields = line.split()
        if fields and fields[0] in ("TCP", "UDP"):  # Conns InPkts OutPkts InBytes OutBytes
            for name, value in zip(("connections", "incoming_packets", "outgoing_packets", "incoming_bytes",
                                    "outgoing_bytes"), fields[2:7], strict=True):
                expected[f"node_ipvs_{name}_total"][()] += float(value)
    return expected


def test_metrics_carry_node_exporters_ipvs_families_as_the_data_plane_lists_them(lab: Topology,
                                                                                  tmp_path: Path) -> None:
    config = tmp_path / "director.toml"
    config.write_text(config_text(lab, tmp_path / "notify.log", rs2_weight=3))
    daemon = Daemon(lab, config, tmp_path / "daemon.log", tmp_path / "notify.log")
    hand = f"{lab.vip}:9000"
    try:
        pyvsadm(lab, "-A", "-t", hand, "-s", "rr")  # a service made by hand: node_exporter would list it too
        pyvsadm(lab, "-a", "-t", hand, "-r", f"{lab.address_of('rs1')}:9000", "-g", "-w", "5")
        daemon.start()
        for _ in range(6):
            http_get(lab.client.netns, lab.public_ip, timeout=5)
        with http_connection(lab.client.netns, lab.public_ip) as kept:  # one established: an active connection
            keepalive_get(kept)
            for _ in range(50):  # the same numbers in two scrapes around the listing: nothing moved meanwhile
                before = scrape(lab)
                expected = ipvs_as_node_exporter(lab)
                if scrape(lab) == before:
                    break
                time.sleep(0.1)
            else:
                raise AssertionError("the counts kept moving")
        assert before == expected
        assert before["node_ipvs_connections_total"][()] >= 7 and before["node_ipvs_outgoing_bytes_total"][()] == 0
        assert sum(before["node_ipvs_backend_connections_active"].values()) >= 1
        weights = {dict(k)["remote_address"] + ":" + dict(k)["local_port"] + "/" + dict(k)["proto"]: v
                   for k, v in before["node_ipvs_backend_weight"].items()}
        assert weights[f"{lab.address_of('rs2')}:80/TCP"] == 3 and weights[f"{lab.address_of('rs1')}:9000/TCP"] == 5
        assert weights[f"{lab.address_of('rs1')}:80/UDP"] == 1

        config.write_text(config_text(lab, tmp_path / "notify.log", rs2_weight=3)
                          .replace("[director]\n", "[director]\nnode_exporter_metrics = false\n", 1))
        code, _, err = pyvs_cli(lab, "director", "reload", "--pin-dir", str(pin_dir(lab)))
        assert code == 0, err
        wait_for(lambda: not scrape(lab), 5, "the node_ipvs families go with node_exporter_metrics = false")
    finally:
        daemon.stop()
        with in_netns(lab.director.netns), open_director(lab) as dp:
            dp.apply(tutorial_rules(lab))
