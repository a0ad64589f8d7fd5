"""Golden tests: pyvsadm's output against ipvsadm 1.31's, written out literally.

The expected lines come from ipvsadm.c's printf formats (print_title, print_service_entry,
print_largenum, list_conn, list_timeout, the -S rule format); trailing spaces are part of them.
"""

from ipaddress import IPv4Address as IP

import pytest

from pyvs.admin.printers import (
    Listing,
    Names,
    format_connections,
    format_largenum,
    format_list,
    format_save,
    format_timeouts,
)
from pyvs.model import Connection, Counters, Protocol, Real, Rules, Service, ServiceKey, Timeouts

TCP80 = ServiceKey(Protocol.TCP, IP("198.18.0.100"), 80)
TCP443 = ServiceKey(Protocol.TCP, IP("198.18.0.9"), 443)
UDP53 = ServiceKey(Protocol.UDP, IP("198.18.0.100"), 53)
RS11 = IP("198.18.1.11")
RS2 = IP("198.18.1.2")
RS12 = IP("198.18.1.12")


def text(*lines: str) -> str:
    return "".join(line + "\n" for line in lines)


def service(key: ServiceKey, scheduler: str, *reals: tuple[IP, int]) -> Service:
    svc = Service(key, scheduler)
    for rip, weight in reals:
        svc.reals[(rip, key.port)] = Real(rip, key.port, weight)
    return svc


def sample_rules() -> Rules:
    # Inserted out of order: output must sort by protocol, address (numerically), port.
    services = [
        service(UDP53, "rr", (RS11, 2)),
        service(TCP80, "rr", (RS11, 1), (RS2, 0)),
        service(TCP443, "wrr", (RS11, 65535)),
    ]
    return Rules({svc.key: svc for svc in services})


def sample_listing() -> Listing:
    return Listing(
        sample_rules(),
        conn_counts={
            (TCP80, (RS11, 80)): (12, 40),
            (TCP80, (RS2, 80)): (0, 3),
            (TCP443, (RS11, 443)): (1234567, 0),
            (UDP53, (RS11, 53)): (0, 7),
        },
    )


HEADER = "IP Virtual Server version 1.2.1 (size=4096)"
TITLE = (
    "Prot LocalAddress:Port Scheduler Flags",
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn",
)
STATS_TITLE = (
    "Prot LocalAddress:Port               Conns   InPkts  OutPkts  InBytes OutBytes",
    "  -> RemoteAddress:Port",
)


def test_list_numeric() -> None:
    assert format_list(sample_listing()) == text(
        HEADER,
        *TITLE,
        "TCP  198.18.0.9:443 wrr",
        "  -> 198.18.1.11:443              Route   65535  1234567    0         ",
        "TCP  198.18.0.100:80 rr",
        "  -> 198.18.1.2:80                Route   0      0          3         ",
        "  -> 198.18.1.11:80               Route   1      12         40        ",
        "UDP  198.18.0.100:53 rr",
        "  -> 198.18.1.11:53               Route   2      0          7         ",
    )


def test_list_one_service_has_no_version_header() -> None:
    assert format_list(sample_listing(), service=UDP53) == text(
        *TITLE,
        "UDP  198.18.0.100:53 rr",
        "  -> 198.18.1.11:53               Route   2      0          7         ",
    )


def test_list_nosort_keeps_the_stored_order() -> None:
    listing = sample_listing()
    assert format_list(listing, sort=False).splitlines()[3:5] == [
        "UDP  198.18.0.100:53 rr",
        "  -> 198.18.1.11:53               Route   2      0          7         ",
    ]


def test_list_empty_table() -> None:
    assert format_list(Listing(Rules(), conn_table_size=65536)) == text(
        "IP Virtual Server version 1.2.1 (size=65536)", *TITLE
    )
    assert format_list(Listing(Rules()), stats=True) == text(HEADER, *STATS_TITLE)


def test_list_names_are_cut_to_ipvsadm_widths() -> None:
    names = {
        RS11: "a-very-long-real-server-name.example",
        RS2: "web1",
        TCP80.vip: "very-long-virtual-service-name.example",
    }
    resolver = Names(
        numeric=False,
        host_name=names.get,
        port_name=lambda port, proto: "http" if (port, proto) == (80, Protocol.TCP) else None,
    )
    listing = Listing(Rules({TCP80: service(TCP80, "rr", (RS11, 1), (RS2, 1))}))
    assert format_list(listing, resolver) == text(
        HEADER,
        *TITLE,
        "TCP  very-long-virtual-service-na rr",
        "  -> web1:http                    Route   1      0          0         ",
        "  -> a-very-long-real-server-name Route   1      0          0         ",
    )


