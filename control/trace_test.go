package control

import (
	"fmt"
	"math/bits"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/accounting"
)

// A trace is a sequence of snapshots with synthetic cumulative counters,
// built tick by tick from what every scope did in the tick, the way the
// accounting source would have counted it.
type trace struct {
	t     testing.TB
	cfg   Config
	at    time.Time
	st    State
	next  uint64 // next cgroup id
	ids   map[string]uint64
	cum   map[string]*accounting.Counters
	psi   map[string]*PSI
	bases map[string]base
	// With cpus and tenant weights set, snapshots carry them (the
	// entitlement rule); tenants missing from weights weigh 100.
	cpus    float64
	weights map[string]uint64
	// other is the CPUs the rest of the host uses every tick; with it set
	// snapshots carry HostBusy.
	other float64
	busy  time.Duration
	ticks int
	// What Decide returned, all ticks together.
	acts []Action
	evs  []Event
	log  []string // "tick kind scope level", and "tick set scope weight cpumax"
}

type base struct {
	weight uint64
	cpuMax float64
}

// use is what one scope did during one tick.
type use struct {
	cpu float64 // CPUs used
	// runq is the tail of its run-queue waits: 3% of them fall into runq's
	// log2 bucket, the rest are 64–128 µs. Their p99 is then about 1.67×
	// the bucket's lower end: 20 ms → 28 ms, 12 ms → 14 ms, 3 ms → 3.5 ms.
	runq  time.Duration
	waits float64            // per second; 0 means 1000 when runq is set
	by    map[string]float64 // preemptions per second by other scopes' keys
	psi   float64            // cpu "full" stall fraction; < 0: no PSI
}

func newTrace(t testing.TB, cfg Config) *trace {
	return &trace{
		t: t, cfg: cfg, at: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), next: 100,
		ids: map[string]uint64{}, cum: map[string]*accounting.Counters{},
		psi: map[string]*PSI{}, bases: map[string]base{},
	}
}

// id is the scope's cgroup id, assigned on first use.
func (tr *trace) id(key string) uint64 {
	if id, ok := tr.ids[key]; ok {
		return id
	}
	tr.next++
	tr.ids[key] = tr.next
	return tr.next
}

// recreate gives the scope a new cgroup: a new id, counters from zero.
func (tr *trace) recreate(key string) {
	delete(tr.ids, key)
	delete(tr.cum, key)
	delete(tr.psi, key)
}

// reset zeroes the scope's counters, as a restarted source would.
func (tr *trace) reset(key string) {
	tr.cum[key] = &accounting.Counters{}
	delete(tr.psi, key)
}

// snap advances the clock by d and returns the snapshot of the scopes in
// uses (the others are gone).
func (tr *trace) snap(d time.Duration, uses map[string]use) Snapshot {
	tr.at = tr.at.Add(d)
	secs := d.Seconds()
	snap := Snapshot{At: tr.at, CPUs: tr.cpus}
	for _, key := range slicesSorted(uses) {
		u := uses[key]
		c := tr.cum[key]
		if c == nil {
			c = &accounting.Counters{}
			tr.cum[key] = c
		}
		c.CPU += time.Duration(u.cpu * float64(d))
		if u.runq > 0 {
			waits := u.waits
			if waits == 0 {
				waits = 1000
			}
			n := uint64(waits * secs)
			tail := n * 3 / 100
			c.RunqDelay.Buckets[16] += n - tail // 65–131 µs
			c.RunqDelay.Buckets[bucket(u.runq)] += tail
			c.RunqDelay.Count += n
			c.RunqDelay.Sum += time.Duration(n-tail)*100*time.Microsecond + time.Duration(tail)*u.runq
		}
		for _, by := range slicesSorted(u.by) {
			n := uint64(u.by[by] * secs)
			c.Preemptions += n
			if c.PreemptedBy == nil {
				c.PreemptedBy = map[uint64]uint64{}
			}
			c.PreemptedBy[tr.id(by)] += n
		}
		s := ScopeSample{
			Key: key, Tenant: strings.Split(key, ".")[0], ID: tr.id(key),
			Counters: clone(*c), Weight: 100,
		}
		if b, ok := tr.bases[key]; ok {
			s.Weight, s.CPUMax = b.weight, b.cpuMax
		}
		if tr.cpus > 0 {
			s.TenantWeight = 100
			if w, ok := tr.weights[s.Tenant]; ok {
				s.TenantWeight = w
			}
		}
		if u.psi >= 0 {
			p := tr.psi[key]
			if p == nil {
				p = &PSI{}
				tr.psi[key] = p
			}
			p.Full += time.Duration(u.psi * float64(d))
			p.Some += time.Duration(u.psi * float64(d))
			cp := *p
			s.PSI = &cp
		}
		snap.Scopes = append(snap.Scopes, s)
	}
	if tr.other > 0 {
		tr.busy += time.Duration(tr.other * float64(d))
		for _, u := range uses {
			tr.busy += time.Duration(u.cpu * float64(d))
		}
		snap.HostBusy = tr.busy
	}
	return snap
}

// step feeds the next snapshot (one Interval later) to Decide and returns
// what it decided.
func (tr *trace) step(uses map[string]use) ([]Action, []Event) {
	tr.t.Helper()
	return tr.feed(tr.snap(tr.cfg.Interval.Duration, uses))
}

