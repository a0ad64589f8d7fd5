"""pyvsadm against the real data plane, in a namespace where the reals sit on a directly attached segment."""

from __future__ import annotations

import io
import os
import socket
from collections.abc import Iterator
from ipaddress import IPv6Address

import pytest
from pyroute2 import IPRoute
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import Ether

from pyvs.admin.cli import main
from pyvs.dataplane import Dataplane, open_dataplane, remove_pins
from pyvs.dataplane.pins import bpffs_root
from pyvs.netns import create, in_netns, remove

NETNS = f"pyvst-adm{os.getpid() % 10000}"
IFA_F_NODAD = 0x02  # the address is usable at once (no duplicate address detection)
TUTORIAL = [
    "-A -t 198.18.0.100:80 -s rr",
    "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g",
    "-a -t 198.18.0.100:80 -r 198.18.2.12:80 -g",
    "-A -u 198.18.0.100:80 -s wrr",
    "-a -u 198.18.0.100:80 -r 198.18.2.11 -g -w 3",
    "-a -u 198.18.0.100:80 -r 198.18.2.12 -g -w 0",
]


@pytest.fixture
def director() -> Iterator[Dataplane]:
    """A namespace with the director's segment on a veth NIC and the reals' MACs known."""
    create(NETNS)
    pin_dir = bpffs_root() / "pyvs" / NETNS
    try:
        with in_netns(NETNS), IPRoute() as ipr:
            ipr.link("add", ifname="pyvst0", kind="veth", peer="pyvst1")
            index = ipr.link_lookup(ifname="pyvst0")[0]
            ipr.link("set", index=ipr.link_lookup(ifname="pyvst1")[0], state="up")
            ipr.link("set", index=index, state="up")
            ipr.addr("add", index=index, address="198.18.2.10", prefixlen=24)
            for n in (11, 12):
                ipr.neigh("add", dst=f"198.18.2.{n}", lladdr=f"02:00:00:00:00:{n}", ifindex=index, state=0x80)
            ipr.addr("add", index=index, address="2001:db8:2::10", prefixlen=64, flags=IFA_F_NODAD)
            for n in (11, 12):
                ipr.neigh("add", dst=f"2001:db8:2::{n}", lladdr=f"02:00:00:00:06:{n}", ifindex=index, state=0x80,
                          family=socket.AF_INET6)
            dp = open_dataplane(pin_dir)
        yield dp
        dp.close()
    finally:
        remove_pins(pin_dir)
        remove(NETNS)


def pyvsadm(dp: Dataplane, line: str, stdin: str = "") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with in_netns(NETNS):
        code = main(line.split(), stdin=io.StringIO(stdin), stdout=out, stderr=err, dataplane=dp)
    return code, out.getvalue(), err.getvalue()


def load_tutorial(dp: Dataplane) -> None:
    for line in TUTORIAL:
        code, _, err = pyvsadm(dp, line)
        assert code == 0, f"{line}: {err}"


def test_tutorial_rules_listed_as_ipvsadm_does(director: Dataplane) -> None:
    load_tutorial(director)
    code, out, _ = pyvsadm(director, "-L -n")
    assert code == 0
    assert out == (
        "IP Virtual Server version 1.2.1 (size=262144)\n"
        "Prot LocalAddress:Port Scheduler Flags\n"
        "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
        "TCP  198.18.0.100:80 rr\n"
        "  -> 198.18.2.11:80               Route   1      0          0         \n"
        "  -> 198.18.2.12:80               Route   1      0          0         \n"
        "UDP  198.18.0.100:80 wrr\n"
        "  -> 198.18.2.11:80               Route   3      0          0         \n"
        "  -> 198.18.2.12:80               Route   0      0          0         \n"
    )
    hops = director.real_next_hops()
    assert {h.dmac for h in hops.values()} == {"02:00:00:00:00:11", "02:00:00:00:00:12"}


def test_save_clear_restore_round_trips_byte_exactly(director: Dataplane) -> None:
    load_tutorial(director)
    _, saved, _ = pyvsadm(director, "-S -n")
    assert saved.splitlines()[0] == "-A -t 198.18.0.100:80 -s rr"
    assert pyvsadm(director, "-C")[0] == 0
    assert pyvsadm(director, "-L -n")[1].count("\n") == 3
    assert pyvsadm(director, "-R", stdin=saved)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == saved


