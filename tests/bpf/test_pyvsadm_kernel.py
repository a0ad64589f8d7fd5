"""pyvsadm against the real data plane, in a namespace where the reals sit on a directly attached segment."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator

import pytest
from pyroute2 import IPRoute

from pyvs.admin.cli import main
from pyvs.dataplane import Dataplane, open_dataplane, remove_pins
from pyvs.dataplane.pins import bpffs_root
from pyvs.netns import create, in_netns, remove

NETNS = f"pyvst-adm{os.getpid() % 10000}"
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
        "-a -t 198.18.0.100:80 -r 198.18.2.13 -m",  # NAT is not supported
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
