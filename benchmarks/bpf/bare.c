/* Reference programs for the benchmarks: the least a DR director must do per packet.
 * bare_macswap parses like pyvs and swaps the MACs; bare_lru adds one LRU-hash lookup (and
 * insert on a miss) of the 5-tuple; bare_lru_percpu does the same in an LRU hash with per-CPU lists
 * (BPF_F_NO_COMMON_LRU, as pyvs's half-open table). With -DPYVS_BENCH_NEW_FLOWS every packet is a new flow.
 * bench_handshake drives another program (tail call through `handshake_target`) with a TCP handshake per
 * two repetitions: a SYN from a new random source, then that source's ACK. The *6 programs are the same for IPv6
 * (the fixed header, TCP/UDP right after it, a 40-byte key). bench_restore drives another program (the same tail
 * call) on a frame whose first RESTORE_BYTES bytes it writes back from `restore_frame` first: a program that rewrites
 * the frame (NAT) sees the same packet every repetition. bare_fib swaps the MACs after a bpf_fib_lookup of the
 * packet's destination (what a NAT reply would cost routed by the kernel's FIB, as Katran and Cilium route). */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

struct flow_key {
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u8 proto, pad[3];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, __u32);
} flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 262144);
	__type(key, struct pyvs_conn6_key);
	__type(value, __u32);
} flows6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 262144);
	__type(key, struct pyvs_conn6_key);
	__type(value, __u32);
} flows6_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, 262144);
	__type(key, struct flow_key);
	__type(value, __u32);
} flows_percpu SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} handshake_target SEC(".maps");

struct handshake {
	__u64 seq;
	__u32 saddr;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct handshake);
} handshake_state SEC(".maps");

static __always_inline void swap_macs(struct ethhdr *eth)
{
	__u8 tmp[ETH_ALEN];

	__builtin_memcpy(tmp, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, tmp, ETH_ALEN);
}

SEC("xdp")
int bare_empty(struct xdp_md *ctx)
{
	return XDP_PASS;
}

SEC("xdp")
int bare_macswap(struct xdp_md *ctx)
{
	struct packet pkt = {};

	if (parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK)
		return XDP_PASS;
	swap_macs(pkt.eth);
	return XDP_TX;
}

static __always_inline int lru_forward(struct xdp_md *ctx, void *flows)
{
	struct packet pkt = {};
	struct flow_key key = {};
	__u32 one = 1, *real;

	if (parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK)
		return XDP_PASS;
#ifdef PYVS_BENCH_NEW_FLOWS
	pkt.saddr ^= bpf_get_prandom_u32();
#endif
	key.saddr = pkt.saddr;
	key.daddr = pkt.daddr;
	key.sport = pkt.sport;
	key.dport = pkt.dport;
	key.proto = pkt.proto;
	real = bpf_map_lookup_elem(flows, &key);
	if (!real)
		bpf_map_update_elem(flows, &key, &one, BPF_ANY);
	swap_macs(pkt.eth);
	return XDP_TX;
}

SEC("xdp")
int bare_lru(struct xdp_md *ctx)
{
	return lru_forward(ctx, &flows);
}

SEC("xdp")
int bare_lru_percpu(struct xdp_md *ctx)
{
	return lru_forward(ctx, &flows_percpu);
}

/* IPv6: the fixed header and the ports right after it. */
static __always_inline int lru_forward6(struct xdp_md *ctx, void *flows)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct pyvs_conn6_key key = {};
	struct packet6 pkt = {.key = &key};
	__u16 *ports;
	__u32 one = 1, *real;

	if (parse_header6(data, data_end, &pkt) != PARSE_OK)
		return XDP_PASS;
	ports = (void *)(pkt.ip6h + 1);
	if ((void *)(ports + 2) > data_end)
		return XDP_PASS;
#ifdef PYVS_BENCH_NEW_FLOWS
	key.saddr.w[3] ^= bpf_get_prandom_u32();
