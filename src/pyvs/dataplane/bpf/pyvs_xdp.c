/* pyvs XDP program: the LVS-DR director's packet path.
 * A TCP/UDP packet to a VIP:port with a service is given to a real server by
 * rewriting only its MAC addresses; everything else goes to the kernel. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"
#include "maps.h"
#include "parse.h"
#include "conn_state.h"
#include "schedule.h"

#define NSEC_PER_SEC 1000000000ULL
#define PYVS_CLOCK_TICK_NS 10000000ULL /* 10 ms; the coarse clock itself moves in 4 ms jiffies */
#define PYVS_TICKS_PER_SWEEP (NSEC_PER_SEC / PYVS_CLOCK_TICK_NS)

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
		return PYVS_COUNTED_ACTIVE;
	default:
		return PYVS_COUNTED_INACTIVE;
	}
}

static __always_inline void add_count(__u32 real_id, __u8 class, int delta)
{
	struct pyvs_real_conns *counts = bpf_map_lookup_elem(&real_conns, &real_id);

	if (!counts)
		return;
	if (class == PYVS_COUNTED_ACTIVE)
		__sync_fetch_and_add(&counts->active, delta);
	else if (class == PYVS_COUNTED_INACTIVE)
		__sync_fetch_and_add(&counts->inactive, delta);
}

/* Move the entry to the class of its state; a real's slot that changed hands is left alone. */
static __always_inline void recount(struct pyvs_conn *conn, __u8 class)
{
	struct pyvs_real *real;
	__u32 real_id = conn->real;

	if (conn->counted == class)
		return;
	real = bpf_map_lookup_elem(&reals, &real_id);
	if (real && real->gen == conn->gen) {
		add_count(real_id, conn->counted, -1);
		add_count(real_id, class, 1);
	}
	conn->counted = class;
}

/* The persistence template of a new connection: its real while the template lives, else a new pick. */
static __always_inline __u32 *persistent_pick(const struct pyvs_svc *svc, const struct packet *pkt, __u16 vport,
					      const struct pyvs_config *cfg, __u64 now, __u32 *template_real)
{
	struct pyvs_conn_key tkey = {};
	struct pyvs_conn *tmpl, fresh = {};
	struct pyvs_real *real;
	__u32 *slot, real_id;

	tkey.saddr = pkt->saddr & svc->netmask;
	tkey.daddr = pkt->daddr;
	tkey.dport = vport; /* 0 for a service on every port: one template across ports */
	tkey.proto = pkt->proto;
	tkey.pad[0] = PYVS_CONN_F_TEMPLATE;
	tmpl = bpf_map_lookup_elem(&conns, &tkey);
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
	fresh.last_seen = now;
	fresh.real = real_id;
	fresh.gen = real->gen;
	fresh.svc_index = svc->index;
	fresh.svc_gen = svc_gen(svc->index);
	fresh.timeout = svc->persist_timeout;
	fresh.state = PYVS_STATE_NONE;
	fresh.flags = PYVS_CONN_F_TEMPLATE;
	if (!tmpl)
		count(PYVS_CNT_CONN_INSERTED);
	bpf_map_update_elem(&conns, &tkey, &fresh, BPF_ANY);
	return slot;
}

/* ---- the sweeper: once a second, expired entries leave the table and the counts ---- */

struct sweep_ctx {
	__u64 now;
	struct pyvs_config *cfg;
};

static long sweep_one(void *map, struct pyvs_conn_key *key, struct pyvs_conn *conn, struct sweep_ctx *ctx)
{
	if (!expired(conn, ctx->cfg, ctx->now))
		return 0;
	recount(conn, PYVS_COUNTED_NONE);
	bpf_map_delete_elem(map, key);
	count(PYVS_CNT_CONN_SWEPT);
	return 0;
}

/* The timer's callback: every tick the clock, every PYVS_TICKS_PER_SWEEP ticks a sweep. */
static int tick(void *map, __u32 *key, struct sweeper *sw)
{
	__u32 zero = 0;
	struct sweep_ctx ctx = {.now = bpf_ktime_get_coarse_ns(), .cfg = bpf_map_lookup_elem(&config, &zero)};

	sw->now = ctx.now;
	sw->ticks += 1;
	if (sw->ticks % PYVS_TICKS_PER_SWEEP == 0) {
		if (ctx.cfg)
			bpf_for_each_map_elem(&conns, sweep_one, &ctx, 0);
		sw->runs += 1;
	}
	bpf_timer_start(&sw->timer, PYVS_CLOCK_TICK_NS, 0);
	return 0;
}

/* The packet path's clock: the last tick's time (the helper only until the timer has ticked). */
static __always_inline __u64 clock_now(void)
{
	__u32 zero = 0;
	struct sweeper *sw = bpf_map_lookup_elem(&sweeper, &zero);

	return sw && sw->now ? sw->now : bpf_ktime_get_coarse_ns();
}

