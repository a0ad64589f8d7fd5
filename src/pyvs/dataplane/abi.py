"""The data plane ABI on the Python side: constants read from bpf/pyvs_abi.h, ctypes mirrors of its structs.

The header is the one source; tests/bpf/test_abi.py holds these mirrors to the object's BTF.
"""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

BPF_DIR = Path(__file__).parent / "bpf"
HEADER = BPF_DIR / "pyvs_abi.h"


def read_defines(path: Path = HEADER) -> dict[str, int]:
    """Every `#define PYVS_NAME <integer>` of the header."""
    defines: dict[str, int] = {}
    for match in re.finditer(r"^#define\s+(PYVS_\w+)\s+(\d+)\b", path.read_text(), re.M):
        defines[match.group(1)] = int(match.group(2))
    return defines


_D = read_defines()

MAX_SERVICES = _D["PYVS_MAX_SERVICES"]
MAX_REALS = _D["PYVS_MAX_REALS"]
MAX_REALS_PER_SERVICE = _D["PYVS_MAX_REALS_PER_SERVICE"]
TABLE_MAX = _D["PYVS_TABLE_MAX"]
TABLE_POOL = _D["PYVS_TABLE_POOL"]
TABLE_CHUNK = _D["PYVS_TABLE_CHUNK"]
TABLE_CHUNKS = TABLE_POOL // TABLE_CHUNK
CONN_TABLE_SIZE = _D["PYVS_CONN_TABLE_SIZE"]
CONN_SHARD_TARGET = _D["PYVS_CONN_SHARD_TARGET"]
MAX_CONN_SHARDS = _D["PYVS_MAX_CONN_SHARDS"]
HALF_OPEN_DIVISOR = _D["PYVS_HALF_OPEN_DIVISOR"]
COUNT_PARITIES = _D["PYVS_COUNT_PARITIES"]
PARITY_SLOTS = _D["PYVS_PARITY_SLOTS"]
PASS_TICKS = _D["PYVS_PASS_TICKS"]
VIP_FILTER_SIZE = _D["PYVS_VIP_FILTER_SIZE"]
VIP_F_ANY_PORT = _D["PYVS_VIP_F_ANY_PORT"]
VIP_F_STANDBY = _D["PYVS_VIP_F_STANDBY"]
REAL_ACTIVE = _D["PYVS_REAL_ACTIVE"]
REAL_IPV6 = _D["PYVS_REAL_IPV6"]
REAL_OVERLOAD = _D["PYVS_REAL_OVERLOAD"]
EST_ROWS = _D["PYVS_EST_ROWS"]
REAL_FWD_MASQ = _D["PYVS_REAL_FWD_MASQ"]
NAT_TABLE_SIZE = _D["PYVS_NAT_TABLE_SIZE"]
REAL_FWD_TUNNEL = _D["PYVS_REAL_FWD_TUNNEL"]
TUN_F_CSUM = _D["PYVS_TUN_F_CSUM"]
TUN_F_REMCSUM = _D["PYVS_TUN_F_REMCSUM"]
TUN_F_ROUTED = _D["PYVS_TUN_F_ROUTED"]
TUN_TYPES: dict[str, int] = {"ipip": _D["PYVS_TUN_IPIP"], "gue": _D["PYVS_TUN_GUE"], "gre": _D["PYVS_TUN_GRE"]}
MAX_EXT_HEADERS = _D["PYVS_MAX_EXT_HEADERS"]
CFG_EXPIRE_NODEST_CONN = _D["PYVS_CFG_EXPIRE_NODEST_CONN"]
CFG_SLOPPY_TCP = _D["PYVS_CFG_SLOPPY_TCP"]
CFG_IPV6 = _D["PYVS_CFG_IPV6"]
CFG_MASQ = _D["PYVS_CFG_MASQ"]
CFG_SYNC = _D["PYVS_CFG_SYNC"]
SYNC_RING_SIZE = _D["PYVS_SYNC_RING_SIZE"]
CONN_F_TEMPLATE = _D["PYVS_CONN_F_TEMPLATE"]
CONN_F_PERSISTED = _D["PYVS_CONN_F_PERSISTED"]
CONN_F_MASQ = _D["PYVS_CONN_F_MASQ"]
STATE_COUNT = _D["PYVS_STATE_COUNT"]
CNT_COUNT = _D["PYVS_CNT_COUNT"]

