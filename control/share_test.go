package control

import (
	"fmt"
	"math"
	"math/bits"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scoped-io/scoped/accounting"
)

// A shareTrace is a sequence of snapshots built from what every tenant's
// scopes did in each tick, fed to DecideShares.
type shareTrace struct {
	t       testing.TB
	cfg     Config
	at      time.Time
	st      ShareState
	cpus    float64
	weights map[string]uint64  // tenant → weight; missing: 100
	bases   map[string]float64 // tenant → configured CPU max
	scopes  map[string]int     // tenant → how many scopes
	noRunq  bool               // the accounting has no run-queue figures
	waits   map[string]uint64  // tenant → run-queue waits per tick; missing: 1000
	// mix: tenants whose wait time is split between 2 ms waits and short
	// ones (waits ignored): spinMix, a multi-threaded spinner whose Go
	// runtime threads wake often (most waits short, most time not, mean
	// 0.4 ms); starvedMix, a request handler starved hard by spinners (most
	// time in waits out of their slices, yet a mean of 0.1 ms).
	mix   map[string]waitMix
	psi   bool // with cpu.pressure
	next  uint64
	ids   map[string]uint64
	cum   map[string]*accounting.Counters
	psis  map[string]*PSI
	ticks int
	caps  map[string]float64 // applied, as an actuator would
	acts  []TenantAction
	evs   []Event
}

// waitMix is a tenant's run-queue waits: short of their time in waits of
// each, the rest in 2 ms waits.
type waitMix struct {
	short float64
	each  time.Duration
}

var (
	spinMix    = waitMix{0.2, 100 * time.Microsecond}
	starvedMix = waitMix{0.15, 16 * time.Microsecond}
)

// tuse is what a tenant did in a tick, spread evenly over its scopes:
// CPUs used, and its tasks' run-queue waits in CPUs' worth (or its PSI
// "some" fraction).
type tuse struct {
	cpu, wait float64
}

func newShareTrace(t testing.TB) *shareTrace {
	cfg := DefaultConfig()
	cfg.ShareTolerance = 0.05 // the figures below are of 5 points
	return &shareTrace{
		t: t, cfg: cfg, at: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), cpus: 2,
		weights: map[string]uint64{}, bases: map[string]float64{}, scopes: map[string]int{},
		ids: map[string]uint64{}, cum: map[string]*accounting.Counters{}, psis: map[string]*PSI{},
		caps: map[string]float64{},
	}
}

func (tr *shareTrace) snap(uses map[string]tuse) Snapshot {
	d := tr.cfg.Interval.Duration
	tr.at = tr.at.Add(d)
	snap := Snapshot{At: tr.at, CPUs: tr.cpus}
	for _, tenant := range slicesSorted(uses) {
		u := uses[tenant]
		n := max(tr.scopes[tenant], 1)
		for i := range n {
			key := fmt.Sprintf("%s.s%d", tenant, i)
			id, ok := tr.ids[key]
			if !ok {
				tr.next++
				id = tr.next
				tr.ids[key] = id
			}
			c := tr.cum[key]
			if c == nil {
				c = &accounting.Counters{}
				tr.cum[key] = c
			}
			c.CPU += time.Duration(u.cpu / float64(n) * float64(d))
			if !tr.noRunq {
				w := uint64(1000)
				if n, ok := tr.waits[tenant]; ok {
					w = n
				}
				// The waits alike, in the bucket of their mean (bucket 0
				// when they took no time).
				waited := time.Duration(u.wait / float64(n) * float64(d))
				b := 0
				if w > 0 && waited >= time.Duration(w) {
					b = min(bits.Len64(uint64(waited)/w)-1, len(c.RunqDelay.Buckets)-1)
				}
				if m, ok := tr.mix[tenant]; ok {
					long, short := uint64((1-m.short)*float64(waited)/2e6), uint64(m.short*float64(waited)/float64(m.each))
					c.RunqDelay.Buckets[bits.Len64(2e6)-1] += long
					w, b = short, bits.Len64(uint64(m.each))-1
					c.RunqDelay.Count += long
				}
				c.RunqDelay.Count += w
				c.RunqDelay.Buckets[b] += w
				c.RunqDelay.Sum += waited
			}
			s := ScopeSample{Key: key, Tenant: tenant, ID: id, Counters: clone(*c), Weight: 100,
				TenantWeight: 100, TenantCPUMax: tr.bases[tenant]}
			if w, ok := tr.weights[tenant]; ok {
				s.TenantWeight = w
			}
			if tr.psi {
				p := tr.psis[key]
				if p == nil {
					p = &PSI{}
					tr.psis[key] = p
				}
				p.Some += time.Duration(u.wait * float64(d))
				cp := *p
				s.PSI = &cp
			}
			snap.Scopes = append(snap.Scopes, s)
		}
	}
	return snap
}

// recreate gives every scope of the tenant a new cgroup.
func (tr *shareTrace) recreate(tenant string) {
	for key := range tr.ids {
		if strings.HasPrefix(key, tenant+".") {
			delete(tr.ids, key)
			delete(tr.cum, key)
			delete(tr.psis, key)
		}
	}
}

