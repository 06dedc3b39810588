package e2e

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/fleet/bundles"
	ibundle "github.com/scoped-io/scoped/internal/bundle"
	"github.com/scoped-io/scoped/internal/etcdtest"
	"github.com/scoped-io/scoped/internal/tlstest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const fleetToken = "e2e-fleet-app-token-0123456789"

var reTLSListen = regexp.MustCompile(`fleet TLS API listening"? listen=(127\.0\.0\.1:[0-9]+)`)

// TestFleetTLSAPI: with [fleet], the real daemon serves its API on TCP
// with TLS beside the socket: a token is the caller there (none:
// UNAUTHENTICATED; plain TCP: no answer), an invocation runs through it,
// and another node (a client certificate of the fleet's CA) fetches a
// deployed bundle by digest, verified; the listener goes with the daemon.
func TestFleetTLSAPI(t *testing.T) {
	requireBins(t)
	etcd := etcdtest.Start(t)
	ca := tlstest.NewCA(t)
	sc, sk := ca.Issue(t, "e2e-a", []net.IP{net.IPv4(127, 0, 0, 1)})
	nc, nk := ca.Issue(t, "e2e-b", nil)
	d := startDaemon(t, options{extra: fmt.Sprintf(`
[[client]]
name = "app-tcp"
token = %q
tenants = ["acme"]
[fleet]
endpoints = [%q]
node = "e2e-a"
listen = "127.0.0.1:0"
tls_ca = %q
tls_cert = %q
tls_key = %q
`, fleetToken, etcd.Endpoints()[0], ca.CertFile(), sc, sk)})
	m := reTLSListen.FindStringSubmatch(d.logs.String())
	if m == nil {
		t.Fatalf("no TLS API address in the log:\n%s", d.logs.String())
	}
	addr := m[1]
	ext := deploy(t, d.client(), "acme", "production", "whoami", bins.whoami)

	dial := func(creds credentials.TransportCredentials) scopedv1.ScopedClient {
		cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cc.Close() })
		return scopedv1.NewScopedClient(cc)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	authed := metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+fleetToken)
	app := dial(credentials.NewTLS(ca.ClientConfig(t, "127.0.0.1", "", "")))
	r, err := app.Invoke(authed, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "whoami", Payload: []byte("hi")})
	if err != nil || len(r.GetResult()) == 0 {
		t.Fatalf("invoke over TLS with the token: %v %v", r, err)
	}
	if _, err := app.ListExtensions(ctx, &scopedv1.ListExtensionsRequest{}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("no token over TCP: %v, want Unauthenticated", err)
	}
	if _, err := app.Invoke(authed, &scopedv1.InvokeRequest{Tenant: "globex", Environment: "production", Extension: "whoami"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("another tenant over TCP: %v, want PermissionDenied", err)
	}
	plain := dial(insecure.NewCredentials())
	if _, err := plain.ListExtensions(authed, &scopedv1.ListExtensionsRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain TCP: %v, want Unavailable", err)
	}

	lim := bundles.Limits{MaxBytes: 64 << 20, MaxFiles: 1024}
	node := ca.ClientConfig(t, "127.0.0.1", nc, nk)
	files, err := bundles.Fetch(ctx, addr, node, ext.GetDigest(), lim)
	if err != nil {
		t.Fatalf("node fetch of %s: %v", ext.GetDigest(), err)
	}
	if ibundle.Digest(files) != ext.GetDigest() {
		t.Fatalf("fetched digest %s, deployed %s", ibundle.Digest(files), ext.GetDigest())
	}
	if _, err := bundles.Fetch(authed, addr, ca.ClientConfig(t, "127.0.0.1", "", ""), ext.GetDigest(), lim); status.Code(errors.Unwrap(err)) != codes.Unauthenticated {
		t.Fatalf("fetch without a node certificate (with a client token): %v, want Unauthenticated", err)
	}

	d.stop()
	if c, err := (&tls.Dialer{Config: node}).DialContext(ctx, "tcp", addr); err == nil {
		c.Close()
		t.Fatalf("the TLS API still answers on %s after the daemon stopped", addr)
	}
}
