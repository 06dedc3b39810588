package fleet

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/scoped-io/scoped/fleet/record"
)

const digestA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"

// A node appears, its load refreshes, and a clean Stop removes it (and the
// keys it held) at once.
func TestMemberJoinRefreshLeave(t *testing.T) {
	f := newFixture(t)
	s := f.state("watcher", StateOptions{})
	var scopes atomic.Int64
	m, c := f.member("a", MemberOptions{Load: func() (int, float64) { return int(scopes.Load()), 0.5 }})
	waitFor(t, "node a listed", func() bool { _, ok := s.Nodes()["a"]; return ok })
	scopes.Store(7)
	took := waitFor(t, "node a's load refreshed", func() bool { return s.Nodes()["a"].Scopes == 7 })
	t.Logf("load refresh seen after %s (refresh every %s)", took, min(testTTL/4, 2e9))
	if n := s.Nodes()["a"]; n.Busy != 0.5 || n.Addr != "127.0.0.1:7443" || n.CPUs != 2 {
		t.Errorf("record %+v", n)
	}
	ctx := context.Background()
	if err := m.HoldBundle(ctx, digestA); err != nil {
		t.Fatal(err)
	}
	sp := record.Spend{Day: day(), Month: month(), Daily: map[string]float64{"cpu_seconds": 3}}
	if err := m.PublishSpend("acme", sp); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "bundle and spend listed", func() bool {
		d, _ := s.SpendTotals("acme", "cpu_seconds", day())
		return len(s.BundleHolders(digestA)) == 1 && d == 3
	})
	if err := m.Stop(); err != nil {
		t.Fatal(err)
	}
	// Gone at once: no key of the node is left the moment Stop returns.
	r, err := c.Get(ctx, "/test/", clientOpPrefix())
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range r.Kvs {
		if string(kv.Key) != f.keys.Policy() {
			t.Errorf("key %s left after Stop", kv.Key)
		}
	}
	waitFor(t, "node a gone from the state", func() bool { return len(s.Nodes()) == 0 && len(s.BundleHolders(digestA)) == 0 })
	if err := m.HoldBundle(ctx, digestA); !errors.Is(err, ErrStopped) {
		t.Errorf("HoldBundle after Stop: %v", err)
	}
}

// A node whose process dies without revoking its lease disappears when the
// lease expires.
func TestMemberDiesWithoutRevoke(t *testing.T) {
	f := newFixture(t)
	s := f.state("watcher", StateOptions{})
	m, c := f.member("b", MemberOptions{})
	if err := m.HoldBundle(context.Background(), digestA); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node b listed", func() bool { return len(s.Nodes()) == 1 && len(s.BundleHolders(digestA)) == 1 })
	c.Close() // the process died: no keepalive, no revoke
	took := waitFor(t, "node b gone", func() bool { return len(s.Nodes()) == 0 && len(s.BundleHolders(digestA)) == 0 })
	t.Logf("node gone %s after its last client closed (lease TTL %s)", took, testTTL)
	_ = m.Stop() // its client is closed: the revoke fails, the loop ends
}

// A lease lost (expired while etcd was away, or revoked by an operator) is
// replaced: the node and the keys it held come back.
func TestMemberLeaseLost(t *testing.T) {
	f := newFixture(t)
	s := f.state("watcher", StateOptions{})
	m, c := f.member("c", MemberOptions{})
	if err := m.HoldBundle(context.Background(), digestA); err != nil {
		t.Fatal(err)
	}
	sp := record.Spend{Day: day(), Month: month(), Monthly: map[string]float64{"invocations": 5}}
	if err := m.PublishSpend("acme", sp); err != nil {
		t.Fatal(err)
	}
	spent := func() float64 { _, mo := s.SpendTotals("acme", "invocations", day()); return mo }
	waitFor(t, "spend written by the refresh loop", func() bool { return spent() == 5 })
	old := m.Lease()
	if _, err := c.Revoke(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "registered again", func() bool { l := m.Lease(); return l != 0 && l != old })
	waitFor(t, "node, bundle and spend listed again", func() bool {
		return len(s.Nodes()) == 1 && len(s.BundleHolders(digestA)) == 1 && spent() == 5
	})
	if !strings.Contains(f.logs.String(), "lease was lost") {
		t.Error("the lost lease was not logged")
	}
}

