package supervisor

import (
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
)

// fakeFleet is the spend records of a fleet, as fleet.State keeps them
// (tenant → node → record); fakeNode is one node's publisher and view of
// the others.
type fakeFleet struct {
	mu    sync.Mutex
	spend map[string]map[string]record.Spend
}

type fakeNode struct {
	f    *fakeFleet
	name string
}

func (n fakeNode) PublishSpend(tenant string, s record.Spend) error {
	if err := s.Check(); err != nil {
		return err
	}
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	if n.f.spend == nil {
		n.f.spend = map[string]map[string]record.Spend{}
	}
	if n.f.spend[tenant] == nil {
		n.f.spend[tenant] = map[string]record.Spend{}
	}
	n.f.spend[tenant][n.name] = s
	return nil
}

func (n fakeNode) SpendTotals(tenant, meter string, now time.Time) (day, month float64) {
	now = now.UTC()
	d := time.Date(now.Year(), now.Month(), now.Day(), 0, 0, 0, 0, time.UTC)
	m := time.Date(now.Year(), now.Month(), 1, 0, 0, 0, 0, time.UTC)
	n.f.mu.Lock()
	defer n.f.mu.Unlock()
	for node, sp := range n.f.spend[tenant] {
		if node == n.name {
			continue
		}
		if sp.Day.Equal(d) {
			day += sp.Daily[meter]
		}
		if sp.Month.Equal(m) {
			month += sp.Monthly[meter]
		}
	}
	return day, month
}

// capsNode is a spendCaps on a ledger of used (meter → this node's usage,
// whatever the period), in a fleet as node.
func capsNode(f *fakeFleet, node string, used map[string]float64, counted map[string]int) *spendCaps {
	c := &spendCaps{
		sum: func(_ ident.Tenant, meter string, _, _ time.Time) (float64, error) {
			return used[meter], nil
		},
		conf:    func() MeteringConfig { return MeteringConfig{Flush: Duration{Duration: time.Minute}} },
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		countFn: func(kind string) { counted[kind]++ },
		spent:   map[ident.Tenant]spent{},
	}
	c.fleet.Store(&fleetLimits{pub: fakeNode{f, node}, others: fakeNode{f, node}})
	return c
}

// TestUnitFleetSpendCaps: a cap reached across two nodes refuses on a
// third, and on the two; a node counts its own usage once (its ledger,
// not its published record as well); records of an earlier day count
// nothing.
func TestUnitFleetSpendCaps(t *testing.T) {
	f := &fakeFleet{}
	counted := map[string]int{}
	usedA, usedB, usedC := map[string]float64{}, map[string]float64{}, map[string]float64{}
	a, b, c := capsNode(f, "a", usedA, counted), capsNode(f, "b", usedB, counted), capsNode(f, "c", usedC, counted)
	tier := Tier{DailyCaps: map[string]float64{"cpu_seconds": 10}, MonthlyCaps: map[string]float64{"invocations": 100}}
	now := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	for _, n := range []*spendCaps{a, b, c} {
		if err := n.check("acme", "capped", tier, now); err != nil {
			t.Fatalf("nothing used: %v", err)
		}
	}
	// A tenant first checked in this daemon's life is published without
	// new usage (a restarted node's earlier usage), once.
	usedC["cpu_seconds"] = 1
	c.publish(nil, now)
	if sp, ok := f.spend["acme"]["c"]; !ok || sp.Daily["cpu_seconds"] != 1 {
		t.Fatalf("c's first check not published: %+v", f.spend)
	}
	usedC["cpu_seconds"] = 0
	c.publish(nil, now)
	if f.spend["acme"]["c"].Daily["cpu_seconds"] != 1 {
		t.Error("published again without new usage")
	}
	usedC["cpu_seconds"] = 0
	c.publish(map[ident.Tenant]bool{"acme": true}, now)
	// a uses 6 and publishes: alone it is under the cap, and counted once.
	usedA["cpu_seconds"], usedA["invocations"] = 6, 40
	a.publish(map[ident.Tenant]bool{"acme": true, "globex": true}, now) // globex has no caps checked: nothing
	if sp := f.spend["acme"]["a"]; sp.Daily["cpu_seconds"] != 6 || sp.Monthly["invocations"] != 40 ||
		!sp.Day.Equal(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC)) || !sp.Month.Equal(time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("a published %+v", sp)
	}
	if _, ok := f.spend["globex"]; ok {
		t.Error("a tenant without caps was published")
	}
	now = now.Add(time.Minute) // the next flush: the kept figures are summed again
	if err := a.check("acme", "capped", tier, now); err != nil {
		t.Fatalf("a at 6 of 10, counted once: %v", err)
	}
	// b uses 6 too: 12 of 10 across the two, refused on the third.
	usedB["cpu_seconds"] = 6
	b.publish(map[ident.Tenant]bool{"acme": true}, now)
	now = now.Add(time.Minute)
	for name, n := range map[string]*spendCaps{"a": a, "b": b, "c": c} {
		err := n.check("acme", "capped", tier, now)
		var ra *RetryAfterError
		if !errors.Is(err, ErrQuota) || !errors.As(err, &ra) || ra.After != 6*time.Hour-2*time.Minute {
			t.Errorf("node %s, 12 of 10 used across a and b: %v, want ErrQuota until midnight", name, err)
		}
	}
	// The next day: the day's records count nothing, the month's still do.
	now = time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	usedA["cpu_seconds"], usedB["cpu_seconds"] = 0, 0
	if err := c.check("acme", "capped", tier, now); err != nil {
		t.Fatalf("the next day: %v", err)
	}
	usedB["invocations"] = 60
	b.publish(map[ident.Tenant]bool{"acme": true}, now)
	if err := c.check("acme", "capped", tier, now.Add(time.Minute)); !errors.Is(err, ErrQuota) {
		t.Errorf("100 of 100 invocations this month across a and b: %v, want ErrQuota", err)
	}
	if len(counted) != 0 {
		t.Errorf("counted %v", counted)
	}
	// A single host (no fleet) neither publishes nor adds.
	c.fleet.Store(nil)
	if err := c.check("acme", "capped", tier, now.Add(2*time.Minute)); err != nil {
		t.Errorf("single host: %v", err)
	}
}

