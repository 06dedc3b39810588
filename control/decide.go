package control

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/scoped-io/scoped/accounting"
	"github.com/scoped-io/scoped/cgroups"
)

// ScopeSample is one scope in a Snapshot.
type ScopeSample struct {
	Key    string // the scope's name, "tenant.scope"; unique in a snapshot
	Tenant string
	// ID is the scope's unified cgroup id, the key of other scopes'
	// Counters.PreemptedBy. A scope recreated under the same Key has a
	// new ID.
	ID uint64
	// Counters are cumulative since the scope was tracked.
	Counters accounting.Counters
	// PSI is the cgroup's cumulative CPU pressure; nil where the kernel
	// has none per cgroup.
	PSI *PSI
	// Weight and CPUMax are the scope's configured (base) CPU weight
	// (0 means the cgroup default, 100) and CPU max in CPUs (0: no cap):
	// what it gets back when the controller lets it go.
	Weight uint64
	CPUMax float64
	// TenantWeight is the CPU weight of the scope's tenant against other
	// tenants (0: unknown). With Snapshot.CPUs it gives every tenant its
	// entitled share, so that a tenant taking what its weight entitles it
	// to is never blamed (see Decide).
	TenantWeight uint64
	// TenantCPUMax is the tenant's configured CPU max in CPUs (its tier's
	// cpu_max; 0: no cap): DecideShares never caps a tenant above it, and
	// lifting its cap gives it back.
	TenantCPUMax float64
}

// PSI is a cgroup's cumulative cpu.pressure stall time, as cgroups reads
// it.
type PSI = cgroups.PSI

// Snapshot is every live scope at one time.
type Snapshot struct {
	At     time.Time
	Scopes []ScopeSample
	// CPUs is how many CPUs the scopes share (0: unknown, which turns the
	// entitlement rule off).
	CPUs float64
	// HostBusy is the CPU time the whole host has been busy, cumulative
	// (0: unknown). What the scopes did not use of it in a tick (the
	// daemon, other processes, the kernel) is not theirs to share.
	HostBusy time.Duration
}

// Levels of a throttled scope.
const (
	LevelNormal = 0 // base weight and CPU max
	LevelWeight = 1 // weight lowered
	LevelCapped = 2 // weight lowered and CPU max capped
)

// Action is what to set on a scope: absolute values, not a change. Level 0
// restores the scope's base weight and CPU max.
type Action struct {
	Key    string
	Weight uint64
	CPUMax float64 // CPUs; 0 means no cap
	Level  int
}

// Kinds of Event.
const (
	// EventDetected: victims named a scope for DetectTicks ticks; it is
	// stepped down at once unless MaxThrottled scopes are throttled.
	EventDetected    = "detected"
	EventSteppedDown = "stepped_down" // level 0 → 1: weight lowered
	EventCapped      = "capped"       // level 1 → 2: CPU max capped
	EventSteppedUp   = "stepped_up"   // level 2 → 1: cap lifted
	EventRestored    = "restored"     // level → 0: base weight and CPU max back
	// EventReleased: a throttled scope is gone; its state is dropped and
	// nothing is set.
	EventReleased = "released"
)

// Event is one decision of the controller, for logs, metrics and
// `scopectl events`.
type Event struct {
	At      time.Time
	Kind    string // one of the Event* constants
	Scope   string // the antagonist's key
	Tenant  string
	Victims []string // the scopes it hurt (at most 16), if any
	Level   int      // the scope's level after the event
	Reason  string   // human-readable, with the figures that decided
}

// State is what Decide remembers between ticks. The zero State is the
// start. Decide never modifies the State it is given.
type State struct {
	at        time.Time
	hostBusy  time.Duration // Snapshot.HostBusy of the last snapshot
	prev      map[string]prevSample
	victims   map[string]bool // victims of the last tick: exit thresholds apply
	streak    map[string]int  // unthrottled scopes: consecutive ticks named
	throttled map[string]throttle
}

type prevSample struct {
	id  uint64
	c   accounting.Counters
	psi *PSI
}