// A node with another policy than the fleet's is refused, naming the
// difference; the same policy in another order joins.
func TestMemberPolicy(t *testing.T) {
	f := newFixture(t)
	p := record.Policy{Isolation: []string{"environment", "user"}, Placement: map[string][]string{"gold": {"dedicated-acme"}}}
	f.member("a", MemberOptions{Policy: &p})
	same := record.Policy{Isolation: []string{"user", "environment"}, Placement: map[string][]string{"gold": {"dedicated-acme"}}}
	f.member("b", MemberOptions{Policy: &same})
	other := record.Policy{Isolation: []string{"environment"}, Placement: map[string][]string{"gold": {"dedicated-acme"}, "silver": {"x"}}}
	m := NewMember(MemberOptions{Client: f.client(), Keys: f.keys, TTL: testTTL, Node: f.node("c"), Policy: &other, Log: f.log()})
	err := m.Start(context.Background())
	if !errors.Is(err, ErrPolicyMismatch) || !strings.Contains(err.Error(), "isolation") || !strings.Contains(err.Error(), "tier silver") {
		t.Fatalf("Start with another policy: %v", err)
	}
	t.Logf("refused: %v", err)
	s := f.state("watcher", StateOptions{})
	if _, ok := s.Nodes()["c"]; ok || len(s.Nodes()) != 2 {
		t.Errorf("nodes %v: c must not have joined", s.Nodes())
	}
	if got, ok := s.Policy(); !ok || PolicyDiff(got, p) != "" {
		t.Errorf("fleet policy %+v", got)
	}
}

// A daemon under a node name another live daemon (another address) holds
// is refused; its own previous life is replaced.
func TestMemberNodeTaken(t *testing.T) {
	f := newFixture(t)
	_, c := f.member("a", MemberOptions{})
	n := f.node("a")
	n.Addr = "127.0.0.2:7443"
	m := NewMember(MemberOptions{Client: f.client(), Keys: f.keys, TTL: testTTL, Node: n, Log: f.log()})
	if err := m.Start(context.Background()); !errors.Is(err, ErrNodeTaken) {
		t.Fatalf("Start under a taken name: %v", err)
	}
	c.Close() // the first life dies; its lease lingers
	again := NewMember(MemberOptions{Client: f.client(), Keys: f.keys, TTL: testTTL, Node: f.node("a"), Log: f.log()})
	if err := again.Start(context.Background()); err != nil {
		t.Fatalf("restart of node a: %v", err)
	}
	if err := again.Stop(); err != nil {
		t.Fatal(err)
	}
}

// Spend published by two nodes sums on a third; a node's view without its
// own record (SpendTotalsExcept) is the others' sum, so that it adds its
// own ledger once; a record of an earlier day counts nothing that day.
func TestSpendAcrossNodes(t *testing.T) {
	f := newFixture(t)
	s := f.state("c", StateOptions{})
	a, _ := f.member("a", MemberOptions{})
	b, _ := f.member("b", MemberOptions{})
	pub := func(m *Member, d, mo float64, dayStart record.Spend) {
		t.Helper()
		sp := dayStart
		sp.Daily = map[string]float64{"cpu_seconds": d}
		sp.Monthly = map[string]float64{"cpu_seconds": mo}
		if err := m.PublishSpend("acme", sp); err != nil {
			t.Fatal(err)
		}
	}
	now := record.Spend{Day: day(), Month: month()}
	pub(a, 2, 10, now)
	pub(b, 3, 20, now)
	waitFor(t, "both nodes' spend listed", func() bool {
		d, mo := s.SpendTotals("acme", "cpu_seconds", day())
		return d == 5 && mo == 30
	})
	if d, mo := s.SpendTotalsExcept("acme", "cpu_seconds", "a", day()); d != 3 || mo != 20 {
		t.Errorf("totals except a: %g, %g, want 3, 20", d, mo)
	}
	if d, mo := s.SpendTotalsExcept("acme", "cpu_seconds", "c", day()); d != 5 || mo != 30 {
		t.Errorf("totals except c (publishing nothing): %g, %g, want 5, 30", d, mo)
	}
	if d, _ := s.SpendTotals("acme", "other", day()); d != 0 {
		t.Errorf("an unpublished meter totals %g", d)
	}
	// b's record of yesterday: its day counts nothing today, its month
	// still counts when yesterday is in this month.
	yesterday := record.Spend{Day: day().AddDate(0, 0, -1), Month: month()}
	if yesterday.Day.Before(yesterday.Month) {
		yesterday.Month = yesterday.Month.AddDate(0, -1, 0)
	}
	pub(b, 7, 20, yesterday)
	waitFor(t, "b's record of yesterday", func() bool { return s.Spend("acme")["b"].Day.Equal(yesterday.Day) })
	d, mo := s.SpendTotals("acme", "cpu_seconds", day())
	wantMo := 30.0
	if !yesterday.Month.Equal(month()) {
		wantMo = 10
	}
	if d != 2 || mo != wantMo {
		t.Errorf("totals with b's record of yesterday: %g, %g, want 2, %g", d, mo, wantMo)
	}
}