func (tr *trace) feed(snap Snapshot) ([]Action, []Event) {
	tr.t.Helper()
	before := tr.st.Throttled()
	st, acts, evs := Decide(tr.cfg, tr.st, snap)
	if after := tr.st.Throttled(); !mapsEqual(before, after) {
		tr.t.Fatalf("Decide modified its input state: %v → %v", before, after)
	}
	checkInvariants(tr.t, tr.cfg, snap, st, acts, evs)
	tr.st = st
	tr.ticks++
	for _, e := range evs {
		tr.t.Logf("tick %d: %s %s level %d victims %v: %s", tr.ticks, e.Kind, e.Scope, e.Level, e.Victims, e.Reason)
		tr.log = append(tr.log, fmt.Sprintf("%d %s %s %d", tr.ticks, e.Kind, e.Scope, e.Level))
	}
	for _, a := range acts {
		tr.log = append(tr.log, fmt.Sprintf("%d set %s %d %g", tr.ticks, a.Key, a.Weight, a.CPUMax))
	}
	tr.acts = append(tr.acts, acts...)
	tr.evs = append(tr.evs, evs...)
	return acts, evs
}

// run steps n times with the same uses.
func (tr *trace) run(n int, uses map[string]use) {
	tr.t.Helper()
	for range n {
		tr.step(uses)
	}
}

// kinds lists the kinds of events, in order ("kind scope").
func kinds(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind+" "+e.Scope)
	}
	return out
}

// checkInvariants holds after every Decide, whatever the input.
func checkInvariants(t testing.TB, cfg Config, snap Snapshot, st State, acts []Action, evs []Event) {
	t.Helper()
	present := map[string]bool{}
	for _, s := range snap.Scopes {
		present[s.Key] = true
	}
	seen := map[string]bool{}
	for _, a := range acts {
		switch {
		case !present[a.Key]:
			t.Fatalf("action for %q, not in the snapshot: %+v", a.Key, a)
		case seen[a.Key]:
			t.Fatalf("two actions for %q in one tick: %+v", a.Key, acts)
		case a.Level < LevelNormal || a.Level > LevelCapped:
			t.Fatalf("action level %d: %+v", a.Level, a)
		case a.Weight < 1:
			t.Fatalf("action weight %d: %+v", a.Weight, a)
		case !(a.CPUMax >= 0) || a.CPUMax > maxCPUs:
			t.Fatalf("action cpu max %g: %+v", a.CPUMax, a)
		case a.Level == LevelCapped && a.CPUMax < minCapCPUs:
			t.Fatalf("capped without a cap: %+v", a)
		}
		seen[a.Key] = true
	}
	valid := []string{EventDetected, EventSteppedDown, EventCapped, EventSteppedUp, EventRestored, EventReleased}
	for _, e := range evs {
		if !slices.Contains(valid, e.Kind) || e.Level < 0 || e.Level > LevelCapped || e.Reason == "" ||
			len(e.Victims) > maxEventVictims || !e.At.Equal(snap.At) {
			t.Fatalf("bad event %+v", e)
		}
	}
	th := st.Throttled()
	if len(th) > cfg.MaxThrottled {
		t.Fatalf("%d scopes throttled, max %d", len(th), cfg.MaxThrottled)
	}
	for k, l := range th {
		if !present[k] || l < LevelWeight || l > LevelCapped {
			t.Fatalf("throttled %q at level %d (present %v)", k, l, present[k])
		}
	}
}

func bucket(d time.Duration) int {
	if d <= 0 {
		return 0
	}
	return min(bits.Len64(uint64(d))-1, accounting.HistogramBuckets-1)
}

func clone(c accounting.Counters) accounting.Counters {
	if c.PreemptedBy != nil {
		m := make(map[uint64]uint64, len(c.PreemptedBy))
		for k, v := range c.PreemptedBy {
			m[k] = v
		}
		c.PreemptedBy = m
	}
	return c
}

func slicesSorted[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func mapsEqual(a, b map[string]int) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// TestTraceHelper checks the synthetic histograms give the p99 the tests
// rely on.
func TestTraceHelper(t *testing.T) {
	for _, c := range []struct {
		runq   time.Duration
		lo, hi time.Duration
	}{
		{20 * time.Millisecond, 20 * time.Millisecond, 30 * time.Millisecond},
		{12 * time.Millisecond, 10 * time.Millisecond, 15 * time.Millisecond},
		{3 * time.Millisecond, 2500 * time.Microsecond, 5 * time.Millisecond},
		{time.Millisecond, 0, 5 * time.Millisecond},
	} {
		tr := newTrace(t, DefaultConfig())
		s0 := tr.snap(time.Second, map[string]use{"a.x": {}})
		s1 := tr.snap(time.Second, map[string]use{"a.x": {runq: c.runq}})
		d := s1.Scopes[0].Counters.Sub(s0.Scopes[0].Counters)
		if p := d.RunqDelay.Quantile(0.99); p < c.lo || p >= c.hi {
			t.Errorf("runq %s: p99 %s, want in [%s, %s)", c.runq, p, c.lo, c.hi)
		}
	}
}
