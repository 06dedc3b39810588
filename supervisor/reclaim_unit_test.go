package supervisor

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/scoped-io/scoped/sandbox"
)

// addUnitScope puts a scope of tenant in s's registry (no cgroup, no
// workers), last used at used, with active invocations in flight, and
// takes its id slot.
func addUnitScope(t *testing.T, s *Supervisor, tenant, name string, used time.Time, active int64) *scope {
	t.Helper()
	id := ScopeID{Tenant: tenant, Name: name}
	ids, err := s.ids.Acquire(id.Key())
	if err != nil {
		t.Fatal(err)
	}
	sc := &scope{id: id, tier: "standard", ids: ids, lastUsed: used}
	sc.active.Store(active)
	s.scopes.addLocked(sc) // the test is the only goroutine
	return sc
}

func unitSlots(t *testing.T, s *Supervisor, slots uint32) {
	t.Helper()
	ids, err := sandbox.NewIDAllocator(1<<20, sandbox.DefaultIDSize, slots)
	if err != nil {
		t.Fatal(err)
	}
	s.ids = ids
}

// max_scopes refuses a tenant's next scope with ErrScopeLimit and a retry
// hint of when its longest-unused idle scope goes; others are not held
// back, and 0 is no limit.
func TestUnitScopeLimit(t *testing.T) {
	s := unitSupervisor(t)
	unitSlots(t, s, 16)
	r := &reclaimer{conf: s.conf, scopes: &s.scopes}
	idle := s.conf().Pool.IdleTimeout.Duration
	tier := BaseTier()
	tier.MaxScopes = 4
	now := time.Now()
	for i := range 3 {
		addUnitScope(t, s, "acme", fmt.Sprint("u", i), now.Add(-time.Duration(i)*time.Minute), 0)
	}
	if err := r.scopeLimitLocked("acme", "standard", tier); err != nil {
		t.Fatalf("3 of 4 scopes: %v", err)
	}
	addUnitScope(t, s, "acme", "u3", now, 1)
	err := r.scopeLimitLocked("acme", "standard", tier)
	var ra *RetryAfterError
	if !errors.Is(err, ErrScopeLimit) || !errors.As(err, &ra) {
		t.Fatalf("4 of 4 scopes: %v, want ErrScopeLimit with a retry hint", err)
	}
	// The longest unused idle scope (u2) was used 2 minutes ago.
	if tick := max(idle/4, 100*time.Millisecond); ra.After <= tick || ra.After > idle-2*time.Minute+tick {
		t.Errorf("retry hint %s, want about idle_timeout %s - 2m + the reaper's tick", ra.After, idle)
	}
	if refusalOf(err) != "scopes" {
		t.Errorf("refusalOf = %q", refusalOf(err))
	}
	// The edge makes it RESOURCE_EXHAUSTED with a RetryInfo of ra.After (api's tests).
	if err := r.scopeLimitLocked("globex", "standard", tier); err != nil {
		t.Errorf("another tenant: %v", err)
	}
	tier.MaxScopes = 0
	if err := r.scopeLimitLocked("acme", "standard", tier); err != nil {
		t.Errorf("max_scopes 0: %v", err)
	}
	if tier := BaseTier(); tier.MaxScopes != DefaultMaxScopes || DefaultConfig().Tiers["standard"].MaxScopes != DefaultMaxScopes {
		t.Errorf("default max_scopes %d, want %d", tier.MaxScopes, DefaultMaxScopes)
	}
	bad := DefaultConfig()
	bad.Tiers["standard"] = Tier{CPUWeight: 100, ScopeMemoryMax: 1 << 30, ScopePidsMax: 1, MaxScopes: -1}
	if err := bad.Validate(); err == nil {
		t.Error("max_scopes -1 accepted")
	}
	bad = DefaultConfig()
	bad.Scope.ReclaimFree = 1
	if err := bad.Validate(); err == nil {
		t.Error("reclaim_free 1 accepted")
	}
}

// The victim of a reclaim is an idle scope, longest unused, of the tenant
// holding the most scopes among the requester and those holding more.
func TestUnitPickVictim(t *testing.T) {
	s := unitSupervisor(t)
	unitSlots(t, s, 16)
	r := &reclaimer{conf: s.conf, scopes: &s.scopes}
	now := time.Now()
	a0 := addUnitScope(t, s, "acme", "u0", now.Add(-3*time.Minute), 1) // busy
	a1 := addUnitScope(t, s, "acme", "u1", now.Add(-2*time.Minute), 0)
	a2 := addUnitScope(t, s, "acme", "u2", now.Add(-1*time.Minute), 0)
	g0 := addUnitScope(t, s, "globex", "u0", now.Add(-time.Hour), 0)
	for _, c := range []struct {
		requester string
		want      *scope
	}{
		{"initech", a1}, // acme holds the most; u0 is busy, u1 longest unused
		{"globex", a1},  // 3 > 1
		{"acme", a1},    // its own
	} {
		if got := r.pickVictimLocked(c.requester); got != c.want {
			t.Errorf("victim for %s = %v, want %s", c.requester, got, c.want.id.Key())
		}
	}
	// acme's idle scopes gone busy: globex's is next for a third tenant,
	// but acme (more scopes than globex) never takes globex's.
	a1.active.Store(1)
	a2.active.Store(1)
	if got := r.pickVictimLocked("initech"); got != g0 {
		t.Errorf("victim for initech = %v, want globex's", got)
	}
	if got := r.pickVictimLocked("acme"); got != nil {
		t.Errorf("victim for acme = %v, want none (its own are busy, globex holds fewer)", got.id.Key())
	}
	// A tie protects: with 1 scope each, globex loses none to hooli's 2nd.
	for _, sc := range []*scope{a0, a1, a2} {
		delete(s.scopes.scopes, sc.id.Key())
	}
	addUnitScope(t, s, "hooli", "u0", now, 1)
	if got := r.pickVictimLocked("hooli"); got != nil {
		t.Errorf("victim for hooli = %v, want none", got.id.Key())
	}
}
