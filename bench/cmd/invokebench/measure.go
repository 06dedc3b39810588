package main

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"
	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/plugins"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// The series of the cold-start measurement; a variant records one or more
// of them per run.
const (
	sScoped = "scoped: first Invoke of a new scope"
	sPlugin = "go-plugin, unsandboxed: NewClient → first reply"
	sRunc   = "runc run of /usr/bin/true"

	pScopedQueued = "scoped queued"   // Figures.queued: worker acquisition, start included
	pScopedCall   = "scoped call"     // Figures.duration − queued: the first call in the worker
	pScopedEdge   = "scoped edge"     // client time − Figures.duration: gRPC to the daemon, API edge
	pPluginStart  = "go-plugin start" // NewClient → Client() returns: fork/exec, handshake, gRPC connection
	pPluginCall   = "go-plugin call"  // Dispense + the first Invoke

	// Figures.cold_start, and the rest of the client's time.
	phScope     = "phase scope"
	phSandbox   = "phase sandbox"
	phHandshake = "phase handshake"
	phReply     = "phase reply"
)

// coldVariants are the cold-start variants. Each timed run follows an idle
// gap, for the reason sandboxbench gives: the first write to cgroup.procs
// after some idle time waits for an RCU grace period, and a daemon that
// starts a scope now and then pays it.
func (b *bench) coldVariants() []benchmd.Variant {
	return []benchmd.Variant{
		{Name: "scoped", Run: b.coldScoped},
		{Name: "go-plugin", Run: b.coldPlugin},
		{Name: "runc", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			b.seq++
			time.Sleep(b.o.gap)
			d, err := b.runc.Run("r" + strconv.Itoa(b.seq))
			rec(sRunc, d)
			return err
		}},
	}
}

// coldScoped deploys whoami for a fresh tenant (untimed), times the first
// invocation of its new scope, then removes the extension and waits until
// its worker is gone (untimed).
func (b *bench) coldScoped(ctx context.Context, rec func(string, time.Duration)) error {
	b.seq++
	tenant := "bench" + strconv.Itoa(b.seq)
	if err := b.d.Deploy(ctx, tenant, environment, extName, b.files); err != nil {
		return err
	}
	time.Sleep(b.o.gap)
	c, err := b.d.ColdStart(ctx, callTimeout, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: b.payload})
	if err != nil {
		return err
	}
	for s, d := range map[string]time.Duration{sScoped: c.Total, pScopedQueued: c.Queued, pScopedCall: c.Duration - c.Queued,
		pScopedEdge: c.Total - c.Duration, phScope: c.Scope, phSandbox: c.Sandbox, phHandshake: c.Handshake, phReply: c.Reply} {
		rec(s, d)
	}
	sc, err := b.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: c.ScopeKey})
	if err != nil {
		return fmt.Errorf("inspect scope %s: %w", c.ScopeKey, err)
	}
	if _, err := b.d.C.RemoveExtension(ctx, &scopedv1.RemoveExtensionRequest{Tenant: tenant, Environment: environment, Name: extName}); err != nil {
		return fmt.Errorf("remove %s of %s: %w", extName, tenant, err)
	}
	// So that the next run does not share the machine with its exit.
	for _, w := range sc.GetWorkers() {
		if gone, _ := benchmd.Poll(10*time.Second, 2*time.Millisecond, func() (bool, error) {
			return w.GetPid() <= 0 || !benchmd.ProcAlive(int(w.GetPid())), nil
		}); !gone {
			return fmt.Errorf("worker %s (pid %d) of scope %s still runs 10s after its extension was removed", w.GetId(), w.GetPid(), c.ScopeKey)
		}
	}
	return nil
}

// newPluginClient starts the whoami worker with go-plugin, unsandboxed, as
// an application that runs plugins would.
func (b *bench) newPluginClient() *plugin.Client {
	return plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  plugins.Handshake,
		Plugins:          plugins.PluginSet(nil),
		Cmd:              exec.Command(b.whoami),
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		Logger:           b.pluginLog,
		Managed:          true, // plugin.CleanupClients kills what is left
	})
}

// dispense connects to pc's worker, noting its pid among the direct
// workers, and returns its worker client.
func (b *bench) dispense(pc *plugin.Client) (workerv1.WorkerClient, error) {
	cp, err := pc.Client()
	if err != nil {
		return nil, err
	}
	if rc := pc.ReattachConfig(); rc != nil {
		b.direct = append(b.direct, rc.Pid)
	}
	raw, err := cp.Dispense(plugins.PluginName)
	if err != nil {
		return nil, err
	}
	wc, ok := raw.(workerv1.WorkerClient)
	if !ok {
		return nil, fmt.Errorf("dispensed %T", raw)
	}
	return wc, nil
}

