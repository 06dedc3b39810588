// Command fairbench measures fair CPU shares between tenants through the
// daemon (issues 5 and 16): in each share scenario (share.go) every tenant
// keeps spin calls running that could each fill the machine, and its part of
// the CPU time is set against its tier's entitlement. The scenario "noisy"
// (noisy.go) measures a victim's latency beside a noisy neighbour instead.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
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
	// daemonLeaf is the cgroup -daemon-weight puts each daemon in, beside
	// its tree (issue 17's layout under systemd).
	daemonLeaf = cgroupMark + "-daemon"
)

type options struct {
	duration, settle    time.Duration
	repeat, noisyRepeat int // runs of every share scenario; repeats of the noisy phases
	spinners            int
	scenarios           []string
	control             bool
	label               string // the section's label ("": none), see sectionMark
	daemonWeight        int    // >0: each daemon in daemonLeaf with this CPU weight
	shareIdle           *bool  // [control] share_idle; nil: the daemon's default
	daemonLog           string // keep a copy of the daemons' logs here ("": none)
	logLevel            string // the daemons' [log] level
	where               where
}

// allScenarios are the scenarios in the order they run by default: the
// share scenarios, then the noisy neighbour.
var allScenarios = []string{"equal", "tiers", "scopes", noisyName}

func main() {
	var o options
	var sc, from string
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "measured window per run, a multiple of the "+sliceLen.String()+" slices")
	flag.DurationVar(&o.settle, "settle", 4*time.Second, "time between starting the spinners and the window (the controller acts meanwhile)")
	flag.IntVar(&o.repeat, "repeat", 5, "runs of every share scenario, each on a fresh daemon (round robin over the scenarios)")
	flag.IntVar(&o.noisyRepeat, "noisy-repeat", 3, "repeats of the noisy scenario's phases")
	flag.IntVar(&o.spinners, "spinners", runtime.NumCPU(), "concurrent spin invocations (and workers) per scope")
	flag.StringVar(&sc, "scenarios", strings.Join(allScenarios, ","), "comma-separated scenarios: "+strings.Join(allScenarios, ", ")+
		" (in scoped's test VM the default leaves out "+noisyName+")")
	shareIdle := flag.Bool("share-idle", false, "set the daemons' [control] share_idle (unset: the daemon's default): a tenant the fair-share rule caps is SCHED_IDLE too")
	flag.BoolVar(&o.control, "control", true, "run the daemons' controller ([control] enabled) in the share scenarios (noisy sets it per phase)")
	flag.IntVar(&o.daemonWeight, "daemon-weight", 0, "move each daemon into a cgroup of its own beside its tree with this CPU weight (1-10000; "+
		"the daemon's leaf under systemd, supervisor_cpu_weight); 0: it stays in this program's cgroup")
	flag.StringVar(&o.label, "label", "", "label of the section, whose markers become fairbench-<label> (e.g. vm-6.12); "+
		"default: none on a host, vm-<major.minor of the kernel> in scoped's test VM (hostname "+vmHostname+")")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	flag.StringVar(&o.logLevel, "log-level", "info", "the daemons' [log] level (debug: the fair-share rule's figures every tick)")
	flag.StringVar(&from, "merge", "", "measure nothing: copy the labelled fairbench sections of this `file` (a VM run's -o) into -o")
	benchmd.Main("fairbench", true, func(ctx context.Context, args string) ([]string, error) {
		out := flag.Lookup("o").Value.String()
		if from != "" {
			return merge(from, out)
		}
		explicit := false
		flag.Visit(func(f *flag.Flag) {
			explicit = explicit || f.Name == "scenarios"
			if f.Name == "share-idle" {
				o.shareIdle = shareIdle
			}
		})
		o.where = detectWhere()
		if o.label == "" {
			o.label = autoLabel(o.where)
		}
		if !validLabel(o.label) {
			return nil, fmt.Errorf("-label %q: want lower-case letters, digits, dots and dashes, starting with a letter or digit", o.label)
		}
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
		case o.spinners < 1 || o.spinners > 64:
			return nil, errors.New("-spinners: want 1..64")
		case o.daemonWeight < 0 || o.daemonWeight > 10000:
			return nil, errors.New("-daemon-weight: want 1..10000, or 0 for none")
		case !slices.Contains([]string{"debug", "info", "warn", "error"}, o.logLevel):
			return nil, fmt.Errorf("-log-level %q: want debug, info, warn or error", o.logLevel)
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

type bench struct {
	o     options
	kit   *benchmd.Kit
	files *scopedv1.Bundle // spin's
	d     *benchmd.Daemon  // the scenario's or phase's
	took  time.Duration    // the whole run, for the report
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	t0 := time.Now()
	b := &bench{o: o}
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs.Path, b.kit.Logs.Header = o.daemonLog, true
	defer func() { retErr = errors.Join(retErr, b.kit.Close()) }()
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	var results []*scenarioRuns
	for _, name := range o.scenarios { // in the order given
		if i := slices.IndexFunc(scenarios, func(sc *scenario) bool { return sc.name == name }); i >= 0 {
			results = append(results, &scenarioRuns{sc: scenarios[i]})
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

// callTimeout is the deadline of every spin call: longer than any window.
func (b *bench) callTimeout() time.Duration {
	return max(5*time.Minute, b.o.settle+b.o.duration+2*time.Minute)
}

// startDaemon starts the daemon of a scenario or phase with workers per
// scope, the controller on or off, and extra settings of [control] or
// tables after it; stopDaemon stops it.
func (b *bench) startDaemon(ctx context.Context, name string, workers int, control bool, extra string) (err error) {
	cfg := fmt.Sprintf(`[isolation]
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
level = %q
[control]
enabled = %t
`, b.callTimeout().String(), workers, idBase, idSlots, b.o.logLevel, control)
	if b.o.shareIdle != nil {
		cfg += fmt.Sprintf("share_idle = %t\n", *b.o.shareIdle)
	}
	if b.d, err = b.kit.StartDaemon(ctx, name, cgroupRoot, cfg+extra); err == nil && b.o.daemonWeight > 0 {
		err = placeDaemon(b.d.Pid(), b.o.daemonWeight)
	}
	return err
}

func (b *bench) stopDaemon(retErr *error) {
	_, err := b.kit.StopDaemon(b.d, 0)
	if b.o.daemonWeight > 0 {
		if rerr := os.Remove(leafDir()); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = errors.Join(err, fmt.Errorf("daemon leaf: %w", rerr))
		}
	}
	*retErr = errors.Join(*retErr, err)
}

// leafDir is daemonLeaf in the cpu controller's hierarchy: the unified one
// on a pure v2 host, v1's cpu one elsewhere.
func leafDir() string {
	if cgroups.HostMode() == cgroups.V2 {
		return filepath.Join("/sys/fs/cgroup", daemonLeaf)
	}
	return filepath.Join("/sys/fs/cgroup/cpu", daemonLeaf)
}

// placeDaemon moves the process pid (the daemon: its workers are in their
// own cgroups) into daemonLeaf, made with CPU weight w (cpu.weight on v2,
// the equal cpu.shares on v1, as the daemon maps tiers' weights).
func placeDaemon(pid, w int) error {
	dir := leafDir()
	file, val := "cpu.weight", strconv.Itoa(w)
	if cgroups.HostMode() != cgroups.V2 {
		file, val = "cpu.shares", strconv.FormatUint(cgroups.SharesFromWeight(uint64(w)), 10)
	}
	err := os.Mkdir(dir, 0o755)
	if errors.Is(err, os.ErrExist) {
		err = nil
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, file), []byte(val), 0)
	}
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0)
	}
	if err != nil {
		return fmt.Errorf("daemon leaf: %w", err)
	}
	return nil
}

