package e2e

import (
	"context"
	"fmt"
	"slices"
	"strings"
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
