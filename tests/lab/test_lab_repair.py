"""The lab owns its state: `lab status` finds what the demo needs and lacks, `lab up` repairs it and says what,
`lab demo` fails in one line with the fix."""

from __future__ import annotations

import sys

from pyvs import netns
from pyvs.dataplane import Dataplane, remove_pins
from pyvs.lab import lab as lab_api
from pyvs.lab.director import open_director, pin_dir
from pyvs.lab.topology import Topology

VIP = "198.18.0.100"


def pyvs(*args: str) -> tuple[int, str, str]:
    proc = netns.run_in_netns(None, [sys.executable, "-m", "pyvs.cli", *args], check=False, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


def pyvsadm(lab: Topology, *args: str) -> None:
    netns.run_in_netns(lab.director.netns, [sys.executable, "-m", "pyvs.admin.cli", *args])


def test_status_finds_and_up_repairs_rules_attachment_and_reals(lab: Topology) -> None:
    prefix = ["--prefix", lab.prefix]
    try:
        # The README's pyvsadm examples, and worse: rules changed, XDP detached, a real half set up.
        pyvsadm(lab, "-e", "-t", f"{VIP}:80", "-r", "198.18.2.12:80", "-w", "0")
        pyvsadm(lab, "-D", "-u", f"{VIP}:80")
        pyvsadm(lab, "-A", "-t", f"{VIP}:443", "-s", "wlc")
        netns.run_in_netns(lab.director.netns, [sys.executable, "-m", "pyvs.cli", "director", "detach", "--dev",
                                                "eth0"])
        netns.run_in_netns(lab.node("rs2").netns, ["ip", "addr", "del", f"{VIP}/32", "dev", "lo"])
        lab_api.stop_web_server(lab, "rs1")

        code, out, _ = pyvs("lab", "status", *prefix)
        assert code == 1 and f"lab {lab.prefix}: NOT healthy" in out
        problems = [line for line in out.splitlines() if line.startswith("problem: ")]
        assert f"problem: XDP is not attached to {lab.prefix}-director:eth0: nothing forwards" in problems
        assert f"problem: service TCP {VIP}:80: changed" in problems
        assert f"problem: service UDP {VIP}:80: missing" in problems
        assert f"problem: service TCP {VIP}:443: not the tutorial's" in problems
        assert "problem: rs1's web server is not running" in problems
        assert any(p.startswith("problem: rs2 is not set up as a real server (VIP on lo") for p in problems)
        assert out.splitlines()[-1] == f"fix: pyvs lab up --prefix {lab.prefix} (it repairs all of the above and " \
                                       "says what it did)"

        code, out, err = pyvs("lab", "up", *prefix)
        assert code == 0, err
        for repaired in (f"attached XDP (native) to {lab.prefix}-director:eth0",
                         f"restored service TCP {VIP}:80 (changed) in {lab.prefix}-director",
                         f"restored service UDP {VIP}:80 (missing) in {lab.prefix}-director",
                         f"removed service TCP {VIP}:443 (not the tutorial's) in {lab.prefix}-director",
                         f"started web server in {lab.prefix}-rs1"):
            assert repaired in out, out
        assert f"{lab.prefix}-rs2: added {VIP}/32 to lo" in out, out

        code, out, _ = pyvs("lab", "status", *prefix)
        assert (code, out.splitlines()[0]) == (0, f"lab {lab.prefix}: healthy"), out
        assert pyvs("lab", "up", *prefix)[1] == f"lab {lab.prefix} is up: nothing to repair\n"
        code, out, err = pyvs("lab", "demo", *prefix)
        assert code == 0 and "split: rs1 5, rs2 5" in out, err
    finally:
        lab_api.up(lab)


def test_a_program_left_attached_after_its_pins_were_removed_is_found_and_replaced(lab: Topology) -> None:
    prefix = ["--prefix", lab.prefix]
    nic = lab.director_nic.ifname
    try:
        # The pins go (an admin's rm -r, a bpffs remounted) while the program stays attached with its old maps.
        remove_pins(pin_dir(lab))
        code, out, _ = pyvs("lab", "up", *prefix)
        assert code == 0, out
        assert f"replaced the stale pyvs program on {lab.prefix}-director:{nic}" in out, out
        with netns.in_netns(lab.director.netns), open_director(lab) as dp:
            found = Dataplane.xdp_program(nic)
            assert found is not None and dp.serves(found[1])
        # The rules written to the new pins are the ones that forward.
        code, out, err = pyvs("lab", "demo", *prefix)
        assert code == 0 and "split: rs1 5, rs2 5" in out, err
    finally:
        lab_api.up(lab)


def test_demo_explains_a_failure_in_one_line_with_the_fix(lab: Topology) -> None:
    reject = ["OUTPUT", "-p", "tcp", "--dport", "80", "-j", "REJECT", "--reject-with", "tcp-reset"]
    netns.run_in_netns(lab.client.netns, ["iptables", "-A", *reject])
    try:
        code, _, err = pyvs("lab", "demo", "--prefix", lab.prefix)
    finally:
        netns.run_in_netns(lab.client.netns, ["iptables", "-D", *reject])
    assert code == 1
    assert err.count("\n") == 1, err
    assert err.startswith(f"pyvs: the demo's traffic failed: GET http://{lab.public_ip}/ #1 from the client: ")
    assert err.endswith(f"see `pyvs lab status --prefix {lab.prefix}`, and `pyvs lab up --prefix {lab.prefix}` "
                        "repairs the lab\n")


def test_a_real_sent_to_a_wrong_mac_is_found_and_repaired(lab: Topology) -> None:
    prefix = ["--prefix", lab.prefix]
    rs1, forged = "198.18.2.11", "02:c6:12:00:99:01"
    rs1_mac = lab.port("rs1", "eth0").mac
    try:
        # What a forged ARP reply leaves: the kernel's entry at the forger; a resolve then takes it.
        netns.run_in_netns(lab.director.netns, ["ip", "neigh", "replace", rs1, "lladdr", forged, "dev", "eth0",
                                                "nud", "reachable"])
        netns.run_in_netns(lab.director.netns, [sys.executable, "-m", "pyvs.cli", "director", "resolve"])
        code, out, _ = pyvs("lab", "status", *prefix)
        assert code == 1, out
        problems = [line for line in out.splitlines() if line.startswith("problem: ")]
        assert f"problem: the data plane sends {rs1}'s flows to {forged}, not to its NIC" in problems, out
        assert f"problem: the director's neighbour entry for {rs1} is at {forged}, not its NIC's MAC" in problems

        code, out, err = pyvs("lab", "up", *prefix)
        assert code == 0, err
        assert f"put the director's neighbour entry for {rs1} back at {rs1_mac} (was {forged})" in out, out
        assert f"pointed the data plane's entries for {rs1} back at {rs1_mac} (was {forged})" in out, out
        assert pyvs("lab", "status", *prefix)[0] == 0
        code, out, err = pyvs("lab", "demo", *prefix)
        assert code == 0 and "split: rs1 5, rs2 5" in out, err
    finally:
        lab_api.up(lab)
