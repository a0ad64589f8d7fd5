"""The director node of the lab: XDP on its NIC and the tutorial's rules, through the Dataplane API."""

from __future__ import annotations

import logging
import socket
from ipaddress import IPv4Address
from pathlib import Path

from pyroute2 import IPRoute
from pyroute2.netlink.rtnl.ndmsg import NUD_REACHABLE

from pyvs.dataplane import Dataplane, DataplaneError, attach_pass_program, open_dataplane, remove_pins
from pyvs.dataplane.base import PYVS_PROGRAMS
from pyvs.dataplane.pins import bpffs_root
from pyvs.lab.topology import Topology
from pyvs.model import Forwarding, Protocol, Real, Rules, Service, ServiceKey, Tunnel, parse_address
from pyvs.netns import exists, in_netns

log = logging.getLogger(__name__)


def pin_dir(topo: Topology) -> Path:
    """Where the lab director's maps live: what `pyvsadm` run inside its namespace opens by default."""
    return bpffs_root() / "pyvs" / topo.director.netns


def tutorial_rules(topo: Topology, scheduler: str = "rr") -> Rules:
    """`-A -t VIP:80 -s rr` with every real added `-g` (the NAT lab: `-m`, at the real's own port; the tunnel lab:
    `-i --tun-type ...`), and the same for each other lab service (and, in a dual-stack lab, for the IPv6 VIP with the
    reals' IPv6 addresses)."""
    tunnel = Tunnel(topo.tun_type, topo.tun_port) if topo.method == "tun" else None
    forwarding = Forwarding.TUNNEL if tunnel else Forwarding.MASQ if topo.method == "nat" else Forwarding.ROUTE
    rules = Rules()
    for version, vip in zip((4, 6), topo.vips, strict=False):
        for spec in topo.services:
            key = ServiceKey(Protocol[spec.protocol.upper()], parse_address(vip), spec.port)
            svc = Service(key, scheduler)
            for node in topo.reals:
                rip = parse_address(topo.address_of(node.name, version))
                port = topo.port_of(node.name, spec.port)
                svc.reals[(rip, port)] = Real(rip, port, 1, forwarding, tunnel=tunnel)
            rules.services[key] = svc
    return rules


def open_director(topo: Topology) -> Dataplane:
    """The director's data plane; call inside the director's namespace (MACs resolve there)."""
    return open_dataplane(pin_dir(topo))


def _service_text(service: Service | None) -> str:
    """A service as `-S -n` writes it: what the lab compares (reals' MACs and slots do not matter)."""
    from pyvs.admin.printers import format_save

    return format_save(Rules({service.key: service})) if service is not None else ""


def _rule_problems(dp: Dataplane, topo: Topology) -> dict[ServiceKey, str]:
    """What differs from the tutorial's rules: service key -> how (missing, changed, not the tutorial's)."""
    wanted = tutorial_rules(topo)
    present = dp.read_rules()
    problems: dict[ServiceKey, str] = {}
    for key, service in wanted.services.items():
        have = present.services.get(key)
        if have is None:
            problems[key] = "missing"
        elif _service_text(have) != _service_text(service):
            problems[key] = "changed"
    for key in present.services.keys() - wanted.services.keys():
        problems[key] = "not the tutorial's"
    return problems


def _real_macs(topo: Topology) -> dict[IPv4Address, str]:
    """Each real's IPv4 address and the MAC the lab gave its NIC."""
    macs = {}
    for node in topo.reals:
        port = topo.ports(node.name)[0]
        if port.mac is not None:
            macs[IPv4Address(topo.address_of(node.name))] = port.mac
    return macs


def _neighbour_problems(topo: Topology) -> dict[IPv4Address, str]:
    """Reals the director's kernel knows at another MAC than theirs (a forged ARP reply the kernel took): the
    next resolve, by pyvsadm or a reload, would send their flows there. Real -> the wrong MAC. In the director's
    namespace."""
    macs = _real_macs(topo)
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=topo.director_nic.ifname)
        entries = ipr.get_neighbours(family=socket.AF_INET, ifindex=index[0]) if index else []
    wrong = {}
    for entry in entries:
        ip, mac = IPv4Address(entry.get_attr("NDA_DST")), entry.get_attr("NDA_LLADDR")
        if ip in macs and mac and mac != macs[ip]:
            wrong[ip] = str(mac)
    return wrong


def _data_plane_mac_problems(dp: Dataplane, topo: Topology) -> dict[IPv4Address, str]:
    """On-link reals the data plane sends to another MAC than theirs: real -> that MAC (a tunnel real's next hop
    may be a router: not compared)."""
    macs = _real_macs(topo)
    wanted = tutorial_rules(topo)
    wrong = {}
    for (key, (rip, port)), hop in dp.real_next_hops().items():
        real = wanted.services[key].reals.get((rip, port)) if key in wanted.services else None
        if real is None or real.forwarding is Forwarding.TUNNEL or not isinstance(rip, IPv4Address):
            continue
        if rip in macs and hop.dmac != macs[rip]:
            wrong[rip] = hop.dmac
    return wrong


