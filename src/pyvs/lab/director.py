"""The director node of the lab: XDP on its NIC and the tutorial's rules, through the Dataplane API."""

from __future__ import annotations

import logging
from ipaddress import IPv4Address
from pathlib import Path

from pyvs.dataplane import Dataplane, attach_pass_program, open_dataplane, remove_pins
from pyvs.dataplane.pins import bpffs_root
from pyvs.lab.topology import Topology
from pyvs.model import Protocol, Real, Rules, Service, ServiceKey
from pyvs.netns import exists, in_netns

log = logging.getLogger(__name__)


def pin_dir(topo: Topology) -> Path:
    """Where the lab director's maps live: what `pyvsadm` run inside its namespace opens by default."""
    return bpffs_root() / "pyvs" / topo.director.netns


def tutorial_rules(topo: Topology, scheduler: str = "rr") -> Rules:
    """`-A -t VIP:80 -s rr` with every real added `-g`, and the same for each other lab service."""
    rules = Rules()
    for spec in topo.services:
        key = ServiceKey(Protocol[spec.protocol.upper()], IPv4Address(topo.vip), spec.port)
        svc = Service(key, scheduler)
        for node in topo.reals:
            rip = IPv4Address(topo.address_of(node.name))
            svc.reals[(rip, spec.port)] = Real(rip, spec.port, 1)
        rules.services[key] = svc
    return rules


def open_director(topo: Topology) -> Dataplane:
    """The director's data plane; call inside the director's namespace (MACs resolve there)."""
    return open_dataplane(pin_dir(topo))


def setup_director(topo: Topology, mode: str = "native") -> None:
    """Attach XDP to the director's NIC and load the tutorial's rules (idempotent)."""
    # Native XDP_TX on a veth arrives only when the peer runs XDP too.
    with in_netns(topo.switch.netns):
        attach_pass_program(topo.director_switch_port.ifname, mode)
    with in_netns(topo.director.netns):
        with open_director(topo) as dp:
            dp.attach(topo.director_nic.ifname, mode)
            if not dp.read_rules().services:
                dp.apply(tutorial_rules(topo))
    log.info("lab: director %s forwards with XDP (%s) on %s", topo.director.netns, mode,
             topo.director_nic.ifname)


def teardown_director(topo: Topology) -> None:
    """Detach XDP and remove the director's pinned maps."""
    if exists(topo.director.netns):
        with in_netns(topo.director.netns):
            Dataplane.detach(topo.director_nic.ifname)
    remove_pins(pin_dir(topo))
