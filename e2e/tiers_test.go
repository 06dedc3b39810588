package e2e

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const tiersTOML = `
[tiers.free]
cpu_weight = 50
cpu_max = 0.5
rate = 2.0
burst = 2
cpu_time = "300ms"
[tiers.pro]
cpu_weight = 400
memory_max = 1073741824
max_concurrent = 1
`

// cgroupValue reads a control file of the cgroup at rel below the daemon's
// root, from the hierarchy that holds it on this host.
func cgroupValue(t *testing.T, d *daemon, rel, v2file, v1ctl, v1file string) string {
	t.Helper()
	b, err := os.ReadFile(cgroupFile(d, rel, v2file, v1ctl, v1file))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// cgroupFile is the path of a control file of the cgroup at rel below the
// daemon's root, in the hierarchy that holds it on this host.
func cgroupFile(d *daemon, rel, v2file, v1ctl, v1file string) string {
	if cgroups.HostMode() != cgroups.V2 {
		return filepath.Join("/sys/fs/cgroup", v1ctl, d.root, rel, v1file)
	}
	return filepath.Join("/sys/fs/cgroup", d.root, rel, v2file)
}

// cpuWeightOf is a node's CPU weight as cgroup v2 writes it (v1 shares are
// weight × 10.24).
func cpuWeightOf(t *testing.T, d *daemon, rel string) string {
	t.Helper()
	if cgroups.HostMode() == cgroups.V2 {
		return cgroupValue(t, d, rel, "cpu.weight", "", "")
	}
	v := cgroupValue(t, d, rel, "", "cpu", "cpu.shares")
	n, _ := strconv.ParseUint(v, 10, 64)
	return strconv.FormatUint(n*100/1024, 10)
}

func retryHint(err error) time.Duration {
	st, _ := status.FromError(err)
	for _, d := range st.Details() {
		if ri, ok := d.(*errdetails.RetryInfo); ok {
			return ri.GetRetryDelay().AsDuration()
		}
	}
	return 0
}

func invokeSpin(c *client.Client, tenant string, ms int, timeout time.Duration) (*scopedv1.InvokeResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	req := &scopedv1.InvokeRequest{Tenant: tenant, Environment: "production", Extension: "spin", Payload: []byte(strconv.Itoa(ms))}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	return c.Invoke(ctx, req)
}

// TestTiers: tenants in tiers get the tier's cgroup limits in the hierarchy
// tier → tenant → scope, its rate, concurrency and CPU-time limits, and
// suspension; assignments persist across restarts and a reload applies new
// tier values to live scopes.
func TestTiers(t *testing.T) {
	d := startDaemon(t, options{extra: tiersTOML})
	c := d.client()
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "initech"} {
		deploy(t, c, tenant, "production", "spin", bins.spin)
	}
	// acme → free with scopectl (as root), globex → pro with the API.
	if out, err := exec.Command(bins.scopectl, "--socket", d.socket, "tenant", "set", "acme", "--tier", "free").CombinedOutput(); err != nil {
		t.Fatalf("scopectl tenant set: %v: %s", err, out)
	}
	if ti, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "globex", Tier: "pro"}); err != nil || ti.GetTier() != "pro" || !ti.GetAssigned() {
		t.Fatalf("SetTenant globex pro = %v, %v", ti, err)
	}
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "globex", Tier: "gold"}); status.Code(err) != codes.NotFound {
		t.Errorf("SetTenant to an unknown tier: %v, want NotFound", err)
	}
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "../x", Tier: "pro"}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("SetTenant ../x: %v, want InvalidArgument", err)
	}

	// Hierarchy and limits on the real cgroup tree.
	for _, tenant := range []string{"acme", "globex"} {
		if _, err := invokeSpin(c, tenant, 1, 0); err != nil {
			t.Fatalf("first invocation of %s: %v", tenant, err)
		}
	}
	for tenant, tier := range map[string]string{"acme": "free", "globex": "pro"} {
		s, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: tenant + ".production"})
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(d.root, tier, tenant, "production"); s.GetCgroup() != want || s.GetTier() != tier {
			t.Errorf("%s: cgroup %s tier %s, want %s in %s", tenant, s.GetCgroup(), s.GetTier(), want, tier)
		}
	}
	// One tenant per tier: each tier node weighs what its tenant does.
	for rel, want := range map[string]string{"free": "50", "free/acme": "50", "pro": "400", "pro/globex": "400", "free/acme/production": "100"} {
		if got := cpuWeightOf(t, d, rel); got != want {
			t.Errorf("cpu weight of %s = %s, want %s", rel, got, want)
		}
	}
	if cgroups.HostMode() == cgroups.V2 {
		if got := cgroupValue(t, d, "free/acme", "cpu.max", "", ""); got != "50000 100000" {
			t.Errorf("free tenant cpu.max = %q, want 50000 100000", got)
		}
		if got := cgroupValue(t, d, "pro/globex", "memory.max", "", ""); got != "1073741824" {
			t.Errorf("pro tenant memory.max = %q", got)
		}
	} else {
		if got := cgroupValue(t, d, "free/acme", "", "cpu", "cpu.cfs_quota_us"); got != "50000" {
			t.Errorf("free tenant cfs quota = %q, want 50000", got)
		}
		if got := cgroupValue(t, d, "pro/globex", "", "memory", "memory.limit_in_bytes"); got != "1073741824" {
			t.Errorf("pro tenant memory limit = %q", got)
		}
	}

	// Rate: 2/s with a burst of 2. The first call above took a token; a
	// quick burst runs dry and gets RESOURCE_EXHAUSTED with a retry hint.
	var refused error
	for range 4 {
		if _, err := invokeSpin(c, "acme", 1, 0); err != nil {
			refused = err
			break
		}
	}
	if status.Code(refused) != codes.ResourceExhausted || !strings.Contains(refused.Error(), "rate limit") {
		t.Fatalf("a burst over the rate: %v, want ResourceExhausted rate limit", refused)
	}
	hint := retryHint(refused)
	if hint <= 0 || hint > time.Second {
		t.Errorf("retry hint %s, want within (0, 1s] at 2/s", hint)
	}
	time.Sleep(hint + 50*time.Millisecond)
	if _, err := invokeSpin(c, "acme", 1, 0); err != nil {
		t.Errorf("after the hinted wait: %v", err)
	}

	// CPU time: free allows 300ms per invocation; 5 s of spinning is
	// stopped, reported, and the worker recycled.
	time.Sleep(time.Second)
	before, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "acme.production"})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = invokeSpin(c, "acme", 5000, 0)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "cpu time limit exceeded") {
		t.Fatalf("5 s of CPU under a 300ms limit: %v, want ResourceExhausted cpu time limit exceeded", err)
	}
	t.Logf("cpu time limit: %v after %s", err, time.Since(start).Round(time.Millisecond))
	waitFor(t, 10*time.Second, "the over-limit worker to go", func() bool {
		s, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "acme.production"})
		if err != nil {
			return false
		}
		for _, w := range s.GetWorkers() {
			for _, b := range before.GetWorkers() {
				if w.GetId() == b.GetId() {
					return false
				}
			}
		}
		return true
	})

	// Concurrency: pro allows one invocation in flight per tenant.
	var wg sync.WaitGroup
	wg.Add(1)
	var longErr error
	go func() {
		defer wg.Done()
		_, longErr = invokeSpin(c, "globex", 1500, 0)
	}()
	waitFor(t, 10*time.Second, "globex's invocation in flight", func() bool {
		r, err := c.ListTenants(ctx, &scopedv1.ListTenantsRequest{Tenant: "globex"})
		return err == nil && len(r.GetTenants()) == 1 && r.GetTenants()[0].GetInFlight() == 1
	})
	_, err = invokeSpin(c, "globex", 1, 0)
	if status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "in flight") || retryHint(err) <= 0 {
		t.Errorf("a second invocation in flight: %v, want ResourceExhausted with a hint", err)
	}
	wg.Wait()
	if longErr != nil {
		t.Errorf("the admitted invocation: %v", longErr)
	}

	// Reload applies new tier values to live scopes.
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	newCfg := strings.Replace(string(cfg), "cpu_weight = 400", "cpu_weight = 800", 1)
	if err := os.WriteFile(d.config, []byte(newCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "pro's new weight", func() bool {
		return cpuWeightOf(t, d, "pro/globex") == "800" && cpuWeightOf(t, d, "pro") == "800"
	})

	// Suspension: refused with FAILED_PRECONDITION, live scopes stopped.
	if out, err := exec.Command(bins.scopectl, "--socket", d.socket, "tenant", "set", "acme", "--tier", "suspended").CombinedOutput(); err != nil {
		t.Fatalf("scopectl tenant set suspended: %v: %s", err, out)
	}
	if _, err := invokeSpin(c, "acme", 1, 0); status.Code(err) != codes.FailedPrecondition {
		t.Errorf("suspended tenant: %v, want FailedPrecondition", err)
	}
	waitFor(t, 10*time.Second, "the suspended tenant's scope to go", func() bool {
		r, err := c.ListScopes(ctx, &scopedv1.ListScopesRequest{Tenant: "acme"})
		return err == nil && len(r.GetScopes()) == 0
	})
	// Its cgroups go right after (the scope leaves the registry first).
	tenantDir := filepath.Join("/sys/fs/cgroup", d.root, "free", "acme")
	if cgroups.HostMode() == cgroups.Hybrid {
		tenantDir = filepath.Join("/sys/fs/cgroup/unified", d.root, "free", "acme")
	}
	waitFor(t, 10*time.Second, "the suspended tenant's cgroup to go", func() bool {
		_, err := os.Stat(tenantDir)
		return errors.Is(err, os.ErrNotExist)
	})

	// Assignments persist across restarts.
	d.stop()
	d.start()
	c = d.client()
	r, err := c.ListTenants(ctx, &scopedv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, tn := range r.GetTenants() {
		got[tn.GetTenant()] = tn.GetTier()
	}
	if got["acme"] != "suspended" || got["globex"] != "pro" {
		t.Errorf("tenants after a restart: %v", got)
	}
	out, err := exec.Command(bins.scopectl, "--socket", d.socket, "tenant", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "suspended") || !strings.Contains(string(out), "globex") {
		t.Errorf("scopectl tenant ls: %v: %s", err, out)
	}
	if _, err := invokeSpin(c, "initech", 1, 0); err != nil {
		t.Errorf("a tenant in the default tier: %v", err)
	}
}

// TestTenantsShareByWeightNotScopes: a tenant running four scopes gets no
// more CPU than a tenant with one at the same tier: the tenant node, not
// the scope, is what the kernel weighs against other tenants, and where the
// kernel's split drifts the controller's fair-share rule caps the
// over-taker at its share.
func TestTenantsShareByWeightNotScopes(t *testing.T) {
	// The kernel alone does not hold the split: on the 6.18 development
	// host (EEVDF, hybrid cgroups) the one-scope tenant got 0.17–0.49 from
	// run to run with the same weights (spinners with periodically
	// sleeping threads, as every Go worker has), Debian's 6.12 on pure v2
	// 0.41–0.50, its 6.1 0.47–0.50. The controller's fair-share rule
	// ([control] fair_shares, on by default) caps the over-taking tenant at
	// its share within share_window ticks of a drift, so the test waits for
	// the loop: a slice in which the rule acted (or did in the 3 s after
	// it: the window's 2 ticks and the next) is measured again, up to
	// three times.
	d := startDaemon(t, options{poolExtra: "max_workers = 2\nidle_timeout = \"10m\""})
	c := d.client()
	envs := []string{"e1", "e2", "e3", "e4"}
	for _, e := range envs {
		deploy(t, c, "many", e, "spin", bins.spin)
	}
	deploy(t, c, "one", "production", "spin", bins.spin)
	type call struct{ tenant, env string }
	var calls []call
	for _, e := range envs {
		calls = append(calls, call{"many", e}, call{"many", e})
	}
	calls = append(calls, call{"one", "production"}, call{"one", "production"})
	// Warm every scope's workers (cold starts outside the window).
	var wg sync.WaitGroup
	for _, cl := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = c.Invoke(context.Background(), &scopedv1.InvokeRequest{Tenant: cl.tenant, Environment: cl.env, Extension: "spin", Payload: []byte("50")})
		}()
	}
	wg.Wait()
	ctx, cancel := context.WithCancel(context.Background())
	for _, cl := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Past every try (the harness's default_timeout is 20 s).
			_, _ = c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: cl.tenant, Environment: cl.env, Extension: "spin", Payload: []byte("60000"),
				Timeout: durationpb.New(2 * time.Minute)})
		}()
	}
	defer func() { cancel(); wg.Wait() }()
	usage := func(tenant string) time.Duration {
		u, err := cgroups.CPUUsage(filepath.Join(d.root, "standard", tenant))
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	// shareEvents are the fair-share rule's events so far.
	shareEvents := func() []*scopedv1.Event {
		r, err := c.ListEvents(context.Background(), &scopedv1.ListEventsRequest{})
		if err != nil {
			t.Fatal(err)
		}
		var out []*scopedv1.Event
		for _, e := range r.GetEvents() {
			if strings.HasPrefix(e.GetKind(), "share_") {
				out = append(out, e)
			}
		}
		return out
	}
	// Settle: a drift from the start is found within share_window (2)
	// ticks of 1 s and capped at the next.
	time.Sleep(4 * time.Second)
	// A measure counts only where the CPUs were busy: 10 spinners on 2
	// CPUs leave none idle on a machine, but a guest under emulation, two
	// VMs side by side on 2 host CPUs, left 15–35 % idle at times (the
	// rule's debug lines): a split of what is left then is the emulator's,
	// not the scheduler's, and neither the kernel nor the rule can hold it.
	const maxIdle = 0.10
	var share float64
	valid, invalid := 0, 0
	for valid < 3 && invalid < 6 {
		before := len(shareEvents())
		m0, o0 := usage("many"), usage("one")
		b0, t0 := hostBusy(t), time.Now()
		time.Sleep(4 * time.Second)
		m, o := usage("many")-m0, usage("one")-o0
		idle := 1 - float64(hostBusy(t)-b0)/(float64(time.Since(t0))*float64(runtime.NumCPU()))
		s := float64(o) / float64(m+o)
		// A drift that began in the slice is capped up to 3 ticks later.
		time.Sleep(3 * time.Second)
		acted := len(shareEvents()) > before
		t.Logf("4 scopes × 2 spinners vs 1 scope × 2 spinners, equal tiers: many used %s, one %s: one's share %.3f; the CPUs %.0f %% idle; fair-share rule acted meanwhile or just after: %v",
			m, o, s, 100*idle, acted)
		if idle > maxIdle {
			invalid++
			continue
		}
		valid++
		share = s
		if !acted {
			break
		}
	}
	if valid == 0 {
		t.Skipf("in %d measures the CPUs were more than %.0f %% idle beside 10 spinners on %d CPUs (emulation): no split to check", invalid, 100*maxIdle, runtime.NumCPU())
	}
	for _, e := range shareEvents() {
		t.Logf("event: %s %s victims %v: %s", e.GetKind(), e.GetTenant(), e.GetVictims(), e.GetReason())
	}
	// The rule's view of the last ticks (the daemon logs at debug here).
	var ticks []string
	for _, l := range strings.Split(d.logs.String(), "\n") {
		if strings.Contains(l, "fair shares tick") {
			ticks = append(ticks, l)
		}
	}
	for _, l := range ticks[max(len(ticks)-8, 0):] {
		t.Log(l)
	}
	// Flat scopes would give "one" 2/10 of the CPU, equal tenant weights
	// 1/2: within 5 points of it.
	if share < 0.45 || share > 0.55 {
		t.Errorf("the one-scope tenant got %.1f%% of the CPU: want 45–55%% (a flat split would give it 20%%)", 100*share)
	}
	// A cap is on one tenant for the other. Which way the kernel drifts
	// is its own: under emulation a stalled vCPU can leave either tenant
	// short for a window, and the rule caps whichever over-took.
	for _, e := range shareEvents() {
		if e.GetKind() != "share_capped" {
			continue
		}
		other := map[string]string{"many": "one", "one": "many"}[e.GetTenant()]
		if other == "" || !slices.Equal(e.GetVictims(), []string{other}) {
			t.Errorf("a cap not on one tenant for the other: %v", e)
		}
	}
}

