/* The ABI shared by the XDP program and the Python control plane.
 * One source: pyvs/dataplane/abi.py reads the #defines of this file, and a test
 * checks its ctypes mirrors of the structs against the object's BTF. */
#ifndef PYVS_ABI_H
#define PYVS_ABI_H

#include <linux/types.h>

/* Sizes of the maps. */
#define PYVS_MAX_SERVICES 1024
#define PYVS_MAX_REALS 131072
#define PYVS_TABLE_MAX 131071 /* slots of one scheduler table at most (IPVS's largest mh table) */
#define PYVS_TABLE_POOL 8388608 /* slots of sched_table, the pool of every service's tables (64 MiB: 8 bytes a value) */
#define PYVS_TABLE_CHUNK 256 /* the pool is handed out in runs of chunks of this many slots */
#define PYVS_CONN_TABLE_SIZE 262144 /* default entries of the connection table, all shards together */
#define PYVS_CONN_SHARD_TARGET 2048 /* entries of one shard at most (one sweep step: ~0.2 ms) when it can be */
#define PYVS_MAX_CONN_SHARDS 4096
#define PYVS_HALF_OPEN_DIVISOR 4 /* the half-open table has 1/4 of the connection table's entries */
#define PYVS_COUNT_PARITIES 3 /* real_conns keeps a count per sweep pass parity (see the sweeper) */
#define PYVS_PARITY_SLOTS 4   /* the arrays have one slot more, so that an index masked with 3 is in bounds */
#define PYVS_PASS_TICKS 400 /* clock ticks (2.5 ms) per sweep pass, at least one tick per shard */
#define PYVS_VIP_FILTER_SIZE 65536 /* slots of the cheap "may be a VIP" pre-filter */
#define PYVS_MAX_REALS_PER_SERVICE 4096
#define PYVS_FRAG_TABLE_SIZE 8192 /* fragmented datagrams to a VIP whose first fragment was seen (LRU) */
#define PYVS_MAX_EXT_HEADERS 6 /* IPv6 extension headers walked before the upper-layer header; more: passed */
#define PYVS_NAT_TABLE_SIZE 262144 /* replies of NAT connections: (real, client) -> the connection (LRU) */
#define PYVS_SYNC_RING_SIZE 1048576 /* bytes of the sync_events ring buffer (~21000 events of 48 bytes) */
#define PYVS_EST_ROWS 800 /* the rate estimator's rows: one per 2.5 ms tick, each stats slot once every 2 s */

/* Scheduler ids (svc.sched), one per IPVS scheduler. */
#define PYVS_SCHED_RR 0
#define PYVS_SCHED_WRR 1
#define PYVS_SCHED_LC 2
#define PYVS_SCHED_WLC 3
#define PYVS_SCHED_SED 4
#define PYVS_SCHED_NQ 5
#define PYVS_SCHED_SH 6
#define PYVS_SCHED_DH 7
#define PYVS_SCHED_LBLC 8
#define PYVS_SCHED_LBLCR 9
#define PYVS_SCHED_FO 10
#define PYVS_SCHED_OVF 11
#define PYVS_SCHED_MH 12

/* Service flags (svc.flags): ipvsadm -b's flag-1..3 (sh-fallback/mh-fallback, sh-port/mh-port), -p. */
#define PYVS_SVC_F_SCHED1 1
#define PYVS_SVC_F_SCHED2 2
#define PYVS_SVC_F_SCHED3 4
#define PYVS_SVC_F_PERSISTENT 8
#define PYVS_SVC_F_NO_WEIGHT 16 /* no real has a weight: no new connection, and no table walk to learn it */
#define PYVS_SVC_F_ONEPACKET 32 /* ipvsadm -o: every UDP datagram (UDP or fwmark service) scheduled, no entry kept */
#define PYVS_SVC_F_FWMARK 64 /* a firewall-mark service: its key in services is (mark, port 0, protocol 0) */

