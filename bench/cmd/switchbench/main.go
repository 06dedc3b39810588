// Command switchbench measures what scoped's eBPF CPU accounting adds to a
// context switch: a child in a scope's worker leaf runs accounting.PingPong
// (two threads pinned to one CPU wake each other through pipes) with no
// programs loaded (off), with an accounting Source open but the scope
// untracked (attached), and with the scope tracked (tracked), round-robin.
// Each eBPF run opens its own Source and closes it, so that "off" is off.
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
	"runtime"
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
	cgroupRoot = "/scoped-bench-switch"
	cgroupMark = "scoped-bench-switch"
	childEnv   = "SCOPED_SWITCHBENCH_CHILD"

	// settle is the pause between moving the child into its leaf (and
	// loading the programs) and releasing it.
	settle       = 200 * time.Millisecond
	childTimeout = 2 * time.Minute
)

const (
	vOff           = "off"
	vAttached      = "attached"
	vTracked       = "tracked"
	vTrackedStats  = "tracked, BPF stats on"
	vAttachedStats = "attached, BPF stats on"
)

// variants: the daemon's default (BPF statistics off), and with
// [accounting] bpf_stats = true, which also gives the programs' own cost.
var variants = []string{vOff, vAttached, vTracked, vAttachedStats, vTrackedStats}

// progs are the programs whose kernel-measured cost is reported: each
// ping-pong switch runs each once.
var progs = []string{"acct_switch"}

type options struct{ rounds, warmup, n, cpu int }

func main() {
	if nCPU := os.Getenv(childEnv); nCPU != "" {
		os.Exit(child(nCPU))
	}
	var o options
	flag.IntVar(&o.rounds, "rounds", 10, "measured rounds; each runs every variant once")
	flag.IntVar(&o.warmup, "warmup", 1, "warm-up rounds, discarded")
	flag.IntVar(&o.n, "n", 200000, "ping-pong round trips per run (two switches each)")
	flag.IntVar(&o.cpu, "cpu", 1, "the CPU both ping-pong threads are pinned to")
	benchmd.Main("switchbench", true, func(ctx context.Context, args string) (_ []string, retErr error) {
		switch {
		case o.rounds < 1 || o.warmup < 0 || o.n < 1:
			return nil, fmt.Errorf("-rounds %d -warmup %d -n %d: need at least one round and one round trip", o.rounds, o.warmup, o.n)
		case cgroups.HostMode() == cgroups.V1:
			return nil, errors.New("eBPF accounting needs a unified (cgroup2) hierarchy: this host is pure cgroup v1")
		}
		var allowed unix.CPUSet
		if err := unix.SchedGetaffinity(0, &allowed); err != nil {
			return nil, fmt.Errorf("CPU affinity: %w", err)
		}
		if o.cpu < 0 || !allowed.IsSet(o.cpu) {
			return nil, fmt.Errorf("-cpu %d: no such CPU available (this process may use %d CPUs)", o.cpu, allowed.Count())
		}
		if left := accountingPrograms(); len(left) > 0 {
			return nil, fmt.Errorf("accounting programs are loaded already (%s; a scoped daemon?): \"off\" would not be off", strings.Join(left, ", "))
		}
		b := &bench{o: o}
		defer func() { retErr = errors.Join(retErr, b.close()) }()
		if err := b.setup(); err != nil {
			return nil, err
		}
		load := benchmd.LoadAvg()
		var vs []benchmd.Variant
		for _, v := range variants {
			vs = append(vs, benchmd.Variant{Name: v, Run: func(ctx context.Context, rec func(string, time.Duration)) error { return b.runOnce(ctx, v, rec) }})
		}
		res, err := benchmd.RoundRobin(ctx, "", o.warmup, o.rounds, 0, vs, logf)
		if err != nil {
			return nil, err
		}
		// Clean up before writing, so that the report can say it worked.
		if err := b.close(); err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		return []string{report(o, args, load, res)}, nil
	})
}