// throttle is one scope the controller has stepped down. Once restored it
// rests at level 0 for a hold, so that it is not stepped down again sooner
// than a cool-down after (and keeps its backoff if it is).
type throttle struct {
	tenant     string
	id         uint64
	level      int
	since      time.Time // the last step
	caps       int       // times capped in this episode (backoff)
	hot, quiet int       // consecutive ticks named and not calm / not
	baseWeight uint64
	baseMax    float64
	cap        float64 // level 2's CPU max
	weight     uint64  // applied
	cpuMax     float64 // applied
	applied    int     // the level weight and cpuMax are of
	victims    []string
}

// Throttled returns the level of every throttled scope, by key.
func (s State) Throttled() map[string]int {
	m := make(map[string]int, len(s.throttled))
	for k, th := range s.throttled {
		if th.level > LevelNormal {
			m[k] = th.level
		}
	}
	return m
}

// Internal constants of the policy.
const (
	// exitFraction: a victim stays a victim down to this fraction of the
	// entry thresholds; a scope is stepped down only above CalmCPU /
	// exitFraction.
	exitFraction = 0.5
	// blameMargin: a victim names only scopes that use more than this
	// times its own CPU.
	blameMargin = 1.25
	// atCapFraction: a scope that uses this much of its CPU max is at its
	// own limit, and waits for that reason; never a victim.
	atCapFraction = 0.9
	// capFraction of its CPU use in the tick it is capped is the most
	// level 2 leaves an antagonist.
	capFraction = 0.5
	// maxBackoff: leaving the cap waits Cooldown << min(caps-1, maxBackoff).
	maxBackoff = 3
	// overShare: under the entitlement rule, a scope (or tenant) is
	// blamed only when it uses more than this times its entitled share.
	overShare = 1.2
	// activeCPU: a tenant using less than this many CPUs in a tick does
	// not count as contending for the CPU.
	activeCPU = 0.02
	// maxEventVictims bounds Event.Victims.
	maxEventVictims = 16
	defaultWeight   = 100
)

// tickScope is one scope's figures in one tick.
type tickScope struct {
	s       *ScopeSample
	ok      bool // a delta exists: seen last tick, same cgroup, no reset
	d       accounting.Counters
	cpu     float64       // CPUs used
	p99     time.Duration // of its run-queue waits
	psi     float64       // cpu "full" stall fraction; -1: unknown
	preempt float64       // preemptions by other scopes per second
}

// Decide is the controller's policy: given the configuration, the state
// after the previous snapshot and a new snapshot, it returns the new state,
// the settings to apply (at most one per scope, only for scopes in snap)
// and the events to record. It reads no clock and keeps references to
// snap's counters, which must not change afterwards.
//
// A scope is a victim in a tick when it is not throttled itself, not at its
// own CPU max, waits long on the run queue (VictimRunqP99, or VictimPSI
// where PSI is known) and is preempted by other scopes (MinPreemptions).
// Its preemptions are attributed to the preempting scopes through
// Counters.PreemptedBy: a victim names every scope that made at least
// MinShare of its preemptions by other scopes and uses clearly (a quarter)
// more CPU than itself. Two scopes sharing a CPU fairly both wait, and a
// scope of several busy tasks waits behind its own tasks while every
// wake-up of a lighter neighbour preempts one of them; neither neighbour is
// to blame. Where the snapshot has the CPUs and the tenants' weights, a
// victim names a scope of another tenant only if that tenant uses more than
// its entitled share (its weight over the weights of all tenants busy in
// the tick, times the CPUs) while the victim's tenant uses less than its
// own, and a scope of its own tenant only if that scope uses more than its
// part of the tenant's share while the victim uses less: a tenant of a
// heavier tier, or one scope among many of a tenant, that takes what the
// weights give it is no noisy neighbour, however long others wait.
//
// A scope named in DetectTicks consecutive ticks while using at least
// twice CalmCPU is stepped down to level 1; still named (and not calm)
// DetectTicks ticks in a row once Cooldown has passed, it is capped; named
// by no victim, or calm, RecoverTicks ticks in a row once its hold has
// passed, it goes back one level. A scope seen for the first time, or
// whose counters went back, gives no signal in that tick; a throttled scope
// gone from the snapshot is dropped (released), and one back with a new
// cgroup id is restored.
func Decide(cfg Config, st State, snap Snapshot) (State, []Action, []Event) {
	now := snap.At
	if !cfg.Enabled {
		acts, evs := st.restoreAll(&snap, now, "controller disabled")
		return State{}, acts, evs
	}
	d := decider{cfg: cfg, now: now, next: State{
		at:        now,
		hostBusy:  snap.HostBusy,
		prev:      make(map[string]prevSample, len(snap.Scopes)),
		victims:   make(map[string]bool),
		streak:    make(map[string]int),
		throttled: make(map[string]throttle, len(st.throttled)),
	}}
	d.measure(st, snap)
	d.entitle(st, snap)
	d.carry(st)
	d.findVictims(st)
	d.attribute()
	d.stepThrottled()
	d.detect(st)
	d.settle()
	return d.next, d.acts, d.evs
}

