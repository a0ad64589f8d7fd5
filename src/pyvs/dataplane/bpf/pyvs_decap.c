/* pyvs_decap: the real server's side of tunnel forwarding, for kernels without the ipip, fou and gre modules.
 * A packet to this real's address (decap_config.addr) that carries an IPv4 packet in IPIP, GUE (UDP to
 * decap_config.gue_port, GUE version 0 without control messages) or GRE (version 0, no key, sequence or routing;
 * the checksum option allowed) loses its outer headers here, and the inner packet goes to the kernel as if it had
 * arrived on this NIC: its destination, the VIP, is on lo. The tunnel types taken are decap_config.types
 * (PYVS_DECAP_*). Everything else passes untouched; outer checksums are not verified (the inner packet's own
 * protect it). A fragmented tunnel packet is passed (counted): XDP cannot reassemble it. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

#define PYVS_DECAP_IPIP 1
#define PYVS_DECAP_GUE 2
#define PYVS_DECAP_GRE 4
#define L2_MAX 22

/* Counters (index into decap_counters). */
#define DECAP_CNT_IPIP 0
#define DECAP_CNT_GUE 1
#define DECAP_CNT_GRE 2
#define DECAP_CNT_PASS_FRAGMENT 3 /* a fragmented tunnel packet: the kernel gets it (and cannot decapsulate it) */
#define DECAP_CNT_DROP_MALFORMED 4 /* a tunnel packet whose headers are cut off or inconsistent */
#define DECAP_CNT_COUNT 5

struct decap_config {
	__u32 addr;     /* this real's address (network order); 0: any */
	__u16 gue_port; /* network order; 0: no GUE */
	__u8 types;     /* PYVS_DECAP_* */
	__u8 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct decap_config);
} decap_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, DECAP_CNT_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} decap_counters SEC(".maps");

static __always_inline int counted(__u32 id, int verdict)
{
	__u64 *value = bpf_map_lookup_elem(&decap_counters, &id);

	if (value)
		*value += 1;
	return verdict;
}

SEC("xdp")
int pyvs_decap(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct decap_config *cfg;
	struct iphdr *iph, *inner;
	struct vlan_tag *tag;
	__u8 l2[L2_MAX];
	__u32 zero = 0, l3_off = sizeof(*eth), hlen, kind;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return XDP_PASS;
	proto = eth->h_proto;
	for (int i = 0; i < 2; i++) {
		if (!is_vlan(proto))
			break;
		tag = data + l3_off;
		if ((void *)(tag + 1) > data_end)
			return XDP_PASS;
		proto = tag->proto;
		l3_off += sizeof(*tag);
	}
	if (proto != bpf_htons(ETH_P_IP))
		return XDP_PASS;
	iph = data + l3_off;
	if ((void *)(iph + 1) > data_end || iph->version != 4 || iph->ihl < 5)
		return XDP_PASS;
	if (iph->protocol != 4 && iph->protocol != IPPROTO_UDP && iph->protocol != 47)
		return XDP_PASS;
	cfg = bpf_map_lookup_elem(&decap_config, &zero);
	if (!cfg || (cfg->addr && iph->daddr != cfg->addr))
		return XDP_PASS;
	hlen = iph->ihl * 4;
	if (iph->protocol == 4) {
		if (!(cfg->types & PYVS_DECAP_IPIP))
			return XDP_PASS;
		kind = DECAP_CNT_IPIP;
	} else if (iph->protocol == IPPROTO_UDP) {
		struct udphdr *udp = (void *)iph + (hlen & 0x3c);
		__u8 *gue = (void *)(udp + 1);

		if (!(cfg->types & PYVS_DECAP_GUE) || (void *)(gue + 4) > data_end || udp->dest != cfg->gue_port ||
		    !cfg->gue_port)
			return XDP_PASS;
		if ((gue[0] & 0xe0) || gue[1] != 4) /* version 0, a data message, IPIP inside */
			return XDP_PASS;
		hlen += sizeof(*udp) + 4 + (gue[0] & 0x1f) * 4;
		kind = DECAP_CNT_GUE;
	} else {
		__be16 *gre = (void *)iph + (hlen & 0x3c);

		if (!(cfg->types & PYVS_DECAP_GRE) || (void *)(gre + 2) > data_end)
			return XDP_PASS;
		if ((gre[0] & ~bpf_htons(0x8000)) || gre[1] != bpf_htons(ETH_P_IP))
			return XDP_PASS; /* key, sequence, routing, another version or payload: not pyvs's */
		hlen += gre[0] ? 8 : 4;
		kind = DECAP_CNT_GRE;
	}
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return counted(DECAP_CNT_PASS_FRAGMENT, XDP_PASS);
	hlen &= 0xff;
	inner = (void *)iph + hlen;
	if ((void *)(inner + 1) > data_end || inner->version != 4 || bpf_ntohs(iph->tot_len) < hlen + sizeof(*inner))
		return counted(DECAP_CNT_DROP_MALFORMED, XDP_DROP);
	if (data + L2_MAX > data_end)
		return counted(DECAP_CNT_DROP_MALFORMED, XDP_DROP);
	__builtin_memcpy(l2, data, L2_MAX);
	if (bpf_xdp_adjust_head(ctx, (int)hlen))
		return counted(DECAP_CNT_DROP_MALFORMED, XDP_DROP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (data + L2_MAX > data_end)
		return counted(DECAP_CNT_DROP_MALFORMED, XDP_DROP);
	if (l3_off == 14)
		__builtin_memcpy(data, l2, 14);
	else if (l3_off == 18)
		__builtin_memcpy(data, l2, 18);
	else
		__builtin_memcpy(data, l2, 22);
	return counted(kind, XDP_PASS);
}

char LICENSE[] SEC("license") = "GPL";
