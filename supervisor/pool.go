package supervisor

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/scoped-io/scoped/cgroups"
	"github.com/scoped-io/scoped/netns"
	"github.com/scoped-io/scoped/plugins/host"
	"github.com/scoped-io/scoped/sandbox"
)

// scope is one live scope: its cgroup node, its host id range, its log
// ring and its pools of workers, one per extension version.
type scope struct {
	id      ScopeID
	tier    string // the tier it was created in
	node    *cgroups.Node
	ids     sandbox.IDRange
	ring    *logRing
	limits  cgroups.Limits
	created time.Time

	mu       sync.Mutex
	closed   bool
	pools    map[string]*pool // by extension version key; made on first use
	oomSeen  uint64
	lastUsed time.Time
	oomLost  atomic.Uint64 // OOM kills counted in workers' cgroups only (v1, hybrid): added to the scope's figures

	use map[string]*extUse // by extension, for metering; guarded by mu

	invocations atomic.Int64
	active      atomic.Int64 // invocations in flight
	cgid        uint64       // unified cgroup id, the accounting key (0: not accounted)
	nodeID      uint64       // unified cgroup id, accounted or not (0: none)

	netMu sync.Mutex
	net   *netns.Net // the scope's egress network, made by its first egress worker
}

// versionKey names one stored bundle: the environment, because a scope may
// serve several environments, and the digest, because a version number is
// reused after the extension was removed.
func versionKey(e ExtensionInfo) string {
	return e.Environment + "/" + e.Name + "@" + e.Version + "/" + e.Digest
}

// WorkerStarter starts one worker as spec says. plugins.Starter starts
// sandboxed go-plugin workers; the pools' unit tests use fakes.
type WorkerStarter interface {
	Start(ctx context.Context, spec host.Spec) (host.Worker, error)
}

// worker is one worker of a pool, serving one extension version.
type worker struct {
	id      string
	ext     ExtensionInfo
	pool    *pool
	started time.Time
	h       host.Worker // nil until started
	slots   chan struct{}
	exec    *execState // the exec runtime's; nil for Go workers

	invocations atomic.Int64
	inFlight    atomic.Int32
	current     atomic.Value // string: the invocation id when exactly one is in flight, or the last one served alone (see end)
	lastUsed    atomic.Int64 // unix nanos
	retired     atomic.Bool

	failOnce sync.Once
	failErr  error
	stopOnce sync.Once
	unhold   func() // gives back the worker's hold on its bundle version

	start workerStart // the phases of its start (coldstart.go)
}

func newWorkerID() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return "w" + hex.EncodeToString(b[:])
}

func (w *worker) pid() int {
	if w.h == nil {
		return 0
	}
	return w.h.Pid()
}

func (w *worker) exited() bool {
	return w.h == nil || w.h.Exited()
}

// stop kills the worker and removes its sandbox; safe to call many times.
func (w *worker) stop() {
	w.stopOnce.Do(func() {
		if w.h != nil {
			w.h.Stop()
		}
		if w.unhold != nil {
			w.unhold()
		}
	})
}

// begin counts an invocation in flight on w.
func (w *worker) begin(invID string) {
	if w.inFlight.Add(1) == 1 {
		w.current.Store(invID)
	} else {
		w.current.Store("")
	}
	w.lastUsed.Store(time.Now().UnixNano())
}

// end counts the end of an invocation on w.
//
// The invocation id of its output stays that of the last invocation it
// served alone: the worker's stderr travels apart from its reply and may
// come after it, and it still belongs to that invocation until another
// begins.
func (w *worker) end() {
	w.inFlight.Add(-1)
	w.invocations.Add(1)
	w.lastUsed.Store(time.Now().UnixNano())
}

// errPoolGone: the pool was dropped from its scope (it had no workers);
// the caller takes the scope's current pool of the version instead.
var errPoolGone = errors.New("pool dropped")

// pool is the workers of one extension version in one scope: at most
// maxWorkers (per acquire: the tier decides) of them, each serving up to
// [pool] max_concurrent invocations at once (exec-runtime workers: one).
type pool struct {
	key     string
	scope   string // its scope's key, for messages
	ext     ExtensionInfo
	conf    func() PoolConfig // the settings in force
	starter WorkerStarter
	// prepare makes the spec of w's start, and may set w.exec and
	// w.unhold (w.stop gives back what it took).
	prepare func(w *worker) (host.Spec, error)
	log     *slog.Logger // with the scope's tenant and key

	mu       sync.Mutex
	closed   error // why the pool takes no more invocations (nil: it does)
	workers  []*worker
	starting int
	changed  chan struct{} // closed and replaced whenever a slot frees
}

