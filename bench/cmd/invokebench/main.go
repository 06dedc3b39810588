// Command invokebench measures invocations through the daemon: (a) the cold
// start of a new scope against go-plugin's unsandboxed start of the same
// worker and `runc run` of /usr/bin/true, round-robin; (b) warm calls against
// direct go-plugin calls to the same worker, at several caller counts;
// (c) and (d) warm calls through fresh daemons with eBPF accounting, and
// metering, on and off.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/cgroups"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

var logf = benchmd.Logger("invokebench: ", false)

const (
	daemonCgroupRoot = "/scoped-bench-invoke"
	runcCgroupRoot   = "/scoped-bench-invoke-runc"
	cgroupMark       = "scoped-bench-invoke"

	truePath    = "/usr/bin/true"
	extName     = "whoami"
	environment = "production"
	callTimeout = 30 * time.Second
	warmTenant  = "warm" // owns the scope of the warm calls

	// The daemon's scopes take idSlots ranges of idSize host ids from
	// idBase and runc's container the range after them, far from a
	// daemon's default (1048576) that may run on the same host.
	idBase  = 1 << 29
	idSize  = 65536
	tmpSize = 64 << 20 // the daemon's default tmp_size
)

type options struct {
	n, warmup                 int
	gap                       time.Duration
	warmDur, warmWarmup       time.Duration
	slices                    int
	callers                   []int
	payload                   int
	maxWorkers, maxConcurrent int
	acctRounds, acctCallers   int
	acctDur                   time.Duration
	runc, bwrap, daemonLog    string
	favorDynMods              bool
	perf                      string
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
	flag.StringVar(&o.runc, "runc", "/usr/sbin/runc", "runc binary")
	flag.StringVar(&o.bwrap, "bwrap", "/usr/bin/bwrap", "bubblewrap binary")
	flag.StringVar(&o.perf, "perf", "", "record CPU profiles with perf(1) during the warm calls of the largest caller count and write their summary to this markdown `file`")
	flag.BoolVar(&o.favorDynMods, "favordynmods", false, "turn the host's cgroup2 favordynmods on for the run (off again at the end if it was off) and measure the cold start only, into a section of its own")
	flag.StringVar(&o.daemonLog, "daemon-log", "", "keep a copy of the daemons' logs in this `file`")
	benchmd.Main("invokebench", true, func(ctx context.Context, args string) ([]string, error) {
		for _, f := range strings.Split(callers, ",") {
			if c, err := strconv.Atoi(strings.TrimSpace(f)); err != nil || c < 1 {
				return nil, fmt.Errorf("-callers %q: want positive integers", callers)
			} else if !slices.Contains(o.callers, c) {
				o.callers = append(o.callers, c)
			}
		}
		switch {
		case o.n < 1 || o.warmup < 0 || o.gap < 0 || o.slices < 1 || o.warmDur < time.Duration(o.slices)*time.Millisecond:
			return nil, errors.New("need -n ≥ 1, -warmup ≥ 0, -gap ≥ 0, -slices ≥ 1 and a -duration of at least 1ms per slice")
		case o.payload < 0 || o.payload > 512<<10:
			return nil, fmt.Errorf("-payload %d: must be in 0..512 KiB", o.payload)
		case o.acctRounds < 0 || o.acctCallers < 1 || o.acctDur < time.Millisecond || o.maxWorkers < 1 || o.maxConcurrent < 1:
			return nil, errors.New("need -acct-rounds ≥ 0, -acct-duration ≥ 1ms, -acct-callers, -max-workers and -max-concurrent ≥ 1")
		}
		for _, p := range []string{o.runc, o.bwrap} {
			if _, err := os.Stat(p); err != nil {
				return nil, fmt.Errorf("%w (install runc and bubblewrap: scripts/deps.sh bench)", err)
			}
		}
		return run(ctx, o, args)
	})
}

