package api

// The fixture of the API edge's fuzz targets: an API over a supervisor
// built as New builds it, but without the cgroup tree
// (supervisor.Detached).

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/scoped-io/scoped/internal/fuzzbundle"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

const (
	fuzzTokCI   = "fuzz-token-ci-0123456789"
	fuzzTokAcme = "fuzz-token-acme-01234567"
	fuzzTokNone = "fuzz-token-none-01234567"
)

// tenantsFile is where the supervisor keeps tier assignments, in state_dir.
const tenantsFile = "tenants.json"

const unitManifest = "runtime = \"go\"\nentrypoint = \"worker\"\n"

// unitBundle is a valid go-runtime bundle whose worker holds content.
func unitBundle(content string) []supervisor.BundleFile {
	return []supervisor.BundleFile{
		{Path: supervisor.ManifestFile, Mode: 0o644, Content: []byte(unitManifest)},
		{Path: "worker", Mode: 0o755, Content: []byte(content)},
	}
}

// fuzzCaller is who calls — a peer (uid, gid) or none, maybe a bearer
// token — and what the fixture's configuration lets it do: the oracle the
// API's answers are checked against.
type fuzzCaller struct {
	name     string
	uid, gid uint32
	token    string
	noPeer   bool
	authed   bool // a configured client (or root)
	all      bool // may act for every tenant
	admin    bool // may assign tiers
	tenants  []string
}

var fuzzCallers = []fuzzCaller{
	{name: "root", authed: true, all: true, admin: true},
	{name: "app", uid: 1001, gid: 100, authed: true, tenants: []string{"acme", "globex"}},
	{name: "ops", uid: 5000, gid: 2002, authed: true, tenants: []string{"initech"}},
	{name: "ci", uid: 4000, gid: 4000, token: fuzzTokCI, authed: true, all: true, admin: true},
	{name: "acme-admin", uid: 4000, gid: 4000, token: fuzzTokAcme, authed: true, admin: true, tenants: []string{"acme"}},
	{name: "stranger", uid: 4000, gid: 4000},
	{name: "bad token", uid: 4000, gid: 4000, token: fuzzTokNone},
	{name: "no peer", noPeer: true},
}

func fuzzCallerOf(who uint8) fuzzCaller { return fuzzCallers[int(who)%len(fuzzCallers)] }

// may: the caller may act for tenant (a valid id).
func (c fuzzCaller) may(tenant string) bool {
	return c.authed && ident.Check("tenant", tenant) == nil && (c.all || slices.Contains(c.tenants, tenant))
}

func (c fuzzCaller) ctx() context.Context {
	if c.noPeer {
		return context.Background()
	}
	return peerCtx(c.uid, c.gid, c.token)
}

// fuzzExt is an extension the fixture deploys.
type fuzzExt struct{ tenant, env, name string }

func (e fuzzExt) key() string { return e.tenant + "/" + e.env + "/" + e.name }

var fuzzExts = []fuzzExt{{"acme", "production", "hook"}, {"globex", "staging", "report"}, {"initech", "production", "hook"}}

// fuzzAPI is the API edge over a supervisor with a store, tenants (initech
// suspended, globex rate-limited), a metering ledger with some usage, and
// (with scopes) three live scopes that have log lines but no cgroup or
// worker.
type fuzzAPI struct {
	root, state string
	cfg         supervisor.Config
	scopes      bool
	s           *supervisor.Detached
	api         *API
	live        map[string]bool // the keys of the live scopes
	cwd         []string        // the package directory's entries
	tenantsDoc  []byte          // tenants.json as set up
	digests     map[string]string
}