func newPool(scope string, ext ExtensionInfo, conf func() PoolConfig, starter WorkerStarter,
	prepare func(*worker) (host.Spec, error), log *slog.Logger) *pool {
	return &pool{key: versionKey(ext), scope: scope, ext: ext, conf: conf, starter: starter, prepare: prepare, log: log,
		changed: make(chan struct{})}
}

// notify wakes invocations waiting for a slot. Callers hold p.mu.
func (p *pool) notify() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// acquire returns a worker with a free slot, starting one when none is
// free and the pool has fewer than maxWorkers; cold is true when it
// started one. It waits for a slot until ctx ends (ErrBusy).
func (p *pool) acquire(ctx context.Context, maxWorkers int) (w *worker, cold bool, err error) {
	for {
		p.mu.Lock()
		if p.closed != nil {
			p.mu.Unlock()
			return nil, false, p.closed
		}
		for _, w := range p.workers {
			if w.retired.Load() {
				continue
			}
			select {
			case w.slots <- struct{}{}:
				p.mu.Unlock()
				return w, false, nil
			default:
			}
		}
		if len(p.workers)+p.starting < maxWorkers {
			p.starting++
			p.mu.Unlock()
			w, err := p.start(ctx)
			p.mu.Lock()
			p.starting--
			if err == nil {
				if p.closed != nil {
					err = ErrStopping
					go w.stop()
				} else {
					w.slots <- struct{}{}
					p.workers = append(p.workers, w)
				}
			}
			p.notify()
			p.mu.Unlock()
			if err != nil {
				return nil, true, err
			}
			return w, true, nil
		}
		ch := p.changed
		p.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, false, fmt.Errorf("%w: all %d workers of %s in scope %s stayed busy", ErrBusy, maxWorkers, p.key, p.scope)
		}
	}
}

// start starts one worker through the starter.
func (p *pool) start(ctx context.Context) (*worker, error) {
	slots := p.conf().MaxConcurrent
	if p.ext.Runtime == RuntimeExec {
		// One invocation at a time: what runs in its cgroup is the
		// invocation's, and is killed when it ends (endExec).
		slots = 1
	}
	w := &worker{id: newWorkerID(), ext: p.ext, pool: p, started: time.Now(), slots: make(chan struct{}, max(slots, 1))}
	w.current.Store("")
	w.lastUsed.Store(time.Now().UnixNano())
	spec, err := p.prepare(w)
	if err != nil {
		w.stop()
		return nil, err
	}
	h, err := p.starter.Start(ctx, spec)
	if err != nil {
		w.stop()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("%w: while starting a worker for %s", ErrDeadline, p.key)
		}
		return nil, fmt.Errorf("%w: start worker for %s: %w", ErrWorker, p.key, err)
	}
	w.h = h
	w.start.sandbox, w.start.ready = h.Started(), time.Now()
	p.log.Debug("worker started", "worker", w.id, "extension", p.ext.Name, "version", p.ext.Version, "pid", w.pid())
	return w, nil
}

// release gives back w's slot, and retires w if it served its share.
func (p *pool) release(w *worker) {
	c := p.conf()
	if n := w.invocations.Load(); (c.RecycleAfter > 0 && n >= c.RecycleAfter) ||
		(c.MaxAge.Duration > 0 && time.Since(w.started) > c.MaxAge.Duration) {
		p.retire(w, "recycled")
	}
	<-w.slots
	p.mu.Lock()
	if w.retired.Load() && len(w.slots) == 0 {
		go w.stop()
	}
	p.notify()
	p.mu.Unlock()
}

// discard retires w, whose invocation may still run in it, gives back
// its slot and stops it.
func (p *pool) discard(w *worker, why string) {
	p.retire(w, why)
	<-w.slots
	go w.stop()
}

// retire takes w out of the pool; it is stopped once idle (or now, by the
// caller, when it failed).
func (p *pool) retire(w *worker, why string) {
	if w.retired.Swap(true) {
		return
	}
	p.mu.Lock()
	for i, x := range p.workers {
		if x == w {
			p.workers = append(p.workers[:i:i], p.workers[i+1:]...)
			break
		}
	}
	p.notify()
	p.mu.Unlock()
	p.log.Debug("worker retired", "worker", w.id, "reason", why, "invocations", w.invocations.Load())
}

// idle returns the workers idle longer than d beyond the keep first ones.
func (p *pool) idle(d time.Duration, keep int) []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []*worker
	kept := 0
	for _, w := range p.workers {
		idle := len(w.slots) == 0 && time.Since(time.Unix(0, w.lastUsed.Load())) > d
		if idle && kept >= keep {
			out = append(out, w)
			continue
		}
		kept++
	}
	return out
}

// short reports whether the pool has workers (it served lately) but
// fewer live or starting than warm.
func (p *pool) short(warm int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	live := 0
	for _, w := range p.workers {
		if !w.retired.Load() {
			live++
		}
	}
	return len(p.workers) > 0 && live+p.starting < warm
}

