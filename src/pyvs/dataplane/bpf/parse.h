/* Packet parsing: Ethernet (up to two 802.1Q/802.1ad tags), IPv4 (with options), the TCP/UDP ports. */
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
#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif

enum parse_result {
	PARSE_NOT_IPV4,   /* not for us: pass */
	PARSE_OTHER_L4,   /* IPv4 but not TCP/UDP (ICMP is handled by the caller): pkt has the addresses and the header */
	PARSE_TRUNCATED,  /* the IPv4 header or the ports are cut off */
	PARSE_FRAGMENT,   /* a fragment (first or not): pkt has the addresses, the protocol and the IPv4 header */
	PARSE_VLAN_DEPTH, /* more than two VLAN tags: not looked into */
	PARSE_OK,
};

struct vlan_tag {
	__be16 tci;
	__be16 proto; /* the EtherType that follows */
};

/* linux/icmp.h pulls in libc headers that a BPF build cannot use: the 8 bytes every ICMP message starts with. */
struct icmp_hdr {
	__u8 type;
	__u8 code;
	__be16 checksum;
	__be32 rest; /* echo id and sequence, the next-hop MTU of a fragmentation-needed error, ... */
};

#define ICMP_DEST_UNREACH 3
#define ICMP_SOURCE_QUENCH 4
#define ICMP_TIME_EXCEEDED 11
#define ICMP_PARAMETERPROB 12

struct packet {
	struct ethhdr *eth;
	struct iphdr *iph;
	__u32 saddr, daddr;
	__u16 sport, dport;
	__u16 tot_len;  /* the IP packet's length, host order: what IPVS counts as bytes */
	__u8 proto;
	__u8 tcp_flags;
};

static __always_inline int is_vlan(__be16 proto)
{
	return proto == bpf_htons(ETH_P_8021Q) || proto == bpf_htons(ETH_P_8021AD);
}

/* The ports of a TCP/UDP packet whose IPv4 header is sound and whole (not a non-first fragment). */
static __always_inline enum parse_result parse_ports(struct iphdr *iph, void *data_end, struct packet *pkt)
{
	__u32 ihl_len;
	void *l4;

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

static __always_inline enum parse_result parse_packet(void *data, void *data_end, struct packet *pkt)
{
	struct ethhdr *eth = data;
	struct iphdr *iph;
	struct vlan_tag *tag;
	__be16 proto;

	if ((void *)(eth + 1) > data_end)
		return PARSE_NOT_IPV4;
	pkt->eth = eth;
	iph = (void *)(eth + 1);
	proto = eth->h_proto;
	/* Untagged IPv4 takes no branch more than before; a tagged frame keeps its tags (only MACs change). */
	if (proto != bpf_htons(ETH_P_IP)) {
		if (!is_vlan(proto))
			return PARSE_NOT_IPV4;
		tag = (void *)(eth + 1);
		if ((void *)(tag + 1) > data_end)
			return PARSE_NOT_IPV4;
		proto = tag->proto;
		iph = (void *)(tag + 1);
		if (is_vlan(proto)) {
			tag += 1;
			if ((void *)(tag + 1) > data_end)
				return PARSE_NOT_IPV4;
			proto = tag->proto;
			iph = (void *)(tag + 1);
			if (is_vlan(proto))
				return PARSE_VLAN_DEPTH;
		}
		if (proto != bpf_htons(ETH_P_IP))
			return PARSE_NOT_IPV4;
	}
	if ((void *)(iph + 1) > data_end)
		return PARSE_NOT_IPV4; /* too short to tell where it goes */
	pkt->iph = iph;
	pkt->saddr = iph->saddr;
	pkt->daddr = iph->daddr;
	pkt->proto = iph->protocol;
	if (iph->version != 4 || iph->ihl < 5)
		return PARSE_TRUNCATED;
	if (iph->protocol != IPPROTO_TCP && iph->protocol != IPPROTO_UDP)
		return PARSE_OTHER_L4; /* ICMP among them: the caller tells it by pkt->proto, off the TCP/UDP path */
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	return parse_ports(iph, data_end, pkt);
}

#endif
