package supervisor

import (
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestUnitTiersDefaults(t *testing.T) {
	c := DefaultConfig()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if got := c.Tiers[c.Tenants.DefaultTier]; !reflect.DeepEqual(got, BaseTier()) {
		t.Errorf("default tier %+v, want BaseTier %+v (default.toml and BaseTier disagree)", got, BaseTier())
	}
	if !c.Tiers["suspended"].Suspended {
		t.Error("the suspended tier is not suspended")
	}
}

func TestUnitTiersMergeFromFile(t *testing.T) {
	dir := t.TempDir()
	write := func(body string) string {
		p := filepath.Join(dir, "c.toml")
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	c, err := LoadConfig(write(`
[tenants]
default_tier = "free"
[tiers.standard]
cpu_weight = 200
[tiers.free]
cpu_weight = 50
rate = 2.5
burst = 5
timeout = "2s"
daily_caps = { cpu_seconds = 3600.0, invocations = 10000.0 }
`))
	if err != nil {
		t.Fatal(err)
	}
	std := BaseTier()
	std.CPUWeight = 200
	if !reflect.DeepEqual(c.Tiers["standard"], std) {
		t.Errorf("standard = %+v, want the defaults with cpu_weight 200", c.Tiers["standard"])
	}
	free := BaseTier()
	free.CPUWeight, free.Rate, free.Burst, free.Timeout.Duration = 50, 2.5, 5, 2*time.Second
	free.DailyCaps = map[string]float64{"cpu_seconds": 3600, "invocations": 10000}
	if !reflect.DeepEqual(c.Tiers["free"], free) {
		t.Errorf("free = %+v, want %+v", c.Tiers["free"], free)
	}
	if !c.Tiers["suspended"].Suspended {
		t.Error("a file's tiers replaced the default ones instead of merging")
	}
	for name, body := range map[string]string{
		"unknown key":   "[tiers.free]\ncpu_wieght = 5\n",
		"not a table":   "tiers = 5\n",
		"tier not tbl":  "[tiers]\nfree = 5\n",
		"wrong type":    "[tiers.free]\ncpu_weight = \"lots\"\n",
		"bad duration":  "[tiers.free]\ntimeout = \"soon\"\n",
		"bad tier name": "[tiers.Free]\ncpu_weight = 5\n",
		"unknown meter": "[tiers.free]\ndaily_caps = { gpu_seconds = 5.0 }\n",
		"zero cap":      "[tiers.free]\nmonthly_caps = { invocations = 0.0 }\n",
	} {
		if _, err := LoadConfig(write(body)); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: LoadConfig = %v, want ErrConfig", name, err)
		}
	}
}

func TestUnitTierWeights(t *testing.T) {
	for _, c := range []struct {
		sums, want map[string]uint64
	}{
		{map[string]uint64{"free": 100, "pro": 200}, map[string]uint64{"free": 100, "pro": 200}},
		{map[string]uint64{"free": 0}, map[string]uint64{"free": 1}},
		// 300 tenants of weight 100 against 50 of weight 400: scaled
		// together, ratio kept (30000:20000 = 3:2).
		{map[string]uint64{"free": 30000, "pro": 20000}, map[string]uint64{"free": 10000, "pro": 6667}},
		{map[string]uint64{"a": 1, "b": 1000000}, map[string]uint64{"a": 1, "b": 10000}},
	} {
		got := tierWeights(c.sums)
		for k, w := range c.want {
			if got[k] != w {
				t.Errorf("tierWeights(%v)[%s] = %d, want %d", c.sums, k, got[k], w)
			}
		}
	}
}

func TestUnitTierTimeouts(t *testing.T) {
	lim := DefaultConfig().Limits
	tier := BaseTier()
	if d, l := tier.timeouts(lim); d != lim.DefaultTimeout.Duration || l != lim.MaxTimeout.Duration {
		t.Errorf("no tier timeout: %s, %s", d, l)
	}
	tier.Timeout.Duration = 2 * time.Second
	if d, l := tier.timeouts(lim); d != 2*time.Second || l != 2*time.Second {
		t.Errorf("tier timeout 2s: default %s, longest %s; want both 2s", d, l)
	}
	tier.MaxWorkers = 7
	if tier.maxWorkers(PoolConfig{MaxWorkers: 4}) != 7 || BaseTier().maxWorkers(PoolConfig{MaxWorkers: 4}) != 4 {
		t.Error("maxWorkers does not prefer the tier's")
	}
}

func TestUnitAdmissionRate(t *testing.T) {
	r := newGate(nil)
	tier := Tier{Rate: 10, Burst: 3}
	now := time.Unix(1000, 0)
	for i := range 3 {
		done, err := r.admit("acme", tier, now)
		if err != nil {
			t.Fatalf("call %d within the burst: %v", i, err)
		}
		done()
		done() // idempotent
	}
	_, err := r.admit("acme", tier, now)
	var ra *RetryAfterError
	if !errors.Is(err, ErrRateLimited) || !errors.As(err, &ra) {
		t.Fatalf("4th call at once = %v, want ErrRateLimited with a retry hint", err)
	}
	if ra.After < 90*time.Millisecond || ra.After > 110*time.Millisecond {
		t.Errorf("retry after %s, want about 100ms (one token at 10/s)", ra.After)
	}
	if !strings.Contains(err.Error(), "retry after") {
		t.Errorf("message %q does not give the hint", err)
	}
	// Another tenant has its own bucket.
	if _, err := r.admit("globex", tier, now); err != nil {
		t.Errorf("another tenant refused: %v", err)
	}
	// 100 ms later one token is back, and only one.
	now = now.Add(100 * time.Millisecond)
	if _, err := r.admit("acme", tier, now); err != nil {
		t.Fatalf("after 100ms: %v", err)
	}
	if _, err := r.admit("acme", tier, now); !errors.Is(err, ErrRateLimited) {
		t.Fatalf("second call after 100ms = %v, want ErrRateLimited", err)
	}
	// A long pause refills only up to the burst.
	now = now.Add(time.Hour)
	n := 0
	for ; n < 10; n++ {
		if _, err := r.admit("acme", tier, now); err != nil {
			break
		}
	}
	if n != 3 {
		t.Errorf("after an hour %d calls passed, want the burst of 3", n)
	}
	// Rates over 1/s without a burst get ceil(rate).
	if burstOf(Tier{Rate: 2.5}) != 3 || burstOf(Tier{Rate: 0.1}) != 1 {
		t.Error("burstOf")
	}
}

func TestUnitAdmissionConcurrencyAndSuspension(t *testing.T) {
	r := newGate(nil)
	reg := &tenantRegistry{assigned: map[string]tenantRecord{}}
	tier := Tier{MaxConcurrent: 2}
	now := time.Now()
	d1, err1 := r.admit("acme", tier, now)
	d2, err2 := r.admit("acme", tier, now)
	if err := errors.Join(err1, err2); err != nil {
		t.Fatal(err)
	}
	if r.inFlight("acme") != 2 {
		t.Errorf("inFlight = %d, want 2", r.inFlight("acme"))
	}
	var ra *RetryAfterError
	if _, err := r.admit("acme", tier, now); !errors.Is(err, ErrConcurrency) || !errors.As(err, &ra) {
		t.Fatalf("third in flight = %v, want ErrConcurrency with a hint", err)
	}
	d1()
	d3, err := r.admit("acme", tier, now)
	if err != nil {
		t.Fatalf("after one finished: %v", err)
	}
	d2()
	d3()
	// The supervisor's tierOf reads the registry and may admit: prune
	// must not hold the gate's lock while calling it.
	r.prune(func(t string) Tier { _ = reg.tierOf(t, "standard"); _ = r.inFlight(t); return tier }, now)
	if len(r.adm) != 0 {
		t.Errorf("prune kept %d idle tenants", len(r.adm))
	}
	if _, err := r.admit("acme", Tier{Suspended: true}, now); !errors.Is(err, ErrSuspended) {
		t.Errorf("suspended = %v, want ErrSuspended", err)
	}
	// No limits: nothing is tracked.
	done, err := r.admit("acme", Tier{}, now)
	if err != nil || len(r.adm) != 0 {
		t.Errorf("unlimited tier: err %v, %d tracked", err, len(r.adm))
	}
	done()
}

func TestUnitTenantsPersist(t *testing.T) {
	dir := t.TempDir()
	r, err := openTenants(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.tierOf("acme", "standard") != "standard" {
		t.Error("unassigned tenant not in the default tier")
	}
	if err := r.assign("acme", "pro", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := r.assign("globex", "free", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	r2, err := openTenants(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r2.tierOf("acme", "standard") != "pro" || r2.tierOf("globex", "standard") != "free" {
		t.Errorf("reopened: %v", r2.assignments())
	}
	fi, err := os.Stat(filepath.Join(dir, tenantsFile))
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("tenants file: %v, mode %v", err, fi.Mode())
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want the one file (no temporary files left)", len(ents))
	}
	// A failed write changes nothing.
	r3 := &tenantRegistry{path: filepath.Join(dir, "missing", tenantsFile), assigned: map[string]tenantRecord{}}
	if err := r3.assign("acme", "pro", nil, time.Now()); err == nil || len(r3.assigned) != 0 {
		t.Errorf("assign into a missing dir = %v, assigned %v", err, r3.assigned)
	}
	for name, body := range map[string]string{
		"garbage":       "{",
		"version":       `{"version": 2, "tenants": {}}`,
		"bad tenant":    `{"version": 1, "tenants": {"../x": {"tier": "pro"}}}`,
		"bad tier":      `{"version": 1, "tenants": {"acme": {"tier": "../x"}}}`,
		"unknown field": `{"version": 1, "tenants": {}, "extra": 1}`,
	} {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, tenantsFile), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := openTenants(d); err == nil {
			t.Errorf("%s: openTenants accepted %q", name, body)
		}
	}
}

func TestUnitCheckAssignments(t *testing.T) {
	c := DefaultConfig()
	if err := checkAssignments(&c, map[string]tenantRecord{"acme": {Tier: "suspended"}}); err != nil {
		t.Error(err)
	}
	err := checkAssignments(&c, map[string]tenantRecord{"acme": {Tier: "gold"}, "beta": {Tier: "platinum"}})
	if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "acme → gold, beta → platinum") {
		t.Errorf("checkAssignments = %v", err)
	}
}

func TestUnitTierLimits(t *testing.T) {
	tier := Tier{CPUWeight: 400, CPUMax: 1.5, MemoryMax: 1 << 30, ScopeMemoryMax: 64 << 20, ScopePidsMax: 10}
	tl := tier.tenantLimits()
	if tl.CPUWeight != 400 || tl.CPUMax != 1.5 || tl.MemoryMax != 1<<30 {
		t.Errorf("tenant limits %+v", tl)
	}
	sl := tier.scopeLimits()
	if sl.CPUWeight != 100 || sl.MemoryMax != 64<<20 || sl.PidsMax != 10 || sl.CPUMax >= 0 {
		t.Errorf("scope limits %+v", sl)
	}
	if l := BaseTier().tenantLimits(); l.CPUMax >= 0 || l.MemoryMax >= 0 {
		t.Errorf("no caps should remove caps: %+v", l)
	}
	if math.IsNaN(tl.CPUMax) {
		t.Error("nan")
	}
}
