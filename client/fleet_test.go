package client_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/etcdtest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// fleetCerts writes a test CA, and a client certificate and key it signed
// (client.pem, client-key.pem beside the CA), and returns the CA's path and
// a server certificate for 127.0.0.1 and localhost (all ECDSA P-256).
func fleetCerts(t *testing.T) (caFile string, server tls.Certificate) {
	t.Helper()
	dir := t.TempDir()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "fleet test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ckey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ctmpl := &x509.Certificate{
		SerialNumber: big.NewInt(3), Subject: pkix.Name{CommonName: "app"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	cder, err := x509.CreateCertificate(rand.Reader, ctmpl, ca, &ckey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ckeyDER, err := x509.MarshalPKCS8PrivateKey(ckey)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string]*pem.Block{
		"client.pem": {Type: "CERTIFICATE", Bytes: cder}, "client-key.pem": {Type: "PRIVATE KEY", Bytes: ckeyDER},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), pem.EncodeToMemory(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	caFile = filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// stubNode answers Invoke with its name; a payload "block:<name>" blocks
// on that node until the call ends.
type stubNode struct {
	scopedv1.UnimplementedScopedServer
	name    string
	addr    string
	srv     *grpc.Server
	started chan struct{}
	mu      sync.Mutex
	calls   int
}

func (s *stubNode) Invoke(ctx context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	s.mu.Lock()
	s.calls++
	s.mu.Unlock()
	if string(req.GetPayload()) == "block:"+s.name {
		s.started <- struct{}{}
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return &scopedv1.InvokeResponse{Result: []byte(s.name)}, nil
}

func (s *stubNode) Deploy(context.Context, *scopedv1.DeployRequest) (*scopedv1.DeployResponse, error) {
	return &scopedv1.DeployResponse{Extension: &scopedv1.Extension{Name: s.name}}, nil
}

func (s *stubNode) Logs(req *scopedv1.LogsRequest, stream grpc.ServerStreamingServer[scopedv1.LogEntry]) error {
	for range 2 {
		if err := stream.Send(&scopedv1.LogEntry{Scope: req.GetScope(), Worker: s.name}); err != nil {
			return err
		}
	}
	return nil
}

type fleetFixture struct {
	etcd  *etcdtest.Server
	kv    *clientv3.Client
	ca    string
	cert  tls.Certificate
	nodes map[string]*stubNode
	keys  record.Keys
}

func newFleet(t *testing.T, n int) *fleetFixture {
	t.Helper()
	f := &fleetFixture{etcd: etcdtest.Start(t), nodes: map[string]*stubNode{}, keys: record.Keys{}}
	ca, cert := fleetCerts(t)
	f.ca, f.cert = ca, cert
	kv, err := clientv3.New(clientv3.Config{Endpoints: f.etcd.Endpoints(), Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { kv.Close() })
	f.kv = kv
	f.put(t, f.keys.Policy(), record.Policy{
		Isolation: []string{"environment", "user"},
		Placement: map[string][]string{"gold": {"dedicated-acme"}},
	})
	for i := range n {
		name := fmt.Sprintf("node-%d", i)
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		s := &stubNode{name: name, addr: l.Addr().String(), started: make(chan struct{}, 1),
			srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))}
		scopedv1.RegisterScopedServer(s.srv, s)
		go s.srv.Serve(l)
		t.Cleanup(s.srv.Stop)
		f.nodes[name] = s
		f.join(t, s, nil)
	}
	return f
}

func (f *fleetFixture) put(t *testing.T, key string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.kv.Put(context.Background(), key, string(b)); err != nil {
		t.Fatal(err)
	}
}

func (f *fleetFixture) join(t *testing.T, s *stubNode, labels []string) {
	f.put(t, f.keys.Node(s.name), record.Node{Name: s.name, Addr: s.addr, Labels: labels, Slots: 100, CPUs: 2})
}

func (f *fleetFixture) dial(t *testing.T) *client.FleetClient {
	t.Helper()
	fc, err := client.DialFleet(ctx(t), client.FleetOptions{
		Endpoints: f.etcd.Endpoints(), CA: f.ca, Token: "tok", Probe: 100 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fc.Close() })
	return fc
}

// waitNodes waits until the client sees exactly want nodes.
func waitNodes(t *testing.T, fc *client.FleetClient, want int) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); len(fc.Nodes()) != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("client sees %d nodes, want %d", len(fc.Nodes()), want)
		}
	}
}

