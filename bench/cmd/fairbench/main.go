// Command fairbench measures issue 5's promise of fair CPU shares between
// tenants through the scoped daemon.
//
// Every scenario starts a fresh daemon, deploys the spin example for its
// tenants, warms every scope (its -spinners workers started by concurrent
// short calls, so that no cold start falls in the measured window), then
// keeps -spinners spin invocations of 60 s of CPU running in every scope: each
// tenant alone could fill the machine. After -settle it reads the CPU usage
// of every tenant's cgroup (cpu.stat usage_usec in the unified hierarchy),
// waits -duration and reads it again; each tenant's share is its part of the
// CPU time all the scenario's tenants used in the window, set against the
// share its tier entitles it to.
//
//   - equal: four tenants in tier "standard": 25 % each; Jain's index.
//   - tiers: three tenants in tiers of CPU weight 100, 200 and 400: 1/7,
//     2/7 and 4/7.
//   - scopes: tenant "many" runs 8 scopes (environments), tenant "one" runs
//     1, same tier: 50 % each, however many scopes a tenant runs.
//
// The scenario "noisy" (see noisy.go) measures something else: the
// client-side latency of a victim tenant's short spin calls alone, then
// beside an antagonist tenant (CPU spinners; a fork storm, the exec-runtime
// extension in forkstorm/) with the noisy-neighbour controller off and on,
// a fresh daemon per phase.
//
// It builds what it needs with `go build` in the repository root (the
// daemon with -tags seccomp, scoped-exec and the spin bundle) and runs each
// daemon with a private configuration (socket, state and runtime
// directories in a temporary directory, cgroup root /scoped-bench-fair). It
// stops each daemon with SIGTERM, which removes its cgroups and sandboxes,
// removes its temporary directory and checks that no cgroup named after it
// is left. An abstract unix socket keeps a second run from starting
// meanwhile. It runs as root. With -o it writes its section of
// BENCHMARKS.md between marker comments and leaves the rest of the file
// alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("fairbench: ", false)

const (
	markStart    = "<!-- fairbench:start -->"
	markEnd      = "<!-- fairbench:end -->"
	sectionTitle = "## Fair shares between tenants (issue 5)"
	baseCommand  = "go run -tags seccomp ./bench/cmd/fairbench"

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
	out       string
	args      string // the flags as given, for the report
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
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	benchmd.Main("fairbench", func(args string) error {
		for _, f := range strings.Split(sc, ",") {
			f = strings.TrimSpace(f)
			if !slices.Contains(allScenarios, f) {
				return fmt.Errorf("-scenarios %q: %q is not one of %s", sc, f, strings.Join(allScenarios, ", "))
			}
			if !slices.Contains(o.scenarios, f) {
				o.scenarios = append(o.scenarios, f)
			}
		}
		o.args = args
		return run(o)
	})
}

// --- scenarios -------------------------------------------------------------

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
	name  string
	title string
	tiers string // [tiers.*] tables of the daemon's configuration
	about string // what is measured, for the report
	ten   []tenantSpec
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

