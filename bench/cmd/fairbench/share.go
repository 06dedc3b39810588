package main

// The share scenarios, their figures and their report.

import (
	"cmp"
	"context"
	"errors"
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

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// Issue 16's goals, in every run, over the window and in every sliceLen
// slice but the first (the controller's closed loop needs a few seconds):
// every tenant within goalDev of its entitled share, Jain ≥ goalJain.
const (
	goalDev  = 0.05
	goalJain = 0.99
	sliceLen = 2 * time.Second
)

type tenantSpec struct {
	name, tier string
	weight     float64 // its tier's cpu_weight
	scopes     int     // spin deployed in env1..env<scopes>
	assign     bool    // SetTenant to tier (else the default tier)
}

type scenario struct {
	name, title, about string
	tiers              string // [tiers.*] tables of the daemon's configuration
	ten                []tenantSpec
}

var scenarios = []*scenario{
	{name: "equal", title: "Four tenants, equal tiers",
		about: "Four tenants in tier `standard` (cpu_weight 100), one scope each: 25 % each.",
		ten: []tenantSpec{{"alpha", "standard", 100, 1, false}, {"bravo", "standard", 100, 1, false},
			{"charlie", "standard", 100, 1, false}, {"delta", "standard", 100, 1, false}}},
	{name: "tiers", title: "Tiers weighted 1:2:4",
		tiers: "[tiers.bronze]\ncpu_weight = 100\n[tiers.silver]\ncpu_weight = 200\n[tiers.gold]\ncpu_weight = 400\n",
		about: "Three tenants, one scope each, placed with `SetTenant` in tiers `bronze` (cpu_weight 100), " +
			"`silver` (200) and `gold` (400): 1/7, 2/7 and 4/7.",
		ten: []tenantSpec{{"bronze-co", "bronze", 100, 1, true}, {"silver-co", "silver", 200, 1, true}, {"gold-co", "gold", 400, 1, true}}},
	{name: "scopes", title: "A tenant with 8 scopes against a tenant with 1",
		about: "Tenant `many` runs 8 scopes (spin deployed in environments env1..env8), tenant `one` runs 1, " +
			"both in tier `standard`: 50 % each, however many scopes a tenant runs.",
		ten: []tenantSpec{{"many", "standard", 100, 8, false}, {"one", "standard", 100, 1, false}}},
}

func env(i int) string { return "env" + strconv.Itoa(i+1) }

type tenantResult struct {
	spec             tenantSpec
	cpu              time.Duration   // in the window
	scopeCPU         []time.Duration // per scope, where the unified hierarchy shows them
	share, entitled  float64         // of all the scenario's tenants' CPU in the window
	workers          int             // worker cgroups at the end of the window (-1: unknown)
	restarted        int             // spin calls that completed (60 s of CPU) and were made again
	sliceLo, sliceHi float64         // the least and the largest share in a slice after the first
}

type sliceStat struct{ jain, dev float64 }

type result struct {
	run       int           // 1..-repeat
	window    time.Duration // wall time between the first and the last read
	ten       []tenantResult
	machine   time.Duration // busy CPU time of the whole machine in the window
	jain, dev float64       // over the window
	perSlice  [][]time.Duration
	slices    []sliceStat // every slice; the first is not held to the goals
}

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
// goals (with a rounding error's leeway).
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
		sh := sliceShares(row)
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

func sliceShares(row []time.Duration) []float64 {
	xs := make([]float64, len(row))
	for i, v := range row {
		xs[i] = float64(v)
	}
	return shares(xs)
}

// worstSlice is the lowest Jain index and the largest deviation in the
// slices after the first (not necessarily the same slice); ok is false
// without such slices.
func (r *result) worstSlice() (j, dev float64, ok bool) {
	if len(r.slices) < 2 {
		return 0, 0, false
	}
	j = math.Inf(1)
	for _, s := range r.slices[1:] {
		j, dev = min(j, s.jain), max(dev, s.dev)
	}
	return j, dev, true
}

// meets says whether the run meets the goals over the window and in every
// slice after the first.
func (r *result) meets() bool {
	j, dev, ok := r.worstSlice()
	return meetsGoals(r.jain, r.dev) && (!ok || meetsGoals(j, dev))
}

type scenarioRuns struct {
	sc   *scenario
	runs []*result
}

// stats are a scenario's figures over its runs: the largest deviation over
// the windows, the worst slice after the first of any run (ok is false if
// no run had one) and the runs that met the goals.
func (s *scenarioRuns) stats() (dev, sliceJain, sliceDev float64, ok bool, passed int) {
	sliceJain = math.Inf(1)
	for _, r := range s.runs {
		dev = max(dev, r.dev)
		if r.meets() {
			passed++
		}
		if j, d, sok := r.worstSlice(); sok {
			sliceJain, sliceDev, ok = min(sliceJain, j), max(sliceDev, d), true
		}
	}
	return dev, sliceJain, sliceDev, ok, passed
}

// median is the median of xs (the mean of the middle two for an even
// count), 0 for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	return (s[(n-1)/2] + s[n/2]) / 2
}

