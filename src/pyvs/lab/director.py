"""The director node of the lab: XDP on its NIC and the tutorial's rules, through the Dataplane API."""

from __future__ import annotations

import logging
from pathlib import Path

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
