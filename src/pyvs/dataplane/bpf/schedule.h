/* Scheduling a new connection: every IPVS scheduler over a service's table of real slots.
 * The tables are built by pyvs.schedulers (Python), which is also the reference of every choice:
 * - rr, wrr: the next slot of the table (wrr's table is one period of IPVS's weighted sequence);
 * - sh, dh: 256 buckets. sh's bucket is hash_32(ntohl(saddr) [+ ntohs(sport) with sh-port], 8), dh's
 *   hash_32(ntohl(daddr), 8); sh-fallback then tries buckets (r + home) & 255, r = home, home+1, ... (mod 256);
 * - mh: a Maglev table of table_len slots (prime). key = ntohl(saddr) [+ ntohs(sport) with mh-port];
 *   home = fmix32(key ^ SEED1) % len; mh-fallback tries fmix32((key + r) ^ SEED1) % len, r = home, home+1, ...;
 * - lc, wlc, sed, nq, fo, ovf: a scan of the table (every real of the service, in list order) reading weights
 *   from reals and live counts from real_conns; loads compared without division, as IPVS does;
 * - lblc, lblcr: caches keyed by (service, destination address), filled with wlc's choice.
 * A real is available when its weight is > 0 and it is not overloaded. Sums are modulo 2^32. */
#ifndef PYVS_SCHEDULE_H
#define PYVS_SCHEDULE_H

#include "pyvs_abi.h"
#include "maps.h"
#include "sched_maps.h"
#include "parse.h"

#define GOLDEN_RATIO_32 0x61C88647U
#define NO_REAL 0xFFFFFFFFU /* no real available: never a slot */
#define SH_BUCKETS 256
#define LOCALITY_EXPIRATION_NS ((__u64)PYVS_LOCALITY_EXPIRATION * 1000000000ULL)

/* What a scheduler reads of one real. */
struct candidate {
	__u32 slot;
	__u32 weight;
	__u32 flags;
	__u32 gen;
	__u32 svc_index;
	__u32 pad;
	__s64 active;
	__s64 inactive;
};

static __always_inline int read_real(__u32 slot, struct candidate *c)
{
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &slot);

	if (!real)
		return 0;
	c->slot = slot;
	c->weight = real->weight;
	c->flags = real->flags;
	c->gen = real->gen;
	c->svc_index = real->svc_index;
	real_live_counts(slot, &c->active, &c->inactive);
	return 1;
}

/* The real at `key` in sched_table. */
static __always_inline int read_entry(__u32 key, struct candidate *c)
{
	__u32 *slot = bpf_map_lookup_elem(&sched_table, &key);

	return slot && read_real(*slot, c);
}

/* A cached real: still the same real of this service (IPVS's IP_VS_DEST_F_AVAILABLE). */
static __always_inline int read_cached(const struct pyvs_svc *svc, __u32 slot, __u32 gen, struct candidate *c)
{
	return read_real(slot, c) && (c->flags & PYVS_REAL_ACTIVE) && c->gen == gen && c->svc_index == svc->index;
}

static __always_inline int overloaded(const struct candidate *c)
{
	return c->flags & PYVS_REAL_OVERLOAD;
}

static __always_inline int available(const struct candidate *c)
{
	return c->weight > 0 && !overloaded(c);
}

/* ip_vs_dest_conn_overhead() */
static __always_inline __s64 overhead(const struct candidate *c)
{
	return c->active * 256 + c->inactive;
}

/* ---- rr, wrr ------------------------------------------------------------------------------------ */

/* The real at `key` in sched_table, NO_REAL if none. */
static __always_inline __u32 table_real(__u32 key)
{
	__u32 *slot = bpf_map_lookup_elem(&sched_table, &key);

	return slot ? *slot : NO_REAL;
}

/* A walk of the rr/wrr table from `start` for the first real that is not overloaded. */
struct next_walk {
	__u32 base;
	__u32 len;
	__u32 start;
	__u32 found;
	__u32 offset;
};

