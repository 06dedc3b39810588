package supervisor

import (
	"context"
	"path"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
)

// TestUnitReaperRemovesIdleScopes: the reaper takes a scope unused past
// idle_timeout out of the registry and hands it to its remove; a scope
// with an invocation in flight, or in use, stays. Its heartbeat is set
// while it runs and cleared by Stop.
func TestUnitReaperRemovesIdleScopes(t *testing.T) {
	s := unitSupervisor(t)
	cfg := *s.conf()
	cfg.Pool.IdleTimeout.Duration = 200 * time.Millisecond
	cfg.Pool.WarmMin = 0
	s.cfg.Store(&cfg)
	add := func(name string, used time.Time, active int64) *scope {
		t.Helper()
		node, err := cgroups.Load(path.Join("/scoped-unit-absent", "standard", "acme", name)) // no such cgroup
		if err != nil {
			t.Fatal(err)
		}
		sc := &scope{id: ScopeID{Tenant: "acme", Name: name}, tier: "standard", node: node, lastUsed: used}
		sc.active.Store(active)
		s.scopes.locked(func() { s.scopes.addLocked(sc) })
		return sc
	}
	long := time.Now().Add(-time.Hour)
	idle := add("idle", long, 0)
	busy := add("busy", long, 1)
	inUse := add("in-use", time.Now().Add(time.Hour), 0) // never idle while the test runs

	removed := make(chan []*scope, 16)
	var alive atomic.Int64
	r := newReaper(&reaper{conf: s.conf, log: s.log, scopes: &s.scopes, gate: s.gate, store: s.store, tierOf: s.tierOf,
		remove: func(gone []*scope) []error {
			if len(gone) > 0 {
				removed <- slices.Clone(gone)
			}
			s.scopes.locked(func() { s.scopes.removedLocked(gone) })
			return make([]error, len(gone))
		},
		alive: &alive})
	if err := r.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	select {
	case gone := <-removed:
		if len(gone) != 1 || gone[0] != idle {
			t.Errorf("removed %d scopes, want the idle one alone", len(gone))
		}
	case <-time.After(time.Minute): // a failure bound, not a timing
		t.Fatal("the reaper removed no scope")
	}
	if alive.Load() == 0 {
		t.Error("no heartbeat while the reaper runs")
	}
	if err := r.Stop(); err != nil {
		t.Fatal(err)
	}
	if alive.Load() != 0 {
		t.Error("heartbeat left after Stop")
	}
	live := s.scopes.snapshot(nil)
	if len(live) != 2 || !slices.Contains(live, busy) || !slices.Contains(live, inUse) {
		t.Errorf("%d live scopes after the reaper, want the busy and the in-use one", len(live))
	}
	select {
	case gone := <-removed:
		t.Errorf("removed %d more scopes", len(gone))
	default:
	}
}