// deploy deploys bundle as ext of tenant in env and starts n workers:
// rounds of n concurrent calls (a payload per round, each longer; each call
// must return its payload), until n distinct workers answered.
func (b *bench) deploy(ctx context.Context, tenant, env, ext string, bundle *scopedv1.Bundle, n int, payloads []string) error {
	if err := b.d.Deploy(ctx, tenant, env, ext, bundle); err != nil {
		return err
	}
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
			seen[resp.GetFigures().GetWorker()] = true
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

// keep keeps n calls of ext with payload for tenant in env running until
// ctx is done, counting those that complete in done (if not nil); a failure
// cancels ctx.
func (b *bench) keep(ctx context.Context, cancel context.CancelCauseFunc, wg *sync.WaitGroup, n int, tenant, env, ext, payload string, done *atomic.Int64) {
	timeout := durationpb.New(b.callTimeout())
	benchmd.Keep(ctx, cancel, wg, n, func(ctx context.Context) error {
		_, err := b.d.C.Invoke(ctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: env, Extension: ext, Payload: []byte(payload), Timeout: timeout})
		if err != nil {
			return fmt.Errorf("%s for %s/%s: %w", ext, tenant, env, err)
		}
		if done != nil {
			done.Add(1)
		}
		return nil
	})
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

// title is the section's heading: the host or the VM, and its kernel.
func (b *bench) title() string {
	t := "## Fair shares between tenants (issues 5, 16): " + map[bool]string{false: "host", true: "VM"}[b.o.where.vm] + ", kernel " + b.o.where.kernel
	if b.o.where.tcg {
		t += " (TCG emulation)"
	}
	return t
}

// facts are the first lines of the list of facts: the command, the date,
// the machine and where it ran.
func (b *bench) facts(args string) string {
	w := b.o.where
	var f, where string
	switch {
	case w.vm:
		f = "- Command: `sudo make bench-v2`, which runs the fairbench built on the host as `fairbench " + args + "` in scoped's test VM\n" +
			"- Date: " + benchmd.Date() + "\n- " + benchmd.Machine() + "\n"
		where = fmt.Sprintf("in scoped's test VM (scripts/vm-test.sh: Debian's kernel, cgroup v2 only, %d vCPUs)", runtime.NumCPU())
	case w.tcg:
		f, where = benchmd.Facts("go run -tags seccomp ./bench/cmd/fairbench", args), "on a QEMU guest"
	default:
		f, where = benchmd.Facts("go run -tags seccomp ./bench/cmd/fairbench", args), "on the host, not in scoped's test VM"
	}
	f += "- Where: " + where
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
	if len(results) > 0 {
		r.P("Every tenant runs CPU-bound work that could fill the machine on its own: how does the daemon's cgroup tree\n")
		r.P("(`<root>/<tier>/<tenant>/<scope>/<worker>`, tenants at their tier's `cpu_weight`) split the CPU between them? A\n")
		r.P("tenant's share is its part of the CPU time all the scenario's tenants used in the window; the entitled share is\n")
		r.P("its tier's weight over the sum of the live tenants' weights.")
		if noisy != nil {
			r.P(" The last subsection measures a victim tenant's latency beside a\nnoisy neighbour instead.")
		}
		r.P("\n\n")
	} else {
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
	if len(results) == 0 {
		r.P("- Daemon: a fresh one per phase: isolation by tenant + environment; `[pool] max_concurrent = 1`;\n")
		r.P("  cgroup root `%s`; `[metrics] listen = \"off\"`; the rest at its default but as said below.\n", cgroupRoot)
		b.reportNoisy(r, noisy)
		return r.End()
	}
	b.reportShares(r, results)
	if noisy != nil {
		b.reportNoisy(r, noisy)
	}
	return r.End()
}