type decider struct {
	cfg  Config
	now  time.Time
	next State
	acts []Action
	evs  []Event

	scopes  map[string]*tickScope
	keys    []string            // of scopes, sorted
	byID    map[uint64]string   // unified cgroup id → key
	victims []string            // this tick's, sorted
	score   map[string]uint64   // preemptions of the victims naming it by the scope
	of      map[string]uint64   // all their preemptions by other scopes
	hurt    map[string][]string // the victims naming the scope
	secs    float64             // the tick's length; 0 when there is no previous snapshot

	// The entitlement rule (share == nil: off).
	share      map[string]float64 // tenant → entitled CPUs this tick
	tenantCPU  map[string]float64 // tenant → CPUs used this tick
	busyScopes map[string]int     // tenant → its scopes using CPU this tick
}

// measure computes every scope's figures for this tick.
func (d *decider) measure(st State, snap Snapshot) {
	d.scopes = make(map[string]*tickScope, len(snap.Scopes))
	d.byID = make(map[uint64]string, len(snap.Scopes))
	dt := d.now.Sub(st.at)
	valid := !st.at.IsZero() && dt > 0
	secs := dt.Seconds()
	if valid {
		d.secs = secs
	}
	for i := range snap.Scopes {
		s := &snap.Scopes[i]
		if s.Key == "" || d.scopes[s.Key] != nil {
			continue // a duplicate: the first one counts
		}
		ts := &tickScope{s: s, psi: -1}
		d.scopes[s.Key] = ts
		d.keys = append(d.keys, s.Key)
		if _, dup := d.byID[s.ID]; s.ID != 0 && !dup {
			d.byID[s.ID] = s.Key
		}
		d.next.prev[s.Key] = prevSample{id: s.ID, c: s.Counters, psi: s.PSI}
		p, seen := st.prev[s.Key]
		if !valid || !seen || p.id != s.ID || wentBack(s.Counters, p.c) {
			continue
		}
		ts.ok = true
		ts.d = s.Counters.Sub(p.c)
		ts.cpu = ts.d.CPU.Seconds() / secs
		ts.p99 = ts.d.RunqDelay.Quantile(0.99)
		ts.preempt = float64(ts.d.Preemptions) / secs
		if s.PSI != nil && p.psi != nil && s.PSI.Full >= p.psi.Full {
			ts.psi = (s.PSI.Full - p.psi.Full).Seconds() / secs
		}
	}
	slices.Sort(d.keys)
}

// entitle computes every busy tenant's entitled share of the CPUs from the
// tenants' weights, where the snapshot has them all.
func (d *decider) entitle(st State, snap Snapshot) {
	if snap.CPUs <= 0 || math.IsNaN(snap.CPUs) || math.IsInf(snap.CPUs, 0) {
		return
	}
	cpus := snap.CPUs
	weight := map[string]uint64{}
	d.tenantCPU = map[string]float64{}
	d.busyScopes = map[string]int{}
	for _, key := range d.keys {
		ts := d.scopes[key]
		if ts.s.TenantWeight == 0 {
			d.tenantCPU = nil
			return // unknown weights: no entitlements
		}
		if !ts.ok {
			continue
		}
		weight[ts.s.Tenant] = ts.s.TenantWeight
		d.tenantCPU[ts.s.Tenant] += ts.cpu
		if ts.cpu > activeCPU/4 {
			d.busyScopes[ts.s.Tenant]++
		}
	}
	d.share, _ = entitlements(cpus, weight, d.tenantCPU, hostCPU(st.hostBusy, snap.HostBusy, d.secs))
}

// hostCPU is how many CPUs the whole host kept busy between two snapshots
// secs apart with HostBusy prev and now; -1 when unknown.
func hostCPU(prev, now time.Duration, secs float64) float64 {
	if secs <= 0 || prev <= 0 || now < prev {
		return -1
	}
	return (now - prev).Seconds() / secs
}

