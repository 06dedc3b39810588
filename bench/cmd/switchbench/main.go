// Command switchbench measures what scoped's eBPF CPU accounting adds to a
// context switch. A child process in a scope's worker leaf runs
// accounting.PingPong: two threads pinned to one CPU (-cpu, 1) wake each
// other through pipes for -n round trips, two switches and two wake-ups per
// round trip, and it reports the wall time per switch. Three variants run
// round-robin for -rounds rounds, each starting with the next variant:
//
//	off       no accounting programs loaded
//	attached  an accounting Source open (eBPF programs on sched_switch and
//	          sched_wakeup, BPF run-time statistics on), the scope untracked
//	tracked   the same with the scope tracked
//
// Each eBPF run opens its own Source and closes it before the next run, so
// that "off" really runs with nothing attached. For the eBPF variants it
// also reports the programs' own run time per run as the kernel measures it.
//
// Run it as root: go run -tags seccomp ./bench/cmd/switchbench -o BENCHMARKS.md
// With -o it replaces its section of that file between marker comments. It
// owns the cgroup root /scoped-bench-switch and removes it, with the scope
// and its processes, before it exits; an abstract unix socket keeps a second
// run from starting meanwhile.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/scoped-io/scoped/accounting"
	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
)

var logf = benchmd.Logger("switchbench: ", false)

const (
	markStart    = "<!-- switchbench:start -->"
	markEnd      = "<!-- switchbench:end -->"
	sectionTitle = "## Context switches with accounting attached (issue 4)"
	baseCommand  = "go run -tags seccomp ./bench/cmd/switchbench"

	cgroupRoot = "/scoped-bench-switch"
	cgroupMark = "scoped-bench-switch" // any cgroup named so is ours
	childEnv   = "SCOPED_SWITCHBENCH_CHILD"

	// settle is the pause between moving the child into its leaf (and
	// loading the programs) and releasing it.
	settle       = 200 * time.Millisecond
	childTimeout = 2 * time.Minute
)

const (
	vOff      = "off"
	vAttached = "attached"
	vTracked  = "tracked"
)

var variants = []string{vOff, vAttached, vTracked}

// progs are the programs whose kernel-measured cost is reported: each
// ping-pong switch runs each once.
var progs = []string{"acct_switch", "acct_wakeup"}

type options struct {
	rounds, warmup, n, cpu int
	out, argsString        string
}

func main() {
	if os.Getenv(childEnv) == "1" {
		os.Exit(child())
	}
	var o options
	flag.IntVar(&o.rounds, "rounds", 10, "measured rounds; each runs every variant once")
	flag.IntVar(&o.warmup, "warmup", 1, "warm-up rounds, discarded")
	flag.IntVar(&o.n, "n", 200000, "ping-pong round trips per run (two switches each)")
	flag.IntVar(&o.cpu, "cpu", 1, "the CPU both ping-pong threads are pinned to")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	benchmd.Main("switchbench", func(args string) error {
		o.argsString = args
		return run(o)
	})
}

// child is the ping-pong process: it says "ready", waits for "N CPU" on
// stdin (the parent moves it into the worker leaf meanwhile), runs the
// ping-pong and prints ns per switch.
func child() int {
	fmt.Println("ready")
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	if err != nil {
		return 0 // the parent went away
	}
	n, cpu, err := parseRelease(line)
	if err == nil {
		var d time.Duration
		if d, err = accounting.PingPong(n, cpu); err == nil {
			fmt.Println(d.Nanoseconds())
			return 0
		}
	}
	fmt.Fprintln(os.Stderr, "switchbench child:", err)
	return 2
}

// parseRelease parses the child's go-ahead, "N CPU".
func parseRelease(line string) (n, cpu int, err error) {
	f := strings.Fields(line)
	if len(f) != 2 {
		return 0, 0, fmt.Errorf("go-ahead %q: want \"N CPU\"", strings.TrimSpace(line))
	}
	n, err1 := strconv.Atoi(f[0])
	cpu, err2 := strconv.Atoi(f[1])
	if err1 != nil || err2 != nil || n < 1 || cpu < 0 {
		return 0, 0, fmt.Errorf("go-ahead %q: want a positive N and a CPU number", strings.TrimSpace(line))
	}
	return n, cpu, nil
}

