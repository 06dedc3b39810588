// SPDX-License-Identifier: (MIT OR GPL-2.0-only)
/*
 * scoped's per-scope accounting: on-CPU time, run-queue delay, preemptions
 * between scopes (sched_switch) and network bytes (cgroup_skb).
 *
 * A scope is the cgroup at level scope_level of the unified hierarchy whose
 * ancestor at root_level is the cgroup root_id (scoped's root). Tasks run in
 * worker cgroups below their scope and are charged to it. Only scopes that
 * user space tracks (entries of acct_scopes, created and deleted by user
 * space only) are counted, so every map stays bounded.
 *
 * Cost: one program runs per context switch (a program on sched_wakeup too
 * cost about as much again). Where the kernel runs with speculation
 * mitigations every helper call costs tens of ns, so the program finds
 * scopes with plain loads through the tracepoint's BTF pointers, reads the
 * clock only when a tracked task is switched in, and calls one helper (the
 * per-CPU lookup, inlined on newer kernels) for a switch between two tasks
 * outside scoped.
 *
 * Built with bpf2go (see ../gen.go); needs a kernel with BTF (tested on
 * Linux 6.1 and 6.18).
 */
#include "core.h"

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char __license[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader (spec.Variables) before the programs load. */
volatile const __u64 root_id;
volatile const __u32 root_level;
volatile const __u32 scope_level;

#define HIST_BUCKETS 32

/* What one scope used, per CPU (user space sums the CPUs). */
struct scope_stats {
	__u64 cpu_ns;
	__u64 runq_count;
	__u64 runq_sum_ns;
	__u64 runq_hist[HIST_BUCKETS]; /* bucket i: delays in [2^i, 2^(i+1)) ns */
	__u64 preempted;               /* by a task of another tracked scope */
	__u64 rx_bytes;
	__u64 rx_packets;
	__u64 tx_bytes;
	__u64 tx_packets;
};

/* The tracked scopes: scope id -> counters. Bounded by max_entries (set at
 * load); the programs only ever look entries up. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u64);
	__type(value, struct scope_stats);
	__uint(max_entries, 4096);
} acct_scopes SEC(".maps");

struct pair_key {
	__u64 victim;    /* the scope whose task was preempted */
	__u64 preemptor; /* the scope whose task took the CPU */
};

/* Preemptions between two tracked scopes. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct pair_key);
	__type(value, __u64);
	__uint(max_entries, 16384);
} acct_pairs SEC(".maps");

/* What runs on each CPU since when, if it is a task of a tracked scope
 * (user space adds the time it has run so far to its scope's CPU time). */
struct cpu_state {
	__u64 switch_ts; /* bpf_ktime_get_ns() when the task was switched in */
	__u64 scope;     /* its scope; 0 if the task on the CPU is not tracked */
	__u64 exec_base; /* its se.sum_exec_runtime when it was switched in */
	__u32 pid;       /* its thread id */
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct cpu_state);
	__uint(max_entries, 1);
} acct_cpus SEC(".maps");

/* Tasks of tracked scopes: their sched_info.run_delay when they were last
 * switched in. */
struct task_state {
	__u64 run_delay;
	__u64 seen; /* run_delay holds a reading */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_state);
} acct_tasks SEC(".maps");

/* Events the maps could not hold. */
enum {
	DROP_PAIR = 0, /* acct_pairs full: a preemption counted without its preemptor */
	DROP_TASK = 1, /* no task storage: a run-queue wait not measured */
	DROP_MAX,
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, __u64);
	__uint(max_entries, DROP_MAX);
} acct_drops SEC(".maps");

static __always_inline void drop(__u32 what)
{
	__u64 *n = bpf_map_lookup_elem(&acct_drops, &what);

	if (n)
		*n += 1;
}

/*
 * The scope of a task: the ancestor at scope_level of its unified cgroup, if
 * its ancestor at root_level is the root; else 0. t is a BTF pointer (a
 * tracepoint's argument), so the program walks it with plain loads, which
 * give 0 rather than fault: far cheaper than bpf_probe_read_kernel or the
 * cgroup helpers. It climbs parents rather than index cgroup->ancestors[],
 * which the verifier does not let a plain load reach (a flexible array).
 * Tasks more than MAX_BELOW levels below their scope are not counted.
 */
#define MAX_BELOW 16
#define MAX_ROOT_TO_SCOPE 16

static __always_inline struct cgroup *parent(struct cgroup *cg)
{
	struct cgroup_subsys_state *css = cg->self.parent;

	return css ? css->cgroup : 0;
}

static __always_inline __u64 task_scope(struct task_struct *t)
{
	struct cgroup *cg = t->cgroups->dfl_cgrp;
	__u64 scope;
	int level;

	if (!cg)
		return 0;
	level = cg->level;
	if (level < (int)scope_level || level > (int)scope_level + MAX_BELOW)
		return 0;
	for (int i = 0; i < MAX_BELOW && level > (int)scope_level; i++, level--) {
		cg = parent(cg);
		if (!cg)
			return 0;
	}
	scope = cg->kn->id;
	for (int i = 0; i < MAX_ROOT_TO_SCOPE && level > (int)root_level; i++, level--) {
		cg = parent(cg);
		if (!cg)
			return 0;
	}
	if (level != (int)root_level || cg->kn->id != root_id)
		return 0;
	return scope;
}

