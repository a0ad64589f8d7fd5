"""The tutorial's cluster end to end: real clients through the gateway, XDP on the director, real servers."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

from pyvs.lab.topology import Topology
from pyvs.lab.traffic import director_port_bytes, http_connection, http_get, keepalive_get, udp_ask
from pyvs.netns import run_in_netns


def pyvsadm(topo: Topology, *args: str, stdin: str | None = None) -> str:
    """Run the real pyvsadm command inside the lab director."""
    result = run_in_netns(topo.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args], input=stdin)
    return result.stdout


def test_100_requests_through_the_gateway_split_exactly_50_50(lab: Topology) -> None:
    served = Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(100))
    assert served == {"rs1": 50, "rs2": 50}


def test_udp_service_is_answered_by_both_reals(lab: Topology) -> None:
    answers = [udp_ask(lab.client.netns, lab.public_ip, f"hello{n}".encode()) for n in range(6)]
    assert {a.split()[0] for a in answers} == {"rs1", "rs2"}
    assert all(a.endswith(f"hello{n}") for n, a in enumerate(answers))


def test_10_mib_download_does_not_pass_through_the_director(lab: Topology) -> None:
    size = 10 * 1024 * 1024
    before = director_port_bytes(lab)
    reply = http_get(lab.client.netns, lab.public_ip, f"/bytes/{size}", timeout=60)
    sent_by_director = director_port_bytes(lab).rx - before.rx
    assert reply.body_bytes == size
    assert sent_by_director < 0.05 * size, f"director transmitted {sent_by_director} bytes"
    assert sent_by_director > 0  # the client's ACKs did pass it, through XDP


def test_weight_zero_takes_no_new_connections_while_an_open_one_keeps_working(lab: Topology) -> None:
    vip = f"{lab.vip}:80"
    with http_connection(lab.client.netns, lab.public_ip) as kept:
        drained = keepalive_get(kept).server
        rip = lab.address_of(drained)
        pyvsadm(lab, "-e", "-t", vip, "-r", f"{rip}:80", "-g", "-w", "0")
        try:
            assert f"{rip}:80               Route   0" in pyvsadm(lab, "-L", "-n")
            new = Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(10))
            assert drained not in new and sum(new.values()) == 10
            assert [keepalive_get(kept).server for _ in range(5)] == [drained] * 5
        finally:
            pyvsadm(lab, "-e", "-t", vip, "-r", f"{rip}:80", "-g", "-w", "1")


def test_save_clear_restore_round_trips_in_the_director(lab: Topology) -> None:
    saved = pyvsadm(lab, "-S", "-n")
    assert "-A -t 198.18.0.100:80 -s rr" in saved
    pyvsadm(lab, "-C")
    assert pyvsadm(lab, "-S", "-n") == ""
    pyvsadm(lab, "-R", stdin=saved)
    assert pyvsadm(lab, "-S", "-n") == saved
    assert Counter(http_get(lab.client.netns, lab.public_ip).server for _ in range(4)) == {"rs1": 2, "rs2": 2}


def test_pyvsadm_through_ip_netns_exec_sees_the_same_rules(lab: Topology) -> None:
    # Admins run `ip netns exec NS pyvsadm ...`, which hides /sys/fs/bpf; the rules must still be there.
    listing = subprocess.run(["ip", "netns", "exec", lab.director.netns, sys.executable, "-m", "pyvs.admin.cli",
                              "-L", "-n"], capture_output=True, text=True, check=True).stdout
    assert listing == pyvsadm(lab, "-L", "-n")
    assert "TCP  198.18.0.100:80 rr" in listing


def test_demo_command_shows_both_reals_and_the_director_counters(lab: Topology) -> None:
    result = subprocess.run([sys.executable, "-m", "pyvs.cli", "lab", "demo", "--prefix", lab.prefix],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "split: rs1 5, rs2 5" in result.stdout
    assert "TCP 198.18.0.100:80: " in result.stdout and "0 out (replies never reach the director)" in result.stdout
    assert "never through the director" in result.stdout