@pytest.mark.parametrize(
    "line",
    [
        "-A -t 198.18.0.100:443 -s nosuch",  # unknown scheduler
        "-A -t 198.18.0.300:80 -s rr",  # bad address
        "-A -t 198.18.0.100:80 -s rr",  # duplicate service
        "-D -t 198.18.0.100:8080",  # missing service
        "-a -t 198.18.0.100:8080 -r 198.18.2.11 -g",  # real for a missing service
        "-A -t 198.18.0.100:65536 -s rr",  # port out of range
        "-a -t 198.18.0.100:80 -r 198.18.2.11 -g",  # duplicate real
        "-a -t 198.18.0.100:80 -r 198.18.2.13 -w 70000",  # weight out of range
        "-a -t 198.18.0.100:80 -r 198.18.9.9 -g",  # not on the director's segment
        "-a -t 198.18.0.100:80 -r 198.18.2.13 -6",  # -6 is for firewall-mark services
        "-a -t 198.18.0.100:80 -r 198.18.2.11:8080 -g",  # -g takes the service's port: a duplicate
        "-A -t 198.18.0.100:81 -s sh -b mh-port",  # a flag of another scheduler
    ],
)
def test_rejected_command_leaves_the_rules_exactly_as_they_were(director: Dataplane, line: str) -> None:
    load_tutorial(director)
    before = pyvsadm(director, "-S -n")[1]
    code, out, err = pyvsadm(director, line)
    assert code != 0 and err.startswith("pyvsadm: ") and out == ""
    assert pyvsadm(director, "-S -n")[1] == before


def test_restore_with_a_bad_line_changes_nothing(director: Dataplane) -> None:
    load_tutorial(director)
    before = pyvsadm(director, "-S -n")[1]
    code, _, err = pyvsadm(director, "-R", stdin="-A -t 198.18.0.100:81 -s rr\n-A -t 198.18.0.100:82 -s bogus\n")
    assert code != 0 and "line 2" in err
    assert pyvsadm(director, "-S -n")[1] == before


def test_timeouts_set_and_listed(director: Dataplane) -> None:
    assert pyvsadm(director, "-L --timeout")[1] == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert pyvsadm(director, "--set 60 0 10")[0] == 0
    assert pyvsadm(director, "-L --timeout")[1] == "Timeout (tcp tcpfin udp): 60 120 10\n"


def test_persistent_service_with_mask_and_flags_lists_and_saves_as_ipvsadm(director: Dataplane) -> None:
    assert pyvsadm(director, "-A -t 198.18.0.100:443 -s wrr -p 600 -M 255.255.255.0")[0] == 0
    assert pyvsadm(director, "-a -t 198.18.0.100:443 -r 198.18.2.11 -g -w 2")[0] == 0
    listing = pyvsadm(director, "-L -n")[1]
    assert "TCP  198.18.0.100:443 wrr persistent 600 mask 255.255.255.0\n" in listing
    saved = pyvsadm(director, "-S -n")[1]
    assert saved == ("-A -t 198.18.0.100:443 -s wrr -p 600 -M 255.255.255.0\n"
                     "-a -t 198.18.0.100:443 -r 198.18.2.11:443 -g -w 2\n")
    assert pyvsadm(director, "-C")[0] == 0
    assert pyvsadm(director, "-R", stdin=saved)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == saved