// TestUnitFleetSpendPublishFails: a refused publish is counted and
// logged, never fatal to the flush.
func TestUnitFleetSpendPublishFails(t *testing.T) {
	counted := map[string]int{}
	c := capsNode(&fakeFleet{}, "a", map[string]float64{"cpu_seconds": -1}, counted) // a record Check refuses
	tier := Tier{DailyCaps: map[string]float64{"cpu_seconds": 10}}
	now := time.Date(2026, 12, 6, 18, 0, 0, 0, time.UTC)
	if err := c.check("acme", "capped", tier, now); err != nil {
		t.Fatal(err)
	}
	c.publish(map[ident.Tenant]bool{"acme": true}, now)
	if counted["fleet_spend"] != 1 {
		t.Errorf("counted %v, want one fleet_spend", counted)
	}
}

// TestUnitMeterFleet: a fleet node's ledger makes record ids with its
// name; the tenants a flush added usage of are published by the loop's
// next publishSpend (with a publisher set, once).
func TestUnitMeterFleet(t *testing.T) {
	s := unitSupervisor(t)
	cfg := *s.conf()
	cfg.Metering.Enabled = true
	cfg.Fleet.Endpoints = []string{"http://127.0.0.1:2379"}
	cfg.Fleet.Node = "node-a"
	s.cfg.Store(&cfg)
	if err := s.meter.open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.meter.close() })
	m := s.meter
	at := time.Now()
	dims := metering.Dimensions{Scope: "acme.production", Environment: "production"}
	if err := m.ledger.Commit([]metering.Delta{{Tenant: "acme", Meter: metering.CPUSeconds, Dims: dims, At: at, Value: 2}}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := m.ledger.Seal(at.Add(2 * m.ledger.Window())); err != nil { // the test's window, sealed early
		t.Fatal(err)
	}
	recs, err := m.ledger.Sealed(0, 10)
	if err != nil || len(recs) != 1 {
		t.Fatalf("sealed %v, %v", recs, err)
	}
	r := recs[0]
	if want := metering.NodeRecordID("node-a", "acme", metering.CPUSeconds, r.WindowStart, r.Window, dims); r.ID != want ||
		r.ID == metering.RecordID("acme", metering.CPUSeconds, r.WindowStart, r.Window, dims) {
		t.Errorf("record id %s, want node-a's %s", r.ID, want)
	}

	f := &fakeFleet{}
	m.useFleetLimits(fakeNode{f, "node-a"}, fakeNode{f, "node-a"})
	tier := Tier{DailyCaps: map[string]float64{metering.CPUSeconds: 1000}}
	if err := m.checkCaps("acme", "capped", tier, at); err != nil {
		t.Fatal(err)
	}
	m.mu.Lock()
	m.unpublished = map[ident.Tenant]bool{"acme": true}
	m.mu.Unlock()
	m.publishSpend(at)
	if sp := f.spend["acme"]["node-a"]; sp.Daily[metering.CPUSeconds] != 2 {
		t.Errorf("published %+v, want 2 cpu_seconds today", sp)
	}
	if m.unpublished != nil {
		t.Errorf("unpublished %v after publishSpend", m.unpublished)
	}
	m.useFleetLimits(nil, nil)
	if m.caps.fleet.Load() != nil {
		t.Error("useFleetLimits(nil, nil) keeps the fleet")
	}
}