func invokeOn(t *testing.T, c context.Context, fc *client.FleetClient, user string) (string, error) {
	t.Helper()
	resp, err := fc.Invoke(c, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "prod", User: user, Extension: "resize"})
	return string(resp.GetResult()), err
}

func TestFleetSameScopeSameNode(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	used := map[string]int{}
	for i := range 30 {
		user := fmt.Sprintf("u%d", i)
		key, ranked, err := fc.Route("acme", "prod", user, "other-ext") // extension is not in the scope
		if err != nil || key != "acme.prod."+user || len(ranked) != 3 {
			t.Fatalf("route %s: %q %v %v", user, key, ranked, err)
		}
		for range 3 {
			got, err := invokeOn(t, ctx(t), fc, user)
			if err != nil {
				t.Fatal(err)
			}
			if got != ranked[0].Name {
				t.Fatalf("scope %s served by %s, routed to %s", key, got, ranked[0].Name)
			}
		}
		used[ranked[0].Name]++
	}
	if len(used) != 3 {
		t.Errorf("30 scopes over %d nodes only: %v", len(used), used)
	}
	if err := fc.Degraded(); err != nil {
		t.Errorf("degraded: %v", err)
	}
	// Calls without a scope go to one live node.
	if _, err := fc.Deploy(ctx(t), &scopedv1.DeployRequest{Tenant: "acme"}); err != nil {
		t.Fatal(err)
	}
}

func TestFleetNodeRemovedMovesOnlyItsScopes(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	before := map[string]string{}
	for i := range 60 {
		user := fmt.Sprintf("u%d", i)
		got, err := invokeOn(t, ctx(t), fc, user)
		if err != nil {
			t.Fatal(err)
		}
		before[user] = got
	}
	if _, err := f.kv.Delete(context.Background(), f.keys.Node("node-1")); err != nil {
		t.Fatal(err)
	}
	waitNodes(t, fc, 2)
	moved := 0
	for user, was := range before {
		got, err := invokeOn(t, ctx(t), fc, user)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case got == "node-1":
			t.Fatalf("%s still served by the removed node", user)
		case was == "node-1":
			moved++
		case got != was:
			t.Fatalf("%s moved from %s to %s though node-1 left", user, was, got)
		}
	}
	if moved == 0 {
		t.Fatal("node-1 served no scope")
	}
}

// scopeOn returns a user whose scope is routed first to node.
func scopeOn(t *testing.T, fc *client.FleetClient, node string) (string, []record.Node) {
	t.Helper()
	for i := range 1000 {
		user := fmt.Sprintf("u%d", i)
		_, ranked, err := fc.Route("acme", "prod", user, "resize")
		if err != nil {
			t.Fatal(err)
		}
		if ranked[0].Name == node {
			return user, ranked
		}
	}
	t.Fatalf("no scope routed to %s", node)
	return "", nil
}

func TestFleetRetryOnlyIdempotent(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	user, ranked := scopeOn(t, fc, "node-0")
	if got, err := invokeOn(t, ctx(t), fc, user); err != nil || got != "node-0" {
		t.Fatalf("warm call: %q %v", got, err)
	}
	f.nodes["node-0"].srv.Stop() // its record stays: the lease has not expired yet

	_, err := invokeOn(t, ctx(t), fc, user)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("non-idempotent call to a stopped node: %v, want Unavailable", err)
	}
	got, err := invokeOn(t, client.Idempotent(ctx(t)), fc, user)
	if err != nil || got != ranked[1].Name {
		t.Fatalf("idempotent call: %q %v, want the next node %s", got, err, ranked[1].Name)
	}
}

