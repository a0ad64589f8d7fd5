"""The lab cluster as data: namespaces, veth links, the switch, addresses, routes, services.

lab.py builds whatever a Topology describes; nothing here touches the system.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any


class Role(StrEnum):
    CLIENT = "client"
    GATEWAY = "gateway"
    DIRECTOR = "director"
    REAL = "real"
    SWITCH = "switch"
    ATTACKER = "attacker"  # a host on the segment that spoofs ARP (tests of pyvs arpwatch)
    ROUTER = "router"  # the BGP router in front of several directors (ECMP, lab/ecmp.py)


@dataclass(frozen=True)
class Route:
    dst: str  # "default" or a CIDR
    gateway: str | None = None
    dev: str | None = None
    onlink: bool = False

    @property
    def family(self) -> int:
        """4 or 6, as the destination or the gateway is written."""
        return 6 if ":" in f"{self.dst}{self.gateway or ''}" else 4


@dataclass(frozen=True)
class Node:
    """One network namespace."""

    name: str  # short name used on the command line: client, rs1, ...
    role: Role
    netns: str
    routes: tuple[Route, ...] = ()
    sysctls: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Port:
    """One end of a veth pair: an interface in a node, with its addresses (CIDR)."""

    node: str
    ifname: str
    addresses: tuple[str, ...] = ()
    mac: str | None = None  # fixed, so that a re-created link keeps its neighbours' ARP entries valid


@dataclass(frozen=True)
class Link:
    """A veth pair. tx checksum offload is turned off on both ends."""

    a: Port
    b: Port
    queues: int | None = None  # rx/tx queue count of both ends; None: the kernel default


@dataclass(frozen=True)
class Bridge:
    node: str
    ifname: str
    ports: tuple[str, ...]


@dataclass(frozen=True)
class Dnat:
    """Destination NAT on a node: public_ip:port -> target_ip:target_port (both IPv4, or both IPv6)."""

    node: str
    protocol: str  # "tcp" or "udp"
    public_ip: str
    port: int
    target_ip: str
    target_port: int

    @property
    def family(self) -> int:
        return 6 if ":" in self.public_ip else 4


@dataclass(frozen=True)
class Service:
    protocol: str
    port: int


@dataclass(frozen=True)
class BgpLab:
    """Several directors behind a router that spreads the VIP's traffic over them (ECMP, fed by BGP)."""

    router: str  # the router's node name
    router_asn: int
    director_asn: int
    router_address: str  # on the reals' segment: where the directors' sessions go
    hold_time: int
    vip_route: str  # the gateway's route to the VIP: via the router


@dataclass(frozen=True)
class VrrpLab:
    """Two directors on the reals' segment, keepalived's VRRP moving the VIP between them (active/backup)."""

    vrid: int
    advert_int: float  # seconds between the master's advertisements (VRRPv3: centiseconds allowed)
    priorities: tuple[int, ...]  # per director, in order: the first is the master

    def skew(self, priority: int) -> float:
        """VRRPv3's skew time of a backup of this priority (RFC 5798): master down = 3 x advert_int + skew."""
        return (256 - priority) * self.advert_int / 256

    @property
    def master_down(self) -> float:
        """Seconds without an advertisement before the backup takes over."""
        return 3 * self.advert_int + self.skew(self.priorities[1])


