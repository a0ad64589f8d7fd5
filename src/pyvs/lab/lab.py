"""Build, inspect and remove the lab cluster that a Topology describes.

Every step of up() first looks at what is there and only changes what is missing, so
up() finishes a partial lab and is a no-op on a healthy one. down() works from names
and recorded PIDs alone, so it also cleans up after a crash.
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl.ifaddrmsg import IFA_F_NODAD

from pyvs import netns, realserver
from pyvs.lab.state import child_env, load_state, save_state, state_dir
from pyvs.lab.topology import Dnat, Link, Node, Port, Role, Route, Topology, ecmp_topology, vrrp_topology
from pyvs.links import link_index

log = logging.getLogger(__name__)

WEBSERVER_MODULE = "pyvs.lab.webserver"
RTNH_F_ONLINK = 4
IFF_UP = 1
SERVER_START_TIMEOUT = 10.0
SERVER_STOP_TIMEOUT = 3.0


class LabError(Exception):
    """The lab cannot be built, inspected or removed."""


# -- namespaces, links, bridge ----------------------------------------------------------------


def _record_ipv6(topo: Topology) -> None:
    state = load_state(topo)
    method = None if topo.method == "dr" else f"{topo.method}:{topo.tun_type}"
    if state.get("ipv6") != topo.ipv6 or state.get("method") != method:
        state["ipv6"] = topo.ipv6
        state["method"] = method
        save_state(topo, state)


def recorded_method(topo: Topology) -> tuple[str, str] | None:
    """(method, tunnel type) the lab of this prefix was brought up with (`pyvs lab up --method tun`), None for dr."""
    method = load_state(topo).get("method")
    if not method:
        return None
    name, _, tun_type = str(method).partition(":")
    return name, tun_type


def recorded_ipv6(topo: Topology) -> bool:
    """Whether the lab of this prefix was brought up dual-stack (`pyvs lab up --ipv6`)."""
    return bool(load_state(topo).get("ipv6"))


def _ns(topo: Topology, node_name: str) -> str:
    return topo.node(node_name).netns


def _index(ipr: IPRoute, ifname: str) -> int | None:
    return link_index(ifname, ipr)


def _require_index(ipr: IPRoute, ifname: str) -> int:
    index = _index(ipr, ifname)
    if index is None:
        raise LabError(f"interface {ifname} is missing")
    return index


def _ensure_namespaces(topo: Topology, actions: list[str]) -> None:
    for node in topo.nodes:
        if not netns.exists(node.netns):
            netns.create(node.netns)
            actions.append(f"created netns {node.netns}")


def _ensure_link(topo: Topology, link: Link, actions: list[str]) -> None:
    a_ns, b_ns = _ns(topo, link.a.node), _ns(topo, link.b.node)
    with IPRoute(netns=a_ns, flags=0) as ipr:
        if _index(ipr, link.a.ifname) is not None:
            return
        with IPRoute(netns=b_ns, flags=0) as peer_ipr:  # a stale, unpaired peer name
            stale = _index(peer_ipr, link.b.ifname)
            if stale is not None:
                peer_ipr.link("del", index=stale)
        queues: dict[str, int] = {}
        if link.queues:
            queues = {"num_tx_queues": link.queues, "num_rx_queues": link.queues}
        a_mac = {"address": link.a.mac} if link.a.mac else {}
        b_mac = {"address": link.b.mac} if link.b.mac else {}
        peer = {"ifname": link.b.ifname, "net_ns_fd": b_ns, **queues, **b_mac}
        ipr.link("add", ifname=link.a.ifname, kind="veth", peer=peer, **queues, **a_mac)
    actions.append(f"created veth {a_ns}:{link.a.ifname} <-> {b_ns}:{link.b.ifname}")


def _ensure_bridge(topo: Topology, actions: list[str]) -> None:
    bridge = topo.bridge
    with IPRoute(netns=_ns(topo, bridge.node), flags=0) as ipr:
        if _index(ipr, bridge.ifname) is None:
            ipr.link("add", ifname=bridge.ifname, kind="bridge")
            actions.append(f"created bridge {bridge.ifname}")
        bridge_index = _require_index(ipr, bridge.ifname)
        for port in bridge.ports:
            index = _require_index(ipr, port)
            if ipr.get_links(index)[0].get("IFLA_MASTER") != bridge_index:
                ipr.link("set", index=index, master=bridge_index)
                actions.append(f"added {port} to bridge {bridge.ifname}")


def _ensure_tx_checksum_off(topo: Topology, port: Port, actions: list[str]) -> None:
    ns = _ns(topo, port.node)
    features = netns.run_in_netns(ns, ["ethtool", "-k", port.ifname]).stdout
    if "tx-checksumming: off" not in features:
        netns.run_in_netns(ns, ["ethtool", "-K", port.ifname, "tx", "off"])
        actions.append(f"tx checksum offload off on {ns}:{port.ifname}")


def _family(version: int) -> int:
    return socket.AF_INET if version == 4 else socket.AF_INET6


def _route_present(ipr: IPRoute, route: Route, oif: int | None) -> bool:
    dst, _, plen = route.dst.partition("/")
    dst_len = 0 if route.dst == "default" else int(plen or (32 if route.family == 4 else 128))
    for existing in ipr.get_routes(family=_family(route.family), table=254):
        if existing["dst_len"] != dst_len or (dst_len and existing.get("RTA_DST") != dst):
            continue
        same_gateway = existing.get("RTA_GATEWAY") == route.gateway
        same_dev = oif is None or existing.get("RTA_OIF") == oif
        return same_gateway and same_dev
    return False


def _ensure_node_network(topo: Topology, node: Node, actions: list[str]) -> None:
    """Addresses, link state and routes of one node."""
    with IPRoute(netns=node.netns, flags=0) as ipr:
        ifnames = ["lo", *(p.ifname for p in topo.ports(node.name))]
        if node.role is Role.SWITCH:
            ifnames.append(topo.bridge.ifname)
        for port in topo.ports(node.name):
            index = _require_index(ipr, port.ifname)
            if port.mac and ipr.get_links(index)[0].get("IFLA_ADDRESS") != port.mac:
                ipr.link("set", index=index, address=port.mac)
                actions.append(f"set MAC {port.mac} on {node.netns}:{port.ifname}")
            present = {f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for a in ipr.get_addr(index=index)}
            for cidr in port.addresses:  # in order: the first one of a subnet is primary
                if cidr not in present:
                    address, plen = cidr.split("/")
                    nodad = {"flags": IFA_F_NODAD} if ":" in address else {}  # usable at once
                    ipr.addr("add", index=index, address=address, prefixlen=int(plen), **nodad)
                    actions.append(f"added {cidr} to {node.netns}:{port.ifname}")
        for ifname in ifnames:
            index = _require_index(ipr, ifname)
            if not ipr.get_links(index)[0]["flags"] & IFF_UP:
                ipr.link("set", index=index, state="up")
                actions.append(f"set {node.netns}:{ifname} up")
        for route in node.routes:
            oif = _require_index(ipr, route.dev) if route.dev else None
            if _route_present(ipr, route, oif):
                continue
            spec: dict[str, Any] = {"dst": route.dst, "family": _family(route.family)}
            if route.gateway:
                spec["gateway"] = route.gateway
            if oif is not None:
                spec["oif"] = oif
            if route.onlink:
                spec["flags"] = RTNH_F_ONLINK
            ipr.route("replace", **spec)
            actions.append(f"route {route.dst} via {route.gateway or route.dev} in {node.netns}")


def _ensure_sysctls(node: Node, actions: list[str]) -> None:
    with netns.in_netns(node.netns):
        for key, value in node.sysctls:
            if netns.read_sysctl(key) != value:
                netns.write_sysctl(key, value)
                actions.append(f"sysctl {key}={value} in {node.netns}")


def dnat_rule(dnat: Dnat) -> list[str]:
    """iptables (ip6tables) arguments after the action (-A/-C/-D) for one DNAT spec."""
    host, target = (32, dnat.target_ip) if dnat.family == 4 else (128, f"[{dnat.target_ip}]")
    return [
        "PREROUTING", "-t", "nat", "-d", f"{dnat.public_ip}/{host}", "-p", dnat.protocol,
        "--dport", str(dnat.port), "-j", "DNAT", "--to-destination", f"{target}:{dnat.target_port}",
    ]  # fmt: skip


def iptables(dnat: Dnat) -> str:
    return "iptables" if dnat.family == 4 else "ip6tables"


def dnat_present(topo: Topology, dnat: Dnat) -> bool:
    ns = _ns(topo, dnat.node)
    return netns.run_in_netns(ns, [iptables(dnat), "-C", *dnat_rule(dnat)], check=False).returncode == 0


def _ensure_dnat(topo: Topology, actions: list[str]) -> None:
    for dnat in topo.dnat:
        if not dnat_present(topo, dnat):
            netns.run_in_netns(_ns(topo, dnat.node), [iptables(dnat), "-A", *dnat_rule(dnat)])
            actions.append(f"DNAT {dnat.protocol} {dnat.public_ip}:{dnat.port} -> {dnat.target_ip}")


def _ensure_realservers(topo: Topology, actions: list[str]) -> None:
    if topo.method == "nat":
        return  # NAT reals hold no VIP: the director gives them their own address
    for node in topo.reals:
        nic = topo.ports(node.name)[0].ifname
        tunnel = topo.tun_type if topo.method == "tun" else None
        with netns.in_netns(node.netns):
            changes = realserver.up(topo.vips, nic=nic, tunnel=tunnel, tun_port=topo.tun_port)
        actions.extend(f"{node.netns}: {change}" for change in changes)


# -- server processes -------------------------------------------------------------------------


def _server_argv(topo: Topology, node: Node) -> list[str]:
    return [
        sys.executable, "-m", WEBSERVER_MODULE, "--name", node.name, "--lab", topo.prefix,
        "--port", str(topo.port_of(node.name)), "--udp-port", str(topo.port_of(node.name, topo.udp_echo_port)),
        *(["--ipv6"] if topo.ipv6 else []),
    ]  # fmt: skip


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return raw.decode(errors="replace").split("\0")


def _is_lab_server(pid: int, topo: Topology, name: str | None = None) -> bool:
    """True if pid runs this lab's web server (for node name, if given), not a reused PID."""
    argv = _cmdline(pid)
    if WEBSERVER_MODULE not in argv:
        return False
    pairs = set(zip(argv, argv[1:], strict=False))
    return ("--lab", topo.prefix) in pairs and (name is None or ("--name", name) in pairs)


