package supervisor

// The fixture of the fuzz targets of the API edge and the store: an API over
// a supervisor built as New builds it, but without the cgroup tree, and the
// bundle encoding the targets share.

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metering"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const (
	fuzzTokCI   = "fuzz-token-ci-0123456789"
	fuzzTokAcme = "fuzz-token-acme-01234567"
	fuzzTokNone = "fuzz-token-none-01234567"
)

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
// three live scopes that have log lines but no cgroup or worker.
type fuzzAPI struct {
	root, state string
	s           *Supervisor
	api         *API
	cwd         []string // the package directory's entries
	tenantsDoc  []byte   // tenants.json as set up
	digests     map[string]string
}

// newFuzzSupervisor builds a supervisor as New does, but for the cgroup
// tree: New opens the cgroup root, which creates it (root only) and would
// leave it behind in every fuzz worker process. Without a tree and without
// Recover nothing runs: no reaper, sandbox, accounting, network or
// controller; of what Recover starts it opens only the metering ledger, so
// that GetUsage queries a real one. The supervisor is stopping, so that an
// invocation that passes every check ends with ErrStopping where it would
// create a scope (whose cgroups it has not).
func newFuzzSupervisor(tb testing.TB, cfg Config) *Supervisor {
	tb.Helper()
	noTree := func(string) (*cgroups.Tree, error) { return nil, nil }
	s, err := newSupervisor(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)), noTree)
	if err != nil {
		tb.Fatal(err)
	}
	s.pluginLog = hclog.NewNullLogger()
	s.stopping = true
	if err := s.openMetering(); err != nil {
		tb.Fatal(err)
	}
	if s.meter != nil {
		tb.Cleanup(func() { _ = s.meter.ledger.Close() })
	}
	return s
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
	cfg := DefaultConfig()
	cfg.StateDir = filepath.Join(root, "state")
	cfg.RuntimeDir = filepath.Join(root, "run")
	cfg.Socket = filepath.Join(cfg.RuntimeDir, "scoped.sock")
	cfg.ReattachFile = filepath.Join(cfg.RuntimeDir, "reattach.json")
	// Small caps, so that the fuzzer reaches them.
	cfg.Limits.MaxPayload, cfg.Limits.MaxBundle, cfg.Limits.MaxBundleFiles = 1024, 4096, 8
	limited := BaseTier()
	limited.Rate, limited.Burst = 1, 1
	cfg.Tiers = maps.Clone(cfg.Tiers)
	cfg.Tiers["limited"] = limited
	cfg.Clients = []Client{
		{Name: "app", UIDs: []uint32{1001}, Tenants: []string{"acme", "globex"}},
		{Name: "ops", GIDs: []uint32{2002}, Tenants: []string{"initech"}},
		{Name: "ci", Token: fuzzTokCI, Tenants: []string{"*"}, Admin: true},
		{Name: "acme-admin", Token: fuzzTokAcme, Tenants: []string{"acme"}, Admin: true},
	}
	s := newFuzzSupervisor(tb, cfg)
	fx := &fuzzAPI{root: root, state: cfg.StateDir, s: s, api: &API{s: s}, digests: map[string]string{}}
	for _, e := range fuzzExts {
		info, _, err := s.Deploy(e.tenant, e.env, e.name, unitBundle("worker of "+e.key()))
		if err != nil {
			tb.Fatal(err)
		}
		fx.digests[e.key()] = info.Digest
	}
	now := time.Now()
	if err := s.tenants.assign("initech", "suspended", nil, now); err != nil {
		tb.Fatal(err)
	}
	if err := s.tenants.assign("globex", "limited", &[]string{"203.0.113.0/24:443"}, now); err != nil {
		tb.Fatal(err)
	}
	doc, err := os.ReadFile(filepath.Join(cfg.StateDir, tenantsFile))
	if err != nil {
		tb.Fatal(err)
	}
	fx.tenantsDoc = doc
	// Live scopes with log lines. Their nodes name a cgroup that does not
	// exist (Load creates nothing; their stats are zero).
	for _, e := range fuzzExts {
		if !scopes {
			break
		}
		id := cfg.Isolation.scopeOf(Target{Tenant: e.tenant, Environment: e.env, Extension: e.name})
		tier, _ := s.tierOf(e.tenant)
		node, err := cgroups.Load(path.Join("/scoped-fuzz-absent", tier, e.tenant, id.Name))
		if err != nil {
			tb.Fatal(err)
		}
		sc := &scope{id: id, tier: tier, node: node, ring: newLogRing(8), created: now, lastUsed: now}
		for i := range 3 {
			sc.ring.add(LogLine{Time: now.Add(time.Duration(i) * time.Millisecond), Scope: id.Key(), Worker: "w1",
				Extension: e.name, InvocationID: fmt.Sprint("i", i), Stream: "stderr", Line: "line of " + id.Key()})
		}
		s.scopes[id.Key()] = sc
	}
	if s.meter != nil {
		at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		var deltas []metering.Delta
		for _, e := range fuzzExts {
			deltas = append(deltas, metering.Delta{Tenant: e.tenant, Meter: "invocations", At: at, Value: 3,
				Dims: metering.Dimensions{Scope: e.tenant + "." + e.env, Environment: e.env, Extension: e.name}})
		}
		if err := s.meter.ledger.Commit(deltas, nil); err != nil {
			tb.Fatal(err)
		}
	}
	fx.cwd = dirNames(tb, ".")
	return fx
}