// coldPlugin times NewClient → the first reply of a direct worker.
func (b *bench) coldPlugin(ctx context.Context, rec func(string, time.Duration)) error {
	time.Sleep(b.o.gap)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	t0 := time.Now()
	pc := b.newPluginClient()
	defer pc.Kill()
	if _, err := pc.Client(); err != nil {
		return err
	}
	t1 := time.Now()
	wc, err := b.dispense(pc)
	if err != nil {
		return err
	}
	resp, err := wc.Invoke(cctx, b.workerRequest())
	t2 := time.Now()
	if err := checkDirect(resp, err, b.payload); err != nil {
		return err
	}
	rec(sPlugin, t2.Sub(t0))
	rec(pPluginStart, t1.Sub(t0))
	rec(pPluginCall, t2.Sub(t1))
	return nil
}

// checkDirect checks a direct worker's reply to the payload.
func checkDirect(resp *workerv1.InvokeResponse, err error, payload []byte) error {
	switch {
	case err != nil:
		return fmt.Errorf("direct invoke: %w", err)
	case resp.GetError() != "":
		return fmt.Errorf("direct invoke: whoami: %s", resp.GetError())
	}
	return benchmd.CheckWhoami(resp.GetResult(), string(payload))
}

var invSeq atomic.Uint64

// workerRequest is what the daemon sends a worker for one invocation.
func (b *bench) workerRequest() *workerv1.InvokeRequest {
	return &workerv1.InvokeRequest{
		InvocationId: fmt.Sprintf("i%x-%x", time.Now().UnixNano()&0xffffffffff, invSeq.Add(1)),
		Extension:    extName,
		Payload:      b.payload,
		DeadlineMs:   callTimeout.Milliseconds(),
	}
}

// warmTenant owns the scope of the warm measurement.
const warmTenant = "warm"

// callInfo is what one call tells besides its latency: the daemon's
// figures (zero for a direct call).
type callInfo struct {
	queued, duration time.Duration
	cold             bool
}

type callFn func(ctx context.Context) (callInfo, error)

// load is what a path did at one caller count.
type load struct {
	lat      []time.Duration // client-side latency of every call
	queued   []time.Duration // daemon: Figures.queued
	duration []time.Duration // daemon: Figures.duration
	edge     []time.Duration // daemon: latency − Figures.duration
	cold     int             // daemon: calls that started a worker
	calls    int
	elapsed  time.Duration
	// CPU time used meanwhile by the benchmark (the callers), the daemon,
	// the worker processes, and the rest of the machine.
	cpuClient, cpuDaemon, cpuWorker, cpuOther time.Duration
}

func (l *load) add(o load) {
	l.lat = append(l.lat, o.lat...)
	l.queued = append(l.queued, o.queued...)
	l.duration = append(l.duration, o.duration...)
	l.edge = append(l.edge, o.edge...)
	l.cold += o.cold
	l.calls += o.calls
	l.elapsed += o.elapsed
	l.cpuClient += o.cpuClient
	l.cpuDaemon += o.cpuDaemon
	l.cpuWorker += o.cpuWorker
	l.cpuOther += o.cpuOther
}

// perCall is d divided among the calls.
func (l *load) perCall(d time.Duration) time.Duration {
	if l.calls == 0 {
		return 0
	}
	return d / time.Duration(l.calls)
}

func (l *load) perSecond() float64 { return float64(l.calls) / l.elapsed.Seconds() }

// warmResult is one caller count.
type warmResult struct {
	callers        int
	daemon, direct load
	workers        int // the daemon scope's workers at the end
}