def _server_running(pid: int | None, topo: Topology, name: str) -> bool:
    if pid is None or not _is_lab_server(pid, topo, name):
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _wait_listening(ns: str, address: str, port: int, pid: int) -> None:
    deadline = time.monotonic() + SERVER_START_TIMEOUT
    while time.monotonic() < deadline:
        with netns.in_netns(ns):
            try:
                socket.create_connection((address, port), timeout=0.5).close()
                return
            except OSError:
                pass
        if not Path(f"/proc/{pid}").exists():
            break
        time.sleep(0.05)
    raise LabError(f"web server in {ns} (pid {pid}) did not come up on {address}:{port}")


def _ensure_server(topo: Topology, node: Node, actions: list[str]) -> None:
    state = load_state(topo)
    pid = state["servers"].get(node.name)
    if _server_running(pid, topo, node.name):
        return
    log_path = state_dir(topo) / f"{node.name}-web.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    pid = netns.spawn_in_netns(node.netns, _server_argv(topo, node), log_path=log_path, env=child_env())
    state["servers"][node.name] = pid
    save_state(topo, state)  # recorded at once: down() must find it even if we crash
    for version in _versions(topo):
        _wait_listening(node.netns, topo.address_of(node.name, version), topo.port_of(node.name), pid)
    actions.append(f"started web server in {node.netns} (pid {pid})")