// hostBusy is the machine's busy CPU time so far (/proc/stat).
func hostBusy(t *testing.T) time.Duration {
	t.Helper()
	b, err := cgroups.HostBusy()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestNoisyNeighbourSteppedDown: a tenant spinning on every CPU makes
// another tenant's invocations wait and preempts them, taking more than
// its equal share; the controller names it, lowers its weight (scope and
// tenant), reports the events, and restores it once it calms down.
func TestNoisyNeighbourSteppedDown(t *testing.T) {
	if accountingMode() == "cgroupfs" {
		t.Skip("the controller needs eBPF accounting (SCOPED_E2E_ACCOUNTING=cgroupfs)")
	}
	d := startDaemon(t, options{poolExtra: "max_workers = 4\nidle_timeout = \"10m\"", extra: `
[control]
interval = "250ms"
cooldown = "1s"
detect_ticks = 3
recover_ticks = 3
# The scope rule is under test: the fair-share rule would cap the noisy
# tenant at its share first, and then no scope of it is to blame.
fair_shares = false
# A low bar, so that the test is about the loop, not about this machine's
# preemption rate (13/s seen under emulation; the VM skips the test now).
min_preemptions = 3.0
`})
	if !strings.Contains(d.logs.String(), "source=ebpf") {
		t.Skip("eBPF accounting did not load here; the controller has no preemption counts")
	}
	c := d.client()
	ctx := context.Background()
	// The victim: 5 ms bursts back to back, less than its equal share.
	stopNoisy := noisyPair(t, c, 5)

	events := func(kind string) []*scopedv1.Event { return controlEvents(t, c, kind, "") }
	describe := func(key string) string {
		s, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: key})
		if err != nil {
			return err.Error()
		}
		u := s.GetUsage()
		return fmt.Sprintf("%s: cpu %s, run-queue waits %d (sum %s), preemptions %d",
			key, u.GetCpu().AsDuration(), u.GetRunqCount(), u.GetRunqSum().AsDuration(), u.GetPreemptions())
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("usage at the end: %s; %s", describe("victim.production"), describe("noisy.production"))
		}
	})
	waitFor(t, 60*time.Second, "the antagonist to be stepped down", func() bool { return len(events("stepped_down")) > 0 })
	e := events("stepped_down")[0]
	t.Logf("event: %s %s level %d victims %v: %s", e.GetKind(), e.GetScope(), e.GetLevel(), e.GetVictims(), e.GetReason())
	if e.GetScope() != "noisy.production" || len(e.GetVictims()) == 0 || e.GetVictims()[0] != "victim.production" {
		t.Errorf("stepped down %s for %v, want noisy.production for victim.production", e.GetScope(), e.GetVictims())
	}
	for _, ev := range events("stepped_down") {
		if ev.GetScope() == "victim.production" {
			t.Errorf("the victim was stepped down: %v", ev)
		}
	}
	s, err := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "noisy.production"})
	if err != nil {
		t.Fatal(err)
	}
	if s.GetThrottleLevel() < 1 {
		t.Errorf("noisy.production throttle level %d, want ≥ 1", s.GetThrottleLevel())
	}
	if w := cpuWeightOf(t, d, "standard/noisy/production"); w == "100" {
		t.Errorf("the antagonist's scope weight is still 100")
	}
	// Against other tenants only the tenant node counts: it is lowered too.
	if w := cpuWeightOf(t, d, "standard/noisy"); w == "100" {
		t.Errorf("the antagonist's tenant weight is still its tier's 100")
	}
	if w := cpuWeightOf(t, d, "standard/victim"); w != "100" {
		t.Errorf("the victim's tenant weight is %s, want its tier's 100", w)
	}
	out, err := exec.Command(bins.scopectl, "--socket", d.socket, "events").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "stepped_down") || !strings.Contains(string(out), "noisy.production") {
		t.Errorf("scopectl events: %v: %s", err, out)
	}
	if !strings.Contains(d.logs.String(), "noisy neighbour") {
		t.Error("no log line for the controller's event")
	}

	// The antagonist stops: it is calm, and restored step by step.
	stopNoisy()
	waitFor(t, 60*time.Second, "the antagonist to be restored", func() bool { return len(events("restored")) > 0 })
	waitFor(t, 5*time.Second, "the base weights back", func() bool {
		return cpuWeightOf(t, d, "standard/noisy/production") == "100" && cpuWeightOf(t, d, "standard/noisy") == "100"
	})
}

