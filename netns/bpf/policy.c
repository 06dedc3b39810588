// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * scoped's egress policy: which IPv4 addresses and ports a scope's workers
 * may reach. Attached to each scope's cgroup (v2), whose workers run in
 * child cgroups and in the scope's own network namespace.
 *
 * A destination is allowed iff
 *   - it is loopback (127.0.0.0/8, ::1) and the socket is not in the host's
 *     network namespace (a loopback destination in the host's is refused), or
 *   - it is in no prefix of policy_deny (global: the host's addresses, the
 *     scopes' subnet, link-local, multicast...) and its longest match in
 *     the scope's part of policy_allow has a port range holding the port
 *     (TCP, UDP) or the full range 0..65535 (other protocols).
 * User space stores at each rule prefix the union of the ranges of every
 * rule containing it, so the longest match answers for all of them. A
 * scope with no entry may only use loopback. Scopes have no IPv6 egress.
 *
 * connect4/6 and sendmsg4/6 refuse at the syscall (EPERM) and see IPv4-
 * mapped IPv6 destinations; cgroup_skb/egress is the backstop for every
 * packet whatever the socket type (raw, ping...) or path. It cannot tell
 * namespaces apart (no bpf_get_netns_cookie for cgroup_skb on 6.1), so it
 * passes loopback; and it judges every packet by its destination, replies
 * of a scope's servers included.
 *
 * The scope is the ancestor at scope_level of the task's (sock_addr) or
 * socket's (skb) cgroup. Built with bpf2go (see ../policy_gen.go); plain
 * UAPI and helpers of Linux 5.7, no BTF needed (tested on 6.1 and 6.18).
 */
#include "uapi.h"

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char __license[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader (spec.Variables) before the programs load. */
volatile const __u32 scope_level;
volatile const __u64 host_netns_cookie;

#define MAX_RANGES 16

/* Key of policy_deny: prefixlen bits of addr. */
struct deny_key {
	__u32 prefixlen;
	__u8 addr[4]; /* network byte order */
};

/* Key of policy_allow: prefixlen = 64 + the rule's prefix length, so that
 * the scope always matches exactly. */
struct allow_key {
	__u32 prefixlen;
	__u8 scope[8]; /* the scope's cgroup id, host byte order */
	__u8 addr[4];  /* network byte order */
};

/* Inclusive, host byte order; 0..65535 for a rule without ports. */
struct port_range {
	__u16 lo;
	__u16 hi;
};

struct allow_val {
	__u32 count; /* of ranges, 1..MAX_RANGES */
	struct port_range ranges[MAX_RANGES];
};

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct deny_key);
	__type(value, __u8);
	__uint(max_entries, 4096);
} policy_deny SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct allow_key);
	__type(value, struct allow_val);
	__uint(max_entries, 65536);
} policy_allow SEC(".maps");

/* What a destination's port ranges must hold. */
enum ports {
	PORTS_ONE,  /* the destination port (TCP, UDP) */
	PORTS_ALL,  /* 0..65535 (other protocols) */
	PORTS_NONE, /* nothing: any entry (non-first IPv4 fragments) */
};

static __always_inline bool is_loopback4(__be32 addr)
{
	return (bpf_ntohl(addr) >> 24) == 127;
}

static __always_inline bool denied(__be32 addr)
{
	struct deny_key key = {.prefixlen = 32};

	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	return bpf_map_lookup_elem(&policy_deny, &key) != 0;
}

static __always_inline bool allowed(__u64 scope, __be32 addr, enum ports want, __u16 port)
{
	struct allow_key key = {.prefixlen = 64 + 32};
	struct allow_val *val;

	__builtin_memcpy(key.scope, &scope, sizeof(scope));
	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	val = bpf_map_lookup_elem(&policy_allow, &key);
	if (!val)
		return false;
	if (want == PORTS_NONE)
		return true;
	for (int i = 0; i < MAX_RANGES; i++) {
		__u16 lo = val->ranges[i].lo, hi = val->ranges[i].hi;

		if (i >= val->count)
			break;
		if (want == PORTS_ALL ? lo == 0 && hi == 0xffff : lo <= port && port <= hi)
			return true;
	}
	return false;
}