@dataclass(frozen=True)
class Topology:
    prefix: str
    nodes: tuple[Node, ...]
    links: tuple[Link, ...]
    bridge: Bridge
    dnat: tuple[Dnat, ...]
    vip: str  # bare address
    vip_prefixlen: int  # of the VIP on the director's NIC (reals always carry it as /32)
    public_ip: str  # the gateway's client-facing address
    services: tuple[Service, ...]
    director_nic: Port  # the director's interface carrying VIP and DIP
    director_switch_port: Port  # its peer in the switch namespace
    web_port: int = 80
    udp_echo_port: int = 80
    vip6: str | None = None  # a dual-stack lab's IPv6 VIP (bare address); None: IPv4 only
    public_ip6: str | None = None  # the gateway's client-facing IPv6 address
    real_ports: tuple[tuple[str, int], ...] = ()  # a real's own port where it is not the service's (NAT only)

    def port_of(self, real: str, port: int | None = None) -> int:
        """The port a real serves the service on `port` (default: the web port) at: its own under NAT."""
        return dict(self.real_ports).get(real, self.web_port if port is None else port)

    @property
    def ipv6(self) -> bool:
        return self.vip6 is not None

    @property
    def vips(self) -> tuple[str, ...]:
        """The VIPs: IPv4's, and IPv6's in a dual-stack lab."""
        return (self.vip, self.vip6) if self.vip6 else (self.vip,)
    bgp: BgpLab | None = None  # None: one director on the segment, reached by ARP (the tutorial's lab)
    method: str = "dr"  # how the director forwards to the reals: dr (-g), nat (-m) or tun (-i, tun_type)
    tun_type: str = "ipip"  # tun: pyvsadm --tun-type of every real
    tun_port: int = 0  # tun with gue: --tun-port
    vrrp: VrrpLab | None = None  # two directors, the VIP moved between them by keepalived (lab/vrrp.py)

    def node(self, name: str) -> Node:
        for node in self.nodes:
            if node.name == name:
                return node
        names = ", ".join(n.name for n in self.nodes)
        raise KeyError(f"no node {name!r} in the lab (nodes: {names})")

    def nodes_with_role(self, role: Role) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role is role)

    @property
    def reals(self) -> tuple[Node, ...]:
        return self.nodes_with_role(Role.REAL)

    @property
    def director(self) -> Node:
        return self.nodes_with_role(Role.DIRECTOR)[0]

    @property
    def directors(self) -> tuple[Node, ...]:
        return self.nodes_with_role(Role.DIRECTOR)

    @property
    def gateway(self) -> Node:
        return self.nodes_with_role(Role.GATEWAY)[0]

    @property
    def client(self) -> Node:
        return self.nodes_with_role(Role.CLIENT)[0]

    @property
    def switch(self) -> Node:
        return self.nodes_with_role(Role.SWITCH)[0]

    def address_of(self, node: str, version: int = 4) -> str:
        """The node's first address of a family, without prefix length (for a real: its RIP)."""
        for port in self.ports(node):
            for cidr in port.addresses:
                if (":" in cidr) == (version == 6):
                    return cidr.split("/")[0]
        raise KeyError(f"node {node} has no IPv{version} address")

    def ports(self, node: str | None = None) -> tuple[Port, ...]:
        """All veth ends, or those of one node."""
        ends = (end for link in self.links for end in (link.a, link.b))
        return tuple(p for p in ends if node is None or p.node == node)

    def port(self, node: str, ifname: str) -> Port:
        for port in self.ports(node):
            if port.ifname == ifname:
                return port
        raise KeyError(f"no interface {ifname} on node {node}")


PREFIX_PATTERN = re.compile(r"pyvs[a-z0-9]{0,6}")  # "{prefix}-rs2" fits in 15 chars (IFNAMSIZ)


def _rp_filter_off(*ifnames: str) -> tuple[tuple[str, str], ...]:
    return tuple((f"net.ipv4.conf.{i}.rp_filter", "0") for i in ("all", "default", *ifnames))


def check_prefix(prefix: str) -> str:
    if not PREFIX_PATTERN.fullmatch(prefix):
        raise ValueError(f"lab prefix {prefix!r} must be 'pyvs' plus up to 6 lowercase letters/digits")
    return prefix