// entitlements is every tenant's entitled share of the CPUs in a tick (nil
// when no tenant is busy): its weight over the weights of the busy tenants
// (those that used at least activeCPU), times the CPUs the tenants could
// have had, avail: all cpus less what the rest of the host used (host, the
// CPUs the whole host kept busy, less what the tenants used; host < 0:
// unknown, all of them), never less than what the tenants used.
func entitlements(cpus float64, weight map[string]uint64, used map[string]float64, host float64) (share map[string]float64, avail float64) {
	var total, sum float64
	for _, t := range slices.Sorted(maps.Keys(weight)) { // in order: the same sums every time
		sum += used[t]
		if used[t] >= activeCPU {
			total += float64(weight[t])
		}
	}
	if total == 0 {
		return nil, 0
	}
	avail = cpus
	if host >= 0 {
		// The CPUs the tenants could have had: all, less what the rest
		// of the host used meanwhile.
		avail = max(cpus-max(host-sum, 0), sum, activeCPU)
	}
	share = make(map[string]float64, len(weight))
	for t, w := range weight {
		share[t] = avail * float64(w) / total
	}
	return share, avail
}

// entitled is a scope's part of its tenant's entitled share (0: the rule
// is off): the share split evenly among the tenant's busy scopes, as their
// equal weights split it.
func (d *decider) entitled(ts *tickScope) float64 {
	if d.share == nil {
		return 0
	}
	return d.share[ts.s.Tenant] / float64(max(d.busyScopes[ts.s.Tenant], 1))
}

// overShare tells whether, under the entitlement rule, scope a takes more
// than its entitlement while victim v gets less than its own; true when
// the rule is off.
func (d *decider) overShare(a, v *tickScope) bool {
	if d.share == nil {
		return true
	}
	at, vt := a.s.Tenant, v.s.Tenant
	if at != vt {
		return d.tenantCPU[at] > overShare*d.share[at] && d.tenantCPU[vt] < d.share[vt]
	}
	return a.cpu > overShare*d.entitled(a) && v.cpu < d.entitled(v)
}

// wentBack tells whether a scope's counters restarted.
func wentBack(c, prev accounting.Counters) bool {
	return c.CPU < prev.CPU || c.RunqDelay.Count < prev.RunqDelay.Count || c.Preemptions < prev.Preemptions
}

// carry keeps the throttled scopes that are still there, and releases the
// others.
func (d *decider) carry(st State) {
	for _, key := range slices.Sorted(maps.Keys(st.throttled)) {
		th := st.throttled[key]
		ts := d.scopes[key]
		switch {
		case (ts == nil || ts.s.ID != th.id) && th.level == LevelNormal:
			continue // resting: nothing to undo
		case ts == nil:
			d.event(EventReleased, key, th.tenant, th.victims, 0, "scope removed")
			continue
		case ts.s.ID != th.id:
			// A new cgroup under the same name: it has its base settings,
			// but say so to be sure.
			w, m := baseOf(ts.s)
			d.acts = append(d.acts, Action{Key: key, Weight: w, CPUMax: m, Level: LevelNormal})
			d.event(EventRestored, key, ts.s.Tenant, th.victims, 0, "scope recreated with a new cgroup")
			continue
		}
		th.tenant = ts.s.Tenant
		th.baseWeight, th.baseMax = baseOf(ts.s)
		if d.now.Before(th.since) {
			th.since = d.now // the clock went back: hold again from now
		}
		d.next.throttled[key] = th
	}
}

// findVictims marks this tick's victims.
func (d *decider) findVictims(st State) {
	for _, key := range d.keys {
		ts := d.scopes[key]
		if !ts.ok {
			continue
		}
		if d.next.throttled[key].level > LevelNormal {
			continue // it is being held down: waiting is expected
		}
		_, max := baseOf(ts.s)
		if max > 0 && ts.cpu >= atCapFraction*max {
			continue // waits for its own CPU max
		}
		f := 1.0
		if st.victims[key] {
			f = exitFraction
		}
		delayed := d.cfg.VictimRunqP99.Duration > 0 && ts.p99 >= time.Duration(f*float64(d.cfg.VictimRunqP99.Duration)) ||
			d.cfg.VictimPSI > 0 && ts.psi >= 0 && ts.psi >= f*d.cfg.VictimPSI
		if delayed && ts.preempt >= f*d.cfg.MinPreemptions {
			d.victims = append(d.victims, key)
			d.next.victims[key] = true
		}
	}
}

