"""The lab cluster and the real-server configuration, on real kernels in network namespaces."""

from __future__ import annotations

import ipaddress
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from pyvs import netns, realserver
from pyvs.lab import lab as lab_api
from pyvs.lab.topology import Role, Topology, default_topology

from .conftest import LAB_PREFIX

VIP = "198.18.0.100"
BENCHMARK_NET = ipaddress.IPv4Network("198.18.0.0/15")


def pyvs_cli(ns: str | None, *args: str) -> tuple[int, str, str]:
    proc = netns.run_in_netns(ns, [sys.executable, "-m", "pyvs.cli", *args], check=False)
    return proc.returncode, proc.stdout, proc.stderr


def curl(ns: str, *args: str) -> str:
    return netns.run_in_netns(ns, ["curl", "-sS", "--max-time", "5", *args]).stdout


def udp_ask(ns: str, address: str, port: int, payload: bytes) -> bytes:
    with netns.in_netns(ns):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with sock:
        sock.settimeout(3)
        sock.connect((address, port))  # a connected socket takes answers from that address only
        sock.send(payload)
        return sock.recv(2048)


# -- topology as data -------------------------------------------------------------------------


def test_topology_names_fit_and_addresses_are_in_the_benchmark_range() -> None:
    topo = default_topology(prefix="pyvs123456")
    for port in topo.ports():
        assert len(port.ifname) <= 15, port
        for cidr in port.addresses:
            assert ipaddress.IPv4Interface(cidr).ip in BENCHMARK_NET
    assert all(node.netns.startswith("pyvs123456-") for node in topo.nodes)
    macs = [port.mac for port in topo.ports()]
    assert len(set(macs)) == len(macs) and all(m and m.startswith("02:") for m in macs)
    with pytest.raises(ValueError):
        default_topology(prefix="lab")


def test_topology_exposes_the_director_nic_and_its_switch_port() -> None:
    topo = default_topology(prefix="pyvst")
    assert topo.director_nic.node == "director" and topo.director_nic.ifname == "eth0"
    assert topo.director_nic.addresses[0] == f"{VIP}/24"  # the VIP is the primary address
    assert topo.director_switch_port.node == "switch" and topo.director_switch_port.ifname == "pyvst-dir"
    assert topo.director_switch_port.ifname in topo.bridge.ports
    assert [n.name for n in topo.reals] == ["rs1", "rs2"]
    assert topo.address_of("rs2") == "198.18.2.12"
    assert topo.node("switch").role is Role.SWITCH


# -- the running lab --------------------------------------------------------------------------


def test_client_reaches_the_gateway_public_address(lab: Topology) -> None:
    with netns.in_netns(lab.gateway.netns):
        server = socket.create_server((lab.public_ip, 8080))
    with server:
        with netns.in_netns(lab.client.netns):
            client = socket.create_connection((lab.public_ip, 8080), timeout=3)
        with client, server.accept()[0] as conn:
            client.sendall(b"hello")
            assert conn.recv(5) == b"hello"
            assert conn.getpeername()[0] == "198.18.1.2"


def test_real_servers_answer_http_on_their_rip_from_the_director(lab: Topology) -> None:
    for real in lab.reals:
        rip = lab.address_of(real.name)
        assert curl(lab.director.netns, f"http://{rip}/") == f"{real.name}\n"
        headers = curl(lab.director.netns, "-D", "-", "-o", "/dev/null", f"http://{rip}/bytes/10")
        assert f"X-Served-By: {real.name}" in headers


def test_bytes_endpoint_streams_and_keeps_the_connection_alive(lab: Topology) -> None:
    url = f"http://{lab.address_of('rs1')}/bytes/10485760"
    proc = netns.run_in_netns(
        lab.director.netns, ["curl", "-sv", "--max-time", "10", "-o", "/dev/null", "-o", "/dev/null", url, url]
    )
    assert proc.stderr.count("Content-Length: 10485760") == 2
    assert "Re-using existing connection" in proc.stderr or "Reusing existing" in proc.stderr


