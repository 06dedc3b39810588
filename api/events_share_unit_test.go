package api

import (
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/supervisor"
)

// TestUnitEventsForTenants: the fair-share rule's events name tenants (no
// scope; the starving tenants as victims): a tenant filter selects them by
// either, and another tenant's name is redacted.
func TestUnitEventsForTenants(t *testing.T) {
	at := time.Unix(1700000000, 0)
	events := []supervisor.ControlEvent{
		{At: at, Kind: "share_capped", Tenant: "globex", Victims: []string{"acme"}, Level: 2,
			Reason: "cpu max 1.00 CPUs: tenant globex used 1.54 CPUs (77%), entitled to 1.00 CPUs (50%); over 2 ticks tenant acme got 0.46 CPUs (23%) of its 1.00 CPUs (50%) and waited 1.50"},
		{At: at, Kind: "share_lifted", Tenant: "initech", Victims: []string{"hooli"}, Reason: "configured cpu max back: no other tenant uses the CPU"},
	}
	all := func(string) bool { return true }
	acme := func(t string) bool { return t == "acme" }
	if got := eventsFor(events, all, all); len(got) != 2 || got[0].GetTenant() != "globex" || got[0].GetScope() != "" ||
		strings.Join(got[0].GetVictims(), ",") != "acme" {
		t.Fatalf("all: %v", got)
	}
	got := eventsFor(events, acme, acme)
	if len(got) != 1 {
		t.Fatalf("acme sees %v, want its starving event only", got)
	}
	e := got[0]
	if e.GetTenant() != "" || e.GetScope() != redacted || strings.Join(e.GetVictims(), ",") != "acme" ||
		strings.Contains(e.GetReason(), "globex") || !strings.Contains(e.GetReason(), "tenant acme got 0.46 CPUs") {
		t.Errorf("acme: %v", e)
	}
	if got := eventsFor(events, func(t string) bool { return t == "initech" }, all); len(got) != 1 || got[0].GetKind() != "share_lifted" {
		t.Errorf("admin, tenant initech: %v", got)
	}
}
