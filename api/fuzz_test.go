package api

// Fuzz targets of the API edge: every RPC of scoped.v1.Scoped, built from
// fuzzed fields and called as grpc-go calls it (the generated handler, the
// API's interceptor: authentication, sentinel → status) on the fixture of
// fixture_test.go. Every answer is a status with a code the RPC may
// give (never Unknown or Internal) that agrees with what the caller may do;
// a refused call changes no file, and nothing is written outside state_dir
// and runtime_dir. `make fuzz` runs each for a while (scripts/fuzz.sh).

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/internal/fuzzbundle"
	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/netns"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// fuzzBundleBytes encodes files for fuzzbundle.Decode.
func fuzzBundleBytes(files ...supervisor.BundleFile) []byte {
	var fs []fuzzbundle.File
	for _, f := range files {
		fs = append(fs, fuzzbundle.File(f))
	}
	return fuzzbundle.Encode(fs...)
}

// fuzzIDs are ids the seeds try in every id field.
var fuzzIDs = []string{"acme", "globex", "initech", "production", "staging", "hook", "report", "nope", "",
	"../acme", "ACME", "a.b", "a/b", "*", "-a", "current", "v1", ".tmp-x", "a\x00b", strings.Repeat("a", 63), strings.Repeat("a", 64), "é"}

// under: p is dir or below it, or one of its parents.
func under(p, dir string) bool {
	return p == dir || strings.HasPrefix(p, dir+string(filepath.Separator)) || strings.HasPrefix(dir, p+string(filepath.Separator))
}

func fuzzListAuth(t *testing.T, rpc string, c fuzzCaller, tenant string, code codes.Code) {
	t.Helper()
	if tenant != "" {
		fuzzAuth(t, rpc, c, tenant, code)
		return
	}
	if c.authed != (code == codes.OK) {
		t.Fatalf("%s by %s of every tenant: %v", rpc, c.name, code)
	}
}

func FuzzUnitAPIDeploy(f *testing.F) {
	for i, b := range fuzzbundle.Seeds(supervisor.ManifestFile, unitManifest) {
		f.Add(uint8(i), "acme", "production", "hook", b)
		f.Add(uint8(i+1), "globex", "staging", "fresh", b)
	}
	ok := fuzzBundleBytes(unitBundle("w")...)
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, "production", "hook", ok)
		f.Add(uint8(3), "acme", id, "hook", ok)
		f.Add(uint8(0), "initech", "production", id, ok)
	}
	f.Add(uint8(0), "acme", "production", "hook", fuzzBundleBytes(unitBundle("worker of acme/production/hook")...))
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant, env, name string, bundle []byte) {
		c := fuzzCallerOf(who)
		files := fuzzbundle.Decode(bundle)
		req := &scopedv1.DeployRequest{Tenant: tenant, Environment: env, Name: name, Bundle: &scopedv1.Bundle{}}
		for _, f := range files {
			req.Bundle.Files = append(req.Bundle.Files, &scopedv1.File{Path: f.Path, Mode: f.Mode, Content: f.Content})
		}
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "Deploy", req)
		code := fuzzCode(t, "Deploy", err, codes.InvalidArgument, codes.PermissionDenied)
		fuzzAuth(t, "Deploy", c, tenant, code)
		if err != nil {
			fx.unchanged(t, "a refused Deploy", before)
			return
		}
		defer fx.restore(t)
		if !validIDs([2]string{"tenant", tenant}, [2]string{"environment", env}, [2]string{"extension", name}) {
			t.Fatalf("Deploy of %q/%q/%q accepted", tenant, env, name)
		}
		got := resp.(*scopedv1.DeployResponse)
		info, ok := fx.stored(t, tenant, env, name)
		if !ok {
			t.Fatalf("deployed, then not listed")
		}
		if e := got.GetExtension(); e.GetVersion() != info.Version || e.GetDigest() != info.Digest || e.GetTenant() != tenant ||
			e.GetEnvironment() != env || e.GetName() != name {
			t.Fatalf("Deploy answered %v, the store has %+v", e, info)
		}
		fuzzbundle.CheckStored(t, fx.extDir(tenant, env, name), info.Version, files)
		after := fx.snapshot(t)
		if got.GetUnchanged() {
			if c := changed(before, after); len(c) > 0 {
				t.Fatalf("an unchanged Deploy changed %q", c)
			}
			return
		}
		ext := filepath.Join("state", "extensions", tenant, env, name)
		for _, p := range changed(before, after) {
			if !under(p, ext) {
				t.Fatalf("Deploy to %s changed %s", ext, p)
			}
		}
	})
}

