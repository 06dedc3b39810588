package cgroups

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	occ "github.com/opencontainers/cgroups"

	"github.com/scoped-io/scoped/internal/testutil"
)

func TestStartedBySystemd(t *testing.T) {
	for _, c := range []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"SYSTEMD_EXEC_PID": "42"}, true},
		// Inherited from a service this process runs under (a CI runner):
		// not started by systemd itself.
		{map[string]string{"SYSTEMD_EXEC_PID": "7", "INVOCATION_ID": "abc", "NOTIFY_SOCKET": "/run/x"}, false},
		{map[string]string{"INVOCATION_ID": "0123456789abcdef"}, true}, // systemd < 248
		{map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}, true},
		{map[string]string{"SYSTEMD_EXEC_PID": "", "INVOCATION_ID": "abc"}, true},
	} {
		if got := StartedBySystemd(func(k string) string { return c.env[k] }, 42); got != c.want {
			t.Errorf("%v: %v, want %v", c.env, got, c.want)
		}
	}
}

func TestUnifiedCgroup(t *testing.T) {
	hybrid := "12:cpu,cpuacct:/system.slice/scoped.service\n1:name=systemd:/system.slice/scoped.service\n0::/system.slice/scoped.service\n"
	for in, want := range map[string]string{
		"0::/system.slice/scoped.service\n": "/system.slice/scoped.service",
		hybrid:                              "/system.slice/scoped.service",
		"0::/\n":                            "/",
		"0::/user.slice/x.scope":            "/user.slice/x.scope",
	} {
		if got, err := UnifiedCgroup(in); err != nil || got != want {
			t.Errorf("UnifiedCgroup(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "4:memory:/x\n", "garbage"} {
		if got, err := UnifiedCgroup(in); !errors.Is(err, ErrNotDelegated) {
			t.Errorf("UnifiedCgroup(%q) = %q, %v; want ErrNotDelegated", in, got, err)
		}
	}
}

func TestDetect(t *testing.T) {
	const pid = 1234
	exec := map[string]string{"SYSTEMD_EXEC_PID": strconv.Itoa(pid), "INVOCATION_ID": "abc"}
	inherited := map[string]string{"SYSTEMD_EXEC_PID": "1", "INVOCATION_ID": "abc"}
	old := map[string]string{"NOTIFY_SOCKET": "/run/systemd/notify"}
	for _, c := range []struct {
		name    string
		cgroup  string
		env     map[string]string
		mode    Mode
		systemd bool   // auto-detection
		want    string // the service, "" for ErrNotDelegated
		started bool
	}{
		{"service", "0::/system.slice/scoped.service\n", exec, V2, true, "/system.slice/scoped.service", true},
		{"old systemd", "0::/system.slice/scoped.service\n", old, V2, true, "/system.slice/scoped.service", true},
		{"template", "0::/system.slice/system-scoped.slice/scoped@prod.service\n", exec, V2, true,
			"/system.slice/system-scoped.slice/scoped@prod.service", true},
		{"in its leaf already", "0::/system.slice/scoped.service/supervisor\n", exec, V2, true, "/system.slice/scoped.service", true},
		{"hybrid", "1:name=systemd:/system.slice/scoped.service\n0::/system.slice/scoped.service\n", exec, Hybrid, true, "", true},
		{"v1", "1:name=systemd:/system.slice/scoped.service\n", exec, V1, true, "", true},
		{"no systemd", "0::/system.slice/scoped.service\n", nil, V2, true, "", false},
		{"inherited", "0::/system.slice/runner.service\n", inherited, V2, true, "", false},
		{"a session scope", "0::/user.slice/user-0.slice/session-3.scope\n", exec, V2, true, "", true},
		{"root cgroup", "0::/\n", exec, V2, true, "", true},
		{"bare supervisor", "0::/supervisor\n", exec, V2, true, "", true},
		{"deleted", "0::/system.slice/scoped.service (deleted)\n", exec, V2, true, "", true},
		{"dots", "0::/system.slice/../x.service\n", exec, V2, true, "", true},
		{"relative", "0::system.slice/x.service\n", exec, V2, true, "", true},
		// Forced (cgroup_delegate = "on"): any cgroup below the root.
		{"forced scope", "0::/user.slice/user-0.slice/session-3.scope\n", nil, V2, false, "/user.slice/user-0.slice/session-3.scope", false},
		{"forced container", "0::/kubepods/pod1/c1\n", nil, V2, false, "/kubepods/pod1/c1", false},
		{"forced root", "0::/\n", nil, V2, false, "", false},
		{"forced hybrid", "0::/x\n", nil, Hybrid, false, "", false},
	} {
		d, err := detect(c.cgroup, func(k string) string { return c.env[k] }, pid, c.mode, c.systemd)
		if c.want == "" {
			if !errors.Is(err, ErrNotDelegated) {
				t.Errorf("%s: %+v, %v; want ErrNotDelegated", c.name, d, err)
			}
		} else if err != nil || d.Service != c.want {
			t.Errorf("%s: %+v, %v; want service %s", c.name, d, err, c.want)
		}
		if d.Systemd != c.started {
			t.Errorf("%s: Systemd %v, want %v", c.name, d.Systemd, c.started)
		}
	}
	d := Delegation{Service: "/system.slice/scoped.service"}
	if d.Leaf() != "/system.slice/scoped.service/supervisor" || d.Root() != "/system.slice/scoped.service/scopes" {
		t.Errorf("leaf %s, root %s", d.Leaf(), d.Root())
	}
}

// TestOpenDelegated plays systemd: a "service" cgroup with a process in
// it, which OpenDelegated moves into its leaf before it builds the tree
// beside it; then a second run after a crash of the first.
func TestOpenDelegated(t *testing.T) {
	testutil.RequiresRoot(t)
	if HostMode() != V2 {
		t.Skipf("the delegated layout needs a pure cgroup v2 host, this one is %s", HostMode())
	}
	svc := fmt.Sprintf("/scoped-test-deleg-%d.service", os.Getpid())
	dir := filepath.Join("/sys/fs/cgroup", svc)
	testutil.CheckLeaks(t, svc)
	// As systemd does for a service with Delegate=yes.
	for _, c := range []string{"cpu", "memory", "pids"} {
		if err := occ.WriteFile("/sys/fs/cgroup", "cgroup.subtree_control", "+"+c); err != nil {
			t.Skipf("needs the %s controller on cgroup v2: %v", c, err)
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if n, err := Load(svc); err == nil {
			if err := n.Remove(); err != nil {
				t.Errorf("remove %s: %v", svc, err)
			}
		}
	})
	daemon := startHelper(t, "idle")
	if err := occ.WriteCgroupProc(dir, daemon.pid()); err != nil {
		t.Fatal(err)
	}
	d := Delegation{Service: svc}

	// A cgroup given no controllers (a unit without Delegate=yes, say):
	// refused before anything moves.
	if err := os.Mkdir(filepath.Join(dir, "bare"), 0o755); err != nil {
		t.Fatal(err)
	}
	if tree, err := OpenDelegated(Delegation{Service: svc + "/bare"}, daemon.pid(), 500); !errors.Is(err, ErrNotDelegated) || !strings.Contains(err.Error(), "cpu, memory, pids") {
		t.Fatalf("OpenDelegated of a cgroup without controllers = %v, %v; want ErrNotDelegated", tree, err)
	}
	if err := os.Remove(filepath.Join(dir, "bare")); err != nil {
		t.Fatal(err)
	}
	if err := VerifyUnified(daemon.pid(), svc); err != nil {
		t.Fatal(err)
	}

	// A stranger in the service cgroup: not the daemon's own.
	other := startHelper(t, "idle")
	if err := occ.WriteCgroupProc(dir, other.pid()); err != nil {
		t.Fatal(err)
	}
	if tree, err := OpenDelegated(d, daemon.pid(), 500); !errors.Is(err, ErrNotDelegated) {
		t.Fatalf("OpenDelegated with another process in %s = %v, %v; want ErrNotDelegated", svc, tree, err)
	}
	_ = other.cmd.Process.Kill()
	<-other.done

	tree, err := OpenDelegated(d, daemon.pid(), 500)
	if err != nil {
		t.Fatal(err)
	}
	if tree.Root() != svc+"/scopes" || tree.Mode() != V2 {
		t.Errorf("root %s (%s), want %s/scopes", tree.Root(), tree.Mode(), svc)
	}
	if err := VerifyUnified(daemon.pid(), svc+"/supervisor"); err != nil {
		t.Error(err)
	}
	if w, _ := occ.ReadFile(dir+"/supervisor", "cpu.weight"); strings.TrimSpace(w) != "500" {
		t.Errorf("leaf's cpu.weight %q, want 500", w)
	}
	if procs, _ := occ.GetPids(dir); len(procs) != 0 {
		t.Errorf("processes in the inner node %s: %v", svc, procs)
	}
	n, err := tree.Node(Limits{CPUWeight: 300, PidsMax: 20}, "standard", "acme", "production")
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := occ.ReadFile(filepath.Join(dir, "scopes/standard/acme/production"), "cpu.weight"); strings.TrimSpace(w) != "300" {
		t.Errorf("scope's cpu.weight %q, want 300", w)
	}
	worker := startHelper(t, "idle")
	join(t, n, worker)
	worker.release()

	// The daemon crashes; a new one starts in the leaf (systemd's
	// DelegateSubgroup=, or where the crashed one left it) and finds the
	// old tree with its worker still running.
	again, err := OpenDelegated(d, daemon.pid(), 0)
	if err != nil {
		t.Fatal(err)
	}
	if w, _ := occ.ReadFile(dir+"/supervisor", "cpu.weight"); strings.TrimSpace(w) != "500" {
		t.Errorf("leaf's cpu.weight %q after a second run with weight 0, want 500 (left alone)", w)
	}
	if removed, err := again.Cleanup(); err != nil || removed != 3 {
		t.Errorf("Cleanup = %d, %v; want 3 nodes", removed, err)
	}
	worker.wantKilled(5 * time.Second)
	if err := again.Close(); err != nil {
		t.Fatal(err)
	}
	// What the daemon leaves at stop: its own leaf, which systemd removes
	// with the service's cgroup once the daemon is gone.
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		if e.IsDir() {
			left = append(left, e.Name())
		}
	}
	if strings.Join(left, " ") != "supervisor" {
		t.Errorf("left in %s after Close: %v, want only the supervisor leaf", svc, left)
	}
}