static __always_inline int takes_new(__u32 slot)
{
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &slot);

	return real && real->weight > 0 && !(real->flags & PYVS_REAL_OVERLOAD);
}

static long next_step(__u32 i, void *ctx)
{
	struct next_walk *w = ctx;

	if (!takes_new(table_real(w->base + (w->start + i) % w->len)))
		return 0;
	w->found = 1;
	w->offset = i;
	return 1;
}

/* The next real of the table; an overloaded one is passed over (ip_vs_rr.c and ip_vs_wrr.c walk on from the last
 * pick to the next available real: the table is that walk's order, wrr's one period of it), and the next pick starts
 * after the one taken. */
static __always_inline __u32 pick_next(const struct pyvs_svc *svc)
{
	__u32 index = svc->index;
	__u32 *position = bpf_map_lookup_elem(&sched_state, &index);
	struct next_walk w = { .base = svc->table_base, .len = svc->table_len };
	__u32 slot;

	if (!position)
		return NO_REAL;
	w.start = __sync_fetch_and_add(position, 1) % svc->table_len;
	slot = table_real(w.base + w.start);
	if (takes_new(slot))
		return slot;
	bpf_loop(w.len, next_step, &w, 0);
	if (!w.found)
		return NO_REAL;
	*position = w.start + w.offset + 1;
	return table_real(w.base + (w.start + w.offset) % w.len);
}

/* ---- scans: lc, wlc, sed, nq, fo, ovf ----------------------------------------------------------- */

struct scan {
	__u32 base;        /* table_base */
	__u32 found;
	__u32 best;        /* sched_table key of the choice */
	__u32 best_weight;
	__s64 best_load;
};

static __always_inline void take(struct scan *s, __u32 i, const struct candidate *c, __s64 load)
{
	s->found = 1;
	s->best = s->base + i;
	s->best_weight = c->weight;
	s->best_load = load;
}

/* lc: the least overhead. */
static long lc_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (read_entry(s->base + i, &c) && available(&c) && (!s->found || overhead(&c) < s->best_load))
		take(s, i, &c, overhead(&c));
	return 0;
}

/* wlc: the least overhead/weight, from the first available real on. */
static long wlc_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (!read_entry(s->base + i, &c) || overloaded(&c))
		return 0;
	if (!s->found ? c.weight > 0 : s->best_load * c.weight > overhead(&c) * s->best_weight)
		take(s, i, &c, overhead(&c));
	return 0;
}

/* sed: the least (active + 1)/weight. */
static long sed_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (!read_entry(s->base + i, &c) || overloaded(&c))
		return 0;
	if (!s->found ? c.weight > 0 : s->best_load * c.weight > (c.active + 1) * s->best_weight)
		take(s, i, &c, c.active + 1);
	return 0;
}

/* nq: the first idle real, else as sed. */
static long nq_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (!read_entry(s->base + i, &c) || !available(&c))
		return 0;
	if (c.active == 0) {
		take(s, i, &c, 1);
		return 1;
	}
	if (!s->found || s->best_load * c.weight > (c.active + 1) * s->best_weight)
		take(s, i, &c, c.active + 1);
	return 0;
}

/* fo: the highest weight. */
static long fo_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (read_entry(s->base + i, &c) && !overloaded(&c) && c.weight > (s->found ? s->best_weight : 0))
		take(s, i, &c, 0);
	return 0;
}

/* ovf: the highest weight among the reals with no more active connections than their weight. */
static long ovf_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (!read_entry(s->base + i, &c) || !available(&c) || c.active > c.weight)
		return 0;
	if (!s->found || c.weight > s->best_weight)
		take(s, i, &c, 0);
	return 0;
}

static __always_inline __u32 scan_table(const struct pyvs_svc *svc, void *step)
{
	struct scan s = { .base = svc->table_base };

	bpf_loop(svc->table_len, step, &s, 0);
	return s.found ? table_real(s.best) : NO_REAL;
}

/* ---- sh, dh, mh ---------------------------------------------------------------------------------- */

