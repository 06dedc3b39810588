package supervisor

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/plugins/host"
	workerv1 "github.com/scoped-io/scoped/proto/worker/v1"
)

// fakeStarter starts fakeWorkers; with block set, a start waits for it
// (or for ctx); with fail set, it fails.
type fakeStarter struct {
	mu      sync.Mutex
	started []*fakeWorker
	fail    error
	block   chan struct{}
}

func (f *fakeStarter) Start(ctx context.Context, _ host.Spec) (host.Worker, error) {
	f.mu.Lock()
	block, fail := f.block, f.fail
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	if fail != nil {
		return nil, fail
	}
	w := &fakeWorker{stopped: make(chan struct{})}
	f.mu.Lock()
	f.started = append(f.started, w)
	w.pid = 100 + len(f.started)
	f.mu.Unlock()
	return w, nil
}

func (f *fakeStarter) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.started)
}

// fakeWorker is a worker whose CPU time the test sets.
type fakeWorker struct {
	pid      int
	cpu      atomic.Int64 // nanoseconds
	cpuErr   error
	stopOnce sync.Once
	stopped  chan struct{}
	// invoke, if set, answers Invoke.
	invoke func(context.Context, *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error)
}

func (w *fakeWorker) Invoke(ctx context.Context, req *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error) {
	if w.invoke != nil {
		return w.invoke(ctx, req)
	}
	return &workerv1.InvokeResponse{}, nil
}
func (w *fakeWorker) Pid() int     { return w.pid }
func (w *fakeWorker) Exited() bool { return w.isStopped() }
func (w *fakeWorker) WaitExit(time.Duration) (uint64, bool) {
	return 0, w.isStopped()
}
func (w *fakeWorker) Started() time.Time { return time.Now() }

func (w *fakeWorker) CPUUsage() (time.Duration, error) {
	return time.Duration(w.cpu.Load()), w.cpuErr
}
func (w *fakeWorker) Stop() { w.stopOnce.Do(func() { close(w.stopped) }) }
func (w *fakeWorker) isStopped() bool {
	select {
	case <-w.stopped:
		return true
	default:
		return false
	}
}

var unitExt = ExtensionInfo{Tenant: "acme", Environment: "production", Name: "hook", Version: "1", Digest: "d1", Runtime: RuntimeGo}

func fakePool(t *testing.T, conf PoolConfig, ext ExtensionInfo) (*pool, *fakeStarter) {
	t.Helper()
	f := &fakeStarter{}
	prepare := func(w *worker) (host.Spec, error) {
		w.unhold = func() {}
		return host.Spec{}, nil
	}
	return newPool("acme.production", ext, func() PoolConfig { return conf }, f, prepare,
		slog.New(slog.NewTextHandler(io.Discard, nil))), f
}

func mustAcquire(t *testing.T, p *pool, maxWorkers int) (*worker, bool) {
	t.Helper()
	w, cold, err := p.acquire(context.Background(), maxWorkers)
	if err != nil {
		t.Fatalf("acquire: %v", err)
	}
	return w, cold
}

func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

func waitStopped(t *testing.T, w *worker) {
	t.Helper()
	select {
	case <-w.h.(*fakeWorker).stopped:
	case <-time.After(10 * time.Second):
		t.Fatalf("worker %s not stopped", w.id)
	}
}

// TestUnitPoolColdStartAndReuse: the first acquire starts a worker (cold),
// the next one after release reuses it; a worker serves max_concurrent
// invocations at once before a second one starts.
func TestUnitPoolColdStartAndReuse(t *testing.T) {
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 2}, unitExt)
	w1, cold := mustAcquire(t, p, 4)
	if !cold || f.count() != 1 || w1.pid() != 101 {
		t.Fatalf("first acquire: cold %v, %d started, pid %d", cold, f.count(), w1.pid())
	}
	p.release(w1)
	w2, cold := mustAcquire(t, p, 4)
	if cold || w2 != w1 || f.count() != 1 {
		t.Fatalf("after release: cold %v, same worker %v, %d started; want the warm one", cold, w2 == w1, f.count())
	}
	w3, cold := mustAcquire(t, p, 4) // second slot of the same worker
	if cold || w3 != w1 {
		t.Fatalf("second slot: cold %v, same %v", cold, w3 == w1)
	}
	w4, cold := mustAcquire(t, p, 4) // both slots taken: a new worker
	if !cold || w4 == w1 || f.count() != 2 {
		t.Fatalf("slots full: cold %v, %d started", cold, f.count())
	}
	if got := len(p.list()); got != 2 {
		t.Errorf("%d workers listed, want 2", got)
	}
}

