package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	benchmd "github.com/scoped-io/scoped/bench"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

const (
	callTimeout = 30 * time.Second
	payload     = "netbench"
	settleMax   = 3 * time.Second
)

// mode is one daemon configuration measured, and where its daemons run:
// a host namespace of their own (each daemon owns its namespace's bridge
// and scope veths) that the wrapper starts scoped in.
type mode struct {
	name, key string // for the report, for names
	network   string // the tier's network
	pool      int    // [network] pool_size

	index      int
	tn         *testNet
	wrapper    string
	cgroupRoot string
}

func (m *mode) pooled() bool { return m.network == "egress" && m.pool > 0 }

// newModes makes every mode's namespaces and wrapper: nsenter execs
// scoped in the namespace (same pid: signals, and the parent-death signal,
// reach the daemon), as the e2e network test does.
func (b *bench) newModes() error {
	for i, m := range []mode{
		{name: "none", key: "none", network: "none", pool: b.o.poolSize},
		{name: "egress", key: "egress", network: "egress", pool: b.o.poolSize},
		{name: "egress, pool off", key: "nopool", network: "egress"},
	} {
		tn, err := newTestNet()
		if err != nil {
			return fmt.Errorf("the %s daemons' network namespaces: %w", m.name, err)
		}
		m.index, m.tn, m.cgroupRoot = i, tn, daemonCgroupRoot+"-"+m.key
		m.wrapper = filepath.Join(b.kit.Bin, "scoped-in-netns-"+m.key)
		b.modes = append(b.modes, &m)
		script := fmt.Sprintf("#!/bin/sh\nexec nsenter --net=%s -- %s \"$@\"\n", tn.path(), b.kit.Scoped)
		if err := os.WriteFile(m.wrapper, []byte(script), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// coldCall is one timed cold start.
type coldCall struct {
	benchmd.ColdStart
	round     int
	end       time.Time
	poolReady int           // namespaces ready in the pool just before (-1: no pool)
	late      time.Duration // the previous cold start ended this much after this one's slot
}

// coldResult is the cold starts of every mode, indexed like b.modes.
type coldResult struct {
	calls      [][]coldCall
	settleMiss int     // rounds whose machine did not settle before timing
	otherShare float64 // of the machine's CPU time, used by all but the benchmark and its daemons
}

// measureCold runs the rounds.
func (b *bench) measureCold(ctx context.Context) (res coldResult, _ error) {
	res.calls = make([][]coldCall, len(b.modes))
	t0, busy0, own0 := time.Now(), benchmd.MachineBusy(), benchmd.SelfCPU(true)
	defer func() {
		other := (benchmd.MachineBusy() - busy0) - (benchmd.SelfCPU(true) - own0)
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
func (b *bench) settings(m *mode) string {
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
`, idBase+m.index*slots*65536, slots, m.network, allowRule, b.o.rate, b.o.rate, uplink, m.pool)
}

// live is a mode's daemon during a round.
type live struct {
	*mode
	daemon    string // its name
	d         *benchmd.Daemon
	tenants   []string
	started   int // scopes started
	calls     []coldCall
	lastScope string
}

// stop stops the daemon and checks that it left no cgroup and nothing in
// its namespace, and removes its state (a bundle per tenant).
func (l *live) stop(b *bench) error {
	if l.d == nil {
		return nil
	}
	_, err := b.kit.StopDaemon(l.d, 0)
	l.d = nil
	if err != nil {
		err = fmt.Errorf("the %s daemon: %w", l.name, err)
	}
	return errors.Join(err, l.tn.leftovers(), os.RemoveAll(filepath.Join(b.kit.Work, "daemon-"+l.daemon)))
}

// runRound starts a fresh daemon per mode, deploys whoami for
// warmup+scopes new tenants of each, then starts their scopes with one
// cold start every pace, the modes taking turns in an order that rotates
// from step to step and round to round, and stops the daemons.
func (b *bench) runRound(ctx context.Context, round int, res *coldResult) (retErr error) {
	var lives []*live
	defer func() {
		for _, l := range lives {
			retErr = errors.Join(retErr, l.stop(b))
		}
	}()
	n := b.o.warmup + b.o.scopes
	for _, m := range b.modes {
		l := &live{mode: m, daemon: fmt.Sprintf("%d-%s", round+1, m.key)}
		var err error
		if l.d, err = b.kit.StartDaemonBin(ctx, m.wrapper, l.daemon, m.cgroupRoot, b.settings(m)); err != nil {
			return fmt.Errorf("%s: %w", m.name, err)
		}
		lives = append(lives, l)
		for range n {
			b.seq++
			l.tenants = append(l.tenants, fmt.Sprintf("t%d", b.seq))
			if err := l.d.Deploy(ctx, l.tenants[len(l.tenants)-1], environment, extName, b.files); err != nil {
				return fmt.Errorf("%s: %w", m.name, err)
			}
		}
	}
	for _, l := range lives {
		if l.pooled() {
			if err := l.tn.waitVeths(l.pool); err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
			}
		}
	}
	if _, ok := benchmd.Settle(settleMax, b.baseline, 0.1); !ok {
		res.settleMiss++
	}

	start := time.Now()
	var prevEnd time.Time
	for i := range n {
		for k := range lives {
			if err := ctx.Err(); err != nil {
				return fmt.Errorf("interrupted: %w", err)
			}
			l := lives[(i+round+k)%len(lives)]
			slot := start.Add(time.Duration(i*len(lives)+k) * b.o.pace)
			time.Sleep(time.Until(slot))
			call, err := b.coldStart(ctx, l, round)
			if err != nil {
				return fmt.Errorf("%s: %w", l.name, err)
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
		sc, err := l.d.C.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: l.lastScope})
		if err != nil {
			return fmt.Errorf("inspect scope %s: %w", l.lastScope, err)
		}
		if got := sc.GetNetworkAddr() != ""; got != (l.network == "egress") {
			return fmt.Errorf("scope %s has network address %q in mode %s", l.lastScope, sc.GetNetworkAddr(), l.name)
		}
		if err := l.stop(b); err != nil {
			return err
		}
		res.calls[l.index] = append(res.calls[l.index], l.calls...)
	}
	return nil
}

// coldStart times the first invocation of l's next tenant: a new scope.
func (b *bench) coldStart(ctx context.Context, l *live, round int) (coldCall, error) {
	call := coldCall{round: round, poolReady: -1}
	if l.pooled() {
		// Every scope started so far holds one veth; the rest are the
		// pool's (one may be half made).
		v, err := l.tn.scopeVeths()
		if err != nil {
			return call, err
		}
		call.poolReady = v - l.started
	}
	req := &scopedv1.InvokeRequest{Tenant: l.tenants[l.started], Environment: environment, Extension: extName, Payload: []byte(payload)}
	l.started++
	var err error
	call.ColdStart, err = l.d.ColdStart(ctx, callTimeout, req)
	call.end = time.Now()
	l.lastScope = call.ScopeKey
	return call, err
}
