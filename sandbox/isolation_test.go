package sandbox_test

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/testutil"
	"github.com/scoped-io/scoped/sandbox"
)

// hostUID reads the real uid of pid as the host sees it.
func hostUID(t *testing.T, pid int) int {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "Uid:"); ok {
			uid, _ := strconv.Atoi(strings.Fields(v)[0])
			return uid
		}
	}
	t.Fatalf("no Uid line for pid %d", pid)
	return -1
}

// waitOutput waits until the sandbox has printed something.
func waitOutput(t *testing.T, b *box) string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if out := b.stdout.String(); out != "" {
			return strings.TrimSpace(out)
		}
	}
	t.Fatalf("no output; stderr %q", b.stderr.String())
	return ""
}

// TestScopesIsolated: two scopes run as different, unprivileged host uids,
// see none of each other's processes and cannot read each other's /tmp.
func TestScopesIsolated(t *testing.T) {
	e := newEnv(t)
	a := e.start("alpha", cgroups.Limits{}, "tmp-secret")
	if out := waitOutput(t, a); out != "written" {
		t.Fatalf("alpha: %q", out)
	}
	pidA := a.Pid()
	secret := fmt.Sprintf("/proc/%d/root/tmp/secret", pidA)
	if b, err := os.ReadFile(secret); err != nil || string(b) != "alpha's secret" {
		t.Fatalf("the host cannot see alpha's secret at %s (%v): test set-up is wrong", secret, err)
	}

	b := e.start("beta", cgroups.Limits{}, "read-other-tmp",
		"READ_PATHS="+strings.Join([]string{secret, "/tmp/secret", "/proc/1/root/tmp/secret"}, " "))
	if out := b.wait(t); !strings.HasPrefix(out, "REFUSED") {
		t.Errorf("beta read alpha's /tmp: %s", out)
	}
	ps := e.start("beta", cgroups.Limits{}, "ps")
	if out := ps.wait(t); out != "1" {
		t.Errorf("beta sees processes %q, want only itself", out)
	}

	uidA := hostUID(t, pidA)
	sleeper := e.start("beta", cgroups.Limits{}, "sleep")
	uidB := hostUID(t, sleeper.Pid())
	t.Logf("host uids: alpha %d, beta %d", uidA, uidB)
	if uidA == uidB {
		t.Errorf("two scopes share host uid %d", uidA)
	}
	for _, uid := range []int{uidA, uidB} {
		if uid < sandbox.DefaultIDBase {
			t.Errorf("sandbox runs as host uid %d, below the sandbox range", uid)
		}
	}
}

// TestRlimitsAndStderr: rlimits are set and stderr reaches the caller.
func TestRlimitsAndStderr(t *testing.T) {
	e := newEnv(t)
	b := e.start("alpha", cgroups.Limits{}, "rlimits")
	out := b.wait(t)
	want := fmt.Sprintf("nofile %d %d core 0 0", sandbox.DefaultNoFile, sandbox.DefaultNoFile)
	if out != want {
		t.Errorf("rlimits %q, want %q", out, want)
	}
	if got := strings.TrimSpace(b.stderr.String()); got != "to stderr" {
		t.Errorf("stderr %q", got)
	}
}

