/* Packet parsing: Ethernet, IPv4 (with options), the TCP/UDP ports. */
#ifndef PYVS_PARSE_H
#define PYVS_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF

enum parse_result {
	PARSE_NOT_IPV4,   /* not for us: pass */
	PARSE_OTHER_L4,   /* IPv4 but not TCP/UDP: pass */
	PARSE_TRUNCATED,  /* the IPv4 header or the ports are cut off */
	PARSE_FRAGMENT,
	PARSE_OK,
};

struct packet {
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u16 tot_len;  /* the IP packet's length, host order: what IPVS counts as bytes */
	__u8 proto;
	__u8 tcp_flags;
};

static __always_inline enum parse_result parse_packet(void *data, void *data_end, struct packet *pkt)
{
	struct ethhdr *eth = data;
	struct iphdr *iph;
	__u32 ihl_len;
	void *l4;

	if ((void *)(eth + 1) > data_end || eth->h_proto != bpf_htons(ETH_P_IP))
		return PARSE_NOT_IPV4;
	pkt->eth = eth;
	iph = (void *)(eth + 1);
	if ((void *)(iph + 1) > data_end)
		return PARSE_NOT_IPV4; /* too short to tell where it goes */
	pkt->iph = iph;
	pkt->saddr = iph->saddr;
	pkt->daddr = iph->daddr;
	pkt->proto = iph->protocol;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_TRUNCATED;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return PARSE_OTHER_L4;
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	pkt->tot_len = bpf_ntohs(iph->tot_len);
	if ((void *)iph + pkt->tot_len > data_end)
		return PARSE_TRUNCATED;
	ihl_len = iph->ihl * 4;
	l4 = (void *)iph + ihl_len;
	/* The total length must hold the headers it claims (a shorter one is malformed, not short data). */
	if (pkt->tot_len < ihl_len + (iph->protocol == IPPROTO_TCP ? sizeof(struct tcphdr) : sizeof(struct udphdr)))
		return PARSE_TRUNCATED;
	if (iph->protocol == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		if ((void *)(th + 1) > data_end)
			return PARSE_TRUNCATED;
		pkt->sport = th->source;
		pkt->dport = th->dest;
		pkt->tcp_flags = ((__u8 *)th)[13];
	} else {
		struct udphdr *uh = l4;

		if ((void *)(uh + 1) > data_end)
			return PARSE_TRUNCATED;
		pkt->sport = uh->source;
		pkt->dport = uh->dest;
		pkt->tcp_flags = 0;
	}
	return PARSE_OK;
}

#endif
