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

static __always_inline int is_vip(__u32 addr)
{
	return bpf_map_lookup_elem(&vips, &addr) != NULL;
}

static __always_inline int expired(const struct pyvs_conn *conn, const struct pyvs_config *cfg, __u64 now)
{
	__u32 state = conn->state;

	if (state >= PYVS_STATE_COUNT)
		return 1;
	return now - conn->last_seen > (__u64)cfg->timeouts[state] * NSEC_PER_SEC;
}

/* A SYN on a connection the client has closed starts a new one (IPVS's conn_reuse_mode). */
static __always_inline int closed(const struct pyvs_conn *conn, int event)
{
	return event == EV_SYN && conn->state != PYVS_STATE_ESTABLISHED && conn->state != PYVS_STATE_SYN_RECV &&
	       conn->state != PYVS_STATE_UDP;
}

SEC("xdp")
int pyvs_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *data_end = (void *)(long)ctx->data_end;
	__u64 bytes = data_end - data;
	struct packet pkt = {};
	struct pyvs_svc_key skey = {};
	struct pyvs_conn_key ckey = {};
	struct pyvs_conn *conn, fresh = {};
	struct pyvs_svc *svc;
	struct pyvs_real *real;
	struct pyvs_config *cfg;
	__u32 zero = 0, real_id, *slot;
	__u64 now;
	int event = EV_ACK, new_conn = 0;

	count(PYVS_CNT_RX);
	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_FRAGMENT:
		return is_vip(pkt.daddr) ? drop(PYVS_CNT_DROP_FRAGMENT) : pass(PYVS_CNT_PASS);
	case PARSE_TRUNCATED:
		return is_vip(pkt.daddr) ? drop(PYVS_CNT_DROP_MALFORMED) : pass(PYVS_CNT_PASS);
	default:
		return pass(PYVS_CNT_PASS);
	}

	skey.vip = pkt.daddr;
	skey.port = pkt.dport;
	skey.proto = pkt.proto;
	svc = bpf_map_lookup_elem(&services, &skey);
	if (!svc)
		return pass(PYVS_CNT_PASS);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return pass(PYVS_CNT_PASS);

	if (pkt.proto == IPPROTO_TCP)
		event = tcp_event(pkt.tcp_flags);
	ckey.saddr = pkt.saddr;
	ckey.daddr = pkt.daddr;
	ckey.sport = pkt.sport;
	ckey.dport = pkt.dport;
	ckey.proto = pkt.proto;
	now = bpf_ktime_get_ns();

	conn = bpf_map_lookup_elem(&conns, &ckey);
	if (conn && (conn->svc_index != svc->index || expired(conn, cfg, now) || closed(conn, event))) {
		count(PYVS_CNT_CONN_REPLACED);
		conn = NULL;
	}
	if (conn) {
		real_id = conn->real;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE) || real->gen != conn->gen) {
			if (cfg->flags & PYVS_CFG_EXPIRE_NODEST_CONN)
				bpf_map_delete_elem(&conns, &ckey);
			return drop(PYVS_CNT_DROP_REAL_GONE);
		}
		conn->state = pkt.proto == IPPROTO_TCP ? tcp_next_state(conn->state, event) : PYVS_STATE_UDP;
		conn->last_seen = now;
	} else {
		if (event == EV_RST)
			return pass(PYVS_CNT_PASS_NO_CONN);
		slot = pick_real(svc, &pkt);
		if (!slot)
			return drop(PYVS_CNT_DROP_NO_REAL);
		real_id = *slot;
		real = bpf_map_lookup_elem(&reals, &real_id);
		if (!real || !(real->flags & PYVS_REAL_ACTIVE))
			return drop(PYVS_CNT_DROP_NO_REAL);
		fresh.last_seen = now;
		fresh.real = real_id;
		fresh.gen = real->gen;
		fresh.svc_index = svc->index;
		fresh.state = pkt.proto == IPPROTO_TCP ? tcp_next_state(PYVS_STATE_NONE, event) : PYVS_STATE_UDP;
		bpf_map_update_elem(&conns, &ckey, &fresh, BPF_ANY);
		count(PYVS_CNT_CONN_NEW);
		new_conn = 1;
	}

	if (!(real->dmac[0] | real->dmac[1] | real->dmac[2] | real->dmac[3] | real->dmac[4] | real->dmac[5]))
		return drop(PYVS_CNT_DROP_NO_MAC);
	__builtin_memcpy(pkt.eth->h_dest, real->dmac, ETH_ALEN);
	__builtin_memcpy(pkt.eth->h_source, real->smac, ETH_ALEN);
	account(svc->index, bytes, new_conn);
	account(PYVS_MAX_SERVICES + real_id, bytes, new_conn);
	if (real->ifindex == 0 || real->ifindex == ctx->ingress_ifindex) {
		count(PYVS_CNT_TX);
		return XDP_TX;
	}
	count(PYVS_CNT_REDIRECT);
	return bpf_redirect(real->ifindex, 0);
}

char LICENSE[] SEC("license") = "GPL";