def default_topology(prefix: str = "pyvs", attacker: bool = False, ipv6: bool = False) -> Topology:
    """The LVS-DR tutorial cluster in 198.18.0.0/15 (and, with ipv6, in 2001:db8::/32 too, the same layout).

    client 198.18.1.2 -- 198.18.1.1 gateway 198.18.0.1 --+-- switch (bridge) --+ director VIP 198.18.0.100,
                                                                                |          DIP 198.18.2.10
                                                                                + rs1 198.18.2.11
                                                                                + rs2 198.18.2.12
                                                                                + attacker 198.18.2.66 (attacker=True)
    IPv6: client 2001:db8:1::2, gateway 2001:db8:1::1 (public, DNAT to the VIP) and 2001:db8::1, director VIP
    2001:db8::100 and DIP 2001:db8:2::10, rs1 2001:db8:2::11, rs2 2001:db8:2::12 (attacker 2001:db8:2::66).
    """
    check_prefix(prefix)

    def ns(name: str) -> str:
        return f"{prefix}-{name}"

    vip, public_ip = "198.18.0.100", "198.18.1.1"
    gateway_inside = "198.18.0.1"
    rips = {"rs1": "198.18.2.11", "rs2": "198.18.2.12"}
    default_via_gateway = Route("default", gateway=gateway_inside, dev="eth0", onlink=True)
    # IPv6, the same layout: the VIP's net 2001:db8::/64, the reals' 2001:db8:2::/64, the client's 2001:db8:1::/64
    vip6, public_ip6, gateway_inside6 = "2001:db8::100", "2001:db8:1::1", "2001:db8::1"
    rips6 = {"rs1": "2001:db8:2::11", "rs2": "2001:db8:2::12"}
    default_via_gateway6 = Route("default", gateway=gateway_inside6, dev="eth0", onlink=True)

    def v6(*items: Any) -> tuple[Any, ...]:
        return items if ipv6 else ()

    nodes = (
        Node("client", Role.CLIENT, ns("client"), routes=(Route("default", gateway=public_ip, dev="eth0"),
                                                          *v6(Route("default", gateway=public_ip6, dev="eth0")))),
        Node(
            "gateway",
            Role.GATEWAY,
            ns("gateway"),
            # The reals ARP for 198.18.0.1 from their RIP: the gateway needs a route back.
            routes=(Route("198.18.2.0/24", dev="inside"), *v6(Route("2001:db8:2::/64", dev="inside"))),
            sysctls=(("net.ipv4.ip_forward", "1"), *_rp_filter_off("inside", "outside"),
                     *v6(("net.ipv6.conf.all.forwarding", "1"))),
        ),
        Node("director", Role.DIRECTOR, ns("director"), routes=(default_via_gateway, *v6(default_via_gateway6))),
        *(Node(name, Role.REAL, ns(name), routes=(default_via_gateway, *v6(default_via_gateway6))) for name in rips),
        Node("switch", Role.SWITCH, ns("switch")),
        *((Node("attacker", Role.ATTACKER, ns("attacker")),) if attacker else ()),
    )

    def switch_port(name: str) -> Port:
        return Port("switch", f"{prefix}-{name}")

    links = (
        Link(Port("client", "eth0", ("198.18.1.2/24", *v6("2001:db8:1::2/64"))),
             Port("gateway", "outside", (f"{public_ip}/24", *v6(f"{public_ip6}/64")))),
        Link(Port("gateway", "inside", (f"{gateway_inside}/24", *v6(f"{gateway_inside6}/64"))), switch_port("gw")),
        Link(Port("director", "eth0", (f"{vip}/24", "198.18.2.10/24", *v6(f"{vip6}/64", "2001:db8:2::10/64"))),
             switch_port("dir")),
        *(Link(Port(name, "eth0", (f"{rip}/24", *v6(f"{rips6[name]}/64"))), switch_port(name))
          for name, rip in rips.items()),
        *((Link(Port("attacker", "eth0", ("198.18.2.66/24", *v6("2001:db8:2::66/64"))), switch_port("atk")),)
          if attacker else ()),
    )
    # Locally administered MACs 02:c6:12:00:<link>:<end> (c6:12 = 198.18).
    links = tuple(
        Link(replace(link.a, mac=f"02:c6:12:00:{n:02x}:01"), replace(link.b, mac=f"02:c6:12:00:{n:02x}:02"))
        for n, link in enumerate(links, start=1)
    )
    director_nic, director_switch_port = links[2].a, links[2].b
    bridge = Bridge("switch", f"{prefix}-br", tuple(link.b.ifname for link in links[1:]))
    services = (Service("tcp", 80), Service("udp", 80))
    dnat = tuple(Dnat("gateway", s.protocol, public_ip, s.port, vip, s.port) for s in services) + tuple(
        Dnat("gateway", s.protocol, public_ip6, s.port, vip6, s.port) for s in services if ipv6)
    return Topology(
        prefix=prefix,
        nodes=nodes,
        links=links,
        bridge=bridge,
        dnat=dnat,
        vip=vip,
        vip_prefixlen=24,
        public_ip=public_ip,
        services=services,
        director_nic=director_nic,
        director_switch_port=director_switch_port,
        vip6=vip6 if ipv6 else None,
        public_ip6=public_ip6 if ipv6 else None,
    )