// attribute splits every victim's preemptions among the preempting scopes:
// a scope that made at least MinShare of a victim's preemptions by other
// scopes is named by it.
func (d *decider) attribute() {
	d.score = make(map[string]uint64)
	d.of = make(map[string]uint64)
	d.hurt = make(map[string][]string)
	for _, v := range d.victims {
		vs := d.scopes[v]
		var total uint64
		for id, n := range vs.d.PreemptedBy {
			if d.byID[id] != v {
				total += n
			}
		}
		if total == 0 {
			continue
		}
		for _, id := range slices.Sorted(maps.Keys(vs.d.PreemptedBy)) {
			n := vs.d.PreemptedBy[id]
			a, known := d.byID[id]
			switch {
			case !known || a == v || float64(n) < d.cfg.MinShare*float64(total):
				continue
			case d.scopes[a].cpu <= blameMargin*vs.cpu:
				// It gets not much more CPU than its victim: the two share
				// fairly, or the victim waits behind its own tasks (the
				// threads of a spinner, preempted by every wake-up of a
				// lighter neighbour), or they hurt each other and the
				// bigger one is to blame.
				continue
			case !d.overShare(d.scopes[a], vs):
				// It takes no more than the weights entitle it to.
				continue
			}
			d.score[a] += n
			d.of[a] += total
			d.hurt[a] = append(d.hurt[a], v)
		}
	}
}

// named tells whether a victim of this tick names the scope.
func (d *decider) named(key string) bool { return len(d.hurt[key]) > 0 }

// stepThrottled moves the throttled scopes a level if it is time.
func (d *decider) stepThrottled() {
	for _, key := range slices.Sorted(maps.Keys(d.next.throttled)) {
		th := d.next.throttled[key]
		ts := d.scopes[key]
		if !ts.ok {
			continue // no figures this tick: neither hot nor quiet
		}
		named := d.named(key)
		calm := ts.cpu < d.calmLimit(th)
		if named && !calm {
			th.hot++
			th.quiet = 0
			th.victims = capVictims(d.hurt[key])
		} else {
			th.quiet++
			th.hot = 0
		}
		held := d.now.Sub(th.since) >= d.hold(th)
		switch {
		case th.level == LevelNormal && th.hot >= d.cfg.DetectTicks && held:
			if d.active() >= d.cfg.MaxThrottled {
				break // stays resting until there is room
			}
			th.level = LevelWeight
			th.since = d.now
			th.hot = 0
			why := fmt.Sprintf("%s; again, for %d ticks", d.blame(key), d.cfg.DetectTicks)
			d.event(EventDetected, key, th.tenant, th.victims, LevelNormal, why)
			d.event(EventSteppedDown, key, th.tenant, th.victims, LevelWeight,
				fmt.Sprintf("weight %d → %d: %s", th.baseWeight, lowered(th.baseWeight, d.cfg.WeightDivisor), why))
		case th.level == LevelNormal:
			if held && th.hot == 0 {
				delete(d.next.throttled, key) // rested long enough: forget it
				continue
			}
		case th.hot > 0 && th.level < LevelCapped && th.hot >= d.cfg.DetectTicks && held:
			th.level = LevelCapped
			th.since = d.now
			th.caps++
			th.hot = 0
			th.cap = d.capFor(th, ts)
			d.event(EventCapped, key, th.tenant, th.victims, th.level,
				fmt.Sprintf("cpu max %.2f CPUs (weight stays %d): still named after the cool-down; %s",
					th.cap, lowered(th.baseWeight, d.cfg.WeightDivisor), d.blame(key)))
		case th.quiet > 0 && th.quiet >= d.cfg.RecoverTicks && held:
			why := fmt.Sprintf("named by no victim for %d ticks", th.quiet)
			if calm {
				why = fmt.Sprintf("calm for %d ticks, using %.2f CPUs (below %.2f)", th.quiet, ts.cpu, d.calmLimit(th))
			}
			th.level--
			th.since = d.now
			if th.level == LevelNormal {
				d.event(EventRestored, key, th.tenant, th.victims, th.level,
					fmt.Sprintf("weight %d back: %s", th.baseWeight, why))
				th.hot, th.quiet = 0, 0
				break // settle sets the base
			}
			d.event(EventSteppedUp, key, th.tenant, th.victims, th.level,
				fmt.Sprintf("cap lifted (weight stays %d): %s", lowered(th.baseWeight, d.cfg.WeightDivisor), why))
		}
		d.next.throttled[key] = th
	}
}