struct probe {
	__u32 base;  /* table_base */
	__u32 len;   /* table_len */
	__u32 key;   /* the hashed flow value */
	__u32 home;  /* its own slot */
	__u32 found;
	__u32 best;  /* sched_table key of the choice */
};

static __always_inline __u32 hash_32(__u32 value, __u32 bits)
{
	return (value * GOLDEN_RATIO_32) >> (32 - bits);
}

static __always_inline __u32 fmix32(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85EBCA6BU;
	h ^= h >> 13;
	h *= 0xC2B2AE35U;
	h ^= h >> 16;
	return h;
}

static __always_inline __u32 mh_home(__u32 key, __u32 len)
{
	return fmix32(key ^ (__u32)PYVS_MH_SEED1) % len;
}

static __always_inline long probe_at(struct probe *p, __u32 slot)
{
	struct candidate c;
	__u32 key = p->base + slot;

	if (read_entry(key, &c) && available(&c)) {
		p->found = 1;
		p->best = key;
		return 1;
	}
	return 0;
}

/* ip_vs_sh_get_fallback()'s walk */
static long sh_probe_step(__u32 offset, void *ctx)
{
	struct probe *p = ctx;

	return probe_at(p, (((offset + p->home) % SH_BUCKETS) + p->home) & (SH_BUCKETS - 1));
}

/* ip_vs_mh_get_fallback()'s walk */
static long mh_probe_step(__u32 offset, void *ctx)
{
	struct probe *p = ctx;

	return probe_at(p, mh_home(p->key + (offset + p->home) % p->len, p->len));
}

/* The home slot's real if available, else (with fallback) the first available one of the walk. */
static __always_inline __u32 lookup_hashed(struct probe *p, int fallback, void *step)
{
	struct candidate c;

	if (!read_entry(p->base + p->home, &c))
		return NO_REAL;
	if (available(&c))
		return c.slot;
	if (!fallback)
		return NO_REAL;
	bpf_loop(p->len, step, p, 0);
	return p->found ? table_real(p->best) : NO_REAL;
}

/* What the schedulers read of the packet. */
struct sched_flow {
	__u32 saddr; /* network order */
	__u32 daddr;
	__u16 sport;
	__u16 pad;
};

static __always_inline __u32 flow_key(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	return bpf_ntohl(pkt->saddr) + (svc->flags & PYVS_SVC_F_SCHED2 ? bpf_ntohs(pkt->sport) : 0);
}

static __always_inline __u32 pick_sh(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	struct probe p = { .base = svc->table_base, .len = SH_BUCKETS, .key = flow_key(svc, pkt) };

	if (svc->table_len != SH_BUCKETS)
		return NO_REAL;
	p.home = hash_32(p.key, 8);
	return lookup_hashed(&p, svc->flags & PYVS_SVC_F_SCHED1, sh_probe_step);
}

static __always_inline __u32 pick_dh(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	struct probe p = { .base = svc->table_base, .len = SH_BUCKETS, .key = bpf_ntohl(pkt->daddr) };

	if (svc->table_len != SH_BUCKETS)
		return NO_REAL;
	p.home = hash_32(p.key, 8);
	return lookup_hashed(&p, 0, sh_probe_step);
}

static __always_inline __u32 pick_mh(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	struct probe p = { .base = svc->table_base, .len = svc->table_len, .key = flow_key(svc, pkt) };

	p.home = mh_home(p.key, p.len);
	return lookup_hashed(&p, svc->flags & PYVS_SVC_F_SCHED1, mh_probe_step);
}

/* ---- lblc, lblcr --------------------------------------------------------------------------------- */

static long half_loaded_step(__u32 i, void *ctx)
{
	struct scan *s = ctx;
	struct candidate c;

	if (read_entry(s->base + i, &c) && c.active * 2 < c.weight) {
		s->found = 1;
		return 1;
	}
	return 0;
}

/* is_overloaded() of ip_vs_lblc.c: more active connections than its weight, while a real of the service
 * has fewer than half its weight. */
