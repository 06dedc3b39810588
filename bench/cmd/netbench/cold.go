package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"golang.org/x/sys/unix"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/client"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const (
	callTimeout = 30 * time.Second
	payload     = "netbench"
	settleMax   = 3 * time.Second
)

// mode is one daemon configuration measured.
type mode struct {
	name    string // for the report
	key     string // for names
	network string // the tier's network
	pool    int    // [network] pool_size
}

func (b *bench) modes() []mode {
	return []mode{
		{"none", "none", "none", b.o.poolSize},
		{"egress", "egress", "egress", b.o.poolSize},
		{"egress, pool off", "nopool", "egress", 0},
	}
}

// modeEnv is where a mode's daemons run: a host namespace of their own
// (each daemon owns its namespace's bridge and scope veths), the wrapper
// that starts the daemon in it, a cgroup root and a host id range.
type modeEnv struct {
	mode
	index      int
	tn         *testNet
	wrapper    string
	cgroupRoot string
}

// newModeEnvs makes every mode's namespaces and wrapper.
func (b *bench) newModeEnvs() error {
	for i, m := range b.modes() {
		e := &modeEnv{mode: m, index: i, cgroupRoot: daemonCgroupRoot + "-" + m.key}
		tn, err := newTestNet()
		if err != nil {
			return fmt.Errorf("the %s daemons' network namespaces: %w", m.name, err)
		}
		e.tn = tn
		b.envs = append(b.envs, e)
		// nsenter execs scoped in the namespace (same pid: signals, and the
		// parent-death signal, reach the daemon), as the e2e network test
		// does.
		e.wrapper = filepath.Join(b.kit.Bin, "scoped-in-netns-"+m.key)
		script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s -- %s \"$@\"\n", tn.path(), b.kit.Scoped)
		if err := os.WriteFile(e.wrapper, []byte(script), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// coldCall is one timed cold start.
type coldCall struct {
	round      int
	tenant     string
	start, end time.Time
	queued     time.Duration // Figures.queued: worker acquisition, the start included
	poolReady  int           // namespaces ready in the pool just before (-1: no pool)
	late       time.Duration // the previous cold start ended this much after this one's slot
	phases     *phases       // from the invocation's Figures.cold_start
}

func (c coldCall) latency() time.Duration { return c.end.Sub(c.start) }

// coldResult is the cold starts of every mode, indexed like modes().
type coldResult struct {
	calls      [][]coldCall
	settleMiss int // rounds whose machine did not settle before timing
	// The share of the machine's CPU time that everything but the
	// benchmark and its daemons used while the cold starts ran.
	otherShare float64
}

// measureCold runs the rounds.
func (b *bench) measureCold(ctx context.Context) (res coldResult, _ error) {
	res.calls = make([][]coldCall, len(b.envs))
	t0, busy0, own0 := time.Now(), benchmd.MachineBusy(), ownCPU()
	defer func() {
		other := (benchmd.MachineBusy() - busy0) - (ownCPU() - own0)
		res.otherShare = max(float64(other), 0) / float64(time.Since(t0)) / float64(runtime.NumCPU())
	}()
	for r := range b.o.rounds {
		if err := b.runRound(ctx, r, &res); err != nil {
			return res, fmt.Errorf("round %d: %w", r+1, err)
		}
		logf("round %d/%d done", r+1, b.o.rounds)
	}
	return res, nil
}

// settings is the daemon's configuration, without the paths. The modes
// differ in the tier's network and the pool size only (and in their host
// id ranges).
func (b *bench) settings(e *modeEnv) string {
	slots := b.o.warmup + b.o.scopes + 8
	return fmt.Sprintf(`[isolation]
by = ["environment"]
[limits]
default_timeout = "30s"
[pool]
warm_min = 0
max_workers = 4
max_concurrent = 16
idle_timeout = "1h"
[scope]
id_base = %d
id_slots = %d
[log]
level = "info"
[metrics]
listen = "off"
[tenants]
default_tier = "net"
[tiers.net]
network = %q
egress_allow = [%q]
egress_rate = %d
ingress_rate = %d
[network]
uplink = %q
pool_size = %d
`, idBase+e.index*slots*65536, slots, e.network, allowRule, b.o.rate, b.o.rate, uplink, e.pool)
}

// live is a mode's daemon during a round.
type live struct {
	env       *modeEnv
	dir       string
	d         *benchmd.Daemon
	c         *client.Client
	tenants   []string
	started   int // scopes started
	calls     []coldCall
	lastScope string
	stopped   bool
}

// stop closes the client, stops the daemon and checks that it left no
// cgroup and nothing in its namespace.
func (l *live) stop(b *bench) error {
	if l.stopped {
		return nil
	}
	l.stopped = true
	var errs []error
	if l.c != nil {
		errs = append(errs, l.c.Close())
	}
	if _, err := b.kit.StopDaemon(l.d, 0); err != nil {
		errs = append(errs, fmt.Errorf("the %s daemon: %w", l.env.name, err))
	}
	errs = append(errs, l.env.tn.leftovers())
	return errors.Join(errs...)
}

// runRound starts a fresh daemon per mode, deploys whoami for
// warmup+scopes new tenants of each, then starts their scopes with one
// cold start every pace, the modes taking turns, and stops the daemons.
func (b *bench) runRound(ctx context.Context, round int, res *coldResult) (retErr error) {
	var lives []*live
	defer func() {
		for _, l := range lives {
			retErr = errors.Join(retErr, l.stop(b))
			// Its state (a bundle per tenant) is not needed any more.
			_ = os.RemoveAll(l.dir)
		}
	}()
	n := b.o.warmup + b.o.scopes
	for _, e := range b.envs {
		dir := filepath.Join(b.kit.Work, fmt.Sprintf("daemon-%d-%s", round+1, e.key))
		d, err := benchmd.StartDaemon(ctx, e.wrapper, dir, e.cgroupRoot, b.settings(e), logf)
		if err != nil {
			return fmt.Errorf("%s: %w", e.name, err)
		}
		l := &live{env: e, dir: dir, d: d}
		lives = append(lives, l)
		if l.c, err = client.Dial(ctx, d.Socket, client.WithMaxMessageSize(128<<20)); err != nil {
			return err
		}
	}
	for _, l := range lives {
		for range n {
			b.seq++
			tenant := fmt.Sprintf("t%d", b.seq)
			if _, err := l.c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: environment, Name: extName, Bundle: b.files}); err != nil {
				return fmt.Errorf("%s: deploy for %s: %w", l.env.name, tenant, err)
			}
			l.tenants = append(l.tenants, tenant)
		}
	}
	for _, l := range lives {
		if l.env.network == "egress" && l.env.pool > 0 {
			if err := waitVeths(l.env.tn, l.env.pool); err != nil {
				return fmt.Errorf("%s: %w", l.env.name, err)
			}
		}
	}
	if _, ok := benchmd.Settle(settleMax, b.baseline, 0.1); !ok {
		res.settleMiss++
	}

	start := time.Now()
	var prevEnd time.Time
	step := 0
	for i := range n {
		for k := range lives {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			// The order of the modes rotates from step to step and
			// round to round.
			l := lives[(i+round+k)%len(lives)]
			slot := start.Add(time.Duration(step) * b.o.pace)
			step++
			time.Sleep(time.Until(slot))
			call, err := b.coldStart(ctx, l, round)
			if err != nil {
				return fmt.Errorf("%s: %w", l.env.name, err)
			}
			if prevEnd.After(slot) {
				call.late = prevEnd.Sub(slot)
			}
			prevEnd = call.end
			if i >= b.o.warmup {
				l.calls = append(l.calls, call)
			}
		}
	}
	for _, l := range lives {
		// The scopes got the network of their mode.
		sc, err := l.c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: l.lastScope})
		if err != nil {
			return fmt.Errorf("inspect scope %s: %w", l.lastScope, err)
		}
		if got := sc.GetNetworkAddr() != ""; got != (l.env.network == "egress") {
			return fmt.Errorf("scope %s has network address %q in mode %s", l.lastScope, sc.GetNetworkAddr(), l.env.name)
		}
	}
	for _, l := range lives {
		if err := l.stop(b); err != nil {
			return err
		}
		res.calls[l.env.index] = append(res.calls[l.env.index], l.calls...)
	}
	return nil
}

