/* Connection sync (IPVS's sync daemon): while a sync master reads them (PYVS_CFG_SYNC), the packet path writes an
 * event into the ring buffer sync_events when a connection enters the connection table, when its TCP state changes
 * and when a persistence template is made. Off, it costs one test of a flag the path has read anyway.
 * The writers are global functions: verified once, each with a small stack of its own. */
#ifndef PYVS_SYNC_H
#define PYVS_SYNC_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"
#include "maps.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, PYVS_SYNC_RING_SIZE);
} sync_events SEC(".maps");

static __always_inline void sync_count(__u32 id)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &id);

	if (value)
		*value += 1;
}

/* Not inlined: the event's layout is then in the object's BTF (the ctypes mirror is held to it). */
static __noinline int sync_fill(struct pyvs_sync_event *ev, const struct pyvs_conn *conn)
{
	__builtin_memset(ev, 0, sizeof(*ev));
	ev->state = conn->state;
	ev->flags = conn->flags & PYVS_CONN_F_TEMPLATE;
	ev->real = conn->real;
	ev->gen = conn->gen;
	ev->timeout = conn->timeout;
	return 0;
}

static __always_inline struct pyvs_sync_event *sync_reserve(const struct pyvs_conn *conn)
{
	struct pyvs_sync_event *ev = bpf_ringbuf_reserve(&sync_events, sizeof(*ev), 0);

	if (!ev) {
		sync_count(PYVS_CNT_SYNC_EVENTS_LOST);
		return NULL;
	}
	sync_fill(ev, conn);
	return ev;
}

static __always_inline void sync_submit(struct pyvs_sync_event *ev)
{
	bpf_ringbuf_submit(ev, 0);
	sync_count(PYVS_CNT_SYNC_EVENTS);
}

__noinline int pyvs_sync_conn4(const struct pyvs_conn_key *key, const struct pyvs_conn *conn)
{
	struct pyvs_sync_event *ev;

	if (!key || !conn)
		return 0;
	ev = sync_reserve(conn);
	if (!ev)
		return 0;
	ev->caddr[0] = key->saddr;
	ev->vaddr[0] = key->daddr;
	ev->cport = key->sport;
	ev->vport = key->dport;
	ev->proto = key->proto;
	ev->family = 4;
	sync_submit(ev);
	return 1;
}

__noinline int pyvs_sync_conn6(const struct pyvs_conn6_key *key, const struct pyvs_conn *conn)
{
	struct pyvs_sync_event *ev;

	if (!key || !conn)
		return 0;
	ev = sync_reserve(conn);
	if (!ev)
		return 0;
	__builtin_memcpy(ev->caddr, key->saddr.w, sizeof(ev->caddr));
	__builtin_memcpy(ev->vaddr, key->daddr.w, sizeof(ev->vaddr));
	ev->cport = key->sport;
	ev->vport = key->dport;
	ev->proto = key->proto;
	ev->family = 6;
	sync_submit(ev);
	return 1;
}

/* An entry of `key` (its family's key: `v6` is a constant) entered the connection table or changed its state. */
static __always_inline void sync_conn(const struct pyvs_config *cfg, const void *key, const struct pyvs_conn *conn,
				      const int v6)
{
	if (!(cfg->flags & PYVS_CFG_SYNC))
		return;
	if (v6)
		pyvs_sync_conn6(key, conn);
	else
		pyvs_sync_conn4(key, conn);
}

#endif
