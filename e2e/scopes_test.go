package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

func invokeAs(c *client.Client, tenant, user string) (*scopedv1.InvokeResponse, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: "production", User: user, Extension: "whoami"})
}

func liveScopes(t *testing.T, c *client.Client, tenant string) []string {
	t.Helper()
	r, err := c.ListScopes(context.Background(), &scopedv1.ListScopesRequest{Tenant: tenant})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, s := range r.GetScopes() {
		keys = append(keys, s.GetKey())
	}
	slices.Sort(keys)
	return keys
}

// TestScopeSlots: with 8 scope slots, one tenant opening a scope per user
// takes them all; another tenant's new scope then reclaims the first
// tenant's longest-unused idle scope (a log line and a counter) instead of
// failing; and a tier's max_scopes refuses a tenant's 5th scope with
// RESOURCE_EXHAUSTED and a retry hint.
func TestScopeSlots(t *testing.T) {
	addr := freePort(t)
	d := startDaemon(t, options{isolation: `["environment", "user"]`, metrics: addr, extra: `
[scope]
id_slots = 8
[tiers.capped]
max_scopes = 4
`})
	c := d.client()
	ctx := context.Background()
	for _, tenant := range []string{"acme", "globex", "initech"} {
		deploy(t, c, tenant, "production", "whoami", bins.whoami)
	}
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "initech", Tier: "capped"}); err != nil {
		t.Fatal(err)
	}

	// acme (standard tier, max_scopes 256) takes every slot, in order.
	var want []string
	for i := 1; i <= 8; i++ {
		user := fmt.Sprint("u", i)
		if _, err := invokeAs(c, "acme", user); err != nil {
			t.Fatalf("acme %s: %v", user, err)
		}
		want = append(want, "acme.production."+user)
	}
	if got := liveScopes(t, c, "acme"); !slices.Equal(got, want) {
		t.Fatalf("acme's scopes = %v, want %v", got, want)
	}

	// globex's first scope reclaims acme's longest unused, u1.
	if _, err := invokeAs(c, "globex", "u1"); err != nil {
		t.Fatalf("globex with every slot taken by acme's idle scopes: %v", err)
	}
	if got := liveScopes(t, c, "acme"); slices.Contains(got, "acme.production.u1") || len(got) != 7 {
		t.Errorf("after globex's scope, acme has %v; want u1 reclaimed", got)
	}
	if !strings.Contains(d.logs.String(), "idle scope reclaimed") {
		t.Error("no log line for the reclaim")
	}
	if text := scrape(t, addr); !strings.Contains(text, `scoped_scopes_reclaimed_total{tier="standard"} 1`) {
		t.Errorf("reclaim not counted:\n%s", grepLines(text, "reclaimed"))
	}

	// initech's tier allows 4 scopes: u1..u4 (each reclaiming one of
	// acme's), then the 5th is refused with a hint.
	for i := 1; i <= 4; i++ {
		if _, err := invokeAs(c, "initech", fmt.Sprint("u", i)); err != nil {
			t.Fatalf("initech u%d: %v", i, err)
		}
	}
	_, err := invokeAs(c, "initech", "u5")
	if status.Code(err) != codes.ResourceExhausted || retryHint(err) <= 0 || !strings.Contains(err.Error(), "scope limit") {
		t.Fatalf("initech's 5th scope: %v (hint %s), want RESOURCE_EXHAUSTED scope limit with a retry hint", err, retryHint(err))
	}
	// Its 4 scopes still serve.
	if _, err := invokeAs(c, "initech", "u2"); err != nil {
		t.Errorf("initech u2 again: %v", err)
	}
	if got := liveScopes(t, c, "initech"); len(got) != 4 {
		t.Errorf("initech's scopes = %v", got)
	}
	// acme kept the 3 it used last.
	if got := liveScopes(t, c, "acme"); !slices.Equal(got, []string{"acme.production.u6", "acme.production.u7", "acme.production.u8"}) {
		t.Errorf("acme's scopes = %v, want u6..u8", got)
	}
	// globex still gets a new scope: now initech holds the most, and its
	// longest unused scope (u1; u2 served again) goes.
	if _, err := invokeAs(c, "globex", "u2"); err != nil {
		t.Errorf("globex u2: %v", err)
	}
	if got := liveScopes(t, c, "initech"); !slices.Equal(got, []string{"initech.production.u2", "initech.production.u3", "initech.production.u4"}) {
		t.Errorf("initech's scopes = %v, want u2..u4", got)
	}
	text := scrape(t, addr)
	if !strings.Contains(text, `scoped_admission_refused_total{tier="capped",reason="scopes"} 1`) ||
		!strings.Contains(text, `scoped_scopes_reclaimed_total{tier="standard"} 5`) ||
		!strings.Contains(text, `scoped_scopes_reclaimed_total{tier="capped"} 1`) {
		t.Errorf("counters:\n%s", grepLines(text, "refused", "reclaimed"))
	}
}