func dirNames(tb testing.TB, dir string) []string {
	tb.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		tb.Fatal(err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
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
	if now := dirNames(t, "."); !slices.Equal(now, fx.cwd) {
		t.Fatalf("the package directory changed: %q, was %q", now, fx.cwd)
	}
	return out
}

// changed lists the paths that differ between two snapshots.
func changed(a, b map[string]string) []string {
	var out []string
	for p, v := range a {
		if b[p] != v {
			out = append(out, p)
		}
	}
	for p := range b {
		if _, ok := a[p]; !ok {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

// unchanged fails the test when the state changed.
func (fx *fuzzAPI) unchanged(t *testing.T, what string, before map[string]string) {
	t.Helper()
	if c := changed(before, fx.snapshot(t)); len(c) > 0 {
		t.Fatalf("%s changed the state: %q", what, c)
	}
}

// restore brings the store and the tenants back to the fixture's: the
// fuzzed extensions removed (with the directories left empty), the
// fixture's own redeployed if they changed, tenants.json as it was.
func (fx *fuzzAPI) restore(t *testing.T) {
	t.Helper()
	s := fx.s
	exts, err := s.store.List(func(string) bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range exts {
		k := e.Tenant + "/" + e.Environment + "/" + e.Name
		if fx.digests[k] == e.Digest {
			continue
		}
		if err := s.store.Remove(e.Tenant, e.Environment, e.Name); err != nil {
			t.Fatal(err)
		}
	}
	for _, e := range fuzzExts {
		if _, err := s.store.Get(e.tenant, e.env, e.name, ""); err == nil {
			continue
		}
		if err := os.RemoveAll(s.store.extDir(e.tenant, e.env, e.name)); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.store.Deploy(e.tenant, e.env, e.name, unitBundle("worker of "+e.key())); err != nil {
			t.Fatal(err)
		}
	}
	// Remove empty tenant and environment directories.
	dirs, _ := filepath.Glob(filepath.Join(s.store.root, "*", "*"))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	dirs, _ = filepath.Glob(filepath.Join(s.store.root, "*"))
	for _, d := range dirs {
		_ = os.Remove(d)
	}
	p := filepath.Join(fx.state, tenantsFile)
	if b, err := os.ReadFile(p); err != nil || !bytes.Equal(b, fx.tenantsDoc) {
		if err := os.WriteFile(p, fx.tenantsDoc, 0o644); err != nil {
			t.Fatal(err)
		}
		tenants, err := openTenants(fx.state)
		if err != nil {
			t.Fatal(err)
		}
		s.tenants = tenants
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

// --- bundles ------------------------------------------------------------

// fuzzBundle decodes a file list from fuzz bytes. Each file is two bytes of
// path length, the path, four bytes of mode, two bytes of content length
// and the content (little endian); a content length with the top bit set
// stands for that many (the low 15 bits) copies of the next byte, so that
// sizes near the caps are easy to reach. A cut record ends the list.
func fuzzBundle(b []byte) []BundleFile {
	var files []BundleFile
	for len(b) >= 2 {
		n := int(binary.LittleEndian.Uint16(b))
		b = b[2:]
		if len(b) < n+6 {
			break
		}
		f := BundleFile{Path: string(b[:n]), Mode: binary.LittleEndian.Uint32(b[n:])}
		c := int(binary.LittleEndian.Uint16(b[n+4:]))
		b = b[n+6:]
		if c&0x8000 != 0 {
			if len(b) < 1 {
				break
			}
			f.Content = bytes.Repeat(b[:1], c&0x7fff)
			b = b[1:]
		} else {
			if len(b) < c {
				break
			}
			f.Content = b[:c:c]
			b = b[c:]
		}
		files = append(files, f)
	}
	return files
}

// fuzzBundleBytes encodes files for fuzzBundle (contents up to 32 KiB).
func fuzzBundleBytes(files ...BundleFile) []byte {
	var b []byte
	for _, f := range files {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Path)))
		b = append(b, f.Path...)
		b = binary.LittleEndian.AppendUint32(b, f.Mode)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(f.Content)))
		b = append(b, f.Content...)
	}
	return b
}

// fuzzBundleSeeds are file lists from the store's tests and their edges.
func fuzzBundleSeeds() [][]byte {
	manifest := BundleFile{Path: ManifestFile, Mode: 0o644, Content: []byte(unitManifest)}
	worker := BundleFile{Path: "worker", Mode: 0o755, Content: []byte("w")}
	execManifest := BundleFile{Path: ManifestFile, Mode: 0o644, Content: []byte("runtime = \"exec\"\nentrypoint = \"bin/run.sh\"\n")}
	var big []byte
	big = fuzzBundleBytes(manifest)
	big = binary.LittleEndian.AppendUint16(big, 6)
	big = append(big, "worker"...)
	big = binary.LittleEndian.AppendUint32(big, 0o755)
	big = binary.LittleEndian.AppendUint16(big, 0x8000|(4096-uint16(len(unitManifest))))
	big = append(big, 'x')
	seeds := [][]byte{
		fuzzBundleBytes(unitBundle("w")...),
		fuzzBundleBytes(execManifest, BundleFile{Path: "bin/run.sh", Mode: 0o700, Content: []byte("#!/bin/sh\n")}, BundleFile{Path: "bin/lib/x.txt", Mode: 0o600}),
		big,
		fuzzBundleBytes(),
		fuzzBundleBytes(manifest),
		fuzzBundleBytes(manifest, BundleFile{Path: "worker", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, worker),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "worker/x", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "../escape", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "/etc/passwd", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "a\x00b", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: strings.Repeat("a", 255), Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: strings.Repeat("a", 256), Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: strings.Repeat("d/", 100) + "f", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "link", Mode: 0o120777, Content: []byte("/etc")}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "dev", Mode: 0o20666}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "suid", Mode: 0o4755}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: ".tmp-x", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "current", Mode: 0o644}),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "info.json", Mode: 0o644}),
		fuzzBundleBytes(BundleFile{Path: ManifestFile, Mode: 0o644, Content: []byte("runtime = \"go\"\nentrypoint = \"../worker\"\n")}, worker),
		fuzzBundleBytes(manifest, worker, BundleFile{Path: "a"}, BundleFile{Path: "b"}, BundleFile{Path: "c"}, BundleFile{Path: "d"}, BundleFile{Path: "e"}, BundleFile{Path: "f"}, BundleFile{Path: "g"}),
	}
	return seeds
}