// TestUnitPoolExecSingleSlot: a worker of the exec runtime serves one
// invocation at a time whatever max_concurrent says.
func TestUnitPoolExecSingleSlot(t *testing.T) {
	ext := unitExt
	ext.Runtime = RuntimeExec
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 8}, ext)
	w1, _ := mustAcquire(t, p, 2)
	w2, cold := mustAcquire(t, p, 2)
	if w1 == w2 || !cold || f.count() != 2 || cap(w1.slots) != 1 {
		t.Fatalf("exec worker shared: same %v, cold %v, %d started, %d slots", w1 == w2, cold, f.count(), cap(w1.slots))
	}
}

// TestUnitPoolMaxWorkersWait: at max_workers with every slot busy an
// acquire waits for a slot, and gets ErrBusy when its context ends first.
func TestUnitPoolMaxWorkersWait(t *testing.T) {
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
	w1, _ := mustAcquire(t, p, 1)
	if _, _, err := p.acquire(cancelled(), 1); !errors.Is(err, ErrBusy) {
		t.Fatalf("pool full, context over: %v, want ErrBusy", err)
	}
	got := make(chan *worker, 1)
	go func() {
		w, _, err := p.acquire(context.Background(), 1)
		if err != nil {
			t.Error(err)
		}
		got <- w
	}()
	// The waiter cannot have a worker until the slot is back.
	p.mu.Lock()
	waiting := len(p.workers) == 1 && len(w1.slots) == 1
	p.mu.Unlock()
	if !waiting {
		t.Fatal("the pool grew past max_workers")
	}
	p.release(w1)
	select {
	case w := <-got:
		if w != w1 || f.count() != 1 {
			t.Errorf("waiter got a different worker (%d started)", f.count())
		}
	case <-time.After(10 * time.Second):
		t.Fatal("waiter not woken by the release")
	}
}

// TestUnitPoolStartFailures: a failed start is ErrWorker, one cut short by
// the deadline is ErrDeadline; neither leaves a start counted.
func TestUnitPoolStartFailures(t *testing.T) {
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
	f.fail = errors.New("handshake failed")
	if _, cold, err := p.acquire(context.Background(), 1); !errors.Is(err, ErrWorker) || !cold {
		t.Fatalf("failed start: %v (cold %v), want ErrWorker", err, cold)
	}
	f.fail, f.block = nil, make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { _, _, err := p.acquire(ctx, 1); done <- err }()
	cancel()
	if err := <-done; !errors.Is(err, ErrDeadline) {
		t.Fatalf("start past the deadline: %v, want ErrDeadline", err)
	}
	close(f.block)
	if _, cold := mustAcquire(t, p, 1); !cold || p.starting != 0 {
		t.Errorf("after failed starts: cold %v, %d starting", cold, p.starting)
	}
}

// TestUnitPoolRetire: a retired worker is never handed out again; a
// discarded one is stopped at once, a recycled one once its slot is back.
func TestUnitPoolRetire(t *testing.T) {
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 1, RecycleAfter: 2}, unitExt)
	w1, _ := mustAcquire(t, p, 2)
	p.discard(w1, "failed")
	waitStopped(t, w1)
	w2, cold := mustAcquire(t, p, 2)
	if w2 == w1 || !cold || f.count() != 2 || len(p.list()) != 1 {
		t.Fatalf("after discard: same %v, cold %v, %d started, %d listed", w2 == w1, cold, f.count(), len(p.list()))
	}
	// recycle_after 2: the second invocation's release retires it.
	w2.end()
	p.release(w2)
	if w2.retired.Load() {
		t.Fatal("recycled after one invocation")
	}
	w2b, _ := mustAcquire(t, p, 2)
	if w2b != w2 {
		t.Fatal("warm worker not reused")
	}
	w2.end()
	p.release(w2)
	waitStopped(t, w2)
	if !w2.retired.Load() || len(p.list()) != 0 {
		t.Errorf("after recycle_after invocations: retired %v, %d listed", w2.retired.Load(), len(p.list()))
	}
	// A retired worker with a slot in use is stopped when it comes back.
	w3, _ := mustAcquire(t, p, 2)
	p.retire(w3, "extension removed")
	if w3.h.(*fakeWorker).isStopped() {
		t.Fatal("busy worker stopped at retire")
	}
	p.release(w3)
	waitStopped(t, w3)
}