func FuzzUnitAPIRemoveExtension(f *testing.F) {
	for i, e := range fuzzExts {
		for who := range len(fuzzCallers) {
			f.Add(uint8(who), e.tenant, e.env, e.name)
		}
		f.Add(uint8(i), fuzzIDs[i+8], e.env, e.name)
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, id, id)
		f.Add(uint8(0), "acme", id, "hook")
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant, env, name string) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		_, err := fx.unary(c, "RemoveExtension", &scopedv1.RemoveExtensionRequest{Tenant: tenant, Environment: env, Name: name})
		code := fuzzCode(t, "RemoveExtension", err, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied)
		fuzzAuth(t, "RemoveExtension", c, tenant, code)
		known := slices.Contains(fuzzExts, fuzzExt{tenant, env, name})
		if known && c.may(tenant) && code != codes.OK {
			t.Fatalf("RemoveExtension of %s/%s/%s by %s: %v", tenant, env, name, c.name, err)
		}
		if err != nil {
			fx.unchanged(t, "a refused RemoveExtension", before)
			return
		}
		defer fx.restore(t)
		if !known {
			t.Fatalf("removed %q/%q/%q, which was never deployed", tenant, env, name)
		}
		if _, ok := fx.stored(t, tenant, env, name); ok {
			t.Fatalf("removed, then found")
		}
		ext := filepath.Join("state", "extensions", tenant, env, name)
		for _, p := range changed(before, fx.snapshot(t)) {
			if !under(p, ext) {
				t.Fatalf("RemoveExtension of %s changed %s", ext, p)
			}
		}
	})
}

func FuzzUnitAPIListExtensions(f *testing.F) {
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id)
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant string) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "ListExtensions", &scopedv1.ListExtensionsRequest{Tenant: tenant})
		code := fuzzCode(t, "ListExtensions", err, codes.InvalidArgument, codes.PermissionDenied)
		fuzzListAuth(t, "ListExtensions", c, tenant, code)
		fx.unchanged(t, "ListExtensions", before)
		if err != nil {
			return
		}
		want := 0
		for _, e := range fuzzExts {
			if c.may(e.tenant) && (tenant == "" || tenant == e.tenant) {
				want++
			}
		}
		exts := resp.(*scopedv1.ListExtensionsResponse).GetExtensions()
		for _, e := range exts {
			if !c.may(e.GetTenant()) || tenant != "" && e.GetTenant() != tenant {
				t.Fatalf("ListExtensions(%q) by %s lists %s", tenant, c.name, e.GetTenant())
			}
		}
		if len(exts) != want {
			t.Fatalf("ListExtensions(%q) by %s lists %d extensions, want %d", tenant, c.name, len(exts), want)
		}
	})
}

// fuzzMetadata reads "k=v" lines.
func fuzzMetadata(s string) map[string]string {
	if s == "" {
		return nil
	}
	m := map[string]string{}
	for _, l := range strings.Split(s, "\n") {
		k, v, _ := strings.Cut(l, "=")
		m[k] = v
	}
	return m
}

