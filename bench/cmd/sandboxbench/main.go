// Command sandboxbench measures how long /usr/bin/true takes from start to
// exit: as a plain fork/exec, in a scoped sandbox, under bubblewrap and under
// `runc run`, round-robin in one run.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/sandbox"
)

var logf = benchmd.Logger("sandboxbench: ", false)

const (
	truePath   = "/usr/bin/true"
	cgroupRoot = "/scoped-bench" // removed at the start and at the end
)

// The series measured. A variant records one or more of them per run.
const (
	sFork          = "fork/exec"
	sScopedExit    = "scoped: Start → exit"
	sScopedDestroy = "scoped: Start → Destroy done"
	sLcExit        = "scoped, libcontainer: Start → exit"
	sLcDestroy     = "scoped, libcontainer: Start → Destroy done"
	stepPrefix     = "step: "
	sBwrap         = "bwrap"
	sRunc          = "runc run"
	pStart         = "sandbox.Start returns"
	pWait          = "then Wait returns (exit)"
	pDestroy       = "then Destroy returns"
)

type options struct {
	n, warmup    int
	gap          time.Duration
	bwrap, runc  string
	favorDynMods bool
}

func main() {
	sandbox.Init() // libcontainer re-executes this binary as the sandbox's init
	var o options
	flag.IntVar(&o.n, "n", 50, "measured iterations of each variant")
	flag.IntVar(&o.warmup, "warmup", 3, "warm-up iterations of each variant, discarded")
	flag.DurationVar(&o.gap, "gap", 50*time.Millisecond, "idle time before each run, so that no run inherits another's kernel state")
	flag.StringVar(&o.bwrap, "bwrap", "/usr/bin/bwrap", "bubblewrap binary")
	flag.StringVar(&o.runc, "runc", "/usr/sbin/runc", "runc binary")
	flag.BoolVar(&o.favorDynMods, "favordynmods", false, "turn the host's cgroup2 favordynmods on for the run (off again at the end if it was off), as the daemon's cgroup_favordynmods does, into a section of its own")
	benchmd.Main("sandboxbench", true, func(ctx context.Context, args string) (_ []string, retErr error) {
		if o.n < 1 || o.warmup < 0 || o.gap < 0 {
			return nil, errors.New("need -n ≥ 1, -warmup ≥ 0, -gap ≥ 0")
		}
		for _, p := range []string{truePath, o.bwrap, o.runc} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("%w (install bubblewrap and runc: scripts/deps.sh bench)", err)
			}
		}
		b := &bench{o: o}
		defer func() { retErr = errors.Join(retErr, b.close()) }()
		if o.favorDynMods {
			restore, err := cgroups.FavorDynMods()
			if err != nil {
				return nil, err
			}
			defer func() { retErr = errors.Join(retErr, restore()) }()
		}
		if err := b.setup(); err != nil {
			return nil, err
		}
		// The idle gap before each run: see the report's last paragraph.
		res, err := benchmd.RoundRobin(ctx, "", o.warmup, o.n, o.gap, b.variants(), logf)
		if err != nil {
			return nil, err
		}
		return []string{b.report(args, res)}, nil
	})
}

// bench is a cgroup tree, and a work directory with the sandboxes' state
// dir, runc's state dir and its OCI bundle.
type bench struct {
	o                    options
	tree                 *cgroups.Tree
	scopedNode, runcNode *cgroups.Node // parents of the variants' cgroup leaves
	work, state          string
	runc                 *benchmd.Runc
	layout               benchmd.HostLayout
	ids                  sandbox.IDRange
	seq                  int
	steps                []string // the native launcher's start steps, in order
}

func (b *bench) setup() error {
	var err error
	if b.tree, err = benchmd.OpenCgroupRoot(cgroupRoot, logf); err != nil {
		return err
	}
	if b.scopedNode, err = b.tree.Node(cgroups.Limits{}, "bench", "scoped"); err != nil {
		return err
	}
	if b.runcNode, err = b.tree.Node(cgroups.Limits{}, "bench", "runc"); err != nil {
		return err
	}
	if b.work, err = benchmd.WorkDir("scoped-bench-"); err != nil {
		return err
	}
	b.state = filepath.Join(b.work, "sandboxes")
	if b.layout, err = benchmd.ReadHostLayout(); err != nil {
		return err
	}
	// The id allocator's first two ranges: the sandboxes', then runc's.
	b.ids = sandbox.IDRange{Base: sandbox.DefaultIDBase, Size: sandbox.DefaultIDSize}
	b.runc, err = benchmd.NewRunc(b.o.runc, b.work, b.runcNode.Path(), benchmd.RuncSpec{Layout: b.layout,
		HostID: b.ids.Base + b.ids.Size, IDs: b.ids.Size, TmpSize: sandbox.DefaultTmpSize, Args: []string{truePath}})
	return err
}

