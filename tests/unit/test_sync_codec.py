"""The IPVS sync protocol version 1, byte for byte as net/netfilter/ipvs/ip_vs_sync.c lays it out."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

import pytest

from pyvs.sync.codec import (
    CONN_F_DROUTE,
    CONN_F_INACTIVE,
    CONN_F_TEMPLATE,
    SyncConn,
    Verdict,
    batches,
    decode_message,
    encode_message,
)

# struct ip_vs_sync_mesg: reserved 0, syncid, size (be16), nr_conns, version 1, spare (u16) 0.
HEADER_44 = bytes([0x00, 0x07, 0x00, 0x2C, 0x01, 0x01, 0x00, 0x00])
# struct ip_vs_sync_v4: type 0, protocol 6, ver_size (be16: version 0, size 36), flags (be32: IP_VS_CONN_F_DROUTE),
# state (be16: IP_VS_TCP_S_ESTABLISHED), cport 50000, vport 80, dport 80, fwmark 0, timeout 900, caddr, vaddr, daddr.
ENTRY_V4 = bytes([
    0x00, 0x06, 0x00, 0x24,
    0x00, 0x00, 0x00, 0x03,
    0x00, 0x01, 0xC3, 0x50,
    0x00, 0x50, 0x00, 0x50,
    0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x03, 0x84,
    198, 18, 1, 2,
    198, 18, 0, 100,
    198, 18, 2, 11,
])
CONN_V4 = SyncConn(6, IPv4Address("198.18.1.2"), 50000, IPv4Address("198.18.0.100"), 80,
                   IPv4Address("198.18.2.11"), 80, 1, CONN_F_DROUTE, 0, 900)


def test_an_ipv4_connection_is_the_kernels_bytes() -> None:
    assert encode_message([CONN_V4], 7) == HEADER_44 + ENTRY_V4


def test_the_kernels_bytes_decode_to_the_connection() -> None:
    decoded = decode_message(HEADER_44 + ENTRY_V4, 7)
    assert decoded.verdict is Verdict.OK
    assert decoded.conns == [CONN_V4]


def test_an_ipv6_entry_has_type_1_and_72_bytes() -> None:
    conn = SyncConn(17, IPv6Address("2001:db8:1::2"), 5353, IPv6Address("2001:db8::100"), 53,
                    IPv6Address("2001:db8:2::11"), 53, 0, CONN_F_DROUTE | CONN_F_INACTIVE, 0, 300)
    data = encode_message([conn], 0)
    assert len(data) == 8 + 72
    assert data[8:12] == bytes([0x01, 17, 0x00, 72])
    assert data[12:16] == struct.pack(">I", 0x0103)
    assert data[32:48] == IPv6Address("2001:db8:1::2").packed
    assert decode_message(data).conns == [conn]


def test_a_template_and_a_connection_in_one_message() -> None:
    template = SyncConn(6, IPv4Address("198.18.1.0"), 0, IPv4Address("198.18.0.100"), 80,
                        IPv4Address("198.18.2.12"), 80, 0, CONN_F_DROUTE | CONN_F_TEMPLATE, 0, 300)
    data = encode_message([template, CONN_V4], 1)
    assert data[:8] == bytes([0, 1, 0, 8 + 72, 2, 1, 0, 0])
    assert decode_message(data, 1).conns == [template, CONN_V4]


def test_an_entry_with_options_is_padded_to_four_bytes_before_the_next() -> None:
    with_option = SyncConn(6, IPv4Address("198.18.1.3"), 1, IPv4Address("198.18.0.100"), 80,
                           IPv4Address("198.18.2.11"), 80, 1, options=bytes([0x48, 1, 0xAA]))  # an optional param
    data = encode_message([with_option, CONN_V4], 0)
    assert data[10:12] == struct.pack(">H", 39)  # the entry's size excludes the padding
    assert data[8 + 39] == 0  # one byte of padding
    assert data[8 + 40:] == ENTRY_V4
    assert decode_message(data).conns == [with_option, CONN_V4]


def test_a_backup_with_another_syncid_ignores_the_message_and_0_takes_any() -> None:
    data = HEADER_44 + ENTRY_V4
    assert decode_message(data, 9).verdict is Verdict.WRONG_SYNCID
    assert decode_message(data, 0).conns == [CONN_V4]


def test_a_version_0_message_is_not_read() -> None:
    v0 = bytes([1, 7, 0, 4 + 24]) + bytes(24)  # nr_conns first: what a sync_version=0 master sends
    assert decode_message(v0).verdict is Verdict.WRONG_VERSION


@pytest.mark.parametrize("data", [
    b"\0\0",  # shorter than any header
    HEADER_44 + ENTRY_V4[:-1],  # the size field says 44
    bytes([0, 7, 0, 43, 1, 1, 0, 0]) + ENTRY_V4[:-1],  # the entry is cut off
])
def test_malformed_messages(data: bytes) -> None:
    assert decode_message(data).verdict is Verdict.MALFORMED
    assert decode_message(data).conns == []


def test_a_bad_entry_ends_the_message_after_the_good_ones() -> None:
    bad = bytearray(ENTRY_V4)
    bad[0] = 2  # an unknown type
    data = bytes([0, 7, 0, 8 + 72, 2, 1, 0, 0]) + ENTRY_V4 + bytes(bad)
    decoded = decode_message(data)
    assert decoded.verdict is Verdict.MALFORMED and decoded.conns == [CONN_V4]


def test_entries_the_kernel_skips_are_skipped() -> None:
    unknown_state = bytearray(ENTRY_V4)
    unknown_state[8:10] = struct.pack(">H", 11)  # beyond IP_VS_TCP_S_LAST
    mandatory = SyncConn(6, IPv4Address("198.18.1.4"), 1, IPv4Address("198.18.0.100"), 80,
                         IPv4Address("198.18.2.11"), 80, 1, options=bytes([0x05, 1, 0xAA, 0]))
    data = encode_message([mandatory], 0)
    data = bytes([0, 0, 0, len(data) - 8 + 8 + 36, 2, 1, 0, 0]) + data[8:] + bytes(unknown_state)
    decoded = decode_message(data)
    assert decoded.verdict is Verdict.OK and decoded.conns == [] and decoded.skipped == 2


def test_batches_fill_messages_up_to_maxlen_and_255_entries() -> None:
    conns = [CONN_V4] * 600
    assert [len(b) for b in batches(conns, 1472)] == [40] * 15
    assert [len(b) for b in batches(conns, 65000)] == [255, 255, 90]
    for batch in batches(conns, 1472):
        assert len(encode_message(batch, 0)) <= 1472


def test_sctp_has_ipvs_fourteen_states() -> None:
    """IP_VS_SCTP_S_CLOSED (13) is read, IP_VS_SCTP_S_LAST (14) is beyond (include/net/ip_vs.h)."""
    closed, beyond = (SyncConn(132, IPv4Address("198.18.1.2"), 40000 + state, IPv4Address("198.18.0.100"), 3868,
                               IPv4Address("198.18.2.11"), 3868, state) for state in (13, 14))
    decoded = decode_message(encode_message([closed, beyond], 0))
    assert decoded.conns == [closed] and decoded.skipped == 1