// TestShareIdleForLatencyBoundVictim: beside a tenant spinning on every
// CPU, a tenant whose calls are short bursts back to back (a request
// handler) gets less than its equal share; the fair-share rule caps the
// spinner at its share and, the victim being latency-bound ([control]
// share_idle, on by default), makes the spinner's tenant node SCHED_IDLE;
// once the spinner stops, the cap and the idle flag are lifted and its
// tier's weight is back.
func TestShareIdleForLatencyBoundVictim(t *testing.T) {
	if accountingMode() == "cgroupfs" {
		t.Skip("the latency-bound test needs eBPF run-queue figures (SCOPED_E2E_ACCOUNTING=cgroupfs)")
	}
	d := startDaemon(t, options{poolExtra: "max_workers = 4\nidle_timeout = \"10m\"", extra: `
[control]
cooldown = "1s"
`})
	if !strings.Contains(d.logs.String(), "source=ebpf") {
		t.Skip("eBPF accounting did not load here; the rule has no run-queue waits")
	}
	if _, err := os.Stat(cgroupFile(d, "", "cpu.idle", "cpu", "cpu.idle")); err != nil {
		t.Skipf("no cpu.idle here (kernel before 5.15): %v", err)
	}
	c := d.client()
	stopNoisy := noisyPair(t, c, 2)

	events := func(kind string) []*scopedv1.Event { return controlEvents(t, c, kind, "noisy") }
	waitFor(t, 60*time.Second, "the spinner to be capped", func() bool { return len(events("share_capped")) > 0 })
	e := events("share_capped")[0]
	t.Logf("event: %s %s victims %v: %s", e.GetKind(), e.GetTenant(), e.GetVictims(), e.GetReason())
	if !slices.Equal(e.GetVictims(), []string{"victim"}) {
		t.Fatalf("noisy capped for %v, want [victim]", e.GetVictims())
	}
	if !strings.Contains(e.GetReason(), "SCHED_IDLE") {
		// The victim's run-queue waits averaged 0.2 ms or more, and less
		// than a quarter of their time was in waits under 1 ms: a busy
		// machine (or emulation) makes a request handler wait like a
		// CPU-bound tenant, and then the rule rightly caps without idle.
		t.Skipf("the cap came without SCHED_IDLE: the victim was not latency-bound here (%s)", e.GetReason())
	}
	idle := func(rel string) string { return cgroupValue(t, d, rel, "cpu.idle", "cpu", "cpu.idle") }
	waitFor(t, 5*time.Second, "cpu.idle 1 on the spinner's tenant node", func() bool { return idle("standard/noisy") == "1" })
	if v := idle("standard/victim"); v != "0" {
		t.Errorf("the victim's tenant node has cpu.idle %s, want 0", v)
	}
	out, err := exec.Command(bins.scopectl, "--socket", d.socket, "events").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "SCHED_IDLE") {
		t.Errorf("scopectl events does not say SCHED_IDLE: %v: %s", err, out)
	}

	stopNoisy()
	waitFor(t, 60*time.Second, "the cap to be lifted", func() bool { return len(events("share_lifted")) > 0 })
	waitFor(t, 5*time.Second, "cpu.idle 0 and the tier's weight back", func() bool {
		return idle("standard/noisy") == "0" && cpuWeightOf(t, d, "standard/noisy") == "100"
	})
}

