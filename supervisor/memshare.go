package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"

	"github.com/scoped-io/scoped/cgroups"
)

// Memory shares. A tier's memory_low protects each of its tenants' memory
// (the tenant node's memory.low on cgroup v2): under memory pressure the
// kernel reclaims from tenants above their protection first. A protection
// holds only as far as the ancestors' do, so on v2 each tier node protects
// the sum of its live tenants' memory_low and the root of the tree the sum
// of all (the global pressure's reclaim starts at the top). On v1 memory_low
// is the tenant node's soft limit, and ancestors keep none: a soft limit on
// them would make the kernel pick the whole tier as the first victim.

// memoryLows are the memory.low of the tier nodes (by tier name) and of the
// root (key "") for the live scopes' tenants: each tier's the sum of its
// live tenants' memory_low, the root's the sum of all.
func memoryLows(scopes []*scope, lowOf func(tier string) int64) map[string]int64 {
	out := map[string]int64{"": 0}
	seen := map[[2]string]bool{}
	for _, sc := range scopes {
		k := [2]string{sc.tier, sc.id.Tenant}
		if seen[k] {
			continue
		}
		seen[k] = true
		low := max(lowOf(sc.tier), 0)
		out[sc.tier] += low
		out[""] += low
	}
	return out
}

// setMemoryLowsLocked sets the memory.low of the tier nodes and the root
// (see memoryLows) where it changed since the last call; tiers left without
// live tenants go back to none. Nothing on cgroup v1. Callers hold the
// registry's lock.
func (k *keeper) setMemoryLowsLocked() error {
	if k.tree == nil || k.tree.Mode() != cgroups.V2 {
		return nil
	}
	c := k.conf()
	want := memoryLows(k.scopes.snapshotLocked(nil), func(tier string) int64 { return c.Tiers[tier].MemoryLow })
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(k.memLows)) {
		if _, ok := want[name]; !ok && k.memLows[name] != 0 {
			want[name] = 0
		}
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		v := want[name]
		if last, ok := k.memLows[name]; ok && last == v {
			continue
		}
		l := cgroups.Limits{MemoryLow: v}
		if v == 0 {
			l.MemoryLow = -1
		}
		var err error
		if name == "" {
			var root *cgroups.Node
			if root, err = cgroups.Load(k.tree.Root()); err == nil {
				err = root.Set(l)
			}
		} else {
			_, err = k.tree.Node(l, name)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("memory protection of %q: %w", name, err))
			delete(k.memLows, name)
			continue
		}
		if k.memLows == nil {
			k.memLows = map[string]int64{}
		}
		k.memLows[name] = v
	}
	return errors.Join(errs...)
}

// setTenantsMemory sets the cgroup root's memory.max to cfg's [tenants]
// memory_max (0: none).
func setTenantsMemory(cfg *Config, tree *cgroups.Tree) error {
	if tree == nil {
		return nil
	}
	l := cgroups.Limits{MemoryMax: cfg.Tenants.MemoryMax}
	if l.MemoryMax == 0 {
		l.MemoryMax = -1
	}
	root, err := cgroups.Load(tree.Root())
	if err == nil {
		err = root.Set(l)
	}
	if err != nil {
		return fmt.Errorf("tenants.memory_max: %w", err)
	}
	return nil
}

// memoryNote is why the tiers' memory_low protects less than it says on
// this host, or "".
func memoryNote(cfg *Config, mode cgroups.Mode, recursive bool) string {
	some := false
	for _, t := range cfg.Tiers {
		some = some || t.MemoryLow > 0
	}
	switch {
	case !some:
		return ""
	case mode != cgroups.V2:
		return "memory_low on cgroup v1 is the tenant's soft limit: it orders reclaim under the host's memory pressure only, protects nothing, and tiers without memory_low are reclaimed last"
	case !recursive:
		return "memory_low needs cgroup2 mounted with memory_recursiveprot (systemd does): without it the tenant's protection does not reach its scopes' memory"
	}
	return ""
}

// warnMemory logs memoryNote for cfg on tree's host.
func warnMemory(cfg *Config, tree *cgroups.Tree, log *slog.Logger) {
	if tree == nil {
		return
	}
	if note := memoryNote(cfg, tree.Mode(), tree.Mode() == cgroups.V2 && cgroups.RecursiveMemoryProtection()); note != "" {
		log.Warn("tiers: "+note, "cgroup_mode", tree.Mode().String())
	}
}
