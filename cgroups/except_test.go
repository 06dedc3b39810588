package cgroups

import (
	"slices"
	"testing"
	"time"

	occ "github.com/opencontainers/cgroups"

	"github.com/scoped-io/scoped/internal/testutil"
)

// TestKillExceptSparesOne: processes that left their process group
// (setsid), were orphaned by a double fork, or keep forking are all killed
// by cgroup; the spared process survives, running and thawed; a node with
// nothing but it is left alone.
func TestKillExceptSparesOne(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.CheckLeaks(t, testRoot)
	tree := openTree(t)
	n := node(t, tree, Limits{PidsMax: 64}, "killexcept")

	keep := startHelper(t, "idle")
	join(t, n, keep)
	keep.release()

	// Every line leaves processes that its shell's process group and
	// parent do not hold: setsid, a double fork, a fork loop that never
	// ends, background sleeps; then the shell itself sleeps.
	const script = `read _
exec </dev/null >/dev/null 2>&1
setsid sh -c 'sleep 300 & exec sleep 300' &
( sh -c 'sleep 300' & )
setsid sh -c 'while :; do /bin/true; done' &
for i in 1 2 3 4 5 6 7 8 9 10; do sleep 300 & done
exec sleep 300`
	sh := startShell(t, script)
	join(t, n, sh)
	sh.release()
	var pids []int
	eventually(t, 10*time.Second, "16 processes besides the spared one", func() bool {
		pids, _ = n.pidsExcept(keep.pid())
		return len(pids) >= 16
	})

	killed, err := n.KillExcept(keep.pid(), 10*time.Second)
	t.Logf("mode %s: %d processes killed, %d listed before", n.mode, killed, len(pids))
	if err != nil {
		t.Fatal(err)
	}
	// 15 processes stay until killed; the fork loop's /bin/true come
	// and go.
	if killed < 15 {
		t.Errorf("KillExcept signalled %d processes, want at least 15", killed)
	}
	if left, err := n.Pids(); err != nil || !slices.Equal(left, []int{keep.pid()}) {
		t.Errorf("after KillExcept: Pids() = %v, %v; want [%d]", left, err, keep.pid())
	}
	for _, pid := range pids {
		if !gone(pid) {
			t.Errorf("pid %d survived KillExcept", pid)
		}
	}
	sh.wantKilled(5 * time.Second)
	if gone(keep.pid()) {
		t.Fatal("the spared process is gone")
	}
	if st, err := n.m.GetFreezerState(); err != nil || st == occ.Frozen {
		t.Errorf("freezer state after KillExcept: %v, %v", st, err)
	}
	// Nothing left to kill: no freeze, no signal; what every exec
	// invocation that leaves nothing behind pays.
	start := time.Now()
	for range 100 {
		if killed, err := n.KillExcept(keep.pid(), time.Second); killed != 0 || err != nil {
			t.Fatalf("KillExcept of a node with the spared process only = %d, %v", killed, err)
		}
	}
	t.Logf("KillExcept with nothing to kill: %v per call", time.Since(start)/100)
	// The spared process still runs: it dies of SIGKILL, not of anything
	// before.
	if err := n.Kill(); err != nil {
		t.Fatal(err)
	}
	keep.wantKilled(5 * time.Second)
}

// TestOOMKillsCountedWhere: an OOM kill is counted in the victim's own
// cgroup, and in its parent (where the limit is) exactly when
// OOMKillsReachParents says so.
func TestOOMKillsCountedWhere(t *testing.T) {
	testutil.RequiresRoot(t)
	testutil.CheckLeaks(t, testRoot)
	tree := openTree(t)
	scope := node(t, tree, Limits{MemoryMax: 64 << 20}, "oomwhere")
	leaf, err := scope.Child("worker", Limits{})
	if err != nil {
		t.Fatal(err)
	}
	hog := startHelper(t, "hog")
	join(t, leaf, hog)
	hog.release()
	hog.wantKilled(30 * time.Second)

	inLeaf, err := leaf.OOMKills()
	if err != nil {
		t.Fatal(err)
	}
	inScope, err := scope.OOMKills()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("mode %s: oom kills in the leaf %d, in the scope %d, reach parents %v", scope.mode, inLeaf, inScope, scope.OOMKillsReachParents())
	if inLeaf < 1 {
		t.Errorf("leaf OOMKills = %d, want >= 1", inLeaf)
	}
	if want := scope.OOMKillsReachParents(); (inScope >= 1) != want {
		t.Errorf("scope OOMKills = %d, but OOMKillsReachParents = %v", inScope, want)
	}
	if st := stats(t, scope); st.OOMKills != inScope {
		t.Errorf("Stats().OOMKills = %d, OOMKills() = %d", st.OOMKills, inScope)
	}
}
