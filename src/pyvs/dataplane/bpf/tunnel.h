/* Tunnel forwarding (ipvsadm -i): the frame for a tunnel real is encapsulated as ip_vs_tunnel_xmit builds it,
 * IPIP, GUE (outer UDP to the real's tun-port, a 4-byte GUE header) or GRE (4 bytes, 8 with the checksum), and
 * sent to the next hop toward the real (its MAC on the segment, or the gateway's when it is routed: the control
 * plane resolved it into the real's entry). A packet that no longer fits the path's MTU once encapsulated: with DF
 * an ICMP fragmentation-needed goes back to the client with the MTU it must use (as IPVS's __ip_vs_get_out_rt),
 * without DF it is dropped (XDP cannot fragment). Included by pyvs_xdp.c after transmit(). */
#ifndef PYVS_TUNNEL_H
#define PYVS_TUNNEL_H

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "pyvs_abi.h"
#include "parse.h"

#define IP_DF 0x4000
#define IPPROTO_IPIP_ 4
#define IPPROTO_GRE_ 47
#define ICMP_FRAG_NEEDED 4
#define TUN_L2_MAX 22 /* Ethernet header and up to two VLAN tags */
#define TUN_CHUNK 512 /* bpf_csum_diff sums at most 512 bytes a call */
#define EPHEMERAL_LOW 32768 /* GUE source ports: Linux's default ip_local_port_range, as udp_flow_src_port uses */
#define EPHEMERAL_HIGH 61000

/* Real slot -> how its frames are encapsulated (PYVS_REAL_FWD_TUNNEL). */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_tunnel);
} tunnels SEC(".maps");

/* Per-CPU room: the inner packet copied a chunk at a time for the GUE and GRE checksums, and the frame's Ethernet
 * header and tags while its head moves (tunnel_xmit's stack has little room: it may run under icmp_to_vip). */
struct tun_scratch_buf {
	__u8 buf[TUN_CHUNK + 4];
	__u8 l2[TUN_L2_MAX + 2];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct tun_scratch_buf);
} tun_scratch SEC(".maps");

static __always_inline __u16 csum_fold(__u64 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return ~sum & 0xffff;
}

/* The one's complement sum (unfolded) of the 10 words of an option-less IPv4 header. */
static __always_inline __u64 ip_header_sum(const __u16 *words)
{
	__u64 sum = 0;

	for (int i = 0; i < 10; i++)
		sum += words[i];
	return sum;
}

/* The sum of `len` bytes of the frame from `off` (not folded), read in chunks through the scratch buffer;
 * (__u64)-1 when they cannot be read. */
static __noinline __u64 frame_sum(struct xdp_md *ctx, __u32 off, __u32 len)
{
	struct tun_scratch_buf *s;
	__u32 zero = 0, n;
	__s64 sum = 0;

	s = bpf_map_lookup_elem(&tun_scratch, &zero);
	if (!s || len > TUN_CHUNK * PYVS_TUN_CSUM_CHUNKS)
		return (__u64)-1;
	for (int i = 0; i < PYVS_TUN_CSUM_CHUNKS; i++) {
		if (len == 0)
			break;
		n = len > TUN_CHUNK ? TUN_CHUNK : len;
		n &= 0x3ff;
		if (n == 0 || n > TUN_CHUNK)
			return (__u64)-1;
		*(__u32 *)&s->buf[n & 0x1fc] = 0; /* the last word's padding: zeros add nothing */
		if (bpf_xdp_load_bytes(ctx, off, s->buf, n))
			return (__u64)-1;
		sum = bpf_csum_diff(NULL, 0, (__be32 *)s->buf, (n + 3) & 0x3fc, sum);
		if (sum < 0)
			return (__u64)-1;
		off += n;
		len -= n;
	}
	return (__u32)sum;
}

