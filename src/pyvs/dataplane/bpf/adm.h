/* ipvsadm's connection thresholds (-x, -y) and rate estimator (-L --rate) in the data plane.
 *
 * Thresholds: IPVS sets a real's OVERLOAD flag when a connection is bound to it and its connections
 * (activeconns + inactconns) reach u_threshold (ip_vs_bind_dest), and clears it when a connection is unbound and
 * they are below l_threshold, or below 3/4 of u_threshold without one, or at once without either
 * (ip_vs_unbind_dest). pyvs binds in the packet path (a new entry) and unbinds where an entry leaves (the sweeper,
 * a stale entry replaced); counts also fall without an event (LRU evictions, flushes), so the sweeper applies the
 * unbind rule to every overloaded real once a pass too. The schedulers read the flag (schedule.h).
 *
 * The rate estimator is in adm_est.h (after nat.h, whose out_stats it reads). */
#ifndef PYVS_ADM_H
#define PYVS_ADM_H

#include "pyvs_abi.h"
#include "maps.h"
#include "adm_maps.h"

#define PYVS_EST_TICK_NS 2500000ULL /* 2 s / PYVS_EST_ROWS */
#define PYVS_EST_SLOTS (PYVS_MAX_SERVICES + PYVS_MAX_REALS)
#define PYVS_EST_ROW_SLOTS ((PYVS_EST_SLOTS + PYVS_EST_ROWS - 1) / PYVS_EST_ROWS)

/* ip_vs_bind_dest's check, after a new connection of `real_id` was counted. */
static __noinline int pyvs_threshold_bind(__u32 real_id)
{
	struct pyvs_real_limits *lim = bpf_map_lookup_elem(&real_limits, &real_id);
	struct pyvs_real *real;
	__s64 active, inactive;

	if (!lim || !lim->u_threshold)
		return 0;
	real = bpf_map_lookup_elem(&reals, &real_id);
	if (!real || (real->flags & PYVS_REAL_OVERLOAD))
		return 0;
	real_live_counts(real_id, &active, &inactive);
	if (active + inactive < lim->u_threshold)
		return 0;
	__sync_fetch_and_or(&real->flags, PYVS_REAL_OVERLOAD);
	count(PYVS_CNT_OVERLOAD_SET);
	return 1;
}

/* ip_vs_unbind_dest's check, after a connection of `real_id` was uncounted; `periodic`: the sweeper's look at counts
 * that fell without an event, which leaves a real without thresholds alone (only an unbind clears its flag). */
static __noinline int pyvs_threshold_unbind(__u32 real_id, int periodic)
{
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &real_id);
	struct pyvs_real_limits *lim;
	__s64 active, inactive, total;

	if (!real || !(real->flags & PYVS_REAL_OVERLOAD))
		return 0;
	lim = bpf_map_lookup_elem(&real_limits, &real_id);
	if (!lim || (periodic && !lim->u_threshold && !lim->l_threshold))
		return 0;
	real_live_counts(real_id, &active, &inactive);
	total = active + inactive;
	if (lim->l_threshold) {
		if (total >= lim->l_threshold)
			return 0;
	} else if (lim->u_threshold) {
		if (total * 4 >= (__s64)lim->u_threshold * 3)
			return 0;
	}
	__sync_fetch_and_and(&real->flags, ~PYVS_REAL_OVERLOAD);
	count(PYVS_CNT_OVERLOAD_CLEARED);
	return 1;
}

#endif