// detect steps down the scopes named long enough.
func (d *decider) detect(st State) {
	for _, key := range d.keys {
		if _, throttled := d.next.throttled[key]; throttled || !d.named(key) {
			continue
		}
		ts := d.scopes[key]
		if !ts.ok || ts.cpu < d.cfg.CalmCPU/exitFraction {
			continue // too small to be the problem
		}
		n := st.streak[key] + 1
		d.next.streak[key] = n
		if n < d.cfg.DetectTicks {
			continue
		}
		victims := capVictims(d.hurt[key])
		if busy := d.active(); busy >= d.cfg.MaxThrottled {
			if n == d.cfg.DetectTicks {
				d.event(EventDetected, key, ts.s.Tenant, victims, LevelNormal,
					fmt.Sprintf("%s; left alone: %d scopes are throttled already", d.blame(key), busy))
			}
			continue
		}
		delete(d.next.streak, key)
		w, m := baseOf(ts.s)
		d.next.throttled[key] = throttle{
			tenant: ts.s.Tenant, id: ts.s.ID, level: LevelWeight, since: d.now,
			baseWeight: w, baseMax: m, weight: w, cpuMax: m, victims: victims,
		}
		why := fmt.Sprintf("%s; for %d ticks", d.blame(key), n)
		d.event(EventDetected, key, ts.s.Tenant, victims, LevelNormal, why)
		d.event(EventSteppedDown, key, ts.s.Tenant, victims, LevelWeight,
			fmt.Sprintf("weight %d → %d: %s", w, lowered(w, d.cfg.WeightDivisor), why))
	}
}

// settle emits one action for every throttled scope whose settings are
// not yet what its level wants (a step, or a new base).
func (d *decider) settle() {
	for _, key := range slices.Sorted(maps.Keys(d.next.throttled)) {
		th := d.next.throttled[key]
		w, m := d.settings(th)
		if th.level == th.applied && (th.level == LevelNormal || w == th.weight && m == th.cpuMax) {
			continue // resting scopes get a new base from whoever changed it
		}
		th.weight, th.cpuMax, th.applied = w, m, th.level
		d.next.throttled[key] = th
		d.acts = append(d.acts, Action{Key: key, Weight: w, CPUMax: m, Level: th.level})
	}
}

// active counts the scopes stepped down now.
func (d *decider) active() int {
	n := 0
	for _, th := range d.next.throttled {
		if th.level > LevelNormal {
			n++
		}
	}
	return n
}

// settings are the weight and CPU max of a throttled scope at its level.
func (d *decider) settings(th throttle) (uint64, float64) {
	if th.level == LevelNormal {
		return th.baseWeight, th.baseMax
	}
	w := lowered(th.baseWeight, d.cfg.WeightDivisor)
	if th.level < LevelCapped {
		return w, th.baseMax
	}
	m := th.cap
	if th.baseMax > 0 && th.baseMax < m {
		m = th.baseMax
	}
	return w, m
}

// capFor is level 2's CPU max for a scope as it is now. Under the
// entitlement rule it never goes below the scope's entitled share: the
// controller takes away what the antagonist takes beyond its weight, not
// what its tier gives it.
func (d *decider) capFor(th throttle, ts *tickScope) float64 {
	m := min(d.cfg.CapCPUs, capFraction*ts.cpu)
	if part := d.entitled(ts); part > 0 {
		m = max(m, part)
	}
	if th.baseMax > 0 {
		m = min(m, th.baseMax)
	}
	return max(m, minCapCPUs)
}

// calmLimit is the CPU use below which a throttled scope is calm.
func (d *decider) calmLimit(th throttle) float64 {
	switch th.level {
	case LevelCapped:
		return min(d.cfg.CalmCPU, th.cap/2)
	case LevelNormal:
		return d.cfg.CalmCPU / exitFraction // as to be stepped down first
	}
	return d.cfg.CalmCPU
}