// runLoad runs callers goroutines that call call back to back for d, and
// waits for the calls in flight at the end.
func runLoad(ctx context.Context, callers int, d time.Duration, call callFn) (load, error) {
	per := make([]load, callers)
	errs := make([]error, callers)
	var stop atomic.Bool
	var wg sync.WaitGroup
	t0 := time.Now()
	end := t0.Add(d)
	for i := range callers {
		wg.Go(func() {
			r := &per[i]
			for !stop.Load() && ctx.Err() == nil {
				s := time.Now()
				if !s.Before(end) {
					return
				}
				info, err := call(ctx)
				lat := time.Since(s)
				if err != nil {
					errs[i] = err
					stop.Store(true)
					return
				}
				r.lat = append(r.lat, lat)
				r.calls++
				if info.duration > 0 {
					r.queued = append(r.queued, info.queued)
					r.duration = append(r.duration, info.duration)
					r.edge = append(r.edge, lat-info.duration)
				}
				if info.cold {
					r.cold++
				}
			}
		})
	}
	wg.Wait()
	out := load{elapsed: time.Since(t0)}
	for _, r := range per {
		r.elapsed = 0
		out.add(r)
	}
	if err := errors.Join(errs...); err != nil {
		return out, err
	}
	if err := ctx.Err(); err != nil {
		return out, fmt.Errorf("interrupted: %w", err)
	}
	return out, nil
}

// measureWarm starts a daemon, warms one scope of whoami, starts a direct
// worker, and for every caller count runs both paths in alternating
// slices after a discarded warm-up of each.
func (b *bench) measureWarm(ctx context.Context) ([]warmResult, error) {
	if err := b.startDaemon(ctx, "warm", ""); err != nil {
		return nil, err
	}
	daemonCall, scope, err := b.warmScope(ctx, warmTenant)
	if err != nil {
		return nil, err
	}
	pc := b.newPluginClient()
	defer pc.Kill()
	wc, err := b.dispense(pc)
	if err != nil {
		return nil, fmt.Errorf("direct worker: %w", err)
	}
	directPid := b.direct[len(b.direct)-1]
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	resp, err := wc.Invoke(cctx, b.workerRequest())
	cancel()
	if err := checkDirect(resp, err, b.payload); err != nil {
		return nil, err
	}
	directCall := func(ctx context.Context) (callInfo, error) {
		cctx, cancel := context.WithTimeout(ctx, callTimeout)
		defer cancel()
		resp, err := wc.Invoke(cctx, b.workerRequest())
		switch {
		case err != nil:
			return callInfo{}, fmt.Errorf("direct invoke: %w", err)
		case resp.GetError() != "":
			return callInfo{}, fmt.Errorf("direct invoke: whoami: %s", resp.GetError())
		case len(resp.GetResult()) < len(b.payload):
			return callInfo{}, fmt.Errorf("direct invoke: a reply of %d bytes for a payload of %d", len(resp.GetResult()), len(b.payload))
		}
		return callInfo{}, nil
	}
	daemonWorkers := func() ([]int, error) {
		sc, err := b.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: scope})
		if err != nil {
			return nil, fmt.Errorf("inspect scope %s: %w", scope, err)
		}
		var pids []int
		for _, w := range sc.GetWorkers() {
			pids = append(pids, int(w.GetPid()))
		}
		return pids, nil
	}
	paths := []struct {
		name    string
		call    callFn
		pick    func(*warmResult) *load
		workers func() ([]int, error) // the pids of its worker processes
	}{
		{"daemon", daemonCall, func(r *warmResult) *load { return &r.daemon }, daemonWorkers},
		{"direct", directCall, func(r *warmResult) *load { return &r.direct }, func() ([]int, error) { return []int{directPid}, nil }},
	}
	slice := b.o.warmDur / time.Duration(b.o.slices)
	var out []warmResult
	for _, n := range b.o.callers {
		r := warmResult{callers: n}
		for _, p := range paths {
			if _, err := runLoad(ctx, n, b.o.warmWarmup, p.call); err != nil {
				return nil, fmt.Errorf("warm-up, %d callers, %s: %w", n, p.name, err)
			}
		}
		for s := range b.o.slices {
			for k := range paths {
				p := paths[(s+k)%len(paths)]
				pids, err := p.workers()
				if err != nil {
					return nil, err
				}
				before := b.cpuSample(pids)
				l, err := runLoad(ctx, n, slice, p.call)
				if err != nil {
					return nil, fmt.Errorf("%d callers, %s: %w", n, p.name, err)
				}
				after := b.cpuSample(pids)
				l.cpuClient = after.client - before.client
				l.cpuDaemon = after.daemon - before.daemon
				l.cpuWorker = after.workers - before.workers
				l.cpuOther = max(0, after.machine-before.machine-l.cpuClient-l.cpuDaemon-l.cpuWorker)
				p.pick(&r).add(l)
			}
		}
		pids, err := daemonWorkers()
		if err != nil {
			return nil, err
		}
		r.workers = len(pids)
		if r.daemon.cold > 0 {
			// The pool grew during the measurement: the new workers' CPU
			// time was not sampled from the start.
			logf("warm calls, %d callers: %d daemon calls started a worker", n, r.daemon.cold)
		}
		logf("warm calls, %d callers: daemon %d calls (%.0f/s, %d workers), direct %d calls (%.0f/s)",
			n, r.daemon.calls, r.daemon.perSecond(), r.workers, r.direct.calls, r.direct.perSecond())
		out = append(out, r)
	}
	return out, nil
}

