// Package clienttest is an in-process fake of the scoped daemon's API for
// tests of code that uses package client: it serves scopedv1.Scoped (plus the
// go-plugin reattach services) on a unix socket in a temporary directory and
// records what it was called with. It runs no extension: Invoke upper-cases
// the payload.
package clienttest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/plugins/reattach"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// FailExtension is an extension name whose Invoke fails with
// codes.FailedPrecondition and the message FailMessage.
const (
	FailExtension = "fail"
	FailMessage   = "worker crashed: exit status 2"
)

// Call is one recorded call.
type Call struct {
	Method   string // "Invoke", "Deploy", …
	Metadata metadata.MD
	Request  any
}

// Server is the fake daemon. The zero value is ready; Start serves it.
type Server struct {
	scopedv1.UnimplementedScopedServer

	mu    sync.Mutex
	calls []Call
	exts  map[string]*scopedv1.Extension // tenant/env/name
	logs  []*scopedv1.LogEntry
}

// Start serves s on a fresh unix socket and returns the socket's path. The
// server stops when the test ends.
func Start(t testing.TB, s *Server) string {
	t.Helper()
	dir := t.TempDir()
	if len(dir) > 90 { // sun_path holds 108 bytes
		d, err := os.MkdirTemp("", "scoped")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		dir = d
	}
	sock := filepath.Join(dir, "scoped.sock")
	lis, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	g := s.GRPCServer()
	go g.Serve(lis)
	t.Cleanup(g.Stop)
	return sock
}

// GRPCServer returns a gRPC server with s and the reattach services
// registered, for serving it yourself (in a child process, say).
func (s *Server) GRPCServer() *grpc.Server {
	g := grpc.NewServer()
	scopedv1.RegisterScopedServer(g, s)
	reattach.RegisterServices(g)
	return g
}

// AddLog adds a line that Logs returns.
func (s *Server) AddLog(e *scopedv1.LogEntry) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.logs = append(s.logs, e)
}

// Calls returns the calls so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// Last returns the last call of method, or false.
func (s *Server) Last(method string) (Call, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for i := len(s.calls) - 1; i >= 0; i-- {
		if s.calls[i].Method == method {
			return s.calls[i], true
		}
	}
	return Call{}, false
}

func (s *Server) record(ctx context.Context, method string, req any) {
	md, _ := metadata.FromIncomingContext(ctx)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = append(s.calls, Call{Method: method, Metadata: md.Copy(), Request: req})
}

func key(tenant, env, name string) string { return tenant + "/" + env + "/" + name }

func (s *Server) Deploy(ctx context.Context, req *scopedv1.DeployRequest) (*scopedv1.DeployResponse, error) {
	s.record(ctx, "Deploy", req)
	if req.GetTenant() == "" || req.GetEnvironment() == "" || req.GetName() == "" {
		return nil, status.Error(codes.InvalidArgument, "tenant, environment and name are required")
	}
	files := append([]*scopedv1.File(nil), req.GetBundle().GetFiles()...)
	sort.Slice(files, func(i, j int) bool { return files[i].GetPath() < files[j].GetPath() })
	h := sha256.New()
	var size int64
	runtime := "exec"
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%o\x00%d\x00", f.GetPath(), f.GetMode(), len(f.GetContent()))
		h.Write(f.GetContent())
		size += int64(len(f.GetContent()))
		if f.GetPath() == "manifest.toml" && bytes.Contains(f.GetContent(), []byte(`runtime = "go"`)) {
			runtime = "go"
		}
	}
	digest := "sha256:" + hex.EncodeToString(h.Sum(nil))

	s.mu.Lock()
	defer s.mu.Unlock()
	if s.exts == nil {
		s.exts = map[string]*scopedv1.Extension{}
	}
	k := key(req.GetTenant(), req.GetEnvironment(), req.GetName())
	if old := s.exts[k]; old != nil && old.GetDigest() == digest {
		return &scopedv1.DeployResponse{Extension: old, Unchanged: true}, nil
	}
	version := 1
	if old := s.exts[k]; old != nil {
		fmt.Sscanf(old.GetVersion(), "v%d", &version)
		version++
	}
	ext := &scopedv1.Extension{
		Tenant: req.GetTenant(), Environment: req.GetEnvironment(), Name: req.GetName(),
		Version: fmt.Sprintf("v%d", version), Digest: digest, Runtime: runtime, Size: size,
		Created: timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
	}
	s.exts[k] = ext
	return &scopedv1.DeployResponse{Extension: ext}, nil
}