def _versions(topo: Topology) -> tuple[int, ...]:
    return (4, 6) if topo.ipv6 else (4,)


def _ensure_servers(topo: Topology, actions: list[str]) -> None:
    for node in topo.reals:
        _ensure_server(topo, node, actions)


def stop_web_server(topo: Topology, name: str) -> None:
    """Stop one real's web server (e.g. to fail its health check); start_web_server brings it back."""
    state = load_state(topo)
    pid = state["servers"].pop(name, None)
    if pid is not None and _is_lab_server(int(pid), topo, name):
        _stop(int(pid))
    save_state(topo, state)


def start_web_server(topo: Topology, name: str) -> None:
    """Start one real's web server again (no-op when it runs) and wait until it listens."""
    _ensure_server(topo, topo.node(name), [])


def _stop(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + SERVER_STOP_TIMEOUT
    while time.monotonic() < deadline:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == pid:  # our child: reap it
                return
        except ChildProcessError:
            pass
        if not Path(f"/proc/{pid}").exists():
            return
        time.sleep(0.05)
    try:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def _lab_server_pids(topo: Topology) -> set[int]:
    """Recorded PIDs plus any of this lab's servers whose PID was never recorded (a crash)."""
    recorded = {int(pid) for pid in load_state(topo)["servers"].values()}
    running = {int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()}
    return {pid for pid in recorded | running if _is_lab_server(pid, topo)}


# -- director hook ----------------------------------------------------------------------------


def _director_module() -> ModuleType | None:
    """pyvs.lab.director (the data plane's part of the lab), if it exists."""
    try:
        return importlib.import_module("pyvs.lab.director")
    except ModuleNotFoundError as exc:
        if exc.name != "pyvs.lab.director":
            log.warning("lab: director setup unavailable: %s", exc)
        return None
    except ImportError as exc:
        log.warning("lab: director setup unavailable: %s", exc)
        return None


# -- public API -------------------------------------------------------------------------------


def up(topo: Topology, keep_on_failure: bool = False, director: bool = True) -> list[str]:
    """Build the lab (or finish a partial one); returns what was changed, [] if it was complete. Without
    `director`, the director's data plane (XDP, the tutorial's rules) is left out: the hosts, links, addresses,
    gateway, real servers and web servers alone.

    On failure the lab is removed again unless keep_on_failure.
    """
    actions: list[str] = []
    try:
        _record_ipv6(topo)  # first: down() of a lab that failed half-way must know its nodes (the tunnel lab's router)
        _ensure_namespaces(topo, actions)
        for link in topo.links:
            _ensure_link(topo, link, actions)
        _ensure_bridge(topo, actions)
        # Native XDP forwards partial checksums as they are; a real wire carries full ones.
        for port in topo.ports():
            _ensure_tx_checksum_off(topo, port, actions)
        for node in topo.nodes:
            _ensure_node_network(topo, node, actions)
            _ensure_sysctls(node, actions)
        _ensure_dnat(topo, actions)
        _ensure_realservers(topo, actions)
        _ensure_servers(topo, actions)
        module = _director_module() if director else None
        if director and topo.bgp is not None:  # several directors behind a BGP router (lab/ecmp.py)
            from pyvs.lab import ecmp

            ecmp.record_directors(topo)
            actions.extend(ecmp.setup(topo))
        elif director and topo.vrrp is not None:  # two directors, active/backup with keepalived (lab/vrrp.py)
            from pyvs.lab import vrrp

            vrrp.record(topo)
            actions.extend(vrrp.setup(topo))
        elif module is not None:
            actions.extend(module.setup_director(topo))
    except (OSError, NetlinkError, netns.NetnsError, realserver.RealServerError, LabError) as exc:
        if not keep_on_failure:
            down(topo)
        kept = "kept for inspection" if keep_on_failure else "removed"
        raise LabError(f"lab {topo.prefix} up failed: {exc} (the partial lab was {kept})") from exc
    for action in actions:
        log.debug("lab: %s", action)
    return actions


def down(topo: Topology) -> list[str]:
    """Remove the lab: director setup, server processes, namespaces, state. Never fails halfway."""
    actions: list[str] = []
    from pyvs.lab import ecmp, vrrp

    if topo.bgp is None and topo.vrrp is None and vrrp.recorded(topo.prefix):  # brought up with --vrrp
        topo = vrrp_topology(topo.prefix)
    if topo.bgp is None and topo.vrrp is None and (count := ecmp.leftover_directors(topo.prefix)):  # --directors
        topo = ecmp_topology(topo.prefix, count, base=topo)
    if topo.vrrp is not None:
        try:
            actions.extend(vrrp.teardown(topo))
        except Exception as exc:  # noqa: BLE001 - teardown must go on
            log.warning("lab: VRRP teardown failed: %s", exc)
    if topo.bgp is not None:
        try:
            actions.extend(ecmp.teardown(topo))
        except Exception as exc:  # noqa: BLE001 - teardown must go on
            log.warning("lab: ECMP teardown failed: %s", exc)
    director = _director_module()
    if director is not None:
        try:
            director.teardown_director(topo)
        except Exception as exc:  # noqa: BLE001 - teardown must go on whatever the data plane says
            log.warning("lab: director teardown failed: %s", exc)
    for pid in sorted(_lab_server_pids(topo)):
        _stop(pid)
        actions.append(f"stopped server pid {pid}")
    for node in topo.nodes:
        if not netns.exists(node.netns):
            continue
        if node.role is Role.REAL:  # its realserver state dies with the namespace
            with netns.in_netns(node.netns):
                realserver.state_path().unlink(missing_ok=True)
        try:
            netns.remove(node.netns)
            actions.append(f"removed netns {node.netns}")
        except OSError as exc:
            log.warning("lab: cannot remove netns %s: %s", node.netns, exc)
    router = f"{topo.prefix}-router"  # a router (tunnel lab) whose lab was not recorded as such: gone too
    if all(node.netns != router for node in topo.nodes) and netns.exists(router):
        netns.remove(router)
        actions.append(f"removed netns {router}")
    shutil.rmtree(state_dir(topo), ignore_errors=True)
    for action in actions:
        log.debug("lab: %s", action)
    return actions


def set_mac(topo: Topology, node: str, ifname: str, mac: str) -> None:
    """Give a node's interface another MAC, as when its NIC is swapped; addresses and routes stay."""
    with IPRoute(netns=_ns(topo, node), flags=0) as ipr:
        ipr.link("set", index=_require_index(ipr, ifname), address=mac)  # veth takes a live change


def remove_node(topo: Topology, node: str) -> None:
    """Remove one node's namespace (its veth ends and their switch ports go with it)."""
    ns = _ns(topo, node)
    if netns.exists(ns):
        netns.remove(ns)


def status(topo: Topology, director: bool = True) -> dict[str, Any]:
    """What exists: namespaces, interfaces with addresses, server processes, and overall health (without
    `director`: not counting the director's data plane, as `up(topo, director=False)` leaves it out)."""
    healthy = True
    nodes: dict[str, Any] = {}
    for node in topo.nodes:
        exists = netns.exists(node.netns)
        interfaces: dict[str, Any] = {}
        if exists:
            with IPRoute(netns=node.netns, flags=0) as ipr:
                for link in ipr.get_links():
                    index = link["index"]
                    interfaces[link.get("IFLA_IFNAME")] = {
                        "up": bool(link["flags"] & IFF_UP),
                        "addresses": [  # IPv4 first, then IPv6 (not the kernel's link-local ones)
                            f"{a.get('IFA_ADDRESS')}/{a['prefixlen']}" for family in (socket.AF_INET, socket.AF_INET6)
                            for a in ipr.get_addr(family=family, index=index)
                            if not str(a.get("IFA_ADDRESS")).startswith("fe80:")
                        ],
                    }
        for port in topo.ports(node.name):
            have = interfaces.get(port.ifname)
            if have is None or not have["up"] or not set(port.addresses) <= set(have["addresses"]):
                healthy = False
        healthy = healthy and exists
        nodes[node.name] = {"netns": node.netns, "exists": exists, "interfaces": interfaces}
    servers: dict[str, Any] = {}
    recorded = load_state(topo)["servers"]
    for node in topo.reals:
        pid = recorded.get(node.name)
        running = _server_running(pid, topo, node.name)
        healthy = healthy and running
        servers[node.name] = {"pid": pid, "running": running}
    problems = [f"netns {n['netns']} is missing" for n in nodes.values() if not n["exists"]]
    problems += [f"{name}'s web server is not running" for name, srv in servers.items() if not srv["running"]]
    if not problems and not healthy:
        problems.append("an interface is down or lacks its addresses")
    problems += _real_problems(topo)
    module = _director_module() if director else None
    if director and topo.bgp is not None:
        from pyvs.lab import ecmp

        problems += ecmp.problems(topo)
    elif director and topo.vrrp is not None:
        from pyvs.lab import vrrp

        problems += vrrp.problems(topo)
    elif module is not None:
        problems += module.director_problems(topo)
    healthy = healthy and not problems
    report = {"prefix": topo.prefix, "healthy": healthy, "problems": problems, "nodes": nodes, "servers": servers}
    if topo.bgp is not None:
        from pyvs.lab import ecmp

        report["processes"] = ecmp.processes(topo)
    if topo.vrrp is not None:
        from pyvs.lab import vrrp

        report["processes"] = vrrp.processes(topo)
        report["vip_holders"] = vrrp.holders(topo)
    return report


def _real_problems(topo: Topology) -> list[str]:
    """Each real must answer on RIP:80 (from the director) and hold the VIP as a DR real server."""
    problems: list[str] = []
    for node in topo.reals:
        if not netns.exists(node.netns):
            continue
        nic = topo.ports(node.name)[0].ifname
        try:
            with netns.in_netns(node.netns):
                tunnel = topo.tun_type if topo.method == "tun" else None
                checks = [] if topo.method == "nat" else realserver.check(topo.vips, nic=nic, tunnel=tunnel)
                wrong = [f.name for f in checks if not f.ok]
        except realserver.RealServerError as exc:
            wrong = [str(exc)]
        if wrong:
            problems.append(f"{node.name} is not set up as a real server ({', '.join(wrong)})")
        if not netns.exists(topo.director.netns):
            continue
        for version in _versions(topo):
            address, port = topo.address_of(node.name, version), topo.port_of(node.name)
            where = f"[{address}]:{port}" if version == 6 else f"{address}:{port}"
            try:
                with netns.in_netns(topo.director.netns):
                    socket.create_connection((address, port), timeout=1.0).close()
            except OSError as exc:
                problems.append(f"{node.name} does not answer on {where}: {exc.strerror or exc}")
    return problems
