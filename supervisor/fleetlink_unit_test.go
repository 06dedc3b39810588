package supervisor

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/etcdtest"
	"github.com/scoped-io/scoped/internal/tlstest"
	"github.com/scoped-io/scoped/metrics"
)

// linkRecorder is what a fleetLink under test did to the daemon's limits.
type linkRecorder struct {
	mu     sync.Mutex
	pub    spendPublisher
	others fleetSpend
	spends int // spendLimits calls
	n      int
	placed map[string]int
	splits int // splitLimits calls
}

func (r *linkRecorder) spend(pub spendPublisher, others fleetSpend) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.pub, r.others = pub, others
	r.spends++
}

func (r *linkRecorder) split(n int, placed map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.n, r.placed = n, maps.Clone(placed)
	r.splits++
}

func (r *linkRecorder) splitNow() (int, map[string]int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n, maps.Clone(r.placed)
}

// linkFixture is a fleet of one real etcd whose nodes are fleetLinks on
// fake daemons (a store and tenants in a temporary directory).
type linkFixture struct {
	t    *testing.T
	etcd *etcdtest.Server
	ca   *tlstest.CA
}

func newLinkFixture(t *testing.T) *linkFixture {
	return &linkFixture{t: t, etcd: etcdtest.Start(t), ca: tlstest.NewCA(t)}
}

// config is node's configuration, with tier silo placed on label "gpu".
func (x *linkFixture) config(node string, labels ...string) *Config {
	t := x.t
	c := DefaultConfig()
	c.StateDir = t.TempDir()
	silo := c.Tiers["standard"]
	silo.Placement = []string{"gpu"}
	c.Tiers["silo"] = silo
	cert, key := x.ca.Issue(t, node, []net.IP{net.IPv4(127, 0, 0, 1)})
	c.Fleet = fleet.Config{Endpoints: x.etcd.Endpoints(), Node: node, Listen: "127.0.0.1:1", TLSCA: x.ca.CertFile(),
		TLSCert: cert, TLSKey: key, Labels: labels}
	if err := c.Fleet.Validate(); err != nil {
		t.Fatal(err)
	}
	return &c
}

// link is a started fleetLink of c's node, and what it did to the limits.
func (x *linkFixture) link(c *Config, deps func(*fleetDeps)) (*fleetLink, *linkRecorder) {
	t := x.t
	store, err := NewStore(c.StateDir, c.Limits.MaxBundle, c.Limits.MaxBundleFiles)
	if err != nil {
		t.Fatal(err)
	}
	tenants, err := openTenants(c.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	rec := &linkRecorder{}
	d := fleetDeps{conf: func() *Config { return c }, log: slog.New(slog.DiscardHandler), metrics: metrics.New(),
		store: store, tenants: tenants, applyTiers: func() error { return nil },
		removeLocal: func(tenant, env, name string) error { return store.Remove(tenant, env, name) },
		liveScopes:  func() int { return 0 }, spendLimits: rec.spend, splitLimits: rec.split}
	if deps != nil {
		deps(&d)
	}
	f := newFleetLink(d)
	if err := f.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Stop() })
	return f, rec
}

// eventually polls cond until it holds (the bound only ends a hung test).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 20s", what)
		}
	}
}