func (tr *shareTrace) step(uses map[string]tuse) ([]TenantAction, []Event) {
	tr.t.Helper()
	return tr.feed(tr.snap(uses))
}

func (tr *shareTrace) feed(snap Snapshot) ([]TenantAction, []Event) {
	tr.t.Helper()
	before := fmt.Sprint(tr.st.Capped())
	st, acts, evs := DecideShares(tr.cfg, tr.st, snap)
	if after := fmt.Sprint(tr.st.Capped()); before != after {
		tr.t.Fatalf("DecideShares modified its input state: %v → %v", before, after)
	}
	checkShareInvariants(tr.t, tr.st, snap, st, acts, evs)
	tr.st = st
	tr.ticks++
	for _, e := range evs {
		tr.t.Logf("tick %d: %s %s starving %v: %s", tr.ticks, e.Kind, e.Tenant, e.Victims, e.Reason)
	}
	for _, a := range acts {
		if a.CPUMax > 0 {
			tr.caps[a.Tenant] = a.CPUMax
		} else {
			delete(tr.caps, a.Tenant)
		}
	}
	tr.acts = append(tr.acts, acts...)
	tr.evs = append(tr.evs, evs...)
	return acts, evs
}

// run steps n times with the same uses; a tenant capped uses at most its
// cap, and what it leaves goes to the others in proportion, if they want
// it (wait > 0), as the kernel would hand it out.
func (tr *shareTrace) run(n int, uses map[string]tuse) {
	tr.t.Helper()
	for range n {
		tr.step(tr.capped(uses))
	}
}

// capped is uses under the caps applied.
func (tr *shareTrace) capped(uses map[string]tuse) map[string]tuse {
	out := map[string]tuse{}
	var freed float64
	var wanting []string
	for t, u := range uses {
		if c, ok := tr.caps[t]; ok && u.cpu > c {
			freed += u.cpu - c
			u.cpu = c
		} else if u.wait > 0 {
			wanting = append(wanting, t)
		}
		out[t] = u
	}
	for _, t := range wanting {
		u := out[t]
		u.cpu += freed / float64(len(wanting))
		out[t] = u
	}
	return out
}

func shareKinds(evs []Event) []string {
	var out []string
	for _, e := range evs {
		out = append(out, e.Kind+" "+e.Tenant)
	}
	return out
}

// checkShareInvariants holds after every DecideShares, whatever the input.
func checkShareInvariants(t testing.TB, prev ShareState, snap Snapshot, st ShareState, acts []TenantAction, evs []Event) {
	t.Helper()
	present := map[string]bool{}
	base := map[string]float64{}
	for _, s := range snap.Scopes {
		present[s.Tenant] = true
		if _, ok := base[s.Tenant]; !ok {
			base[s.Tenant] = saneCPUs(s.TenantCPUMax)
		}
	}
	seen := map[string]bool{}
	for _, a := range acts {
		_, was := prev.tenants[a.Tenant]
		switch {
		case !present[a.Tenant] && !was:
			t.Fatalf("action for %q, not in the snapshot nor the state: %+v", a.Tenant, a)
		case seen[a.Tenant]:
			t.Fatalf("two actions for %q in one tick: %+v", a.Tenant, acts)
		case !(a.CPUMax >= 0) || a.CPUMax > maxCPUs || a.CPUMax > 0 && a.CPUMax < minCapCPUs:
			t.Fatalf("action cpu max %g: %+v", a.CPUMax, a)
		case a.CPUMax > 0 && base[a.Tenant] > 0 && a.CPUMax > base[a.Tenant]:
			t.Fatalf("cap %g above the tenant's cpu max %g", a.CPUMax, base[a.Tenant])
		}
		seen[a.Tenant] = true
	}
	valid := []string{EventShareCapped, EventShareAdjusted, EventShareLifted, EventShareReleased}
	for _, e := range evs {
		if !slices.Contains(valid, e.Kind) || e.Scope != "" || e.Tenant == "" || e.Reason == "" ||
			len(e.Victims) > maxEventVictims || !e.At.Equal(snap.At) || !seen[e.Tenant] {
			t.Fatalf("bad event %+v (actions %+v)", e, acts)
		}
	}
	for tenant, c := range st.Capped() {
		if !present[tenant] || !(c >= minCapCPUs) {
			t.Fatalf("capped %q at %g (present %v)", tenant, c, present[tenant])
		}
	}
}

var (
	fair    = map[string]tuse{"many": {cpu: 1, wait: 6}, "one": {cpu: 1, wait: 1}}
	drifted = map[string]tuse{"many": {cpu: 1.54, wait: 6.4}, "one": {cpu: 0.46, wait: 1.5}}
)