func FuzzUnitAPIInvoke(f *testing.F) {
	var many []string
	for i := range 65 {
		many = append(many, fmt.Sprintf("k%d=v", i))
	}
	for who := range len(fuzzCallers) {
		for _, e := range fuzzExts {
			f.Add(uint8(who), e.tenant, e.env, "", e.name, "", []byte("hi"), "k=v", false, int64(0), int32(0))
		}
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(0), id, "production", "", "hook", "", []byte{}, "", false, int64(0), int32(0))
		f.Add(uint8(1), "acme", id, "alice", "hook", "", []byte{}, "", false, int64(0), int32(0))
		f.Add(uint8(3), "acme", "production", id, "hook", "v1", []byte{}, "", false, int64(0), int32(0))
		f.Add(uint8(4), "acme", "production", "", id, "", []byte{}, "", false, int64(0), int32(0))
		f.Add(uint8(i), "acme", "production", "", "hook", id, []byte{}, "", false, int64(0), int32(0))
	}
	for _, c := range []struct {
		user, version string
		payload       []byte
		meta          string
		timeout       bool
		secs          int64
		nanos         int32
	}{
		{"anonymous", "", nil, "", false, 0, 0},
		{"", "v2", nil, "", false, 0, 0},
		{"", "v0", nil, "", false, 0, 0},
		{"", "v01", nil, "", false, 0, 0},
		{"", "", make([]byte, 1024), "", false, 0, 0},
		{"", "", make([]byte, 1025), "", false, 0, 0},
		{"", "", nil, strings.Join(many, "\n"), false, 0, 0},
		{"", "", nil, "=v", false, 0, 0},
		{"", "", nil, strings.Repeat("k", 129) + "=v", false, 0, 0},
		{"", "", nil, "k=" + strings.Repeat("v", 4097), false, 0, 0},
		{"", "", nil, "", true, -1, 0},
		{"", "", nil, "", true, 1, -1},
		{"", "", nil, "", true, 0, 1e9},
		{"", "", nil, "", true, 1 << 62, 0},
		{"", "", nil, "", true, 0, 1},
		{"", "", nil, "", true, 3600, 0},
	} {
		f.Add(uint8(0), "acme", "production", c.user, "hook", c.version, c.payload, c.meta, c.timeout, c.secs, c.nanos)
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant, env, user, ext, version string, payload []byte, meta string,
		hasTimeout bool, secs int64, nanos int32) {
		c := fuzzCallerOf(who)
		req := &scopedv1.InvokeRequest{Tenant: tenant, Environment: env, User: user, Extension: ext, Version: version,
			Payload: payload, Metadata: fuzzMetadata(meta)}
		if hasTimeout {
			req.Timeout = &durationpb.Duration{Seconds: secs, Nanos: nanos}
		}
		before := fx.snapshot(t)
		_, err := fx.unary(c, "Invoke", req)
		code := fuzzCode(t, "Invoke", err, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied,
			codes.FailedPrecondition, codes.ResourceExhausted, codes.Unavailable)
		fuzzAuth(t, "Invoke", c, tenant, code)
		fx.unchanged(t, "Invoke", before)
		if n := len(fx.s.Scopes(func(string) bool { return true })); n != len(fuzzExts) {
			t.Fatalf("Invoke made a scope: %d live", n)
		}
		known := slices.Contains(fuzzExts, fuzzExt{tenant, env, ext}) && (version == "" || version == "v1")
		switch code {
		case codes.Unavailable: // admitted: the fixture is stopping
			if !known || !c.may(tenant) {
				t.Fatalf("Invoke of %q/%q/%q@%q by %s admitted", tenant, env, ext, version, c.name)
			}
		case codes.FailedPrecondition:
			if tenant != "initech" {
				t.Fatalf("Invoke for %s: %v", tenant, err)
			}
		case codes.ResourceExhausted:
			if tenant != "globex" {
				t.Fatalf("Invoke for %s: %v", tenant, err)
			}
		}
		// A valid request for an extension that is not there is NotFound.
		valid := validIDs([2]string{"tenant", tenant}, [2]string{"environment", env}, [2]string{"extension", ext}) &&
			(user == "" || validIDs([2]string{"user", user}) && user != supervisor.AnonymousUser) &&
			(version == "" || validVersion(version)) &&
			len(payload) <= 1024 && len(req.Metadata) <= 64 && (!hasTimeout || req.Timeout.CheckValid() == nil && req.Timeout.AsDuration() >= 0)
		for k, v := range req.Metadata {
			valid = valid && k != "" && len(k) <= 128 && len(v) <= 4096
		}
		if valid && c.may(tenant) && !known && code != codes.NotFound {
			t.Fatalf("Invoke of %q/%q/%q@%q: %v, want NotFound", tenant, env, ext, version, err)
		}
		if !valid && c.may(tenant) && code != codes.InvalidArgument {
			t.Fatalf("invalid Invoke %v: %v, want InvalidArgument", req, err)
		}
	})
}

