// Command fairbench measures issue 5's fair CPU shares between tenants
// through the daemon: every scenario's tenants keep spin calls running that
// could each fill the machine, and each tenant's part of the CPU time in a
// window is set against its tier's entitlement. The scenario "noisy"
// (noisy.go) measures a victim's latency beside a noisy neighbour instead.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("fairbench: ", false)

const (
	cgroupRoot = "/scoped-bench-fair"
	cgroupMark = "scoped-bench-fair"
	extName    = "spin"
	spinMs     = "60000" // the longest call spin accepts
	// Host ids apart from the default daemon's and invokebench's.
	idBase  = 3 << 29
	idSlots = 32
)

type options struct {
	duration, settle    time.Duration
	repeat, noisyRepeat int // runs of every share scenario; repeats of the noisy phases
	spinners            int
	noisySpin           int // the noisy scenario's antagonist spinners
	scenarios           []string
	control             bool
	label               string // the section's label ("": none), see sectionMark
	daemonWeight        int    // >0: each daemon in a cgroup of its own with this CPU weight (leaf.go)
	shareIdle           *bool  // [control] share_idle; nil: the daemon's default
	merge               string // copy a VM run's sections from this file instead of measuring
	where               where
}

// The goals of issue 16 for the share scenarios, over the window and in
// every slice after the first, in every run: every tenant within goalDev
// of its entitled share, and Jain's index at least goalJain. The slices
// are sliceLen long; the first is not held to the goals (the controller's
// closed loop needs a few seconds to act).
const (
	goalDev  = 0.05
	goalJain = 0.99
	sliceLen = 2 * time.Second
)

func main() {
	var o options
	var sc string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window per run, a multiple of the "+sliceLen.String()+" slices")
	flag.DurationVar(&o.settle, "settle", 4*time.Second, "time between starting the spinners and the window (the controller acts meanwhile)")
	flag.IntVar(&o.repeat, "repeat", 5, "runs of every share scenario, each on a fresh daemon (round robin over the scenarios)")
	flag.IntVar(&o.noisyRepeat, "noisy-repeat", 3, "repeats of the noisy scenario's phases")
	flag.IntVar(&o.spinners, "spinners", runtime.NumCPU(), "concurrent spin invocations (and workers) per scope")
	flag.IntVar(&o.noisySpin, "noisy-spinners", noisySpinners, "the noisy scenario's CPU antagonist: concurrent spin invocations")
	flag.StringVar(&sc, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+
		" (in scoped's test VM the default leaves out "+noisyName+")")
	shareIdle := flag.Bool("share-idle", false, "set the daemons' [control] share_idle (unset: the daemon's default): a tenant the fair-share rule caps is SCHED_IDLE too")
	flag.BoolVar(&o.control, "control", true, "run the daemons' controller ([control] enabled) in the fair-share scenarios (noisy sets it per phase)")
	flag.IntVar(&o.daemonWeight, "daemon-weight", 0, "move each daemon into a cgroup of its own beside its tree with this CPU weight (1-10000; "+
		"the daemon's leaf under systemd, supervisor_cpu_weight); 0: it stays in this program's cgroup")
	flag.StringVar(&o.label, "label", "", "label of the section, whose markers become fairbench-<label> (e.g. vm-6.12); "+
		"default: none on a host, vm-<major.minor of the kernel> in scoped's test VM (hostname "+vmHostname+")")
	flag.StringVar(&o.merge, "merge", "", "measure nothing: copy the labelled fairbench sections of this `file` (a VM run's -o) into -o")
	benchmd.Main("fairbench", true, func(ctx context.Context, args string) ([]string, error) {
		out := ""
		if f := flag.Lookup("o"); f != nil {
			out = f.Value.String()
		}
		if o.merge != "" {
			return merge(o.merge, out)
		}
		o.where = detectWhere()
		if o.label == "" {
			o.label = autoLabel(o.where)
		}
		if !validLabel(o.label) {
			return nil, fmt.Errorf("-label %q: want lower-case letters, digits, dots and dashes, starting with a letter or digit", o.label)
		}
		explicit := false
		flag.Visit(func(f *flag.Flag) {
			explicit = explicit || f.Name == "scenarios"
			if f.Name == "share-idle" {
				o.shareIdle = shareIdle
			}
		})
		for _, f := range strings.Split(sc, ",") {
			if f = strings.TrimSpace(f); !slices.Contains(allScenarios, f) {
				return nil, fmt.Errorf("-scenarios %q: %q is not one of %s", sc, f, strings.Join(allScenarios, ", "))
			} else if f == noisyName && o.where.vm && !explicit {
				logf("in the test VM: leaving out %s (it measures latency; see -scenarios)", noisyName)
			} else if !slices.Contains(o.scenarios, f) {
				o.scenarios = append(o.scenarios, f)
			}
		}
		switch {
		case o.duration < sliceLen || o.duration%sliceLen != 0:
			return nil, fmt.Errorf("-duration %s: want a multiple of the %s slices", o.duration, sliceLen)
		case o.settle < 0:
			return nil, fmt.Errorf("-settle %s: must not be negative", o.settle)
		case o.repeat < 1 || o.repeat > 100 || o.noisyRepeat < 1 || o.noisyRepeat > 100:
			return nil, errors.New("-repeat and -noisy-repeat: want 1..100")
		case o.spinners < 1 || o.spinners > 64 || o.noisySpin < 1 || o.noisySpin > 64:
			return nil, errors.New("-spinners and -noisy-spinners: want 1..64")
		case o.daemonWeight < 0 || o.daemonWeight > 10000:
			return nil, errors.New("-daemon-weight: want 1..10000, or 0 for none")
		case len(o.scenarios) == 0:
			return nil, errors.New("no scenario to run")
		}
		sections, err := run(ctx, o, args)
		if err == nil && out != "" && o.label != "" {
			err = placeSection(out, sectionMark(o.label))
		}
		return sections, err
	})
}