def _label(key: ServiceKey) -> str:
    return key.title


def setup_director(topo: Topology, mode: str = "native") -> list[str]:
    """Attach XDP to the director's NIC and load the tutorial's rules; repair what differs, say what."""
    actions: list[str] = []
    # Native XDP_TX on a veth arrives only when the peer runs XDP too.
    port = topo.director_switch_port.ifname
    with in_netns(topo.switch.netns):
        if Dataplane.xdp_mode(port) is None:
            attach_pass_program(port, mode)
            actions.append(f"attached the pass-through XDP program to {topo.switch.netns}:{port}")
    nic = topo.director_nic.ifname
    with in_netns(topo.director.netns):
        with open_director(topo) as dp:
            found = Dataplane.xdp_program(nic)
            if found is None:
                dp.attach(nic, mode)
                actions.append(f"attached XDP ({mode}) to {topo.director.netns}:{nic}")
            elif found[2] in PYVS_PROGRAMS and not dp.serves(found[1]):
                dp.attach(nic, found[0])
                actions.append(f"replaced the stale pyvs program on {topo.director.netns}:{nic} (it used maps "
                               "that are no longer pinned)")
            wanted = tutorial_rules(topo)
            for key, problem in sorted(_rule_problems(dp, topo).items()):
                dp.apply_service(key, wanted.services.get(key))
                done = "removed" if key not in wanted.services else "restored"
                actions.append(f"{done} service {_label(key)} ({problem}) in {topo.director.netns}")
            macs = _real_macs(topo)
            wrong_neighbours = _neighbour_problems(topo)
            if wrong_neighbours:
                with IPRoute() as ipr:
                    index = ipr.link_lookup(ifname=nic)[0]
                    for rip, mac in sorted(wrong_neighbours.items()):
                        ipr.neigh("replace", dst=str(rip), lladdr=macs[rip], ifindex=index, state=NUD_REACHABLE)
                        actions.append(f"put the director's neighbour entry for {rip} back at {macs[rip]} (was {mac})")
            for rip, mac in sorted(_data_plane_mac_problems(dp, topo).items()):
                dp.set_real_mac(rip, macs[rip], old_mac=mac)
                actions.append(f"pointed the data plane's entries for {rip} back at {macs[rip]} (was {mac})")
    log.info("lab: director %s forwards with XDP (%s) on %s", topo.director.netns, mode, nic)
    return actions


def director_problems(topo: Topology) -> list[str]:
    """What the demo needs of the director and lacks: XDP on both ends of its link, the tutorial's rules."""
    if not exists(topo.director.netns) or not exists(topo.switch.netns):
        return []  # the lab's own status reports missing namespaces
    problems: list[str] = []
    port = topo.director_switch_port.ifname
    try:
        with in_netns(topo.switch.netns):
            if Dataplane.xdp_mode(port) is None:
                problems.append(f"no XDP program on {topo.switch.netns}:{port} (XDP_TX from the director is lost)")
        nic = topo.director_nic.ifname
        with in_netns(topo.director.netns):
            if Dataplane.xdp_mode(nic) is None:
                problems.append(f"XDP is not attached to {topo.director.netns}:{nic}: nothing forwards")
            if not pin_dir(topo).is_dir():
                problems.append(f"no data plane pinned at {pin_dir(topo)}")
                return problems
            with open_director(topo) as dp:
                found = Dataplane.xdp_program(nic)
                if found is not None and found[2] in PYVS_PROGRAMS and not dp.serves(found[1]):
                    problems.append(f"the XDP program on {topo.director.netns}:{nic} (id {found[1]}) uses maps that "
                                    f"are no longer pinned at {pin_dir(topo)}: the rules do not reach it")
                for key, problem in sorted(_rule_problems(dp, topo).items()):
                    problems.append(f"service {_label(key)}: {problem}")
                for rip, mac in sorted(_data_plane_mac_problems(dp, topo).items()):
                    problems.append(f"the data plane sends {rip}'s flows to {mac}, not to its NIC")
            for rip, mac in sorted(_neighbour_problems(topo).items()):
                problems.append(f"the director's neighbour entry for {rip} is at {mac}, not its NIC's MAC")
    except (OSError, ValueError, DataplaneError) as exc:
        problems.append(f"director: {exc}")
    return problems


def teardown_director(topo: Topology) -> None:
    """Detach XDP and remove the pinned maps of the director and of any node where pyvsadm made some."""
    if exists(topo.director.netns):
        with in_netns(topo.director.netns):
            Dataplane.detach(topo.director_nic.ifname)
    for node in topo.nodes:
        remove_pins(bpffs_root() / "pyvs" / node.netns)
