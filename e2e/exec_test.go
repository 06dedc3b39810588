package e2e

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// leakyTier puts every tenant in a tier whose scopes hold 96 tasks, so that
// leaky's fork bomb hits pids.max quickly.
const leakyTier = `
[tiers.small]
scope_pids_max = 96
[tenants]
default_tier = "small"
`

// pidsDir is the directory of the cgroup path p in the hierarchy that
// holds the pids controller on this host.
func pidsDir(p string) string {
	if cgroups.HostMode() == cgroups.V2 {
		return filepath.Join("/sys/fs/cgroup", p)
	}
	return filepath.Join("/sys/fs/cgroup/pids", p)
}

// idsBelow reads file (cgroup.procs, or the thread list) of the cgroup path
// p and of every cgroup below it.
func idsBelow(t *testing.T, p, file string) []int {
	t.Helper()
	var out []int
	err := filepath.WalkDir(pidsDir(p), func(q string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		b, err := os.ReadFile(filepath.Join(q, file))
		if err != nil {
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			n, _ := strconv.Atoi(f)
			out = append(out, n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(out)
	return out
}

// pidsValue reads a pids controller file of the cgroup path p: the number
// it holds, or the value of key in it.
func pidsValue(t *testing.T, p, file, key string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(pidsDir(p), file))
	if err != nil {
		t.Fatal(err)
	}
	s := strings.TrimSpace(string(b))
	if key != "" {
		for _, l := range strings.Split(s, "\n") {
			if v, ok := strings.CutPrefix(l, key+" "); ok {
				s = v
			}
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil {
		t.Fatalf("%s of %s: %q", file, p, b)
	}
	return n
}

// forksRefused sums the "max" counts of pids.events at and below the cgroup
// path p, where a fork refused by p's limit is counted once: in the cgroup
// whose limit was hit and its parents (v2 since Linux 6.2), or in the
// cgroup of the task that forked (v1, and v2 before).
func forksRefused(t *testing.T, p string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(pidsDir(p), func(q string, d os.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(pidsDir(p), q)
		n += pidsValue(t, filepath.Join(p, rel), "pids.events", "max")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// onlyWorker checks that the scope's cgroup (all of it) holds no process
// but the worker, and that no zombie holds a pid there for long: its tasks
// are the worker's threads (a zombie still counts in pids.current until
// the worker, pid 1 of its sandbox, reaps it).
func onlyWorker(t *testing.T, scopeCgroup string, worker int, after string) {
	t.Helper()
	if procs := idsBelow(t, scopeCgroup, "cgroup.procs"); !slices.Equal(procs, []int{worker}) {
		t.Errorf("after %s: the scope's cgroup holds processes %v, want only the worker %d", after, procs, worker)
	}
	threads := "tasks"
	if cgroups.HostMode() == cgroups.V2 {
		threads = "cgroup.threads"
	}
	var cur, tasks int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		cur, tasks = pidsValue(t, scopeCgroup, "pids.current", ""), len(idsBelow(t, scopeCgroup, threads))
		if cur == tasks {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("after %s: pids.current %d, %d tasks: zombies are not reaped", after, cur, tasks)
			return
		}
	}
}

func inspectScope(t *testing.T, c *client.Client, key string) *scopedv1.Scope {
	t.Helper()
	s, err := c.InspectScope(context.Background(), &scopedv1.InspectScopeRequest{Scope: key})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestExecLeftoversKilled: whatever an exec invocation starts is killed
// when it ends, by cgroup: sleepers in a session of their own (setsid) or
// orphaned by a double fork, a fork bomb that hit pids.max, and what a
// program left when it missed its deadline. The scope then holds the
// worker alone, which reaped the orphans and serves the next invocation.
func TestExecLeftoversKilled(t *testing.T) {
	d := startDaemon(t, options{extra: leakyTier})
	c := d.client()
	deploy(t, c, "acme", "production", "leaky", bins.leaky)
	first, err := invoke(c, "acme", "production", "leaky", "ok")
	if err != nil || string(first.GetResult()) != "ok\n" {
		t.Fatalf("ok: %q, %v", first.GetResult(), err)
	}
	sc := inspectScope(t, c, "acme.production")
	if len(sc.GetWorkers()) != 1 {
		t.Fatalf("workers %v, want one", sc.GetWorkers())
	}
	cg, pid := sc.GetCgroup(), int(sc.GetWorkers()[0].GetPid())
	t.Logf("scope cgroup %s, worker %s pid %d, cgroup mode %s", cg, first.GetFigures().GetWorker(), pid, cgroups.HostMode())
	onlyWorker(t, cg, pid, "ok")

	r, err := invoke(c, "acme", "production", "leaky", "leave")
	if err != nil || string(r.GetResult()) != "left\n" {
		t.Fatalf("leave: %q, %v", r.GetResult(), err)
	}
	onlyWorker(t, cg, pid, "leave")

	hitsBefore := forksRefused(t, cg)
	r, err = invoke(c, "acme", "production", "leaky", "bomb 50")
	if err != nil {
		t.Fatalf("bomb: %v", err)
	}
	hits := forksRefused(t, cg) - hitsBefore
	t.Logf("bomb: %s, %d forks refused at pids.max", strings.TrimSpace(string(r.GetResult())), hits)
	if hits < 1 {
		t.Errorf("the bomb did not hit pids.max")
	}
	onlyWorker(t, cg, pid, "bomb")

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	_, err = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "leaky",
		Payload: []byte("hang"), Timeout: durationpb.New(2 * time.Second)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("hang: %v, want DeadlineExceeded", err)
	}
	onlyWorker(t, cg, pid, "a missed deadline")

	for _, l := range strings.Split(d.logs.String(), "\n") {
		if strings.Contains(l, "killed what the program left running") {
			t.Log(l[strings.Index(l, "msg="):])
		}
	}
	last, err := invoke(c, "acme", "production", "leaky", "ok")
	if err != nil || string(last.GetResult()) != "ok\n" {
		t.Fatalf("ok at the end: %q, %v", last.GetResult(), err)
	}
	if last.GetFigures().GetWorker() != first.GetFigures().GetWorker() {
		t.Errorf("worker %s at the end, %s at first: the exec worker should serve on", last.GetFigures().GetWorker(), first.GetFigures().GetWorker())
	}
}

// TestExecOutOfMemory: an exec program the OOM killer kills gives
// RESOURCE_EXHAUSTED "out of memory (limit …)" like a Go worker, is counted
// in the scope's OOM kills (inspect, metrics), and the worker serves on.
func TestExecOutOfMemory(t *testing.T) {
	addr := freePort(t)
	d := startDaemon(t, options{memoryMax: 64 << 20, metrics: addr})
	c := d.client()
	deploy(t, c, "acme", "production", "leaky", bins.leaky)
	first, err := invoke(c, "acme", "production", "leaky", "ok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = invoke(c, "acme", "production", "leaky", "oom")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "out of memory (limit 64 MiB)") {
		t.Fatalf("oom: %v, want ResourceExhausted \"out of memory (limit 64 MiB)\"", err)
	}
	sc := inspectScope(t, c, "acme.production")
	if n := sc.GetStats().GetOomKills(); n < 1 {
		t.Errorf("inspect: %d OOM kills, want at least 1", n)
	}
	next, err := invoke(c, "acme", "production", "leaky", "ok")
	if err != nil || string(next.GetResult()) != "ok\n" {
		t.Fatalf("after the OOM: %q, %v", next.GetResult(), err)
	}
	if next.GetFigures().GetWorker() != first.GetFigures().GetWorker() {
		t.Errorf("worker %s after the OOM, %s before: the program was the victim, the worker should serve on",
			next.GetFigures().GetWorker(), first.GetFigures().GetWorker())
	}
	onlyWorker(t, sc.GetCgroup(), int(sc.GetWorkers()[0].GetPid()), "oom")

	var oomKills, oomResults bool
	for deadline := time.Now().Add(10 * time.Second); !(oomKills && oomResults); time.Sleep(100 * time.Millisecond) {
		for _, l := range strings.Split(scrape(t, addr), "\n") {
			if !strings.Contains(l, `scope="acme.production"`) {
				continue
			}
			f := strings.Fields(l)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			switch {
			case strings.HasPrefix(l, "scoped_scope_oom_kills_total{") && v >= 1:
				oomKills = true
			case strings.HasPrefix(l, "scoped_invocations_total{") && strings.Contains(l, `result="oom"`) && v >= 1:
				oomResults = true
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/metrics: oom kills counted %v, oom invocations counted %v", oomKills, oomResults)
		}
	}
}
