package api

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// TestUnitGetStatus: root and admin clients only; a single host has no
// fleet status.
func TestUnitGetStatus(t *testing.T) {
	api := unitAPI()
	tenantCtx := context.WithValue(context.Background(), callerKey{}, caller{name: "app", tenants: map[string]bool{"acme": true}})
	if _, err := api.GetStatus(tenantCtx, &scopedv1.GetStatusRequest{}); !errors.Is(err, supervisor.ErrPermission) {
		t.Errorf("a tenant's client: %v, want supervisor.ErrPermission", err)
	}
	allCtx := context.WithValue(context.Background(), callerKey{}, caller{name: "all", all: true})
	if _, err := api.GetStatus(allCtx, &scopedv1.GetStatusRequest{}); !errors.Is(err, supervisor.ErrPermission) {
		t.Errorf("a client of every tenant, not admin: %v, want supervisor.ErrPermission", err)
	}
	adminCtx := context.WithValue(context.Background(), callerKey{}, caller{name: "ops", admin: true, tenants: map[string]bool{}})
	st, err := api.GetStatus(adminCtx, &scopedv1.GetStatusRequest{})
	if err != nil || st.GetFleet() != nil || st.GetScopes() != 0 {
		t.Errorf("admin on a single host: %v, %v", st, err)
	}
}

// TestUnitStatusPB: a degraded node's view, with a record's figures
// beyond int32 clamped.
func TestUnitStatusPB(t *testing.T) {
	since := time.Date(2026, 12, 6, 21, 0, 0, 0, time.UTC)
	st := statusPB(supervisor.StatusInfo{Scopes: 3, Fleet: &supervisor.FleetStatus{
		Node: "node-a", Degraded: true, DegradedSince: since, Revision: 42, SplitNodes: 2,
		Members: []record.Node{
			{Name: "node-a", Addr: "10.0.0.1:7443", Labels: []string{"gpu"}, Slots: 1024, CPUs: 8, Scopes: 3, Busy: 1.5},
			{Name: "node-b", Addr: "10.0.0.2:7443", Slots: 1 << 40},
		},
	}})
	f := st.GetFleet()
	if st.GetScopes() != 3 || f.GetNode() != "node-a" || !f.GetDegraded() || !f.GetDegradedSince().AsTime().Equal(since) ||
		f.GetRevision() != 42 || f.GetSplitNodes() != 2 || len(f.GetMembers()) != 2 {
		t.Fatalf("status %v", st)
	}
	a, b := f.GetMembers()[0], f.GetMembers()[1]
	if a.GetName() != "node-a" || a.GetAddr() != "10.0.0.1:7443" || len(a.GetLabels()) != 1 || a.GetSlots() != 1024 ||
		a.GetCpus() != 8 || a.GetScopes() != 3 || a.GetBusyCpus() != 1.5 {
		t.Errorf("member %v", a)
	}
	if b.GetSlots() != 1<<31-1 {
		t.Errorf("slots beyond int32: %d", b.GetSlots())
	}
	if ok := statusPB(supervisor.StatusInfo{Fleet: &supervisor.FleetStatus{Node: "n"}}).GetFleet(); ok.GetDegradedSince() != nil {
		t.Errorf("not degraded, with a since: %v", ok)
	}
}
