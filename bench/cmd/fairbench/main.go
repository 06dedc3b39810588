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
	duration, settle time.Duration
	slices, spinners int
	noisySpin        int // the noisy scenario's antagonist spinners
	scenarios        []string
	control          bool
}

func main() {
	var o options
	var sc string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window per scenario")
	flag.DurationVar(&o.settle, "settle", time.Second, "time between starting the spinners and the window")
	flag.IntVar(&o.slices, "slices", 5, "the window is read in this many slices too, for the spread of the shares")
	flag.IntVar(&o.spinners, "spinners", runtime.NumCPU(), "concurrent spin invocations (and workers) per scope")
	flag.IntVar(&o.noisySpin, "noisy-spinners", noisySpinners, "the noisy scenario's CPU antagonist: concurrent spin invocations")
	flag.StringVar(&sc, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", "))
	flag.BoolVar(&o.control, "control", true, "run the daemons' noisy-neighbour controller ([control] enabled) in the fair-share scenarios (noisy sets it per phase)")
	benchmd.Main("fairbench", true, func(ctx context.Context, args string) ([]string, error) {
		for _, f := range strings.Split(sc, ",") {
			if f = strings.TrimSpace(f); !slices.Contains(allScenarios, f) {
				return nil, fmt.Errorf("-scenarios %q: %q is not one of %s", sc, f, strings.Join(allScenarios, ", "))
			} else if !slices.Contains(o.scenarios, f) {
				o.scenarios = append(o.scenarios, f)
			}
		}
		switch {
		case o.slices < 1 || o.duration < time.Duration(o.slices)*100*time.Millisecond:
			return nil, errors.New("-duration and -slices: want at least one slice of at least 100ms")
		case o.settle < 0:
			return nil, fmt.Errorf("-settle %s: must not be negative", o.settle)
		case o.spinners < 1 || o.spinners > 64 || o.noisySpin < 1 || o.noisySpin > 64:
			return nil, errors.New("-spinners and -noisy-spinners: want 1..64")
		}
		return run(ctx, o, args)
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
	sliceLo, sliceHi float64         // the least and the largest share in a slice of the window
}

type result struct {
	sc      *scenario
	window  time.Duration // wall time between the two reads
	ten     []tenantResult
	machine time.Duration // busy CPU time of the whole machine in the window
	jain    float64       // over share/entitled
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

func (r *result) compute() {
	cpu, w := make([]float64, len(r.ten)), make([]float64, len(r.ten))
	for i, t := range r.ten {
		cpu[i], w[i] = float64(t.cpu), t.spec.weight
	}
	sh, ent := shares(cpu), shares(w)
	for i := range r.ten {
		r.ten[i].share, r.ten[i].entitled = sh[i], ent[i]
		cpu[i] = sh[i] / ent[i]
	}
	r.jain = jain(cpu)
}

// sliceShares sets each tenant's least and largest share over the slices
// of the window; cpu[k][i] is tenant i's CPU time in slice k.
func (r *result) sliceShares(cpu [][]time.Duration) {
	for k, row := range cpu {
		xs := make([]float64, len(row))
		for i, v := range row {
			xs[i] = float64(v)
		}
		for i, sh := range shares(xs) {
			if t := &r.ten[i]; k == 0 {
				t.sliceLo, t.sliceHi = sh, sh
			} else {
				t.sliceLo, t.sliceHi = min(t.sliceLo, sh), max(t.sliceHi, sh)
			}
		}
	}
}

type bench struct {
	o     options
	kit   *benchmd.Kit
	files *scopedv1.Bundle
	d     *benchmd.Daemon // the scenario's or phase's
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	b := &bench{o: o}
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	defer func() { retErr = errors.Join(retErr, b.kit.Close()) }()
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	var results []*result
	var noisy *noisyResult
	for _, name := range o.scenarios {
		if name == noisyName {
			noisy, err = b.noisy(ctx)
		} else {
			var r *result
			r, err = b.scenario(ctx, scenarioByName(name))
			results = append(results, r)
		}
		if err != nil {
			return nil, fmt.Errorf("scenario %s: %w", name, err)
		}
	}
	if err := b.kit.Close(); err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
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
`, b.callTimeout().String(), workers, idBase, idSlots, control)+extra)
	return err
}

func (b *bench) stopDaemon(retErr *error) {
	_, err := b.kit.StopDaemon(b.d, 0)
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
// -slices slices of the window.
func (b *bench) scenario(ctx context.Context, sc *scenario) (_ *result, retErr error) {
	logf("scenario %s: %s", sc.name, sc.title)
	if err := b.startDaemon(ctx, sc.name, b.o.spinners, b.o.control, sc.tiers); err != nil {
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
	r := &result{sc: sc}
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
		var perSlice [][]time.Duration
		end := start
		for k := 1; k <= b.o.slices; k++ {
			if err := sleep(sctx, time.Until(start.at.Add(time.Duration(k)*b.o.duration/time.Duration(b.o.slices)))); err != nil {
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
			perSlice, end = append(perSlice, row), u
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
		r.sliceShares(perSlice)
		return nil
	}
	err := measure()
	cancel(nil)
	wg.Wait()
	if err = cmp.Or(err, failure(sctx)); err != nil {
		return nil, fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	r.compute()
	for _, t := range r.ten {
		logf("  %-10s %-9s %5.2f CPU s  share %5.1f %%  entitled %5.1f %%  ratio %.3f", t.spec.name, t.spec.tier,
			t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled)
		if want := len(t.spec.envs) * b.o.spinners; t.workers >= 0 && t.workers != want {
			return nil, fmt.Errorf("tenant %s had %d workers at the end of the window, want %d (a worker restarted or did not start)",
				t.spec.name, t.workers, want)
		}
	}
	return r, nil
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

func (b *bench) report(args string, results []*result, noisy *noisyResult) string {
	r := benchmd.NewReport("fairbench", "## Fair shares between tenants (issue 5)")
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
	r.P("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/fairbench", args))
	r.P("- Load average (1, 5, 15 min) at the start: %s\n", b.kit.LoadAvg)
	r.P("- Worker: `examples/spin` (Go SDK), which burns the payload's CPU milliseconds on one thread.\n")
	r.P("- Daemon: a fresh one per %s: isolation by tenant + environment; `[pool] max_concurrent = 1`",
		map[bool]string{true: "scenario", false: "phase"}[len(results) > 0])
	if len(results) > 0 {
		r.P(", `max_workers = %d`", n)
	}
	r.P(";\n  cgroup root `%s`; `[metrics] listen = \"off\"`; the rest at its default", cgroupRoot)
	if len(results) == 0 {
		r.P(" but as said below.\n")
		b.reportNoisy(r, noisy)
		return r.End()
	}
	r.P(", the noisy-neighbour controller %s.\n", map[bool]string{true: "on (`[control] enabled = true`)", false: "off (`[control] enabled = false`)"}[b.o.control])
	r.P("- Method: every scope is warmed first (its %d %s started by concurrent short spin calls, so that no cold start\n", n, benchmd.Plural(n, "worker"))
	r.P("  falls in the window). Then every scope keeps %d concurrent spin calls of %s ms of CPU running; after %s every\n", n, spinMs, b.o.settle)
	r.P("  tenant cgroup's CPU usage (`cpu.stat` usage_usec, unified hierarchy) is read, and again %s later (and at %d\n", b.o.duration, b.o.slices)
	r.P("  equal slices of the window, for the spread over time). Afterwards no cgroup named `*%s*` was left.\n", cgroupMark)
	r.P("- Jain's fairness index is (Σx)² / (n·Σx²) over x = share / entitled share: 1 when every tenant gets exactly its\n")
	r.P("  entitlement, 1/n when one tenant gets everything.\n")
	for _, res := range results {
		r.P("\n### %s\n\n%s\n\n", res.sc.title, res.sc.about)
		r.P("| Tenant | Tier | Scopes | CPU s in window | Share | Entitled | Share / entitled | Share per %s slice, min–max |\n",
			(res.window / time.Duration(b.o.slices)).Round(10*time.Millisecond))
		r.P("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		var sum time.Duration
		var restarted int
		var dev float64
		for _, t := range res.ten {
			sum, restarted, dev = sum+t.cpu, restarted+t.restarted, max(dev, math.Abs(t.share-t.entitled))
			r.P("| %s | %s | %d | %.2f | %.1f %% | %.1f %% | %.3f | %.1f–%.1f %% |\n", t.spec.name, t.spec.tier, len(t.spec.envs),
				t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, 100*t.sliceLo, 100*t.sliceHi)
		}
		capacity := res.window.Seconds() * float64(runtime.NumCPU())
		r.P("\nJain's fairness index: %.4f. Largest deviation from the entitled share: %.1f percentage points.\n", res.jain, 100*dev)
		r.P("In the %.2f s window the tenants used %.2f CPU s of the machine's %.2f (%.0f %%); everything else\n",
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
		if res.sc.name == "scopes" {
			many, scopes := len(res.ten[0].spec.envs), len(res.ten[0].spec.envs)+len(res.ten[1].spec.envs)
			r.P("For comparison, were the scopes siblings of equal weight (no tenant level), `%s` would be\n", res.ten[0].spec.name)
			r.P("entitled to %d/%d = %.1f %% (computed, not measured).\n", many, scopes, 100*float64(many)/float64(scopes))
		}
	}
	if noisy != nil {
		b.reportNoisy(r, noisy)
	}
	return r.End()
}