// bench is the benchmark's world: the kit (the daemon and whoami bundle it
// built), the daemon running, runc and its cgroups, the direct workers.
type bench struct {
	o            options
	kit          *benchmd.Kit
	files        *scopedv1.Bundle
	whoami       string // the worker binary in the bundle
	libcontainer string // its version in the daemon
	d            *benchmd.Daemon
	dlc          *benchmd.Daemon // the cold start's daemon with [scope] launcher = "libcontainer"
	bwrapArgs    []string
	idSlots      int
	runcTree     *cgroups.Tree
	runc         *benchmd.Runc
	pluginLog    hclog.Logger
	payload      []byte
	seq          int
	direct       []int // pids of the direct workers started
	prof         *profiler
}

func run(ctx context.Context, o options, args string) (_ []string, retErr error) {
	b := &bench{o: o, idSlots: o.warmup + o.n + 8,
		payload:   []byte(strings.Repeat("abcdefghijklmnopqrstuvwxyz", o.payload/26+1)[:o.payload]),
		pluginLog: hclog.New(&hclog.LoggerOptions{Name: "direct", Level: hclog.Warn, Output: os.Stderr})}
	defer func() { retErr = errors.Join(retErr, b.close()) }()
	var err error
	if b.kit, err = benchmd.NewKit(cgroupMark, logf); err != nil {
		return nil, err
	}
	b.kit.Logs.Path = o.daemonLog
	b.libcontainer = benchmd.ModuleVersion(b.kit.Scoped, "github.com/opencontainers/runc")
	if b.files, err = b.kit.Bundle("./examples/" + extName); err != nil {
		return nil, err
	}
	b.whoami = filepath.Join(b.kit.Bin, "bundles", extName, extName)
	if b.runcTree, err = benchmd.OpenCgroupRoot(runcCgroupRoot, logf); err != nil {
		return nil, err
	}
	node, err := b.runcTree.Node(cgroups.Limits{}, "runc")
	if err != nil {
		return nil, err
	}
	layout, err := benchmd.ReadHostLayout()
	if err != nil {
		return nil, err
	}
	b.bwrapArgs = append([]string{o.bwrap}, layout.BwrapArgs(truePath)...)
	// runc's ids after the two cold-start daemons' ranges.
	if b.runc, err = benchmd.NewRunc(o.runc, b.kit.Work, node.Path(), benchmd.RuncSpec{Layout: layout,
		HostID: idBase + 2*uint32(b.idSlots)*idSize, IDs: idSize, TmpSize: tmpSize, Args: []string{truePath}}); err != nil {
		return nil, err
	}

	if o.favorDynMods {
		restore, err := cgroups.FavorDynMods()
		if err != nil {
			return nil, err
		}
		defer func() { retErr = errors.Join(retErr, restore()) }()
	}
	if err := b.startDaemon(ctx, "cold", ""); err != nil {
		return nil, err
	}
	// The same daemon with the launcher it had before the native one, in
	// a cgroup root and id range of its own: the "before" of the cold
	// start, measured in the same rounds.
	lc := b.settings(idBase+uint32(b.idSlots)*idSize, "libcontainer", "")
	if b.dlc, err = b.kit.StartDaemon(ctx, "cold-lc", daemonCgroupRoot+"-lc", lc); err != nil {
		return nil, errors.Join(err, b.stopDaemon())
	}
	cold, err := benchmd.RoundRobin(ctx, "cold start: ", o.warmup, o.n, 0, b.coldVariants(), logf)
	if err := errors.Join(err, b.stopDaemon()); err != nil {
		return nil, err
	}
	if o.favorDynMods {
		if err := b.close(); err != nil {
			return nil, fmt.Errorf("cleanup: %w", err)
		}
		return []string{b.reportFavorDynMods(args, cold)}, nil
	}
	if o.perf != "" {
		if b.prof, err = newProfiler(); err != nil {
			return nil, err
		}
		defer func() { retErr = errors.Join(retErr, b.prof.close()) }()
	}
	warm, err := b.measureWarm(ctx)
	if err := errors.Join(err, b.stopDaemon()); err != nil {
		return nil, err
	}
	if b.prof != nil {
		summary, err := b.prof.report(slices.Max(o.callers), map[string][]string{
			"daemon": {"scoped", "worker"}, "direct": {"whoami"}})
		if err != nil {
			return nil, err
		}
		if err := os.WriteFile(o.perf, []byte(summary), 0o644); err != nil {
			return nil, err
		}
		logf("wrote the profiles' summary to %s", o.perf)
	}
	var acct, meter *pairResult
	if o.acctRounds > 0 {
		// eBPF accounting's programs attached and the scope tracked, or
		// usage read from cgroup files only.
		if acct, err = b.measurePair(ctx, "accounting", "[accounting]\nmode = \"ebpf\"\n", "[accounting]\nmode = \"cgroupfs\"\n"); err != nil {
			return nil, err
		}
		// A ledger flush every second, more often than the default, so
		// that the ledger's cost shows.
		if meter, err = b.measurePair(ctx, "metering", "[metering]\nenabled = true\nflush = \"1s\"\n", "[metering]\nenabled = false\n"); err != nil {
			return nil, err
		}
	}
	// Stop everything before writing, so that the report can say that
	// the cleanup worked.
	if err := b.close(); err != nil {
		return nil, fmt.Errorf("cleanup: %w", err)
	}
	return []string{b.report(args, cold, warm, acct, meter)}, nil
}