// close removes everything the benchmark created, also when partly made;
// it is called once.
func (b *bench) close() error {
	var errs []error
	if b.runc != nil {
		errs = append(errs, b.runc.Close(logf))
	}
	if b.state != "" {
		n, err := sandbox.Cleanup(b.state)
		if n > 0 {
			logf("had to destroy %d sandboxes left behind", n)
		}
		errs = append(errs, err)
	}
	if b.work != "" {
		errs = append(errs, os.RemoveAll(b.work))
	}
	return errors.Join(append(errs, benchmd.RemoveCgroupRoot(b.tree))...)
}

// variants run /usr/bin/true once each and record the series they measure.
func (b *bench) variants() []benchmd.Variant {
	run := func(series string, args ...string) func(context.Context, func(string, time.Duration)) error {
		return func(_ context.Context, rec func(string, time.Duration)) error {
			var stderr bytes.Buffer
			cmd := exec.Command(args[0], args[1:]...)
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			rec(series, time.Since(t0))
			if err != nil {
				return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
			}
			return nil
		}
	}
	return []benchmd.Variant{
		{Name: "fork/exec", Run: run(sFork, truePath)},
		{Name: "scoped", Run: func(ctx context.Context, rec func(string, time.Duration)) error {
			return b.runScoped(ctx, sandbox.LauncherNative, rec)
		}},
		{Name: "scoped-libcontainer", Run: func(ctx context.Context, rec func(string, time.Duration)) error {
			return b.runScoped(ctx, sandbox.LauncherLibcontainer, rec)
		}},
		{Name: "bwrap", Run: run(sBwrap, append([]string{b.o.bwrap}, b.layout.BwrapArgs(truePath)...)...)},
		{Name: "runc", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			b.seq++
			d, err := b.runc.Run("r" + strconv.Itoa(b.seq))
			rec(sRunc, d)
			return err
		}},
	}
}

func (b *bench) runScoped(_ context.Context, l sandbox.Launcher, rec func(string, time.Duration)) error {
	b.seq++
	id := "s" + strconv.Itoa(b.seq)
	var stderr bytes.Buffer
	t0 := time.Now()
	s, err := sandbox.Start(sandbox.Config{ID: id, StateDir: b.state, Cgroup: b.scopedNode.Path() + "/" + id,
		Hostname: "bench", IDs: b.ids, Args: []string{truePath}, Stderr: &stderr, Launcher: l})
	if err != nil {
		return err
	}
	t1 := time.Now()
	st, werr := s.Wait()
	t2 := time.Now()
	derr := s.Destroy()
	t3 := time.Now()
	if err := errors.Join(werr, derr); err != nil {
		return err
	}
	if !st.Success() {
		return fmt.Errorf("%s %s: %s", truePath, st, strings.TrimSpace(stderr.String()))
	}
	if l == sandbox.LauncherLibcontainer {
		rec(sLcExit, t2.Sub(t0))
		rec(sLcDestroy, t3.Sub(t0))
		return nil
	}
	rec(sScopedExit, t2.Sub(t0))
	rec(sScopedDestroy, t3.Sub(t0))
	rec(pStart, t1.Sub(t0))
	rec(pWait, t2.Sub(t1))
	rec(pDestroy, t3.Sub(t2))
	steps := s.StartSteps()
	if len(b.steps) == 0 {
		for _, st := range steps {
			b.steps = append(b.steps, st.Name)
		}
	}
	for _, st := range steps {
		rec(stepPrefix+st.Name, st.At)
	}
	return nil
}