// allScenarios are the scenarios in the order they run by default: the
// fair-share ones (scenarioByName), then the noisy neighbour.
var allScenarios = []string{"equal", "tiers", "scopes", noisyName}

type tenantSpec struct {
	name, tier string
	weight     float64  // its tier's cpu_weight
	envs       []string // one scope each
	assign     bool     // SetTenant to tier (else the default tier)
}

type scenario struct {
	name, title, about string
	tiers              string // [tiers.*] tables of the daemon's configuration
	ten                []tenantSpec
}

func scenarioByName(name string) *scenario {
	envs := func(n int) (e []string) {
		for i := range n {
			e = append(e, "env"+strconv.Itoa(i+1))
		}
		return e
	}
	switch name {
	case "equal":
		s := &scenario{name: name, title: "Four tenants, equal tiers",
			about: "Four tenants in tier `standard` (cpu_weight 100), one scope each: 25 % each."}
		for _, t := range []string{"alpha", "bravo", "charlie", "delta"} {
			s.ten = append(s.ten, tenantSpec{name: t, tier: "standard", weight: 100, envs: envs(1)})
		}
		return s
	case "tiers":
		return &scenario{name: name, title: "Tiers weighted 1:2:4",
			tiers: "[tiers.bronze]\ncpu_weight = 100\n[tiers.silver]\ncpu_weight = 200\n[tiers.gold]\ncpu_weight = 400\n",
			about: "Three tenants, one scope each, placed with `SetTenant` in tiers `bronze` (cpu_weight 100), " +
				"`silver` (200) and `gold` (400): 1/7, 2/7 and 4/7.",
			ten: []tenantSpec{{"bronze-co", "bronze", 100, envs(1), true}, {"silver-co", "silver", 200, envs(1), true},
				{"gold-co", "gold", 400, envs(1), true}}}
	case "scopes":
		return &scenario{name: name, title: "A tenant with 8 scopes against a tenant with 1",
			about: "Tenant `many` runs 8 scopes (spin deployed in environments env1..env8), tenant `one` runs 1, " +
				"both in tier `standard`: 50 % each, however many scopes a tenant runs.",
			ten: []tenantSpec{{"many", "standard", 100, envs(8), false}, {"one", "standard", 100, envs(1), false}}}
	}
	return nil
}

type tenantResult struct {
	spec             tenantSpec
	cpu              time.Duration   // in the window
	scopeCPU         []time.Duration // per scope, where the unified hierarchy shows them
	share, entitled  float64         // of all the scenario's tenants' CPU in the window
	workers          int             // worker cgroups at the end of the window (-1: unknown)
	restarted        int             // spin calls that completed (60 s of CPU) and were made again
	sliceLo, sliceHi float64         // the least and the largest share in a slice after the first
}

// sliceStat is one slice's Jain index (over share/entitled) and the
// largest deviation of a tenant's share from its entitled share.
type sliceStat struct{ jain, dev float64 }

type result struct {
	sc       *scenario
	run      int           // 1..-repeat
	window   time.Duration // wall time between the two reads
	ten      []tenantResult
	machine  time.Duration // busy CPU time of the whole machine in the window
	jain     float64       // over share/entitled in the window
	dev      float64       // the largest |share − entitled| in the window
	perSlice [][]time.Duration
	slices   []sliceStat // every slice; the first is not held to the goals
}

