package main

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/timestamppb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// statusServer answers GetStatus with st.
type statusServer struct {
	scopedv1.UnimplementedScopedServer
	st *scopedv1.Status
}

func (s *statusServer) GetStatus(context.Context, *scopedv1.GetStatusRequest) (*scopedv1.Status, error) {
	return s.st, nil
}

func startStatus(t *testing.T, st *scopedv1.Status) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "scopectl")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	sock := filepath.Join(dir, "s.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	scopedv1.RegisterScopedServer(g, &statusServer{st: st})
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return sock
}

func TestStatus(t *testing.T) {
	r := cli(t, startStatus(t, &scopedv1.Status{Scopes: 2}), nil, "status").ok(t)
	if !strings.Contains(r.stdout, "scopes:  2\n") || !strings.Contains(r.stdout, "fleet:   off") {
		t.Errorf("single host:\n%s", r.stdout)
	}

	since := time.Now().Add(-90 * time.Second)
	deg := &scopedv1.Status{Scopes: 5, Fleet: &scopedv1.FleetStatus{
		Node: "node-a", Degraded: true, DegradedSince: timestamppb.New(since), Revision: 42, SplitNodes: 2,
		Members: []*scopedv1.FleetNode{
			{Name: "node-a", Addr: "10.0.0.1:7443", Labels: []string{"gpu", "eu"}, Slots: 1024, Cpus: 8, Scopes: 5, BusyCpus: 1.25},
			{Name: "node-b", Addr: "10.0.0.2:7443", Slots: 1024, Cpus: 8},
		},
	}}
	sock := startStatus(t, deg)
	r = cli(t, sock, nil, "status").ok(t)
	for _, want := range []string{
		"node:    node-a\n", "fleet:   DEGRADED since ", "(revision 42)", "split between 2 nodes", "members: 2\n",
		"node-a (this)", "gpu,eu", "1.25", "node-b",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("degraded: no %q in\n%s", want, r.stdout)
		}
	}
	if !strings.Contains(r.stderr, "degraded") {
		t.Errorf("degraded: stderr %q", r.stderr)
	}
	r = cli(t, sock, nil, "-o", "json", "status").ok(t)
	var doc struct {
		Fleet struct {
			Degraded bool
			Members  []struct{ Name string }
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &doc); err != nil || !doc.Fleet.Degraded || len(doc.Fleet.Members) != 2 {
		t.Errorf("json: %+v, %v:\n%s", doc, err, r.stdout)
	}
	if r := cli(t, sock, nil, "status", "extra"); r.code != 2 {
		t.Errorf("status extra: exit %d, want 2", r.code)
	}

	ok := &scopedv1.Status{Fleet: &scopedv1.FleetStatus{Node: "node-b", Revision: 7, SplitNodes: 1,
		Members: []*scopedv1.FleetNode{{Name: "node-b"}}}}
	r = cli(t, startStatus(t, ok), nil, "status").ok(t)
	if !strings.Contains(r.stdout, "fleet:   ok (revision 7)") || strings.Contains(r.stdout, "DEGRADED") || r.stderr != "" {
		t.Errorf("ok:\n%s\nstderr %q", r.stdout, r.stderr)
	}
}