// bench is the benchmark's cgroup tree and scope.
type bench struct {
	o             options
	tree          *cgroups.Tree
	scope, worker *cgroups.Node
	scopeID       uint64
	acct          accounting.Options
}

func run(o options) (retErr error) {
	switch {
	case o.rounds < 1 || o.warmup < 0 || o.n < 1:
		return fmt.Errorf("-rounds %d -warmup %d -n %d: need at least one round and one round trip", o.rounds, o.warmup, o.n)
	case os.Geteuid() != 0:
		return errors.New("must run as root (it creates cgroups and loads eBPF programs)")
	case cgroups.HostMode() == cgroups.V1:
		return errors.New("eBPF accounting needs a unified (cgroup2) hierarchy: this host is pure cgroup v1")
	}
	var allowed unix.CPUSet
	if err := unix.SchedGetaffinity(0, &allowed); err != nil {
		return fmt.Errorf("CPU affinity: %w", err)
	}
	if o.cpu < 0 || !allowed.IsSet(o.cpu) {
		return fmt.Errorf("-cpu %d: no such CPU available (this process may use %d CPUs)", o.cpu, allowed.Count())
	}
	lock, err := benchmd.Lock("switch")
	if err != nil {
		return err
	}
	defer lock.Close()
	if left := accountingPrograms(); len(left) > 0 {
		return fmt.Errorf("accounting programs are loaded already (%s; a scoped daemon?): \"off\" would not be off", strings.Join(left, ", "))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b := &bench{o: o}
	defer func() { retErr = errors.Join(retErr, b.close()) }()
	if err := b.setup(); err != nil {
		return err
	}
	load := benchmd.LoadAvg()
	res, err := b.measure(ctx)
	if err != nil {
		return err
	}
	// Clean up before writing, so that the report can say it worked.
	if err := b.close(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	section := report(o, load, res)
	return benchmd.Output(o.out, markStart, markEnd, section, logf)
}

func (b *bench) setup() error {
	var err error
	if b.tree, err = benchmd.OpenCgroupRoot(cgroupRoot, logf); err != nil {
		return err
	}
	root, err := cgroups.Load(cgroupRoot)
	if err != nil {
		return err
	}
	id, err := root.ID()
	if err != nil {
		return err
	}
	level, err := accounting.Level(root.UnifiedDir())
	if err != nil {
		return err
	}
	b.acct = accounting.Options{RootID: id, RootLevel: level, ScopeLevel: level + 3,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))}
	if b.scope, err = b.tree.Node(cgroups.Limits{}, "free", "bench", "pingpong"); err != nil {
		return err
	}
	if b.worker, err = b.scope.Child("w1", cgroups.Limits{}); err != nil {
		return err
	}
	b.scopeID, err = b.scope.ID()
	return err
}

// close removes the cgroups (killing any child left in them) and checks that
// none named after the benchmark remains. It is safe to call twice.
func (b *bench) close() error {
	if b.tree == nil {
		return nil
	}
	var errs []error
	if b.scope != nil {
		errs = append(errs, b.scope.Remove())
	}
	errs = append(errs, benchmd.RemoveCgroupRoot(b.tree))
	b.tree, b.scope = nil, nil
	if left, _ := benchmd.CgroupsLeft(cgroupMark); len(left) > 0 {
		errs = append(errs, fmt.Errorf("cgroups left behind: %s", strings.Join(left, " ")))
	}
	return errors.Join(errs...)
}

// sample is one run: ns per switch, and each program's ns per run (absent
// without BPF statistics).
type sample struct {
	perSwitch float64
	perRun    map[string]float64
}

