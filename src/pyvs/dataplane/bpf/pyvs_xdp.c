/* pyvs XDP program: the LVS-DR director's packet path.
 * A TCP/UDP packet to a VIP:port with a service is given to a real server by
 * rewriting only its MAC addresses; everything else goes to the kernel.
 *
 * IPv6 has tables of its own (services6, vips6, conns6, half_open6, frags6; Cilium's way), so the IPv4 keys keep
 * their size; pyvs_xdp6 takes an IPv6 frame through the same connection path (conn_path) with its own keys. The
 * service slots, reals, scheduler tables, counts and counters are shared: a service is one of either family.
 *
 * Connection entries live in two sharded tables: half_open holds TCP flows whose client has sent a SYN
 * and nothing else yet; conns holds the rest (and persistence templates). A TCP packet without an entry
 * starts a connection only if it is a SYN (IPVS's rule; any packet but RST with sloppy_tcp). A SYN flood
 * churns half_open only, so it evicts no established connection.
 *
 * Counts: every entry is counted in real_conns under the pass parity it carries. The sweeper visits one
 * shard of each table per step; a pass visits them all, removes the expired entries and moves every live
 * one into the current parity, while the parity after it is zeroed. What the LRU evicted, a race lost or a
 * crashed writer left behind is thus gone from the counts within two passes (a pass: one second by default). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"
#include "maps.h"
#include "parse.h"
#include "conn_state.h"
#include "sctp.h"
#include "schedule.h"
#include "sync.h"

#define NSEC_PER_SEC 1000000000ULL
#define PYVS_CLOCK_TICK_NS 2500000ULL /* 2.5 ms: the clock (the coarse clock itself moves in 4 ms jiffies) and a sweep step */

static __always_inline void count(__u32 id)
{
	__u64 *value = bpf_map_lookup_elem(&counters, &id);

	if (value)
		*value += 1;
}

static __always_inline int pass(__u32 id)
{
	count(id);
	return XDP_PASS;
}

static __always_inline int drop(__u32 id)
{
	count(id);
	return XDP_DROP;
}

#include "adm.h" /* thresholds and one-packet scheduling: after count(), which it uses */

static __always_inline void account(__u32 index, __u64 bytes, int new_conn)
{
	struct pyvs_counters *c = bpf_map_lookup_elem(&stats, &index);

	if (!c)
		return;
	c->packets += 1;
	c->bytes += bytes;
	c->conns += new_conn;
}

/* The pre-filter's slot of an address (network order); pyvs.dataplane computes the same. */
static __always_inline __u32 vip_filter_slot(__u32 addr)
{
	return (addr ^ (addr >> 16)) & (PYVS_VIP_FILTER_SIZE - 1);
}

/* False only when `addr` is certainly not a VIP: one array lookup, no hashing. */
static __always_inline int may_be_vip(__u32 addr)
{
	__u32 slot = vip_filter_slot(addr);
	__u32 *count = bpf_map_lookup_elem(&vip_filter, &slot);

	return count && *count;
}

static __always_inline int is_vip(__u32 addr)
{
	return may_be_vip(addr) && bpf_map_lookup_elem(&vips, &addr) != NULL;
}

static __always_inline int is_vip6(const struct pyvs_addr6 *addr)
{
	return may_be_vip(fold6(addr)) && bpf_map_lookup_elem(&vips6, addr) != NULL;
}

static __always_inline __u32 svc_gen(__u32 index)
{
	__u32 *gen = bpf_map_lookup_elem(&svc_gens, &index);

	return gen ? *gen : 0;
}

/* The service of a packet: its VIP:port, else a service on every port of the VIP. */
static __always_inline struct pyvs_svc *find_service(const struct packet *pkt, __u16 *vport)
{
	struct pyvs_svc_key key = {.vip = pkt->daddr, .port = pkt->dport, .proto = pkt->proto};
	struct pyvs_svc *svc = bpf_map_lookup_elem(&services, &key);
	__u32 *vip_flags;

	*vport = pkt->dport;
	if (svc)
		return svc;
	vip_flags = bpf_map_lookup_elem(&vips, &key.vip);
	if (!vip_flags || !(*vip_flags & PYVS_VIP_F_ANY_PORT))
		return NULL;
	key.port = 0;
	*vport = 0;
	return bpf_map_lookup_elem(&services, &key);
}

static __always_inline struct pyvs_svc *find_service6(const struct pyvs_conn6_key *ckey, __u16 *vport)
{
	struct pyvs_svc6_key key = {.vip = ckey->daddr, .port = ckey->dport, .proto = ckey->proto};
	struct pyvs_svc *svc = bpf_map_lookup_elem(&services6, &key);
	__u32 *vip_flags;

	*vport = ckey->dport;
	if (svc)
		return svc;
	vip_flags = bpf_map_lookup_elem(&vips6, &key.vip);
	if (!vip_flags || !(*vip_flags & PYVS_VIP_F_ANY_PORT))
		return NULL;
	key.port = 0;
	*vport = 0;
	return bpf_map_lookup_elem(&services6, &key);
}

static __always_inline int expired(const struct pyvs_conn *conn, const struct pyvs_config *cfg, __u64 now)
{
	__u32 state = conn->state;
	__u64 timeout;

	if (state >= PYVS_STATE_COUNT)
		return 1;
	/* Another CPU may have stamped the entry after this one read the clock: not expired. */
	if ((__s64)(now - conn->last_seen) <= 0)
		return 0;
	timeout = conn->timeout ? conn->timeout : cfg->timeouts[state];
	return now - conn->last_seen > timeout * NSEC_PER_SEC;
}

/* A SYN on a connection the client has closed starts a new one (IPVS's conn_reuse_mode). */
static __always_inline int closed(const struct pyvs_conn *conn, int event)
{
	if (conn->state >= PYVS_STATE_SCTP_NONE)
		return sctp_reopens(conn->state, event);
	return event == EV_SYN && conn->state != PYVS_STATE_ESTABLISHED && conn->state != PYVS_STATE_SYN_RECV &&
	       conn->state != PYVS_STATE_UDP;
}

/* IPVS counts a TCP connection in ActiveConn in these states, everything else in InActConn. */
static __always_inline __u8 conn_class(__u8 state)
{
	switch (state) {
	case PYVS_STATE_ESTABLISHED:
	case PYVS_STATE_SYN_SENT:
	case PYVS_STATE_SYN_RECV:
	case PYVS_STATE_SYNACK:
	case PYVS_STATE_SCTP_ESTABLISHED: /* IPVS counts an SCTP association active only when established */
		return PYVS_COUNTED_ACTIVE;
	default:
		return PYVS_COUNTED_INACTIVE;
	}
}

/* An entry's count lives in real_conns[real].{active,inactive}[parity]. */
static __always_inline void add_count(__u32 real_id, __u8 parity, __u8 class, int delta)
{
	struct pyvs_real_conns *counts = bpf_map_lookup_elem(&real_conns, &real_id);

	if (!counts)
		return;
	if (class == PYVS_COUNTED_ACTIVE)
		__sync_fetch_and_add(&counts->active[parity & 3], delta);
	else if (class == PYVS_COUNTED_INACTIVE)
		__sync_fetch_and_add(&counts->inactive[parity & 3], delta);
}

