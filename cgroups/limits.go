package cgroups

import (
	"fmt"
	"math"
	"strconv"
	"time"

	occ "github.com/opencontainers/cgroups"
)

// Limits are the resource controls of one node. A zero field leaves the
// node's current value alone.
type Limits struct {
	// CPUWeight is the cgroup v2 cpu.weight, 1..10000 (default 100). On v1 it
	// is mapped to cpu.shares by [SharesFromWeight], which keeps the ratios
	// between siblings, so a node gets the same share of the CPU on both.
	CPUWeight uint64
	// CPUMax caps the node at this many CPUs (0.2 = a fifth of one CPU),
	// enforced over CPUPeriod. Negative removes the cap.
	CPUMax float64
	// CPUPeriod is the enforcement period of CPUMax; default 100 ms.
	CPUPeriod time.Duration
	// MemoryMax is the hard memory limit in bytes; above it the kernel
	// reclaims and then OOM-kills inside the node. Negative removes it.
	MemoryMax int64
	// MemoryHigh is the throttling threshold in bytes (cgroup v2 only;
	// ignored on v1, which has no equivalent). Negative removes it.
	MemoryHigh int64
	// MemoryLow is the memory in bytes protected from reclaim: under
	// pressure (the host's, or an ancestor's memory.max) the kernel takes
	// from nodes above their protection first, and from a node below it
	// only when nothing else is left (cgroup v2 memory.low). A node's
	// protection holds only up to its ancestors': each ancestor below the
	// reclaim's root must protect at least the sum of its children's. On
	// v1 it is the soft limit (memory.soft_limit_in_bytes): under global
	// pressure only, the node furthest above its soft limit is reclaimed
	// first; it protects nothing from an ancestor's limit. Negative
	// removes it (v2: 0; v1: no soft limit).
	MemoryLow int64
	// PidsMax caps the number of tasks (processes and threads). Negative
	// removes the cap.
	PidsMax int64
	// CPUIdle 1 makes the node SCHED_IDLE against its siblings (cpu.idle,
	// kernel 5.15+, v1 and v2): it runs only on CPU they leave, at the
	// least weight, and their wakeups preempt it at once. -1 clears it.
	CPUIdle int
}

const defaultCPUPeriod = 100 * time.Millisecond

// SharesFromWeight maps a cgroup v2 cpu.weight (1..10000, default 100) to
// v1 cpu.shares (2..262144, default 1024). Both are relative weights, so the
// mapping is proportional, weight×10.24: siblings split the CPU in the same
// ratio on v1 as on v2, and the defaults correspond.
//
// It is deliberately not the inverse of runc's ConvertCPUSharesToCgroupV2Value:
// in the opencontainers/cgroups scoped uses (v0.1.0) that is a quadratic in
// log2(shares) fitted through (2, 1), (1024, 100) and (262144, 10000), which
// agrees with this mapping only at the default; its inverse would give
// weights 100 and 300 a CPU split of 1:4.0 instead of 1:3, and 100 and 1000
// one of 1:17.
func SharesFromWeight(w uint64) uint64 {
	w = min(w, 10000)
	return min(max((w*1024+50)/100, 2), 262144)
}

func (l Limits) validate() error {
	switch {
	case l.CPUWeight > 10000:
		return fmt.Errorf("%w: cpu weight %d not in 1..10000", ErrInvalidLimit, l.CPUWeight)
	case l.CPUMax > 4096 || math.IsNaN(l.CPUMax):
		return fmt.Errorf("%w: cpu max %g CPUs", ErrInvalidLimit, l.CPUMax)
	case l.CPUIdle < -1 || l.CPUIdle > 1:
		return fmt.Errorf("%w: cpu idle %d not -1, 0 or 1", ErrInvalidLimit, l.CPUIdle)
	case l.CPUPeriod != 0 && (l.CPUPeriod < time.Millisecond || l.CPUPeriod > time.Second):
		return fmt.Errorf("%w: cpu period %s not in 1ms..1s", ErrInvalidLimit, l.CPUPeriod)
	case l.MemoryMax > 0 && l.MemoryMax < 1<<20:
		return fmt.Errorf("%w: memory max %d bytes is below 1 MiB", ErrInvalidLimit, l.MemoryMax)
	case l.MemoryHigh > 0 && l.MemoryHigh < 1<<20:
		return fmt.Errorf("%w: memory high %d bytes is below 1 MiB", ErrInvalidLimit, l.MemoryHigh)
	case l.MemoryLow > 0 && l.MemoryLow < 1<<20:
		return fmt.Errorf("%w: memory low %d bytes is below 1 MiB", ErrInvalidLimit, l.MemoryLow)
	case l.MemoryLow > 0 && l.MemoryHigh > 0 && l.MemoryLow > l.MemoryHigh:
		return fmt.Errorf("%w: memory low %d bytes is above memory high %d", ErrInvalidLimit, l.MemoryLow, l.MemoryHigh)
	case l.MemoryLow > 0 && l.MemoryMax > 0 && l.MemoryLow > l.MemoryMax:
		return fmt.Errorf("%w: memory low %d bytes is above memory max %d", ErrInvalidLimit, l.MemoryLow, l.MemoryMax)
	case l.MemoryHigh > 0 && l.MemoryMax > 0 && l.MemoryHigh > l.MemoryMax:
		return fmt.Errorf("%w: memory high %d bytes is above memory max %d", ErrInvalidLimit, l.MemoryHigh, l.MemoryMax)
	}
	return nil
}

// resources converts l for runc's managers on the host's mode.
func (l Limits) resources(m Mode) (*occ.Resources, error) {
	if err := l.validate(); err != nil {
		return nil, err
	}
	r := &occ.Resources{SkipDevices: true}
	if l.CPUWeight != 0 {
		if m == V2 {
			r.CpuWeight = l.CPUWeight
		} else {
			r.CpuShares = SharesFromWeight(l.CPUWeight)
		}
	}
	if l.CPUMax != 0 {
		period := l.CPUPeriod
		if period == 0 {
			period = defaultCPUPeriod
		}
		r.CpuPeriod = uint64(period / time.Microsecond)
		r.CpuQuota = -1
		if l.CPUMax > 0 {
			r.CpuQuota = max(int64(l.CPUMax*float64(r.CpuPeriod)), 1000)
		}
	}
	switch {
	case l.MemoryMax > 0:
		r.Memory = l.MemoryMax
		// No swap beyond the limit: memsw (v1) or swap.max=0 (v2).
		r.MemorySwap = l.MemoryMax
	case l.MemoryMax < 0:
		r.Memory, r.MemorySwap = -1, -1
	}
	if l.MemoryHigh != 0 && m == V2 {
		v := "max"
		if l.MemoryHigh > 0 {
			v = strconv.FormatInt(l.MemoryHigh, 10)
		}
		r.Unified = map[string]string{"memory.high": v}
	}
	switch {
	case l.MemoryLow != 0 && m == V2:
		// Not runc's MemoryReservation: it writes "max" (everything
		// protected) for -1.
		if r.Unified == nil {
			r.Unified = map[string]string{}
		}
		r.Unified["memory.low"] = strconv.FormatInt(max(l.MemoryLow, 0), 10)
	case l.MemoryLow > 0:
		r.MemoryReservation = l.MemoryLow
	case l.MemoryLow < 0:
		r.MemoryReservation = -1 // v1: unlimited, the kernel's default
	}
	if l.PidsMax != 0 {
		v := l.PidsMax
		if v < 0 {
			v = -1
		}
		r.PidsLimit = &v
	}
	return r, nil
}
