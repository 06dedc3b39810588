// Package control is scoped's CPU controller. Its noisy-neighbour rule,
// from snapshots of per-scope accounting, finds scopes whose tasks wait on
// the run queue because another scope's tasks take their CPU, and steps
// that antagonist down (a lower CPU weight, then a CPU max cap) and back
// up, with cool-downs and hysteresis ([Decide]). Its fair-share rule sums
// the scopes by tenant and caps, on their tenant nodes, the tenants that
// take more than their entitled share while another tenant that wants more
// gets less than its own, work-conserving ([DecideShares]): the kernel's
// split of the tenants' weights drifts on some kernels. Both decisions are
// pure functions of the snapshots; the [Controller] only reads, applies and
// records, in its own goroutine, so it never blocks an invocation. The
// gotcha: a high run-queue delay alone does not make a victim (a scope at
// its own CPU max waits too); it takes preemptions by another scope as
// well.
package control