def stats_listing() -> Listing:
    rules = Rules({TCP80: service(TCP80, "rr", (RS11, 1), (RS12, 1))})
    return Listing(
        rules,
        service_stats={TCP80: Counters(113786, 19495479, 0, 2110123456, 0)},
        real_stats={
            (TCP80, (RS11, 80)): Counters(99999999, 100000000, 123456789012, 123456789012345, 5),
            (TCP80, (RS12, 80)): Counters(0, 999999999, 99999999999, 99999999999999, 1000),
        },
    )


def test_stats_rounded() -> None:
    assert format_list(stats_listing(), stats=True) == text(
        HEADER,
        *STATS_TITLE,
        "TCP  198.18.0.100:80                113786 19495479        0    2110M        0",
        "  -> 198.18.1.11:80               99999999  100000K     123G     123T        5",
        "  -> 198.18.1.12:80                      0  999999K   99999M   99999G     1000",
    )


def test_stats_exact() -> None:
    assert format_list(stats_listing(), stats=True, exact=True) == text(
        HEADER,
        *STATS_TITLE,
        "TCP  198.18.0.100:80                113786 19495479        0 2110123456        0",
        "  -> 198.18.1.11:80               99999999 100000000 123456789012 123456789012345        5",
        "  -> 198.18.1.12:80                      0 999999999 99999999999 99999999999999     1000",
    )


@pytest.mark.parametrize(
    ("value", "rounded"),
    [
        (0, "        0"),
        (99999999, " 99999999"),
        (100000000, "  100000K"),
        (999999999, "  999999K"),
        (1000000000, "    1000M"),
        (99999999999, "   99999M"),
        (100000000000, "     100G"),
        (99999999999999, "   99999G"),
        (100000000000000, "     100T"),
        (12345678901234567890, "12345678T"),
    ],
)
def test_largenum(value: int, rounded: str) -> None:
    assert format_largenum(value) == rounded


def test_largenum_exact_widens_past_eight_digits() -> None:
    assert format_largenum(12345678, exact=True) == " 12345678"
    assert format_largenum(123456789, exact=True) == " 123456789"
    assert format_largenum(7, exact=True) == "        7"


def test_connections_numeric() -> None:
    conns = [
        Connection(Protocol.TCP, IP("198.19.0.7"), 51234, TCP80.vip, 80, RS11, 80, "ESTABLISHED", 898.7),
        Connection(Protocol.TCP, IP("198.19.0.9"), 40022, TCP80.vip, 80, RS2, 80, "FIN_WAIT", 105.2),
        Connection(Protocol.UDP, IP("198.19.255.254"), 5353, UDP53.vip, 53, RS11, 53, "UDP", 299),
        Connection(Protocol.TCP, IP("198.19.0.7"), 1, TCP443.vip, 443, RS11, 443, "SYN_RECV", -0.5),
    ]
    assert format_connections(conns) == text(
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
        "TCP 14:58  ESTABLISHED 198.19.0.7:51234   198.18.0.100:80    198.18.1.11:80",
        "TCP 01:45  FIN_WAIT    198.19.0.9:40022   198.18.0.100:80    198.18.1.2:80",
        "UDP 04:59  UDP         198.19.255.254:5353 198.18.0.100:53    198.18.1.11:53",
        "TCP 00:00  SYN_RECV    198.19.0.7:1       198.18.0.9:443     198.18.1.11:443",
    )


def test_connections_empty() -> None:
    assert format_connections([]) == text(
        "IPVS connection entries",
        "pro expire state       source             virtual            destination",
    )


def test_save_numeric() -> None:
    assert format_save(sample_rules()) == text(
        "-A -t 198.18.0.9:443 -s wrr",
        "-a -t 198.18.0.9:443 -r 198.18.1.11:443 -g -w 65535",
        "-A -t 198.18.0.100:80 -s rr",
        "-a -t 198.18.0.100:80 -r 198.18.1.2:80 -g -w 0",
        "-a -t 198.18.0.100:80 -r 198.18.1.11:80 -g -w 1",
        "-A -u 198.18.0.100:53 -s rr",
        "-a -u 198.18.0.100:53 -r 198.18.1.11:53 -g -w 2",
    )


def test_save_empty() -> None:
    assert format_save(Rules()) == ""


def test_timeouts() -> None:
    assert format_timeouts(Timeouts()) == "Timeout (tcp tcpfin udp): 900 120 300\n"
    assert format_timeouts(Timeouts(3600, 30, 60)) == "Timeout (tcp tcpfin udp): 3600 30 60\n"
