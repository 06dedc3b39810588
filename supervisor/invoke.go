package supervisor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/scoped-io/scoped/internal/ident"
	"github.com/scoped-io/scoped/metrics"
	"github.com/scoped-io/scoped/plugins"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// InvokeRequest is one invocation as the API edge hands it over.
type InvokeRequest struct {
	Target
	Version  string
	Payload  []byte
	Metadata map[string]string
	Timeout  time.Duration // 0: the default
}

// InvokeResult is what an invocation returns.
type InvokeResult struct {
	Result       []byte
	InvocationID string
	Scope        string
	Worker       string
	Cold         bool
	Duration     time.Duration
	Queued       time.Duration
	ColdStart    *ColdStart // the phases of the worker's start when Cold, else nil
}

// checkInvoke validates a request against the API limits. Its target's
// ids were checked at the edge (NewTarget); the version, which names a
// directory of the store, is checked here.
func checkInvoke(req InvokeRequest, lim APILimits) error {
	if req.Target == (Target{}) {
		return fmt.Errorf("%w: no target (make one with NewTarget)", ErrInvalid)
	}
	if req.Version != "" {
		if err := ident.Check("version", req.Version); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	if int64(len(req.Payload)) > lim.MaxPayload {
		return fmt.Errorf("%w: payload of %d bytes, at most %d are allowed", ErrTooLarge, len(req.Payload), lim.MaxPayload)
	}
	if len(req.Metadata) > 64 {
		return fmt.Errorf("%w: %d metadata entries, at most 64 are allowed", ErrTooLarge, len(req.Metadata))
	}
	for k, v := range req.Metadata {
		if len(k) > 128 || len(v) > 4096 || k == "" {
			return fmt.Errorf("%w: metadata key %.40q: keys are 1..128 bytes, values at most 4096", ErrInvalid, k)
		}
	}
	if req.Timeout < 0 {
		return fmt.Errorf("%w: negative timeout", ErrInvalid)
	}
	return nil
}

// invocation is one admitted invocation on its way to a worker.
type invocation struct {
	req      InvokeRequest
	id       string
	ext      ExtensionInfo
	tierName string
	tier     Tier
	timeout  time.Duration
	start    time.Time
	sc       *scope
	log      *slog.Logger
	cold     bool
}

// invoker runs invocations on the way validate → gate → scope (the
// keeper's) → the scope's pool of the version → worker call → outcome. It
// makes the scopes' pools and starts their workers (pool.go), and takes
// workers out of them; the reaper and RemoveExtension use it for that too.
type invoker struct {
	cfg       *atomic.Pointer[Config] // the configuration in force (see conf)
	log       *slog.Logger
	pluginLog hclog.Logger // go-plugin's own messages about workers (workerlog.go)
	store     *Store
	gate      *gate
	scopes    *registry
	scopeFor  func(ScopeID) (*scope, error)                      // the keeper's: the live scope, counted active
	tierOf    func(tenant string) (string, Tier)                 // the tenant's tier now
	network   func(sc *scope, ext ExtensionInfo) (string, error) // the networks': a worker's network namespace
	starter   WorkerStarter
	metrics   *metrics.Registry
	meter     *meter // counts the invocations (nil: in memory only)

	sandboxDir, socketDir string

	invocations atomic.Int64 // calls made to workers
	// fleetGet, in a fleet, looks the extension up in place of the store's
	// Get (fetching a bundle this node lacks).
	fleetGet func(ctx context.Context, tenant, env, name, version string) (ExtensionInfo, error)
}

// conf is the configuration in force.
func (i *invoker) conf() *Config { return i.cfg.Load() }

// Invoke runs one invocation: validate, admit (the gate), route (the
// scope), take a worker (the scope's pool of the version), call it, and
// map the worker's outcome to the result or error.
func (s *Supervisor) Invoke(ctx context.Context, req InvokeRequest) (InvokeResult, error) {
	return s.inv.invoke(ctx, req)
}

// invoke is Invoke.
func (i *invoker) invoke(ctx context.Context, req InvokeRequest) (InvokeResult, error) {
	start := time.Now()
	if err := checkInvoke(req, i.conf().Limits); err != nil {
		return InvokeResult{}, err
	}
	get := func(_ context.Context, t, e, n, v string) (ExtensionInfo, error) { return i.store.Get(t, e, n, v) }
	if i.fleetGet != nil {
		get = i.fleetGet
	}
	ext, err := get(ctx, string(req.Tenant()), req.Environment(), req.Extension(), req.Version)
	if err != nil {
		return InvokeResult{}, err
	}
	inv := &invocation{req: req, ext: ext, start: start}
	inv.tierName, inv.tier = i.tierOf(string(req.Tenant()))
	timeout, longest := inv.tier.timeouts(i.conf().Limits)
	if req.Timeout > 0 {
		timeout = min(req.Timeout, longest)
	}
	inv.timeout = timeout
	done, err := i.admit(req.Tenant(), inv.tierName, inv.tier)
	if err != nil {
		return InvokeResult{}, err
	}
	defer done()

	if err := i.scopes.enter(); err != nil {
		return InvokeResult{}, err
	}
	defer i.scopes.exit()

	id := i.conf().Isolation.scopeOf(req.Target)
	sc, err := i.scopeFor(id)
	if err != nil {
		return InvokeResult{}, err
	}
	defer sc.active.Add(-1) // scopeFor counted it
	inv.sc, inv.id = sc, newInvocationID()
	inv.log = i.log.With("tenant", string(req.Tenant()), "scope", id.Key(), "invocation", inv.id, "extension", ext.Name)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res, err := i.run(ctx, inv)
	i.metrics.ObserveInvocation(sc.labels(), req.Extension(), resultOf(err), time.Since(start), inv.cold)
	i.meter.countInvocation(sc, req.Extension(), time.Since(start), inv.cold)
	return res, err
}

// admit passes an invocation through the gate, counting refusals.
func (i *invoker) admit(tenant ident.Tenant, tierName string, t Tier) (func(), error) {
	done, err := i.gate.Admit(tenant, tierName, t, time.Now())
	if err != nil {
		i.metrics.IncRefused(tierName, refusalOf(err))
		return nil, err
	}
	return done, nil
}

// run takes a worker of inv's pool, calls it and maps the outcome.
func (i *invoker) run(ctx context.Context, inv *invocation) (InvokeResult, error) {
	w, cold, err := i.acquire(ctx, inv.sc, inv.ext, inv.tier.maxWorkers(i.conf().Pool))
	inv.cold = cold
	if err != nil {
		if errors.Is(err, ErrDeadline) || errors.Is(ctx.Err(), context.DeadlineExceeded) && !errors.Is(err, ErrBusy) {
			return InvokeResult{}, fmt.Errorf("%w after %s while waiting for a worker: %w", ErrDeadline, inv.timeout, err)
		}
		return InvokeResult{}, err
	}
	res := InvokeResult{InvocationID: inv.id, Scope: inv.sc.id.Key(), Worker: w.id, Cold: cold, Queued: time.Since(inv.start)}
	if cold {
		res.ColdStart = w.coldStart(inv.start)
	}
	c := i.call(ctx, inv, w)
	return i.outcome(ctx, inv, w, res, c)
}

// called is what came of calling a worker.
type called struct {
	resp    *workerv1.InvokeResponse
	err     error
	cpuUsed time.Duration
	overCPU bool // past the tier's cpu_time
	execOOM bool // endExec counted OOM kills in the exec worker's cgroup
}

// call runs inv on w, under the tier's CPU-time watchdog.
func (i *invoker) call(ctx context.Context, inv *invocation, w *worker) called {
	w.begin(inv.id)
	deadline, hasDeadline := ctx.Deadline()
	callCtx, cpuCheck := ctx, func() (time.Duration, bool) { return 0, false }
	if limit := inv.tier.CPUTime.Duration; limit > 0 {
		callCtx, cpuCheck = watchCPU(ctx, w, limit, func(err error) {
			inv.log.Warn("cpu time limit not enforced", "worker", w.id, "err", err)
			i.metrics.IncError("cpu_time_read")
		})
	}
	var c called
	c.resp, c.err = w.h.Invoke(callCtx, &workerv1.InvokeRequest{
		InvocationId: inv.id, Extension: inv.ext.Name, Payload: inv.req.Payload,
		Metadata: inv.req.Metadata, DeadlineMs: time.Until(deadline).Milliseconds(),
	})
	c.cpuUsed, c.overCPU = cpuCheck()
	if c.err != nil && ctx.Err() == nil && hasDeadline && time.Until(deadline) < 100*time.Millisecond {
		// gRPC sends the deadline along: the worker's side of it may end
		// the stream (RST_STREAM CANCEL) before this side's timer fires,
		// even past the deadline when timers run late (a loaded or
		// emulated machine). An error that close to the deadline is the
		// deadline: wait for ctx's own timer, at most 100 ms away.
		<-ctx.Done()
	}
	w.end()
	i.invocations.Add(1)
	inv.sc.invocations.Add(1)
	c.execOOM = w.exec != nil && i.endExec(inv.sc, w, inv.log) // kills what the program left
	return c
}

// outcome gives w back to its pool (or retires or fails it) as the call
// went, and maps the outcome to inv's result or error.
func (i *invoker) outcome(ctx context.Context, inv *invocation, w *worker, res InvokeResult, c called) (InvokeResult, error) {
	ext, sc, p := inv.ext, inv.sc, w.pool
	switch {
	case c.overCPU:
		// The worker may still be computing: recycle it.
		p.discard(w, "cpu time")
		inv.log.Warn("invocation over its cpu time limit, worker recycled", "worker", w.id, "cpu", c.cpuUsed, "limit", inv.tier.CPUTime.Duration)
		return res, fmt.Errorf("%w: %s used %s of CPU, its tier %s allows %s per invocation (the worker was recycled)",
			ErrCPUTime, ext.Name, c.cpuUsed.Round(100*time.Microsecond), inv.tierName, inv.tier.CPUTime.Duration)
	case c.err == nil:
		p.release(w)
	case ctx.Err() != nil && w.exec != nil && !w.retired.Load() && !w.exited():
		// endExec killed the program and all it started: the worker serves on.
		p.release(w)
		if ctx.Err() == context.DeadlineExceeded {
			inv.log.Warn("invocation deadline exceeded, its processes were killed", "worker", w.id, "timeout", inv.timeout)
			return res, fmt.Errorf("%w: %s after %s (its processes were killed)", ErrDeadline, ext.Name, inv.timeout)
		}
		return res, fmt.Errorf("%w: %w (its processes were killed)", ErrDeadline, ctx.Err())
	case ctx.Err() == context.DeadlineExceeded:
		// The worker may be stuck in the handler: kill it and start afresh.
		p.discard(w, "deadline")
		inv.log.Warn("invocation deadline exceeded, worker killed", "worker", w.id, "timeout", inv.timeout)
		return res, fmt.Errorf("%w: %s after %s (the worker was killed and will be replaced)", ErrDeadline, ext.Name, inv.timeout)
	case errors.Is(c.err, plugins.ErrReplyTooLarge) && !w.exited():
		// The result was larger than the client accepts; the worker is fine.
		p.release(w)
		return res, fmt.Errorf("%w: the result of %s exceeds %d bytes", ErrTooLarge, ext.Name, i.conf().Limits.MaxResult)
	case ctx.Err() != nil:
		// The caller went away; the worker may still be busy.
		p.discard(w, "caller cancelled")
		return res, fmt.Errorf("%w: %w", ErrDeadline, ctx.Err())
	default:
		<-w.slots
		err := i.failure(sc, w, fmt.Errorf("%w: the worker of %s died during the call: %v", ErrWorker, ext.Name, c.err))
		if c.execOOM { // endExec counted the OOM kill, of the worker itself
			err = execOOMError(sc, ext)
		}
		return res, err
	}
	res.Duration = time.Since(inv.start)
	if c.resp.GetError() != "" {
		if c.execOOM {
			return res, execOOMError(sc, ext)
		}
		return res, fmt.Errorf("%w: %s", ErrHandler, truncate(c.resp.GetError(), 4096))
	}
	if int64(len(c.resp.GetResult())) > i.conf().Limits.MaxResult {
		return res, fmt.Errorf("%w: the result of %s exceeds %d bytes", ErrTooLarge, ext.Name, i.conf().Limits.MaxResult)
	}
	res.Result = c.resp.GetResult()
	inv.log.Debug("invocation done", "worker", w.id, "cold", inv.cold, "duration", res.Duration)
	return res, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

var invSeq atomic.Uint64

func newInvocationID() string {
	return fmt.Sprintf("i%x-%x", time.Now().UnixNano()&0xffffffffff, invSeq.Add(1))
}
