// Command sandboxbench measures how long a trivial program, /usr/bin/true,
// takes from start to exit: as a plain fork/exec, in a scoped sandbox, under
// bubblewrap and under `runc run`. The variants run round-robin in one
// process, N measured iterations each after a few discarded warm-up rounds,
// so that machine noise hits them alike; it reports medians, p90s and the
// ratios between variants. With -o it writes its section of BENCHMARKS.md,
// between marker comments, and leaves the rest of the file alone.
//
// It runs as root (sudo make bench) and needs bubblewrap and runc; it never
// uses the network. Everything it creates — its cgroup root /scoped-bench
// and all below it, a temporary directory with the sandboxes' state, the OCI
// bundle and runc's state — is removed before it exits, also when it fails or
// is interrupted. Each run follows an idle gap (-gap, 50ms), for the reason
// given at measure.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/sandbox"
)

var logf = benchmd.Logger("sandboxbench: ", false)

const (
	truePath = "/usr/bin/true"

	// The markers around this program's section of the output file.
	markStart = "<!-- sandboxbench:start -->"
	markEnd   = "<!-- sandboxbench:end -->"

	sectionTitle = "## Sandbox start-to-exit (issue 2)"

	// The command `make bench` runs.
	baseCommand = "go run -tags seccomp ./bench/cmd/sandboxbench"

	// The cgroup root the benchmark owns: it removes whatever an earlier run
	// left there at start, and all of it at the end.
	cgroupRoot = "/scoped-bench"
)

// The series measured. A variant records one or more of them per run.
const (
	sFork          = "fork/exec"
	sScopedExit    = "scoped: Start → exit"
	sScopedDestroy = "scoped: Start → Destroy done"
	sBwrap         = "bwrap"
	sRunc          = "runc run"

	// Phases of a scoped run, for the breakdown.
	pStart   = "sandbox.Start returns"
	pWait    = "then Wait returns (exit)"
	pDestroy = "then Destroy returns"
)

type options struct {
	n, warmup  int
	gap        time.Duration
	out        string
	bwrap      string
	runc       string
	argsString string // the flags as given, for the report
}

func main() {
	// libcontainer re-executes this binary as the sandbox's init.
	sandbox.Init()

	var o options
	flag.IntVar(&o.n, "n", 50, "measured iterations of each variant")
	flag.IntVar(&o.warmup, "warmup", 3, "warm-up iterations of each variant, discarded")
	flag.DurationVar(&o.gap, "gap", 50*time.Millisecond, "idle time before each run, so that no run inherits another's kernel state")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	flag.StringVar(&o.bwrap, "bwrap", "/usr/bin/bwrap", "bubblewrap binary")
	flag.StringVar(&o.runc, "runc", "/usr/sbin/runc", "runc binary")
	benchmd.Main("sandboxbench", func(args string) error {
		o.argsString = args
		return run(o)
	})
}

