package api

import (
	"context"
	"fmt"

	"google.golang.org/protobuf/types/known/timestamppb"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	"github.com/scoped-io/scoped/supervisor"
)

// GetStatus reports the daemon's state: its live scopes and, on a fleet
// node, the fleet as the node sees it (degraded or not, its members).
// Root and clients with admin = true only: the members name the fleet's
// hosts.
func (a *API) GetStatus(ctx context.Context, _ *scopedv1.GetStatusRequest) (*scopedv1.Status, error) {
	if c := callerOf(ctx); !c.admin {
		return nil, fmt.Errorf("%w: %s may not read the daemon's status (only root and clients with admin = true)",
			supervisor.ErrPermission, c.name)
	}
	return statusPB(a.s.Status()), nil
}

// statusPB is the API's form of st.
func statusPB(st supervisor.StatusInfo) *scopedv1.Status {
	out := &scopedv1.Status{Scopes: int32of(st.Scopes)}
	f := st.Fleet
	if f == nil {
		return out
	}
	out.Fleet = &scopedv1.FleetStatus{Node: f.Node, Degraded: f.Degraded, Revision: f.Revision, SplitNodes: int32of(f.SplitNodes)}
	if f.Degraded {
		out.Fleet.DegradedSince = timestamppb.New(f.DegradedSince)
	}
	for _, n := range f.Members {
		out.Fleet.Members = append(out.Fleet.Members, &scopedv1.FleetNode{
			Name: n.Name, Addr: n.Addr, Labels: n.Labels, Slots: int32of(n.Slots), Cpus: int32of(n.CPUs),
			Scopes: int32of(n.Scopes), BusyCpus: n.Busy,
		})
	}
	return out
}

// int32of is n within int32 (a node's record comes from etcd: another
// host's figures).
func int32of(n int) int32 { return int32(min(max(n, -1<<31), 1<<31-1)) }
