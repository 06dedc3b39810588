package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	occ "github.com/opencontainers/cgroups"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestDelegated starts the daemon as systemd starts a service with
// Delegate=yes — in a cgroup of its own (here /scoped-test-deleg-<pid>.service),
// with INVOCATION_ID set — and checks the delegated layout: the daemon in
// <service>/supervisor with supervisor_cpu_weight, the scopes under
// <service>/scopes/<tier>/<tenant>/<scope>, no process in an inner node;
// after a kill -9 a new daemon (started in the leaf, as systemd's
// DelegateSubgroup= does) removes what the dead one left and serves; after a
// stop only the supervisor leaf is left, for systemd to remove. Pure cgroup
// v2 only (the delegated layout is a cgroup v2 thing).
func TestDelegated(t *testing.T) {
	requireBins(t)
	if m := cgroups.HostMode(); m != cgroups.V2 {
		t.Skipf("the delegated layout needs a pure cgroup v2 host, this one is %s", m)
	}
	const mnt = "/sys/fs/cgroup"
	svc := fmt.Sprintf("/scoped-test-deleg-%d.service", os.Getpid())
	dir := filepath.Join(mnt, svc)
	// As systemd does above a service with Delegate=yes.
	for _, c := range []string{"cpu", "memory", "pids"} {
		if err := occ.WriteFile(mnt, "cgroup.subtree_control", "+"+c); err != nil {
			t.Skipf("needs the %s controller on cgroup v2: %v", c, err)
		}
	}
	testutil.CheckLeaks(t, svc)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { // after the daemon's stop (cleanups run last first)
		if n, err := cgroups.Load(svc); err == nil {
			if err := n.Remove(); err != nil {
				t.Errorf("remove %s: %v", svc, err)
			}
		}
	})
	d := startDaemon(t, options{delegate: "auto", top: "supervisor_cpu_weight = 700", cgroup: svc,
		// systemd < 248 sets no SYSTEMD_EXEC_PID; one the test inherited
		// would name another process.
		env: []string{"INVOCATION_ID=0123456789abcdef0123456789abcdef", "SYSTEMD_EXEC_PID="}})
	checkLeaf := func() {
		t.Helper()
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", d.cmd.Process.Pid))
		if got, _ := cgroups.UnifiedCgroup(string(b)); err != nil || got != svc+"/supervisor" {
			t.Errorf("the daemon is in %q (%v), want %s/supervisor", got, err, svc)
		}
		if procs, err := occ.GetPids(dir); err != nil || len(procs) > 0 {
			t.Errorf("processes in the inner node %s: %v %v", svc, procs, err)
		}
		if w, err := occ.ReadFile(filepath.Join(dir, "supervisor"), "cpu.weight"); strings.TrimSpace(w) != "700" {
			t.Errorf("the leaf's cpu.weight %q (%v), want 700", w, err)
		}
		if want := "cgroup_root=" + svc + "/scopes "; !strings.Contains(d.logs.String(), want) {
			t.Errorf("the log says nothing of %s:\n%s", want, d.logs.String())
		}
	}
	checkLeaf()
	// Unlike systemd (251 and later), the test did not mark the cgroup.
	if !strings.Contains(d.logs.String(), "systemd did not mark the service's cgroup as delegated") {
		t.Errorf("no warning about the unmarked cgroup:\n%s", d.logs.String())
	}

	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	checkScope := func() {
		t.Helper()
		if _, err := invoke(c, "acme", "production", "whoami", "{}"); err != nil {
			t.Fatal(err)
		}
		r, err := c.ListScopes(context.Background(), &scopedv1.ListScopesRequest{Tenant: "acme"})
		if err != nil || len(r.GetScopes()) != 1 {
			t.Fatalf("ListScopes: %v, %v", r, err)
		}
		s := r.GetScopes()[0]
		if want := svc + "/scopes/standard/acme/production"; s.GetCgroup() != want {
			t.Errorf("scope's cgroup %s, want %s", s.GetCgroup(), want)
		}
		for _, w := range s.GetWorkers() {
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", w.GetPid()))
			if got, _ := cgroups.UnifiedCgroup(string(b)); err != nil || got != w.GetCgroup() || !strings.HasPrefix(got, s.GetCgroup()+"/") {
				t.Errorf("worker %d is in %q (%v), want %s", w.GetPid(), got, err, w.GetCgroup())
			}
		}
	}
	checkScope()

	// A crash: the worker stays, in the dead daemon's tree; the next daemon
	// starts in the leaf.
	d.kill9()
	d.cgroup = svc + "/supervisor"
	d.start()
	if !strings.Contains(d.logs.String(), "removed cgroups left by a previous run") {
		t.Errorf("the restarted daemon did not clean the dead one's tree:\n%s", d.logs.String())
	}
	checkLeaf()
	c = d.client()
	checkScope()

	d.stop()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		if e.IsDir() {
			left = append(left, e.Name())
		}
	}
	if !slices.Equal(left, []string{"supervisor"}) {
		t.Errorf("left in %s after the stop: %v, want only the supervisor leaf", svc, left)
	}
	if n, err := cgroups.Load(svc); err == nil {
		if pids, _ := n.Pids(); len(pids) > 0 {
			t.Errorf("processes left in %s: %v", svc, pids)
		}
	}
}