/* Run once (BPF_PROG_TEST_RUN) by the control plane to start the sweeper; harmless when it runs. */
SEC("xdp")
int pyvs_start_sweeper(struct xdp_md *ctx)
{
	__u32 zero = 0;
	struct sweeper *sw = bpf_map_lookup_elem(&sweeper, &zero);

	if (!sw)
		return XDP_ABORTED;
	sw->now = bpf_ktime_get_coarse_ns();
	bpf_timer_init(&sw->timer, &sweeper, 1 /* CLOCK_MONOTONIC */);
	bpf_timer_set_callback(&sw->timer, tick);
	bpf_timer_start(&sw->timer, PYVS_CLOCK_TICK_NS, 0);
	return XDP_PASS;
}

SEC("xdp")
int pyvs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct packet pkt = {};
	struct pyvs_conn_key ckey = {};
	struct pyvs_conn *conn, fresh = {};
	struct pyvs_svc *svc;
	struct pyvs_real *real;
	struct pyvs_config *cfg;
	__u32 zero = 0, real_id, svc_index, template_real = 0, *slot;
	__u16 vport;
	__u64 now;
	int event = EV_ACK, new_conn = 0, replaced;

	/* Traffic that is not for a VIP is the kernel's: passed as it is and not counted (the NIC counts it). */
	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		return is_vip(pkt.daddr) ? drop(PYVS_CNT_DROP_FRAGMENT) : XDP_PASS;
	case PARSE_TRUNCATED:
		return is_vip(pkt.daddr) ? drop(PYVS_CNT_DROP_MALFORMED) : XDP_PASS;
	default:
		return XDP_PASS;
	}
	if (!may_be_vip(pkt.daddr))
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return XDP_PASS;

#ifdef PYVS_BENCH_NEW_FLOWS
	pkt.saddr ^= bpf_get_prandom_u32(); /* benchmarks only: every packet starts a new flow */
#endif
	if (pkt.proto == IPPROTO_TCP)
		event = tcp_event(pkt.tcp_flags);
	ckey.saddr = pkt.saddr;
	ckey.daddr = pkt.daddr;
	ckey.sport = pkt.sport;
	ckey.dport = pkt.dport;
	ckey.proto = pkt.proto;
	now = clock_now();

	/* An established flow needs no service lookup: its entry names the service and the real. */
	conn = bpf_map_lookup_elem(&conns, &ckey);
	replaced = conn != NULL;
	if (conn && (svc_gen(conn->svc_index) != conn->svc_gen || expired(conn, cfg, now) || closed(conn, event))) {
		count(PYVS_CNT_CONN_REPLACED);
		recount(conn, PYVS_COUNTED_NONE);
		conn = NULL;
	}
	if (conn) {
		svc_index = conn->svc_index;
		real_id = conn->real;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE) || real->gen != conn->gen) {
			if ((cfg->flags & PYVS_CFG_EXPIRE_NODEST_CONN) && bpf_map_delete_elem(&conns, &ckey) == 0)
				count(PYVS_CNT_CONN_DELETED);
			return drop(PYVS_CNT_DROP_REAL_GONE);
		}
		if (pkt.proto == IPPROTO_TCP) {
			__u8 state = tcp_next_state(conn->state, event);

			if (state != conn->state) {
				conn->state = state;
				recount(conn, conn_class(state));
			}
		}
		if (conn->last_seen != now)
			conn->last_seen = now;
	} else {
		svc = find_service(&pkt, &vport);
		if (!svc)
			return pass(PYVS_CNT_PASS);
		if (event == EV_RST)
			return pass(PYVS_CNT_PASS_NO_CONN);
		if (svc->flags & PYVS_SVC_F_PERSISTENT)
			slot = persistent_pick(svc, &pkt, vport, cfg, now, &template_real);
		else
			slot = pick_real(svc, &pkt);
		if (!slot)
			return drop(PYVS_CNT_DROP_NO_REAL);
		real_id = *slot;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE))
			return drop(PYVS_CNT_DROP_NO_REAL);
		svc_index = svc->index;
		fresh.last_seen = now;
		fresh.real = real_id;
		fresh.gen = real->gen;
		fresh.svc_index = svc_index;
		fresh.svc_gen = svc_gen(svc_index);
		fresh.state = pkt.proto == IPPROTO_TCP ? tcp_next_state(PYVS_STATE_NONE, event) : PYVS_STATE_UDP;
		fresh.counted = conn_class(fresh.state);
		if (!replaced)
			count(PYVS_CNT_CONN_INSERTED);
		bpf_map_update_elem(&conns, &ckey, &fresh, BPF_ANY);
		add_count(real_id, fresh.counted, 1);
		count(PYVS_CNT_CONN_NEW);
		new_conn = 1;
	}

	if (!(real->dmac[0] | real->dmac[1] | real->dmac[2] | real->dmac[3] | real->dmac[4] | real->dmac[5]))
		return drop(PYVS_CNT_DROP_NO_MAC);
	__builtin_memcpy(pkt.eth->h_dest, real->dmac, ETH_ALEN);
	__builtin_memcpy(pkt.eth->h_source, real->smac, ETH_ALEN);
	account(svc_index, bytes, new_conn);
	account(PYVS_MAX_SERVICES + real_id, bytes, new_conn);
	if (real->ifindex == 0 || real->ifindex == ctx->ingress_ifindex) {
		count(PYVS_CNT_TX);
		return XDP_TX;
	}
	count(PYVS_CNT_REDIRECT);
	return bpf_redirect(real->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
