package api

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/bundles"
	"github.com/scoped-io/scoped/internal/bundle"
	"github.com/scoped-io/scoped/internal/tlstest"
	fleetv1 "github.com/scoped-io/scoped/proto/fleet/v1"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

const tlsToken = "token-of-app-over-tcp-0123456789"

// tlsAPI answers Invoke with the caller's name, after the tenant check.
type tlsAPI struct{ *API }

func (tlsAPI) Invoke(ctx context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	if _, err := mayAct(ctx, req.GetTenant()); err != nil {
		return nil, err
	}
	return &scopedv1.InvokeResponse{Result: []byte(callerOf(ctx).name)}, nil
}

type tlsEnv struct {
	addr     string
	ca       *tlstest.CA
	node     *tls.Config // a node's: client certificate of the fleet's CA
	app      *tls.Config // an application's: no client certificate
	stranger *tls.Config // a client certificate of another CA
	files    []bundle.File
}

// startTLS serves the API (tlsAPI) and the bundle service on a loopback
// TCP listener with the TLS API's configuration from a [fleet] table.
func startTLS(t *testing.T) *tlsEnv {
	t.Helper()
	ca := tlstest.NewCA(t)
	sc, sk := ca.Issue(t, "node-a", []net.IP{net.IPv4(127, 0, 0, 1)})
	fc := &fleet.Config{Listen: "127.0.0.1:0", TLSCA: ca.CertFile(), TLSCert: sc, TLSKey: sk}
	conf, err := TLSConfig(fc)
	if err != nil {
		t.Fatal(err)
	}
	if conf.MinVersion < tls.VersionTLS13 || conf.ClientAuth != tls.VerifyClientCertIfGiven {
		t.Fatalf("TLS config: min version %#x, client auth %v", conf.MinVersion, conf.ClientAuth)
	}
	api := unitAPI(supervisor.Client{Name: "app-tcp", Token: tlsToken, Tenants: []string{"acme"}})
	env := &tlsEnv{ca: ca, files: []bundle.File{{Path: "manifest.toml", Mode: 0o644, Content: []byte("x")}}}
	src := bundleSource(func(d string) ([]supervisor.BundleFile, error) {
		if d != bundle.Digest(env.files) {
			return nil, fmt.Errorf("%w: %s", supervisor.ErrNotFound, d)
		}
		return env.files, nil
	})
	srv := api.newTLSServer(tlsAPI{api}, conf, bundles.NewServer(src, api.bundleLimits, slog.New(slog.DiscardHandler)))
	l, err := ListenTCP(fc)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	env.addr = l.Addr().String()
	nc, nk := ca.Issue(t, "node-b", nil)
	xc, xk := ca.IssueSelfSigned(t, "node-x", nil)
	env.node = ca.ClientConfig(t, "127.0.0.1", nc, nk)
	env.app = ca.ClientConfig(t, "127.0.0.1", "", "")
	env.stranger = ca.ClientConfig(t, "127.0.0.1", xc, xk)
	return env
}

func dialTLS(t *testing.T, addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

func withToken(ctx context.Context, token string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+token)
}

// TestUnitTLSListener: over TCP a caller is its token; without one, or
// with an unknown one, UNAUTHENTICATED; a plain TCP client gets no API.
func TestUnitTLSListener(t *testing.T) {
	env := startTLS(t)
	ctx := edgeCtx(t)
	req := &scopedv1.InvokeRequest{Tenant: "acme", Payload: []byte("hi")}
	for _, conf := range []*tls.Config{env.app, env.node} {
		c := scopedv1.NewScopedClient(dialTLS(t, env.addr, credentials.NewTLS(conf)))
		if r, err := c.Invoke(withToken(ctx, tlsToken), req); err != nil || string(r.GetResult()) != "app-tcp" {
			t.Fatalf("with the token: %v %v", r, err)
		}
		if _, err := c.Invoke(withToken(ctx, tlsToken), &scopedv1.InvokeRequest{Tenant: "globex"}); status.Code(err) != codes.PermissionDenied {
			t.Fatalf("another tenant: %v, want PermissionDenied", err)
		}
		// A node's certificate is no client: the token decides.
		if _, err := c.Invoke(ctx, req); status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "bearer token") {
			t.Fatalf("no token: %v, want Unauthenticated", err)
		}
		if _, err := c.Invoke(withToken(ctx, tlsToken+"x"), req); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("unknown token: %v, want Unauthenticated", err)
		}
		// Streams too (Logs): authenticated before anything is read.
		s, err := c.Logs(ctx, &scopedv1.LogsRequest{Tenant: "acme", Scope: "acme.x"})
		if err == nil {
			_, err = s.Recv()
		}
		if status.Code(err) != codes.Unauthenticated {
			t.Fatalf("Logs without a token: %v, want Unauthenticated", err)
		}
	}
	// A certificate of another CA: the handshake fails.
	c := scopedv1.NewScopedClient(dialTLS(t, env.addr, credentials.NewTLS(env.stranger)))
	if _, err := c.Invoke(withToken(ctx, tlsToken), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("foreign client certificate: %v, want Unavailable", err)
	}
	// Plain TCP (h2c): refused by the TLS handshake.
	c = scopedv1.NewScopedClient(dialTLS(t, env.addr, insecure.NewCredentials()))
	if _, err := c.Invoke(withToken(ctx, tlsToken), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("plain TCP: %v, want Unavailable", err)
	}
	// TLS 1.2: refused.
	old := env.app.Clone()
	old.MaxVersion = tls.VersionTLS12
	old.MinVersion = tls.VersionTLS12
	c = scopedv1.NewScopedClient(dialTLS(t, env.addr, credentials.NewTLS(old)))
	if _, err := c.Invoke(withToken(ctx, tlsToken), req); status.Code(err) != codes.Unavailable {
		t.Fatalf("TLS 1.2: %v, want Unavailable", err)
	}
}