/* Does the real the entry was scheduled to still hold its slot? */
static __always_inline int same_real(const struct pyvs_conn *conn)
{
	__u32 real_id = conn->real;
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &real_id);

	return real && real->gen == conn->gen;
}

/* Move the entry to the class of its state; a real's slot that changed hands is left alone. */
static __always_inline void recount(struct pyvs_conn *conn, __u8 class)
{
	if (conn->counted == class)
		return;
	if (same_real(conn)) {
		add_count(conn->real, conn->parity, conn->counted, -1);
		add_count(conn->real, conn->parity, class, 1);
	}
	conn->counted = class;
}

/* The shard of a table that holds a key whose words xor-ed give `h` (conn_shards is a power of two; 0 gives no
 * shard). */
static __always_inline __u32 shard_mix(__u32 h, const struct pyvs_config *cfg)
{
	h ^= h >> 16;
	h *= 0x45d9f3b;
	h ^= h >> 16;
	return h & (cfg->conn_shards - 1);
}

static __always_inline __u32 shard_of(const struct pyvs_conn_key *key, const struct pyvs_config *cfg)
{
	return shard_mix(key->saddr ^ key->daddr ^ (((__u32)key->sport << 16) | key->dport) ^ key->proto ^
			 ((__u32)key->pad[0] << 8), cfg);
}

static __always_inline __u32 shard_of6(const struct pyvs_conn6_key *key, const struct pyvs_config *cfg)
{
	return shard_mix(fold6(&key->saddr) ^ fold6(&key->daddr) ^ (((__u32)key->sport << 16) | key->dport) ^
			 key->proto ^ ((__u32)key->pad[0] << 8), cfg);
}

static __always_inline void *conn_shard(const struct pyvs_conn_key *key, const struct pyvs_config *cfg)
{
	__u32 index = shard_of(key, cfg);

	return bpf_map_lookup_elem(&conns, &index);
}

static __always_inline void *half_open_shard(const struct pyvs_conn_key *key, const struct pyvs_config *cfg)
{
	__u32 index = shard_of(key, cfg);

	return bpf_map_lookup_elem(&half_open, &index);
}

static __always_inline void *conn_shard6(const struct pyvs_conn6_key *key, const struct pyvs_config *cfg)
{
	__u32 index = shard_of6(key, cfg);

	return bpf_map_lookup_elem(&conns6, &index);
}

static __always_inline void *half_open_shard6(const struct pyvs_conn6_key *key, const struct pyvs_config *cfg)
{
	__u32 index = shard_of6(key, cfg);

	return bpf_map_lookup_elem(&half_open6, &index);
}

/* A packet's key in its family's tables (struct pyvs_conn_key, or pyvs_conn6_key when `v6`: a constant). */
static __always_inline void *family_conn_shard(void *key, const struct pyvs_config *cfg, const int v6)
{
	return v6 ? conn_shard6(key, cfg) : conn_shard(key, cfg);
}

static __always_inline void *family_half_open_shard(void *key, const struct pyvs_config *cfg, const int v6)
{
	return v6 ? half_open_shard6(key, cfg) : half_open_shard(key, cfg);
}

/* An entry that must not be used: its service changed hands, it expired, or a SYN reopens it. */
static __always_inline int stale(const struct pyvs_conn *conn, const struct pyvs_config *cfg, __u64 now, int event)
{
	return svc_gen(conn->svc_index) != conn->svc_gen || expired(conn, cfg, now) || closed(conn, event);
}

/* A new entry, counted in the current parity by the caller. */
static __always_inline void new_entry(struct pyvs_conn *entry, __u32 real_id, const struct pyvs_real *real,
				      __u32 svc_index, __u8 state, __u8 parity, __u64 now)
{
	entry->last_seen = now;
	entry->real = real_id;
	entry->gen = real->gen;
	entry->svc_index = svc_index;
	entry->svc_gen = svc_gen(svc_index);
	entry->state = state;
	entry->counted = conn_class(state);
	entry->parity = parity;
}

/* The persistence template of a new connection (its key `tkey` in `shard`): its real while the template lives,
 * else a new pick. */
static __always_inline __u32 *template_pick(const struct pyvs_svc *svc, const struct packet *pkt, void *shard,
					    void *tkey, const struct pyvs_config *cfg, __u64 now, __u32 *template_real,
					    const int v6)
{
	struct pyvs_conn *tmpl, fresh = {};
	struct pyvs_real *real;
	__u32 *slot, real_id;

	if (!shard)
		return NULL;
	tmpl = bpf_map_lookup_elem(shard, tkey);
	if (tmpl && tmpl->svc_index == svc->index && tmpl->svc_gen == svc_gen(svc->index) && !expired(tmpl, cfg, now)) {
		real_id = tmpl->real;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (real && real->gen == tmpl->gen && (real->flags & PYVS_REAL_ACTIVE)) {
			tmpl->last_seen = now;
			*template_real = real_id;
			count(PYVS_CNT_PERSIST_HIT);
			return template_real;
		}
	}
	slot = pick_real(svc, pkt);
	if (!slot)
		return NULL;
	real_id = *slot;
	real = bpf_map_lookup_elem(&reals, &real_id);
	if (!real)
		return NULL;
	new_entry(&fresh, real_id, real, svc->index, PYVS_STATE_NONE, 0, now);
	fresh.counted = PYVS_COUNTED_NONE;
	fresh.timeout = svc->persist_timeout;
	fresh.flags = PYVS_CONN_F_TEMPLATE;
	if (tmpl && bpf_map_delete_elem(shard, tkey) == 0)
		count(PYVS_CNT_CONN_DELETED);
	if (bpf_map_update_elem(shard, tkey, &fresh, BPF_NOEXIST) == 0) {
		count(PYVS_CNT_CONN_INSERTED);
		sync_conn(cfg, tkey, &fresh, v6);
	}
	return slot;
}

/* A template's client: the address masked with the service's netmask (IPv4) or prefix length (IPv6). */
static __always_inline void mask6(struct pyvs_addr6 *out, const struct pyvs_addr6 *in, __u32 prefix)
{
	for (int i = 0; i < 4; i++) {
		__u32 bits = prefix > 32 * i ? prefix - 32 * i : 0;

		out->w[i] = bits >= 32 ? in->w[i] : bits ? in->w[i] & bpf_htonl(~0U << (32 - bits)) : 0;
	}
}

static __always_inline void template_key(struct pyvs_conn_key *tkey, const struct pyvs_svc *svc, __u32 saddr,
					 __u32 daddr, __u16 vport, __u8 proto)
{
	tkey->saddr = saddr & svc->netmask;
	tkey->daddr = daddr;
	tkey->dport = vport; /* 0 for a service on every port: one template across ports */
	tkey->proto = proto;
	tkey->pad[0] = PYVS_CONN_F_TEMPLATE;
}

static __always_inline void template_key6(struct pyvs_conn6_key *tkey, const struct pyvs_svc *svc,
					  const struct pyvs_conn6_key *ckey, __u16 vport)
{
	mask6(&tkey->saddr, &ckey->saddr, svc->netmask);
	tkey->daddr = ckey->daddr;
	tkey->dport = vport;
	tkey->proto = ckey->proto;
	tkey->pad[0] = PYVS_CONN_F_TEMPLATE;
}