/* The verdict of the sock_addr programs for an IPv4 destination. */
static __always_inline int sock_verdict4(struct bpf_sock_addr *ctx, __be32 addr)
{
	__u32 proto = ctx->protocol;
	enum ports want = proto == IPPROTO_TCP || proto == IPPROTO_UDP ? PORTS_ONE : PORTS_ALL;

	if (is_loopback4(addr))
		return bpf_get_netns_cookie(ctx) != host_netns_cookie;
	if (denied(addr))
		return 0;
	return allowed(bpf_get_current_ancestor_cgroup_id(scope_level), addr, want,
		       bpf_ntohs((__u16)ctx->user_port));
}

/* The verdict for an IPv6 destination: IPv4-mapped ones are IPv4's. */
static __always_inline int sock_verdict6(struct bpf_sock_addr *ctx)
{
	__u32 a0 = ctx->user_ip6[0], a1 = ctx->user_ip6[1];
	__u32 a2 = ctx->user_ip6[2], a3 = ctx->user_ip6[3];

	if (a0 != 0 || a1 != 0)
		return 0;
	if (a2 == bpf_htonl(0xffff))
		return sock_verdict4(ctx, a3);
	if (a2 == 0 && a3 == bpf_htonl(1))
		return bpf_get_netns_cookie(ctx) != host_netns_cookie;
	return 0;
}

SEC("cgroup/connect4")
int policy_connect4(struct bpf_sock_addr *ctx)
{
	return sock_verdict4(ctx, ctx->user_ip4);
}

SEC("cgroup/sendmsg4")
int policy_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock_verdict4(ctx, ctx->user_ip4);
}

SEC("cgroup/connect6")
int policy_connect6(struct bpf_sock_addr *ctx)
{
	return sock_verdict6(ctx);
}

SEC("cgroup/sendmsg6")
int policy_sendmsg6(struct bpf_sock_addr *ctx)
{
	return sock_verdict6(ctx);
}

/* The verdict for an IPv4 packet: 1 pass, 0 drop. */
static __always_inline int skb_verdict4(struct __sk_buff *skb)
{
	__u8 hdr[20]; /* struct iphdr without options */
	__u32 ihl;
	__be32 daddr;
	__be16 frag, dport;
	__u8 proto;

	if (bpf_skb_load_bytes(skb, 0, hdr, sizeof(hdr)))
		return 0;
	ihl = (hdr[0] & 0xf) * 4;
	if ((hdr[0] >> 4) != 4 || ihl < sizeof(hdr))
		return 0;
	proto = hdr[9];
	__builtin_memcpy(&frag, &hdr[6], sizeof(frag));
	__builtin_memcpy(&daddr, &hdr[16], sizeof(daddr));

	if (is_loopback4(daddr))
		return 1;
	if (denied(daddr))
		return 0;
	__u64 scope = bpf_skb_ancestor_cgroup_id(skb, scope_level);
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return allowed(scope, daddr, PORTS_ALL, 0);
	if (bpf_ntohs(frag) & 0x1fff) /* no transport header: its first fragment had it */
		return allowed(scope, daddr, PORTS_NONE, 0);
	/* The destination port follows the source port in TCP and UDP. */
	if (bpf_skb_load_bytes(skb, ihl + 2, &dport, sizeof(dport)))
		return 0;
	return allowed(scope, daddr, PORTS_ONE, bpf_ntohs(dport));
}

/* The verdict for an IPv6 packet: only to ::1. */
static __always_inline int skb_verdict6(struct __sk_buff *skb)
{
	__u32 daddr[4]; /* at offset 24 of struct ipv6hdr */

	if (bpf_skb_load_bytes(skb, 24, daddr, sizeof(daddr)))
		return 0;
	return daddr[0] == 0 && daddr[1] == 0 && daddr[2] == 0 && daddr[3] == bpf_htonl(1);
}

SEC("cgroup_skb/egress")
int policy_egress(struct __sk_buff *skb)
{
	if (skb->protocol == bpf_htons(ETH_P_IP))
		return skb_verdict4(skb);
	if (skb->protocol == bpf_htons(ETH_P_IPV6))
		return skb_verdict6(skb);
	return 1; /* not IP (ARP...) */
}
