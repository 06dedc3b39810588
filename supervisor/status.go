package supervisor

import (
	"slices"
	"strings"
	"time"

	"github.com/scoped-io/scoped/fleet/record"
)

// StatusInfo is the daemon's state, for operators (GetStatus).
type StatusInfo struct {
	Scopes int          // live scopes
	Fleet  *FleetStatus // nil: a single host
}

// FleetStatus is the fleet as this node sees it.
type FleetStatus struct {
	Node string // [fleet] node
	// Degraded is true while etcd is unreachable (since DegradedSince):
	// the node serves with its last state and refuses fleet writes.
	Degraded      bool
	DegradedSince time.Time
	Members       []record.Node // the live nodes of the state, by name
	Revision      int64         // the etcd revision the state is at
	SplitNodes    int           // the nodes the tiers' limits are split between (0: not joined)
}

// Status reports the daemon's state.
func (s *Supervisor) Status() StatusInfo {
	st := StatusInfo{Scopes: s.scopes.len()}
	if s.fleet != nil {
		st.Fleet = s.fleet.status()
	}
	return st
}

// status is the fleet as this node sees it; outside Start–Stop only its
// name.
func (f *fleetLink) status() *FleetStatus {
	st := &FleetStatus{Node: f.conf().Fleet.Node}
	if !f.live.Load() {
		return st
	}
	st.DegradedSince, st.Degraded = f.state.Degraded()
	st.Revision = f.state.Revision()
	for _, n := range f.state.Nodes() {
		st.Members = append(st.Members, n)
	}
	slices.SortFunc(st.Members, func(a, b record.Node) int { return strings.Compare(a.Name, b.Name) })
	st.SplitNodes = int(f.splitN.Load())
	return st
}