func (b *bench) report(args string, res map[string][]time.Duration) string {
	med := func(s string) time.Duration { return benchmd.Median(res[s]) }
	r := benchmd.NewReport("sandboxbench", "## Sandbox start-to-exit (issues 2 and 18)")
	if b.o.favorDynMods {
		r = benchmd.NewReport("sandboxbench-favordynmods", "## Sandbox start-to-exit with cgroup2 favordynmods on (issue 18)")
		r.P("The same as the section above, with the host's cgroup2 mount option `favordynmods` turned on for the run\n")
		r.P("(what the daemon's opt-in `cgroup_favordynmods = true` does while it runs), and off again afterwards.\n\n")
	}
	r.P("Start to exit of `%s`: forked and executed plainly, in a scoped sandbox, under\n", truePath)
	r.P("bubblewrap and under `runc run`, interleaved round-robin in one run.\n\n")
	r.P("%s", benchmd.Facts("go run -tags seccomp ./bench/cmd/sandboxbench", args))
	r.P("- cgroup2 favordynmods: %s\n", onOff(favorDynModsOn()))
	r.P("- N: %d measured runs of each variant, after %d discarded warm-up %s; %s idle before each run\n",
		b.o.n, b.o.warmup, benchmd.Plural(b.o.warmup, "round"), b.o.gap)
	r.P("- Versions: %s, libcontainer %s, %s, runc %s\n\n",
		runtime.Version(), benchmd.ModuleVersion("", "github.com/opencontainers/runc"), benchmd.ToolVersion(b.o.bwrap), benchmd.ToolVersion(b.o.runc))
	r.P("| Variant | Median | p90 | vs fork/exec |\n| --- | ---: | ---: | ---: |\n")
	for _, s := range []string{sFork, sScopedExit, sScopedDestroy, sLcExit, sLcDestroy, sBwrap, sRunc} {
		r.P("| %s | %s | %s | %s× |\n", s, benchmd.Ms(med(s)), benchmd.Ms(benchmd.Percentile(res[s], 90)), benchmd.DRatio(med(s), med(sFork)))
	}
	r.P("\nScoped against the others, ratios of medians (below 1: scoped is faster):\n\n")
	for _, s := range []string{sScopedExit, sScopedDestroy, sLcExit, sLcDestroy} {
		name, lc := strings.CutPrefix(s, "scoped, libcontainer: ")
		name = strings.TrimPrefix(name, "scoped: ")
		who := "scoped"
		if lc {
			who = "scoped with libcontainer"
		}
		r.P("- %s (%s) / bwrap = %s; / runc run = %s\n", who, name, benchmd.DRatio(med(s), med(sBwrap)), benchmd.DRatio(med(s), med(sRunc)))
	}
	r.P("- scoped (Start → exit), native / libcontainer launcher = %s\n", benchmd.DRatio(med(sScopedExit), med(sLcExit)))
	r.P("\nScoped's time by phase, medians: %s after %s, %s %s later, %s %s later.\n\n",
		pStart, benchmd.Ms(med(pStart)), pWait, benchmd.Ms(med(pWait)), pDestroy, benchmd.Ms(med(pDestroy)))
	if len(b.steps) > 0 {
		r.P("The native launcher's start step by step (`Sandbox.StartSteps`), medians of when each step was done,\n")
		r.P("counted from the call of `sandbox.Start`; init steps are the init's own clock readings:\n\n")
		r.P("| Step | Done at | Since the step before |\n| --- | ---: | ---: |\n")
		var prev time.Duration
		for _, st := range b.steps {
			at := med(stepPrefix + st)
			r.P("| %s | %s | %s |\n", st, benchmd.Ms(at), benchmd.Ms(at-prev))
			prev = at
		}
		r.P("\n")
	}
	r.P("Times are wall clock in the benchmark process, from just before the start to just after the last call returns;\n")
	r.P("every variant gets stdin from /dev/null, stdout discarded and stderr captured.\n\n")
	r.P("- **fork/exec**: `os/exec` runs `%s`.\n", truePath)
	r.P("- **scoped**: `sandbox.Start` with the native launcher (the default) in a fresh cgroup leaf under `%s`,\n", b.scopedNode.Path())
	r.P("  then `Wait` and `Destroy` (cgroup and state removed); **scoped, libcontainer** the same with\n")
	r.P("  `Launcher: libcontainer` (its state and rootfs directory removed too). User (a high host uid range), pid, mount, ipc, uts, net (loopback) and\n")
	r.P("  cgroup namespaces; read-only /usr and a few /etc files; private /proc, /dev, /tmp; no capabilities; seccomp.\n")
	r.P("- **bwrap**: `bwrap %s`: no cgroup, no seccomp filter.\n", strings.Join(b.layout.BwrapArgs(truePath), " "))
	r.P("- **runc run**: `runc run` of a bundle from `runc spec` changed to match scoped (the same namespaces, another high\n")
	r.P("  uid range, no capabilities, a read-only root, a fresh cgroup leaf under `%s`; no seccomp filter). It\n", b.runcNode.Path())
	r.P("  deletes the container before it exits, so it compares with scoped's Start → Destroy.\n\n")
	r.P("The idle time before each run keeps one run's kernel state from speeding up the next: the first write to a\n")
	r.P("`cgroup.procs` after a pause waits for an RCU grace period (5–15 ms here), one within ~15 ms of another does not.\n")
	r.P("scoped and runc pay it on every run, as a daemon that starts sandboxes now and then does.\n")
	return r.End()
}

func onOff(on bool) string {
	if on {
		return "on"
	}
	return "off"
}

// favorDynModsOn reports whether a cgroup2 mount has favordynmods on.
func favorDynModsOn() bool {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.Contains(l, " - cgroup2 ") && strings.Contains(l, "favordynmods") {
			return true
		}
	}
	return false
}
