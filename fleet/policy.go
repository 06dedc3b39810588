package fleet

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/scoped-io/scoped/fleet/record"
)

// PolicyDiff names how policy b differs from the fleet's, a ("" when they
// agree). Isolation fields and placement labels compare as sets.
func PolicyDiff(a, b record.Policy) string {
	var diffs []string
	if ia, ib := sortedSet(a.Isolation), sortedSet(b.Isolation); !slices.Equal(ia, ib) {
		diffs = append(diffs, fmt.Sprintf("isolation by %v, this node's by %v", ia, ib))
	}
	tiers := map[string]bool{}
	for t := range a.Placement {
		tiers[t] = true
	}
	for t := range b.Placement {
		tiers[t] = true
	}
	for _, t := range slices.Sorted(maps.Keys(tiers)) {
		if la, lb := sortedSet(a.Placement[t]), sortedSet(b.Placement[t]); !slices.Equal(la, lb) {
			diffs = append(diffs, fmt.Sprintf("tier %s placed on %v, this node's on %v", t, la, lb))
		}
	}
	return strings.Join(diffs, "; ")
}

func sortedSet(s []string) []string {
	s = slices.Clone(s)
	slices.Sort(s)
	return slices.Compact(s)
}
