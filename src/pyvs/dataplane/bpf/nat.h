/* NAT (ipvsadm -m, masquerading), IPv4: the client's packets to a NAT real get the real's address and port as
 * their destination; the real's replies come back through the director (its default route), are found in
 * nat_replies by (real, client) and get VIP:vport as their source again, then go back the way the client's
 * packets came (the MACs and interface learnt from the connection's first packet). Checksums are updated
 * incrementally (RFC 1624). Included by pyvs_xdp.c after the connection helpers it uses. */
#ifndef PYVS_NAT_H
#define PYVS_NAT_H

/* (real, client, real port, client port, protocol) -> the connection and the way back to its client. Written when
 * a NAT connection is created, removed by the sweeper with it; the LRU ages what a lost race left. As the
 * connections, they have two tables: a half-open TCP connection's entry is in nat_half (per-CPU LRU lists, a quarter
 * of the size), moved to nat_replies when the connection is; a SYN flood churns nat_half alone and evicts no
 * established connection's way back. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, PYVS_NAT_TABLE_SIZE);
	__type(key, struct pyvs_conn_key);
	__type(value, struct pyvs_nat_reply);
} nat_replies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(map_flags, BPF_F_NO_COMMON_LRU);
	__uint(max_entries, PYVS_NAT_TABLE_SIZE / PYVS_HALF_OPEN_DIVISOR);
	__type(key, struct pyvs_conn_key);
	__type(value, struct pyvs_nat_reply);
} nat_half SEC(".maps");

/* The replies of NAT connections, as IPVS's OutPkts/OutBytes: index as stats (service slot, then
 * PYVS_MAX_SERVICES + real slot). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PYVS_MAX_SERVICES + PYVS_MAX_REALS);
	__type(key, __u32);
	__type(value, struct pyvs_out_counters);
} out_stats SEC(".maps");

static __always_inline void account_out(__u32 index, __u64 bytes)
{
	struct pyvs_out_counters *c = bpf_map_lookup_elem(&out_stats, &index);

	if (c) {
		c->packets += 1;
		c->bytes += bytes;
	}
}

/* The reply entry's key of a NAT connection `key` (client -> VIP:vport) given to `real`. */
static __always_inline void nat_reply_key(struct pyvs_conn_key *rkey, const struct pyvs_conn_key *key,
					  const struct pyvs_real *real)
{
	rkey->saddr = real->rip;
	rkey->daddr = key->saddr;
	rkey->sport = real->port ? real->port : key->dport;
	rkey->dport = key->sport;
	rkey->proto = key->proto;
}

/* One's complement arithmetic on 16-bit words as they lie in memory (the sum does not depend on byte order). */
static __always_inline __u16 csum_fold32(__u32 sum)
{
	sum = (sum & 0xffff) + (sum >> 16);
	sum = (sum & 0xffff) + (sum >> 16);
	return (__u16)sum;
}

/* A checksum after a 32-bit word of what it covers changed from `from` to `to`. */
static __always_inline __u16 csum_replace4(__u16 check, __u32 from, __u32 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + (__u16)~(from >> 16) + (to & 0xffff) + (to >> 16);
	return (__u16)~csum_fold32(sum);
}

/* ... after a 16-bit word changed. */
static __always_inline __u16 csum_replace2(__u16 check, __u16 from, __u16 to)
{
	__u32 sum = (__u16)~check;

	sum += (__u16)~from + to;
	return (__u16)~csum_fold32(sum);
}

/* The L4 checksum field of a TCP/UDP header, or NULL when the header is not whole in the frame. */
static __always_inline __u16 *l4_check(void *l4, void *data_end, __u8 proto)
{
	if (proto == IPPROTO_TCP) {
		struct tcphdr *th = l4;

		return (void *)(th + 1) > data_end ? NULL : (__u16 *)&th->check;
	}
	if ((void *)((struct udphdr *)l4 + 1) > data_end)
		return NULL;
	return (__u16 *)&((struct udphdr *)l4)->check;
}

/* Rewrite one end of an IPv4 TCP/UDP packet: the destination (`dst`) or the source, address and port. A
 * non-first fragment (no L4 header) gets the address only: its first fragment's L4 checksum covers it. */