// coldStart times the first invocation of l's next tenant: a new scope.
func (b *bench) coldStart(ctx context.Context, l *live, round int) (coldCall, error) {
	tenant := l.tenants[l.started]
	call := coldCall{round: round, tenant: tenant, poolReady: -1}
	if l.env.network == "egress" && l.env.pool > 0 {
		// Every scope started so far holds one veth; the rest are the
		// pool's (one may be half made).
		v, err := l.env.tn.scopeVeths()
		if err != nil {
			return call, err
		}
		call.poolReady = v - l.started
	}
	l.started++
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	call.start = time.Now()
	resp, err := l.c.Invoke(cctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: []byte(payload)})
	call.end = time.Now()
	if err != nil {
		if ctx.Err() != nil {
			return call, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return call, fmt.Errorf("invoke for %s: %w\ndaemon log:\n%s", tenant, err, l.d.LogTail())
	}
	f := resp.GetFigures()
	if !f.GetCold() {
		return call, fmt.Errorf("the first invocation of tenant %s was not cold (worker %s)", tenant, f.GetWorker())
	}
	if err := benchmd.CheckWhoami(resp.GetResult(), payload); err != nil {
		return call, err
	}
	call.queued = f.GetQueued().AsDuration()
	cs := f.GetColdStart()
	if cs == nil {
		return call, fmt.Errorf("the cold invocation of tenant %s has no cold-start phases in its figures", tenant)
	}
	call.phases = &phases{scope: cs.GetScope().AsDuration(), network: cs.GetNetwork().AsDuration(),
		sandbox: cs.GetSandbox().AsDuration(), handshake: cs.GetHandshake().AsDuration()}
	call.phases.reply = call.latency() - call.phases.scope - call.phases.network - call.phases.sandbox - call.phases.handshake
	l.lastScope = f.GetScope()
	return call, nil
}

// phases are one cold start as the daemon reports it (Figures.cold_start)
// and the rest of the client's time.
type phases struct {
	scope     time.Duration // receipt → the worker's start: checks, admission, the scope's cgroups
	network   time.Duration // the worker's network: netns.Manager.Egress (0 in mode none)
	sandbox   time.Duration // worker cgroup, rootfs, libcontainer create + run
	handshake time.Duration // the worker's start up to its handshake and the gRPC connection
	reply     time.Duration // the rest at the client: gRPC to and from the daemon, Dispense, the call
}

// ownCPU is the CPU time of the benchmark and its reaped children (the
// daemons it stopped, with their workers).
func ownCPU() time.Duration {
	var t time.Duration
	for _, who := range []int{unix.RUSAGE_SELF, unix.RUSAGE_CHILDREN} {
		var ru unix.Rusage
		if unix.Getrusage(who, &ru) == nil {
			t += time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		}
	}
	return t
}