// --- results and their arithmetic ------------------------------------------

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
	if sum > 0 {
		for i, x := range xs {
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
	cpu := make([]float64, len(r.ten))
	w := make([]float64, len(r.ten))
	for i, t := range r.ten {
		cpu[i] = float64(t.cpu)
		w[i] = t.spec.weight
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

// --- the run ---------------------------------------------------------------

func run(o options) (retErr error) {
	switch {
	case o.duration < 100*time.Millisecond:
		return fmt.Errorf("-duration %s: at least 100ms", o.duration)
	case o.slices < 1 || o.duration < time.Duration(o.slices)*100*time.Millisecond:
		return fmt.Errorf("-slices %d: want at least 1, and slices of at least 100ms", o.slices)
	case o.settle < 0:
		return fmt.Errorf("-settle %s: must not be negative", o.settle)
	case o.spinners < 1 || o.spinners > 64:
		return fmt.Errorf("-spinners %d: want 1..64", o.spinners)
	case o.noisySpin < 1 || o.noisySpin > 64:
		return fmt.Errorf("-noisy-spinners %d: want 1..64", o.noisySpin)
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	}
	lock, err := benchmd.Lock("fair")
	if err != nil {
		return err
	}
	defer lock.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{o: o}
	defer func() { retErr = errors.Join(retErr, b.close()) }()
	if err := b.setup(); err != nil {
		return err
	}
	var results []*result
	var noisy *noisyResult
	for _, name := range o.scenarios {
		if name == noisyName {
			if noisy, err = b.noisy(ctx); err != nil {
				return fmt.Errorf("scenario %s: %w", name, err)
			}
			continue
		}
		r, err := b.scenario(ctx, scenarioByName(name))
		if err != nil {
			return fmt.Errorf("scenario %s: %w", name, err)
		}
		results = append(results, r)
	}
	if err := b.close(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	section := b.report(results, noisy)
	return benchmd.Output(o.out, markStart, markEnd, section, logf)
}

type bench struct {
	o      options
	kit    *benchmd.Kit
	files  *scopedv1.Bundle
	closed bool

	d *benchmd.Daemon
	c *client.Client
}

func (b *bench) setup() error {
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return err
	}
	b.files, err = b.kit.Bundle("./examples/" + extName)
	return err
}

// close stops the daemon, removes the temporary directory and checks that
// no cgroup of the benchmark is left. It is safe to call twice.
func (b *bench) close() error {
	if b.closed || b.kit == nil {
		return nil
	}
	b.closed = true
	return errors.Join(b.stopDaemon(), b.kit.Close())
}

// callTimeout is the deadline of every spin call: longer than any window,
// so that no call times out while it is measured.
func (b *bench) callTimeout() time.Duration {
	return max(5*time.Minute, b.o.settle+b.o.duration+2*time.Minute)
}

// settings is a scenario's daemon configuration, without the paths.
func (b *bench) settings(sc *scenario) string {
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
[control]
enabled = %t
[log]
level = "info"
`, b.callTimeout().String(), b.o.spinners, idBase, idSlots, b.o.control) + sc.tiers
}

// scenario runs one scenario on a fresh daemon.
func (b *bench) scenario(ctx context.Context, sc *scenario) (_ *result, retErr error) {
	logf("scenario %s: %s", sc.name, sc.title)
	if err := b.startDaemon(ctx, sc.name, b.settings(sc)); err != nil {
		return nil, err
	}
	defer func() {
		if err := b.stopDaemon(); err != nil {
			retErr = errors.Join(retErr, err)
		}
	}()
	for _, t := range sc.ten {
		if t.assign {
			if _, err := b.c.SetTenant(ctx, &scopedv1.SetTenantRequest{Tenant: t.name, Tier: t.tier}); err != nil {
				return nil, fmt.Errorf("set tenant %s tier %s: %w", t.name, t.tier, err)
			}
		}
		for _, env := range t.envs {
			if _, err := b.c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: t.name, Environment: env, Name: extName, Bundle: b.files}); err != nil {
				return nil, fmt.Errorf("deploy for %s/%s: %w", t.name, env, err)
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

	// The spinners: each scope keeps -spinners calls of 60 s of CPU
	// running until the window ends (a call that completes is made again).
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var failMu sync.Mutex
	var failure error
	failed := make(chan struct{})
	fail := func(err error) {
		failMu.Lock()
		defer failMu.Unlock()
		if failure == nil {
			failure = err
			close(failed)
		}
	}
	restarts := make([]atomic.Int64, len(sc.ten))
	timeout := durationpb.New(b.callTimeout())
	for i, t := range sc.ten {
		for _, env := range t.envs {
			for range b.o.spinners {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for sctx.Err() == nil {
						_, err := b.c.Invoke(sctx, &scopedv1.InvokeRequest{Tenant: t.name, Environment: env,
							Extension: extName, Payload: []byte(spinMs), Timeout: timeout})
						if sctx.Err() != nil {
							return
						}
						if err != nil {
							fail(fmt.Errorf("spin for %s/%s: %w", t.name, env, err))
							return
						}
						restarts[i].Add(1)
					}
				}()
			}
		}
	}
	r := &result{sc: sc}
	measure := func() error {
		select {
		case <-time.After(b.o.settle):
		case <-failed:
			return failure
		case <-ctx.Done():
			return ctx.Err()
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
			next := start.at.Add(time.Duration(k) * b.o.duration / time.Duration(b.o.slices))
			select {
			case <-time.After(time.Until(next)):
			case <-failed:
				return failure
			case <-ctx.Done():
				return ctx.Err()
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
			tr := tenantResult{spec: t, cpu: end.tenant[i] - start.tenant[i], workers: end.workers[i],
				restarted: int(restarts[i].Load())}
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
	cancel()
	wg.Wait()
	if err != nil {
		return nil, fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	failMu.Lock()
	err = failure
	failMu.Unlock()
	if err != nil {
		return nil, err
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
// each call must return its payload), until n distinct workers have
// answered.
func (b *bench) warm(ctx context.Context, tenant, env, ext string, n int, payloads []string) error {
	seen := map[string]bool{}
	for _, ms := range payloads {
		var mu sync.Mutex
		var errs []error
		var wg sync.WaitGroup
		for range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, time.Minute)
				defer cancel()
				resp, err := b.c.Invoke(cctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: env, Extension: ext, Payload: []byte(ms)})
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					errs = append(errs, err)
					return
				}
				if strings.TrimSpace(string(resp.GetResult())) != ms {
					errs = append(errs, fmt.Errorf("%s %s returned %.40q", ext, ms, resp.GetResult()))
				}
				seen[resp.GetFigures().GetWorker()] = true
			}()
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
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
		dir := unifiedDir(p)
		workers, scopes := -1, []time.Duration(nil)
		if dir != "" {
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
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out, nil
}

// --- the daemon ------------------------------------------------------------

// startDaemon starts a daemon named name (unique in the run) with the
// configuration settings (without the paths) and connects to it.
func (b *bench) startDaemon(ctx context.Context, name, settings string) error {
	if b.d != nil {
		return errors.New("a daemon is running already")
	}
	d, err := b.kit.StartDaemon(ctx, name, cgroupRoot, settings)
	if err != nil {
		return err
	}
	b.d = d
	if b.c, err = client.Dial(ctx, d.Socket); err != nil {
		return errors.Join(err, b.stopDaemon())
	}
	return nil
}

// stopDaemon closes the client, stops the daemon with SIGTERM and checks
// that it removed its cgroups.
func (b *bench) stopDaemon() error {
	var errs []error
	if b.c != nil {
		errs = append(errs, b.c.Close())
		b.c = nil
	}
	if b.d == nil {
		return errors.Join(errs...)
	}
	_, err := b.kit.StopDaemon(b.d, 0)
	b.d = nil
	return errors.Join(append(errs, err)...)
}

// --- the report ------------------------------------------------------------

func (b *bench) report(results []*result, noisy *noisyResult) string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	n := b.o.spinners
	p("%s\n%s\n\n", markStart, sectionTitle)
	if len(results) > 0 {
		p("Every tenant runs CPU-bound work that could fill the machine on its own; the question is how the\n")
		p("daemon's cgroup tree (`<root>/<tier>/<tenant>/<scope>/<worker>`, a tier node's weight the sum of\n")
		p("its live tenants', tenants at their tier's `cpu_weight`) splits the CPU between them. A tenant's\n")
		p("share is its part of the CPU time all the scenario's tenants used in the window; the entitled share\n")
		p("is its tier's weight over the sum of the live tenants' weights.")
		if noisy != nil {
			p(" The last subsection measures a\n")
			p("victim tenant's invocation latency beside a noisy neighbour instead.")
		}
		p("\n\n")
	} else if noisy != nil {
		p("How much a noisy neighbour tenant slows down a victim tenant's invocations, with the daemon's\n")
		p("noisy-neighbour controller off and on.\n\n")
	}
	p("%s", benchmd.Facts(baseCommand, b.o.args))
	p("- Load average (1, 5, 15 min) at the start: %s\n", b.kit.LoadAvg)
	if len(results) == 0 {
		p("- Worker: `examples/spin` (Go SDK), which burns the payload's CPU milliseconds on one thread.\n")
		p("- Daemon: `scoped` built with `-tags seccomp`, a fresh one per phase, with a private configuration:\n")
		p("  isolation by tenant + environment; `[pool] max_concurrent = 1, idle_timeout = \"1h\"`; cgroup root\n")
		p("  `%s`; `[metrics] listen = \"off\"`; everything else at the defaults but as said below.\n", cgroupRoot)
		b.reportNoisy(p, noisy)
		p("%s\n", markEnd)
		return w.String()
	}
	p("- Worker: `examples/spin` (Go SDK), which burns the payload's CPU milliseconds on one thread.\n")
	p("- Daemon: `scoped` built with `-tags seccomp`, a fresh one per scenario, with a private\n")
	p("  configuration: isolation by tenant + environment; `[pool] max_workers = %d, max_concurrent = 1,\n", n)
	p("  idle_timeout = \"1h\"`; cgroup root `%s`; `[metrics] listen = \"off\"`; accounting and\n", cgroupRoot)
	if b.o.control {
		p("  everything else at the defaults, the noisy-neighbour controller on (`[control] enabled = true`).\n")
	} else {
		p("  everything else at the defaults, but the noisy-neighbour controller off (`[control] enabled = false`).\n")
	}
	p("- Method: spin is deployed for every tenant and environment; every scope is warmed first (its %d\n", n)
	p("  %s started by %d concurrent short spin calls, so that no cold start falls in the window). Then\n", benchmd.Plural(n, "worker"), n)
	p("  every scope keeps %d concurrent spin calls of %s ms of CPU running (one per CPU: each tenant\n", n, spinMs)
	p("  alone could fill the machine); after %s the CPU usage of every tenant's cgroup (`cpu.stat`\n", b.o.settle)
	p("  usage_usec, unified hierarchy) is read, and again %s later (and in between, %d equal slices\n", b.o.duration, b.o.slices)
	p("  of the window, for the spread of the shares over time). Then the calls are cancelled and the\n")
	p("  daemon is stopped with SIGTERM. Afterwards no cgroup named `*%s*` was left.\n", cgroupMark)
	p("- Jain's fairness index is (Σx)² / (n·Σx²) over x = share / entitled share: 1 when every tenant\n")
	p("  gets exactly its entitlement, 1/n when one tenant gets everything.\n")

	for _, r := range results {
		p("\n### %s\n\n%s\n\n", r.sc.title, r.sc.about)
		p("| Tenant | Tier | Scopes | CPU s in window | Share | Entitled | Share / entitled | Share per %s slice, min–max |\n",
			(r.window / time.Duration(b.o.slices)).Round(10*time.Millisecond))
		p("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
		var sum time.Duration
		restarted := 0
		for _, t := range r.ten {
			sum += t.cpu
			restarted += t.restarted
			p("| %s | %s | %d | %.2f | %.1f %% | %.1f %% | %.3f | %.1f–%.1f %% |\n", t.spec.name, t.spec.tier, len(t.spec.envs),
				t.cpu.Seconds(), 100*t.share, 100*t.entitled, t.share/t.entitled, 100*t.sliceLo, 100*t.sliceHi)
		}
		capacity := r.window.Seconds() * float64(runtime.NumCPU())
		other := max(r.machine-sum, 0)
		p("\nJain's fairness index: %.4f. Largest deviation from the entitled share: %.1f percentage points.\n",
			r.jain, 100*maxDeviation(r.ten))
		p("In the %.2f s window the tenants used %.2f CPU s of the machine's %.2f (%.0f %%); everything else\n",
			r.window.Seconds(), sum.Seconds(), capacity, 100*sum.Seconds()/capacity)
		p("(the daemon, other processes, the kernel) %.0f %% by /proc/stat.", 100*other.Seconds()/capacity)
		if restarted > 0 {
			p(" %d spin %s completed in the window and %s made again.", restarted, benchmd.Plural(restarted, "call"), plural2(restarted))
		}
		p("\n")
		for _, t := range r.ten {
			if len(t.scopeCPU) > 1 && t.cpu > 0 {
				lo, hi := slices.Min(t.scopeCPU), slices.Max(t.scopeCPU)
				p("Inside `%s`, its %d scopes got %.1f %% to %.1f %% of the tenant's CPU time each (even: %.1f %%).\n",
					t.spec.name, len(t.scopeCPU), 100*lo.Seconds()/t.cpu.Seconds(), 100*hi.Seconds()/t.cpu.Seconds(),
					100/float64(len(t.scopeCPU)))
			}
		}
		if r.sc.name == "scopes" {
			var scopes int
			for _, t := range r.ten {
				scopes += len(t.spec.envs)
			}
			many := len(r.ten[0].spec.envs)
			p("For comparison, were the scopes siblings of equal weight (no tenant level), `%s` would be\n", r.ten[0].spec.name)
			p("entitled to %d/%d = %.1f %% (computed, not measured).\n", many, scopes, 100*float64(many)/float64(scopes))
		}
	}
	if noisy != nil {
		b.reportNoisy(p, noisy)
	}
	p("%s\n", markEnd)
	return w.String()
}

func maxDeviation(ts []tenantResult) float64 {
	var d float64
	for _, t := range ts {
		d = max(d, math.Abs(t.share-t.entitled))
	}
	return d
}

func plural2(n int) string {
	if n == 1 {
		return "was"
	}
	return "were"
}

// --- helpers ---------------------------------------------------------------
