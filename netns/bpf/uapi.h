/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The little of the kernel's UAPI that scoped's egress policy programs use,
 * instead of <linux/bpf.h>, which needs the build host's <asm/types.h> (not
 * on clang's path for -target bpf on Debian). Everything here is UAPI and
 * stable by definition. The context structs are rewritten by the verifier
 * by offset, so their prefix up to the last field used is enough.
 */
#ifndef SCOPED_NETNS_UAPI_H
#define SCOPED_NETNS_UAPI_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed int __s32;
typedef signed long long __s64;
typedef __u16 __be16; /* used by libbpf's bpf_helper_defs.h */
typedef __u32 __be32;
typedef __u32 __wsum;
typedef _Bool bool;
#define true 1
#define false 0

/* include/uapi/linux/bpf.h */
enum bpf_map_type {
	BPF_MAP_TYPE_LPM_TRIE = 11,
};

enum {
	BPF_F_NO_PREALLOC = (1U << 0),
};

/* The context of cgroup_skb programs. */
struct __sk_buff {
	__u32 len;
	__u32 pkt_type;
	__u32 mark;
	__u32 queue_mapping;
	__u32 protocol; /* ETH_P_* in network byte order */
};

/* The context of cgroup/connect* and cgroup/sendmsg* programs. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4;    /* network byte order */
	__u32 user_ip6[4]; /* network byte order */
	__u32 user_port;   /* network byte order, in the low 16 bits */
	__u32 family;
	__u32 type;
	__u32 protocol;
};

/* include/uapi/linux/if_ether.h */
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD

/* include/uapi/linux/in.h */
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#endif /* SCOPED_NETNS_UAPI_H */