// list returns the pool's workers.
func (p *pool) list() []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*worker(nil), p.workers...)
}

// close refuses further acquires with why and returns the workers, for
// the caller to stop.
func (p *pool) close(why error) []*worker {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed == nil {
		p.closed = why
	}
	all := p.workers
	p.workers = nil
	p.notify()
	return all
}

// closeIfEmpty closes the pool when it has no workers and starts none.
func (p *pool) closeIfEmpty() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.workers) > 0 || p.starting > 0 {
		return false
	}
	if p.closed == nil {
		p.closed = errPoolGone
	}
	p.notify()
	return true
}

// watchCPU bounds the CPU time of one invocation on w, which serves one
// invocation at a time (Tier.validate checks that): it returns a context
// for the call that is cancelled once the worker's cgroup has used more
// than limit since now, and a function to call when the call has returned,
// which says how much CPU time it used and whether that was over limit.
// Where the worker's cgroup cannot be read the invocation runs unbounded,
// after readFailed.
func watchCPU(ctx context.Context, w *worker, limit time.Duration, readFailed func(error)) (context.Context, func() (time.Duration, bool)) {
	start, err := w.h.CPUUsage()
	if err != nil {
		readFailed(err)
		return ctx, func() (time.Duration, bool) { return 0, false }
	}
	cctx, cancel := context.WithCancelCause(ctx)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// A poll reads one small file; 20 polls per limit, 2..50 ms apart.
		tick := time.NewTicker(min(max(limit/20, 2*time.Millisecond), 50*time.Millisecond))
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-cctx.Done():
				return
			case <-tick.C:
			}
			if u, err := w.h.CPUUsage(); err == nil && u-start > limit {
				cancel(ErrCPUTime)
				return
			}
		}
	}()
	return cctx, func() (time.Duration, bool) {
		close(stop)
		wg.Wait()
		over := errors.Is(context.Cause(cctx), ErrCPUTime)
		cancel(nil)
		var used time.Duration
		if u, err := w.h.CPUUsage(); err == nil {
			used = u - start
		}
		return used, over || used > limit
	}
}

// pool returns sc's pool of ext, made by mk on first use.
func (sc *scope) pool(ext ExtensionInfo, mk func() *pool) (*pool, error) {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	if sc.closed {
		return nil, ErrStopping
	}
	key := versionKey(ext)
	p := sc.pools[key]
	if p == nil {
		if sc.pools == nil {
			sc.pools = map[string]*pool{}
		}
		p = mk()
		sc.pools[key] = p
	}
	return p, nil
}

// poolList returns sc's pools.
func (sc *scope) poolList() []*pool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	out := make([]*pool, 0, len(sc.pools))
	for _, p := range sc.pools {
		out = append(out, p)
	}
	return out
}

// workerList returns the workers of every pool of sc.
func (sc *scope) workerList() []*worker {
	var out []*worker
	for _, p := range sc.poolList() {
		out = append(out, p.list()...)
	}
	return out
}

// unused drops sc's pools without workers and reports whether none is
// left and sc was last used longer than d ago.
func (sc *scope) unused(d time.Duration) bool {
	sc.mu.Lock()
	defer sc.mu.Unlock()
	for key, p := range sc.pools {
		if p.closeIfEmpty() {
			delete(sc.pools, key)
		}
	}
	return len(sc.pools) == 0 && time.Since(sc.lastUsed) > d
}

// stopAll stops every worker of sc and marks it closed.
func (sc *scope) stopAll() {
	sc.mu.Lock()
	sc.closed = true
	var all []*worker
	for _, p := range sc.pools {
		all = append(all, p.close(ErrStopping)...)
	}
	sc.pools = nil
	sc.mu.Unlock()
	var wg sync.WaitGroup
	for _, w := range all {
		wg.Add(1)
		go func() { defer wg.Done(); w.stop() }()
	}
	wg.Wait()
}

// idleWorkers returns workers idle longer than d beyond keep per version.
func (sc *scope) idleWorkers(d time.Duration, keep int) []*worker {
	var out []*worker
	for _, p := range sc.poolList() {
		out = append(out, p.idle(d, keep)...)
	}
	return out
}

// acquire returns a worker of ext in sc with a free slot (see pool.acquire).
func (i *invoker) acquire(ctx context.Context, sc *scope, ext ExtensionInfo, maxWorkers int) (*worker, bool, error) {
	for {
		p, err := sc.pool(ext, func() *pool { return i.newPool(sc, ext) })
		if err != nil {
			return nil, false, err
		}
		w, cold, err := p.acquire(ctx, maxWorkers)
		if errors.Is(err, errPoolGone) {
			continue // the reaper dropped it meanwhile: take the new one
		}
		if err == nil {
			sc.mu.Lock()
			sc.lastUsed = time.Now()
			sc.mu.Unlock()
		}
		return w, cold, err
	}
}