/* Real flags. */
#define PYVS_REAL_ACTIVE 1 /* the slot holds a real; cleared when the real is deleted */
#define PYVS_REAL_OVERLOAD 2 /* IPVS's IP_VS_DEST_F_OVERLOAD: no new connections (thresholds) */
#define PYVS_REAL_IPV6 4 /* an IPv6 real: rip holds its address folded to 32 bits, real_addrs6 the address */
#define PYVS_REAL_FWD_MASQ 8 /* ipvsadm -m: NAT; the destination becomes rip:port, replies come back through pyvs */
#define PYVS_REAL_FWD_TUNNEL 16 /* ipvsadm -i: the frame is encapsulated (tunnels[slot] says how) */

/* Tunnel types (struct pyvs_tunnel.type): IPVS's IP_VS_CONN_F_TUNNEL_TYPE_* numbers. */
#define PYVS_TUN_IPIP 0
#define PYVS_TUN_GUE 1
#define PYVS_TUN_GRE 2
/* Tunnel flags (struct pyvs_tunnel.flags): IPVS's IP_VS_TUNNEL_ENCAP_FLAG_* bits (0: --tun-nocsum). */
#define PYVS_TUN_F_CSUM 1
#define PYVS_TUN_F_REMCSUM 2
#define PYVS_TUN_F_ROUTED 128 /* control plane only: the real is reached through a gateway (its MAC is the next hop) */
#define PYVS_TUN_CSUM_CHUNKS 8 /* a checksum over the inner packet reads at most this many 512-byte chunks */

/* Connection entry flags, and where an entry is counted. */
#define PYVS_CONN_F_TEMPLATE 1 /* a persistence template: client (masked), port 0 */
#define PYVS_CONN_F_PERSISTED 2 /* a connection placed by a template: keeps it alive (IPVS's n_control) */
#define PYVS_CONN_F_MASQ 4 /* a NAT connection: it has an entry in nat_replies, its TCP state sees both directions */
#define PYVS_COUNTED_NONE 0
#define PYVS_COUNTED_ACTIVE 1
#define PYVS_COUNTED_INACTIVE 2

/* vips map values: flags of a VIP. */
#define PYVS_VIP_F_ANY_PORT 1 /* has a service on port 0 (every port) */
#define PYVS_VIP_F_STANDBY 2 /* a VRRP backup's VIP: left out of vip_filter, so the program passes its traffic (control plane only) */

/* Config flags. */
#define PYVS_CFG_EXPIRE_NODEST_CONN 1
#define PYVS_CFG_SLOPPY_TCP 2 /* IPVS's sloppy_tcp: a TCP packet other than SYN may start a connection */
#define PYVS_CFG_IPV6 4 /* there are IPv6 services: the sweeper visits the IPv6 tables too (set with the VIPs) */
#define PYVS_CFG_SYNC 8 /* a sync master reads sync_events: new connections and state changes are written there */
#define PYVS_CFG_MASQ 16 /* there are NAT reals: packets not to a VIP are looked up in nat_replies */

/* Connection states: IPVS's TCP state numbers, then one for UDP. */
#define PYVS_STATE_NONE 0
#define PYVS_STATE_ESTABLISHED 1
#define PYVS_STATE_SYN_SENT 2
#define PYVS_STATE_SYN_RECV 3
#define PYVS_STATE_FIN_WAIT 4
#define PYVS_STATE_TIME_WAIT 5
#define PYVS_STATE_CLOSE 6
#define PYVS_STATE_CLOSE_WAIT 7
#define PYVS_STATE_LAST_ACK 8
#define PYVS_STATE_LISTEN 9
#define PYVS_STATE_SYNACK 10
#define PYVS_STATE_UDP 11
/* IPVS's SCTP states (ip_vs_proto_sctp.c, IP_VS_SCTP_S_*), in its order from 12 on. */
#define PYVS_STATE_SCTP_NONE 12
#define PYVS_STATE_SCTP_INIT1 13
#define PYVS_STATE_SCTP_INIT 14
#define PYVS_STATE_SCTP_COOKIE_SENT 15
#define PYVS_STATE_SCTP_COOKIE_REPLIED 16
#define PYVS_STATE_SCTP_COOKIE_WAIT 17
#define PYVS_STATE_SCTP_COOKIE 18
#define PYVS_STATE_SCTP_COOKIE_ECHOED 19
#define PYVS_STATE_SCTP_ESTABLISHED 20
#define PYVS_STATE_SCTP_SHUTDOWN_SENT 21
#define PYVS_STATE_SCTP_SHUTDOWN_RECEIVED 22
#define PYVS_STATE_SCTP_SHUTDOWN_ACK_SENT 23
#define PYVS_STATE_SCTP_REJECTED 24
#define PYVS_STATE_SCTP_CLOSED 25
#define PYVS_STATE_COUNT 26