def test_udp_echo_answers_with_the_node_name(lab: Topology) -> None:
    for real in lab.reals:
        answer = udp_ask(lab.director.netns, lab.address_of(real.name), 80, b"ping")
        assert answer == f"{real.name} ping".encode()


def test_udp_echo_answers_from_the_address_it_was_sent_to(lab: Topology) -> None:
    # Sent to the VIP, the answer must come from the VIP (not the RIP) as DR requires.
    assert udp_ask(lab.node("rs1").netns, VIP, 80, b"vip") == b"rs1 vip"


def test_realserver_check_is_all_ok_on_the_reals(lab: Topology) -> None:
    for real in lab.reals:
        with netns.in_netns(real.netns):
            findings = realserver.check(VIP)
        assert all(f.ok for f in findings), findings
        assert any(f.name == "VIP on lo" for f in findings)


def test_gateway_forwards_and_dnats_port_80_to_the_vip(lab: Topology) -> None:
    assert netns.read_sysctl("net.ipv4.ip_forward", netns=lab.gateway.netns) == "1"
    assert {d.protocol for d in lab.dnat} == {"tcp", "udp"}
    for dnat in lab.dnat:
        assert lab_api.dnat_present(lab, dnat)
    rules = netns.run_in_netns(lab.gateway.netns, ["iptables", "-t", "nat", "-S", "PREROUTING"]).stdout
    for proto in ("tcp", "udp"):
        assert f"-d 198.18.1.1/32 -p {proto} -m {proto} --dport 80 -j DNAT --to-destination {VIP}:80" in rules


def test_veths_have_tx_checksum_offload_off(lab: Topology) -> None:
    for port in lab.ports():
        features = netns.run_in_netns(lab.node(port.node).netns, ["ethtool", "-k", port.ifname]).stdout
        assert "tx-checksumming: off" in features, port


def test_lab_up_twice_is_idempotent(lab: Topology) -> None:
    assert lab_api.up(lab) == []
    code, out, err = pyvs_cli(None, "lab", "up", "--prefix", lab.prefix)
    assert (code, out.strip(), err) == (0, f"lab {lab.prefix} is up: nothing to repair", "")
    assert lab_api.status(lab)["healthy"]
    code, out, _ = pyvs_cli(None, "lab", "status", "--prefix", lab.prefix)
    assert code == 0 and "healthy" in out and "rs1 web" in out


def test_lab_exec_enters_with_setns_only(lab: Topology) -> None:
    # ip netns exec would remount /sys and hide /sys/fs/bpf; lab exec must not.
    script = "echo $PYVS_NETNS; stat -f -c %T /sys/fs/bpf; ip -o -4 addr show dev eth0"
    code, out, err = pyvs_cli(None, "lab", "exec", "--prefix", lab.prefix, "director", "--", "sh", "-c", script)
    assert code == 0, err
    name, fs_type, addresses = out.splitlines()[:3]
    assert name == lab.director.netns
    assert fs_type == netns.run_in_netns(None, ["stat", "-f", "-c", "%T", "/sys/fs/bpf"]).stdout.strip()
    assert VIP in addresses


