package e2e

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/internal/etcdtest"
	"github.com/scoped-io/scoped/internal/tlstest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// startFleetNode starts a daemon that is node name of the fleet of etcd,
// with its own id range (slot: 0, 1, …) and a TLS API on 127.0.0.1.
func startFleetNode(t *testing.T, etcd *etcdtest.Server, ca *tlstest.CA, name string, slot int) *daemon {
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
`, 1048576+slot*64*65536, etcd.Endpoints()[0], name, freeTCPPort(t), ca.CertFile(), cert, key)})
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

// TestFleetTwoNodes: two real daemons sharing a real etcd. A bundle
// deployed on A runs on B (B fetched it from A, verified); a tenant
// suspended through A is refused on B within about a second; with etcd
// stopped invocations go on and deploys and tier changes get UNAVAILABLE;
// with etcd back deploys work again.
func TestFleetTwoNodes(t *testing.T) {
	requireBins(t)
	etcd := etcdtest.Start(t)
	ca := tlstest.NewCA(t)
	a := startFleetNode(t, etcd, ca, "node-a", 0)
	b := startFleetNode(t, etcd, ca, "node-b", 1)
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

	// etcd gone: invocations go on, writes are refused.
	etcd.Stop()
	waitFor(t, 20*time.Second, "A to see the fleet degraded", func() bool {
		return strings.Contains(a.logs.String(), "fleet degraded")
	})
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