// TestSharesDrift: equal tenants, 8 scopes against 1, the kernel's split
// drifting to 77/23: the over-taker is capped at its share within the
// window, stays capped while both want the CPU, and is let go within a
// tick once the victim stops.
func TestSharesDrift(t *testing.T) {
	tr := newShareTrace(t)
	tr.scopes["many"] = 8
	tr.run(5, fair)
	if len(tr.evs) != 0 {
		t.Fatalf("fair split: %v", shareKinds(tr.evs))
	}
	tr.run(tr.cfg.ShareWindow, drifted)
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many"}) {
		t.Fatalf("drift over the window: %v", got)
	}
	if e := tr.evs[0]; !slices.Equal(e.Victims, []string{"one"}) || e.Level != LevelCapped ||
		!strings.Contains(e.Reason, "tenant many used 1.54 CPUs (77%), entitled to 1.00 CPUs (50%)") ||
		!strings.Contains(e.Reason, "tenant one got 0.46 CPUs (23%)") {
		t.Errorf("event %+v", e)
	}
	if got := tr.caps; !reflect.DeepEqual(got, map[string]float64{"many": 1}) {
		t.Fatalf("caps %v", got)
	}
	if d := tr.st.Describe(); d != "avail 2.00 idle 0.00: many used 1.54 share 1.00 wait 6.40 (100% short) want true capped true idle false; one used 0.46 share 1.00 wait 1.50 (0% short) want true capped false idle false" {
		t.Errorf("Describe: %q", d)
	}
	// Under the cap the split is fair; both still want more: it holds.
	tr.run(60, drifted)
	if len(tr.evs) != 1 {
		t.Fatalf("while both want the CPU: %v", shareKinds(tr.evs))
	}
	// The victim stops: lifted in the next tick.
	tr.run(1, map[string]tuse{"many": drifted["many"]})
	if got := shareKinds(tr.evs[1:]); !slices.Equal(got, []string{"share_lifted many"}) || len(tr.caps) != 0 {
		t.Fatalf("victim gone: %v, caps %v", got, tr.caps)
	}
	if len(tr.st.Capped()) != 0 {
		t.Errorf("capped %v", tr.st.Capped())
	}
}

// TestSharesVictimIdle: a victim still there but using nothing lets the
// cap go in the next tick.
func TestSharesVictimIdle(t *testing.T) {
	tr := newShareTrace(t)
	tr.run(3, drifted)
	if len(tr.caps) != 1 {
		t.Fatalf("not capped: %v", shareKinds(tr.evs))
	}
	tr.run(1, map[string]tuse{"many": drifted["many"], "one": {}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_lifted many"}) {
		t.Errorf("%v", got)
	}
}

// TestSharesCappedStops: a capped tenant that stops using the CPU is
// lifted after a window, though its victim, alone now, still waits (its
// own threads, the host's other work).
func TestSharesCappedStops(t *testing.T) {
	tr := newShareTrace(t)
	tr.run(3, drifted)
	if len(tr.caps) != 1 {
		t.Fatalf("not capped: %v", shareKinds(tr.evs))
	}
	// Its share rises to all the CPUs (the only busy tenant is the
	// other), and the cap follows; once a window passed, it goes (and
	// with it SCHED_IDLE, which no cap size undoes).
	tr.run(tr.cfg.ShareWindow-1, map[string]tuse{"many": {}, "one": {cpu: 1, wait: 0.5}})
	if len(tr.caps) != 1 {
		t.Fatalf("lifted before a window of no use: %v", shareKinds(tr.evs))
	}
	tr.run(1, map[string]tuse{"many": {}, "one": {cpu: 1, wait: 0.5}})
	if got := shareKinds(tr.evs); got[len(got)-1] != "share_lifted many" || len(tr.caps) != 0 ||
		!strings.Contains(tr.evs[len(got)-1].Reason, "used no CPU") {
		t.Fatalf("%v, caps %v", got, tr.caps)
	}
}

// TestSharesTiers: weights 1:2:4 on 2 CPUs entitle to 0.29, 0.57 and 1.14
// CPUs. The light tenants starve; only the one over its share is capped,
// at its share, never one under.
func TestSharesTiers(t *testing.T) {
	tr := newShareTrace(t)
	tr.weights = map[string]uint64{"a": 100, "b": 200, "c": 400}
	uses := map[string]tuse{"a": {cpu: 0.12, wait: 0.9}, "b": {cpu: 0.5, wait: 0.8}, "c": {cpu: 1.38, wait: 1}}
	tr.run(1+tr.cfg.ShareWindow, uses)
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped c"}) {
		t.Fatalf("%v", got)
	}
	if c := tr.caps["c"]; math.Abs(c-8.0/7) > 1e-9 || len(tr.caps) != 1 {
		t.Errorf("caps %v, want c at %.3f", tr.caps, 8.0/7)
	}
	// b, 12 % short of its share, starves too (twice the tolerance of
	// its share), though short by less than 5 points of the CPUs.
	if !slices.Equal(tr.evs[0].Victims, []string{"a", "b"}) {
		t.Errorf("victims %v", tr.evs[0].Victims)
	}
	// Within its share by weight, nobody is blamed.
	tr = newShareTrace(t)
	tr.weights = map[string]uint64{"a": 100, "b": 200, "c": 400}
	tr.run(10, map[string]tuse{"a": {cpu: 0.27, wait: 0.9}, "b": {cpu: 0.56, wait: 0.8}, "c": {cpu: 1.17, wait: 1}})
	if len(tr.evs) != 0 {
		t.Errorf("fair by weight: %v", shareKinds(tr.evs))
	}
}