static __always_inline __u32 *persistent_pick(const struct pyvs_svc *svc, const struct packet *pkt, void *ckey,
					      __u16 vport, const struct pyvs_config *cfg, __u64 now,
					      __u32 *template_real, const int v6)
{
	if (v6) {
		__u32 zero = 0;
		struct pyvs_scratch6 *scratch = bpf_map_lookup_elem(&scratch6, &zero);
		struct pyvs_conn6_key *tkey = scratch ? &scratch->tkey : NULL;

		if (!tkey)
			return NULL;
		*tkey = (struct pyvs_conn6_key){};
		template_key6(tkey, svc, ckey, vport);
		return template_pick(svc, pkt, conn_shard6(tkey, cfg), tkey, cfg, now, template_real, 1);
	} else {
		struct pyvs_conn_key tkey = {};

		template_key(&tkey, svc, pkt->saddr, pkt->daddr, vport, pkt->proto);
		return template_pick(svc, pkt, conn_shard(&tkey, cfg), &tkey, cfg, now, template_real, 0);
	}
}

#include "nat.h"
#include "adm_est.h" /* the rate estimator: reads nat.h's out_stats */

/* ---- the sweeper: one shard of each table per step, a pass over all of them every pass_ticks ---- */

struct sweep_ctx {
	__u64 now;
	struct pyvs_config *cfg;
	__u64 live;
	__u32 parity;
	__u32 swept_counter;
};

/* Move an entry's count to another parity; false when its real's slot changed hands. */
static __always_inline int move_count(const struct pyvs_conn *conn, __u8 to)
{
	struct pyvs_real_conns *counts;
	__u32 real_id = conn->real;
	__u8 from = conn->parity;

	if (!same_real(conn))
		return 0;
	counts = bpf_map_lookup_elem(&real_conns, &real_id);
	if (!counts)
		return 1;
	if (conn->counted == PYVS_COUNTED_ACTIVE) {
		__sync_fetch_and_add(&counts->active[from & 3], -1);
		__sync_fetch_and_add(&counts->active[to & 3], 1);
	} else {
		__sync_fetch_and_add(&counts->inactive[from & 3], -1);
		__sync_fetch_and_add(&counts->inactive[to & 3], 1);
	}
	return 1;
}

/* A live connection placed by a template keeps the template alive (IPVS's n_control). */
static __always_inline void refresh_template(void *shard, void *tkey, const struct pyvs_config *cfg, __u64 now)
{
	struct pyvs_conn *tmpl;

	if (!shard)
		return;
	tmpl = bpf_map_lookup_elem(shard, tkey);
	if (tmpl && !expired(tmpl, cfg, now))
		tmpl->last_seen = now;
}

static __always_inline void keep_template(const struct pyvs_conn_key *key, const struct pyvs_config *cfg, __u64 now)
{
	struct pyvs_svc_key skey = {.vip = key->daddr, .port = key->dport, .proto = key->proto};
	struct pyvs_conn_key tkey = {};
	struct pyvs_svc *svc = bpf_map_lookup_elem(&services, &skey);

	if (!svc) {
		skey.port = 0;
		svc = bpf_map_lookup_elem(&services, &skey);
	}
	if (!svc || !(svc->flags & PYVS_SVC_F_PERSISTENT))
		return;
	template_key(&tkey, svc, key->saddr, key->daddr, skey.port, key->proto);
	refresh_template(conn_shard(&tkey, cfg), &tkey, cfg, now);
}

static __always_inline void keep_template6(const struct pyvs_conn6_key *key, const struct pyvs_config *cfg, __u64 now)
{
	struct pyvs_svc6_key skey = {.vip = key->daddr, .port = key->dport, .proto = key->proto};
	struct pyvs_conn6_key tkey = {};
	struct pyvs_svc *svc = bpf_map_lookup_elem(&services6, &skey);

	if (!svc) {
		skey.port = 0;
		svc = bpf_map_lookup_elem(&services6, &skey);
	}
	if (!svc || !(svc->flags & PYVS_SVC_F_PERSISTENT))
		return;
	template_key6(&tkey, svc, key, skey.port);
	refresh_template(conn_shard6(&tkey, cfg), &tkey, cfg, now);
}

/* One entry of a sweep: an expired one is removed, a live one counted in the current parity. True when live. */
static __always_inline int sweep_entry(void *map, void *key, struct pyvs_conn *conn, struct sweep_ctx *ctx)
{
	if (expired(conn, ctx->cfg, ctx->now)) {
		__u32 real_id = conn->real;

		recount(conn, PYVS_COUNTED_NONE);
		if (bpf_map_delete_elem(map, key) == 0)
			count(ctx->swept_counter);
		pyvs_threshold_unbind(real_id, 0);
		return 0;
	}
	ctx->live += 1;
	if (conn->parity != ctx->parity) {
		if (conn->counted != PYVS_COUNTED_NONE && !move_count(conn, ctx->parity))
			conn->counted = PYVS_COUNTED_NONE; /* its real's slot changed hands */
		conn->parity = ctx->parity;
	}
	return 1;
}

static long sweep_one(void *map, struct pyvs_conn_key *key, struct pyvs_conn *conn, struct sweep_ctx *ctx)
{
	__u32 real_id = conn->real, gen = conn->gen;
	__u8 flags = conn->flags; /* read before the entry may go */

	if (sweep_entry(map, key, conn, ctx)) {
		if (flags & PYVS_CONN_F_PERSISTED)
			keep_template(key, ctx->cfg, ctx->now);
	} else if (flags & PYVS_CONN_F_MASQ) {
		nat_forget(key, real_id, gen);
	}
	return 0;
}

static long sweep_one6(void *map, struct pyvs_conn6_key *key, struct pyvs_conn *conn, struct sweep_ctx *ctx)
{
	if (sweep_entry(map, key, conn, ctx) && (conn->flags & PYVS_CONN_F_PERSISTED))
		keep_template6(key, ctx->cfg, ctx->now);
	return 0;
}

struct zero_ctx {
	__u32 first;
	__u32 parity;
};

static long zero_one(__u32 i, struct zero_ctx *z)
{
	__u32 slot = z->first + i, p = z->parity;
	struct pyvs_real_conns *c = bpf_map_lookup_elem(&real_conns, &slot);

	if (!c)
		return 1;
	c->active[p & 3] = 0;
	c->inactive[p & 3] = 0;
	pyvs_threshold_unbind(slot, 1); /* counts that fell without an event (LRU evictions, flushes) */
	return 0;
}

static __always_inline __u64 counter_sum(__u32 id)
{
	__u64 sum = 0, *value;
	__u32 cpu;

	for (cpu = 0; cpu < 512; cpu++) {
		value = bpf_map_lookup_percpu_elem(&counters, &id, cpu);
		if (!value)
			break;
		sum += *value;
	}
	return sum;
}

/* Sweep shard `index` of a table; the live entries it found are in ctx->live. */
static __always_inline void sweep_shard(void *outer, __u32 index, struct sweep_ctx *ctx, __u32 swept_counter, int v6)
{
	void *shard = bpf_map_lookup_elem(outer, &index);

	ctx->live = 0;
	ctx->swept_counter = swept_counter;
	if (!shard)
		return;
	if (v6)
		bpf_for_each_map_elem(shard, sweep_one6, ctx, 0);
	else
		bpf_for_each_map_elem(shard, sweep_one, ctx, 0);
}