static __always_inline int nat_rewrite(struct xdp_md *ctx, struct iphdr *iph, __u32 addr, __u16 port, int dst)
{
	void *data_end = (void *)(long)ctx->data_end;
	__u32 old_addr, ihl_len;
	__u16 *ports, *check, old_port;
	void *l4;

	if ((void *)(iph + 1) > data_end)
		return -1;
	old_addr = dst ? iph->daddr : iph->saddr;
	if (dst)
		iph->daddr = addr;
	else
		iph->saddr = addr;
	iph->check = csum_replace4(iph->check, old_addr, addr);
	if (iph->frag_off & bpf_htons(IP_OFFSET))
		return 0;
	ihl_len = (iph->ihl * 4) & 0x3c;
	l4 = (void *)iph + ihl_len;
	ports = l4;
	check = l4_check(l4, data_end, iph->protocol);
	if (!check || (void *)(ports + 2) > data_end)
		return -1;
	if (iph->protocol == IPPROTO_UDP && *check == 0)
		goto ports_only; /* a UDP datagram without a checksum keeps none */
	*check = csum_replace4(*check, old_addr, addr);
	old_port = ports[dst ? 1 : 0];
	*check = csum_replace2(*check, old_port, port);
	if (iph->protocol == IPPROTO_UDP && *check == 0)
		*check = 0xffff;
ports_only:
	ports[dst ? 1 : 0] = port;
	return 0;
}

/* A new NAT connection (`ckey` client -> VIP:vport, given to `real`): its reply entry, in nat_half when the
 * connection is half-open, with the way back learnt from this packet (called before the MACs change). */
static __always_inline void nat_remember(struct xdp_md *ctx, const struct ethhdr *eth, const struct pyvs_conn_key *ckey,
					 const struct pyvs_real *real, int half)
{
	struct pyvs_conn_key rkey = {};
	struct pyvs_nat_reply value = {.conn = *ckey, .ifindex = ctx->ingress_ifindex};

	nat_reply_key(&rkey, ckey, real);
	__builtin_memcpy(value.dmac, eth->h_source, ETH_ALEN);
	__builtin_memcpy(value.smac, eth->h_dest, ETH_ALEN);
	if (bpf_map_update_elem(half ? (void *)&nat_half : (void *)&nat_replies, &rkey, &value, BPF_ANY))
		count(PYVS_CNT_INSERT_FAILED);
}

/* A half-open NAT connection moved to the connection table: its reply entry moves to nat_replies. */
static __noinline void nat_promote(const struct pyvs_conn_key *key, const struct pyvs_conn *conn)
{
	struct pyvs_conn_key rkey = {};
	struct pyvs_nat_reply *value;
	struct pyvs_real *real;
	__u32 real_id = conn->real;

	real = bpf_map_lookup_elem(&reals, &real_id);
	if (!real || real->gen != conn->gen)
		return;
	nat_reply_key(&rkey, key, real);
	value = bpf_map_lookup_elem(&nat_half, &rkey);
	if (!value)
		return; /* another CPU moved it, or the LRU took it */
	if (bpf_map_update_elem(&nat_replies, &rkey, value, BPF_ANY))
		count(PYVS_CNT_INSERT_FAILED);
	else
		bpf_map_delete_elem(&nat_half, &rkey);
}

/* A packet of a NAT connection from its client: the reply entry when this packet made the connection, then the
 * destination becomes the real's address and port (a real's port 0, on a service of every port: the packet's own).
 * Called before the MACs change. A function of its own: conn_path's stack has no room for it. */
static __noinline int nat_forward(struct xdp_md *ctx, struct packet *pkt, const struct pyvs_conn_key *ckey,
				  const struct pyvs_real *real, int new_conn /* 0: no, 1: in conns, 2: in half_open */)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = pkt->eth;

	if ((void *)(eth + 1) > data_end)
		return -1;
	if (new_conn)
		nat_remember(ctx, eth, ckey, real, new_conn == 2);
	if (nat_rewrite(ctx, pkt->iph, real->rip, real->port ? real->port : pkt->dport, 1) < 0)
		return -1;
	count(PYVS_CNT_NAT_FORWARD);
	return 0;
}

/* The sweeper removed a NAT connection (its real's slot and generation given): its reply entry goes too, unless it
 * is another connection's by now. */