def test_ipv6_rules_program_the_maps_and_a_packet_is_forwarded(director: Dataplane) -> None:
    for line in ("-A -t [2001:db8::100]:80 -s rr", "-a -t [2001:db8::100]:80 -r [2001:db8:2::11]:80 -g",
                 "-a -t [2001:db8::100]:80 -r 2001:db8:2::12 -g -w 2", "-A -u [2001:db8::100]:53 -s sh -p 60 -M 64",
                 "-a -u [2001:db8::100]:53 -r [2001:db8:2::12]:53"):
        code, _, err = pyvsadm(director, line)
        assert code == 0, f"{line}: {err}"
    load_tutorial(director)
    code, out, _ = pyvsadm(director, "-L -n")
    assert code == 0
    assert out.splitlines()[9:] == [
        "TCP  [2001:db8::100]:80 rr",
        "  -> [2001:db8:2::11]:80          Route   1      0          0         ",
        "  -> [2001:db8:2::12]:80          Route   2      0          0         ",
        "UDP  [2001:db8::100]:53 sh persistent 60 mask 64",
        "  -> [2001:db8:2::12]:53          Route   1      0          0         ",
    ]
    hops = director.real_next_hops()
    assert {rip: hop.dmac for (_, (rip, _)), hop in hops.items() if rip.version == 6} == {
        IPv6Address("2001:db8:2::11"): "02:00:00:00:06:11", IPv6Address("2001:db8:2::12"): "02:00:00:00:06:12"}
    syn = bytes(Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:0a")
                / IPv6(src="2001:db8:1::2", dst="2001:db8::100") / TCP(sport=40000, dport=80, flags="S"))
    result = director.test_run(syn)  # the real is behind pyvst0, the test run's ingress is not: a redirect
    assert result.verdict_name == "XDP_REDIRECT" and Ether(result.data).dst == "02:00:00:00:06:11"
    assert result.data[12:] == syn[12:]
    [row] = pyvsadm(director, "-L -c -n")[1].splitlines()[2:]
    assert row[:4] + row[11:] == "TCP SYN_RECV    [2001:db8:1::2]:40000 [2001:db8::100]:80 [2001:db8:2::11]:80"
    assert row[4:10] in ("01:00 ", "00:59 ")  # SYN_RECV's 60 s, less what has passed
    stats = pyvsadm(director, "-L -n --stats -t [2001:db8::100]:80")[1].splitlines()
    assert stats[2] == "TCP  [2001:db8::100]:80                  1        1        0       60        0"
    assert pyvsadm(director, "-Z -t [2001:db8::100]:80")[0] == 0
    assert pyvsadm(director, "-L -n --stats -t [2001:db8::100]:80")[1].splitlines()[2].split()[2:] == ["0"] * 5


def test_ipv6_save_restore_edit_and_a_mixed_family_refusal(director: Dataplane) -> None:
    for line in ("-A -t [2001:db8::100]:443 -s wrr -p 600 -M 48", "-a -t [2001:db8::100]:443 -r [2001:db8:2::11]:443"):
        assert pyvsadm(director, line)[0] == 0
    load_tutorial(director)
    saved = pyvsadm(director, "-S -n")[1]
    assert "-A -t [2001:db8::100]:443 -s wrr -p 600 -M 48\n" in saved
    assert "-a -t [2001:db8::100]:443 -r [2001:db8:2::11]:443 -g -w 1\n" in saved
    before = saved
    code, out, err = pyvsadm(director, "-a -t [2001:db8::100]:443 -r 198.18.2.12")
    assert code == 1 and out == "" and "is IPv4 and the service [2001:db8::100]:443 IPv6" in err
    code, _, err = pyvsadm(director, "-a -t 198.18.0.100:80 -r [2001:db8:2::12]:80")
    assert code == 1 and "is IPv6 and the service 198.18.0.100:80 IPv4" in err
    assert pyvsadm(director, "-S -n")[1] == before
    assert pyvsadm(director, "-C")[0] == 0 and pyvsadm(director, "-R", stdin=saved)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == saved
    assert pyvsadm(director, "-E -t [2001:db8::100]:443 -s rr")[0] == 0
    assert pyvsadm(director, "-e -t [2001:db8::100]:443 -r [2001:db8:2::11]:443 -w 5")[0] == 0
    listing = pyvsadm(director, "-L -n -t [2001:db8::100]:443")[1]
    assert "TCP  [2001:db8::100]:443 rr\n  -> [2001:db8:2::11]:443         Route   5 " in listing
    assert pyvsadm(director, "-d -t [2001:db8::100]:443 -r [2001:db8:2::11]:443")[0] == 0
    assert pyvsadm(director, "-D -t [2001:db8::100]:443")[0] == 0
    assert "2001:db8" not in pyvsadm(director, "-S -n")[1]
    assert pyvsadm(director, "-a -t [2001:db8::100]:80 -r [2001:db8:9::1]:80")[0] == 1  # no service
    assert pyvsadm(director, "-A -t [2001:db8::100]:80")[0] == 0
    code, _, err = pyvsadm(director, "-a -t [2001:db8::100]:80 -r [2001:db8:9::1]:80")  # not on the segment
    assert code == 1 and "2001:db8:9::1" in err


ADM_RULES = """\
-A -t 198.18.0.100:80 -s wlc
-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 1 -x 100 -y 80
-a -t 198.18.0.100:80 -r 198.18.2.12:80 -g -w 2 -x 50
-A -u 198.18.0.100:53 -s rr -p 60 -o
-a -u 198.18.0.100:53 -r 198.18.2.11:53 -g -w 1
-A -u [2001:db8::100]:53 -s mh -p 300 -M 64 -o -b mh-fallback,mh-port
-a -u [2001:db8::100]:53 -r [2001:db8:2::11]:53 -g -w 3 -x 7 -y 2
"""