static __always_inline void end_pass(struct pyvs_sweep_stats *st, __u64 now)
{
	st->entries = st->scanning_entries;
	st->half_open = st->scanning_half_open;
	st->entries6 = st->scanning_entries6;
	st->half_open6 = st->scanning_half_open6;
	st->scanning_entries = 0;
	st->scanning_half_open = 0;
	st->scanning_entries6 = 0;
	st->scanning_half_open6 = 0;
	st->prev_pass_ended = st->pass_ended;
	st->pass_ended = now;
	st->prev_new_conns = st->new_conns;
	st->new_conns = counter_sum(PYVS_CNT_CONN_NEW);
	st->runs += 1;
	st->epoch += 1;
	st->parity = st->parity + 1 >= PYVS_COUNT_PARITIES ? 0 : st->parity + 1; /* zeroed during the pass */
	st->shard = 0;
	st->zeroed = 0;
	st->pass_tick = 0;
}

/* One step: zero a slice of the parity that comes next, and every `interval` ticks sweep one shard. */
static __always_inline void sweep_step(struct pyvs_sweep_stats *st, struct pyvs_config *cfg, __u64 now)
{
	__u32 shards = cfg->conn_shards, pass_ticks = cfg->pass_ticks ? cfg->pass_ticks : PYVS_PASS_TICKS;
	__u32 interval = pass_ticks > shards ? pass_ticks / shards : 1;
	__u32 steps = shards * interval, chunk = (PYVS_MAX_REALS + steps - 1) / steps;
	struct zero_ctx z = {.first = st->zeroed, .parity = st->parity + 1 >= PYVS_COUNT_PARITIES ? 0 : st->parity + 1};
	struct sweep_ctx ctx = {.now = now, .cfg = cfg, .parity = st->parity};

	if (st->zeroed < PYVS_MAX_REALS) {
		if (chunk > PYVS_MAX_REALS - st->zeroed)
			chunk = PYVS_MAX_REALS - st->zeroed;
		bpf_loop(chunk, zero_one, &z, 0);
		st->zeroed += chunk;
	}
	st->pass_tick += 1;
	if (st->shard < shards && st->pass_tick % interval == 0) {
		sweep_shard(&conns, st->shard, &ctx, PYVS_CNT_CONN_SWEPT, 0);
		st->scanning_entries += ctx.live;
		sweep_shard(&half_open, st->shard, &ctx, PYVS_CNT_HALF_OPEN_SWEPT, 0);
		st->scanning_half_open += ctx.live;
		if (cfg->flags & PYVS_CFG_IPV6) { /* an empty shard costs its buckets: IPv4 alone pays nothing */
			sweep_shard(&conns6, st->shard, &ctx, PYVS_CNT_CONN_SWEPT, 1);
			st->scanning_entries6 += ctx.live;
			sweep_shard(&half_open6, st->shard, &ctx, PYVS_CNT_HALF_OPEN_SWEPT, 1);
			st->scanning_half_open6 += ctx.live;
		}
		st->shard += 1;
	}
	if (st->shard >= shards && st->zeroed >= PYVS_MAX_REALS)
		end_pass(st, now);
}

/* The timer's callback: every tick the clock and a sweep step. */
static int tick(void *map, __u32 *key, struct sweeper *sw)
{
	struct pyvs_sweep_stats *st = &sw->stats;
	__u32 zero = 0;
	struct pyvs_config *cfg = bpf_map_lookup_elem(&config, &zero);
	__u64 started = bpf_ktime_get_ns();

	st->now = bpf_ktime_get_coarse_ns();
	st->ticks += 1;
	if (cfg && cfg->conn_shards)
		sweep_step(st, cfg, st->now);
	pyvs_estimate();
	st->last_step_ns = bpf_ktime_get_ns() - started;
	if (st->last_step_ns > st->max_step_ns)
		st->max_step_ns = st->last_step_ns;
	bpf_timer_start(&sw->timer, PYVS_CLOCK_TICK_NS, 0);
	return 0;
}

/* Run once (BPF_PROG_TEST_RUN) by the control plane to start the sweeper; harmless when it runs. */
SEC("xdp")
int pyvs_start_sweeper(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct sweeper *sw = bpf_map_lookup_elem(&sweeper, &zero);

	if (!sw)
		return XDP_ABORTED;
	sw->stats.now = bpf_ktime_get_coarse_ns();
	bpf_timer_init(&sw->timer, &sweeper, 1 /* CLOCK_MONOTONIC */);
	bpf_timer_set_callback(&sw->timer, tick);
	bpf_timer_start(&sw->timer, PYVS_CLOCK_TICK_NS, 0);
	return XDP_PASS;
}

/* ---- the packet path ---- */

/* A TCP packet of a half-open entry: still the handshake (SYN again, RST), or the client's ACK (or FIN,
 * data) that moves it to the connection table. Returns the entry the packet now belongs to. */
static __always_inline struct pyvs_conn *half_open_step(void *half_shard, void *main_shard, void *ckey,
						       struct pyvs_conn *half, int event, __u64 now,
						       const struct pyvs_config *cfg, const int v6)
{
	__u8 state = tcp_next_state_for(half->state, event, half->flags);
	struct pyvs_conn fresh;
	struct pyvs_conn *conn;
	long rc;

	if (state == PYVS_STATE_SYN_RECV) {
		half->state = state;
		if (half->last_seen != now)
			half->last_seen = now;
		return half;
	}
	fresh = *half;
	fresh.state = state;
	fresh.last_seen = now;
	recount(&fresh, conn_class(state));
	rc = bpf_map_update_elem(main_shard, ckey, &fresh, BPF_NOEXIST);
	if (rc == 0) {
		count(PYVS_CNT_CONN_INSERTED);
		count(PYVS_CNT_HALF_OPEN_PROMOTED);
		sync_conn(cfg, ckey, &fresh, v6);
		bpf_map_delete_elem(half_shard, ckey);
		return bpf_map_lookup_elem(main_shard, ckey);
	}
	conn = bpf_map_lookup_elem(main_shard, ckey);
	if (conn) {
		recount(&fresh, PYVS_COUNTED_NONE); /* another CPU promoted it first: use its entry */
		return conn;
	}
	recount(&fresh, half->counted); /* the table refused it: the flow stays half-open, counted as before */
	count(PYVS_CNT_INSERT_FAILED);
	return half;
}

/* Give the frame to `real`: only the MACs change (VLAN tags and everything after them are kept). */
static __always_inline int transmit(struct xdp_md *ctx, struct ethhdr *eth, const struct pyvs_real *real)
{
	int action;

	if (real->ifindex == 0 || real->ifindex == ctx->ingress_ifindex) {
		count(PYVS_CNT_TX);
		return XDP_TX;
	}
	action = bpf_redirect(real->ifindex, 0);
	if (action != XDP_REDIRECT)
		return drop(PYVS_CNT_REDIRECT_FAILED);
	count(PYVS_CNT_REDIRECT);
	return action;
}

static __always_inline int has_mac(const struct pyvs_real *real)
{
	return real->dmac[0] | real->dmac[1] | real->dmac[2] | real->dmac[3] | real->dmac[4] | real->dmac[5];
}

#include "tunnel.h" /* tunnel_xmit: ipvsadm -i */

