package supervisor

import (
	"errors"
	"path"
	"slices"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
)

// registryScope is a scope of tenant in tier with a node naming a cgroup
// that does not exist (Load makes nothing).
func registryScope(t *testing.T, tier, tenant, name string) *scope {
	t.Helper()
	node, err := cgroups.Load(path.Join("/scoped-unit-absent", tier, tenant, name))
	if err != nil {
		t.Fatal(err)
	}
	return &scope{id: ScopeID{Tenant: tenant, Name: name}, tier: tier, node: node}
}

func keys(scopes []*scope) []string {
	var out []string
	for _, sc := range scopes {
		out = append(out, sc.id.Key())
	}
	slices.Sort(out)
	return out
}

// TestUnitRegistryAcquire: acquire creates a scope once, counts every
// caller in its active, looks again when create says so, and refuses once
// the registry stops; snapshot, get and find see the live scopes.
func TestUnitRegistryAcquire(t *testing.T) {
	var r registry
	a := registryScope(t, "standard", "acme", "a")
	creates := 0
	create := func() (*scope, bool, error) {
		creates++
		if creates == 1 {
			return nil, true, nil // released the lock: look again
		}
		r.addLocked(a)
		return a, false, nil
	}
	for range 2 {
		sc, err := r.acquire(a.id.Key(), create)
		if err != nil || sc != a {
			t.Fatalf("acquire = %v, %v", sc, err)
		}
	}
	if creates != 2 || a.active.Load() != 2 {
		t.Fatalf("%d creates, active %d; want 2 and 2", creates, a.active.Load())
	}
	errCreate := errors.New("no cgroup")
	if _, err := r.acquire("acme.b", func() (*scope, bool, error) { return nil, false, errCreate }); !errors.Is(err, errCreate) {
		t.Fatalf("failed create: %v", err)
	}
	b := registryScope(t, "standard", "globex", "b")
	r.locked(func() { r.addLocked(b) })
	if got := keys(r.snapshot(nil)); !slices.Equal(got, []string{"acme.a", "globex.b"}) {
		t.Fatalf("snapshot = %q", got)
	}
	if got := keys(r.snapshot(func(sc *scope) bool { return sc.id.Tenant == "globex" })); !slices.Equal(got, []string{"globex.b"}) {
		t.Fatalf("snapshot of globex = %q", got)
	}
	if sc, ok := r.get("globex.b"); !ok || sc != b {
		t.Fatalf("get = %v, %v", sc, ok)
	}
	if sc := r.find(func(sc *scope) bool { return sc.tier == "standard" && sc.id.Tenant == "acme" }); sc != a {
		t.Fatalf("find = %v", sc)
	}
	if r.len() != 2 {
		t.Fatalf("len = %d", r.len())
	}

	if !r.stop() || r.stop() {
		t.Fatal("stop: want true once, then false")
	}
	if _, err := r.acquire(a.id.Key(), create); !errors.Is(err, ErrStopping) {
		t.Fatalf("acquire while stopping: %v", err)
	}
	if got := keys(r.takeAll()); !slices.Equal(got, []string{"acme.a", "globex.b"}) || r.len() != 0 {
		t.Fatalf("takeAll = %q, %d left", got, r.len())
	}
}

// TestUnitRegistryEnter: enter counts an invocation until exit, drain
// waits for it, and a stopping registry refuses new ones.
func TestUnitRegistryEnter(t *testing.T) {
	var r registry
	if err := r.enter(); err != nil {
		t.Fatal(err)
	}
	r.stop()
	if err := r.enter(); !errors.Is(err, ErrStopping) {
		t.Fatalf("enter while stopping: %v", err)
	}
	if r.drain(time.Millisecond) {
		t.Fatal("drained with an invocation in flight")
	}
	r.exit()
	if !r.drain(time.Minute) {
		t.Fatal("not drained once the invocation left")
	}
}

// TestUnitRegistryLeave: a scope that leaves reserves its cgroup path until
// removed; leave does nothing to a scope no longer live, leaveIdle nothing
// to an active scope or while stopping.
func TestUnitRegistryLeave(t *testing.T) {
	var r registry
	a := registryScope(t, "standard", "acme", "a")
	b := registryScope(t, "standard", "acme", "b")
	r.locked(func() { r.addLocked(a); r.addLocked(b) })
	a.active.Store(1)
	if r.leaveIdle(a) {
		t.Fatal("an active scope left as idle")
	}
	if !r.leave(a) || r.leave(a) {
		t.Fatal("leave: want true once, then false")
	}
	var ch <-chan struct{}
	r.locked(func() { ch = r.removing[a.node.Path()] })
	if ch == nil {
		t.Fatal("no reservation of the scope's path")
	}
	waited := make(chan bool, 1)
	go func() { r.locked(func() { waited <- r.waitRemovedLocked(a.node.Path()) }) }()
	r.locked(func() {
		if !r.tenantHasScopesLocked("standard", "acme") || r.tenantHasScopesLocked("premium", "acme") {
			t.Error("tenantHasScopesLocked: want acme in standard only")
		}
	})
	r.locked(func() { r.removedLocked([]*scope{a}) })
	select {
	case <-ch:
	default:
		t.Fatal("reservation not ended by removedLocked")
	}
	<-waited // a successor waiting for the removal (or looking after it) goes on
	r.stop()
	if r.leaveIdle(b) {
		t.Fatal("a scope left as idle while stopping")
	}
	r.locked(func() {
		if r.waitRemovedLocked(a.node.Path()) || r.waitRemovedLocked(b.node.Path()) || len(r.removing) > 0 {
			t.Error("reservations left")
		}
	})
}

// TestUnitRegistryWeights: a tenant's weight is its tier's scaled by its
// most throttled live scope; a removed scope's throttling is forgotten
// unless a successor of its key lives; tier weights are set where they
// changed.
func TestUnitRegistryWeights(t *testing.T) {
	var r registry
	a := registryScope(t, "standard", "acme", "a")
	b := registryScope(t, "standard", "globex", "b")
	r.locked(func() {
		r.addLocked(a)
		r.addLocked(b)
		r.setThrottledLocked("acme.a", 25)
		if w := r.tenantWeightLocked("standard", "acme", 200); w != 50 {
			t.Errorf("throttled tenant weight %d, want 50", w)
		}
		if w := r.tenantWeightLocked("standard", "globex", 200); w != 200 {
			t.Errorf("other tenant weight %d, want 200", w)
		}
		var set []string
		weight := func(string) uint64 { return 100 }
		record := func(tier string, w uint64) error { set = append(set, tier); return nil }
		if errs := r.setTierWeightsLocked(weight, record); len(errs) > 0 || !slices.Equal(set, []string{"standard"}) {
			t.Errorf("tier weights set %q (%v), want standard", set, errs)
		}
		set = nil
		if r.setTierWeightsLocked(weight, record); len(set) > 0 {
			t.Errorf("unchanged tier weights set again: %q", set)
		}
	})
	if !r.forgetThrottled("acme.a") {
		t.Fatal("forgetThrottled of a live key: want live")
	}
	r.leave(a)
	if r.forgetThrottled("acme.a") {
		t.Fatal("forgetThrottled of a gone key: want not live")
	}
	r.locked(func() {
		r.addLocked(a)
		if w := r.tenantWeightLocked("standard", "acme", 200); w != 200 {
			t.Errorf("tenant weight after the throttled scope went: %d, want 200", w)
		}
		r.setThrottledLocked("acme.a", scopeBaseWeight)
		if len(r.throttled) != 0 {
			t.Errorf("a weight at the base is kept: %v", r.throttled)
		}
	})
}