// startDaemon starts a daemon (its directories named after name) with
// extra appended to its configuration.
func (b *bench) startDaemon(ctx context.Context, name, extra string) (err error) {
	b.d, err = b.kit.StartDaemon(ctx, name, daemonCgroupRoot, b.settings(idBase, "", extra))
	return err
}

// settings are the benchmark daemons' configuration: scope ids from
// firstID, the sandbox launcher, and extra appended (other tables).
func (b *bench) settings(firstID uint32, launcher, extra string) string {
	return fmt.Sprintf(`[isolation]
by = ["environment"]
[limits]
default_timeout = "30s"
[pool]
warm_min = 0
max_workers = %d
max_concurrent = %d
idle_timeout = "1h"
[scope]
id_base = %d
id_slots = %d
launcher = %q
[log]
level = "info"
[metrics]
listen = "off"
`, b.o.maxWorkers, b.o.maxConcurrent, firstID, b.idSlots, launcher) + extra
}

// stopDaemon stops the daemon with SIGTERM and checks that it removed its
// cgroups.
func (b *bench) stopDaemon() error {
	var errs []error
	for _, d := range []**benchmd.Daemon{&b.d, &b.dlc} {
		if *d != nil {
			_, err := b.kit.StopDaemon(*d, 0)
			errs = append(errs, err)
			*d = nil
		}
	}
	return errors.Join(errs...)
}

// close removes everything the benchmark created and checks that nothing
// of it is left. It is safe on a partly built bench and twice.
func (b *bench) close() error {
	plugin.CleanupClients() // the direct workers, if any is left
	var errs []error
	for _, pid := range b.direct {
		alive := func() bool {
			comm, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
			return err == nil && string(comm) == extName+"\n" && benchmd.ProcAlive(pid)
		}
		if gone, _ := benchmd.Poll(5*time.Second, 10*time.Millisecond, func() (bool, error) { return !alive(), nil }); !gone {
			errs = append(errs, fmt.Errorf("direct worker pid %d still runs", pid))
		}
	}
	errs = append(errs, b.stopDaemon())
	if b.runc != nil {
		errs = append(errs, b.runc.Close(logf))
	}
	errs = append(errs, benchmd.RemoveCgroupRoot(b.runcTree))
	if b.kit != nil {
		errs = append(errs, b.kit.Close())
	}
	b.runc, b.runcTree, b.direct = nil, nil, nil
	return errors.Join(errs...)
}