// TestSharesHostBusy: what the rest of the host uses is not the tenants'
// to share; the cap is the share of what is left.
func TestSharesHostBusy(t *testing.T) {
	tr := newShareTrace(t)
	var busy time.Duration
	for range 4 {
		snap := tr.snap(drifted)
		busy += time.Duration((0.2 + 2 - 0.2) * float64(time.Second)) // 0.2 CPUs for others
		snap.HostBusy = busy
		// The tenants used 2 CPUs in the trace; scale them to 1.8.
		for i := range snap.Scopes {
			snap.Scopes[i].Counters.CPU = snap.Scopes[i].Counters.CPU * 9 / 10
		}
		tr.feed(snap)
	}
	if c := tr.caps["many"]; math.Abs(c-0.9) > 0.01 {
		t.Errorf("cap %g, want 0.9 (half of 1.8): %v", c, shareKinds(tr.evs))
	}
}

// TestSharesJustUnderShare: a victim whose demand is just under its share
// does not want more under the cap: the cap goes after the cool-down, the
// drift comes back, and so does the cap, each time held twice as long —
// not once every window.
func TestSharesJustUnderShare(t *testing.T) {
	tr := newShareTrace(t)
	tr.cfg.Cooldown.Duration = 5 * time.Second
	var capTicks []int
	for range 200 {
		uses := drifted
		if tr.caps["many"] > 0 {
			// Capped, the victim gets its 0.9 CPUs and hardly waits.
			uses = map[string]tuse{"many": {cpu: 1, wait: 7}, "one": {cpu: 0.9, wait: 0.01}}
		}
		_, evs := tr.step(uses)
		for _, e := range evs {
			if e.Kind == EventShareCapped {
				capTicks = append(capTicks, tr.ticks)
			}
		}
	}
	if len(capTicks) < 3 {
		t.Fatalf("capped at ticks %v", capTicks)
	}
	for i := 2; i < len(capTicks); i++ {
		if capTicks[i]-capTicks[i-1] < capTicks[i-1]-capTicks[i-2] {
			t.Errorf("no backoff: capped at ticks %v", capTicks)
		}
	}
	if last := capTicks[len(capTicks)-1] - capTicks[len(capTicks)-2]; last < 8*5 {
		t.Errorf("capped again after %d ticks, want at least 8 cool-downs: %v", last, capTicks)
	}
	// With some waiting left under the cap, it simply holds.
	tr = newShareTrace(t)
	for range 100 {
		uses := drifted
		if tr.caps["many"] > 0 {
			uses = map[string]tuse{"many": {cpu: 1, wait: 7}, "one": {cpu: 0.92, wait: 0.05}}
		}
		tr.step(uses)
	}
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many"}) {
		t.Errorf("flapped: %v", got)
	}
}

// TestSharesIdleRaise: a victim that needs half a CPU but starves beside
// spinners: the cap at the share leaves CPUs idle, so it is raised by what
// it leaves, and then holds without flapping.
func TestSharesIdleRaise(t *testing.T) {
	tr := newShareTrace(t)
	var caps []float64
	for range 40 {
		uses := map[string]tuse{"many": {cpu: 1.7, wait: 3}, "one": {cpu: 0.3, wait: 0.4}}
		if c := tr.caps["many"]; c > 0 {
			uses = map[string]tuse{"many": {cpu: c, wait: 3}, "one": {cpu: 0.5, wait: 0.2}}
		}
		acts, _ := tr.step(uses)
		for _, a := range acts {
			caps = append(caps, a.CPUMax)
		}
	}
	// Raised by half the excess at a time, until what it leaves idle is
	// no more than twice the tolerance: 1, 1.2, 1.3.
	if len(caps) != 3 || caps[0] != 1 || math.Abs(caps[1]-1.2) > 1e-9 || math.Abs(caps[2]-1.3) > 1e-9 {
		t.Errorf("caps set %v, want 1, 1.2, 1.3: %v", caps, shareKinds(tr.evs))
	}
	// The victim's demand rises: it starves again, and the cap goes back
	// to the share.
	for range 3 {
		tr.step(map[string]tuse{"many": {cpu: 1.4, wait: 3}, "one": {cpu: 0.6, wait: 0.9}})
	}
	if c := tr.caps["many"]; c != 1 {
		t.Errorf("cap %g, want back at 1: %v", c, shareKinds(tr.evs))
	}
	// The victim needs next to nothing: the cap is raised to all but
	// that, and stays there while the victim still waits.
	tr = newShareTrace(t)
	tr.run(3, drifted)
	for range 10 {
		tr.step(map[string]tuse{"many": {cpu: min(1.9, tr.caps["many"]), wait: 3}, "one": {cpu: 0.05, wait: 0.2}})
	}
	if got := shareKinds(tr.evs); got[0] != "share_capped many" || slices.Contains(got, "share_lifted many") || tr.caps["many"] < 1.75 {
		t.Errorf("%v, caps %v", got, tr.caps)
	}
}