// child is the ping-pong process: it says "ready", waits for a line on
// stdin (the parent moves it into the worker leaf meanwhile), runs the
// ping-pong of "N CPU" from its environment and prints ns per switch.
func child(nCPU string) int {
	fmt.Println("ready")
	if _, err := bufio.NewReader(os.Stdin).ReadString('\n'); err != nil {
		return 0 // the parent went away
	}
	var n, cpu int
	_, err := fmt.Sscanf(nCPU, "%d %d", &n, &cpu)
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

// bench is the benchmark's cgroup tree and scope.
type bench struct {
	o             options
	tree          *cgroups.Tree
	scope, worker *cgroups.Node
	scopeID       uint64
	acct          accounting.Options
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

// close removes the cgroups (killing any child left in them) and checks
// that none named after the benchmark remains. It is safe to call twice.
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

// ps is a time in picoseconds as a Duration, so that the series keep a
// tenth of a nanosecond through their medians.
func ps(ns float64) time.Duration { return time.Duration(ns * 1000) }

// runOnce runs variant v once and records its ns per switch as series v
// and each program's ns per run as "v program", in picoseconds (ps).
func (b *bench) runOnce(ctx context.Context, v string, rec func(string, time.Duration)) (retErr error) {
	var src accounting.Source
	if v != vOff {
		opts := b.acct
		opts.BPFStats = v == vAttachedStats || v == vTrackedStats
		s, err := accounting.Open(opts)
		if err != nil {
			return fmt.Errorf("open accounting: %w", err)
		}
		defer func() { retErr = errors.Join(retErr, s.Close()) }()
		if s.Name() != accounting.SourceEBPF {
			return fmt.Errorf("eBPF accounting is not available: %v", s.Stats().Reason)
		}
		if v == vTracked || v == vTrackedStats {
			if err := s.Track(b.scopeID, b.scope); err != nil {
				return fmt.Errorf("track the scope: %w", err)
			}
		}
		src = s
	}
	perSwitch, perRun, err := b.pingPong(ctx, src)
	if err != nil {
		return err
	}
	rec(v, ps(perSwitch))
	for name, x := range perRun {
		rec(v+" "+name, ps(x))
	}
	return nil
}

// pingPong runs one child in the worker leaf and returns its ns per switch
// and, with src (the open source), each program's ns per run meanwhile.
func (b *bench) pingPong(ctx context.Context, src accounting.Source) (_ float64, _ map[string]float64, retErr error) {
	ctx, cancel := context.WithTimeout(ctx, childTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "/proc/self/exe")
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%d %d", childEnv, b.o.n, b.o.cpu))
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return 0, nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return 0, nil, err
	}
	if err := cmd.Start(); err != nil {
		return 0, nil, fmt.Errorf("start the child: %w", err)
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
	out := bufio.NewReader(stdout)
	if line, err := out.ReadString('\n'); err != nil || line != "ready\n" {
		return 0, nil, fmt.Errorf("child said %q, want ready: %v", line, err)
	}
	if err := b.worker.Join(cmd.Process.Pid); err != nil {
		return 0, nil, err
	}
	time.Sleep(settle)
	var before accounting.SourceStats
	if src != nil {
		before = src.Stats()
	}
	if _, err := fmt.Fprintln(stdin, "go"); err != nil {
		return 0, nil, fmt.Errorf("release the child: %w", err)
	}
	var ns int64
	if _, err := fmt.Fscanln(out, &ns); err != nil {
		return 0, nil, fmt.Errorf("read the child's ns per switch: %w", err)
	}
	if src == nil {
		return float64(ns), nil, nil
	}
	return float64(ns), perRun(before.Programs, src.Stats().Programs), nil
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
	ids, _ := benchmd.BPFPrograms()
	var names []string
	for _, id := range ids {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			if info, err := p.Info(); err == nil && strings.HasPrefix(info.Name, "acct_") {
				names = append(names, fmt.Sprintf("%s (id %d)", info.Name, id))
			}
			p.Close()
		}
	}
	return names
}

// report renders the section; res holds picoseconds (see runOnce).
func report(o options, args, load string, res map[string][]time.Duration) string {
	ns := func(s string, p float64) float64 { return float64(benchmd.Percentile(res[s], p)) / 1000 }
	off := ns(vOff, 50)
	r := benchmd.NewReport("switchbench", "## Context switches with accounting attached (issue 4)")
	r.P("Two threads pinned to one CPU wake each other through pipes (`accounting.PingPong`) in a child\n")
	r.P("process in a scope's worker leaf; wall time per context switch with no eBPF programs loaded\n")
	r.P("(off), with scoped's accounting programs attached but the scope untracked (attached), and with\n")
	r.P("the scope tracked (tracked), each as the daemon runs them by default (the kernel's BPF statistics\n")
	r.P("off) and with `[accounting] bpf_stats = true` (BPF stats on), interleaved round-robin in one run.\n\n")
	r.P("- %s\n", benchmd.Command("go run -tags seccomp ./bench/cmd/switchbench", args))
	r.P("- Date: %s\n", benchmd.Date())
	r.P("- %s; %s\n", benchmd.Machine(), runtime.Version())
	r.P("- Load average (1, 5, 15 min) at the start: %s\n", load)
	r.P("- %d measured rounds of each variant after %d discarded warm-up; %d round trips (%d switches) per run, on CPU %d\n\n",
		o.rounds, o.warmup, o.n, 2*o.n, o.cpu)
	r.P("| Variant | Median ns/switch | Min | Max | vs off | Added ns/switch |\n| --- | ---: | ---: | ---: | ---: | ---: |\n")
	for _, v := range variants {
		r.P("| %s | %.1f | %.1f | %.1f | %.3f× | %+.1f |\n", v, ns(v, 50), ns(v, 0), ns(v, 100), ns(v, 50)/off, ns(v, 50)-off)
	}
	r.P("\nThe programs' own cost as the kernel measures it (the BPF run-time statistics of the \"BPF stats on\"\n")
	r.P("variants), run time per run over each run's ping-pong, all CPUs; medians over the rounds. Each\n")
	r.P("ping-pong switch runs the program once (run-queue waits come from the kernel's own sched_info, so\n")
	r.P("nothing runs on sched_wakeup).\n\n")
	r.P("| Variant | %s ns/run |\n| --- | ---: |\n", progs[0])
	for _, v := range []string{vAttachedStats, vTrackedStats} {
		a := v + " " + progs[0]
		if len(res[a]) == 0 {
			r.P("| %s | n/a |\n", v)
			continue
		}
		r.P("| %s | %.1f |\n", v, ns(a, 50))
	}
	r.P("\nEach run is a fresh child process that the benchmark moves into `%s/free/bench/pingpong/w1`\n", cgroupRoot)
	r.P("before it starts (the same leaf for every variant); an eBPF run opens its own accounting source\n")
	r.P("(and tracks the scope for \"tracked\") before the child starts and closes it afterwards, so\n")
	r.P("nothing is attached during \"off\". The wall time includes the pipe syscalls and, for the \"BPF\n")
	r.P("stats on\" variants, the clock reads of the BPF statistics.\n")
	r.P("Afterwards no cgroup named `*%s*` was left.\n", cgroupMark)
	return r.End()
}
