/* Firewall-mark services (ipvsadm -f MARK): a packet whose netfilter mark has a service is scheduled by it, whatever
 * its destination; its connection entry is keyed by its 5-tuple (vport from the packet), as IPVS keys fwmark
 * connections, in the same tables as every connection (so the XDP program forwards the flow's later packets itself
 * when their destination is a VIP).
 *
 * The mark is set by nftables after XDP and after tc ingress (measured: a tc ingress program never saw a mark set in
 * the netdev ingress hook of its own device); nft's `fwd to DEV` hands the marked packet to DEV's egress, where
 * pyvs_fwm (tc, egress) sees skb->mark, runs the connection path and sends the frame to the real: only the MACs
 * change, out of DEV or redirected to the real's interface. A fwmark service's key in `services` is (mark, port 0,
 * protocol 0); IPv4 only so far. Included from pyvs_xdp.c before conn_path. */
#ifndef PYVS_FWMARK_H
#define PYVS_FWMARK_H

#include <linux/pkt_cls.h>

/* The service of a mark. */
static __always_inline struct pyvs_svc *find_fwmark_service(__u32 mark, const struct packet *pkt, __u16 *vport)
{
	struct pyvs_svc_key key = {.vip = mark};

	*vport = pkt->dport;
	return bpf_map_lookup_elem(&services, &key);
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

static __always_inline int conn_path(void *ctx, struct pyvs_config *cfg, struct packet *pkt, void *ckey, const int v6,
				     __u32 fwmark);

/* tc egress: a packet with a mark that has a service (nft's `fwd to` brought it here). Everything else leaves as it
 * is, uncounted. A marked packet the service does not take (a TCP segment other than SYN without a connection, a
 * fragment, ICMP) is dropped and counted: it is no longer on the kernel's input path. */
SEC("tc")
int pyvs_fwm(struct __sk_buff *skb)
{
	struct pyvs_svc_key skey = {.vip = skb->mark};
	struct pyvs_conn_key ckey = {};
	struct packet pkt = {};
	struct pyvs_config *cfg;
	void *data, *data_end;
	__u32 zero = 0, mark = skb->mark;
	int action;

	if (!mark || skb->protocol != bpf_htons(ETH_P_IP) || !bpf_map_lookup_elem(&services, &skey))
		return TC_ACT_OK;
	bpf_skb_pull_data(skb, skb->len < 128 ? skb->len : 128); /* the headers in the linear part */
	data = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	switch (parse_packet(data, data_end, &pkt)) {
	case PARSE_OK:
		break;
	case PARSE_TRUNCATED:
		count(PYVS_CNT_DROP_MALFORMED);
		return TC_ACT_SHOT;
	default:
		count(PYVS_CNT_DROP_FWM);
		return TC_ACT_SHOT; /* fragments, ICMP, other protocols: not scheduled by a mark (yet) */
	}
	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return TC_ACT_OK;
	ckey.saddr = pkt.saddr;
	ckey.daddr = pkt.daddr;
	ckey.sport = pkt.sport;
	ckey.dport = pkt.dport;
	ckey.proto = pkt.proto;
	count(PYVS_CNT_FWM_SEEN);
	action = conn_path(skb, cfg, &pkt, &ckey, 0, mark);
	switch (action) {
	case XDP_TX:
		return TC_ACT_OK;
	case XDP_REDIRECT:
		return TC_ACT_REDIRECT;
	default: /* XDP_PASS among them (counted by its reason): nft took the packet from the kernel's input path */
		return TC_ACT_SHOT;
	}
}

#endif
