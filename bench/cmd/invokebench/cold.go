package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-plugin"

	benchmd "github.com/scoped-io/scoped/bench"
	"github.com/scoped-io/scoped/plugins"
	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// The series of the cold-start measurement. A variant records one or more
// of them per run.
const (
	sScoped = "scoped: first Invoke of a new scope"
	sPlugin = "go-plugin, unsandboxed: NewClient → first reply"
	sRunc   = "runc run of /usr/bin/true"

	// Phases, for the breakdown.
	pScopedQueued = "scoped queued"   // Figures.queued: worker acquisition, start included
	pScopedCall   = "scoped call"     // Figures.duration − queued: the first call in the worker
	pScopedEdge   = "scoped edge"     // client time − Figures.duration: gRPC to the daemon, API edge
	pPluginStart  = "go-plugin start" // NewClient → Client() returns: fork/exec, handshake, gRPC connection
	pPluginCall   = "go-plugin call"  // Dispense + the first Invoke

	// scoped's cold start as the daemon reports it (Figures.cold_start),
	// and the rest of the client's time.
	phScope     = "phase scope"     // receipt → the worker's start: checks, admission, the scope's cgroup nodes
	phNetwork   = "phase network"   // the worker's network (0 in mode none)
	phSandbox   = "phase sandbox"   // worker cgroup, rootfs, libcontainer create + run
	phHandshake = "phase handshake" // the worker's start up to its handshake and the gRPC connection to it
	phReply     = "phase reply"     // the rest: gRPC to and from the daemon, Dispense, the first call
)

const callTimeout = 30 * time.Second

func (b *bench) coldVariants() []benchmd.Variant {
	return []benchmd.Variant{
		{Name: "scoped", Run: b.coldScoped},
		{Name: "go-plugin", Run: b.coldPlugin},
		{Name: "runc", Run: b.coldRunc},
	}
}

// coldResult is the cold-start measurement: the series, the phases among
// them.
type coldResult struct {
	series map[string][]time.Duration
}

// measureCold starts a daemon, runs every variant warmup+n times,
// round-robin, and stops the daemon. Each timed run follows an idle gap, for the reason sandboxbench gives: the
// first write to cgroup.procs after some idle time waits for an RCU grace
// period, and a daemon that starts a scope now and then pays it.
func (b *bench) measureCold(ctx context.Context) (coldResult, error) {
	if err := b.startDaemon(ctx, "cold", "info"); err != nil {
		return coldResult{}, err
	}
	series, err := benchmd.RoundRobin(ctx, "cold start: ", b.o.warmup, b.o.n, 0, b.coldVariants(), logf)
	if err != nil {
		return coldResult{}, err
	}
	return coldResult{series: series}, b.stopDaemon()
}

// coldScoped deploys whoami for a fresh tenant (untimed), then times the
// first invocation of the tenant's new scope; afterwards it removes the
// extension and waits until its worker is gone (untimed).
func (b *bench) coldScoped(ctx context.Context, rec func(string, time.Duration)) error {
	b.seq++
	tenant := "bench" + strconv.Itoa(b.seq)
	if _, err := b.c.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: environment, Name: extName, Bundle: b.files}); err != nil {
		return fmt.Errorf("deploy for %s: %w", tenant, err)
	}
	time.Sleep(b.o.gap)
	cctx, cancel := context.WithTimeout(ctx, callTimeout)
	t0 := time.Now()
	resp, err := b.c.Invoke(cctx, &scopedv1.InvokeRequest{Tenant: tenant, Environment: environment, Extension: extName, Payload: b.payload})
	total := time.Since(t0)
	cancel()
	if err != nil {
		return fmt.Errorf("invoke for %s: %w\ndaemon log:\n%s", tenant, err, b.d.LogTail())
	}
	f := resp.GetFigures()
	if !f.GetCold() {
		return fmt.Errorf("the first invocation of tenant %s was not cold (worker %s)", tenant, f.GetWorker())
	}
	if err := benchmd.CheckWhoami(resp.GetResult(), string(b.payload)); err != nil {
		return err
	}
	queued, dur := f.GetQueued().AsDuration(), f.GetDuration().AsDuration()
	rec(sScoped, total)
	rec(pScopedQueued, queued)
	rec(pScopedCall, dur-queued)
	rec(pScopedEdge, total-dur)
	cs := f.GetColdStart()
	if cs == nil {
		return fmt.Errorf("the cold invocation of tenant %s has no cold-start phases in its figures", tenant)
	}
	rest := total
	for s, d := range map[string]time.Duration{phScope: cs.GetScope().AsDuration(), phNetwork: cs.GetNetwork().AsDuration(),
		phSandbox: cs.GetSandbox().AsDuration(), phHandshake: cs.GetHandshake().AsDuration()} {
		rec(s, d)
		rest -= d
	}
	rec(phReply, rest)
	return b.removeExtension(ctx, tenant, f.GetScope())
}

// removeExtension removes tenant's whoami, which stops its worker, and
// waits until the worker's processes are gone, so that the next run does
// not share the machine with its exit.
func (b *bench) removeExtension(ctx context.Context, tenant, scope string) error {
	sc, err := b.c.InspectScope(ctx, &scopedv1.InspectScopeRequest{Scope: scope})
	if err != nil {
		return fmt.Errorf("inspect scope %s: %w", scope, err)
	}
	if _, err := b.c.RemoveExtension(ctx, &scopedv1.RemoveExtensionRequest{Tenant: tenant, Environment: environment, Name: extName}); err != nil {
		return fmt.Errorf("remove %s of %s: %w", extName, tenant, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range sc.GetWorkers() {
		for w.GetPid() > 0 && processExists(int(w.GetPid())) {
			if time.Now().After(deadline) {
				return fmt.Errorf("worker %s (pid %d) of scope %s still runs 10s after its extension was removed", w.GetId(), w.GetPid(), scope)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	return nil
}

// processExists says whether pid is a process that has not exited (a
// zombie counts as gone).
func processExists(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
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

// pluginPid is the pid of a started go-plugin worker (0 if unknown).
func pluginPid(pc *plugin.Client) int {
	if rc := pc.ReattachConfig(); rc != nil {
		return rc.Pid
	}
	return 0
}

func dispense(pc *plugin.Client) (workerv1.WorkerClient, error) {
	cp, err := pc.Client()
	if err != nil {
		return nil, err
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
	cp, err := pc.Client()
	if err != nil {
		return err
	}
	t1 := time.Now()
	b.direct = append(b.direct, pluginPid(pc))
	raw, err := cp.Dispense(plugins.PluginName)
	if err != nil {
		return err
	}
	wc, ok := raw.(workerv1.WorkerClient)
	if !ok {
		return fmt.Errorf("dispensed %T", raw)
	}
	resp, err := wc.Invoke(cctx, b.workerRequest())
	t2 := time.Now()
	if err != nil {
		return err
	}
	if resp.GetError() != "" {
		return fmt.Errorf("whoami: %s", resp.GetError())
	}
	if err := benchmd.CheckWhoami(resp.GetResult(), string(b.payload)); err != nil {
		return err
	}
	rec(sPlugin, t2.Sub(t0))
	rec(pPluginStart, t1.Sub(t0))
	rec(pPluginCall, t2.Sub(t1))
	return nil
}

func (b *bench) coldRunc(_ context.Context, rec func(string, time.Duration)) error {
	b.seq++
	time.Sleep(b.o.gap)
	d, err := b.runc.Run("r" + strconv.Itoa(b.seq))
	rec(sRunc, d)
	return err
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
