package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
)

var manifest = record.Manifest{Runtime: "exec", Entrypoint: "bin/run", Size: 100}

func digestOf(i int) string { return fmt.Sprintf("sha256:%064x", i) }

// changes collects a State's notifications.
type changes struct {
	mu  sync.Mutex
	got []Change
}

func (c *changes) add(ch Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.got = append(c.got, ch)
}

func (c *changes) has(want Change) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Contains(c.got, want)
}

// A tenant change on one node is seen (and notified) on another.
func TestStateTenantWatch(t *testing.T) {
	f := newFixture(t)
	a := f.state("a", StateOptions{})
	var seen changes
	b := f.state("b", StateOptions{OnChange: seen.add})
	ctx := context.Background()
	start := time.Now()
	if err := a.SetTenant(ctx, "acme", record.Tenant{Tier: "suspended", EgressAllow: []string{"203.0.113.0/24:443"}}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "b notified", func() bool { return seen.has(Change{Kind: KindTenant, Tenant: "acme"}) })
	t.Logf("tenant change seen on another node %s after the write began", time.Since(start))
	if rec, ok := b.Tenant("acme"); !ok || rec.Tier != "suspended" || len(rec.EgressAllow) != 1 || rec.Updated.IsZero() {
		t.Fatalf("b's record %+v %v", rec, ok)
	}
	// UpdateTenant keeps what it does not change; its refusal writes nothing.
	if err := b.UpdateTenant(ctx, "acme", func(r *record.Tenant, exists bool) error {
		if !exists {
			return errors.New("acme must exist")
		}
		r.Tier = "pro"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	refuse := errors.New("no")
	if err := b.UpdateTenant(ctx, "acme", func(*record.Tenant, bool) error { return refuse }); !errors.Is(err, refuse) {
		t.Errorf("refused update: %v", err)
	}
	waitFor(t, "a sees tier pro", func() bool { r, _ := a.Tenant("acme"); return r.Tier == "pro" })
	if r, _ := a.Tenant("acme"); len(r.EgressAllow) != 1 {
		t.Errorf("allow-list lost: %+v", r)
	}
	// Getters return copies.
	r, _ := a.Tenant("acme")
	r.EgressAllow[0] = "changed"
	if r2, _ := a.Tenant("acme"); r2.EgressAllow[0] == "changed" {
		t.Error("Tenant returned the cache's slice")
	}
	if err := a.SetTenant(ctx, "Bad", record.Tenant{Tier: "pro"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad tenant id: %v", err)
	}
	if err := a.SetTenant(ctx, "acme", record.Tenant{Tier: "no tier"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad tier: %v", err)
	}
}

// Two nodes registering versions of one extension at once (50 deploys
// each, every one a new digest) get distinct consecutive versions; the
// current digest again is no new version; a removed extension keeps its
// count.
func TestStateRegisterConcurrent(t *testing.T) {
	f := newFixture(t)
	m1, _ := f.member("n1", MemberOptions{})
	m2, _ := f.member("n2", MemberOptions{})
	s1 := f.state("n1", StateOptions{Member: m1})
	s2 := f.state("n2", StateOptions{Member: m2})
	const each = 50
	versions := make([]int, 2*each)
	errs := make([]error, 2*each)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range 2 * each {
		s := []*State{s1, s2}[i%2]
		wg.Go(func() {
			x, unchanged, err := s.RegisterExtension(context.Background(), "acme", "prod", "hook", digestOf(i), manifest)
			if err == nil && unchanged {
				err = errors.New("a new digest was taken as unchanged")
			}
			versions[i], errs[i] = x.Version, err
		})
	}
	wg.Wait()
	t.Logf("%d concurrent registrations from 2 nodes in %s", 2*each, time.Since(start))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	sorted := slices.Sorted(slices.Values(versions))
	for i, v := range sorted {
		if v != i+1 {
			t.Fatalf("versions %v are not 1..%d", sorted, 2*each)
		}
	}
	ctx := context.Background()
	var cur record.Extension
	waitFor(t, "both states at version 100", func() bool {
		x1, _ := s1.Extension("acme", "prod", "hook")
		x2, _ := s2.Extension("acme", "prod", "hook")
		cur = x1
		return x1.Version == 2*each && x2.Version == 2*each
	})
	x, unchanged, err := s2.RegisterExtension(ctx, "acme", "prod", "hook", cur.Digest, manifest)
	if err != nil || !unchanged || x.Version != 2*each {
		t.Fatalf("redeploy of the current digest: %+v %v %v", x, unchanged, err)
	}
	waitFor(t, "holders of every digest", func() bool {
		return len(s1.BundleHolders(digestOf(0))) == 1 && len(s1.BundleHolders(digestOf(1))) == 1
	})
	if h := s1.BundleHolders(digestOf(1)); h[0] != "n2" {
		t.Errorf("holders of digest 1: %v", h)
	}
	if err := s1.RemoveExtension(ctx, "acme", "prod", "hook"); err != nil {
		t.Fatal(err)
	}
	if err := s1.RemoveExtension(ctx, "acme", "prod", "hook"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove: %v", err)
	}
	waitFor(t, "removed on n2", func() bool { _, ok := s2.Extension("acme", "prod", "hook"); return !ok })
	x, _, err = s2.RegisterExtension(ctx, "acme", "prod", "hook", cur.Digest, manifest)
	if err != nil || x.Version != 2*each+1 || x.Node != "n2" || x.Entrypoint != "bin/run" {
		t.Errorf("deploy after remove: %+v %v", x, err)
	}
	if _, _, err := s1.RegisterExtension(ctx, "acme", "prod", "hook", "sha256:nothex", manifest); !errors.Is(err, ErrInvalid) {
		t.Errorf("bad digest: %v", err)
	}
}

// Records that do not parse (from a buggy or newer host) are skipped and
// logged; the rest is served.
func TestStateMalformed(t *testing.T) {
	f := newFixture(t)
	c := f.client()
	ctx := context.Background()
	for k, v := range map[string]string{
		f.keys.Tenant("acme"):                    `{"tier":"pro"}`,
		f.keys.Tenant("bad"):                     `{"tier":"../x"}`,
		f.keys.Tenant("Upper"):                   `{"tier":"pro"}`,
		f.keys.Node("n9"):                        `{"name":"other","addr":"h:1"}`,
		f.keys.Extension("acme", "prod", "hook"): `not json`,
		f.keys.Spend("acme") + "n1":              `{"day":"x"}`,
		f.keys.Bundles() + "sha256:00/n1":        ``,
		f.keys.Policy():                          `{"isolation":["planet"]}`,
		"/test/future/kind":                      `whatever`,
		f.keys.Tenant("big"):                     `{"tier":"` + strings.Repeat("a", record.MaxRecord) + `"}`,
	} {
		if _, err := c.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	var seen changes
	s := f.state("a", StateOptions{OnChange: seen.add})
	if ts := s.Tenants(); len(ts) != 1 || ts["acme"].Tier != "pro" {
		t.Errorf("tenants %v", ts)
	}
	if len(s.Nodes())+len(s.Extensions())+len(s.Spend("acme")) != 0 {
		t.Error("a malformed record was taken")
	}
	if _, ok := s.Policy(); ok {
		t.Error("a malformed policy was taken")
	}
	// A valid record turned malformed by a watch event is dropped.
	if _, err := c.Put(ctx, f.keys.Tenant("acme"), `{"tier":7}`); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "acme dropped", func() bool { _, ok := s.Tenant("acme"); return !ok })
	if !seen.has(Change{Kind: KindTenant, Tenant: "acme", Deleted: true}) {
		t.Error("the drop was not notified")
	}
	if n := strings.Count(f.logs.String(), "fleet record skipped"); n < 8 {
		t.Errorf("%d records logged as skipped, want 8:\n%s", n, f.logs)
	}
}

// With etcd stopped the state is degraded: it is still served, writes fail
// with ErrUnavailable; once etcd is back it catches up, and what another
// node changed meanwhile is seen.
func TestStateDegraded(t *testing.T) {
	f := newFixture(t)
	m, _ := f.member("a", MemberOptions{})
	var seen changes
	a := f.state("a", StateOptions{Member: m, OnChange: seen.add})
	b := f.state("b", StateOptions{})
	ctx := context.Background()
	if err := a.SetTenant(ctx, "acme", record.Tenant{Tier: "pro"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "acme on a", func() bool { _, ok := a.Tenant("acme"); return ok })

	stopAt := time.Now()
	f.etcd.Stop()
	t.Logf("etcd stopped in %s", time.Since(stopAt))
	waitFor(t, "a degraded", func() bool { _, d := a.Degraded(); return d })
	if r, ok := a.Tenant("acme"); !ok || r.Tier != "pro" {
		t.Errorf("degraded read: %+v %v", r, ok)
	}
	// (Node records may have gone meanwhile: etcd's graceful stop takes
	// seconds, during which keepalives fail and leases expire.)
	if err := a.SetTenant(ctx, "acme", record.Tenant{Tier: "gold"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("degraded SetTenant: %v", err)
	}
	if _, _, err := a.RegisterExtension(ctx, "acme", "prod", "hook", digestOf(1), manifest); !errors.Is(err, ErrUnavailable) {
		t.Errorf("degraded RegisterExtension: %v", err)
	}
	// b has not noticed yet or has: either way its write fails unavailable.
	start := time.Now()
	if err := b.SetTenant(ctx, "beta", record.Tenant{Tier: "pro"}); !errors.Is(err, ErrUnavailable) {
		t.Errorf("SetTenant with etcd down: %v", err)
	}
	t.Logf("a write with etcd down failed after %s", time.Since(start))

	restartAt := time.Now()
	if err := f.etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("etcd restarted in %s", time.Since(restartAt))
	// b writes as soon as it can, possibly before a has caught up.
	waitFor(t, "b writes again", func() bool {
		return b.SetTenant(ctx, "acme", record.Tenant{Tier: "suspended"}) == nil
	})
	took := waitFor(t, "a caught up", func() bool {
		r, _ := a.Tenant("acme")
		_, d := a.Degraded()
		return !d && r.Tier == "suspended"
	})
	t.Logf("a saw b's change %s after b wrote it", took)
	if !seen.has(Change{Kind: KindTenant, Tenant: "acme"}) {
		t.Error("the change was not notified")
	}
	if !strings.Contains(f.logs.String(), "fleet state degraded") || !strings.Contains(f.logs.String(), "caught up") {
		t.Errorf("degraded mode not logged:\n%s", f.logs)
	}
	if _, _, err := a.RegisterExtension(ctx, "acme", "prod", "hook", digestOf(1), manifest); err != nil {
		t.Errorf("register after the outage: %v", err)
	}
	// Held by a under its lease (the one it had, or the one it registers
	// again with when it expired during the outage).
	waitFor(t, "a holds the bundle", func() bool { return slices.Equal(b.BundleHolders(digestOf(1)), []string{"a"}) })
}