// TestSharesFollow: the cap follows the entitlement when a third tenant
// comes, and never goes above the tenant's own CPU max.
func TestSharesFollow(t *testing.T) {
	tr := newShareTrace(t)
	tr.bases["many"] = 1.5
	tr.run(3, drifted)
	if c := tr.caps["many"]; c != 1 {
		t.Fatalf("cap %g", c)
	}
	three := map[string]tuse{"many": {cpu: 1, wait: 6}, "one": {cpu: 0.5, wait: 1}, "third": {cpu: 0.5, wait: 1}}
	tr.run(3, three)
	if c := tr.caps["many"]; math.Abs(c-2.0/3) > 1e-9 {
		t.Errorf("cap %g, want 0.67: %v", c, shareKinds(tr.evs))
	}
	if got := shareKinds(tr.evs); !slices.Contains(got, "share_adjusted many") {
		t.Errorf("%v", got)
	}
	// A tenant whose own CPU max is below its share is never capped.
	tr = newShareTrace(t)
	tr.bases["many"] = 0.9
	tr.run(6, map[string]tuse{"many": {cpu: 0.9, wait: 6}, "one": {cpu: 0.46, wait: 1.5}})
	if len(tr.evs) != 0 {
		t.Errorf("%v", shareKinds(tr.evs))
	}
}

// TestSharesGone: a capped tenant gone is released; one whose scopes are
// all new cgroups is lifted and starts clean.
func TestSharesGone(t *testing.T) {
	tr := newShareTrace(t)
	tr.run(3, drifted)
	tr.step(map[string]tuse{"one": {cpu: 1.9, wait: 1}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_released many"}) {
		t.Errorf("%v", got)
	}
	if a := tr.acts[len(tr.acts)-1]; a != (TenantAction{Tenant: "many"}) {
		t.Errorf("action %+v", a)
	}
	if _, ok := tr.st.tenants["many"]; ok {
		t.Error("state kept")
	}

	tr = newShareTrace(t)
	tr.run(3, drifted)
	tr.recreate("many")
	tr.step(drifted)
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_lifted many"}) {
		t.Errorf("%v", got)
	}
	if ts := tr.st.tenants["many"]; ts.capped || len(ts.window) != 0 || ts.caps != 0 {
		t.Errorf("not clean: %+v", ts)
	}
	tr.run(1+tr.cfg.ShareWindow, drifted)
	if n := len(tr.evs); n != 3 {
		t.Errorf("after recreation: %v", shareKinds(tr.evs))
	}
}

// TestSharesOff: without the CPUs, a tenant's weight, or any wait figure,
// the rule never acts; a cap in force is lifted when the figures go.
func TestSharesOff(t *testing.T) {
	for name, f := range map[string]func(*shareTrace){
		"no cpus":   func(tr *shareTrace) { tr.cpus = 0 },
		"no weight": func(tr *shareTrace) { tr.weights["one"] = 0 },
		"no waits":  func(tr *shareTrace) { tr.noRunq = true },
	} {
		tr := newShareTrace(t)
		f(tr)
		tr.run(10, drifted)
		if len(tr.evs) != 0 {
			t.Errorf("%s: %v", name, shareKinds(tr.evs))
		}
	}
	tr := newShareTrace(t)
	tr.run(3, drifted)
	tr.cpus = 0
	tr.step(drifted)
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_lifted many"}) {
		t.Errorf("%v", got)
	}
}