/* Global counters (index into the counters map). */
#define PYVS_CNT_RX 0              /* packets seen: not counted per packet, the sum of all the others */
#define PYVS_CNT_TX 1              /* forwarded with XDP_TX */
#define PYVS_CNT_REDIRECT 2        /* forwarded with a redirect */
#define PYVS_CNT_PASS 3            /* TCP/UDP to a VIP with no service on that port: passed to the kernel */
#define PYVS_CNT_CONN_NEW 4        /* new connections scheduled */
#define PYVS_CNT_CONN_REPLACED 5   /* expired or closed entry replaced by a new connection */
#define PYVS_CNT_DROP_FRAGMENT 6   /* non-first fragment to a VIP whose first fragment was not seen (out of order, evicted) */
#define PYVS_CNT_DROP_MALFORMED 7  /* truncated or inconsistent packet to a VIP */
#define PYVS_CNT_DROP_NO_REAL 8    /* service has no real with weight > 0 */
#define PYVS_CNT_DROP_REAL_GONE 9  /* connection whose real was deleted */
#define PYVS_CNT_DROP_NO_MAC 10    /* real's MAC not resolved */
#define PYVS_CNT_PASS_MISS_RST 11  /* TCP RST without a connection: left to the kernel */
#define PYVS_CNT_CONN_SWEPT 12     /* expired entries removed by the sweeper */
#define PYVS_CNT_PERSIST_HIT 13    /* new connections sent to a persistence template's real */
#define PYVS_CNT_CONN_INSERTED 14  /* entries added under a new key (connections and templates) */
#define PYVS_CNT_CONN_DELETED 15   /* entries removed by expire_nodest_conn or the control plane */
#define PYVS_CNT_PASS_MISS_ACK 16  /* TCP ACK or data segment without a connection (not sloppy): the kernel's */
#define PYVS_CNT_PASS_MISS_FIN 17  /* TCP FIN without a connection (not sloppy): the kernel's */
#define PYVS_CNT_HALF_OPEN_NEW 18  /* SYNs that made a half-open entry */
#define PYVS_CNT_HALF_OPEN_PROMOTED 19 /* half-open entries moved to the connection table by the client's ACK */
#define PYVS_CNT_HALF_OPEN_SWEPT 20 /* expired half-open entries removed by the sweeper */
#define PYVS_CNT_INSERT_FAILED 21  /* a table insert failed (the packet is still forwarded) */
#define PYVS_CNT_REDIRECT_FAILED 22 /* the redirect helper refused the interface: dropped */
#define PYVS_CNT_ICMP_TO_REAL 23   /* ICMP error quoting a VIP connection's packet: sent to that connection's real */
#define PYVS_CNT_PASS_ICMP_NO_CONN 24 /* ICMP error to a VIP quoting a TCP/UDP packet of no connection: the kernel's */
#define PYVS_CNT_PASS_ICMP 25      /* other ICMP to a VIP (echo request, errors about ICMP, fragmented ICMP): the kernel's */
#define PYVS_CNT_DROP_ICMP_MALFORMED 26 /* ICMP to a VIP cut off or inconsistent (its header or the quoted ports) */
#define PYVS_CNT_FRAG_FIRST 27     /* first fragments to a VIP: their ports recorded for the fragments that follow */
#define PYVS_CNT_FRAG_FOLLOWED 28  /* non-first fragments given the ports of their first fragment */
#define PYVS_CNT_PASS_VLAN_DEPTH 29 /* frames with more than two VLAN tags: passed to the kernel unparsed */
#define PYVS_CNT_PASS_ND 30        /* ICMPv6 neighbour discovery to a VIP (NS, NA, RS, RA, redirect): the kernel's */
#define PYVS_CNT_PASS_EXT_DEPTH 31 /* IPv6 to a VIP with more than PYVS_MAX_EXT_HEADERS extension headers: the kernel's */
#define PYVS_CNT_SYNC_EVENTS 32     /* connection events written to sync_events (PYVS_CFG_SYNC) */
#define PYVS_CNT_SYNC_EVENTS_LOST 33 /* events not written: the ring buffer was full (the sync master is behind) */
#define PYVS_CNT_NAT_FORWARD 34    /* packets to a NAT real: destination rewritten to the real's address and port */
#define PYVS_CNT_NAT_REPLY 35      /* replies of NAT connections: source rewritten to VIP:vport, sent to the client side */
#define PYVS_CNT_PASS_NAT_NO_CONN 36 /* a reply whose NAT connection is gone, stale or another real's: the kernel's */
#define PYVS_CNT_PASS_NAT_TTL 37   /* a NAT reply whose TTL runs out here: the kernel's (it sends time exceeded) */
#define PYVS_CNT_NAT_ICMP_TO_REAL 38 /* ICMP errors about a NAT connection: quoted header rewritten, sent to its real */
#define PYVS_CNT_NAT_REPLY_FRAG 39 /* non-first fragments of NAT replies given their first fragment's ports */
#define PYVS_CNT_TUN_ENCAP 40       /* frames encapsulated for a tunnel real (also counted tx or redirect) */
#define PYVS_CNT_DROP_FRAG_NEEDED 41 /* DF packet too big for the tunnel: dropped, ICMP fragmentation needed sent back */
#define PYVS_CNT_DROP_TOO_BIG 42    /* packet without DF too big for the tunnel (XDP cannot fragment): dropped */
#define PYVS_CNT_DROP_ENCAP 43      /* a tunnel real without tunnel settings, or no room to encapsulate: dropped */
#define PYVS_CNT_ONEPACKET 44     /* UDP datagrams of a one-packet (-o) service scheduled without an entry */
#define PYVS_CNT_OVERLOAD_SET 45  /* a real reached its upper connection threshold (-x): OVERLOAD set */
#define PYVS_CNT_OVERLOAD_CLEARED 46 /* a real's connections fell below its lower threshold (-y): OVERLOAD cleared */
#define PYVS_CNT_FWM_SEEN 47       /* packets with a fwmark service's mark seen by pyvs_fwm (tc egress) */
#define PYVS_CNT_DROP_FWM 48       /* marked packets pyvs_fwm cannot schedule (fragments, ICMP, other protocols) */
#define PYVS_CNT_PASS_MISS_SCTP 49 /* SCTP packet other than INIT (or ABORT) without a connection: the kernel's */
#define PYVS_CNT_COUNT 50