def test_lab_up_finishes_a_partial_lab_and_down_cleans_up_after_a_crash() -> None:
    topo = default_topology(prefix=LAB_PREFIX + "2")
    try:
        lab_api.up(topo)
        # Break it: a real loses its NIC, another its server.
        netns.run_in_netns(topo.node("rs2").netns, ["ip", "link", "del", "eth0"])
        pid = lab_api.status(topo)["servers"]["rs1"]["pid"]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        assert not lab_api.status(topo)["healthy"]

        actions = lab_api.up(topo)
        assert any(f"created veth {LAB_PREFIX}2-rs2:eth0" in a for a in actions)
        assert any(f"started web server in {LAB_PREFIX}2-rs1" in a for a in actions)
        assert lab_api.status(topo)["healthy"]
        assert curl(topo.director.netns, "http://198.18.2.12/") == "rs2\n"

        # pyvsadm run on another node, as the README shows it, pins a data plane there (and attaches pyvs's
        # program to the node's eth0 by itself, generic mode): down removes it too.
        code, _, err = pyvs_cli(None, "lab", "exec", "--prefix", topo.prefix, "client", "--",
                                sys.executable, "-m", "pyvs.admin.cli", "-A", "-t", "198.18.0.100:80")
        assert code == 0 and "attached (generic mode) to eth0" in err, err

        # A crash loses the state file: down() must still find everything.
        (lab_api.state_dir(topo) / "state.json").unlink()
    finally:
        lab_api.down(topo)
    assert not [ns for ns in netns.list_netns() if ns.startswith(f"{LAB_PREFIX}2-")]
    from pyvs.dataplane.pins import bpffs_root

    assert not [p for p in (bpffs_root() / "pyvs").iterdir() if p.name.startswith(f"{LAB_PREFIX}2-")]
    assert not Path(lab_api.state_dir(topo)).exists()
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            assert not lab_api._is_lab_server(int(proc.name), topo), proc


# -- realserver, in a throwaway namespace -----------------------------------------------------

SETTINGS = [
    f"net.ipv4.conf.{iface}.{name}"
    for iface in ("all", "lo", "eth0")
    for name in ("arp_ignore", "arp_announce", "rp_filter")
]


def sysctls(ns: str) -> dict[str, str]:
    return {key: netns.read_sysctl(key, netns=ns) for key in SETTINGS}


def addresses(ns: str, dev: str) -> str:
    return netns.run_in_netns(ns, ["ip", "-o", "-4", "addr", "show", "dev", dev]).stdout


def test_realserver_up_check_down_restores_exactly(throwaway_netns: str) -> None:
    ns = throwaway_netns
    netns.write_sysctl("net.ipv4.conf.eth0.rp_filter", 1, netns=ns)
    before = sysctls(ns)
    with netns.in_netns(ns):
        changes = realserver.up(VIP)
        state_file = realserver.state_path()
        assert state_file.exists()
        assert "added 198.18.0.100/32 to lo" in changes
        assert any("eth0.rp_filter=0 (was 1)" in c for c in changes)
        assert all(f.ok for f in realserver.check(VIP)), realserver.check(VIP)
        assert realserver.up(VIP) == []  # nothing left to change
        assert f"{VIP}/32" in addresses(ns, "lo")
        realserver.down()
    assert sysctls(ns) == before
    assert VIP not in addresses(ns, "lo")
    assert not state_file.exists()
    assert "state DOWN" in netns.run_in_netns(ns, ["ip", "link", "show", "lo"]).stdout


def arptables_rules() -> str:
    # -n: without it arptables resolves addresses to names (a DNS timeout in a lab netns).
    return netns.run_in_netns(None, ["arptables", "-n", "-L"]).stdout


def test_realserver_arptables_method_adds_and_removes_its_rules(throwaway_netns: str) -> None:
    ns = throwaway_netns
    before = sysctls(ns)
    with netns.in_netns(ns):
        realserver.up(VIP, method="arptables")
        rules = arptables_rules()
        assert f"-j DROP -d {VIP}" in rules
        assert f"-j mangle -s {VIP} --mangle-ip-s 198.18.3.2" in rules
        findings = realserver.check(VIP)
        assert all(f.ok for f in findings), findings
        assert any("arptables" in f.name for f in findings)
        realserver.down()
        assert VIP not in arptables_rules()
    assert sysctls(ns) == before