// TestSharesPSI: with cgroupfs accounting (no run-queue figures) the
// scopes' cpu.pressure "some" says who wants more.
func TestSharesPSI(t *testing.T) {
	tr := newShareTrace(t)
	tr.noRunq, tr.psi = true, true
	tr.run(3, map[string]tuse{"many": {cpu: 1.54, wait: 0.9}, "one": {cpu: 0.46, wait: 0.7}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many"}) {
		t.Errorf("%v", got)
	}
	tr = newShareTrace(t)
	tr.noRunq, tr.psi = true, true
	tr.run(5, map[string]tuse{"many": {cpu: 1.54, wait: 0.9}, "one": {cpu: 0.46, wait: 0.05}})
	if len(tr.evs) != 0 {
		t.Errorf("a tenant not waiting starves: %v", shareKinds(tr.evs))
	}
}

// TestSharesDisabled: turned off, every cap is lifted and the state
// dropped.
func TestSharesDisabled(t *testing.T) {
	for _, off := range []func(*Config){
		func(c *Config) { c.Enabled = false },
		func(c *Config) { c.FairShares = false },
	} {
		tr := newShareTrace(t)
		tr.run(3, drifted)
		off(&tr.cfg)
		acts, evs := tr.step(drifted)
		if !reflect.DeepEqual(acts, []TenantAction{{Tenant: "many"}}) || len(evs) != 1 || evs[0].Kind != EventShareLifted {
			t.Errorf("%+v %v", acts, shareKinds(evs))
		}
		if tr.st.tenants != nil {
			t.Errorf("state kept")
		}
		tr.run(5, drifted)
		if len(tr.evs) != 2 {
			t.Errorf("acts while off: %v", shareKinds(tr.evs))
		}
	}
}

// TestSharesNoise: a single tick of drift (a GC, a cold start) is not
// enough.
func TestSharesNoise(t *testing.T) {
	tr := newShareTrace(t)
	for i := range 30 {
		if i%3 == 1 {
			tr.step(drifted)
		} else {
			tr.step(fair)
		}
	}
	if len(tr.evs) != 0 {
		t.Errorf("%v", shareKinds(tr.evs))
	}
}

// FuzzDecideShares feeds DecideShares snapshots made from random bytes:
// tenants and scopes coming and going, cgroups recreated, counters going
// back, odd weights, CPU maxes, CPUs and PSI, a clock that may stand
// still or go back. It must not panic, must not modify its input state,
// must be a function of its inputs, and hold checkShareInvariants.
func FuzzDecideShares(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3, 2, 10, 0x3f, 1, 200, 20, 2, 30, 250, 3, 40, 5, 6, 7})
	f.Add([]byte{1, 0, 10, 0xff, 0x11, 255, 255, 0x22, 10, 1, 0x80, 90, 90})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := &bytesReader{b: data}
		cfg := DefaultConfig()
		cfg.ShareWindow = 1 + int(r.byte()%3)
		cfg.ShareTolerance = 0.01 + float64(r.byte()%10)/50
		cfg.Cooldown.Duration = time.Duration(r.byte()%5) * time.Second
		if err := cfg.Validate(); err != nil {
			t.Fatal(err)
		}
		const nScopes = 6
		keys := [nScopes]string{"a.p", "a.s", "b.p", "c.p", "c.s", "d.p"}
		ids := [nScopes]uint64{1, 2, 3, 4, 5, 6}
		var cum [nScopes]accounting.Counters
		var psi [nScopes]PSI
		at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
		var busy time.Duration
		var st ShareState
		for range 1 + int(r.byte())%80 {
			at = at.Add(time.Duration(int8(r.byte())) * 100 * time.Millisecond)
			snap := Snapshot{At: at, CPUs: []float64{2, 0, math.NaN(), 0.5, 64}[r.byte()%5]}
			if r.byte()%2 == 0 {
				busy += time.Duration(r.byte()) * 10 * time.Millisecond
				snap.HostBusy = busy
			}
			present := r.byte()
			for i := range nScopes {
				if present&(1<<i) == 0 {
					continue
				}
				op := r.byte()
				switch op % 16 {
				case 0:
					ids[i] += 100
					cum[i], psi[i] = accounting.Counters{}, PSI{}
				case 1:
					cum[i] = accounting.Counters{}
				}
				c := &cum[i]
				c.CPU += time.Duration(r.byte()) * 10 * time.Millisecond
				if op&0x10 == 0 {
					c.RunqDelay.Count += uint64(r.byte())
					c.RunqDelay.Sum += time.Duration(r.byte()) * 10 * time.Millisecond
				}
				s := ScopeSample{Key: keys[i], Tenant: keys[i][:1], ID: ids[i], Counters: clone(*c),
					TenantWeight: uint64(r.byte()%4) * 100}
				switch op / 32 % 4 {
				case 1:
					psi[i].Some += time.Duration(r.byte()) * 5 * time.Millisecond
					cp := psi[i]
					s.PSI = &cp
				case 2:
					s.PSI = &PSI{Some: time.Duration(r.byte())}
				}
				switch op / 128 {
				case 1:
					s.TenantCPUMax = []float64{math.NaN(), math.Inf(1), -1, 0.5, 1.5}[r.byte()%5]
				}
				snap.Scopes = append(snap.Scopes, s)
				if op%16 == 2 {
					snap.Scopes = append(snap.Scopes, s)
				}
			}
			before := fmt.Sprint(st.Capped())
			next, acts, evs := DecideShares(cfg, st, snap)
			if after := fmt.Sprint(st.Capped()); before != after {
				t.Fatalf("DecideShares modified its input state: %v → %v", before, after)
			}
			next2, acts2, evs2 := DecideShares(cfg, st, snap)
			if !reflect.DeepEqual(acts, acts2) || !reflect.DeepEqual(evs, evs2) || !reflect.DeepEqual(next.Capped(), next2.Capped()) {
				t.Fatalf("two calls with the same inputs differ:\n%+v\n%+v", acts, acts2)
			}
			checkShareInvariants(t, st, snap, next, acts, evs)
			st = next
		}
	})
}