#endif
	key.sport = ports[0];
	key.dport = ports[1];
	key.proto = pkt.ip6h->nexthdr;
	real = bpf_map_lookup_elem(flows, &key);
	if (!real)
		bpf_map_update_elem(flows, &key, &one, BPF_ANY);
	swap_macs(pkt.base.eth);
	return XDP_TX;
}

SEC("xdp")
int bare_lru6(struct xdp_md *ctx)
{
	return lru_forward6(ctx, &flows6);
}

SEC("xdp")
int bare_lru6_percpu(struct xdp_md *ctx)
{
	return lru_forward6(ctx, &flows6_percpu);
}

SEC("xdp")
int bench_handshake6(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct ipv6hdr *ip6h = (void *)(eth + 1);
	__u8 *flags = (void *)(ip6h + 1) + 13;
	__u32 zero = 0;
	struct handshake *hs = bpf_map_lookup_elem(&handshake_state, &zero);

	if (!hs || (void *)(flags + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IPV6) ||
	    ip6h->nexthdr != IPPROTO_TCP)
		return XDP_ABORTED;
	if (!(hs->seq & 1))
		hs->saddr = bpf_get_prandom_u32();
	hs->seq += 1;
	ip6h->saddr.in6_u.u6_addr32[3] = hs->saddr;
	*flags = hs->seq & 1 ? 0x02 /* SYN */ : 0x10 /* ACK */;
	bpf_tail_call(ctx, &handshake_target, 0);
	return XDP_ABORTED;
}

SEC("xdp")
int bench_handshake(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	__u32 zero = 0;
	struct handshake *hs = bpf_map_lookup_elem(&handshake_state, &zero);
	__u8 *flags;

	if (!hs || parse_packet(data, data_end, &pkt) != PARSE_OK || pkt.proto != IPPROTO_TCP)
		return XDP_ABORTED;
	flags = (__u8 *)pkt.iph + pkt.iph->ihl * 4 + 13;
	if ((void *)(flags + 1) > data_end)
		return XDP_ABORTED;
	if (!(hs->seq & 1))
		hs->saddr = bpf_get_prandom_u32();
	hs->seq += 1;
	pkt.iph->saddr = hs->saddr;
	*flags = hs->seq & 1 ? 0x02 /* SYN */ : 0x10 /* ACK */;
	bpf_tail_call(ctx, &handshake_target, 0);
	return XDP_ABORTED;
}

SEC("xdp")
int bare_fib(struct xdp_md *ctx)
{
	struct bpf_fib_lookup fib = {};
	struct packet pkt = {};
	long rc;

	if (parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK)
		return XDP_PASS;
	fib.family = 2; /* AF_INET */
	fib.l4_protocol = pkt.proto;
	fib.sport = pkt.sport;
	fib.dport = pkt.dport;
	fib.tot_len = pkt.tot_len;
	fib.ipv4_src = pkt.saddr;
	fib.ipv4_dst = pkt.daddr;
	fib.ifindex = ctx->ingress_ifindex;
	rc = bpf_fib_lookup(ctx, &fib, sizeof(fib), 0);
	if (rc != BPF_FIB_LKUP_RET_SUCCESS && rc != BPF_FIB_LKUP_RET_NO_NEIGH)
		return XDP_DROP; /* measured only where the lookup found a route */
	swap_macs(pkt.eth);
	return XDP_TX;
}

#define RESTORE_BYTES 64

struct frame_copy {
	__u8 bytes[RESTORE_BYTES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame_copy);
} restore_frame SEC(".maps");

SEC("xdp")
int bench_restore(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	struct frame_copy *copy = bpf_map_lookup_elem(&restore_frame, &zero);

	if (!copy || data + RESTORE_BYTES > data_end)
		return XDP_ABORTED;
	__builtin_memcpy(data, copy->bytes, RESTORE_BYTES);
	bpf_tail_call(ctx, &handshake_target, 0);
	return XDP_ABORTED;
}

char LICENSE[] SEC("license") = "GPL";
