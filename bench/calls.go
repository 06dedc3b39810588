package bench

import (
	"context"
	"fmt"
	"time"

	scopedv1 "github.com/scoped-io/scoped/proto/scoped/v1"
)

// Deploy deploys bundle as the extension name of tenant in env.
func (d *Daemon) Deploy(ctx context.Context, tenant, env, name string, bundle *scopedv1.Bundle) error {
	_, err := d.C.Deploy(ctx, &scopedv1.DeployRequest{Tenant: tenant, Environment: env, Name: name, Bundle: bundle})
	if err != nil {
		return fmt.Errorf("deploy %s for %s/%s: %w", name, tenant, env, err)
	}
	return nil
}

// Invoke makes req with a client deadline of timeout and returns the reply
// and the client's latency.
func (d *Daemon) Invoke(ctx context.Context, timeout time.Duration, req *scopedv1.InvokeRequest) (*scopedv1.InvokeResponse, time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	t0 := time.Now()
	resp, err := d.C.Invoke(cctx, req)
	took := time.Since(t0)
	if err != nil {
		return nil, took, fmt.Errorf("invoke %s for %s/%s/%s: %w", req.GetExtension(), req.GetTenant(), req.GetEnvironment(), req.GetUser(), err)
	}
	return resp, took, nil
}

// ColdStart is a scope's cold start as the client saw it, in the phases
// the daemon reports (Figures.cold_start): the one source of the phases.
type ColdStart struct {
	Total            time.Duration // the client's latency
	Queued, Duration time.Duration // Figures.queued (worker acquisition) and .duration
	Scope            time.Duration // receipt → the worker's start: checks, admission, the scope's cgroups
	Network          time.Duration // the worker's network (0 in mode none)
	Sandbox          time.Duration // worker cgroup, rootfs, libcontainer create + run
	Handshake        time.Duration // the worker's start up to its handshake and gRPC connection
	Reply            time.Duration // the rest of Total: gRPC to and from the daemon, Dispense, the call
	ScopeKey         string
}

// ColdStart makes req, the first invocation of whoami in a new scope, and
// checks that it was cold, echoed its payload and came with its phases.
func (d *Daemon) ColdStart(ctx context.Context, timeout time.Duration, req *scopedv1.InvokeRequest) (ColdStart, error) {
	resp, took, err := d.Invoke(ctx, timeout, req)
	if err != nil {
		if ctx.Err() != nil {
			return ColdStart{}, fmt.Errorf("interrupted: %w", ctx.Err())
		}
		return ColdStart{}, fmt.Errorf("%w\ndaemon log:\n%s", err, d.LogTail())
	}
	f := resp.GetFigures()
	if !f.GetCold() {
		return ColdStart{}, fmt.Errorf("the first invocation of tenant %s was not cold (worker %s)", req.GetTenant(), f.GetWorker())
	}
	if err := CheckWhoami(resp.GetResult(), string(req.GetPayload())); err != nil {
		return ColdStart{}, err
	}
	cs := f.GetColdStart()
	if cs == nil {
		return ColdStart{}, fmt.Errorf("the cold invocation of tenant %s has no cold-start phases in its figures", req.GetTenant())
	}
	c := ColdStart{Total: took, Queued: f.GetQueued().AsDuration(), Duration: f.GetDuration().AsDuration(),
		Scope: cs.GetScope().AsDuration(), Network: cs.GetNetwork().AsDuration(), Sandbox: cs.GetSandbox().AsDuration(),
		Handshake: cs.GetHandshake().AsDuration(), ScopeKey: f.GetScope()}
	c.Reply = took - c.Scope - c.Network - c.Sandbox - c.Handshake
	return c, nil
}