struct pyvs_svc_key {
	__u32 vip;   /* network order */
	__u16 port;  /* network order */
	__u8 proto;
	__u8 pad;
};

/* An IPv6 address as four words of its network-order bytes. IPv6 has maps of its own (services6, vips6, conns6,
 * half_open6, frags6): the IPv4 keys keep their size. */
struct pyvs_addr6 {
	__u32 w[4];
};

struct pyvs_svc6_key {
	struct pyvs_addr6 vip;
	__u16 port;  /* network order */
	__u8 proto;
	__u8 pad;
};

struct pyvs_svc {
	__u32 index;      /* the service's slot: stats and scheduler state */
	__u32 sched;      /* PYVS_SCHED_* */
	__u32 flags;      /* PYVS_SVC_F_* */
	__u32 table_base; /* first slot of the live table in sched_table */
	__u32 table_len;  /* 0: no real can take new connections */
	__u32 persist_timeout; /* seconds, with PYVS_SVC_F_PERSISTENT */
	__u32 netmask;    /* persistence granularity: IPv4 a mask, network order; IPv6 a prefix length (0-128) */
	__u32 table_size; /* control plane only: the mh table size the admin set; 0: chosen from the reals */
};

/* Live connection counts of a real, as IPVS keeps activeconns/inactconns: one pair per pass parity.
 * An entry is counted in the parity it carries; the real's count is the sum over the current and the
 * previous parity (the sweeper zeroes the third one and recounts every entry into the current one). */
struct pyvs_real_conns {
	__s32 active[PYVS_PARITY_SLOTS];
	__s32 inactive[PYVS_PARITY_SLOTS];
};