// shares are xs over their sum (all zero if the sum is).
func shares(xs []float64) []float64 {
	var sum float64
	for _, x := range xs {
		sum += x
	}
	out := make([]float64, len(xs))
	for i, x := range xs {
		if sum > 0 {
			out[i] = x / sum
		}
	}
	return out
}

// jain is Jain's fairness index (Σx)² / (n·Σx²): 1 when all xs are equal,
// 1/n when one has everything.
func jain(xs []float64) float64 {
	var sum, sq float64
	for _, x := range xs {
		sum, sq = sum+x, sq+x*x
	}
	if sq == 0 {
		return 0
	}
	return sum * sum / (float64(len(xs)) * sq)
}

// judge is Jain's index over share/entitled and the largest deviation
// |share − entitled| of the shares sh against the entitled shares ent.
func judge(sh, ent []float64) (j, dev float64) {
	x := make([]float64, len(sh))
	for i := range sh {
		x[i], dev = sh[i]/ent[i], max(dev, math.Abs(sh[i]-ent[i]))
	}
	return jain(x), dev
}

// meetsGoals says whether a Jain index and a largest deviation meet the
// goals (a rounding error's leeway).
func meetsGoals(j, dev float64) bool { return j >= goalJain-1e-12 && dev <= goalDev+1e-12 }

// compute sets the shares, Jain's index and the largest deviation of the
// window and of every slice (perSlice[k][i] is tenant i's CPU time in slice
// k), and each tenant's least and largest share in a slice after the first.
func (r *result) compute() {
	cpu, w := make([]float64, len(r.ten)), make([]float64, len(r.ten))
	for i, t := range r.ten {
		cpu[i], w[i] = float64(t.cpu), t.spec.weight
	}
	sh, ent := shares(cpu), shares(w)
	for i := range r.ten {
		r.ten[i].share, r.ten[i].entitled = sh[i], ent[i]
	}
	r.jain, r.dev = judge(sh, ent)
	r.slices = nil
	for k, row := range r.perSlice {
		xs := make([]float64, len(row))
		for i, v := range row {
			xs[i] = float64(v)
		}
		sh := shares(xs)
		j, dev := judge(sh, ent)
		r.slices = append(r.slices, sliceStat{j, dev})
		for i, v := range sh {
			if t := &r.ten[i]; k == 1 {
				t.sliceLo, t.sliceHi = v, v
			} else if k > 1 {
				t.sliceLo, t.sliceHi = min(t.sliceLo, v), max(t.sliceHi, v)
			}
		}
	}
}

// counted are the slices held to the goals: all but the first.
func (r *result) counted() []sliceStat {
	if len(r.slices) < 2 {
		return nil
	}
	return r.slices[1:]
}

// worstSlice is the lowest Jain index and the largest deviation in the
// slices after the first (not necessarily the same slice); ok is false
// without such slices.
func (r *result) worstSlice() (j, dev float64, ok bool) {
	for i, s := range r.counted() {
		if i == 0 {
			j, dev, ok = s.jain, s.dev, true
		}
		j, dev = min(j, s.jain), max(dev, s.dev)
	}
	return j, dev, ok
}

// meets says whether the run meets the goals over the window and in every
// slice after the first.
func (r *result) meets() bool {
	if !meetsGoals(r.jain, r.dev) {
		return false
	}
	for _, s := range r.counted() {
		if !meetsGoals(s.jain, s.dev) {
			return false
		}
	}
	return true
}

// scenarioRuns are a share scenario's runs.
type scenarioRuns struct {
	sc   *scenario
	runs []*result
}

// median is the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if n := len(s); n%2 == 0 {
		return (s[n/2-1] + s[n/2]) / 2
	}
	return s[len(s)/2]
}

// jains are the runs' Jain indexes over the window.
func (s *scenarioRuns) jains() []float64 {
	var xs []float64
	for _, r := range s.runs {
		xs = append(xs, r.jain)
	}
	return xs
}

// medianRun is the run whose window Jain index is the median (the lower
// of the middle two for an even count), the one shown in detail.
func (s *scenarioRuns) medianRun() *result {
	rs := slices.Clone(s.runs)
	slices.SortStableFunc(rs, func(a, b *result) int { return cmp.Compare(a.jain, b.jain) })
	return rs[(len(rs)-1)/2]
}

// stats are a scenario's figures over its runs: the largest deviation over
// the windows, and the worst slice after the first of any run: the lowest
// Jain index (in run jRun) and the largest deviation (in run devRun); ok is
// false if no run had a slice after the first.
type stats struct {
	dev                  float64
	sliceJain, sliceDev  float64
	jRun, devRun, passed int
	ok                   bool
}

