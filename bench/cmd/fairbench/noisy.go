package main

// The scenario "noisy": a victim tenant's one caller invokes spin with 2 ms
// of CPU back to back; its latency alone, then beside an antagonist tenant
// (CPU spinners; a fork storm) with the controller off and on, each phase
// on a fresh daemon.

import (
	"cmp"
	"context"
	"embed"
	"errors"
	"fmt"
	"path"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/scoped-io/scoped/accounting"
	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const (
	noisyName     = "noisy"
	noisyTitle    = "Noisy neighbour: a victim's latency (issue 5)"
	noisySpinners = 4 // the CPU antagonist's concurrent spin calls
	noisyTier     = "standard"
	victimTenant  = "victim"
	antTenant     = "noisy"
	noisyEnv      = "env1"
	victimMs      = "2"         // the victim's spin payload: CPU milliseconds
	victimTimeout = time.Minute // per victim call: far beyond any latency seen
	forkExt       = "forkstorm"
	forkCallers   = 2
	noisyWorkers  = max(noisySpinners, forkCallers) // [pool] max_workers

	// The controller's settings: shorter than the defaults (1s, 10s, 3),
	// so that it acts within a short window.
	ctlInterval    = 500 * time.Millisecond
	ctlCooldown    = 5 * time.Second
	ctlDetectTicks = 3
	// minSettle is the least settle time of a phase, enough for the
	// controller's detection on a quiet machine. With the controller on
	// beside an antagonist, the window waits for it to act (actedKinds), at
	// most detectWait from the start.
	minSettle  = 5 * time.Second
	detectWait = 10 * time.Second

	// Issue 16's goal: the victim's p99 beside the CPU spinners with the
	// controller on at most noisyGoal times its p99 alone.
	noisyGoal = 1.5
)

// actedKinds are the events of the controller acting on the antagonist:
// the noisy-neighbour rule's detection or the fair-share rule's cap.
var actedKinds = map[string]bool{"detected": true, "share_capped": true}

// antagonist is a noisy neighbour: callers concurrent calls of ext with
// payload, made again when one completes, after warm's rounds of payloads.
type antagonist struct {
	what, ext, payload string
	callers            int
	warm               []string
}

var (
	antCPU = &antagonist{fmt.Sprintf("beside %d CPU spinners", noisySpinners), extName, spinMs, noisySpinners, spinWarm}
	// The fork storm runs until cancelled (payload 0), warmed by rounds of
	// two forks each.
	antFork = &antagonist{"beside a fork storm", forkExt, "0", forkCallers, []string{"10", "50", "200", "1000"}}
)

//go:embed forkstorm/manifest.toml forkstorm/forkstorm.sh
var forkstormFS embed.FS

// forkstormBundle is the fork storm's bundle: its manifest and script.
func forkstormBundle() (*scopedv1.Bundle, error) {
	bundle := &scopedv1.Bundle{}
	for _, f := range []string{"manifest.toml", "forkstorm.sh"} {
		b, err := forkstormFS.ReadFile("forkstorm/" + f)
		if err != nil {
			return nil, err
		}
		mode := uint32(0o644)
		if strings.HasSuffix(f, ".sh") {
			mode = 0o755
		}
		bundle.Files = append(bundle.Files, &scopedv1.File{Path: f, Mode: mode, Content: b})
	}
	return bundle, nil
}

type phase struct {
	name    string
	ant     *antagonist // nil: the victim alone
	control bool        // [control] enabled
}

var noisyPhases = []phase{
	{"alone", nil, true},
	{"cpu-off", antCPU, false},
	{"cpu-on", antCPU, true},
	{"fork-off", antFork, false},
	{"fork-on", antFork, true},
}

func (p phase) what() string {
	if p.ant == nil {
		return "alone"
	}
	return p.ant.what
}

type phaseResult struct {
	ph      phase
	settle  time.Duration   // from the start of the antagonist and the victim to the window
	waited  bool            // for the controller to act, in vain
	window  time.Duration   // wall time between the two cgroup reads
	lat     []time.Duration // the victim's calls started in the window, sorted
	antCPU  time.Duration   // the antagonist tenant's CPU in the window
	vicCPU  time.Duration   // the victim tenant's
	machine time.Duration   // busy CPU time of the machine in the window
	ctlOn   bool            // ListEvents' controller_enabled
	events  []*scopedv1.Event
	at      time.Time // the window's start
	source  string    // the victim scope's accounting source
	runq    accounting.Histogram
	level   int32 // the antagonist scope's throttle level at the window's end
	// Of the victim's calls at or past p99, the median time inside the
	// daemon and outside it.
	tailDaemon, tailOutside time.Duration
}

// rest is the machine's busy CPU time in the window less the two tenants'.
func (r *phaseResult) rest() time.Duration { return max(r.machine-r.antCPU-r.vicCPU, 0) }

// quantile is the nearest-rank q-quantile of the victim's latencies.
func (r *phaseResult) quantile(q float64) time.Duration { return benchmd.Percentile(r.lat, q*100) }

type noisyResult struct {
	rep    int // 1..-noisy-repeat
	phases []*phaseResult
}

func (r *noisyResult) find(ant *antagonist, control bool) *phaseResult {
	for _, ph := range r.phases {
		if ph.ph.ant == ant && ph.ph.control == control {
			return ph
		}
	}
	return nil
}

// p99Ratio is the victim's p99 in the phase of ant with the controller
// on or off over its p99 alone, 0 where either is unknown.
func (r *noisyResult) p99Ratio(ant *antagonist, control bool) float64 {
	alone, ph := r.find(nil, true), r.find(ant, control)
	if alone == nil || ph == nil || alone.quantile(0.99) == 0 {
		return 0
	}
	return float64(ph.quantile(0.99)) / float64(alone.quantile(0.99))
}

func (r *noisyResult) meetsNoisyGoal() bool {
	x := r.p99Ratio(antCPU, true)
	return x > 0 && x <= noisyGoal
}

// source is the victim scope's accounting source in the phases ("" if
// unknown, "mixed" if they differ).
func (r *noisyResult) source() string {
	src := ""
	for _, ph := range r.phases {
		if src != "" && ph.source != "" && ph.source != src {
			return "mixed"
		}
		src = cmp.Or(src, ph.source)
	}
	return src
}

// noisySettle is every noisy phase's settle time (see minSettle).
func (b *bench) noisySettle() time.Duration { return max(b.o.settle, minSettle) }

func (b *bench) noisy(ctx context.Context, rep int) (*noisyResult, error) {
	logf("scenario %s, repeat %d/%d: %s", noisyName, rep, b.o.noisyRepeat, noisyTitle)
	r := &noisyResult{rep: rep}
	for _, p := range noisyPhases {
		pr, err := b.noisyPhase(ctx, p, rep)
		if err != nil {
			return nil, fmt.Errorf("phase %s: %w", p.name, err)
		}
		r.phases = append(r.phases, pr)
	}
	return r, nil
}

func (b *bench) noisyPhase(ctx context.Context, p phase, rep int) (_ *phaseResult, retErr error) {
	logf("phase %s: the victim %s, controller %s", p.name, p.what(), onOff(p.control))
	err := b.startDaemon(ctx, fmt.Sprintf("%s-%s-%d", noisyName, p.name, rep), noisyWorkers, p.control,
		fmt.Sprintf("interval = %q\ncooldown = %q\ndetect_ticks = %d\n", ctlInterval.String(), ctlCooldown.String(), ctlDetectTicks))
	if err != nil {
		return nil, err
	}
	defer b.stopDaemon(&retErr)
	begun := time.Now()

	// Deploy and warm the victim's one worker and the antagonist's, whose
	// calls run until the victim's last call has returned. A failure of
	// either cancels fctx with it.
	a, t0 := p.ant, time.Now()
	if err := b.deploy(ctx, victimTenant, noisyEnv, extName, b.files, 1, []string{victimMs, victimMs, victimMs}); err != nil {
		return nil, err
	}
	fctx, fail := context.WithCancelCause(ctx)
	defer fail(nil)
	actx, cancelAnt := context.WithCancel(fctx)
	var antWG sync.WaitGroup
	defer func() { cancelAnt(); antWG.Wait() }()
	if a != nil {
		bundle := b.files
		if a == antFork {
			if bundle, err = forkstormBundle(); err != nil {
				return nil, err
			}
		}
		if err := b.deploy(ctx, antTenant, noisyEnv, a.ext, bundle, a.callers, a.warm); err != nil {
			return nil, err
		}
		logf("deployed and warmed the victim's worker and %d antagonist workers in %s", a.callers, time.Since(t0).Round(time.Millisecond))
		b.keep(actx, fail, &antWG, a.callers, antTenant, noisyEnv, a.ext, a.payload, nil)
	}

	// The victim: one caller, back to back from now on (the controller
	// sees it during the settle time too) until a call would start after
	// the window.
	vctx, cancelVictim := context.WithCancel(fctx)
	defer cancelVictim()
	var stopAt atomic.Int64 // unix ns; 0: not yet known
	type call struct {
		start        time.Time
		took, daemon time.Duration // the client's latency; the daemon's Figures.duration
	}
	var calls []call
	victimDone := make(chan struct{})
	go func() {
		defer close(victimDone)
		vt := durationpb.New(victimTimeout)
		for start := time.Now(); vctx.Err() == nil && (stopAt.Load() == 0 || start.UnixNano() < stopAt.Load()); start = time.Now() {
			resp, err := b.d.C.Invoke(vctx, &scopedv1.InvokeRequest{Tenant: victimTenant, Environment: noisyEnv, Extension: extName, Payload: []byte(victimMs), Timeout: vt})
			took := time.Since(start)
			switch {
			case vctx.Err() != nil:
				return
			case err != nil:
				fail(fmt.Errorf("victim: %w", err))
				return
			case string(resp.GetResult()) != victimMs:
				fail(fmt.Errorf("victim: spin %s returned %.40q", victimMs, resp.GetResult()))
				return
			}
			calls = append(calls, call{start, took, resp.GetFigures().GetDuration().AsDuration()})
		}
	}()

	started := time.Now()
	r := &phaseResult{ph: p}
	inspect := func(tenant string) (*scopedv1.Scope, error) {
		resp, err := b.d.C.ListScopes(ctx, &scopedv1.ListScopesRequest{Tenant: tenant})
		if err != nil {
			return nil, err
		} else if n := len(resp.GetScopes()); n != 1 {
			return nil, fmt.Errorf("tenant %s has %d scopes, want 1", tenant, n)
		}
		return b.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: resp.GetScopes()[0].GetKey()})
	}
	// usage reads the antagonist's tenant CPU usage (0 without one) and
	// the victim's.
	usage := func() (ant, victim time.Duration, err error) {
		if a != nil {
			ant, err = cgroups.CPUUsage(path.Join(cgroupRoot, noisyTier, antTenant))
		}
		victim, verr := cgroups.CPUUsage(path.Join(cgroupRoot, noisyTier, victimTenant))
		return ant, victim, errors.Join(err, verr)
	}
	measure := func() error {
		if err := sleep(fctx, b.noisySettle()); err != nil {
			return err
		}
		if a != nil && p.control { // the window starts once the controller acted
			acted, err := benchmd.Poll(max(detectWait, b.noisySettle())-time.Since(started), ctlInterval, func() (bool, error) {
				ev, err := b.d.C.ListEvents(ctx, &scopedv1.ListEventsRequest{Since: timestamppb.New(begun)})
				return slices.ContainsFunc(ev.GetEvents(), func(e *scopedv1.Event) bool { return actedKinds[e.GetKind()] }), cmp.Or(err, context.Cause(fctx))
			})
			if err != nil {
				return err
			}
			if r.waited = !acted; r.waited {
				logf("  the controller did not act %s after the antagonist's start; measuring anyway", time.Since(started).Round(time.Millisecond))
			}
		}
		s0, err := inspect(victimTenant)
		if err != nil {
			return err
		}
		a0, v0, err := usage()
		if err != nil {
			return err
		}
		r.at = time.Now()
		r.settle = r.at.Sub(started)
		m0 := benchmd.MachineBusy()
		if err := sleep(fctx, b.o.duration); err != nil {
			return err
		}
		a1, v1, err := usage()
		if err != nil {
			return err
		}
		end := time.Now()
		r.machine = benchmd.MachineBusy() - m0
		stopAt.Store(end.UnixNano())
		s1, err := inspect(victimTenant)
		if err != nil {
			return err
		}
		r.window, r.antCPU, r.vicCPU = end.Sub(r.at), a1-a0, v1-v0
		r.source = s1.GetUsage().GetSource()
		r.runq = histogram(s1.GetUsage()).Sub(histogram(s0.GetUsage()))
		select { // the victim's last call, which may have started in the window
		case <-victimDone:
		case <-fctx.Done():
			return context.Cause(fctx)
		}
		if a != nil {
			sc, err := inspect(antTenant)
			if err != nil {
				return err
			}
			r.level = sc.GetThrottleLevel()
		}
		ev, err := b.d.C.ListEvents(ctx, &scopedv1.ListEventsRequest{Since: timestamppb.New(begun)})
		r.ctlOn, r.events = ev.GetControllerEnabled(), ev.GetEvents()
		return err
	}
	err = measure()
	cancelVictim()
	<-victimDone
	cancelAnt()
	antWG.Wait()
	if err = cmp.Or(err, failure(fctx)); err != nil {
		return nil, fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	var in []call
	for _, c := range calls {
		if !c.start.Before(r.at) && c.start.Before(r.at.Add(r.window)) {
			r.lat, in = append(r.lat, c.took), append(in, c)
		}
	}
	slices.Sort(r.lat)
	if len(r.lat) == 0 {
		return nil, errors.New("the victim made no call in the window")
	}
	// Where the tail's time went: of the calls at or past p99, the median
	// time inside the daemon (its receipt to its reply: the worker's call
	// included) and outside it (the client, the socket, gRPC both ways).
	var tailIn, tailOut []time.Duration
	for _, c := range in {
		if c.took >= r.quantile(0.99) {
			tailIn, tailOut = append(tailIn, c.daemon), append(tailOut, max(c.took-c.daemon, 0))
		}
	}
	r.tailDaemon, r.tailOutside = benchmd.Median(tailIn), benchmd.Median(tailOut)
	logf("  victim: %d calls, p50 %s, p99 %s (median of the tail: %s in the daemon, %s outside); CPU s: victim %.2f, antagonist %.2f, machine %.2f; run-queue p99 %s (%s); antagonist at level %d",
		len(r.lat), fmtDur(r.quantile(0.5)), fmtDur(r.quantile(0.99)), fmtDur(r.tailDaemon), fmtDur(r.tailOutside),
		r.vicCPU.Seconds(), r.antCPU.Seconds(), r.machine.Seconds(), fmtDur(r.runq.Quantile(0.99)), r.source, r.level)
	for _, e := range r.events {
		logf("  event %s", describeEvent(e, r.at, true))
	}
	return r, nil
}

