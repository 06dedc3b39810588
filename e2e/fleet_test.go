package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/etcdtest"
	"github.com/scoped-io/scoped/internal/tlstest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// startFleetNode starts a daemon that is node name of the fleet of etcd,
// with its own id range (slot: 0, 1, …) and a TLS API on 127.0.0.1; more
// is appended to its configuration.
func startFleetNode(t *testing.T, etcd *etcdtest.Server, ca *tlstest.CA, name string, slot int, more ...string) *daemon {
	t.Helper()
	cert, key := ca.Issue(t, name, []net.IP{net.IPv4(127, 0, 0, 1)})
	return startDaemon(t, options{extra: fmt.Sprintf(`
[scope]
id_base = %d
id_slots = 64
[fleet]
endpoints = [%q]
node = %q
listen = "127.0.0.1:%d"
lease_ttl = "4s"
tls_ca = %q
tls_cert = %q
tls_key = %q
%s`, 1048576+slot*64*65536, etcd.Endpoints()[0], name, freeTCPPort(t), ca.CertFile(), cert, key, strings.Join(more, "\n"))})
}

// freeTCPPort is a loopback port free now.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// fleetCapped is the nodes' spend cap: 10 invocations a day, summed over
// the nodes, flushed (and published) often.
const fleetCapped = `
[metering]
flush = "200ms"
[tiers.capped]
daily_caps = { invocations = 10.0 }
`

