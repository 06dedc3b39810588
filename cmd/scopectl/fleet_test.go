package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	"github.com/scoped-io/scoped/fleet/record"
	"github.com/scoped-io/scoped/internal/etcdtest"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// fleetNode answers Invoke with its name and the payload.
type fleetNode struct {
	scopedv1.UnimplementedScopedServer
	name string
}

func (n *fleetNode) Invoke(_ context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	return &scopedv1.InvokeResponse{Result: []byte(n.name + ":" + string(req.GetPayload()))}, nil
}

// testTLS writes a CA file and returns it with a server certificate for
// 127.0.0.1 that it signed (ECDSA P-256).
func testTLS(t *testing.T) (string, tls.Certificate) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	must(t, err)
	ca, err := x509.ParseCertificate(caDER)
	must(t, err)
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "node"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(time.Hour), IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	must(t, err)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	must(t, os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600))
	return caFile, tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func TestFleetInvoke(t *testing.T) {
	etcd := etcdtest.Start(t)
	caFile, cert := testTLS(t)
	kv, err := clientv3.New(clientv3.Config{Endpoints: etcd.Endpoints(), Logger: zap.NewNop(), DialTimeout: 5 * time.Second})
	must(t, err)
	defer kv.Close()
	put := func(key string, v any) {
		b, err := json.Marshal(v)
		must(t, err)
		_, err = kv.Put(context.Background(), key, string(b))
		must(t, err)
	}
	keys := record.Keys{Prefix: "/test"}
	put(keys.Policy(), record.Policy{Isolation: []string{"environment"}, Placement: map[string][]string{"gold": {"silo"}}})
	put(keys.Tenant("globex"), map[string]string{"tier": "gold"})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(&tls.Config{Certificates: []tls.Certificate{cert}})))
	scopedv1.RegisterScopedServer(srv, &fleetNode{name: "node-a"})
	go srv.Serve(l)
	defer srv.Stop()
	put(keys.Node("node-a"), record.Node{Name: "node-a", Addr: l.Addr().String()})

	fleet := func(args ...string) result {
		var out, errb bytes.Buffer
		code := run(append([]string{"--fleet", strings.Join(etcd.Endpoints(), ","), "--fleet-prefix", "/test",
			"--fleet-ca", caFile, "--timeout", "10s"}, args...), strings.NewReader(""), &out, &errb)
		return result{code, out.String(), errb.String()}
	}
	r := fleet("invoke", "--tenant", "acme", "--env", "prod", "--idempotent", "--data", "hi", "resize").ok(t)
	if r.stdout != "node-a:hi" {
		t.Fatalf("stdout %q", r.stdout)
	}
	r = fleet("invoke", "--tenant", "globex", "--env", "prod", "--data", "hi", "resize")
	if r.code != exitError || !strings.Contains(r.stderr, "Unavailable") || !strings.Contains(r.stderr, "silo") {
		t.Fatalf("placement without a node: exit %d, %s", r.code, r.stderr)
	}
	r = fleet("--fleet-ca", "/nonexistent", "invoke", "--tenant", "acme", "--env", "prod", "--data", "hi", "resize")
	if r.code != exitError || !strings.Contains(r.stderr, "/nonexistent") {
		t.Fatalf("missing CA: exit %d, %s", r.code, r.stderr)
	}
}
