package supervisor

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metrics"
)

// TestUnitNewTarget: NewTarget refuses every bad id of a target (the
// tenant is an ident.Tenant, checked by ident.ParseTenant), and
// checkInvoke a bad version and a target not made by NewTarget.
func TestUnitNewTarget(t *testing.T) {
	good, err := NewTarget("acme", "production", "alice", "hook")
	if err != nil {
		t.Fatalf("valid target: %v", err)
	}
	if good.Tenant() != "acme" || good.Environment() != "production" || good.User() != "alice" || good.Extension() != "hook" {
		t.Fatalf("NewTarget = %+v", good)
	}
	if _, err := NewTarget("acme", "production", "", "hook"); err != nil {
		t.Fatalf("empty user: %v", err)
	}
	long := strings.Repeat("a", 70)
	bads := []string{"", "A", "../x", "..", ".", "a/b", "a.b", "-a", "_a", "a b", "a\x00", long, "é", "*"}
	for _, field := range []string{"tenant", "environment", "user", "extension", "version"} {
		for _, bad := range bads {
			if bad == "" && (field == "user" || field == "version") {
				continue // optional
			}
			tenant, env, user, ext, v := "acme", "production", "alice", "hook", "v1"
			switch field {
			case "tenant":
				tenant = bad
			case "environment":
				env = bad
			case "user":
				user = bad
			case "extension":
				ext = bad
			case "version":
				v = bad
			}
			tn, err := ident.ParseTenant(tenant)
			if err == nil {
				var tg Target
				if tg, err = NewTarget(tn, env, user, ext); err == nil {
					err = checkInvoke(InvokeRequest{Target: tg, Version: v}, DefaultConfig().Limits)
				}
			}
			if !errors.Is(err, ErrInvalid) && !errors.Is(err, ident.ErrInvalid) {
				t.Errorf("%s %q: %v, want ErrInvalid", field, bad, err)
			}
		}
	}
	if _, err := NewTarget("", "production", "", "hook"); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero tenant: %v, want ErrInvalid", err)
	}
	if err := checkInvoke(InvokeRequest{}, DefaultConfig().Limits); !errors.Is(err, ErrInvalid) {
		t.Errorf("zero target: %v, want ErrInvalid", err)
	}
	// 63 characters is the longest id.
	if _, err := NewTarget("acme", "production", "", strings.Repeat("a", 63)); err != nil {
		t.Errorf("63-character extension: %v", err)
	}
	if _, err := NewTarget("acme", "production", "", strings.Repeat("a", 64)); !errors.Is(err, ErrInvalid) {
		t.Errorf("64-character extension: %v", err)
	}
}