// TestUnitPoolIdle: idle selection keeps keep workers per version and
// never picks a busy one; warm asks for workers below warm_min.
func TestUnitPoolIdle(t *testing.T) {
	p, _ := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
	if p.short(1) {
		t.Error("an empty pool asks to be warmed")
	}
	var ws []*worker
	for range 3 {
		w, _ := mustAcquire(t, p, 3)
		ws = append(ws, w)
	}
	past := time.Now().Add(-time.Hour).UnixNano()
	for _, w := range ws {
		w.lastUsed.Store(past)
	}
	p.release(ws[0])
	p.release(ws[1]) // ws[2] stays busy
	idle := p.idle(time.Minute, 1)
	if len(idle) != 1 || idle[0] != ws[1] {
		t.Fatalf("idle = %v, want only the second worker (the first is kept, the third busy)", idle)
	}
	if got := p.idle(time.Minute, 0); len(got) != 2 {
		t.Errorf("keep 0: %d idle, want 2", len(got))
	}
	if got := p.idle(2*time.Hour, 0); len(got) != 0 {
		t.Errorf("idle longer than 2h: %d, want none", len(got))
	}
	if !p.short(4) || p.short(3) {
		t.Error("short: 3 live workers are short of 4 and not of 3")
	}
}

// TestUnitPoolClose: a closed pool refuses acquires; the scope drops empty
// pools (an acquire on a dropped one is told to take the new one) and
// stops every worker when it stops.
func TestUnitPoolClose(t *testing.T) {
	sc := &scope{id: ScopeID{Tenant: "acme", Name: "production"}, lastUsed: time.Now().Add(-time.Hour)}
	var made []*pool
	var starters []*fakeStarter
	mk := func() *pool {
		p, f := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
		made, starters = append(made, p), append(starters, f)
		return p
	}
	p, err := sc.pool(unitExt, mk)
	if err != nil {
		t.Fatal(err)
	}
	if again, _ := sc.pool(unitExt, mk); again != p {
		t.Fatal("a second pool for the same version")
	}
	if !sc.unused(time.Minute) {
		t.Fatal("a scope with only an empty pool is not unused")
	}
	if _, _, err := p.acquire(context.Background(), 1); !errors.Is(err, errPoolGone) {
		t.Fatalf("acquire on a dropped pool: %v, want errPoolGone", err)
	}
	p2, _ := sc.pool(unitExt, mk)
	if p2 == p {
		t.Fatal("the dropped pool came back")
	}
	w, _ := mustAcquire(t, p2, 1)
	if sc.unused(0) {
		t.Fatal("a scope with a worker is unused")
	}
	if got := sc.workerList(); len(got) != 1 || got[0] != w {
		t.Fatalf("workerList = %v", got)
	}
	sc.stopAll()
	waitStopped(t, w)
	if _, _, err := p2.acquire(context.Background(), 1); !errors.Is(err, ErrStopping) {
		t.Errorf("acquire after stopAll: %v, want ErrStopping", err)
	}
	if _, err := sc.pool(unitExt, mk); !errors.Is(err, ErrStopping) {
		t.Errorf("pool of a stopped scope: %v, want ErrStopping", err)
	}
}