// hold is the least time a throttled scope stays at its level.
func (d *decider) hold(th throttle) time.Duration {
	if th.level == LevelCapped && th.caps > 1 {
		return d.cfg.Cooldown.Duration << min(th.caps-1, maxBackoff)
	}
	return d.cfg.Cooldown.Duration
}

// listFirst writes each of the first three items with write, separated by
// commas, and how many more there are, for an event's reason.
func listFirst(b *strings.Builder, items []string, write func(string)) {
	for i, v := range items {
		if i == 3 {
			fmt.Fprintf(b, ", and %d more", len(items)-i)
			return
		}
		if i > 0 {
			b.WriteString(", ")
		}
		write(v)
	}
}

// blame describes why key is named: its victims' figures and its own.
func (d *decider) blame(key string) string {
	var b strings.Builder
	listFirst(&b, d.hurt[key], func(v string) {
		vs := d.scopes[v]
		fmt.Fprintf(&b, "victim %s: run-queue p99 %s, preempted %.0f/s by other scopes",
			v, vs.p99.Round(10*time.Microsecond), vs.preempt)
		if vs.psi >= 0 {
			fmt.Fprintf(&b, ", cpu pressure full %.0f%%", 100*vs.psi)
		}
	})
	ts := d.scopes[key]
	share := 0.0
	if d.of[key] > 0 {
		share = float64(d.score[key]) / float64(d.of[key])
	}
	rate := 0.0
	if d.secs > 0 {
		rate = float64(d.score[key]) / d.secs
	}
	fmt.Fprintf(&b, "; %s made %.0f%% of those preemptions (%.0f/s), using %.2f CPUs",
		key, 100*share, rate, ts.cpu)
	if d.share != nil {
		t := ts.s.Tenant
		fmt.Fprintf(&b, " (tenant %s: %.2f CPUs, entitled to %.2f)", t, d.tenantCPU[t], d.share[t])
	}
	return b.String()
}

func (d *decider) event(kind, key, tenant string, victims []string, level int, reason string) {
	d.evs = append(d.evs, Event{
		At: d.now, Kind: kind, Scope: key, Tenant: tenant,
		Victims: slices.Clone(victims), Level: level, Reason: reason,
	})
}

// restoreAll lets every throttled scope go, for Close and a disabled
// configuration. With a snapshot, scopes not in it are released (nothing to
// set) and the others get the base of their sample; without one, every
// scope gets the base it had when last seen.
func (s State) restoreAll(snap *Snapshot, now time.Time, why string) ([]Action, []Event) {
	var present map[string]*ScopeSample
	if snap != nil {
		present = make(map[string]*ScopeSample, len(snap.Scopes))
		for i := range snap.Scopes {
			if sc := &snap.Scopes[i]; present[sc.Key] == nil {
				present[sc.Key] = sc
			}
		}
	}
	var acts []Action
	var evs []Event
	for _, key := range slices.Sorted(maps.Keys(s.throttled)) {
		th := s.throttled[key]
		if th.level == LevelNormal {
			continue
		}
		ev := Event{At: now, Kind: EventRestored, Scope: key, Tenant: th.tenant,
			Victims: slices.Clone(th.victims), Level: LevelNormal}
		w, m := th.baseWeight, th.baseMax
		sc, ok := present[key]
		switch {
		case snap != nil && !ok:
			ev.Kind, ev.Reason = EventReleased, "scope removed"
		default:
			if ok {
				w, m = baseOf(sc)
			}
			ev.Reason = fmt.Sprintf("weight %d back: %s", w, why)
			acts = append(acts, Action{Key: key, Weight: w, CPUMax: m, Level: LevelNormal})
		}
		evs = append(evs, ev)
	}
	return acts, evs
}

// baseOf is a scope's configured weight and CPU max, made sane.
func baseOf(s *ScopeSample) (uint64, float64) {
	w, m := s.Weight, s.CPUMax
	if w == 0 {
		w = defaultWeight
	}
	if math.IsNaN(m) || math.IsInf(m, 0) || m < 0 {
		m = 0
	}
	return w, m
}

// lowered is level 1's weight for a scope of base weight w.
func lowered(w, div uint64) uint64 {
	if div == 0 {
		div = 1
	}
	return max(w/div, 1)
}

func capVictims(v []string) []string {
	if len(v) > maxEventVictims {
		v = v[:maxEventVictims]
	}
	return slices.Clone(v)
}