func (s *scenarioRuns) stats() stats {
	var st stats
	for _, r := range s.runs {
		st.dev = max(st.dev, r.dev)
		if r.meets() {
			st.passed++
		}
		j, dev, ok := r.worstSlice()
		if !ok {
			continue
		}
		if !st.ok || j < st.sliceJain {
			st.sliceJain, st.jRun = j, r.run
		}
		if !st.ok || dev > st.sliceDev {
			st.sliceDev, st.devRun = dev, r.run
		}
		st.ok = true
	}
	return st
}

// secs is d in seconds for the report: "2 s", "0.5 s".
func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s" }

// verdict is PASS when every run met the goals, else MISS.
func verdict(pass bool) string {
	if pass {
		return "PASS"
	}
	return "MISS"
}

type bench struct {
	o     options
	kit   *benchmd.Kit
	files *scopedv1.Bundle
	d     *benchmd.Daemon // the scenario's or phase's
	took  time.Duration   // the whole run, for the report
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	t0 := time.Now()
	b := &bench{o: o}
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, b.kit.Close()) }()
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	var results []*scenarioRuns
	for _, name := range o.scenarios {
		if name != noisyName {
			results = append(results, &scenarioRuns{sc: scenarioByName(name)})
		}
	}
	// Round robin over the scenarios, so that machine noise hits them alike.
	for i := 0; i < o.repeat && len(results) > 0; i++ {
		for _, sr := range results {
			r, err := b.scenario(ctx, sr.sc, i+1)
			if err != nil {
				return nil, fmt.Errorf("scenario %s, run %d: %w", sr.sc.name, i+1, err)
			}
			sr.runs = append(sr.runs, r)
		}
	}
	var noisy []*noisyResult
	for i := 0; i < o.noisyRepeat && slices.Contains(o.scenarios, noisyName); i++ {
		nr, err := b.noisy(ctx, i+1)
		if err != nil {
			return nil, fmt.Errorf("scenario %s, repeat %d: %w", noisyName, i+1, err)
		}
		noisy = append(noisy, nr)
	}
	if err := b.kit.Close(); err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	b.took = time.Since(t0)
	logf("done in %s", b.took.Round(time.Second))
	return []string{b.report(args, results, noisy)}, nil
}

// callTimeout is the deadline of every spin call: longer than any window,
// so that no call times out while it is measured.
func (b *bench) callTimeout() time.Duration {
	return max(5*time.Minute, b.o.settle+b.o.duration+2*time.Minute)
}

// startDaemon starts the daemon of a scenario or phase with workers per
// scope, the controller on or off, and extra settings of [control] or
// tables after it; stopDaemon stops it.
func (b *bench) startDaemon(ctx context.Context, name string, workers int, control bool, extra string) (err error) {
	b.d, err = b.kit.StartDaemon(ctx, name, cgroupRoot, fmt.Sprintf(`[isolation]
by = ["environment"]
[limits]
default_timeout = "5m"
max_timeout = %q
[pool]
warm_min = 0
max_workers = %d
max_concurrent = 1
idle_timeout = "1h"
[scope]
id_base = %d
id_slots = %d
[metrics]
listen = "off"
[log]
level = "info"
[control]
enabled = %t
`, b.callTimeout().String(), workers, idBase, idSlots, control)+b.shareIdleLine()+extra)
	if err == nil && b.o.daemonWeight > 0 {
		err = placeDaemon(b.d.Pid(), b.o.daemonWeight)
	}
	return err
}

// shareIdleLine is the daemon's [control] share_idle line, if -share-idle
// was given.
func (b *bench) shareIdleLine() string {
	if b.o.shareIdle == nil {
		return ""
	}
	return fmt.Sprintf("share_idle = %t\n", *b.o.shareIdle)
}

func (b *bench) stopDaemon(retErr *error) {
	_, err := b.kit.StopDaemon(b.d, 0)
	if b.o.daemonWeight > 0 {
		err = errors.Join(err, removeLeaf())
	}
	*retErr = errors.Join(*retErr, err)
}