static __always_inline int lblc_overloaded(const struct pyvs_svc *svc, const struct candidate *c)
{
	struct scan s = { .base = svc->table_base };

	if (c->active <= c->weight)
		return 0;
	bpf_loop(svc->table_len, half_loaded_step, &s, 0);
	return s.found;
}

static __always_inline __u32 pick_lblc(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	struct pyvs_locality_key key = { .svc_index = svc->index, .daddr = pkt->daddr };
	struct pyvs_lblc_entry *en = bpf_map_lookup_elem(&lblc_cache, &key), fresh = {};
	__u64 now = clock_now(sweep_stats());
	struct candidate c;

	if (en && (__s64)(now - en->lastuse) >= (__s64)LOCALITY_EXPIRATION_NS)
		en = NULL;
	if (en) {
		en->lastuse = now;
		if (read_cached(svc, en->real, en->gen, &c) && c.weight > 0 && !lblc_overloaded(svc, &c))
			return c.slot;
	}
	if (!read_real(scan_table(svc, wlc_step), &c))
		return NO_REAL;
	if (en && en->real == c.slot && en->gen == c.gen)
		return c.slot;
	fresh.lastuse = now;
	fresh.real = c.slot;
	fresh.gen = c.gen;
	bpf_map_update_elem(&lblc_cache, &key, &fresh, BPF_ANY);
	return c.slot;
}

/* ip_vs_dest_set_min(): the member with the least overhead/weight. */
static __always_inline int set_min(const struct pyvs_svc *svc, const struct pyvs_lblcr_entry *en,
				   struct candidate *least)
{
	struct candidate c;
	int found = 0;

	for (__u32 i = 0; i < PYVS_LBLCR_SET_SIZE && i < en->size; i++) {
		if (!read_cached(svc, en->reals[i], en->gens[i], &c) || overloaded(&c))
			continue;
		if (!found ? c.weight > 0 : overhead(least) * c.weight > overhead(&c) * least->weight) {
			*least = c;
			found = 1;
		}
	}
	return found;
}

/* ip_vs_dest_set_max(): the position of the member with the most overhead/weight (weight > 0), or -1. */
static __always_inline int set_max(const struct pyvs_svc *svc, const struct pyvs_lblcr_entry *en)
{
	struct candidate c, most = {};
	int position = -1;

	for (__u32 i = 0; i < PYVS_LBLCR_SET_SIZE && i < en->size; i++) {
		if (!read_cached(svc, en->reals[i], en->gens[i], &c) || c.weight == 0)
			continue;
		if (position < 0 || overhead(&most) * c.weight < overhead(&c) * most.weight) {
			most = c;
			position = i;
		}
	}
	return position;
}

static __always_inline void set_erase(struct pyvs_lblcr_entry *en, int position, __u64 now)
{
	for (__u32 i = 0; i + 1 < PYVS_LBLCR_SET_SIZE; i++) {
		if (i >= position && i + 1 < en->size) {
			en->reals[i] = en->reals[i + 1];
			en->gens[i] = en->gens[i + 1];
		}
	}
	en->size -= 1;
	en->lastmod = now;
}

/* ip_vs_dest_set_insert(): at the head, unless already there (or the set is full). */
static __always_inline void set_insert(struct pyvs_lblcr_entry *en, const struct candidate *c, __u64 now)
{
	for (__u32 i = 0; i < PYVS_LBLCR_SET_SIZE && i < en->size; i++)
		if (en->reals[i] == c->slot && en->gens[i] == c->gen)
			return;
	if (en->size >= PYVS_LBLCR_SET_SIZE)
		return;
	for (__u32 i = PYVS_LBLCR_SET_SIZE - 1; i > 0; i--) {
		en->reals[i] = en->reals[i - 1];
		en->gens[i] = en->gens[i - 1];
	}
	en->reals[0] = c->slot;
	en->gens[0] = c->gen;
	en->size += 1;
	en->lastmod = now;
}