func histogram(u *scopedv1.Usage) accounting.Histogram {
	h := accounting.Histogram{Count: u.GetRunqCount(), Sum: u.GetRunqSum().AsDuration()}
	copy(h.Buckets[:], u.GetRunqBuckets())
	return h
}

// describeEvent is one controller event: its kind, the level after it,
// its time from the window's start at (negative: before the window), and
// the scope where it is not the antagonist's; with the reason if long.
func describeEvent(e *scopedv1.Event, at time.Time, long bool) string {
	s := fmt.Sprintf("%s L%d %+.1fs", e.GetKind(), e.GetLevel(), e.GetTime().AsTime().Sub(at).Seconds())
	if e.GetTenant() != antTenant {
		s += " (scope " + e.GetScope() + ")"
	}
	if long && e.GetReason() != "" {
		s += ": " + e.GetReason()
	}
	return s
}

// eventKinds counts events by kind and level, in order of first appearance.
func eventKinds(evs []*scopedv1.Event) string {
	var kinds []string
	n := map[string]int{}
	for _, e := range evs {
		k := fmt.Sprintf("%s (level %d)", e.GetKind(), e.GetLevel())
		if n[k] == 0 {
			kinds = append(kinds, k)
		}
		n[k]++
	}
	for i, k := range kinds {
		if n[k] > 1 {
			kinds[i] = fmt.Sprintf("%d× %s", n[k], k)
		}
	}
	return strings.Join(kinds, ", ")
}