// measure runs every variant once per round, rotating which goes first.
func (b *bench) measure(ctx context.Context) (map[string][]sample, error) {
	res := map[string][]sample{}
	total := b.o.warmup + b.o.rounds
	for i := range total {
		for k := range variants {
			if err := ctx.Err(); err != nil {
				return nil, fmt.Errorf("interrupted: %w", err)
			}
			v := variants[(i+k)%len(variants)]
			s, err := b.runOnce(ctx, v)
			if err != nil {
				return nil, fmt.Errorf("%s (round %d): %w", v, i+1, err)
			}
			if i >= b.o.warmup {
				res[v] = append(res[v], s)
			}
		}
		logf("%d/%d rounds (%d warm-up)", i+1, total, b.o.warmup)
	}
	return res, nil
}

func (b *bench) runOnce(ctx context.Context, v string) (_ sample, retErr error) {
	var src accounting.Source
	if v != vOff {
		s, err := accounting.Open(b.acct)
		if err != nil {
			return sample{}, fmt.Errorf("open accounting: %w", err)
		}
		defer func() { retErr = errors.Join(retErr, s.Close()) }()
		if s.Name() != accounting.SourceEBPF {
			return sample{}, fmt.Errorf("eBPF accounting is not available: %v", s.Stats().Reason)
		}
		if v == vTracked {
			if err := s.Track(b.scopeID, b.scope); err != nil {
				return sample{}, fmt.Errorf("track the scope: %w", err)
			}
		}
		src = s
	}
	return b.pingPong(ctx, src)
}

// pingPong runs one child in the worker leaf; src, if not nil, is the open
// source whose program statistics are read around it.
func (b *bench) pingPong(ctx context.Context, src accounting.Source) (_ sample, retErr error) {
	ctx, cancel := context.WithTimeout(ctx, childTimeout)
	defer cancel()
	r, w, err := os.Pipe()
	if err != nil {
		return sample{}, err
	}
	defer r.Close()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = append(os.Environ(), childEnv+"=1")
	cmd.Stdout, cmd.Stderr = w, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		w.Close()
		return sample{}, err
	}
	err = cmd.Start()
	w.Close()
	if err != nil {
		return sample{}, fmt.Errorf("start the child: %w", err)
	}
	defer func() {
		if retErr != nil {
			_ = cmd.Process.Kill()
		}
		if err := cmd.Wait(); retErr == nil && err != nil {
			retErr = fmt.Errorf("child: %w", err)
		}
		if ctx.Err() != nil && retErr != nil {
			retErr = fmt.Errorf("%w (%w)", retErr, context.Cause(ctx))
		}
	}()
	out := bufio.NewReader(r)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		return sample{}, fmt.Errorf("child said %q, want ready: %v", line, err)
	}
	if err := b.worker.Join(cmd.Process.Pid); err != nil {
		return sample{}, err
	}
	time.Sleep(settle)
	var before, after accounting.SourceStats
	if src != nil {
		before = src.Stats()
	}
	if _, err := fmt.Fprintf(stdin, "%d %d\n", b.o.n, b.o.cpu); err != nil {
		return sample{}, fmt.Errorf("release the child: %w", err)
	}
	line, err := out.ReadString('\n')
	if err != nil {
		return sample{}, fmt.Errorf("read the child's result: %w", err)
	}
	ns, err := strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	if err != nil {
		return sample{}, fmt.Errorf("child printed %q: %w", line, err)
	}
	s := sample{perSwitch: float64(ns)}
	if src != nil {
		after = src.Stats()
		s.perRun = perRun(before.Programs, after.Programs)
	}
	return s, nil
}

// perRun is each program's run time per run between two Stats, for those
// that ran with statistics on.
func perRun(before, after map[string]accounting.ProgramStats) map[string]float64 {
	m := map[string]float64{}
	for name, a := range after {
		b := before[name]
		if a.RunCount > b.RunCount && a.RunTime > b.RunTime {
			m[name] = float64(a.RunTime-b.RunTime) / float64(a.RunCount-b.RunCount)
		}
	}
	return m
}

