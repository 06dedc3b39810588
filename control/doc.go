// Package control is scoped's noisy-neighbour controller: from snapshots of
// per-scope accounting it finds scopes whose tasks wait on the run queue
// because another scope's tasks take their CPU, and steps that antagonist
// down (a lower CPU weight, then a CPU max cap) and back up, with cool-downs
// and hysteresis. The decision is a pure function of the snapshots
// ([Decide]); the [Controller] only reads, applies and records, in its own
// goroutine, so it never blocks an invocation. The gotcha: a high run-queue
// delay alone does not make a victim (a scope at its own CPU max waits too);
// it takes preemptions by another scope as well.
package control
