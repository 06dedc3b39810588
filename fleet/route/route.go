// Package route ranks a fleet's nodes for a scope: rendezvous
// (highest-random-weight) hashing of the node's name and the scope key, so
// that the same scope lands on the same warm node and a node's loss moves
// only its own scopes, with bounded load, so that no node takes much more
// than its share. Routing is for warmth, not correctness: any node serves
// any scope it is sent.
package route

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/scoped-io/scoped/fleet/record"
)

// ErrNoNode is returned when no node carries a placement's labels.
var ErrNoNode = errors.New("no live node")

// Bound is how far above the average a node's live scopes may go before
// the node ranks after the others: 1.25, as "consistent hashing with
// bounded loads" (Mirrokni, Thorup, Zadimoghaddam) counts it.
const Bound = 1.25

// Rank returns the nodes carrying every label of placement, best first,
// for the scope key. The order is rendezvous hashing of (node name, key),
// except that a node over its bound ranks after every node within it: a
// node is over when one more scope would take its live scopes above
// ceil(Bound × (the candidates' live scopes + 1) / candidates), or when it
// has no free scope slot left. Over nodes stay in the list, as the last
// fallbacks. Ties (equal names) keep a fixed order. Without a candidate
// Rank returns an error wrapping ErrNoNode that names the placement.
// nodes is not modified.
func Rank(key string, nodes []record.Node, placement []string) ([]record.Node, error) {
	type cand struct {
		n     record.Node
		score uint64
		over  bool
	}
	cs := make([]cand, 0, len(nodes))
	total := 0
	for _, n := range nodes {
		if !n.HasLabels(placement) {
			continue
		}
		cs = append(cs, cand{n: n, score: Score(n.Name, key)})
		total += max(n.Scopes, 0)
	}
	if len(cs) == 0 {
		if len(placement) == 0 {
			return nil, fmt.Errorf("%w in the fleet", ErrNoNode)
		}
		return nil, fmt.Errorf("%w carries placement [%s]", ErrNoNode, strings.Join(placement, ", "))
	}
	limit := math.Ceil(Bound * float64(total+1) / float64(len(cs)))
	for i := range cs {
		n := &cs[i].n
		cs[i].over = float64(n.Scopes+1) > limit || (n.Slots > 0 && n.Scopes >= n.Slots)
	}
	slices.SortStableFunc(cs, func(a, b cand) int {
		switch {
		case a.over != b.over:
			if a.over {
				return 1
			}
			return -1
		case a.score != b.score:
			if a.score > b.score {
				return -1
			}
			return 1
		}
		return strings.Compare(a.n.Name, b.n.Name)
	})
	out := make([]record.Node, len(cs))
	for i, c := range cs {
		out[i] = c.n
		out[i].Labels = slices.Clone(c.n.Labels)
	}
	return out, nil
}

// Score is the rendezvous weight of node for key: a 64-bit hash of both
// (FNV-1a, then murmur3's finaliser so that every input bit moves every
// output bit). The separator keeps ("ab", "c") and ("a", "bc") apart.
func Score(node, key string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(node); i++ {
		h = (h ^ uint64(node[i])) * prime
	}
	h = (h ^ 0xff) * prime // not a byte of a valid string's UTF-8
	for i := 0; i < len(key); i++ {
		h = (h ^ uint64(key[i])) * prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}