func run(o options) (retErr error) {
	switch {
	case o.n < 1:
		return fmt.Errorf("-n %d: need at least one iteration", o.n)
	case o.warmup < 0:
		return fmt.Errorf("-warmup %d: must not be negative", o.warmup)
	case o.gap < 0:
		return fmt.Errorf("-gap %s: must not be negative", o.gap)
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	}
	for _, p := range []string{truePath, o.bwrap, o.runc} {
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("%w (install bubblewrap and runc: scripts/deps.sh bench)", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := newBench(o)
	if err != nil {
		return err
	}
	defer func() { retErr = errors.Join(retErr, b.close()) }()

	res, err := b.measure(ctx)
	if err != nil {
		return err
	}
	section := b.report(res)
	return benchmd.Output(o.out, markStart, markEnd, section, logf)
}

// bench is the benchmark's world: a cgroup tree, a work directory with the
// sandboxes' state dir, runc's state dir and an OCI bundle.
type bench struct {
	o    options
	tree *cgroups.Tree
	// Parents of the sandboxes' and runc's cgroup leaves.
	scopedNode, runcNode *cgroups.Node

	work   string // temporary, mode 0711
	state  string // sandbox.Config.StateDir
	runc   *benchmd.Runc
	layout benchmd.HostLayout

	ids, runcIDs sandbox.IDRange
	seq          int
}

func newBench(o options) (_ *bench, retErr error) {
	b := &bench{o: o}
	defer func() {
		if retErr != nil {
			retErr = errors.Join(retErr, b.close())
		}
	}()
	var err error
	if b.tree, err = benchmd.OpenCgroupRoot(cgroupRoot, logf); err != nil {
		return nil, err
	}
	if b.scopedNode, err = b.tree.Node(cgroups.Limits{}, "bench", "scoped"); err != nil {
		return nil, err
	}
	if b.runcNode, err = b.tree.Node(cgroups.Limits{}, "bench", "runc"); err != nil {
		return nil, err
	}

	if b.work, err = benchmd.WorkDir("scoped-bench-"); err != nil {
		return nil, err
	}
	b.state = filepath.Join(b.work, "sandboxes")

	alloc, err := sandbox.NewIDAllocator(sandbox.DefaultIDBase, sandbox.DefaultIDSize, 2)
	if err != nil {
		return nil, err
	}
	if b.ids, err = alloc.Acquire("scoped"); err != nil {
		return nil, err
	}
	if b.runcIDs, err = alloc.Acquire("runc"); err != nil {
		return nil, err
	}
	if b.layout, err = benchmd.ReadHostLayout(); err != nil {
		return nil, err
	}
	b.runc, err = benchmd.NewRunc(o.runc, b.work, b.runcNode.Path(), benchmd.RuncSpec{Layout: b.layout,
		HostID: b.runcIDs.Base, IDs: b.runcIDs.Size, TmpSize: sandbox.DefaultTmpSize, Args: []string{truePath}})
	return b, err
}

// close removes everything the benchmark created. It is safe on a partly
// built bench.
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
	bwrapArgs := b.layout.BwrapArgs(truePath)
	return []benchmd.Variant{
		{Name: "fork/exec", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			var stderr bytes.Buffer
			cmd := exec.Command(truePath)
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			rec(sFork, time.Since(t0))
			return cmdErr(err, &stderr)
		}},
		{Name: "scoped", Run: b.runScoped},
		{Name: "bwrap", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			var stderr bytes.Buffer
			cmd := exec.Command(b.o.bwrap, bwrapArgs...)
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			rec(sBwrap, time.Since(t0))
			return cmdErr(err, &stderr)
		}},
		{Name: "runc", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			b.seq++
			d, err := b.runc.Run("r" + strconv.Itoa(b.seq))
			rec(sRunc, d)
			return err
		}},
	}
}

func (b *bench) runScoped(_ context.Context, rec func(string, time.Duration)) error {
	b.seq++
	id := "s" + strconv.Itoa(b.seq)
	var stderr bytes.Buffer
	cfg := sandbox.Config{
		ID:       id,
		StateDir: b.state,
		Cgroup:   b.scopedNode.Path() + "/" + id,
		Hostname: "bench",
		IDs:      b.ids,
		Args:     []string{truePath},
		Stderr:   &stderr,
	}
	t0 := time.Now()
	s, err := sandbox.Start(cfg)
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
	rec(sScopedExit, t2.Sub(t0))
	rec(sScopedDestroy, t3.Sub(t0))
	rec(pStart, t1.Sub(t0))
	rec(pWait, t2.Sub(t1))
	rec(pDestroy, t3.Sub(t2))
	return nil
}

func cmdErr(err error, stderr *bytes.Buffer) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %s", err, strings.TrimSpace(stderr.String()))
}

// measure runs every variant warmup+n times, round-robin. Each run
// follows an idle gap: the first write to cgroup.procs after some idle time
// waits for an RCU grace period (5–15 ms here), and one that follows
// another within ~15 ms does not, so without the gap scoped and runc would
// speed each other up depending on their order.
func (b *bench) measure(ctx context.Context) (map[string][]time.Duration, error) {
	return benchmd.RoundRobin(ctx, "", b.o.warmup, b.o.n, b.o.gap, b.variants(), logf)
}

// stats are the median and 90th percentile (nearest rank) of a series.
type stats struct{ median, p90 time.Duration }

