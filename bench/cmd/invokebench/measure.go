package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
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

// The series of the cold start; a variant records one or more per run.
const (
	sScoped   = "scoped: first Invoke of a new scope"
	sScopedLC = "scoped with libcontainer (before): first Invoke of a new scope"
	sPlugin   = "go-plugin, unsandboxed: NewClient → first reply"
	sRunc     = "runc run of /usr/bin/true"
	sBwrap    = "bwrap of /usr/bin/true"
	lcPrefix  = "libcontainer " // of the phases of sScopedLC

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
// gap, for the reason sandboxbench gives: a daemon that starts a scope now
// and then pays an RCU grace period at its first write to cgroup.procs.
func (b *bench) coldVariants() []benchmd.Variant {
	return []benchmd.Variant{
		{Name: "scoped", Run: func(ctx context.Context, rec func(string, time.Duration)) error {
			return b.coldScoped(ctx, b.d, sScoped, rec)
		}},
		{Name: "scoped-libcontainer", Run: func(ctx context.Context, rec func(string, time.Duration)) error {
			return b.coldScoped(ctx, b.dlc, sScopedLC, func(s string, d time.Duration) {
				if s != sScopedLC {
					s = lcPrefix + s
				}
				rec(s, d)
			})
		}},
		{Name: "go-plugin", Run: b.coldPlugin},
		{Name: "runc", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			b.seq++
			time.Sleep(b.o.gap)
			d, err := b.runc.Run("r" + strconv.Itoa(b.seq))
			rec(sRunc, d)
			return err
		}},
		{Name: "bwrap", Run: func(_ context.Context, rec func(string, time.Duration)) error {
			time.Sleep(b.o.gap)
			var stderr bytes.Buffer
			cmd := exec.Command(b.bwrapArgs[0], b.bwrapArgs[1:]...)
			cmd.Stderr = &stderr
			t0 := time.Now()
			err := cmd.Run()
			rec(sBwrap, time.Since(t0))
			if err != nil {
				return fmt.Errorf("bwrap: %w: %s", err, bytes.TrimSpace(stderr.Bytes()))
			}
			return nil
		}},
	}
}

// coldScoped deploys whoami for a fresh tenant (untimed), times the first
// invocation of its new scope, then removes the extension and waits until
// its worker is gone (untimed), so that the next run does not share the
// machine with its exit.
func (b *bench) coldScoped(ctx context.Context, d *benchmd.Daemon, series string, rec func(string, time.Duration)) error {
	b.seq++
	tenant := "bench" + strconv.Itoa(b.seq)
	if err := d.Deploy(ctx, tenant, environment, extName, b.files); err != nil {
		return err
	}
	time.Sleep(b.o.gap)
	c, err := d.ColdStart(ctx, callTimeout, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: b.payload})
	if err != nil {
		return err
	}
	for s, d := range map[string]time.Duration{series: c.Total, pScopedQueued: c.Queued, pScopedCall: c.Duration - c.Queued,
		pScopedEdge: c.Total - c.Duration, phScope: c.Scope, phSandbox: c.Sandbox, phHandshake: c.Handshake, phReply: c.Reply} {
		rec(s, d)
	}
	pids, err := b.scopeWorkers(ctx, d, c.ScopeKey)
	if err != nil {
		return err
	}
	if _, err := d.C.RemoveExtension(ctx, &scopedv1.RemoveExtensionRequest{Tenant: tenant, Environment: environment, Name: extName}); err != nil {
		return fmt.Errorf("remove %s of %s: %w", extName, tenant, err)
	}
	for _, pid := range pids {
		if gone, _ := benchmd.Poll(10*time.Second, 2*time.Millisecond, func() (bool, error) {
			return pid <= 0 || !benchmd.ProcAlive(pid), nil
		}); !gone {
			return fmt.Errorf("worker pid %d of scope %s still runs 10s after its extension was removed", pid, c.ScopeKey)
		}
	}
	return nil
}

// scopeWorkers are the pids of the scope's workers.
func (b *bench) scopeWorkers(ctx context.Context, d *benchmd.Daemon, scope string) ([]int, error) {
	sc, err := d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: scope})
	if err != nil {
		return nil, fmt.Errorf("inspect scope %s: %w", scope, err)
	}
	var pids []int
	for _, w := range sc.GetWorkers() {
		pids = append(pids, int(w.GetPid()))
	}
	return pids, nil
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

// dispense connects to pc's worker and notes its pid among the direct ones.
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
	result, err := b.invokeDirect(ctx, wc)
	t2 := time.Now()
	if err != nil {
		return err
	}
	rec(sPlugin, t2.Sub(t0))
	rec(pPluginStart, t1.Sub(t0))
	rec(pPluginCall, t2.Sub(t1))
	return benchmd.CheckWhoami(result, string(b.payload))
}