// grepLines returns the lines of text containing any of words.
func grepLines(text string, words ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}

// TestKeepVersions: [limits] keep_versions (set by a reload here) prunes
// old versions after a deploy, but not one a live worker runs; that one
// goes once its worker has stopped (idle) and the reaper looks again.
func TestKeepVersions(t *testing.T) {
	// The v1 worker must stay live through the deploys below, however
	// slow the machine: an idle timeout well past them (a deploy took 3 s
	// under emulation, and 10 s let v1's worker go before the fifth).
	d := startDaemon(t, options{poolExtra: `idle_timeout = "20s"`})
	c := d.client()
	ctx := context.Background()
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	newCfg := strings.Replace(string(cfg), "[limits]\n", "[limits]\nkeep_versions = 2\n", 1)
	if newCfg == string(cfg) {
		t.Fatal("test set-up: no [limits] in the config")
	}
	if err := os.WriteFile(d.config, []byte(newCfg), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	reloadBy := time.Now().Add(20 * time.Second)
	for !strings.Contains(d.logs.String(), "configuration reloaded") {
		if strings.Contains(d.logs.String(), "reload failed") || time.Now().After(reloadBy) {
			t.Fatal("the reload did not succeed")
		}
		time.Sleep(20 * time.Millisecond)
	}
	deployN := func(i int) string {
		t.Helper()
		b := bundle(t, bins.whoami)
		b.Files = append(b.Files, &scopedv1.File{Path: "note", Mode: 0o644, Content: []byte(fmt.Sprint("version ", i))})
		r, err := c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: "acme", Environment: "production", Name: "whoami", Bundle: b})
		if err != nil {
			t.Fatalf("deploy %d: %v", i, err)
		}
		return r.GetExtension().GetVersion()
	}
	ext := filepath.Join(d.state, "extensions", "acme", "production", "whoami")
	onDisk := func() []string {
		t.Helper()
		m, _ := filepath.Glob(filepath.Join(ext, "v*"))
		var out []string
		for _, p := range m {
			out = append(out, filepath.Base(p))
		}
		slices.Sort(out)
		return out
	}
	if v := deployN(1); v != "v1" {
		t.Fatalf("first version %s", v)
	}
	if _, err := invoke(c, "acme", "production", "whoami", ""); err != nil { // a worker of v1 now
		t.Fatal(err)
	}
	for i := 2; i <= 5; i++ {
		deployN(i)
	}
	if got, want := onDisk(), []string{"v1", "v4", "v5"}; !slices.Equal(got, want) {
		t.Fatalf("versions after 5 deploys = %v, want %v (v1 runs in a worker)", got, want)
	}
	if _, err := c.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: "acme", Environment: "production", Extension: "whoami", Version: "v2"}); status.Code(err) != codes.NotFound {
		t.Errorf("invoke of pruned v2: %v, want NOT_FOUND", err)
	}
	// The v1 worker stops after idle_timeout; then v1 goes.
	deadline := time.Now().Add(80 * time.Second)
	for slices.Contains(onDisk(), "v1") {
		if time.Now().After(deadline) {
			t.Fatalf("v1 still there after its worker went idle: %v", onDisk())
		}
		time.Sleep(100 * time.Millisecond)
	}
	if got, want := onDisk(), []string{"v4", "v5"}; !slices.Equal(got, want) {
		t.Fatalf("versions = %v, want %v", got, want)
	}
	if !strings.Contains(d.logs.String(), "old extension versions pruned") {
		t.Error("no log line for the pruning")
	}
}