def test_realserver_check_reports_wrong_settings_with_commands_that_fix_them(throwaway_netns: str) -> None:
    ns = throwaway_netns
    with netns.in_netns(ns):
        findings = {f.name: f for f in realserver.check(VIP)}
    assert not findings["arp_ignore on eth0"].ok
    assert findings["arp_ignore on eth0"].fix_command == "sysctl -w net.ipv4.conf.eth0.arp_ignore=1"
    assert findings["VIP on lo"].actual == "absent"
    assert findings["VIP on lo"].fix_command == f"ip addr add {VIP}/32 dev lo"

    code, out, _ = pyvs_cli(ns, "realserver", "check", "--vip", VIP)
    assert code == 1 and "WRONG" in out and "sysctl -w net.ipv4.conf.eth0.arp_announce=2" in out

    for finding in findings.values():  # the fixes really fix
        if finding.fix_command:
            netns.run_in_netns(ns, ["sh", "-c", finding.fix_command])
    code, out, _ = pyvs_cli(ns, "realserver", "check", "--vip", VIP)
    assert code == 0 and "WRONG" not in out


def test_realserver_refuses_and_reports_the_vip_on_the_nic(throwaway_netns: str) -> None:
    ns = throwaway_netns
    netns.run_in_netns(ns, ["ip", "addr", "add", f"{VIP}/24", "dev", "eth0"])
    with netns.in_netns(ns):
        findings = {f.name: f for f in realserver.check(VIP)}
        with pytest.raises(realserver.RealServerError, match="is on eth0"):
            realserver.up(VIP)
    assert findings["VIP not on eth0"].fix_command == f"ip addr del {VIP}/24 dev eth0"
    assert not findings["VIP not on eth0"].ok
    code, _, err = pyvs_cli(ns, "realserver", "up", "--vip", VIP)
    assert code == 1 and err.startswith("pyvs: VIP 198.18.0.100 is on eth0") and "Traceback" not in err


def test_cli_errors_are_one_line_with_exit_codes(throwaway_netns: str) -> None:
    code, _, err = pyvs_cli(throwaway_netns, "realserver", "check", "--vip", VIP, "--dev", "nosuch0")
    assert (code, err) == (1, "pyvs: no interface nosuch0 with IPv4 in this network namespace\n")
    code, _, err = pyvs_cli(throwaway_netns, "realserver", "check")
    assert code == 2 and "pyvs: the following arguments are required: --vip" in err
    code, out, _ = pyvs_cli(throwaway_netns, "realserver", "down")
    assert code == 0 and "nothing to restore" in out


def test_a_namespace_made_after_another_was_deleted_does_not_inherit_its_realserver_state() -> None:
    # A deleted namespace's inode goes to the next one made: state keyed by inode was found by the wrong namespace
    # (its `realserver down` "restored" sysctls it never changed). The state is keyed by the netns cookie.
    name = f"{LAB_PREFIX}-rsy"
    left: list[Path] = []
    try:
        netns.create(name)
        for argv in (["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth1"],
                     ["ip", "addr", "add", "198.18.3.2/24", "dev", "eth0"], ["ip", "link", "set", "eth0", "up"]):
            netns.run_in_netns(name, argv)
        code, out, err = pyvs_cli(name, "realserver", "up", "--vip", VIP)
        assert code == 0 and "arp_ignore" in out, (out, err)
        with netns.in_netns(name):
            left.append(realserver.state_path())
        assert left[0].exists()
        old_inode = os.stat(f"/run/netns/{name}").st_ino
        netns.remove(name)  # without `realserver down`: its state file stays behind
        for _ in range(100):  # the inode is freed once the kernel has cleaned the namespace up: wait for its reuse
            netns.create(name)
            if os.stat(f"/run/netns/{name}").st_ino == old_inode:
                break
            netns.remove(name)
            time.sleep(0.02)
        else:
            netns.create(name)
        code, out, err = pyvs_cli(name, "realserver", "down")
        assert code == 0 and "nothing to restore" in out, (out, err)
    finally:
        for path in left:
            path.unlink(missing_ok=True)
        if netns.exists(name):
            netns.remove(name)