// TestFleetRetryInFlight: calls in flight when their node stops: the
// idempotent one is retried on the next live node, the other gets
// Unavailable.
func TestFleetRetryInFlight(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	inFlight := func(node string, c context.Context) (string, error) {
		user, _ := scopeOn(t, fc, node)
		type result struct {
			got string
			err error
		}
		res := make(chan result, 1)
		go func() {
			resp, err := fc.Invoke(c, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "prod", User: user,
				Extension: "resize", Payload: []byte("block:" + node)})
			res <- result{string(resp.GetResult()), err}
		}()
		<-f.nodes[node].started
		f.nodes[node].srv.Stop()
		r := <-res
		return r.got, r.err
	}
	if _, err := inFlight("node-1", ctx(t)); status.Code(err) != codes.Unavailable {
		t.Fatalf("non-idempotent call in flight on a stopped node: %v, want Unavailable", err)
	}
	got, err := inFlight("node-2", client.Idempotent(ctx(t)))
	if err != nil || got != "node-0" { // node-1 is down too: the retry skips it
		t.Fatalf("idempotent call in flight: %q %v, want node-0", got, err)
	}
}

func TestFleetPlacement(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	f.put(t, f.keys.Tenant("acme"), map[string]any{"tier": "gold", "allow": []string{"x"}})
	// No node carries dedicated-acme: Unavailable naming the placement.
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := invokeOn(t, ctx(t), fc, "alice")
		if status.Code(err) == codes.Unavailable && strings.Contains(err.Error(), "dedicated-acme") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("gold tenant without a dedicated node: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Other tenants still run anywhere.
	if _, err := fc.Invoke(ctx(t), &scopedv1.InvokeRequest{Tenant: "globex", Environment: "prod", Extension: "x"}); err != nil {
		t.Fatal(err)
	}
	f.join(t, f.nodes["node-2"], []string{"dedicated-acme"})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := invokeOn(t, ctx(t), fc, "alice"); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("gold tenant with a dedicated node: %v", err)
		}
	}
	for i := range 20 {
		got, err := invokeOn(t, ctx(t), fc, fmt.Sprintf("u%d", i))
		if err != nil || got != "node-2" {
			t.Fatalf("gold scope on %q (%v), want node-2 only", got, err)
		}
	}
}

// TestFleetDegraded: with etcd stopped the client keeps routing with the
// last membership and says it is degraded; it recovers with etcd.
func TestFleetDegraded(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	want, err := invokeOn(t, ctx(t), fc, "alice")
	if err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	f.etcd.Stop()
	t.Logf("etcd stopped in %v", time.Since(t0))
	waitFor(t, "degraded", func() bool { return fc.Degraded() != nil })
	if got, err := invokeOn(t, ctx(t), fc, "alice"); err != nil || got != want {
		t.Fatalf("degraded call: %q %v, want %s", got, err, want)
	}
	if err := f.etcd.Restart(); err != nil {
		t.Fatal(err)
	}
	t.Logf("restarted at %v", time.Since(t0))
	waitFor(t, "recovered", func() bool { return fc.Degraded() == nil })
	t.Logf("recovered at %v", time.Since(t0))
	if _, err := f.kv.Delete(context.Background(), f.keys.Node(want)); err != nil {
		t.Fatal(err)
	}
	waitNodes(t, fc, 2) // the watch resumed
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not %s", what)
		}
	}
}

// TestFleetLeavingNodeKeepsItsCalls: a node leaving the membership does
// not cut the calls in flight on it (its connection closes after them).
func TestFleetLeavingNodeKeepsItsCalls(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	user, _ := scopeOn(t, fc, "node-0")
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	res := make(chan error, 1)
	go func() {
		_, err := fc.Invoke(c, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "prod", User: user,
			Extension: "resize", Payload: []byte("block:node-0")})
		res <- err
	}()
	<-f.nodes["node-0"].started
	if _, err := f.kv.Delete(context.Background(), f.keys.Node("node-0")); err != nil {
		t.Fatal(err)
	}
	waitNodes(t, fc, 2)
	if err := <-res; status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("call in flight on a leaving node: %v, want its own deadline", err)
	}
	if got, err := invokeOn(t, ctx(t), fc, user); err != nil || got == "node-0" {
		t.Fatalf("after leaving: %q %v", got, err)
	}
}

