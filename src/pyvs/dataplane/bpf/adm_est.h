/* ipvsadm -L --rate: IPVS's rate estimator (ip_vs_est.c) in the sweeper's timer. Every 2 s each service and real
 * gets rate = (counter - last) scaled, avg += (rate - avg) >> 2, cps and pps scaled by 2^10, bps by 2^5; In from
 * stats, Out from out_stats (NAT replies). The timer does one row of PYVS_EST_ROWS every 2.5 ms (IPVS's kthread
 * spreads its estimators over ticks the same way), kept to wall time by est_clock. Included from pyvs_xdp.c after
 * nat.h (out_stats) and before the sweeper's tick. */
#ifndef PYVS_ADM_EST_H
#define PYVS_ADM_EST_H

#include "pyvs_abi.h"
#include "maps.h"
#include "adm_maps.h"
#include "adm.h" /* PYVS_EST_* */

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
	struct pyvs_out_counters *o;
	__u64 conns = 0, pkts = 0, bytes = 0, outpkts = 0, outbytes = 0;

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
		o = bpf_map_lookup_percpu_elem(&out_stats, &index, cpu);
		if (o) {
			outpkts += o->packets;
			outbytes += o->bytes;
		}
	}
	/* Another service or real in the slot, or its counters zeroed (-Z): start from zero, as
	 * ip_vs_zero_estimator (the counters restarted from zero then too). */
	if (e->gen != gen || conns < e->last_conns || pkts < e->last_inpkts || bytes < e->last_inbytes ||
	    outpkts < e->last_outpkts || outbytes < e->last_outbytes) {
		__builtin_memset(e, 0, sizeof(*e));
		e->gen = gen;
	}
	est_average(&e->cps, &e->last_conns, conns, 9);    /* scaled by 2^10, over 2 s */
	est_average(&e->inpps, &e->last_inpkts, pkts, 9);
	est_average(&e->inbps, &e->last_inbytes, bytes, 4); /* scaled by 2^5, over 2 s */
	/* Out: the replies of NAT connections (out_stats); in DR and tunnelling they never pass the director, their
	 * counters and rates stay 0 (as IPVS shows them). */
	est_average(&e->outpps, &e->last_outpkts, outpkts, 9);
	est_average(&e->outbps, &e->last_outbytes, outbytes, 4);
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
