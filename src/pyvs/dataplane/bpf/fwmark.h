/* Firewall-mark services (ipvsadm -f MARK): a packet whose netfilter mark has a service is scheduled by it, whatever
 * its destination; its connection entry is keyed by its 5-tuple (vport from the packet), as IPVS keys fwmark
 * connections, in the same tables as every connection (so the XDP program forwards the flow's later packets itself
 * when their destination is a VIP).
 *
 * The mark is set by nftables after XDP and after tc ingress (measured: a tc ingress program never saw a mark set in
 * the netdev ingress hook of its own device); nft's `fwd to DEV` hands the marked packet to DEV's egress, where
 * pyvs_fwm (tc, egress) sees skb->mark, runs the connection path and sends the frame to the real: only the MACs
 * change, out of DEV or redirected to the real's interface. A fwmark service's key in `services` (IPv4) or `services6`
 * is (mark, port 0, protocol 0). Included from pyvs_xdp.c before conn_path. */
#ifndef PYVS_FWMARK_H
#define PYVS_FWMARK_H

#include <linux/pkt_cls.h>

/* pyvs_fwm tail-calls pyvs_fwm6 for IPv6 (a fresh stack, as pyvs_xdp6): the control plane puts it here. */
#define PYVS_FWM_CALL_IPV6 0
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} fwm_calls SEC(".maps");

/* The service of an skb's mark in a family's services map (the mark read here, so that it is not kept across the
 * connection path: pyvs_fwm6's stack is full). */
static __always_inline struct pyvs_svc *find_fwmark_service(struct __sk_buff *skb, const struct packet *pkt,
							    __u16 *vport, const int v6)
{
	__u32 mark = skb->mark;

	*vport = pkt->dport;
	if (v6) {
		/* The key in scratch6's template key (unused until a template is looked up): pyvs_fwm6's stack is full. */
		__u32 zero = 0;
		struct pyvs_scratch6 *scratch = bpf_map_lookup_elem(&scratch6, &zero);
		struct pyvs_svc6_key *key6 = scratch ? (void *)&scratch->tkey : NULL;

		if (!key6)
			return NULL;
		*key6 = (struct pyvs_svc6_key){.vip = {.w = {mark}}};
		return bpf_map_lookup_elem(&services6, key6);
	} else {
		struct pyvs_svc_key key = {.vip = mark};

		return bpf_map_lookup_elem(&services, &key);
	}
}

/* The ports of an IPv6 packet whose upper-layer header follows the fixed one (XDP's extension header walk takes an
 * XDP context): TCP, UDP, SCTP; anything else (extension headers, ICMPv6) PARSE_OTHER_L4. */
static __always_inline enum parse_result fwm_ports6(struct packet6 *p, void *data_end)
{
	struct ipv6hdr *ip6h = p->ip6h;
	__u8 next = ip6h->nexthdr;
	void *l4 = ip6h + 1;

	if (!balanced(next))
		return PARSE_OTHER_L4;
	if (sizeof(*ip6h) + l4_min_len(next) > sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len))
		return PARSE_TRUNCATED;
	p->base.proto = p->key->proto = next;
	if (next == IPPROTO_SCTP) {
		if (parse_sctp(l4, data_end, &p->base) != PARSE_OK)
			return PARSE_TRUNCATED;
	} else if (next == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return PARSE_TRUNCATED;
		p->base.sport = th->source;
		p->base.dport = th->dest;
		p->base.tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return PARSE_TRUNCATED;
		p->base.sport = uh->source;
		p->base.dport = uh->dest;
		p->base.tcp_flags = 0;
	}
	p->key->sport = p->base.sport;
	p->key->dport = p->base.dport;
	return PARSE_OK;
}

/* Give an skb leaving `ctx->ifindex` to `real`, its MACs already rewritten: out of this interface, or redirected to
 * the real's. Returns XDP_TX (send as it is) or XDP_REDIRECT; pyvs_fwm turns them into tc verdicts. */
static __always_inline int fwm_transmit(struct __sk_buff *skb, const struct pyvs_real *real)
{
	if (real->ifindex == 0 || real->ifindex == skb->ifindex) {
		count(PYVS_CNT_TX);
		return XDP_TX;
	}
	if (bpf_redirect(real->ifindex, 0) != TC_ACT_REDIRECT)
		return drop(PYVS_CNT_REDIRECT_FAILED);
	count(PYVS_CNT_REDIRECT);
	return XDP_REDIRECT;
}

