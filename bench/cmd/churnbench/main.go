// Command churnbench measures how scoped holds many scopes and many scopes
// coming and going, with the daemon as shipped: every setting at its
// default (metering, accounting, the noisy-neighbour controller, log rings,
// metrics sampling) except the isolation policy, by user, so that each new
// user is a new scope, the scopes' id range and count, the idle timeout and
// the metrics address. Each scope runs one idle whoami worker.
//
// Scope density: a daemon is filled with -scopes live idle scopes, started
// -parallel at a time (timed). Then a new invocation's latency — the cold
// start of one more scope, and a warm call of a scope that has a worker —
// is measured on it and on an empty daemon running beside it, the two
// taking turns, and given as a ratio. Memory per scope is split into the
// scopes' cgroups (the growth of the cgroup root's memory, which holds
// every scope's worker) and the daemon's own growth (RSS, and the Go heap
// in use); file descriptors, threads and goroutines per scope likewise.
// Then the daemon is stopped with SIGTERM (timed: it removes every scope),
// and a second daemon is filled alike, killed with SIGKILL and started
// again on what it left, timed until it serves (its start-up recovery
// removes every scope the killed one left).
//
// Scope churn: a daemon with a short idle timeout gets -churn invocations,
// each of a new user, -parallel at a time: every one creates a scope (its
// cgroups, a host id range, a sandbox and worker), which the daemon's
// reaper removes once idle. Time per create is the client's latency of
// those invocations. Afterwards, once no scope is left, it counts what is
// left beyond the baseline taken before the churn: cgroup directories and
// processes below the daemon's root (every hierarchy), mounts and nsfs
// mounts on the host, the daemon's file descriptors (namespaces among
// them) and goroutines. Then it takes every id slot at once (-churn-slots
// new scopes, with the idle timeout raised by a configuration reload),
// which fails if any slot leaked, sets the timeout back and times the
// reaper removing them all: time per remove.
//
// It builds the daemon (-tags seccomp), scoped-exec and the whoami bundle
// with `go build` in the repository root, runs as root, owns the cgroup
// roots /scoped-bench-churn-{empty,dense,recover,churn}, and removes everything
// it made before it exits, checking that no cgroup named after it is left.
// An abstract unix socket keeps a second run from starting meanwhile. With
// -o it writes its two sections of BENCHMARKS.md between marker comments
// and leaves the rest of the file alone.
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

var logf = benchmd.Logger("churnbench: ", true)

const (
	churnStart   = "<!-- churnbench-churn:start -->"
	churnEnd     = "<!-- churnbench-churn:end -->"
	densityStart = "<!-- churnbench-density:start -->"
	densityEnd   = "<!-- churnbench-density:end -->"
	churnTitle   = "## Scope churn: scopes created and removed, and what is left"
	densityTitle = "## Scope density: many live idle scopes"
	baseCommand  = "go run -tags seccomp ./bench/cmd/churnbench"

	cgroupMark = "scoped-bench-churn" // every cgroup root of the benchmark holds it

	tenant      = "churn"
	environment = "production"
	extName     = "whoami"

	// maxScopes bounds -scopes: the dense daemons' id ranges must not
	// reach the empty and churn daemons'.
	maxScopes = 6000
)

type options struct {
	scopes     int
	churn      int
	parallel   int
	probes     int
	idle       time.Duration
	churnSlots int
	stopWait   time.Duration
	recovery   bool
	out        string
	daemonLog  string
	argsString string
}

func main() {
	var o options
	flag.IntVar(&o.scopes, "scopes", 2000, "density: live idle scopes (0: skip the density part)")
	flag.IntVar(&o.churn, "churn", 10000, "churn: scopes created and removed (0: skip the churn part)")
	flag.IntVar(&o.parallel, "parallel", 4, "invocations in flight while filling and churning")
	flag.IntVar(&o.probes, "probes", 20, "density: cold starts and warm calls timed on each daemon")
	flag.DurationVar(&o.idle, "idle", time.Second, "churn: the daemon's [pool] idle_timeout")
	flag.IntVar(&o.churnSlots, "churn-slots", 128, "churn: the daemon's [scope] id_slots, all taken at once at the end")
	flag.DurationVar(&o.stopWait, "stop-wait", 10*time.Minute, "density: how long to wait for a stop or a recovery")
	flag.BoolVar(&o.recovery, "recovery", true, "density: also time the recovery after SIGKILL (fills a second daemon)")
	flag.StringVar(&o.out, "o", "", "replace (or add) this program's sections in this markdown `file`")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("churnbench", func(args string) error {
		o.argsString = args
		return run(o)
	})
}

func (o options) check() error {
	switch {
	case o.scopes < 0 || o.scopes > maxScopes:
		return fmt.Errorf("-scopes %d: must be in 0..%d", o.scopes, maxScopes)
	case o.churn < 0:
		return fmt.Errorf("-churn %d: must not be negative", o.churn)
	case o.scopes == 0 && o.churn == 0:
		return errors.New("-scopes 0 and -churn 0: nothing to measure")
	case o.parallel < 1 || o.parallel > 64:
		return fmt.Errorf("-parallel %d: must be in 1..64", o.parallel)
	case o.probes < 1:
		return fmt.Errorf("-probes %d: need at least one", o.probes)
	case o.idle < 100*time.Millisecond || o.idle > time.Minute:
		return fmt.Errorf("-idle %s: must be in 100ms..1m", o.idle)
	case o.churnSlots < o.parallel+1 || o.churnSlots > 1024:
		return fmt.Errorf("-churn-slots %d: must be in -parallel+1..1024", o.churnSlots)
	case o.stopWait < time.Second:
		return fmt.Errorf("-stop-wait %s: at least 1s", o.stopWait)
	case os.Geteuid() != 0:
		return errors.New("must run as root (sudo make bench)")
	}
	return nil
}

func run(o options) (retErr error) {
	if err := o.check(); err != nil {
		return err
	}
	// Two runs at once would share the cgroup roots. An abstract unix
	// socket is a lock the kernel releases when the process ends.
	lock, err := benchmd.Lock("churn")
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
	var dr *densityResult
	if o.scopes > 0 {
		if dr, err = b.measureDensity(ctx); err != nil {
			return err
		}
	}
	var cr *churnResult
	if o.churn > 0 {
		if cr, err = b.measureChurn(ctx); err != nil {
			return err
		}
	}
	b.elapsed = time.Since(t0)
	closed = true
	if err := b.close(); err != nil {
		return fmt.Errorf("cleanup: %w", err)
	}
	type section struct{ start, end, text string }
	var sections []section
	if cr != nil {
		sections = append(sections, section{churnStart, churnEnd, b.churnReport(cr)})
	}
	if dr != nil {
		sections = append(sections, section{densityStart, densityEnd, b.densityReport(dr)})
	}
	for _, s := range sections {
		fmt.Print(s.text)
		if o.out != "" {
			if err := benchmd.WriteSection(o.out, s.start, s.end, s.text); err != nil {
				return err
			}
		}
	}
	if o.out != "" {
		fmt.Fprintf(os.Stderr, "churnbench: wrote %s\n", o.out)
	}
	return nil
}
