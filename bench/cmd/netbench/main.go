// Command netbench measures what network egress adds to a scope's cold
// start: the first invocation of the whoami example in a new scope (a new
// tenant each time: a new cgroup, sandbox and worker, and for egress a
// network namespace, the eBPF allow-list attached to the scope's cgroup and
// the bandwidth caps), as the client sees it, in three modes side by side:
//
//	none              the tenants' tier has network = "none" (loopback only)
//	egress            network = "egress", one allow-list rule, egress and
//	                  ingress rates, [network] pool_size = 4
//	egress, pool off  the same with pool_size = 0: every namespace is made
//	                  when its scope starts
//
// Each round starts a fresh daemon per mode, three at once, deploys whoami
// to -warmup + -scopes new tenants of each (untimed), then makes one cold
// start every -pace, the modes taking turns (so every daemon starts a new
// scope every 3 × -pace, and the pool refills between its starts), discards
// each daemon's first -warmup and stops the daemons, which removes every
// scope. Taking turns keeps a drift of the machine out of the ratios. The
// daemon reports the phases of each cold start in the invocation's figures. Then, in
// the benchmark's own process, it times netns.Manager.Egress and Net.Close
// with and without the pool, with and without a policy, to split what the
// namespace, the eBPF attachments and the caps cost.
//
// Every daemon runs inside a network namespace the benchmark makes, one per
// mode (with nsenter, as the e2e network test does), its uplink up0 a veth
// into a second namespace; the in-process managers get namespaces of their own alike. No
// packet leaves the machine, and the real host's ip_forward, links and
// nftables are never touched (checked before and after). The benchmark
// builds the daemon (-tags seccomp), scoped-exec and the whoami bundle with
// `go build` in the repository root, runs as root, owns the cgroup roots
// /scoped-bench-net-{none,egress,nopool,inproc}, and removes everything it
// made before it exits: daemons stopped with SIGTERM (each checked to leave
// no cgroup, link, nftables table or changed ip_forward in its namespace),
// namespaces closed, temporary directory removed, no cgroup named after it
// and no new BPF program left. An abstract unix socket keeps a second run
// from starting meanwhile. With -o it writes its section of BENCHMARKS.md
// between marker comments and leaves the rest of the file alone.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
)

var logf = benchmd.Logger("netbench: ", false)

const (
	markStart    = "<!-- netbench:start -->"
	markEnd      = "<!-- netbench:end -->"
	sectionTitle = "## Scope cold start with network egress vs none"
	baseCommand  = "go run -tags seccomp ./bench/cmd/netbench"

	daemonCgroupRoot = "/scoped-bench-net"
	inprocCgroupRoot = "/scoped-bench-net-inproc"
	cgroupMark       = "scoped-bench-net" // any cgroup named so is ours

	extName     = "whoami"
	environment = "production"
)

type options struct {
	rounds     int
	scopes     int
	warmup     int
	pace       time.Duration
	poolSize   int
	rate       int
	inprocN    int
	inprocPace time.Duration
	out        string
	daemonLog  string
	argsString string
}

func main() {
	var o options
	flag.IntVar(&o.rounds, "rounds", 5, "rounds; each starts a fresh daemon per mode")
	flag.IntVar(&o.scopes, "scopes", 20, "measured cold starts (new scopes) per mode and round")
	flag.IntVar(&o.warmup, "warmup", 1, "discarded cold starts at the start of each daemon")
	flag.DurationVar(&o.pace, "pace", 150*time.Millisecond, "one cold start every this long (start to start), the modes taking turns")
	flag.IntVar(&o.poolSize, "pool", 4, "[network] pool_size of the egress mode")
	flag.IntVar(&o.rate, "rate", 1_000_000, "the egress tier's egress_rate and ingress_rate, bytes/s")
	flag.IntVar(&o.inprocN, "inproc-n", 40, "in-process Egress timings per variant (0: skip)")
	flag.DurationVar(&o.inprocPace, "inproc-pace", 40*time.Millisecond, "in-process: pause before each Egress")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's section in this markdown `file`")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("netbench", func(args string) error {
		o.argsString = args
		return run(o)
	})
}

func run(o options) (retErr error) {
	switch {
	case o.rounds < 1 || o.scopes < 1:
		return errors.New("-rounds and -scopes must be at least 1")
	case o.warmup < 0 || o.inprocN < 0:
		return errors.New("-warmup and -inproc-n must not be negative")
	case o.pace < 0 || o.inprocPace < 0:
		return errors.New("-pace and -inproc-pace must not be negative")
	case o.poolSize < 1 || o.poolSize > 64:
		return errors.New("-pool must be in 1..64 (the pool-off mode is always measured)")
	case o.rate < 1000:
		return errors.New("-rate must be at least 1000 bytes/s")
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	}
	// Two runs at once would share the cgroup roots. An abstract unix
	// socket is a lock the kernel releases when the process ends.
	lock, err := benchmd.Lock("net")
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
	t0 := time.Now()
	cold, err := b.measureCold(ctx)
	if err != nil {
		return err
	}
	var in *inprocResult
	if o.inprocN > 0 {
		r, err := b.measureInproc(ctx)
		if err != nil {
			return err
		}
		in = &r
	}
	b.elapsed = time.Since(t0)
	// Stop everything before writing, so that the report can say that
	// the cleanup worked.
	closed = true
	if err := b.close(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	section := b.report(cold, in)
	return benchmd.Output(o.out, markStart, markEnd, section, logf)
}
