package supervisor

import (
	"time"

	"github.com/scoped-io/scoped/fleet"
	"github.com/scoped-io/scoped/fleet/record"
)

// Fleet-wide limits (issue 15): a tier's spend caps hold across the nodes
// of a fleet, and its rate, burst and max_concurrent are the fleet's,
// split between the live nodes. The fleet component plugs in with
// useFleetLimits (spend) and setFleetNodes (the split); a single host
// calls neither and keeps its limits as they are.

// spendPublisher publishes this node's spend totals of a tenant to the
// fleet (fleet.Member's PublishSpend: queued, never waiting for etcd).
type spendPublisher interface {
	PublishSpend(tenant string, s record.Spend) error
}

// fleetSpend gives the other nodes' published totals of a tenant's meter
// in the UTC day and month of now, from memory (this node's own record
// left out: it adds its own ledger's sums).
type fleetSpend interface {
	SpendTotals(tenant, meter string, now time.Time) (day, month float64)
}

// othersSpend is a fleet.State's totals without node's own record.
type othersSpend struct {
	st   *fleet.State
	node string
}

func (o othersSpend) SpendTotals(tenant, meter string, now time.Time) (day, month float64) {
	return o.st.SpendTotalsExcept(tenant, meter, o.node, now)
}

// fleetSpendOf is the fleetSpend of st as seen by the node named node.
func fleetSpendOf(st *fleet.State, node string) fleetSpend { return othersSpend{st: st, node: node} }

// fleetLimits is what the spend caps use of the fleet.
type fleetLimits struct {
	pub    spendPublisher
	others fleetSpend
}

// useFleetLimits makes the spend caps fleet-wide: at every flush the
// meter publishes its tenants' day and month totals of their capped
// meters through pub, and a cap is checked against this node's ledger
// plus others. Either may be nil (nothing published, or nothing added);
// both nil is a single host again. A no-op while metering is off.
func (m *meter) useFleetLimits(pub spendPublisher, others fleetSpend) {
	if m.caps == nil {
		return
	}
	if pub == nil && others == nil {
		m.caps.fleet.Store(nil)
		return
	}
	m.caps.fleet.Store(&fleetLimits{pub: pub, others: others})
}

// setFleetNodes splits the tiers' rate, burst and max_concurrent between
// the live nodes from the next admission on: n nodes, or for a tier named
// in placed (one whose placement labels only some nodes carry), the live
// nodes carrying them. A count below 2 is a single host's split: the whole
// figures. The fleet component calls it when the membership it watches
// changes; admissions read it from memory (one atomic load).
func (g *gate) setFleetNodes(n int, placed map[string]int) {
	s := &fleetSplit{nodes: int64(max(n, 1)), tiers: make(map[string]int64, len(placed))}
	for tier, m := range placed {
		s.tiers[tier] = int64(max(m, 1))
	}
	if s.nodes == 1 && len(s.tiers) == 0 {
		s = nil
	}
	g.nodes.Store(s)
}

// fleetSplitOf is what setFleetNodes takes from a fleet's live nodes
// (fleet.State's Nodes) and policy: how many nodes, and per placed tier
// how many carry its labels.
func fleetSplitOf(nodes map[string]record.Node, pol record.Policy) (n int, placed map[string]int) {
	placed = make(map[string]int, len(pol.Placement))
	for tier, labels := range pol.Placement {
		placed[tier] = 0
		for _, nd := range nodes {
			if nd.HasLabels(labels) {
				placed[tier]++
			}
		}
	}
	return len(nodes), placed
}