// report renders the section, markers included.
func (b *bench) report(res map[string][]time.Duration) string {
	st := map[string]stats{}
	for s, ds := range res {
		st[s] = stats{benchmd.Median(ds), benchmd.Percentile(ds, 90)}
	}
	fork := st[sFork].median
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }

	p("%s\n%s\n\n", markStart, sectionTitle)
	p("Start to exit of `%s`: forked and executed plainly, in a scoped sandbox, under\n", truePath)
	p("bubblewrap and under `runc run`, interleaved round-robin in one run.\n\n")
	p("%s", benchmd.Facts(baseCommand, b.o.argsString))
	p("- N: %d measured runs of each variant, after %d discarded warm-up %s; %s idle before each run\n",
		b.o.n, b.o.warmup, benchmd.Plural(b.o.warmup, "round"), b.o.gap)
	p("- Versions: %s, libcontainer %s, %s, runc %s\n\n",
		runtime.Version(), benchmd.ModuleVersion("github.com/opencontainers/runc"), benchmd.ToolVersion(b.o.bwrap), benchmd.ToolVersion(b.o.runc))

	p("| Variant | Median | p90 | vs fork/exec |\n| --- | ---: | ---: | ---: |\n")
	for _, s := range []string{sFork, sScopedExit, sScopedDestroy, sBwrap, sRunc} {
		p("| %s | %s | %s | %s× |\n", s, benchmd.Ms(st[s].median), benchmd.Ms(st[s].p90), benchmd.DRatio(st[s].median, fork))
	}
	p("\nScoped against the others, ratios of medians (below 1: scoped is faster):\n\n")
	for _, s := range []string{sScopedExit, sScopedDestroy} {
		name := strings.TrimPrefix(s, "scoped: ")
		p("- scoped (%s) / bwrap = %s; scoped (%s) / runc run = %s\n",
			name, benchmd.DRatio(st[s].median, st[sBwrap].median), name, benchmd.DRatio(st[s].median, st[sRunc].median))
	}
	p("\nScoped's time by phase, medians: %s after %s, %s %s later, %s %s later.\n\n",
		pStart, benchmd.Ms(st[pStart].median), pWait, benchmd.Ms(st[pWait].median), pDestroy, benchmd.Ms(st[pDestroy].median))

	p("Times are wall clock in the benchmark process, from just before the start to just after the\n")
	p("last call returns. Every variant gets stdin from /dev/null, stdout discarded and stderr captured.\n\n")
	p("- **fork/exec**: `os/exec` runs `%s`.\n", truePath)
	p("- **scoped**: `sandbox.Start` with `Args: [%s]` in a fresh cgroup leaf under\n", truePath)
	p("  `%s`, then `Wait` (the process has exited) and `Destroy` (cgroup,\n", b.scopedNode.Path())
	p("  libcontainer state and rootfs directory removed). Isolation: user (a high host uid range),\n")
	p("  pid, mount, ipc, uts, net (loopback) and cgroup namespaces; read-only binds of /usr and a few\n")
	p("  /etc files; private /proc, /dev, /tmp; no capabilities; seccomp; rlimits.\n")
	p("- **bwrap**: `bwrap %s`.\n", strings.Join(b.layout.BwrapArgs(truePath), " "))
	p("  It creates no cgroup and installs no seccomp filter.\n")
	p("- **runc run**: `runc --root <tmp> run --bundle <tmp> <unique id>`, with a bundle from `runc spec`\n")
	p("  changed to match scoped: pid, net, ipc, uts, mount, user (another high uid range) and cgroup\n")
	p("  namespaces; no capabilities; a read-only root with the host's /bin, /lib… symlinks, read-only\n")
	p("  /usr, private /proc, /dev, /tmp; a fresh cgroup leaf under `%s`; no seccomp\n", b.runcNode.Path())
	p("  filter. `runc run` deletes the container before it exits, so it compares with scoped's\n")
	p("  Start → Destroy.\n\n")
	p("The idle time before each run keeps one run's kernel state from speeding up the next: the first\n")
	p("write to a `cgroup.procs` after a pause waits for an RCU grace period (5–15 ms on this kind of\n")
	p("host, cgroup v1), one within ~15 ms of another does not. scoped and runc pay it on every run,\n")
	p("as a daemon that starts sandboxes now and then does; bwrap and fork/exec join no cgroup.\n")
	p("%s\n", markEnd)
	return w.String()
}