func (r *phaseResult) eventsCell() string {
	if !r.ctlOn {
		return "— (off)"
	} else if len(r.events) == 0 {
		return "none"
	}
	var parts []string
	for i, e := range r.events {
		if i == 6 {
			parts = append(parts, fmt.Sprintf("and %d more", len(r.events)-6))
			break
		}
		parts = append(parts, describeEvent(e, r.at, false))
	}
	return strings.Join(parts, ", ")
}

func onOff(on bool) string { return map[bool]string{true: "on", false: "off"}[on] }

// fmtDur is a latency in ms with about three significant digits.
func fmtDur(d time.Duration) string {
	switch ms := float64(d) / float64(time.Millisecond); {
	case ms < 10:
		return benchmd.MsP(d, 2)
	case ms < 100:
		return benchmd.MsP(d, 1)
	}
	return benchmd.MsP(d, 0)
}

// reportNoisy writes the noisy scenario's subsection: the goal over the
// repeats, then the repeat of median p99 ratio in detail.
func (b *bench) reportNoisy(w *benchmd.Report, rs []*noisyResult) {
	p := w.P
	r := medianBy(rs, func(r *noisyResult) float64 { return r.p99Ratio(antCPU, true) })
	p("\n### %s\n\n", noisyTitle)
	p("A victim tenant's invocation latency alone, then beside an antagonist tenant with the noisy-neighbour controller\n")
	p("off and on.\n\n")
	p("- Victim: tenant `%s` (tier `%s`, one scope), one caller invoking spin with payload `%s` (ms of CPU) back to back.\n", victimTenant, noisyTier, victimMs)
	p("  Latency is the client's, `Invoke` to its return, of the calls started in the window (this program's client and\n")
	p("  the daemon run outside the tenants' cgroups).\n")
	p("- Antagonist: tenant `%s` (tier `%s`, one scope). CPU: %d concurrent spin calls of %s ms of CPU each (made again\n", antTenant, noisyTier, noisySpinners, spinMs)
	p("  if one completes). Fork storm: `bench/cmd/fairbench/forkstorm`, an exec-runtime extension whose sh script loops\n")
	p("  `/bin/true & /bin/true & wait` until cancelled, invoked by %d concurrent callers with a %s timeout.\n", forkCallers, b.callTimeout())
	p("- A fresh daemon per phase, configured as above but `[pool] max_workers = %d`, `[control] enabled = true/false`\n", noisyWorkers)
	p("  and `interval = %q, cooldown = %q, detect_ticks = %d` (shorter than the defaults, so that it acts within a\n",
		ctlInterval.String(), ctlCooldown.String(), ctlDetectTicks)
	p("  short run); accounting at the default (`auto`)")
	if src := r.source(); src != "" {
		p(": the victim's scope was accounted by `%s`", src)
	}
	p(".\n")
	p("- Each phase: deploy, warm the workers, start the antagonist and the victim, settle %s (-settle, at least %s),\n", b.noisySettle(), minSettle)
	p("  measure %s. With the controller on beside an antagonist the window also waits for it to act (its first `detected`\n", b.o.duration)
	p("  or `share_capped` event, at most %s after the start).\n", max(detectWait, b.noisySettle()))
	p("- Antagonist CPU: its tenant cgroup's CPU usage in the window (part of the machine's %d CPUs). Rest of the machine:\n", runtime.NumCPU())
	p("  the machine's busy CPU time in the window (`/proc/stat`) less both tenants'. Controller events: `ListEvents` over\n")
	p("  the phase: kind, level after it, time from the window's start. Afterwards no cgroup named `*%s*`\n", cgroupMark)
	p("  was left.\n")
	p("- Goal (issue 16): the victim's p99 %s with the controller on at most %.1f× its p99 alone\n", antCPU.what, noisyGoal)
	p("  (of the same repeat), in every repeat; measured on the host only. The phases ran %d %s, round robin; the repeat\n",
		len(rs), benchmd.Plural(len(rs), "time"))
	p("  of median p99 ratio beside the CPU spinners with the controller on (repeat %d) is shown in detail.\n\n", r.rep)

	p("| Repeat | p99 alone | p99 beside CPU spinners, controller off (× alone) | controller on (× alone) | beside a fork storm, off (× alone) | on (× alone) | Goal |\n")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | --- |\n")
	var ratios []float64
	pass := true
	for _, x := range rs {
		cell := func(ant *antagonist, control bool) string {
			ph := x.find(ant, control)
			if ph == nil {
				return "—"
			}
			return fmt.Sprintf("%s (%.2f)", fmtDur(ph.quantile(0.99)), x.p99Ratio(ant, control))
		}
		alone := "—"
		if a := x.find(nil, true); a != nil {
			alone = fmtDur(a.quantile(0.99))
		}
		ratios, pass = append(ratios, x.p99Ratio(antCPU, true)), pass && x.meetsNoisyGoal()
		p("| %d | %s | %s | %s | %s | %s | %s |\n", x.rep, alone, cell(antCPU, false), cell(antCPU, true), cell(antFork, false), cell(antFork, true),
			verdict(x.meetsNoisyGoal(), "met"))
	}
	p("\nVictim p99 beside the CPU spinners with the controller on, × alone, over the repeats: min / median / max\n")
	p("%.2f / %.2f / %.2f against the goal ≤ %.1f×: **%s**. Repeat %d in detail:\n\n", slices.Min(ratios), median(ratios), slices.Max(ratios),
		noisyGoal, verdict(pass, "PASS"), r.rep)

	ebpf := r.source() == accounting.SourceEBPF
	p("| Phase | Controller | Settle | Victim invocations | p50 | p99 | p50 / alone | p99 / alone |" +
		" Antagonist CPU s in window | Rest of the machine, CPU s |")
	sep := "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
	if ebpf {
		p(" Victim run-queue p99 |")
		sep += " ---: |"
	}
	p(" Controller events |\n%s --- |\n", sep)
	alone := r.find(nil, true)
	var busy []string
	for _, ph := range r.phases {
		ratio := func(q float64) string {
			if alone == nil || alone.quantile(q) == 0 {
				return "—"
			}
			return fmt.Sprintf("%.2f", float64(ph.quantile(q))/float64(alone.quantile(q)))
		}
		capacity := ph.window.Seconds() * float64(runtime.NumCPU())
		ant := "—"
		if ph.ph.ant != nil {
			ant = fmt.Sprintf("%.2f (%.0f %%)", ph.antCPU.Seconds(), 100*ph.antCPU.Seconds()/capacity)
		}
		if ph.rest().Seconds() > capacity/4 {
			busy = append(busy, fmt.Sprintf("%s, controller %s", ph.ph.what(), onOff(ph.ph.control)))
		}
		settle := fmt.Sprintf("%.1f s", ph.settle.Seconds())
		if ph.waited {
			settle += " (controller did not act)"
		}
		p("| %s | %s | %s | %d | %s | %s | %s | %s | %s | %.2f (%.0f %%) |", ph.ph.what(), onOff(ph.ph.control), settle,
			len(ph.lat), fmtDur(ph.quantile(0.5)), fmtDur(ph.quantile(0.99)), ratio(0.5), ratio(0.99), ant,
			ph.rest().Seconds(), 100*ph.rest().Seconds()/capacity)
		if ebpf {
			p(" %s |", fmtDur(ph.runq.Quantile(0.99)))
		}
		p(" %s |\n", ph.eventsCell())
	}
	p("\n")
	if ebpf {
		p("The victim's run-queue p99 is the daemon's eBPF histogram (buckets a factor of two wide) of its scope's waits in\n")
		p("the window, what the controller reads.\n\n")
	}
	for _, ant := range []*antagonist{antCPU, antFork} {
		off, on := r.find(ant, false), r.find(ant, true)
		if alone == nil || off == nil || on == nil {
			continue
		}
		p("- %s, controller off / on (alone): victim CPU %.2f / %.2f s (%.2f). Of the calls at or past p99,\n",
			strings.ToUpper(ant.what[:1])+ant.what[1:], off.vicCPU.Seconds(), on.vicCPU.Seconds(), alone.vicCPU.Seconds())
		p("  the median time inside the daemon (its call to the worker included) was %s / %s (%s), outside it\n",
			fmtDur(off.tailDaemon), fmtDur(on.tailDaemon), fmtDur(alone.tailDaemon))
		p("  (this program's client, the socket, gRPC both ways) %s / %s (%s).\n",
			fmtDur(off.tailOutside), fmtDur(on.tailOutside), fmtDur(alone.tailOutside))
		if len(on.events) == 0 {
			p("  With the controller on it recorded no event in the phase.\n")
		} else {
			p("  With the controller on it recorded %s;\n", eventKinds(on.events))
			p("  the antagonist's scope was at level %d at the window's end.\n", on.level)
		}
	}
	p("\nThe controller's level 1 lowers a scope's CPU weight against its tenant's other scopes, level 2 caps its CPU\n")
	p("(never below its tenant's entitled share).\n")
	if len(busy) > 0 {
		p("Other work took more than a quarter of the machine's CPU time in the window of: %s.\n", strings.Join(busy, "; "))
	}
	if len(rs) == 1 {
		p("One run per phase, no repetitions: how much these figures vary from run to run was not measured.\n")
	}
}
