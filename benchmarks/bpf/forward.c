/* Programs of the forwarding-rate benchmark (benchmarks/forwarding.py):
 *   bench_generate  the traffic generator, run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES: it writes the
 *                   template frame into each buffer (the pages are recycled with whatever the path downstream
 *                   wrote into them: rewritten MACs, decremented TTLs), gives it the next of 256 source ports
 *                   and sends it with XDP_TX;
 *   bench_forward   the bare DR forwarder on the director: a frame for the VIP gets the director's MAC as source
 *                   and one of two reals' MACs (by source port) as destination, XDP_TX; nothing else;
 *   bench_forward_lru  the bare forwarder that also keeps a connection table: the flow's 5-tuple is looked up in an
 *                   LRU hash (common LRU lists, as pyvs's connection table) and inserted with its real on a miss;
 *                   the real's MAC comes from the entry;
 *   bench_count     count-and-drop on a real: frames from the generator's address that were forwarded to a real
 *                   (destination MAC rewritten) are counted and dropped; everything else (ARP, health checks,
 *                   frames the switch floods) goes to the kernel. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "parse.h"

#define FLOWS 256
#define FRAME_LEN 60 /* + FCS: the 64-byte minimum */

struct frame {
	__u8 data[FRAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame);
} template SEC(".maps");

struct forward_config {
	__u32 vip;        /* network order */
	__u32 generator;  /* network order: the source address bench_count counts */
	__u8 director_mac[ETH_ALEN];
	__u8 real_macs[2][ETH_ALEN];
	__u8 pad[2];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct forward_config);
} forward_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} packets SEC(".maps");

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

static __always_inline int mac_equal(const __u8 *a, const __u8 *b)
{
	return *(__u32 *)a == *(__u32 *)b && *(__u16 *)(a + 4) == *(__u16 *)(b + 4);
}

SEC("xdp")
int bench_generate(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct packet pkt = {};
	__u32 zero = 0;
	__u64 *sent = bpf_map_lookup_elem(&packets, &zero);
	struct frame *tmpl = bpf_map_lookup_elem(&template, &zero);
	__u16 *sport;

	if (!sent || !tmpl || data + FRAME_LEN > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, tmpl->data, FRAME_LEN);
	if (parse_packet(data, data_end, &pkt) != PARSE_OK)
		return XDP_DROP;
	sport = (void *)pkt.iph + pkt.iph->ihl * 4;
	if ((void *)(sport + 1) > data_end)
		return XDP_DROP;
	*sport = bpf_htons(1024 + (*sent & (FLOWS - 1)));
	*sent += 1;
	return XDP_TX;
}

SEC("xdp")
int bench_forward(struct xdp_md *ctx)
{
	struct packet pkt = {};
	__u32 zero = 0;
	struct forward_config *cfg = bpf_map_lookup_elem(&forward_config, &zero);

	if (!cfg || parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK ||
	    pkt.daddr != cfg->vip)
		return XDP_PASS;
	__builtin_memcpy(pkt.eth->h_dest, cfg->real_macs[bpf_ntohs(pkt.sport) & 1], ETH_ALEN);
	__builtin_memcpy(pkt.eth->h_source, cfg->director_mac, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int bench_forward_lru(struct xdp_md *ctx)
{
	struct packet pkt = {};
	struct flow_key key = {};
	__u32 zero = 0, real, *entry;
	struct forward_config *cfg = bpf_map_lookup_elem(&forward_config, &zero);

	if (!cfg || parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK ||
	    pkt.daddr != cfg->vip)
		return XDP_PASS;
	key.saddr = pkt.saddr;
	key.daddr = pkt.daddr;
	key.sport = pkt.sport;
	key.dport = pkt.dport;
	key.proto = pkt.proto;
	entry = bpf_map_lookup_elem(&flows, &key);
	if (entry) {
		real = *entry & 1;
	} else {
		real = bpf_ntohs(pkt.sport) & 1;
		bpf_map_update_elem(&flows, &key, &real, BPF_ANY);
	}
	__builtin_memcpy(pkt.eth->h_dest, cfg->real_macs[real], ETH_ALEN);
	__builtin_memcpy(pkt.eth->h_source, cfg->director_mac, ETH_ALEN);
	return XDP_TX;
}

SEC("xdp")
int bench_count(struct xdp_md *ctx)
{
	struct packet pkt = {};
	__u32 zero = 0;
	struct forward_config *cfg = bpf_map_lookup_elem(&forward_config, &zero);
	__u64 *counted = bpf_map_lookup_elem(&packets, &zero);

	if (!cfg || !counted || parse_packet((void *)(long)ctx->data, (void *)(long)ctx->data_end, &pkt) != PARSE_OK ||
	    pkt.saddr != cfg->generator ||
	    !(mac_equal(pkt.eth->h_dest, cfg->real_macs[0]) || mac_equal(pkt.eth->h_dest, cfg->real_macs[1])))
		return XDP_PASS;
	*counted += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
