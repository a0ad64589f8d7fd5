/* SYN flood generator of tests/lab/test_syn_flood.py, run by BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES on the
 * lab's attacker host: every frame is the template (Ethernet to the director's MAC, IPv4 198.19.0.0 -> VIP, TCP SYN
 * from port 0 to 80, 60 bytes, valid checksums), given the next spoofed source of a sequence and sent with XDP_TX.
 *
 * Frame n (n = the `next` counter, never reused while the program is loaded) is the SYN of flow f = n / repeat,
 * from 198.19.(f & 0xffff) port 1024 + (f >> 16) % 64512: 65536 sources per port, so every flow is one the director
 * has not seen; with repeat > 1 each flow's SYN is sent that many times in a row (the repeats find the entry the
 * first one made). The checksums are updated incrementally (RFC 1624) from the template's, which were computed
 * with both fields zero.
 * flood_drop, on the reals, drops what the director forwarded of the flood (TCP from 198.19.0.0/16) and counts it:
 * their kernels would answer every SYN (SYN cookies), work on this 2-core machine that tests nothing here.
 *
 * Self-contained on purpose: it includes none of the data plane's headers. */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#define FRAME_LEN 60 /* + FCS: the 64-byte minimum */
#define OFF_IP_CSUM (14 + 10)
#define OFF_SADDR_LO (14 + 12 + 2) /* the low 16 bits of the source address */
#define OFF_SPORT (14 + 20)
#define OFF_TCP_CSUM (14 + 20 + 16)
#define SPOOFED_NET 0xc6130000 /* 198.19.0.0/16 */

struct frame {
	__u8 data[FRAME_LEN];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct frame);
} template SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} next SEC(".maps"); /* frames generated so far: the index of the next one */

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} repeat SEC(".maps"); /* SYNs per flow, in a row (0 counts as 1) */

static __always_inline __u16 csum_add(__u16 csum, __u32 added)
{
	__u32 sum = (__u16)~bpf_ntohs(csum) + added;

	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return bpf_htons((__u16)~sum);
}

SEC("xdp")
int syn_flood(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0;
	__u64 *counter = bpf_map_lookup_elem(&next, &zero);
	struct frame *tmpl = bpf_map_lookup_elem(&template, &zero);
	__u32 *times = bpf_map_lookup_elem(&repeat, &zero);
	__u16 saddr_lo, sport;
	__u64 flow;

	if (!counter || !tmpl || !times || data + FRAME_LEN > data_end)
		return XDP_DROP;
	__builtin_memcpy(data, tmpl->data, FRAME_LEN); /* live-frame pages come back with what the path wrote */
	flow = __sync_fetch_and_add(counter, 1);
	if (*times > 1)
		flow /= *times;
	saddr_lo = flow & 0xffff;
	sport = 1024 + (flow >> 16) % 64512;
	*(__u16 *)(data + OFF_SADDR_LO) = bpf_htons(saddr_lo);
	*(__u16 *)(data + OFF_SPORT) = bpf_htons(sport);
	*(__u16 *)(data + OFF_IP_CSUM) = csum_add(*(__u16 *)(data + OFF_IP_CSUM), saddr_lo);
	*(__u16 *)(data + OFF_TCP_CSUM) = csum_add(*(__u16 *)(data + OFF_TCP_CSUM), (__u32)saddr_lo + sport);
	return XDP_TX;
}

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} dropped SEC(".maps");

SEC("xdp")
int flood_drop(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct iphdr *iph = data + sizeof(*eth);
	__u32 zero = 0;
	__u64 *count;

	if ((void *)(iph + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP) || iph->protocol != IPPROTO_TCP ||
	    (bpf_ntohl(iph->saddr) & 0xffff0000) != SPOOFED_NET)
		return XDP_PASS;
	count = bpf_map_lookup_elem(&dropped, &zero);
	if (count)
		*count += 1;
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