func FuzzUnitAPIListScopes(f *testing.F) {
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id)
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant string) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "ListScopes", &scopedv1.ListScopesRequest{Tenant: tenant})
		code := fuzzCode(t, "ListScopes", err, codes.InvalidArgument, codes.PermissionDenied)
		fuzzListAuth(t, "ListScopes", c, tenant, code)
		fx.unchanged(t, "ListScopes", before)
		if err != nil {
			return
		}
		want := 0
		for _, e := range fuzzExts {
			if c.may(e.tenant) && (tenant == "" || tenant == e.tenant) {
				want++
			}
		}
		scopes := resp.(*scopedv1.ListScopesResponse).GetScopes()
		for _, sc := range scopes {
			if !c.may(sc.GetTenant()) || tenant != "" && sc.GetTenant() != tenant || !strings.HasPrefix(sc.GetKey(), sc.GetTenant()+".") {
				t.Fatalf("ListScopes(%q) by %s lists %s", tenant, c.name, sc.GetKey())
			}
		}
		if len(scopes) != want {
			t.Fatalf("ListScopes(%q) by %s lists %d scopes, want %d", tenant, c.name, len(scopes), want)
		}
	})
}

func FuzzUnitAPIInspectScope(f *testing.F) {
	for who := range len(fuzzCallers) {
		for _, e := range fuzzExts {
			f.Add(uint8(who), e.tenant+"."+e.env)
		}
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id)
		f.Add(uint8(i), "acme."+id)
		f.Add(uint8(0), id+".production")
	}
	f.Add(uint8(0), "acme.production.x")
	f.Add(uint8(0), "acme..production")
	f.Add(uint8(0), ".production")
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, key string) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "InspectScope", &scopedv1.InspectScopeRequest{Scope: key})
		code := fuzzCode(t, "InspectScope", err, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied)
		fx.unchanged(t, "InspectScope", before)
		tenant, _, _ := strings.Cut(key, ".")
		live := fx.live[key]
		switch {
		case !c.authed && code != codes.PermissionDenied:
			t.Fatalf("InspectScope(%q) by %s: %v", key, c.name, err)
		case code == codes.OK && (!live || !c.may(tenant) || resp.(*scopedv1.Scope).GetKey() != key):
			t.Fatalf("InspectScope(%q) by %s: %v", key, c.name, resp)
		case live && c.may(tenant) && code != codes.OK:
			t.Fatalf("InspectScope(%q) by %s: %v", key, c.name, err)
		case live && !c.may(tenant) && code != codes.PermissionDenied:
			t.Fatalf("InspectScope(%q) by %s: %v, want PermissionDenied", key, c.name, err)
		case code == codes.NotFound && ident.CheckDotted("scope", key) != nil:
			t.Fatalf("InspectScope(%q): NotFound for an invalid key", key)
		}
	})
}

func FuzzUnitAPILogs(f *testing.F) {
	for who := range len(fuzzCallers) {
		f.Add(uint8(who), "", "", "", int32(0), false)
		f.Add(uint8(who), "acme", "acme.production", "hook", int32(2), true)
		f.Add(uint8(who), "", "initech.production", "", int32(-1), false)
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, "", "", int32(0), false)
		f.Add(uint8(0), "", id, "", int32(1), true)
		f.Add(uint8(0), "", "acme."+id, id, int32(0), false)
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant, scope, ext string, tail int32, follow bool) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		lines, err := fx.logs(c, &scopedv1.LogsRequest{Tenant: tenant, Scope: scope, Extension: ext, Tail: tail, Follow: follow})
		code := fuzzCode(t, "Logs", err, codes.InvalidArgument, codes.PermissionDenied)
		fx.unchanged(t, "Logs", before)
		if n := fx.s.Followers(); n != 0 {
			t.Fatalf("Logs left %d followers", n)
		}
		if !c.authed && code != codes.PermissionDenied {
			t.Fatalf("Logs by %s: %v", c.name, err)
		}
		if err != nil {
			if len(lines) > 0 {
				t.Fatalf("Logs sent %d lines, then %v", len(lines), err)
			}
			return
		}
		st, _, _ := strings.Cut(scope, ".")
		if tenant != "" && !c.may(tenant) || scope != "" && !c.may(st) {
			t.Fatalf("Logs(%q, %q) by %s: allowed", tenant, scope, c.name)
		}
		want := 0
		for _, e := range fuzzExts {
			if c.may(e.tenant) && (tenant == "" || tenant == e.tenant) && (scope == "" || scope == e.tenant+"."+e.env) &&
				(ext == "" || ext == e.name) {
				want += 3
			}
		}
		if tail > 0 {
			want = min(want, int(tail))
		}
		for _, l := range lines {
			lt, _, _ := strings.Cut(l.GetScope(), ".")
			if !c.may(lt) || tenant != "" && lt != tenant || scope != "" && l.GetScope() != scope || ext != "" && l.GetExtension() != ext {
				t.Fatalf("Logs(%q, %q, %q) by %s sent a line of %s/%s", tenant, scope, ext, c.name, l.GetScope(), l.GetExtension())
			}
		}
		if len(lines) != want {
			t.Fatalf("Logs(%q, %q, %q, tail %d) by %s sent %d lines, want %d", tenant, scope, ext, tail, c.name, len(lines), want)
		}
	})
}

