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

	"github.com/scoped-io/scoped/metrics"
)

func TestUnitCheckTargetFields(t *testing.T) {
	good := Target{Tenant: "acme", Environment: "production", User: "alice", Extension: "hook"}
	if err := checkTargetFields(good, "v1"); err != nil {
		t.Fatalf("valid target: %v", err)
	}
	noUser := good
	noUser.User = ""
	if err := checkTargetFields(noUser, ""); err != nil {
		t.Fatalf("empty user and version: %v", err)
	}
	long := strings.Repeat("a", 70)
	bads := []string{"", "A", "../x", "..", ".", "a/b", "a.b", "-a", "_a", "a b", "a\x00", long, "é", "*"}
	for _, field := range []string{"tenant", "environment", "user", "extension", "version"} {
		for _, bad := range bads {
			if bad == "" && (field == "user" || field == "version") {
				continue // optional
			}
			tg, v := good, "v1"
			switch field {
			case "tenant":
				tg.Tenant = bad
			case "environment":
				tg.Environment = bad
			case "user":
				tg.User = bad
			case "extension":
				tg.Extension = bad
			case "version":
				v = bad
			}
			if err := checkTargetFields(tg, v); !errors.Is(err, ErrInvalid) {
				t.Errorf("%s %q: %v, want ErrInvalid", field, bad, err)
			}
		}
	}
	// 63 characters is the longest id.
	edge := good
	edge.Tenant = strings.Repeat("a", 63)
	if err := checkTargetFields(edge, ""); err != nil {
		t.Errorf("63-character tenant: %v", err)
	}
	edge.Tenant += "a"
	if err := checkTargetFields(edge, ""); !errors.Is(err, ErrInvalid) {
		t.Errorf("64-character tenant: %v", err)
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
	s.gate = newGate(s.checkCaps)
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
	req := func(tenant string) InvokeRequest {
		return InvokeRequest{Target: Target{Tenant: tenant, Environment: "production", Extension: "hook"}}
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
	ok := InvokeRequest{Target: Target{Tenant: "acme", Environment: "production", Extension: "hook"}, Payload: []byte("hi")}
	bigMeta := map[string]string{}
	for i := range 65 {
		bigMeta[fmt.Sprint("k", i)] = "v"
	}
	for name, c := range map[string]struct {
		mutate func(r *InvokeRequest)
		want   error
	}{
		"tenant ../x":        {func(r *InvokeRequest) { r.Tenant = "../x" }, ErrInvalid},
		"tenant 70 chars":    {func(r *InvokeRequest) { r.Tenant = strings.Repeat("a", 70) }, ErrInvalid},
		"tenant empty":       {func(r *InvokeRequest) { r.Tenant = "" }, ErrInvalid},
		"environment ../x":   {func(r *InvokeRequest) { r.Environment = "../x" }, ErrInvalid},
		"extension ../x":     {func(r *InvokeRequest) { r.Extension = "../x" }, ErrInvalid},
		"extension empty":    {func(r *InvokeRequest) { r.Extension = "" }, ErrInvalid},
		"user ../x":          {func(r *InvokeRequest) { r.User = "../x" }, ErrInvalid},
		"version ../v1":      {func(r *InvokeRequest) { r.Version = "../v1" }, ErrInvalid},
		"payload too large":  {func(r *InvokeRequest) { r.Payload = make([]byte, 1025) }, ErrTooLarge},
		"65 metadata":        {func(r *InvokeRequest) { r.Metadata = bigMeta }, ErrTooLarge},
		"empty metadata key": {func(r *InvokeRequest) { r.Metadata = map[string]string{"": "v"} }, ErrInvalid},
		"long metadata key":  {func(r *InvokeRequest) { r.Metadata = map[string]string{strings.Repeat("k", 129): "v"} }, ErrInvalid},
		"long metadata val":  {func(r *InvokeRequest) { r.Metadata = map[string]string{"k": strings.Repeat("v", 4097)} }, ErrInvalid},
		"negative timeout":   {func(r *InvokeRequest) { r.Timeout = -time.Second }, ErrInvalid},
		"unknown extension":  {func(r *InvokeRequest) { r.Extension = "nope" }, ErrNotFound},
		"unknown tenant":     {func(r *InvokeRequest) { r.Tenant = "globex" }, ErrNotFound},
		"unknown env":        {func(r *InvokeRequest) { r.Environment = "staging" }, ErrNotFound},
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
