// Command invokebench measures invocations through the scoped daemon.
//
// (a) Cold start: the first invocation of a new scope, from the client's
// Invoke to its reply (the scope's cgroups, the sandbox, the worker's start,
// go-plugin's handshake and the call), against the same worker started by
// go-plugin without a sandbox (NewClient to the first reply) and against
// `runc run` of /usr/bin/true, interleaved round-robin in one run.
//
// (b) Warm calls with a 1 KiB payload: through the daemon (one client
// connection, one warm scope) against a direct go-plugin call to the same
// worker binary started unsandboxed by the benchmark, with 1, 8 and 64
// concurrent callers: p50, p99 and invocations per second.
//
// (c) Warm calls through daemons with eBPF accounting on and off
// (`[accounting] mode = "ebpf"` vs "cgroupfs"), a fresh daemon per round and
// mode: invocations per second and latency, and their ratio. (d) The same
// with metering on (a 1 s ledger flush) and off.
//
// It builds what it needs itself (the daemon with -tags seccomp, scoped-exec
// and the whoami example bundle) with `go build` in the repository root, and
// runs the daemon with a private configuration (socket, state and runtime
// directories in a temporary directory, cgroup root /scoped-bench-invoke):
// once for the cold starts (the daemon reports the phases of each in the
// invocation's figures) and afresh for the warm calls, logging at info level. It talks to the daemons, its go-plugin workers and
// nothing else, over the unix sockets it makes; an abstract unix socket keeps
// a second run from starting meanwhile. It runs as root and needs runc. Everything it creates — the daemon (stopped with SIGTERM, which
// removes its cgroups and sandboxes), the direct workers, runc's state, the
// cgroup root /scoped-bench-invoke-runc and the temporary directory — is
// removed before it exits, and it checks that no cgroup named after it is
// left. With -o it writes its section of BENCHMARKS.md between marker
// comments and leaves the rest of the file alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

var logf = benchmd.Logger("invokebench: ", false)

const (
	// The markers around this program's section of the output file.
	markStart = "<!-- invokebench:start -->"
	markEnd   = "<!-- invokebench:end -->"

	sectionTitle = "## Invocations: cold start and warm calls (issue 3), accounting (issue 4) and metering (issue 6) on vs off"

	// The command `make bench` runs.
	baseCommand = "go run -tags seccomp ./bench/cmd/invokebench"

	// The cgroup roots the benchmark owns: the daemon's, and the parent of
	// the runc containers' cgroups.
	daemonCgroupRoot = "/scoped-bench-invoke"
	runcCgroupRoot   = "/scoped-bench-invoke-runc"
	// Any cgroup whose name holds this is the benchmark's.
	cgroupMark = "scoped-bench-invoke"

	truePath = "/usr/bin/true"

	extName     = "whoami"
	environment = "production"
)

type options struct {
	n, warmup     int
	gap           time.Duration
	warmDur       time.Duration
	warmWarmup    time.Duration
	slices        int
	callers       []int
	payload       int
	maxWorkers    int
	maxConcurrent int
	acctRounds    int
	acctDur       time.Duration
	acctCallers   int
	out           string
	runc          string
	daemonLog     string // copy the daemon's log here at the end
	argsString    string // the flags as given, for the report
}

func main() {
	var o options
	var callers string
	flag.IntVar(&o.n, "n", 30, "cold start: measured rounds of each variant")
	flag.IntVar(&o.warmup, "warmup", 3, "cold start: warm-up rounds of each variant, discarded")
	flag.DurationVar(&o.gap, "gap", 50*time.Millisecond, "cold start: idle time before each run (see sandboxbench)")
	flag.DurationVar(&o.warmDur, "duration", 3*time.Second, "warm calls: measured time per path and caller count")
	flag.DurationVar(&o.warmWarmup, "warm-warmup", 500*time.Millisecond, "warm calls: discarded warm-up per path and caller count")
	flag.IntVar(&o.slices, "slices", 6, "warm calls: the measured time is split into this many slices, alternating daemon and direct")
	flag.StringVar(&callers, "callers", "1,8,64", "warm calls: comma-separated concurrent caller counts")
	flag.IntVar(&o.acctRounds, "acct-rounds", 4, "accounting on vs off: rounds of a fresh daemon per mode (0: skip)")
	flag.DurationVar(&o.acctDur, "acct-duration", 2*time.Second, "accounting on vs off: measured time per round and mode")
	flag.IntVar(&o.acctCallers, "acct-callers", 8, "accounting on vs off: concurrent callers")
	flag.IntVar(&o.payload, "payload", 1024, "payload bytes of every invocation")
	flag.IntVar(&o.maxWorkers, "max-workers", 4, "the daemon's [pool] max_workers")
	flag.IntVar(&o.maxConcurrent, "max-concurrent", 16, "the daemon's [pool] max_concurrent")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	flag.StringVar(&o.runc, "runc", "/usr/sbin/runc", "runc binary")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("invokebench", func(args string) error {
		for _, f := range strings.Split(callers, ",") {
			c, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || c < 1 {
				return fmt.Errorf("-callers %q: want positive integers", callers)
			}
			o.callers = append(o.callers, c)
		}
		o.argsString = args
		return run(o)
	})
}

func run(o options) (retErr error) {
	switch {
	case o.n < 1:
		return fmt.Errorf("-n %d: need at least one round", o.n)
	case o.warmup < 0:
		return fmt.Errorf("-warmup %d: must not be negative", o.warmup)
	case o.gap < 0:
		return fmt.Errorf("-gap %s: must not be negative", o.gap)
	case o.slices < 1 || o.warmDur < time.Duration(o.slices)*time.Millisecond:
		return fmt.Errorf("-duration %s -slices %d: need at least one slice of at least 1ms", o.warmDur, o.slices)
	case o.payload < 0 || o.payload > 512<<10:
		return fmt.Errorf("-payload %d: must be in 0..512 KiB", o.payload)
	case o.acctRounds < 0 || o.acctCallers < 1 || o.acctDur < time.Millisecond:
		return errors.New("-acct-rounds must not be negative, -acct-callers at least 1, -acct-duration at least 1ms")
	case o.maxWorkers < 1 || o.maxConcurrent < 1:
		return errors.New("-max-workers and -max-concurrent must be at least 1")
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	}
	if _, err := os.Stat(o.runc); err != nil {
		return fmt.Errorf("%w (install runc: scripts/deps.sh bench)", err)
	}
	o.callers = slices.Compact(o.callers)
	// Two runs at once would share the cgroup roots. An abstract unix
	// socket is a lock the kernel releases when the process ends.
	lock, err := benchmd.Lock("invoke")
	if err != nil {
		return err
	}
	defer lock.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	b, err := newBench(o)
	if err != nil {
		return err
	}
	closed := false
	defer func() {
		if !closed {
			retErr = errors.Join(retErr, b.close())
		}
	}()

	cold, err := b.measureCold(ctx)
	if err != nil {
		return err
	}
	warm, err := b.measureWarm(ctx)
	if err != nil {
		return err
	}
	if err := b.stopDaemon(); err != nil {
		return err
	}
	var acct, meter *acctResult
	if o.acctRounds > 0 {
		r, err := b.measureAccounting(ctx)
		if err != nil {
			return err
		}
		acct = &r
		m, err := b.measureMetering(ctx)
		if err != nil {
			return err
		}
		meter = &m
	}
	// Stop everything before writing, so that the report can say that
	// the cleanup worked.
	closed = true
	if err := b.close(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	section := b.report(cold, warm, acct, meter)
	return benchmd.Output(o.out, markStart, markEnd, section, logf)
}
