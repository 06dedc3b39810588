package supervisor

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
)

// TestOpenCgroupsOutsideAService: started "by systemd" (its environment)
// but not in a service's cgroup of a pure v2 host (this test's process),
// cgroup_delegate "auto" opens cgroup_root and says why, "off" says
// nothing, and "on" refuses where the delegated layout cannot be.
func TestOpenCgroupsOutsideAService(t *testing.T) {
	testutil.RequiresRoot(t)
	b, err := os.ReadFile("/proc/self/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	own, _ := cgroups.UnifiedCgroup(string(b))
	v2 := cgroups.HostMode() == cgroups.V2
	if v2 && strings.HasSuffix(own, ".service") {
		t.Skipf("the test runs in a service's cgroup (%s): auto would move it", own)
	}
	root := fmt.Sprintf("/scoped-test-supervisor-%d", os.Getpid())
	testutil.CheckLeaks(t, root)
	t.Setenv("SYSTEMD_EXEC_PID", strconv.Itoa(os.Getpid()))
	t.Setenv("INVOCATION_ID", "0123456789abcdef0123456789abcdef")
	open := func(delegate string) (*cgroups.Tree, string, error) {
		cfg := DefaultConfig()
		cfg.CgroupRoot, cfg.CgroupDelegate = root, delegate
		var logs testutil.SyncBuffer
		tree, err := openCgroups(&cfg, slog.New(slog.NewTextHandler(&logs, nil)))
		if tree != nil {
			if tree.Root() != root {
				t.Errorf("%s: tree at %s, want %s", delegate, tree.Root(), root)
			}
			if err := tree.Close(); err != nil {
				t.Error(err)
			}
		}
		return tree, logs.String(), err
	}
	if _, logs, err := open("auto"); err != nil || !strings.Contains(logs, "started by systemd, but the cgroup tree is at cgroup_root") {
		t.Errorf("auto: %v; log:\n%s", err, logs)
	}
	if _, logs, err := open("off"); err != nil || logs != "" {
		t.Errorf("off: %v; log:\n%s", err, logs)
	}
	if !v2 || own == "/" {
		if tree, _, err := open("on"); !errors.Is(err, cgroups.ErrNotDelegated) {
			t.Errorf("on, in %s of a %s host: %v, %v; want ErrNotDelegated", own, cgroups.HostMode(), tree, err)
		}
	}
}