struct pyvs_real {
	__u32 rip;        /* network order; an IPv6 real (PYVS_REAL_IPV6): its address's words xor-ed */
	__u16 port;       /* network order */
	__u16 weight;
	__u32 svc_index;
	__u32 flags;      /* PYVS_REAL_* */
	__u32 gen;        /* bumped whenever the slot is given to another real */
	__u32 ifindex;    /* egress interface; XDP_TX when it is the ingress one */
	__u8 dmac[6];     /* the real's MAC; all zero when unresolved */
	__u8 smac[6];     /* the egress interface's MAC */
	__u16 last_weight; /* control plane only: the last non-zero weight (IPVS builds mh tables from it) */
	__u16 pad;
};

/* How a tunnel real's frames are encapsulated (tunnels[real slot]), as ip_vs_tunnel_xmit builds them. */
struct pyvs_tunnel {
	__u32 saddr;  /* outer source: the director's address toward the real (network order) */
	__u32 daddr;  /* outer destination: the real's address (network order) */
	__u16 port;   /* GUE: the UDP destination port (network order) */
	__u16 mtu;    /* MTU of the path to the real's next hop: larger packets do not fit once encapsulated */
	__u8 type;    /* PYVS_TUN_* */
	__u8 flags;   /* PYVS_TUN_F_* */
	__u16 pad;
};

/* Control plane only: the real slots of one service (every active real of it is among them). */
struct pyvs_svc_reals {
	__u32 count;
	__u32 slots[PYVS_MAX_REALS_PER_SERVICE];
};

/* Control plane only: which service and real slots and which chunks of sched_table are taken, one bit each. */
struct pyvs_slot_usage {
	__u64 services[PYVS_MAX_SERVICES / 64];
	__u64 reals[PYVS_MAX_REALS / 64];
	__u64 table_chunks[PYVS_TABLE_POOL / PYVS_TABLE_CHUNK / 64];
};

struct pyvs_conn_key {
	__u32 saddr;
	__u32 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

/* A fragmented datagram (Cilium's ipv4_frag_id): the first fragment's ports, for the fragments that follow. */
struct pyvs_frag_key {
	__u32 saddr;
	__u32 daddr;
	__u16 id;     /* the IP ID, network order */
	__u8 proto;
	__u8 pad;
};

struct pyvs_frag_ports {
	__u16 sport;
	__u16 dport;
};

struct pyvs_conn6_key {
	struct pyvs_addr6 saddr;
	struct pyvs_addr6 daddr;
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3]; /* pad[0]: PYVS_CONN_F_TEMPLATE in a template's key */
};

/* An IPv6 fragmented datagram: (source, destination, the fragment header's identification and next header). */
struct pyvs_frag6_key {
	struct pyvs_addr6 saddr;
	struct pyvs_addr6 daddr;
	__u32 id;     /* network order */
	__u8 proto;   /* the fragment header's next header */
	__u8 pad[3];
};