NAT_REAL_PORT = ("rs2", 8080)  # the NAT lab's port-mapped real: VIP:80 -> 198.18.2.12:8080


def nat_topology(prefix: str = "pyvs") -> Topology:
    """The tutorial's lab forwarding by NAT (ipvsadm -m): the reals hold no VIP, their default route is the director's
    DIP (198.18.2.10), and rs2 serves on port 8080 (VIP:80 -> 198.18.2.12:8080, TCP and UDP)."""
    base = default_topology(prefix)
    via_director = Route("default", gateway="198.18.2.10", dev="eth0", onlink=True)
    nodes = tuple(replace(node, routes=(via_director,)) if node.role is Role.REAL else node for node in base.nodes)
    return replace(base, nodes=nodes, method="nat", real_ports=(NAT_REAL_PORT,))


# ---- several directors behind a BGP router (`pyvs lab up --directors N`; lab/ecmp.py runs it) ----------------

MAX_DIRECTORS = 4
ROUTER_ASN = 65000
DIRECTOR_ASN = 65001
HOLD_TIME = 3  # seconds: a director that dies silently is withdrawn by the router within this
ROUTER_ADDRESS = "198.18.2.1"  # the router on the reals' segment
GATEWAY_LINK, ROUTER_LINK = "198.18.4.1", "198.18.4.2"  # gateway <-> router
ROUTER_ADDRESS6 = "2001:db8:2::1"  # a dual-stack ECMP lab: the router's IPv6 addresses
GATEWAY_LINK6, ROUTER_LINK6 = "2001:db8:4::1", "2001:db8:4::2"


def director_names(count: int) -> list[str]:
    return ["director", *(f"director{n}" for n in range(2, count + 1))]


def director_address(number: int) -> str:
    """The DIP of director number 1, 2, ...: 198.18.2.10, .20, ..."""
    return f"198.18.2.{10 * number}"


def director_address6(number: int) -> str:
    """A dual-stack lab's IPv6 DIP of director number 1, 2, ...: 2001:db8:2::10, ::20, ..."""
    return f"2001:db8:2::{10 * number}"


