package cgroups

import (
	"fmt"
	"strconv"
	"time"

	occ "github.com/opencontainers/cgroups"
)

// Limits are the resource controls of one node. A zero field leaves the
// node's current value alone.
type Limits struct {
	// CPUWeight is the cgroup v2 cpu.weight, 1..10000 (default 100). On v1 it
	// is mapped to cpu.shares with the inverse of runc's shares→weight
	// conversion, so ratios between siblings are kept.
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
	// ignored on v1, which has no equivalent).
	MemoryHigh int64
	// PidsMax caps the number of tasks (processes and threads). Negative
	// removes the cap.
	PidsMax int64
}

const defaultCPUPeriod = 100 * time.Millisecond

// SharesFromWeight maps a cgroup v2 cpu.weight to v1 cpu.shares, the
// inverse of runc's ConvertCPUSharesToCgroupV2Value.
func SharesFromWeight(w uint64) uint64 {
	return 2 + ((w-1)*262142+9998)/9999
}

func (l Limits) validate() error {
	switch {
	case l.CPUWeight > 10000:
		return fmt.Errorf("%w: cpu weight %d not in 1..10000", ErrInvalidLimit, l.CPUWeight)
	case l.CPUMax > 4096:
		return fmt.Errorf("%w: cpu max %g CPUs", ErrInvalidLimit, l.CPUMax)
	case l.CPUPeriod != 0 && (l.CPUPeriod < time.Millisecond || l.CPUPeriod > time.Second):
		return fmt.Errorf("%w: cpu period %s not in 1ms..1s", ErrInvalidLimit, l.CPUPeriod)
	case l.MemoryMax > 0 && l.MemoryMax < 1<<20:
		return fmt.Errorf("%w: memory max %d bytes is below 1 MiB", ErrInvalidLimit, l.MemoryMax)
	case l.MemoryHigh > 0 && l.MemoryHigh < 1<<20:
		return fmt.Errorf("%w: memory high %d bytes is below 1 MiB", ErrInvalidLimit, l.MemoryHigh)
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
	if l.PidsMax != 0 {
		v := l.PidsMax
		if v < 0 {
			v = -1
		}
		r.PidsLimit = &v
	}
	return r, nil
}