func FuzzUnitAPISetTenant(f *testing.F) {
	for who := range len(fuzzCallers) {
		f.Add(uint8(who), "acme", "suspended", "", false)
		f.Add(uint8(who), "globex", "standard", "198.51.100.0/24:443\n10.0.0.1", true)
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, "standard", "", false)
		f.Add(uint8(0), "acme", id, "", false)
		f.Add(uint8(3), "acme", "limited", id, true)
	}
	for _, a := range []string{"", "0.0.0.0/0", "::/0", "203.0.113.7:1-65535", "203.0.113.7:0", "203.0.113.7:70000",
		"203.0.113.0/33", "example.com:443", "\n", strings.Repeat("10.0.0.1\n", 300),
		// Ports with leading zeros made a rule of any length, stored as
		// given: tenants.json past what the daemon reads back at start.
		"10.0.0.1:" + strings.Repeat("0", 300) + "443"} {
		f.Add(uint8(0), "acme", "standard", a, true)
	}
	fx := newFuzzAPI(f, false)
	f.Fuzz(func(t *testing.T, who uint8, tenant, tier, allow string, setAllow bool) {
		c := fuzzCallerOf(who)
		req := &scopedv1.SetTenantRequest{Tenant: tenant, Tier: tier, SetEgressAllow: setAllow}
		if allow != "" {
			req.EgressAllow = strings.Split(allow, "\n")
		}
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "SetTenant", req)
		code := fuzzCode(t, "SetTenant", err, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied)
		switch {
		case c.may(tenant) && !c.admin:
			if code != codes.PermissionDenied {
				t.Fatalf("SetTenant by %s (not an admin): %v", c.name, err)
			}
		default:
			fuzzAuth(t, "SetTenant", c, tenant, code)
		}
		if _, ok := fx.s.Config().Tiers[tier]; c.may(tenant) && c.admin && !ok && code != codes.NotFound && code != codes.InvalidArgument {
			t.Fatalf("SetTenant to tier %q: %v", tier, err)
		}
		if err != nil {
			fx.unchanged(t, "a refused SetTenant", before)
			return
		}
		defer fx.restore(t)
		got := resp.(*scopedv1.Tenant)
		if got.GetTenant() != tenant || got.GetTier() != tier || !got.GetAssigned() {
			t.Fatalf("SetTenant(%q, %q) = %v", tenant, tier, got)
		}
		if setAllow && !slices.Equal(got.GetEgressAllow(), req.EgressAllow) {
			t.Fatalf("SetTenant set the allow-list %q, answered %q", req.EgressAllow, got.GetEgressAllow())
		}
		// What it stores is bounded: at most maxAllowRules rules of
		// netns.MaxRuleLen bytes.
		for _, r := range got.GetEgressAllow() {
			if len(r) > netns.MaxRuleLen {
				t.Fatalf("SetTenant stored a rule of %d bytes", len(r))
			}
		}
		for _, p := range changed(before, fx.snapshot(t)) {
			if p != "state" && p != filepath.Join("state", tenantsFile) {
				t.Fatalf("SetTenant changed %s", p)
			}
		}
	})
}

func FuzzUnitAPIListTenants(f *testing.F) {
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id)
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant string) {
		c := fuzzCallerOf(who)
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "ListTenants", &scopedv1.ListTenantsRequest{Tenant: tenant})
		code := fuzzCode(t, "ListTenants", err, codes.InvalidArgument, codes.PermissionDenied)
		fuzzListAuth(t, "ListTenants", c, tenant, code)
		fx.unchanged(t, "ListTenants", before)
		if err != nil {
			return
		}
		tenants := resp.(*scopedv1.ListTenantsResponse).GetTenants()
		for _, tn := range tenants {
			if !c.may(tn.GetTenant()) || tenant != "" && tn.GetTenant() != tenant {
				t.Fatalf("ListTenants(%q) by %s lists %s", tenant, c.name, tn.GetTenant())
			}
		}
		if tenant != "" && len(tenants) != 1 {
			t.Fatalf("ListTenants(%q) lists %d tenants", tenant, len(tenants))
		}
	})
}

