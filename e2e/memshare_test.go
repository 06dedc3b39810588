package e2e

import (
	"context"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const memshareTOML = `
[tenants]
memory_max = 1073741824
[tiers.gold]
memory_low = 67108864
memory_high = 134217728
memory_max = 268435456
[tiers.silver]
memory_low = 33554432
`

// TestTierMemoryShares: the daemon gives each tenant node its tier's
// memory_low and memory_high, and (on cgroup v2) each tier node and the
// root the sum of their live tenants' protections, so that the kernel's
// protection reaches the tenants; a reload and a tier change move them. On
// v1 memory_low is the tenant node's soft limit and the ancestors keep
// none. [tenants] memory_max caps the root. (That the kernel then reclaims in this order is cgroups'
// TestMemoryShares.)
func TestTierMemoryShares(t *testing.T) {
	d := startDaemon(t, options{extra: memshareTOML})
	c := d.client()
	ctx := context.Background()
	tiers := map[string]string{"acme": "gold", "initech": "gold", "globex": "silver"}
	for tenant, tier := range tiers {
		deploy(t, c, tenant, "production", "spin", bins.spin)
		if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: tenant, Tier: tier}); err != nil {
			t.Fatal(err)
		}
		if _, err := invokeSpin(c, tenant, 1, 0); err != nil {
			t.Fatalf("first invocation of %s: %v", tenant, err)
		}
	}
	const mib = 1 << 20
	v2 := cgroups.HostMode() == cgroups.V2
	// unlimited is how v1 reads "no soft limit".
	unlimited := strconv.FormatInt(int64(^uint64(0)>>1)&^(int64(os.Getpagesize())-1), 10)
	low := func(rel string) string {
		t.Helper()
		if v2 {
			return cgroupValue(t, d, rel, "memory.low", "", "")
		}
		return cgroupValue(t, d, rel, "", "memory", "memory.soft_limit_in_bytes")
	}
	want := func(what string, nodes map[string]int64) {
		t.Helper()
		waitFor(t, 10*time.Second, what, func() bool {
			ok := true
			for rel, bytes := range nodes {
				w := strconv.FormatInt(bytes, 10)
				if !v2 && (rel == "" || !strings.Contains(rel, "/")) {
					w = unlimited // no soft limit above the tenants
				}
				if got := low(rel); got != w {
					t.Logf("%s: memory protection of %q = %s, want %s", what, rel, got, w)
					ok = false
				}
			}
			return ok
		})
	}
	want("the tiers' protections", map[string]int64{
		"gold/acme": 64 * mib, "gold/initech": 64 * mib, "silver/globex": 32 * mib,
		"gold": 128 * mib, "silver": 32 * mib, "": 160 * mib,
	})
	if got := cgroupValue(t, d, "", "memory.max", "memory", "memory.limit_in_bytes"); got != strconv.Itoa(1024*mib) {
		t.Errorf("the root's memory limit = %s, want [tenants] memory_max 1 GiB", got)
	}
	if v2 {
		if got := cgroupValue(t, d, "gold/acme", "memory.high", "", ""); got != strconv.Itoa(128*mib) {
			t.Errorf("gold tenant memory.high = %s, want 128 MiB", got)
		}
		if got := cgroupValue(t, d, "silver/globex", "memory.high", "", ""); got != "max" {
			t.Errorf("silver tenant memory.high = %s, want max", got)
		}
	}

	// A reload changes the live tenants' protections.
	cfg, err := os.ReadFile(d.config)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(d.config, []byte(strings.NewReplacer("memory_low = 33554432", "memory_low = 50331648", "memory_max = 1073741824", "memory_max = 0").Replace(string(cfg))), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	want("the reloaded protection", map[string]int64{"silver/globex": 48 * mib, "silver": 48 * mib, "": 176 * mib})
	if got := cgroupValue(t, d, "", "memory.max", "memory", "memory.limit_in_bytes"); got != "max" && got != unlimited {
		t.Errorf("the root's memory limit after a reload without it = %s, want none", got)
	}

	// A tenant moving to another tier takes its protection along.
	if _, err := c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: "globex", Tier: "gold"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "globex's scope to start in gold", func() bool {
		_, err := invokeSpin(c, "globex", 1, 0)
		s, ierr := c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: "globex.production"})
		return err == nil && ierr == nil && s.GetTier() == "gold"
	})
	want("the moved tenant's protection", map[string]int64{"gold/globex": 64 * mib, "gold": 192 * mib, "silver": 0, "": 192 * mib})
}