func (s *Server) RemoveExtension(ctx context.Context, req *scopedv1.RemoveExtensionRequest) (*scopedv1.RemoveExtensionResponse, error) {
	s.record(ctx, "RemoveExtension", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	k := key(req.GetTenant(), req.GetEnvironment(), req.GetName())
	if s.exts[k] == nil {
		return nil, status.Errorf(codes.NotFound, "extension %q not found", req.GetName())
	}
	delete(s.exts, k)
	return &scopedv1.RemoveExtensionResponse{}, nil
}

func (s *Server) ListExtensions(ctx context.Context, req *scopedv1.ListExtensionsRequest) (*scopedv1.ListExtensionsResponse, error) {
	s.record(ctx, "ListExtensions", req)
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*scopedv1.Extension
	for _, e := range s.exts {
		if req.GetTenant() == "" || e.GetTenant() == req.GetTenant() {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool {
		return key(out[i].Tenant, out[i].Environment, out[i].Name) < key(out[j].Tenant, out[j].Environment, out[j].Name)
	})
	return &scopedv1.ListExtensionsResponse{Extensions: out}, nil
}

func (s *Server) Invoke(ctx context.Context, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, error) {
	s.record(ctx, "Invoke", req)
	if req.GetExtension() == FailExtension {
		return nil, status.Error(codes.FailedPrecondition, FailMessage)
	}
	return &scopedv1.InvokeResponse{
		Result: bytes.ToUpper(req.GetPayload()),
		Figures: &scopedv1.Figures{
			InvocationId: "inv-1",
			Scope:        req.GetTenant() + "." + req.GetEnvironment(),
			Worker:       "w-1",
			Cold:         true,
			Duration:     durationpb.New(1500 * time.Microsecond),
			Queued:       durationpb.New(200 * time.Microsecond),
		},
	}, nil
}

// scope is the one scope the fake reports.
func scope() *scopedv1.Scope {
	return &scopedv1.Scope{
		Key: "acme.production", Tenant: "acme", Environment: "production",
		Cgroup: "/scoped/pro/acme/acme.production", HostUid: 100000,
		Workers: []*scopedv1.Worker{{
			Id: "w-1", Extension: "shout", Version: "v1", Pid: 4242,
			Started:     timestamppb.New(time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)),
			Invocations: 7, InFlight: 1, Cgroup: "/scoped/pro/acme/acme.production/w-1",
		}},
		Stats: &scopedv1.CgroupStats{
			CpuUsage: durationpb.New(250 * time.Millisecond), MemoryCurrent: 12 << 20,
			MemoryPeak: 16 << 20, PidsCurrent: 3,
		},
		Limits: &scopedv1.Limits{CpuWeight: 100, CpuMax: 1, MemoryMax: 128 << 20, PidsMax: 64},
	}
}

func (s *Server) ListScopes(ctx context.Context, req *scopedv1.ListScopesRequest) (*scopedv1.ListScopesResponse, error) {
	s.record(ctx, "ListScopes", req)
	if req.GetTenant() != "" && req.GetTenant() != "acme" {
		return &scopedv1.ListScopesResponse{}, nil
	}
	return &scopedv1.ListScopesResponse{Scopes: []*scopedv1.Scope{scope()}}, nil
}

func (s *Server) InspectScope(ctx context.Context, req *scopedv1.InspectScopeRequest) (*scopedv1.Scope, error) {
	s.record(ctx, "InspectScope", req)
	if req.GetScope() != "acme.production" {
		return nil, status.Errorf(codes.NotFound, "scope %q not found", req.GetScope())
	}
	return scope(), nil
}

func (s *Server) Logs(req *scopedv1.LogsRequest, stream grpc.ServerStreamingServer[scopedv1.LogEntry]) error {
	s.record(stream.Context(), "Logs", req)
	s.mu.Lock()
	logs := append([]*scopedv1.LogEntry(nil), s.logs...)
	s.mu.Unlock()
	if n := int(req.GetTail()); n > 0 && n < len(logs) {
		logs = logs[len(logs)-n:]
	}
	for _, e := range logs {
		if req.GetScope() != "" && e.GetScope() != req.GetScope() {
			continue
		}
		if req.GetExtension() != "" && e.GetExtension() != req.GetExtension() {
			continue
		}
		if err := stream.Send(e); err != nil {
			return err
		}
	}
	if req.GetFollow() {
		<-stream.Context().Done()
	}
	return nil
}