func FuzzUnitAPIListEvents(f *testing.F) {
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, false, int64(0), int32(0))
	}
	for _, ts := range [][2]int64{{0, 0}, {-1, 0}, {1 << 40, 0}, {-62135596801, 0}, {253402300800, 0}, {0, -1}, {0, 1e9}, {1767225600, 5}} {
		f.Add(uint8(0), "", true, ts[0], int32(ts[1]))
	}
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant string, hasSince bool, secs int64, nanos int32) {
		c := fuzzCallerOf(who)
		req := &scopedv1.ListEventsRequest{Tenant: tenant}
		if hasSince {
			req.Since = &timestamppb.Timestamp{Seconds: secs, Nanos: nanos}
		}
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "ListEvents", req)
		code := fuzzCode(t, "ListEvents", err, codes.InvalidArgument, codes.PermissionDenied)
		if c.admin && c.authed {
			// An admin client sees every tenant's events.
			all := c
			all.all = true
			fuzzListAuth(t, "ListEvents", all, tenant, code)
		} else {
			fuzzListAuth(t, "ListEvents", c, tenant, code)
		}
		fx.unchanged(t, "ListEvents", before)
		if err != nil {
			return
		}
		// The fixture runs no controller.
		if got := resp.(*scopedv1.ListEventsResponse); got.GetControllerEnabled() || len(got.GetEvents()) > 0 {
			t.Fatalf("ListEvents = %v", got)
		}
	})
}

func FuzzUnitAPIGetUsage(f *testing.F) {
	day := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC).Unix()
	for who := range len(fuzzCallers) {
		for _, e := range fuzzExts {
			f.Add(uint8(who), e.tenant, "invocations", "", true, day, int32(0), true, day+86400, int32(0), false)
		}
	}
	for i, by := range []string{"", "scope", "environment", "extension", "user", "tenant", "'; drop table usage; --"} {
		f.Add(uint8(i), "acme", "", by, true, day, int32(0), true, day+86400, int32(0), i%2 == 0)
	}
	for _, m := range []string{"", "cpu_seconds", "invocations", "bogus", "a\x00"} {
		f.Add(uint8(0), "acme", m, "", true, day, int32(0), true, day+86400, int32(0), true)
	}
	for _, r := range [][2]int64{{0, 0}, {day, day}, {day + 1, day}, {-1, 0}, {-62135596801, day}, {day, 253402300800}, {0, 1}, {1 << 40, 1 << 41}} {
		f.Add(uint8(0), "acme", "", "", true, r[0], int32(0), true, r[1], int32(0), false)
	}
	for i, id := range fuzzIDs {
		f.Add(uint8(i), id, "", "", true, day, int32(0), true, day+1, int32(0), false)
	}
	f.Add(uint8(0), "acme", "", "", false, day, int32(0), true, day, int32(0), false)
	f.Add(uint8(0), "acme", "", "", true, day, int32(-5), true, day, int32(1e9), false)
	fx := newFuzzAPI(f, true)
	f.Fuzz(func(t *testing.T, who uint8, tenant, meter, by string, hasFrom bool, fromS int64, fromN int32,
		hasTo bool, toS int64, toN int32, perWindow bool) {
		c := fuzzCallerOf(who)
		req := &scopedv1.GetUsageRequest{Tenant: tenant, Meter: meter, By: by, PerWindow: perWindow}
		if hasFrom {
			req.From = &timestamppb.Timestamp{Seconds: fromS, Nanos: fromN}
		}
		if hasTo {
			req.To = &timestamppb.Timestamp{Seconds: toS, Nanos: toN}
		}
		before := fx.snapshot(t)
		resp, err := fx.unary(c, "GetUsage", req)
		code := fuzzCode(t, "GetUsage", err, codes.InvalidArgument, codes.PermissionDenied)
		fuzzAuth(t, "GetUsage", c, tenant, code)
		fx.unchanged(t, "GetUsage", before)
		if err != nil {
			return
		}
		if !hasFrom || !hasTo {
			t.Fatalf("GetUsage without from or to answered")
		}
		for _, r := range resp.(*scopedv1.GetUsageResponse).GetRows() {
			if r.GetTenant() != tenant || meter != "" && r.GetMeter() != meter {
				t.Fatalf("GetUsage(%q, %q) answered a row of %s/%s", tenant, meter, r.GetTenant(), r.GetMeter())
			}
		}
	})
}