// newFuzzAPI builds the fixture; without scopes, it has no live scope (a
// tier change on a supervisor with live scopes applies the tier to their
// cgroups, which these have not).
func newFuzzAPI(tb testing.TB, scopes bool) *fuzzAPI {
	tb.Helper()
	// Not tb.TempDir(): its name is the test's, and runtime_dir must be
	// short enough for worker sockets (see Validate).
	root, err := os.MkdirTemp("", "scoped-fuzz-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = os.RemoveAll(root) })
	// As the daemon requires: the sandboxes' uids search it.
	if err := os.Chmod(root, 0o711); err != nil {
		tb.Fatal(err)
	}
	cfg := supervisor.DefaultConfig()
	cfg.StateDir = filepath.Join(root, "state")
	cfg.RuntimeDir = filepath.Join(root, "run")
	cfg.Socket = filepath.Join(cfg.RuntimeDir, "scoped.sock")
	cfg.ReattachFile = filepath.Join(cfg.RuntimeDir, "reattach.json")
	// Small caps, so that the fuzzer reaches them.
	cfg.Limits.MaxPayload, cfg.Limits.MaxBundle, cfg.Limits.MaxBundleFiles = 1024, 4096, 8
	limited := supervisor.BaseTier()
	limited.Rate, limited.Burst = 1, 1
	cfg.Tiers = maps.Clone(cfg.Tiers)
	cfg.Tiers["limited"] = limited
	cfg.Clients = []supervisor.Client{
		{Name: "app", UIDs: []uint32{1001}, Tenants: []string{"acme", "globex"}},
		{Name: "ops", GIDs: []uint32{2002}, Tenants: []string{"initech"}},
		{Name: "ci", Token: fuzzTokCI, Tenants: []string{"*"}, Admin: true},
		{Name: "acme-admin", Token: fuzzTokAcme, Tenants: []string{"acme"}, Admin: true},
	}
	fx := &fuzzAPI{root: root, state: cfg.StateDir, cfg: cfg, scopes: scopes, digests: map[string]string{}}
	fx.open(tb)
	tb.Cleanup(func() { _ = fx.s.Close() })
	for _, e := range fuzzExts {
		tg, err := supervisor.NewTarget(ident.Tenant(e.tenant), e.env, "", e.name)
		if err != nil {
			tb.Fatal(err)
		}
		info, _, err := fx.s.Deploy(tg, unitBundle("worker of "+e.key()))
		if err != nil {
			tb.Fatal(err)
		}
		fx.digests[e.key()] = info.Digest
	}
	if _, err := fx.s.SetTenantTier("initech", "suspended", nil); err != nil {
		tb.Fatal(err)
	}
	if _, err := fx.s.SetTenantTier("globex", "limited", &[]string{"203.0.113.0/24:443"}); err != nil {
		tb.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(cfg.StateDir, tenantsFile))
	if err != nil {
		tb.Fatal(err)
	}
	fx.tenantsDoc = doc
	// Usage in the ledger, committed while the supervisor has it closed.
	if err := fx.s.Close(); err != nil {
		tb.Fatal(err)
	}
	if cfg.Metering.Enabled {
		l, err := metering.Open(filepath.Join(cfg.StateDir, "metering"), cfg.Metering.Window.Duration)
		if err != nil {
			tb.Fatal(err)
		}
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		var deltas []metering.Delta
		for _, e := range fuzzExts {
			deltas = append(deltas, metering.Delta{Tenant: e.tenant, Meter: "invocations", At: at, Value: 3,
				Dims: metering.Dimensions{Scope: e.tenant + "." + e.env, Environment: e.env, Extension: e.name}})
		}
		if err := l.Commit(deltas, nil); err != nil {
			tb.Fatal(err)
		}
		if err := l.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	fx.s = nil
	fx.open(tb)
	fx.cwd = fuzzbundle.DirNames(tb, ".")
	return fx
}

// open builds the supervisor and the API over the fixture's directories,
// closing the supervisor it had, and adds the live scopes (once the
// fixture is set up).
func (fx *fuzzAPI) open(tb testing.TB) {
	tb.Helper()
	if fx.s != nil {
		if err := fx.s.Close(); err != nil {
			tb.Fatal(err)
		}
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	s, err := supervisor.NewDetached(fx.cfg, log)
	if err != nil {
		tb.Fatal(err)
	}
	fx.s = s
	fx.api = &API{s: s.Supervisor, conf: s.Config, log: log, metrics: s.Metrics()}
	fx.live = map[string]bool{}
	if !fx.scopes || fx.tenantsDoc == nil {
		return
	}
	// Live scopes with log lines. Their nodes name a cgroup that does not
	// exist (their stats are zero).
	now := time.Now()
	for _, e := range fuzzExts {
		var lines []supervisor.LogLine
		for i := range 3 {
			lines = append(lines, supervisor.LogLine{Time: now.Add(time.Duration(i) * time.Millisecond), Worker: "w1",
				Extension: e.name, InvocationID: fmt.Sprint("i", i), Stream: "stderr", Line: "line of " + e.key()})
		}
		tg, err := supervisor.NewTarget(ident.Tenant(e.tenant), e.env, "", e.name)
		if err != nil {
			tb.Fatal(err)
		}
		key, err := s.AddScope(tg, lines)
		if err != nil {
			tb.Fatal(err)
		}
		fx.live[key] = true
	}
}

// extDir is the store's directory of an extension.
func (fx *fuzzAPI) extDir(tenant, env, name string) string {
	return filepath.Join(fx.state, "extensions", tenant, env, name)
}

// stored is the current version of an extension, if the store has it.
func (fx *fuzzAPI) stored(t *testing.T, tenant, env, name string) (supervisor.ExtensionInfo, bool) {
	t.Helper()
	exts, err := fx.s.Extensions(func(x string) bool { return x == tenant })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		if e.Environment == env && e.Name == name {
			return e, true
		}
	}
	return supervisor.ExtensionInfo{}, false
}

// snapshot lists every file under the fixture's root (relative path →
// type, size, modification time) but the metering ledger's directory,
// which SQLite may touch on a read. Anything outside
// state_dir and runtime_dir, and anything new in the package directory,
// fails the test.
func (fx *fuzzAPI) snapshot(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	meteringDir := filepath.Join("state", "metering")
	err := filepath.WalkDir(fx.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(fx.root, p)
		switch top, _, _ := strings.Cut(rel, string(filepath.Separator)); {
		case rel == ".":
			return nil
		case rel == meteringDir:
			return fs.SkipDir
		case top != "state" && top != "run":
			t.Fatalf("%s is outside state_dir and runtime_dir", p)
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		out[rel] = fmt.Sprintf("%v %d %d", info.Mode(), info.Size(), info.ModTime().UnixNano())
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if now := fuzzbundle.DirNames(t, "."); !slices.Equal(now, fx.cwd) {
		t.Fatalf("the package directory changed: %q, was %q", now, fx.cwd)
	}
	return out
}

// changed lists the paths that differ between two snapshots.
func changed(a, b map[string]string) []string { return fuzzbundle.Changed(a, b) }

// unchanged fails the test when the state changed.
func (fx *fuzzAPI) unchanged(t *testing.T, what string, before map[string]string) {
	t.Helper()
	if c := changed(before, fx.snapshot(t)); len(c) > 0 {
		t.Fatalf("%s changed the state: %q", what, c)
	}
}

// restore brings the store and the tenants back to the fixture's: the
// fuzzed extensions removed (with the directories left empty), the
// fixture's own redeployed if they changed, tenants.json as it was (read
// again by a new supervisor over the same directories).
func (fx *fuzzAPI) restore(t *testing.T) {
	t.Helper()
	s := fx.s
	exts, err := s.Extensions(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		k := e.Tenant + "/" + e.Environment + "/" + e.Name
		if fx.digests[k] == e.Digest {
			continue
		}
		tg, err := supervisor.NewTarget(ident.Tenant(e.Tenant), e.Environment, "", e.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := s.RemoveExtension(tg); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range fuzzExts {
		if _, ok := fx.stored(t, e.tenant, e.env, e.name); ok {
			continue
		}
		if err := os.RemoveAll(fx.extDir(e.tenant, e.env, e.name)); err != nil {
			t.Fatal(err)
		}
		tg, err := supervisor.NewTarget(ident.Tenant(e.tenant), e.env, "", e.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Deploy(tg, unitBundle("worker of "+e.key())); err != nil {
			t.Fatal(err)
		}
	}
	// Remove empty tenant and environment directories.
	store := filepath.Join(fx.state, "extensions")
	dirs, _ := filepath.Glob(filepath.Join(store, "*", "*"))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	dirs, _ = filepath.Glob(filepath.Join(store, "*"))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	p := filepath.Join(fx.state, tenantsFile)
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, fx.tenantsDoc) {
		if err := os.WriteFile(p, fx.tenantsDoc, 0o644); err != nil {
			t.Fatal(err)
		}
		fx.open(t)
	}
}

// unary calls an RPC as grpc-go does: the generated handler of
// Scoped_ServiceDesc, with the API's interceptor. The request reaches the
// handler as built (a copy), even what the wire would not carry (invalid
// UTF-8).
func (fx *fuzzAPI) unary(c fuzzCaller, method string, req proto.Message) (any, error) {
	return fx.unaryDec(c, method, func(m any) error { proto.Merge(m.(proto.Message), req); return nil })
}

// unaryDec is unary with the request decoded by dec.
func (fx *fuzzAPI) unaryDec(c fuzzCaller, method string, dec func(any) error) (any, error) {
	for _, m := range scopedv1.Scoped_ServiceDesc.Methods {
		if m.MethodName == method {
			return m.Handler(fx.api, c.ctx(), dec, fx.api.unary)
		}
	}
	panic("no method " + method)
}

// fuzzLogStream is the server side of a Logs stream: it collects what the
// handler sends. Its context is cancelled, so that a follow ends after the
// lines kept.
type fuzzLogStream struct {
	grpc.ServerStream
	ctx  context.Context
	recv func(m any) error
	sent []*scopedv1.LogEntry
}

func (s *fuzzLogStream) Context() context.Context { return s.ctx }
func (s *fuzzLogStream) RecvMsg(m any) error      { return s.recv(m) }
func (s *fuzzLogStream) SendMsg(m any) error {
	s.sent = append(s.sent, m.(*scopedv1.LogEntry))
	return nil
}

// logs calls Logs as grpc-go does: the generated stream handler, with the
// API's stream interceptor.
func (fx *fuzzAPI) logs(c fuzzCaller, req *scopedv1.LogsRequest) ([]*scopedv1.LogEntry, error) {
	return fx.logsDec(c, func(m any) error { proto.Merge(m.(proto.Message), req); return nil })
}

// logsDec is logs with the request decoded by dec.
func (fx *fuzzAPI) logsDec(c fuzzCaller, dec func(any) error) ([]*scopedv1.LogEntry, error) {
	ctx, cancel := context.WithCancel(c.ctx())
	cancel()
	ss := &fuzzLogStream{ctx: ctx, recv: dec}
	desc := scopedv1.Scoped_ServiceDesc.Streams[0]
	if desc.StreamName != "Logs" {
		panic("stream 0 is " + desc.StreamName)
	}
	err := fx.api.stream(fx.api, ss, &grpc.StreamServerInfo{FullMethod: scopedv1.Scoped_Logs_FullMethodName, IsServerStream: true}, desc.Handler)
	return ss.sent, err
}

// fuzzCode checks that err is a gRPC status with one of the allowed codes
// (never Unknown or Internal) and returns its code (OK for nil).
func fuzzCode(t *testing.T, rpc string, err error, allowed ...codes.Code) codes.Code {
	t.Helper()
	if err == nil {
		return codes.OK
	}
	st, ok := status.FromError(err)
	if !ok {
		t.Fatalf("%s: %v (%T) is not a gRPC status", rpc, err, err)
	}
	if !slices.Contains(allowed, st.Code()) {
		t.Fatalf("%s: %v: code %v, want one of %v", rpc, err, st.Code(), allowed)
	}
	return st.Code()
}

// fuzzAuth checks the answer to a call for tenant against what the caller
// may: a caller that is no client, or that may not act for a valid tenant,
// is refused; one that may is not.
func fuzzAuth(t *testing.T, rpc string, c fuzzCaller, tenant string, code codes.Code) {
	t.Helper()
	switch {
	case !c.authed && code != codes.PermissionDenied:
		t.Fatalf("%s by %s (not a client): %v, want PermissionDenied", rpc, c.name, code)
	case c.authed && ident.Check("tenant", tenant) != nil && code != codes.InvalidArgument:
		t.Fatalf("%s by %s for tenant %q: %v, want InvalidArgument", rpc, c.name, tenant, code)
	case c.authed && ident.Check("tenant", tenant) == nil && !c.may(tenant) && code != codes.PermissionDenied:
		t.Fatalf("%s by %s for tenant %q: %v, want PermissionDenied", rpc, c.name, tenant, code)
	case c.may(tenant) && code == codes.PermissionDenied:
		t.Fatalf("%s by %s for tenant %q: PermissionDenied", rpc, c.name, tenant)
	}
}

// validIDs: every field is a valid id of its kind (what the supervisor's
// checks accept).
func validIDs(fields ...[2]string) bool {
	for _, f := range fields {
		if ident.Check(f[0], f[1]) != nil {
			return false
		}
	}
	return true
}

// validVersion: v is v1, v2, … (a number the store can count to).
func validVersion(v string) bool {
	n, ok := strings.CutPrefix(v, "v")
	i, err := strconv.Atoi(n)
	return ok && err == nil && i >= 1 && "v"+strconv.Itoa(i) == v && validIDs([2]string{"version", v})
}