// accountingPrograms names the loaded eBPF programs called acct_*.
func accountingPrograms() []string {
	var names []string
	for id := ebpf.ProgramID(0); ; {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return names
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "acct_") {
			names = append(names, fmt.Sprintf("%s (id %d)", info.Name, id))
		}
		p.Close()
	}
}

// summary is the median, minimum and maximum of a series.
type summary struct{ median, min, max float64 }

func summarise(xs []float64) summary {
	if len(xs) == 0 {
		return summary{}
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	med := s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return summary{median: med, min: s[0], max: s[n-1]}
}

// programSeries is program name's ns per run over samples that have it.
func programSeries(ss []sample, name string) []float64 {
	var xs []float64
	for _, s := range ss {
		if v, ok := s.perRun[name]; ok {
			xs = append(xs, v)
		}
	}
	return xs
}

// report renders the section, markers included.
func report(o options, load string, res map[string][]sample) string {
	var w strings.Builder
	p := func(format string, a ...any) { fmt.Fprintf(&w, format, a...) }
	st := map[string]summary{}
	for _, v := range variants {
		var xs []float64
		for _, s := range res[v] {
			xs = append(xs, s.perSwitch)
		}
		st[v] = summarise(xs)
	}
	off := st[vOff].median

	p("%s\n%s\n\n", markStart, sectionTitle)
	p("Two threads pinned to one CPU wake each other through pipes (`accounting.PingPong`) in a child\n")
	p("process in a scope's worker leaf; wall time per context switch with no eBPF programs loaded\n")
	p("(off), with scoped's accounting programs attached but the scope untracked (attached), and with\n")
	p("the scope tracked (tracked), interleaved round-robin in one run.\n\n")
	p("- %s\n", benchmd.Command(baseCommand, o.argsString))
	p("- Date: %s\n", benchmd.Date())
	p("- %s; %s\n", benchmd.Machine(), runtime.Version())
	p("- Load average (1, 5, 15 min) at the start: %s\n", load)
	p("- %d measured rounds of each variant after %d discarded warm-up; %d round trips (%d switches) per run, on CPU %d\n\n",
		o.rounds, o.warmup, o.n, 2*o.n, o.cpu)

	p("| Variant | Median ns/switch | Min | Max | vs off | Added ns/switch |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, v := range variants {
		s := st[v]
		p("| %s | %.1f | %.1f | %.1f | %.3f× | %+.1f |\n", v, s.median, s.min, s.max, s.median/off, s.median-off)
	}
	p("\nThe programs' own cost as the kernel measures it (BPF run-time statistics, which the source\n")
	p("turns on), run time per run over each run's ping-pong, all CPUs; medians over the rounds. Each\n")
	p("ping-pong switch runs each program once.\n\n")
	p("| Variant | %s ns/run | %s ns/run | Sum |\n| --- | ---: | ---: | ---: |\n", progs[0], progs[1])
	for _, v := range []string{vAttached, vTracked} {
		a := programSeries(res[v], progs[0])
		b := programSeries(res[v], progs[1])
		if len(a) == 0 || len(b) == 0 {
			p("| %s | n/a | n/a | n/a |\n", v)
			continue
		}
		ma, mb := summarise(a).median, summarise(b).median
		p("| %s | %.1f | %.1f | %.1f |\n", v, ma, mb, ma+mb)
	}
	p("\nEach run is a fresh child process that the benchmark moves into `%s/free/bench/pingpong/w1`\n", cgroupRoot)
	p("before it starts (the same leaf for every variant); an eBPF run opens its own accounting source\n")
	p("(and tracks the scope for \"tracked\") before the child starts and closes it afterwards, so\n")
	p("nothing is attached during \"off\". The wall time includes the pipe syscalls and, for the eBPF\n")
	p("variants, the clock reads of the BPF statistics, as a daemon with accounting on pays them.\n")
	p("Afterwards no cgroup named `*%s*` was left.\n", cgroupMark)
	p("%s\n", markEnd)
	return w.String()
}