def ecmp_topology(prefix: str = "pyvs", directors: int = 3, base: Topology | None = None) -> Topology:
    """The tutorial's lab with `directors` directors behind a BGP router instead of one reached by ARP; with a
    dual-stack base (ipv6=True), the IPv6 VIP is routed to the directors the same way (MP-BGP on the IPv4
    sessions, each director its IPv6 DIP as next hop)."""
    if not 2 <= directors <= MAX_DIRECTORS:
        raise ValueError(f"an ECMP lab has 2 to {MAX_DIRECTORS} directors, not {directors}")
    base = base or default_topology(prefix)
    ipv6 = base.ipv6

    def v6(*items: Any) -> tuple[Any, ...]:
        return items if ipv6 else ()

    vip = base.vip
    gateway = base.gateway
    gateway = replace(gateway, routes=(*gateway.routes, Route(f"{vip}/32", gateway=ROUTER_LINK, dev="rtr"),
                                       *v6(Route(f"{base.vip6}/128", gateway=ROUTER_LINK6, dev="rtr"))),
                      sysctls=(*gateway.sysctls, ("net.ipv4.conf.rtr.rp_filter", "0")))
    director = base.director
    router = Node("router", Role.ROUTER, f"{prefix}-router",
                  routes=(Route("198.18.1.0/24", gateway=GATEWAY_LINK, dev="gw"),
                          *v6(Route("2001:db8:1::/64", gateway=GATEWAY_LINK6, dev="gw"))),
                  sysctls=(("net.ipv4.ip_forward", "1"), ("net.ipv4.fib_multipath_hash_policy", "1"),
                           *((f"net.ipv4.conf.{i}.rp_filter", "0") for i in ("all", "default", "gw", "seg")),
                           *v6(("net.ipv6.conf.all.forwarding", "1"), ("net.ipv6.fib_multipath_hash_policy", "1"))))
    names = director_names(directors)
    others = tuple(replace(director, name=name, netns=f"{prefix}-{name}") for name in names[1:])
    nodes: list[Node] = []
    for node in base.nodes:
        nodes.append(gateway if node.name == gateway.name else node)
        if node.name == director.name:
            nodes.extend(others)
    nodes.append(router)
    def dips(number: int) -> tuple[str, ...]:
        return (f"{director_address(number)}/24", *v6(f"{director_address6(number)}/64"))

    nic = replace(base.director_nic, addresses=dips(1))  # no VIP: it is routed here
    links = [Link(nic, link.b, link.queues) if link.a == base.director_nic else link for link in base.links]
    added = [
        Link(Port("gateway", "rtr", (f"{GATEWAY_LINK}/24", *v6(f"{GATEWAY_LINK6}/64"))),
             Port("router", "gw", (f"{ROUTER_LINK}/24", *v6(f"{ROUTER_LINK6}/64")))),
        Link(Port("router", "seg", (f"{ROUTER_ADDRESS}/24", *v6(f"{ROUTER_ADDRESS6}/64"))),
             Port("switch", f"{prefix}-rtr")),
        *(Link(Port(name, "eth0", dips(n)), Port("switch", f"{prefix}-dir{n}"))
          for n, name in enumerate(names[1:], start=2)),
    ]
    # Locally administered MACs 02:c6:12:00:<link>:<end>, numbered after the tutorial's links.
    links += [Link(replace(link.a, mac=f"02:c6:12:00:{n:02x}:01"), replace(link.b, mac=f"02:c6:12:00:{n:02x}:02"))
              for n, link in enumerate(added, start=0x10)]
    bridge = replace(base.bridge, ports=(*base.bridge.ports, *(link.b.ifname for link in added[1:])))
    lab = BgpLab(router="router", router_asn=ROUTER_ASN, director_asn=DIRECTOR_ASN, router_address=ROUTER_ADDRESS,
                 hold_time=HOLD_TIME, vip_route=f"{vip}/32 via {ROUTER_LINK}")
    return replace(base, nodes=tuple(nodes), links=tuple(links), bridge=bridge, director_nic=nic, bgp=lab)


# ---- tunnel forwarding (`pyvs lab up --method tun`): a real routed on another subnet ---------------------------

METHODS = ("dr", "nat", "tun")
TUN_ROUTER_ADDRESS = "198.18.2.1"  # the router on the director's segment
FAR_NET, FAR_ROUTER, FAR_RIP = "198.18.6.0/24", "198.18.6.1", "198.18.6.12"  # rs2's subnet behind the router
GUE_PORT = 6080