// warmScope deploys whoami for tenant on the running daemon, starts the
// scope's first worker with one call, and returns a callFn that invokes it
// and the scope's name.
func (b *bench) warmScope(ctx context.Context, tenant string) (callFn, string, error) {
	if err := b.d.Deploy(ctx, tenant, environment, extName, b.files); err != nil {
		return nil, "", err
	}
	req := &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: b.payload}
	call := func(ctx context.Context) (callInfo, error) {
		resp, _, err := b.d.Invoke(ctx, callTimeout, req)
		if err != nil {
			return callInfo{}, err
		}
		if len(resp.GetResult()) < len(b.payload) {
			return callInfo{}, fmt.Errorf("daemon invoke: a reply of %d bytes for a payload of %d", len(resp.GetResult()), len(b.payload))
		}
		f := resp.GetFigures()
		return callInfo{queued: f.GetQueued().AsDuration(), duration: f.GetDuration().AsDuration(), cold: f.GetCold()}, nil
	}
	resp, _, err := b.d.Invoke(ctx, callTimeout, req)
	if err != nil {
		return nil, "", fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	if err := benchmd.CheckWhoami(resp.GetResult(), string(b.payload)); err != nil {
		return nil, "", err
	}
	return call, resp.GetFigures().GetScope(), nil
}

// pairResult is the warm load through daemons of two configurations.
type pairResult struct{ on, off load }

// measurePair compares warm invocations through daemons with the
// configurations on and off: every round starts a fresh daemon per
// configuration, alternating which goes first, deploys, warms one scope and
// measures -acct-duration with -acct-callers callers.
func (b *bench) measurePair(ctx context.Context, what, on, off string) (*pairResult, error) {
	r := &pairResult{}
	for round := range b.o.acctRounds {
		modes := []string{"on", "off"}
		if round%2 == 1 {
			modes[0], modes[1] = modes[1], modes[0]
		}
		for _, mode := range modes {
			extra, l := off, &r.off
			if mode == "on" {
				extra, l = on, &r.on
			}
			// Short names: worker sockets live below the daemon's directory.
			if err := b.startDaemon(ctx, fmt.Sprintf("%s-%s-%d", what[:4], mode, round), extra); err != nil {
				return nil, fmt.Errorf("%s %s: %w", what, mode, err)
			}
			got, err := b.pairLoad(ctx, fmt.Sprintf("%s%d", what[:4], round))
			if err := errors.Join(err, b.stopDaemon()); err != nil {
				return nil, fmt.Errorf("%s %s, round %d: %w", what, mode, round+1, err)
			}
			l.add(got)
		}
	}
	logf("%s on: %d calls (%.0f/s), off: %d calls (%.0f/s)", what, r.on.calls, r.on.perSecond(), r.off.calls, r.off.perSecond())
	return r, nil
}

// pairLoad is one measurement of measurePair on the running daemon.
func (b *bench) pairLoad(ctx context.Context, tenant string) (load, error) {
	call, _, err := b.warmScope(ctx, tenant)
	if err != nil {
		return load{}, err
	}
	if _, err := runLoad(ctx, b.o.acctCallers, b.o.warmWarmup, call); err != nil {
		return load{}, fmt.Errorf("warm-up: %w", err)
	}
	return runLoad(ctx, b.o.acctCallers, b.o.acctDur, call)
}

// cpuTimes are CPU times (user + system) of the benchmark, the daemon, a
// set of worker processes, and the whole machine (busy or stolen).
type cpuTimes struct{ client, daemon, workers, machine time.Duration }

func (b *bench) cpuSample(workers []int) cpuTimes {
	t := cpuTimes{client: benchmd.SelfCPU(false), daemon: benchmd.ProcCPU(b.d.Pid())}
	for _, pid := range workers {
		t.workers += benchmd.ProcCPU(pid)
	}
	t.machine = benchmd.MachineBusy()
	return t
}
