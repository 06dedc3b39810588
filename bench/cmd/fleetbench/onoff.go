package main

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// The variants of the warm calls: the same request, the same scope and
// worker, the same client.Dial on the unix socket for on and off.
const (
	vOn    = "[fleet] on, unix socket"
	vOff   = "[fleet] off, unix socket"
	vCtl   = "[fleet] off, a second daemon (control)"
	vFleet = "[fleet] on, DialFleet (TLS over TCP)"
)

var variants = []string{vOn, vOff, vCtl, vFleet}

// warmTenant owns the scope of the warm calls.
const warmTenant = "warm"

// load is what one variant did in one slice.
type load struct {
	calls   int
	elapsed time.Duration
	lat     []time.Duration
	// CPU time meanwhile: the variant's daemon, its worker, the benchmark
	// (callers and etcd), the whole machine.
	daemon, worker, self, machine time.Duration
}

func (l load) perSecond() float64 { return float64(l.calls) / l.elapsed.Seconds() }

// others is the share of the machine's CPU time that everything but the
// benchmark, the daemon and the worker used meanwhile.
func (l load) others() float64 {
	return float64(max(0, l.machine-l.daemon-l.worker-l.self)) / float64(l.elapsed) / float64(runtime.NumCPU())
}

func (l *load) add(o load) {
	l.calls += o.calls
	l.elapsed += o.elapsed
	l.lat = append(l.lat, o.lat...)
	l.daemon += o.daemon
	l.worker += o.worker
	l.self += o.self
	l.machine += o.machine
}

// onOffResult is the warm calls of every variant, per round.
type onOffResult struct {
	rounds  []map[string]load
	idle    map[string]time.Duration // daemon CPU over idleWindow, before the rounds
	workers map[string]int           // the scope's workers at the end
}

const idleWindow = 3 * time.Second

// measureOnOff starts a fleet node and two daemons without [fleet] (the
// second a control: how far two like daemons differ) with the same
// settings, warms one scope of whoami in each, and measures warm calls in
// rounds, alternating which of on and the control goes first.
func (b *bench) measureOnOff(ctx context.Context, res *results) error {
	var ns []*node
	for i, name := range []string{"on", "off", "ctl"} {
		n, err := b.startNode(ctx, name, b.o.nodes+i, name == "on")
		if err != nil {
			return err
		}
		ns = append(ns, n)
	}
	on, off, ctl := ns[0], ns[1], ns[2]
	if _, err := b.waitView(ns[:1]); err != nil {
		return err
	}
	for _, n := range ns {
		if err := n.d.Deploy(ctx, warmTenant, environment, extName, b.files); err != nil {
			return err
		}
	}
	calls := map[string]func(context.Context) error{}
	daemons := map[string]*node{vOn: on, vOff: off, vCtl: ctl, vFleet: on}
	pids := map[string][]int{}
	for _, v := range variants {
		n := daemons[v]
		inv := n.d.C.Invoke
		if v == vFleet {
			inv = b.fc.Invoke
		}
		req := b.request(warmTenant, "w")
		calls[v] = func(ctx context.Context) error {
			cctx, cancel := context.WithTimeout(ctx, callTimeout)
			defer cancel()
			resp, err := inv(cctx, req)
			if err == nil && len(resp.GetResult()) < len(b.payload) {
				err = fmt.Errorf("a reply of %d bytes for a payload of %d", len(resp.GetResult()), len(b.payload))
			}
			if err != nil {
				return fmt.Errorf("%s: %w", v, err)
			}
			return nil
		}
		if err := calls[v](ctx); err != nil {
			return err
		}
	}
	workers := func(n *node) ([]int, error) {
		sc, err := n.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: warmTenant + ".w"})
		if err != nil {
			return nil, err
		}
		var ps []int
		for _, w := range sc.GetWorkers() {
			ps = append(ps, int(w.GetPid()))
		}
		return ps, nil
	}
	r := &res.onOff
	r.idle, r.workers = map[string]time.Duration{}, map[string]int{}
	c0 := map[string]time.Duration{vOn: benchmd.ProcCPU(on.d.Pid()), vOff: benchmd.ProcCPU(off.d.Pid())}
	time.Sleep(idleWindow)
	r.idle[vOn] = benchmd.ProcCPU(on.d.Pid()) - c0[vOn]
	r.idle[vOff] = benchmd.ProcCPU(off.d.Pid()) - c0[vOff]
	for _, v := range variants {
		if _, err := runLoad(ctx, b.o.callers, b.o.warmup, calls[v]); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	var err error
	for round := range b.o.rounds {
		got := map[string]load{}
		// On, off and the control side by side, off in the middle, on
		// and the control first in every other round; the DialFleet
		// variant last.
		order := []string{vOn, vOff, vCtl, vFleet}
		if round%2 == 1 {
			order[0], order[2] = vCtl, vOn
		}
		for _, v := range order {
			n := daemons[v]
			if pids[v], err = workers(n); err != nil {
				return err
			}
			before := cpuSample(n, pids[v])
			l, err := runLoad(ctx, b.o.callers, b.o.slice, calls[v])
			if err != nil {
				return fmt.Errorf("round %d: %w", round+1, err)
			}
			after := cpuSample(n, pids[v])
			l.daemon, l.worker = after.daemon-before.daemon, after.worker-before.worker
			l.self, l.machine = after.self-before.self, after.machine-before.machine
			got[v] = l
		}
		r.rounds = append(r.rounds, got)
		logf("warm calls, round %d: on %.0f/s, off %.0f/s, control %.0f/s, through DialFleet %.0f/s; on/off %.3f, control/off %.3f",
			round+1, got[vOn].perSecond(), got[vOff].perSecond(), got[vCtl].perSecond(), got[vFleet].perSecond(),
			got[vOn].perSecond()/got[vOff].perSecond(), got[vCtl].perSecond()/got[vOff].perSecond())
	}
	for _, v := range variants {
		r.workers[v] = len(pids[v])
	}
	var errs []error
	for _, n := range ns {
		_, err := b.kit.StopDaemon(n.d, 0)
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func cpuSample(n *node, workers []int) load {
	l := load{daemon: benchmd.ProcCPU(n.d.Pid()), self: benchmd.SelfCPU(false), machine: benchmd.MachineBusy()}
	for _, p := range workers {
		l.worker += benchmd.ProcCPU(p)
	}
	return l
}

// runLoad runs callers goroutines that call back to back for d, and waits
// for the calls in flight at the end.
func runLoad(ctx context.Context, callers int, d time.Duration, call func(context.Context) error) (load, error) {
	kctx, cancel := context.WithCancelCause(ctx)
	timer := time.AfterFunc(d, func() { cancel(nil) })
	defer timer.Stop()
	var mu sync.Mutex
	var wg sync.WaitGroup
	var l load
	var failed error
	t0 := time.Now()
	benchmd.Keep(kctx, cancel, &wg, callers, func(context.Context) error {
		s := time.Now()
		err := call(ctx)
		took := time.Since(s)
		mu.Lock()
		defer mu.Unlock()
		if err != nil {
			failed = errors.Join(failed, err)
		} else {
			l.lat = append(l.lat, took)
		}
		return err
	})
	wg.Wait()
	cancel(nil)
	l.elapsed, l.calls = time.Since(t0), len(l.lat)
	if err := ctx.Err(); err != nil {
		return l, fmt.Errorf("interrupted: %w", err)
	}
	return l, failed
}
