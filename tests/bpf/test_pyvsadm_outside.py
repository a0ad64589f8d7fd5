"""pyvsadm where no director runs: read-only commands create nothing; writes work and attach pyvs's program by
themselves (ipvsadm's model, issue 11) where an interface can take it. The namespaces here have only `lo`, so a
write attaches nothing and says once why nothing forwards (it used to say "no XDP program is attached" and point at
`pyvs director attach`; now it says no interface is UP with an IPv4 address)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from pyvs.dataplane import remove_pins
from pyvs.dataplane.pins import bpffs_root
from pyvs.netns import create, exists, remove, run_in_netns

PREFIX = os.environ.get("PYVS_TEST_LAB_PREFIX", "pyvst")
NETNS = f"{PREFIX}-out{os.getpid() % 10000}"
EMPTY_LISTING = (
    "IP Virtual Server version 1.2.1 (size=262144)\n"
    "Prot LocalAddress:Port Scheduler Flags\n"
    "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn\n"
)


@pytest.fixture
def bare_netns() -> Iterator[Path]:
    """A fresh namespace with no data plane; yields where its pins would be. Everything is removed after."""
    pin_dir = bpffs_root() / "pyvs" / NETNS
    create(NETNS)
    try:
        yield pin_dir
    finally:
        remove_pins(pin_dir)
        if exists(NETNS):
            remove(NETNS)


def pyvsadm(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_in_netns(NETNS, [sys.executable, "-m", "pyvs.admin.cli", *args], check=False,
                        env={**os.environ, **(env or {})})


def pyvs(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_in_netns(NETNS, [sys.executable, "-m", "pyvs.cli", *args], check=False,
                        env={**os.environ, **(env or {})})


def test_read_only_commands_print_the_empty_table_and_create_nothing(bare_netns: Path) -> None:
    listed = pyvsadm("-L", "-n")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, EMPTY_LISTING, "")
    saved = pyvsadm("-S", "-n")
    assert (saved.returncode, saved.stdout, saved.stderr) == (0, "", "")
    timeouts = pyvsadm("-L", "--timeout")
    assert timeouts.stdout == "Timeout (tcp tcpfin udp): 900 120 300\n"
    missing = pyvsadm("-L", "-n", "-t", "198.18.0.100:80")
    assert (missing.returncode, missing.stderr) == (1, "pyvsadm: No such service\n")
    assert not bare_netns.exists()


def test_a_write_works_and_says_once_that_nothing_forwards_yet(bare_netns: Path) -> None:
    added = pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "rr")
    assert added.returncode == 0, added.stderr
    lines = added.stderr.splitlines()
    assert len(lines) == 1 and "no interface" in lines[0] and "forward nothing yet" in lines[0], lines
    assert "pyvs director attach" in lines[0]
    assert bare_netns.is_dir()
    listed = pyvsadm("-L", "-n")
    assert "TCP  198.18.0.100:80 rr" in listed.stdout and listed.stderr == ""
    restored = pyvsadm("-R", env={})
    assert restored.returncode == 0 and len(restored.stderr.splitlines()) == 1


def test_an_interface_with_only_a_global_ipv6_address_is_attached_for_ipv6_services(bare_netns: Path) -> None:
    from pyroute2 import NetNS

    with NetNS(NETNS) as ns:
        ns.link("add", ifname="pyvsx0", kind="veth", peer="pyvsx1")
        for name in ("pyvsx0", "pyvsx1"):  # both get a link-local address; pyvsx0 a global one too
            ns.link("set", index=ns.link_lookup(ifname=name)[0], state="up")
        ns.addr("add", index=ns.link_lookup(ifname="pyvsx0")[0], address="2001:db8:2::10", prefixlen=64,
                flags=0x02)  # IFA_F_NODAD
    four = pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "rr")
    assert four.returncode == 0 and "forward nothing yet" in four.stderr  # no interface has an IPv4 address
    six = pyvsadm("-A", "-t", "[2001:db8::100]:80", "-s", "rr")
    assert six.returncode == 0, six.stderr
    assert "pyvs's XDP program attached (generic mode) to pyvsx0:" in six.stderr
    status = pyvs("director", "status").stdout
    assert re.search(r"pyvsx0 +veth +pyvs_xdp \(id \d+\) +generic +auto", status), status
    assert not re.search(r"pyvsx1 .*pyvs_xdp", status)  # only a link-local address there


def test_pin_dir_option_and_environment(bare_netns: Path) -> None:
    other = bpffs_root() / "pyvs" / f"{NETNS}-other"
    try:
        added = pyvsadm("--pin-dir", str(other), "-A", "-u", "198.18.0.100:53")
        assert added.returncode == 0, added.stderr
        assert (other / "services").exists() and not bare_netns.exists()
        assert "UDP  198.18.0.100:53 wlc" in pyvsadm("--pin-dir", str(other), "-L", "-n").stdout
        assert "UDP  198.18.0.100:53 wlc" in pyvsadm("-L", "-n", env={"PYVS_PIN_DIR": str(other)}).stdout
        status = pyvs("director", "status", env={"PYVS_PIN_DIR": str(other)})
        assert status.returncode == 0, status.stderr
        assert f"maps: {other}" in status.stdout
    finally:
        remove_pins(other)


def test_a_pin_dir_outside_bpffs_is_refused_in_one_line_and_not_created(bare_netns: Path, tmp_path: Path) -> None:
    outside = tmp_path / "pyvs-pins"
    for result in (pyvsadm("--pin-dir", str(outside), "-A", "-t", "198.18.0.100:80"),
                   pyvs("director", "status", "--pin-dir", str(outside)),
                   pyvs("director", "status", env={"PYVS_PIN_DIR": str(outside)})):
        assert result.returncode == 1, result
        assert len(result.stderr.splitlines()) == 1 and "not on a bpffs" in result.stderr, result.stderr
        assert "libbpf" not in result.stderr
    assert not outside.exists()


def test_director_status_without_a_data_plane_says_how_to_make_one(bare_netns: Path) -> None:
    status = pyvs("director", "status")
    assert status.returncode == 1
    assert status.stderr.startswith("pyvs: no data plane here yet: `pyvs director attach --dev NIC`")
    assert not bare_netns.exists()


def test_a_namespace_made_again_with_the_same_name_starts_empty(bare_netns: Path) -> None:
    assert pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "rr").returncode == 0
    remove(NETNS)
    create(NETNS)  # same name, new namespace: the pins of the old one are still on the bpffs
    assert (bare_netns / "services").exists()
    listed = pyvsadm("-L", "-n")
    assert (listed.returncode, listed.stdout, listed.stderr) == (0, EMPTY_LISTING, "")
    status = pyvs("director", "status")
    assert status.returncode == 1 and "no data plane here yet" in status.stderr
    assert pyvsadm("-A", "-u", "198.18.0.101:53").returncode == 0
    listed = pyvsadm("-L", "-n")
    assert "UDP  198.18.0.101:53" in listed.stdout and "198.18.0.100" not in listed.stdout


def _replace_pin(pin: Path, key_size: int, value_size: int) -> None:
    """Put a map of another shape where a pin was (what an older layout of that map looks like)."""
    from pyvs.dataplane import libbpf

    pin.unlink()
    fd = libbpf.map_create(2, "pyvs_old", key_size, value_size, 4)  # BPF_MAP_TYPE_ARRAY
    try:
        libbpf.obj_pin(fd, str(pin))
    finally:
        os.close(fd)


def test_pins_of_another_version_are_refused_and_migrate_keeps_the_rules(bare_netns: Path) -> None:
    assert pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "sh", "-p", "120").returncode == 0
    assert pyvsadm("--set", "100", "20", "30").returncode == 0
    (bare_netns / "pyvs_meta").unlink()  # pins made by a version without an ABI version
    for args in (("-L", "-n"), ("-A", "-t", "198.18.0.100:81")):
        refused = pyvsadm(*args)
        assert refused.returncode == 1 and len(refused.stderr.splitlines()) == 1, refused.stderr
        assert "another version of pyvs" in refused.stderr and "pyvs director migrate" in refused.stderr
    migrated = pyvs("director", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "1 service(s)" in migrated.stdout
    assert "TCP  198.18.0.100:80 sh persistent 120" in pyvsadm("-L", "-n").stdout
    assert pyvsadm("-L", "--timeout").stdout == "Timeout (tcp tcpfin udp): 100 20 30\n"


IPV6_MAPS = ("services6", "vips6", "conns6", "half_open6", "frags6", "real_addrs6", "scratch6", "calls")


def test_pins_made_before_ipv6_migrate_keeping_their_rules(bare_netns: Path) -> None:
    """The previous version had no IPv6 maps (and another ABI): migrate reads its rules all the same."""
    assert pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "wrr", "-p", "60", "-M", "255.255.255.0").returncode == 0
    for name in (*IPV6_MAPS, "pyvs_meta"):
        (bare_netns / name).unlink()
    refused = pyvsadm("-L", "-n")
    assert refused.returncode == 1 and "maps missing: services6" in refused.stderr
    migrated = pyvs("director", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "TCP  198.18.0.100:80 wrr persistent 60 mask 255.255.255.0" in pyvsadm("-L", "-n").stdout
    assert all((bare_netns / name).exists() for name in IPV6_MAPS)
    assert pyvsadm("-A", "-t", "[2001:db8::100]:80", "-s", "rr").returncode == 0
    assert "TCP  [2001:db8::100]:80 rr" in pyvsadm("-L", "-n").stdout


def test_a_layout_that_no_longer_reads_migrates_from_a_saved_listing(bare_netns: Path, tmp_path: Path) -> None:
    assert pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "wrr").returncode == 0
    saved = tmp_path / "rules"
    saved.write_text(pyvsadm("-S", "-n").stdout)
    _replace_pin(bare_netns / "reals", 4, 8)
    refused = pyvsadm("-L", "-n")
    assert refused.returncode == 1 and "map reals" in refused.stderr and "pyvs director migrate" in refused.stderr
    unread = pyvs("director", "migrate")
    assert unread.returncode == 1 and "--from FILE" in unread.stderr
    migrated = pyvs("director", "migrate", "--from", str(saved))
    assert migrated.returncode == 0, migrated.stderr
    assert "TCP  198.18.0.100:80 wrr" in pyvsadm("-L", "-n").stdout


def test_pins_whose_slot_usage_has_the_old_shape_migrate_without_a_saved_listing(bare_netns: Path) -> None:
    assert pyvsadm("-A", "-t", "198.18.0.100:80", "-s", "mh", "--mh-table-size", "8191").returncode == 0
    (bare_netns / "pyvs_meta").unlink()
    _replace_pin(bare_netns / "slot_usage", 4, (1024 + 131072) // 8)  # before the table pool: no chunk bits
    migrated = pyvs("director", "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "TCP  198.18.0.100:80 mh mh-table-size 8191" in pyvsadm("-L", "-n").stdout