// medianBy is the element of xs of median key (the lower of the middle two
// for an even count): the run or repeat shown in detail.
func medianBy[T any](xs []T, key func(T) float64) T {
	s := slices.Clone(xs)
	slices.SortStableFunc(s, func(a, b T) int { return cmp.Compare(key(a), key(b)) })
	return s[(len(s)-1)/2]
}

// secs is d in seconds for the report: "2 s", "0.5 s".
func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + " s" }

// verdict is a Goals cell: yes (PASS for a scenario, met for a run) or MISS.
func verdict(ok bool, yes string) string {
	if ok {
		return yes
	}
	return "MISS"
}

// scenario runs one run of sc on a fresh daemon: deploys, warms every
// scope's workers, and keeps -spinners spin calls running in every scope
// while it reads the tenants' CPU usage -settle after their start and at
// the end of every slice of the window.
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
		for e := range t.scopes {
			if err := b.deploy(ctx, t.name, env(e), extName, b.files, b.o.spinners, spinWarm); err != nil {
				return nil, err
			}
		}
	}
	logf("deployed and warmed %d workers in every scope in %s", b.o.spinners, time.Since(t0).Round(time.Millisecond))

	sctx, cancel := context.WithCancelCause(ctx)
	var wg sync.WaitGroup
	restarts := make([]atomic.Int64, len(sc.ten))
	spun := time.Now()
	for i, t := range sc.ten {
		for e := range t.scopes {
			b.keep(sctx, cancel, &wg, b.o.spinners, t.name, env(e), extName, spinMs, &restarts[i])
		}
	}
	r := &result{run: run}
	measure := func() error {
		if err := sleep(sctx, b.o.settle); err != nil {
			return err
		}
		start, err := readUsage(sc)
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
			u, err := readUsage(sc)
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
			if len(start.scopes[i]) == len(end.scopes[i]) {
				for j := range end.scopes[i] {
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
		run, r.jain, 100*r.dev, sj, 100*sdev, verdict(r.meets(), "PASS"))
	for i, t := range r.ten {
		var per []string
		for _, row := range r.perSlice {
			per = append(per, fmt.Sprintf("%.1f", 100*sliceShares(row)[i]))
		}
		logf("  %-10s %-9s %5.2f CPU s  share %5.1f %%  entitled %5.1f %%  ratio %.3f; per slice %s %%", t.spec.name, t.spec.tier,
			t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, strings.Join(per, " "))
		if want := t.spec.scopes * b.o.spinners; t.workers >= 0 && t.workers != want {
			return nil, fmt.Errorf("tenant %s had %d workers at the end of the window, want %d (a worker restarted or did not start)",
				t.spec.name, t.workers, want)
		}
	}
	// The fair-share rule's events, from the spinners' start, to read the
	// slices against.
	if resp, err := b.d.C.ListEvents(ctx, &scopedv1.ListEventsRequest{}); err != nil {
		logf("  events: %v", err)
	} else {
		for _, e := range resp.GetEvents() {
			if strings.HasPrefix(e.GetKind(), "share_") {
				logf("  event at %5.1f s: %s %s: %s", e.GetTime().AsTime().Sub(spun).Seconds(), e.GetKind(), e.GetTenant(), e.GetReason())
			}
		}
	}
	return r, nil
}

// spinWarm are the payloads of warm's rounds for spin: CPU milliseconds.
var spinWarm = []string{"50", "200", "500", "1000"}

type usage struct {
	at      time.Time
	tenant  []time.Duration
	scopes  [][]time.Duration // per tenant, its scopes' in name order (nil where unknown)
	workers []int             // per tenant, its worker cgroups (-1: unknown)
}

// readUsage reads the tenants' CPU usage back to back, then their scopes'
// and workers', which only the unified hierarchy shows.
func readUsage(sc *scenario) (usage, error) {
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

// reportShares writes the share scenarios' part of the report: the daemon
// and the method, the goals over all scenarios, then each scenario.
func (b *bench) reportShares(r *benchmd.Report, results []*scenarioRuns) {
	n := b.o.spinners
	r.P("- Daemon: a fresh one per run: isolation by tenant + environment; `[pool] max_concurrent = 1`, `max_workers = %d`;\n", n)
	r.P("  cgroup root `%s`; `[metrics] listen = \"off\"`; the rest at its default, the controller %s.\n", cgroupRoot, map[bool]string{
		true:  "on (`[control] enabled = true`, its fair-share rule and noisy-neighbour rule at their defaults)",
		false: "off (`[control] enabled = false`)"}[b.o.control])
	r.P("- Method: each scenario runs %d %s, round robin over the scenarios. In a run every scope's %d %s are warmed\n",
		b.o.repeat, benchmd.Plural(b.o.repeat, "time"), n, benchmd.Plural(n, "worker"))
	r.P("  first (no cold start falls in the window), then every scope keeps %d concurrent spin calls of %s ms of CPU\n", n, spinMs)
	r.P("  running. After a settle time of %s (in which the controller's closed loop can act) every tenant cgroup's CPU\n", secs(b.o.settle))
	r.P("  usage (`cpu.stat` usage_usec, unified hierarchy) is read, and again every %s until the end of the %s window.\n", secs(sliceLen), secs(b.o.duration))
	r.P("  Afterwards no cgroup named `*%s*` was left.\n", cgroupMark)
	r.P("- Jain's fairness index is (Σx)² / (n·Σx²) over x = share / entitled share: 1 when every tenant gets exactly its\n")
	r.P("  entitlement, 1/n when one tenant gets everything. Deviation: a tenant's share less its entitled share, in\n")
	r.P("  percentage points.\n")
	r.P("- Goals (issue 16): every tenant within ±%.0f points of its entitled share and Jain ≥ %.2f, over the window and in\n", 100*goalDev, goalJain)
	r.P("  every %s slice after the first (the first is not held to them: the closed loop needs a few seconds), in every\n", secs(sliceLen))
	r.P("  run. A run meets them or MISSes; a scenario PASSes when all its runs meet them.\n")

	r.P("\n| Scenario | Runs | Jain over the window: min / median / max | Largest deviation: window | Worst %s slice after the first: Jain / largest deviation | Runs meeting the goals | Goals |\n", secs(sliceLen))
	r.P("| --- | ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, sr := range results {
		dev, sj, sdev, ok, passed := sr.stats()
		var js []float64
		for _, res := range sr.runs {
			js = append(js, res.jain)
		}
		slice := "— (no slice after the first)"
		if ok {
			slice = fmt.Sprintf("%.4f / %.1f points", sj, 100*sdev)
		}
		r.P("| %s | %d | %.4f / %.4f / %.4f | %.1f points | %s | %d of %d | **%s** |\n", sr.sc.title, len(sr.runs),
			slices.Min(js), median(js), slices.Max(js), 100*dev, slice, passed, len(sr.runs), verdict(passed == len(sr.runs), "PASS"))
	}
	for _, sr := range results {
		reportScenario(r, sr)
	}
}

// reportScenario writes a share scenario's subsection: its runs, then the
// run of median Jain in detail.
func reportScenario(r *benchmd.Report, sr *scenarioRuns) {
	r.P("\n### %s\n\n%s\n\n", sr.sc.title, sr.sc.about)
	r.P("| Run | Jain (window) | Largest deviation (window) | Lowest slice Jain | Largest slice deviation | Goals |\n")
	r.P("| ---: | ---: | ---: | ---: | ---: | --- |\n")
	for _, res := range sr.runs {
		sj, sdev := "—", "—"
		if j, dev, ok := res.worstSlice(); ok {
			sj, sdev = fmt.Sprintf("%.4f", j), fmt.Sprintf("%.1f points", 100*dev)
		}
		r.P("| %d | %.4f | %.1f points | %s | %s | %s |\n", res.run, res.jain, 100*res.dev, sj, sdev, verdict(res.meets(), "met"))
	}
	res := medianBy(sr.runs, func(r *result) float64 { return r.jain })
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
		if len(res.slices) > 1 {
			spread = fmt.Sprintf("%.1f–%.1f %%", 100*t.sliceLo, 100*t.sliceHi)
		}
		r.P("| %s | %s | %d | %.2f | %.1f %% | %.1f %% | %.3f | %s |\n", t.spec.name, t.spec.tier, t.spec.scopes,
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
		many, all := res.ten[0].spec.scopes, res.ten[0].spec.scopes+res.ten[1].spec.scopes
		r.P("For comparison, were the scopes siblings of equal weight (no tenant level), `%s` would be\n", res.ten[0].spec.name)
		r.P("entitled to %d/%d = %.1f %% (computed, not measured).\n", many, all, 100*float64(many)/float64(all))
	}
}