// TestFleetMutualTLS: nodes that require a client certificate get the
// client's; ServerName names the nodes' certificate.
func TestFleetMutualTLS(t *testing.T) {
	f := newFleet(t, 0)
	caPEM, err := os.ReadFile(f.ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &stubNode{name: "node-m", addr: l.Addr().String(), started: make(chan struct{}, 1),
		srv: grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{
			Certificates: []tls.Certificate{f.cert}, ClientCAs: pool, ClientAuth: tls.RequireAndVerifyClientCert})))}
	scopedv1.RegisterScopedServer(s.srv, s)
	go s.srv.Serve(l)
	defer s.srv.Stop()
	f.join(t, s, nil)
	dir := filepath.Dir(f.ca)
	for _, tc := range []struct {
		name       string
		opts       client.FleetOptions
		wantServed bool
	}{
		{"no client certificate", client.FleetOptions{CA: f.ca}, false},
		{"client certificate", client.FleetOptions{CA: f.ca, Cert: filepath.Join(dir, "client.pem"), Key: filepath.Join(dir, "client-key.pem")}, true},
		{"server name", client.FleetOptions{CA: f.ca, ServerName: "localhost", Cert: filepath.Join(dir, "client.pem"), Key: filepath.Join(dir, "client-key.pem")}, true},
		{"wrong server name", client.FleetOptions{CA: f.ca, ServerName: "elsewhere", Cert: filepath.Join(dir, "client.pem"), Key: filepath.Join(dir, "client-key.pem")}, false},
	} {
		tc.opts.Endpoints = f.etcd.Endpoints()
		fc, err := client.DialFleet(ctx(t), tc.opts)
		if err != nil {
			t.Fatal(err)
		}
		got, err := invokeOn(t, ctx(t), fc, "alice")
		fc.Close()
		if served := err == nil && got == "node-m"; served != tc.wantServed {
			t.Errorf("%s: %q %v", tc.name, got, err)
		}
	}
	if _, err := client.DialFleet(ctx(t), client.FleetOptions{Endpoints: f.etcd.Endpoints(), CA: f.ca, Cert: filepath.Join(dir, "client.pem")}); err == nil {
		t.Error("a certificate without its key accepted")
	}
}

// TestFleetLogsFollowsTheScope: a Logs stream of a scope goes to the
// scope's node.
func TestFleetLogsFollowsTheScope(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	for i := range 10 {
		user := fmt.Sprintf("u%d", i)
		key, ranked, err := fc.Route("acme", "prod", user, "resize")
		if err != nil {
			t.Fatal(err)
		}
		st, err := fc.Logs(ctx(t), &scopedv1.LogsRequest{Tenant: "acme", Scope: key})
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for {
			e, err := st.Recv()
			if err != nil {
				if err != io.EOF {
					t.Fatal(err)
				}
				break
			}
			if e.GetWorker() != ranked[0].Name || e.GetScope() != key {
				t.Fatalf("logs of %s from %s, routed to %s", key, e.GetWorker(), ranked[0].Name)
			}
			n++
		}
		if n != 2 {
			t.Fatalf("%d entries, want 2", n)
		}
	}
}