static __always_inline void nat_forget(const struct pyvs_conn_key *key, __u32 real_id, __u32 gen)
{
	struct pyvs_real *real = bpf_map_lookup_elem(&reals, &real_id);
	struct pyvs_conn_key rkey = {};
	struct pyvs_nat_reply *value;
	void *map = &nat_replies;

	if (!real || real->gen != gen)
		return; /* the slot changed hands: its address is not known; the LRU ages the entry */
	nat_reply_key(&rkey, key, real);
	for (int i = 0; i < 2; i++, map = &nat_half) {
		value = bpf_map_lookup_elem(map, &rkey);
		if (value && value->conn.saddr == key->saddr && value->conn.daddr == key->daddr &&
		    value->conn.sport == key->sport && value->conn.dport == key->dport)
			bpf_map_delete_elem(map, &rkey);
	}
}

/* A packet from a real of a NAT connection to its client, or not: returns -1 when it is not one (the caller goes
 * on), else the verdict. `frag_ports`: a non-first fragment, whose ports the caller found in frags. */
static __noinline int nat_reply(struct xdp_md *ctx, struct packet *pkt, int frag)
{
	struct pyvs_conn_key rkey = {.saddr = pkt->saddr, .daddr = pkt->daddr, .sport = pkt->sport,
				     .dport = pkt->dport, .proto = pkt->proto};
	struct pyvs_nat_reply *rev;
	struct pyvs_conn *conn;
	struct pyvs_config *cfg;
	struct pyvs_real *real;
	struct iphdr *iph = pkt->iph;
	void *data_end = (void *)(long)ctx->data_end;
	__u32 zero = 0, real_id;
	__u8 state;
	void *shard;
	__u64 now;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !(cfg->flags & PYVS_CFG_MASQ))
		return -1;
	rev = bpf_map_lookup_elem(&nat_replies, &rkey);
	if (!rev && pkt->proto == IPPROTO_TCP)
		rev = bpf_map_lookup_elem(&nat_half, &rkey); /* a half-open connection's: the SYN-ACK */
	if (!rev)
		return -1;
	now = clock_now(sweep_stats());
	conn = NULL;
	shard = conn_shard(&rev->conn, cfg);
	if (shard)
		conn = bpf_map_lookup_elem(shard, &rev->conn);
	if (!conn && pkt->proto == IPPROTO_TCP) {
		shard = half_open_shard(&rev->conn, cfg);
		if (shard)
			conn = bpf_map_lookup_elem(shard, &rev->conn);
	}
	if (!conn || !(conn->flags & PYVS_CONN_F_MASQ) || svc_gen(conn->svc_index) != conn->svc_gen ||
	    expired(conn, cfg, now))
		return pass(PYVS_CNT_PASS_NAT_NO_CONN);
	real_id = conn->real;
	real = bpf_map_lookup_elem(&reals, &real_id);
	if (!real || real->gen != conn->gen || real->rip != pkt->saddr)
		return pass(PYVS_CNT_PASS_NAT_NO_CONN);
	if ((void *)(iph + 1) > data_end)
		return drop(PYVS_CNT_DROP_MALFORMED);
	if (iph->ttl <= 1)
		return pass(PYVS_CNT_PASS_NAT_TTL); /* the kernel says time exceeded */
	account_out(conn->svc_index, bpf_ntohs(iph->tot_len));
	account_out(PYVS_MAX_SERVICES + real_id, bpf_ntohs(iph->tot_len));
	if (pkt->proto == IPPROTO_TCP && !frag) {
		state = tcp_next_state_output(conn->state, tcp_event(pkt->tcp_flags));
		if (state != conn->state) {
			conn->state = state;
			recount(conn, conn_class(state));
		}
	}
	if (conn->last_seen != now)
		conn->last_seen = now;
	/* A router's hop: the TTL goes down by one (the checksum's word holds TTL and protocol). */
	iph->check = csum_replace2(iph->check, bpf_htons((__u16)iph->ttl << 8), bpf_htons((__u16)(iph->ttl - 1) << 8));
	iph->ttl -= 1;
	if (nat_rewrite(ctx, iph, rev->conn.daddr, rev->conn.dport, 0) < 0)
		return drop(PYVS_CNT_DROP_MALFORMED);
	if ((void *)(pkt->eth + 1) > data_end)
		return drop(PYVS_CNT_DROP_MALFORMED);
	__builtin_memcpy(pkt->eth->h_dest, rev->dmac, ETH_ALEN);
	__builtin_memcpy(pkt->eth->h_source, rev->smac, ETH_ALEN);
	count(PYVS_CNT_NAT_REPLY);
	if (frag)
		count(PYVS_CNT_NAT_REPLY_FRAG);
	if (rev->ifindex == 0 || rev->ifindex == ctx->ingress_ifindex) {
		count(PYVS_CNT_TX);
		return XDP_TX;
	}
	if (bpf_redirect(rev->ifindex, 0) != XDP_REDIRECT)
		return drop(PYVS_CNT_REDIRECT_FAILED);
	count(PYVS_CNT_REDIRECT);
	return XDP_REDIRECT;
}