/* The first fragment's ports and upper-layer protocol (extension headers may follow the fragment header). */
struct pyvs_frag6_ports {
	__u16 sport;
	__u16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct pyvs_conn {
	__u64 last_seen;  /* bpf_ktime_get_ns() of the last packet */
	__u32 real;       /* slot in reals */
	__u32 gen;        /* the real's gen when the connection was scheduled */
	__u32 svc_index;
	__u32 svc_gen;    /* the service's generation when the connection was scheduled */
	__u32 timeout;    /* seconds; 0: the timeout of its state */
	__u8 state;       /* PYVS_STATE_* */
	__u8 counted;     /* PYVS_COUNTED_*: where the entry is counted in real_conns */
	__u8 flags;       /* PYVS_CONN_F_* */
	__u8 parity;      /* the pass parity the entry is counted in (real_conns) */
};

/* nat_replies: a NAT connection seen from its real's side. Key: a pyvs_conn_key (real, client, real port, client
 * port, protocol); value: the connection's key and the way back to the client, learnt from its first packet. */
struct pyvs_nat_reply {
	struct pyvs_conn_key conn; /* client -> VIP:vport: the connection's key in conns/half_open */
	__u32 ifindex;             /* the interface the client's packets came in on */
	__u8 dmac[6];              /* their source MAC: the next hop towards the client */
	__u8 smac[6];              /* their destination MAC: this director's, on that interface */
};

/* out_stats: what IPVS counts as OutPkts/OutBytes, the replies of NAT connections (by service, then real, as stats). */
struct pyvs_out_counters {
	__u64 packets;
	__u64 bytes;
};

struct pyvs_counters {
	__u64 conns;
	__u64 packets;
	__u64 bytes;
};

struct pyvs_config {
	__u32 timeouts[PYVS_STATE_COUNT]; /* seconds, per state */
	__u32 flags;                      /* PYVS_CFG_* */
	__u32 conn_shards;                /* shards of conns and half_open (a power of two); 0: not set up */
	__u32 pass_ticks;                 /* clock ticks per sweep pass */
	__u32 pad;
};

/* The sweeper's state and what its last pass found (read by the control plane). */
struct pyvs_sweep_stats {
	__u64 runs;          /* passes completed */
	__u64 now;           /* bpf_ktime_get_coarse_ns() at the last tick: the packet path's clock */
	__u64 ticks;
	__u32 epoch;         /* current pass; its parity is epoch % PYVS_COUNT_PARITIES */
	__u32 parity;
	__u32 shard;         /* next shard to sweep in this pass */
	__u32 zeroed;        /* real slots of the next parity zeroed so far in this pass */
	__u32 pass_tick;     /* ticks since this pass began */
	__u32 pad;
	__u64 last_step_ns;  /* the last tick's work */
	__u64 max_step_ns;   /* the longest tick's work since the sweeper started */
	__u64 entries;       /* live entries of conns counted in the last pass (templates included) */
	__u64 half_open;     /* live entries of half_open counted in the last pass */
	__u64 scanning_entries;   /* the same, in the pass under way */
	__u64 scanning_half_open;
	__u64 pass_ended;         /* time (coarse ns) the last pass ended, and the one before */
	__u64 prev_pass_ended;
	__u64 new_conns;          /* counter conn_new, summed over the CPUs, when the last pass ended */
	__u64 prev_new_conns;
	__u64 entries6;           /* the same for conns6 and half_open6 (the IPv6 tables) */
	__u64 half_open6;
	__u64 scanning_entries6;
	__u64 scanning_half_open6;
};

/* A real's connection thresholds (ipvsadm -x, -y), by real slot (real_limits); 0: none. */
struct pyvs_real_limits {
	__u32 u_threshold;
	__u32 l_threshold;
};

/* The rate estimator of one service or real (IPVS's struct ip_vs_estimator), by the index of `stats`: the counters
 * at its last estimate and the rates, cps and pps scaled by 2^10, bps by 2^5 (ip_vs_est.c). */
struct pyvs_est {
	__u64 last_conns;
	__u64 last_inpkts;
	__u64 last_outpkts;
	__u64 last_inbytes;
	__u64 last_outbytes;
	__u64 cps;
	__u64 inpps;
	__u64 outpps;
	__u64 inbps;
	__u64 outbps;
	__u32 gen;   /* the service's or real's generation it estimates; another one starts afresh */
	__u32 rounds; /* estimates made */
};

/* Where the estimator is: the row of slots it does next and when (every PYVS_EST_ROWS rows make 2 s). */
struct pyvs_est_clock {
	__u64 next_due; /* bpf_ktime_get_ns() */
	__u64 rows;     /* rows done since the timer started */
	__u32 row;
	__u32 pad;
};

/* A connection event for the sync master (ring buffer sync_events, written while PYVS_CFG_SYNC is set): a connection
 * entered the connection table (a promoted handshake, a new UDP flow, a sloppy start), changed its TCP state, or a
 * persistence template was made. Addresses of both families in 16 bytes (IPv4: the first word). */
struct pyvs_sync_event {
	__u32 caddr[4];   /* client (a template's: masked), network order */
	__u32 vaddr[4];   /* the VIP */
	__u16 cport;      /* network order; 0 in a template */
	__u16 vport;      /* network order; 0 in a template of a service on every port */
	__u8 proto;
	__u8 family;      /* 4 or 6 */
	__u8 state;       /* PYVS_STATE_* */
	__u8 flags;       /* PYVS_CONN_F_* (TEMPLATE) */
	__u32 real;       /* slot in reals */
	__u32 gen;        /* the real's gen when the connection was scheduled */
	__u32 timeout;    /* the entry's own timeout (seconds; templates); 0: its state's */
};

#endif