var invSeq atomic.Uint64

// invokeDirect calls a direct worker with the request the daemon would
// send it and returns the result.
func (b *bench) invokeDirect(ctx context.Context, wc workerv1.WorkerClient) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	resp, err := wc.Invoke(ctx, &workerv1.InvokeRequest{
		InvocationId: fmt.Sprintf("i%x-%x", time.Now().UnixNano()&0xffffffffff, invSeq.Add(1)),
		Extension:    extName,
		Payload:      b.payload,
		DeadlineMs:   callTimeout.Milliseconds(),
	})
	if err == nil && resp.GetError() != "" {
		err = errors.New("whoami: " + resp.GetError())
	}
	if err != nil {
		return nil, fmt.Errorf("direct invoke: %w", err)
	}
	return resp.GetResult(), nil
}

// checkLen checks that a warm call's result can hold the payload (the
// measured calls leave out CheckWhoami's JSON).
func (b *bench) checkLen(result []byte) error {
	if len(result) < len(b.payload) {
		return fmt.Errorf("a reply of %d bytes for a payload of %d", len(result), len(b.payload))
	}
	return nil
}

// callFn makes one warm call; a daemon call returns its Figures.
type callFn func(ctx context.Context) (*scopedv1.Figures, error)

// load is what a path did at one caller count: every call's client latency
// and, through the daemon, its Figures split into edge (latency −
// duration), queued and the worker call (duration − queued).
type load struct {
	lat, edge, queued, call []time.Duration
	cold                    int // daemon calls that started a worker
	elapsed                 time.Duration
	// CPU time used meanwhile by the callers (this process), the daemon,
	// the worker processes and the rest of the machine.
	cpuClient, cpuDaemon, cpuWorker, cpuOther time.Duration
}

func (l *load) record(lat time.Duration, f *scopedv1.Figures) {
	l.lat = append(l.lat, lat)
	if d := f.GetDuration().AsDuration(); d > 0 {
		q := f.GetQueued().AsDuration()
		l.edge, l.queued, l.call = append(l.edge, lat-d), append(l.queued, q), append(l.call, d-q)
	}
	if f.GetCold() {
		l.cold++
	}
}

func (l *load) calls() int { return len(l.lat) }

// perCall is d divided among the calls.
func (l *load) perCall(d time.Duration) time.Duration { return d / time.Duration(max(1, l.calls())) }

func (l *load) perSecond() float64 { return float64(l.calls()) / l.elapsed.Seconds() }

// runLoad has callers goroutines call back to back, starting calls for d,
// waits for the calls in flight at the end, and adds them to l.
func runLoad(ctx context.Context, l *load, callers int, d time.Duration, call callFn) error {
	var mu sync.Mutex
	var wg sync.WaitGroup
	var late error // a call that failed after the window ended (Keep no longer sees it)
	running, stop := context.WithCancelCause(ctx)
	defer time.AfterFunc(d, func() { stop(nil) }).Stop()
	t0 := time.Now()
	benchmd.Keep(running, stop, &wg, callers, func(context.Context) error {
		s := time.Now()
		f, err := call(ctx) // not running: a call in flight at the end completes
		lat := time.Since(s)
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			l.record(lat, f)
		} else if late == nil {
			late = err
		}
		return err
	})
	wg.Wait()
	l.elapsed += time.Since(t0)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	if err := context.Cause(running); !errors.Is(err, context.Canceled) {
		return err
	}
	return late
}

type warmResult struct {
	callers        int
	daemon, direct load
	workers        int // the daemon scope's workers at the end
}

// path is one way of making warm calls, with the pids of its workers.
type path struct {
	name    string
	call    callFn
	workers func() ([]int, error)
}