/* A fragment not to a VIP on a director with NAT reals: a NAT reply's first fragment records its ports (in frags,
 * as the fragments to a VIP do), the fragments after it take them. -1: not a NAT reply's. */
static __noinline int nat_reply_fragment(struct xdp_md *ctx, struct packet *pkt)
{
	void *data_end = (void *)(long)ctx->data_end;
	struct iphdr *iph = pkt->iph;
	struct pyvs_frag_key key = {};
	struct pyvs_frag_ports ports, *known;
	struct pyvs_config *cfg;
	__u32 zero = 0;
	int action;

	cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg || !(cfg->flags & PYVS_CFG_MASQ) || (void *)(iph + 1) > data_end)
		return -1;
	key.saddr = pkt->saddr;
	key.daddr = pkt->daddr;
	key.id = iph->id;
	key.proto = pkt->proto;
	if (iph->frag_off & bpf_htons(IP_OFFSET)) {
		known = bpf_map_lookup_elem(&frags, &key);
		if (!known)
			return -1;
		pkt->sport = known->sport;
		pkt->dport = known->dport;
		pkt->tcp_flags = 0;
		return nat_reply(ctx, pkt, 1);
	}
	if (parse_ports(iph, data_end, pkt) != PARSE_OK)
		return -1;
	action = nat_reply(ctx, pkt, 0);
	if (action == XDP_TX || action == XDP_REDIRECT) {
		ports.sport = pkt->sport;
		ports.dport = pkt->dport;
		if (bpf_map_update_elem(&frags, &key, &ports, BPF_ANY) == 0)
			count(PYVS_CNT_FRAG_FIRST);
	}
	return action;
}

/* An ICMP error to a VIP quoting a NAT connection's reply (VIP:vport -> client, as the client side saw it): the
 * director gives it to the real as the real's own packet would have been quoted, RIP:rport -> client; the outer
 * destination becomes the real. The quoted L4 checksum is left as it is (IPVS's ip_vs_nat_icmp does the same). */
/* `l3_off`: where the error's IPv4 header starts in the frame (icmp_to_vip checked what follows; checked again here,
 * a function of its own so that icmp_to_vip's stack stays small: a tunnel real's transmit runs under it too). */
static __noinline void nat_icmp_to_real(struct xdp_md *ctx, __u32 l3_off, const struct pyvs_real *real)
{
	void *data = (void *)(long)ctx->data, *data_end = (void *)(long)ctx->data_end;
	struct iphdr *outer, *inner;
	struct icmp_hdr *icmp;
	__u16 *ports, old_check, vport;
	__u32 vip;

	if (l3_off > 64)
		return; /* Ethernet and two VLAN tags at most */
	outer = data + l3_off;
	if ((void *)(outer + 1) > data_end)
		return;
	icmp = (void *)outer + ((outer->ihl * 4) & 0x3c);
	inner = (void *)(icmp + 1);
	if ((void *)(inner + 1) > data_end)
		return;
	ports = (void *)inner + ((inner->ihl * 4) & 0x3c);
	if ((void *)(ports + 2) > data_end)
		return;
	vip = inner->saddr;
	outer->check = csum_replace4(outer->check, outer->daddr, real->rip);
	outer->daddr = real->rip;
	old_check = inner->check;
	inner->check = csum_replace4(inner->check, vip, real->rip);
	inner->saddr = real->rip;
	icmp->checksum = csum_replace4(icmp->checksum, vip, real->rip);
	icmp->checksum = csum_replace2(icmp->checksum, old_check, inner->check);
	if (real->port) {
		vport = ports[0];
		ports[0] = real->port;
		icmp->checksum = csum_replace2(icmp->checksum, vport, real->port);
	}
	count(PYVS_CNT_NAT_ICMP_TO_REAL);
}

#endif
