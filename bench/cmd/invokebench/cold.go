package main

import (
	"context"
	"fmt"
	"os/exec"
	"strconv"
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
	deadline := time.Now().Add(10 * time.Second)
	for _, w := range sc.GetWorkers() {
		for w.GetPid() > 0 && benchmd.ProcAlive(int(w.GetPid())) {
			if time.Now().After(deadline) {
				return fmt.Errorf("worker %s (pid %d) of scope %s still runs 10s after its extension was removed", w.GetId(), w.GetPid(), c.ScopeKey)
			}
			time.Sleep(2 * time.Millisecond)
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