/* walk_ext6 over the header `l3_off` bytes into the frame: a global function, so that the verifier checks the walk
 * once, not once more for every state it leaves the connection path in. */
__noinline int pyvs_walk6(struct xdp_md *ctx, __u32 l3_off, struct ext_walk *w)
{
	void *data, *data_end;

	if (!ctx || !w || l3_off > IP6_HEADERS_MAX)
		return PARSE_TRUNCATED;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	return walk_ext6(data + ip6_bounded(l3_off), data_end, w);
}

/* The rest of an IPv6 packet after parse_header6: extension headers, then the ports of TCP/UDP. PARSE_OK and
 * PARSE_FRAGMENT (a first fragment with ports, or a non-first one without) have p->base.proto; PARSE_OTHER_L4 has
 * the upper-layer protocol in p->base.proto and its header at p->l4_off (ICMPv6 among them). */
static __always_inline enum parse_result parse_rest6(struct xdp_md *ctx, void *data_end, struct packet6 *p)
{
	struct ipv6hdr *ip6h = p->ip6h;
	struct ext_walk w = {.off = sizeof(*ip6h), .next = ip6h->nexthdr};
	enum parse_result result;
	void *l4;

	w.limit = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	/* Most packets have no extension header: the walk (a function call) only for those that have. */
	result = is_ext_header(w.next) ? pyvs_walk6(ctx, p->l3_off, &w) : PARSE_OK;
	if (result != PARSE_OK && result != PARSE_FRAGMENT)
		return result;
	p->frag = w.frag;
	p->frag_proto = w.frag_proto;
	p->frag_off = w.frag_off;
	p->frag_id = w.frag_id;
	p->base.proto = p->key->proto = w.next;
	p->l4_off = w.off;
	if (result == PARSE_FRAGMENT)
		return PARSE_FRAGMENT;
	if (!balanced(w.next))
		return PARSE_OTHER_L4;
	if (w.off > IP6_HEADERS_MAX || w.off + l4_min_len(w.next) > w.limit)
		return PARSE_TRUNCATED;
	l4 = (void *)ip6h + ip6_bounded(w.off);
	if (w.next == IPPROTO_SCTP) {
		if (parse_sctp(l4, data_end, &p->base) != PARSE_OK)
			return PARSE_TRUNCATED;
		p->key->sport = p->base.sport;
		p->key->dport = p->base.dport;
	} else if (w.next == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return PARSE_TRUNCATED;
		p->base.sport = p->key->sport = th->source;
		p->base.dport = p->key->dport = th->dest;
		p->base.tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return PARSE_TRUNCATED;
		p->base.sport = p->key->sport = uh->source;
		p->base.dport = p->key->dport = uh->dest;
		p->base.tcp_flags = 0;
	}
	return w.frag ? PARSE_FRAGMENT : PARSE_OK;
}

/* An ICMP error about a connection's packet (`ckey`: the connection's key in its family's tables) goes to that
 * connection's real with only the MACs rewritten, counted in its service's and real's packets and bytes as
 * ip_vs_in_icmp counts them; the entry's state and last_seen are left alone. No usable entry: the kernel's. */
static __always_inline int icmp_to_conn(struct xdp_md *ctx, struct ethhdr *eth, void *ckey, __u8 proto,
					__u16 tot_len, __u32 nat_l3_off, const int v6)
{
	struct pyvs_conn *conn = NULL;
	struct pyvs_config *cfg;
	struct pyvs_real *real;
	__u32 zero = 0, real_id;
	void *shard;
	__u64 now;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
	now = clock_now(sweep_stats());
	shard = family_conn_shard(ckey, cfg, v6);
	if (shard)
		conn = bpf_map_lookup_elem(shard, ckey);
	if (!conn && proto == IPPROTO_TCP) {
		shard = family_half_open_shard(ckey, cfg, v6);
		if (shard)
			conn = bpf_map_lookup_elem(shard, ckey);
	}
	/* An entry that is stale for its own packets is no connection for an error either (it is left alone). */
	if (!conn || svc_gen(conn->svc_index) != conn->svc_gen || expired(conn, cfg, now))
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN);
	real_id = conn->real;
	real = bpf_map_lookup_elem(&reals, &real_id);
	if (!real || !(real->flags & PYVS_REAL_ACTIVE) || real->gen != conn->gen)
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN);
	if (!has_mac(real))
		return drop(PYVS_CNT_DROP_NO_MAC);
	if (!v6 && (conn->flags & PYVS_CONN_F_MASQ))
		nat_icmp_to_real(ctx, nat_l3_off, real);
	account(conn->svc_index, tot_len, 0);
	account(PYVS_MAX_SERVICES + real_id, tot_len, 0);
	count(PYVS_CNT_ICMP_TO_REAL);
	if (!v6 && (real->flags & PYVS_REAL_FWD_TUNNEL)) { /* ip_vs_icmp_xmit: a tunnel real's errors go through it */
		int action = tunnel_xmit(ctx, real_id);

		return action >= 0 ? action : drop(PYVS_CNT_DROP_TOO_BIG);
	}
	__builtin_memcpy(eth->h_dest, real->dmac, ETH_ALEN);
	__builtin_memcpy(eth->h_source, real->smac, ETH_ALEN);
	return transmit(ctx, eth, real);
}

/* ICMP to a VIP. An error (destination unreachable, fragmentation needed among them, source quench, time
 * exceeded, parameter problem) quotes the packet it is about: a real's packet of a VIP connection, sent from
 * VIP:vport to the client. It goes to that connection's real, as IPVS's ip_vs_in_icmp and Katran do, so that
 * path-MTU discovery works through the director. Only the quoted ports are read (8 bytes of L4 are all a
 * router must quote). Everything else (echo requests among it) is the kernel's. Nothing here is on the
 * path of a TCP/UDP packet: a function of its own, so that its stack is not pyvs_xdp's (which, with the
 * scheduler's, must fit the 512 bytes of a call chain). */
static __noinline int icmp_to_vip(struct xdp_md *ctx, struct packet *pkt, void *data_end)
{
	struct iphdr *iph = pkt->iph, *inner;
	struct pyvs_conn_key ckey = {};
	struct icmp_hdr *icmp;
	__u32 ihl_len, inner_len, tot_len;
	__u64 l3_off;
	__u16 *ports;

	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return pass(PYVS_CNT_PASS_ICMP); /* the kernel reassembles it */
	tot_len = bpf_ntohs(iph->tot_len);
	ihl_len = iph->ihl * 4;
	if ((void *)iph + tot_len > data_end || tot_len < ihl_len + sizeof(struct icmp_hdr))
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	icmp = (void *)iph + ihl_len;
	if ((void *)(icmp + 1) > data_end)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	if (icmp->type != ICMP_DEST_UNREACH && icmp->type != ICMP_TIME_EXCEEDED &&
	    icmp->type != ICMP_PARAMETERPROB && icmp->type != ICMP_SOURCE_QUENCH)
		return pass(PYVS_CNT_PASS_ICMP);
	inner = (void *)(icmp + 1);
	if ((void *)(inner + 1) > data_end || inner->version != 4 || inner->ihl < 5)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	if (!balanced(inner->protocol))
		return pass(PYVS_CNT_PASS_ICMP); /* about the director's own ICMP, or a protocol pyvs does not balance */
	if (inner->frag_off & bpf_htons(IP_OFFSET))
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN); /* a non-first fragment quotes no ports */
	inner_len = inner->ihl * 4;
	ports = (void *)inner + inner_len;
	if ((void *)(ports + 2) > data_end || ihl_len + sizeof(struct icmp_hdr) + inner_len + 4 > tot_len)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	/* The quoted packet went from the VIP (this error's destination) to a client. */
	if (inner->saddr != pkt->daddr)
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN);
	ckey.saddr = inner->daddr;
	ckey.daddr = inner->saddr;
	ckey.sport = ports[1];
	ckey.dport = ports[0];
	ckey.proto = inner->protocol;
	l3_off = (void *)iph - (void *)pkt->eth; /* pkt->eth is the frame's start */
	asm volatile("" : "+r"(l3_off));
	return icmp_to_conn(ctx, pkt->eth, &ckey, ckey.proto, tot_len, l3_off, 0);
}