// release gives back w's slot (see pool.release).
func (i *invoker) release(_ *scope, w *worker) { w.pool.release(w) }

// retire takes w out of its pool (see pool.retire).
func (i *invoker) retire(_ *scope, w *worker, why string) { w.pool.retire(w, why) }

// newPool makes sc's pool of ext, starting workers with i.starter.
func (i *invoker) newPool(sc *scope, ext ExtensionInfo) *pool {
	log := i.log.With("tenant", sc.id.Tenant, "scope", sc.id.Key())
	return newPool(sc.id.Key(), ext, func() PoolConfig { return i.conf().Pool }, i.starter,
		func(w *worker) (host.Spec, error) { return i.workerSpec(sc, w, log) }, log)
}

// workerSpec is the start of w in sc's sandbox settings: its network, its
// runtime's binary, where its output goes, and a hold on its bundle.
func (i *invoker) workerSpec(sc *scope, w *worker, log *slog.Logger) (host.Spec, error) {
	ext := w.ext
	cfg := sandbox.Config{
		ID:       w.id,
		StateDir: i.sandboxDir,
		Cgroup:   sc.node.Path() + "/" + w.id,
		Hostname: hostname(sc.id),
		IDs:      sc.ids,
		Bundle:   ext.Dir,
		TmpSize:  i.conf().Scope.TmpSize,
		Launcher: sandbox.Launcher(i.conf().Scope.Launcher),
	}
	netPath, err := i.network(sc, ext)
	if err != nil {
		return host.Spec{}, err
	}
	cfg.NetNS = netPath
	w.start.network = time.Now()
	switch ext.Runtime {
	case RuntimeGo:
		cfg.Binary = filepath.Join(ext.Dir, filepath.FromSlash(ext.Entrypoint))
	case RuntimeExec:
		cfg.Binary = i.conf().execWorker()
		cfg.Env = []string{"SCOPED_EXEC_ENTRYPOINT=" + sandbox.BundlePath + "/" + ext.Entrypoint}
		if w.exec, err = newExecState(cfg.Cgroup); err != nil {
			return host.Spec{}, err
		}
	default:
		return host.Spec{}, fmt.Errorf("%w: runtime %q", ErrInvalid, ext.Runtime)
	}
	out := sc.ring.workerLog(i.log, sc.id.Tenant, sc.id.Key())
	w.unhold = i.store.Hold(ext) // every failure after this goes through w.stop
	return host.Spec{
		Sandbox:      cfg,
		StartTimeout: i.conf().Pool.StartTimeout.Duration,
		SocketDir:    i.socketDir,
		MaxMessage:   int(i.conf().Limits.MaxResult + i.conf().Limits.MaxPayload + 64<<10),
		Logger:       newPluginLogger(i.pluginLog, filepath.Base(cfg.Binary)), // worker output: the ring and workerLog only
		Log:          log.With("worker", w.id, "extension", ext.Name),
		Output: func(stream string) io.Writer {
			return &ringWriter{ring: sc.ring, scope: sc.id.Key(), worker: w.id, ext: ext.Name, stream: stream,
				current: func() string { return w.current.Load().(string) }, out: out}
		},
	}, nil
}

// failure works out once why w broke (its process exited, the kernel
// OOM-killed it, or it stopped answering) and removes it from its pool.
func (i *invoker) failure(sc *scope, w *worker, cause error) error {
	w.failOnce.Do(func() {
		w.pool.retire(w, "failed")
		// The runner removes the sandbox once its process is gone, and
		// keeps the OOM count of its cgroup (where cgroup v1 counts it);
		// v2 counts it in the scope's node too.
		oom := false
		if w.h != nil {
			if n, exited := w.h.WaitExit(time.Second); exited && n > w.oomBase() {
				oom = true
				sc.countOOM(n-w.oomBase(), sc.node.OOMKillsReachParents())
			}
		}
		w.failErr = cause
		if st, err := sc.node.Stats(); err == nil {
			sc.mu.Lock()
			oom = oom || st.OOMKills > sc.oomSeen
			sc.oomSeen = st.OOMKills
			sc.mu.Unlock()
			if oom {
				w.failErr = fmt.Errorf("%w (limit %d MiB): the worker of %s was killed", ErrOutOfMemory, sc.limits.MemoryMax>>20, w.ext.Name)
			}
		}
		i.log.Warn("worker failed", "tenant", sc.id.Tenant, "scope", sc.id.Key(), "worker", w.id,
			"extension", w.ext.Name, "err", w.failErr)
		go w.stop()
	})
	return w.failErr
}

// hostname is the scope key, cut to the kernel's 64 bytes.
func hostname(id ScopeID) string {
	h := id.Key()
	if len(h) > 64 {
		h = h[:64]
	}
	return h
}
