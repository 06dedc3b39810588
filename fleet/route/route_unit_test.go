package route

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/scoped-io/scoped/fleet/record"
)

func nodes(n int) []record.Node {
	var ns []record.Node
	for i := range n {
		ns = append(ns, record.Node{Name: fmt.Sprintf("node-%d", i), Addr: fmt.Sprintf("10.0.0.%d:7443", i+1)})
	}
	return ns
}

func names(ns []record.Node) []string {
	var s []string
	for _, n := range ns {
		s = append(s, n.Name)
	}
	return s
}

func first(t *testing.T, key string, ns []record.Node, placement []string) string {
	t.Helper()
	r, err := Rank(key, ns, placement)
	if err != nil {
		t.Fatal(err)
	}
	return r[0].Name
}

func TestUnitRankStable(t *testing.T) {
	ns := nodes(5)
	rev := slices.Clone(ns)
	slices.Reverse(rev)
	for i := range 200 {
		key := fmt.Sprintf("acme.prod.user%d", i)
		a, _ := Rank(key, ns, nil)
		b, _ := Rank(key, ns, nil)
		c, _ := Rank(key, rev, nil) // the order nodes come in does not matter
		if !slices.Equal(names(a), names(b)) || !slices.Equal(names(a), names(c)) {
			t.Fatalf("%s: %v, then %v, reversed input %v", key, names(a), names(b), names(c))
		}
		if len(a) != 5 {
			t.Fatalf("%s: %d nodes ranked, want 5", key, len(a))
		}
	}
}

// TestUnitRankRemoval: removing one of N nodes moves only that node's keys,
// about 1/N of them.
func TestUnitRankRemoval(t *testing.T) {
	const keys = 10000
	for _, n := range []int{3, 5, 10} {
		ns := nodes(n)
		gone := ns[1].Name
		rest := slices.Delete(slices.Clone(ns), 1, 2)
		moved := 0
		for i := range keys {
			key := fmt.Sprintf("tenant%d.all", i)
			before, after := first(t, key, ns, nil), first(t, key, rest, nil)
			if before != after {
				if before != gone {
					t.Fatalf("N=%d: %s moved from %s to %s, though %s left", n, key, before, after, gone)
				}
				moved++
			} else if before == gone {
				t.Fatalf("N=%d: %s still on the removed node", n, key)
			}
		}
		frac, want := float64(moved)/keys, 1/float64(n)
		t.Logf("N=%d: %.4f of the keys moved (1/N = %.4f)", n, frac, want)
		if frac < want*0.85 || frac > want*1.15 {
			t.Errorf("N=%d: %.4f of the keys moved, want about %.4f", n, frac, want)
		}
	}
}

// TestUnitRankBoundedLoad assigns 300 scopes over 3 nodes one by one,
// feeding each node's live scopes back: max/avg stays ≤ Bound.
func TestUnitRankBoundedLoad(t *testing.T) {
	for _, n := range []int{3, 4, 7} {
		ns := nodes(n)
		count := map[string]int{}
		const keys = 300
		for i := range keys {
			r, err := Rank(fmt.Sprintf("acme.prod.u%d", i), ns, nil)
			if err != nil {
				t.Fatal(err)
			}
			count[r[0].Name]++
			for j := range ns {
				if ns[j].Name == r[0].Name {
					ns[j].Scopes++
				}
			}
		}
		mx := 0
		for _, c := range count {
			mx = max(mx, c)
		}
		avg := float64(keys) / float64(n)
		t.Logf("N=%d: max %d, avg %.1f, max/avg %.3f", n, mx, avg, float64(mx)/avg)
		if float64(mx)/avg > Bound {
			t.Errorf("N=%d: max/avg %.3f > %.2f (%v)", n, float64(mx)/avg, Bound, count)
		}
	}
}

// TestUnitRankOverloadedLast: a node far over the average ranks last but
// stays a fallback; a full node (no free slot) too.
func TestUnitRankOverloadedLast(t *testing.T) {
	ns := nodes(3)
	for i := range 100 {
		key := fmt.Sprintf("k%d", i)
		best := first(t, key, ns, nil)
		loaded := slices.Clone(ns)
		for j := range loaded {
			if loaded[j].Name == best {
				loaded[j].Scopes = 50
			}
		}
		r, _ := Rank(key, loaded, nil)
		if len(r) != 3 || r[2].Name != best {
			t.Fatalf("%s: overloaded %s not last in %v", key, best, names(r))
		}
		full := slices.Clone(ns)
		for j := range full {
			if full[j].Name == best {
				full[j].Slots, full[j].Scopes = 1, 1
			}
		}
		r, _ = Rank(key, full, nil)
		if r[2].Name != best {
			t.Fatalf("%s: full %s not last in %v", key, best, names(r))
		}
	}
}

func TestUnitRankPlacement(t *testing.T) {
	ns := nodes(4)
	ns[1].Labels = []string{"dedicated-acme", "ssd"}
	ns[3].Labels = []string{"dedicated-acme"}
	for i := range 100 {
		r, err := Rank(fmt.Sprintf("acme.u%d", i), ns, []string{"dedicated-acme"})
		if err != nil {
			t.Fatal(err)
		}
		got := names(r)
		slices.Sort(got)
		if !slices.Equal(got, []string{"node-1", "node-3"}) {
			t.Fatalf("placement candidates %v", got)
		}
	}
	r, err := Rank("acme.all", ns, []string{"dedicated-acme", "ssd"})
	if err != nil || len(r) != 1 || r[0].Name != "node-1" {
		t.Fatalf("two labels: %v, %v", names(r), err)
	}
	_, err = Rank("acme.all", ns, []string{"gpu"})
	if !errors.Is(err, ErrNoNode) || err.Error() != "no live node carries placement [gpu]" {
		t.Fatalf("no candidate: %v", err)
	}
	if _, err := Rank("acme.all", nil, nil); !errors.Is(err, ErrNoNode) {
		t.Fatalf("empty fleet: %v", err)
	}
}

// FuzzUnitRank: no panic, and the result is a permutation of the nodes
// carrying the placement.
func FuzzUnitRank(f *testing.F) {
	f.Add("acme.all", "a,b,c", "x", uint8(3), uint16(0x0102))
	f.Add("", "", "", uint8(0), uint16(0))
	f.Add("k", "a,a,b", "y", uint8(255), uint16(0xffff))
	f.Fuzz(func(t *testing.T, key, nodeNames, label string, loads uint8, labelled uint16) {
		var ns []record.Node
		for i, name := range splitComma(nodeNames) {
			n := record.Node{Name: name, Scopes: int(loads>>(i%8)) % 7, Slots: int(loads) % 5}
			if labelled&(1<<(i%16)) != 0 {
				n.Labels = []string{label}
			}
			ns = append(ns, n)
		}
		var placement []string
		if label != "" {
			placement = []string{label}
		}
		r, err := Rank(key, ns, placement)
		var want []string
		for _, n := range ns {
			if n.HasLabels(placement) {
				want = append(want, n.Name)
			}
		}
		if len(want) == 0 {
			if !errors.Is(err, ErrNoNode) || r != nil {
				t.Fatalf("no candidate: %v, %v", names(r), err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		got := names(r)
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("ranked %v, candidates %v", got, want)
		}
	})
}

func splitComma(s string) []string {
	var out []string
	start := 0
	for i := 0; i <= len(s); i++ {
		if i == len(s) || s[i] == ',' {
			out = append(out, s[start:i])
			start = i + 1
		}
		if len(out) == 32 {
			break
		}
	}
	return out
}
