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

	extName = "spin"
	spinMs  = "60000" // the longest call spin accepts

	// Host ids of the scopes' user namespaces, apart from the default
	// daemon's (1048576) and invokebench's (1<<29).
	idBase  = 3 << 29
	idSlots = 32
)

type options struct {
	duration  time.Duration
	settle    time.Duration
	slices    int
	spinners  int
	noisySpin int // the noisy scenario's antagonist spinners
	scenarios []string
	control   bool
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
			f = strings.TrimSpace(f)
			if !slices.Contains(allScenarios, f) {
				return nil, fmt.Errorf("-scenarios %q: %q is not one of %s", sc, f, strings.Join(allScenarios, ", "))
			}
			if !slices.Contains(o.scenarios, f) {
				o.scenarios = append(o.scenarios, f)
			}
		}
		switch {
		case o.duration < 100*time.Millisecond:
			return nil, fmt.Errorf("-duration %s: at least 100ms", o.duration)
		case o.slices < 1 || o.duration < time.Duration(o.slices)*100*time.Millisecond:
			return nil, fmt.Errorf("-slices %d: want at least 1, and slices of at least 100ms", o.slices)
		case o.settle < 0:
			return nil, fmt.Errorf("-settle %s: must not be negative", o.settle)
		case o.spinners < 1 || o.spinners > 64 || o.noisySpin < 1 || o.noisySpin > 64:
			return nil, errors.New("-spinners and -noisy-spinners: want 1..64")
		}
		return run(ctx, o, args)
	})
}

// allScenarios are the scenarios in the order they run by default: the
// fair-share ones (scenarioByName), then the noisy neighbour (noisy.go).
var allScenarios = []string{"equal", "tiers", "scopes", noisyName}

// tenantSpec is one tenant of a scenario.
type tenantSpec struct {
	name   string
	tier   string
	weight float64  // its tier's cpu_weight
	envs   []string // one scope each
	assign bool     // SetTenant to tier (else the default tier)
}

type scenario struct {
	name, title string
	tiers       string // [tiers.*] tables of the daemon's configuration
	about       string // what is measured, for the report
	ten         []tenantSpec
}

func scenarioByName(name string) *scenario {
	envs := func(n int) []string {
		e := make([]string, n)
		for i := range e {
			e[i] = "env" + strconv.Itoa(i+1)
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
			ten: []tenantSpec{
				{name: "bronze-co", tier: "bronze", weight: 100, envs: envs(1), assign: true},
				{name: "silver-co", tier: "silver", weight: 200, envs: envs(1), assign: true},
				{name: "gold-co", tier: "gold", weight: 400, envs: envs(1), assign: true},
			}}
	case "scopes":
		return &scenario{name: name, title: "A tenant with 8 scopes against a tenant with 1",
			about: "Tenant `many` runs 8 scopes (spin deployed in environments env1..env8), tenant `one` runs 1, " +
				"both in tier `standard`: 50 % each, however many scopes a tenant runs.",
			ten: []tenantSpec{
				{name: "many", tier: "standard", weight: 100, envs: envs(8)},
				{name: "one", tier: "standard", weight: 100, envs: envs(1)},
			}}
	}
	return nil
}

type tenantResult struct {
	spec      tenantSpec
	cpu       time.Duration   // in the window
	scopeCPU  []time.Duration // per scope, where the unified hierarchy shows them
	share     float64         // of all the scenario's tenants' CPU in the window
	entitled  float64
	workers   int     // worker cgroups at the end of the window (-1: unknown)
	restarted int     // spin calls that completed (60 s of CPU) and were called again
	sliceLo   float64 // the least and the largest share in a slice of the window
	sliceHi   float64
}

