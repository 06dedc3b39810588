package testutil

import (
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
