/* Reference programs for the benchmarks: the least a DR director must do per packet.
 * bare_macswap parses like pyvs and swaps the MACs; bare_lru adds one LRU-hash lookup (and
 * insert on a miss) of the 5-tuple. With -DPYVS_BENCH_NEW_FLOWS every packet is a new flow. */
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

SEC("xdp")
int bare_lru(struct xdp_md *ctx)
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
	real = bpf_map_lookup_elem(&flows, &key);
	if (!real)
		bpf_map_update_elem(&flows, &key, &one, BPF_ANY);
	swap_macs(pkt.eth);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
