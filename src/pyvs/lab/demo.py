"""`pyvs lab demo`: the tutorial's curl test, ten times, with the counters that show DR at work."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from pyvs.dataplane import DataplaneError
from pyvs.lab import lab
from pyvs.lab.director import open_director
from pyvs.lab.topology import Topology
from pyvs.lab.traffic import director_port_bytes, http_get, link_bytes, udp_ask
from pyvs.netns import in_netns


class DemoError(Exception):
    """A step of the demo failed; the message names the step."""


def run_demo(topo: Topology, say: Callable[[str], None], requests: int = 10) -> None:
    """Run the demo; a failing step raises DemoError naming the step and the cause in one line."""
    try:
        lab.up(topo)
    except lab.LabError as exc:
        raise DemoError(str(exc)) from exc
    try:
        _traffic(topo, say, requests)
    except (OSError, TimeoutError, DataplaneError) as exc:
        raise DemoError(f"the demo's traffic failed: {exc}") from exc


def _traffic(topo: Topology, say: Callable[[str], None], requests: int) -> None:
    client = topo.client.netns
    vips = " and ".join(topo.vips)
    say(f"lab {topo.prefix}: client {topo.address_of('client')} -> gateway {topo.public_ip} "
        f"(DNAT to VIP {vips}) -> director -> {', '.join(n.name for n in topo.reals)}")
    before_port = director_port_bytes(topo)
    before_client = link_bytes(client, "eth0")
    served: Counter[str] = Counter()
    for n in range(1, requests + 1):
        try:
            reply = http_get(client, topo.public_ip, "/")
        except OSError as exc:
            raise OSError(f"GET http://{topo.public_ip}/ #{n} from the client: {exc}") from exc
        served[reply.server] += 1
        say(f"  GET http://{topo.public_ip}/  #{n:<2} answered by {reply.server}")
    try:
        udp = udp_ask(client, topo.public_ip, b"ping")
    except OSError as exc:
        raise OSError(f"UDP {topo.public_ip}:80 from the client: {exc}") from exc
    say(f"  UDP {topo.public_ip}:80 'ping'   answered: {udp!r}")
    say("split: " + ", ".join(f"{name} {count}" for name, count in sorted(served.items())))
    size = 1024 * 1024
    download = http_get(client, topo.public_ip, f"/bytes/{size}")
    say(f"  GET http://{topo.public_ip}/bytes/{size} answered by {download.server}: {download.body_bytes} bytes")
    if topo.public_ip6:  # a dual-stack lab: the same over IPv6
        try:
            reply = http_get(client, topo.public_ip6, "/")
            udp = udp_ask(client, topo.public_ip6, b"ping")
        except OSError as exc:
            raise OSError(f"http://[{topo.public_ip6}]/ and UDP from the client over IPv6: {exc}") from exc
        say(f"  GET http://[{topo.public_ip6}]/ answered by {reply.server}; UDP 'ping' answered: {udp!r}")
    port = director_port_bytes(topo)
    client_bytes = link_bytes(client, "eth0")

    with in_netns(topo.director.netns), open_director(topo) as dp:
        stats = dp.service_stats()
        counters = dp.counters()
    say("director data plane (XDP) per service:")
    nat = topo.method == "nat"
    for key, c in sorted(stats.items()):
        out = (f"{c.outpkts} packets out, {c.outbytes} bytes out (the replies, rewritten to come from the VIP)" if nat
               else "0 out (replies never reach the director)")
        say(f"  {key.title}: {c.conns} connections, {c.inpkts} packets in, {c.inbytes} bytes in, {out}")
    say(f"  forwarded with XDP_TX: {counters['tx']}, to a VIP port without a service: {counters['pass']}, "
        f"dropped: {sum(v for k, v in counters.items() if k.startswith('drop_'))}")
    received = client_bytes.rx - before_client.rx
    sent_by_director = port.rx - before_port.rx
    share = 100 * sent_by_director / max(received, 1)
    if nat:
        say(f"client received {received} bytes; the director's NIC transmitted {sent_by_director} bytes ({share:.1f}%: "
            "the replies and the requests, both ways through the director).")
        say("NAT: the reals answered through the director, whose XDP program gave the replies the VIP back.")
        return
    say(f"client received {received} bytes; the director's NIC transmitted {sent_by_director} bytes "
        f"({share:.1f}%: the client's requests and ACKs only).")
    say("The replies went from the real servers to the gateway directly, never through the director.")
