package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

type whoami struct {
	Hostname     string `json:"hostname"`
	Pid          int    `json:"pid"`
	UIDMap       string `json:"uid_map"`
	Cgroup       string `json:"cgroup"`
	Payload      string `json:"payload"`
	InvocationID string `json:"invocation_id"`
}

// TestTwoTenantsDifferentSandboxes: the same extension deployed for two
// tenants runs in two scopes, each in its own sandbox: own pid namespace,
// own host uid range, own cgroup; warm calls reuse the worker.
func TestTwoTenantsDifferentSandboxes(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	for _, tenant := range []string{"acme", "globex"} {
		deploy(t, c, tenant, "production", "whoami", bins.whoami)
	}
	seen := map[string]whoami{}
	workers := map[string]string{}
	for round := range 2 {
		for _, tenant := range []string{"acme", "globex"} {
			r, err := invoke(c, tenant, "production", "whoami", "hello "+tenant)
			if err != nil {
				t.Fatalf("invoke for %s: %v", tenant, err)
			}
			var w whoami
			if err := json.Unmarshal(r.GetResult(), &w); err != nil {
				t.Fatalf("whoami result %q: %v", r.GetResult(), err)
			}
			f := r.GetFigures()
			t.Logf("%s round %d: scope %s worker %s cold %v %s: host %s pid %d uid_map %q",
				tenant, round, f.GetScope(), f.GetWorker(), f.GetCold(), f.GetDuration().AsDuration(), w.Hostname, w.Pid, w.UIDMap)
			if w.Payload != "hello "+tenant {
				t.Errorf("payload %q", w.Payload)
			}
			if want := tenant + ".production"; f.GetScope() != want || w.Hostname != want {
				t.Errorf("scope %q hostname %q, want %q", f.GetScope(), w.Hostname, want)
			}
			if w.Pid != 1 {
				t.Errorf("%s's worker is pid %d in its namespace, want 1", tenant, w.Pid)
			}
			if f.GetCold() != (round == 0) {
				t.Errorf("round %d: cold = %v", round, f.GetCold())
			}
			if cs := f.GetColdStart(); (cs != nil) != f.GetCold() || cs != nil && (cs.GetSandbox().AsDuration() <= 0 || cs.GetHandshake().AsDuration() <= 0) {
				t.Errorf("round %d: cold %v, cold start phases %v", round, f.GetCold(), cs)
			}
			if round == 1 && workers[tenant] != f.GetWorker() {
				t.Errorf("warm call used worker %s, not %s", f.GetWorker(), workers[tenant])
			}
			workers[tenant] = f.GetWorker()
			seen[tenant] = w
		}
	}
	if seen["acme"].UIDMap == seen["globex"].UIDMap {
		t.Errorf("both tenants map to the same host uids: %q", seen["acme"].UIDMap)
	}
	scopes, err := c.ListScopes(context.Background(), &scopedv1.ListScopesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	cgroupsSeen := map[string]bool{}
	pids := map[int32]bool{}
	for _, s := range scopes.GetScopes() {
		cgroupsSeen[s.GetCgroup()] = true
		for _, w := range s.GetWorkers() {
			pids[w.GetPid()] = true
			// The host sees the worker in the scope's cgroup.
			b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", w.GetPid()))
			if err != nil || !strings.Contains(string(b), w.GetCgroup()) {
				t.Errorf("worker %s (pid %d) is not in %s: %s %v", w.GetId(), w.GetPid(), w.GetCgroup(), b, err)
			}
		}
	}
	if len(cgroupsSeen) != 2 || len(pids) != 2 {
		t.Errorf("want 2 scopes with 2 cgroups and 2 worker pids, got %v and %v", cgroupsSeen, pids)
	}
}

// TestPolicyExtension: with isolation by environment and extension, each
// extension of a tenant gets its own scope and worker.
func TestPolicyExtension(t *testing.T) {
	d := startDaemon(t, options{isolation: `["environment", "extension"]`})
	c := d.client()
	deploy(t, c, "acme", "production", "whoami", bins.whoami)
	deploy(t, c, "acme", "production", "shout", bins.shout)
	r1, err := invoke(c, "acme", "production", "whoami", "x")
	if err != nil {
		t.Fatal(err)
	}
	r2, err := invoke(c, "acme", "production", "shout", "make me loud")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(r2.GetResult()); got != "MAKE ME LOUD" {
		t.Errorf("shout returned %q", got)
	}
	f1, f2 := r1.GetFigures(), r2.GetFigures()
	if f1.GetScope() != "acme.production.whoami" || f2.GetScope() != "acme.production.shout" || f1.GetWorker() == f2.GetWorker() {
		t.Errorf("scopes %s / %s, workers %s / %s", f1.GetScope(), f2.GetScope(), f1.GetWorker(), f2.GetWorker())
	}
}

// TestWorkerCrash: a worker that dies mid-call gives its caller a clear
// error; the next call gets a fresh worker; another scope does not notice.
func TestWorkerCrash(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "misbehave", bins.misbehave)
	deploy(t, c, "globex", "production", "misbehave", bins.misbehave)
	bystander, err := invoke(c, "globex", "production", "misbehave", "ok")
	if err != nil {
		t.Fatal(err)
	}
	first, err := invoke(c, "acme", "production", "misbehave", "ok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = invoke(c, "acme", "production", "misbehave", "exit")
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "died") {
		t.Errorf("crash mid-call: %v, want Unavailable naming the worker's death", err)
	}
	next, err := invoke(c, "acme", "production", "misbehave", "ok")
	if err != nil {
		t.Fatalf("call after the crash: %v", err)
	}
	if next.GetFigures().GetWorker() == first.GetFigures().GetWorker() || !next.GetFigures().GetCold() {
		t.Errorf("after the crash the call used worker %s (cold %v), the dead one was %s",
			next.GetFigures().GetWorker(), next.GetFigures().GetCold(), first.GetFigures().GetWorker())
	}
	again, err := invoke(c, "globex", "production", "misbehave", "ok")
	if err != nil || again.GetFigures().GetWorker() != bystander.GetFigures().GetWorker() {
		t.Errorf("the other scope noticed: %v, worker %s then %s", err, bystander.GetFigures().GetWorker(), again.GetFigures().GetWorker())
	}
	// A handler error is the extension's, not the worker's.
	_, err = invoke(c, "acme", "production", "misbehave", "fail")
	if status.Code(err) != codes.Aborted || !strings.Contains(err.Error(), "the handler refuses") {
		t.Errorf("handler error: %v, want Aborted with the handler's text", err)
	}
	// A result over max_result is refused, the worker survives.
	_, err = invoke(c, "acme", "production", "misbehave", "big")
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("oversized result: %v, want InvalidArgument", err)
	}
	if _, err := invoke(c, "acme", "production", "misbehave", "ok"); err != nil {
		t.Errorf("after an oversized result: %v", err)
	}
}

