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

/* VIP -> PYVS_VIP_F_* flags; fragments to a VIP are dropped. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, PYVS_MAX_SERVICES);
	__type(key, __u32);
	__type(value, __u32);
} vips SEC(".maps");

/* vip_filter_slot(addr) -> number of VIPs in that slot: most packets that are not for a VIP
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

/* Two tables of real slots per service; svc.table_base says which one is live. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES * 2 * PYVS_SCHED_TABLE_SIZE);
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

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_CONN_TABLE_SIZE);
	__type(key, struct pyvs_conn_key);
	__type(value, struct pyvs_conn);
} conns SEC(".maps");

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

/* The timer that keeps the packet path's clock (every PYVS_CLOCK_TICK_NS) and sweeps expired
 * connections once a second. */
struct sweeper {
	struct bpf_timer timer;
	__u64 runs;  /* sweeps done */
	__u64 now;   /* bpf_ktime_get_coarse_ns() at the last tick: read by every packet, cheaper than the helper */
	__u64 ticks;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct sweeper);
} sweeper SEC(".maps");

#endif