def tun_topology(prefix: str = "pyvs", tun_type: str = "ipip", base: Topology | None = None) -> Topology:
    """The tutorial's lab with tunnel forwarding: every real decapsulates (pyvs realserver up --tunnel), and rs2 is
    routed: on 198.18.6.0/24 behind a router on the director's segment, so the director's frames for it go to the
    router's MAC.

    client -- gateway -- switch --+ director 198.18.2.10 (VIP 198.18.0.100)
                                  + rs1 198.18.2.11 (on the segment)
                                  + router 198.18.2.1 -- 198.18.6.1 -- rs2 198.18.6.12
    """
    if tun_type not in ("ipip", "gue", "gre"):
        raise ValueError(f"unknown tunnel type {tun_type!r} (ipip, gue or gre)")
    base = base or default_topology(prefix)
    if base.ipv6:
        raise ValueError("the tunnel lab is IPv4 only: pyvs tunnels IPv4")
    far_route = Route(FAR_NET, gateway=TUN_ROUTER_ADDRESS, dev="eth0", onlink=True)
    nodes: list[Node] = []
    for node in base.nodes:
        if node.name == "rs2":
            node = replace(node, routes=(Route("default", gateway=FAR_ROUTER, dev="eth0", onlink=True),),
                           sysctls=(("net.ipv4.conf.all.rp_filter", "0"),))
        elif node.role is Role.DIRECTOR:
            node = replace(node, routes=(*node.routes, far_route))
        elif node.role is Role.GATEWAY:
            node = replace(node, routes=(*node.routes, Route(FAR_NET, gateway=TUN_ROUTER_ADDRESS, dev="inside",
                                                             onlink=True)))
        nodes.append(node)
    nodes.append(Node("router", Role.ROUTER, f"{prefix}-router",
                      routes=(Route("default", gateway="198.18.0.1", dev="seg", onlink=True),),
                      sysctls=(("net.ipv4.ip_forward", "1"),
                               *((f"net.ipv4.conf.{i}.rp_filter", "0") for i in ("all", "default", "seg", "far")))))
    rs2_switch = f"{prefix}-rs2"
    links = [link for link in base.links if link.a.node != "rs2"]
    added = [
        Link(Port("router", "seg", (f"{TUN_ROUTER_ADDRESS}/24",)), Port("switch", f"{prefix}-rtr")),
        Link(Port("router", "far", (f"{FAR_ROUTER}/24",)), Port("rs2", "eth0", (f"{FAR_RIP}/24",))),
    ]
    links += [Link(replace(link.a, mac=f"02:c6:12:00:{n:02x}:01"), replace(link.b, mac=f"02:c6:12:00:{n:02x}:02"))
              for n, link in enumerate(added, start=0x20)]
    ports = tuple(port for port in base.bridge.ports if port != rs2_switch) + (f"{prefix}-rtr",)
    return replace(base, nodes=tuple(nodes), links=tuple(links), bridge=replace(base.bridge, ports=ports),
                   method="tun", tun_type=tun_type, tun_port=GUE_PORT if tun_type == "gue" else 0)


# ---- two directors, active/backup with keepalived's VRRP (`pyvs lab up --vrrp`; lab/vrrp.py runs it) ------------

VRRP_ID = 51
ADVERT_INT = 0.5  # seconds: the backup takes over 1.5 s (+ skew) after the master's last advertisement
VRRP_PRIORITIES = (250, 240)  # the backup's skew: 16/256 of advert_int


def vrrp_topology(prefix: str = "pyvs", base: Topology | None = None) -> Topology:
    """The tutorial's lab with two directors on the reals' segment: `director` (198.18.2.10, the master) and
    `director2` (198.18.2.20); neither has the VIP until keepalived gives it to one of them."""
    base = base or default_topology(prefix)
    if base.ipv6:
        raise ValueError("the VRRP lab is IPv4 only: the dual-stack lab (--ipv6) has one director")
    director = base.director
    second = replace(director, name="director2", netns=f"{prefix}-director2")
    nodes: list[Node] = []
    for node in base.nodes:
        nodes.append(node)
        if node.name == director.name:
            nodes.append(second)
    nic = replace(base.director_nic, addresses=(f"{director_address(1)}/24",))  # the VIP is keepalived's
    links = [Link(nic, link.b, link.queues) if link.a == base.director_nic else link for link in base.links]
    added = Link(Port("director2", "eth0", (f"{director_address(2)}/24",), mac="02:c6:12:00:30:01"),
                 Port("switch", f"{prefix}-dir2", mac="02:c6:12:00:30:02"))
    links.append(added)
    bridge = replace(base.bridge, ports=(*base.bridge.ports, added.b.ifname))
    lab = VrrpLab(vrid=VRRP_ID, advert_int=ADVERT_INT, priorities=VRRP_PRIORITIES)
    return replace(base, nodes=tuple(nodes), links=tuple(links), bridge=bridge, director_nic=nic, vrrp=lab)