/* `fwmark` (a constant): the packet is an skb whose mark has a service (pyvs_fwm), not an XDP frame. */
static __always_inline int conn_path(void *ctx, struct pyvs_config *cfg, struct packet *pkt, void *ckey, const int v6,
				     const int fwmark);

static __always_inline int drop_fwm(__u32 id)
{
	count(id);
	return TC_ACT_SHOT;
}

/* conn_path's verdict as tc's. */
static __always_inline int tc_verdict(int action)
{
	switch (action) {
	case XDP_TX:
		return TC_ACT_OK;
	case XDP_REDIRECT:
		return TC_ACT_REDIRECT;
	default: /* XDP_PASS among them (counted by its reason): nft took the packet from the kernel's input path */
		return TC_ACT_SHOT;
	}
}

/* An IPv6 packet with a mark that has an IPv6 service: a program of its own, tail-called by pyvs_fwm, so that its
 * stack with pyvs_schedule's keeps within the 512 bytes of a call chain; its key lives in scratch6, as pyvs_xdp6's. */
SEC("tc")
int pyvs_fwm6(struct __sk_buff *skb)
{
	struct packet6 p = {};
	struct pyvs_scratch6 *scratch;
	struct pyvs_config *cfg;
	void *data, *data_end;
	__u32 zero = 0;

	scratch = bpf_map_lookup_elem(&scratch6, &zero);
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !scratch)
		return TC_ACT_OK;
	p.key = &scratch->key;
	bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128); /* the headers in the linear part */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	switch (parse_header6(data, data_end, &p)) {
	case PARSE_OK:
		break;
	case PARSE_TRUNCATED:
		return drop_fwm(PYVS_CNT_DROP_MALFORMED);
	default:
		return TC_ACT_OK;
	}
	switch (fwm_ports6(&p, data_end)) {
	case PARSE_OK:
		break;
	case PARSE_TRUNCATED:
		return drop_fwm(PYVS_CNT_DROP_MALFORMED);
	default:
		return drop_fwm(PYVS_CNT_DROP_FWM); /* extension headers, ICMPv6, other protocols: not scheduled by a mark */
	}
	count(PYVS_CNT_FWM_SEEN);
	return tc_verdict(conn_path(skb, cfg, &p.base, p.key, 1, 1));
}

/* An IPv4 packet with a mark that has an IPv4 service. */
static __always_inline int pyvs_fwm4(struct __sk_buff *skb)
{
	struct pyvs_conn_key ckey = {};
	struct packet pkt = {};
	struct pyvs_config *cfg;
	void *data, *data_end;
	__u32 zero = 0;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return TC_ACT_OK;
	bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128);
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_TRUNCATED:
		return drop_fwm(PYVS_CNT_DROP_MALFORMED);
	default:
		return drop_fwm(PYVS_CNT_DROP_FWM); /* fragments, ICMP, other protocols: not scheduled by a mark (yet) */
	}
	ckey.saddr = pkt.saddr;
	ckey.daddr = pkt.daddr;
	ckey.sport = pkt.sport;
	ckey.dport = pkt.dport;
	ckey.proto = pkt.proto;
	count(PYVS_CNT_FWM_SEEN);
	return tc_verdict(conn_path(skb, cfg, &pkt, &ckey, 0, 1));
}

/* tc egress: a packet with a mark that has a service of its family (nft's `fwd to` brought it here). Everything else
 * leaves as it is, uncounted. A marked packet the service does not take (a TCP segment other than SYN without a
 * connection, a fragment, ICMP) is dropped and counted: it is no longer on the kernel's input path. */
SEC("tc")
int pyvs_fwm(struct __sk_buff *skb)
{
	union {
		struct pyvs_svc_key v4;
		struct pyvs_svc6_key v6;
	} skey = {};
	__u32 mark = skb->mark;

	if (!mark)
		return TC_ACT_OK;
	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		skey.v4.vip = mark;
		return bpf_map_lookup_elem(&services, &skey.v4) ? pyvs_fwm4(skb) : TC_ACT_OK;
	}
	if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		skey.v6.vip.w[0] = mark;
		if (bpf_map_lookup_elem(&services6, &skey.v6)) {
			bpf_tail_call(skb, &fwm_calls, PYVS_FWM_CALL_IPV6);
			return drop_fwm(PYVS_CNT_DROP_FWM); /* no IPv6 program loaded yet */
		}
	}
	return TC_ACT_OK;
}

#endif