// noisyPair deploys spin for tenants victim and noisy and keeps calls
// running until the test ends: victim's back to back, each victimMs of
// CPU, and four of noisy's at once, 1500 ms each, restarted as they end.
// It returns a function that stops noisy's calls.
func noisyPair(t *testing.T, c *client.Client, victimMs int) (stopNoisy func()) {
	t.Helper()
	deploy(t, c, "victim", "production", "spin", bins.spin)
	deploy(t, c, "noisy", "production", "spin", bins.spin)
	noisy, victim := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	loop := func(stop <-chan struct{}, tenant string, ms int) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = invokeSpin(c, tenant, ms, 0)
			}
		}()
	}
	for range 4 {
		loop(noisy, "noisy", 1500)
	}
	loop(victim, "victim", victimMs)
	var once sync.Once
	stopNoisy = func() { once.Do(func() { close(noisy) }) }
	t.Cleanup(func() {
		close(victim)
		stopNoisy()
		wg.Wait()
	})
	return stopNoisy
}

// controlEvents are the controller's events of kind (of tenant, unless
// ""); the controller must be on.
func controlEvents(t *testing.T, c *client.Client, kind, tenant string) []*scopedv1.Event {
	t.Helper()
	r, err := c.ListEvents(context.Background(), &scopedv1.ListEventsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !r.GetControllerEnabled() {
		t.Fatal("the controller is off")
	}
	var out []*scopedv1.Event
	for _, e := range r.GetEvents() {
		if e.GetKind() == kind && (tenant == "" || e.GetTenant() == tenant) {
			out = append(out, e)
		}
	}
	return out
}