// TestFleetTwoNodes: two real daemons sharing a real etcd. A bundle
// deployed on A runs on B (B fetched it from A, verified); a tenant
// suspended through A is refused on B within about a second; a daily
// spend cap reached by invocations split across A and B refuses on A,
// which alone used less than the cap; with etcd
// stopped invocations go on and deploys and tier changes get UNAVAILABLE;
// with etcd back deploys work again.
func TestFleetTwoNodes(t *testing.T) {
	requireBins(t)
	etcd := etcdtest.Start(t)
	ca := tlstest.NewCA(t)
	a := startFleetNode(t, etcd, ca, "node-a", 0, fleetCapped)
	b := startFleetNode(t, etcd, ca, "node-b", 1, fleetCapped)
	// The daemons leave the fleet while etcd runs, then etcd stops, before
	// the leak checks (a restarted etcd has sockets of its own).
	t.Cleanup(func() { b.stop(); a.stop(); etcd.Stop() })
	ca1, cb := a.client(), b.client()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	ext := deploy(t, ca1, "acme", "production", "whoami", bins.whoami)
	if ext.GetVersion() != "v1" {
		t.Errorf("first fleet deploy: version %q, want v1", ext.GetVersion())
	}
	// B knows the version once its watch saw it (NOT_FOUND until then).
	var r *scopedv1.InvokeResponse
	var err error
	waitFor(t, 10*time.Second, "B to run the bundle deployed on A", func() bool {
		r, err = invoke(cb, "acme", "production", "whoami", "hi")
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("invoke on B of a bundle deployed on A: %v\nB's log:\n%s", err, b.logs.String())
		}
		return err == nil && len(r.GetResult()) > 0
	})
	if !strings.Contains(b.logs.String(), "bundle fetched from the fleet") {
		t.Errorf("B served without fetching the bundle:\n%s", b.logs.String())
	}
	l, err := cb.ListExtensions(ctx, &scopedv1.ListExtensionsRequest{Tenant: "acme"})
	if err != nil || len(l.GetExtensions()) != 1 || l.GetExtensions()[0].GetDigest() != ext.GetDigest() || l.GetExtensions()[0].GetVersion() != "v1" {
		t.Fatalf("B's extensions after the fetch: %v %v (deployed %s)", l, err, ext.GetDigest())
	}
	// The same bundle deployed on B: unchanged, the fleet's version.
	if again := deploy(t, cb, "acme", "production", "whoami", bins.whoami); again.GetVersion() != "v1" || again.GetDigest() != ext.GetDigest() {
		t.Errorf("the same bundle deployed on B: %v", again)
	}

	// Suspended through A: refused on B soon.
	suspended := time.Now()
	if _, err := ca1.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "suspended"}); err != nil {
		t.Fatalf("suspend through A: %v", err)
	}
	waitFor(t, 5*time.Second, "B to refuse the suspended tenant", func() bool {
		_, err := invoke(cb, "acme", "production", "whoami", "x")
		return status.Code(err) == codes.FailedPrecondition
	})
	t.Logf("suspended through A, refused on B after %s", time.Since(suspended).Round(time.Millisecond))
	if _, err := ca1.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "standard"}); err != nil {
		t.Fatalf("resume through A: %v", err)
	}
	waitFor(t, 5*time.Second, "B to serve the resumed tenant", func() bool {
		_, err := invoke(cb, "acme", "production", "whoami", "x")
		return err == nil
	})

	fleetSpendCap(t, etcd, a, b)
	st, err := ca1.GetStatus(ctx, &scopedv1.GetStatusRequest{})
	if f := st.GetFleet(); err != nil || f.GetNode() != "node-a" || f.GetDegraded() || len(f.GetMembers()) != 2 || f.GetSplitNodes() != 2 {
		t.Errorf("A's status: %v, %v; want node-a, not degraded, 2 members, limits split between 2", st, err)
	}

	// etcd gone: invocations go on, writes are refused.
	etcd.Stop()
	waitFor(t, 20*time.Second, "A to see the fleet degraded", func() bool {
		return strings.Contains(a.logs.String(), "fleet degraded")
	})
	// (The members are the last seen: etcd's own stop may have expired
	// leases first.)
	st, err = ca1.GetStatus(ctx, &scopedv1.GetStatusRequest{})
	if f := st.GetFleet(); err != nil || f.GetNode() != "node-a" || !f.GetDegraded() || f.GetDegradedSince() == nil {
		t.Errorf("A's status while etcd is down: %v, %v; want degraded, and since when", st, err)
	}
	for _, c := range []struct {
		name string
		err  func() error
	}{
		{"invoke on A", func() error { _, err := invoke(ca1, "acme", "production", "whoami", "x"); return err }},
		{"invoke on B", func() error { _, err := invoke(cb, "acme", "production", "whoami", "x"); return err }},
	} {
		if err := c.err(); err != nil {
			t.Errorf("%s while etcd is down: %v", c.name, err)
		}
	}
	_, err = ca1.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "shout", Bundle: bundle(t, bins.shout)})
	if status.Code(err) != codes.Unavailable {
		t.Errorf("deploy while etcd is down: %v, want Unavailable", err)
	}
	if _, err := cb.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "acme", Tier: "suspended"}); status.Code(err) != codes.Unavailable {
		t.Errorf("tier change while etcd is down: %v, want Unavailable", err)
	}

	// etcd back: deploys work again, and B runs what A deployed.
	if err := etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	var shout *scopedv1.Extension
	waitFor(t, 30*time.Second, "a deploy to succeed after etcd's restart", func() bool {
		r, err := ca1.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "shout", Bundle: bundle(t, bins.shout)})
		shout = r.GetExtension()
		return err == nil
	})
	waitFor(t, 10*time.Second, "B to run shout deployed on A after etcd's restart", func() bool {
		r, err := invoke(cb, "acme", "production", "shout", "hi")
		if err != nil && status.Code(err) != codes.NotFound {
			t.Fatalf("invoke on B of shout (%s): %v", shout.GetDigest(), err)
		}
		return err == nil && len(r.GetResult()) > 0
	})
	// A removal on A reaches B.
	if _, err := ca1.RemoveExtension(ctx, &scopedv1.RemoveExtensionRequest{Tenant: "acme", Environment: "production", Name: "shout"}); err != nil {
		t.Fatalf("remove on A: %v", err)
	}
	waitFor(t, 5*time.Second, "B to drop the removed extension", func() bool {
		_, err := invoke(cb, "acme", "production", "shout", "hi")
		return status.Code(err) == codes.NotFound
	})
}