/* Where the IPv4 header starts: after the Ethernet header and up to two VLAN tags; 0 when it is not IPv4. */
static __always_inline __u32 l3_offset(void *data, void *data_end)
{
	struct ethhdr *eth = data;
	struct vlan_tag *tag;
	__u32 off = sizeof(*eth);
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return 0;
	proto = eth->h_proto;
	for (int i = 0; i < 2; i++) {
		if (!is_vlan(proto))
			break;
		tag = data + off;
		if ((void *)(tag + 1) > data_end)
			return 0;
		proto = tag->proto;
		off += sizeof(*tag);
	}
	return proto == bpf_htons(ETH_P_IP) ? off : 0;
}

/* The Ethernet header and tags of a frame, kept while its head moves. */
struct l2_copy {
	__u8 bytes[TUN_L2_MAX];
	__u8 pad[2];
};

static __always_inline int save_l2(void *data, void *data_end, __u32 l3_off, struct l2_copy *l2)
{
	if (data + TUN_L2_MAX > data_end)
		return -1;
	__builtin_memcpy(l2->bytes, data, TUN_L2_MAX);
	return 0;
}

/* Write the saved Ethernet header and tags at the frame's (new) start. */
static __always_inline int restore_l2(void *data, void *data_end, __u32 l3_off, const struct l2_copy *l2)
{
	if (data + TUN_L2_MAX > data_end)
		return -1;
	if (l3_off == 14)
		__builtin_memcpy(data, l2->bytes, 14);
	else if (l3_off == 18)
		__builtin_memcpy(data, l2->bytes, 18);
	else
		__builtin_memcpy(data, l2->bytes, 22);
	return 0;
}

/* ICMP fragmentation needed back to the client, from the VIP, quoting the packet's IP header and 8 bytes, with
 * the MTU its packets must fit (icmp_send's: type 3 code 4, the MTU in the header's last two bytes, TOS 0xc0 with
 * the packet's TOS bits, TTL 64). The frame goes back out where it came in, MACs swapped. */
static __noinline int frag_needed(struct xdp_md *ctx, __u32 mtu)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct l2_copy l2 = {};
	struct iphdr *iph, *quoted;
	struct icmp_hdr *icmp;
	__u32 quote, len, vip, client, l3_off;
	__u8 tos, mac[ETH_ALEN];
	__u64 sum;

	l3_off = l3_offset(data, data_end);
	if (l3_off != 14 && l3_off != 18 && l3_off != 22)
		return XDP_DROP;
	iph = data + l3_off;
	if ((void *)(iph + 1) > data_end || save_l2(data, data_end, l3_off, &l2))
		return XDP_DROP;
	quote = iph->ihl * 4 + 8;
	len = data_end - data;
	if (quote < 28 || l3_off + quote > len)
		return XDP_DROP;
	vip = iph->daddr;
	client = iph->saddr;
	tos = (iph->tos & 0x1e) | 0xc0;
	if (len > l3_off + quote && bpf_xdp_adjust_tail(ctx, -(int)(len - l3_off - quote)))
		return XDP_DROP;
	if (bpf_xdp_adjust_head(ctx, -(int)(sizeof(struct iphdr) + sizeof(struct icmp_hdr))))
		return XDP_DROP;
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (restore_l2(data, data_end, l3_off, &l2))
		return XDP_DROP;
	__builtin_memcpy(mac, ((struct ethhdr *)data)->h_dest, ETH_ALEN); /* back where it came from */
	__builtin_memcpy(((struct ethhdr *)data)->h_dest, ((struct ethhdr *)data)->h_source, ETH_ALEN);
	__builtin_memcpy(((struct ethhdr *)data)->h_source, mac, ETH_ALEN);
	iph = data + l3_off;
	icmp = (void *)(iph + 1);
	quoted = (void *)(icmp + 1);
	quote &= 0x7c;
	if ((void *)(quoted + 1) > data_end || (void *)quoted + quote > data_end)
		return XDP_DROP;
	iph->version = 4;
	iph->ihl = 5;
	iph->tos = tos;
	iph->tot_len = bpf_htons(sizeof(*iph) + sizeof(*icmp) + quote);
	iph->id = 0;
	iph->frag_off = 0;
	iph->ttl = 64;
	iph->protocol = IPPROTO_ICMP;
	iph->check = 0;
	iph->saddr = vip;
	iph->daddr = client;
	iph->check = csum_fold(ip_header_sum((__u16 *)iph));
	icmp->type = ICMP_DEST_UNREACH;
	icmp->code = ICMP_FRAG_NEEDED;
	icmp->checksum = 0;
	icmp->rest = bpf_htonl(mtu & 0xffff);
	sum = 0;
	for (int i = 0; i < 19; i++) { /* the ICMP header (8 bytes) and the quote (at most 68) as words */
		__u32 *word = (void *)icmp + i * 4;

		if (i * 4 >= sizeof(*icmp) + quote)
			break;
		if ((void *)(word + 1) > data_end)
			return XDP_DROP;
		sum += (*word & 0xffff) + (*word >> 16);
	}
	icmp->checksum = csum_fold(sum);
	return XDP_TX;
}