// TestUnitFleetLinkLimits: joining, the node makes the spend caps
// fleet-wide (its Member publishes, the others' totals are added) and
// splits the limits between the live nodes, per placed tier between those
// with its labels; the split follows nodes joining and leaving; Stop makes
// them a single host's again.
func TestUnitFleetLinkLimits(t *testing.T) {
	x := newLinkFixture(t)
	a, rec := x.link(x.config("node-a"), nil)
	rec.mu.Lock()
	if rec.pub != a.member || rec.others == nil || rec.spends != 1 {
		t.Errorf("spend limits at join: publisher %v (member %p), others %v, %d calls", rec.pub, a.member, rec.others, rec.spends)
	}
	rec.mu.Unlock()
	if n, placed := rec.splitNow(); n != 1 || len(placed) != 1 || placed["silo"] != 0 {
		t.Errorf("split at join: %d, %v; want 1 node, silo on none", n, placed)
	}

	// node-b, labelled gpu, joins: two nodes, silo on one.
	b, _ := x.link(x.config("node-b", "gpu"), nil)
	eventually(t, "node-a to split between 2 nodes", func() bool {
		n, placed := rec.splitNow()
		return n == 2 && placed["silo"] == 1
	})
	// The others' totals are node-b's: its published spend is summed,
	// node-a's own record is not (node-a adds its ledger).
	day := time.Now().UTC().Truncate(24 * time.Hour)
	month := time.Date(day.Year(), day.Month(), 1, 0, 0, 0, 0, time.UTC)
	for node, l := range map[string]*fleetLink{"node-a": a, "node-b": b} {
		sp := record.Spend{Day: day, Month: month, Daily: map[string]float64{"invocations": 3}, Updated: time.Now().UTC()}
		if node == "node-b" {
			sp.Daily["invocations"] = 4
		}
		if err := l.member.PublishSpend("acme", sp); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "node-b's spend summed on node-a", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		d, _ := rec.others.SpendTotals("acme", "invocations", time.Now())
		return d == 4
	})

	// node-b leaves: one node again.
	if err := b.Stop(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-a alone again", func() bool {
		n, placed := rec.splitNow()
		return n == 1 && placed["silo"] == 0
	})

	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if rec.pub != nil || rec.others != nil || rec.n != 0 || rec.placed != nil {
		t.Errorf("after Stop: publisher %v, others %v, split %d %v; want a single host's", rec.pub, rec.others, rec.n, rec.placed)
	}
}

// TestUnitFleetLinkGate: a real gate and meter plugged into a node
// follow the fleet: a tier's max_concurrent is this node's share.
func TestUnitFleetLinkGate(t *testing.T) {
	x := newLinkFixture(t)
	g := newGate(nil)
	_, _ = x.link(x.config("node-a"), func(d *fleetDeps) { d.splitLimits = g.setFleetNodes })
	_, _ = x.link(x.config("node-b", "gpu"), nil)
	tier := Tier{MaxConcurrent: 4}
	eventually(t, "node-a's share of 4 in flight to be 2", func() bool { return g.split("standard", tier).MaxConcurrent == 2 })
	if got := g.split("silo", tier).MaxConcurrent; got != 4 {
		t.Errorf("silo, placed on node-b alone: %d in flight here, want 4", got)
	}
}

// TestUnitFleetLinkHolds: a node says it holds the bundles it stores of
// the fleet's current versions, and stops saying so when a version is
// superseded, when the extension is removed fleet-wide, and when it no
// longer stores a bundle another extension of the fleet still uses.
func TestUnitFleetLinkHolds(t *testing.T) {
	x := newLinkFixture(t)
	a, _ := x.link(x.config("node-a"), nil)
	b, _ := x.link(x.config("node-b"), nil)
	holders := func(d string) []string { return b.state.BundleHolders(d) }
	is := func(got []string, want ...string) bool { return slices.Equal(got, want) }

	one, _, err := a.deploy("acme", "prod", "ext", unitBundle("one"))
	if err != nil || one.Version != "v1" {
		t.Fatalf("deploy: %+v %v", one, err)
	}
	eventually(t, "v1 held by node-a", func() bool { return is(holders(one.Digest), "node-a") })
	two, _, err := a.deploy("acme", "prod", "ext", unitBundle("two"))
	if err != nil || two.Version != "v2" {
		t.Fatalf("deploy v2: %+v %v", two, err)
	}
	eventually(t, "superseded v1 dropped, v2 held", func() bool {
		return is(holders(one.Digest)) && is(holders(two.Digest), "node-a")
	})
	if h := a.member.HeldBundles(); !is(h, two.Digest) {
		t.Errorf("node-a holds %v, want v2's only", h)
	}

	// The same bundle under two extensions: node-a has it as acme's,
	// node-b as globex's.
	three, _, err := a.deploy("acme", "prod", "other", unitBundle("three"))
	if err != nil {
		t.Fatal(err)
	}
	same, _, err := b.deploy("globex", "prod", "ext", unitBundle("three"))
	if err != nil || same.Digest != three.Digest {
		t.Fatalf("the same bundle deployed on node-b: %+v %v", same, err)
	}
	eventually(t, "both nodes hold it", func() bool { return is(holders(three.Digest), "node-a", "node-b") })
	// Removed fleet-wide: node-a removes acme's copies, and stops saying
	// it holds their bundles (globex's still uses one of them).
	for _, name := range []string{"ext", "other"} {
		if err := a.remove("acme", "prod", name); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "node-a's holds dropped", func() bool {
		return is(holders(two.Digest)) && is(holders(three.Digest), "node-b")
	})
	if _, err := a.store.FilesByDigest(three.Digest); !errors.Is(err, ErrNotFound) {
		t.Errorf("node-a still stores the bundle: %v", err)
	}
	if h := a.member.HeldBundles(); len(h) != 0 {
		t.Errorf("node-a holds %v", h)
	}
}

