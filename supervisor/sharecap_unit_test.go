package supervisor

import "testing"

// TestUnitTenantCap: the fair-share rule's cap of a tenant, as the
// registry keeps it for nodes made again: never above the tier's CPU max,
// none once lifted.
func TestUnitTenantCap(t *testing.T) {
	var r registry
	if got := r.tenantCPUMaxLocked("acme", -1); got != -1 {
		t.Errorf("no cap, no tier max: %g, want -1", got)
	}
	r.setTenantCapLocked("acme", 0.8)
	for _, c := range []struct{ base, want float64 }{{-1, 0.8}, {2, 0.8}, {0.5, 0.5}} {
		if got := r.tenantCPUMaxLocked("acme", c.base); got != c.want {
			t.Errorf("cap 0.8, tier max %g: %g, want %g", c.base, got, c.want)
		}
	}
	if got := r.tenantCPUMaxLocked("globex", 2); got != 2 {
		t.Errorf("another tenant: %g", got)
	}
	r.setTenantCapLocked("acme", 0)
	if got := r.tenantCPUMaxLocked("acme", 2); got != 2 || len(r.tenantCaps) != 0 {
		t.Errorf("lifted: %g, caps %v", got, r.tenantCaps)
	}
}