def test_thresholds_and_one_packet_save_restore_round_trip(director: Dataplane) -> None:
    """Every option of thresholds and one-packet scheduling through the maps and back, byte for byte."""
    assert pyvsadm(director, "-R", stdin=ADM_RULES)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == ADM_RULES
    assert pyvsadm(director, "-C")[0] == 0
    assert pyvsadm(director, "-R", stdin=ADM_RULES)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == ADM_RULES
    listing = pyvsadm(director, "-L -n --thresholds")[1]
    assert "  -> 198.18.2.11:80               100        80         0          0         \n" in listing
    assert "UDP  198.18.0.100:53 rr persistent 60 ops\n" in pyvsadm(director, "-L -n")[1]
    code, out, err = pyvsadm(director, "-E -t 198.18.0.100:80 -s wlc -o")
    assert code == 2 and "only for UDP" in err
    assert pyvsadm(director, "-e -t 198.18.0.100:80 -r 198.18.2.11 -w 1")[0] == 0  # thresholds back to none
    assert "-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 1\n" in pyvsadm(director, "-S -n")[1]


def test_rate_and_exact_stats_list_every_service(director: Dataplane) -> None:
    load_tutorial(director)
    rate = pyvsadm(director, "-L -n --rate")[1].splitlines()
    assert rate[1] == "Prot LocalAddress:Port                 CPS    InPPS   OutPPS    InBPS   OutBPS"
    assert rate[3] == "TCP  198.18.0.100:80                     0        0        0        0        0"
    assert rate[4] == "  -> 198.18.2.11:80                      0        0        0        0        0"
    stats = pyvsadm(director, "-L -n --stats --exact")[1].splitlines()
    assert stats[3] == "TCP  198.18.0.100:80                     0        0        0        0        0"
    code, _, err = pyvsadm(director, "-A -u 198.18.0.100:5060 -p --pe sip")
    assert code == 2 and "no SIP parser" in err


EVERY_OPTION_RULES = """\
-A -t 198.18.0.100:80 -s wlc
-a -t 198.18.0.100:80 -r 198.18.2.11:80 -g -w 1 -x 100 -y 80
-a -t 198.18.0.100:80 -r 198.18.2.12:8080 -m -w 2
-A -t 198.18.0.100:443 -s mh -b mh-port --mh-table-size 65521
-a -t 198.18.0.100:443 -r 198.18.2.11:443 -i -w 1 --tun-type gue --tun-port 6080 --tun-csum
-a -t 198.18.0.100:443 -r 198.18.2.12:443 -i -w 1 --tun-type ipip
-A -u 198.18.0.100:53 -s rr -p 60 -o
-a -u 198.18.0.100:53 -r 198.18.2.11:53 -g -w 1
-A --sctp-service 198.18.0.100:3868 -s sh -b sh-port
-a --sctp-service 198.18.0.100:3868 -r 198.18.2.11:3868 -g -w 1
-A -u [2001:db8::100]:53 -s mh -p 300 -M 64 -o -b mh-fallback,mh-port
-a -u [2001:db8::100]:53 -r [2001:db8:2::11]:53 -g -w 3 -x 7 -y 2
-A -f 1 -s rr -p 300 -M 255.255.255.0
-a -f 1 -r 198.18.2.11:0 -g -w 1
-A -f 2 -6 -s wrr
-a -f 2 -6 -r [2001:db8:2::11]:0 -g -w 1
"""


def test_a_rule_file_with_every_option_round_trips(director: Dataplane) -> None:
    """-R then -S -n, -C, -R again: the same text, with every forwarding method, service kind and option."""
    code, _, err = pyvsadm(director, "-R", stdin=EVERY_OPTION_RULES)
    assert code == 0, err
    saved = pyvsadm(director, "-S -n")[1]
    assert saved == EVERY_OPTION_RULES
    assert pyvsadm(director, "-C")[0] == 0
    assert pyvsadm(director, "-R", stdin=saved)[0] == 0
    assert pyvsadm(director, "-S -n")[1] == saved
    listing = pyvsadm(director, "-L -n")[1]
    for row in ("  -> 198.18.2.12:8080             Masq    2", "  -> 198.18.2.12:443              Tunnel  1",
                "SCTP 198.18.0.100:3868 sh (sh-port)", "FWM  1 rr persistent 300 mask 255.255.255.0",
                "FWM  2 IPv6 wrr", "UDP  198.18.0.100:53 rr persistent 60 ops"):
        assert row in listing, (row, listing)