/* ICMPv6 to a VIP, as ICMP (ip_vs_in_icmp_v6): an error (destination unreachable, packet too big, time exceeded,
 * parameter problem) quoting a VIP connection's packet goes to its real; the quoted packet's extension headers are
 * walked as the packet's own. Neighbour discovery (NS, NA, RS, RA, redirect) is the kernel's, counted pass_nd;
 * echo and everything else ICMPv6, pass_icmp. A global function (its stack apart from the connection path's): it
 * parses the frame again, which pyvs_xdp6 found to be ICMPv6 to a VIP. */
__noinline int pyvs_icmp6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct pyvs_conn6_key ckey = {}, quoted = {};
	struct packet6 pkt6 = {.key = &quoted}, *p = &pkt6;
	struct ipv6hdr *ip6h, *inner;
	struct ext_walk w = {};
	__u32 off, tot_len;
	__u8 *icmp;
	__u16 *ports;

	if (parse_header6(data, data_end, p) != PARSE_OK || parse_rest6(ctx, data_end, p) != PARSE_OTHER_L4 ||
	    p->base.proto != IPPROTO_ICMPV6)
		return XDP_PASS;
	if (p->frag)
		return pass(PYVS_CNT_PASS_ICMP); /* the kernel reassembles it */
	ip6h = p->ip6h;
	off = p->l4_off;
	tot_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	if (off > IP6_HEADERS_MAX)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	icmp = (void *)ip6h + ip6_bounded(off);
	if ((void *)(icmp + sizeof(struct icmp_hdr)) > data_end || off + sizeof(struct icmp_hdr) > tot_len)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	if (icmp[0] >= NDISC_ROUTER_SOLICITATION && icmp[0] <= NDISC_REDIRECT)
		return pass(PYVS_CNT_PASS_ND);
	if (icmp[0] < ICMPV6_DEST_UNREACH || icmp[0] > ICMPV6_PARAMPROB)
		return pass(PYVS_CNT_PASS_ICMP);
	inner = (void *)(icmp + sizeof(struct icmp_hdr));
	off += sizeof(struct icmp_hdr);
	if ((void *)(inner + 1) > data_end || off + sizeof(*inner) > tot_len || inner->version != 6)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	w.off = sizeof(*inner);
	w.limit = tot_len - off;
	w.next = inner->nexthdr;
	switch (pyvs_walk6(ctx, p->l3_off + off, &w)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN); /* a non-first fragment quotes no ports */
	case PARSE_EXT_DEPTH:
		return pass(PYVS_CNT_PASS_EXT_DEPTH);
	default:
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	}
	if (!balanced(w.next))
		return pass(PYVS_CNT_PASS_ICMP);
	if (w.off > IP6_HEADERS_MAX || w.off + 4 > w.limit)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	ports = (void *)inner + ip6_bounded(w.off);
	if ((void *)(ports + 2) > data_end)
		return drop(PYVS_CNT_DROP_ICMP_MALFORMED);
	__builtin_memcpy(&ckey.daddr, &inner->saddr, sizeof(ckey.daddr));
	if ((ckey.daddr.w[0] ^ p->key->daddr.w[0]) | (ckey.daddr.w[1] ^ p->key->daddr.w[1]) |
	    (ckey.daddr.w[2] ^ p->key->daddr.w[2]) | (ckey.daddr.w[3] ^ p->key->daddr.w[3]))
		return pass(PYVS_CNT_PASS_ICMP_NO_CONN); /* the quoted packet was not sent from this VIP */
	__builtin_memcpy(&ckey.saddr, &inner->daddr, sizeof(ckey.saddr));
	ckey.sport = ports[1];
	ckey.dport = ports[0];
	ckey.proto = w.next;
	return icmp_to_conn(ctx, p->base.eth, &ckey, ckey.proto, p->base.tot_len, 0, 1);
}

/* A fragment to a VIP (Cilium's way): the first one carries the ports, which are recorded under (source,
 * destination, protocol, IP ID); a later one takes them from there and follows its first fragment's
 * connection. A non-first fragment that arrives before its first one (or after the LRU evicted it) has no
 * ports: it is dropped and counted (drop_fragment). Returns -1 when the packet goes on with its ports. */
static __always_inline int follow_fragment(struct packet *pkt, void *data_end)
{
	struct iphdr *iph = pkt->iph;
	struct pyvs_frag_key key = {.saddr = pkt->saddr, .daddr = pkt->daddr, .id = iph->id, .proto = pkt->proto};
	struct pyvs_frag_ports ports, *known;

	if (iph->frag_off & bpf_htons(IP_OFFSET)) {
		pkt->tot_len = bpf_ntohs(iph->tot_len);
		if ((void *)iph + pkt->tot_len > data_end || pkt->tot_len < iph->ihl * 4)
			return drop(PYVS_CNT_DROP_MALFORMED);
		known = bpf_map_lookup_elem(&frags, &key);
		if (!known)
			return drop(PYVS_CNT_DROP_FRAGMENT);
		pkt->sport = known->sport;
		pkt->dport = known->dport;
		pkt->tcp_flags = 0; /* a TCP fragment without its header counts as an ACK: no state change */
		count(PYVS_CNT_FRAG_FOLLOWED);
		return -1;
	}
	if (parse_ports(iph, data_end, pkt) != PARSE_OK)
		return drop(PYVS_CNT_DROP_MALFORMED);
	ports.sport = pkt->sport;
	ports.dport = pkt->dport;
	if (bpf_map_update_elem(&frags, &key, &ports, BPF_ANY) == 0)
		count(PYVS_CNT_FRAG_FIRST);
	else
		count(PYVS_CNT_INSERT_FAILED);
	return -1;
}

/* The same for IPv6, by the fragment header (parse_rest6 read the first fragment's ports): the key is (source,
 * destination, identification, the fragment header's next header), the first fragment's upper-layer protocol is
 * kept with its ports (destination options may come between). A function of its own, as icmp_to_vip. */