// TestUnitFleetLinkStatus: a node's status names it and the members it
// sees, the split, and whether (since when) its state is degraded.
func TestUnitFleetLinkStatus(t *testing.T) {
	x := newLinkFixture(t)
	a, _ := x.link(x.config("node-a"), nil)
	_, _ = x.link(x.config("node-b", "gpu"), nil)
	eventually(t, "node-a's status to list both nodes", func() bool {
		st := a.status()
		return len(st.Members) == 2 && st.SplitNodes == 2
	})
	st := a.status()
	if st.Node != "node-a" || st.Degraded || st.Members[0].Name != "node-a" || st.Members[1].Name != "node-b" ||
		!slices.Equal(st.Members[1].Labels, []string{"gpu"}) || st.Revision == 0 {
		t.Errorf("status %+v", st)
	}
	stopped := time.Now()
	x.etcd.Stop()
	eventually(t, "node-a degraded", func() bool { return a.status().Degraded })
	if st := a.status(); st.DegradedSince.Before(stopped) || len(st.Members) != 2 {
		t.Errorf("degraded status %+v: want since after %s, the last members seen", st, stopped)
	}
	if err := x.etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-a caught up", func() bool { return !a.status().Degraded })
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	if st := a.status(); st.Node != "node-a" || st.Members != nil || st.SplitNodes != 0 {
		t.Errorf("status after Stop %+v", st)
	}
}

// TestUnitFleetLinkRegistering: a bundle a deploy here registered is not
// dropped while the deploy runs, nor until this node's state shows the
// version it registered (its watch may lag the deploy).
func TestUnitFleetLinkRegistering(t *testing.T) {
	x := newLinkFixture(t)
	a, _ := x.link(x.config("node-a"), nil)
	b, _ := x.link(x.config("node-b"), nil)
	d := unitDigest(t, "late")
	a.deployRuns(d, 1)
	if !a.registering(d) {
		t.Error("a running deploy's bundle may be dropped")
	}
	a.registered(d, "acme", "prod", "late", 1)
	a.deployRuns(d, -1)
	if !a.registering(d) {
		t.Error("a registered version the state does not show yet: its bundle may be dropped")
	}
	// The version shows in node-a's state (registered here through node-b's).
	if _, _, err := b.state.RegisterExtension(context.Background(), "acme", "prod", "late", d, record.Manifest{Runtime: "exec", Entrypoint: "w"}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "node-a's state to show the version", func() bool { return !a.registering(d) })
	if len(a.deploying) != 0 {
		t.Errorf("deploys left: %v", a.deploying)
	}
}

// unitDigest is the digest of a unit bundle of content.
func unitDigest(t *testing.T, content string) string {
	t.Helper()
	s, _ := newUnitStore(t)
	_, d, _, err := s.validateBundle(unitBundle(content))
	if err != nil {
		t.Fatal(err)
	}
	return d
}
