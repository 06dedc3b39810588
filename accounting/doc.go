// Package accounting measures what every scope uses (on-CPU time, run-queue
// delay, preemptions by other scopes, network bytes) with eBPF programs that
// count in the kernel per scope cgroup, keyed by its unified cgroup id, and
// falls back to cgroup files (CPU time only) where eBPF cannot load; it
// measures and never decides. The gotcha: a task is charged to its cgroup's
// ancestor at the scope level of the unified hierarchy, whatever worker leaf
// below it runs in, and only while that scope is tracked (Track to Untrack);
// nothing is pinned, so nothing of it outlives the process.
package accounting