type result struct {
	sc      *scenario
	window  time.Duration // wall time between the two reads
	ten     []tenantResult
	machine time.Duration // busy CPU time of the whole machine in the window (/proc/stat)
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
		sum += x
		sq += x * x
	}
	if len(xs) == 0 || sq == 0 {
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
	norm := make([]float64, len(r.ten))
	for i := range r.ten {
		r.ten[i].share, r.ten[i].entitled = sh[i], ent[i]
		norm[i] = sh[i] / ent[i]
	}
	r.jain = jain(norm)
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
			t := &r.ten[i]
			if k == 0 || sh < t.sliceLo {
				t.sliceLo = sh
			}
			if k == 0 || sh > t.sliceHi {
				t.sliceHi = sh
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

// settings is a daemon's configuration, without the paths: workers per
// scope, the controller on or off, and extra settings of [control] or
// tables after it.
func (b *bench) settings(workers int, control bool, extra string) string {
	return fmt.Sprintf(`[isolation]
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
`, b.callTimeout().String(), workers, idBase, idSlots, control) + extra
}

// startDaemon starts the daemon of a scenario or phase; stopDaemon stops it.
func (b *bench) startDaemon(ctx context.Context, name, settings string) (err error) {
	b.d, err = b.kit.StartDaemon(ctx, name, cgroupRoot, settings)
	return err
}

func (b *bench) stopDaemon(retErr *error) {
	_, err := b.kit.StopDaemon(b.d, 0)
	*retErr = errors.Join(*retErr, err)
}

// scenario runs one scenario on a fresh daemon: deploys, warms every
// scope's workers, and keeps -spinners spin calls running in every scope
// (a call that completes is made again) while it reads the tenants' CPU
// usage -settle after their start and in -slices slices of the window.
func (b *bench) scenario(ctx context.Context, sc *scenario) (_ *result, retErr error) {
	logf("scenario %s: %s", sc.name, sc.title)
	if err := b.startDaemon(ctx, sc.name, b.settings(b.o.spinners, b.o.control, sc.tiers)); err != nil {
		return nil, err
	}
	defer b.stopDaemon(&retErr)
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
		}
	}
	t0 := time.Now()
	for _, t := range sc.ten {
		for _, env := range t.envs {
			if err := b.warm(ctx, t.name, env, extName, b.o.spinners, spinWarm); err != nil {
				return nil, err
			}
		}
	}
	logf("warmed %d workers in every scope in %s", b.o.spinners, time.Since(t0).Round(time.Millisecond))

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
	wait := func(d time.Duration) error {
		select {
		case <-time.After(d):
			return nil
		case <-sctx.Done():
			return context.Cause(sctx)
		}
	}
	measure := func() error {
		if err := wait(b.o.settle); err != nil {
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
			if err := wait(time.Until(start.at.Add(time.Duration(k) * b.o.duration / time.Duration(b.o.slices)))); err != nil {
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
			perSlice = append(perSlice, row)
			end = u
		}
		r.machine = benchmd.MachineBusy() - m0
		r.window = end.at.Sub(start.at)
		for i, t := range sc.ten {
			tr := tenantResult{spec: t, cpu: end.tenant[i] - start.tenant[i], workers: end.workers[i], restarted: int(restarts[i].Load())}
			if len(start.scopes[i]) == len(end.scopes[i]) {
				for j := range end.scopes[i] {
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
	if err = cmp.Or(err, spinFailure(sctx)); err != nil {
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

// spinFailure is the error that cancelled ctx, nil if ctx was cancelled
// without one.
func spinFailure(ctx context.Context) error {
	if err := context.Cause(ctx); !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// spinWarm are the payloads of warm's rounds for spin: CPU milliseconds.
var spinWarm = []string{"50", "200", "500", "1000"}

// warm starts n workers of the scope's extension ext: rounds of n
// concurrent short calls (the payloads, one per round, longer each round;
// each call must return its payload), until n distinct workers have
// answered.
func (b *bench) warm(ctx context.Context, tenant, env, ext string, n int, payloads []string) error {
	var mu sync.Mutex
	seen := map[string]bool{}
	for _, ms := range payloads {
		err := benchmd.Parallel(ctx, n, n, func(ctx context.Context, _ int) error {
			resp, _, err := b.d.Invoke(ctx, time.Minute, &scopedv1.InvokeRequest{Tenant: tenant, Environment: env, Extension: ext, Payload: []byte(ms)})
			if err != nil {
				return err
			}
			if strings.TrimSpace(string(resp.GetResult())) != ms {
				return fmt.Errorf("%s %s returned %.40q", ext, ms, resp.GetResult())
			}
			mu.Lock()
			defer mu.Unlock()
			seen[resp.GetFigures().GetWorker()] = true
			return nil
		})
		if err != nil {
			return fmt.Errorf("warm %s/%s: %w\ndaemon log:\n%s", tenant, env, err, b.d.LogTail())
		}
		if len(seen) >= n {
			return nil
		}
	}
	return fmt.Errorf("warm %s/%s: %d %s workers answered %d rounds of %d concurrent calls, want %d",
		tenant, env, len(seen), ext, len(payloads), n, n)
}

// usage is one reading of every tenant's CPU usage.
type usage struct {
	at      time.Time
	tenant  []time.Duration
	scopes  [][]time.Duration // per tenant, its scopes' in name order (nil where unknown)
	workers []int             // per tenant, its worker cgroups (-1: unknown)
}

// readUsage reads the tenants' (and their scopes') CPU usage, tenants first
// and back to back.
func (b *bench) readUsage(sc *scenario) (usage, error) {
	u := usage{at: time.Now()}
	for _, t := range sc.ten {
		v, err := cgroups.CPUUsage(path.Join(cgroupRoot, t.tier, t.name))
		if err != nil {
			return u, err
		}
		u.tenant = append(u.tenant, v)
	}
	for _, t := range sc.ten {
		p := path.Join(cgroupRoot, t.tier, t.name)
		workers, scopes := -1, []time.Duration(nil)
		if dir := unifiedDir(p); dir != "" {
			workers = 0
			names, err := subdirs(dir)
			if err != nil {
				return u, err
			}
			for _, s := range names {
				v, err := cgroups.CPUUsage(path.Join(p, s))
				if err != nil {
					return u, err
				}
				scopes = append(scopes, v)
				ws, err := subdirs(filepath.Join(dir, s))
				if err != nil {
					return u, err
				}
				workers += len(ws)
			}
		}
		u.scopes = append(u.scopes, scopes)
		u.workers = append(u.workers, workers)
	}
	return u, nil
}

// unifiedDir is the directory of the absolute cgroup path p in the unified
// hierarchy, or "" on a pure v1 host.
func unifiedDir(p string) string {
	switch cgroups.HostMode() {
	case cgroups.V2:
		return filepath.Join("/sys/fs/cgroup", p)
	case cgroups.Hybrid:
		return filepath.Join("/sys/fs/cgroup/unified", p)
	}
	return ""
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
	per := "scenario"
	if len(results) == 0 {
		per = "phase"
	}
	r.P("- Daemon: a fresh one per %s: isolation by tenant + environment; `[pool] max_concurrent = 1`", per)
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
			sum += t.cpu
			restarted += t.restarted
			dev = max(dev, math.Abs(t.share-t.entitled))
			r.P("| %s | %s | %d | %.2f | %.1f %% | %.1f %% | %.3f | %.1f–%.1f %% |\n", t.spec.name, t.spec.tier, len(t.spec.envs),
				t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, 100*t.sliceLo, 100*t.sliceHi)
		}
		capacity := res.window.Seconds() * float64(runtime.NumCPU())
		r.P("\nJain's fairness index: %.4f. Largest deviation from the entitled share: %.1f percentage points.\n", res.jain, 100*dev)
		r.P("In the %.2f s window the tenants used %.2f CPU s of the machine's %.2f (%.0f %%); everything else\n",
			res.window.Seconds(), sum.Seconds(), capacity, 100*sum.Seconds()/capacity)
		r.P("(the daemon, other processes, the kernel) %.0f %% by /proc/stat.", 100*max(res.machine-sum, 0).Seconds()/capacity)
		if restarted == 1 {
			r.P(" 1 spin call completed in the window and was made again.")
		} else if restarted > 1 {
			r.P(" %d spin calls completed in the window and were made again.", restarted)
		}
		r.P("\n")
		for _, t := range res.ten {
			if len(t.scopeCPU) > 1 && t.cpu > 0 {
				lo, hi := slices.Min(t.scopeCPU), slices.Max(t.scopeCPU)
				r.P("Inside `%s`, its %d scopes got %.1f %% to %.1f %% of the tenant's CPU time each (even: %.1f %%).\n",
					t.spec.name, len(t.scopeCPU), 100*lo.Seconds()/t.cpu.Seconds(), 100*hi.Seconds()/t.cpu.Seconds(), 100/float64(len(t.scopeCPU)))
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