// FuzzUnitAPIWire: any RPC, its request decoded from fuzzed protobuf
// bytes, as the server decodes what a client sends.
func FuzzUnitAPIWire(f *testing.F) {
	methods := []string{"Logs"}
	for _, m := range scopedv1.Scoped_ServiceDesc.Methods {
		methods = append(methods, m.MethodName)
	}
	slices.Sort(methods)
	day := time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)
	bundle := &scopedv1.Bundle{}
	for _, f := range unitBundle("w") {
		bundle.Files = append(bundle.Files, &scopedv1.File{Path: f.Path, Mode: f.Mode, Content: f.Content})
	}
	seeds := map[string][]proto.Message{
		"Deploy": {&scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "fresh", Bundle: bundle},
			&scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "../x", Bundle: bundle}},
		"RemoveExtension": {&scopedv1.RemoveExtensionRequest{Tenant: "acme", Environment: "production", Name: "hook"}},
		"ListExtensions":  {&scopedv1.ListExtensionsRequest{}, &scopedv1.ListExtensionsRequest{Tenant: "acme"}},
		"Invoke": {&scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "hook", Payload: []byte("hi"),
			Metadata: map[string]string{"k": "v"}, Timeout: durationpb.New(time.Second)}},
		"ListScopes":   {&scopedv1.ListScopesRequest{Tenant: "acme"}},
		"InspectScope": {&scopedv1.InspectScopeRequest{Scope: "acme.production"}},
		"Logs":         {&scopedv1.LogsRequest{Tenant: "acme", Scope: "acme.production", Extension: "hook", Tail: 2, Follow: true}},
		"SetTenant":    {&scopedv1.SetTenantRequest{Tenant: "acme", Tier: "standard", EgressAllow: []string{"203.0.113.0/24:443"}, SetEgressAllow: true}},
		"ListTenants":  {&scopedv1.ListTenantsRequest{}, &scopedv1.ListTenantsRequest{Tenant: "globex"}},
		"ListEvents":   {&scopedv1.ListEventsRequest{Since: timestamppb.New(day)}},
		"GetUsage": {&scopedv1.GetUsageRequest{Tenant: "acme", Meter: "invocations", From: timestamppb.New(day),
			To: timestamppb.New(day.Add(24 * time.Hour)), By: "scope", PerWindow: true}},
		"GetStatus": {&scopedv1.GetStatusRequest{}},
	}
	for i, m := range methods {
		if len(seeds[m]) == 0 {
			f.Fatalf("no seed for %s", m)
		}
		for _, req := range seeds[m] {
			b, err := proto.Marshal(req)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(uint8(i), uint8(0), b)
			f.Add(uint8(i), uint8(1), b)
		}
	}
	// Without live scopes: SetTenant applies tiers to them.
	fx := newFuzzAPI(f, false)
	f.Fuzz(func(t *testing.T, method, who uint8, wire []byte) {
		c := fuzzCallerOf(who)
		m := methods[int(method)%len(methods)]
		var decErr error
		dec := func(req any) error {
			decErr = proto.Unmarshal(wire, req.(proto.Message))
			return decErr
		}
		before := fx.snapshot(t)
		var err error
		if m == "Logs" {
			_, err = fx.logsDec(c, dec)
		} else {
			_, err = fx.unaryDec(c, m, dec)
		}
		if decErr != nil {
			return // grpc-go answers that itself
		}
		code := fuzzCode(t, m, err, codes.InvalidArgument, codes.NotFound, codes.PermissionDenied,
			codes.FailedPrecondition, codes.ResourceExhausted, codes.Unavailable)
		if !c.authed && code != codes.PermissionDenied {
			t.Fatalf("%s by %s (not a client): %v", m, c.name, err)
		}
		if err != nil {
			fx.unchanged(t, "a refused "+m, before)
			return
		}
		fx.restore(t)
	})
}