static __always_inline __u32 pick_lblcr(const struct pyvs_svc *svc, const struct sched_flow *pkt)
{
	struct pyvs_locality_key key = { .svc_index = svc->index, .daddr = pkt->daddr };
	struct pyvs_lblcr_entry *en = bpf_map_lookup_elem(&lblcr_cache, &key), *fresh;
	__u64 now = clock_now(sweep_stats());
	struct candidate c, least;
	__u32 zero = 0;
	int have, most;

	if (en && (__s64)(now - en->lastuse) >= (__s64)LOCALITY_EXPIRATION_NS)
		en = NULL;
	if (!en) {
		fresh = bpf_map_lookup_elem(&lblcr_scratch, &zero);
		if (!fresh || !read_real(scan_table(svc, wlc_step), &c))
			return NO_REAL;
		fresh->lastuse = fresh->lastmod = now;
		fresh->size = 1;
		fresh->reals[0] = c.slot;
		fresh->gens[0] = c.gen;
		bpf_map_update_elem(&lblcr_cache, &key, fresh, BPF_ANY);
		return c.slot;
	}
	en->lastuse = now;
	have = set_min(svc, en, &least);
	if (en->size > 1 && (__s64)(now - en->lastmod) > (__s64)LOCALITY_EXPIRATION_NS) {
		most = set_max(svc, en);
		if (most >= 0)
			set_erase(en, most, now);
	}
	if (have && !lblc_overloaded(svc, &least))
		return least.slot;
	if (!read_real(scan_table(svc, wlc_step), &c))
		return NO_REAL;
	set_insert(en, &c, now);
	return c.slot;
}

/* ---- the entry point ----------------------------------------------------------------------------- */

/* The slot (in reals) of the real IPVS's scheduler picks for a new connection; NO_REAL when none is available.
 * A global function: the verifier checks it once, apart from the packet path. */
__noinline __u32 pyvs_schedule(const struct pyvs_svc *svc, const struct sched_flow *flow)
{
	if (!svc || !flow || svc->table_len == 0 || svc->table_len > PYVS_TABLE_MAX || svc->flags & PYVS_SVC_F_NO_WEIGHT)
		return NO_REAL;
	switch (svc->sched) {
	case PYVS_SCHED_RR:
	case PYVS_SCHED_WRR:
		return pick_next(svc);
	case PYVS_SCHED_LC:
		return scan_table(svc, lc_step);
	case PYVS_SCHED_WLC:
		return scan_table(svc, wlc_step);
	case PYVS_SCHED_SED:
		return scan_table(svc, sed_step);
	case PYVS_SCHED_NQ:
		return scan_table(svc, nq_step);
	case PYVS_SCHED_FO:
		return scan_table(svc, fo_step);
	case PYVS_SCHED_OVF:
		return scan_table(svc, ovf_step);
	case PYVS_SCHED_SH:
		return pick_sh(svc, flow);
	case PYVS_SCHED_DH:
		return pick_dh(svc, flow);
	case PYVS_SCHED_MH:
		return pick_mh(svc, flow);
	case PYVS_SCHED_LBLC:
		return pick_lblc(svc, flow);
	case PYVS_SCHED_LBLCR:
		return pick_lblcr(svc, flow);
	default:
		return NO_REAL;
	}
}

/* A pointer to the slot (in reals) of the real for a new connection of `pkt` (kept in the per-CPU
 * sched_choice); NULL when no real is available. */
static __always_inline __u32 *pick_real(const struct pyvs_svc *svc, const struct packet *pkt)
{
	struct sched_flow flow = { .saddr = pkt->saddr, .daddr = pkt->daddr, .sport = pkt->sport };
	__u32 zero = 0, slot = pyvs_schedule(svc, &flow);
	__u32 *choice;

	if (slot == NO_REAL)
		return NULL;
	choice = bpf_map_lookup_elem(&sched_choice, &zero);
	if (choice)
		*choice = slot;
	return choice;
}

#endif