// TestControllerShares: the Controller applies the rule's caps to tenant
// nodes, retries a failed one, publishes the capped tenants, counts the
// events, and lifts every cap on Close.
func TestControllerShares(t *testing.T) {
	tr := newShareTrace(t)
	tr.scopes["many"] = 2
	src := SourceFunc(func() (Snapshot, error) { return tr.snap(drifted), nil })
	act := &fakeActuator{fail: map[string]int{"tenant many": 1}}
	c, logs := newTestController(t, tr.cfg, src, act)
	for range 4 {
		if err := c.Tick(); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := act.got(), []string{"tenant many 1", "tenant many 1"}; !slices.Equal(got, want) {
		t.Errorf("set %v, want %v (one failure, retried)", got, want)
	}
	if got := c.Capped(); !reflect.DeepEqual(got, map[string]float64{"many": 1}) {
		t.Errorf("capped %v", got)
	}
	if got := c.Counts(); got[EventShareCapped] != 1 {
		t.Errorf("counts %v", got)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if got := act.got(); got[len(got)-1] != "tenant many 0" {
		t.Errorf("not lifted on close: %v", got)
	}
	if len(c.Capped()) != 0 {
		t.Errorf("capped after close: %v", c.Capped())
	}
	evs := c.Events(time.Time{})
	if k := shareKinds(evs); !slices.Equal(k, []string{"share_capped many", "share_lifted many"}) {
		t.Errorf("events %v", k)
	}
	for _, s := range []string{"fair shares: share_capped", "tenant=many", "starving=[one]", "tenant cpu max not applied"} {
		if !strings.Contains(logs.String(), s) {
			t.Errorf("log lacks %q:\n%s", s, logs)
		}
	}
}

// TestSharesStarvedUnderCap: a capped tenant that waits and gets less than
// half its share (the kernel's bandwidth control starved one on 6.18 once) is
// let go at once; one that gets less than its share under its cap has the
// cap raised.
func TestSharesStarvedUnderCap(t *testing.T) {
	tr := newShareTrace(t)
	tr.run(3, drifted)
	tr.step(map[string]tuse{"many": {cpu: 0.1, wait: 7}, "one": {cpu: 1.9, wait: 1}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_lifted many"}) || len(tr.caps) != 0 {
		t.Errorf("%v, caps %v", got, tr.caps)
	}
	if r := tr.evs[1].Reason; !strings.Contains(r, "starves under its cap") {
		t.Errorf("reason %q", r)
	}
	// Throttled, a capped tenant gets somewhat less than its quota (0.78
	// of 0.99 CPUs seen on the host) and waits: no reason to let go, but
	// it starves now: its cap rises by the shortfall and the tenant that
	// took the rest is capped at its share.
	tr = newShareTrace(t)
	tr.run(3, drifted)
	tr.run(2, map[string]tuse{"many": {cpu: 0.78, wait: 14}, "one": {cpu: 1.2, wait: 1}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_adjusted many", "share_capped one"}) {
		t.Fatalf("throttling's shortfall: %v", got)
	}
	if c := tr.caps; math.Abs(c["many"]-1.22) > 1e-9 || c["one"] != 1 {
		t.Errorf("caps %v, want many raised to 1.22, one at 1", c)
	}
	if r := tr.evs[2].Reason; !strings.Contains(r, "tenant many got 0.78 CPUs (39%) of its 1.00 CPUs (50%)") {
		t.Errorf("reason %q", r)
	}
	// Both capped at (about) their shares, the split fair: it holds.
	tr.run(10, fair)
	if len(tr.evs) != 3 {
		t.Errorf("split fair under both caps: %v", shareKinds(tr.evs))
	}
}

// TestSharesIdleNobodyCouldUse: every tenant waits, yet 9 % of the CPUs
// stay idle (the guest's balancing under emulation left 5–7 %): the
// shares are of the CPUs the tenants used, so the tenant short of its
// part of them starves, and the other is capped at its part.
func TestSharesIdleNobodyCouldUse(t *testing.T) {
	tr := newShareTrace(t)
	tr.run(1+tr.cfg.ShareWindow, map[string]tuse{"many": {cpu: 1.02, wait: 6}, "one": {cpu: 0.8, wait: 2}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many"}) {
		t.Fatalf("%v", got)
	}
	if c := tr.caps["many"]; math.Abs(c-0.91) > 1e-9 {
		t.Errorf("cap %g, want 0.91 (half of the 1.82 CPUs used)", c)
	}
	// More idle than twice the tolerance is slack: nobody starves.
	tr = newShareTrace(t)
	tr.run(5, map[string]tuse{"many": {cpu: 1, wait: 6}, "one": {cpu: 0.7, wait: 2}})
	if len(tr.evs) != 0 {
		t.Errorf("%v", shareKinds(tr.evs))
	}
}

// TestSharesIdle: with ShareIdle a capped tenant whose victims are
// latency-bound is SCHED_IDLE too; where the
// others then leave it less than half its share while it waits, it is made
// ordinary again under its cap, and never idle again while it lives; the
// lift clears idle.
func TestSharesIdle(t *testing.T) {
	tr := newShareTrace(t)
	tr.cfg.ShareIdle = true
	tr.waits = map[string]uint64{"one": 100000} // 15 µs per wait: latency-bound
	idle := func() map[string]bool {
		m := map[string]bool{}
		for _, a := range tr.acts {
			m[a.Tenant] = a.Idle
		}
		return m
	}
	tr.run(3, drifted)
	if got := idle(); !got["many"] || tr.caps["many"] != 1 {
		t.Fatalf("capped: idle %v, caps %v", got, tr.caps)
	}
	// A latency-bound victim leaves the idle tenant its share: it stays.
	tr.run(5, map[string]tuse{"many": {cpu: 1, wait: 6}, "one": {cpu: 0.8, wait: 0.5}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many"}) {
		t.Fatalf("idle at its share: %v", got)
	}
	// A CPU-bound one takes it all: idle off, the cap stays.
	tr.step(map[string]tuse{"many": {cpu: 0.02, wait: 8}, "one": {cpu: 1.98, wait: 1}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_adjusted many"}) {
		t.Fatalf("starved while idle: %v", got)
	}
	if a := tr.acts[len(tr.acts)-1]; a.Idle || a.CPUMax != 1 || !strings.Contains(tr.evs[1].Reason, "no longer idle") {
		t.Fatalf("action %+v, reason %q", a, tr.evs[1].Reason)
	}
	// Lifted (the victim stops), then capped again: not idle.
	tr.run(1, map[string]tuse{"many": drifted["many"]})
	tr.run(2*tr.cfg.ShareWindow, drifted)
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped many", "share_adjusted many", "share_lifted many", "share_capped many"}) {
		t.Fatalf("re-cap: %v", got)
	}
	if got := idle(); got["many"] {
		t.Errorf("idle again after it starved idle: %+v", tr.acts)
	}
	// Off, or a CPU-bound victim: 1.5 ms per wait, or a spinner whose
	// waits average 0.4 ms but whose wait time is mostly in 2 ms waits
	// (the tiers scenario's gold-co on the host): never idle. A request
	// handler starved hard, most of its wait time in 2 ms waits but its
	// mean 0.1 ms: idle.
	for _, c := range []struct {
		on    bool
		mix   *waitMix
		waits uint64
		idle  bool
	}{{false, nil, 100000, false}, {true, nil, 1000, false}, {true, &spinMix, 0, false}, {true, &starvedMix, 0, true}} {
		tr = newShareTrace(t)
		tr.cfg.ShareIdle = c.on
		tr.waits = map[string]uint64{"one": c.waits}
		if c.mix != nil {
			tr.mix = map[string]waitMix{"one": *c.mix}
		}
		tr.run(3, drifted)
		if got := idle(); got["many"] != c.idle || tr.caps["many"] != 1 {
			t.Errorf("ShareIdle %t, mix %+v, %d waits a tick: idle %v, caps %v; want idle %t", c.on, c.mix, c.waits, got, tr.caps, c.idle)
		}
		if m := tr.cum["one.s0"].RunqDelay.Mean(); c.mix == &spinMix && (m < 300*time.Microsecond || m >= 500*time.Microsecond) {
			t.Errorf("spinner: mean wait %s, want 0.3–0.5 ms (under the 0.5 ms the first rule read as latency-bound)", m)
		}
	}
}

// TestSharesCalmAfterCap: after a cap, no other tenant is capped before
// the victims' windows have filled with ticks under it: the ticks before
// the cap still count the victim short, and the next tenant a shade over
// its share would be capped too (the caps chased the excess between the
// tenants of fairbench's tiers scenario). A tenant over-taking once the
// window is past is capped.
func TestSharesCalmAfterCap(t *testing.T) {
	tr := newShareTrace(t)
	fair3 := map[string]tuse{"a": {cpu: 0.667, wait: 2}, "b": {cpu: 0.667, wait: 2}, "c": {cpu: 0.666, wait: 2}}
	tr.run(3, fair3)
	for range tr.cfg.ShareWindow {
		tr.step(map[string]tuse{"a": {cpu: 0.5, wait: 2}, "b": {cpu: 0.85, wait: 2}, "c": {cpu: 0.65, wait: 2}})
	}
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped b"}) {
		t.Fatalf("a starved by b: %v", got)
	}
	// Under b's cap a recovers, and c takes a shade more for a tick: a's
	// window still holds a tick before the cap.
	tr.step(map[string]tuse{"a": {cpu: 0.6, wait: 2}, "b": {cpu: 0.65, wait: 2}, "c": {cpu: 0.75, wait: 2}})
	tr.step(map[string]tuse{"a": {cpu: 0.66, wait: 2}, "b": {cpu: 0.66, wait: 2}, "c": {cpu: 0.68, wait: 2}})
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped b"}) {
		t.Fatalf("within the window after the cap: %v", got)
	}
	for range tr.cfg.ShareWindow {
		tr.step(map[string]tuse{"a": {cpu: 0.5, wait: 2}, "b": {cpu: 0.65, wait: 2}, "c": {cpu: 0.85, wait: 2}})
	}
	if got := shareKinds(tr.evs); !slices.Equal(got, []string{"share_capped b", "share_capped c"}) {
		t.Fatalf("c over-taking a window later: %v", got)
	}
}