// checkStored checks a version the store says it stored: its directory
// holds info.json and bundle/, which holds exactly files (their contents,
// normalised modes, no other file, no symlink), "current" names it, and no
// temporary directory is left.
func checkStored(t *testing.T, store *Store, info ExtensionInfo, files []BundleFile) {
	t.Helper()
	ext := store.extDir(info.Tenant, info.Environment, info.Name)
	if err := checkVersion(info.Version); err != nil {
		t.Fatalf("stored version %q: %v", info.Version, err)
	}
	if b, err := os.ReadFile(filepath.Join(ext, "current")); err != nil || string(b) != info.Version+"\n" {
		t.Fatalf("current = %q, %v; want %s", b, err, info.Version)
	}
	for _, n := range dirNames(t, ext) {
		if n != "current" && checkVersion(n) != nil {
			t.Fatalf("%s left in %s", n, ext)
		}
	}
	vdir := filepath.Join(ext, info.Version)
	if n := dirNames(t, vdir); !slices.Equal(n, []string{"bundle", "info.json"}) {
		t.Fatalf("%s holds %q", vdir, n)
	}
	want := map[string]BundleFile{}
	dirs := map[string]bool{".": true}
	for _, f := range files {
		want[f.Path] = f
		for d := path.Dir(f.Path); d != "."; d = path.Dir(d) {
			dirs[d] = true
		}
	}
	bundle := filepath.Join(vdir, "bundle")
	seen := 0
	err := filepath.WalkDir(bundle, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(bundle, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, "../") {
			t.Fatalf("%s is outside %s", p, bundle)
		}
		rel = filepath.ToSlash(rel)
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		switch {
		case fi.IsDir():
			if !dirs[rel] {
				t.Fatalf("directory %s is no file's", rel)
			}
		case fi.Mode().IsRegular():
			f, ok := want[rel]
			if !ok {
				t.Fatalf("file %s is not in the bundle", rel)
			}
			b, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(b, f.Content) {
				t.Fatalf("%s holds %d bytes (%v), the bundle %d", rel, len(b), err, len(f.Content))
			}
			if got := uint32(fi.Mode()); got != normMode(f.Mode) {
				t.Fatalf("%s has mode %#o, want %#o", rel, got, normMode(f.Mode))
			}
			seen++
		default:
			t.Fatalf("%s is a %v", rel, fi.Mode().Type())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != len(files) {
		t.Fatalf("%d files stored, the bundle has %d", seen, len(files))
	}
}
