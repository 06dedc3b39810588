/* SPDX-License-Identifier: (MIT OR GPL-2.0-only) */
/*
 * The little of the kernel's types and UAPI that scoped's accounting
 * programs use, instead of a multi-megabyte vmlinux.h. The kernel structs
 * are CO-RE: preserve_access_index makes clang record every field access as
 * a relocation that the loader (cilium/ebpf) resolves against the running
 * kernel's BTF, so only the fields named here must exist, not at these
 * offsets: they do from Linux 5.14 (task_struct.__state) through at least
 * 6.18; the programs are tested on 6.1 and 6.18.
 */
#ifndef SCOPED_CORE_H
#define SCOPED_CORE_H

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

/* UAPI values (include/uapi/linux/bpf.h), stable by definition. */
enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_HASH = 5,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_TASK_STORAGE = 29,
};

enum {
	BPF_ANY = 0,
	BPF_NOEXIST = 1,
};

enum {
	BPF_F_NO_PREALLOC = (1U << 0),
};

enum {
	BPF_LOCAL_STORAGE_GET_F_CREATE = (1ULL << 0),
};

/*
 * The context of cgroup_skb programs. The verifier rewrites accesses by
 * offset, so the UAPI prefix up to the fields used is enough.
 */
struct __sk_buff {
	__u32 len;
};

/* include/linux/sched.h */
#define TASK_RUNNING 0x00000000

/* Kernel types, resolved by CO-RE. */

struct kernfs_node {
	__u64 id; /* the cgroup id, = inode number of the cgroup's directory */
} __attribute__((preserve_access_index));

struct cgroup;

struct cgroup_subsys_state {
	struct cgroup *cgroup; /* the cgroup this state belongs to */
	struct cgroup_subsys_state *parent;
} __attribute__((preserve_access_index));

struct cgroup {
	struct cgroup_subsys_state self; /* self.parent->cgroup is the parent */
	struct kernfs_node *kn;
	int level; /* depth in the hierarchy, the root cgroup is 0 */
} __attribute__((preserve_access_index));

struct css_set {
	struct cgroup *dfl_cgrp; /* the task's cgroup in the unified hierarchy */
} __attribute__((preserve_access_index));

struct sched_entity {
	__u64 sum_exec_runtime; /* CPU time run, in ns, as the scheduler charges it */
} __attribute__((preserve_access_index));

struct sched_info {
	/* Time spent waiting on a run queue, in ns, summed; the scheduler
	 * adds a wait when the task arrives on a CPU (CONFIG_SCHED_INFO). */
	unsigned long long run_delay;
} __attribute__((preserve_access_index));

struct task_struct {
	unsigned int __state; /* TASK_RUNNING (0) while runnable ("state" before 5.14) */
	int pid;              /* the thread id */
	struct sched_entity se;
	struct sched_info sched_info;
	struct css_set *cgroups;
} __attribute__((preserve_access_index));

#endif /* SCOPED_CORE_H */
