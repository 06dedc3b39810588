package cgroups

import (
	"slices"
	"strings"

	"github.com/scoped-io/scoped/internal/mountinfo"
)

// RecursiveMemoryProtection reports whether the unified hierarchy is
// mounted with memory_recursiveprot (systemd mounts it so): a node's
// memory.low then covers the nodes below it in proportion to their use.
// Without it a protection reaches only children that claim their own, so a
// tenant node's MemoryLow does not protect the memory of its scopes and
// workers, where the pages are charged.
func RecursiveMemoryProtection() bool {
	ms, err := mountinfo.Self()
	if err != nil {
		return false
	}
	for _, m := range ms {
		if m.FSType == "cgroup2" && m.Root == "/" {
			return slices.Contains(strings.Split(m.SuperOptions, ","), "memory_recursiveprot") ||
				slices.Contains(strings.Split(m.Options, ","), "memory_recursiveprot")
		}
	}
	return false
}