// unitSupervisor is a Supervisor with a store and a configuration but no
// cgroup tree, id allocator or sandboxes: enough for everything Invoke
// checks before it needs a scope.
func unitSupervisor(t *testing.T) *Supervisor {
	t.Helper()
	cfg := DefaultConfig()
	cfg.StateDir = t.TempDir()
	cfg.Limits.MaxPayload = 1024
	store, err := NewStore(cfg.StateDir, cfg.Limits.MaxBundle, cfg.Limits.MaxBundleFiles)
	if err != nil {
		t.Fatal(err)
	}
	tenants, err := openTenants(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	s := &Supervisor{log: slog.New(slog.NewTextHandler(io.Discard, nil)), store: store, tenants: tenants,
		metrics: metrics.New()}
	s.acct = newAccountant(nil, s.cfg.Load, s.scopes.find, s.metrics, s.log)
	s.meter = newMeter(meterDeps{conf: s.cfg.Load, scopes: s.scopes.snapshot, acct: s.acct,
		metrics: s.metrics, log: s.log, alive: &s.health.meter})
	s.gate = newGate(s.meter.checkCaps)
	s.wire()
	s.cfg.Store(&cfg)
	return s
}

// TestUnitInvokeAdmission: a suspended tenant and a tenant over its rate
// are refused before any scope exists, with the refusal counted.
func TestUnitInvokeAdmission(t *testing.T) {
	s := unitSupervisor(t)
	cfg := *s.conf()
	cfg.Tiers = Tiers{"standard": BaseTier(), "suspended": {CPUWeight: 1, ScopeMemoryMax: 1 << 20, ScopePidsMax: 1, Suspended: true}}
	limited := BaseTier()
	limited.Rate, limited.Burst = 1, 1
	cfg.Tiers["limited"] = limited
	s.cfg.Store(&cfg)
	for _, tenant := range []string{"acme", "globex"} {
		if _, _, err := s.store.Deploy(tenant, "production", "hook", unitBundle("w")); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.tenants.assign("acme", "suspended", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := s.tenants.assign("globex", "limited", nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	req := func(tenant ident.Tenant) InvokeRequest {
		return InvokeRequest{Target: Target{tenant: tenant, environment: "production", extension: "hook"}}
	}
	if _, err := s.Invoke(context.Background(), req("acme")); !errors.Is(err, ErrSuspended) {
		t.Errorf("suspended tenant: %v, want ErrSuspended", err)
	}
	s.scopes.stop() // admitted calls then end without a scope
	if _, err := s.Invoke(context.Background(), req("globex")); !errors.Is(err, ErrStopping) {
		t.Errorf("first call within the rate: %v, want ErrStopping (admitted)", err)
	}
	_, err := s.Invoke(context.Background(), req("globex"))
	if !errors.Is(err, ErrRateLimited) {
		t.Errorf("second call at once: %v, want ErrRateLimited", err)
	}
	// The edge makes it RESOURCE_EXHAUSTED with a RetryInfo (api's tests).
	if ra := (*RetryAfterError)(nil); !errors.As(err, &ra) || ra.After <= 0 {
		t.Errorf("%v has no retry hint", err)
	}
	if s.scopes.len() != 0 {
		t.Errorf("refused invocations created scopes")
	}
}

func TestUnitInvokeRejectsBeforeAnyScope(t *testing.T) {
	s := unitSupervisor(t)
	if _, _, err := s.store.Deploy("acme", "production", "hook", unitBundle("w")); err != nil {
		t.Fatal(err)
	}
	ok := InvokeRequest{Target: Target{tenant: "acme", environment: "production", extension: "hook"}, Payload: []byte("hi")}
	bigMeta := map[string]string{}
	for i := range 65 {
		bigMeta[fmt.Sprint("k", i)] = "v"
	}
	// A Target is made by NewTarget (TestUnitNewTarget); the bad ids set
	// here behind its back are refused by the store's own check, where they
	// would become a path.
	for name, c := range map[string]struct {
		mutate func(r *InvokeRequest)
		want   error
	}{
		"tenant ../x":        {func(r *InvokeRequest) { r.tenant = "../x" }, ErrInvalid},
		"tenant 70 chars":    {func(r *InvokeRequest) { r.tenant = ident.Tenant(strings.Repeat("a", 70)) }, ErrInvalid},
		"tenant empty":       {func(r *InvokeRequest) { r.tenant = "" }, ErrInvalid},
		"environment ../x":   {func(r *InvokeRequest) { r.environment = "../x" }, ErrInvalid},
		"extension ../x":     {func(r *InvokeRequest) { r.extension = "../x" }, ErrInvalid},
		"extension empty":    {func(r *InvokeRequest) { r.extension = "" }, ErrInvalid},
		"version ../v1":      {func(r *InvokeRequest) { r.Version = "../v1" }, ErrInvalid},
		"payload too large":  {func(r *InvokeRequest) { r.Payload = make([]byte, 1025) }, ErrTooLarge},
		"65 metadata":        {func(r *InvokeRequest) { r.Metadata = bigMeta }, ErrTooLarge},
		"empty metadata key": {func(r *InvokeRequest) { r.Metadata = map[string]string{"": "v"} }, ErrInvalid},
		"long metadata key":  {func(r *InvokeRequest) { r.Metadata = map[string]string{strings.Repeat("k", 129): "v"} }, ErrInvalid},
		"long metadata val":  {func(r *InvokeRequest) { r.Metadata = map[string]string{"k": strings.Repeat("v", 4097)} }, ErrInvalid},
		"negative timeout":   {func(r *InvokeRequest) { r.Timeout = -time.Second }, ErrInvalid},
		"unknown extension":  {func(r *InvokeRequest) { r.extension = "nope" }, ErrNotFound},
		"unknown tenant":     {func(r *InvokeRequest) { r.tenant = "globex" }, ErrNotFound},
		"unknown env":        {func(r *InvokeRequest) { r.environment = "staging" }, ErrNotFound},
		"unknown version":    {func(r *InvokeRequest) { r.Version = "v2" }, ErrNotFound},
	} {
		t.Run(name, func(t *testing.T) {
			r := ok
			c.mutate(&r)
			_, err := s.Invoke(context.Background(), r)
			if !errors.Is(err, c.want) {
				t.Fatalf("Invoke = %v, want %v", err, c.want)
			}
			if n := s.scopes.len(); n != 0 {
				t.Fatalf("a rejected invocation created %d scopes", n)
			}
		})
	}
	// The payload limit is inclusive; a payload of exactly max_payload
	// passes the checks (and then reaches a stopping supervisor, which
	// answers without creating a scope).
	s.scopes.stop()
	r := ok
	r.Payload = make([]byte, 1024)
	if _, err := s.Invoke(context.Background(), r); !errors.Is(err, ErrStopping) {
		t.Fatalf("Invoke of max_payload bytes on a stopping supervisor = %v, want ErrStopping", err)
	}
}