static __noinline int follow_fragment6(struct packet6 *p)
{
	struct pyvs_frag6_key key = {.saddr = p->key->saddr, .daddr = p->key->daddr, .id = p->frag_id,
				     .proto = p->frag_proto};
	struct pyvs_frag6_ports ports = {}, *known;

	if (p->frag_off) {
		known = bpf_map_lookup_elem(&frags6, &key);
		if (!known)
			return drop(PYVS_CNT_DROP_FRAGMENT);
		p->base.sport = p->key->sport = known->sport;
		p->base.dport = p->key->dport = known->dport;
		p->base.proto = p->key->proto = known->proto;
		p->base.tcp_flags = 0;
		count(PYVS_CNT_FRAG_FOLLOWED);
		return -1;
	}
	ports.sport = p->base.sport;
	ports.dport = p->base.dport;
	ports.proto = p->base.proto;
	if (bpf_map_update_elem(&frags6, &key, &ports, BPF_ANY) == 0)
		count(PYVS_CNT_FRAG_FIRST);
	else
		count(PYVS_CNT_INSERT_FAILED);
	return -1;
}

/* Whether the packet of a one-packet service is a fragment (its datagram needs an entry for the others). */
static __always_inline int onepacket_fragment(const struct packet *pkt, const int v6)
{
	if (v6)
		return ((const struct packet6 *)pkt)->frag; /* pkt is its packet6's base, the first member */
	return (pkt->iph->frag_off & bpf_htons(IP_MF | IP_OFFSET)) != 0;
}

#include "fwmark.h"

/* The connection path of a TCP/UDP packet to a VIP, for either family: `ckey` is the packet's key in the family's
 * tables (a struct pyvs_conn_key, or pyvs_conn6_key when `v6`, a constant: each caller gets its own code), and
 * pkt->saddr/daddr what the schedulers hash (IPv6: the addresses' words xor-ed, as IPVS folds them). */
static __always_inline int conn_path(void *ctx, struct pyvs_config *cfg, struct packet *pkt, void *ckey, const int v6,
				     const int fwmark)
{
	struct pyvs_conn *conn, *half = NULL, fresh = {};
	struct pyvs_sweep_stats *st;
	struct pyvs_svc *svc;
	struct pyvs_real *real;
	__u32 real_id, svc_index, template_real = 0, *slot;
	__u16 vport;
	__u64 now;
	__u8 parity, state;
	void *main_shard, *half_shard = NULL, *table = NULL;
	int event = EV_ACK, new_conn = 0, action;
	__u8 masq = 0;
	long rc;

	if (pkt->proto == IPPROTO_TCP)
		event = tcp_event(pkt->tcp_flags);
	else if (pkt->proto == IPPROTO_SCTP)
		event = sctp_miss_event(pkt->tcp_flags);
	st = sweep_stats();
	now = clock_now(st);
	parity = st ? st->parity : 0;
	main_shard = family_conn_shard(ckey, cfg, v6);
	if (!main_shard)
		return XDP_PASS; /* the control plane has not made the tables yet */

	/* An established flow needs no service lookup: its entry names the service and the real. */
	conn = bpf_map_lookup_elem(main_shard, ckey);
	if (conn && stale(conn, cfg, now, event)) {
		real_id = conn->real;
		count(PYVS_CNT_CONN_REPLACED);
		recount(conn, PYVS_COUNTED_NONE);
		if (bpf_map_delete_elem(main_shard, ckey) == 0)
			count(PYVS_CNT_CONN_DELETED);
		pyvs_threshold_unbind(real_id, 0);
		conn = NULL;
	}
	if (!conn && pkt->proto == IPPROTO_TCP) {
		half_shard = family_half_open_shard(ckey, cfg, v6);
		half = half_shard ? bpf_map_lookup_elem(half_shard, ckey) : NULL;
		if (half && stale(half, cfg, now, event)) {
			real_id = half->real;
			recount(half, PYVS_COUNTED_NONE);
			if (bpf_map_delete_elem(half_shard, ckey) == 0)
				count(PYVS_CNT_HALF_OPEN_SWEPT);
			pyvs_threshold_unbind(real_id, 0);
			half = NULL;
		}
		if (half) {
			conn = half_open_step(half_shard, main_shard, ckey, half, event, now, cfg, v6);
			if (!v6 && conn && conn != half && (conn->flags & PYVS_CONN_F_MASQ))
				nat_promote(ckey, conn); /* its reply entry follows it */
		}
	}
	if (conn) {
		svc_index = conn->svc_index;
		real_id = conn->real;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE) || real->gen != conn->gen) {
			if ((cfg->flags & PYVS_CFG_EXPIRE_NODEST_CONN) &&
			    bpf_map_delete_elem(conn == half ? half_shard : main_shard, ckey) == 0)
				count(PYVS_CNT_CONN_DELETED);
			return drop(PYVS_CNT_DROP_REAL_GONE);
		}
		masq = conn->flags & PYVS_CONN_F_MASQ;
		if ((pkt->proto == IPPROTO_TCP && conn != half) || pkt->proto == IPPROTO_SCTP) {
			state = pkt->proto == IPPROTO_SCTP ? sctp_next_state(conn->state, pkt->tcp_flags)
							   : tcp_next_state_for(conn->state, event, conn->flags);
			if (state != conn->state) {
				conn->state = state;
				recount(conn, conn_class(state));
				sync_conn(cfg, ckey, conn, v6);
			}
		}
		if (conn->last_seen != now)
			conn->last_seen = now;
	} else {
		svc = fwmark ? find_fwmark_service(ctx, pkt, &vport, v6) : v6 ? find_service6(ckey, &vport)
									  : find_service(pkt, &vport);
		if (!svc) {
			if (!v6 && !fwmark) { /* a NAT reply whose client's address shares a VIP's pre-filter slot */
				action = nat_reply(ctx, pkt, 0);
				if (action >= 0)
					return action;
			}
			return pass(PYVS_CNT_PASS);
		}
		/* IPVS's miss rules: only a SYN starts a TCP connection (any packet but RST with sloppy_tcp). */
		if (event == EV_RST)
			return pass(PYVS_CNT_PASS_MISS_RST);
		if (pkt->proto == IPPROTO_SCTP && event != EV_SYN)
			return pass(PYVS_CNT_PASS_MISS_SCTP);
		if (pkt->proto == IPPROTO_TCP && event != EV_SYN && !(cfg->flags & PYVS_CFG_SLOPPY_TCP))
			return pass(event == EV_FIN ? PYVS_CNT_PASS_MISS_FIN : PYVS_CNT_PASS_MISS_ACK);
		if (svc->flags & PYVS_SVC_F_PERSISTENT) /* a mark's template: one for every port of the address */
			slot = persistent_pick(svc, pkt, ckey, fwmark ? 0 : vport, cfg, now, &template_real, v6);
		else
			slot = pick_real(svc, pkt);
		if (!slot)
			return drop(PYVS_CNT_DROP_NO_REAL);
		real_id = *slot;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE))
			return drop(PYVS_CNT_DROP_NO_REAL);
		svc_index = svc->index;
		if ((svc->flags & PYVS_SVC_F_ONEPACKET) && pkt->proto == IPPROTO_UDP) {
			/* ipvsadm -o: IPVS binds a one-packet connection and expires it after the packet; here no
			 * entry at all, the counts do not move. A fragmented datagram, or one to a NAT real (its reply
			 * needs the entry), keeps an entry (below) for 1 s idle. A fwmark service's UDP too, as IPVS. */
			if (!onepacket_fragment(pkt, v6) && !(real->flags & PYVS_REAL_FWD_MASQ)) {
				count(PYVS_CNT_ONEPACKET);
				count(PYVS_CNT_CONN_NEW);
				new_conn = 1;
				goto forward;
			}
			fresh.timeout = 1;
		}
		state = pkt->proto == IPPROTO_TCP    ? tcp_next_state(PYVS_STATE_NONE, event)
			: pkt->proto == IPPROTO_SCTP ? sctp_next_state(PYVS_STATE_SCTP_NONE, pkt->tcp_flags)
						     : PYVS_STATE_UDP;
		new_entry(&fresh, real_id, real, svc_index, state, parity, now);
		if (svc->flags & PYVS_SVC_F_PERSISTENT)
			fresh.flags = PYVS_CONN_F_PERSISTED;
		if (!v6 && (real->flags & PYVS_REAL_FWD_MASQ))
			fresh.flags |= PYVS_CONN_F_MASQ; /* the connection keeps the method it was made with, as IPVS's */
		masq = fresh.flags & PYVS_CONN_F_MASQ;
		table = event == EV_SYN && half_shard ? half_shard : main_shard;
		rc = bpf_map_update_elem(table, ckey, &fresh, BPF_NOEXIST);
		if (rc == 0) {
			add_count(real_id, parity, fresh.counted, 1);
			pyvs_threshold_bind(real_id);
			count(table == main_shard ? PYVS_CNT_CONN_INSERTED : PYVS_CNT_HALF_OPEN_NEW);
			count(PYVS_CNT_CONN_NEW);
			new_conn = 1;
			if (table == main_shard)
				sync_conn(cfg, ckey, &fresh, v6);
		} else {
			/* Another CPU inserted the flow first: follow its entry; else the table refused it. */
			conn = bpf_map_lookup_elem(table, ckey);
			if (conn) {
				real_id = conn->real;
				masq = conn->flags & PYVS_CONN_F_MASQ;
				real = bpf_map_lookup_elem(&reals, &real_id);
				if (!real)
					return drop(PYVS_CNT_DROP_NO_REAL);
			} else {
				count(PYVS_CNT_INSERT_FAILED);
			}
		}
	}

