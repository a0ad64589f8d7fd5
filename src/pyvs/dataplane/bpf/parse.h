/* Packet parsing: Ethernet (up to two 802.1Q/802.1ad tags), IPv4 (with options), IPv6 (with extension headers),
 * the TCP/UDP ports. */
#ifndef PYVS_PARSE_H
#define PYVS_PARSE_H

#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <bpf/bpf_endian.h>
#include "pyvs_abi.h"
#include "sctp.h"

#define IP_MF 0x2000
#define IP_OFFSET 0x1FFF
#ifndef ETH_P_8021Q
#define ETH_P_8021Q 0x8100
#endif
#ifndef ETH_P_8021AD
#define ETH_P_8021AD 0x88A8
#endif
#define IP6_MF 0x0001     /* the fragment header's M flag */
#define IP6_OFFSET 0xFFF8 /* its fragment offset, in bytes */
#define IP6_HEADERS_MAX 0x3FFF /* headers are read this far from an IPv6 header at most (a bound for the verifier) */

/* An offset already checked to be <= IP6_HEADERS_MAX, masked so that the verifier knows it too (the compiler tests
 * the bound on a copy, and would drop a plain mask). */
static __always_inline __u32 ip6_bounded(__u32 off)
{
	asm volatile("" : "+r"(off));
	return off & IP6_HEADERS_MAX;
}