// TestUnitPoolStartWhileClosing: a worker whose start ends after its pool
// closed is stopped, never handed out.
func TestUnitPoolStartWhileClosing(t *testing.T) {
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
	f.block = make(chan struct{})
	done := make(chan error, 1)
	go func() { _, _, err := p.acquire(context.Background(), 1); done <- err }()
	for {
		p.mu.Lock()
		n := p.starting
		p.mu.Unlock()
		if n == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	p.close(ErrStopping)
	close(f.block)
	if err := <-done; !errors.Is(err, ErrStopping) {
		t.Fatalf("start ending after close: %v, want ErrStopping", err)
	}
	f.mu.Lock()
	fw := f.started[0]
	f.mu.Unlock()
	select {
	case <-fw.stopped:
	case <-time.After(10 * time.Second):
		t.Fatal("worker started after close still runs")
	}
}

// TestUnitWatchCPU: the watchdog cancels the call's context once the
// worker's CPU time passes the limit, and reports the time used; under the
// limit it reports not over; an unreadable cgroup leaves the call unbounded.
func TestUnitWatchCPU(t *testing.T) {
	fw := &fakeWorker{stopped: make(chan struct{})}
	fw.cpu.Store(int64(time.Second))
	w := &worker{id: "w1", h: fw}
	fail := func(err error) { t.Errorf("read failed: %v", err) }

	ctx, check := watchCPU(context.Background(), w, 10*time.Millisecond, fail)
	fw.cpu.Add(int64(4 * time.Millisecond))
	if ctx.Err() != nil {
		t.Error("context of a call within its CPU time cancelled")
	}
	if used, over := check(); over || used != 4*time.Millisecond {
		t.Errorf("under the limit: used %s, over %v", used, over)
	}

	ctx, check = watchCPU(context.Background(), w, 10*time.Millisecond, fail)
	fw.cpu.Add(int64(25 * time.Millisecond))
	select {
	case <-ctx.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("watchdog did not fire")
	}
	if !errors.Is(context.Cause(ctx), ErrCPUTime) {
		t.Errorf("cause %v, want ErrCPUTime", context.Cause(ctx))
	}
	if used, over := check(); !over || used != 25*time.Millisecond {
		t.Errorf("over the limit: used %s, over %v", used, over)
	}

	bad := &fakeWorker{stopped: make(chan struct{}), cpuErr: errors.New("no cgroup")}
	var failed bool
	base := context.Background()
	ctx, check = watchCPU(base, &worker{id: "w2", h: bad}, time.Millisecond, func(error) { failed = true })
	if used, over := check(); !failed || ctx != base || over || used != 0 {
		t.Errorf("unreadable cgroup: failed %v, same ctx %v, over %v, used %s", failed, ctx == base, over, used)
	}
}

// TestUnitPoolFailure: a worker that broke during a call is taken out of
// its pool once, stopped, and every caller gets the first cause.
func TestUnitPoolFailure(t *testing.T) {
	node, err := cgroups.Load("/scoped-unit-absent/standard/acme/production")
	if err != nil {
		t.Fatal(err)
	}
	inv := &invoker{log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	sc := &scope{id: ScopeID{Tenant: "acme", Name: "production"}, node: node}
	p, f := fakePool(t, PoolConfig{MaxConcurrent: 2}, unitExt)
	w, _ := mustAcquire(t, p, 1)
	if again, _ := mustAcquire(t, p, 1); again != w {
		t.Fatal("second slot not on the same worker")
	}
	cause := errors.New("the worker of hook died during the call")
	<-w.slots
	if err := inv.failure(sc, w, cause); err != cause {
		t.Fatalf("failure = %v, want the cause", err)
	}
	<-w.slots
	if err := inv.failure(sc, w, errors.New("second")); err != cause {
		t.Errorf("second failure = %v, want the first cause", err)
	}
	waitStopped(t, w)
	if len(p.list()) != 0 {
		t.Error("failed worker still in its pool")
	}
	if w2, cold := mustAcquire(t, p, 1); w2 == w || !cold || f.count() != 2 {
		t.Errorf("after a failure: same %v, cold %v, %d started", w2 == w, cold, f.count())
	}
}

// TestUnitWorkerOutputInvocation: a worker's output that comes after its
// reply keeps the id of the invocation it served alone, until another
// begins; while two run at once, output has no invocation id.
func TestUnitWorkerOutputInvocation(t *testing.T) {
	w := &worker{}
	w.current.Store("")
	id := func() string { return w.current.Load().(string) }
	w.begin("i1")
	w.end()
	if id() != "i1" {
		t.Errorf("after i1 ended: %q, want i1", id())
	}
	w.begin("i2")
	w.begin("i3")
	if id() != "" {
		t.Errorf("two in flight: %q, want none", id())
	}
	w.end()
	w.end()
	if id() != "" {
		t.Errorf("after two: %q, want none", id())
	}
	w.begin("i4")
	if id() != "i4" {
		t.Errorf("i4 alone: %q", id())
	}
}

// TestUnitCallErrorAtDeadline: the worker's side of a deadline can end the
// stream before the daemon's timer fires; an error that close to the
// deadline is reported as the deadline, not as a worker that died.
func TestUnitCallErrorAtDeadline(t *testing.T) {
	p, _ := fakePool(t, PoolConfig{MaxConcurrent: 1}, unitExt)
	w, _ := mustAcquire(t, p, 1)
	w.h.(*fakeWorker).invoke = func(ctx context.Context, _ *workerv1.InvokeRequest) (*workerv1.InvokeResponse, error) {
		d, _ := ctx.Deadline()
		time.Sleep(time.Until(d) - 50*time.Millisecond)
		return nil, errors.New("stream terminated by RST_STREAM with error code: CANCEL")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	inv := &invocation{id: "i1", ext: unitExt, sc: &scope{}, log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	c := (&invoker{}).call(ctx, inv, w)
	if c.err == nil || !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("call returned %v with ctx %v: want the worker's error after ctx's deadline", c.err, ctx.Err())
	}
}