// sleep waits d, or returns why ctx ended first.
func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-time.After(d):
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// failure is the error that cancelled ctx, nil if it was cancelled
// without one.
func failure(ctx context.Context) error {
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// scenario runs one scenario on a fresh daemon: deploys, warms every
// scope's workers, and keeps -spinners spin calls running in every scope
// while it reads the tenants' CPU usage -settle after their start and at
// the end of every sliceLen slice of the window.
func (b *bench) scenario(ctx context.Context, sc *scenario, run int) (_ *result, retErr error) {
	logf("scenario %s, run %d/%d: %s", sc.name, run, b.o.repeat, sc.title)
	if err := b.startDaemon(ctx, fmt.Sprintf("%s-%d", sc.name, run), b.o.spinners, b.o.control, sc.tiers); err != nil {
		return nil, err
	}
	defer b.stopDaemon(&retErr)
	t0 := time.Now()
	for _, t := range sc.ten {
		if t.assign {
			if _, err := b.d.C.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: t.name, Tier: t.tier}); err != nil {
				return nil, fmt.Errorf("set tenant %s tier %s: %w", t.name, t.tier, err)
			}
		}
		for _, env := range t.envs {
			if err := b.d.Deploy(ctx, t.name, env, extName, b.files); err != nil {
				return nil, err
			}
			if err := b.warm(ctx, t.name, env, extName, b.o.spinners, spinWarm); err != nil {
				return nil, err
			}
		}
	}
	logf("deployed and warmed %d workers in every scope in %s", b.o.spinners, time.Since(t0).Round(time.Millisecond))

	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	restarts := make([]atomic.Int64, len(sc.ten))
	spun := time.Now()
	timeout := durationpb.New(b.callTimeout())
	for i, t := range sc.ten {
		for _, env := range t.envs {
			benchmd.Keep(sctx, cancel, &wg, b.o.spinners, func(ctx context.Context) error {
				_, err := b.d.C.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: t.name, Environment: env, Extension: extName, Payload: []byte(spinMs), Timeout: timeout})
				if err != nil {
					return fmt.Errorf("spin for %s/%s: %w", t.name, env, err)
				}
				restarts[i].Add(1)
				return nil
			})
		}
	}
	r := &result{sc: sc, run: run}
	measure := func() error {
		if err := sleep(sctx, b.o.settle); err != nil {
			return err
		}
		start, err := b.readUsage(sc)
		if err != nil {
			return err
		}
		m0 := benchmd.MachineBusy()
		for i := range restarts {
			restarts[i].Store(0)
		}
		end := start
		for k := 1; k <= int(b.o.duration/sliceLen); k++ {
			if err := sleep(sctx, time.Until(start.at.Add(time.Duration(k)*sliceLen))); err != nil {
				return err
			}
			u, err := b.readUsage(sc)
			if err != nil {
				return err
			}
			row := make([]time.Duration, len(sc.ten))
			for i := range row {
				row[i] = u.tenant[i] - end.tenant[i]
			}
			r.perSlice, end = append(r.perSlice, row), u
		}
		r.machine, r.window = benchmd.MachineBusy()-m0, end.at.Sub(start.at)
		for i, t := range sc.ten {
			tr := tenantResult{spec: t, cpu: end.tenant[i] - start.tenant[i], workers: end.workers[i], restarted: int(restarts[i].Load())}
			for j := range end.scopes[i] {
				if len(start.scopes[i]) == len(end.scopes[i]) {
					tr.scopeCPU = append(tr.scopeCPU, end.scopes[i][j]-start.scopes[i][j])
				}
			}
			r.ten = append(r.ten, tr)
		}
		return nil
	}
	err := measure()
	cancel(nil)
	wg.Wait()
	if err = cmp.Or(err, failure(sctx)); err != nil {
		return nil, fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	r.compute()
	sj, sdev, _ := r.worstSlice()
	logf("  run %d: Jain %.4f, largest deviation %.1f points; worst slice after the first: Jain %.4f, deviation %.1f points: %s",
		run, r.jain, 100*r.dev, sj, 100*sdev, verdict(r.meets()))
	for i, t := range r.ten {
		var per []string
		for _, row := range r.perSlice {
			xs := make([]float64, len(row))
			for j, d := range row {
				xs[j] = d.Seconds()
			}
			per = append(per, fmt.Sprintf("%.1f", 100*shares(xs)[i]))
		}
		logf("  %-10s %-9s %5.2f CPU s  share %5.1f %%  entitled %5.1f %%  ratio %.3f; per slice %s %%", t.spec.name, t.spec.tier,
			t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, strings.Join(per, " "))
		if want := len(t.spec.envs) * b.o.spinners; t.workers >= 0 && t.workers != want {
			return nil, fmt.Errorf("tenant %s had %d workers at the end of the window, want %d (a worker restarted or did not start)",
				t.spec.name, t.workers, want)
		}
	}
	b.logShareEvents(ctx, spun)
	return r, nil
}

// logShareEvents logs the fair-share rule's events of the daemon's run,
// their times from t0 (the spinners' start), so that a run's slices can be read against them.
func (b *bench) logShareEvents(ctx context.Context, t0 time.Time) {
	resp, err := b.d.C.ListEvents(ctx, &scopedv1.ListEventsRequest{})
	if err != nil {
		logf("  events: %v", err)
		return
	}
	for _, e := range resp.GetEvents() {
		if strings.HasPrefix(e.GetKind(), "share_") {
			logf("  event at %5.1f s: %s %s: %s", e.GetTime().AsTime().Sub(t0).Seconds(), e.GetKind(), e.GetTenant(), e.GetReason())
		}
	}
}

