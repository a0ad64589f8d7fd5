/* ipvsadm's connection thresholds (-x, -y) and rate estimator (-L --rate) in the data plane.
 *
 * Thresholds: IPVS sets a real's OVERLOAD flag when a connection is bound to it and its connections
 * (activeconns + inactconns) reach u_threshold (ip_vs_bind_dest), and clears it when a connection is unbound and
 * they are below l_threshold, or below 3/4 of u_threshold without one, or at once without either
 * (ip_vs_unbind_dest). pyvs binds in the packet path (a new entry) and unbinds where an entry leaves (the sweeper,
 * a stale entry replaced); counts also fall without an event (LRU evictions, flushes), so the sweeper applies the
 * unbind rule to every overloaded real once a pass too. The schedulers read the flag (schedule.h).
 *
 * Estimator (ip_vs_est.c): every 2 s each service and real gets rate = (counter - last) scaled, avg += (rate - avg)
 * >> 2, cps and pps scaled by 2^10, bps by 2^5. The sweeper's timer does one row of PYVS_EST_ROWS every 2.5 ms
 * (IPVS's kthread spreads its estimators over ticks the same way), kept to wall time by est_clock. */
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

/* ---- the rate estimator ---- */

/* One of IPVS's averages: avg += ((counter - last) << shift - avg) >> 2, arithmetic shift as the kernel's s64. */
static __always_inline void est_average(__u64 *avg, __u64 *last, __u64 counter, int shift)
{
	__u64 rate = (counter - *last) << shift;

	*last = counter;
	*avg += ((__s64)rate - (__s64)*avg) >> 2;
}

/* The generation of the service or real at `index` of stats; 0 when it holds none. */
static __always_inline __u32 est_owner(__u32 index)
{
	if (index < PYVS_MAX_SERVICES) {
		__u32 *gen = bpf_map_lookup_elem(&svc_gens, &index);

		return gen && (*gen & 1) ? *gen : 0;
	} else {
		__u32 slot = index - PYVS_MAX_SERVICES;
		struct pyvs_real *real = bpf_map_lookup_elem(&reals, &slot);

		return real && (real->flags & PYVS_REAL_ACTIVE) ? real->gen : 0;
	}
}

static long est_one(__u32 i, __u32 *first)
{
	__u32 index = *first + i, gen = est_owner(index), cpu;
	struct pyvs_counters *c;
	struct pyvs_est *e;
	__u64 conns = 0, pkts = 0, bytes = 0;

	if (index >= PYVS_EST_SLOTS)
		return 1;
	if (!gen)
		return 0;
	e = bpf_map_lookup_elem(&estimators, &index);
	if (!e)
		return 0;
	for (cpu = 0; cpu < 512; cpu++) {
		c = bpf_map_lookup_percpu_elem(&stats, &index, cpu);
		if (!c)
			break;
		conns += c->conns;
		pkts += c->packets;
		bytes += c->bytes;
	}
	/* Another service or real in the slot, or its counters zeroed (-Z): start from zero, as
	 * ip_vs_zero_estimator (the counters restarted from zero then too). */
	if (e->gen != gen || conns < e->last_conns || pkts < e->last_inpkts || bytes < e->last_inbytes) {
		__builtin_memset(e, 0, sizeof(*e));
		e->gen = gen;
	}
	est_average(&e->cps, &e->last_conns, conns, 9);    /* scaled by 2^10, over 2 s */
	est_average(&e->inpps, &e->last_inpkts, pkts, 9);
	est_average(&e->inbps, &e->last_inbytes, bytes, 4); /* scaled by 2^5, over 2 s */
	/* Out: in DR the replies never pass the director, the counters and their rates stay 0 (as IPVS shows DR). */
	e->rounds += 1;
	return 0;
}

/* Called every tick: the rows that are due (each row 2.5 ms after the one before, so that a slot is estimated
 * every 2 s of wall time whatever the timer's jitter), at most 4 at a time; far behind, it starts again from now. */
static __noinline int pyvs_estimate(void)
{
	__u32 zero = 0, first;
	struct pyvs_est_clock *clk = bpf_map_lookup_elem(&est_clock, &zero);
	__u64 now = bpf_ktime_get_ns();

	if (!clk)
		return 0;
	if (!clk->next_due || (__s64)(now - clk->next_due) > (__s64)(8 * PYVS_EST_TICK_NS))
		clk->next_due = now;
	for (int n = 0; n < 4; n++) {
		if ((__s64)(now - clk->next_due) < 0)
			break;
		if (clk->row >= PYVS_EST_ROWS)
			clk->row = 0;
		first = clk->row * PYVS_EST_ROW_SLOTS;
		bpf_loop(PYVS_EST_ROW_SLOTS, est_one, &first, 0);
		clk->row += 1;
		clk->next_due += PYVS_EST_TICK_NS;
		clk->rows += 1;
	}
	return 0;
}

#endif
