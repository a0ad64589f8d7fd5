/* Scheduling a new connection: the IPVS schedulers over a service's table of real slots.
 * The tables are built by pyvs.schedulers (Python), which is also the reference of every choice. */
#ifndef PYVS_SCHEDULE_H
#define PYVS_SCHEDULE_H

#include "pyvs_abi.h"
#include "maps.h"
#include "parse.h"

/* rr and wrr: the next slot of the table (wrr's table is one period of IPVS's weighted sequence). */
static __always_inline __u32 *pick_next(const struct pyvs_svc *svc)
{
	__u32 index = svc->index, slot;
	__u32 *position = bpf_map_lookup_elem(&sched_state, &index);

	if (!position)
		return NULL;
	slot = __sync_fetch_and_add(position, 1) % svc->table_len;
	slot += svc->table_base;
	return bpf_map_lookup_elem(&sched_table, &slot);
}

/* The slot in sched_table of the real for a new connection of `pkt`; NULL when no real is available. */
static __always_inline __u32 *pick_real(const struct pyvs_svc *svc, const struct packet *pkt)
{
	if (svc->table_len == 0 || svc->table_len > PYVS_SCHED_TABLE_SIZE)
		return NULL;
	switch (svc->sched) {
	case PYVS_SCHED_RR:
	case PYVS_SCHED_WRR:
		return pick_next(svc);
	default:
		return NULL;
	}
}

#endif