// spinWarm are the payloads of warm's rounds for spin: CPU milliseconds.
var spinWarm = []string{"50", "200", "500", "1000"}

// warm starts n workers of the scope's extension ext: rounds of n
// concurrent short calls (the payloads, one per round, longer each round;
// each call must return its payload), until n distinct workers answered.
func (b *bench) warm(ctx context.Context, tenant, env, ext string, n int, payloads []string) error {
	var mu sync.Mutex
	seen := map[string]bool{}
	for _, ms := range payloads {
		err := benchmd.Parallel(ctx, n, n, func(ctx context.Context, _ int) error {
			resp, _, err := b.d.Invoke(ctx, time.Minute, &scopedv1.InvokeRequest{Tenant: tenant, Environment: env, Extension: ext, Payload: []byte(ms)})
			if err == nil && strings.TrimSpace(string(resp.GetResult())) != ms {
				err = fmt.Errorf("%s %s returned %.40q", ext, ms, resp.GetResult())
			}
			mu.Lock()
			defer mu.Unlock()
			seen[resp.GetFigures().GetWorker()] = err == nil
			return err
		})
		if err != nil {
			return fmt.Errorf("warm %s/%s: %w\ndaemon log:\n%s", tenant, env, err, b.d.LogTail())
		}
		if len(seen) >= n {
			return nil
		}
	}
	return fmt.Errorf("warm %s/%s: %d %s workers answered %d rounds of %d concurrent calls, want %d", tenant, env, len(seen), ext, len(payloads), n, n)
}

// usage is one reading of every tenant's CPU usage.
type usage struct {
	at      time.Time
	tenant  []time.Duration
	scopes  [][]time.Duration // per tenant, its scopes' in name order (nil where unknown)
	workers []int             // per tenant, its worker cgroups (-1: unknown)
}

// readUsage reads the tenants' (and their scopes') CPU usage, tenants first
// and back to back. Scopes and workers show in the unified hierarchy only.
func (b *bench) readUsage(sc *scenario) (usage, error) {
	u := usage{at: time.Now()}
	for _, t := range sc.ten {
		v, err := cgroups.CPUUsage(path.Join(cgroupRoot, t.tier, t.name))
		if err != nil {
			return u, err
		}
		u.tenant = append(u.tenant, v)
	}
	unified := map[cgroups.Mode]string{cgroups.V2: "/sys/fs/cgroup", cgroups.Hybrid: "/sys/fs/cgroup/unified"}[cgroups.HostMode()]
	for _, t := range sc.ten {
		p := path.Join(cgroupRoot, t.tier, t.name)
		workers, scopes := -1, []time.Duration(nil)
		if unified != "" {
			workers = 0
			names, err := subdirs(filepath.Join(unified, p))
			for _, s := range names {
				v, verr := cgroups.CPUUsage(path.Join(p, s))
				ws, werr := subdirs(filepath.Join(unified, p, s))
				if err = errors.Join(err, verr, werr); err != nil {
					return u, err
				}
				scopes, workers = append(scopes, v), workers+len(ws)
			}
			if err != nil {
				return u, err
			}
		}
		u.scopes, u.workers = append(u.scopes, scopes), append(u.workers, workers)
	}
	return u, nil
}

// subdirs are the names of dir's subdirectories, sorted.
func subdirs(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, err
}

// title is the section's heading: the host or the VM, and its kernel.
func (b *bench) title() string {
	w := b.o.where
	t := "## Fair shares between tenants (issues 5, 16): "
	if w.vm {
		t += "VM"
	} else {
		t += "host"
	}
	t += ", kernel " + w.kernel
	if w.tcg {
		t += " (TCG emulation)"
	}
	return t
}

// facts are the first lines of the list of facts: the command, the date,
// the machine and where it ran.
func (b *bench) facts(args string) string {
	w := b.o.where
	var f string
	if w.vm {
		f = "- Command: `sudo make bench-v2`, which runs the fairbench built on the host as `fairbench " + args + "` in scoped's test VM\n" +
			"- Date: " + benchmd.Date() + "\n- " + benchmd.Machine() + "\n"
	} else {
		f = benchmd.Facts("go run -tags seccomp ./bench/cmd/fairbench", args)
	}
	switch {
	case w.vm:
		f += fmt.Sprintf("- Where: in scoped's test VM (scripts/vm-test.sh: Debian's kernel, cgroup v2 only, %d vCPUs)", runtime.NumCPU())
	case w.tcg:
		f += "- Where: on a QEMU guest"
	default:
		f += "- Where: on the host, not in scoped's test VM"
	}
	if w.tcg {
		f += " under TCG\n  software emulation: the figures are for the split of the CPU between tenants, not for speed"
	} else if w.vm {
		f += " under KVM"
	}
	if w.vm {
		f += ". The noisy-neighbour\n  phases measure latency and run on the host only"
	}
	return f + ".\n"
}