// TestFleetCloseLeaksNothing: after Close no goroutine of the client stays.
func TestFleetCloseLeaksNothing(t *testing.T) {
	f := newFleet(t, 3)
	before := runtime.NumGoroutine()
	for range 3 {
		fc, err := client.DialFleet(ctx(t), client.FleetOptions{Endpoints: f.etcd.Endpoints(), CA: f.ca})
		if err != nil {
			t.Fatal(err)
		}
		for i := range 20 {
			if _, err := invokeOn(t, ctx(t), fc, fmt.Sprintf("u%d", i)); err != nil {
				t.Fatal(err)
			}
		}
		st, err := fc.Logs(ctx(t), &scopedv1.LogsRequest{Tenant: "acme"})
		if err != nil {
			t.Fatal(err)
		}
		for err == nil {
			_, err = st.Recv()
		}
		if err := fc.Close(); err != nil {
			t.Fatal(err)
		}
		if _, err := invokeOn(t, ctx(t), fc, "u0"); status.Code(err) != codes.Canceled {
			t.Fatalf("call after Close: %v", err)
		}
	}
	var after int
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if after = runtime.NumGoroutine(); after <= before {
			return
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines before, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
		}
	}
}

func TestDialFleetErrors(t *testing.T) {
	if _, err := client.DialFleet(ctx(t), client.FleetOptions{}); err == nil {
		t.Fatal("no endpoints accepted")
	}
	if _, err := client.DialFleet(ctx(t), client.FleetOptions{Endpoints: []string{"http://127.0.0.1:1"}, CA: "/nonexistent"}); err == nil {
		t.Fatal("missing CA accepted")
	}
	c, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	if _, err := client.DialFleet(c, client.FleetOptions{Endpoints: []string{"http://" + addr}}); err == nil {
		t.Fatal("unreachable etcd accepted")
	}
}

// TestFleetWarmScopeStays: a scope placed on another node while its
// first-ranked node was over its bound stays on the node that answered it
// once the loads even out (bounded load places new scopes, it does not
// move warm ones), while a new scope goes to its first-ranked node; when
// the node it stays on leaves, it goes to the first-ranked one again.
func TestFleetWarmScopeStays(t *testing.T) {
	f := newFleet(t, 3)
	fc := f.dial(t)
	user, _ := scopeOn(t, fc, "node-0")
	load := func(scopes int) {
		f.put(t, f.keys.Node("node-0"), record.Node{Name: "node-0", Addr: f.nodes["node-0"].addr, Slots: 100, CPUs: 2, Scopes: scopes})
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
			if ns := fc.Nodes(); len(ns) == 3 && ns[0].Scopes == scopes {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("the client does not see node-0 with %d scopes", scopes)
			}
		}
	}
	load(10) // over its bound: ceil(1.25 × 11 / 3) = 5
	_, ranked, _ := fc.Route("acme", "prod", user, "resize")
	if ranked[0].Name == "node-0" {
		t.Fatalf("node-0 over its bound still ranked first: %v", ranked)
	}
	placed, err := invokeOn(t, ctx(t), fc, user)
	if err != nil || placed != ranked[0].Name {
		t.Fatalf("scope placed on %q (%v), ranked %v", placed, err, ranked)
	}
	load(0)
	for range 3 {
		if got, err := invokeOn(t, ctx(t), fc, user); err != nil || got != placed {
			t.Fatalf("warm scope of %s answered by %q (%v), placed on %s", user, got, err, placed)
		}
	}
	if _, ns, _ := fc.Route("acme", "prod", user, "resize"); ns[0].Name != placed {
		t.Errorf("Route of the warm scope: %v, want %s first", ns, placed)
	}
	other, _ := scopeOn(t, fc, "node-0")
	if other == user {
		t.Fatalf("scopeOn gave the warm scope %s again", user)
	}
	if got, err := invokeOn(t, ctx(t), fc, other); err != nil || got != "node-0" {
		t.Errorf("a new scope ranked first on node-0: answered by %q (%v)", got, err)
	}
	if _, err := f.kv.Delete(context.Background(), f.keys.Node(placed)); err != nil {
		t.Fatal(err)
	}
	waitNodes(t, fc, 2)
	if got, err := invokeOn(t, ctx(t), fc, user); err != nil || got != "node-0" {
		t.Errorf("the scope once its node left: answered by %q (%v), want node-0", got, err)
	}
}