// TestUnitTLSBundles: the bundle service answers nodes (mutual TLS) only;
// a token is no node.
func TestUnitTLSBundles(t *testing.T) {
	env := startTLS(t)
	ctx := edgeCtx(t)
	lim := bundles.Limits{MaxBytes: 1 << 20, MaxFiles: 8}
	digest := bundle.Digest(env.files)
	got, err := bundles.Fetch(ctx, env.addr, env.node, digest, lim)
	if err != nil || bundle.Digest(got) != digest {
		t.Fatalf("node fetch: %v", err)
	}
	for name, conf := range map[string]*tls.Config{"no certificate": env.app} {
		cc := dialTLS(t, env.addr, credentials.NewTLS(conf))
		if _, err := bundles.FetchFrom(withToken(ctx, tlsToken), cc, digest, lim); status.Code(err) != codes.Unauthenticated {
			t.Fatalf("%s (with a client token): %v, want Unauthenticated", name, err)
		}
	}
	if _, err := bundles.Fetch(ctx, env.addr, env.node, "sha256:"+strings.Repeat("0", 64), lim); status.Code(errors.Unwrap(err)) != codes.NotFound {
		t.Fatalf("unknown digest: %v, want NotFound", err)
	}
	// The request is capped before it is read: a huge "digest" is refused.
	cc := dialTLS(t, env.addr, credentials.NewTLS(env.node))
	s, err := fleetv1.NewBundlesClient(cc).Fetch(ctx, &fleetv1.FetchRequest{Digest: strings.Repeat("a", 64<<10)})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("huge request: %v, want ResourceExhausted", err)
	}
}

// TestUnitTLSDoesNotReachSocket: the bundle service is not on the unix
// socket's server.
func TestUnitTLSDoesNotReachSocket(t *testing.T) {
	_, _, cc := startEdge(t)
	s, err := fleetv1.NewBundlesClient(cc).Fetch(edgeCtx(t), &fleetv1.FetchRequest{Digest: "sha256:" + strings.Repeat("0", 64)})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.Unimplemented {
		t.Fatalf("bundle service on the socket: %v, want Unimplemented", err)
	}
}

func TestUnitTokenCaller(t *testing.T) {
	api := unitAPI(
		supervisor.Client{Name: "app-a", UIDs: []uint32{1001}, Token: tlsToken, Tenants: []string{"acme"}},
		supervisor.Client{Name: "by-uid", UIDs: []uint32{0, 1002}, Tenants: []string{"*"}},
	)
	tlsPeer := func(token string) context.Context {
		ctx := peer.NewContext(context.Background(), &peer.Peer{AuthInfo: credentials.TLSInfo{}})
		if token != "" {
			ctx = metadata.NewIncomingContext(ctx, metadata.Pairs("authorization", "Bearer "+token))
		}
		return ctx
	}
	c, err := api.authenticate(tlsPeer(tlsToken))
	if err != nil || c.name != "app-a" || !c.may("acme") || c.may("globex") || c.all {
		t.Fatalf("token over TLS: %+v %v", c, err)
	}
	// No uid over TCP: neither root's nor a client's uid counts.
	for _, tok := range []string{"", "wrong-0123456789abcdef", tlsToken[:len(tlsToken)-1]} {
		if c, err := api.authenticate(tlsPeer(tok)); !errors.Is(err, supervisor.ErrUnauthorized) {
			t.Fatalf("token %q over TLS: %+v %v, want ErrUnauthorized", tok, c, err)
		}
	}
}