func (b *bench) report(args string, results []*scenarioRuns, noisy []*noisyResult) string {
	r := benchmd.NewReport(sectionMark(b.o.label), b.title())
	n := b.o.spinners
	if len(results) > 0 {
		r.P("Every tenant runs CPU-bound work that could fill the machine on its own: how does the daemon's cgroup tree\n")
		r.P("(`<root>/<tier>/<tenant>/<scope>/<worker>`, tenants at their tier's `cpu_weight`) split the CPU between them? A\n")
		r.P("tenant's share is its part of the CPU time all the scenario's tenants used in the window; the entitled share is\n")
		r.P("its tier's weight over the sum of the live tenants' weights.")
		if noisy != nil {
			r.P(" The last subsection measures a victim tenant's latency beside a\nnoisy neighbour instead.")
		}
		r.P("\n\n")
	} else if noisy != nil {
		r.P("How much a noisy neighbour tenant slows down a victim tenant's invocations, with the daemon's\n")
		r.P("noisy-neighbour controller off and on.\n\n")
	}
	r.P("%s", b.facts(args))
	r.P("- Load average (1, 5, 15 min) at the start: %s; the whole run took %s.\n", b.kit.LoadAvg, b.took.Round(time.Second))
	r.P("- Worker: `examples/spin` (Go SDK), which burns the payload's CPU milliseconds on one thread.\n")
	if b.o.daemonWeight > 0 {
		r.P("- The daemon's cgroup: one of its own beside its tree, `/%s`, with CPU weight %d (`-daemon-weight`; on v1 the\n", daemonLeaf, b.o.daemonWeight)
		r.P("  equal `cpu.shares`), as `supervisor_cpu_weight` weighs the daemon's leaf under systemd (issue 17).\n")
	} else {
		r.P("- The daemon's cgroup: this program's (`-daemon-weight` gives it one of its own).\n")
	}
	if b.o.shareIdle != nil {
		r.P("- `[control] share_idle = %t` (`-share-idle`): whether a tenant the fair-share rule caps is made SCHED_IDLE too (`cpu.idle`).\n", *b.o.shareIdle)
	}
	r.P("- Daemon: a fresh one per %s: isolation by tenant + environment; `[pool] max_concurrent = 1`",
		map[bool]string{true: "run", false: "phase"}[len(results) > 0])
	if len(results) > 0 {
		r.P(", `max_workers = %d`", n)
	}
	r.P(";\n  cgroup root `%s`; `[metrics] listen = \"off\"`; the rest at its default", cgroupRoot)
	if len(results) == 0 {
		r.P(" but as said below.\n")
		b.reportNoisy(r, noisy)
		return r.End()
	}
	r.P(", the controller %s.\n", map[bool]string{
		true:  "on (`[control] enabled = true`, its fair-share rule and noisy-neighbour rule at their defaults)",
		false: "off (`[control] enabled = false`)"}[b.o.control])
	r.P("- Method: each scenario runs %d %s, round robin over the scenarios. In a run every scope is warmed first (its %d\n",
		b.o.repeat, benchmd.Plural(b.o.repeat, "time"), n)
	r.P("  %s started by concurrent short spin calls, so that no cold start falls in the window). Then every scope keeps\n", benchmd.Plural(n, "worker"))
	r.P("  %d concurrent spin calls of %s ms of CPU running; after a settle time of %s (in which the controller's closed\n", n, spinMs, secs(b.o.settle))
	r.P("  loop can act) every tenant cgroup's CPU usage (`cpu.stat` usage_usec, unified hierarchy) is read, and again every\n")
	r.P("  %s until the end of the %s window. Afterwards no cgroup named `*%s*` was left.\n", secs(sliceLen), secs(b.o.duration), cgroupMark)
	r.P("- Jain's fairness index is (Σx)² / (n·Σx²) over x = share / entitled share: 1 when every tenant gets exactly its\n")
	r.P("  entitlement, 1/n when one tenant gets everything. Deviation: a tenant's share less its entitled share, in\n")
	r.P("  percentage points.\n")
	r.P("- Goals (issue 16): every tenant within ±%.0f points of its entitled share and Jain ≥ %.2f, over the window and in\n", 100*goalDev, goalJain)
	r.P("  every %s slice after the first (the first is not held to them: the closed loop needs a few seconds), in every\n", secs(sliceLen))
	r.P("  run. A run meets them or MISSes; a scenario PASSes when all its runs meet them.\n")

	r.P("\n| Scenario | Runs | Jain over the window: min / median / max | Largest deviation: window | Worst %s slice after the first: Jain / largest deviation | Runs meeting the goals | Goals |\n", secs(sliceLen))
	r.P("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, sr := range results {
		st := sr.stats()
		js := sr.jains()
		slice := "— (no slice after the first)"
		if st.ok {
			slice = fmt.Sprintf("%.4f / %.1f points", st.sliceJain, 100*st.sliceDev)
		}
		r.P("| %s | %d | %.4f / %.4f / %.4f | %.1f points | %s | %d of %d | **%s** |\n", sr.sc.title, len(sr.runs),
			slices.Min(js), median(js), slices.Max(js), 100*st.dev, slice, st.passed, len(sr.runs), verdict(st.passed == len(sr.runs)))
	}
	for _, sr := range results {
		b.reportScenario(r, sr)
	}
	if noisy != nil {
		b.reportNoisy(r, noisy)
	}
	return r.End()
}

