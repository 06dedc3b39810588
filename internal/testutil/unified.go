package testutil

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/internal/mountinfo"
)

// RequiresUnified skips t unless a unified (cgroup2) hierarchy is mounted,
// and returns its mount point (see mountinfo.UnifiedMount).
func RequiresUnified(t testing.TB) string {
	t.Helper()
	mnt, err := mountinfo.UnifiedMount()
	if err != nil {
		t.Skipf("needs a unified (cgroup2) hierarchy: %v", err)
	}
	return mnt
}

// RequiresUnifiedController skips t unless the controller ctrl (e.g.
// "memory") is on the unified hierarchy: on hybrid hosts cgroup2 is mounted
// without controllers, and a feature like memory.low does not exist.
func RequiresUnifiedController(t testing.TB, ctrl string) {
	t.Helper()
	mnt := RequiresUnified(t)
	b, err := os.ReadFile(filepath.Join(mnt, "cgroup.controllers"))
	if err != nil {
		t.Skipf("needs the %s controller on cgroup v2: %v", ctrl, err)
	}
	if !slices.Contains(strings.Fields(string(b)), ctrl) {
		t.Skipf("needs the %s controller on cgroup v2 (this host has it on v1: hybrid or legacy cgroups)", ctrl)
	}
}