/* The outer headers a tunnel type adds after the outer IPv4 header. */
static __always_inline __u32 encap_extra(const struct pyvs_tunnel *tun)
{
	if (tun->type == PYVS_TUN_GUE)
		return sizeof(struct udphdr) + 4;
	if (tun->type == PYVS_TUN_GRE)
		return tun->flags & PYVS_TUN_F_CSUM ? 8 : 4;
	return 0;
}

/* Encapsulate the frame for tunnel real `real_id` and send it to the real's next hop: an XDP verdict, or, for a
 * packet with DF too big for the tunnel, minus the MTU it must fit (the caller answers with frag_needed: not called
 * from here, so that no call chain holds both under icmp_to_vip). A function with a stack of its own (the
 * connection path and the scheduler's use most of a call chain's 512 bytes). */
static __noinline int tunnel_xmit(struct xdp_md *ctx, __u32 real_id)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct pyvs_tunnel *tun = bpf_map_lookup_elem(&tunnels, &real_id);
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &real_id);
	struct tun_scratch_buf *scratch;
	struct iphdr *inner, *outer;
	__u32 l3_off, extra, hlen, tot_len, hash;
	__u16 inner_id, df, sport = 0;
	__u8 tos, ttl;
	__u64 sum;

	__u32 zero = 0;

	scratch = bpf_map_lookup_elem(&tun_scratch, &zero);
	if (!tun || !real || !tun->daddr || !tun->mtu || !scratch)
		return drop(PYVS_CNT_DROP_ENCAP);
	l3_off = l3_offset(data, data_end);
	if (l3_off != 14 && l3_off != 18 && l3_off != 22)
		return drop(PYVS_CNT_DROP_ENCAP);
	inner = data + l3_off;
	if ((void *)(inner + 1) > data_end)
		return drop(PYVS_CNT_DROP_ENCAP);
	extra = encap_extra(tun);
	hlen = sizeof(struct iphdr) + extra;
	tot_len = bpf_ntohs(inner->tot_len);
	df = inner->frag_off & bpf_htons(IP_DF);
	if (tot_len + hlen > tun->mtu) {
		if (df) {
			count(PYVS_CNT_DROP_FRAG_NEEDED);
			return -(int)((tun->mtu - hlen) & 0xffff);
		}
		return drop(PYVS_CNT_DROP_TOO_BIG);
	}
	tos = inner->tos;
	ttl = inner->ttl;
	inner_id = inner->id;
	hash = inner->saddr ^ inner->daddr ^ inner->protocol;
	if ((inner->protocol == IPPROTO_TCP || inner->protocol == IPPROTO_UDP) &&
	    !(inner->frag_off & bpf_htons(IP_OFFSET))) {
		__u32 *ports = (void *)inner + (inner->ihl & 0xf) * 4;

		if ((void *)(ports + 1) <= data_end)
			hash ^= *ports;
	}
	if (save_l2(data, data_end, l3_off, (struct l2_copy *)scratch->l2))
		return drop(PYVS_CNT_DROP_ENCAP);
	if (bpf_xdp_adjust_head(ctx, -(int)hlen))
		return drop(PYVS_CNT_DROP_ENCAP);
	data = (void *)(long)ctx->data;
	data_end = (void *)(long)ctx->data_end;
	if (restore_l2(data, data_end, l3_off, (struct l2_copy *)scratch->l2))
		return drop(PYVS_CNT_DROP_ENCAP);
	__builtin_memcpy(((struct ethhdr *)data)->h_dest, real->dmac, ETH_ALEN);
	__builtin_memcpy(((struct ethhdr *)data)->h_source, real->smac, ETH_ALEN);
	outer = data + l3_off;
	if ((void *)outer + sizeof(*outer) + 12 > data_end)
		return drop(PYVS_CNT_DROP_ENCAP);
	outer->version = 4;
	outer->ihl = 5;
	outer->tos = tos;
	outer->tot_len = bpf_htons(tot_len + hlen);
	outer->id = inner_id;
	outer->frag_off = df;
	outer->ttl = ttl;
	outer->check = 0;
	outer->saddr = tun->saddr;
	outer->daddr = tun->daddr;
	if (tun->type == PYVS_TUN_GUE) {
		struct udphdr *udp = (void *)(outer + 1);
		__u8 *gue = (void *)(udp + 1);

		outer->protocol = IPPROTO_UDP;
		hash ^= hash >> 16;
		hash *= 0x45d9f3b;
		hash ^= hash >> 16;
		sport = (((__u64)hash * (EPHEMERAL_HIGH - EPHEMERAL_LOW)) >> 32) + EPHEMERAL_LOW;
		udp->source = bpf_htons(sport);
		udp->dest = tun->port;
		udp->len = bpf_htons(tot_len + extra);
		udp->check = 0;
		gue[0] = 0; /* version 0, control 0, no options (hlen 0) */
		gue[1] = IPPROTO_IPIP_;
		gue[2] = 0;
		gue[3] = 0;
		if (tun->flags & (PYVS_TUN_F_CSUM | PYVS_TUN_F_REMCSUM)) {
			/* ipvs: udp_set_csum over the pseudo header, UDP, GUE and the inner packet. A frame from a wire
			 * carries full checksums (none left partial), so remcsum adds no option: a plain checksum. */
			sum = frame_sum(ctx, l3_off + sizeof(*outer), tot_len + extra);
			if (sum == (__u64)-1)
				return drop(PYVS_CNT_DROP_ENCAP);
			data = (void *)(long)ctx->data;
			data_end = (void *)(long)ctx->data_end;
			outer = data + l3_off;
			udp = (void *)(outer + 1);
			if ((void *)(udp + 1) > data_end)
				return drop(PYVS_CNT_DROP_ENCAP);
			sum += (tun->saddr & 0xffff) + (tun->saddr >> 16) + (tun->daddr & 0xffff) + (tun->daddr >> 16);
			sum += bpf_htons(IPPROTO_UDP) + bpf_htons(tot_len + extra);
			udp->check = csum_fold(sum);
			if (!udp->check)
				udp->check = 0xffff; /* 0 means no checksum */
		}
	} else if (tun->type == PYVS_TUN_GRE) {
		__u16 *gre = (void *)(outer + 1);

		outer->protocol = IPPROTO_GRE_;
		gre[0] = tun->flags & PYVS_TUN_F_CSUM ? bpf_htons(0x8000) : 0;
		gre[1] = bpf_htons(ETH_P_IP);
		if (tun->flags & PYVS_TUN_F_CSUM) {
			gre[2] = 0;
			gre[3] = 0;
			sum = frame_sum(ctx, l3_off + sizeof(*outer), tot_len + extra);
			if (sum == (__u64)-1)
				return drop(PYVS_CNT_DROP_ENCAP);
			data = (void *)(long)ctx->data;
			data_end = (void *)(long)ctx->data_end;
			outer = data + l3_off;
			gre = (void *)(outer + 1);
			if ((void *)(gre + 4) > data_end)
				return drop(PYVS_CNT_DROP_ENCAP);
			gre[2] = csum_fold(sum);
		}
	} else {
		outer->protocol = IPPROTO_IPIP_;
	}
	outer->check = csum_fold(ip_header_sum((__u16 *)outer));
	count(PYVS_CNT_TUN_ENCAP);
	return transmit(ctx, data, real);
}

#endif
