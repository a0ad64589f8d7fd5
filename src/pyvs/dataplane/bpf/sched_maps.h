/* Maps and constants only the schedulers use: the lblc and lblcr caches, a per-CPU scratch slot.
 * pyvs.schedulers mirrors the constants; tests/bpf/test_schedulers_equivalence.py checks them. */
#ifndef PYVS_SCHED_MAPS_H
#define PYVS_SCHED_MAPS_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"

#define PYVS_LOCALITY_EXPIRATION 86400 /* seconds: lblc_expiration, lblcr_expiration (24 h) */
#define PYVS_LOCALITY_CACHE_SIZE 65536 /* entries of each cache, all services together */
#define PYVS_LBLCR_SET_SIZE 16         /* reals in one lblcr set at most */
#define PYVS_MH_SEED1 2654435761       /* mh hash seeds (ip_vs_mh.c's fixed keys) */
#define PYVS_MH_SEED2 2654446892

/* A cache key: the service and the packet's destination address. */
struct pyvs_locality_key {
	__u32 svc_index;
	__u32 daddr; /* network order */
};

struct pyvs_lblc_entry {
	__u64 lastuse; /* the packet path's clock (clock_now) */
	__u32 real;    /* slot in reals */
	__u32 gen;     /* the real's gen when cached */
};

struct pyvs_lblcr_entry {
	__u64 lastuse;
	__u64 lastmod; /* the set last changed */
	__u32 size;
	__u32 pad;
	__u32 reals[PYVS_LBLCR_SET_SIZE]; /* newest first */
	__u32 gens[PYVS_LBLCR_SET_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_LOCALITY_CACHE_SIZE);
	__type(key, struct pyvs_locality_key);
	__type(value, struct pyvs_lblc_entry);
} lblc_cache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_LOCALITY_CACHE_SIZE);
	__type(key, struct pyvs_locality_key);
	__type(value, struct pyvs_lblcr_entry);
} lblcr_cache SEC(".maps");

/* A new lblcr entry is built here (too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct pyvs_lblcr_entry);
} lblcr_scratch SEC(".maps");

/* The real slot pick_real chose: it returns a pointer to it. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} sched_choice SEC(".maps");

#endif