// TestUnitGateFleetSplit: a tier's rate, burst and max_concurrent are the
// fleet's, split between the live nodes; the split follows membership.
func TestUnitGateFleetSplit(t *testing.T) {
	for _, c := range []struct {
		t    Tier
		n    int64
		want Tier
	}{
		{Tier{Rate: 30, Burst: 60, MaxConcurrent: 9}, 1, Tier{Rate: 30, Burst: 60, MaxConcurrent: 9}},
		{Tier{Rate: 30, Burst: 60, MaxConcurrent: 9}, 3, Tier{Rate: 10, Burst: 20, MaxConcurrent: 3}},
		{Tier{Rate: 30, MaxConcurrent: 10}, 4, Tier{Rate: 7.5, Burst: 7, MaxConcurrent: 2}}, // burst: the rate's 30, rounded down
		{Tier{Rate: 1, Burst: 1, MaxConcurrent: 1}, 5, Tier{Rate: 0.2, Burst: 1, MaxConcurrent: 1}},
		{Tier{MaxConcurrent: 4}, 2, Tier{MaxConcurrent: 2}},
		{Tier{}, 3, Tier{}},
	} {
		if got := c.t.perNode(c.n); got.Rate != c.want.Rate || got.Burst != c.want.Burst || got.MaxConcurrent != c.want.MaxConcurrent {
			t.Errorf("%+v on %d nodes: %+v, want %+v", c.t, c.n, got, c.want)
		}
	}

	g := newGate(nil)
	tier := Tier{Rate: 1, Burst: 4, MaxConcurrent: 4}
	now := time.Unix(1000, 0)
	admit2 := func(tenant ident.Tenant, tierName string) int {
		n := 0
		for ; n < 10; n++ {
			if _, err := g.Admit(tenant, tierName, tier, now); err != nil {
				break
			}
		}
		return n
	}
	admit := func(tenant ident.Tenant) int { return admit2(tenant, "std") }
	if n := admit("solo"); n != 4 {
		t.Errorf("single host: %d admitted, want 4", n)
	}
	g.setFleetNodes(2, nil)
	if n := admit("pair"); n != 2 {
		t.Errorf("one of 2 nodes: %d admitted, want 2", n)
	}
	g.setFleetNodes(4, map[string]int{"silo": 2})
	if n := admit("quad"); n != 1 {
		t.Errorf("one of 4 nodes: %d admitted, want 1", n)
	}
	if n := admit2("quad-silo", "silo"); n != 2 {
		t.Errorf("one of the 2 nodes of a placed tier: %d admitted, want 2", n)
	}
	// The split costs an admission no allocation: as many as a single
	// host's (the slot's release function).
	allocs := func() float64 {
		big := Tier{Rate: 1e6, Burst: 1e6, MaxConcurrent: 1 << 20}
		return testing.AllocsPerRun(100, func() {
			done, err := g.Admit("allocs", "silo", big, now)
			if err != nil {
				t.Fatal(err)
			}
			done()
		})
	}
	inFleet := allocs()
	g.setFleetNodes(0, nil) // etcd says nothing: a single host's figures
	if g.nodes.Load() != nil {
		t.Error("a single host keeps a split")
	}
	if n := admit("again"); n != 4 {
		t.Errorf("back to one node: %d admitted, want 4", n)
	}
	if single := allocs(); inFleet != single {
		t.Errorf("an admission allocates %g times in a fleet, %g on a single host", inFleet, single)
	}
}

// TestUnitFleetSplitOf: the nodes, and per placed tier those with all its
// labels.
func TestUnitFleetSplitOf(t *testing.T) {
	nodes := map[string]record.Node{
		"a": {Name: "a", Labels: []string{"eu", "gpu"}},
		"b": {Name: "b", Labels: []string{"eu"}},
		"c": {Name: "c"},
	}
	pol := record.Policy{Placement: map[string][]string{"eu": {"eu"}, "gpu": {"eu", "gpu"}, "mars": {"mars"}}}
	n, placed := fleetSplitOf(nodes, pol)
	if n != 3 || placed["eu"] != 2 || placed["gpu"] != 1 || placed["mars"] != 0 || len(placed) != 3 {
		t.Errorf("split %d, %v", n, placed)
	}
	g := newGate(nil)
	g.setFleetNodes(n, placed)
	tier := Tier{MaxConcurrent: 6}
	for name, want := range map[string]int{"standard": 2, "eu": 3, "gpu": 6, "mars": 6} {
		if got := g.split(name, tier).MaxConcurrent; got != want {
			t.Errorf("tier %s: max_concurrent %d on this node, want %d", name, got, want)
		}
	}
}