static __always_inline __u32 log2_bucket(__u64 v)
{
	__u32 r = 0, shift;

	shift = (v > 0xFFFFFFFFULL) << 5; v >>= shift; r |= shift;
	shift = (v > 0xFFFF) << 4; v >>= shift; r |= shift;
	shift = (v > 0xFF) << 3; v >>= shift; r |= shift;
	shift = (v > 0xF) << 2; v >>= shift; r |= shift;
	shift = (v > 0x3) << 1; v >>= shift; r |= shift;
	r |= (v >> 1);
	return r < HIST_BUCKETS ? r : HIST_BUCKETS - 1;
}

SEC("tp_btf/sched_switch")
int BPF_PROG(acct_switch, bool preempt, struct task_struct *prev, struct task_struct *next,
	     unsigned int prev_state)
{
	__u32 zero = 0;
	struct cpu_state *cpu = bpf_map_lookup_elem(&acct_cpus, &zero);
	__u64 prev_scope = task_scope(prev), next_scope = task_scope(next);
	struct scope_stats *ps = 0, *ns = 0;
	struct task_state *ts;
	/* Still runnable (preempted, yielded, or kept on the run queue by a
	 * pending signal): prev is still TASK_RUNNING at the switch. */
	bool runnable = preempt || prev->__state == TASK_RUNNING;

	if (!cpu)
		return 0;
	if (!prev_scope && !next_scope) {
		/* Neither task is scoped's: the common case on a busy host. */
		cpu->scope = 0;
		return 0;
	}
	if (prev_scope)
		ps = bpf_map_lookup_elem(&acct_scopes, &prev_scope);
	if (next_scope == prev_scope)
		ns = ps; /* threads of one scope, one lookup */
	else if (next_scope)
		ns = bpf_map_lookup_elem(&acct_scopes, &next_scope);
	/* (Not "if (!ps && !ns) return": clang turns that into (ps | ns),
	 * which the verifier refuses.) */
	if (ps) {
		/* The CPU time it ran since it was switched in, if that was
		 * seen: the growth of its sum_exec_runtime, which the
		 * scheduler has just brought up to date. The kernel's own
		 * definition, so steal time is not charged where the kernel
		 * does not charge it. */
		__u64 exec = prev->se.sum_exec_runtime;

		if (cpu->scope == prev_scope && cpu->pid == prev->pid && exec > cpu->exec_base)
			ps->cpu_ns += exec - cpu->exec_base;
	}

	if (ns) {
		/*
		 * Run-queue waits from the kernel's own sum of them: the
		 * scheduler adds a wait to sched_info.run_delay when the task
		 * arrives on the CPU, just after this tracepoint. So the growth
		 * since the task's last switch-in is the one wait that ended
		 * then, counted one switch-in late (a task's last wait before
		 * it exits is not counted). Preemptions, yields and wake-ups
		 * alike; no clock read, no program on sched_wakeup.
		 */
		ts = bpf_task_storage_get(&acct_tasks, next, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
		if (ts) {
			__u64 rd = next->sched_info.run_delay;

			if (ts->seen && rd > ts->run_delay) {
				__u64 delay = rd - ts->run_delay;

				ns->runq_count += 1;
				ns->runq_sum_ns += delay;
				ns->runq_hist[log2_bucket(delay) & (HIST_BUCKETS - 1)] += 1;
			}
			ts->run_delay = rd;
			ts->seen = 1;
		} else {
			drop(DROP_TASK);
		}
		cpu->switch_ts = bpf_ktime_get_ns();
		cpu->scope = next_scope;
		cpu->exec_base = next->se.sum_exec_runtime;
		cpu->pid = next->pid;
	} else {
		cpu->scope = 0;
	}

	/* A task of one tracked scope took the CPU from another's. */
	if (ps && ns && runnable && next_scope != prev_scope) {
		struct pair_key key = {.victim = prev_scope, .preemptor = next_scope};
		__u64 one = 1, *n;

		ps->preempted += 1;
		n = bpf_map_lookup_elem(&acct_pairs, &key);
		if (n) {
			__sync_fetch_and_add(n, 1);
		} else if (bpf_map_update_elem(&acct_pairs, &key, &one, BPF_NOEXIST)) {
			/* Created by another CPU meanwhile, or the map is full. */
			n = bpf_map_lookup_elem(&acct_pairs, &key);
			if (n)
				__sync_fetch_and_add(n, 1);
			else
				drop(DROP_PAIR);
		}
	}
	return 0;
}

/*
 * Network bytes of the scope's sockets (a socket belongs to the cgroup of the
 * task that created it). Attached to each tracked scope's directory; skb->len
 * counts from the network header. The per-CPU counters are added atomically:
 * a program in softirq context can interrupt one in process context on the
 * same CPU.
 */
static __always_inline void count_skb(struct __sk_buff *skb, bool egress)
{
	__u64 scope = bpf_skb_ancestor_cgroup_id(skb, scope_level);
	struct scope_stats *s = bpf_map_lookup_elem(&acct_scopes, &scope);

	if (!s)
		return;
	if (egress) {
		__sync_fetch_and_add(&s->tx_bytes, skb->len);
		__sync_fetch_and_add(&s->tx_packets, 1);
	} else {
		__sync_fetch_and_add(&s->rx_bytes, skb->len);
		__sync_fetch_and_add(&s->rx_packets, 1);
	}
}

SEC("cgroup_skb/ingress")
int acct_skb_in(struct __sk_buff *skb)
{
	count_skb(skb, false);
	return 1; /* pass */
}

SEC("cgroup_skb/egress")
int acct_skb_out(struct __sk_buff *skb)
{
	count_skb(skb, true);
	return 1; /* pass */
}