SCHEDULER_IDS: dict[str, int] = {
    name[len("PYVS_SCHED_") :].lower(): value
    for name, value in _D.items()
    if name.startswith("PYVS_SCHED_")
}
SVC_F_SCHED1 = _D["PYVS_SVC_F_SCHED1"]
SVC_F_SCHED2 = _D["PYVS_SVC_F_SCHED2"]
SVC_F_SCHED3 = _D["PYVS_SVC_F_SCHED3"]
SVC_F_PERSISTENT = _D["PYVS_SVC_F_PERSISTENT"]
SVC_F_NO_WEIGHT = _D["PYVS_SVC_F_NO_WEIGHT"]
SVC_F_ONEPACKET = _D["PYVS_SVC_F_ONEPACKET"]
SVC_F_FWMARK = _D["PYVS_SVC_F_FWMARK"]
SCHEDULER_NAMES: dict[int, str] = {value: name for name, value in SCHEDULER_IDS.items()}

# State number -> IPVS state name (as ipvsadm -L -c prints it).
STATE_NAMES: dict[int, str] = {
    value: name[len("PYVS_STATE_") :]
    for name, value in _D.items()
    if name.startswith("PYVS_STATE_") and name != "PYVS_STATE_COUNT"
}
STATES: dict[str, int] = {name: value for value, name in STATE_NAMES.items()}
# IPVS counts these TCP states (and SCTP's ESTABLISHED) in ActiveConn, every other one in InActConn.
ACTIVE_STATES = frozenset(STATES[n] for n in ("ESTABLISHED", "SYN_SENT", "SYN_RECV", "SYNACK", "SCTP_ESTABLISHED"))
# The SCTP states as IPVS names them (sctp_state_name_table), which ipvsadm -L -c prints.
SCTP_STATE_LABELS = {
    "NONE": "NONE", "INIT1": "INIT1", "INIT": "INIT", "COOKIE_SENT": "C-SENT", "COOKIE_REPLIED": "C-REPLIED",
    "COOKIE_WAIT": "C-WAIT", "COOKIE": "COOKIE", "COOKIE_ECHOED": "C-ECHOED", "ESTABLISHED": "ESTABLISHED",
    "SHUTDOWN_SENT": "S-SENT", "SHUTDOWN_RECEIVED": "S-RECEIVED", "SHUTDOWN_ACK_SENT": "S-ACK-SENT",
    "REJECTED": "REJECTED", "CLOSED": "CLOSED",
}
# State number -> the name ipvsadm -L -c shows (an SCTP state's without the SCTP_ prefix of pyvs's constant).
STATE_LABELS: dict[int, str] = {
    value: SCTP_STATE_LABELS[name[5:]] if name.startswith("SCTP_") else name for value, name in STATE_NAMES.items()
}

# Counter number -> name, e.g. 8 -> "drop_no_real".
COUNTER_NAMES: dict[int, str] = {
    value: name[len("PYVS_CNT_") :].lower()
    for name, value in _D.items()
    if name.startswith("PYVS_CNT_") and name != "PYVS_CNT_COUNT"
}


