package cgroups

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"time"

	occ "github.com/opencontainers/cgroups"
	"github.com/opencontainers/cgroups/fscommon"
)

// Stats are the figures of one node, its descendants included.
type Stats struct {
	CPUUsage      time.Duration // CPU time consumed
	CPUThrottled  time.Duration // time spent throttled by CPUMax
	MemoryCurrent uint64        // bytes in use now
	MemoryPeak    uint64        // highest bytes in use (v1 max_usage, v2 memory.peak)
	OOMKills      uint64        // processes killed by the OOM killer
	PidsCurrent   uint64        // tasks now
	PidsLimitHits uint64        // forks refused by PidsMax (pids.events max)
}

// Stats reads the node's figures.
func (n *Node) Stats() (Stats, error) {
	st, err := n.m.Stats(&occ.StatsOptions{Controllers: occ.CPU | occ.Memory | occ.Pids})
	if err != nil {
		return Stats{}, fmt.Errorf("stats of %s: %w", n.path, err)
	}
	s := Stats{
		CPUUsage:      time.Duration(st.CpuStats.CpuUsage.TotalUsage),
		CPUThrottled:  time.Duration(st.CpuStats.ThrottlingData.ThrottledTime),
		MemoryCurrent: st.MemoryStats.Usage.Usage,
		MemoryPeak:    st.MemoryStats.Usage.MaxUsage,
		PidsCurrent:   st.PidsStats.Current,
	}
	if s.OOMKills, err = n.m.OOMKillCount(); err != nil && !isGone(err) {
		return Stats{}, fmt.Errorf("oom kills of %s: %w", n.path, err)
	}
	s.PidsLimitHits = n.pidsEvents()
	return s, nil
}

// Exists reports whether the node's directory is there in the hierarchy
// its CPU counter is read from: on cgroup v1, Stats of a node that is gone
// reads zeros without an error.
func (n *Node) Exists() bool {
	dir := n.m.Path("")
	if n.mode != V2 {
		dir = n.m.Path("cpuacct")
	}
	if dir == "" {
		return false
	}
	_, err := os.Stat(dir)
	return err == nil
}

// pidsEvents reads the "max" counter of pids.events, 0 where absent.
func (n *Node) pidsEvents() uint64 {
	dir := n.m.Path("pids")
	if n.mode == V2 {
		dir = n.m.Path("")
	}
	v, err := fscommon.GetValueByKey(dir, "pids.events", "max")
	if err != nil {
		return 0
	}
	return v
}

// CPUUsage is the CPU time consumed so far in the cgroup at the absolute
// path p and below it. It reads one file (cpu.stat's usage_usec in the
// unified hierarchy, which the kernel keeps on v2 and hybrid hosts without
// any controller; cpuacct.usage on pure v1), so that it is cheap enough to
// poll while an invocation runs.
func CPUUsage(p string) (time.Duration, error) {
	if !path.IsAbs(p) || path.Clean(p) != p || p == "/" {
		return 0, fmt.Errorf("%w: %q must be an absolute, clean path below /", ErrInvalidPath, p)
	}
	mode := HostMode()
	if mnt := unifiedMount(mode); mnt != "" {
		st, err := ReadCPUStat(filepath.Join(mnt, p))
		if err != nil {
			return 0, fmt.Errorf("cpu usage of %s: %w", p, err)
		}
		return st.Usage, nil
	}
	mnt, err := occ.FindCgroupMountpoint("", "cpuacct")
	if err != nil {
		return 0, fmt.Errorf("cpu usage of %s: %w", p, err)
	}
	v, err := fscommon.GetCgroupParamUint(filepath.Join(mnt, p), "cpuacct.usage")
	if err != nil {
		return 0, fmt.Errorf("cpu usage of %s: %w", p, err)
	}
	return time.Duration(v), nil
}
