/* The maps of the XDP program; pinned by the control plane. */
#ifndef PYVS_MAPS_H
#define PYVS_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, struct pyvs_svc_key);
	__type(value, struct pyvs_svc);
} services SEC(".maps");

/* VIP -> PYVS_VIP_F_* flags. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} vips SEC(".maps");

/* The IPv6 services and VIPs: the same values, keyed by IPv6 addresses. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, struct pyvs_svc6_key);
	__type(value, struct pyvs_svc);
} services6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, struct pyvs_addr6);
	__type(value, __u32);
} vips6 SEC(".maps");

/* vip_filter_slot(addr) -> number of VIPs in that slot (an IPv6 VIP's slot is that of its words xor-ed): most packets that are not for a VIP
 * leave after this array lookup, without a hash lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_VIP_FILTER_SIZE);
	__type(key, __u32);
	__type(value, __u32);
} vip_filter SEC(".maps");

/* Service slot -> generation: odd while a service holds the slot, bumped when it is added or deleted. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} svc_gens SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_real);
} reals SEC(".maps");

/* The pool of scheduler tables (real slots): a service's live table is the run svc.table_base, table_len;
 * the control plane writes a new one in a free run (through mmap), then switches the service to it. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, PYVS_TABLE_POOL);
	__type(key, __u32);
	__type(value, __u32);
} sched_table SEC(".maps");

/* Per-service position in its table (rr, wrr). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} sched_state SEC(".maps");

/* Live connection counts per real slot (lc, wlc, sed, nq, lblc, lblcr, ovf). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_real_conns);
} real_conns SEC(".maps");

/* The connection table, in shards (config.conn_shards, a power of two) so that the sweeper visits one
 * shard per step. The control plane creates the shards; the two templates give their kind and size. */
struct conn_shard {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_CONN_SHARD_TARGET);
	__uint(key_size, sizeof(struct pyvs_conn_key));
	__uint(value_size, sizeof(struct pyvs_conn));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PYVS_MAX_CONN_SHARDS);
	__type(key, __u32);
	__array(values, struct conn_shard);
} conns SEC(".maps");

/* Half-open TCP entries (a SYN seen, the handshake's ACK not yet): a SYN flood churns this table only.
 * Per-CPU LRU lists: a flood on one CPU evicts that CPU's entries. */
struct half_open_shard {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, PYVS_CONN_SHARD_TARGET / PYVS_HALF_OPEN_DIVISOR);
	__uint(key_size, sizeof(struct pyvs_conn_key));
	__uint(value_size, sizeof(struct pyvs_conn));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PYVS_MAX_CONN_SHARDS);
	__type(key, __u32);
	__array(values, struct half_open_shard);
} half_open SEC(".maps");

/* The IPv6 connection tables: shards of the same number and sizes, swept in the same steps. */
struct conn6_shard {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_CONN_SHARD_TARGET);
	__uint(key_size, sizeof(struct pyvs_conn6_key));
	__uint(value_size, sizeof(struct pyvs_conn));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PYVS_MAX_CONN_SHARDS);
	__type(key, __u32);
	__array(values, struct conn6_shard);
} conns6 SEC(".maps");

struct half_open6_shard {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, PYVS_CONN_SHARD_TARGET / PYVS_HALF_OPEN_DIVISOR);
	__uint(key_size, sizeof(struct pyvs_conn6_key));
	__uint(value_size, sizeof(struct pyvs_conn));
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, PYVS_MAX_CONN_SHARDS);
	__type(key, __u32);
	__array(values, struct half_open6_shard);
} half_open6 SEC(".maps");

/* Fragments to a VIP: (source, destination, protocol, IP ID) -> the first fragment's ports. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_FRAG_TABLE_SIZE);
	__type(key, struct pyvs_frag_key);
	__type(value, struct pyvs_frag_ports);
} frags SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_FRAG_TABLE_SIZE);
	__type(key, struct pyvs_frag6_key);
	__type(value, struct pyvs_frag6_ports);
} frags6 SEC(".maps");

/* The IPv6 path: pyvs_xdp tail-calls pyvs_xdp6, a program of its own (with a stack of its own), which the control
 * plane puts here when it loads the programs. Pinned, so that the entry outlives the process that loaded it. */
#define PYVS_CALL_IPV6 0
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} calls SEC(".maps");

/* Per-CPU room for pyvs_xdp6: an IPv6 packet's key and a new connection's template key. Its stack has no room for
 * them beside the scheduler's (a call chain has 512 bytes of stack). */
struct pyvs_scratch6 {
	struct pyvs_conn6_key key;
	struct pyvs_conn6_key tkey;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pyvs_scratch6);
} scratch6 SEC(".maps");

/* Index: service slot, then PYVS_MAX_SERVICES + real slot. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES + PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_counters);
} stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PYVS_CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pyvs_config);
} config SEC(".maps");

/* Control plane only (the program never reads them): service slot -> its real slots, and the
 * slots taken, so that one service is read and rewritten without scanning every real. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, struct pyvs_svc_reals);
} svc_reals SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pyvs_slot_usage);
} slot_usage SEC(".maps");

/* Control plane only: the address of each IPv6 real (PYVS_REAL_IPV6) by its slot; reals keeps its IPv4 layout. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_addr6);
} real_addrs6 SEC(".maps");

/* The timer that keeps the packet path's clock (every PYVS_CLOCK_TICK_NS) and sweeps the tables, one
 * shard per step: expired entries leave, every live entry is counted again (see pyvs_xdp.c). */
struct sweeper {
	struct bpf_timer timer;
	struct pyvs_sweep_stats stats;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sweeper);
} sweeper SEC(".maps");

/* The sweeper's state, or NULL before the control plane created it. */
static __always_inline struct pyvs_sweep_stats *sweep_stats(void)
{
	__u32 zero = 0;
	struct sweeper *sw = bpf_map_lookup_elem(&sweeper, &zero);

	return sw ? &sw->stats : NULL;
}

/* The packet path's clock: the last tick's time (the helper only until the timer has ticked). */
static __always_inline __u64 clock_now(const struct pyvs_sweep_stats *st)
{
	return st && st->now ? st->now : bpf_ktime_get_coarse_ns();
}

/* A real's live counts: the current pass parity plus the previous one (the third is being zeroed). */
static __always_inline void real_live_counts(__u32 slot, __s64 *active, __s64 *inactive)
{
	struct pyvs_real_conns *c = bpf_map_lookup_elem(&real_conns, &slot);
	struct pyvs_sweep_stats *st = sweep_stats();
	__u32 cur = st ? st->parity : 0, prev;

	*active = 0;
	*inactive = 0;
	if (!c)
		return;
	if (cur >= PYVS_COUNT_PARITIES)
		cur = 0;
	prev = cur == 0 ? PYVS_COUNT_PARITIES - 1 : cur - 1;
	*active = (__s64)c->active[cur & 3] + c->active[prev & 3];
	*inactive = (__s64)c->inactive[cur & 3] + c->inactive[prev & 3];
}

#endif