class SvcKey(ctypes.Structure):
    _fields_ = [("vip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("pad", ctypes.c_uint8)]


class Addr6(ctypes.Structure):
    """An IPv6 address: its 16 network-order bytes, as four words."""

    _fields_ = [("w", ctypes.c_uint32 * 4)]


class SvcKey6(ctypes.Structure):
    _fields_ = [("vip", Addr6), ("port", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class Svc(ctypes.Structure):
    _fields_ = [("index", ctypes.c_uint32), ("sched", ctypes.c_uint32), ("flags", ctypes.c_uint32),
                ("table_base", ctypes.c_uint32), ("table_len", ctypes.c_uint32),
                ("persist_timeout", ctypes.c_uint32), ("netmask", ctypes.c_uint32), ("table_size", ctypes.c_uint32)]


class RealConns(ctypes.Structure):
    """Counts per pass parity; a real's live count is the current plus the previous parity."""

    _fields_ = [("active", ctypes.c_int32 * PARITY_SLOTS), ("inactive", ctypes.c_int32 * PARITY_SLOTS)]

    @classmethod
    def counted(cls, active: int, inactive: int, parity: int) -> RealConns:
        """Counts that a real holds in one parity (the others zero)."""
        value = cls()
        value.active[parity] = active
        value.inactive[parity] = inactive
        return value

    def live(self, parity: int) -> tuple[int, int]:
        """(active, inactive) as the program reads them when `parity` is the current one."""
        prev = (parity - 1) % COUNT_PARITIES
        return self.active[parity] + self.active[prev], self.inactive[parity] + self.inactive[prev]


class RealEntry(ctypes.Structure):
    _fields_ = [("rip", ctypes.c_uint32), ("port", ctypes.c_uint16), ("weight", ctypes.c_uint16),
                ("svc_index", ctypes.c_uint32), ("flags", ctypes.c_uint32), ("gen", ctypes.c_uint32),
                ("ifindex", ctypes.c_uint32), ("dmac", ctypes.c_uint8 * 6), ("smac", ctypes.c_uint8 * 6),
                ("last_weight", ctypes.c_uint16), ("pad", ctypes.c_uint16)]


class Tunnel(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32), ("port", ctypes.c_uint16),
                ("mtu", ctypes.c_uint16), ("type", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("pad", ctypes.c_uint16)]


class ConnKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32), ("sport", ctypes.c_uint16),
                ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class FragKey(ctypes.Structure):
    _fields_ = [("saddr", ctypes.c_uint32), ("daddr", ctypes.c_uint32), ("id", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8)]


class FragPorts(ctypes.Structure):
    _fields_ = [("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16)]


class ConnKey6(ctypes.Structure):
    _fields_ = [("saddr", Addr6), ("daddr", Addr6), ("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16),
                ("proto", ctypes.c_uint8), ("pad", ctypes.c_uint8 * 3)]


class FragKey6(ctypes.Structure):
    _fields_ = [("saddr", Addr6), ("daddr", Addr6), ("id", ctypes.c_uint32), ("proto", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3)]


class FragPorts6(ctypes.Structure):
    _fields_ = [("sport", ctypes.c_uint16), ("dport", ctypes.c_uint16), ("proto", ctypes.c_uint8),
                ("pad", ctypes.c_uint8 * 3)]


class Conn(ctypes.Structure):
    _fields_ = [("last_seen", ctypes.c_uint64), ("real", ctypes.c_uint32), ("gen", ctypes.c_uint32),
                ("svc_index", ctypes.c_uint32), ("svc_gen", ctypes.c_uint32), ("timeout", ctypes.c_uint32),
                ("state", ctypes.c_uint8), ("counted", ctypes.c_uint8), ("flags", ctypes.c_uint8),
                ("parity", ctypes.c_uint8)]


class NatReply(ctypes.Structure):
    """nat_replies' value (its key is a ConnKey: real, client, real port, client port, protocol)."""

    _fields_ = [("conn", ConnKey), ("ifindex", ctypes.c_uint32), ("dmac", ctypes.c_uint8 * 6),
                ("smac", ctypes.c_uint8 * 6)]


class OutCountersEntry(ctypes.Structure):
    """out_stats' value: the replies of NAT connections (IPVS's OutPkts, OutBytes)."""

    _fields_ = [("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class CountersEntry(ctypes.Structure):
    _fields_ = [("conns", ctypes.c_uint64), ("packets", ctypes.c_uint64), ("bytes", ctypes.c_uint64)]


class Config(ctypes.Structure):
    _fields_ = [("timeouts", ctypes.c_uint32 * STATE_COUNT), ("flags", ctypes.c_uint32),
                ("conn_shards", ctypes.c_uint32), ("pass_ticks", ctypes.c_uint32), ("pad", ctypes.c_uint32)]


class SvcReals(ctypes.Structure):
    _fields_ = [("count", ctypes.c_uint32), ("slots", ctypes.c_uint32 * MAX_REALS_PER_SERVICE)]


class SlotUsage(ctypes.Structure):
    _fields_ = [("services", ctypes.c_uint64 * (MAX_SERVICES // 64)), ("reals", ctypes.c_uint64 * (MAX_REALS // 64)),
                ("table_chunks", ctypes.c_uint64 * (TABLE_CHUNKS // 64))]


class SweepStats(ctypes.Structure):
    _fields_ = [("runs", ctypes.c_uint64), ("now", ctypes.c_uint64), ("ticks", ctypes.c_uint64),
                ("epoch", ctypes.c_uint32), ("parity", ctypes.c_uint32), ("shard", ctypes.c_uint32),
                ("zeroed", ctypes.c_uint32), ("pass_tick", ctypes.c_uint32), ("pad", ctypes.c_uint32),
                ("last_step_ns", ctypes.c_uint64), ("max_step_ns", ctypes.c_uint64), ("entries", ctypes.c_uint64),
                ("half_open", ctypes.c_uint64), ("scanning_entries", ctypes.c_uint64),
                ("scanning_half_open", ctypes.c_uint64), ("pass_ended", ctypes.c_uint64),
                ("prev_pass_ended", ctypes.c_uint64), ("new_conns", ctypes.c_uint64),
                ("prev_new_conns", ctypes.c_uint64), ("entries6", ctypes.c_uint64), ("half_open6", ctypes.c_uint64),
                ("scanning_entries6", ctypes.c_uint64), ("scanning_half_open6", ctypes.c_uint64)]


class Sweeper(ctypes.Structure):
    """The timer's map value (the timer itself reads back as zeros)."""

    _fields_ = [("timer", ctypes.c_uint64 * 2), ("stats", SweepStats)]


class RealLimits(ctypes.Structure):
    _fields_ = [("u_threshold", ctypes.c_uint32), ("l_threshold", ctypes.c_uint32)]


class Est(ctypes.Structure):
    """A rate estimator: the counters at the last estimate and the averages (cps, pps scaled by 2^10, bps by 2^5)."""

    _fields_ = [("last_conns", ctypes.c_uint64), ("last_inpkts", ctypes.c_uint64), ("last_outpkts", ctypes.c_uint64),
                ("last_inbytes", ctypes.c_uint64), ("last_outbytes", ctypes.c_uint64), ("cps", ctypes.c_uint64),
                ("inpps", ctypes.c_uint64), ("outpps", ctypes.c_uint64), ("inbps", ctypes.c_uint64),
                ("outbps", ctypes.c_uint64), ("gen", ctypes.c_uint32), ("rounds", ctypes.c_uint32)]


class EstClock(ctypes.Structure):
    _fields_ = [("next_due", ctypes.c_uint64), ("rows", ctypes.c_uint64), ("row", ctypes.c_uint32),
                ("pad", ctypes.c_uint32)]


class SyncEvent(ctypes.Structure):
    """A connection event of the ring buffer sync_events (addresses of both families in 16 bytes)."""

    _fields_ = [("caddr", ctypes.c_uint32 * 4), ("vaddr", ctypes.c_uint32 * 4), ("cport", ctypes.c_uint16),
                ("vport", ctypes.c_uint16), ("proto", ctypes.c_uint8), ("family", ctypes.c_uint8),
                ("state", ctypes.c_uint8), ("flags", ctypes.c_uint8), ("real", ctypes.c_uint32),
                ("gen", ctypes.c_uint32), ("timeout", ctypes.c_uint32)]


# The connection tables (maps of maps whose shards Python creates) and the key of each.
CONN_TABLES: dict[str, type[ctypes.Structure]] = {"conns": ConnKey, "half_open": ConnKey, "conns6": ConnKey6,
                                                  "half_open6": ConnKey6}

# Mirror name -> C struct name, for the BTF check.
MIRRORS: dict[str, type[ctypes.Structure]] = {
    "pyvs_svc_key": SvcKey,
    "pyvs_addr6": Addr6,
    "pyvs_svc6_key": SvcKey6,
    "pyvs_conn6_key": ConnKey6,
    "pyvs_frag6_key": FragKey6,
    "pyvs_frag6_ports": FragPorts6,
    "pyvs_svc": Svc,
    "pyvs_real": RealEntry,
    "pyvs_tunnel": Tunnel,
    "pyvs_conn_key": ConnKey,
    "pyvs_conn": Conn,
    "pyvs_frag_key": FragKey,
    "pyvs_frag_ports": FragPorts,
    "pyvs_counters": CountersEntry,
    "pyvs_real_conns": RealConns,
    "pyvs_config": Config,
    "pyvs_svc_reals": SvcReals,
    "pyvs_slot_usage": SlotUsage,
    "pyvs_sweep_stats": SweepStats,
    "sweeper": Sweeper,
    "pyvs_real_limits": RealLimits,
    "pyvs_est": Est,
    "pyvs_est_clock": EstClock,
    "pyvs_nat_reply": NatReply,
    "pyvs_out_counters": OutCountersEntry,
    "pyvs_sync_event": SyncEvent,
}

def fill_config_defaults(cfg: Config) -> bool:
    """Give every state without a timeout its default and the pass length its default; True if any was missing
    (an entry whose state has a zero timeout expires at once)."""
    changed = False
    for name, seconds in DEFAULT_TIMEOUTS.items():
        if not cfg.timeouts[STATES[name]]:
            cfg.timeouts[STATES[name]] = seconds
            changed = True
    if not cfg.pass_ticks:
        cfg.pass_ticks = PASS_TICKS
        changed = True
    return changed


# IPVS's default timeout of each state, in seconds (ip_vs_proto_tcp.c, ip_vs_proto_udp.c).
DEFAULT_TIMEOUTS: dict[str, int] = {
    "NONE": 2, "ESTABLISHED": 900, "SYN_SENT": 120, "SYN_RECV": 60, "FIN_WAIT": 120, "TIME_WAIT": 120,
    "CLOSE": 10, "CLOSE_WAIT": 60, "LAST_ACK": 30, "LISTEN": 120, "SYNACK": 120, "UDP": 300,
    # ip_vs_proto_sctp.c's sctp_timeouts: IP_VS_SCTP_MAX_RTO is 61 s, INIT1 and REJECTED 4 s, ESTABLISHED 15 min
    "SCTP_NONE": 2, "SCTP_INIT1": 4, "SCTP_INIT": 61, "SCTP_COOKIE_SENT": 61, "SCTP_COOKIE_REPLIED": 61,
    "SCTP_COOKIE_WAIT": 61, "SCTP_COOKIE": 61, "SCTP_COOKIE_ECHOED": 61, "SCTP_ESTABLISHED": 900,
    "SCTP_SHUTDOWN_SENT": 61, "SCTP_SHUTDOWN_RECEIVED": 61, "SCTP_SHUTDOWN_ACK_SENT": 61, "SCTP_REJECTED": 4,
    "SCTP_CLOSED": 61,
}