// fleetSpendCap: globex, in tier capped (10 invocations a day across the
// fleet), runs 3 invocations on A and 7 on B; once both nodes' totals are
// in etcd, A refuses globex though its own ledger holds less than the cap
// (the refusal counts B's published totals), and B refuses it too.
func fleetSpendCap(t *testing.T, etcd *etcdtest.Server, a, b *daemon) {
	t.Helper()
	ca1, cb := a.client(), b.client()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	start := time.Now()
	deploy(t, ca1, "globex", "production", "whoami", bins.whoami)
	if _, err := ca1.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "globex", Tier: "capped"}); err != nil {
		t.Fatalf("globex to tier capped through A: %v", err)
	}
	waitFor(t, 10*time.Second, "B to see globex in tier capped", func() bool {
		r, err := cb.ListTenants(ctx, &scopedv1.ListTenantsRequest{Tenant: "globex"})
		return err == nil && len(r.GetTenants()) == 1 && r.GetTenants()[0].GetTier() == "capped"
	})
	for i := range 3 {
		if _, err := invoke(ca1, "globex", "production", "whoami", "a"); err != nil {
			t.Fatalf("globex's invocation %d on A, within the cap: %v", i+1, err)
		}
	}
	for ok := 0; ok < 7; {
		_, err := invoke(cb, "globex", "production", "whoami", "b")
		switch {
		case err == nil:
			ok++
		case status.Code(err) == codes.NotFound && ok == 0: // B's watch has not seen the deploy yet
			time.Sleep(50 * time.Millisecond)
		default:
			t.Fatalf("globex's invocation %d on B, within the cap (3 on A): %v", ok+1, err)
		}
	}

	// Both nodes' totals published (read from etcd, not through the nodes).
	ec, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer ec.Close()
	published := func(node string) float64 { return publishedInvocations(ctx, ec, "globex", node) }
	waitFor(t, 20*time.Second, "A's 3 and B's 7 invocations of globex published", func() bool {
		return published("node-a") == 3 && published("node-b") == 7
	})
	t.Logf("globex's totals published %s after its first deploy", time.Since(start).Round(time.Millisecond))

	// A refuses once it summed B's totals (within a flush); the calls it
	// still admits meanwhile are counted, so that A's own usage shows the
	// refusal is the fleet's.
	extra := 0
	var refused error
	for deadline := time.Now().Add(20 * time.Second); refused == nil; {
		if time.Now().After(deadline) {
			t.Fatalf("A still admits globex with 10 of 10 invocations used across A and B (%d more on A)", extra)
		}
		if _, err := invoke(ca1, "globex", "production", "whoami", "x"); err != nil {
			refused = err
		} else {
			extra++
			time.Sleep(100 * time.Millisecond)
		}
	}
	if status.Code(refused) != codes.ResourceExhausted || !strings.Contains(refused.Error(), "quota exceeded") {
		t.Fatalf("A past the fleet's cap: %v, want ResourceExhausted quota exceeded", refused)
	}
	day := time.Now().UTC().Truncate(24 * time.Hour) // the cap's period
	u, err := ca1.GetUsage(ctx, &scopedv1.GetUsageRequest{Tenant: "globex", Meter: "invocations",
		From: timestamppb.New(day), To: timestamppb.New(day.Add(24 * time.Hour))})
	if err != nil {
		t.Fatal(err)
	}
	own := 0.0
	for _, row := range u.GetRows() {
		own += row.GetValue()
	}
	t.Logf("A refused globex after %d more invocations; A's own ledger: %g invocations; refusal: %v", extra, own, refused)
	if own >= 10 || own != float64(3+extra) {
		t.Errorf("A's ledger holds %g invocations of globex (3 + %d admitted while waiting): want fewer than the cap of 10", own, extra)
	}
	waitFor(t, 10*time.Second, "B to refuse globex past the fleet's cap", func() bool {
		_, err := invoke(cb, "globex", "production", "whoami", "x")
		return status.Code(err) == codes.ResourceExhausted
	})
}

// publishedInvocations is the day's invocations of tenant that node
// published to the fleet (read from etcd, not through the nodes), or -1
// when it published none.
func publishedInvocations(ctx context.Context, ec *clientv3.Client, tenant, node string) float64 {
	r, err := ec.Get(ctx, record.Keys{}.Spend(tenant)+node)
	if err != nil || len(r.Kvs) != 1 {
		return -1
	}
	var sp record.Spend
	if json.Unmarshal(r.Kvs[0].Value, &sp) != nil {
		return -1
	}
	return sp.Daily["invocations"]
}