// measureWarm starts a daemon with one warm scope of whoami and a direct
// worker, and at every caller count runs both paths after a warm-up each.
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
	if result, err := b.invokeDirect(ctx, wc); err != nil {
		return nil, err
	} else if err := benchmd.CheckWhoami(result, string(b.payload)); err != nil {
		return nil, err
	}
	paths := []path{
		{"daemon", daemonCall, func() ([]int, error) { return b.scopeWorkers(ctx, b.d, scope) }},
		{"direct", func(ctx context.Context) (*scopedv1.Figures, error) {
			result, err := b.invokeDirect(ctx, wc)
			if err == nil {
				err = b.checkLen(result)
			}
			return nil, err
		}, func() ([]int, error) { return []int{directPid}, nil }},
	}
	slice := b.o.warmDur / time.Duration(b.o.slices)
	var out []warmResult
	for _, n := range b.o.callers {
		r := warmResult{callers: n}
		loads := []*load{&r.daemon, &r.direct}
		for _, p := range paths {
			if err := runLoad(ctx, &load{}, n, b.o.warmWarmup, p.call); err != nil {
				return nil, fmt.Errorf("warm-up, %d callers, %s: %w", n, p.name, err)
			}
		}
		for s := range b.o.slices {
			for k := range paths {
				i := (s + k) % len(paths)
				if err := b.measure(ctx, loads[i], paths[i], n, slice); err != nil {
					return nil, fmt.Errorf("%d callers, %s: %w", n, paths[i].name, err)
				}
			}
		}
		pids, err := paths[0].workers()
		if err != nil {
			return nil, err
		}
		r.workers = len(pids)
		if r.daemon.cold > 0 {
			// The pool grew: the new workers' CPU time was not sampled from the start.
			logf("warm calls, %d callers: %d daemon calls started a worker", n, r.daemon.cold)
		}
		logf("warm calls, %d callers: daemon %d calls (%.0f/s, %d workers), direct %d calls (%.0f/s)",
			n, r.daemon.calls(), r.daemon.perSecond(), r.workers, r.direct.calls(), r.direct.perSecond())
		out = append(out, r)
	}
	return out, nil
}

// measure adds to l the load of path p for d and the CPU time the
// callers, the daemon, p's workers and the rest of the machine used.
func (b *bench) measure(ctx context.Context, l *load, p path, callers int, d time.Duration) error {
	pids, err := p.workers()
	if err != nil {
		return err
	}
	sample := func() (client, daemon, workers, machine time.Duration) {
		for _, pid := range pids {
			workers += benchmd.ProcCPU(pid)
		}
		return benchmd.SelfCPU(false), benchmd.ProcCPU(b.d.Pid()), workers, benchmd.MachineBusy()
	}
	c0, d0, w0, m0 := sample()
	if b.prof != nil && callers == slices.Max(b.o.callers) {
		err = b.prof.record(ctx, p.name, func() error { return runLoad(ctx, l, callers, d, p.call) })
	} else {
		err = runLoad(ctx, l, callers, d, p.call)
	}
	c1, d1, w1, m1 := sample()
	l.cpuClient, l.cpuDaemon, l.cpuWorker = l.cpuClient+c1-c0, l.cpuDaemon+d1-d0, l.cpuWorker+w1-w0
	l.cpuOther += max(0, m1-m0-(c1-c0)-(d1-d0)-(w1-w0))
	return err
}

// warmScope deploys whoami for tenant on the running daemon, starts the
// scope's first worker with one call, and returns a callFn that invokes it
// and the scope's name.
func (b *bench) warmScope(ctx context.Context, tenant string) (callFn, string, error) {
	if err := b.d.Deploy(ctx, tenant, environment, extName, b.files); err != nil {
		return nil, "", err
	}
	req := &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: b.payload}
	resp, _, err := b.d.Invoke(ctx, callTimeout, req)
	if err != nil {
		return nil, "", fmt.Errorf("%w\ndaemon log:\n%s", err, b.d.LogTail())
	}
	if err := benchmd.CheckWhoami(resp.GetResult(), string(b.payload)); err != nil {
		return nil, "", err
	}
	return func(ctx context.Context) (*scopedv1.Figures, error) {
		resp, _, err := b.d.Invoke(ctx, callTimeout, req)
		if err == nil {
			err = b.checkLen(resp.GetResult())
		}
		return resp.GetFigures(), err
	}, resp.GetFigures().GetScope(), nil
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
		for k := range 2 {
			mode, extra, l := "on", on, &r.on
			if (round+k)%2 == 1 {
				mode, extra, l = "off", off, &r.off
			}
			// Short names: worker sockets live below the daemon's directory.
			if err := b.startDaemon(ctx, fmt.Sprintf("%s-%s-%d", what[:4], mode, round), extra); err != nil {
				return nil, fmt.Errorf("%s %s: %w", what, mode, err)
			}
			call, _, err := b.warmScope(ctx, fmt.Sprintf("%s%d", what[:4], round))
			if err == nil {
				err = runLoad(ctx, &load{}, b.o.acctCallers, b.o.warmWarmup, call)
			}
			if err == nil {
				err = runLoad(ctx, l, b.o.acctCallers, b.o.acctDur, call)
			}
			if err := errors.Join(err, b.stopDaemon()); err != nil {
				return nil, fmt.Errorf("%s %s, round %d: %w", what, mode, round+1, err)
			}
		}
	}
	logf("%s on: %d calls (%.0f/s), off: %d calls (%.0f/s)", what, r.on.calls(), r.on.perSecond(), r.off.calls(), r.off.perSecond())
	return r, nil
}