forward:
	if (!has_mac(real))
		return drop(PYVS_CNT_DROP_NO_MAC);
	if (fwmark && (masq || (real->flags & PYVS_REAL_FWD_TUNNEL)))
		return drop(PYVS_CNT_DROP_FWM); /* pyvs_fwm forwards by direct routing only (yet) */
	if (!v6 && masq && !fwmark && nat_forward(ctx, pkt, ckey, real, new_conn ? (table == main_shard ? 1 : 2) : 0) < 0)
		return drop(PYVS_CNT_DROP_MALFORMED);
	account(svc_index, pkt->tot_len, new_conn);
	account(PYVS_MAX_SERVICES + real_id, pkt->tot_len, new_conn);
	if (!v6 && !fwmark && (real->flags & PYVS_REAL_FWD_TUNNEL)) {
		int action = tunnel_xmit(ctx, real_id);

		return action >= 0 ? action : frag_needed(ctx, -action); /* a DF packet too big for the tunnel */
	}
	__builtin_memcpy(pkt->eth->h_dest, real->dmac, ETH_ALEN);
	__builtin_memcpy(pkt->eth->h_source, real->smac, ETH_ALEN);
	return fwmark ? fwm_transmit(ctx, real) : transmit(ctx, pkt->eth, real);
}

/* An IPv6 frame: pyvs_xdp saw its EtherType and tail-called this program (PYVS_CALL_IPV6 in `calls`). Traffic that
 * is not for a VIP is passed as it is, uncounted, after the fixed header (neighbour discovery to solicited-node
 * multicast addresses among it). */
SEC("xdp")
int pyvs_xdp6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet6 p = {};
	struct pyvs_scratch6 *scratch;
	struct pyvs_config *cfg;
	__u32 zero = 0;
	int action;

	scratch = bpf_map_lookup_elem(&scratch6, &zero);
	if (!scratch)
		return XDP_PASS;
	p.key = &scratch->key;
	switch (parse_header6(data, data_end, &p)) {
	case PARSE_OK:
		break;
	case PARSE_TRUNCATED:
		return is_vip6(&p.key->daddr) ? drop(PYVS_CNT_DROP_MALFORMED) : XDP_PASS;
	default:
		return XDP_PASS;
	}
	if (!may_be_vip(p.base.daddr))
		return XDP_PASS;
	switch (parse_rest6(ctx, data_end, &p)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		if (!is_vip6(&p.key->daddr))
			return XDP_PASS;
		action = follow_fragment6(&p);
		if (action >= 0)
			return action;
		break;
	case PARSE_OTHER_L4:
		return p.base.proto == IPPROTO_ICMPV6 && is_vip6(&p.key->daddr) ? pyvs_icmp6(ctx) : XDP_PASS;
	case PARSE_EXT_DEPTH:
		return is_vip6(&p.key->daddr) ? pass(PYVS_CNT_PASS_EXT_DEPTH) : XDP_PASS;
	case PARSE_TRUNCATED:
		return is_vip6(&p.key->daddr) ? drop(PYVS_CNT_DROP_MALFORMED) : XDP_PASS;
	default:
		return XDP_PASS;
	}
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;
#ifdef PYVS_BENCH_NEW_FLOWS
	p.key->saddr.w[3] ^= bpf_get_prandom_u32(); /* benchmarks only: every packet starts a new flow */
#endif
	return conn_path(ctx, cfg, &p.base, p.key, 1, 0);
}

SEC("xdp")
int pyvs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	struct pyvs_conn_key ckey = {};
	struct pyvs_config *cfg;
	__u32 zero = 0;
	int action;

	/* Traffic that is not for a VIP is the kernel's: passed as it is and not counted (the NIC counts it). */
	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		if (!is_vip(pkt.daddr)) {
			action = nat_reply_fragment(ctx, &pkt);
			return action >= 0 ? action : XDP_PASS;
		}
		action = follow_fragment(&pkt, data_end);
		if (action >= 0)
			return action;
		break;
	case PARSE_OTHER_L4:
		return pkt.proto == IPPROTO_ICMP && is_vip(pkt.daddr) ? icmp_to_vip(ctx, &pkt, data_end) : XDP_PASS;
	case PARSE_IPV6:
		bpf_tail_call(ctx, &calls, PYVS_CALL_IPV6);
		return XDP_PASS; /* no IPv6 program loaded yet */
	case PARSE_VLAN_DEPTH:
		return pass(PYVS_CNT_PASS_VLAN_DEPTH);
	case PARSE_TRUNCATED:
		return is_vip(pkt.daddr) ? drop(PYVS_CNT_DROP_MALFORMED) : XDP_PASS;
	default:
		return XDP_PASS;
	}
	if (!may_be_vip(pkt.daddr)) {
		action = nat_reply(ctx, &pkt, 0); /* a NAT real's reply, or not */
		return action >= 0 ? action : XDP_PASS;
	}
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;

#ifdef PYVS_BENCH_NEW_FLOWS
	pkt.saddr ^= bpf_get_prandom_u32(); /* benchmarks only: every packet starts a new flow */
#endif
	ckey.saddr = pkt.saddr;
	ckey.daddr = pkt.daddr;
	ckey.sport = pkt.sport;
	ckey.dport = pkt.dport;
	ckey.proto = pkt.proto;
	return conn_path(ctx, cfg, &pkt, &ckey, 0, 0);
}

char LICENSE[] SEC("license") = "GPL";
