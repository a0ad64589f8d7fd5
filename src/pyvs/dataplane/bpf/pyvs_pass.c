/* A pass-through XDP program: the lab puts it on the switch side of the
 * director's veth, where native XDP_TX needs an XDP program on the peer. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

SEC("xdp")
int pyvs_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