// reportScenario writes a share scenario's subsection: its runs, then the
// median run in detail.
func (b *bench) reportScenario(r *benchmd.Report, sr *scenarioRuns) {
	r.P("\n### %s\n\n%s\n\n", sr.sc.title, sr.sc.about)
	r.P("| Run | Jain (window) | Largest deviation (window) | Lowest slice Jain | Largest slice deviation | Goals |\n")
	r.P("| ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, res := range sr.runs {
		sj, sdev := "—", "—"
		if j, dev, ok := res.worstSlice(); ok {
			sj, sdev = fmt.Sprintf("%.4f", j), fmt.Sprintf("%.1f points", 100*dev)
		}
		r.P("| %d | %.4f | %.1f points | %s | %s | %s |\n", res.run, res.jain, 100*res.dev, sj, sdev, map[bool]string{true: "met", false: "MISS"}[res.meets()])
	}
	res := sr.medianRun()
	r.P("\nThe slice columns are over the slices of %s after the first of each window (%d per run). The run of median\n",
		secs(sliceLen), len(sr.runs[0].slices)-1)
	r.P("Jain, run %d, in detail:\n\n", res.run)
	r.P("| Tenant | Tier | Scopes | CPU s in window | Share | Entitled | Share / entitled | Share per %s slice after the first, min–max |\n", secs(sliceLen))
	r.P("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var sum time.Duration
	var restarted int
	for _, t := range res.ten {
		sum, restarted = sum+t.cpu, restarted+t.restarted
		spread := "—"
		if len(res.counted()) > 0 {
			spread = fmt.Sprintf("%.1f–%.1f %%", 100*t.sliceLo, 100*t.sliceHi)
		}
		r.P("| %s | %s | %d | %.2f | %.1f %% | %.1f %% | %.3f | %s |\n", t.spec.name, t.spec.tier, len(t.spec.envs),
			t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, spread)
	}
	capacity := res.window.Seconds() * float64(runtime.NumCPU())
	r.P("\nIn the %.2f s window the tenants used %.2f CPU s of the machine's %.2f (%.0f %%); everything else\n",
		res.window.Seconds(), sum.Seconds(), capacity, 100*sum.Seconds()/capacity)
	r.P("(the daemon, other processes, the kernel) %.0f %% by /proc/stat.", 100*max(res.machine-sum, 0).Seconds()/capacity)
	if restarted > 0 {
		r.P(" %d spin %s completed in the window and %s made again.", restarted, benchmd.Plural(restarted, "call"),
			map[bool]string{true: "was", false: "were"}[restarted == 1])
	}
	r.P("\n")
	for _, t := range res.ten {
		if len(t.scopeCPU) > 1 && t.cpu > 0 {
			r.P("Inside `%s`, its %d scopes got %.1f %% to %.1f %% of the tenant's CPU time each (even: %.1f %%).\n", t.spec.name, len(t.scopeCPU),
				100*slices.Min(t.scopeCPU).Seconds()/t.cpu.Seconds(), 100*slices.Max(t.scopeCPU).Seconds()/t.cpu.Seconds(), 100/float64(len(t.scopeCPU)))
		}
	}
	if sr.sc.name == "scopes" {
		many, scopes := len(res.ten[0].spec.envs), len(res.ten[0].spec.envs)+len(res.ten[1].spec.envs)
		r.P("For comparison, were the scopes siblings of equal weight (no tenant level), `%s` would be\n", res.ten[0].spec.name)
		r.P("entitled to %d/%d = %.1f %% (computed, not measured).\n", many, scopes, 100*float64(many)/float64(scopes))
	}
}