// TestDestroyRemovesEverything: after Destroy, no process, cgroup leaf,
// state or rootfs directory of the sandbox remains (CheckLeaks covers the
// cgroups, mounts and processes).
func TestDestroyRemovesEverything(t *testing.T) {
	e := newEnv(t)
	b := e.start("alpha", cgroups.Limits{}, "sleep")
	pid := b.Pid()
	if err := b.Destroy(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err == nil {
		t.Errorf("process %d survives Destroy", pid)
	}
	for _, d := range []string{"containers", "rootfs", "native"} {
		entries, _ := os.ReadDir(e.state + "/" + d)
		if len(entries) > 0 {
			t.Errorf("%s/%s still holds %d entries", e.state, d, len(entries))
		}
	}
}

// TestCleanupAfterCrash: a process starts two sandboxes and dies by
// SIGKILL, as a crashing daemon would; Cleanup finds their state, kills
// their processes and removes their cgroups and rootfs.
func TestCleanupAfterCrash(t *testing.T) {
	crashAndCleanup(t, []string{"alpha", "beta"}, 2)
}

// TestCleanupManyAfterCrash: Cleanup destroys more sandboxes than it runs
// at once, several in each scope, and leaves none of them.
func TestCleanupManyAfterCrash(t *testing.T) {
	crashAndCleanup(t, []string{"s0", "s1", "s2", "s3", "s4"}, 2*sandbox.CleanupParallel+3)
}

// crashAndCleanup has a process start n sandboxes in the scopes (taking
// turns) and die by SIGKILL, then checks that Cleanup removes them all.
func crashAndCleanup(t *testing.T, scopes []string, n int) {
	e := newEnv(t)
	for _, scope := range scopes {
		if _, err := e.tree.Node(cgroups.Limits{}, "t", scope); err != nil {
			t.Fatal(err)
		}
	}
	owner := testutil.HelperCommand(t, crashOwnerHelper, e.state)
	owner.Env = []string{testutil.HelperEnv(crashOwnerHelper), "CGROUP=" + testRoot + "/t",
		"SCOPES=" + strings.Join(scopes, " "), "SANDBOXES=" + strconv.Itoa(n), "LAUNCHER=" + *launcher}
	out, err := owner.Output()
	if st := owner.ProcessState; st == nil || st.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("the owner did not die by SIGKILL: %v, %s", err, out)
	}
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("owner output %q", out)
		}
		pids = append(pids, pid)
	}
	if len(pids) != n {
		t.Fatalf("owner started %d sandboxes, want %d: %q", len(pids), n, out)
	}
	for _, pid := range pids {
		if !alive(pid) {
			t.Fatalf("sandbox process %d died with its owner: the test would prove nothing", pid)
		}
	}
	removed, err := sandbox.Cleanup(e.state)
	if err != nil {
		t.Fatal(err)
	}
	if removed != n {
		t.Errorf("Cleanup removed %d sandboxes, want %d", removed, n)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d survives Cleanup", pid)
		}
	}
	for _, d := range []string{"containers", "rootfs", "native"} {
		if entries, _ := os.ReadDir(filepath.Join(e.state, d)); len(entries) > 0 {
			t.Errorf("%s/%s still holds %d entries", e.state, d, len(entries))
		}
	}
	// Only the scopes' nodes are left below them, in every hierarchy.
	for _, scope := range scopes {
		n, err := cgroups.Load(testRoot + "/t/" + scope)
		if err != nil {
			t.Fatal(err)
		}
		if pids, err := n.Pids(); err != nil || len(pids) > 0 {
			t.Errorf("scope %s: processes %v left (%v)", scope, pids, err)
		}
	}
	for _, base := range cgroupBases(t) {
		for _, scope := range scopes {
			entries, _ := os.ReadDir(filepath.Join(base, testRoot, "t", scope))
			for _, en := range entries {
				if en.IsDir() {
					t.Errorf("cgroup %s left", filepath.Join(base, testRoot, "t", scope, en.Name()))
				}
			}
		}
	}
}

// cgroupBases are the mounted cgroup hierarchies.
func cgroupBases(t *testing.T) []string {
	t.Helper()
	if cgroups.HostMode() == cgroups.V2 {
		return []string{"/sys/fs/cgroup"}
	}
	entries, err := os.ReadDir("/sys/fs/cgroup")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, en := range entries {
		if en.IsDir() { // not the cpu -> cpu,cpuacct links
			out = append(out, filepath.Join("/sys/fs/cgroup", en.Name()))
		}
	}
	return out
}

// alive reports whether pid is a live (not zombie) process. Orphans are
// reaped by the machine's init, which may take its time.
func alive(pid int) bool {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	i := strings.LastIndexByte(string(st), ')')
	return i < 0 || !strings.HasPrefix(string(st[i+1:]), " Z")
}

// crashOwnerHelper makes the test binary start $SANDBOXES sleeping
// sandboxes in the scopes $SCOPES (taking turns) under $CGROUP, in the state
// dir it is given, print their pids and SIGKILL itself.
var crashOwnerHelper = testutil.Helper("sandbox-crash-owner", func(args []string) int {
	if len(args) != 1 {
		return 2
	}
	crashOwner(args[0])
	return 3 // not reached
})

func crashOwner(state string) {
	self, _ := os.Executable()
	scopes := strings.Fields(os.Getenv("SCOPES"))
	n, _ := strconv.Atoi(os.Getenv("SANDBOXES"))
	ids, _ := sandbox.NewIDAllocator(sandbox.DefaultIDBase, sandbox.DefaultIDSize, 16)
	args, helperEnv := insideArgs("sleep")
	for i := range n {
		scope := scopes[i%len(scopes)]
		r, _ := ids.Acquire(scope)
		id := fmt.Sprintf("crash%d", i)
		s, err := sandbox.Start(sandbox.Config{
			ID: id, StateDir: state, Cgroup: os.Getenv("CGROUP") + "/" + scope + "/" + id,
			IDs: r, Binary: self, Args: args, Env: []string{helperEnv},
			Launcher: sandbox.Launcher(os.Getenv("LAUNCHER")),
		})
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println(s.Pid())
	}
	_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
}
