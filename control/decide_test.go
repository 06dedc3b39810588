package control

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

// The cast of most traces: a victim, an antagonist of another tenant and a
// bystander, and what they do in a tick.
const (
	victim     = "acme.prod"
	antagonist = "evil.prod"
	bystander  = "bob.prod"
)

var (
	// hurt: long waits, preempted by the antagonist 200 times a second.
	hurt = use{cpu: 0.5, runq: 20 * time.Millisecond, by: map[string]float64{antagonist: 200}}
	// fine: short waits, rarely preempted.
	fine = use{cpu: 0.5, runq: 100 * time.Microsecond, by: map[string]float64{antagonist: 5}}
	// noisy: the antagonist spins on almost two CPUs.
	noisy = use{cpu: 1.8}
	idle  = use{cpu: 0.3}
)

func cast(v, a use) map[string]use {
	return map[string]use{victim: v, antagonist: a, bystander: idle}
}

func wantLog(t *testing.T, tr *trace, want ...string) {
	t.Helper()
	if !slices.Equal(tr.log, want) {
		t.Errorf("decisions:\n  %s\nwant:\n  %s", strings.Join(tr.log, "\n  "), strings.Join(want, "\n  "))
	}
}

// A sustained antagonist: detected after DetectTicks, weight lowered, capped
// one cool-down later, then left alone while it stays that way.
func TestDecideSustained(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(40, cast(hurt, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"14 capped evil.prod 2",
		"14 set evil.prod 10 0.9", // half of 1.8 CPUs, below CapCPUs
	)
	if got := tr.st.Throttled(); !mapsEqual(got, map[string]int{antagonist: 2}) {
		t.Errorf("throttled %v", got)
	}
	e := tr.evs[1]
	if e.Tenant != "evil" || !slices.Equal(e.Victims, []string{victim}) {
		t.Errorf("event %+v", e)
	}
	for _, s := range []string{"weight 100 → 10", "victim acme.prod", "run-queue p99 2", "preempted 200/s", "100% of those", "1.80 CPUs", "3 ticks"} {
		if !strings.Contains(e.Reason, s) {
			t.Errorf("reason %q lacks %q", e.Reason, s)
		}
	}
}

// The victim recovers: the antagonist goes back one level per cool-down.
func TestDecideRecovery(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(14, cast(hurt, noisy))
	tr.run(30, cast(fine, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"14 capped evil.prod 2",
		"14 set evil.prod 10 0.9",
		"24 stepped_up evil.prod 1",
		"24 set evil.prod 10 0",
		"34 restored evil.prod 0",
		"34 set evil.prod 100 0",
	)
	if len(tr.st.Throttled()) != 0 {
		t.Errorf("still throttled: %v", tr.st.Throttled())
	}
	if r := tr.evs[len(tr.evs)-1].Reason; !strings.Contains(r, "named by no victim") {
		t.Errorf("restored because %q", r)
	}
}

// A scope restored to level 0 is not stepped down again before a
// cool-down has passed; then it is, and it rests no longer.
func TestDecideReoffend(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(14, cast(hurt, noisy))
	tr.run(20, cast(fine, noisy)) // restored at 34
	tr.run(15, cast(hurt, noisy))
	tr.run(40, cast(fine, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"14 capped evil.prod 2",
		"14 set evil.prod 10 0.9",
		"24 stepped_up evil.prod 1",
		"24 set evil.prod 10 0",
		"34 restored evil.prod 0",
		"34 set evil.prod 100 0",
		"44 detected evil.prod 0", // hurt again from 35
		"44 stepped_down evil.prod 1",
		"44 set evil.prod 10 0",
		"54 restored evil.prod 0", // never capped: named by no victim from 50
		"54 set evil.prod 100 0",
	)
	if len(tr.st.throttled) != 0 {
		t.Errorf("still remembered after resting: %+v", tr.st.throttled)
	}
}

// The antagonist calms down while its victim still waits: it goes back too.
func TestDecideCalm(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(14, cast(hurt, noisy))
	tr.run(11, cast(hurt, use{cpu: 0.1}))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"14 capped evil.prod 2",
		"14 set evil.prod 10 0.9",
		"24 stepped_up evil.prod 1",
		"24 set evil.prod 10 0",
	)
	if r := tr.evs[len(tr.evs)-1].Reason; !strings.Contains(r, "calm for 10 ticks, using 0.10 CPUs") {
		t.Errorf("stepped up because %q", r)
	}
}

// No action where there is no antagonist to blame.
func TestDecideNoAction(t *testing.T) {
	for _, c := range []struct {
		name  string
		base  base // of the victim
		uses  map[string]use
		flaps []map[string]use // cycled instead of uses
	}{{
		// High delay at its own CPU max, even when another scope runs.
		name: "at own cpu max",
		base: base{100, 0.5},
		uses: cast(use{cpu: 0.48, runq: 50 * time.Millisecond, by: map[string]float64{antagonist: 200}}, noisy),
	}, {
		name: "delay without preemptions",
		uses: cast(use{cpu: 1, runq: 50 * time.Millisecond}, noisy),
	}, {
		name: "preemptions without delay",
		uses: cast(use{cpu: 1, runq: 2 * time.Millisecond, by: map[string]float64{antagonist: 900}}, noisy),
	}, {
		name: "too few preemptions",
		uses: cast(use{cpu: 1, runq: 50 * time.Millisecond, by: map[string]float64{antagonist: 8}}, noisy),
	}, {
		name: "preempted by itself",
		uses: cast(use{cpu: 1, runq: 50 * time.Millisecond, by: map[string]float64{victim: 900}}, noisy),
	}, {
		// The antagonist made only 20% of the victim's preemptions; the
		// rest came from a scope that is not (or no longer) in the snapshot.
		name: "share too small",
		uses: cast(use{cpu: 0.5, runq: 50 * time.Millisecond, by: map[string]float64{antagonist: 50, "gone.prod": 200}}, noisy),
	}, {
		// Two scopes sharing fairly: the "antagonist" uses hardly more.
		name: "fair share",
		uses: cast(use{cpu: 0.9, runq: 20 * time.Millisecond, by: map[string]float64{antagonist: 300}}, use{cpu: 1.1}),
	}, {
		// Four spinners on one CPU wait behind each other, and every
		// wake-up of a lighter service preempts one of them: the service
		// is not to blame (the first live recording's mistake).
		name: "lighter neighbour's wake-ups",
		uses: map[string]use{
			antagonist: {cpu: 0.63, runq: 20 * time.Millisecond, psi: 0.37, by: map[string]float64{victim: 380}},
			victim:     {cpu: 0.41, runq: time.Millisecond, psi: 0.05, by: map[string]float64{antagonist: 30}},
		},
	}, {
		name: "antagonist too small",
		uses: cast(hurt, use{cpu: 0.35}),
	}, {
		name: "psi without preemptions",
		uses: cast(use{cpu: 0.5, runq: time.Millisecond, psi: 0.9}, noisy),
	}, {
		name: "psi below threshold",
		uses: cast(use{cpu: 0.5, runq: time.Millisecond, psi: 0.08, by: map[string]float64{antagonist: 200}}, noisy),
	}, {
		name: "no psi",
		uses: cast(use{cpu: 0.5, runq: time.Millisecond, psi: -1, by: map[string]float64{antagonist: 200}}, noisy),
	}, {
		// Spikes shorter than DetectTicks.
		name:  "brief spikes",
		flaps: []map[string]use{cast(hurt, noisy), cast(hurt, noisy), cast(fine, idle), cast(fine, idle), cast(fine, idle)},
	}, {
		// The victim's p99 flaps every tick between above the entry
		// threshold and below the exit one.
		name:  "hard flapping",
		flaps: []map[string]use{cast(hurt, noisy), cast(fine, noisy)},
	}} {
		t.Run(c.name, func(t *testing.T) {
			tr := newTrace(t, DefaultConfig())
			if c.base != (base{}) {
				tr.bases[victim] = c.base
			}
			for i := range 60 {
				if c.flaps != nil {
					tr.step(c.flaps[i%len(c.flaps)])
				} else {
					tr.step(c.uses)
				}
			}
			wantLog(t, tr)
		})
	}
}

// PSI alone (short run-queue waits) makes a victim where the kernel has it.
func TestDecidePSI(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(4, cast(use{cpu: 0.5, runq: time.Millisecond, psi: 0.8, by: map[string]float64{antagonist: 200}}, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
	)
	if r := tr.evs[0].Reason; !strings.Contains(r, "cpu pressure full 80%") {
		t.Errorf("reason %q", r)
	}
}

// A signal around the threshold (5 ms): above the entry threshold, then
// between the exit (2.5 ms) and the entry one. Hysteresis keeps the victim a victim: the
// antagonist is stepped down and capped once, and stays capped.
func TestDecideHysteresis(t *testing.T) {
	above := use{cpu: 0.5, runq: 12 * time.Millisecond, by: map[string]float64{antagonist: 200}}  // p99 14 ms
	between := use{cpu: 0.5, runq: 3 * time.Millisecond, by: map[string]float64{antagonist: 200}} // p99 3.5 ms
	tr := newTrace(t, DefaultConfig())
	for i := range 60 {
		if i%2 == 0 {
			tr.step(cast(above, noisy))
		} else {
			tr.step(cast(between, noisy))
		}
	}
	// Tick 1 has no delta and tick 2 is "between": the streak starts at 3.
	wantLog(t, tr,
		"5 detected evil.prod 0",
		"5 stepped_down evil.prod 1",
		"5 set evil.prod 10 0",
		"15 capped evil.prod 2",
		"15 set evil.prod 10 0.9",
	)

	// Without the exit threshold, "between" alone never makes a victim.
	tr = newTrace(t, DefaultConfig())
	tr.run(30, cast(between, noisy))
	wantLog(t, tr)

	// Throttled at level 1, the signal flapping every tick: the level
	// holds (neither DetectTicks hot nor RecoverTicks quiet in a row).
	tr = newTrace(t, DefaultConfig())
	tr.run(4, cast(hurt, noisy))
	for i := range 60 {
		if i%2 == 0 {
			tr.step(cast(fine, noisy))
		} else {
			tr.step(cast(hurt, noisy))
		}
	}
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
	)
}

// A closed loop: the victim is hurt whenever the antagonist is not capped.
// The controller does not oscillate freely: every return to the cap lasts
// at least as long as the one before (backoff), and levels change only
// cool-downs apart.
func TestDecideClosedLoop(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	var capped []int // ticks of "capped"
	var lastChange, changes int
	for tick := 1; tick <= 400; tick++ {
		v := hurt
		if tr.st.Throttled()[antagonist] == LevelCapped {
			v = fine
		}
		_, evs := tr.step(cast(v, noisy))
		for _, e := range evs {
			if e.Kind == EventDetected {
				continue
			}
			if lastChange != 0 && tick-lastChange < 10 {
				t.Errorf("tick %d: %s only %d ticks after the last step", tick, e.Kind, tick-lastChange)
			}
			lastChange = tick
			changes++
			if e.Kind == EventCapped {
				capped = append(capped, tick)
			}
			if e.Kind == EventRestored || e.Kind == EventReleased {
				t.Errorf("tick %d: %s", tick, e.Kind)
			}
		}
	}
	t.Logf("capped at ticks %v; %d level changes", capped, changes)
	want := []int{14, 34, 64, 114, 204, 294, 384} // held 10, 20, 40, 80, 80, 80 s
	if !slices.Equal(capped, want) {
		t.Errorf("capped at %v, want %v", capped, want)
	}
}

// A throttled scope that goes away is dropped without an action; one that
// comes back with a new cgroup is restored and starts afresh.
func TestDecideRemovedAndRecreated(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(4, cast(hurt, noisy))
	tr.step(map[string]use{victim: fine, bystander: idle})
	if len(tr.st.Throttled()) != 0 {
		t.Errorf("still throttled: %v", tr.st.Throttled())
	}
	tr.recreate(antagonist)
	tr.run(4, cast(hurt, noisy)) // seen anew at 6: detected at 9
	tr.recreate(antagonist)
	tr.step(cast(hurt, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"5 released evil.prod 0",
		"9 detected evil.prod 0",
		"9 stepped_down evil.prod 1",
		"9 set evil.prod 10 0",
		"10 restored evil.prod 0",
		"10 set evil.prod 100 0",
	)
	if r := tr.evs[2].Reason; r != "scope removed" {
		t.Errorf("released because %q", r)
	}
}

// Counters that go back (the source restarted) give no signal for a tick,
// and the detection starts over.
func TestDecideCountersBack(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(3, cast(hurt, noisy))
	tr.reset(victim)
	tr.run(4, cast(hurt, noisy))
	wantLog(t, tr,
		"7 detected evil.prod 0",
		"7 stepped_down evil.prod 1",
		"7 set evil.prod 10 0",
	)

	// The clock going back is no tick either.
	tr = newTrace(t, DefaultConfig())
	tr.run(3, cast(hurt, noisy))
	tr.feed(tr.snap(-time.Second, cast(hurt, noisy)))
	tr.run(3, cast(hurt, noisy))
	wantLog(t, tr,
		"7 detected evil.prod 0",
		"7 stepped_down evil.prod 1",
		"7 set evil.prod 10 0",
	)
}

// At most MaxThrottled scopes are throttled; the next antagonist takes a
// free place as soon as there is one.
func TestDecideMaxThrottled(t *testing.T) {
	cfg := DefaultConfig()
	cfg.MaxThrottled = 2
	tr := newTrace(t, cfg)
	uses := map[string]use{}
	for _, n := range []string{"1", "2", "3", "4", "5"} {
		uses["v"+n+".prod"] = use{cpu: 0.5, runq: 20 * time.Millisecond, by: map[string]float64{"a" + n + ".prod": 300}}
		uses["a"+n+".prod"] = noisy
	}
	tr.run(5, uses)
	delete(uses, "a1.prod")
	tr.step(uses)
	wantLog(t, tr,
		"4 detected a1.prod 0",
		"4 stepped_down a1.prod 1",
		"4 detected a2.prod 0",
		"4 stepped_down a2.prod 1",
		"4 detected a3.prod 0",
		"4 detected a4.prod 0",
		"4 detected a5.prod 0",
		"4 set a1.prod 10 0",
		"4 set a2.prod 10 0",
		"6 released a1.prod 0",
		"6 detected a3.prod 0",
		"6 stepped_down a3.prod 1",
		"6 set a3.prod 10 0",
	)
	if r := tr.evs[4].Reason; !strings.Contains(r, "left alone: 2 scopes are throttled already") {
		t.Errorf("reason %q", r)
	}
}

// One antagonist hurting several victims is named by all of them; victims
// of several antagonists name each that made at least MinShare.
func TestDecideSeveral(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	uses := map[string]use{
		"v1.prod": {cpu: 0.5, runq: 20 * time.Millisecond, by: map[string]float64{"a1.prod": 150, "a2.prod": 100, "small.prod": 20}},
		"v2.prod": {cpu: 0.5, runq: 20 * time.Millisecond, by: map[string]float64{"a1.prod": 150}},
		"a1.prod": noisy, "a2.prod": noisy, "small.prod": noisy,
	}
	tr.run(4, uses)
	wantLog(t, tr,
		"4 detected a1.prod 0",
		"4 stepped_down a1.prod 1",
		"4 detected a2.prod 0",
		"4 stepped_down a2.prod 1",
		"4 set a1.prod 10 0",
		"4 set a2.prod 10 0",
	)
	if v := tr.evs[0].Victims; !slices.Equal(v, []string{"v1.prod", "v2.prod"}) {
		t.Errorf("a1's victims %v", v)
	}
}

// Two scopes that preempt each other and both wait: the one using more CPU
// is to blame, never both; with equal use, neither.
func TestDecideMutual(t *testing.T) {
	mutual := func(cpuX, cpuY float64) map[string]use {
		return map[string]use{
			"x.prod": {cpu: cpuX, runq: 20 * time.Millisecond, by: map[string]float64{"y.prod": 200}},
			"y.prod": {cpu: cpuY, runq: 20 * time.Millisecond, by: map[string]float64{"x.prod": 200}},
		}
	}
	tr := newTrace(t, DefaultConfig())
	tr.run(30, mutual(1.5, 0.5))
	wantLog(t, tr,
		"4 detected x.prod 0",
		"4 stepped_down x.prod 1",
		"4 set x.prod 10 0",
		"14 capped x.prod 2",
		"14 set x.prod 10 0.75",
	)
	tr = newTrace(t, DefaultConfig())
	tr.run(30, mutual(1, 1))
	wantLog(t, tr)
}

// A scope of the victim's own tenant is an antagonist like any other.
func TestDecideSameTenant(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(4, map[string]use{
		"acme.prod":    {cpu: 0.5, runq: 20 * time.Millisecond, by: map[string]float64{"acme.staging": 300}},
		"acme.staging": noisy,
	})
	wantLog(t, tr,
		"4 detected acme.staging 0",
		"4 stepped_down acme.staging 1",
		"4 set acme.staging 10 0",
	)
}

// A new base (the configuration was reloaded) is applied at the current
// level; the cap never exceeds the scope's own CPU max.
func TestDecideBaseChange(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.bases[antagonist] = base{300, 1.5}
	tr.run(4, cast(hurt, noisy))
	tr.bases[antagonist] = base{500, 1.5}
	tr.step(cast(hurt, noisy))
	tr.run(9, cast(hurt, noisy))
	tr.bases[antagonist] = base{500, 0.2}
	tr.step(cast(hurt, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 30 1.5",
		"5 set evil.prod 50 1.5",
		"14 capped evil.prod 2",
		"14 set evil.prod 50 0.9",
		"15 set evil.prod 50 0.2",
	)
	if a := tr.acts[1]; a.Level != LevelWeight {
		t.Errorf("action %+v", a)
	}
}

// Disabling the controller lets every throttled scope go.
func TestDecideDisabled(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.run(4, cast(hurt, noisy))
	tr.cfg.Enabled = false
	tr.step(cast(hurt, noisy))
	tr.step(cast(hurt, noisy))
	wantLog(t, tr,
		"4 detected evil.prod 0",
		"4 stepped_down evil.prod 1",
		"4 set evil.prod 10 0",
		"5 restored evil.prod 0",
		"5 set evil.prod 100 0",
	)
}

// Decide is a function: the same inputs give the same outputs.
func TestDecideDeterministic(t *testing.T) {
	play := func() []string {
		tr := newTrace(t, DefaultConfig())
		uses := cast(hurt, noisy)
		uses["x.prod"] = use{cpu: 0.5, runq: 30 * time.Millisecond, by: map[string]float64{antagonist: 100, "y.prod": 100}}
		uses["y.prod"] = noisy
		tr.run(20, uses)
		tr.run(30, cast(fine, noisy))
		return tr.log
	}
	a, b := play(), play()
	if !slices.Equal(a, b) || len(a) == 0 {
		t.Errorf("two runs differ:\n%v\n%v", a, b)
	}
}

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Config{}).Validate(); err != nil {
		t.Errorf("disabled zero config: %v", err)
	}
	for name, mod := range map[string]func(*Config){
		"interval":       func(c *Config) { c.Interval.Duration = 0 },
		"cooldown":       func(c *Config) { c.Cooldown.Duration = -1 },
		"detect":         func(c *Config) { c.DetectTicks = 0 },
		"recover":        func(c *Config) { c.RecoverTicks = 1001 },
		"p99":            func(c *Config) { c.VictimRunqP99.Duration = -1 },
		"psi":            func(c *Config) { c.VictimPSI = 1.5 },
		"both off":       func(c *Config) { c.VictimPSI, c.VictimRunqP99.Duration = 0, 0 },
		"preemptions":    func(c *Config) { c.MinPreemptions = 0 },
		"share":          func(c *Config) { c.MinShare = 0 },
		"divisor":        func(c *Config) { c.WeightDivisor = 0 },
		"cap":            func(c *Config) { c.CapCPUs = 0.001 },
		"calm":           func(c *Config) { c.CalmCPU = -1 },
		"max throttled":  func(c *Config) { c.MaxThrottled = 0 },
		"max events":     func(c *Config) { c.MaxEvents = 0 },
		"nan share":      func(c *Config) { c.MinShare = math.NaN() },
		"inf cap":        func(c *Config) { c.CapCPUs = math.Inf(1) },
		"nan psi":        func(c *Config) { c.VictimPSI = math.NaN() },
		"nan preemption": func(c *Config) { c.MinPreemptions = math.NaN() },
	} {
		c := DefaultConfig()
		mod(&c)
		if err := c.Validate(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// The entitlement rule: on 2 CPUs, a tenant of weight 400 against one of
// weight 100 is entitled to 1.6 CPUs. Taking them while the lighter tenant
// waits and is preempted is the weights at work, not a noisy neighbour.
func TestDecideEntitlementTiers(t *testing.T) {
	uses := map[string]use{
		"bronze.prod": {cpu: 0.4, runq: 20 * time.Millisecond, by: map[string]float64{"gold.prod": 200}},
		"gold.prod":   {cpu: 1.6},
	}
	tr := newTrace(t, DefaultConfig())
	tr.cpus, tr.weights = 2, map[string]uint64{"gold": 400, "bronze": 100}
	tr.run(30, uses)
	wantLog(t, tr)

	// Without the weights (the rule off) the same trace throttles gold.
	tr = newTrace(t, DefaultConfig())
	tr.run(6, uses)
	if len(tr.evs) == 0 {
		t.Error("without weights, gold was not stepped down: the test no longer shows the rule")
	}

	// Gold well beyond its 1.6 CPUs (bronze held under its 0.4) is
	// stepped down, and capped no lower than its entitlement.
	tr = newTrace(t, DefaultConfig())
	tr.cpus, tr.weights = 2, map[string]uint64{"gold": 400, "bronze": 100}
	tr.run(20, map[string]use{
		"bronze.prod": {cpu: 0.05, runq: 20 * time.Millisecond, by: map[string]float64{"gold.prod": 200}},
		"gold.prod":   {cpu: 1.95},
	})
	if got := kinds(tr.evs); len(got) < 3 || got[1] != "stepped_down gold.prod" || got[2] != "capped gold.prod" {
		t.Fatalf("gold over its share: events %v, want it stepped down and capped", got)
	}
	if a := tr.acts[len(tr.acts)-1]; a.Level != LevelCapped || a.CPUMax < 1.6 {
		t.Errorf("cap %+v: want at least gold's entitled 1.6 CPUs", a)
	}
	if !strings.Contains(tr.evs[1].Reason, "entitled to 1.60") {
		t.Errorf("reason %q does not give the entitlement", tr.evs[1].Reason)
	}
}

// A tenant with one scope against a tenant with eight, equal weights: the
// single scope takes its tenant's whole share, 8× what each of the eight
// gets, and preempts them; that is what equal tenant weights mean.
func TestDecideEntitlementScopes(t *testing.T) {
	uses := map[string]use{"one.prod": {cpu: 1}}
	for i := range 8 {
		uses[fmt.Sprintf("many.e%d", i)] = use{cpu: 0.125, runq: 20 * time.Millisecond, by: map[string]float64{"one.prod": 100}}
	}
	tr := newTrace(t, DefaultConfig())
	tr.cpus = 2
	tr.run(30, uses)
	wantLog(t, tr)
}

// The noisy neighbour the rule is for: equal weights, the antagonist on
// 1.8 of 2 CPUs while its victim gets 0.5 of the 1 it is entitled to.
func TestDecideEntitlementNoisy(t *testing.T) {
	tr := newTrace(t, DefaultConfig())
	tr.cpus = 2
	tr.run(5, cast(hurt, noisy))
	if got := kinds(tr.evs); !slices.Contains(got, "stepped_down "+antagonist) {
		t.Errorf("events %v, want the antagonist stepped down", got)
	}
}

// What the rest of the host uses (here the daemon, 0.5 CPUs) is not the
// tenants' to share: of the 1.5 CPUs left each is entitled to 0.75, and a
// neighbour on 1.1 CPUs takes too much, which it would not of 2 CPUs.
func TestDecideEntitlementHostBusy(t *testing.T) {
	uses := map[string]use{
		victim:     {cpu: 0.4, runq: 20 * time.Millisecond, by: map[string]float64{antagonist: 200}},
		antagonist: {cpu: 1.1},
	}
	tr := newTrace(t, DefaultConfig())
	tr.cpus, tr.other = 2, 0.5
	tr.run(6, uses)
	if got := kinds(tr.evs); !slices.Contains(got, "stepped_down "+antagonist) {
		t.Errorf("events %v, want the antagonist stepped down", got)
	}
	if !strings.Contains(tr.evs[1].Reason, "entitled to 0.75") {
		t.Errorf("reason %q, want an entitlement of 0.75 CPUs", tr.evs[1].Reason)
	}
	tr = newTrace(t, DefaultConfig())
	tr.cpus = 2
	tr.run(6, uses)
	wantLog(t, tr)
}