enum parse_result {
	PARSE_NOT_IPV4,   /* not for us: pass */
	PARSE_OTHER_L4,   /* IPv4 but not TCP/UDP (ICMP is handled by the caller): pkt has the addresses and the header */
	PARSE_TRUNCATED,  /* the IPv4 header or the ports are cut off */
	PARSE_FRAGMENT,   /* a fragment (first or not): pkt has the addresses, the protocol and the IPv4 header */
	PARSE_VLAN_DEPTH, /* more than two VLAN tags: not looked into */
	PARSE_OK,
	PARSE_IPV6,       /* an IPv6 frame: pkt->eth, and pkt->iph where its IPv6 header starts (parse_header6) */
	PARSE_EXT_DEPTH,  /* IPv6 with more than PYVS_MAX_EXT_HEADERS extension headers: not looked into */
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
#define ICMPV6_DEST_UNREACH 1
#define ICMPV6_PARAMPROB 4      /* errors are types 1 (unreachable) to 4 (parameter problem), 2: packet too big */
#define NDISC_ROUTER_SOLICITATION 133
#define NDISC_REDIRECT 137      /* neighbour discovery: 133 to 137 */

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

/* The protocols pyvs balances: TCP, UDP, SCTP. */
static __always_inline int balanced(__u8 proto)
{
	return proto == IPPROTO_TCP || proto == IPPROTO_UDP || proto == IPPROTO_SCTP;
}

/* The L4 header a packet must hold: TCP's, UDP's, SCTP's common header and first chunk header. */
static __always_inline __u32 l4_min_len(__u8 proto)
{
	return proto == IPPROTO_TCP ? sizeof(struct tcphdr) : proto == IPPROTO_SCTP ? sizeof(struct sctp_head)
										     : sizeof(struct udphdr);
}

/* An SCTP packet: its ports, and its event (sctp.h) in tcp_flags. */
static __always_inline enum parse_result parse_sctp(void *l4, void *data_end, struct packet *pkt)
{
	struct sctp_head *sh = l4;

	if ((void *)(sh + 1) > data_end)
		return PARSE_TRUNCATED;
	pkt->sport = sh->source;
	pkt->dport = sh->dest;
	pkt->tcp_flags = sctp_packet_event(sh, data_end);
	return PARSE_OK;
}

/* The ports of a TCP/UDP/SCTP packet whose IPv4 header is sound and whole (not a non-first fragment). */
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
	if (pkt->tot_len < ihl_len + l4_min_len(iph->protocol))
		return PARSE_TRUNCATED;
	if (iph->protocol == IPPROTO_SCTP)
		return parse_sctp(l4, data_end, pkt);
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
		if (is_vlan(proto)) {
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
		}
		if (proto == bpf_htons(ETH_P_IPV6)) {
			pkt->iph = iph; /* not an IPv4 header: where the IPv6 one starts */
			return PARSE_IPV6;
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
	if (!balanced(iph->protocol))
		return PARSE_OTHER_L4; /* ICMP among them: the caller tells it by pkt->proto, off the TCP/UDP path */
	if (iph->frag_off & bpf_htons(IP_MF | IP_OFFSET))
		return PARSE_FRAGMENT;
	return parse_ports(iph, data_end, pkt);
}

/* ---- IPv6 ---- */

/* An IPv6 TCP/UDP packet: `base` as parse_packet fills it, but with saddr and daddr the addresses' words xor-ed
 * (IPVS's addr_fold: what the schedulers hash, and the VIP pre-filter's input); `key` (room given by the caller) its
 * key in the IPv6 tables: the addresses themselves, the ports, the protocol. */
struct packet6 {
	struct packet base;
	struct ipv6hdr *ip6h;
	struct pyvs_conn6_key *key;
	__u32 l3_off;    /* the IPv6 header, from the frame's start */
	__u32 frag_id;   /* a fragment: its fragment header's identification (network order) */
	__u16 l4_off;    /* the upper-layer header, from the IPv6 header (a non-first fragment: its data) */
	__u16 frag_off;  /* a fragment: its offset in bytes (0: the first fragment) */
	__u8 frag;       /* the packet is a fragment (a fragment header that is not an atomic one) */
	__u8 frag_proto; /* a fragment: its fragment header's next header */
};

/* Where an extension header walk is: the offset of the next header from the IPv6 header and its type. */
struct ext_walk {
	__u32 off;
	__u32 limit;     /* bytes of the packet from the IPv6 header: every header must end within them */
	__u8 next;
	__u8 frag;
	__u8 frag_proto;
	__u8 pad;
	__u16 frag_off;
	__u16 pad2;
	__u32 frag_id;
};

static __always_inline __u32 fold6(const struct pyvs_addr6 *a)
{
	return a->w[0] ^ a->w[1] ^ a->w[2] ^ a->w[3];
}

static __always_inline int is_ext_header(__u8 next)
{
	return next == IPPROTO_HOPOPTS || next == IPPROTO_ROUTING || next == IPPROTO_DSTOPTS || next == IPPROTO_FRAGMENT;
}

/* Walk the extension headers (hop-by-hop, routing, destination options, fragment) from `w->off` of the header at
 * `l3` to the upper-layer one: PARSE_OK with w->next its protocol and w->off where it starts; PARSE_FRAGMENT at a
 * non-first fragment's fragment header (nothing after it can be read); PARSE_TRUNCATED when a header is cut off,
 * ends beyond w->limit, or is a hop-by-hop header that is not the first; PARSE_EXT_DEPTH after
 * PYVS_MAX_EXT_HEADERS of them. A fragment header is noted in w; an atomic one (offset 0, no M flag) is skipped. */
static __always_inline enum parse_result walk_ext6(void *l3, void *data_end, struct ext_walk *w)
{
	__u32 off = w->off, len;
	__u8 next = w->next, *hdr;
	__u16 frag_off;

	for (int i = 0; i < PYVS_MAX_EXT_HEADERS; i++) {
		if (!is_ext_header(next))
			break;
		if (off > IP6_HEADERS_MAX)
			return PARSE_TRUNCATED;
		hdr = l3 + ip6_bounded(off);
		if ((void *)(hdr + 8) > data_end || off + 8 > w->limit)
			return PARSE_TRUNCATED;
		if (next == IPPROTO_FRAGMENT) {
			frag_off = bpf_ntohs(*(__be16 *)(hdr + 2));
			next = hdr[0];
			off += 8;
			if (!(frag_off & (IP6_OFFSET | IP6_MF)))
				continue; /* an atomic fragment: a whole packet */
			w->frag = 1;
			w->frag_proto = next;
			w->frag_off = frag_off & IP6_OFFSET;
			w->frag_id = *(__u32 *)(hdr + 4);
			if (w->frag_off) {
				w->next = next;
				w->off = off;
				return PARSE_FRAGMENT;
			}
			continue;
		}
		if (next == IPPROTO_HOPOPTS && off != w->off)
			return PARSE_TRUNCATED; /* hop-by-hop options come first or not at all */
		len = ((__u32)hdr[1] + 1) * 8;
		if (off + len > w->limit)
			return PARSE_TRUNCATED;
		next = hdr[0];
		off += len;
	}
	if (is_ext_header(next))
		return PARSE_EXT_DEPTH;
	w->next = next;
	w->off = off;
	return PARSE_OK;
}

/* The fixed header of an IPv6 frame (parse_packet said PARSE_IPV6): addresses and length. PARSE_NOT_IPV4 when it
 * is cut off (nothing tells where it goes), PARSE_TRUNCATED when it is inconsistent. */
static __always_inline enum parse_result parse_header6(void *data, void *data_end, struct packet6 *p)
{
	struct ipv6hdr *ip6h;
	__u32 tot_len;

	if (parse_packet(data, data_end, &p->base) != PARSE_IPV6)
		return PARSE_NOT_IPV4;
	ip6h = (void *)p->base.iph;
	if ((void *)(ip6h + 1) > data_end)
		return PARSE_NOT_IPV4;
	p->ip6h = ip6h;
	p->l3_off = (void *)ip6h - data;
	*p->key = (struct pyvs_conn6_key){};
	__builtin_memcpy(&p->key->saddr, &ip6h->saddr, sizeof(p->key->saddr));
	__builtin_memcpy(&p->key->daddr, &ip6h->daddr, sizeof(p->key->daddr));
	p->base.saddr = fold6(&p->key->saddr);
	p->base.daddr = fold6(&p->key->daddr);
	tot_len = sizeof(*ip6h) + bpf_ntohs(ip6h->payload_len);
	/* Bytes as IPVS counts them (skb->len); a GRO packet beyond 65535 bytes is counted as 65535. */
	p->base.tot_len = tot_len > 0xFFFF ? 0xFFFF : tot_len;
	if (ip6h->version != 6 || (void *)ip6h + tot_len > data_end)
		return PARSE_TRUNCATED;
	return PARSE_OK;
}

#endif