// TestDeadline: an invocation past its deadline gets DEADLINE_EXCEEDED and
// its worker is killed and replaced.
func TestDeadline(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "misbehave", bins.misbehave)
	first, err := invoke(c, "acme", "production", "misbehave", "ok")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "misbehave",
		Payload: []byte("hang"), Timeout: durationpb.New(time.Second)})
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("hanging call: %v, want DeadlineExceeded", err)
	}
	next, err := invoke(c, "acme", "production", "misbehave", "ok")
	if err != nil {
		t.Fatal(err)
	}
	if next.GetFigures().GetWorker() == first.GetFigures().GetWorker() {
		t.Error("the worker that missed its deadline still serves")
	}
}

// TestOutOfMemory: a worker OOM-killed by its scope's memory limit gives a
// clear RESOURCE_EXHAUSTED; the next call gets a fresh worker.
func TestOutOfMemory(t *testing.T) {
	d := startDaemon(t, options{memoryMax: 64 << 20})
	c := d.client()
	deploy(t, c, "acme", "production", "misbehave", bins.misbehave)
	deploy(t, c, "globex", "production", "misbehave", bins.misbehave)
	bystander, err := invoke(c, "globex", "production", "misbehave", "ok")
	if err != nil {
		t.Fatal(err)
	}
	_, err = invoke(c, "acme", "production", "misbehave", "oom")
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "out of memory (limit 64 MiB)") {
		t.Fatalf("OOM: %v, want ResourceExhausted \"out of memory (limit 64 MiB)\"", err)
	}
	if _, err := invoke(c, "acme", "production", "misbehave", "ok"); err != nil {
		t.Errorf("after the OOM: %v", err)
	}
	again, err := invoke(c, "globex", "production", "misbehave", "ok")
	if err != nil || again.GetFigures().GetWorker() != bystander.GetFigures().GetWorker() {
		t.Errorf("the other scope noticed: %v", err)
	}
}

// TestLogs: a worker's stderr lands in its scope's log ring, tagged with
// the invocation id.
func TestLogs(t *testing.T) {
	d := startDaemon(t, options{})
	c := d.client()
	deploy(t, c, "acme", "production", "misbehave", bins.misbehave)
	r, err := invoke(c, "acme", "production", "misbehave", "log")
	if err != nil {
		t.Fatal(err)
	}
	id := r.GetFigures().GetInvocationId()
	deadline := time.Now().Add(10 * time.Second)
	for {
		stream, err := c.Logs(context.Background(), &scopedv1.LogsRequest{Tenant: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		var found bool
		for {
			e, err := stream.Recv()
			if err != nil {
				break
			}
			if e.GetLine() == "a line for the log ring" && e.GetInvocationId() == id && e.GetScope() == "acme.production" {
				found = true
			}
		}
		if found {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log line tagged %s", id)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
